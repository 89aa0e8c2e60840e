"""Training the domain model with scikit-learn: data, model specification, cross-validation, fit, export.

Only training imports scikit-learn; serving loads the exported :class:`LinearTextModel` with numpy.
Everything is deterministic for a given seed, data file and library versions: the folds are
shuffled with the seed, the estimators get it as ``random_state``, and the artefact is written with
fixed zip timestamps so that retraining unchanged data reproduces the same bytes.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import platform
import time
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
from sklearn import __version__ as sklearn_version  # type: ignore[import-untyped]
from sklearn.feature_extraction.text import TfidfVectorizer  # type: ignore[import-untyped]
from sklearn.linear_model import LogisticRegression  # type: ignore[import-untyped]
from sklearn.metrics import f1_score  # type: ignore[import-untyped]
from sklearn.model_selection import StratifiedKFold  # type: ignore[import-untyped]
from sklearn.pipeline import FeatureUnion, Pipeline  # type: ignore[import-untyped]
from sklearn.svm import LinearSVC  # type: ignore[import-untyped]

from orchestratex.domains import DOMAINS
from services.selector.classifier.artefact import DATA_PATH, METADATA_FILE, MODEL_DIR, MODEL_FILE, data_sha256
from services.selector.classifier.model import (
    ANALYZERS,
    ARTEFACT_FORMAT,
    FeatureBlock,
    FloatArray,
    LinearTextModel,
    softmax_dict,
)
from services.selector.classifier.rules import RULES_REVISION, RuleLayer

log = logging.getLogger(__name__)

SEED = 20240607
CV_FOLDS = 5

#: Bumped when the features or the training recipe change (part of the classifier version).
MODEL_REVISION = 1

Estimator = Literal["linearsvc", "logreg"]


@dataclass(frozen=True)
class ModelSpec:
    """Hyper-parameters of the pipeline: TF-IDF blocks + a linear classifier."""

    estimator: Estimator = "linearsvc"
    c: float = 2.0
    """Inverse regularisation strength."""
    min_df: int = 2
    """Terms seen in fewer training prompts are dropped (smaller artefact, less overfitting)."""
    blocks: tuple[str, ...] = ("word", "char", "edge")

    @property
    def model_version(self) -> str:
        """Version of the learned part, e.g. ``tfidf-svm-1``."""
        short = {"linearsvc": "svm", "logreg": "lr"}[self.estimator]
        return f"tfidf-{short}-{MODEL_REVISION}"

    @property
    def version(self) -> str:
        """Classifier version for this spec with the current rule layer, e.g. ``tfidf-svm-1+rules-1``."""
        return f"{self.model_version}+rules-{RULES_REVISION}"


#: Chosen by stratified 5-fold cross-validation on the project's own data only
#: (``scripts/train_domain_classifier.py --search`` prints the grid): the best macro-F1 of the grid,
#: ties (within half a point) going to fewer features and stronger regularisation. LinearSVC matched
#: or beat logistic regression and trains five times faster; its scores become probabilities through
#: a softmax whose scale is fitted on the held-out folds (:func:`fit_scale`).
DEFAULT_SPEC = ModelSpec()

SEARCH_GRID: tuple[ModelSpec, ...] = (
    ModelSpec("linearsvc", 0.5, min_df=1),
    ModelSpec("linearsvc", 1.0, min_df=1),
    ModelSpec("linearsvc", 2.0, min_df=1),
    ModelSpec("linearsvc", 4.0, min_df=1),
    ModelSpec("linearsvc", 1.0, min_df=2),
    ModelSpec("linearsvc", 2.0, min_df=2),
    ModelSpec("linearsvc", 4.0, min_df=2),
    ModelSpec("linearsvc", 2.0, min_df=2, blocks=("word", "char")),
    ModelSpec("logreg", 30.0, min_df=2),
    ModelSpec("logreg", 100.0, min_df=2),
)


# --------------------------------------------------------------------------------------------------
# Data


@dataclass(frozen=True)
class Example:
    """One labelled training prompt."""

    id: str
    domain: str
    prompt: str


def load_examples(path: Path) -> list[Example]:
    """Read a JSONL file of ``{"id", "domain", "prompt"}`` rows; labels must be known domains."""
    examples: list[Example] = []
    with path.open(encoding="utf-8") as file:
        for number, line in enumerate(file, 1):
            if not line.strip():
                continue
            row = json.loads(line)
            domain, prompt = row.get("domain"), row.get("prompt")
            if domain not in DOMAINS or not isinstance(prompt, str) or not prompt.strip():
                raise ValueError(f"{path}:{number}: needs a known domain and a non-empty prompt")
            examples.append(Example(str(row.get("id", number)), domain, prompt))
    return examples


# --------------------------------------------------------------------------------------------------
# Pipeline


def build_pipeline(spec: ModelSpec, seed: int = SEED) -> Pipeline:
    """An unfitted scikit-learn pipeline for ``spec``."""
    union = FeatureUnion(
        [
            (
                name,
                TfidfVectorizer(
                    analyzer=ANALYZERS[name], sublinear_tf=True, min_df=spec.min_df, token_pattern=None, lowercase=False
                ),
            )
            for name in spec.blocks
        ]
    )
    if spec.estimator == "linearsvc":
        classifier: Any = LinearSVC(C=spec.c, random_state=seed, max_iter=10_000)
    else:
        classifier = LogisticRegression(C=spec.c, random_state=seed, max_iter=10_000)
    return Pipeline([("features", union), ("classifier", classifier)])


def decision_scores(pipeline: Pipeline, texts: Sequence[str]) -> FloatArray:
    """Decision scores of a fitted pipeline, columns in :data:`DOMAINS` order."""
    raw = np.asarray(pipeline.decision_function(list(texts)), dtype=np.float64)
    order = [list(pipeline.classes_).index(d) for d in DOMAINS]
    return raw[:, order]


def export(pipeline: Pipeline, scale: float) -> LinearTextModel:
    """The fitted ``pipeline`` as a :class:`LinearTextModel` (classes in :data:`DOMAINS` order)."""
    union: FeatureUnion = pipeline.named_steps["features"]
    estimator = pipeline.named_steps["classifier"]
    order = [list(estimator.classes_).index(d) for d in DOMAINS]
    blocks: list[FeatureBlock] = []
    offset = 0
    for name, vectorizer in union.transformer_list:
        vocabulary = {str(term): int(column) for term, column in vectorizer.vocabulary_.items()}
        blocks.append(FeatureBlock(name, vocabulary, np.asarray(vectorizer.idf_, dtype=np.float64), offset))
        offset += len(vocabulary)
    weights = np.ascontiguousarray(np.asarray(estimator.coef_, dtype=np.float64)[order].T)
    intercept = np.asarray(estimator.intercept_, dtype=np.float64)[order]
    return LinearTextModel(DOMAINS, tuple(blocks), weights, intercept, scale)


# --------------------------------------------------------------------------------------------------
# Cross-validation and calibration


def fit_scale(scores: FloatArray, labels: Sequence[str]) -> float:
    """The softmax scale minimising the log loss of ``scores`` (held-out) against ``labels``."""
    target = np.array([DOMAINS.index(y) for y in labels])

    def loss(log_scale: float) -> float:
        z = scores * math.exp(log_scale)
        z = z - z.max(axis=1, keepdims=True)
        log_p = z - np.log(np.exp(z).sum(axis=1, keepdims=True))
        return float(-log_p[np.arange(len(target)), target].mean())

    # Golden-section search on log(scale) in [ln 0.05, ln 100]; the loss is unimodal in practice.
    lo, hi = math.log(0.05), math.log(100.0)
    ratio = (math.sqrt(5) - 1) / 2
    a, b = hi - ratio * (hi - lo), lo + ratio * (hi - lo)
    fa, fb = loss(a), loss(b)
    for _ in range(60):
        if fa < fb:
            hi, b, fb = b, a, fa
            a = hi - ratio * (hi - lo)
            fa = loss(a)
        else:
            lo, a, fa = a, b, fb
            b = lo + ratio * (hi - lo)
            fb = loss(b)
    return round(math.exp((lo + hi) / 2), 6)


@dataclass(frozen=True)
class CrossValidation:
    """Out-of-fold results on the training data."""

    folds: int
    macro_f1: float
    accuracy: float
    macro_f1_with_rules: float
    accuracy_with_rules: float
    log_loss: float
    scale: float
    per_domain_f1: Mapping[str, float] = field(default_factory=dict)
    per_domain_f1_with_rules: Mapping[str, float] = field(default_factory=dict)


def cross_validate(
    examples: Sequence[Example], spec: ModelSpec = DEFAULT_SPEC, folds: int = CV_FOLDS, seed: int = SEED
) -> CrossValidation:
    """Stratified k-fold CV (shuffled with ``seed``): macro-F1 without and with the rule layer."""
    texts = [e.prompt for e in examples]
    labels = [e.domain for e in examples]
    scores = np.zeros((len(texts), len(DOMAINS)))
    splitter = StratifiedKFold(n_splits=folds, shuffle=True, random_state=seed)
    for train_index, test_index in splitter.split(texts, labels):
        pipeline = build_pipeline(spec, seed).fit([texts[i] for i in train_index], [labels[i] for i in train_index])
        scores[test_index] = decision_scores(pipeline, [texts[i] for i in test_index])
    scale = fit_scale(scores, labels)
    layer = RuleLayer()
    plain: list[str] = []
    ruled: list[str] = []
    log_loss = 0.0
    for text, label, row in zip(texts, labels, scores, strict=True):
        probabilities = softmax_dict(DOMAINS, scale * row)
        log_loss -= math.log(max(probabilities[label], 1e-12))
        plain.append(max(DOMAINS, key=probabilities.__getitem__))
        adjusted = layer.apply(probabilities, layer.fire(text))
        ruled.append(max(DOMAINS, key=adjusted.__getitem__))
    return CrossValidation(
        folds=folds,
        macro_f1=_macro_f1(labels, plain),
        accuracy=_accuracy(labels, plain),
        macro_f1_with_rules=_macro_f1(labels, ruled),
        accuracy_with_rules=_accuracy(labels, ruled),
        log_loss=round(log_loss / len(texts), 4),
        scale=scale,
        per_domain_f1=_per_domain_f1(labels, plain),
        per_domain_f1_with_rules=_per_domain_f1(labels, ruled),
    )


def _macro_f1(labels: Sequence[str], predicted: Sequence[str]) -> float:
    return round(float(f1_score(labels, predicted, labels=list(DOMAINS), average="macro", zero_division=0)), 4)


def _per_domain_f1(labels: Sequence[str], predicted: Sequence[str]) -> dict[str, float]:
    values = f1_score(labels, predicted, labels=list(DOMAINS), average=None, zero_division=0)
    return {d: round(float(v), 4) for d, v in zip(DOMAINS, values, strict=True)}


def _accuracy(labels: Sequence[str], predicted: Sequence[str]) -> float:
    return round(sum(a == b for a, b in zip(labels, predicted, strict=True)) / len(labels), 4)


# --------------------------------------------------------------------------------------------------
# Training


@dataclass(frozen=True)
class TrainingResult:
    """A fitted model and what describes it."""

    model: LinearTextModel
    spec: ModelSpec
    cv: CrossValidation | None
    metadata: dict[str, Any]


def train(
    examples: Sequence[Example],
    spec: ModelSpec = DEFAULT_SPEC,
    *,
    seed: int = SEED,
    data_hash: str = "",
    cv: CrossValidation | None = None,
    scale: float | None = None,
) -> TrainingResult:
    """Fit ``spec`` on all ``examples``.

    The softmax scale comes from ``cv`` when given, else ``scale``, else a quick cross-validation
    (which is what a load-time retrain does, so it matches the shipped artefact).
    """
    started = time.perf_counter()
    if cv is None and scale is None:
        cv = cross_validate(examples, spec, seed=seed)
    final_scale = cv.scale if cv is not None else float(scale or 1.0)
    pipeline = build_pipeline(spec, seed).fit([e.prompt for e in examples], [e.domain for e in examples])
    model = export(pipeline, final_scale)
    metadata: dict[str, Any] = {
        "format": ARTEFACT_FORMAT,
        "model_version": spec.model_version,
        "version": spec.version,
        "spec": asdict(spec),
        "seed": seed,
        "scale": final_scale,
        "classes": list(DOMAINS),
        "n_features": {b.name: len(b.vocabulary) for b in model.blocks},
        "data_sha256": data_hash,
        "examples": len(examples),
        "examples_per_domain": dict(sorted(Counter(e.domain for e in examples).items())),
        "sklearn_version": sklearn_version,
        "numpy_version": np.__version__,
        "python_version": platform.python_version(),
        "cv": asdict(cv) if cv is not None else None,
        "probes": [{"prompt": text, "scores": model.scores(text).tolist()} for text in probe_prompts(examples)],
    }
    log.info("trained domain model %s in %.1f s", spec.version, time.perf_counter() - started)
    return TrainingResult(model, spec, cv, metadata)


def probe_prompts(examples: Sequence[Example]) -> list[str]:
    """Per domain its first and its longest example: the artefact stores their scores so that a load can
    tell whether the feature code still matches the one that built it."""
    chosen: list[str] = []
    for domain in DOMAINS:
        prompts = [e.prompt for e in examples if e.domain == domain]
        chosen += [prompts[0], max(prompts, key=len)] if prompts else []
    return chosen


def train_from_file(
    path: Path = DATA_PATH, spec: ModelSpec = DEFAULT_SPEC, seed: int = SEED, scale: float | None = None
) -> TrainingResult:
    """Load ``path`` and :func:`train` on it; the softmax ``scale`` is cross-validated unless given."""
    return train(load_examples(path), spec, seed=seed, data_hash=data_sha256(path), scale=scale)


def write_artefact(result: TrainingResult, model_dir: Path = MODEL_DIR) -> tuple[Path, Path]:
    """Write the model and its metadata (with the model file's SHA-256) into ``model_dir``."""
    model_path = model_dir / MODEL_FILE
    result.model.save(model_path)
    metadata = dict(result.metadata, artefact_sha256=hashlib.sha256(model_path.read_bytes()).hexdigest())
    metadata_path = model_dir / METADATA_FILE
    metadata_path.write_text(json.dumps(metadata, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    return model_path, metadata_path
