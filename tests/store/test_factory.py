"""The factory picks the backend from the settings: SQLite by default, MongoDB when a URI is set."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from orchestratex.config import Settings
from orchestratex.store import mongo
from services.analytics.store import open_analytics_store
from services.analytics.store.mongo import MongoAnalyticsStore
from services.analytics.store.sqlite import SqliteAnalyticsStore
from services.orchestrator.store import open_session_store
from services.orchestrator.store.mongo import MongoSessionStore
from services.orchestrator.store.sqlite import SqliteSessionStore
from tests.store.mongo_double import AsyncClientDouble


async def test_sqlite_by_default(tmp_path: Path) -> None:
    settings = Settings.from_env({"ORX_DATA_DIR": str(tmp_path)})
    sessions = await open_session_store(settings)
    analytics = await open_analytics_store(settings)
    assert isinstance(sessions, SqliteSessionStore) and isinstance(analytics, SqliteAnalyticsStore)
    assert (tmp_path / "orchestrator.db").is_file() and (tmp_path / "analytics.db").is_file()
    await sessions.close()
    await analytics.close()


async def test_mongodb_when_a_uri_is_set(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    apps: list[str] = []
    clients: list[AsyncClientDouble] = []

    async def fake_connect(settings: Settings, appname: str) -> Any:
        apps.append(appname)
        clients.append(AsyncClientDouble())
        return clients[-1]

    monkeypatch.setattr(mongo, "connect", fake_connect)
    settings = Settings.from_env({"ORX_DATA_DIR": str(tmp_path / "d"), "ORX_MONGODB_URI": "mongodb://db:27017"})
    sessions = await open_session_store(settings)
    analytics = await open_analytics_store(settings)
    assert isinstance(sessions, MongoSessionStore) and isinstance(analytics, MongoAnalyticsStore)
    assert apps == ["orchestratex-orchestrator", "orchestratex-analytics"]
    assert not (tmp_path / "d").exists()  # nothing written locally
    await sessions.close()
    await analytics.close()
    assert all(c.closed for c in clients)
