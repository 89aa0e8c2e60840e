"""Prompt analysis: domain classification, features, window fit. Pure, no gRPC."""

from __future__ import annotations

import math
import time

import pytest

from orchestratex.domains import DOMAINS
from orchestratex.usage import estimate_tokens
from services.selector.analysis import (
    CLASSIFIER_VERSION,
    DEFAULT_OUTPUT_TOKENS,
    RuleClassifier,
    analyze,
    normalise_probabilities,
)
from services.selector.detectors import detect_language, has_code, has_data

CLASSIFIER = RuleClassifier()

CLEAR_PROMPTS = {
    "coding": [
        "Write a Python function that checks whether a string is a palindrome.",
        "Why does this crash?\n```js\nconst xs = [1, 2];\nconsole.log(xs[5].length);\n```",
        "Fix the SQL query so it returns one row per customer: SELECT name, total FROM orders GROUP BY id",
    ],
    "math": [
        "Solve for x: 3x + 7 = 22.",
        "A shop sells pens at $3 each. Tom buys 4 pens and pays with a $20 note. How much change does he get?",
        "What is the derivative of x^3 * sin(x)?",
    ],
    "reasoning": [
        "Three friends sit in a row. If Ann is not next to Bob and Carl sits on the left, then who sits in the middle?",
        "Here is a logic puzzle: every knight tells the truth and every knave lies. A says 'B is a knave'."
        " Who is lying?",
        "All managers attended the meeting. Some engineers did not. Which of the following conclusions can"
        " be drawn from the statements above?",
    ],
    "creative": [
        "Write a short story about a lighthouse keeper who befriends a whale.",
        "Compose a haiku about autumn rain.",
        "Write song lyrics for a breakup ballad in the style of a 70s rock band.",
    ],
    "factual": [
        "Who wrote the novel Pride and Prejudice?",
        "When did the Berlin Wall fall?",
        "What is the capital of Australia?",
    ],
    "summarization": [
        "Summarize the following article in three sentences:\n\nThe city council met on Tuesday to discuss"
        " the new budget. Members argued about funding for parks and libraries for several hours.",
        "TL;DR this thread for me: people argued for hours about tabs versus spaces and nobody changed their mind.",
    ],
    "extraction": [
        "Extract all the company names and dates from this text: Acme Corp signed with Globex on 3 May 2021.",
        "List all the names of people mentioned in the following passage: Alice met Bob and Carol at the station.",
    ],
    "classification": [
        "Classify the sentiment of this review as positive or negative: 'The battery died after two days.'",
        "Categorize each of these support tickets into billing, technical or account.",
    ],
    "brainstorming": [
        "Give me ideas for a 10-year-old's birthday party.",
        "Suggest some tips to stay focused while working from home.",
        "Can you recommend a few names for my new coffee shop?",
    ],
}


@pytest.mark.parametrize(
    ("domain", "prompt"), [(domain, prompt) for domain, prompts in CLEAR_PROMPTS.items() for prompt in prompts]
)
def test_clear_prompts_get_the_right_primary_domain(domain: str, prompt: str) -> None:
    analysis = analyze(prompt, CLASSIFIER)
    assert analysis.primary_domain == domain, analysis.reasons
    assert analysis.confidence == max(analysis.probabilities.values())
    assert analysis.reasons[domain].startswith("matched:")


@pytest.mark.parametrize("prompt", [p for prompts in CLEAR_PROMPTS.values() for p in prompts] + ["?", "hello"])
def test_probabilities_cover_the_nine_domains_and_sum_to_one(prompt: str) -> None:
    probabilities = analyze(prompt, CLASSIFIER).probabilities
    assert list(probabilities) == list(DOMAINS)
    assert math.isclose(sum(probabilities.values()), 1.0, abs_tol=1e-9)
    assert all(0.0 <= p <= 1.0 for p in probabilities.values())


def test_no_evidence_means_low_confidence_factual() -> None:
    analysis = analyze("hello there", CLASSIFIER)
    assert analysis.primary_domain == "factual"
    assert analysis.confidence < 0.3
    assert analysis.classifier_version == CLASSIFIER_VERSION


def test_code_block_is_an_unmistakable_coding_signal() -> None:
    prompt = "Tell me about this:\n```python\ndef area(r):\n    return 3.14 * r * r\n```"
    analysis = analyze(prompt, CLASSIFIER)
    assert analysis.has_code
    assert analysis.primary_domain == "coding"
    assert analysis.confidence > 0.8
    assert "contains code" in analysis.reasons["coding"]


@pytest.mark.parametrize(
    "text",
    [
        "```python\nprint('hi')\n```",
        "Why is this slow?\nfunction total(xs) {\n  return xs.reduce((a, b) => a + b, 0);\n}",
        "def handler(event):\n    return event['body']",
        "#include <stdio.h>\nint main() { return 0; }",
        "my_list = [1, 2, 3]\nfor i in range(len(my_list)):\n    print(my_list[i])",
    ],
)
def test_has_code_detects_code(text: str) -> None:
    assert has_code(text)


@pytest.mark.parametrize(
    "text",
    [
        "Please write me a poem about the sea, with three verses.",
        "What is the capital of France? I think it's Paris, but I'm not sure.",
        "Summarise the text in triple backticks.\n```\nThe board met on Monday and agreed the plan.\n```",
        "I paid $5 for lunch; dinner was $12 (with tip).",
    ],
)
def test_has_code_ignores_prose(text: str) -> None:
    assert not has_code(text)


