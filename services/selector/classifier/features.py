"""Text features of the domain classifier: the same pure functions at training and at inference.

Training hands these analyzers to scikit-learn's ``TfidfVectorizer(analyzer=...)``; inference
(:class:`~services.selector.classifier.model.LinearTextModel`) calls them directly. Tokenisation is
therefore identical by construction, whatever scikit-learn version trained the artefact.

* **Zone.** A prompt's instruction sits at its start or its end; a pasted article, review or bio in
  between says little about the task and costs time. Features read only the first
  :data:`ZONE_HEAD` and last :data:`ZONE_TAIL` characters (:func:`zone`). This also bounds the cost
  of a 200,000-character prompt.
* **Words** (:func:`word_ngrams`): lower-cased words of any length and single punctuation marks
  (``?``, ``=``, ``:`` and ``` ` ``` are evidence), as unigrams and bigrams.
* **Characters** (:func:`char_ngrams`): 3-5-grams inside whitespace-delimited words padded with a
  space, like scikit-learn's ``char_wb``; robust to typos and inflections.
* **Edges** (:func:`edge_ngrams`): the words of the first and last :data:`EDGE_CHARS` characters
  again, marked ``h:`` and ``t:``. "Summarize the following", "Is this review positive?" and
  "Answer:" live there; a block of their own lets the model weigh them apart from the material.

Deliberately absent: prompt length, line counts and similar "shape" features. They raised
cross-validated F1 on the training data by less than its noise, because there the domains that
come with a pasted text (summarization, extraction, classification) are long *by construction*;
on real prompts long requests are just as often plans, stories or questions, and the length cue
misled the model (seen on the shared dev set).
"""

from __future__ import annotations

import itertools
import re

#: Characters kept from the start and the end of a prompt for word and character features.
ZONE_HEAD = 250
ZONE_TAIL = 250

CHAR_NGRAM_MIN = 3
CHAR_NGRAM_MAX = 5

#: Characters at each end of the (stripped) prompt read by :func:`edge_ngrams`.
EDGE_CHARS = 60

#: Extra characters lower-cased around an edge (see :func:`edge_ngrams`).
_LOWER_MARGIN = 64

_WORD_OR_MARK = re.compile(r"\w+|[^\w\s]")


def zone(text: str) -> str:
    """``text`` when short; else its first :data:`ZONE_HEAD` and last :data:`ZONE_TAIL` characters."""
    if len(text) <= ZONE_HEAD + ZONE_TAIL:
        return text
    # A newline keeps the two ends from forming n-grams across the seam.
    return text[:ZONE_HEAD] + "\n" + text[-ZONE_TAIL:]


def word_tokens(text: str) -> list[str]:
    """Lower-cased words and punctuation marks of the prompt's zone."""
    return _WORD_OR_MARK.findall(zone(text).lower())


def word_ngrams(text: str) -> list[str]:
    """Word (and punctuation-mark) unigrams and bigrams of the prompt's zone."""
    return _unigrams_and_bigrams(word_tokens(text))


def char_words(text: str) -> list[str]:
    """The whitespace-delimited words of the prompt's zone that character n-grams are taken from."""
    return zone(text).lower().split()


def word_char_ngrams(word: str) -> list[str]:
    """Character 3-5-grams of one word padded with a space on each side."""
    padded = f" {word} "
    size = len(padded)
    return [
        padded[i : i + n] for n in range(CHAR_NGRAM_MIN, min(CHAR_NGRAM_MAX, size) + 1) for i in range(size - n + 1)
    ]


def char_ngrams(text: str) -> list[str]:
    """Character 3-5-grams within space-padded words of the prompt's zone (``char_wb`` style)."""
    return [gram for word in char_words(text) for gram in word_char_ngrams(word)]


def edge_tokens(text: str) -> tuple[list[str], list[str]]:
    """Lower-cased words and marks of the first and of the last :data:`EDGE_CHARS` characters (no tail if short)."""
    text = text.strip()
    if len(text) > 2 * (EDGE_CHARS + _LOWER_MARGIN):
        # Lower-case only the ends of a long prompt (copying all of it costs more than the rest of this
        # block). Same result: lower() never shortens a string, and the margin covers the context
        # lower() looks at (a final sigma).
        head = text[: EDGE_CHARS + _LOWER_MARGIN].lower()[:EDGE_CHARS]
        tail = text[-(EDGE_CHARS + _LOWER_MARGIN) :].lower()[-EDGE_CHARS:]
        return _WORD_OR_MARK.findall(head), _WORD_OR_MARK.findall(tail)
    text = text.lower()
    tail_tokens = _WORD_OR_MARK.findall(text[-EDGE_CHARS:]) if len(text) > EDGE_CHARS else []
    return _WORD_OR_MARK.findall(text[:EDGE_CHARS]), tail_tokens


def edge_ngrams(text: str) -> list[str]:
    """Word unigrams and bigrams of the first and the last :data:`EDGE_CHARS` characters, marked by end."""
    head, tail = edge_tokens(text)
    return _unigrams_and_bigrams(head, "h:") + _unigrams_and_bigrams(tail, "t:")


def _unigrams_and_bigrams(tokens: list[str], prefix: str = "") -> list[str]:
    return [prefix + t for t in tokens] + [f"{prefix}{a} {b}" for a, b in itertools.pairwise(tokens)]
