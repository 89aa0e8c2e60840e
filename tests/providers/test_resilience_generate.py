"""generate() with a Resilience policy, over a scripted backend and a manual clock (no real sleeping).

Each test scripts what the backend does on each attempt (fail with a given kind / retry-after /
status, stream some deltas then fail, hang until cancelled, succeed) and checks what the caller sees.
"""

from __future__ import annotations

import asyncio
import dataclasses
import random
from collections.abc import AsyncGenerator, Callable
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from services.providers.backend import (
    BackendError,
    FailureKind,
    FinishReason,
    GenerationRequest,
    Message,
    Role,
    StreamEnd,
    StreamEvent,
    TextDelta,
    Timing,
    TokenUsage,
)
from services.providers.catalogue import Catalogue, ModelSpec, cost_usd
from services.providers.generation import CallFailed, Completion, generate
from services.providers.resilience import (
    BreakerConfig,
    CircuitState,
    LimitsConfig,
    ManualClock,
    Origin,
    Resilience,
    ResilienceConfig,
    RetryPolicy,
)
from services.providers.sim_profile import load_profile
from services.providers.simulator import Simulator

T0 = 1000.0
MODEL = "z-ai/glm-4.5"


@dataclass
class Fail:
    """Raise a BackendError (after ``deltas``); ``advance`` moves the clock first (time spent upstream)."""

    kind: FailureKind
    retry_after: float | None = None
    retryable: bool | None = None
    http_status: int | None = None
    usage: TokenUsage | None = None
    deltas: tuple[str, ...] = ()
    advance: float = 0.0


@dataclass
class Ok:
    """Stream ``deltas`` then end successfully."""

    deltas: tuple[str, ...] = ("Hello", " world")
    usage: TokenUsage | None = None


@dataclass
class Hang:
    """Stream ``deltas`` then block until cancelled or closed."""

    deltas: tuple[str, ...] = ()


Step = Fail | Ok | Hang


@dataclass
class Scripted:
    """A Backend that plays one scripted step per attempt."""

    steps: list[Step]
    clock: ManualClock
    calls: int = 0
    closed: int = 0
    hanging: asyncio.Event = field(default_factory=asyncio.Event)

    @property
    def name(self) -> str:
        return "scripted"

    @property
    def simulated(self) -> bool:
        return False

    def timing(self, model: ModelSpec) -> Timing:
        return Timing(0.1, 100.0)

    async def aclose(self) -> None:
        return None

    async def stream(self, request: GenerationRequest) -> AsyncGenerator[StreamEvent, None]:
        step = self.steps[self.calls]
        self.calls += 1
        try:
            for text in step.deltas:
                yield TextDelta(text)
            if isinstance(step, Fail):
                self.clock.advance(step.advance)
                exc = BackendError(
                    step.kind, f"{step.kind.value} (scripted)", retry_after=step.retry_after, usage=step.usage
                )
                # Set after construction: works whether or not BackendError takes these as arguments.
                extra = {"retryable": step.retryable, "http_status": step.http_status}
                for name, value in extra.items():
                    if value is not None:
                        setattr(exc, name, value)
                raise exc
            if isinstance(step, Hang):
                self.hanging.set()
                await asyncio.Event().wait()
            assert isinstance(step, Ok)
            yield StreamEnd(FinishReason.STOP, served_model=request.model.id, usage=step.usage, generation_id="gen-1")
        finally:
            self.closed += 1


def make_request(catalogue: Catalogue, model: str = MODEL) -> GenerationRequest:
    spec = catalogue.get(model.removesuffix(":free"))
    assert spec is not None
    spec = dataclasses.replace(spec, id=model)
    return GenerationRequest(model=spec, messages=(Message(Role.USER, "Explain hash maps."),), max_tokens=200)


def make_policy(
    clock: ManualClock,
    *,
    attempts: int = 3,
    threshold: int = 5,
    cooldown: float = 30.0,
    limits: LimitsConfig | None = None,
    rng: random.Random | None = None,
    **retry: float,
) -> Resilience:
    config = ResilienceConfig(
        retry=RetryPolicy(max_attempts=attempts, **retry),
        limits=limits or LimitsConfig(),
        breaker=BreakerConfig(threshold=threshold, cooldown=cooldown, max_cooldown=max(cooldown, 300.0)),
    )
    return Resilience(config, clock=clock, rng=rng or random.Random(7))


