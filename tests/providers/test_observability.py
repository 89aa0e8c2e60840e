"""The providers' metrics and spans: what each call, attempt, retry, breaker trip and limiter wait records.

Metrics live on prometheus_client's default registry, shared by every test of the process, so each test reads
the samples it cares about before and after and checks the difference. Spans go to an SDK tracer provider made
for the test (never the global one) whose tracer is handed to ``build(..., tracer=...)`` or ``generate``.
"""

from __future__ import annotations

import asyncio
import random
import uuid
from collections.abc import AsyncGenerator, AsyncIterator, Callable, Iterator, Sequence
from contextlib import aclosing, asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
import pytest
from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.sdk.trace import ReadableSpan, Span, SpanProcessor, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode
from prometheus_client import REGISTRY

from orchestratex.config import Settings
from orchestratex.grpc_client import open_channel
from orchestratex.tracing import private_id_generator
from orchestratex.v1 import common_pb2, providers_pb2, providers_pb2_grpc
from services.providers import metrics, telemetry
from services.providers.backend import (
    Backend,
    FailureKind,
    FinishReason,
    GenerationRequest,
    Purpose,
    StreamEnd,
    StreamEvent,
    TextDelta,
    Timing,
)
from services.providers.catalogue import Catalogue, ModelSpec, load_catalogue
from services.providers.generation import CallFailed, Completion, generate
from services.providers.resilience import ManualClock, Resilience
from services.providers.server import build
from services.providers.simulator import Simulator
from tests.providers.helpers import ObservedBackend, collect, request
from tests.providers.openrouter_standin import DEFAULT_KEY, OpenRouterStandIn, Reply, Usage, error_reply
from tests.providers.test_resilience_generate import Fail, Ok, Scripted, make_policy, make_request
from tests.providers.test_server import FAILING_PROFILE, SLOW_PROFILE

GLM = "z-ai/glm-4.5"
GPT_OSS = "openai/gpt-oss-120b"
MAVERICK = "meta-llama/llama-4-maverick"
KIMI = "moonshotai/kimi-k2"


FAST_RETRIES = {"ORX_PROVIDER_BACKOFF_BASE": "0.001", "ORX_PROVIDER_BACKOFF_MAX": "0.002"}
"""Backoff short enough that a retried call over the real clock stays well under a second."""


# -- reading metrics ----------------------------------------------------------------------------------


def value(name: str, **labels: str) -> float:
    """A sample of the default registry (0 when the series does not exist yet)."""
    return REGISTRY.get_sample_value(name, labels) or 0.0


class Changes:
    """Samples read when created; :meth:`delta` says how much each moved since."""

    def __init__(self, **queries: tuple[str, dict[str, str]]) -> None:
        self._queries = queries
        self._before = {key: value(name, **labels) for key, (name, labels) in queries.items()}

    def delta(self) -> dict[str, float]:
        """After minus before, by key."""
        return {key: value(name, **labels) - self._before[key] for key, (name, labels) in self._queries.items()}


def call_queries(model: str, outcome: str, purpose: str = "answer") -> dict[str, tuple[str, dict[str, str]]]:
    """The per-call series of one model (tokens, cost, durations, first tokens) and its calls with ``outcome``."""
    return {
        "calls": ("orx_provider_calls_total", {"model": model, "purpose": purpose, "outcome": outcome}),
        "prompt": ("orx_provider_tokens_total", {"model": model, "kind": "prompt"}),
        "completion": ("orx_provider_tokens_total", {"model": model, "kind": "completion"}),
        "reasoning": ("orx_provider_tokens_total", {"model": model, "kind": "reasoning"}),
        "cached": ("orx_provider_tokens_total", {"model": model, "kind": "cached"}),
        "cost": ("orx_provider_cost_usd_total", {"model": model}),
        "ttft_count": ("orx_provider_time_to_first_token_seconds_count", {"model": model}),
        "ttft_sum": ("orx_provider_time_to_first_token_seconds_sum", {"model": model}),
        "success_count": ("orx_provider_call_duration_seconds_count", {"model": model, "result": "success"}),
        "success_sum": ("orx_provider_call_duration_seconds_sum", {"model": model, "result": "success"}),
        "failure_count": ("orx_provider_call_duration_seconds_count", {"model": model, "result": "failure"}),
        "cancelled_count": ("orx_provider_call_duration_seconds_count", {"model": model, "result": "cancelled"}),
        "wait_count": ("orx_provider_limiter_wait_seconds_count", {"model": model}),
    }


