// The reducer over real sessions (fixtures/*.json, recorded from the simulator), and replay idempotence as a
// property: however a transcript is delivered (resumes that overlap, whole replays, duplicates), the state is
// the state of its events applied once each, in order.
import assert from "node:assert/strict";
import { describe, test } from "node:test";

import { WARNINGS, reduce } from "../../gateway/static/state.js";
import { TRANSCRIPTS, following, messages, random, run, transcript } from "./helpers.mjs";

/** The states after 0, 1, ... n events of `events`, each applied once, in order. */
function prefixStates(events) {
  const states = [following(events[0].session_id)];
  for (const m of messages(events)) states.push(reduce(states[states.length - 1], m));
  return states;
}

/** Event kind of a recorded event. */
const kind = (e) => Object.keys(e).find((k) => !["session_id", "sequence", "time"].includes(k));

describe("recorded sessions", () => {
  for (const name of TRANSCRIPTS) {
    test(`${name}: every event applied once, in order, and the session ends`, () => {
      const events = transcript(name);
      const end = prefixStates(events).at(-1);
      assert.equal(end.applied, events.length);
      assert.equal(end.lastSequence, events.length);
      assert.equal(end.gaps, 0);
      assert.equal(end.finished, true);
      assert.equal(end.running, false);
      assert.equal(end.phase, "ended");
      assert.ok(end.rounds.every((r) => !r.streaming), "nothing streams after the end");
      assert.ok(Boolean(end.result) !== Boolean(end.failure), "either a result or a failure");
    });
  }

  test("multi_round_shadow: three scored rounds; the shadow answer and its critiques stay out of them", () => {
    const events = transcript("multi_round_shadow");
    const end = prefixStates(events).at(-1);
    assert.equal(end.status, "completed");
    assert.deepEqual(end.rounds.map((r) => r.number), [1, 2, 3]);
    const critiques = events.filter((e) => kind(e) === "critique_completed");
    const shown = critiques.filter((e) => !e.critique_completed.shadow);
    assert.ok(shown.length < critiques.length, "the fixture has shadow critiques");
    assert.equal(end.rounds.reduce((n, r) => n + r.critiques.length, 0), shown.length);
    assert.ok(end.rounds.every((r) => r.outcome && r.progress === "done"));
    assert.ok(end.notices.some((n) => n.startsWith("Shadow answer by ")));
    assert.ok(end.notices.includes(WARNINGS.WARNING_CODE_SHADOW_FAILED), end.notices.join("\n"));
    assert.equal(end.result.unscored, false);
    const last = events.at(-1).session_completed;
    assert.equal(end.result.score, last.final_score);
    assert.equal(end.result.finalText, last.final_text);
    assert.equal(end.rounds.find((r) => r.number === last.best_round).text, last.final_text);
    assert.equal(end.threshold, 10);
  });

  test("unscored: no critic, no score, and no point on the chart", () => {
    const end = prefixStates(transcript("unscored")).at(-1);
    assert.equal(end.result.unscored, true);
    assert.equal(end.result.score, null);
    assert.ok(end.rounds.every((r) => r.critiques.length === 0 && r.outcome === null));
    assert.deepEqual(end.selection.criticModels, []);
  });

  test("fallback: the failed author and its replacement are told", () => {
    const end = prefixStates(transcript("fallback")).at(-1);
    assert.equal(end.status, "completed");
    const told = /^Round 1: openai\/gpt-oss-120b failed \(.+\); moonshotai\/kimi-k2 took over\.$/;
    assert.ok(end.notices.some((n) => told.test(n)), end.notices.join("\n"));
  });

  test("cancelled: ends as cancelled mid-session, with what round 1 produced", () => {
    const end = prefixStates(transcript("cancelled")).at(-1);
    assert.equal(end.status, "cancelled");
    assert.equal(end.failure.status, "cancelled");
    assert.match(end.failure.reason, /stopped by the user/);
    assert.ok(end.rounds[0].outcome, "round 1 finished before the cancel");
    assert.ok(end.notices.some((n) => /^A call to \S+ was stopped by the cancellation; its cost is estimated\.$/.test(n)),
      end.notices.join("\n"));
    assert.ok(end.notices.every((n) => !/usage estimated|tokens received/.test(n)), "no internal wording");
  });

  test("failed: every author failed; no round, the reason, status failed", () => {
    const end = prefixStates(transcript("failed")).at(-1);
    assert.equal(end.status, "failed");
    assert.match(end.failure.reason, /every candidate model failed/);
    assert.deepEqual(end.rounds, []);
    const fallbacks = transcript("failed").filter((e) => kind(e) === "provider_fallback");
    assert.equal(end.notices.filter((n) => n.includes("took over")).length, fallbacks.length - 1);
    const last = end.notices.findLast((n) => n.startsWith("Round 1:"));
    assert.match(last, /failed \(upstream error\); no model was left to take over\.$/);
  });

  test("while streaming, the round shows exactly the chunks received so far", () => {
    const events = transcript("multi_round_shadow");
    const states = prefixStates(events);
    let text = "";
    events.forEach((e, i) => {
      if (kind(e) === "response_delta" && e.response_delta.round === 1) {
        text += e.response_delta.text || "";
        const round = states[i + 1].rounds.find((r) => r.number === 1);
        assert.equal(round.text, text);
        assert.equal(round.streaming, true);
      }
    });
    assert.ok(text.length > 0);
  });
});

