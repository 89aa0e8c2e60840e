"""The resilience building blocks without a backend: retry policy, rate limiter, circuit breaker, config.

Time is a ManualClock everywhere: nothing here sleeps for real.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import random
from collections.abc import AsyncIterator, Callable

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from orchestratex.errors import ConfigError
from services.providers.backend import BackendError, FailureKind
from services.providers.resilience import (
    SYSTEM_CLOCK,
    BreakerConfig,
    CircuitBreaker,
    CircuitOpen,
    CircuitState,
    ClientRateLimited,
    HealthSnapshot,
    Held,
    HoldConfig,
    LimitOverride,
    LimitsConfig,
    ManualClock,
    ModelLimiter,
    ModelLimits,
    Origin,
    Outcome,
    Resilience,
    ResilienceConfig,
    RetryPolicy,
    classify,
    config_from_env,
    is_retryable,
)

T0 = 1000.0


async def until(condition: Callable[[], bool], turns: int = 200) -> None:
    """Let other tasks run until ``condition`` holds (bounded: fails instead of hanging)."""
    for _ in range(turns):
        if condition():
            return
        await asyncio.sleep(0)
    raise AssertionError("condition not reached")


def error(kind: FailureKind, *, retry_after: float | None = None, **attrs: object) -> BackendError:
    exc = BackendError(kind, f"{kind.value} (test)", retry_after=retry_after)
    for name, value in attrs.items():
        setattr(exc, name, value)
    return exc


# -- retry policy ---------------------------------------------------------------------------------


class Upper(random.Random):
    """Jitter that always draws the top of its range (worst case)."""

    def uniform(self, a: float, b: float) -> float:
        return b


def test_backoff_is_full_jitter_within_exponential_caps() -> None:
    policy = RetryPolicy(base_delay=0.5, max_delay=3.0)
    rng = random.Random(1)
    assert [policy.backoff_cap(n) for n in range(1, 6)] == [0.5, 1.0, 2.0, 3.0, 3.0]
    for failures in range(1, 6):
        draws = [policy.backoff(failures, rng) for _ in range(300)]
        cap = policy.backoff_cap(failures)
        assert all(0.0 <= d <= cap for d in draws)
        # Full jitter spreads over the whole range, not just near the cap.
        assert min(draws) < cap * 0.1
        assert max(draws) > cap * 0.9
    assert policy.backoff_cap(10_000) == 3.0  # no overflow


def test_backoff_is_reproducible_with_a_seeded_rng() -> None:
    policy = RetryPolicy()
    first = [policy.backoff(n, random.Random(42)) for n in (1, 2, 3)]
    assert first == [policy.backoff(n, random.Random(42)) for n in (1, 2, 3)]


@pytest.mark.parametrize(
    ("kind", "expected"),
    [
        (FailureKind.RATE_LIMITED, True),
        (FailureKind.UPSTREAM_ERROR, True),
        (FailureKind.TIMEOUT, True),
        (FailureKind.INVALID_OUTPUT, True),
        (FailureKind.INVALID_REQUEST, False),
        (FailureKind.REFUSED, False),
    ],
)
def test_retryable_falls_back_on_the_kind(kind: FailureKind, expected: bool) -> None:
    exc = error(kind)
    if hasattr(exc, "retryable"):
        delattr(exc, "retryable")
    assert is_retryable(exc) is expected


@pytest.mark.parametrize("status", [400, 401, 402, 403, 404, 413, 422])
def test_client_error_statuses_are_never_retryable_even_if_flagged(status: int) -> None:
    assert not is_retryable(error(FailureKind.UPSTREAM_ERROR, http_status=status, retryable=True))


def test_the_backend_flag_decides_otherwise() -> None:
    assert not is_retryable(error(FailureKind.UPSTREAM_ERROR, retryable=False))
    assert is_retryable(error(FailureKind.UPSTREAM_ERROR, http_status=503, retryable=True))
    assert not is_retryable(error(FailureKind.UPSTREAM_ERROR, category="insufficient_credits"))


def test_decide_waits_at_least_retry_after() -> None:
    policy = RetryPolicy(base_delay=0.5, max_delay=8)
    decision = policy.decide(
        error(FailureKind.RATE_LIMITED, retry_after=4.0),
        attempts=1,
        streamed=False,
        now=T0,
        deadline=None,
        rng=random.Random(3),
    )
    assert decision.retry
    assert decision.wait == 4.0


def test_decide_gives_up_at_once() -> None:
    policy = RetryPolicy(max_attempts=3, base_delay=1, max_delay=1, max_retry_after=30)
    rng = Upper()
    exc = error(FailureKind.UPSTREAM_ERROR)
    assert policy.decide(exc, attempts=1, streamed=False, now=T0, deadline=None, rng=rng).retry
    # After the first token, out of attempts, non-retryable: no retry and nothing to explain.
    for attempts, streamed, failure in ((1, True, exc), (3, False, exc), (1, False, error(FailureKind.REFUSED))):
        decision = policy.decide(failure, attempts=attempts, streamed=streamed, now=T0, deadline=None, rng=rng)
        assert not decision.retry
        assert decision.reason == ""
    # The wait would end past the deadline.
    cut = policy.decide(exc, attempts=1, streamed=False, now=T0, deadline=T0 + 0.99, rng=rng)
    assert not cut.retry
    assert "deadline" in cut.reason
    # A Retry-After longer than we are willing to wait.
    long = policy.decide(
        error(FailureKind.RATE_LIMITED, retry_after=3600), attempts=1, streamed=False, now=T0, deadline=None, rng=rng
    )
    assert not long.retry
    assert "3.6e+03" in long.reason


def test_retry_policy_rejects_nonsense() -> None:
    with pytest.raises(ValueError, match="max_attempts"):
        RetryPolicy(max_attempts=0)
    with pytest.raises(ValueError, match="base_delay"):
        RetryPolicy(base_delay=float("nan"))


# -- rate limiter ---------------------------------------------------------------------------------


def limiter(
    clock: ManualClock, *, rpm: int = 600, concurrent: int = 32, queue: int = 64, wait: float = 30.0
) -> ModelLimiter:
    return ModelLimiter("m/test", ModelLimits(rpm, concurrent, queue, wait), clock)


class Holder:
    """A task holding one slot of a limiter until released."""

    def __init__(self, lim: ModelLimiter, deadline: float | None = None) -> None:
        self.entered = asyncio.Event()
        self.release = asyncio.Event()
        self.task = asyncio.create_task(self._run(lim, deadline))

    async def _run(self, lim: ModelLimiter, deadline: float | None) -> None:
        async with lim.slot(deadline):
            self.entered.set()
            await self.release.wait()

    async def done(self) -> None:
        self.release.set()
        await self.task


async def test_free_slots_are_taken_without_waiting() -> None:
    clock = ManualClock(T0)
    lim = limiter(clock, concurrent=2)
    async with lim.slot(), lim.slot():
        assert lim.in_flight == 2
        assert lim.queued == 0
    assert lim.in_flight == 0
    assert clock.sleeps == []


async def test_concurrency_queues_in_fifo_order() -> None:
    clock = ManualClock(T0)
    lim = limiter(clock, concurrent=1)
    first = Holder(lim)
    await first.entered.wait()
    second, third = Holder(lim), Holder(lim)
    await until(lambda: lim.queued == 2)
    assert not second.entered.is_set()
    await first.done()
    await second.entered.wait()
    assert not third.entered.is_set()
    assert lim.in_flight == 1
    await second.done()
    await third.entered.wait()
    await third.done()
    assert (lim.in_flight, lim.queued) == (0, 0)


async def test_full_queue_fails_at_once() -> None:
    clock = ManualClock(T0)
    lim = limiter(clock, concurrent=1, queue=1)
    holder = Holder(lim)
    await holder.entered.wait()
    waiting = Holder(lim)
    await until(lambda: lim.queued == 1)
    with pytest.raises(ClientRateLimited) as caught:
        async with lim.slot():
            pass
    assert "client-side rate limit" in caught.value.message
    assert "1 calls already waiting" in caught.value.message
    assert caught.value.kind is FailureKind.RATE_LIMITED
    assert caught.value.retry_after is not None
    assert caught.value.retry_after > 0
    await holder.done()
    await waiting.done()


async def test_waiting_for_a_slot_stops_at_the_deadline() -> None:
    clock = ManualClock(T0)
    lim = limiter(clock, concurrent=1)
    holder = Holder(lim)
    await holder.entered.wait()
    waiter = Holder(lim, deadline=T0 + 2.0)
    await clock.wait_for_sleepers(1)
    clock.advance(1.9)
    await until(lambda: clock.pending_sleepers == 1)
    assert not waiter.task.done()
    clock.advance(0.1)
    with pytest.raises(ClientRateLimited, match="before the deadline"):
        await waiter.task
    assert (lim.in_flight, lim.queued) == (1, 0)
    await holder.done()


async def test_rpm_window_admits_again_after_a_minute() -> None:
    clock = ManualClock(T0)
    lim = limiter(clock, rpm=3, wait=120)
    for _ in range(3):
        async with lim.slot():
            pass
    clock.advance(10)
    late = Holder(lim)
    await clock.wait_for_sleepers(1)
    assert lim.queued == 1
    assert clock.sleeps[-1] == pytest.approx(50.0)  # sleeps exactly until the oldest start leaves the window
    clock.advance(49.9)
    await until(lambda: clock.pending_sleepers == 1)
    assert not late.entered.is_set()
    clock.advance(0.1)
    await late.entered.wait()
    await late.done()


async def test_rpm_wait_past_the_deadline_fails_at_once_with_an_estimate() -> None:
    clock = ManualClock(T0)
    lim = limiter(clock, rpm=2)
    for _ in range(2):
        async with lim.slot():
            pass
    clock.advance(15)
    with pytest.raises(ClientRateLimited) as caught:
        async with lim.slot(deadline=T0 + 40):
            pass
    assert caught.value.retry_after == pytest.approx(45.0)
    assert lim.queued == 0
    assert clock.sleeps == []  # no waiting at all
    # Also bounded by max_wait when there is no deadline.
    short = limiter(clock, rpm=1, wait=5)
    async with short.slot():
        pass
    with pytest.raises(ClientRateLimited, match="within 5s"):
        async with short.slot():
            pass


async def test_free_models_default_to_twenty_per_minute() -> None:
    config = LimitsConfig()
    assert config.for_model("openai/gpt-oss-120b:free").rpm == 20
    assert config.for_model("openai/gpt-oss-120b").rpm == 3000
    assert config.for_model("openai/gpt-oss-120b").max_concurrent == 256
    clock = ManualClock(T0)
    lim = ModelLimiter("openai/gpt-oss-120b:free", config.for_model("openai/gpt-oss-120b:free"), clock)
    for _ in range(20):
        async with lim.slot(deadline=T0 + 10):
            pass
    with pytest.raises(ClientRateLimited, match="20 requests per 60s"):
        async with lim.slot(deadline=T0 + 10):
            pass


def test_overrides_win_over_defaults() -> None:
    config = LimitsConfig(
        rpm=100,
        free_rpm=5,
        overrides={"a/b:free": LimitOverride(rpm=7), "c/d": LimitOverride(max_concurrent=2)},
    )
    assert (config.for_model("a/b:free").rpm, config.for_model("a/b:free").max_concurrent) == (7, 256)
    assert (config.for_model("c/d").rpm, config.for_model("c/d").max_concurrent) == (100, 2)
    assert config.for_model("e/f:free").rpm == 5
    with pytest.raises(ValueError, match="x/y"):
        LimitsConfig(overrides={"x/y": LimitOverride(rpm=0)})


async def test_cancelling_a_queued_call_leaks_nothing() -> None:
    clock = ManualClock(T0)
    lim = limiter(clock, concurrent=1)
    holder = Holder(lim)
    await holder.entered.wait()
    cancelled, after = Holder(lim), Holder(lim)
    await until(lambda: lim.queued == 2)
    cancelled.task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await cancelled.task
    assert (lim.in_flight, lim.queued) == (1, 1)
    await holder.done()
    await after.entered.wait()  # the next in line got the slot the cancelled call never took
    assert not cancelled.entered.is_set()
    await after.done()
    assert (lim.in_flight, lim.queued) == (0, 0)
    async with lim.slot():  # the fast path works: no phantom slot is held
        assert lim.in_flight == 1


async def test_hold_until_pauses_new_starts() -> None:
    clock = ManualClock(T0)
    lim = limiter(clock)
    lim.hold_until(T0 + 5)
    lim.hold_until(T0 + 1)  # never shortens
    with pytest.raises(ClientRateLimited) as caught:
        async with lim.slot(deadline=T0 + 3):
            pass
    assert caught.value.retry_after == pytest.approx(5.0)
    waiter = Holder(lim, deadline=T0 + 10)
    await clock.wait_for_sleepers(1)
    clock.advance(5)
    await waiter.entered.wait()
    await waiter.done()


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_limiter_bounds_hold_under_random_interleavings(data: st.DataObject) -> None:
    """Concurrency and the rpm window are never exceeded; no slot or queue entry is ever leaked."""
    max_concurrent = data.draw(st.integers(1, 4), label="max_concurrent")
    rpm = data.draw(st.integers(1, 6), label="rpm")
    max_queue = data.draw(st.integers(0, 6), label="max_queue")
    workers = data.draw(
        st.lists(st.tuples(st.integers(0, 4), st.integers(0, 4)), min_size=1, max_size=10), label="workers"
    )
    steps = data.draw(
        st.lists(
            st.one_of(
                st.just(("yield", 0.0)),
                st.tuples(st.just("advance"), st.floats(0, 90)),
                st.tuples(st.just("cancel"), st.integers(0, len(workers) - 1).map(float)),
            ),
            max_size=30,
        ),
        label="steps",
    )
    window = 60.0

    async def scenario() -> None:
        clock = ManualClock(T0)
        lim = ModelLimiter("m/prop", ModelLimits(rpm, max_concurrent, max_queue, max_wait=300.0, window=window), clock)
        inside = 0
        peak = 0
        starts: list[float] = []

        async def worker(before: int, hold: int) -> None:
            nonlocal inside, peak
            for _ in range(before):
                await asyncio.sleep(0)
            with contextlib.suppress(ClientRateLimited):
                async with lim.slot():
                    inside += 1
                    try:
                        peak = max(peak, inside)
                        starts.append(clock.now())
                        for _ in range(hold):
                            await asyncio.sleep(0)
                    finally:
                        inside -= 1

        tasks = [asyncio.create_task(worker(before, hold)) for before, hold in workers]
        for action, value in steps:
            if action == "advance":
                clock.advance(value)
            elif action == "cancel":
                tasks[int(value)].cancel()
            await asyncio.sleep(0)
            assert lim.in_flight == inside <= max_concurrent
            assert lim.queued <= max_queue
        for _ in range(500):
            if all(t.done() for t in tasks):
                break
            clock.advance(7.0)
            for _ in range(3):
                await asyncio.sleep(0)
        assert all(t.done() for t in tasks)
        assert peak <= max_concurrent
        assert (lim.in_flight, lim.queued, inside) == (0, 0, 0)
        for s in starts:
            assert sum(1 for t in starts if s - window < t <= s) <= rpm

    asyncio.run(scenario())


# -- circuit breaker ------------------------------------------------------------------------------


def breaker(
    clock: ManualClock, threshold: int = 3, cooldown: float = 30.0, max_cooldown: float = 100.0
) -> CircuitBreaker:
    return CircuitBreaker(
        "m/test", BreakerConfig(threshold=threshold, cooldown=cooldown, max_cooldown=max_cooldown), clock
    )


def fail(b: CircuitBreaker, times: int = 1) -> None:
    for _ in range(times):
        b.record(b.admit(), Outcome.FAILURE)


def test_opens_after_threshold_consecutive_failures() -> None:
    clock = ManualClock(T0)
    b = breaker(clock)
    fail(b, 2)
    assert b.snapshot().state is CircuitState.CLOSED
    b.record(b.admit(), Outcome.SUCCESS)  # a success resets the count
    assert b.snapshot().consecutive_failures == 0
    fail(b, 2)
    b.record(b.admit(), Outcome.NEUTRAL)  # neutral outcomes change nothing
    assert b.snapshot().consecutive_failures == 2
    fail(b)
    snap = b.snapshot()
    assert (snap.state, snap.consecutive_failures, snap.cooldown_remaining, snap.trips) == (
        CircuitState.OPEN,
        3,
        30.0,
        1,
    )
    clock.advance(12)
    with pytest.raises(CircuitOpen) as caught:
        b.admit()
    assert caught.value.retry_after == pytest.approx(18.0)
    assert "circuit open" in caught.value.message
    assert caught.value.kind is FailureKind.UPSTREAM_ERROR


def test_half_open_lets_exactly_one_trial_through_and_success_closes() -> None:
    clock = ManualClock(T0)
    b = breaker(clock)
    fail(b, 3)
    clock.advance(30)
    assert b.snapshot().state is CircuitState.HALF_OPEN
    assert b.snapshot().cooldown_remaining == 0.0
    trial = b.admit()
    assert trial.trial
    with pytest.raises(CircuitOpen, match="trial"):
        b.admit()
    b.record(trial, Outcome.SUCCESS)
    snap = b.snapshot()
    assert (snap.state, snap.consecutive_failures, snap.trips) == (CircuitState.CLOSED, 0, 0)
    assert not b.admit().trial


def test_failed_trials_reopen_with_growing_capped_cooldowns() -> None:
    clock = ManualClock(T0)
    b = breaker(clock, cooldown=30, max_cooldown=100)
    fail(b, 3)
    cooldowns = [b.snapshot().cooldown_remaining]
    for _ in range(3):
        clock.advance(cooldowns[-1])
        fail(b)  # the trial fails
        cooldowns.append(b.snapshot().cooldown_remaining)
    assert cooldowns == [30.0, 60.0, 100.0, 100.0]
    assert b.snapshot().consecutive_failures == 6
    assert b.snapshot().trips == 4


def test_neutral_trial_leaves_the_circuit_half_open() -> None:
    clock = ManualClock(T0)
    b = breaker(clock)
    fail(b, 3)
    clock.advance(30)
    b.record(b.admit(), Outcome.NEUTRAL)  # e.g. the caller cancelled the trial
    assert b.snapshot().state is CircuitState.HALF_OPEN
    assert b.admit().trial  # the next call is the trial


def test_outcomes_of_calls_admitted_before_a_trip_are_ignored() -> None:
    clock = ManualClock(T0)
    b = breaker(clock)
    old = b.admit()
    fail(b, 3)
    clock.advance(30)
    b.record(b.admit(), Outcome.SUCCESS)
    b.record(old, Outcome.FAILURE)  # stale news from before the trip
    assert b.snapshot().consecutive_failures == 0


@pytest.mark.parametrize(
    ("exc", "now", "expected"),
    [
        (error(FailureKind.UPSTREAM_ERROR), T0, Outcome.FAILURE),
        (error(FailureKind.RATE_LIMITED, retry_after=3), T0, Outcome.FAILURE),
        (error(FailureKind.MID_STREAM_ERROR), T0, Outcome.FAILURE),
        (error(FailureKind.INVALID_OUTPUT), T0, Outcome.FAILURE),
        (error(FailureKind.TIMEOUT), T0 + 9, Outcome.FAILURE),  # the model's own timeout
        (error(FailureKind.TIMEOUT), T0 + 10, Outcome.NEUTRAL),  # the caller's deadline
        (error(FailureKind.INVALID_REQUEST, http_status=400), T0, Outcome.NEUTRAL),
        (error(FailureKind.UPSTREAM_ERROR, http_status=402), T0, Outcome.NEUTRAL),
        (error(FailureKind.UPSTREAM_ERROR, category="unauthenticated"), T0, Outcome.NEUTRAL),
        (error(FailureKind.REFUSED, http_status=403), T0, Outcome.NEUTRAL),
        (error(FailureKind.UPSTREAM_ERROR, http_status=503), T0, Outcome.FAILURE),
    ],
)
def test_classify_blames_the_model_only_for_model_trouble(exc: BackendError, now: float, expected: Outcome) -> None:
    assert classify(exc, now=now, deadline=T0 + 10) is expected


# -- configuration and snapshots ------------------------------------------------------------------


def test_config_defaults() -> None:
    config = config_from_env({})
    assert config.retry.max_attempts == 3
    assert (config.breaker.threshold, config.breaker.cooldown) == (5, 30.0)
    assert (config.limits.rpm, config.limits.free_rpm, config.limits.max_concurrent) == (3000, 20, 256)


def test_config_from_env() -> None:
    config = config_from_env(
        {
            "ORX_PROVIDER_MAX_ATTEMPTS": "5",
            "ORX_PROVIDER_BACKOFF_BASE": "0.1",
            "ORX_PROVIDER_BREAKER_THRESHOLD": "2",
            "ORX_PROVIDER_BREAKER_COOLDOWN": "600",
            "ORX_PROVIDER_RPM": "100",
            "ORX_PROVIDER_CONCURRENCY": "4",
            "ORX_PROVIDER_FREE_RPM": "10",
            "ORX_PROVIDER_QUEUE": "0",
            "ORX_PROVIDER_QUEUE_WAIT": " 2.5 ",
            "ORX_PROVIDER_MODEL_LIMITS": "z-ai/glm-4.5=120/8, openai/gpt-oss-120b:free=3,qwen/qwen3-coder=/2",
        }
    )
    assert (config.retry.max_attempts, config.retry.base_delay) == (5, 0.1)
    assert (config.breaker.threshold, config.breaker.cooldown, config.breaker.max_cooldown) == (2, 600.0, 600.0)
    limits = config.limits
    assert (limits.rpm, limits.max_concurrent, limits.free_rpm, limits.max_queue, limits.max_wait) == (
        100,
        4,
        10,
        0,
        2.5,
    )
    assert limits.overrides == {
        "z-ai/glm-4.5": LimitOverride(120, 8),
        "openai/gpt-oss-120b:free": LimitOverride(3, None),
        "qwen/qwen3-coder": LimitOverride(None, 2),
    }


@pytest.mark.parametrize(
    ("var", "value"),
    [
        ("ORX_PROVIDER_MAX_ATTEMPTS", "0"),
        ("ORX_PROVIDER_MAX_ATTEMPTS", "two"),
        ("ORX_PROVIDER_MAX_ATTEMPTS", "2.5"),
        ("ORX_PROVIDER_BREAKER_THRESHOLD", "-1"),
        ("ORX_PROVIDER_BREAKER_COOLDOWN", "nan"),
        ("ORX_PROVIDER_RPM", "0"),
        ("ORX_PROVIDER_FREE_RPM", "lots"),
        ("ORX_PROVIDER_CONCURRENCY", "1e9"),
        ("ORX_PROVIDER_QUEUE_WAIT", "inf"),
        ("ORX_PROVIDER_MODEL_LIMITS", "z-ai/glm-4.5"),
        ("ORX_PROVIDER_MODEL_LIMITS", "z-ai/glm-4.5=fast"),
        ("ORX_PROVIDER_MODEL_LIMITS", "z-ai/glm-4.5=0/2"),
        ("ORX_PROVIDER_MODEL_LIMITS", "z-ai/glm-4.5=/"),
    ],
)
def test_bad_env_values_name_the_variable(var: str, value: str) -> None:
    with pytest.raises(ConfigError, match=var):
        Resilience.from_env({var: value})


def test_max_cooldown_below_cooldown_is_rejected() -> None:
    with pytest.raises(ConfigError, match="ORX_PROVIDER_BREAKER_MAX_COOLDOWN"):
        config_from_env({"ORX_PROVIDER_BREAKER_COOLDOWN": "60", "ORX_PROVIDER_BREAKER_MAX_COOLDOWN": "30"})


async def test_health_snapshot_and_deadline() -> None:
    clock = ManualClock(T0)
    policy = Resilience(clock=clock)
    assert policy.deadline_after(None) is None
    assert policy.deadline_after(2.5) == T0 + 2.5
    idle = policy.health("never/called")
    assert (idle.state, idle.consecutive_failures, idle.cooldown_remaining, idle.in_flight, idle.queued) == (
        CircuitState.CLOSED,
        0,
        0.0,
        0,
        0,
    )

    @contextlib.asynccontextmanager
    async def attempt(outcome: Outcome) -> AsyncIterator[None]:
        async with policy.admit("m/x", None) as guard:
            yield
            guard.outcome = outcome

    async with attempt(Outcome.FAILURE):
        assert policy.health("m/x").in_flight == 1
    for _ in range(4):
        async with attempt(Outcome.FAILURE):
            pass
    clock.advance(10)
    health = policy.health("m/x")
    assert (health.state, health.consecutive_failures, health.cooldown_remaining, health.in_flight) == (
        CircuitState.OPEN,
        5,
        20.0,
        0,
    )
    with pytest.raises(CircuitOpen):
        async with attempt(Outcome.SUCCESS):
            pass
    assert policy.health("m/x").in_flight == 0


async def test_the_limiter_queues_on_the_real_clock() -> None:
    lim = ModelLimiter("m/real", ModelLimits(rpm=100, max_concurrent=1, max_queue=4, max_wait=30), SYSTEM_CLOCK)
    first = Holder(lim)
    await first.entered.wait()
    second = Holder(lim, deadline=SYSTEM_CLOCK.now() + 30)
    await until(lambda: lim.queued == 1)
    await first.done()
    await second.entered.wait()
    await second.done()
    assert (lim.in_flight, lim.queued) == (0, 0)


# -- holds: the vendor's Retry-After window, a rejected key (issue 12) ------------------------------------


def held_policy(clock: ManualClock, **holds: float) -> Resilience:
    config = ResilienceConfig(retry=RetryPolicy(max_retry_after=30.0), holds=HoldConfig(**holds))
    return Resilience(config, clock=clock)


async def admitted(policy: Resilience, model: str, provider: str = "or", outcome: Outcome = Outcome.NEUTRAL) -> None:
    async with policy.admit(model, None, provider) as guard:
        guard.outcome = outcome


async def test_a_window_within_max_retry_after_only_pauses_the_limiter() -> None:
    clock = ManualClock(T0)
    policy = held_policy(clock)
    policy.note_failure("m/a", error(FailureKind.RATE_LIMITED, retry_after=30.0), provider="or")
    health = policy.health("m/a", "or")
    assert (health.state, health.held) == (CircuitState.CLOSED, None)
    with pytest.raises(ClientRateLimited):  # a call that cannot wait 30 s is refused by the limiter, as before
        async with policy.admit("m/a", T0 + 5, "or"):
            pass


@pytest.mark.parametrize(
    ("kind", "status"), [(FailureKind.RATE_LIMITED, 429), (FailureKind.UPSTREAM_ERROR, 503), (FailureKind.TIMEOUT, 408)]
)
async def test_a_longer_window_holds_the_model_for_all_of_it(kind: FailureKind, status: int) -> None:
    clock = ManualClock(T0)
    policy = held_policy(clock)
    policy.note_failure("m/a", error(kind, retry_after=120.0, http_status=status), provider="or")
    clock.advance(100)
    with pytest.raises(Held) as info:
        await admitted(policy, "m/a")
    assert (info.value.kind, info.value.retry_after, info.value.origin) == (kind, 20.0, Origin.VENDOR_HOLD)
    health = policy.health("m/a", "or")
    assert (health.state, health.held, health.cooldown_remaining) == (CircuitState.OPEN, kind, 20.0)
    await admitted(policy, "m/b")  # other models, same provider: not held
    clock.advance(20)
    await admitted(policy, "m/a")
    assert policy.health("m/a", "or") == HealthSnapshot(CircuitState.CLOSED, 0, 0.0, 0, 0)


async def test_windows_are_capped_and_never_shortened() -> None:
    clock = ManualClock(T0)
    policy = held_policy(clock, max_window=600.0)
    policy.note_retry_after("m/a", 86_400.0)
    assert policy.health("m/a").cooldown_remaining == 600.0
    policy.note_retry_after("m/a", 45.0)  # a shorter window later does not end the longer one
    assert policy.health("m/a").cooldown_remaining == 600.0
    policy.note_retry_after("m/a", 10.0)  # nor does a short one (it only pauses the limiter)
    assert policy.health("m/a").state is CircuitState.OPEN


@pytest.mark.parametrize(
    "exc",
    [
        error(FailureKind.CREDITS, retry_after=120.0, http_status=402),  # not retryable: a hint means nothing
        error(FailureKind.INVALID_REQUEST, retry_after=120.0, http_status=400),
        error(FailureKind.RATE_LIMITED, retry_after=None, http_status=429),
    ],
)
async def test_failures_that_hold_nothing(exc: BackendError) -> None:
    clock = ManualClock(T0)
    policy = held_policy(clock)
    policy.note_failure("m/a", exc, provider="or")
    policy.note_failure("m/a", error(FailureKind.RATE_LIMITED, retry_after=120.0), provider="or", streamed=True)
    await admitted(policy, "m/a")
    assert policy.health("m/a", "or").held is None


async def test_a_rejected_key_holds_every_model_of_its_provider_until_the_cooldown_or_a_success() -> None:
    clock = ManualClock(T0)
    policy = held_policy(clock, auth_cooldown=60.0)
    policy.note_failure("m/a", error(FailureKind.AUTH, http_status=401), provider="or")
    for model in ("m/a", "m/b"):
        with pytest.raises(Held) as info:
            await admitted(policy, model, "or")
        assert (info.value.kind, info.value.retry_after) == (FailureKind.AUTH, 60.0)
        assert "or rejected the API key" in info.value.message
        assert policy.health(model, "or").held is FailureKind.AUTH
    await admitted(policy, "m/c", "other-provider")
    clock.advance(60)
    await admitted(policy, "m/b", "or", Outcome.FAILURE)  # the next call finds out
    assert policy.health("m/a", "or").state is CircuitState.CLOSED

    policy.note_failure("m/a", error(FailureKind.AUTH, http_status=401), provider="or")
    policy.note_retry_after("m/a", 120.0)
    assert policy.health("m/a", "or").held is FailureKind.AUTH  # the key problem is the one to report
    clock.advance(61)
    assert policy.health("m/a", "or").held is FailureKind.RATE_LIMITED


async def test_a_success_ends_the_providers_hold() -> None:
    clock = ManualClock(T0)
    policy = held_policy(clock, auth_cooldown=60.0)
    async with policy.admit("m/a", None, "or") as guard:  # admitted before the 401 of another call
        policy.note_failure("m/b", error(FailureKind.AUTH, http_status=401), provider="or")
        guard.outcome = Outcome.SUCCESS
    await admitted(policy, "m/b", "or")


async def test_auth_cooldown_zero_holds_nothing() -> None:
    policy = held_policy(ManualClock(T0), auth_cooldown=0.0)
    policy.note_failure("m/a", error(FailureKind.AUTH, http_status=401), provider="or")
    await admitted(policy, "m/b", "or")


def test_hold_config_from_env() -> None:
    assert config_from_env({}).holds == HoldConfig(max_window=3600.0, auth_cooldown=60.0)
    config = config_from_env({"ORX_PROVIDER_MAX_RATE_LIMIT_WINDOW": "900", "ORX_PROVIDER_AUTH_COOLDOWN": "0"})
    assert config.holds == HoldConfig(max_window=900.0, auth_cooldown=0.0)
    for var, value in (("ORX_PROVIDER_MAX_RATE_LIMIT_WINDOW", "-1"), ("ORX_PROVIDER_AUTH_COOLDOWN", "forever")):
        with pytest.raises(ConfigError, match=var):
            config_from_env({var: value})
    with pytest.raises(ValueError, match="max_window"):
        HoldConfig(max_window=math.inf)
