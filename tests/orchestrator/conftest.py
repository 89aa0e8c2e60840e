"""Fakes for the orchestrator's peers (providers, selector, analytics) on their own port-0 servers.

The fake providers service speaks the real StreamGenerate protocol. Author answers carry a marker
``quality=N`` and the fake critics score exactly N (or a scripted value), so a test decides what the
loop sees without any randomness.
"""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
import pytest
from google.rpc import error_details_pb2, status_pb2
from grpc_status import rpc_status

from orchestratex.config import Settings
from orchestratex.errors import ERROR_DOMAIN, InvalidArgument, ResourceExhausted, Unavailable
from orchestratex.grpc_client import open_channel
from orchestratex.grpc_server import GrpcServer, ServiceBinding, create_server
from orchestratex.usage import USAGE_TRAILER
from orchestratex.v1 import (
    analytics_pb2,
    analytics_pb2_grpc,
    common_pb2,
    orchestrator_pb2_grpc,
    providers_pb2,
    providers_pb2_grpc,
    selector_pb2,
    selector_pb2_grpc,
)
from orchestratex.v1 import orchestrator_pb2 as pb
from services.orchestrator import server as orchestrator_server

MODELS = [("m/alpha", "fa"), ("m/beta", "fb"), ("m/gamma", "fc"), ("m/delta", "fa")]
_QUALITY = re.compile(r"quality=(\d+(?:\.\d+)?)")


@dataclass
class FakeProviders(providers_pb2_grpc.ProviderServiceServicer):
    """Scripted models. ``answers[model]`` pops texts per author call; critics score the quality marker."""

    answers: dict[str, list[str]] = field(default_factory=dict)
    critic_scores: dict[str, list[float]] = field(default_factory=dict)
    critic_text: dict[str, str] = field(default_factory=dict)
    fail_before: dict[str, grpc.StatusCode] = field(default_factory=dict)
    fail_mid: set[str] = field(default_factory=set)
    #: A FailureKind name sent as the ``ErrorInfo`` reason of a ``fail_before`` failure.
    fail_kind: dict[str, str] = field(default_factory=dict)
    block: set[str] = field(default_factory=set)
    #: Set to let the calls of ``block``ed models go on (they wait until then, or until cancelled).
    release: asyncio.Event = field(default_factory=asyncio.Event)
    hang_after: dict[str, int] = field(default_factory=dict)
    calls: list[providers_pb2.GenerateRequest] = field(default_factory=list)
    started: asyncio.Event = field(default_factory=asyncio.Event)
    cancelled: asyncio.Event = field(default_factory=asyncio.Event)
    chunk_pause: float = 0.0
    #: Models whose catalogue entry says they follow a JSON Schema (supports_structured_outputs).
    structured: set[str] = field(default_factory=set)

    async def ListModels(self, request: Any, context: Any) -> providers_pb2.ListModelsResponse:
        models = [
            common_pb2.ModelInfo(
                id=mid,
                family=fam,
                provider="fake",
                context_length=100_000,
                max_output_tokens=8192,
                input_price_per_mtok=1.0,
                output_price_per_mtok=2.0,
                supports_json_mode=True,
                supports_structured_outputs=mid in self.structured,
                simulated=True,
                specialties=[common_pb2.DomainScore(domain=common_pb2.DOMAIN_FACTUAL, score=0.9 - i / 10)],
                health=common_pb2.ModelHealth(circuit_state=common_pb2.CIRCUIT_STATE_CLOSED),
            )
            for i, (mid, fam) in enumerate(MODELS)
        ]
        return providers_pb2.ListModelsResponse(models=models, simulated=True)

    def _text_for(self, req: providers_pb2.GenerateRequest) -> str:
        model = req.model
        if req.context.purpose == common_pb2.CALL_PURPOSE_CRITIQUE:
            if model in self.critic_text:
                return self.critic_text[model]
            scripted = self.critic_scores.get(model)
            if scripted:
                score = scripted.pop(0)
            else:
                found = _QUALITY.findall(req.messages[-1].content)
                score = float(found[-1]) if found else 5.0
            return json.dumps(
                {
                    "rationale": f"{model} reviewed it",
                    "strengths": ["clear"],
                    "weaknesses": ["could be deeper"],
                    "suggestions": ["add an example"],
                    "score": score,
                }
            )
        queue = self.answers.get(model)
        if queue:
            return queue.pop(0)
        return f"{model} answer quality=5"

    async def Generate(self, request: providers_pb2.GenerateRequest, context: Any) -> providers_pb2.GenerateResponse:
        """The same scripted behaviour, collected; a failed call's usage goes in the usage trailer."""
        final = providers_pb2.GenerateResponse()
        stream = self.StreamGenerate(providers_pb2.StreamGenerateRequest(request=request), context)
        async for resp in stream:
            if resp.HasField("completed"):
                final = resp.completed
            elif resp.HasField("failed"):
                context.set_trailing_metadata(((USAGE_TRAILER, resp.failed.usage.SerializeToString()),))
        return final

    async def StreamGenerate(
        self, request: providers_pb2.StreamGenerateRequest, context: Any
    ) -> AsyncIterator[providers_pb2.StreamGenerateResponse]:
        req = request.request
        self.calls.append(req)
        self.started.set()
        if req.model in self.fail_before:
            code = self.fail_before[req.model]
            if req.model in self.fail_kind:
                info = error_details_pb2.ErrorInfo(reason=self.fail_kind[req.model], domain=ERROR_DOMAIN)
                status = status_pb2.Status(code=code.value[0], message=f"upstream said {code.name}")
                status.details.add().Pack(info)
                await context.abort_with_status(rpc_status.to_status(status))
            if code == grpc.StatusCode.RESOURCE_EXHAUSTED:
                raise ResourceExhausted("rate limited upstream", retry_after=1)
            if code != grpc.StatusCode.UNAVAILABLE:
                await context.abort(code, f"upstream said {code.name}")
            raise Unavailable("upstream returned 502")
        if req.model in self.block:
            try:
                await self.release.wait()
            except asyncio.CancelledError:
                self.cancelled.set()
                raise
        text = self._text_for(req)
        words = text.split(" ")
        seq = 0
        for i, word in enumerate(words):
            if self.hang_after.get(req.model) == i:
                try:
                    await asyncio.Event().wait()
                except asyncio.CancelledError:
                    self.cancelled.set()
                    raise
            if req.model in self.fail_mid and i == 2:
                seq += 1
                usage = common_pb2.Usage(prompt_tokens=10, completion_tokens=2, total_tokens=12, cost_usd=0.000004)
                yield providers_pb2.StreamGenerateResponse(
                    sequence=seq,
                    failed=providers_pb2.StreamFailure(
                        kind=common_pb2.FAILURE_KIND_MID_STREAM_ERROR, message="stream broke", usage=usage
                    ),
                )
                raise Unavailable("stream broke")
            seq += 1
            yield providers_pb2.StreamGenerateResponse(
                sequence=seq, delta=providers_pb2.StreamDelta(text=word if i == 0 else " " + word)
            )
            if self.chunk_pause:
                await asyncio.sleep(self.chunk_pause)
        usage = common_pb2.Usage(
            prompt_tokens=10,
            completion_tokens=len(words),
            total_tokens=10 + len(words),
            cost_usd=round(0.00001 + 0.000002 * len(words), 9),
        )
        yield providers_pb2.StreamGenerateResponse(
            sequence=seq + 1,
            completed=providers_pb2.GenerateResponse(
                text=text,
                served_model=req.model,
                requested_model=req.model,
                finish_reason=providers_pb2.FINISH_REASON_STOP,
                usage=usage,
                simulated=True,
            ),
        )