def attempts(model: str, outcome: str) -> tuple[str, dict[str, str]]:
    return ("orx_provider_attempts_total", {"model": model, "outcome": outcome})


def retries(model: str, reason: str) -> tuple[str, dict[str, str]]:
    return ("orx_provider_retries_total", {"model": model, "reason": reason})


def rejections(model: str, reason: str) -> tuple[str, dict[str, str]]:
    return ("orx_provider_rejections_total", {"model": model, "reason": reason})


def seconds(duration: Any) -> float:
    return float(duration.ToNanoseconds()) / 1e9


# -- recording spans ----------------------------------------------------------------------------------


class _Ended(SpanProcessor):
    """Sets an event whenever a span of a given name ends: something to wait on instead of sleeping."""

    def __init__(self) -> None:
        self.events: dict[str, asyncio.Event] = {}

    def event(self, name: str) -> asyncio.Event:
        return self.events.setdefault(name, asyncio.Event())

    def on_start(self, span: Span, parent_context: Context | None = None) -> None:
        return None

    def on_end(self, span: ReadableSpan) -> None:
        self.event(span.name).set()


@dataclass
class Spans:
    """An SDK tracer provider of the test's own, its tracer and what it exported."""

    provider: TracerProvider
    exporter: InMemorySpanExporter
    ended: _Ended

    @property
    def tracer(self) -> trace.Tracer:
        return self.provider.get_tracer(telemetry.TRACER_NAME)

    def named(self, name: str) -> list[ReadableSpan]:
        return [s for s in self.exporter.get_finished_spans() if s.name == name]

    def one_call(self) -> tuple[ReadableSpan, list[ReadableSpan]]:
        """The one ``providers.generate`` span and its ``providers.attempt`` children, by attempt number."""
        calls = self.named(telemetry.CALL_SPAN)
        assert len(calls) == 1, [s.name for s in self.exporter.get_finished_spans()]
        call = calls[0]
        children = [s for s in self.named(telemetry.ATTEMPT_SPAN) if s.parent is not None]
        assert all(s.parent.span_id == call.context.span_id for s in children if s.parent is not None)
        assert all(s.context.trace_id == call.context.trace_id for s in children)
        assert len(children) == len(self.named(telemetry.ATTEMPT_SPAN))
        return call, sorted(children, key=lambda s: attr(s, "orx.attempt"))


@pytest.fixture
def spans() -> Iterator[Spans]:
    provider = TracerProvider(id_generator=private_id_generator())
    exporter = InMemorySpanExporter()
    ended = _Ended()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    provider.add_span_processor(ended)
    yield Spans(provider, exporter, ended)
    provider.shutdown()


def attr(span: ReadableSpan, key: str) -> Any:
    assert span.attributes is not None
    return span.attributes.get(key)


def texts_of(spans: Sequence[ReadableSpan]) -> list[str]:
    """Every string a span carries: attribute keys and values, status descriptions, events and their attributes."""
    out: list[str] = []
    for span in spans:
        out.append(span.name)
        out.extend(f"{k}={v!r}" for k, v in (span.attributes or {}).items())
        out.append(span.status.description or "")
        for event in span.events:
            out.append(event.name)
            out.extend(f"{k}={v!r}" for k, v in (event.attributes or {}).items())
    return out


# -- servers ------------------------------------------------------------------------------------------


