"""Shadow evaluation: runner-ups answer round 1 beside the session, are scored by the same critics,
and never change the session's answer, its stop rule or its accounting."""

from __future__ import annotations

import uuid

import grpc
import pytest

from orchestratex.v1 import orchestrator_pb2 as pb
from services.orchestrator import shadow
from tests.orchestrator.conftest import Stack, start_stack, stop_stack, wait_until


def test_sample_rate_defaults_on_in_simulation_and_off_live() -> None:
    assert shadow.sample_rate(None, simulated=True) == shadow.SIMULATED_RATE > 0
    assert shadow.sample_rate(None, simulated=False) == 0.0
    assert shadow.sample_rate(0.7, simulated=False) == 0.7
    assert shadow.sample_rate(0.0, simulated=True) == 0.0


def test_sampling_is_stable_per_session_and_close_to_the_rate() -> None:
    ids = [uuid.uuid4().hex for _ in range(20_000)]
    picked = [i for i in ids if shadow.sampled(i, 0.25)]
    assert 0.23 < len(picked) / len(ids) < 0.27
    assert all(shadow.sampled(i, 0.25) for i in picked)
    assert not any(shadow.sampled(i, 0.0) for i in ids[:100])
    assert all(shadow.sampled(i, 1.0) for i in ids[:100])


def test_runners_up_skip_the_primary_and_the_critics() -> None:
    ranked = ["a", "b", "c", "d", "e"]
    assert shadow.runners_up(ranked, "a", ["b", "d"]) == ["c", "e"]
    assert shadow.runners_up(ranked, "c", ["a"], limit=1) == ["b"]
    assert shadow.runners_up(["a", "b"], "a", ["b"]) == []


def _usages(events: list[pb.OrchestrationEvent]) -> float:
    total = 0.0
    for e in events:
        kind = e.WhichOneof("kind")
        if kind in ("response_completed", "critique_completed", "provider_fallback", "warning"):
            total += getattr(e, kind).usage.cost_usd
    return round(total, 9)


async def test_sampled_session_scores_runner_ups_without_changing_the_answer(stack: Stack) -> None:
    # The runner-up writes a better answer than the primary; the session must still return the primary's.
    stack.providers.answers["m/alpha"] = ["primary answer quality=4"]
    stack.providers.answers["m/delta"] = ["runner-up answer quality=9"]
    events = await stack.run(prompt="Explain tides", max_rounds=1, critic_count=2, shadow_evaluation=True)

    selected = next(e.model_selected for e in events if e.HasField("model_selected"))
    assert list(selected.shadow_models) == ["m/delta"]
    shadow_answers = [
        e.response_completed for e in events if e.HasField("response_completed") and e.response_completed.shadow
    ]
    assert [(a.model, a.round, a.text) for a in shadow_answers] == [("m/delta", 1, "runner-up answer quality=9")]
    shadow_critiques = [
        e.critique_completed for e in events if e.HasField("critique_completed") and e.critique_completed.shadow
    ]
    own_critiques = [
        e.critique_completed for e in events if e.HasField("critique_completed") and not e.critique_completed.shadow
    ]
    # The same panel judged both answers, and nobody judged their own.
    assert sorted(c.critic_model for c in shadow_critiques) == sorted(c.critic_model for c in own_critiques)
    assert {c.author_model for c in shadow_critiques} == {"m/delta"}
    assert {c.score for c in shadow_critiques} == {9.0}

    done = events[-1].session_completed
    assert done.final_text == "primary answer quality=4"
    assert done.best_model == "m/alpha"
    assert done.final_score == 4.0
    # Shadow calls are real spend: in the totals, matching every call's usage in the log.
    assert done.total_cost_usd == pytest.approx(_usages(events), abs=1e-9)
    delta_usage = next(m for m in done.per_model if m.model == "m/delta")
    assert delta_usage.calls == 1
    # The round's own cost excludes shadow work.
    round_done = next(e.round_completed for e in events if e.HasField("round_completed"))
    assert round_done.round_cost_usd < done.total_cost_usd


async def test_not_sampled_means_no_shadow_calls(stack: Stack) -> None:
    events = await stack.run(prompt="Explain tides", max_rounds=1, critic_count=2, shadow_evaluation=False)
    selected = next(e.model_selected for e in events if e.HasField("model_selected"))
    assert list(selected.shadow_models) == []
    assert not any(e.HasField("response_completed") and e.response_completed.shadow for e in events)
    assert {c.model for c in stack.providers.calls} == {"m/alpha", "m/beta", "m/gamma"}


async def test_a_failed_shadow_answer_is_a_warning_and_the_session_completes(stack: Stack) -> None:
    stack.providers.fail_before["m/delta"] = grpc.StatusCode.UNAVAILABLE
    events = await stack.run(prompt="Explain tides", max_rounds=1, critic_count=2, shadow_evaluation=True)
    warning = next(e.warning for e in events if e.HasField("warning"))
    assert warning.code == pb.WARNING_CODE_SHADOW_FAILED
    assert warning.model == "m/delta"
    assert "shadow answer from m/delta failed" in warning.message
    assert events[-1].HasField("session_completed")
    assert events[-1].session_completed.best_model == "m/alpha"


async def test_the_sample_rate_setting_samples_sessions(tmp_path: object) -> None:
    stack = await start_stack(tmp_path, ORX_SHADOW_SAMPLE_RATE="1")  # type: ignore[arg-type]
    try:
        events = await stack.run(prompt="Explain tides", max_rounds=1, critic_count=2)
        selected = next(e.model_selected for e in events if e.HasField("model_selected"))
        assert list(selected.shadow_models) == ["m/delta"]
    finally:
        await stop_stack(stack)


async def test_a_hung_shadow_call_is_cut_after_the_grace_and_accounted(
    stack: Stack, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(shadow, "GRACE_S", 0.2)
    stack.providers.block.add("m/delta")
    events = await stack.run(prompt="Explain tides", max_rounds=1, critic_count=2, shadow_evaluation=True)
    cancelled = [
        e.warning for e in events if e.HasField("warning") and e.warning.code == pb.WARNING_CODE_CALL_CANCELLED
    ]
    assert [w.model for w in cancelled] == ["m/delta"]
    await wait_until(stack.providers.cancelled.is_set)
    done = events[-1].session_completed
    assert done.final_text
    assert done.total_cost_usd == pytest.approx(_usages(events), abs=1e-9)


async def test_cancelling_a_session_cancels_its_shadow_calls(stack: Stack) -> None:
    stack.providers.block.update({"m/alpha", "m/delta"})
    call = stack.stub.Orchestrate(
        pb.OrchestrateRequest(prompt="Explain tides", max_rounds=1, critic_count=2, shadow_evaluation=True)
    )
    first = await call.read()
    session_id = first.event.session_id
    await wait_until(lambda: {c.model for c in stack.providers.calls} >= {"m/alpha", "m/delta"})
    await stack.stub.CancelSession(pb.CancelSessionRequest(session_id=session_id))
    events = [first.event]
    async for resp in call:
        events.append(resp.event)
    assert events[-1].HasField("session_failed")
    cancelled = {
        e.warning.model for e in events if e.HasField("warning") and e.warning.code == pb.WARNING_CODE_CALL_CANCELLED
    }
    assert cancelled == {"m/alpha", "m/delta"}
    assert events[-1].session_failed.total_cost_usd == pytest.approx(_usages(events), abs=1e-9)
