"""The classifier's feature look-ups (issue #4): pruned look-ups count exactly what the analyzers produce.

Inference looks up a bigram only when both its words are known, and a character n-gram only when its
first n-1 characters are, relying on the vocabulary being closed under those parts. These tests hold
the counts against the analyzers' output as written, on the shipped model and on generated text, and
check that a vocabulary that is not closed gets every n-gram looked up.
"""

from __future__ import annotations

import json
from collections import Counter

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from services.selector.classifier import DATA_PATH, default_classifier
from services.selector.classifier.model import ANALYZERS, FeatureBlock, LinearTextModel, closed_under_parts


@pytest.fixture(scope="module")
def model() -> LinearTextModel:
    return default_classifier().model


def reference_counts(block: FeatureBlock, text: str) -> Counter[int]:
    """Every n-gram the analyzer makes, looked up one by one."""
    counts: Counter[int] = Counter()
    for gram in ANALYZERS[block.name](text):
        column = block.vocabulary.get(gram)
        if column is not None:
            counts[column + block.offset] += 1
    return counts


def test_the_shipped_vocabularies_are_closed(model: LinearTextModel) -> None:
    for block in model.blocks:
        assert closed_under_parts(block.name, block.vocabulary), block.name
        assert block._closed


@pytest.mark.parametrize(
    ("name", "vocabulary", "closed"),
    [
        ("word", {"a": 0, "b": 1, "a b": 2}, True),
        ("word", {"a": 0, "a b": 1}, False),  # "b" missing
        ("edge", {"h:a": 0, "h:b": 1, "h:a b": 2}, True),
        ("edge", {"h:a": 0, "t:b": 1, "h:a b": 2}, False),  # "h:b" missing
        ("char", {" ab": 0, " abc": 1, " abcd": 2}, True),
        ("char", {" ab": 0, " abcd": 1}, False),  # " abc" missing
    ],
)
def test_closedness_is_detected(name: str, vocabulary: dict[str, int], closed: bool) -> None:
    assert closed_under_parts(name, vocabulary) == closed


def test_counts_equal_the_analyzers_on_the_training_prompts(model: LinearTextModel) -> None:
    prompts = [json.loads(line)["prompt"] for line in DATA_PATH.read_text(encoding="utf-8").splitlines() if line]
    seen = 0
    for prompt in prompts[::7]:
        for block in model.blocks:
            expected = reference_counts(block, prompt)
            assert block.column_counts(prompt) == expected, (block.name, prompt[:60])
            seen += len(expected)
    assert seen > 10_000  # the prompts do hit the vocabularies


# Text that hits the vocabulary often: its own terms, digits, punctuation and non-ASCII letters.
_WORDS = ["summarize", "the", "code", "def", "data", "write", "poem", "x", "12", "2026-11-01", "ß", "Σ", "日本", "🙄"]
_PIECES = st.sampled_from([*_WORDS, " ", "  ", "\n", "\t", ",", ".", "?", ":", "(", ")", "=", "-", "_", "'"])


@settings(max_examples=300, deadline=None)
@given(st.lists(st.one_of(_PIECES, st.text(max_size=6)), max_size=120).map("".join))
def test_counts_equal_the_analyzers_on_generated_text(text: str) -> None:
    model = default_classifier().model
    for block in model.blocks:
        assert block.column_counts(text) == reference_counts(block, text), block.name


def test_an_open_vocabulary_is_looked_up_in_full() -> None:
    # Gaps the pruned look-up would fall into: "a b" without "b", " abc" without " ab".
    word = FeatureBlock("word", {"a": 0, "a b": 1}, np.ones(2), 0)
    char = FeatureBlock("char", {" abc": 0, "bc ": 1}, np.ones(2), 0)
    assert not word._closed and not char._closed
    assert word.column_counts("a b a b") == Counter({0: 2, 1: 2})
    assert char.column_counts("abc") == Counter({0: 1, 1: 1})