describe("replay idempotence (property)", () => {
  for (const name of TRANSCRIPTS) {
    test(`${name}: replaying any prefix again changes nothing`, () => {
      const events = transcript(name);
      const states = prefixStates(events);
      const all = messages(events);
      for (let k = 0; k <= events.length; k++) {
        const twice = run(states[k], all.slice(0, k));
        assert.equal(twice, states[k], `prefix of ${k} replayed`);
        assert.deepEqual(run(twice, all.slice(k)), states.at(-1), `prefix of ${k} replayed, then the rest`);
      }
    });

    test(`${name}: random deliveries with resumes and duplicates end in the same state`, () => {
      const events = transcript(name);
      const states = prefixStates(events);
      const all = messages(events);
      for (let seed = 1; seed <= 200; seed++) {
        const rand = random(seed);
        let state = states[0];
        let sent = 0; // events the server has sent so far (its cursor)
        let reconnects = 1 + Math.floor(rand() * 6); // then the connection holds
        let steps = 0;
        while (state.lastSequence < events.length) {
          assert.ok(++steps < 10_000, `seed ${seed}: no progress`);
          const roll = rand();
          if (roll < 0.1 && reconnects > 0) {
            // A reconnect: the server resumes from an earlier point (frames in flight were lost or were not),
            // or, one time in four, from the start (a reload replays everything).
            reconnects -= 1;
            sent = rand() < 0.25 ? 0 : Math.floor(rand() * (sent + 1));
            state = reduce(state, { type: "reconnected" });
          } else if (roll < 0.25 && sent > 0) {
            // A duplicated frame.
            state = reduce(state, all[Math.floor(rand() * sent)]);
          } else if (sent < all.length) {
            state = reduce(state, all[sent]);
            sent += 1;
          }
          // Whatever was delivered, the state is that of the events up to the last one applied.
          assert.deepEqual(state, states[state.lastSequence], `seed ${seed}, after ${steps} steps`);
        }
        assert.deepEqual(state, states.at(-1), `seed ${seed}`);
        assert.equal(state.gaps, 0, `seed ${seed}`);
      }
    });
  }

  test("a reconnect from the page's lastSequence resumes without gap or duplicate", () => {
    const all = messages(transcript("fallback"));
    const states = prefixStates(transcript("fallback"));
    for (let cut = 0; cut <= all.length; cut++) {
      const before = run(states[0], all.slice(0, cut));
      const resumed = run(reduce(before, { type: "reconnected" }), all.slice(before.lastSequence));
      assert.deepEqual(resumed, states.at(-1));
    }
  });
});
