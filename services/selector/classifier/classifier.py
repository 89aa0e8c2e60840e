"""The trained domain classifier: learned TF-IDF model + rule layer, loaded once from the artefact.

:func:`load_trained_classifier` reads ``model/domain_model.npz`` and ``model/metadata.json``. It
checks that the metadata belongs to this artefact (its SHA-256), to this code (format, classes) and
to the shipped training data (the data file's SHA-256), and it recomputes the scores of a few probe
prompts recorded at training, which catches a change of the feature code without a rebuild. When a
check fails, or the artefact is missing (e.g. an install that did not ship ``*.npz``), it logs a
warning and retrains in-process from ``data/train.jsonl`` with the same recipe and seed (a few
seconds; needs scikit-learn). A different scikit-learn version alone is only noted: serving does not
use scikit-learn, and the features are this package's own code, so the artefact means the same thing
under any version (the probes prove it at every load).

Loading takes a few tens of milliseconds (decompressing and indexing the vocabularies): call it
once, off the event loop (``await asyncio.to_thread(load_trained_classifier)``).
"""

from __future__ import annotations

import functools
import hashlib
import importlib.metadata
import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from orchestratex.domains import DOMAINS
from services.selector.classifier.artefact import DATA_PATH, METADATA_FILE, MODEL_DIR, MODEL_FILE, data_sha256
from services.selector.classifier.model import ARTEFACT_FORMAT, ArtefactError, LinearTextModel
from services.selector.classifier.rules import RuleLayer

log = logging.getLogger(__name__)

#: Domains whose model probability is at least this get a reason even without a rule firing.
_REASON_THRESHOLD = 0.05
#: Largest difference allowed between a probe's recorded and recomputed scores (float noise only).
PROBE_TOLERANCE = 1e-9


@dataclass(frozen=True)
class TrainedClassifier:
    """A :class:`~services.selector.analysis.DomainClassifier` backed by the trained model.

    Immutable and thread-safe. ``predict_with_reasons`` makes it an ``ExplainingClassifier``: each
    domain's reason gives the model's own probability and the rules that moved it.
    """

    model: LinearTextModel
    version: str
    rules: RuleLayer = field(default_factory=RuleLayer)

    def predict(self, prompt: str) -> dict[str, float]:
        """Probability of each of the nine domains (sums to 1)."""
        return self.predict_with_reasons(prompt)[0]

    def predict_with_reasons(self, prompt: str) -> tuple[dict[str, float], dict[str, str]]:
        """Probabilities after the rule layer, and per domain with evidence a short reason."""
        learned = self.model.probabilities(prompt)
        fired = self.rules.fire(prompt)
        probabilities = self.rules.apply(learned, fired)
        reasons: dict[str, str] = {}
        for domain in DOMAINS:
            labels = [f"{r.label} (+{r.weight:g})" for r in fired if r.domain == domain]
            if not labels and learned[domain] < _REASON_THRESHOLD:
                continue
            reason = f"model {learned[domain]:.2f}"
            reasons[domain] = reason + ("; rules: " + ", ".join(labels) if labels else "")
        return probabilities, reasons


def load_trained_classifier(model_dir: Path = MODEL_DIR, data_path: Path = DATA_PATH) -> TrainedClassifier:
    """The classifier from ``model_dir``, or retrained from ``data_path`` if the artefact is unusable.

    Raises :class:`ArtefactError` only when neither works (no usable artefact and no training data).
    """
    try:
        return read_artefact(model_dir, data_path)
    except ArtefactError as exc:
        if _data_hash(data_path) is None:
            raise ArtefactError(f"{exc}; and no training data at {data_path} to retrain from") from exc
        log.warning("domain classifier artefact unusable (%s); retraining from %s", exc, data_path)
    # Imported here, not at the top: only retraining needs scikit-learn (about a second to import).
    from services.selector.classifier.training import train_from_file  # noqa: PLC0415

    rules = RuleLayer()
    result = train_from_file(data_path, scale=_recorded_scale(model_dir, data_path))
    return TrainedClassifier(result.model, f"{result.spec.model_version}+rules-{rules.revision}", rules)


