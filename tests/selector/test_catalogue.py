"""The catalogue cache (with a fake fetch) and the ModelInfo conversion."""

from __future__ import annotations

import asyncio
import time
from typing import cast

import pytest

from orchestratex.errors import Unavailable
from orchestratex.v1 import common_pb2, providers_pb2
from services.selector.catalogue import Catalogue, CatalogueCache, catalogue_from_proto, model_from_proto
from services.selector.ranking import Circuit
from tests.selector.conftest import catalogue, eventually, model_info


class ScriptedFetch:
    """Returns the catalogue, or raises ``error``; waits on ``gate`` when set."""

    def __init__(self) -> None:
        self.calls = 0
        self.error: Exception | None = None
        self.gate: asyncio.Event | None = None
        self.age = 0.0

    async def __call__(self) -> Catalogue:
        self.calls += 1
        if self.gate is not None:
            await self.gate.wait()
        if self.error is not None:
            raise self.error
        return Catalogue(models=tuple(catalogue()), fetched_at=time.monotonic() - self.age)


async def test_concurrent_first_calls_share_one_fetch() -> None:
    fetch = ScriptedFetch()
    fetch.gate = asyncio.Event()
    cache = CatalogueCache(fetch, interval=60, first_fetch_timeout=5)
    waiters = [asyncio.create_task(cache.get()) for _ in range(5)]
    await asyncio.sleep(0)  # let them all start waiting
    fetch.gate.set()
    results = await asyncio.gather(*waiters)
    assert fetch.calls == 1
    assert all(r is results[0] for r in results)
    assert len(results[0].models) == 5
    # Later calls are served from memory.
    assert await cache.get() is results[0]
    assert fetch.calls == 1


async def test_unreachable_upstream_is_unavailable_then_recovers() -> None:
    fetch = ScriptedFetch()
    fetch.error = Unavailable("UNAVAILABLE")
    cache = CatalogueCache(fetch, interval=60, first_fetch_timeout=5)
    with pytest.raises(Unavailable) as info:
        await cache.get()
    assert "model catalogue unavailable: cannot reach the providers service (UNAVAILABLE)" in info.value.message
    fetch.error = None
    assert len((await cache.get()).models) == 5
    assert fetch.calls == 2


async def test_unexpected_fetch_errors_are_unavailable_too() -> None:
    fetch = ScriptedFetch()
    fetch.error = KeyError("boom")
    cache = CatalogueCache(fetch, interval=60, first_fetch_timeout=5)
    with pytest.raises(Unavailable, match=r"\(KeyError\)"):
        await cache.get()


async def test_slow_first_fetch_times_out() -> None:
    fetch = ScriptedFetch()
    fetch.gate = asyncio.Event()  # never opened
    cache = CatalogueCache(fetch, interval=60, first_fetch_timeout=0.05)
    with pytest.raises(Unavailable, match=r"did not answer within 0\.05 s"):
        await cache.get()
    await cache.close()


async def test_background_refresh_keeps_the_last_good_catalogue_and_warns_when_stale() -> None:
    fetch = ScriptedFetch()
    cache = CatalogueCache(fetch, interval=0.01, first_fetch_timeout=5)
    cache.start()
    first = await cache.get()
    assert cache.staleness_warning() == ""
    fetch.error = Unavailable("UNAVAILABLE")
    calls = fetch.calls
    await eventually(lambda: fetch.calls >= calls + 2)
    assert await cache.get() is first  # still served
    await eventually(lambda: bool(cache.staleness_warning()))
    assert cache.staleness_warning().startswith("model catalogue is ")
    assert "cannot be reached (UNAVAILABLE)" in cache.staleness_warning()
    await cache.close()


async def test_background_refresh_picks_up_changes() -> None:
    fetch = ScriptedFetch()
    cache = CatalogueCache(fetch, interval=0.01, first_fetch_timeout=5)
    cache.start()
    first = await cache.get()
    await eventually(lambda: cache.snapshot is not first)
    await cache.close()


async def test_close_stops_the_refresh_task() -> None:
    fetch = ScriptedFetch()
    cache = CatalogueCache(fetch, interval=0.01, first_fetch_timeout=5)
    cache.start()
    await cache.get()
    await cache.close()
    assert not [t for t in asyncio.all_tasks() if t.get_name().startswith("selector-catalogue")]
    calls = fetch.calls
    await asyncio.sleep(0.05)
    assert fetch.calls == calls


def test_model_from_proto() -> None:
    source = catalogue()[2]
    info = model_info(source)
    info.health.circuit_state = common_pb2.CIRCUIT_STATE_HALF_OPEN
    info.health.cooldown_remaining.FromMilliseconds(1500)
    future_domain = cast("common_pb2.Domain", 99)  # added to the proto after this build
    info.specialties.append(common_pb2.DomainScore(domain=future_domain, score=1.0))
    model = model_from_proto(info)
    assert model.id == "bolt/think"
    assert model.family == "bolt"
    assert model.context_length == 128_000
    assert model.input_price_per_mtok == 1.0 and model.output_price_per_mtok == 4.0
    assert dict(model.specialties) == dict(source.specialties)
    assert model.typical_ttft_s == pytest.approx(3.0)
    assert model.tokens_per_second == 40
    assert model.circuit is Circuit.HALF_OPEN
    assert model.cooldown_remaining_s == pytest.approx(1.5)


def test_model_from_proto_sanitises_numbers_and_unknown_circuits() -> None:
    info = common_pb2.ModelInfo(
        id="x", input_price_per_mtok=-1.0, output_price_per_mtok=float("nan"), typical_tokens_per_second=float("inf")
    )
    model = model_from_proto(info)
    assert (model.input_price_per_mtok, model.output_price_per_mtok, model.tokens_per_second) == (0.0, 0.0, 0.0)
    assert model.circuit is Circuit.UNKNOWN


def test_catalogue_from_proto_skips_blank_and_repeated_ids() -> None:
    first, second = (model_info(m) for m in catalogue()[:2])
    duplicate = model_info(catalogue()[0])
    duplicate.family = "other"
    response = providers_pb2.ListModelsResponse(
        models=[first, common_pb2.ModelInfo(id="  "), second, duplicate], simulated=True
    )
    result = catalogue_from_proto(response, fetched_at=1.0)
    assert [m.id for m in result.models] == ["acme/coder-pro", "acme/mini"]
    assert result.models[0].family == "acme"
    assert result.simulated
    assert result.context_windows() == {"acme/coder-pro": 200_000, "acme/mini": 32_000}