@asynccontextmanager
async def serve(
    settings: Settings,
    *,
    tracer: trace.Tracer | None = None,
    backend: Backend | None = None,
    resilience: Resilience | None = None,
) -> AsyncIterator[providers_pb2_grpc.ProviderServiceStub]:
    """The real providers server on port 0 (``build``), and a stub talking to it."""
    server = await build(settings, "127.0.0.1:0", backend=backend, resilience=resilience, tracer=tracer)
    await server.start()
    channel = open_channel(f"127.0.0.1:{server.port}", unary_timeout=30)
    try:
        yield providers_pb2_grpc.ProviderServiceStub(channel)
    finally:
        await channel.close(None)
        await server.stop(0)


@pytest.fixture
async def standin() -> AsyncIterator[OpenRouterStandIn]:
    async with OpenRouterStandIn() as server:
        yield server


def live_settings(standin: OpenRouterStandIn, tmp_path: Path, **env: str) -> Settings:
    """Live mode against the OpenRouter stand-in (its key), one attempt and no breaker unless ``env`` says."""
    return Settings.from_env(
        {
            "ORX_DATA_DIR": str(tmp_path),
            "ORX_PROVIDER_MODE": "live",
            "OPENROUTER_API_KEY": DEFAULT_KEY,
            "ORX_OPENROUTER_BASE_URL": standin.base_url,
            "ORX_PROVIDER_MAX_ATTEMPTS": "1",
            "ORX_PROVIDER_BREAKER_THRESHOLD": "1000",
            **FAST_RETRIES,
            **env,
        }
    )


@pytest.fixture
def sim_settings(
    make_settings: Callable[..., Settings], write_file: Callable[[str, str], Path]
) -> Callable[..., Settings]:
    """Simulated settings (one attempt, no breaker), with a profile given as TOML text."""

    def make(profile: str | None = None, **env: str) -> Settings:
        if profile is not None:
            env["ORX_SIM_PROFILE"] = str(write_file(profile, ".toml"))
        return make_settings(**env)

    return make


# -- metrics of calls ---------------------------------------------------------------------------------


@pytest.mark.parametrize("streaming", [False, True], ids=["Generate", "StreamGenerate"])
async def test_a_successful_call_counts_its_tokens_cost_and_times(
    sim_settings: Callable[..., Settings], streaming: bool
) -> None:
    changes = Changes(**call_queries(GLM, "success"), attempts=attempts(GLM, "success"))
    async with serve(sim_settings()) as stub:
        req = request(GLM, "Explain how a hash map handles collisions.")
        if streaming:
            events, err = await collect(stub, req)
            assert err is None
            done = events[-1].completed
        else:
            done = await stub.Generate(req)
    delta = changes.delta()
    assert delta.pop("cost") == pytest.approx(done.usage.cost_usd, rel=1e-9) and done.usage.cost_usd > 0
    assert delta.pop("ttft_sum") == pytest.approx(seconds(done.time_to_first_token), abs=1e-6)
    assert delta.pop("success_sum") == pytest.approx(seconds(done.latency), abs=1e-6)
    assert delta == {
        "calls": 1,
        "prompt": done.usage.prompt_tokens,
        "completion": done.usage.completion_tokens,
        "reasoning": 0,
        "cached": 0,
        "ttft_count": 1,
        "success_count": 1,
        "failure_count": 0,
        "cancelled_count": 0,
        "wait_count": 1,
        "attempts": 1,
    }


