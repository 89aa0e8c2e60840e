"""Inference for the trained linear model: TF-IDF blocks -> linear scores -> softmax. numpy only.

The artefact is a plain ``.npz`` (no pickle, loaded with ``allow_pickle=False``): per feature block
its vocabulary (UTF-8 terms joined by newlines, in column order) and IDF weights, then the weight
matrix, the intercepts, the class order and the softmax scale. Nothing in it depends on the
scikit-learn version that trained it, and the analyzers are this package's own
(:mod:`~services.selector.classifier.features`), so inference reproduces the training pipeline's
``decision_function`` exactly (tests compare the two).

Per block, like scikit-learn's ``TfidfVectorizer(sublinear_tf=True, norm="l2")``: count the terms
that are in the vocabulary, ``tf = 1 + ln(count)``, multiply by the IDF, scale to unit L2 norm.
The blocks are concatenated (a ``FeatureUnion``), and ``scores = x · W + b``. Probabilities are
``softmax(scale · scores)``, with ``scale`` fitted on held-out folds (see ``training.py``).
"""

from __future__ import annotations

import math
import zipfile
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final

import numpy as np
import numpy.typing as npt

from services.selector.classifier.features import (
    CHAR_NGRAM_MAX,
    CHAR_NGRAM_MIN,
    char_ngrams,
    char_words,
    edge_ngrams,
    edge_tokens,
    word_char_ngrams,
    word_ngrams,
    word_tokens,
)

#: Bumped when the artefact layout changes; a different format is retrained, not misread.
ARTEFACT_FORMAT: Final = 1

Analyzer = Callable[[str], list[str]]

#: Feature blocks by name, in the order their columns are concatenated.
ANALYZERS: Mapping[str, Analyzer] = {"word": word_ngrams, "char": char_ngrams, "edge": edge_ngrams}

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.intp]

#: Words whose character n-gram columns are memoised per model (then the memo starts afresh), and
#: the longest word memoised: the memo stays under a few megabytes whatever the prompts.
MEMO_WORDS = 50_000
MEMO_WORD_CHARS = 32


class ArtefactError(Exception):
    """The model artefact is missing, unreadable or does not fit this code."""


@dataclass(frozen=True)
class FeatureBlock:
    """One TF-IDF block: an analyzer, its vocabulary (term -> column) and IDF weights."""

    name: str
    vocabulary: Mapping[str, int]
    idf: FloatArray
    offset: int
    """Column of this block's first feature in the concatenated vector."""
    _word_columns: dict[str, tuple[int, ...]] = field(default_factory=dict, compare=False, repr=False)
    """Memo for the character block: word -> global columns of its n-grams (bounded, see :data:`MEMO_WORDS`)."""
    _columns: Mapping[str, int] = field(init=False, compare=False, repr=False)
    """Term -> column in the concatenated vector (``vocabulary`` shifted by ``offset``)."""
    _closed: bool = field(init=False, compare=False, repr=False)
    """The vocabulary holds every shorter n-gram of its n-grams (see :func:`closed_under_parts`)."""

    def __post_init__(self) -> None:
        shifted = {t: c + self.offset for t, c in self.vocabulary.items()} if self.offset else self.vocabulary
        object.__setattr__(self, "_columns", shifted)
        object.__setattr__(self, "_closed", closed_under_parts(self.name, self.vocabulary))

    def term_counts(self, text: str) -> tuple[IntArray, FloatArray]:
        """Columns (within the block) of the known terms of ``text`` and their counts."""
        counts = self.column_counts(text)
        columns = np.fromiter(counts.keys(), dtype=np.intp, count=len(counts)) - self.offset
        return columns, np.fromiter(counts.values(), dtype=np.float64, count=len(counts))

    def column_counts(self, text: str) -> Counter[int | None]:
        """Column in the concatenated vector -> count, for the known terms of ``text`` (no ``None`` key)."""
        if self.name == "char":
            return self._char_counts(text)
        get = self._columns.get
        if not self._closed:  # every n-gram looked up (the analyzer's output as is)
            counts: Counter[int | None] = Counter(map(get, ANALYZERS[self.name](text)))
            counts.pop(None, None)
            return counts
        if self.name == "word":
            return Counter(_known_grams(get, word_tokens(text)))
        head, tail = edge_tokens(text)
        return Counter(_known_grams(get, head, "h:") + _known_grams(get, tail, "t:"))

    def _char_counts(self, text: str) -> Counter[int | None]:
        # Character n-grams never cross words, so a word's n-gram columns can be memoised: hashing one
        # word instead of ~20 freshly sliced n-grams makes this block several times faster. One
        # Counter over all the columns (C loop) beats updating a Counter word by word.
        memo = self._word_columns
        columns: list[int] = []
        for word in char_words(text):
            found = memo.get(word)
            if found is None:
                found = self._word_grams(word)
                if len(word) <= MEMO_WORD_CHARS:  # long "words" (hashes, URLs) rarely repeat
                    if len(memo) >= MEMO_WORDS:
                        memo.clear()
                    memo[word] = found
            columns += found
        return Counter(columns)

    def _word_grams(self, word: str) -> tuple[int, ...]:
        """Columns of the known character n-grams of one word, in :func:`word_char_ngrams` order."""
        get = self._columns.get
        if not self._closed:
            return tuple(c for c in map(get, word_char_ngrams(word)) if c is not None)
        # Words new to the memo are mostly numbers, identifiers and names in pasted material, whose
        # n-grams are mostly unknown. A longer n-gram is known only if its first n-1 characters are
        # (closed vocabulary), so each size only looks at the starts where the shorter one was known:
        # about a third of the look-ups, same columns in the same order.
        padded = f" {word} "
        size = len(padded)
        found: list[int] = []
        starts: range | list[int] = range(size - CHAR_NGRAM_MIN + 1)
        for n in range(CHAR_NGRAM_MIN, min(CHAR_NGRAM_MAX, size) + 1):
            hits: list[int] = []
            for i in starts:
                if i + n <= size:
                    column = get(padded[i : i + n])
                    if column is not None:
                        found.append(column)
                        hits.append(i)
            starts = hits
        return tuple(found)