async def run(
    backend: Scripted, request: GenerationRequest, **kwargs: object
) -> tuple[list[TextDelta], Completion | CallFailed]:
    deltas: list[TextDelta] = []
    try:
        async for event in generate(backend, request, **kwargs):  # type: ignore[arg-type]
            if isinstance(event, TextDelta):
                deltas.append(event)
            else:
                return deltas, event
    except CallFailed as failure:
        return deltas, failure
    raise AssertionError("generate ended without a result")


# -- retries --------------------------------------------------------------------------------------


async def test_retryable_failures_are_retried_with_jittered_backoff(catalogue: Catalogue) -> None:
    clock = ManualClock(T0, auto_advance=True)
    backend = Scripted([Fail(FailureKind.UPSTREAM_ERROR), Fail(FailureKind.TIMEOUT), Ok()], clock)
    policy = make_policy(clock, base_delay=0.5, max_delay=8.0, rng=random.Random(11))
    deltas, result = await run(backend, make_request(catalogue), policy=policy)
    assert isinstance(result, Completion)
    assert (result.text, result.attempts, backend.calls, backend.closed) == ("Hello world", 3, 3, 3)
    assert [d.text for d in deltas] == ["Hello", " world"]  # only the successful attempt streamed
    replay = random.Random(11)
    assert clock.sleeps == [replay.uniform(0, 0.5), replay.uniform(0, 1.0)]
    assert 0 <= clock.sleeps[0] <= 0.5
    assert 0 <= clock.sleeps[1] <= 1.0
    assert result.latency == pytest.approx(sum(clock.sleeps))
    assert result.time_to_first_token == pytest.approx(sum(clock.sleeps))  # measured from the call's start
    assert policy.health(MODEL).consecutive_failures == 0  # the success reset the count


async def test_retry_after_is_honoured(catalogue: Catalogue) -> None:
    clock = ManualClock(T0, auto_advance=True)
    backend = Scripted([Fail(FailureKind.RATE_LIMITED, retry_after=5.0), Ok()], clock)
    _, result = await run(backend, make_request(catalogue), policy=make_policy(clock, base_delay=0.5))
    assert isinstance(result, Completion)
    assert clock.sleeps == [5.0]
    assert result.attempts == 2


@pytest.mark.parametrize("status", [400, 401, 402, 403, 404])
async def test_client_errors_are_never_retried(catalogue: Catalogue, status: int) -> None:
    clock = ManualClock(T0, auto_advance=True)
    backend = Scripted([Fail(FailureKind.INVALID_REQUEST, http_status=status, retryable=True), Ok()], clock)
    policy = make_policy(clock, threshold=1)
    _, result = await run(backend, make_request(catalogue), policy=policy)
    assert isinstance(result, CallFailed)
    assert (result.kind, result.attempts, backend.calls, clock.sleeps) == (FailureKind.INVALID_REQUEST, 1, 1, [])
    assert result.message == "invalid_request (scripted)"
    health = policy.health(MODEL)
    assert (health.state, health.consecutive_failures) == (CircuitState.CLOSED, 0)  # not the model's fault


async def test_a_non_retryable_flag_is_respected(catalogue: Catalogue) -> None:
    clock = ManualClock(T0, auto_advance=True)
    backend = Scripted([Fail(FailureKind.UPSTREAM_ERROR, retryable=False), Ok()], clock)
    _, result = await run(backend, make_request(catalogue), policy=make_policy(clock))
    assert isinstance(result, CallFailed)
    assert (result.attempts, backend.calls) == (1, 1)


async def test_no_retry_after_the_first_token(catalogue: Catalogue) -> None:
    clock = ManualClock(T0, auto_advance=True)
    backend = Scripted([Fail(FailureKind.MID_STREAM_ERROR, deltas=("par", "tial")), Ok()], clock)
    policy = make_policy(clock)
    request = make_request(catalogue)
    deltas, result = await run(backend, request, policy=policy)
    assert isinstance(result, CallFailed)
    assert result.streamed
    assert (result.partial_text, result.attempts, backend.calls, clock.sleeps) == ("partial", 1, 1, [])
    assert [d.text for d in deltas] == ["par", "tial"]
    assert result.usage.completion_tokens == 2  # estimated from what was streamed
    assert result.usage.cost_usd == cost_usd(request.model, result.usage.prompt_tokens, 2)
    assert policy.health(MODEL).consecutive_failures == 1