async def test_failures_count_by_the_kind_the_caller_is_told(sim_settings: Callable[..., Settings]) -> None:
    kinds = {GLM: "rate_limited", GPT_OSS: "upstream_error", MAVERICK: "timeout"}
    before = {
        model: Changes(**call_queries(model, kind), attempts=attempts(model, kind)) for model, kind in kinds.items()
    }
    mid = Changes(**call_queries(KIMI, "mid_stream_error"), attempts=attempts(KIMI, "mid_stream_error"))
    async with serve(sim_settings(FAILING_PROFILE)) as stub:
        for model in kinds:
            with pytest.raises(grpc.aio.AioRpcError):
                await stub.Generate(request(model))
        events, err = await collect(stub, request(KIMI, "Explain TCP slow start."))
    assert err is not None and events[-1].WhichOneof("event") == "failed"
    for model, changes in before.items():
        delta = changes.delta()
        assert (delta["calls"], delta["attempts"], delta["failure_count"]) == (1, 1, 1), model
        assert (delta["success_count"], delta["ttft_count"], delta["prompt"], delta["cost"]) == (0, 0, 0, 0), model
    failed = events[-1].failed
    delta = mid.delta()
    assert (delta["calls"], delta["attempts"], delta["failure_count"], delta["ttft_count"]) == (1, 1, 1, 1)
    assert (delta["prompt"], delta["completion"]) == (failed.usage.prompt_tokens, failed.usage.completion_tokens)
    assert failed.usage.completion_tokens > 0
    assert delta["cost"] == pytest.approx(failed.usage.cost_usd, rel=1e-9)


async def test_retries_count_every_attempt_and_why_it_was_retried(
    standin: OpenRouterStandIn, tmp_path: Path, spans: Spans
) -> None:
    standin.script.extend([error_reply(502), error_reply(429, retry_after="0"), Reply()])
    changes = Changes(
        calls=("orx_provider_calls_total", {"model": GLM, "purpose": "answer", "outcome": "success"}),
        ok=attempts(GLM, "success"),
        upstream=attempts(GLM, "upstream_error"),
        limited=attempts(GLM, "rate_limited"),
        retried_upstream=retries(GLM, "upstream_error"),
        retried_limited=retries(GLM, "rate_limited"),
        waits=("orx_provider_limiter_wait_seconds_count", {"model": GLM}),
    )
    async with serve(live_settings(standin, tmp_path, ORX_PROVIDER_MAX_ATTEMPTS="3"), tracer=spans.tracer) as stub:
        done = await stub.Generate(request(GLM))
    assert done.attempts == 3
    assert changes.delta() == {
        "calls": 1,
        "ok": 1,
        "upstream": 1,
        "limited": 1,
        "retried_upstream": 1,
        "retried_limited": 1,
        "waits": 3,
    }
    call, tries = spans.one_call()
    assert [attr(s, "orx.attempt") for s in tries] == [1, 2, 3]
    assert [attr(s, "orx.outcome") for s in tries] == ["upstream_error", "rate_limited", "success"]
    assert [s.status.status_code for s in tries] == [StatusCode.ERROR, StatusCode.ERROR, StatusCode.UNSET]
    assert [attr(s, "http.response.status_code") for s in tries] == [502, 429, None]
    assert [attr(s, "orx.retried") for s in tries] == [True, True, None]
    assert [attr(s, "orx.retry_reason") for s in tries] == [None, "upstream_error", "rate_limited"]
    assert attr(call, "orx.attempts") == 3 and call.status.status_code is StatusCode.UNSET


async def test_tokens_by_kind_and_the_vendors_cost(standin: OpenRouterStandIn, tmp_path: Path, spans: Spans) -> None:
    usage = Usage(prompt_tokens=40, completion_tokens=25, cost=0.00123, cached_tokens=16, reasoning_tokens=9)
    standin.script.append(Reply(content=["Fine", "."], reasoning=["Think."], model="z-ai/glm-4.5-0711", usage=usage))
    changes = Changes(**call_queries(GLM, "success", purpose="critique"))
    async with serve(live_settings(standin, tmp_path), tracer=spans.tracer) as stub:
        done = await stub.Generate(request(GLM, purpose=common_pb2.CALL_PURPOSE_CRITIQUE))
    assert done.served_model == "z-ai/glm-4.5-0711"
    delta = changes.delta()
    assert delta.pop("cost") == pytest.approx(0.00123)
    assert {k: delta[k] for k in ("calls", "prompt", "completion", "reasoning", "cached")} == {
        "calls": 1,
        "prompt": 40,
        "completion": 25,
        "reasoning": 9,
        "cached": 16,
    }
    call, (only,) = spans.one_call()
    for span in (call, only):
        assert attr(span, "gen_ai.system") == "openrouter"
        assert attr(span, "gen_ai.request.model") == GLM
        assert attr(span, "gen_ai.response.model") == "z-ai/glm-4.5-0711"
        assert attr(span, "gen_ai.usage.input_tokens") == 40
        assert attr(span, "gen_ai.usage.output_tokens") == 25
        assert attr(span, "orx.cost_usd") == pytest.approx(0.00123)
        assert attr(span, "orx.finish_reason") == "stop"
        assert attr(span, "orx.purpose") == "critique"
        assert span.kind is SpanKind.INTERNAL
    assert attr(only, "orx.attempt") == 1 and attr(only, "orx.retry_reason") is None
    assert attr(call, "orx.outcome") == "success" and attr(call, "orx.origin") == "upstream"


