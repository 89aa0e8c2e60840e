"""The trained domain classifier: artefact, reproducibility, predictions, rule layer, data hygiene, scripts."""

from __future__ import annotations

import hashlib
import importlib.util
import json
import logging
import math
import re
import shutil
import sys
import time
from collections import Counter, defaultdict
from difflib import SequenceMatcher
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np
import pytest
from sklearn import __version__ as sklearn_version  # type: ignore[import-untyped]

from orchestratex.domains import DOMAINS
from orchestratex.v1 import selector_pb2
from services.selector.analysis import ExplainingClassifier, analyze
from services.selector.classifier import (
    DATA_PATH,
    MODEL_DIR,
    ArtefactError,
    RuleLayer,
    TrainedClassifier,
    default_classifier,
    load_trained_classifier,
)
from services.selector.classifier import model as model_module
from services.selector.classifier.artefact import METADATA_FILE, MODEL_FILE, data_sha256
from services.selector.classifier.features import char_ngrams, edge_ngrams, word_ngrams, zone
from services.selector.classifier.rules import INSTRUCTION_CHARS
from services.selector.classifier.training import (
    DEFAULT_SPEC,
    build_pipeline,
    decision_scores,
    load_examples,
    train,
)

REPO = Path(__file__).resolve().parents[2]
DEV_PATH = REPO.parent / "shared" / "datasets" / "prompt_domains" / "dev.jsonl"

# Written for these tests; none is in the training file (checked below).
CLEAR_PROMPTS: dict[str, list[str]] = {
    "coding": [
        "Write a Python function that flattens a nested list of arbitrary depth.",
        "Why does this throw an IndexError?\n```python\nitems = [1, 2, 3]\nprint(items[3])\n```",
        "How do I undo `git add` for a single file before committing?",
        "Write a SQL query that lists the five most recent orders for each customer.",
    ],
    "math": [
        "Solve for y: 7y - 4 = 3y + 20",
        "A cinema sells 230 tickets at $9 each and 85 at $6 each. How much money does it take in?",
        "What is the integral of 3x^2 + 2x from 0 to 2?",
        "If a fair coin is tossed four times, what is the probability of getting exactly two tails?",
    ],
    "reasoning": [
        "All squibs are flurbs and no flurbs are glims. Can a squib be a glim? Explain.",
        "Tina is taller than Uma, and Uma is taller than Vic. Who is the shortest?",
        "Would a snowman last long in the Sahara at noon? Reason it out.",
        "A manager says sales rose after the logo changed, so the new logo caused it. Which of the following,"
        " if true, most weakens this?\nA. The logo is blue.\nB. A competitor closed the same month.\nC. Sales are"
        " counted weekly.",
    ],
    "creative": [
        "Write a poem about a lonely robot on the Moon.",
        "Tell me a bedtime story about a hedgehog who wants to see the sea.",
        "You are a grumpy wizard who runs a tiny bookshop. Greet me as I walk in and stay in character.",
        "Compose song lyrics about a summer road trip with friends.",
    ],
    "factual": [
        "Who discovered the structure of DNA?",
        "What is the capital of Canada?",
        "Explain how a rainbow forms.",
        "When did the French Revolution begin?",
    ],
    "summarization": [
        "Summarize this in two sentences: The school board met on Monday and agreed to extend lunch breaks by"
        " ten minutes after parents complained that children were rushing their meals. The change starts next term.",
        "TL;DR: our team spent the whole sprint fixing flaky tests instead of shipping the new search page, so the"
        " launch moves to next month.",
        "Give me a short summary of the plot of Moby-Dick.",
    ],
    "extraction": [
        "Extract every date from this text: The contract was signed on 4 May 2022 and renewed on 1 June 2023.",
        "List all the people mentioned in this sentence: Ana met Bruno and Carla at the station, and later called"
        " Diego.",
        "From the following email, pull out the order number and the delivery address: Your order #7731 will be"
        " delivered to 14 Elm Street, Dublin, on Friday.",
    ],
    "classification": [
        "Is the sentiment of this review positive or negative? 'The pasta was cold and the waiter ignored us all"
        " night.'",
        "Classify each of these as a mammal or a bird: whale, sparrow, bat, owl, goat.",
        "Label this message as spam or not spam: 'WIN a FREE cruise now!!! Click here to claim your prize.'",
    ],
    "brainstorming": [
        "Give me ten ideas for a rainy Sunday with two bored kids.",
        "Can you suggest some names for my new coffee truck?",
        "Help me plan a three-day trip to Barcelona on a budget.",
        "What are some tips for staying focused while studying at home?",
    ],
}
ALL_CLEAR = [p for prompts in CLEAR_PROMPTS.values() for p in prompts]


