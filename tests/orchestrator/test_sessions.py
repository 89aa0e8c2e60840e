"""The orchestrator over the real wire, against scripted fake peers."""

from __future__ import annotations

import asyncio
from pathlib import Path

import grpc
import pytest

from orchestratex.v1 import common_pb2
from orchestratex.v1 import orchestrator_pb2 as pb
from services.orchestrator.store.sqlite import SqliteSessionStore
from tests.orchestrator.conftest import Stack, kinds, start_stack, stop_stack, wait_until


def _terminal(events: list[pb.OrchestrationEvent]) -> pb.OrchestrationEvent:
    assert events[-1].WhichOneof("kind") in {"session_completed", "session_failed"}
    return events[-1]


async def test_one_round_streams_every_step_in_order(stack: Stack) -> None:
    stack.providers.answers["m/alpha"] = ["first draft quality=9"]
    events = await stack.run(prompt="What is gRPC?", max_rounds=3, quality_threshold=8)
    assert [e.sequence for e in events] == list(range(1, len(events) + 1))
    assert len({e.session_id for e in events}) == 1
    k = kinds(events)
    assert k[:2] == ["session_started", "model_selected"]
    assert "response_delta" in k
    assert k.count("critique_completed") == 2
    assert k[-2:] == ["round_completed", "session_completed"]
    done = events[-1].session_completed
    assert done.final_text == "first draft quality=9"
    assert done.stop_reason == pb.STOP_REASON_THRESHOLD
    assert done.final_score == 9
    deltas = "".join(e.response_delta.text for e in events if e.HasField("response_delta"))
    assert deltas == "first draft quality=9"


async def test_critics_never_include_the_author_and_prefer_other_families(stack: Stack) -> None:
    stack.providers.answers["m/alpha"] = ["DNS maps names to addresses quality=8"]
    events = await stack.run(prompt="Explain DNS", critic_count=2, max_rounds=1)
    critics = [e.critique_completed.critic_model for e in events if e.HasField("critique_completed")]
    assert sorted(critics) == ["m/beta", "m/gamma"]
    critic_calls = [c for c in stack.providers.calls if c.context.purpose == common_pb2.CALL_PURPOSE_CRITIQUE]
    # the answer is shown, its author is not named anywhere
    assert all("DNS maps names" in c.messages[-1].content for c in critic_calls)
    assert all("alpha" not in m.content for c in critic_calls for m in c.messages)
    assert all(c.response_format.type == 1 for c in critic_calls)


async def test_refines_until_threshold_and_returns_best_not_last(stack: Stack) -> None:
    stack.providers.answers["m/alpha"] = ["v1 quality=6", "v2 quality=7.5", "v3 quality=7"]
    events = await stack.run(prompt="Write a limerick", max_rounds=3, quality_threshold=9, plateau_epsilon=0.1)
    rounds = [e.round_completed for e in events if e.HasField("round_completed")]
    assert [r.aggregate_score for r in rounds] == [6, 7.5, 7]
    assert rounds[0].decision == pb.ROUND_DECISION_CONTINUE
    assert rounds[-1].decision == pb.ROUND_DECISION_STOP
    done = events[-1].session_completed
    assert done.final_text == "v2 quality=7.5"
    assert done.best_round == 2
    assert done.rounds_used == 3
    refine_calls = [c for c in stack.providers.calls if c.context.purpose == common_pb2.CALL_PURPOSE_REFINE]
    assert len(refine_calls) == 2
    # the second refinement starts from the best version (v2) with its critiques
    assert "v2 quality=7.5" in refine_calls[1].messages[-1].content


async def test_plateau_stops_early(stack: Stack) -> None:
    stack.providers.answers["m/alpha"] = ["v1 quality=6", "v2 quality=6.1", "v3 quality=9"]
    events = await stack.run(prompt="Summarise this", max_rounds=5, quality_threshold=9, patience=1)
    done = _terminal(events).session_completed
    assert done.stop_reason == pb.STOP_REASON_PLATEAU
    assert done.rounds_used == 2