# -- the breaker, the limiter and vendor holds --------------------------------------------------------


async def test_the_breaker_gauge_follows_trips_cooldown_and_trials(sim_settings: Callable[..., Settings]) -> None:
    clock = ManualClock()
    policy = Resilience.from_env(
        {
            "ORX_PROVIDER_MAX_ATTEMPTS": "1",
            "ORX_PROVIDER_BREAKER_THRESHOLD": "2",
            "ORX_PROVIDER_BREAKER_COOLDOWN": "30",
        },
        clock=clock,
    )
    changes = Changes(
        trips=("orx_provider_breaker_trips_total", {"model": GPT_OSS}),
        refused=rejections(GPT_OSS, "circuit_open"),
        open_calls=("orx_provider_calls_total", {"model": GPT_OSS, "purpose": "answer", "outcome": "circuit_open"}),
        upstream=attempts(GPT_OSS, "upstream_error"),
    )

    def gauge() -> float:
        return value("orx_provider_breaker_state", model=GPT_OSS)

    async with serve(sim_settings(FAILING_PROFILE), resilience=policy) as stub:
        for _ in range(2):
            with pytest.raises(grpc.aio.AioRpcError):
                await stub.Generate(request(GPT_OSS))
        assert gauge() == metrics.BREAKER_OPEN
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await stub.Generate(request(GPT_OSS))
        assert refused.value.code() == grpc.StatusCode.UNAVAILABLE
        assert changes.delta() == {"trips": 1, "refused": 1, "open_calls": 1, "upstream": 2}
        clock.advance(30)  # the cooldown is over: the gauge says so before any call notices
        assert gauge() == metrics.BREAKER_HALF_OPEN
        with pytest.raises(grpc.aio.AioRpcError):
            await stub.Generate(request(GPT_OSS))  # the trial fails: open again
        assert gauge() == metrics.BREAKER_OPEN
    assert changes.delta() == {"trips": 2, "refused": 1, "open_calls": 1, "upstream": 3}


async def test_the_limiter_queue_gauge_rises_and_returns_to_zero(sim_settings: Callable[..., Settings]) -> None:
    clock = ManualClock()
    policy = Resilience.from_env(
        {"ORX_PROVIDER_MAX_ATTEMPTS": "1", "ORX_PROVIDER_MODEL_LIMITS": f"{GLM}=600/1", "ORX_PROVIDER_QUEUE_WAIT": "5"},
        clock=clock,
    )
    settings = sim_settings(SLOW_PROFILE)
    backend = ObservedBackend(Simulator.from_settings(settings, load_catalogue(settings)))
    changes = Changes(
        timeouts=rejections(GLM, "queue_timeout"),
        limited=("orx_provider_calls_total", {"model": GLM, "purpose": "answer", "outcome": "rate_limited"}),
        cancelled=("orx_provider_calls_total", {"model": GLM, "purpose": "answer", "outcome": "cancelled"}),
        waits=("orx_provider_limiter_wait_seconds_count", {"model": GLM}),
    )

    def gauges() -> tuple[float, float]:
        return value("orx_provider_limiter_queue_length", model=GLM), value("orx_provider_limiter_in_flight", model=GLM)

    async with serve(settings, backend=backend, resilience=policy) as stub:
        first = stub.StreamGenerate(providers_pb2.StreamGenerateRequest(request=request(GLM)), timeout=60)
        assert (await first.read()).WhichOneof("event") == "delta"  # holds the model's only slot
        assert gauges() == (0, 1)
        second = asyncio.ensure_future(stub.Generate(request(GLM), timeout=60))
        await clock.wait_for_sleepers(1)  # the second call waits in the limiter's queue
        assert gauges() == (1, 1)
        clock.advance(5)  # ORX_PROVIDER_QUEUE_WAIT passes: refused
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await second
        assert refused.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert gauges() == (0, 1)
        first.cancel()
        await asyncio.wait_for(backend.stopped.wait(), timeout=10)
        assert gauges() == (0, 0)
    assert changes.delta() == {"timeouts": 1, "limited": 1, "cancelled": 1, "waits": 1}