@pytest.mark.parametrize(
    "text",
    [
        "| name | age |\n|------|-----|\n| Ann  | 31  |",
        "name,age,city\nAnn,31,Oslo\nBob,27,Lima\nCid,45,Rome",
        'Parse this: {"id": 7, "name": "Ann", "tags": ["a"]}',
        "```csv\na,b\n1,2\n```",
        "id\tname\tscore\n1\tAnn\t9\n2\tBob\t7",
    ],
)
def test_has_data_detects_tables_csv_and_json(text: str) -> None:
    assert has_data(text)


@pytest.mark.parametrize(
    "text",
    [
        "I went to the shop, bought milk, eggs, and bread.\nThen I went home, cooked, and ate.\nIt was fine, "
        "really, honestly.",
        "Write a limerick about a cat.",
    ],
)
def test_has_data_ignores_prose(text: str) -> None:
    assert not has_data(text)


def test_estimated_tokens_is_ceil_chars_over_four() -> None:
    assert estimate_tokens("") == 0
    assert estimate_tokens("abcd") == 1
    assert estimate_tokens("abcde") == 2
    assert analyze("x" * 4001, CLASSIFIER).estimated_prompt_tokens == 1001


def test_long_prompt_flags_models_whose_window_is_too_small() -> None:
    prompt = "Summarize this report.\n" + "The quarterly numbers went up again. " * 1000  # ~37k chars
    windows = {"tiny": 4_000, "small": 9_000, "big": 128_000, "unknown": 0}
    analysis = analyze(prompt, CLASSIFIER, context_windows=windows)
    assert analysis.estimated_prompt_tokens > 9_000
    assert analysis.needs_long_context
    assert analysis.models_too_small == ("small", "tiny")


def test_window_check_counts_expected_output_and_context_tokens() -> None:
    prompt = "x" * 4000  # 1,000 tokens
    fits = analyze(prompt, CLASSIFIER, context_windows={"m": 2_000}, expected_output_tokens=1_000)
    assert not fits.needs_long_context
    assert fits.required_window == 2_000
    over = analyze(prompt, CLASSIFIER, context_windows={"m": 2_000}, expected_output_tokens=1_001)
    assert over.models_too_small == ("m",)
    with_history = analyze(
        prompt, CLASSIFIER, context_windows={"m": 2_000}, expected_output_tokens=500, context_tokens=600
    )
    assert with_history.models_too_small == ("m",)


def test_expected_output_defaults_per_primary_domain() -> None:
    analysis = analyze("Classify the sentiment of this review: 'great phone'", CLASSIFIER)
    assert analysis.primary_domain == "classification"
    assert analysis.expected_output_tokens == DEFAULT_OUTPUT_TOKENS["classification"] == 50
    assert analyze("Write a Python function to add two numbers.", CLASSIFIER).expected_output_tokens == 900


@pytest.mark.parametrize(
    ("text", "language"),
    [
        ("What is the best way to learn a new language as an adult?", "en"),
        ("Python quicksort?", "en"),
        ("¿Cuál es la capital de Francia y por qué es tan famosa?", "es"),
        ("Quelle est la capitale de la France et pourquoi est-elle célèbre ?", "fr"),
        ("Wie spät ist es und wo ist der Bahnhof?", "de"),
        ("Как дела? Расскажи мне о погоде.", "ru"),
        ("日本の首都はどこですか？", "ja"),
        ("中国的首都是哪里？", "zh"),
        ("12345 67890", "und"),
    ],
)
def test_language_guess(text: str, language: str) -> None:
    assert detect_language(text) == language


def test_language_ignores_code_identifiers() -> None:
    prompt = "Please refactor this code:\n\nconst es = require('la');\nlet de = es.que(el);\nreturn de;"
    assert analyze(prompt, CLASSIFIER).language == "en"


class _FixedClassifier:
    """A stand-in for a trained model: partial, unnormalised output."""

    version = "fixed-1"

    def predict(self, prompt: str) -> dict[str, float]:
        return {"math": 3.0, "reasoning": 1.0, "bogus": 5.0}


def test_any_classifier_works_and_its_output_is_normalised() -> None:
    analysis = analyze("anything", _FixedClassifier())
    assert analysis.primary_domain == "math"
    assert analysis.probabilities["math"] == pytest.approx(0.75)
    assert analysis.probabilities["reasoning"] == pytest.approx(0.25)
    assert analysis.classifier_version == "fixed-1"
    assert analysis.reasons == {}


def test_unusable_classifier_output_becomes_uniform() -> None:
    assert normalise_probabilities({"math": float("nan"), "coding": -1.0}) == {d: 1 / 9 for d in DOMAINS}


@pytest.mark.parametrize(
    "text",
    [
        "\n" * 200_000,
        " \t" * 100_000,
        "```\n" * 50_000,
        "| a " * 50_000,
        "1+" * 100_000,
        "if " * 66_000 + "then who",
        '{"a": ' * 33_000,
        "a:" + " " * 199_990 + "\n",
    ],
    ids=["newlines", "blanks", "fences", "pipes", "arithmetic", "conditionals", "json", "trailing-blanks"],
)
def test_pathological_max_size_prompts_stay_fast(text: str) -> None:
    # Guards against regexes that backtrack quadratically; typical times are well under 0.2 s.
    start = time.perf_counter()
    analyze(text, CLASSIFIER, context_windows={"m": 8_000})
    assert time.perf_counter() - start < 2.0
