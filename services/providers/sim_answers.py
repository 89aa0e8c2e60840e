"""The simulator's answer key: expected answers of checkable benchmark items (SIMULATION ONLY).

``orchestratex eval`` measures strategies on suites whose answers can be checked (GSM8K: the final number;
HumanEval: a Python function run against tests). Offline every model is simulated, and a simulated answer
only has a hidden quality, so to measure anything the simulator must be able to be *right*. This module is
that explicit test hook: a JSONL file (``ORX_SIM_ANSWER_KEY``) maps a line of each item's prompt to its
expected answer, and the simulator writes a checkable answer that is correct with a probability given by
its hidden quality. Only the simulator reads it; real providers never see it, and results obtained with it
are simulated results, never to be mixed with real ones.

One JSON object per line (blank lines are skipped)::

    {"match": "<one line of the prompt>", "kind": "number", "answer": "72"}
    {"match": "<one line of the prompt>", "kind": "python", "answer": "<function body>",
     "prompt": "<signature and docstring the body completes>"}

* ``match`` — one line of the item's prompt, compared after ``strip()`` with each stripped line of a call's
  user messages, in order; the first line that matches picks the item. Matches must be unique (the same
  row twice is tolerated, two different rows with one match are an error).
* ``kind`` — ``number`` (the expected final number, e.g. ``-3``, ``1,250`` or ``2.5``) or ``python``
  (the canonical function body; ``prompt`` + ``answer`` is the complete, correct function).
* ``prompt`` — required for ``python``, refused for ``number``.

Any problem raises :class:`~orchestratex.errors.ConfigError` naming the file and the 1-based line.
"""

from __future__ import annotations

import json
import random
import re
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from enum import StrEnum
from pathlib import Path

from orchestratex.errors import ConfigError

FIELDS = ("match", "kind", "answer", "prompt")
"""The keys a row may have."""
ANSWER_LINE = "Answer: {answer}"
"""The last line of a simulated ``number`` answer."""
WRONG_BODIES = ("    return None\n", "    raise NotImplementedError\n", "    pass\n")
"""Bodies a wrong simulated ``python`` answer uses instead of the canonical one."""

_NUMBER = re.compile(r"[+-]?(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?|[+-]?\.\d+")
_MAX_NUMBER_CHARS = 24
_PROMPT_NUMBER = re.compile(r"(?<![\w.])\d+(?:[.,]\d+)*(?![\w])")
_DEF_NAME = re.compile(r"^\s*def\s+([A-Za-z_]\w*)\s*\(", re.MULTILINE)


class AnswerKind(StrEnum):
    """How an item is checked."""

    NUMBER = "number"
    """The final number of the answer."""
    PYTHON = "python"
    """A Python function, run against tests."""


@dataclass(frozen=True)
class KeyedItem:
    """One row of the answer key."""

    match: str
    """The prompt line that identifies the item (stripped)."""
    kind: AnswerKind
    answer: str
    """The expected number as text (``number``) or the canonical function body (``python``)."""
    prompt: str = ""
    """``python`` only: the signature and docstring the body completes."""
    line: int = 0
    """1-based line of the key file (0 when built in memory)."""


class AnswerKey:
    """Items by match line. Lookup costs one dictionary probe per line of the text, whatever the key's size."""

    def __init__(self, items: Iterable[KeyedItem] = ()) -> None:
        self._by_match: dict[str, KeyedItem] = {}
        for item in items:
            self._add(item, "answer key")

    def _add(self, item: KeyedItem, source: str) -> None:
        _check(item, source)
        match = item.match.strip()
        known = self._by_match.get(match)
        if known is not None:
            if (known.kind, known.answer, known.prompt) == (item.kind, item.answer, item.prompt):
                return
            where = f" on line {known.line}" if known.line else ""
            raise _error(source, item.line, f"match {_short(match)} is already used{where} for another answer")
        self._by_match[match] = item

    def __len__(self) -> int:
        return len(self._by_match)

    def __iter__(self) -> Iterator[KeyedItem]:
        return iter(self._by_match.values())

    def lookup(self, text: str) -> KeyedItem | None:
        """The item of the first line of ``text`` that (stripped) is some item's match; None when none is."""
        if not self._by_match:
            return None
        for line in text.splitlines():
            item = self._by_match.get(line.strip())
            if item is not None:
                return item
        return None


