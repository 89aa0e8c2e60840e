"""Where the shipped artefact and its training data live, and the fingerprint of a training file.

Shared by loading (:mod:`.classifier`) and training (:mod:`.training`), which both name these files;
neither imports the other for them.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

PACKAGE_DIR = Path(__file__).resolve().parent
DATA_PATH = PACKAGE_DIR / "data" / "train.jsonl"
MODEL_DIR = PACKAGE_DIR / "model"
MODEL_FILE = "domain_model.npz"
METADATA_FILE = "metadata.json"


def data_sha256(path: Path) -> str:
    """SHA-256 of a training file, CRLF normalised to LF (a checkout may convert line ends)."""
    return hashlib.sha256(path.read_bytes().replace(b"\r\n", b"\n")).hexdigest()