def closed_under_parts(name: str, vocabulary: Mapping[str, int]) -> bool:
    """True when every term's parts are terms too: both words of a bigram, the first n-1 characters of an n-gram.

    Vocabularies cut by document frequency (``min_df``) always are: a document that contains a
    bigram contains its words. Inference then looks up a bigram only after both its words, and an
    n-gram only after its prefix (:meth:`FeatureBlock.column_counts`); a vocabulary that is not
    closed gets every n-gram looked up.
    """
    if name == "char":
        return all(t[:-1] in vocabulary for t in vocabulary if len(t) > CHAR_NGRAM_MIN)
    prefix = 2 if name == "edge" else 0  # "h:" / "t:"
    for term in vocabulary:
        words = term[prefix:].split(" ")
        if len(words) == 2 and not all(term[:prefix] + w in vocabulary for w in words):
            return False
    return True


def _known_grams(get: Callable[[str], int | None], tokens: list[str], prefix: str = "") -> list[int]:
    """Columns of the known unigrams, then of the known bigrams, of ``tokens`` (analyzer order)."""
    columns = list(map(get, [prefix + t for t in tokens] if prefix else tokens))
    found = [c for c in columns if c is not None]
    # Closed vocabulary: a bigram can be known only when both its words are.
    pairs = zip(tokens, tokens[1:], columns, columns[1:], strict=False)  # the shifted lists are one shorter
    bigrams = [f"{prefix}{a} {b}" for a, b, left, right in pairs if left is not None and right is not None]
    found += [c for c in map(get, bigrams) if c is not None]
    return found


