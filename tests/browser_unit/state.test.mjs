// The live view's reducer (gateway/static/state.js), action by action and event kind by event kind.
import assert from "node:assert/strict";
import { describe, test } from "node:test";

import { canCancel, initialState, needsWatch, reduce, scoreSeries } from "../../gateway/static/state.js";
import { deepFreeze, following, run, session } from "./helpers.mjs";

/** A view that started a session (ref 7) which the gateway acknowledged as `s.id`. */
function acknowledged(s) {
  return run(initialState(), [
    { type: "start", ref: 7 },
    { type: "ack", action: "orchestrate", ref: 7, session_id: s.id },
  ]);
}

const STARTED = { request: { prompt: "Name a colour.", quality_threshold: 9 }, simulated: true };

describe("starting and following", () => {
  test("the initial state shows nothing and is plain data", () => {
    const s = initialState();
    assert.equal(s.sessionId, null);
    assert.equal(s.phase, "idle");
    assert.equal(s.visible, false);
    assert.deepEqual(JSON.parse(JSON.stringify(s)), s);
    assert.notEqual(initialState(), s, "a fresh object each time");
  });

  test("start with a ref waits for the ack; without one it says the page is not connected", () => {
    const started = reduce(initialState(), { type: "start", ref: 3 });
    assert.equal(started.pendingRef, 3);
    assert.equal(started.running, true);
    assert.equal(started.visible, true);
    assert.equal(started.phase, "starting");
    const refused = reduce(started, { type: "start", ref: null });
    assert.equal(refused.running, false);
    assert.equal(refused.pendingRef, null);
    assert.match(refused.error, /Not connected/);
  });

  test("start forgets the previous session entirely, keeping it aside only until the start is accepted", () => {
    const s = session();
    const old = run(acknowledged(s), [s.event("session_started", STARTED), s.event("session_completed", {})]);
    const started = reduce(old, { type: "start", ref: 8 });
    assert.deepEqual(started,
      { ...initialState(), pendingRef: 8, running: true, visible: true, phase: "starting", before: old });
    const named = reduce(started, { type: "ack", action: "orchestrate", ref: 8, session_id: "new" });
    assert.equal(named.before, null, "accepted: the previous session is gone for good");
  });

  test("the ack for the pending orchestrate names the session; other acks change nothing", () => {
    const started = reduce(initialState(), { type: "start", ref: 3 });
    assert.equal(reduce(started, { type: "ack", action: "orchestrate", ref: 4, session_id: "x" }), started);
    assert.equal(reduce(started, { type: "ack", action: "cancel", ref: 3, session_id: "x" }), started);
    const named = reduce(started, { type: "ack", action: "orchestrate", ref: 3, session_id: "x" });
    assert.equal(named.sessionId, "x");
    assert.equal(named.pendingRef, null);
    assert.equal(named.running, true);
    const late = { type: "ack", action: "orchestrate", ref: 3, session_id: "y" };
    assert.equal(reduce(named, late), named, "a late duplicate ack");
  });

  test("follow shows a session from its first event; following the one already shown changes nothing", () => {
    const s = following("abc");
    assert.equal(s.sessionId, "abc");
    assert.equal(s.phase, "loading");
    assert.equal(s.running, true);
    assert.equal(reduce(s, { type: "follow", sessionId: "abc" }), s);
    const other = reduce(s, { type: "follow", sessionId: "def" });
    assert.equal(other.sessionId, "def");
    assert.equal(other.lastSequence, 0);
  });

  test("follow of a finished session already shown changes nothing, of a stopped one starts over", () => {
    const s = session();
    const done = run(following(s.id), [s.event("session_started", STARTED), s.event("session_completed", {})]);
    assert.equal(reduce(done, { type: "follow", sessionId: s.id }), done);
    const failedWatch = run(following(s.id), [
      { type: "watching", ref: 5 },
      { type: "error", ref: 5, code: "UNAVAILABLE", message: "down" },
    ]);
    assert.equal(failedWatch.running, false);
    assert.equal(reduce(failedWatch, { type: "follow", sessionId: s.id }).running, true);
  });

  test("watching records the watch ref; the same ref again changes nothing", () => {
    const s = reduce(following("a"), { type: "watching", ref: 9 });
    assert.equal(s.watchRef, 9);
    assert.equal(reduce(s, { type: "watching", ref: 9 }), s);
  });

  test("a reconnect before the ack loses the session; otherwise the stream is watched again", () => {
    const pending = reduce(initialState(), { type: "start", ref: 1 });
    const lost = reduce(pending, { type: "reconnected" });
    assert.equal(lost.phase, "lost");
    assert.equal(lost.running, false);
    assert.equal(lost.pendingRef, null);
    assert.match(lost.error, /look for it under Sessions/);
    assert.equal(needsWatch(lost), false);
    const s = session();
    const live = acknowledged(s);
    assert.equal(reduce(live, { type: "reconnected" }), live);
    assert.equal(needsWatch(live), true);
    assert.equal(needsWatch(initialState()), false);
  });

  test("a form error is shown and cleared", () => {
    const s = reduce(initialState(), { type: "form_error", message: "Write a prompt first." });
    assert.equal(s.error, "Write a prompt first.");
    assert.equal(reduce(s, { type: "form_error", message: "Write a prompt first." }), s);
    assert.equal(reduce(s, { type: "form_error", message: "" }).error, "");
  });

  test("actions the view does not know change nothing", () => {
    const s = initialState();
    assert.equal(reduce(s, /** @type {any} */ ({ type: "pong" })), s);
    assert.equal(reduce(s, { type: "event" }), s);
  });
});