async def test_retries_stop_after_max_attempts(catalogue: Catalogue) -> None:
    clock = ManualClock(T0, auto_advance=True)
    backend = Scripted([Fail(FailureKind.UPSTREAM_ERROR)] * 4, clock)
    _, result = await run(backend, make_request(catalogue), policy=make_policy(clock, attempts=3))
    assert isinstance(result, CallFailed)
    assert (result.kind, result.attempts, backend.calls, len(clock.sleeps)) == (FailureKind.UPSTREAM_ERROR, 3, 3, 2)
    assert result.message == "upstream_error (scripted) (after 3 attempts)"


async def test_a_rate_limit_that_outlasts_the_deadline_fails_at_once(catalogue: Catalogue) -> None:
    clock = ManualClock(T0, auto_advance=True)
    backend = Scripted([Fail(FailureKind.RATE_LIMITED, retry_after=5.0), Ok()], clock)
    _, result = await run(backend, make_request(catalogue), policy=make_policy(clock), deadline=T0 + 3.0)
    assert isinstance(result, CallFailed)
    assert (result.kind, result.retry_after, result.attempts, backend.calls) == (FailureKind.RATE_LIMITED, 5.0, 1, 1)
    assert clock.sleeps == []  # no sleeping into a deadline
    assert clock.now() == T0
    assert "deadline" in result.message


async def test_a_timeout_whose_backoff_outlasts_the_deadline_fails_at_once(catalogue: Catalogue) -> None:
    class Upper(random.Random):
        def uniform(self, a: float, b: float) -> float:
            return b

    clock = ManualClock(T0, auto_advance=True)
    backend = Scripted([Fail(FailureKind.TIMEOUT, advance=2.0), Fail(FailureKind.TIMEOUT, advance=2.0), Ok()], clock)
    policy = make_policy(clock, base_delay=1.0, max_delay=8.0, rng=Upper())
    _, result = await run(backend, make_request(catalogue), policy=policy, deadline=T0 + 5.5)
    # Attempt 1 fails at +2, waits 1 s, attempt 2 fails at +5; a 2 s wait would end at +7 > +5.5.
    assert isinstance(result, CallFailed)
    assert (result.kind, result.attempts, backend.calls, clock.sleeps) == (FailureKind.TIMEOUT, 2, 2, [1.0])
    assert result.latency == pytest.approx(5.0)


async def test_a_huge_retry_after_is_not_waited_out(catalogue: Catalogue) -> None:
    clock = ManualClock(T0, auto_advance=True)
    backend = Scripted([Fail(FailureKind.RATE_LIMITED, retry_after=3600.0), Ok()], clock)
    _, result = await run(backend, make_request(catalogue), policy=make_policy(clock, max_retry_after=30.0))
    assert isinstance(result, CallFailed)
    assert (result.retry_after, backend.calls, clock.sleeps) == (3600.0, 1, [])


async def test_a_long_rate_limit_window_is_honoured_to_its_end(catalogue: Catalogue) -> None:
    """Issue 12: a Retry-After longer than max_retry_after fails the call at once AND keeps the model out of
    use for the vendor's whole window (not just max_retry_after): calls in it never reach the backend."""
    clock = ManualClock(T0, auto_advance=True)
    backend = Scripted([Fail(FailureKind.RATE_LIMITED, retry_after=120.0), Ok()], clock)
    policy = make_policy(clock, max_retry_after=30.0)
    request = make_request(catalogue)
    _, first = await run(backend, request, policy=policy)
    assert isinstance(first, CallFailed) and (first.retry_after, backend.calls) == (120.0, 1)

    clock.advance(119)
    _, during = await run(backend, request, policy=policy)
    assert isinstance(during, CallFailed)
    assert (during.kind, during.attempts, backend.calls, clock.sleeps) == (FailureKind.RATE_LIMITED, 0, 1, [])
    assert during.retry_after == pytest.approx(1.0)
    assert policy.health(MODEL).state is CircuitState.OPEN

    clock.advance(1)
    _, after = await run(backend, request, policy=policy)
    assert isinstance(after, Completion) and backend.calls == 2
    assert policy.health(MODEL).state is CircuitState.CLOSED