def load_answer_key(path: Path) -> AnswerKey:
    """Read and validate a JSONL answer key. Raises :class:`ConfigError` naming ``path`` and the 1-based line."""
    source = f"answer key {path}"
    try:
        with path.open(encoding="utf-8") as handle:
            return parse_answer_key(handle, source)
    except OSError as exc:
        raise ConfigError(f"{source}: cannot read ({exc.strerror})") from None
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{source}: not UTF-8 ({exc.reason})") from None


def parse_answer_key(lines: Iterable[str], source: str = "answer key") -> AnswerKey:
    """Validate JSONL ``lines`` into an :class:`AnswerKey`; errors name ``source`` and the 1-based line."""
    key = AnswerKey()
    for number, raw in enumerate(lines, start=1):
        if not raw.strip():
            continue
        try:
            row = json.loads(raw)
        except ValueError as exc:
            raise _error(source, number, f"invalid JSON ({exc})") from None
        key._add(_row(row, source, number), source)
    return key


def _row(row: object, source: str, line: int) -> KeyedItem:
    if not isinstance(row, dict):
        raise _error(source, line, f"expected a JSON object, got {type(row).__name__}")
    unknown = [k for k in row if k not in FIELDS]
    if unknown:
        raise _error(source, line, f"unknown key {unknown[0]!r}; expected {', '.join(FIELDS)}")
    for name in FIELDS:
        if name in row and not isinstance(row[name], str):
            raise _error(source, line, f"{name}: expected a string, got {type(row[name]).__name__}")
    for name in ("match", "kind", "answer"):
        if name not in row:
            raise _error(source, line, f"{name}: is required")
    kinds = ", ".join(k.value for k in AnswerKind)
    try:
        kind = AnswerKind(row["kind"])
    except ValueError:
        raise _error(source, line, f"kind: expected one of {kinds}, got {row['kind']!r}") from None
    if kind is AnswerKind.PYTHON and "prompt" not in row:
        raise _error(source, line, "prompt: is required for kind python")
    return KeyedItem(
        match=row["match"].strip(), kind=kind, answer=row["answer"], prompt=row.get("prompt", ""), line=line
    )


def _check(item: KeyedItem, source: str) -> None:
    def fail(problem: str) -> ConfigError:
        return _error(source, item.line, problem)

    if not item.match.strip():
        raise fail("match: must not be empty")
    if len(item.match.strip().splitlines()) != 1:
        raise fail("match: must be a single line")
    if not item.answer.strip():
        raise fail("answer: must not be empty")
    if item.kind is AnswerKind.NUMBER:
        if item.prompt:
            raise fail("prompt: only kind python takes a prompt")
        if _NUMBER.fullmatch(item.answer.strip()) is None or len(item.answer.strip()) > _MAX_NUMBER_CHARS:
            raise fail(f"answer: expected a number (like 42, -3, 1,250 or 2.5), got {_short(item.answer)}")
    elif not item.prompt.strip():
        raise fail("prompt: must not be empty for kind python")


def _error(source: str, line: int, problem: str) -> ConfigError:
    return ConfigError(f"{source}: line {line}: {problem}" if line else f"{source}: {problem}")


def _short(text: str, limit: int = 60) -> str:
    return repr(text if len(text) <= limit else text[:limit] + "…")


# -- answer text ------------------------------------------------------------------------------------