describe("cancel", () => {
  test("only a named, running session can be cancelled, and only once", () => {
    const pending = reduce(initialState(), { type: "start", ref: 1 });
    assert.equal(canCancel(pending), false);
    assert.equal(reduce(pending, { type: "cancel" }), pending);
    const s = session();
    const live = acknowledged(s);
    assert.equal(canCancel(live), true);
    const cancelling = reduce(live, { type: "cancel" });
    assert.equal(cancelling.phase, "cancelling");
    assert.equal(canCancel(cancelling), false);
    assert.equal(reduce(cancelling, { type: "cancel" }), cancelling);
    // session_started arriving after the click keeps "cancelling"
    assert.equal(reduce(cancelling, s.event("session_started", STARTED)).phase, "cancelling");
  });

  test("a cancelled session ends as cancelled and can no longer be cancelled", () => {
    const s = session();
    const end = run(acknowledged(s), [
      s.event("session_started", STARTED),
      { type: "cancel" },
      s.event("session_failed", {
        reason: "cancelled: stopped by the user", status: "SESSION_STATUS_CANCELLED", total_cost_usd: 0.002,
      }),
    ]);
    assert.equal(end.status, "cancelled");
    assert.equal(end.phase, "ended");
    assert.deepEqual(end.failure,
      { status: "cancelled", reason: "cancelled: stopped by the user", costUsd: 0.002, usage: {}, bestText: "" });
    assert.equal(end.result, null);
    assert.equal(canCancel(end), false);
    assert.equal(reduce(end, { type: "cancel" }), end);
  });
});

