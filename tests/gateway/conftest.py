"""Fixtures for gateway tests: fake orchestrator/providers gRPC services on port-0 servers, and the
real gateway (aiohttp TestServer) wired to them.

The fake orchestrator's behaviour is chosen by the prompt's first word:

* ``complete ...``  the full scripted session, then the stream ends;
* ``block ...``     two events (started, selected), then it waits until the stream is cancelled or
                    the session is cancelled (then it emits ``session_failed`` and ends);
* ``invalid ...``   INVALID_ARGUMENT before any event;
* ``midfail ...``   one event, then UNAVAILABLE;
* ``empty ...``     ends without any event;
* ``flood N SIZE``  ``N`` deltas of ``SIZE`` characters, then blocks like ``block``.

Any other first word behaves like ``block``. With ``FakeOrchestrator.finish_all`` set, every session runs to
completion at once whatever its prompt (every scripted event stored, status COMPLETED) and whatever happens to
the stream, as a real detached session eventually does. The fake analytics checks feedback against the
orchestrator's sessions unless ``FakeAnalytics.knows_sessions`` is false (analytics not told yet: it then
accepts feedback for any session, like the real service after its outbox catch-up fix).
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient, TestServer

from gateway.app import init_app
from gateway.state import GatewayOptions
from gateway.ws import CONNECTIONS
from orchestratex import context as orx_context
from orchestratex.config import Settings
from orchestratex.errors import FailedPrecondition, InvalidArgument, NotFound, OrxError, Unavailable
from orchestratex.grpc_server import GrpcServer, ServiceBinding, create_server
from orchestratex.v1 import (
    analytics_pb2,
    analytics_pb2_grpc,
    common_pb2,
    orchestrator_pb2,
    orchestrator_pb2_grpc,
    providers_pb2,
    providers_pb2_grpc,
    selector_pb2,
)

pb = orchestrator_pb2


def scripted_events(session_id: str, request: pb.OrchestrateRequest) -> list[pb.OrchestrationEvent]:
    """A complete, realistic session: every field type the JSON mapping cares about appears."""
    usage = common_pb2.Usage(
        prompt_tokens=120, completion_tokens=80, total_tokens=200, cost_usd=0.00042, reasoning_tokens=5
    )
    events: list[pb.OrchestrationEvent] = []

    def add(**kind: Any) -> pb.OrchestrationEvent:
        event = pb.OrchestrationEvent(session_id=session_id, sequence=len(events) + 1, **kind)
        event.time.FromNanoseconds(1_760_000_000_123_456_789 + len(events) * 1_000_000)
        events.append(event)
        return event

    accepted = pb.OrchestrateRequest()
    accepted.CopyFrom(request)
    accepted.max_rounds = accepted.max_rounds or 3
    accepted.time_limit.FromSeconds(300)
    add(session_started=pb.SessionStarted(request=accepted, simulated=True))
    add(
        model_selected=pb.ModelSelected(
            primary_model="z-ai/glm-4.5",
            critic_models=["openai/gpt-4o-mini", "anthropic/claude-haiku"],
            candidates=[
                selector_pb2.Candidate(
                    model="z-ai/glm-4.5", score=0.91, rank=1, reason="Strong at coding.", estimated_cost_usd=0.001
                ),
                selector_pb2.Candidate(model="openai/gpt-4o-mini", score=0.8, rank=2, reason="Cheap."),
            ],
            analysis=selector_pb2.PromptAnalysis(
                primary_domain=common_pb2.DOMAIN_CODING, confidence=0.87, estimated_prompt_tokens=42, language="en"
            ),
        )
    )
    for piece in ("def add(a, b):", "\n    return a + b", "\n# ünïcødé ✓ <b>not html</b>"):
        add(response_delta=pb.ResponseDelta(round=1, model="z-ai/glm-4.5", text=piece))
    completed = add(
        response_completed=pb.ResponseCompleted(
            round=1, model="z-ai/glm-4.5", served_model="z-ai/glm-4.5", text="def add(a, b): ...", usage=usage
        )
    )
    completed.response_completed.latency.FromMilliseconds(1530)
    completed.response_completed.time_to_first_token.FromMilliseconds(210)
    add(
        critique_completed=pb.CritiqueCompleted(
            round=1,
            critic_model="openai/gpt-4o-mini",
            author_model="z-ai/glm-4.5",
            score=8.5,
            rationale="Correct and short.",
            strengths=["correct"],
            weaknesses=["no docstring"],
            suggestions=["add a docstring"],
            usage=usage,
        )
    )
    add(warning=pb.SessionWarning(code=pb.WARNING_CODE_CRITIC_FAILED, message="critic timed out", round=1))
    add(
        round_completed=pb.RoundCompleted(
            round=1,
            aggregate_score=8.5,
            decision=pb.ROUND_DECISION_STOP,
            stop_reason=pb.STOP_REASON_THRESHOLD,
            reason="score 8.5 reached the threshold 8",
            critics_scored=1,
            best_round=1,
            round_cost_usd=0.00084,
        )
    )
    done = add(
        session_completed=pb.SessionCompleted(
            final_text="def add(a, b): ...",
            best_round=1,
            best_model="z-ai/glm-4.5",
            final_score=8.5,
            rounds_used=1,
            stop_reason=pb.STOP_REASON_THRESHOLD,
            total_cost_usd=0.00084,
            usage=usage,
            per_model=[pb.ModelUsage(model="z-ai/glm-4.5", calls=1, usage=usage)],
        )
    )
    done.session_completed.wall_time.FromMilliseconds(2750)
    return events


@dataclass
class FakeSession:
    session_id: str
    request: pb.OrchestrateRequest
    events: list[pb.OrchestrationEvent] = field(default_factory=list)
    status: int = pb.SESSION_STATUS_RUNNING
    cancelled: asyncio.Event = field(default_factory=asyncio.Event)
    tenant: str = ""

    def emit(self, **kind: Any) -> pb.OrchestrationEvent:
        event = pb.OrchestrationEvent(session_id=self.session_id, sequence=len(self.events) + 1, **kind)
        event.time.GetCurrentTime()
        self.events.append(event)
        return event

    def proto(self) -> pb.Session:
        return pb.Session(
            session_id=self.session_id,
            status=self.status,  # type: ignore[arg-type]
            request=self.request,
            last_sequence=len(self.events),
            primary_model="z-ai/glm-4.5",
        )


class FakeOrchestrator(orchestrator_pb2_grpc.OrchestratorServiceServicer):
    """Scripted sessions; records requests, cancellations and request ids."""

    def __init__(self) -> None:
        self.sessions: dict[str, FakeSession] = {}
        self.orchestrate_requests: list[pb.OrchestrateRequest] = []
        self.watch_requests: list[pb.WatchSessionRequest] = []
        self.list_requests: list[pb.ListSessionsRequest] = []
        self.cancel_requests: list[pb.CancelSessionRequest] = []
        self.request_ids: list[str] = []
        # Set when the client cancels an Orchestrate / WatchSession stream (the RPC, not the session).
        self.orchestrate_stream_cancelled = asyncio.Event()
        self.watch_stream_cancelled = asyncio.Event()
        # Every session completes at once whatever its prompt (for the schema fuzzer).
        self.finish_all = False

    def _record_metadata(self, context: Any) -> None:
        for key, value in context.invocation_metadata() or ():
            if key == "x-request-id":
                self.request_ids.append(value)

    def _visible(self, session_id: str) -> FakeSession | None:
        """The session if the caller's tenant may see it (like the real service: "" sees all)."""
        session = self.sessions.get(session_id)
        caller = orx_context.tenant.get()
        if session is None or (caller and session.tenant != caller):
            return None
        return session

    async def Orchestrate(self, request: pb.OrchestrateRequest, context: Any) -> AsyncIterator[pb.OrchestrateResponse]:
        self._record_metadata(context)
        self.orchestrate_requests.append(request)
        words = request.prompt.split()
        mode = words[0] if words else "complete"
        if mode == "invalid":
            raise InvalidArgument("max_rounds", "must be in [1, 10], got 99")
        if mode == "empty":
            return
        session = FakeSession(f"sess-{uuid.uuid4().hex}", request, tenant=orx_context.tenant.get())
        self.sessions[session.session_id] = session
        if self.finish_all:
            session.events.extend(scripted_events(session.session_id, request))
            session.status = pb.SESSION_STATUS_COMPLETED
            for event in list(session.events):
                yield pb.OrchestrateResponse(event=event)
            return
        ended = False
        try:
            if mode == "complete":
                for event in scripted_events(session.session_id, request):
                    session.events.append(event)
                    yield pb.OrchestrateResponse(event=event)
                session.status = pb.SESSION_STATUS_COMPLETED
                ended = True
                return
            yield pb.OrchestrateResponse(event=session.emit(session_started=pb.SessionStarted(request=request)))
            if mode == "midfail":
                ended = True
                raise Unavailable("providers are unavailable: every model's circuit is open")
            yield pb.OrchestrateResponse(
                event=session.emit(model_selected=pb.ModelSelected(primary_model="z-ai/glm-4.5"))
            )
            if mode == "flood":
                count, size = int(words[1]), int(words[2])
                for i in range(count):
                    text = chr(ord("a") + i % 26) * size
                    yield pb.OrchestrateResponse(
                        event=session.emit(response_delta=pb.ResponseDelta(round=1, model="m", text=text))
                    )
            await session.cancelled.wait()
            yield pb.OrchestrateResponse(event=session.events[-1])
            ended = True
        finally:
            # A client cancel surfaces as CancelledError while awaiting, or as GeneratorExit while
            # blocked on a write (flow control): either way the stream did not end by itself.
            if not ended:
                self.orchestrate_stream_cancelled.set()

    async def WatchSession(
        self, request: pb.WatchSessionRequest, context: Any
    ) -> AsyncIterator[pb.WatchSessionResponse]:
        self.watch_requests.append(request)
        session = self._visible(request.session_id)
        if session is None:
            raise NotFound(f"session {request.session_id!r} not found")
        ended = False
        sent = request.after_sequence
        try:
            for event in list(session.events):
                if event.sequence > sent:
                    yield pb.WatchSessionResponse(event=event)
                    sent = event.sequence
            if session.status == pb.SESSION_STATUS_RUNNING:
                await session.cancelled.wait()
            # Whatever arrived meanwhile (a cancel can land while the replay above is being sent).
            for event in list(session.events):
                if event.sequence > sent:
                    yield pb.WatchSessionResponse(event=event)
                    sent = event.sequence
            ended = True
        finally:
            if not ended:
                self.watch_stream_cancelled.set()

    async def GetSession(self, request: pb.GetSessionRequest, context: Any) -> pb.GetSessionResponse:
        session = self._visible(request.session_id)
        if session is None:
            raise NotFound(f"session {request.session_id!r} not found")
        return pb.GetSessionResponse(session=session.proto())

    async def ListSessions(self, request: pb.ListSessionsRequest, context: Any) -> pb.ListSessionsResponse:
        self.list_requests.append(request)
        sessions = [s.proto() for s in self.sessions.values() if self._visible(s.session_id)]
        return pb.ListSessionsResponse(sessions=sessions, next_page_token="page-2" if sessions else "")

    async def CancelSession(self, request: pb.CancelSessionRequest, context: Any) -> pb.CancelSessionResponse:
        self.cancel_requests.append(request)
        session = self._visible(request.session_id)
        if session is None:
            raise NotFound(f"session {request.session_id!r} not found")
        if session.status == pb.SESSION_STATUS_RUNNING:
            session.status = pb.SESSION_STATUS_CANCELLED
            session.emit(
                session_failed=pb.SessionFailed(
                    reason=request.reason or "cancelled", status=pb.SESSION_STATUS_CANCELLED
                )
            )
            session.cancelled.set()
        return pb.CancelSessionResponse(session=session.proto())


