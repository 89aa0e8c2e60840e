"""The model catalogue as the selector sees it: fetched from the providers service, cached, refreshed.

``SelectModels`` must not wait on the network on its hot path, so :class:`CatalogueCache` keeps the
last good catalogue in memory and a background task refreshes it every few seconds (circuit states
change quickly). Only a call that finds no catalogue at all waits, for one shared fetch, with a
timeout; if the providers service cannot be reached then, the call fails with UNAVAILABLE.
A failed refresh keeps serving the previous catalogue and reports its age as a warning.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import math
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from types import MappingProxyType

import grpc

from orchestratex import domains
from orchestratex.errors import Unavailable
from orchestratex.v1 import common_pb2, providers_pb2, providers_pb2_grpc
from services.selector.ranking import Circuit, ModelEntry

log = logging.getLogger(__name__)

#: Seconds between background refreshes.
DEFAULT_REFRESH_INTERVAL = 3.0

_CIRCUITS = {
    common_pb2.CIRCUIT_STATE_CLOSED: Circuit.CLOSED,
    common_pb2.CIRCUIT_STATE_OPEN: Circuit.OPEN,
    common_pb2.CIRCUIT_STATE_HALF_OPEN: Circuit.HALF_OPEN,
}


@dataclass(frozen=True)
class Catalogue:
    """One snapshot of the catalogue."""

    models: tuple[ModelEntry, ...]
    fetched_at: float
    """``time.monotonic()`` when it was received."""
    simulated: bool = False

    # Computed once per snapshot (every request needs them; a snapshot lives for seconds).
    @functools.cached_property
    def ids(self) -> frozenset[str]:
        """The model ids."""
        return frozenset(m.id for m in self.models)

    @functools.cached_property
    def _windows(self) -> Mapping[str, int]:
        return MappingProxyType({m.id: m.context_length for m in self.models})

    def context_windows(self) -> Mapping[str, int]:
        """Model id -> context window in tokens (read-only)."""
        return self._windows


Fetch = Callable[[], Awaitable[Catalogue]]


def _number(value: float) -> float:
    """Catalogue numbers are trusted only as far as being finite and non-negative."""
    return value if math.isfinite(value) and value > 0 else 0.0


def model_from_proto(info: common_pb2.ModelInfo) -> ModelEntry:
    """Convert one ``ModelInfo``; specialties for unknown domains are skipped."""
    specialties: dict[str, float] = {}
    for score in info.specialties:
        try:
            name = domains.from_proto(score.domain)
        except ValueError:  # a domain added after this build
            continue
        if name and math.isfinite(score.score):
            specialties[name] = score.score
    health = info.health
    return ModelEntry(
        id=info.id,
        family=info.family,
        context_length=max(0, info.context_length),
        input_price_per_mtok=_number(info.input_price_per_mtok),
        output_price_per_mtok=_number(info.output_price_per_mtok),
        specialties=specialties,
        typical_ttft_s=_number(info.typical_ttft.seconds + info.typical_ttft.nanos / 1e9),
        tokens_per_second=_number(info.typical_tokens_per_second),
        circuit=_CIRCUITS.get(health.circuit_state, Circuit.UNKNOWN),
        cooldown_remaining_s=_number(health.cooldown_remaining.seconds + health.cooldown_remaining.nanos / 1e9),
        max_output_tokens=max(0, info.max_output_tokens),
        display_name=info.display_name,
        provider=info.provider,
        simulated=info.simulated,
        supports_structured_outputs=info.supports_structured_outputs,
    )


def catalogue_from_proto(response: providers_pb2.ListModelsResponse, fetched_at: float) -> Catalogue:
    """Convert a ``ListModelsResponse``, skipping models without an id and repeated ids."""
    models: dict[str, ModelEntry] = {}
    for info in response.models:
        if not info.id.strip():
            log.warning("catalogue: skipping a model without an id")
            continue
        if info.id in models:
            log.warning("catalogue: model %s listed twice; keeping the first", info.id)
            continue
        models[info.id] = model_from_proto(info)
    return Catalogue(models=tuple(models.values()), fetched_at=fetched_at, simulated=response.simulated)


def providers_fetcher(stub: providers_pb2_grpc.ProviderServiceStub, timeout: float) -> Fetch:
    """A :data:`Fetch` that calls ``ProviderService.ListModels`` (open circuits included, so they can be
    reported as dropped) with a deadline of ``timeout`` seconds."""

    async def fetch() -> Catalogue:
        request = providers_pb2.ListModelsRequest(include_unavailable=True)
        try:
            response = await stub.ListModels(request, timeout=timeout)
        except grpc.aio.AioRpcError as err:
            raise Unavailable(err.code().name) from None
        return catalogue_from_proto(response, time.monotonic())

    return fetch


class CatalogueCache:
    """The latest catalogue, refreshed in the background every ``interval`` seconds.

    ``first_fetch_timeout`` bounds how long :meth:`get` waits when nothing has been fetched yet.
    ``source`` names the upstream in messages.
    """

    def __init__(
        self,
        fetch: Fetch,
        *,
        interval: float = DEFAULT_REFRESH_INTERVAL,
        first_fetch_timeout: float = 10.0,
        source: str = "providers service",
    ) -> None:
        self._fetch = fetch
        self._interval = interval
        self._first_fetch_timeout = first_fetch_timeout
        self._source = source
        self._snapshot: Catalogue | None = None
        self._inflight: asyncio.Task[bool] | None = None
        self._loop: asyncio.Task[None] | None = None
        self._last_error = ""
        self._failures = 0

    def start(self) -> None:
        """Start the background refresh (the first fetch begins at once)."""
        if self._loop is None:
            self._loop = asyncio.create_task(self._run(), name="selector-catalogue-refresh")

    async def close(self) -> None:
        """Stop refreshing and wait for the background work to end."""
        tasks = [t for t in (self._loop, self._inflight) if t is not None]
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._loop = self._inflight = None

    async def get(self) -> Catalogue:
        """The cached catalogue; the first call waits for a fetch. Raises :class:`Unavailable`."""
        if self._snapshot is not None:
            return self._snapshot
        attempt = self._refresh()
        try:
            # shield: a caller giving up must not cancel the fetch other callers share.
            await asyncio.wait_for(asyncio.shield(attempt), self._first_fetch_timeout)
        except TimeoutError:
            raise Unavailable(
                f"model catalogue unavailable: the {self._source} did not answer within"
                f" {self._first_fetch_timeout:g} s; retry shortly"
            ) from None
        if self._snapshot is None:
            raise Unavailable(
                f"model catalogue unavailable: cannot reach the {self._source} ({self._last_error}); retry shortly"
            )
        return self._snapshot

    @property
    def snapshot(self) -> Catalogue | None:
        """The cached catalogue, if any, without waiting."""
        return self._snapshot

    def staleness_warning(self) -> str:
        """A warning when refreshes are failing and the cached catalogue is getting old, else ``""``."""
        snapshot = self._snapshot
        if snapshot is None or not self._last_error:
            return ""
        age = time.monotonic() - snapshot.fetched_at
        if age < 2 * self._interval:
            return ""
        return (
            f"model catalogue is {age:.0f} s old: the {self._source} cannot be reached ({self._last_error});"
            " model health may be out of date"
        )

    def _refresh(self) -> asyncio.Task[bool]:
        """The fetch in flight, or a new one: concurrent callers share a single request."""
        if self._inflight is None or self._inflight.done():
            self._inflight = asyncio.create_task(self._fetch_and_store(), name="selector-catalogue-fetch")
        return self._inflight

    async def _fetch_and_store(self) -> bool:
        try:
            catalogue = await self._fetch()
        except Unavailable as exc:
            return self._failed(exc.message)
        except Exception as exc:
            # Anything else (a malformed reply, a bug) must not kill the refresh loop either.
            log.debug("catalogue fetch error", exc_info=exc)
            return self._failed(type(exc).__name__)
        if self._failures:
            log.info("catalogue refresh recovered after %d failed attempt(s)", self._failures)
        elif self._snapshot is None:
            log.info("catalogue loaded: %d model(s)", len(catalogue.models))
        self._snapshot = catalogue
        self._last_error = ""
        self._failures = 0
        return True

    def _failed(self, error: str) -> bool:
        self._last_error = error
        self._failures += 1
        # Once per outage, not every few seconds.
        if self._failures == 1:
            log.warning("catalogue refresh from the %s failed: %s", self._source, error)
        return False

    async def _run(self) -> None:
        while True:
            await self._refresh()
            await asyncio.sleep(self._interval)