describe("events", () => {
  test("events before the ack, or of another session, are ignored", () => {
    const s = session();
    const pending = reduce(initialState(), { type: "start", ref: 1 });
    assert.equal(reduce(pending, s.event("session_started", STARTED)), pending);
    const live = acknowledged(session("other"));
    assert.equal(reduce(live, s.event("session_started", STARTED)), live);
  });

  test("session_started: prompt, threshold, simulated, running", () => {
    const s = session();
    const next = reduce(acknowledged(s), s.event("session_started", STARTED));
    assert.equal(next.prompt, "Name a colour.");
    assert.equal(next.threshold, 9);
    assert.equal(next.simulated, true);
    assert.equal(next.status, "running");
    assert.equal(next.phase, "running");
    assert.equal(next.applied, 1);
    assert.equal(next.lastSequence, 1);
    const defaults = reduce(acknowledged(s), session().event("session_started", { request: { prompt: "p" } }));
    assert.equal(defaults.threshold, 8, "the service default when the request has none");
    assert.equal(defaults.simulated, false);
  });

  test("model_selected: the selection, normalised, and an announcement", () => {
    const s = session();
    const next = run(acknowledged(s), [
      s.event("session_started", STARTED),
      s.event("model_selected", {
        primary_model: "a/one",
        critic_models: ["b/two", "c/three"],
        shadow_models: ["d/four"],
        candidates: [
          { model: "a/one", score: 0.9, estimated_cost_usd: 0.001, reason: "best", rank: 1 },
          { model: "d/four", score: 0.5, rank: 2 },
        ],
        analysis: { primary_domain: "DOMAIN_CREATIVE", confidence: 0.75 },
      }),
    ]);
    assert.deepEqual(next.selection, {
      primaryModel: "a/one",
      criticModels: ["b/two", "c/three"],
      shadowModels: ["d/four"],
      candidates: [
        { rank: 1, model: "a/one", score: 0.9, costUsd: 0.001, reason: "best" },
        { rank: 2, model: "d/four", score: 0.5, costUsd: 0, reason: "" },
      ],
      domain: "DOMAIN_CREATIVE",
      confidence: 0.75,
      fromDefaults: false,
    });
    assert.equal(next.announcement, "Selected a/one");
    assert.deepEqual(next.notices, []);
  });

  test("model_selected from catalogue defaults says so", () => {
    const s = session();
    const next = reduce(acknowledged(s), s.event("model_selected", { primary_model: "a/one", from_defaults: true }));
    assert.deepEqual(next.notices, ["The model selector could not be reached, so a standard set of models was used."]);
    assert.deepEqual(next.selection.criticModels, []);
  });

  test("response_delta: answer chunks accumulate per round while streaming", () => {
    const s = session();
    const next = run(acknowledged(s), [
      s.event("response_delta", { round: 1, model: "a/one", text: "Hello" }),
      s.event("response_delta", { round: 1, text: ", world" }),
    ]);
    assert.equal(next.rounds.length, 1);
    const [r] = next.rounds;
    assert.equal(r.number, 1);
    assert.equal(r.text, "Hello, world");
    assert.equal(r.model, "a/one");
    assert.equal(r.streaming, true);
    assert.equal(r.progress, "streaming");
    assert.equal(r.answered, null);
  });

  test("rounds are kept in round order, and a round without a number is round 1", () => {
    const s = session();
    const next = run(acknowledged(s), [
      s.event("response_delta", { round: 3, text: "c" }),
      s.event("response_delta", { text: "a" }),
      s.event("response_delta", { round: 2, text: "b" }),
    ]);
    assert.deepEqual(next.rounds.map((r) => [r.number, r.text]), [[1, "a"], [2, "b"], [3, "c"]]);
  });

  test("response_completed: the whole text replaces the chunks; streaming ends; usage is kept", () => {
    const s = session();
    const next = run(acknowledged(s), [
      s.event("response_delta", { round: 1, model: "a/one", text: "Hel" }),
      s.event("response_completed", {
        round: 1,
        model: "a/one",
        served_model: "a/one-fast",
        text: "Hello.",
        usage: { total_tokens: "12", cost_usd: 0.0001 },
        latency: "1.5s",
      }),
    ]);
    const [r] = next.rounds;
    assert.equal(r.text, "Hello.");
    assert.equal(r.streaming, false);
    assert.equal(r.progress, "answered");
    assert.equal(r.servedModel, "a/one-fast");
    assert.deepEqual(r.answered, { usage: { total_tokens: "12", cost_usd: 0.0001 }, latency: "1.5s" });
    assert.equal(next.announcement, "Round 1 answer complete");
  });

  test("a refinement is round 2 with its own text", () => {
    const s = session();
    const next = run(acknowledged(s), [
      s.event("response_completed", { round: 1, model: "a/one", text: "first" }),
      s.event("response_delta", { round: 2, model: "a/one", text: "sec" }),
      s.event("response_completed", { round: 2, model: "a/one", text: "second" }),
    ]);
    assert.deepEqual(next.rounds.map((r) => r.text), ["first", "second"]);
    assert.equal(next.announcement, "Round 2 answer complete");
  });

  test("a shadow answer is a notice, never a round", () => {
    const s = session();
    const live = acknowledged(s);
    const shadow = s.event("response_completed", { round: 1, model: "d/four", text: "shadow", shadow: true });
    const next = reduce(live, shadow);
    assert.deepEqual(next.rounds, []);
    assert.deepEqual(next.notices, ["Shadow answer by d/four (checks the selection; not part of the result)."]);
    assert.equal(next.applied, 1);
  });

  test("critique_completed: critiques and scores appended to their round", () => {
    const s = session();
    const next = run(acknowledged(s), [
      s.event("response_completed", { round: 1, model: "a/one", text: "x" }),
      s.event("critique_completed", {
        round: 1,
        critic_model: "b/two",
        score: 7.5,
        rationale: "ok",
        strengths: ["clear"],
        weaknesses: ["short"],
        suggestions: ["expand"],
      }),
      s.event("critique_completed", { round: 1, critic_model: "c/three", score: 9 }),
    ]);
    assert.deepEqual(next.rounds[0].critiques, [
      {
        critic: "b/two", score: 7.5, rationale: "ok",
        strengths: ["clear"], weaknesses: ["short"], suggestions: ["expand"],
      },
      { critic: "c/three", score: 9, rationale: "", strengths: [], weaknesses: [], suggestions: [] },
    ]);
    assert.equal(next.announcement, "c/three scored round 1: 9.0");
  });

  test("a critique of a shadow answer is applied (counted) but not shown", () => {
    const s = session();
    const live = reduce(acknowledged(s), s.event("response_completed", { round: 1, model: "a/one", text: "x" }));
    const shadow = s.event("critique_completed", { round: 1, critic_model: "b/two", score: 3, shadow: true });
    const next = reduce(live, shadow);
    assert.equal(next.applied, 2);
    assert.equal(next.rounds, live.rounds);
    assert.equal(next.announcement, live.announcement);
  });

  test("round_completed: aggregate score, change and decision", () => {
    const s = session();
    const next = run(acknowledged(s), [
      s.event("critique_completed", { round: 2, critic_model: "b/two", score: 7 }),
      s.event("round_completed", {
        round: 2,
        aggregate_score: 7,
        score_change: 1.5,
        decision: "ROUND_DECISION_STOP",
        stop_reason: "STOP_REASON_MAX_ROUNDS",
        reason: "used all 2 rounds",
      }),
    ]);
    const [r] = next.rounds;
    assert.equal(r.progress, "done");
    assert.deepEqual(r.outcome, {
      aggregate: 7, change: 1.5, decision: "ROUND_DECISION_STOP",
      stopReason: "STOP_REASON_MAX_ROUNDS", reason: "used all 2 rounds", bestRound: 0,
    });
  });

  test("provider_fallback and warning become notices, in order", () => {
    const s = session();
    const next = run(acknowledged(s), [
      s.event("provider_fallback", {
        round: 1, failed_model: "a/one", replacement_model: "b/two", failure_kind: "FAILURE_KIND_UPSTREAM_ERROR",
      }),
      s.event("warning", { code: "WARNING_CODE_CRITIC_FAILED", message: "critic c/three failed" }),
    ]);
    assert.deepEqual(next.notices, [
      "Round 1: a/one failed (upstream error); b/two took over.",
      "A critic did not answer; the others' reviews were used.",
    ]);
  });

  test("session_completed with scores: the result, and the end of streaming", () => {
    const s = session();
    const next = run(acknowledged(s), [
      s.event("session_started", STARTED),
      s.event("response_delta", { round: 1, model: "a/one", text: "x" }),
      s.event("session_completed", {
        final_text: "**final**",
        best_round: 2,
        best_model: "a/one",
        final_score: 8.25,
        rounds_used: 2,
        stop_reason: "STOP_REASON_THRESHOLD",
        stop_detail: "good enough",
        total_cost_usd: 0.01,
        usage: { total_tokens: "100" },
        per_model: [{ model: "a/one", calls: 2 }],
        wall_time: "3.2s",
      }),
    ]);
    assert.deepEqual(next.result, {
      finalText: "**final**",
      unscored: false,
      score: 8.25,
      bestRound: 2,
      bestModel: "a/one",
      roundsUsed: 2,
      stopReason: "STOP_REASON_THRESHOLD",
      stopDetail: "good enough",
      costUsd: 0.01,
      usage: { total_tokens: "100" },
      wallTime: "3.2s",
      perModel: [{ model: "a/one", calls: 2 }],
    });
    assert.equal(next.status, "completed");
    assert.equal(next.phase, "ended");
    assert.equal(next.running, false);
    assert.equal(next.finished, true);
    assert.equal(next.rounds[0].streaming, false);
    assert.equal(next.announcement, "Session completed");
  });

  test("an unscored session has no score at all, never 0", () => {
    const s = session();
    const unscored = s.event("session_completed", { final_text: "x", final_score: 0, unscored: true });
    const next = reduce(acknowledged(s), unscored);
    assert.equal(next.result.unscored, true);
    assert.equal(next.result.score, null);
    const scored = reduce(acknowledged(s), s.event("session_completed", { final_text: "x" }));
    assert.equal(scored.result.unscored, false);
    assert.equal(scored.result.score, 0, "a real score of 0 stays 0");
  });

  test("session_failed: the reason, the status and the best version so far", () => {
    const s = session();
    const next = run(acknowledged(s), [
      s.event("response_delta", { round: 1, text: "partial" }),
      s.event("session_failed", {
        reason: "every candidate model failed", status: "SESSION_STATUS_FAILED",
        best_text: "partial", usage: { total_tokens: "5" },
      }),
    ]);
    assert.deepEqual(next.failure, {
      status: "failed", reason: "every candidate model failed",
      costUsd: 0, usage: { total_tokens: "5" }, bestText: "partial",
    });
    assert.equal(next.status, "failed");
    assert.equal(next.announcement, "Session failed");
    assert.equal(next.rounds[0].streaming, false);
    const unspecified = reduce(acknowledged(s), session().event("session_failed", {}));
    assert.equal(unspecified.status, "failed");
  });

  test("an event kind this version does not know is counted and otherwise ignored", () => {
    const s = session();
    const live = acknowledged(s);
    const next = reduce(live, s.event("something_new", { x: 1 }));
    assert.deepEqual(next, { ...live, lastSequence: 1, applied: 1 });
  });
});

