"""The orchestrator's storage: session records and event logs.

:class:`~services.orchestrator.store.base.SessionStore` is the backend-neutral interface;
:mod:`.sqlite` is the embedded implementation and :mod:`.mongo` the MongoDB one.
:func:`open_session_store` picks one from the settings, so the backend is chosen in one place.
"""

from __future__ import annotations

import logging

from orchestratex.config import Settings
from orchestratex.store.sqlite import SESSIONS_FILE
from services.orchestrator.store.base import SessionStore
from services.orchestrator.store.mongo import MongoSessionStore
from services.orchestrator.store.sqlite import SqliteSessionStore

log = logging.getLogger(__name__)


async def open_session_store(settings: Settings) -> SessionStore:
    """:class:`MongoSessionStore` when ``ORX_MONGODB_URI`` is set, else :class:`SqliteSessionStore`
    (``orchestrator.db`` under the data directory)."""
    if settings.common.storage_backend == "mongodb":
        store = await MongoSessionStore.open(settings)
        log.info("session store: MongoDB database %s", settings.common.mongodb.database)
        return store
    return await SqliteSessionStore.open(settings.common.data_dir / SESSIONS_FILE)