@dataclass(frozen=True)
class LinearTextModel:
    """A fitted TF-IDF + linear model. Immutable but for a bounded memo; thread-safe (dict ops under the GIL)."""

    classes: tuple[str, ...]
    blocks: tuple[FeatureBlock, ...]
    weights: FloatArray
    """``(n_features, n_classes)``."""
    intercept: FloatArray
    """``(n_classes,)``."""
    scale: float
    """Softmax scale applied to the linear scores (inverse temperature)."""
    _idf: FloatArray = field(init=False, compare=False, repr=False)
    """The blocks' IDF weights concatenated, indexed by column."""

    def __post_init__(self) -> None:
        idf = [b.idf for b in self.blocks]
        object.__setattr__(self, "_idf", np.concatenate(idf) if idf else np.zeros(0, dtype=np.float64))

    @property
    def n_features(self) -> int:
        """Columns of the concatenated feature vector."""
        return int(self.weights.shape[0])

    def features(self, text: str) -> tuple[IntArray, FloatArray]:
        """Sparse TF-IDF vector of ``text``: (column indices, values)."""
        # All blocks in one pair of arrays: numpy calls on tiny arrays cost more than their arithmetic,
        # so a handful for the whole vector instead of a handful per block.
        columns: list[int] = []
        tfs: list[int] = []
        bounds: list[int] = []
        for block in self.blocks:
            counts = block.column_counts(text)
            columns += counts  # type: ignore[arg-type]  # column_counts has no None key
            tfs += counts.values()
            bounds.append(len(columns))
        if not columns:
            return np.zeros(0, dtype=np.intp), np.zeros(0, dtype=np.float64)
        # fromiter builds the arrays about a third faster than np.array(list).
        index = np.fromiter(columns, dtype=np.intp, count=len(columns))
        value = (1.0 + np.log(np.fromiter(tfs, dtype=np.float64, count=len(tfs)))) * self._idf[index]
        start = 0
        for end in bounds:
            if end > start:
                part = value[start:end]
                part /= math.sqrt(float(part @ part))
            start = end
        return index, value

    def scores(self, text: str) -> FloatArray:
        """Linear decision scores per class (``classes`` order)."""
        index, value = self.features(text)
        # take() gathers the rows faster than fancy indexing; the product is the same.
        return self.intercept + value @ self.weights.take(index, axis=0)

    def probabilities(self, text: str) -> dict[str, float]:
        """``softmax(scale · scores)`` per class; sums to 1."""
        # Nine numbers: plain Python is several times faster than numpy's per-call overhead here.
        logits = (self.scale * self.scores(text)).tolist()
        top = max(logits)
        exps = [math.exp(v - top) for v in logits]
        total = sum(exps)
        return {c: e / total for c, e in zip(self.classes, exps, strict=True)}

    # ----------------------------------------------------------------------------------------------
    # Artefact

    def save(self, path: Path) -> None:
        """Write the model to ``path`` (``.npz``, compressed, no pickle)."""
        arrays: dict[str, npt.NDArray[np.generic]] = {
            "format": np.array(ARTEFACT_FORMAT),
            "classes": _pack(self.classes),
            "blocks": _pack(tuple(b.name for b in self.blocks)),
            "weights": self.weights.astype(np.float64),
            "intercept": self.intercept.astype(np.float64),
            "scale": np.array(self.scale, dtype=np.float64),
        }
        for block in self.blocks:
            terms = sorted(block.vocabulary, key=block.vocabulary.__getitem__)
            arrays[f"vocabulary_{block.name}"] = _pack(terms)
            arrays[f"idf_{block.name}"] = block.idf
        path.parent.mkdir(parents=True, exist_ok=True)
        # np.savez_compressed stamps entries with the current time; fixed stamps make retraining
        # unchanged data reproduce the same bytes (no spurious diffs of the committed artefact).
        with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as archive:
            for name, array in arrays.items():
                info = zipfile.ZipInfo(f"{name}.npy", date_time=(1980, 1, 1, 0, 0, 0))
                info.compress_type = zipfile.ZIP_DEFLATED
                with archive.open(info, "w", force_zip64=True) as entry:
                    np.lib.format.write_array(entry, np.asanyarray(array), allow_pickle=False)

    @classmethod
    def load(cls, path: Path) -> LinearTextModel:
        """Read a model written by :meth:`save`. Raises :class:`ArtefactError` on any problem."""
        try:
            with np.load(path, allow_pickle=False) as npz:
                if int(npz["format"]) != ARTEFACT_FORMAT:
                    raise ArtefactError(f"artefact format {int(npz['format'])}, expected {ARTEFACT_FORMAT}")
                names = _unpack(npz["blocks"])
                blocks: list[FeatureBlock] = []
                offset = 0
                for name in names:
                    if name not in ANALYZERS:
                        raise ArtefactError(f"unknown feature block {name!r}")
                    terms = _unpack(npz[f"vocabulary_{name}"])
                    idf = np.asarray(npz[f"idf_{name}"], dtype=np.float64)
                    if len(terms) != idf.shape[0]:
                        raise ArtefactError(f"block {name!r}: {len(terms)} terms but {idf.shape[0]} idf weights")
                    blocks.append(FeatureBlock(name, dict(zip(terms, range(len(terms)), strict=True)), idf, offset))
                    offset += len(terms)
                model = cls(
                    classes=tuple(_unpack(npz["classes"])),
                    blocks=tuple(blocks),
                    weights=np.asarray(npz["weights"], dtype=np.float64),
                    intercept=np.asarray(npz["intercept"], dtype=np.float64),
                    scale=float(npz["scale"]),
                )
        except ArtefactError:
            raise
        except (OSError, KeyError, ValueError, UnicodeDecodeError, EOFError, zipfile.BadZipFile) as exc:
            raise ArtefactError(f"cannot read {path}: {exc}") from exc
        if model.weights.shape != (offset, len(model.classes)) or model.intercept.shape != (len(model.classes),):
            raise ArtefactError(f"weights {model.weights.shape} do not match {offset} features")
        return model


def softmax_dict(classes: Sequence[str], logits: FloatArray) -> dict[str, float]:
    """Numerically stable softmax of ``logits``, keyed by ``classes``."""
    exps = np.exp(logits - logits.max())
    total = float(exps.sum())
    return {c: float(e) / total for c, e in zip(classes, exps, strict=True)}


def _pack(terms: Sequence[str]) -> npt.NDArray[np.uint8]:
    """Strings as one UTF-8 byte array, newline-separated (no term contains a newline)."""
    if any("\n" in t for t in terms):
        raise ValueError("a term contains a newline")
    return np.frombuffer("\n".join(terms).encode("utf-8"), dtype=np.uint8)


def _unpack(data: npt.NDArray[np.generic]) -> list[str]:
    text = np.asarray(data, dtype=np.uint8).tobytes().decode("utf-8")
    return text.split("\n") if text else []