describe("sequence", () => {
  test("a duplicate is ignored: the very same state comes back", () => {
    const s = session();
    const first = s.event("session_started", STARTED);
    const once = reduce(acknowledged(s), first);
    assert.equal(reduce(once, first), once);
    assert.equal(reduce(once, { type: "event", event: { ...first.event, sequence: "0" } }), once);
    assert.equal(reduce(once, { type: "event", event: { ...first.event, sequence: undefined } }), once);
    assert.equal(reduce(once, { type: "event", event: { ...first.event, sequence: "not a number" } }), once);
  });

  test("sequences arrive as int64 strings or numbers alike", () => {
    const s = session();
    const numeric = { type: "event", event: { session_id: s.id, sequence: 1, session_started: STARTED } };
    const next = reduce(acknowledged(s), numeric);
    assert.equal(next.lastSequence, 1);
  });

  test("a jump is applied and counted as a gap; the skipped event arriving late is not applied out of order", () => {
    const s = session();
    const e1 = s.event("session_started", STARTED);
    const e2 = s.event("response_delta", { round: 1, text: "a" });
    const e3 = s.event("response_delta", { round: 1, text: "b" });
    const jumped = run(acknowledged(s), [e1, e3]);
    assert.equal(jumped.gaps, 1);
    assert.equal(jumped.lastSequence, 3);
    assert.equal(jumped.rounds[0].text, "b");
    assert.equal(reduce(jumped, e2), jumped);
    const inOrder = run(acknowledged(s), [e1, e2, e3]);
    assert.equal(inOrder.gaps, 0);
    assert.equal(inOrder.applied, 3);
  });
});