@dataclass
class FakeSelector(selector_pb2_grpc.SelectorServiceServicer):
    """Ranks MODELS in order; alpha is primary; critics are the others, other families first."""

    down: bool = False
    requests: list[selector_pb2.SelectModelsRequest] = field(default_factory=list)

    async def SelectModels(self, request: Any, context: Any) -> selector_pb2.SelectModelsResponse:
        self.requests.append(request)
        if self.down:
            raise Unavailable("selector is down")
        prefs = request.preferences
        order = [m for m, _ in MODELS if m not in prefs.excluded_models]
        if prefs.pinned_model:
            order.remove(prefs.pinned_model)
            order.insert(0, prefs.pinned_model)
        candidates = [
            selector_pb2.Candidate(model=m, score=1 - i / 10, rank=i + 1, reason=f"rank {i + 1}")
            for i, m in enumerate(order)
        ]
        critics = [m for m in order[1:] if m != "m/delta"] + (["m/delta"] if "m/delta" in order[1:] else [])
        return selector_pb2.SelectModelsResponse(
            analysis=selector_pb2.PromptAnalysis(primary_domain=common_pb2.DOMAIN_FACTUAL, confidence=0.9),
            candidates=candidates,
            primary_model=order[0],
            critic_models=critics,
        )


@dataclass
class FakeAnalytics(analytics_pb2_grpc.AnalyticsServiceServicer):
    """Records ingested events; can be made to fail."""

    events: list[pb.OrchestrationEvent] = field(default_factory=list)
    down: bool = False
    changed: asyncio.Event = field(default_factory=asyncio.Event)
    reject_kind: str = ""
    rejected_batches: list[int] = field(default_factory=list)

    async def IngestEvents(self, request: Any, context: Any) -> analytics_pb2.IngestEventsResponse:
        if self.down:
            raise Unavailable("analytics is down")
        if self.reject_kind and any(e.HasField(self.reject_kind) for e in request.events):
            self.rejected_batches.append(len(request.events))
            raise InvalidArgument(f"events[0].{self.reject_kind}", "not acceptable")
        self.events.extend(request.events)
        self.changed.set()
        return analytics_pb2.IngestEventsResponse(accepted=len(request.events))