async def test_budget_stops_before_an_unaffordable_round(stack: Stack) -> None:
    stack.providers.answers["m/alpha"] = ["v1 quality=5"]
    events = await stack.run(prompt="Plan a trip", max_rounds=5, quality_threshold=9, budget_usd=0.00004)
    done = _terminal(events).session_completed
    assert done.stop_reason == pb.STOP_REASON_BUDGET
    assert done.rounds_used == 1


async def test_cost_total_equals_sum_of_calls(stack: Stack) -> None:
    stack.providers.answers["m/alpha"] = ["v1 quality=6", "v2 quality=9"]
    events = await stack.run(prompt="Tell me about Rust", max_rounds=3, quality_threshold=8)
    calls = 0.0
    for e in events:
        kind = e.WhichOneof("kind")
        if kind in {"response_completed", "critique_completed", "provider_fallback", "warning"}:
            calls += getattr(e, kind).usage.cost_usd
    done = events[-1].session_completed
    assert done.total_cost_usd == pytest.approx(calls, abs=1e-9)
    assert sum(m.usage.cost_usd for m in done.per_model) == pytest.approx(calls, abs=1e-9)
    assert sum(m.calls for m in done.per_model) == 2 + 4


async def test_primary_failure_falls_back_to_next_model(stack: Stack) -> None:
    stack.providers.fail_before["m/alpha"] = grpc.StatusCode.UNAVAILABLE
    stack.providers.answers["m/beta"] = ["beta answer quality=9"]
    events = await stack.run(prompt="Hello", max_rounds=1)
    fallback = next(e.provider_fallback for e in events if e.HasField("provider_fallback"))
    assert fallback.failed_model == "m/alpha"
    assert fallback.replacement_model == "m/beta"
    assert fallback.failure_kind == common_pb2.FAILURE_KIND_UPSTREAM_ERROR
    done = _terminal(events).session_completed
    assert done.final_text == "beta answer quality=9"
    critics = {e.critique_completed.critic_model for e in events if e.HasField("critique_completed")}
    assert "m/beta" not in critics


async def test_mid_stream_failure_is_accounted_and_falls_back(stack: Stack) -> None:
    stack.providers.fail_mid.add("m/alpha")
    events = await stack.run(prompt="Hello there friend", max_rounds=1)
    fallback = next(e.provider_fallback for e in events if e.HasField("provider_fallback"))
    assert fallback.failure_kind == common_pb2.FAILURE_KIND_MID_STREAM_ERROR
    assert fallback.usage.cost_usd == pytest.approx(0.000004)
    assert _terminal(events).session_completed.total_cost_usd > 0.000004


async def test_every_model_failing_fails_the_session_clearly(stack: Stack) -> None:
    for model in ("m/alpha", "m/beta", "m/gamma", "m/delta"):
        stack.providers.fail_before[model] = grpc.StatusCode.RESOURCE_EXHAUSTED
    events = await stack.run(prompt="Hello", max_rounds=1)
    failed = _terminal(events).session_failed
    assert failed.status == pb.SESSION_STATUS_FAILED
    assert "every candidate model failed" in failed.reason
    assert kinds(events).count("provider_fallback") == 4


async def test_one_critic_failing_is_a_warning(stack: Stack) -> None:
    stack.providers.critic_text["m/beta"] = "I refuse to answer in JSON."
    stack.providers.answers["m/alpha"] = ["answer quality=9"]
    events = await stack.run(prompt="Hello", max_rounds=1)
    warning = next(e.warning for e in events if e.HasField("warning"))
    assert warning.code == pb.WARNING_CODE_CRITIC_FAILED
    assert warning.model == "m/beta"
    assert warning.failure_kind == common_pb2.FAILURE_KIND_INVALID_OUTPUT
    assert _terminal(events).session_completed.final_score == 9


async def test_all_critics_failing_returns_best_answer_and_says_so(stack: Stack) -> None:
    stack.providers.fail_before["m/beta"] = grpc.StatusCode.UNAVAILABLE
    stack.providers.fail_before["m/gamma"] = grpc.StatusCode.UNAVAILABLE
    stack.providers.answers["m/alpha"] = ["lonely answer"]
    events = await stack.run(prompt="Hello", max_rounds=3, critic_count=2)
    codes = [e.warning.code for e in events if e.HasField("warning")]
    assert pb.WARNING_CODE_ALL_CRITICS_FAILED in codes
    done = _terminal(events).session_completed
    assert done.final_text == "lonely answer"
    assert done.stop_reason == pb.STOP_REASON_NO_CRITIQUE


