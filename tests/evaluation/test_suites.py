"""Reading suites: the public sets from ../shared/datasets/eval, custom JSONL files, and bad rows."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import pytest

from services.evaluation.checkers import check_number, final_number
from services.evaluation.suites import SuiteError, answer_key_rows, load_suite, normalise_number

EVAL_DATA = Path(__file__).resolve().parents[2].parent / "shared" / "datasets" / "eval"


def test_the_public_sets_load_whole() -> None:
    gsm8k = load_suite("gsm8k", EVAL_DATA)
    humaneval = load_suite("humaneval", EVAL_DATA)
    mt_bench = load_suite("mt-bench", EVAL_DATA)
    assert (len(gsm8k.items), len(humaneval.items), len(mt_bench.items)) == (1319, 164, 80)
    assert not gsm8k.errors and not humaneval.errors and not mt_bench.errors
    assert {i.check for i in gsm8k.items} == {"number"}
    assert {i.check for i in humaneval.items} == {"python"}
    assert {len(i.turns) for i in mt_bench.items} == {2}
    # The reference answers (math, reasoning, coding) reach the judge.
    with_refs = [i for i in mt_bench.items if i.references]
    assert len(with_refs) == 30
    assert {i.category for i in with_refs} == {"math", "reasoning", "coding"}


def test_gsm8k_expected_numbers_are_what_follows_the_four_hashes() -> None:
    items = load_suite("gsm8k", EVAL_DATA).items
    rows = [json.loads(line) for line in (EVAL_DATA / "gsm8k_test.jsonl").read_text().splitlines()]
    for item, row in zip(items, rows, strict=True):
        assert item.expected == normalise_number(row["answer"].split("####")[1])
        assert item.sim_match == row["question"].strip()
        assert row["question"].strip() in item.turns[0]
    # Every reference solution, checked as an answer, is right.
    assert all(check_number(item, row["answer"])["correct"] for item, row in zip(items, rows, strict=True))


def test_limit_keeps_the_first_items_in_file_order() -> None:
    full = load_suite("humaneval", EVAL_DATA)
    first = load_suite("humaneval", EVAL_DATA, limit=5)
    assert [i.id for i in first.items] == [i.id for i in full.items[:5]] == [f"HumanEval/{n}" for n in range(5)]


def test_humaneval_reads_the_original_gzip_too(tmp_path: Path) -> None:
    with gzip.open(tmp_path / "HumanEval.jsonl.gz", "wt", encoding="utf-8") as handle:
        handle.write((EVAL_DATA / "humaneval.jsonl").read_text(encoding="utf-8"))
    assert len(load_suite("humaneval", tmp_path).items) == 164


def test_a_missing_set_says_where_to_get_it(tmp_path: Path) -> None:
    with pytest.raises(SuiteError, match=r"gsm8k_test\.jsonl.*github\.com/openai/grade-school-math"):
        load_suite("gsm8k", tmp_path)


def test_an_unknown_suite_is_refused(tmp_path: Path) -> None:
    with pytest.raises(SuiteError, match="unknown suite 'mmlu'"):
        load_suite("mmlu", tmp_path)


def test_custom_rows_bad_ones_are_reported_with_line_numbers_and_the_rest_load(tmp_path: Path) -> None:
    path = tmp_path / "mine.jsonl"
    path.write_text(
        "\n".join(
            [
                json.dumps({"id": "ok-1", "prompt": "Write a haiku about rain."}),
                "{not json",
                json.dumps({"id": "ok-2", "prompt": "What is 6 x 7?", "expected_number": "42"}),
                json.dumps(["a", "list"]),
                json.dumps({"id": "both", "prompt": "x", "turns": ["y"]}),
                "",
                json.dumps({"id": "typo", "prompt": "x", "refrence": "y"}),
                json.dumps({"id": "nan", "prompt": "x", "expected_number": "many"}),
                json.dumps({"turns": ["First question?", "And a follow-up?"], "reference": "ref"}),
                json.dumps({"id": "ok-1", "prompt": "duplicate id"}),
            ]
        )
        + "\n",
        encoding="utf-8",
    )
    suite = load_suite(str(path), tmp_path)
    assert [i.id for i in suite.items] == ["ok-1", "ok-2", "line-9"]
    assert [(e.line, e.message.split(" (")[0]) for e in suite.errors] == [
        (2, "not JSON"),
        (4, "not a JSON object"),
        (5, "give exactly one of 'prompt' and 'turns'"),
        (7, "unknown keys ['refrence']"),
        (8, "'expected_number' is not a number"),
        (10, "duplicate id 'ok-1'"),
    ]
    assert suite.items[0].check == "judge" and suite.items[1].check == "number" and suite.items[1].expected == "42"
    assert suite.items[2].turns == ("First question?", "And a follow-up?") and suite.items[2].references == ("ref",)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("Step 1... Answer: 1,234", "1234"),
        ("so the answer is $18.", "18"),
        ("#### 72", "72"),
        ("\\boxed{3.50}", "3.5"),
        ("I think 5 then 7, final 9", "9"),
        ("Answer: -4 (and later 12 apples)", "-4"),
        ("no digits here", None),
    ],
)
def test_final_number(text: str, expected: str | None) -> None:
    assert final_number(text) == expected


def test_answer_key_rows_cover_checkable_items_only() -> None:
    items = load_suite("gsm8k", EVAL_DATA, limit=3).items + load_suite("humaneval", EVAL_DATA, limit=2).items
    items += load_suite("mt-bench", EVAL_DATA, limit=2).items
    rows = answer_key_rows(items)
    assert [r["kind"] for r in rows] == ["number"] * 3 + ["python"] * 2
    assert rows[3]["match"].startswith("def has_close_elements(") and rows[3]["prompt"] == items[3].code_prompt
    assert rows[0]["answer"] == items[0].expected


def test_the_whole_public_key_loads_in_the_simulator() -> None:
    """Every GSM8K and HumanEval item gets a match line no other item shares (the simulator refuses ambiguity)."""
    from services.providers.sim_answers import parse_answer_key

    items = load_suite("gsm8k", EVAL_DATA).items + load_suite("humaneval", EVAL_DATA).items
    rows = answer_key_rows(items)
    assert len(parse_answer_key([json.dumps(r) for r in rows], "all")) == len(rows) == 1319 + 164
