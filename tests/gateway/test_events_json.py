"""Canonical JSON of events: equal to json_format's output for every kind of event."""

from __future__ import annotations

import json
import math
from typing import Any

import orjson
import pytest
from google.protobuf import json_format

from gateway import events_json
from orchestratex.v1 import common_pb2, orchestrator_pb2

from .conftest import scripted_events

pb = orchestrator_pb2


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
    return [*events, fallback, failed, odd, pb.OrchestrationEvent()]


EVENTS = _events()


@pytest.mark.parametrize("event", EVENTS, ids=lambda e: e.WhichOneof("kind") or "empty")
def test_event_dict_equals_json_format(event: pb.OrchestrationEvent) -> None:
    expected = json_format.MessageToDict(event)
    assert events_json.event_to_dict(event) == expected
    assert events_json.message_to_dict(event) == expected
    # The serialised text decodes to the same data json_format's own text does.
    assert orjson.loads(events_json.event_json(event)) == json.loads(json_format.MessageToJson(event))


def test_every_event_kind_is_covered() -> None:
    kinds = {e.WhichOneof("kind") for e in EVENTS}
    assert kinds >= {f.name for f in pb.OrchestrationEvent.DESCRIPTOR.oneofs_by_name["kind"].fields}


def test_canonical_forms() -> None:
    started = EVENTS[0]
    data = events_json.event_to_dict(started)
    assert data["sessionId"] == "sess-json"
    assert data["sequence"] == "1"  # int64 as a string
    assert data["time"].endswith("Z") and data["time"].startswith("2025-")
    assert data["sessionStarted"]["request"]["timeLimit"] == "300s"
    selected = events_json.event_to_dict(EVENTS[1])["modelSelected"]
    assert selected["analysis"]["primaryDomain"] == "DOMAIN_CODING"  # enum names
    assert selected["analysis"]["estimatedPromptTokens"] == "42"
    completed = events_json.event_to_dict(EVENTS[-1 - 4])
    assert completed["sessionCompleted"]["wallTime"] == "2.750s"


def test_event_frame_wraps_the_event() -> None:
    frame = orjson.loads(events_json.event_frame(EVENTS[2]))
    assert frame == {"type": "event", "event": json_format.MessageToDict(EVENTS[2])}
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
    assert events_json.event_to_dict(EVENTS[0]) == json_format.MessageToDict(EVENTS[0])