def answer_body(rng: random.Random, item: KeyedItem, correct: bool, prompt_text: str) -> str:
    """A checkable answer body for ``item``: right when ``correct``, else plausibly wrong.

    ``number``: a few short worked steps, then a last line ``Answer: <n>`` (the expected number exactly when
    correct; otherwise a different number, whole when the expected one is). ``python``: a sentence of prose and
    a fenced block with ``prompt + answer`` when correct, ``prompt`` + a wrong body otherwise.
    """
    if item.kind is AnswerKind.NUMBER:
        answer = item.answer.strip() if correct else wrong_number(rng, item.answer)
        return _worked_steps(rng, prompt_text, answer)
    body = item.answer if correct else wrong_body(rng, item)
    return _python_answer(rng, item.prompt, body)


def wrong_number(rng: random.Random, expected: str) -> str:
    """A plausible number other than ``expected``: whole when it is (else with as many decimals), and not
    negative unless it is."""
    value = _decimal(expected)
    places = max(0, -int(value.as_tuple().exponent))
    unit = Decimal(1).scaleb(-places)
    choices = [value + d * unit for d in (-3, -2, -1, 1, 2, 3)] + [value - 10 * unit, value + 10 * unit]
    if places == 0 and abs(value) >= 4:
        choices += [value * 2, (value / 2).to_integral_value()]
    candidates = sorted({c.quantize(unit) for c in choices if c >= 0 or value < 0} - {value})
    return f"{candidates[rng.randrange(len(candidates))]:f}"


def wrong_body(rng: random.Random, item: KeyedItem) -> str:
    """A body that does not complete ``item`` correctly (and does not contain the canonical one)."""
    correct = item.prompt + item.answer
    bodies = [b for b in WRONG_BODIES if correct not in item.prompt + b and b.strip() != item.answer.strip()]
    return bodies[rng.randrange(len(bodies))]


def _decimal(text: str) -> Decimal:
    try:
        return Decimal(text.strip().replace(",", ""))
    except InvalidOperation:  # pragma: no cover - validated at load
        raise ValueError(f"not a number: {text!r}") from None


_STEP_OPENINGS = (
    "Let's work through this step by step.",
    "Let's set up the quantities first.",
    "We can solve this in a few steps.",
)
_STEP_MIDDLES = (
    "The problem gives {numbers}.",
    "The quantities that matter are {numbers}.",
    "Start from {numbers}.",
)
_STEP_LATER = (
    "Combine them in the order the question describes.",
    "Apply each change to the running total in turn.",
    "Work out the intermediate amounts before the final one.",
    "Check that the units match before combining the amounts.",
)
_STEP_CLOSINGS = (
    "Putting it together gives the final value.",
    "That gives the final result.",
    "So the final amount follows.",
)


def _worked_steps(rng: random.Random, prompt_text: str, answer: str) -> str:
    numbers = list(dict.fromkeys(_PROMPT_NUMBER.findall(prompt_text)))[:3]
    steps = [rng.choice(_STEP_OPENINGS)]
    if numbers:
        steps.append(rng.choice(_STEP_MIDDLES).format(numbers=_join(numbers)))
    steps += rng.sample(_STEP_LATER, 2)
    steps.append(rng.choice(_STEP_CLOSINGS))
    lines = [f"{i}. {step}" for i, step in enumerate(steps[1:], start=1)]
    return "\n".join([steps[0], "", *lines, "", ANSWER_LINE.format(answer=answer)])


def _join(words: Sequence[str]) -> str:
    return words[0] if len(words) == 1 else ", ".join(words[:-1]) + " and " + words[-1]


_PROSE = (
    "Here is an implementation of `{name}` that completes the given signature.",
    "The function below completes `{name}` as the docstring describes.",
    "This completes `{name}`; the docstring is kept as given.",
)


def _python_answer(rng: random.Random, prompt: str, body: str) -> str:
    names = _DEF_NAME.findall(prompt)
    name = names[-1] if names else "the function"
    code = prompt + body
    if not code.endswith("\n"):
        code += "\n"
    return rng.choice(_PROSE).format(name=name) + "\n\n```python\n" + code + "```"
