"""Evaluation suites: GSM8K, HumanEval, MT-Bench and custom JSONL files, read into :class:`Item` objects.

The public sets are not shipped with OrchestrateX; a user downloads them (docs/evaluation.md says where) into
a directory given by ``--data-dir`` (default ``$ORX_EVAL_DATA_DIR`` or ``./eval-data``) under their usual
names. A custom file is any ``.jsonl`` path. Malformed rows never stop a run: each is reported with its
line number (:class:`RowError`) and the other rows still run.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Literal

CheckKind = Literal["number", "python", "judge"]

SUITES = ("gsm8k", "humaneval", "mt-bench")
"""The named suites; anything else given to ``--suite`` must be a JSONL file."""

FILES = {
    "gsm8k": ("gsm8k_test.jsonl",),
    "humaneval": ("humaneval.jsonl", "HumanEval.jsonl", "HumanEval.jsonl.gz"),
    "mt-bench": ("mt_bench_questions.jsonl", "question.jsonl"),
}
MT_BENCH_REFERENCES = ("mt_bench_reference_gpt4.jsonl", "gpt-4.jsonl")

SOURCES = {
    "gsm8k": "https://github.com/openai/grade-school-math (grade_school_math/data/test.jsonl, MIT)",
    "humaneval": "https://github.com/openai/human-eval (data/HumanEval.jsonl.gz, MIT)",
    "mt-bench": "https://github.com/lm-sys/FastChat (fastchat/llm_judge/data/mt_bench/question.jsonl and "
    "reference_answer/gpt-4.jsonl, Apache-2.0)",
}

GSM8K_INSTRUCTION = (
    "Solve the problem step by step, then give the final answer on its own last line as `Answer: <number>`."
)
HUMANEVAL_INSTRUCTION = (
    "Complete the following Python function. Reply with the whole function, signature included, in one "
    "```python code block; you may add imports above it."
)


class SuiteError(ValueError):
    """The suite cannot be read at all (unknown name, missing file); the message says what to do."""


@dataclass(frozen=True)
class RowError:
    """A row that was skipped: where and why."""

    line: int
    message: str

    def __str__(self) -> str:
        return f"line {self.line}: {self.message}"


@dataclass(frozen=True)
class Item:
    """One thing to ask, and how to check the answer."""

    id: str
    turns: tuple[str, ...]
    """What each turn sends, instructions included (MT-Bench has two; the others one)."""
    check: CheckKind
    category: str
    questions: tuple[str, ...] = ()
    """The turns as the dataset wrote them (shown to the judge); defaults to ``turns``."""
    expected: str = ""
    """``number``: the expected final number."""
    references: tuple[str, ...] = ()
    """``judge``: a reference answer per turn, when the dataset has one."""
    code_prompt: str = ""
    test: str = ""
    entry_point: str = ""
    """``python``: the function's prompt, the test code defining ``check``, and the function's name."""
    sim_match: str = ""
    """The line of the prompt the simulator's answer key is matched on (see :func:`answer_key_rows`)."""
    meta: dict[str, Any] = field(default_factory=dict, compare=False)
    line: int = 0
    """The item's line in its file (1-based), for messages."""

    @property
    def shown_questions(self) -> tuple[str, ...]:
        """The questions as the judge sees them."""
        return self.questions or self.turns


@dataclass(frozen=True)
class Suite:
    """The items of one suite, and the rows that could not be read."""

    name: str
    items: list[Item]
    errors: list[RowError]
    source: str

    @property
    def judged(self) -> bool:
        """Whether any item needs the LLM judge."""
        return any(item.check == "judge" for item in self.items)


def load_suite(name: str, data_dir: Path, limit: int | None = None) -> Suite:
    """Read a named suite from ``data_dir``, or a custom JSONL file when ``name`` is a path.

    Raises :class:`SuiteError` when the suite is unknown or its file missing; bad rows are returned in
    :attr:`Suite.errors`, never raised. ``limit`` keeps the first N good items (in file order).
    """
    if name in SUITES:
        path = _find(name, data_dir)
        if name == "gsm8k":
            items, errors = _collect(_rows(path), _gsm8k_item)
        elif name == "humaneval":
            items, errors = _collect(_rows(path), _humaneval_item)
            items = _distinctive_matches(items)
        else:
            references = _mt_references(path.parent)
            items, errors = _collect(_rows(path), lambda row, line: _mt_bench_item(row, line, references))
        source = str(path)
    else:
        path = Path(name)
        if path.suffix not in (".jsonl", ".gz") or not path.is_file():
            known = ", ".join(SUITES)
            raise SuiteError(f"unknown suite {name!r}: use one of {known}, or the path of a .jsonl file")
        items, errors = _collect(_rows(path), _custom_item)
        source = str(path)
    _check_unique(items, errors)
    if limit is not None:
        items = items[:limit]
    return Suite(name=name, items=items, errors=errors, source=source)