def normalise(text: str) -> str:
    return " ".join(text.lower().split())


def read_jsonl(path: Path) -> list[dict[str, str]]:
    # Not splitlines(): prompts may contain U+2028 and other characters it also splits on.
    with path.open(encoding="utf-8") as file:
        return [json.loads(line) for line in file if line.strip()]


def load_script(name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(name, REPO / "scripts" / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses look their module up while the class is created
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def classifier() -> TrainedClassifier:
    return load_trained_classifier()


@pytest.fixture(scope="module")
def metadata() -> dict[str, Any]:
    data: dict[str, Any] = json.loads((MODEL_DIR / METADATA_FILE).read_text(encoding="utf-8"))
    return data


@pytest.fixture
def tiny_data(tmp_path: Path) -> Path:
    """Six shipped examples per domain: enough for 5-fold CV, fast to train on."""
    taken: Counter[str] = Counter()
    rows = []
    for row in read_jsonl(DATA_PATH):
        if taken[row["domain"]] < 6:
            taken[row["domain"]] += 1
            rows.append(row)
    path = tmp_path / "train.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


# --------------------------------------------------------------------------------------------------
# Artefact


def test_artefact_loads_and_matches_the_shipped_data(classifier: TrainedClassifier, metadata: dict[str, Any]) -> None:
    assert metadata["data_sha256"] == data_sha256(DATA_PATH)
    assert metadata["artefact_sha256"] == hashlib.sha256((MODEL_DIR / MODEL_FILE).read_bytes()).hexdigest()
    assert metadata["classes"] == list(DOMAINS)
    assert classifier.version == metadata["version"] == DEFAULT_SPEC.version
    assert classifier.version.startswith(metadata["model_version"] + "+rules-")
    assert len(metadata["probes"]) == 2 * len(DOMAINS)
    assert re.fullmatch(r"tfidf-(svm|lr)-\d+\+rules-\d+", classifier.version)
    assert classifier.model.classes == DOMAINS
    assert metadata["examples"] == len(read_jsonl(DATA_PATH))
    assert isinstance(metadata["sklearn_version"], str) and metadata["sklearn_version"]


def test_metadata_records_cross_validation_on_the_own_data(metadata: dict[str, Any]) -> None:
    cv = metadata["cv"]
    assert isinstance(cv, dict)
    assert cv["folds"] == 5
    # A floor, not the reported figure: a data or feature change that loses this much is a regression.
    assert cv["macro_f1"] >= 0.85
    assert cv["macro_f1_with_rules"] >= cv["macro_f1"] - 0.01
    assert set(cv["per_domain_f1"]) == set(DOMAINS)
    assert cv["scale"] == metadata["scale"] > 0


def test_retraining_reproduces_the_artefact(classifier: TrainedClassifier, metadata: dict[str, Any]) -> None:
    examples = load_examples(DATA_PATH)
    scale = float(metadata["scale"])
    first = train(examples, DEFAULT_SPEC, scale=scale).model
    second = train(examples, DEFAULT_SPEC, scale=scale).model
    sample = [e.prompt for e in examples[::25]] + ALL_CLEAR
    fresh = np.array([first.scores(t) for t in sample])
    assert np.array_equal(fresh, np.array([second.scores(t) for t in sample]))  # deterministic
    shipped = np.array([classifier.model.scores(t) for t in sample])
    if sklearn_version == metadata["sklearn_version"]:
        np.testing.assert_allclose(fresh, shipped, atol=1e-6)
    else:  # another solver build may move scores slightly, not decisions
        assert (fresh.argmax(axis=1) == shipped.argmax(axis=1)).mean() >= 0.98


def test_inference_equals_the_sklearn_pipeline(classifier: TrainedClassifier) -> None:
    examples = load_examples(DATA_PATH)
    pipeline = build_pipeline(DEFAULT_SPEC).fit([e.prompt for e in examples], [e.domain for e in examples])
    sample = ALL_CLEAR + [e.prompt for e in examples[::40]] + ["", "?", "x" * 5000]
    reference = decision_scores(pipeline, sample)
    ours = np.array([classifier.model.scores(t) for t in sample])
    np.testing.assert_allclose(ours, reference, atol=1e-6)


def test_memo_eviction_does_not_change_scores(classifier: TrainedClassifier, monkeypatch: pytest.MonkeyPatch) -> None:
    fresh = load_trained_classifier()
    monkeypatch.setattr(model_module, "MEMO_WORDS", 3)
    for prompt in ALL_CLEAR:
        np.testing.assert_array_equal(fresh.model.scores(prompt), classifier.model.scores(prompt))
    char_block = next(b for b in fresh.model.blocks if b.name == "char")
    assert len(char_block._word_columns) <= 3


def test_stale_data_hash_retrains_with_a_warning(tiny_data: Path, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="services.selector.classifier.classifier"):
        retrained = load_trained_classifier(MODEL_DIR, tiny_data)
    assert "retraining" in caplog.text and "training-data SHA-256 differs" in caplog.text
    assert retrained.version == DEFAULT_SPEC.version
    assert retrained.model.n_features < load_trained_classifier().model.n_features
    probabilities = retrained.predict("Write a haiku about rain.")
    assert math.isclose(sum(probabilities.values()), 1.0, abs_tol=1e-9)


@pytest.mark.parametrize("damage", ["missing", "corrupt", "foreign metadata", "features changed"])
def test_unusable_artefact_retrains(
    damage: str, tiny_data: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    model_dir = tmp_path / "model"
    shutil.copytree(MODEL_DIR, model_dir)
    metadata = json.loads((model_dir / METADATA_FILE).read_text())
    metadata["data_sha256"] = data_sha256(tiny_data)  # only the damage below makes it unusable
    if damage == "missing":
        (model_dir / MODEL_FILE).unlink()
    elif damage == "corrupt":
        (model_dir / MODEL_FILE).write_bytes(b"not a zip file")
        metadata["artefact_sha256"] = hashlib.sha256(b"not a zip file").hexdigest()
    elif damage == "foreign metadata":
        metadata["artefact_sha256"] = "0" * 64
    else:  # what a change to features.py without a rebuild looks like at load time
        metadata["probes"][0]["scores"][0] += 0.01
    (model_dir / METADATA_FILE).write_text(json.dumps(metadata))
    with caplog.at_level(logging.WARNING):
        retrained = load_trained_classifier(model_dir, tiny_data)
    assert "retraining" in caplog.text
    if damage == "features changed":
        assert "probe predictions differ" in caplog.text
    assert set(retrained.predict("hello")) == set(DOMAINS)


def test_missing_model_file_is_rebuilt_from_the_shipped_data(
    classifier: TrainedClassifier, metadata: dict[str, Any], tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """What an install without ``*.npz`` does: retrain once (no CV: the recorded scale fits this data)."""
    model_dir = tmp_path / "model"
    shutil.copytree(MODEL_DIR, model_dir)
    (model_dir / MODEL_FILE).unlink()
    with caplog.at_level(logging.WARNING):
        rebuilt = load_trained_classifier(model_dir, DATA_PATH)
    assert "retraining" in caplog.text
    assert rebuilt.version == classifier.version
    assert rebuilt.model.scale == metadata["scale"]
    fresh = np.array([rebuilt.model.scores(p) for p in ALL_CLEAR])
    shipped = np.array([classifier.model.scores(p) for p in ALL_CLEAR])
    if sklearn_version == metadata["sklearn_version"]:
        np.testing.assert_allclose(fresh, shipped, atol=1e-6)
    assert (fresh.argmax(axis=1) == shipped.argmax(axis=1)).all()


def test_no_artefact_and_no_data_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(ArtefactError, match="no training data"):
        load_trained_classifier(tmp_path / "model", tmp_path / "missing.jsonl")


def test_default_classifier_is_loaded_once() -> None:
    assert default_classifier() is default_classifier()


# --------------------------------------------------------------------------------------------------
# Predictions


@pytest.mark.parametrize(("domain", "prompt"), [(d, p) for d, ps in CLEAR_PROMPTS.items() for p in ps])
def test_clear_prompts_are_classified_right(classifier: TrainedClassifier, domain: str, prompt: str) -> None:
    analysis = analyze(prompt, classifier)
    assert analysis.primary_domain == domain, analysis.probabilities
    assert analysis.classifier_version == classifier.version


def test_test_prompts_are_not_training_rows() -> None:
    training = {normalise(r["prompt"]) for r in read_jsonl(DATA_PATH)}
    assert not [p for p in ALL_CLEAR if normalise(p) in training]


@pytest.mark.parametrize("prompt", [*ALL_CLEAR, "", "?", "hello", "日本語の質問です", "a" * 200_000])
def test_probabilities_cover_the_nine_domains_and_sum_to_one(classifier: TrainedClassifier, prompt: str) -> None:
    probabilities = classifier.predict(prompt)
    assert list(probabilities) == list(DOMAINS)
    assert math.isclose(sum(probabilities.values()), 1.0, abs_tol=1e-9)
    assert all(0.0 <= p <= 1.0 for p in probabilities.values())
    learned = classifier.model.probabilities(prompt)
    assert math.isclose(sum(learned.values()), 1.0, abs_tol=1e-9)


def test_is_an_explaining_classifier(classifier: TrainedClassifier) -> None:
    assert isinstance(classifier, ExplainingClassifier)
    analysis = analyze("Summarize this thread:\n\nAnn: lunch at 1?\nBob: sure, the usual place.", classifier)
    assert analysis.primary_domain == "summarization"
    assert analysis.reasons["summarization"].startswith("model ")
    assert "summarize (+2.5)" in analysis.reasons["summarization"]


def test_features_read_only_both_ends_of_a_long_prompt() -> None:
    middle = " zebra" * 10_000
    prompt = "Summarize this article." + middle + " Thanks!"
    assert len(zone(prompt)) < 600
    assert "zebra" not in edge_ngrams(prompt)
    assert "h:summarize" in edge_ngrams(prompt) and "t:thanks" in edge_ngrams(prompt)
    assert len(word_ngrams(prompt)) < 250
    assert all(len(g) <= 5 for g in char_ngrams(prompt))


def test_a_huge_prompt_is_classified_quickly(classifier: TrainedClassifier) -> None:
    prompt = "Please summarize the following report.\n" + "The committee met again and discussed the budget. " * 4000
    classifier.predict(prompt)
    started = time.perf_counter()
    probabilities = classifier.predict(prompt)
    # Bounded work (both ends only); generous so that a loaded CI machine does not flake.
    assert time.perf_counter() - started < 0.05
    assert max(probabilities, key=probabilities.__getitem__) == "summarization"


# --------------------------------------------------------------------------------------------------
# Rule layer


def labels(prompt: str) -> set[str]:
    return {r.label for r in RuleLayer().fire(prompt)}


def test_code_block_is_an_unmistakable_coding_signal(classifier: TrainedClassifier) -> None:
    prompt = "Tell me about this:\n```python\ndef area(r):\n    return 3.14 * r * r\n```"
    assert "contains code" in labels(prompt)
    probabilities, reasons = classifier.predict_with_reasons(prompt)
    assert max(probabilities, key=probabilities.__getitem__) == "coding"
    assert "contains code (+3)" in reasons["coding"]


@pytest.mark.parametrize(
    ("prompt", "expected"),
    [
        ("Solve 3x + 7 = 22 for x.", "equation"),
        ("What is 12 * 7 + 5?", "equation"),
        ("Evaluate $\\frac{3}{4} + \\sqrt{16}$.", "equation"),
        ("Tom has 3 apples, buys 12 more and gives 4 away. How many does he have?", "word problem"),
        ("Please summarise this memo for me.", "summarize"),
        ("tl;dr of the thread below?", "summarize"),
        ("Classify the following tweets by topic.", "classify"),
        ("Extract the invoice number from this email.", "extract"),
        ("Write me a short poem about ferries.", "creative piece"),
        ("Write a Bash script that rotates logs.", "asks for code"),
        ("Brainstorm ideas for a school fair.", "ideas"),
    ],
)
def test_rules_fire_on_unmistakable_signals(prompt: str, expected: str) -> None:
    assert expected in labels(prompt)


@pytest.mark.parametrize(
    ("prompt", "absent"),
    [
        ("Write a Python function that summarizes a list of numbers.", "summarize"),
        ("Write a regex to extract email addresses.", "extract"),
        ("Build a sentiment classifier with scikit-learn: write a function that trains it.", "classify"),
        ("Write a summary of the following story: a fox meets a crow.", "creative piece"),
        ("Write a script for a radio advert about a bakery.", "asks for code"),
        ("The meeting runs 2-4 pm on 12/05/2024.", "equation"),
        ("How many moons does Jupiter have?", "word problem"),
    ],
)
def test_rules_do_not_fire_on_look_alikes(prompt: str, absent: str) -> None:
    assert absent not in labels(prompt)


def test_rules_read_only_the_instruction_window() -> None:
    filler = "The council discussed parks, roads and schools at length. " * 40
    buried = filler + "Someone asked for a summary of last year's budget. " + filler
    assert len(buried) > 4 * INSTRUCTION_CHARS
    assert "summarize" not in labels("Translate this into French:\n" + buried)
    assert "summarize" in labels("Summarize this:\n" + buried)


def test_a_rule_does_not_override_strong_contrary_evidence() -> None:
    layer = RuleLayer()
    summarize = tuple(r for r in layer.rules if r.label == "summarize")
    confident = {d: 0.001 for d in DOMAINS} | {"factual": 1 - 0.001 * 8}
    adjusted = layer.apply(confident, summarize)
    assert max(adjusted, key=adjusted.__getitem__) == "factual"
    assert adjusted["summarization"] > confident["summarization"]
    unsure = {d: 1 / 9 for d in DOMAINS}
    adjusted = layer.apply(unsure, summarize)
    assert max(adjusted, key=adjusted.__getitem__) == "summarization"
    assert math.isclose(adjusted["summarization"] / adjusted["factual"], math.exp(2.5))
    assert math.isclose(sum(adjusted.values()), 1.0)


# --------------------------------------------------------------------------------------------------
# Training data


def test_training_file_has_enough_valid_unique_rows() -> None:
    rows = read_jsonl(DATA_PATH)
    counts = Counter(r["domain"] for r in rows)
    assert set(counts) == set(DOMAINS)
    assert min(counts.values()) >= 60, counts
    assert len({r["id"] for r in rows}) == len(rows)
    assert len({normalise(r["prompt"]) for r in rows}) == len(rows)
    assert all(r["prompt"].strip() for r in rows)


def _shingles(text: str, n: int = 3) -> set[str]:
    words = re.findall(r"\w+", text.lower())
    return {" ".join(words[i : i + n]) for i in range(max(1, len(words) - n + 1))}


@pytest.mark.skipif(not DEV_PATH.is_file(), reason="the shared dev set is not present")
def test_no_training_row_comes_from_the_dev_set() -> None:
    train_rows = [r["prompt"] for r in read_jsonl(DATA_PATH)]
    dev_rows = [r["prompt"] for r in read_jsonl(DEV_PATH)]
    dev_exact = {normalise(p) for p in dev_rows}
    assert not [p for p in train_rows if normalise(p) in dev_exact]
    # Near duplicates: the dev set's own definition (same 80-character prefix, >= 90 % similar) and,
    # independent of position, sharing most word trigrams with one dev prompt.
    by_prefix: dict[str, list[str]] = defaultdict(list)
    for prompt in dev_rows:
        by_prefix[normalise(prompt)[:80]].append(normalise(prompt))
    index: dict[str, list[int]] = defaultdict(list)
    dev_shingles = [_shingles(p) for p in dev_rows]
    for number, shingles in enumerate(dev_shingles):
        for shingle in shingles:
            index[shingle].append(number)
    near = []
    for prompt in train_rows:
        text = normalise(prompt)
        near += [prompt for d in by_prefix.get(text[:80], []) if SequenceMatcher(None, text, d).ratio() >= 0.9]
        shingles = _shingles(prompt)
        shared = Counter(n for s in shingles for n in index.get(s, ()))
        near += [prompt for n, k in shared.items() if len(shingles) >= 5 and k / len(shingles | dev_shingles[n]) >= 0.5]
    assert not near


# --------------------------------------------------------------------------------------------------
# Scripts


def test_eval_script_reports_macro_f1_and_confusion_matrix(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    data = tmp_path / "tiny.jsonl"
    rows = [{"prompt": p, "domain": d, "source": f"tests/{d}"} for d, ps in CLEAR_PROMPTS.items() for p in ps[:2]]
    data.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    status = load_script("eval_domain_classifier").main(["--data", str(data), "--latency"])
    out = capsys.readouterr().out
    assert status == 0
    assert "macro-F1: 1.0000" in out
    assert "confusion matrix (rows: true, columns: predicted)" in out
    assert re.search(r"^coding\s+2(\s+0){8}$", out, re.MULTILINE)
    assert "tests/coding" in out and "predict latency" in out


def test_eval_script_fails_clearly_on_a_missing_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    status = load_script("eval_domain_classifier").main(["--data", str(tmp_path / "nope.jsonl")])
    assert status == 2
    assert "evaluation file not found" in capsys.readouterr().err


def test_eval_script_rejects_a_malformed_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    data = tmp_path / "bad.jsonl"
    data.write_text('{"prompt": "hi", "domain": "poetry"}\n', encoding="utf-8")
    assert load_script("eval_domain_classifier").main(["--data", str(data)]) == 2
    assert "bad.jsonl:1" in capsys.readouterr().err


def test_train_script_check_mode_confirms_the_committed_artefact(capsys: pytest.CaptureFixture[str]) -> None:
    status = load_script("train_domain_classifier").main(["--check"])
    out = capsys.readouterr().out
    metadata = json.loads((MODEL_DIR / METADATA_FILE).read_text())
    if sklearn_version == metadata["sklearn_version"]:
        assert status == 0, out
    assert "CV 5-fold: macro-F1" in out and "max |score difference|" in out


# --------------------------------------------------------------------------------------------------
# Service wiring


async def test_selector_uses_the_trained_classifier_by_default(selector) -> None:
    prompt = "Write a limerick about a forgetful octopus."
    analysis = (await selector.AnalyzePrompt(selector_pb2.AnalyzePromptRequest(prompt=prompt))).analysis
    assert analysis.classifier_version == default_classifier().version
    creative = max(analysis.domain_probabilities, key=lambda d: d.score)
    assert creative.reason.startswith("model ")


def test_train_script_check_mode_rejects_a_stale_artefact(tiny_data: Path, capsys: pytest.CaptureFixture[str]) -> None:
    status = load_script("train_domain_classifier").main(["--check", "--data", str(tiny_data)])
    assert status == 1
    assert "training-data SHA-256 differs" in capsys.readouterr().err