async def test_zero_critics_single_round(stack: Stack) -> None:
    events = await stack.run(prompt="Hello", max_rounds=1, critic_count=0)
    assert "critique_completed" not in kinds(events)
    assert _terminal(events).session_completed.stop_reason == pb.STOP_REASON_NO_CRITIQUE


async def test_selector_down_uses_catalogue_defaults(stack: Stack) -> None:
    stack.selector.down = True
    events = await stack.run(prompt="Hello", max_rounds=1)
    selected = next(e.model_selected for e in events if e.HasField("model_selected"))
    assert selected.from_defaults
    assert selected.primary_model == "m/alpha"
    assert selected.critic_models[0] != "m/delta"  # same family as alpha goes last
    codes = [e.warning.code for e in events if e.HasField("warning")]
    assert pb.WARNING_CODE_SELECTOR_UNAVAILABLE in codes
    assert events[-1].HasField("session_completed")


async def test_events_are_persisted_and_replayable(stack: Stack) -> None:
    events = await stack.run(prompt="Hello", max_rounds=2, quality_threshold=9)
    sid = events[0].session_id
    assert await stack.watch(sid) == events
    middle = events[len(events) // 2].sequence
    assert await stack.watch(sid, middle) == events[middle:]
    assert await stack.watch(sid, events[-1].sequence + 5) == []
    got = (await stack.stub.GetSession(pb.GetSessionRequest(session_id=sid))).session
    assert got.status == pb.SESSION_STATUS_COMPLETED
    assert got.last_sequence == len(events)
    assert got.result.final_text == events[-1].session_completed.final_text
    listed = (await stack.stub.ListSessions(pb.ListSessionsRequest())).sessions
    assert sid in [s.session_id for s in listed]


async def test_list_sessions_pages_and_filters(stack: Stack) -> None:
    ids = []
    for i in range(5):
        events = await stack.run(prompt=f"q{i}", max_rounds=1, thread_id="t1" if i % 2 else "")
        ids.append(events[0].session_id)
    seen: list[str] = []
    token = ""
    while True:
        page = await stack.stub.ListSessions(pb.ListSessionsRequest(page_size=2, page_token=token))
        seen.extend(s.session_id for s in page.sessions)
        token = page.next_page_token
        if not token:
            break
    assert seen == list(reversed(ids))
    threaded = await stack.stub.ListSessions(pb.ListSessionsRequest(thread_id="t1"))
    assert {s.session_id for s in threaded.sessions} == {ids[1], ids[3]}
    done = await stack.stub.ListSessions(pb.ListSessionsRequest(status=pb.SESSION_STATUS_COMPLETED))
    assert len(done.sessions) == 5
    created = {s.session_id: s.create_time for s in done.sessions}
    # range: at or after its start, before its end (the TimeRange shared with analytics)
    window = common_pb2.TimeRange(start_time=created[ids[1]], end_time=created[ids[3]])
    ranged = await stack.stub.ListSessions(pb.ListSessionsRequest(range=window))
    assert [s.session_id for s in ranged.sessions] == [ids[2], ids[1]]
    since = await stack.stub.ListSessions(
        pb.ListSessionsRequest(range=common_pb2.TimeRange(start_time=created[ids[3]]))
    )
    assert [s.session_id for s in since.sessions] == [ids[4], ids[3]]
    # prompt search: case-insensitive, combined with the other filters
    searched = await stack.stub.ListSessions(pb.ListSessionsRequest(prompt_contains="Q3"))
    assert [s.session_id for s in searched.sessions] == [ids[3]]
    assert not (await stack.stub.ListSessions(pb.ListSessionsRequest(prompt_contains="q3", thread_id="x"))).sessions
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await stack.stub.ListSessions(pb.ListSessionsRequest(prompt_contains="q" * 201))
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "prompt_contains" in (err.value.details() or "")


async def test_thread_follow_up_carries_earlier_turns(stack: Stack) -> None:
    stack.providers.answers["m/alpha"] = ["Paris is the capital quality=9", "About 2.1 million quality=9"]
    await stack.run(prompt="Capital of France?", max_rounds=1, thread_id="trip")
    events = await stack.run(prompt="And its population?", max_rounds=1, thread_id="trip")
    assert events[0].session_started.thread_turns == 1
    answer_calls = [c for c in stack.providers.calls if c.context.purpose == common_pb2.CALL_PURPOSE_ANSWER]
    contents = [m.content for m in answer_calls[-1].messages]
    assert "Capital of France?" in contents
    assert "Paris is the capital quality=9" in contents


async def test_cancel_session_stops_provider_calls(stack: Stack) -> None:
    stack.providers.block.add("m/alpha")
    call = stack.stub.Orchestrate(pb.OrchestrateRequest(prompt="slow", max_rounds=1), timeout=30)
    first = await call.read()
    sid = first.event.session_id
    await asyncio.wait_for(stack.providers.started.wait(), 5)
    resp = await stack.stub.CancelSession(pb.CancelSessionRequest(session_id=sid, reason="user pressed stop"))
    assert resp.session.status == pb.SESSION_STATUS_CANCELLED
    await asyncio.wait_for(stack.providers.cancelled.wait(), 5)
    rest = [r.event async for r in call]
    failed = _terminal(rest).session_failed
    assert failed.status == pb.SESSION_STATUS_CANCELLED
    assert "user pressed stop" in failed.reason
    codes = [e.warning.code for e in rest if e.HasField("warning")]
    assert pb.WARNING_CODE_CALL_CANCELLED in codes


async def test_dropping_the_stream_cancels_unless_detached(stack: Stack) -> None:
    stack.providers.block.add("m/alpha")
    call = stack.stub.Orchestrate(pb.OrchestrateRequest(prompt="slow", max_rounds=1), timeout=30)
    sid = (await call.read()).event.session_id
    await asyncio.wait_for(stack.providers.started.wait(), 5)
    call.cancel()
    await asyncio.wait_for(stack.providers.cancelled.wait(), 5)

    async def status() -> int:
        return int((await stack.stub.GetSession(pb.GetSessionRequest(session_id=sid))).session.status)

    for _ in range(500):
        if await status() != pb.SESSION_STATUS_RUNNING:
            break
        await asyncio.sleep(0.01)
    assert await status() == pb.SESSION_STATUS_CANCELLED


async def test_detached_session_survives_the_stream_and_resumes(stack: Stack) -> None:
    stack.providers.chunk_pause = 0.002
    stack.providers.answers["m/alpha"] = ["a long answer with many words in it quality=9"]
    call = stack.stub.Orchestrate(pb.OrchestrateRequest(prompt="go", max_rounds=1, detached=True), timeout=30)
    first = (await call.read()).event
    second = (await call.read()).event
    call.cancel()
    rest = await stack.watch(first.session_id, second.sequence)
    assert rest[0].sequence == second.sequence + 1
    assert [e.sequence for e in rest] == list(range(second.sequence + 1, second.sequence + 1 + len(rest)))
    assert rest[-1].HasField("session_completed")


async def test_outbox_delivers_everything_but_deltas_even_after_an_outage(stack: Stack) -> None:
    stack.analytics.down = True
    events = await stack.run(prompt="Hello", max_rounds=1)
    assert stack.analytics.events == []
    stack.analytics.down = False
    expected = [e for e in events if not e.HasField("response_delta")]
    await wait_until(lambda: len(stack.analytics.events) >= len(expected))
    assert stack.analytics.events == expected


async def test_restart_marks_interrupted_sessions_failed(tmp_path: Path) -> None:
    s = await start_stack(tmp_path)
    s.providers.block.add("m/alpha")
    call = s.stub.Orchestrate(pb.OrchestrateRequest(prompt="slow", max_rounds=1, detached=True), timeout=30)
    sid = (await call.read()).event.session_id
    await asyncio.wait_for(s.providers.started.wait(), 5)
    call.cancel()
    # simulate a crash: the record stays "running" on disk
    store = await SqliteSessionStore.open(tmp_path / "orchestrator.db")
    record = await store.get_session(sid, "")
    assert record is not None
    await stop_stack(s)
    record.status = pb.SESSION_STATUS_RUNNING
    await store.save_session(record)
    await store.close()
    s2 = await start_stack(tmp_path)
    try:
        got = (await s2.stub.GetSession(pb.GetSessionRequest(session_id=sid))).session
        assert got.status == pb.SESSION_STATUS_FAILED
        assert "interrupted" in got.failure.reason
        events = await s2.watch(sid)
        assert events[-1].HasField("session_failed")
        assert [e.sequence for e in events] == list(range(1, len(events) + 1))
    finally:
        await stop_stack(s2)


async def test_shutdown_records_interruption_not_client_cancel(tmp_path: Path) -> None:
    s = await start_stack(tmp_path)
    s.providers.block.add("m/alpha")
    call = s.stub.Orchestrate(pb.OrchestrateRequest(prompt="slow", max_rounds=1, detached=True), timeout=30)
    sid = (await call.read()).event.session_id
    await asyncio.wait_for(s.providers.started.wait(), 5)
    call.cancel()
    await stop_stack(s)
    store = await SqliteSessionStore.open(tmp_path / "orchestrator.db")
    try:
        record = await store.get_session(sid, "")
        assert record is not None
        assert record.status == pb.SESSION_STATUS_FAILED
        assert "shutting down" in record.failure.reason
    finally:
        await store.close()


async def test_tenants_see_only_their_sessions(stack: Stack) -> None:
    meta_a = (("x-orx-tenant", "team-a"),)
    meta_b = (("x-orx-tenant", "team-b"),)
    call = stack.stub.Orchestrate(pb.OrchestrateRequest(prompt="secret", max_rounds=1), metadata=meta_a, timeout=30)
    events = [r.event async for r in call]
    sid = events[0].session_id
    got = await stack.stub.GetSession(pb.GetSessionRequest(session_id=sid), metadata=meta_a)
    assert got.session.session_id == sid
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await stack.stub.GetSession(pb.GetSessionRequest(session_id=sid), metadata=meta_b)
    assert err.value.code() == grpc.StatusCode.NOT_FOUND
    with pytest.raises(grpc.aio.AioRpcError) as err:
        [r async for r in stack.stub.WatchSession(pb.WatchSessionRequest(session_id=sid), metadata=meta_b)]
    assert err.value.code() == grpc.StatusCode.NOT_FOUND
    listed = await stack.stub.ListSessions(pb.ListSessionsRequest(), metadata=meta_b)
    assert sid not in [s.session_id for s in listed.sessions]


async def test_outbox_sets_aside_only_events_analytics_rejects(stack: Stack) -> None:
    stack.analytics.reject_kind = "round_completed"
    events = await stack.run(prompt="Hello", max_rounds=1)
    expected = [e for e in events if not e.HasField("response_delta") and not e.HasField("round_completed")]
    await wait_until(lambda: len(stack.analytics.events) >= len(expected))
    assert stack.analytics.events == expected
    assert stack.analytics.rejected_batches[-1] == 1


async def test_a_critic_failing_mid_stream_still_accounts_its_usage(stack: Stack) -> None:
    stack.providers.fail_mid.add("m/beta")
    stack.providers.answers["m/alpha"] = ["answer with enough words quality=9"]
    events = await stack.run(prompt="Hello", max_rounds=1)
    warning = next(e.warning for e in events if e.HasField("warning") and e.warning.model == "m/beta")
    assert warning.code == pb.WARNING_CODE_CRITIC_FAILED
    assert warning.usage.cost_usd == pytest.approx(0.000004)


async def test_text_that_arrives_before_a_stall_is_still_delivered(stack: Stack) -> None:
    stack.providers.answers["m/alpha"] = ["one two three four five"]
    stack.providers.hang_after["m/alpha"] = 3
    call = stack.stub.Orchestrate(pb.OrchestrateRequest(prompt="stall", max_rounds=1), timeout=30)
    text = ""
    async for resp in call:
        if resp.event.HasField("response_delta"):
            text += resp.event.response_delta.text
            if text == "one two three":
                break
    assert text == "one two three"  # the coalescing timer flushed what came before the stall
    call.cancel()
    await asyncio.wait_for(stack.providers.cancelled.wait(), 5)