async def test_a_vendor_hold_refuses_calls_and_counts_them(standin: OpenRouterStandIn, tmp_path: Path) -> None:
    standin.script.append(error_reply(429, retry_after="600"))
    changes = Changes(
        held=rejections(GLM, "held_rate_limited"),
        limited=("orx_provider_calls_total", {"model": GLM, "purpose": "answer", "outcome": "rate_limited"}),
        upstream=attempts(GLM, "rate_limited"),
    )
    async with serve(live_settings(standin, tmp_path)) as stub:
        for _ in range(2):
            with pytest.raises(grpc.aio.AioRpcError) as err:
                await stub.Generate(request(GLM))
            assert err.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert len(standin.chat_requests()) == 1  # the second was refused here
    assert changes.delta() == {"held": 1, "limited": 2, "upstream": 1}


# -- spans --------------------------------------------------------------------------------------------


async def test_a_failed_call_is_an_error_span_with_the_kind_only(
    sim_settings: Callable[..., Settings], spans: Spans
) -> None:
    async with serve(sim_settings(FAILING_PROFILE), tracer=spans.tracer) as stub:
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await stub.Generate(request(GPT_OSS))
    assert "simulated" in (err.value.details() or "")
    call, (only,) = spans.one_call()
    for span in (call, only):
        assert span.status.status_code is StatusCode.ERROR
        assert span.status.description == "upstream_error"  # the kind, never the vendor's message
        assert attr(span, "error.type") == "upstream_error"
        assert attr(span, "gen_ai.system") == "simulated"
        assert not span.events  # no recorded exception (its message and stack would leak the vendor's text)
    assert attr(call, "orx.origin") == "upstream" and attr(call, "orx.attempts") == 1
    assert attr(only, "orx.retried") is False


async def test_a_refused_call_has_no_attempt(sim_settings: Callable[..., Settings], spans: Spans) -> None:
    policy = Resilience.from_env({"ORX_PROVIDER_MAX_ATTEMPTS": "1", "ORX_PROVIDER_BREAKER_THRESHOLD": "1"})
    async with serve(sim_settings(FAILING_PROFILE), resilience=policy, tracer=spans.tracer) as stub:
        for _ in range(2):
            with pytest.raises(grpc.aio.AioRpcError):
                await stub.Generate(request(GPT_OSS))
    refused = spans.named(telemetry.CALL_SPAN)[1]
    assert attr(refused, "orx.origin") == "circuit_open" and attr(refused, "orx.outcome") == "circuit_open"
    assert attr(refused, "orx.attempts") == 0 and refused.status.status_code is StatusCode.ERROR
    assert len(spans.named(telemetry.ATTEMPT_SPAN)) == 1  # the first call's only