async def test_usage_of_every_attempt_is_accumulated(catalogue: Catalogue) -> None:
    clock = ManualClock(T0, auto_advance=True)
    request = make_request(catalogue)
    backend = Scripted(
        [
            Fail(FailureKind.UPSTREAM_ERROR, usage=TokenUsage(100, 0, cost_usd=0.001)),
            Fail(FailureKind.INVALID_OUTPUT, usage=TokenUsage(100, 20, reasoning_tokens=5, cached_tokens=10)),
            Ok(usage=TokenUsage(100, 50, cached_tokens=10, cost_usd=0.002)),
        ],
        clock,
    )
    _, result = await run(backend, request, policy=make_policy(clock))
    assert isinstance(result, Completion)
    usage = result.usage
    assert (usage.prompt_tokens, usage.completion_tokens, usage.reasoning_tokens, usage.cached_tokens) == (
        300,
        70,
        5,
        20,
    )
    assert usage.cost_usd == pytest.approx(0.001 + cost_usd(request.model, 100, 20) + 0.002, abs=1e-12)
    assert result.attempts == 3


async def test_usage_of_every_attempt_is_in_the_final_failure(catalogue: Catalogue) -> None:
    clock = ManualClock(T0, auto_advance=True)
    backend = Scripted([Fail(FailureKind.UPSTREAM_ERROR, usage=TokenUsage(10, 1, cost_usd=0.25))] * 3, clock)
    _, result = await run(backend, make_request(catalogue), policy=make_policy(clock))
    assert isinstance(result, CallFailed)
    assert (result.usage.prompt_tokens, result.usage.completion_tokens, result.usage.cost_usd) == (30, 3, 0.75)
    assert result.attempts == 3


async def test_without_a_policy_a_call_is_tried_once(catalogue: Catalogue) -> None:
    clock = ManualClock(T0, auto_advance=True)
    backend = Scripted([Fail(FailureKind.UPSTREAM_ERROR, retry_after=1.0), Ok()], clock)
    _, result = await run(backend, make_request(catalogue), clock=clock)
    assert isinstance(result, CallFailed)
    assert (result.attempts, backend.calls, result.message, result.origin) == (
        1,
        1,
        "upstream_error (scripted)",
        Origin.UPSTREAM,
    )


# -- client-side limits ---------------------------------------------------------------------------


async def test_free_model_limit_fails_fast_with_resource_exhausted(catalogue: Catalogue) -> None:
    clock = ManualClock(T0, auto_advance=True)
    free = f"{MODEL}:free"
    backend = Scripted([Ok()] * 25, clock)
    policy = make_policy(clock)
    request = make_request(catalogue, free)
    for _ in range(20):
        _, result = await run(backend, request, policy=policy, deadline=T0 + 10)
        assert isinstance(result, Completion)
    _, result = await run(backend, request, policy=policy, deadline=T0 + 10)
    assert isinstance(result, CallFailed)
    assert (result.kind, result.origin, result.attempts, backend.calls) == (
        FailureKind.RATE_LIMITED,
        Origin.CLIENT_RATE_LIMIT,
        0,
        20,
    )
    assert "client-side rate limit" in result.message
    assert result.retry_after == pytest.approx(60.0)
    assert result.usage.cost_usd == 0.0
    assert policy.health(free).consecutive_failures == 0  # our own limit is not the model's fault


async def test_an_upstream_retry_after_holds_other_callers(catalogue: Catalogue) -> None:
    clock = ManualClock(T0, auto_advance=True)
    backend = Scripted([Fail(FailureKind.RATE_LIMITED, retry_after=10.0), Ok()], clock)
    policy = make_policy(clock, attempts=1)
    _, first = await run(backend, make_request(catalogue), policy=policy)
    assert isinstance(first, CallFailed)
    _, second = await run(backend, make_request(catalogue), policy=policy, deadline=T0 + 5)
    assert isinstance(second, CallFailed)
    assert second.origin is Origin.CLIENT_RATE_LIMIT
    assert second.retry_after == pytest.approx(10.0)
    assert backend.calls == 1  # the model that said "wait" was not called again