@dataclass
class Stack:
    """The real orchestrator wired to fakes, with a client stub."""

    providers: FakeProviders
    selector: FakeSelector
    analytics: FakeAnalytics
    orchestrator: GrpcServer
    stub: orchestrator_pb2_grpc.OrchestratorServiceStub
    settings: Settings
    channel: grpc.aio.Channel
    servers: list[GrpcServer]

    async def run(self, **fields: Any) -> list[pb.OrchestrationEvent]:
        """Orchestrate to the end and return the events."""
        request = pb.OrchestrateRequest(**fields)
        return [r.event async for r in self.stub.Orchestrate(request, timeout=30)]

    async def watch(self, session_id: str, after: int = 0) -> list[pb.OrchestrationEvent]:
        """WatchSession to the end."""
        request = pb.WatchSessionRequest(session_id=session_id, after_sequence=after)
        return [r.event async for r in self.stub.WatchSession(request, timeout=30)]


async def _fake_server(binding: ServiceBinding) -> GrpcServer:
    srv = create_server([binding], "127.0.0.1:0")
    await srv.start()
    return srv


async def start_stack(tmp_path: Path, **env: str) -> Stack:
    """Fakes on port 0, then the real orchestrator pointing at them."""
    providers, selector, analytics = FakeProviders(), FakeSelector(), FakeAnalytics()
    servers = [
        await _fake_server(
            ServiceBinding(
                providers_pb2_grpc.add_ProviderServiceServicer_to_server, providers, "orchestratex.v1.ProviderService"
            )
        ),
        await _fake_server(
            ServiceBinding(
                selector_pb2_grpc.add_SelectorServiceServicer_to_server, selector, "orchestratex.v1.SelectorService"
            )
        ),
        await _fake_server(
            ServiceBinding(
                analytics_pb2_grpc.add_AnalyticsServiceServicer_to_server, analytics, "orchestratex.v1.AnalyticsService"
            )
        ),
    ]
    settings = Settings.from_env(
        {
            "ORX_DATA_DIR": str(tmp_path),
            "ORX_PROVIDERS_ADDR": f"127.0.0.1:{servers[0].port}",
            "ORX_SELECTOR_ADDR": f"127.0.0.1:{servers[1].port}",
            "ORX_ANALYTICS_ADDR": f"127.0.0.1:{servers[2].port}",
            "ORX_OUTBOX_INTERVAL": "0.05",
            # Shadow evaluation is sampled at random in simulation; tests that want it ask for it.
            "ORX_SHADOW_SAMPLE_RATE": "0",
            **env,
        }
    )
    orch = await orchestrator_server.build(settings, "127.0.0.1:0")
    await orch.start()
    channel = open_channel(f"127.0.0.1:{orch.port}")
    return Stack(
        providers,
        selector,
        analytics,
        orch,
        orchestrator_pb2_grpc.OrchestratorServiceStub(channel),
        settings,
        channel,
        servers,
    )


async def stop_stack(stack: Stack) -> None:
    """Stop the orchestrator, then the fakes."""
    await stack.channel.close(None)
    await stack.orchestrator.stop(0)
    for srv in stack.servers:
        await srv.stop(0)


@pytest.fixture
async def stack(tmp_path: Path) -> AsyncIterator[Stack]:
    s = await start_stack(tmp_path)
    try:
        yield s
    finally:
        await stop_stack(s)


def kinds(events: list[pb.OrchestrationEvent]) -> list[str]:
    """The oneof kind of each event."""
    return [str(e.WhichOneof("kind")) for e in events]


async def wait_until(predicate: Callable[[], bool], within: float = 10.0) -> None:
    """Poll a condition (never a fixed sleep): returns as soon as it holds, fails after ``within`` seconds."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within
    while not predicate():
        if loop.time() > deadline:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(0.005)