async def test_a_stream_span_ends_when_the_caller_cancels(sim_settings: Callable[..., Settings], spans: Spans) -> None:
    settings = sim_settings(SLOW_PROFILE)
    backend = ObservedBackend(Simulator.from_settings(settings, load_catalogue(settings)))
    changes = Changes(**call_queries(GLM, "cancelled"), attempts=attempts(GLM, "cancelled"))
    async with serve(settings, backend=backend, tracer=spans.tracer) as stub:
        call = stub.StreamGenerate(providers_pb2.StreamGenerateRequest(request=request(GLM)), timeout=60)
        assert (await call.read()).WhichOneof("event") == "delta"
        assert spans.named(telemetry.CALL_SPAN) == []  # still streaming: not ended
        call.cancel()
        await asyncio.wait_for(spans.ended.event(telemetry.CALL_SPAN).wait(), timeout=10)
    generate_span, (only,) = spans.one_call()
    for span in (generate_span, only):
        assert attr(span, "orx.outcome") == "cancelled"
        assert span.status.status_code is StatusCode.UNSET  # the caller's choice, not an error
    assert attr(generate_span, "gen_ai.usage.output_tokens") >= 1  # the estimate of what was streamed
    delta = changes.delta()
    assert (delta["calls"], delta["attempts"], delta["cancelled_count"], delta["ttft_count"]) == (1, 1, 1, 1)
    assert delta["completion"] >= 1 and delta["cost"] > 0


@dataclass
class CurrentSpanBackend:
    """A backend that notes which span is current while it runs (the aiohttp client's spans nest under it)."""

    seen: list[trace.SpanContext] = field(default_factory=list)

    @property
    def name(self) -> str:
        return "recording"

    @property
    def simulated(self) -> bool:
        return False

    def timing(self, model: ModelSpec) -> Timing:
        return Timing(0.1, 100.0)

    async def aclose(self) -> None:
        return None

    async def stream(self, request: GenerationRequest) -> AsyncGenerator[StreamEvent, None]:
        self.seen.append(trace.get_current_span().get_span_context())
        yield TextDelta("Hi")
        self.seen.append(trace.get_current_span().get_span_context())
        yield StreamEnd(FinishReason.STOP, served_model=request.model.id)


async def test_the_call_span_is_a_child_of_the_current_span_and_the_attempt_is_current_upstream(
    catalogue: Catalogue, spans: Spans
) -> None:
    backend = CurrentSpanBackend()
    with spans.tracer.start_as_current_span("grpc server") as parent:
        async with aclosing(generate(backend, make_request(catalogue), tracer=spans.tracer)) as events:
            async for _ in events:
                assert trace.get_current_span() is parent  # the consumer never sees the attempt as current
    call, (only,) = spans.one_call()
    assert call.parent is not None and call.parent.span_id == parent.get_span_context().span_id
    assert [c.span_id for c in backend.seen] == [only.context.span_id] * 2


async def test_retries_are_attempt_spans_with_exact_times(catalogue: Catalogue, spans: Spans) -> None:
    clock = ManualClock(1000.0, auto_advance=True)
    backend = Scripted([Fail(FailureKind.UPSTREAM_ERROR, advance=2.0), Ok()], clock)
    policy = make_policy(clock, base_delay=0.5, rng=random.Random(3))
    changes = Changes(**call_queries(make_request(catalogue).model.id, "success", purpose="other"))
    result: Completion | None = None
    async for event in generate(backend, make_request(catalogue), policy=policy, tracer=spans.tracer):
        if isinstance(event, Completion):
            result = event
    assert result is not None and result.attempts == 2
    delta = changes.delta()
    assert result.time_to_first_token == pytest.approx(2.0 + clock.sleeps[0])  # from the call's start
    assert delta["ttft_sum"] == pytest.approx(result.time_to_first_token)
    assert delta["success_sum"] == pytest.approx(result.latency)
    _, tries = spans.one_call()
    assert attr(tries[1], "orx.retry_wait_seconds") == pytest.approx(clock.sleeps[0])
    assert attr(tries[0], "orx.limiter_wait_seconds") == 0