class FakeProviders(providers_pb2_grpc.ProviderServiceServicer):
    """A two-model catalogue; ``fail_with`` makes ListModels raise."""

    def __init__(self) -> None:
        self.list_requests: list[providers_pb2.ListModelsRequest] = []
        self.fail_with: OrxError | None = None

    async def ListModels(
        self, request: providers_pb2.ListModelsRequest, context: Any
    ) -> providers_pb2.ListModelsResponse:
        self.list_requests.append(request)
        if self.fail_with is not None:
            raise self.fail_with
        model = common_pb2.ModelInfo(
            id="z-ai/glm-4.5",
            display_name="GLM 4.5",
            family="glm",
            provider="simulated",
            context_length=131072,
            input_price_per_mtok=0.6,
            simulated=True,
            specialties=[common_pb2.DomainScore(domain=common_pb2.DOMAIN_CODING, score=0.9, reason="good")],
            health=common_pb2.ModelHealth(circuit_state=common_pb2.CIRCUIT_STATE_CLOSED),
        )
        model.typical_ttft.FromMilliseconds(400)
        other = common_pb2.ModelInfo(id="openai/gpt-4o-mini", family="gpt", simulated=True)
        return providers_pb2.ListModelsResponse(models=[model, other], simulated=True)


class FakeAnalytics(analytics_pb2_grpc.AnalyticsServiceServicer):
    """Feedback and reports scoped by tenant: a report names the tenant it was computed for."""

    def __init__(self, orchestrator: FakeOrchestrator) -> None:
        self.orchestrator = orchestrator
        self.tenants: list[str] = []
        self.requests: list[Any] = []
        # False: this analytics has not been told about any session yet and accepts feedback for any id.
        self.knows_sessions = True

    def _seen(self, request: Any) -> str:
        tenant = orx_context.tenant.get()
        self.tenants.append(tenant)
        self.requests.append(request)
        return tenant

    async def SubmitFeedback(
        self, request: analytics_pb2.SubmitFeedbackRequest, context: Any
    ) -> analytics_pb2.SubmitFeedbackResponse:
        self._seen(request)
        if not 1 <= request.rating <= 5:
            raise InvalidArgument("rating", f"must be between 1 and 5, got {request.rating}")
        if self.knows_sessions:
            session = self.orchestrator._visible(request.session_id)
            if session is None:
                raise NotFound(f"session_id: no session {request.session_id!r}", field="session_id")
            if session.status == pb.SESSION_STATUS_RUNNING:
                raise FailedPrecondition(
                    f"session_id: session {request.session_id!r} is still running", field="session_id"
                )
        feedback = analytics_pb2.Feedback(
            session_id=request.session_id,
            rating=request.rating,
            comment=request.comment,
            user_id=request.user_id or "anonymous",
        )
        feedback.create_time.FromSeconds(1_760_000_000)
        feedback.update_time.FromSeconds(1_760_000_000)
        return analytics_pb2.SubmitFeedbackResponse(feedback=feedback)

    async def GetModelPerformance(
        self, request: analytics_pb2.GetModelPerformanceRequest, context: Any
    ) -> analytics_pb2.GetModelPerformanceResponse:
        tenant = self._seen(request)
        row = analytics_pb2.ModelPerformance(
            model=f"model-of-{tenant or 'all'}", calls=3, successes=2, success_rate=2 / 3, domain=request.domain
        )
        row.ttft_p50.FromMilliseconds(250)
        row.failures.add(kind=common_pb2.FAILURE_KIND_TIMEOUT, count=1)
        return analytics_pb2.GetModelPerformanceResponse(models=[row], by_domain=[row])

    async def GetCostReport(
        self, request: analytics_pb2.GetCostReportRequest, context: Any
    ) -> analytics_pb2.GetCostReportResponse:
        tenant = self._seen(request)
        visible = [s for s in self.orchestrator.sessions.values() if not tenant or s.tenant == tenant]
        report = analytics_pb2.GetCostReportResponse(total_cost_usd=0.01 * len(visible), session_count=len(visible))
        for session in visible:
            report.sessions.add(session_id=session.session_id, cost_usd=0.01, calls=1)
        report.days.add(day="2025-10-09", cost_usd=0.01, calls=1)
        return report

    async def GetSelectionAccuracy(
        self, request: analytics_pb2.GetSelectionAccuracyRequest, context: Any
    ) -> analytics_pb2.GetSelectionAccuracyResponse:
        self._seen(request)
        estimate = analytics_pb2.AccuracyEstimate(sample_size=10, hits=7, accuracy=0.7, ci_low=0.4, ci_high=0.9)
        return analytics_pb2.GetSelectionAccuracyResponse(shadow=estimate, feedback=estimate, definition="d")

    async def GetSatisfaction(
        self, request: analytics_pb2.GetSatisfactionRequest, context: Any
    ) -> analytics_pb2.GetSatisfactionResponse:
        self._seen(request)
        overall = analytics_pb2.SatisfactionSummary(key="all", count=2, mean=4.5)
        overall.distribution.add(rating=4, count=1)
        overall.distribution.add(rating=5, count=1)
        return analytics_pb2.GetSatisfactionResponse(overall=overall, by_model=[overall])


