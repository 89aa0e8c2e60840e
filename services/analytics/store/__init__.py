"""The analytics service's storage.

:class:`~services.analytics.store.model.AnalyticsStore` is the backend-neutral interface (and the
ingest model). The logic is written once: :mod:`.buckets` (the time-bucketing scheme), :mod:`.counters`
(named counters, and counter rows to reports) and :mod:`.planner` (write plans). :mod:`.sqlite` (embedded,
schema in :mod:`.sqlite_migrations`) and :mod:`.mongo` are thin adapters over them.
:func:`open_analytics_store` picks one from the settings.
"""

from __future__ import annotations

import logging

from orchestratex.config import Settings
from orchestratex.store.sqlite import ANALYTICS_FILE
from services.analytics.store.model import AnalyticsStore
from services.analytics.store.mongo import MongoAnalyticsStore
from services.analytics.store.sqlite import SqliteAnalyticsStore

log = logging.getLogger(__name__)


async def open_analytics_store(settings: Settings) -> AnalyticsStore:
    """:class:`MongoAnalyticsStore` when ``ORX_MONGODB_URI`` is set, else :class:`SqliteAnalyticsStore`
    (``analytics.db`` under the data directory)."""
    if settings.common.storage_backend == "mongodb":
        analytics = await MongoAnalyticsStore.open(settings)
        log.info("analytics store: MongoDB database %s", settings.common.mongodb.database)
        return analytics
    return await SqliteAnalyticsStore.open(settings.common.data_dir / ANALYTICS_FILE)