async def test_a_call_that_fails_past_retries_reports_its_kind(catalogue: Catalogue, spans: Spans) -> None:
    clock = ManualClock(1000.0, auto_advance=True)
    backend = Scripted([Fail(FailureKind.TIMEOUT), Fail(FailureKind.TIMEOUT)], clock)
    with pytest.raises(CallFailed) as failed:
        async for _ in generate(
            backend,
            make_request(catalogue),
            policy=make_policy(clock, attempts=2),
            tracer=spans.tracer,
        ):
            pass
    assert failed.value.outcome == "timeout"
    call, tries = spans.one_call()
    assert [attr(s, "orx.outcome") for s in tries] == ["timeout", "timeout"]
    assert attr(call, "orx.outcome") == "timeout" and attr(call, "orx.attempts") == 2


# -- nothing private in labels or attributes ----------------------------------------------------------


async def test_no_prompt_end_user_or_key_in_labels_or_span_attributes(
    standin: OpenRouterStandIn, tmp_path: Path, spans: Spans
) -> None:
    marker = uuid.uuid4().hex
    prompt, end_user = f"PROMPT-{marker} what is a monad?", f"END-USER-{marker}"
    completion = f"COMPLETION-{marker}"
    standin.script.extend(
        [
            error_reply(502, echo_key=lambda key: key),  # a careless vendor quoting our key in its error
            Reply(content=[completion, " done."], reasoning=[f"REASONING-{marker}"]),
            error_reply(500, echo_key=lambda key: key),
            error_reply(500, echo_key=lambda key: key),
        ]
    )
    async with serve(live_settings(standin, tmp_path, ORX_PROVIDER_MAX_ATTEMPTS="2"), tracer=spans.tracer) as stub:
        done = await stub.Generate(request(GLM, prompt, end_user=end_user))
        events, err = await collect(stub, request(GLM, prompt, end_user=end_user))
    assert completion in done.text and err is not None and not events
    assert standin.chat_requests()[0].key == DEFAULT_KEY
    secrets = (marker, DEFAULT_KEY, DEFAULT_KEY.removeprefix("sk-or-v1-")[:16], "what is a monad")
    recorded = spans.exporter.get_finished_spans()
    assert len(recorded) == 6  # two calls of two attempts each
    for text in texts_of(recorded):
        assert not any(secret in text for secret in secrets), text
    _check_every_provider_label(secrets)


async def test_every_label_value_is_from_a_bounded_set(sim_settings: Callable[..., Settings]) -> None:
    marker = uuid.uuid4().hex
    async with serve(sim_settings(FAILING_PROFILE)) as stub:
        await stub.Generate(request("qwen/qwen3-coder", f"PROMPT-{marker}", end_user=f"END-USER-{marker}"))
        with pytest.raises(grpc.aio.AioRpcError):
            await stub.Generate(request(GLM, f"PROMPT-{marker}", end_user=f"END-USER-{marker}"))
    _check_every_provider_label((marker,))


_LABEL_VALUES: dict[str, set[str]] = {
    "purpose": {p.value for p in Purpose},
    "outcome": {k.value for k in FailureKind} | {"success", "cancelled", "internal", "circuit_open"},
    "reason": {k.value for k in FailureKind}
    | {f"held_{k.value}" for k in FailureKind}
    | {"circuit_open", "circuit_trial_in_flight", "queue_full", "queue_timeout", "deadline"},
    "kind": set(metrics.TOKEN_KINDS),
    "result": set(metrics.RESULTS),
}


def _check_every_provider_label(secrets: Sequence[str]) -> None:
    """Every ``orx_provider_*`` sample has only known label names, enum values from their sets, and none of
    ``secrets`` in any value."""
    seen = 0
    for family in REGISTRY.collect():
        if not family.name.startswith("orx_provider_"):
            continue
        for sample in family.samples:
            seen += 1
            assert set(sample.labels) <= {"model", "le", *_LABEL_VALUES}, sample
            for name, label in sample.labels.items():
                assert not any(secret in label for secret in secrets), sample
                if name in _LABEL_VALUES:
                    assert label in _LABEL_VALUES[name], sample
    assert seen > 0