@dataclass
class Peers:
    orchestrator: FakeOrchestrator
    providers: FakeProviders
    orchestrator_server: GrpcServer
    providers_server: GrpcServer
    analytics: FakeAnalytics | None = None
    analytics_server: GrpcServer | None = None


@pytest.fixture
async def peers() -> AsyncIterator[Peers]:
    orchestrator, providers = FakeOrchestrator(), FakeProviders()
    orch_srv = create_server(
        [
            ServiceBinding(
                orchestrator_pb2_grpc.add_OrchestratorServiceServicer_to_server,
                orchestrator,
                "orchestratex.v1.OrchestratorService",
            )
        ],
        "127.0.0.1:0",
    )
    prov_srv = create_server(
        [
            ServiceBinding(
                providers_pb2_grpc.add_ProviderServiceServicer_to_server, providers, "orchestratex.v1.ProviderService"
            )
        ],
        "127.0.0.1:0",
    )
    analytics = FakeAnalytics(orchestrator)
    analytics_srv = create_server(
        [
            ServiceBinding(
                analytics_pb2_grpc.add_AnalyticsServiceServicer_to_server, analytics, "orchestratex.v1.AnalyticsService"
            )
        ],
        "127.0.0.1:0",
    )
    await orch_srv.start()
    await prov_srv.start()
    await analytics_srv.start()
    try:
        yield Peers(orchestrator, providers, orch_srv, prov_srv, analytics, analytics_srv)
    finally:
        await orch_srv.stop(0)
        await prov_srv.stop(0)
        await analytics_srv.stop(0)