async def test_cancelling_a_queued_call_leaks_no_slot(catalogue: Catalogue) -> None:
    clock = ManualClock(T0)
    backend = Scripted([Hang(), Ok(), Ok()], clock)
    policy = make_policy(clock, limits=LimitsConfig(max_concurrent=1))
    request = make_request(catalogue)
    holder = asyncio.create_task(run(backend, request, policy=policy))
    await backend.hanging.wait()
    queued = asyncio.create_task(run(backend, request, policy=policy))
    await clock.wait_for_sleepers(1)  # parked in the limiter's queue
    assert policy.health(MODEL).queued == 1
    queued.cancel()
    with pytest.raises(asyncio.CancelledError):
        await queued
    holder.cancel()
    with pytest.raises(asyncio.CancelledError):
        await holder
    health = policy.health(MODEL)
    assert (health.in_flight, health.queued, backend.calls, backend.closed) == (0, 0, 1, 1)
    _, result = await run(backend, request, policy=policy)
    assert isinstance(result, Completion)


# -- circuit breaker ------------------------------------------------------------------------------


async def test_the_circuit_opens_then_a_trial_closes_it(catalogue: Catalogue) -> None:
    clock = ManualClock(T0, auto_advance=True)
    backend = Scripted([Fail(FailureKind.UPSTREAM_ERROR), Fail(FailureKind.TIMEOUT), Ok()], clock)
    policy = make_policy(clock, attempts=1, threshold=2, cooldown=30.0)
    request = make_request(catalogue)
    for _ in range(2):
        _, result = await run(backend, request, policy=policy)
        assert isinstance(result, CallFailed)
    _, rejected = await run(backend, request, policy=policy)
    assert isinstance(rejected, CallFailed)
    assert (rejected.kind, rejected.origin, rejected.attempts, rejected.retry_after) == (
        FailureKind.UPSTREAM_ERROR,
        Origin.CIRCUIT_OPEN,
        0,
        30.0,
    )
    assert "circuit open" in rejected.message
    assert backend.calls == 2
    health = policy.health(MODEL)
    assert (health.state, health.consecutive_failures, health.cooldown_remaining) == (CircuitState.OPEN, 2, 30.0)
    clock.advance(30.0)
    assert policy.health(MODEL).state is CircuitState.HALF_OPEN
    _, trial = await run(backend, request, policy=policy)
    assert isinstance(trial, Completion)
    assert policy.health(MODEL).state is CircuitState.CLOSED


async def test_a_failed_trial_reopens_with_a_longer_cooldown(catalogue: Catalogue) -> None:
    clock = ManualClock(T0, auto_advance=True)
    backend = Scripted([Fail(FailureKind.UPSTREAM_ERROR)] * 3, clock)
    policy = make_policy(clock, attempts=1, threshold=2, cooldown=30.0)
    for _ in range(2):
        await run(backend, make_request(catalogue), policy=policy)
    clock.advance(30.0)
    _, trial = await run(backend, make_request(catalogue), policy=policy)
    assert isinstance(trial, CallFailed)
    assert trial.origin is Origin.UPSTREAM
    health = policy.health(MODEL)
    assert (health.state, health.cooldown_remaining, health.consecutive_failures) == (CircuitState.OPEN, 60.0, 3)


async def test_an_open_circuit_stops_retries(catalogue: Catalogue) -> None:
    clock = ManualClock(T0, auto_advance=True)
    backend = Scripted([Fail(FailureKind.UPSTREAM_ERROR, usage=TokenUsage(10, 0, cost_usd=0.5))] * 3, clock)
    policy = make_policy(clock, attempts=3, threshold=2)
    _, result = await run(backend, make_request(catalogue), policy=policy)
    assert isinstance(result, CallFailed)
    assert (result.origin, result.attempts, backend.calls) == (Origin.CIRCUIT_OPEN, 2, 2)
    assert result.usage.cost_usd == 1.0  # what the two real attempts cost is still reported


