"""The typed emitter: one method per event kind, every non-terminal kind covered, each event numbered."""

from __future__ import annotations

import asyncio

from orchestratex.v1 import common_pb2, selector_pb2
from orchestratex.v1 import orchestrator_pb2 as pb
from services.orchestrator.critique import Critique
from services.orchestrator.events import Coalescer, Emitter
from services.orchestrator.hub import TERMINAL_KINDS, EventWriter, Hub
from services.orchestrator.policy import Decision


class _NoStore:
    """The writer is never started here: nothing reaches a store."""


def _emitter() -> tuple[Emitter, EventWriter]:
    writer = EventWriter(_NoStore())  # type: ignore[arg-type]
    hub = Hub(writer)
    return Emitter(hub, hub.open("s-1", "tenant")), writer


def _emit_each_kind(events: Emitter) -> None:
    usage = common_pb2.Usage(prompt_tokens=3, completion_tokens=2, total_tokens=5, cost_usd=0.01)
    events.session_started(pb.OrchestrateRequest(prompt="p"), simulated=True, thread_turns=1)
    events.model_selected(
        primary="m/a",
        critics=["m/b"],
        candidates=[selector_pb2.Candidate(model="m/a", rank=1)],
        analysis=selector_pb2.PromptAnalysis(),
        from_defaults=False,
        shadow_models=[],
    )
    events.response_delta(1, "m/a", "Hello")
    events.response_completed(
        1, "m/a", served_model="m/a", text="Hello", usage=usage, latency=1.5, ttft=0.25, simulated=True
    )
    events.critique_completed(
        1, "m/b", "m/a", Critique(score=7.0, rationale="fine"), usage=usage, latency=0.5, ttft=0.1
    )
    events.round_completed(
        1,
        Decision(stop=True, reason=pb.STOP_REASON_THRESHOLD, text="good enough"),
        aggregate_score=7.0,
        score_change=0.0,
        critics_scored=1,
        best_round=1,
        round_cost_usd=0.02,
    )
    events.provider_fallback(
        2,
        "m/a",
        "m/c",
        failure_kind=common_pb2.FAILURE_KIND_TIMEOUT,
        reason="slow",
        usage=usage,
        latency=2.0,
        ttft=0.0,
    )
    events.warning(pb.WARNING_CODE_ALL_CRITICS_FAILED, "no critic answered", round_no=2)
    events.call_warning(
        pb.WARNING_CODE_CRITIC_FAILED,
        "critic m/b failed",
        round_no=2,
        model="m/b",
        failure_kind=common_pb2.FAILURE_KIND_INVALID_OUTPUT,
        usage=usage,
        latency=0.75,
        purpose=common_pb2.CALL_PURPOSE_CRITIQUE,
    )


async def test_every_progress_kind_has_a_method_and_each_event_is_numbered() -> None:
    events, writer = _emitter()
    _emit_each_kind(events)
    emitted = events.live.events
    kinds = {str(e.WhichOneof("kind")) for e in emitted}
    every = {f.name for f in pb.OrchestrationEvent.DESCRIPTOR.oneofs_by_name["kind"].fields}
    assert kinds == every - TERMINAL_KINDS
    assert [e.sequence for e in emitted] == list(range(1, len(emitted) + 1))
    assert all(e.session_id == "s-1" and e.time.seconds > 0 for e in emitted)
    assert writer._queued == len(emitted)  # every event is queued for the store


async def test_methods_fill_the_message_from_their_parameters() -> None:
    events, _ = _emitter()
    _emit_each_kind(events)
    by_kind = {str(e.WhichOneof("kind")): e for e in events.live.events}
    completed = by_kind["response_completed"].response_completed
    assert completed.latency.ToMilliseconds() == 1500 and completed.time_to_first_token.ToMilliseconds() == 250
    assert not completed.shadow
    verdict = by_kind["round_completed"].round_completed
    assert verdict.decision == pb.ROUND_DECISION_STOP and verdict.stop_reason == pb.STOP_REASON_THRESHOLD
    assert verdict.reason == "good enough"
    critique = by_kind["critique_completed"].critique_completed
    assert (critique.critic_model, critique.author_model, critique.score) == ("m/b", "m/a", 7.0)
    fallback = by_kind["provider_fallback"].provider_fallback
    assert fallback.replacement_model == "m/c" and fallback.usage.cost_usd == 0.01
    warnings = [e.warning for e in events.live.events if e.HasField("warning")]
    assert [w.model for w in warnings] == ["", "m/b"]
    assert not warnings[0].HasField("usage") and warnings[1].latency.ToMilliseconds() == 750


async def test_the_coalescer_sends_the_first_piece_at_once_and_batches_the_rest() -> None:
    sent: list[str] = []
    coalescer = Coalescer(sent.append)
    for piece in ("a", "b", "c"):
        coalescer.add(piece)
    assert sent == ["a"]
    await asyncio.sleep(0.08)  # the window ends: the timer flushes without another piece
    assert sent == ["a", "bc"]
    coalescer.add("d")
    coalescer.discard()
    await asyncio.sleep(0.08)
    assert sent == ["a", "bc"]