def make_settings(tmp_path: Path, **env: str) -> Settings:
    base = {
        "ORX_DATA_DIR": str(tmp_path),
        "ORX_RPC_TIMEOUT": "5",
        "ORX_SHUTDOWN_GRACE": "5",
        # Nothing listens here: the gateway must not need analytics to work.
        "ORX_ANALYTICS_ADDR": "127.0.0.1:1",
    }
    base.update(env)
    return Settings.from_env(base)


def peer_env(peers: Peers) -> dict[str, str]:
    """Settings variables pointing the gateway at the fake peers."""
    assert peers.analytics_server is not None
    return {
        "ORX_ORCHESTRATOR_ADDR": f"127.0.0.1:{peers.orchestrator_server.port}",
        "ORX_PROVIDERS_ADDR": f"127.0.0.1:{peers.providers_server.port}",
        "ORX_ANALYTICS_ADDR": f"127.0.0.1:{peers.analytics_server.port}",
    }


@pytest.fixture
def settings(tmp_path: Path, peers: Peers) -> Settings:
    return make_settings(tmp_path, **peer_env(peers))


GatewayFactory = Callable[..., Any]


def pytest_asyncio_loop_factories(config: pytest.Config, item: pytest.Item) -> dict[str, Any]:
    """Connection-level tests run on both event loops (the gateway serves on uvloop, whose transports are
    not asyncio's); the others on asyncio's."""
    if item.path.name != "test_connections.py":
        return {"asyncio": asyncio.new_event_loop}
    import uvloop

    return {"asyncio": asyncio.new_event_loop, "uvloop": uvloop.new_event_loop}