def _find(name: str, data_dir: Path) -> Path:
    for candidate in FILES[name]:
        if (data_dir / candidate).is_file():
            return data_dir / candidate
    raise SuiteError(
        f"{name}: none of {', '.join(FILES[name])} in {data_dir} (set --data-dir or ORX_EVAL_DATA_DIR); "
        f"get it from {SOURCES[name]}"
    )


def _rows(path: Path) -> Iterator[tuple[int, Any | Exception]]:
    """(line number, parsed JSON or the error) for every non-blank line."""
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rt", encoding="utf-8") as handle:
        for number, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            try:
                yield number, json.loads(line)
            except json.JSONDecodeError as exc:
                yield number, ValueError(f"not JSON ({exc.msg} at column {exc.colno})")


def _collect(
    rows: Iterator[tuple[int, Any | Exception]], build: Callable[[dict[str, Any], int], Item]
) -> tuple[list[Item], list[RowError]]:
    items: list[Item] = []
    errors: list[RowError] = []
    for number, row in rows:
        if isinstance(row, Exception):
            errors.append(RowError(number, str(row)))
            continue
        if not isinstance(row, dict):
            errors.append(RowError(number, "not a JSON object"))
            continue
        try:
            items.append(replace(build(row, number), line=number))
        except (KeyError, TypeError, ValueError) as exc:
            reason = f"missing {exc}" if isinstance(exc, KeyError) else str(exc)
            errors.append(RowError(number, reason))
    return items, errors


def _check_unique(items: list[Item], errors: list[RowError]) -> None:
    seen: set[str] = set()
    unique: list[Item] = []
    for item in items:
        if item.id in seen:
            errors.append(RowError(item.line, f"duplicate id {item.id!r} (kept the first)"))
            continue
        seen.add(item.id)
        unique.append(item)
    items[:] = unique


def _text(row: dict[str, Any], key: str) -> str:
    value = row[key]
    if not isinstance(value, str) or not value.strip():
        raise ValueError(f"{key!r} must be a non-empty string")
    return value


_NUMBER = re.compile(r"-?\d+(?:\.\d+)?")


def _gsm8k_item(row: dict[str, Any], line: int) -> Item:
    question = _text(row, "question").strip()
    answer = _text(row, "answer")
    if "####" not in answer:
        raise ValueError("'answer' has no '#### <number>' line")
    expected = normalise_number(answer.rsplit("####", 1)[1])
    if expected is None:
        raise ValueError("the text after '####' is not a number")
    digest = _short_id(question)
    return Item(
        id=f"gsm8k-{digest}",
        turns=(f"{question}\n\n{GSM8K_INSTRUCTION}",),
        questions=(question,),
        check="number",
        category="gsm8k",
        expected=expected,
        sim_match=question.splitlines()[0].strip(),
    )


def _humaneval_item(row: dict[str, Any], line: int) -> Item:
    task_id, prompt = _text(row, "task_id"), _text(row, "prompt")
    test, entry_point = _text(row, "test"), _text(row, "entry_point")
    signature = next((line.strip() for line in prompt.splitlines() if line.startswith(f"def {entry_point}(")), "")
    if not signature:
        raise ValueError(f"the prompt does not define {entry_point!r}")
    return Item(
        id=task_id,
        turns=(f"{HUMANEVAL_INSTRUCTION}\n\n```python\n{prompt}```",),
        check="python",
        category="humaneval",
        code_prompt=prompt,
        test=test,
        entry_point=entry_point,
        sim_match=signature,
        meta={"canonical_solution": row.get("canonical_solution", "")},
    )


