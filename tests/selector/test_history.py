"""Learning from analytics: history conversion, selection on measured quality, analytics outages."""

from __future__ import annotations

import asyncio
from typing import Any

import grpc

from orchestratex.errors import Unavailable
from orchestratex.v1 import analytics_pb2, analytics_pb2_grpc, common_pb2, selector_pb2
from services.selector.history import history_from_proto
from services.selector.ranking import HistoryStats
from tests.selector.conftest import FakeProviders, StartSelector

CODING_PROMPT = "Write a Python function that merges two sorted lists into one sorted list."


def _row(model: str, domain: int, score: float, critiques: int, calls: int = 10, success: float = 1.0) -> Any:
    return analytics_pb2.ModelPerformance(
        model=model,
        domain=domain,  # type: ignore[arg-type]
        mean_score_as_author=score,
        critiques_received=critiques,
        calls=calls,
        success_rate=success,
    )


def test_history_from_proto_uses_the_per_domain_rows() -> None:
    resp = analytics_pb2.GetModelPerformanceResponse(
        models=[_row("a", 0, 9.0, 100)],
        by_domain=[
            _row("a", common_pb2.DOMAIN_CODING, 8.5, 12, success=0.75),
            _row("b", common_pb2.DOMAIN_MATH, 6.0, 0),  # nothing judged: no evidence
            _row("c", common_pb2.DOMAIN_MATH, 11.0, 3, calls=0),
        ],
    )
    assert history_from_proto(resp) == {
        ("a", "coding"): HistoryStats(mean_quality=0.85, samples=12, success_rate=0.75),
        ("c", "math"): HistoryStats(mean_quality=1.0, samples=3, success_rate=1.0),
    }


class FakeAnalytics(analytics_pb2_grpc.AnalyticsServiceServicer):
    def __init__(self, rows: list[Any]) -> None:
        self.rows = rows
        self.down = False
        self.calls = 0
        self.called = asyncio.Event()

    async def GetModelPerformance(self, request: Any, context: Any) -> analytics_pb2.GetModelPerformanceResponse:
        self.calls += 1
        self.called.set()
        if self.down:
            raise Unavailable("analytics is down")
        return analytics_pb2.GetModelPerformanceResponse(by_domain=self.rows)


async def _serve(fake: FakeAnalytics) -> tuple[grpc.aio.Server, int]:
    from orchestratex.grpc_server import ServiceBinding, create_server

    srv = create_server(
        [
            ServiceBinding(
                analytics_pb2_grpc.add_AnalyticsServiceServicer_to_server, fake, "orchestratex.v1.AnalyticsService"
            )
        ],
        "127.0.0.1:0",
    )
    await srv.start()
    return srv.server, srv.port


async def test_measured_quality_overturns_the_prior(
    fake_providers: tuple[FakeProviders, int], start_selector: StartSelector
) -> None:
    # acme/coder-pro has the best coding prior (0.95); history says it is poor and bolt/think excellent
    fake = FakeAnalytics(
        [
            _row("acme/coder-pro", common_pb2.DOMAIN_CODING, 4.0, 80),
            _row("bolt/think", common_pb2.DOMAIN_CODING, 9.8, 80),
        ]
    )
    server, port = await _serve(fake)
    try:
        stub, _ = await start_selector(
            fake_providers[1], ORX_SELECTOR_HISTORY="on", ORX_ANALYTICS_ADDR=f"127.0.0.1:{port}"
        )
        await asyncio.wait_for(fake.called.wait(), 5)
        request = selector_pb2.SelectModelsRequest(
            prompt=CODING_PROMPT, preferences=common_pb2.Preferences(quality_weight=1.0)
        )
        for _ in range(100):  # the first refresh may still be in flight
            response = await stub.SelectModels(request)
            if response.primary_model == "bolt/think":
                break
            await asyncio.sleep(0.02)
        assert response.primary_model == "bolt/think"
        coder = next(c for c in response.candidates if c.model == "acme/coder-pro")
        assert coder.breakdown.history < coder.breakdown.specialty - 0.3
        assert "measured" in coder.reason
        assert not [w for w in response.warnings if w.startswith("analytics")]
    finally:
        await server.stop(0)


async def test_analytics_down_degrades_to_priors_with_a_warning(
    fake_providers: tuple[FakeProviders, int], start_selector: StartSelector
) -> None:
    fake = FakeAnalytics([])
    fake.down = True
    server, port = await _serve(fake)
    try:
        stub, _ = await start_selector(
            fake_providers[1], ORX_SELECTOR_HISTORY="on", ORX_ANALYTICS_ADDR=f"127.0.0.1:{port}"
        )
        await asyncio.wait_for(fake.called.wait(), 5)
        response = await stub.SelectModels(selector_pb2.SelectModelsRequest(prompt=CODING_PROMPT))
        assert response.primary_model
        assert any(w.startswith("analytics unavailable") for w in response.warnings)
    finally:
        await server.stop(0)