@pytest.fixture
async def gateway_factory(settings: Settings) -> AsyncIterator[GatewayFactory]:
    """``await factory(options=None, settings=None)`` -> a started TestClient for a new gateway."""
    clients: list[TestClient[Any, Any]] = []

    async def factory(options: GatewayOptions | None = None, settings_: Settings | None = None) -> TestClient[Any, Any]:
        app = init_app(settings_ or settings, options)
        client: TestClient[Any, Any] = TestClient(TestServer(app, host="127.0.0.1"))
        await client.start_server()
        clients.append(client)
        return client

    try:
        yield factory
    finally:
        for client in clients:
            await client.close()


@pytest.fixture
async def client(gateway_factory: GatewayFactory) -> TestClient[Any, Any]:
    result: TestClient[Any, Any] = await gateway_factory()
    return result


async def wait_until(predicate: Callable[[], bool], within: float = 5.0, what: str = "condition") -> None:
    """Poll ``predicate`` until true, failing after ``within`` seconds (a deadline on a condition)."""
    deadline = time.monotonic() + within
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.01)


async def wait_connections_closed(client: TestClient[Any, Any]) -> None:
    """Wait until the gateway finished cleaning up every socket (CancelSession calls included)."""
    await wait_until(lambda: not client.app[CONNECTIONS], what="the gateway to release its sockets")