describe("errors", () => {
  test("an error answering the pending orchestrate stops and shows it", () => {
    const started = reduce(initialState(), { type: "start", ref: 4 });
    const error = { type: "error", ref: 4, code: "INVALID_ARGUMENT", message: "prompt: must not be empty" };
    const next = reduce(started, error);
    assert.equal(next.error, "INVALID_ARGUMENT: prompt: must not be empty");
    assert.equal(next.running, false);
    assert.equal(next.pendingRef, null);
    assert.equal(next.phase, "idle", "no card stays \"starting…\": the view is back where it was");
    assert.equal(next.visible, false);
    assert.equal(next.before, null);
  });

  test("a refused start brings back the session shown before it, with the error", () => {
    const s = session();
    const old = run(acknowledged(s), [s.event("session_started", STARTED), s.event("session_completed", {})]);
    const refused = run(old, [
      { type: "start", ref: 9 },
      { type: "error", ref: 9, code: "INVALID_ARGUMENT", status: 400, message: "max_rounds: 1 to 10", field: "max_rounds" },
    ]);
    assert.deepEqual(refused, { ...old, error: "INVALID_ARGUMENT: max_rounds: 1 to 10" });
    assert.equal(refused.phase, "ended");
    assert.equal(refused.sessionId, s.id);
  });

  test("NOT_FOUND answering a watch says so", () => {
    const watching = reduce(following("gone"), { type: "watching", ref: 2 });
    const next = reduce(watching, { type: "error", ref: 2, code: "NOT_FOUND", message: "no such session" });
    assert.equal(next.phase, "not_found");
    assert.equal(next.running, false);
  });

  test("an error about the session (not a request) is shown but the stream goes on", () => {
    const s = session();
    const live = acknowledged(s);
    const next = reduce(live, { type: "error", session_id: s.id, code: "UNAVAILABLE", message: "cancel failed" });
    assert.equal(next.error, "UNAVAILABLE: cancel failed");
    assert.equal(next.running, true);
  });

  test("errors for other requests or sessions change nothing, and a missing ref matches no missing ref", () => {
    const s = session();
    const live = acknowledged(s);
    assert.equal(live.watchRef, null);
    assert.equal(reduce(live, { type: "error", ref: 99, code: "X", message: "y" }), live);
    assert.equal(reduce(live, { type: "error", session_id: "other", code: "X", message: "y" }), live);
    assert.equal(reduce(live, { type: "error", ref: null, code: "X", message: "y" }), live);
    assert.equal(reduce(live, { type: "error", code: "X", message: "y" }), live);
  });
});

