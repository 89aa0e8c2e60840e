"""Per-model limits shared by several providers pods (``ORX_PROVIDER_PEERS``): the division, its change at run time
under calls in flight and in line, the DNS count behind it, and the server's wiring.

No real DNS (the resolver is injected) and no real time (a ManualClock drives the limiters and the re-resolve loop).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

import pytest
from prometheus_client import REGISTRY

from orchestratex.config import ResilienceSettings, Settings, limit_share, queue_share
from services.providers import peers
from services.providers.peers import PeerCount
from services.providers.resilience import (
    ClientRateLimited,
    LimitOverride,
    LimitsConfig,
    ManualClock,
    Resilience,
    ResilienceConfig,
    config_from_settings,
)
from services.providers.server import build
from tests.providers.test_resilience import T0, Holder, until

MODEL = "m/peers"


class FakeDns:
    """A resolver whose answer the test sets: a set of addresses, or an error to raise."""

    def __init__(self, *addresses: str) -> None:
        self.answer: frozenset[str] | OSError = frozenset(addresses)
        self.names: list[str] = []

    async def __call__(self, name: str) -> frozenset[str]:
        self.names.append(name)
        if isinstance(self.answer, OSError):
            raise self.answer
        return self.answer


def pods(count: int) -> frozenset[str]:
    return frozenset(f"10.0.0.{i}" for i in range(1, count + 1))


# -- the division ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("total", [1, 2, 3, 7, 20, 99, 100, 256, 3000])
@pytest.mark.parametrize("parts", [1, 2, 3, 4, 7, 10, 64, 640])
def test_shares_never_add_up_to_more_than_the_total_unless_each_gets_one(total: int, parts: int) -> None:
    share = limit_share(total, parts)
    assert share >= 1
    assert share * parts <= max(total, parts)  # within the limit, or one each when there are more parts
    assert share == 1 or (share + 1) * parts > total  # and the largest share that is
    queue = queue_share(total, parts)
    assert queue * parts >= total > (queue - 1) * parts  # the queue rounds up: no pod without one
    assert queue_share(0, parts) == 0  # "no queueing" stays so


def test_limits_are_shared_field_by_field() -> None:
    whole = LimitsConfig(
        rpm=3000,
        free_rpm=20,
        max_concurrent=256,
        max_queue=256,
        max_wait=7.0,
        overrides={"a/b": LimitOverride(90, 7), "c/d": LimitOverride(None, 1)},
    )
    assert whole.shared_by(1) is whole
    share = whole.shared_by(3)
    assert (share.rpm, share.free_rpm, share.max_concurrent, share.max_queue) == (1000, 6, 85, 86)
    assert (share.max_wait, share.window) == (7.0, 60.0)
    assert share.overrides == {"a/b": LimitOverride(30, 2), "c/d": LimitOverride(None, 1)}
    assert share.for_model("x/y:free").rpm == 6 and share.for_model("a/b").max_concurrent == 2


@pytest.mark.parametrize(("workers", "pods_"), [(1, 3), (2, 2), (3, 4), (4, 10)])
def test_workers_and_pods_divide_as_one_product(workers: int, pods_: int) -> None:
    """A pod's workers take their share first (per_worker), the pods divide it again: the result is the total
    divided by workers × pods, as if computed at once, so no rounding is lost twice."""
    settings = ResilienceSettings(rpm=601, free_rpm=20, concurrency=37, queue=5)
    by_steps = config_from_settings(settings.per_worker(workers)).limits.shared_by(pods_)
    at_once = config_from_settings(settings).limits.shared_by(workers * pods_)
    assert by_steps == at_once


# -- changing the share at run time ------------------------------------------------------------------------------


def policy(clock: ManualClock, *, rpm: int = 600, max_concurrent: int = 32, max_queue: int = 64) -> Resilience:
    limits = LimitsConfig(rpm=rpm, free_rpm=20, max_concurrent=max_concurrent, max_queue=max_queue, max_wait=120.0)
    return Resilience(ResilienceConfig(limits=limits), clock=clock)


async def test_share_among_changes_existing_and_future_limiters_and_back() -> None:
    resilience = policy(ManualClock(T0))
    early = resilience.limiter(MODEL)
    breaker = resilience.breaker(MODEL)
    resilience.share_among(4)
    assert resilience.parts == 4
    assert (early.limits.rpm, early.limits.max_concurrent, early.limits.max_queue) == (150, 8, 16)
    late = resilience.limiter("other/model:free")
    assert (late.limits.rpm, late.limits.max_concurrent) == (5, 8)
    assert resilience.config.limits.rpm == 150
    assert resilience.breaker(MODEL) is breaker  # breakers stay per pod, untouched
    resilience.share_among(0)  # nothing resolved counts as alone
    assert resilience.parts == 1
    assert (early.limits.rpm, late.limits.rpm, early.limits.max_concurrent) == (600, 20, 32)


async def test_calls_in_flight_keep_their_slot_when_the_share_shrinks() -> None:
    resilience = policy(ManualClock(T0), max_concurrent=4)
    lim = resilience.limiter(MODEL)
    running = [Holder(lim) for _ in range(3)]
    for holder in running:
        await holder.entered.wait()
    resilience.share_among(4)  # 1 slot now, 3 in use
    assert (lim.limits.max_concurrent, lim.in_flight) == (1, 3)
    waiting = Holder(lim)
    await until(lambda: lim.queued == 1)
    for holder in running[:2]:
        await holder.done()  # finish normally, nothing cut
    assert lim.in_flight == 1 and not waiting.entered.is_set()  # still over the new share
    await running[2].done()
    await waiting.entered.wait()
    await waiting.done()
    assert all(h.task.done() and h.task.exception() is None for h in [*running, waiting])
    assert (lim.in_flight, lim.queued) == (0, 0)


async def test_a_call_in_line_starts_as_soon_as_a_larger_share_frees_a_place() -> None:
    clock = ManualClock(T0)
    resilience = policy(clock, rpm=4)
    lim = resilience.limiter(MODEL)
    resilience.share_among(2)  # 2 a minute
    for _ in range(2):
        async with lim.slot():
            pass
    waiting = Holder(lim)
    await clock.wait_for_sleepers(1)  # in line for the rate window, a minute away
    assert lim.queued == 1 and not waiting.entered.is_set()
    resilience.share_among(1)  # a pod left: 4 a minute, so a place is free now, with no time passing
    await waiting.entered.wait()
    assert clock.now() == T0
    await waiting.done()


async def test_a_smaller_rate_share_counts_the_starts_already_made() -> None:
    clock = ManualClock(T0)
    resilience = policy(clock, rpm=6, max_queue=0)
    lim = resilience.limiter(MODEL)
    for _ in range(3):
        async with lim.slot():
            pass
    resilience.share_among(3)  # 2 a minute, and 3 started in this minute already
    with pytest.raises(ClientRateLimited, match="2 requests per 60s"):
        async with lim.slot():
            pass
    clock.advance(60)
    async with lim.slot():
        pass


# -- counting the pods --------------------------------------------------------------------------------------------


def peers_gauge() -> float | None:
    return REGISTRY.get_sample_value("orx_provider_peers")


async def test_the_count_is_the_distinct_addresses_at_least_one() -> None:
    dns = FakeDns(*pods(3), "10.0.0.1")
    seen: list[int] = []
    count = PeerCount("providers", seen.append, resolve=dns)
    assert (count.peers, peers_gauge()) == (1, 1)
    assert await count.refresh() == 3
    assert (seen, dns.names, peers_gauge()) == ([3], ["providers"], 3)
    assert await count.refresh() == 3
    assert seen == [3]  # told only of changes
    dns.answer = frozenset({"10.0.0.1", "fd00::1"})
    assert await count.refresh() == 2
    dns.answer = frozenset()
    assert await count.refresh() == 1
    assert seen == [3, 2, 1]


async def test_a_failed_resolution_keeps_the_count_and_warns_once(caplog: pytest.LogCaptureFixture) -> None:
    dns = FakeDns(*pods(4))
    seen: list[int] = []
    count = PeerCount("providers", seen.append, resolve=dns)
    await count.refresh()
    caplog.set_level(logging.INFO, logger=peers.__name__)
    caplog.clear()
    dns.answer = OSError(-2, "Name or service not known")
    for _ in range(3):
        assert await count.refresh() == 4
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "providers" in warnings[0].getMessage() and "4 pod" in warnings[0].getMessage()
    assert "Name or service not known" in warnings[0].getMessage()
    assert seen == [4] and peers_gauge() == 4
    dns.answer = pods(4)
    assert await count.refresh() == 4
    assert any("resolves again" in r.getMessage() for r in caplog.records)
    dns.answer = OSError(-3, "Temporary failure in name resolution")
    await count.refresh()
    assert len([r for r in caplog.records if r.levelno == logging.WARNING]) == 2  # a new outage, a new warning


async def test_a_resolver_that_hangs_counts_as_a_failure() -> None:
    never = asyncio.Event()

    async def hang(name: str) -> frozenset[str]:
        await never.wait()
        return frozenset()

    count = PeerCount("providers", lambda n: None, resolve=hang, timeout=0)
    assert await count.refresh() == 1


async def test_the_background_loop_re_resolves_every_interval_until_closed() -> None:
    clock = ManualClock(T0)
    dns = FakeDns(*pods(2))
    resilience = policy(clock)
    count = PeerCount("providers", resilience.share_among, interval=10, resolve=dns, clock=clock)
    count.start()
    await clock.wait_for_sleepers(1)
    assert (dns.names, clock.sleeps) == ([], [10])  # the loop waits first (build resolves once itself)
    clock.advance(10)
    await until(lambda: resilience.parts == 2)
    assert resilience.limiter(MODEL).limits.rpm == 300
    dns.answer = pods(5)
    await clock.wait_for_sleepers(1)
    clock.advance(9.9)
    await until(lambda: clock.pending_sleepers == 1)
    assert resilience.parts == 2  # not before the interval
    clock.advance(0.1)
    await until(lambda: resilience.parts == 5)
    assert resilience.limiter(MODEL).limits.rpm == 120
    await count.close()
    assert clock.pending_sleepers == 0
    await count.close()  # twice is harmless


# -- the server ---------------------------------------------------------------------------------------------------


async def test_the_server_shares_its_limits_among_the_pods_it_counts(
    make_settings: Callable[..., Settings], monkeypatch: pytest.MonkeyPatch
) -> None:
    dns = FakeDns(*pods(4))
    monkeypatch.setattr(peers, "resolve_addresses", dns)
    settings = make_settings(ORX_PROVIDER_PEERS="providers", ORX_PROVIDER_RPM="100")
    resilience = Resilience.from_settings(settings.providers.resilience)
    srv = await build(settings, "127.0.0.1:0", resilience=resilience)
    try:
        assert dns.names == ["providers"]  # counted before the server serves
        assert resilience.parts == 4 and resilience.config.limits.rpm == 25
        assert peers_gauge() == 4
    finally:
        await srv.stop(0)
    tasks = [t for t in asyncio.all_tasks() if t.get_name() == "providers-peer-count"]
    assert tasks == []  # the re-resolve loop ended with the server


async def test_without_peers_nothing_is_resolved(
    make_settings: Callable[..., Settings], monkeypatch: pytest.MonkeyPatch
) -> None:
    dns = FakeDns(*pods(4))
    monkeypatch.setattr(peers, "resolve_addresses", dns)
    resilience = Resilience.from_settings(make_settings().providers.resilience)
    srv = await build(make_settings(), "127.0.0.1:0", resilience=resilience)
    await srv.stop(0)
    assert dns.names == [] and resilience.parts == 1