async def test_the_callers_deadline_does_not_count_against_the_model(catalogue: Catalogue) -> None:
    clock = ManualClock(T0, auto_advance=True)
    backend = Scripted([Fail(FailureKind.TIMEOUT, advance=2.0), Fail(FailureKind.TIMEOUT, advance=1.0)], clock)
    policy = make_policy(clock, attempts=1, threshold=1)
    _, late = await run(backend, make_request(catalogue), policy=policy, deadline=T0 + 2.0)
    assert isinstance(late, CallFailed)
    assert late.kind is FailureKind.TIMEOUT
    assert policy.health(MODEL).state is CircuitState.CLOSED  # the caller ran out of time, not the model
    _, own = await run(backend, make_request(catalogue), policy=policy, deadline=T0 + 60.0)
    assert isinstance(own, CallFailed)
    assert policy.health(MODEL).state is CircuitState.OPEN  # the model's own timeout counts


async def test_the_callers_cancellation_does_not_count_and_frees_the_trial(catalogue: Catalogue) -> None:
    clock = ManualClock(T0)
    backend = Scripted([Fail(FailureKind.UPSTREAM_ERROR), Hang(deltas=("x",)), Ok()], clock)
    policy = make_policy(clock, attempts=1, threshold=1, cooldown=30.0)
    request = make_request(catalogue)
    await run(backend, request, policy=policy)
    clock.advance(30.0)
    trial = asyncio.create_task(run(backend, request, policy=policy))
    await backend.hanging.wait()
    assert policy.health(MODEL).in_flight == 1
    trial.cancel()
    with pytest.raises(asyncio.CancelledError):
        await trial
    health = policy.health(MODEL)
    assert (health.state, health.consecutive_failures, health.in_flight) == (CircuitState.HALF_OPEN, 1, 0)
    assert backend.closed == 2  # the upstream stream was closed
    _, result = await run(backend, request, policy=policy)  # the next call is the new trial
    assert isinstance(result, Completion)
    assert policy.health(MODEL).state is CircuitState.CLOSED


async def test_closing_the_stream_early_releases_everything(catalogue: Catalogue) -> None:
    clock = ManualClock(T0, auto_advance=True)
    backend = Scripted([Ok(deltas=("a", "b", "c"))], clock)
    policy = make_policy(clock, threshold=1)
    stream = generate(backend, make_request(catalogue), policy=policy)
    first = await anext(stream)
    assert isinstance(first, TextDelta)
    assert policy.health(MODEL).in_flight == 1
    await stream.aclose()
    health = policy.health(MODEL)
    assert (health.in_flight, health.consecutive_failures, health.state, backend.closed) == (
        0,
        0,
        CircuitState.CLOSED,
        1,
    )


# -- with the real clock and the simulator --------------------------------------------------------


async def test_retries_recover_simulated_flaky_models_on_the_real_clock(
    catalogue: Catalogue, write_file: Callable[..., Path]
) -> None:
    profile = load_profile(
        write_file("[defaults.failures]\nrate_limit = 0.3\nupstream_error = 0.3\nretry_after_seconds = 1.0\n"),
        catalogue,
    )
    # 1000x speed: retry-after hints are 1 ms, so the real waits stay trivial.
    config = ResilienceConfig(retry=RetryPolicy(max_attempts=6, base_delay=0.001, max_delay=0.002))
    policy = Resilience(config, rng=random.Random(5))
    plain_failures = 0
    for index in range(12):
        request = dataclasses.replace(
            make_request(catalogue), messages=(Message(Role.USER, f"Question {index} about hash maps."),)
        )
        _, plain = await run_sim(Simulator(catalogue, profile, speed=1000), request)
        plain_failures += isinstance(plain, CallFailed)
        _, result = await run_sim(Simulator(catalogue, profile, speed=1000), request, policy=policy)
        assert isinstance(result, Completion), result
        assert result.simulated
    assert plain_failures >= 3  # the profile really is flaky without retries
    assert policy.health(MODEL).in_flight == 0


async def run_sim(
    sim: Simulator, request: GenerationRequest, policy: Resilience | None = None
) -> tuple[list[TextDelta], Completion | CallFailed]:
    deltas: list[TextDelta] = []
    try:
        async for event in generate(sim, request, policy=policy, deadline=None):
            if isinstance(event, Completion):
                return deltas, event
            deltas.append(event)
    except CallFailed as failure:
        return deltas, failure
    raise AssertionError("generate ended without a result")