describe("replay", () => {
  test("a replay starts from nothing for the same session and ends when told", () => {
    const s = session();
    const events = [s.event("session_started", STARTED), s.event("session_completed", { final_text: "x" })];
    const done = run(following(s.id), events);
    const replaying = reduce(done, { type: "replay", sessionId: s.id, status: "completed" });
    assert.equal(replaying.replaying, true);
    assert.equal(replaying.replayOf, "completed", "the real outcome is known while the events say running");
    assert.equal(replaying.applied, 0);
    assert.equal(replaying.result, null);
    assert.equal(replaying.running, false, "a replay is local: nothing to resume after a reconnect");
    assert.equal(needsWatch(replaying), false);
    const end = reduce(run(replaying, events), { type: "replay_done" });
    assert.equal(end.replaying, false);
    assert.deepEqual({ ...end, running: false, phase: "ended", replayOf: "" }, { ...done, running: false });
    assert.equal(reduce(end, { type: "replay_done" }), end);
  });
});

describe("purity", () => {
  test("the reducer never writes to the state or the action it is given", () => {
    const s = session();
    let state = deepFreeze(acknowledged(s));
    const actions = [
      s.event("session_started", STARTED),
      s.event("model_selected", { primary_model: "a/one", critic_models: ["b/two"], from_defaults: true }),
      s.event("response_delta", { round: 1, model: "a/one", text: "x" }),
      s.event("response_completed", { round: 1, model: "a/one", text: "xy" }),
      s.event("critique_completed", { round: 1, critic_model: "b/two", score: 6 }),
      s.event("round_completed", { round: 1, aggregate_score: 6 }),
      { type: "cancel" },
      s.event("warning", { code: "WARNING_CODE_CALL_CANCELLED" }),
      s.event("session_failed", { status: "SESSION_STATUS_CANCELLED" }),
      { type: "replay", sessionId: s.id },
      { type: "replay_done" },
      { type: "error", session_id: s.id, code: "X", message: "y" },
    ].map(deepFreeze);
    for (const action of actions) state = deepFreeze(reduce(state, action));
    assert.equal(state.error, "X: y");
  });

  test("slices that an event does not touch keep their identity", () => {
    const s = session();
    const before = run(acknowledged(s), [
      s.event("model_selected", { primary_model: "a/one" }),
      s.event("response_completed", { round: 1, model: "a/one", text: "x" }),
    ]);
    const after = reduce(before, s.event("response_delta", { round: 2, text: "y" }));
    assert.equal(after.selection, before.selection);
    assert.equal(after.rounds[0], before.rounds[0]);
    assert.equal(after.notices, before.notices);
  });
});

describe("scoreSeries", () => {
  test("one point per round with a critique or an aggregate; a critic's later score wins", () => {
    const s = session();
    const state = run(acknowledged(s), [
      s.event("session_started", STARTED),
      s.event("response_completed", { round: 1, text: "x" }),
      s.event("critique_completed", { round: 1, critic_model: "b", score: 5 }),
      s.event("critique_completed", { round: 1, critic_model: "b", score: 6 }),
      s.event("round_completed", { round: 1, aggregate_score: 6 }),
      s.event("response_completed", { round: 2, text: "y" }),
    ]);
    assert.deepEqual(scoreSeries(state), { threshold: 9, rounds: [{ round: 1, aggregate: 6, critics: [["b", 6]] }] });
    assert.deepEqual(scoreSeries(initialState()), { threshold: null, rounds: [] });
  });
});
