"""Opening the configured stores: MongoDB when ``ORX_MONGODB_URI`` is set, else embedded SQLite.

Services call these instead of naming an implementation, so the backend is chosen in one place.
"""

from __future__ import annotations

import logging

from orchestratex.config import Settings
from orchestratex.store.analytics import SqliteAnalyticsStore
from orchestratex.store.analytics_model import AnalyticsStore
from orchestratex.store.mongo import MongoSessionStore
from orchestratex.store.mongo_analytics import MongoAnalyticsStore
from orchestratex.store.sessions import SessionStore, SqliteSessionStore

log = logging.getLogger(__name__)

# File names under ``settings.data_dir`` of the SQLite backend (backup and restore use them too).
SESSIONS_FILE = "orchestrator.db"
ANALYTICS_FILE = "analytics.db"


async def open_session_store(settings: Settings) -> SessionStore:
    """The orchestrator's store: :class:`MongoSessionStore` or :class:`SqliteSessionStore` (``orchestrator.db``)."""
    if settings.storage_backend == "mongodb":
        store = await MongoSessionStore.open(settings)
        log.info("session store: MongoDB database %s", settings.mongodb_database)
        return store
    return await SqliteSessionStore.open(settings.data_dir / SESSIONS_FILE)


async def open_analytics_store(settings: Settings) -> AnalyticsStore:
    """The analytics service's store: :class:`MongoAnalyticsStore` or :class:`SqliteAnalyticsStore`."""
    if settings.storage_backend == "mongodb":
        analytics = await MongoAnalyticsStore.open(settings)
        log.info("analytics store: MongoDB database %s", settings.mongodb_database)
        return analytics
    return await SqliteAnalyticsStore.open(settings.data_dir / ANALYTICS_FILE)