def _distinctive_matches(items: list[Item]) -> list[Item]:
    """Give each code item, as its simulator match, the first line of its prompt from the signature on that no
    other item's prompt contains (two HumanEval tasks share ``def correct_bracketing(brackets: str):``)."""
    counts: dict[str, int] = {}
    for item in items:
        for line in {ln.strip() for ln in item.code_prompt.splitlines()}:
            counts[line] = counts.get(line, 0) + 1
    out: list[Item] = []
    for item in items:
        lines = [ln.strip() for ln in item.code_prompt.splitlines()]
        start = lines.index(item.sim_match) if item.sim_match in lines else 0
        unique = next((ln for ln in lines[start:] if len(ln) >= 12 and counts.get(ln) == 1), "")
        out.append(replace(item, sim_match=unique))
    return out


def _mt_references(directory: Path) -> dict[str, tuple[str, ...]]:
    for name in MT_BENCH_REFERENCES:
        path = directory / name
        if path.is_file():
            refs: dict[str, tuple[str, ...]] = {}
            for _, row in _rows(path):
                if isinstance(row, dict) and "question_id" in row:
                    turns = (row.get("choices") or [{}])[0].get("turns") or []
                    refs[str(row["question_id"])] = tuple(str(t) for t in turns)
            return refs
    return {}


def _mt_bench_item(row: dict[str, Any], line: int, references: dict[str, tuple[str, ...]]) -> Item:
    qid = str(row["question_id"])
    turns = row["turns"]
    if not isinstance(turns, list) or not turns or not all(isinstance(t, str) and t.strip() for t in turns):
        raise ValueError("'turns' must be a list of non-empty strings")
    return Item(
        id=f"mt-bench-{qid}",
        turns=tuple(turns),
        check="judge",
        category=str(row.get("category") or "mt-bench"),
        references=references.get(qid, ()),
    )


def _custom_item(row: dict[str, Any], line: int) -> Item:
    """A custom row: ``prompt`` or ``turns``; optional ``id``, ``expected_number``, ``reference``, ``category``."""
    unknown = set(row) - {"id", "prompt", "turns", "expected_number", "reference", "category"}
    if unknown:
        raise ValueError(f"unknown keys {sorted(unknown)}")
    if ("prompt" in row) == ("turns" in row):
        raise ValueError("give exactly one of 'prompt' and 'turns'")
    if "prompt" in row:
        turns: tuple[str, ...] = (_text(row, "prompt"),)
    else:
        raw = row["turns"]
        if not isinstance(raw, list) or not raw or not all(isinstance(t, str) and t.strip() for t in raw):
            raise ValueError("'turns' must be a non-empty list of non-empty strings")
        turns = tuple(raw)
    item_id = str(row.get("id") or f"line-{line}")
    category = str(row.get("category") or "custom")
    if "expected_number" in row:
        if len(turns) != 1:
            raise ValueError("'expected_number' needs a single-turn row")
        expected = normalise_number(str(row["expected_number"]))
        if expected is None:
            raise ValueError("'expected_number' is not a number")
        return Item(
            id=item_id,
            turns=(f"{turns[0]}\n\n{GSM8K_INSTRUCTION}",),
            questions=turns,
            check="number",
            category=category,
            expected=expected,
            sim_match=turns[0].strip().splitlines()[0].strip(),
        )
    reference = row.get("reference")
    if reference is not None and not isinstance(reference, str):
        raise ValueError("'reference' must be a string")
    return Item(
        id=item_id,
        turns=turns,
        check="judge",
        category=category,
        references=(reference,) if reference else (),
    )


def normalise_number(text: str) -> str | None:
    """The number in ``text`` in a canonical form (``1,234.50`` -> ``1234.5``, ``$7`` -> ``7``), or None."""
    match = _NUMBER.search(text.replace(",", ""))
    if match is None:
        return None
    value = match.group(0)
    if "." in value:
        value = value.rstrip("0").rstrip(".")
    if value in ("-0", ""):
        value = "0"
    return value


def _short_id(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:10]


def answer_key_rows(items: list[Item]) -> list[dict[str, str]]:
    """The simulator's answer key for checkable items (``ORX_SIM_ANSWER_KEY``): a SIMULATION hook only.

    A simulated model then answers these items right with a probability given by its hidden quality
    (services/providers/sim_answers.py). Judged items have no key.
    """
    rows: list[dict[str, str]] = []
    for item in items:
        if item.check == "number" and item.sim_match:
            rows.append({"match": item.sim_match, "kind": "number", "answer": item.expected})
        elif item.check == "python" and item.sim_match:
            body = str(item.meta.get("canonical_solution") or "")
            if body:
                rows.append({"match": item.sim_match, "kind": "python", "answer": body, "prompt": item.code_prompt})
    return rows
