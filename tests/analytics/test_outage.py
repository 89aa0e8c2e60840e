"""Analytics down mid-session loses nothing: the orchestrator's outbox delivers once it is back, once.

The real stack runs in this process (simulated providers, the real selector, orchestrator and analytics);
analytics listens on a fixed port so it can be stopped and started again on the same address and data.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any, TypeAlias

import grpc
import pytest

from orchestratex.config import Settings
from orchestratex.grpc_server import GrpcServer
from orchestratex.v1 import analytics_pb2 as apb
from orchestratex.v1 import analytics_pb2_grpc, orchestrator_pb2_grpc
from orchestratex.v1 import orchestrator_pb2 as pb
from services.analytics import server as analytics_server
from services.orchestrator import server as orchestrator_server
from services.providers import server as providers_server
from services.selector import server as selector_server
from tests.ports import free_port

Stub: TypeAlias = Any
SESSIONS = 3


async def wait_for(condition: Callable[[], Awaitable[bool]], what: str, within: float = 60.0) -> None:
    """Poll ``condition`` until it holds; fail naming ``what`` after ``within`` seconds."""
    deadline = time.monotonic() + within
    while not await condition():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out waiting for {what}")
        await asyncio.sleep(0.05)


def call_cost_nanos(event: pb.OrchestrationEvent) -> int | None:
    """The cost of the provider call an event reports (nano-dollars), or None when it reports none."""
    kind = event.WhichOneof("kind")
    if kind == "response_completed":
        return round(event.response_completed.usage.cost_usd * 1e9)
    if kind == "critique_completed":
        return round(event.critique_completed.usage.cost_usd * 1e9)
    if kind == "provider_fallback":
        return round(event.provider_fallback.usage.cost_usd * 1e9)
    if kind == "warning" and event.warning.model and event.warning.failure_kind:
        return round(event.warning.usage.cost_usd * 1e9)
    return None


class Stack:
    """Providers, selector and orchestrator on port 0; analytics on a fixed port it can come back to."""

    def __init__(self, tmp_path: Path) -> None:
        self.analytics_port = free_port()
        self.env = {
            "ORX_DATA_DIR": str(tmp_path),
            "ORX_SIM_SPEED": "8",
            "ORX_OUTBOX_INTERVAL": "0.05",
            "ORX_HISTORY_REFRESH": "0.5",
            "ORX_SHADOW_SAMPLE_RATE": "1",
            "ORX_ANALYTICS_LISTEN": f"127.0.0.1:{self.analytics_port}",
            "ORX_ANALYTICS_ADDR": f"127.0.0.1:{self.analytics_port}",
        }
        self.servers: list[GrpcServer] = []
        self.analytics: GrpcServer | None = None

    async def start_analytics(self) -> None:
        srv = await analytics_server.build(Settings.from_env(self.env))
        await srv.start()
        assert srv.port == self.analytics_port
        self.analytics = srv

    async def stop_analytics(self) -> None:
        assert self.analytics is not None
        await self.analytics.stop(0)
        self.analytics = None

    async def start(self) -> None:
        await self.start_analytics()
        for name, build in (
            ("providers", providers_server.build),
            ("selector", selector_server.build),
            ("orchestrator", orchestrator_server.build),
        ):
            srv = await build(Settings.from_env(self.env), "127.0.0.1:0")
            await srv.start()
            self.servers.append(srv)
            self.env[f"ORX_{name.upper()}_ADDR"] = f"127.0.0.1:{srv.port}"

    async def stop(self) -> None:
        for srv in reversed(self.servers):
            await srv.stop(0)
        if self.analytics is not None:
            await self.stop_analytics()


@pytest.fixture
async def stack(tmp_path: Path) -> AsyncIterator[Stack]:
    running = Stack(tmp_path)
    try:
        await running.start()
        yield running
    finally:
        await running.stop()


async def test_outcomes_reach_analytics_after_an_outage_exactly_once(stack: Stack) -> None:
    orchestrator_addr = stack.env["ORX_ORCHESTRATOR_ADDR"]
    analytics_addr = stack.env["ORX_ANALYTICS_ADDR"]
    async with (
        grpc.aio.insecure_channel(orchestrator_addr) as orch_channel,
        grpc.aio.insecure_channel(analytics_addr) as analytics_channel,
    ):
        orchestrator: Stub = orchestrator_pb2_grpc.OrchestratorServiceStub(orch_channel)
        analytics: Stub = analytics_pb2_grpc.AnalyticsServiceStub(analytics_channel)
        streams: list[list[pb.OrchestrationEvent]] = [[] for _ in range(SESSIONS)]
        finished = [asyncio.Event() for _ in range(SESSIONS)]

        async def run(index: int) -> None:
            request = pb.OrchestrateRequest(
                prompt=f"Explain idempotent delivery, take {index}", max_rounds=3, critic_count=2, quality_threshold=10
            )
            try:
                async for response in orchestrator.Orchestrate(request, timeout=120):
                    streams[index].append(response.event)
            finally:
                finished[index].set()

        tasks = [asyncio.create_task(run(i)) for i in range(SESSIONS)]
        try:
            # Analytics has seen the first events of every session...
            async def all_sessions_known() -> bool:
                report = await analytics.GetCostReport(apb.GetCostReportRequest(), timeout=5)
                return bool(report.session_count == SESSIONS)

            await wait_for(all_sessions_known, "analytics to know every session")
            await stack.stop_analytics()
            # ...and was stopped while they were still running.
            seen_at_stop = [len(events) for events in streams]
            running = [i for i in range(SESSIONS) if not finished[i].is_set()]
            assert running, "every session ended before analytics stopped; the test proves nothing"

            await asyncio.wait_for(asyncio.gather(*tasks), timeout=120)
            later_calls = sum(
                1 for i in running for e in streams[i][seen_at_stop[i] :] if call_cost_nanos(e) is not None
            )
            assert later_calls > 0, "no provider call happened during the outage"
            for events in streams:
                assert events[-1].HasField("session_completed") or events[-1].HasField("session_failed")
        finally:
            for task in tasks:
                task.cancel()

        # The orchestrator's stored event logs are the reference.
        logs: dict[str, list[pb.OrchestrationEvent]] = {}
        for events in streams:
            session_id = events[0].session_id
            replay = orchestrator.WatchSession(pb.WatchSessionRequest(session_id=session_id), timeout=30)
            logs[session_id] = [r.event async for r in replay]
        expected_total = sum(c for log in logs.values() for e in log if (c := call_cost_nanos(e)) is not None)
        expected_calls = sum(1 for log in logs.values() for e in log if call_cost_nanos(e) is not None)
        expected_by_session = {
            sid: sum(c for e in log if (c := call_cost_nanos(e)) is not None) for sid, log in logs.items()
        }
        assert expected_total > 0

        await stack.start_analytics()

        async def totals_match() -> bool:
            try:
                report = await analytics.GetCostReport(apb.GetCostReportRequest(), timeout=5)
            except grpc.aio.AioRpcError:
                return False
            return bool(round(report.total_cost_usd * 1e9) == expected_total and report.calls == expected_calls)

        await wait_for(totals_match, "the outbox to deliver the events of the outage")
        report = await analytics.GetCostReport(apb.GetCostReportRequest())
        assert report.session_count == SESSIONS
        assert {s.session_id: round(s.cost_usd * 1e9) for s in report.sessions} == expected_by_session

        # Delivering everything again counts nothing twice.
        events = [e for log in logs.values() for e in log if not e.HasField("response_delta")]
        again = await analytics.IngestEvents(apb.IngestEventsRequest(events=events))
        assert (again.accepted, again.duplicates) == (0, len(events))
        after = await analytics.GetCostReport(apb.GetCostReportRequest())
        assert after == report
        perf = await analytics.GetModelPerformance(apb.GetModelPerformanceRequest())
        assert sum(round(row.usage.cost_usd * 1e9) for row in perf.models) == expected_total
