"""Measured performance per (model, domain), fetched from analytics and refreshed in the background.

``SelectModels`` never waits for analytics. It reads the last snapshot, or nothing before the first
one arrives. When analytics cannot be reached, selection degrades to the catalogue priors and says so
in a warning; it never fails because of analytics.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import time
from collections.abc import Awaitable, Callable, Mapping

import grpc

from orchestratex import domains
from orchestratex.v1 import analytics_pb2, analytics_pb2_grpc
from services.selector.ranking import HistoryStats

log = logging.getLogger(__name__)

History = Mapping[tuple[str, str], HistoryStats]
Fetch = Callable[[], Awaitable[History]]


def history_from_proto(resp: analytics_pb2.GetModelPerformanceResponse) -> dict[tuple[str, str], HistoryStats]:
    """Per (model, domain): mean critique score received as author (0-10 → 0-1), its count, success rate."""
    out: dict[tuple[str, str], HistoryStats] = {}
    for row in resp.by_domain:
        domain = domains.from_proto(row.domain) if row.domain else ""
        if not domain or row.critiques_received <= 0 or not math.isfinite(row.mean_score_as_author):
            continue
        success = row.success_rate if row.calls > 0 and math.isfinite(row.success_rate) else 1.0
        out[(row.model, domain)] = HistoryStats(
            mean_quality=min(1.0, max(0.0, row.mean_score_as_author / 10)),
            samples=int(row.critiques_received),
            success_rate=min(1.0, max(0.0, success)),
        )
    return out


def analytics_fetcher(stub: analytics_pb2_grpc.AnalyticsServiceStub, timeout: float) -> Fetch:
    """Fetch the last 30 days of per-domain performance (all tenants: learning is global)."""

    async def fetch() -> History:
        resp = await stub.GetModelPerformance(analytics_pb2.GetModelPerformanceRequest(), timeout=timeout)
        return history_from_proto(resp)

    return fetch


class HistoryCache:
    """The latest history snapshot and a background refresher."""

    def __init__(self, fetch: Fetch, *, interval: float) -> None:
        self._fetch = fetch
        self._interval = interval
        self._snapshot: History | None = None
        self._fetched_at = 0.0
        self._failing = False
        self._task: asyncio.Task[None] | None = None
        self.refreshed = asyncio.Event()

    def start(self) -> None:
        """Begin refreshing (the first fetch starts at once)."""
        self._task = asyncio.get_running_loop().create_task(self._run(), name="history-refresh")

    async def close(self) -> None:
        """Stop refreshing."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    @property
    def snapshot(self) -> History | None:
        """The last history fetched, or None before the first success."""
        return self._snapshot

    def warning(self) -> str | None:
        """Why selection is running on priors only (or on old history), if it is."""
        if self._snapshot is None:
            return "analytics unavailable: ranking on catalogue priors only (no performance history yet)"
        if self._failing:
            age = time.monotonic() - self._fetched_at
            return f"analytics unavailable: using performance history from {age:.0f}s ago"
        return None

    async def refresh(self) -> None:
        """Fetch once now (used by the background task and by tests)."""
        try:
            snapshot = await self._fetch()
        except grpc.aio.AioRpcError as err:
            if not self._failing:
                log.warning("cannot fetch performance history from analytics: %s", err.code().name)
            self._failing = True
            return
        self._snapshot = snapshot
        self._fetched_at = time.monotonic()
        self._failing = False
        self.refreshed.set()
        self.refreshed = asyncio.Event()

    async def _run(self) -> None:
        while True:
            try:
                await self.refresh()
            except Exception:
                log.exception("performance history refresh failed")
            await asyncio.sleep(self._interval)
