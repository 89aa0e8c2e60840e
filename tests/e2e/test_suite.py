"""End to end: `orchestratex up` as a subprocess, driven with the real grpcurl and over the gateway.

Tests in this module share one running suite; the last one stops it with Ctrl-C (SIGINT).
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import urllib.request
from typing import Any

import aiohttp
import grpc
import pytest
from google.protobuf.timestamp_pb2 import Timestamp

from orchestratex.v1 import (
    analytics_pb2,
    analytics_pb2_grpc,
    common_pb2,
    orchestrator_pb2,
    orchestrator_pb2_grpc,
    providers_pb2,
    providers_pb2_grpc,
    selector_pb2,
    selector_pb2_grpc,
)
from tests.e2e.conftest import BIN, Suite, wait_for

pytestmark = pytest.mark.e2e

FULL_NAMES = {
    "selector": "orchestratex.v1.SelectorService",
    "providers": "orchestratex.v1.ProviderService",
    "orchestrator": "orchestratex.v1.OrchestratorService",
    "analytics": "orchestratex.v1.AnalyticsService",
}


def _json_stream(text: str) -> list[dict[str, Any]]:
    """grpcurl prints one pretty JSON object per message."""
    decoder = json.JSONDecoder()
    out, i = [], 0
    while i < len(text):
        while i < len(text) and text[i].isspace():
            i += 1
        if i >= len(text):
            break
        obj, i = decoder.raw_decode(text, i)
        out.append(obj)
    return out


@pytest.mark.parametrize("name", list(FULL_NAMES))
def test_reflection_lists_each_service_with_health(suite: Suite, name: str) -> None:
    listed = suite.grpcurl(suite.addr[name], "list")
    assert listed.returncode == 0, listed.stderr
    services = set(listed.stdout.split())
    assert {FULL_NAMES[name], "grpc.health.v1.Health", "grpc.reflection.v1alpha.ServerReflection"} <= services
    described = suite.grpcurl(suite.addr[name], "describe", FULL_NAMES[name])
    assert described.returncode == 0 and "rpc " in described.stdout
    for service in ("", FULL_NAMES[name]):
        check = suite.grpcurl("-d", json.dumps({"service": service}), suite.addr[name], "grpc.health.v1.Health/Check")
        assert check.returncode == 0, check.stderr
        assert json.loads(check.stdout) == {"status": "SERVING"}


def test_gateway_health_and_page(suite: Suite) -> None:
    with urllib.request.urlopen(f"http://{suite.addr['gateway']}/healthz", timeout=10) as resp:
        assert resp.status == 200
    with urllib.request.urlopen(f"http://{suite.addr['gateway']}/", timeout=10) as resp:
        assert resp.status == 200 and "text/html" in resp.headers["Content-Type"]


def test_orchestrate_through_grpcurl(suite: Suite) -> None:
    body = {"prompt": "Write a haiku about the gRPC wire format", "maxRounds": 2, "qualityThreshold": 9.5}
    run = suite.grpcurl("-d", json.dumps(body), suite.addr["orchestrator"], f"{FULL_NAMES['orchestrator']}/Orchestrate")
    assert run.returncode == 0, run.stderr
    # grpcurl prints the proto field names (session_id), int64 as strings and enums by name
    events = [m["event"] for m in _json_stream(run.stdout)]
    assert [int(e["sequence"]) for e in events] == list(range(1, len(events) + 1))
    kinds = [next(k for k in e if k not in {"session_id", "sequence", "time"}) for e in events]
    assert kinds[0] == "session_started" and events[0]["session_started"]["simulated"] is True
    assert {"model_selected", "response_delta", "response_completed", "critique_completed"} <= set(kinds)
    assert "round_completed" in kinds
    assert kinds[-1] == "session_completed"
    done = events[-1]["session_completed"]
    assert done["final_text"].startswith("_(simulated answer")
    assert done["total_cost_usd"] > 0
    assert done["stop_reason"].startswith("STOP_REASON_")
    sid = events[0]["session_id"]
    replay = suite.grpcurl(
        "-d", json.dumps({"session_id": sid}), suite.addr["orchestrator"], f"{FULL_NAMES['orchestrator']}/WatchSession"
    )
    assert [m["event"] for m in _json_stream(replay.stdout)] == events

    def analytics_has_cost() -> bool:
        report = suite.grpcurl("-d", "{}", suite.addr["analytics"], f"{FULL_NAMES['analytics']}/GetCostReport")
        sessions = json.loads(report.stdout).get("sessions", []) if report.returncode == 0 else []
        return any(s["session_id"] == sid and abs(s["cost_usd"] - done["total_cost_usd"]) < 1e-6 for s in sessions)

    wait_for(analytics_has_cost)


def test_shadow_evaluation_reaches_selection_accuracy(suite: Suite) -> None:
    """A session forced into shadow evaluation: runner-ups answer round 1, and analytics counts the sample."""
    body = {"prompt": "Prove that the square root of 2 is irrational", "maxRounds": 1, "shadowEvaluation": True}
    run = suite.grpcurl("-d", json.dumps(body), suite.addr["orchestrator"], f"{FULL_NAMES['orchestrator']}/Orchestrate")
    assert run.returncode == 0, run.stderr
    events = [m["event"] for m in _json_stream(run.stdout)]
    selected = next(e["model_selected"] for e in events if "model_selected" in e)
    shadow_models = selected.get("shadow_models", [])
    assert shadow_models and selected["primary_model"] not in shadow_models
    shadow_answers = [e["response_completed"] for e in events if e.get("response_completed", {}).get("shadow")]
    assert {a["model"] for a in shadow_answers} <= set(shadow_models) and shadow_answers
    assert "session_completed" in events[-1]

    def sampled() -> bool:
        report = suite.grpcurl("-d", "{}", suite.addr["analytics"], f"{FULL_NAMES['analytics']}/GetSelectionAccuracy")
        if report.returncode != 0:
            return False
        shadow = json.loads(report.stdout).get("shadow", {})
        return int(shadow.get("sample_size", 0)) >= 1

    wait_for(sampled)


def test_bad_input_through_grpcurl(suite: Suite) -> None:
    body = {"prompt": "hello", "maxRounds": 11}
    run = suite.grpcurl("-d", json.dumps(body), suite.addr["orchestrator"], f"{FULL_NAMES['orchestrator']}/Orchestrate")
    assert run.returncode != 0
    assert "InvalidArgument" in run.stderr and "max_rounds" in run.stderr
    enum = suite.grpcurl(
        "-d", '{"status": 42}', suite.addr["orchestrator"], f"{FULL_NAMES['orchestrator']}/ListSessions"
    )
    assert "InvalidArgument" in enum.stderr and "status" in enum.stderr


def _inverted() -> common_pb2.TimeRange:
    return common_pb2.TimeRange(start_time=Timestamp(seconds=2_000_000_000), end_time=Timestamp(seconds=1))


def _bad_requests() -> list[tuple[str, str, Any, str]]:
    user = common_pb2.ChatMessage(role=common_pb2.ROLE_USER, content="hi")
    model = "z-ai/glm-4.5"
    return [
        ("selector", "AnalyzePrompt", selector_pb2.AnalyzePromptRequest(prompt=" "), "prompt"),
        ("selector", "AnalyzePrompt", selector_pb2.AnalyzePromptRequest(prompt="x" * 300_000), "prompt"),
        (
            "selector",
            "SelectModels",
            selector_pb2.SelectModelsRequest(prompt="x", preferences=common_pb2.Preferences(cost_weight=-1)),
            "preferences.cost_weight",
        ),
        ("providers", "Generate", providers_pb2.GenerateRequest(model=model), "messages"),
        ("providers", "Generate", providers_pb2.GenerateRequest(messages=[user]), "model"),
        (
            "providers",
            "Generate",
            providers_pb2.GenerateRequest(model=model, messages=[common_pb2.ChatMessage(role=9, content="x")]),  # type: ignore[arg-type]
            "messages[0].role",
        ),
        (
            "providers",
            "StreamGenerate",
            providers_pb2.StreamGenerateRequest(
                request=providers_pb2.GenerateRequest(model=model, messages=[user], temperature=3)
            ),
            "request.temperature",
        ),
        ("orchestrator", "Orchestrate", orchestrator_pb2.OrchestrateRequest(), "prompt"),
        ("orchestrator", "Orchestrate", orchestrator_pb2.OrchestrateRequest(prompt="x" * 300_000), "prompt"),
        ("orchestrator", "WatchSession", orchestrator_pb2.WatchSessionRequest(), "session_id"),
        ("orchestrator", "GetSession", orchestrator_pb2.GetSessionRequest(), "session_id"),
        ("orchestrator", "ListSessions", orchestrator_pb2.ListSessionsRequest(status=7), "status"),  # type: ignore[arg-type]
        ("orchestrator", "CancelSession", orchestrator_pb2.CancelSessionRequest(), "session_id"),
        ("analytics", "GetModelPerformance", analytics_pb2.GetModelPerformanceRequest(domain=99), "domain"),  # type: ignore[arg-type]
        ("analytics", "GetCostReport", analytics_pb2.GetCostReportRequest(range=_inverted()), "range"),
        ("analytics", "GetSelectionAccuracy", analytics_pb2.GetSelectionAccuracyRequest(range=_inverted()), "range"),
        ("analytics", "SubmitFeedback", analytics_pb2.SubmitFeedbackRequest(session_id="s", rating=9), "rating"),
        ("analytics", "SubmitFeedback", analytics_pb2.SubmitFeedbackRequest(rating=3), "session_id"),
        ("analytics", "GetSatisfaction", analytics_pb2.GetSatisfactionRequest(range=_inverted()), "range"),
    ]


_STUBS = {
    "selector": selector_pb2_grpc.SelectorServiceStub,
    "providers": providers_pb2_grpc.ProviderServiceStub,
    "orchestrator": orchestrator_pb2_grpc.OrchestratorServiceStub,
    "analytics": analytics_pb2_grpc.AnalyticsServiceStub,
}


@pytest.mark.parametrize(("service", "method", "request_", "field"), _bad_requests())
async def test_every_rpc_rejects_bad_input_naming_the_field(
    suite: Suite, service: str, method: str, request_: Any, field: str
) -> None:
    async with grpc.aio.insecure_channel(suite.addr[service]) as channel:
        call = getattr(_STUBS[service](channel), method)(request_, timeout=20)
        with pytest.raises(grpc.aio.AioRpcError) as err:
            if method in {"Orchestrate", "WatchSession", "StreamGenerate"}:
                [m async for m in call]
            else:
                await call
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT, err.value.details()
    assert (err.value.details() or "").startswith(field), err.value.details()


async def test_websocket_bridge_streams_a_session(suite: Suite) -> None:
    async with aiohttp.ClientSession() as http, http.ws_connect(f"http://{suite.addr['gateway']}/v1/ws") as ws:
        await ws.send_json(
            {"type": "orchestrate", "request": {"prompt": "List three uses of a hash map", "maxRounds": 1}}
        )
        events: list[dict[str, Any]] = []
        async for msg in ws:
            data = json.loads(msg.data)
            assert data["type"] != "error", data
            if data["type"] == "event":
                events.append(data["event"])
                if "session_completed" in data["event"] or "session_failed" in data["event"]:
                    break
    assert "session_completed" in events[-1]
    assert [int(e["sequence"]) for e in events] == list(range(1, len(events) + 1))


def test_ask_shows_the_orchestration_live(suite: Suite) -> None:
    env = {**os.environ, "ORX_ORCHESTRATOR_ADDR": suite.addr["orchestrator"]}
    run = subprocess.run(
        [str(BIN / "orchestratex"), "ask", "Explain the CAP theorem in three sentences", "--rounds", "2"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert run.returncode == 0, run.stderr
    out = run.stdout
    assert "[SIMULATED models]" in out
    assert "primary:" in out and "critic " in out and "round 1: score" in out
    assert "=== final answer" in out and "cost $" in out


def test_ctrl_c_stops_everything_gracefully(suite: Suite) -> None:
    suite.proc.send_signal(signal.SIGINT)
    assert suite.proc.wait(30) == 0
    for addr in suite.addr.values():
        host, port = addr.rsplit(":", 1)
        with socket.socket() as s:
            assert s.connect_ex((host, int(port))) != 0, f"{addr} still accepts connections"
    log = "".join(suite.errors)
    assert "Traceback" not in log
