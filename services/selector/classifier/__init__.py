"""Trained prompt-domain classifier: TF-IDF + linear model (scikit-learn) with a rule layer on top.

* :class:`TrainedClassifier` implements ``DomainClassifier`` (``version``, ``predict``) and
  ``ExplainingClassifier``; the selector uses it by default.
* :func:`load_trained_classifier` loads the committed artefact (``model/``), retraining from the
  shipped data (``data/train.jsonl``) when the artefact is missing or stale; :func:`default_classifier`
  does so once per process.
* Training (scikit-learn, imported only there) lives in :mod:`.training`;
  ``scripts/train_domain_classifier.py`` rebuilds the artefact, ``scripts/eval_domain_classifier.py``
  evaluates it on a labelled JSONL file.
"""

from __future__ import annotations

from services.selector.classifier.artefact import DATA_PATH, MODEL_DIR
from services.selector.classifier.classifier import (
    TrainedClassifier,
    default_classifier,
    load_trained_classifier,
    read_artefact,
)
from services.selector.classifier.model import ArtefactError, LinearTextModel
from services.selector.classifier.rules import RULES, RuleLayer, SignalRule

__all__ = [
    "DATA_PATH",
    "MODEL_DIR",
    "RULES",
    "ArtefactError",
    "LinearTextModel",
    "RuleLayer",
    "SignalRule",
    "TrainedClassifier",
    "default_classifier",
    "load_trained_classifier",
    "read_artefact",
]
