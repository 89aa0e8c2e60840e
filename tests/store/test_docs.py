"""docs/storage.md lists every MongoDB index with the query it serves; keep it in step with the code."""

from __future__ import annotations

from pathlib import Path

from services.analytics.store.mongo import ANALYTICS_INDEXES
from services.orchestrator.store.mongo import SESSION_INDEXES

DOC = Path(__file__).resolve().parents[2] / "docs" / "storage.md"


def test_every_index_is_documented_with_its_query() -> None:
    text = DOC.read_text(encoding="utf-8")
    for spec in (*SESSION_INDEXES, *ANALYTICS_INDEXES):
        keys = ", ".join(f"{k}: {v}" for k, v in spec.keys)
        row = (
            f"| `{spec.collection}` | `{spec.name}` | `{{{keys}}}`{' unique' if spec.unique else ''} | {spec.serves} |"
        )
        assert row in text, f"docs/storage.md lacks: {row}"


def test_motor_end_of_life_is_stated() -> None:
    text = DOC.read_text(encoding="utf-8")
    assert "AsyncMongoClient" in text and "2026-05-14" in text