def read_artefact(model_dir: Path = MODEL_DIR, data_path: Path = DATA_PATH) -> TrainedClassifier:
    """The classifier from ``model_dir`` exactly as built; :class:`ArtefactError` if it is unusable or stale.

    Stale means trained on other data than ``data_path`` (when that file exists) or with other
    feature code (the recorded probe scores differ).
    """
    rules = RuleLayer()
    model, metadata = _load_artefact(model_dir, _data_hash(data_path))
    return TrainedClassifier(model, f"{metadata['model_version']}+rules-{rules.revision}", rules)


@functools.cache
def default_classifier() -> TrainedClassifier:
    """The shipped classifier, loaded on first use and shared by the process (it is immutable)."""
    return load_trained_classifier()


def _data_hash(path: Path) -> str | None:
    try:
        return data_sha256(path)
    except OSError:
        return None


def _recorded_scale(model_dir: Path, data_path: Path) -> float | None:
    """The softmax scale in the metadata if it was fitted on this very data (saves the CV on retrain)."""
    try:
        metadata = json.loads((model_dir / METADATA_FILE).read_text(encoding="utf-8"))
        if metadata["data_sha256"] == data_sha256(data_path) and float(metadata["scale"]) > 0:
            return float(metadata["scale"])
    except (OSError, ValueError, KeyError, TypeError):
        pass
    return None


def _load_artefact(model_dir: Path, data_hash: str | None) -> tuple[LinearTextModel, dict[str, Any]]:
    model_path = model_dir / MODEL_FILE
    try:
        payload = model_path.read_bytes()
        metadata = json.loads((model_dir / METADATA_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ArtefactError(f"cannot read the artefact in {model_dir}: {exc}") from exc
    if not isinstance(metadata, dict):
        raise ArtefactError("metadata is not a JSON object")
    if metadata.get("format") != ARTEFACT_FORMAT:
        raise ArtefactError(f"metadata format {metadata.get('format')!r}, expected {ARTEFACT_FORMAT}")
    if metadata.get("artefact_sha256") != hashlib.sha256(payload).hexdigest():
        raise ArtefactError("metadata does not describe this model file (SHA-256 differs)")
    if data_hash is not None and metadata.get("data_sha256") != data_hash:
        raise ArtefactError("the model was trained on different data (training-data SHA-256 differs)")
    if tuple(metadata.get("classes", ())) != DOMAINS or not isinstance(metadata.get("model_version"), str):
        raise ArtefactError("metadata classes or version do not match this code")
    model = LinearTextModel.load(model_path)
    if model.classes != DOMAINS:
        raise ArtefactError(f"model classes {model.classes} are not {DOMAINS}")
    _check_probes(model, metadata.get("probes"))
    _note_version_drift(metadata)
    return model, metadata


def _check_probes(model: LinearTextModel, probes: object) -> None:
    """The scores recorded at training must come out again: else the feature code has changed since."""
    if not isinstance(probes, list) or not probes:
        raise ArtefactError("metadata has no probe predictions")
    for probe in probes:
        try:
            expected = [float(v) for v in probe["scores"]]
            actual = model.scores(str(probe["prompt"])).tolist()
        except (TypeError, KeyError, ValueError) as exc:
            raise ArtefactError(f"malformed probe in metadata: {exc}") from exc
        if len(actual) != len(expected) or any(
            abs(a - e) > PROBE_TOLERANCE for a, e in zip(actual, expected, strict=True)
        ):
            raise ArtefactError("probe predictions differ: the feature code changed since the artefact was built")


def _note_version_drift(metadata: dict[str, Any]) -> None:
    try:
        installed = importlib.metadata.version("scikit-learn")
    except importlib.metadata.PackageNotFoundError:
        return
    if installed != metadata.get("sklearn_version"):
        log.info(
            "domain model trained with scikit-learn %s, %s installed; inference does not depend on it",
            metadata.get("sklearn_version"),
            installed,
        )
