"""The speed-ups of issue #4 must not change answers: prefilters, split regexes and shortcuts agree with
the plain regexes and formulas they stand in for."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from orchestratex.domains import DOMAINS
from services.selector import detectors
from services.selector.classifier import DATA_PATH
from services.selector.classifier.features import EDGE_CHARS, _unigrams_and_bigrams, edge_ngrams
from services.selector.classifier.rules import RULES, Signal, instruction_window
from services.selector.ranking import NEUTRAL_SPECIALTY, ModelEntry

_EXTRA = [
    "def f(x):\n    return x.strip()\n",
    "if (a && b) { console.log(a); }\nint main() { return 0; }",
    "SELECT name FROM users WHERE id = 3;",
    "import os\nfrom sys import argv\nx = [1, 2]\nfor i in x:\n    print(i)",
    "<div class='a'>hi</div> $('#x').hide(); this.value += 1; std::cout << 1;",
    "Solve 3x + 7 = 22 and find dy/dx of sin(x) with x² and $\\frac{1}{2}$ ≤ 4",
    "tl;dr: summarise, classify the sentiment, extract named entities, role-play, brainstorm ideas for a poem",
    "| a | b |\n|---|---|\n| 1 | 2 |\n",
    "Write a Python script that computes how many ways 10 - 3 / 2 ** 4 = x",
    "mystd::cout and xself.y, but self.z and\n  \t import os\n#include <x>\n\n    }\n",
    'a ==b; x\n  => y; é(x); _a("b") and ) ( ; Ünï(b); ] \t\n -= 1',
    "no call here: Foo(bar), 3(x), (y) and  ===  alone",
    '```JSON\n{"a": 1}\n```\n\n  |:---|---:|\n- - -\n~~~\nx = 1\n~~~\nÜber die Straße, naïve café',
]


@pytest.fixture(scope="module")
def corpus() -> list[str]:
    """The training prompts, plus code, maths and markup that exercise every pattern."""
    lines = Path(DATA_PATH).read_text(encoding="utf-8").splitlines()
    return [json.loads(line)["prompt"] for line in lines if line] + _EXTRA


def test_code_detectors_agree_with_their_plain_regexes(corpus: list[str]) -> None:
    every = (*detectors._CODE_UNMISTAKABLE, *detectors._CODE_HINTS)
    hits = 0
    for text in corpus:
        scan = detectors._Scan(text)
        for detector in every:
            # The pattern as written, not the faster parts the detector searches.
            expected = re.compile(detector.source, detector.flags).search(text) is not None
            assert detector.search(scan) == expected, (detector.source, text[:80])
            hits += expected
    assert hits > 50  # the corpus does exercise the patterns


def test_method_call_hint_matches_where_the_original_pattern_did(corpus: list[str]) -> None:
    original = re.compile(r"\b\w+\.\w+\([^()\n]*\)")
    anchored = detectors._CODE_HINTS[7].parts[0].pattern  # literal first, look-behind after it
    assert sum(bool(original.search(t)) for t in corpus) >= 5
    for text in corpus:
        assert bool(original.search(text)) == bool(anchored.search(text)), text[:80]


def test_rule_needles_never_hide_a_match(corpus: list[str]) -> None:
    checked = 0
    for rule in RULES:
        if not isinstance(rule.pattern, Signal):
            continue
        for text in corpus:
            window = instruction_window(text).lower()
            plain = re.search(rule.pattern.source, window) is not None
            assert rule.pattern.search(window) == plain, (rule.label, window[:80])
            checked += plain
    assert checked > 50


@pytest.mark.parametrize(
    "text",
    [
        "  Summarize THIS: " + "word " * 500 + "What does ΣΟΦΙΑ mean? İstanbul ΟΔΟΣ  ",
        "ΟΔΟΣ " * 200,
        "x" * 10 + "\n" * 300 + "END",
        "short prompt",
    ],
)
def test_edge_ngrams_match_the_whole_text_lower_casing(text: str) -> None:
    lowered = text.strip().lower()
    expected = _unigrams_and_bigrams(re.findall(r"\w+|[^\w\s]", lowered[:EDGE_CHARS]), "h:")
    if len(lowered) > EDGE_CHARS:
        expected += _unigrams_and_bigrams(re.findall(r"\w+|[^\w\s]", lowered[-EDGE_CHARS:]), "t:")
    assert edge_ngrams(text) == expected


def test_language_detection_is_unchanged_by_the_ascii_shortcut() -> None:
    assert detectors.detect_language("Please write a short note about the weather in the mountains") == "en"
    assert (
        detectors.detect_language("Écris une note sur le temps qu'il fait dans les montagnes pour les enfants") == "fr"
    )
    assert detectors.detect_language("Напиши короткую заметку о погоде") == "ru"
    assert detectors.detect_language("東京の天気について短いメモを書いてください") == "ja"


def test_clamped_specialties_are_precomputed_per_entry() -> None:
    model = ModelEntry("m", "f", 1000, 1.0, 1.0, specialties={"coding": 1.4, "math": -0.2, "other": 0.7})
    assert model.clamped_specialties["coding"] == 1.0
    assert model.clamped_specialties["math"] == 0.0
    assert model.clamped_specialties["other"] == 0.7
    assert all(model.clamped_specialties[d] == NEUTRAL_SPECIALTY for d in DOMAINS if d not in ("coding", "math"))
    assert model == ModelEntry("m", "f", 1000, 1.0, 1.0, specialties={"coding": 1.4, "math": -0.2, "other": 0.7})


def test_long_prompts_are_only_scanned_at_their_ends() -> None:
    prose = "The committee discussed the budget at length. " * 2_000
    middle_code = prose[:40_000] + "\n```python\ndef f(x):\n    return x\n```\n" + prose[:40_000]
    assert not detectors.has_code(middle_code)  # beyond the head and tail windows
    assert detectors.has_code("```python\ndef f(x):\n    return x\n```\n" + prose)
    assert detectors.has_code(prose + "\n```python\ndef f(x):\n    return x\n```")


def test_data_guards_never_hide_a_match(corpus: list[str]) -> None:
    fence = re.compile(r"^[ \t]*```\s*(json|csv|tsv|yaml|yml|xml)\b", re.IGNORECASE | re.MULTILINE)
    separator = re.compile(
        r"^[ \t]*(?:\|[ \t]*)?:?-{3,}:?[ \t]*(?:\|[ \t]*:?-{3,}:?[ \t]*)+(?:\|[ \t]*)?$", re.MULTILINE
    )
    found = 0
    for text in corpus:
        plain = bool(fence.search(text) or separator.search(text))
        guarded = bool(
            ("`" in text and "```" in text and detectors._DATA_FENCE.search("\n" + text))
            or ("|" in text and "---" in text and detectors._TABLE_SEPARATOR.search("\n" + text))
        )
        assert guarded == plain, text[:80]
        found += plain
    assert found >= 2


def test_prose_fast_path_matches_the_plain_computation(corpus: list[str]) -> None:
    def plain(text: str) -> str:
        without_blocks = re.sub(r"^[ \t]*(```|~~~).*?^[ \t]*\1", "\n", text, flags=re.MULTILINE | re.DOTALL)
        lines = [line for line in without_blocks.splitlines() if not re.search(r"[=;{}<>]|^( {4}|\t)", line)]
        prose = "\n".join(lines)
        return prose if prose.strip() else text

    for text in corpus:
        assert detectors._prose(text) == plain(text), text[:80]
