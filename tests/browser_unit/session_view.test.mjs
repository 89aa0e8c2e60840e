// The session view's pure parts: progress steps and labels, warnings in plain words, how an ending reads, which
// draft a refinement refined, the word diff, the "addressed" estimate, and the exported documents.
import assert from "node:assert/strict";
import { describe, test } from "node:test";

import { assessPoints, headings, keyTerms, stem } from "../../gateway/static/addressed.js";
import { diffStats, fold, insertedText, wordDiff } from "../../gateway/static/diff.js";
import { exportName, sessionJson, sessionMarkdown } from "../../gateway/static/export.js";
import {
  STUCK_AFTER_MS, UNKNOWN_WARNING, WARNINGS, elapsedText, failureTitle, initialState, progressLabel, progressStep,
  reduce, warningText,
} from "../../gateway/static/state.js";
import { following, messages, run, session, transcript } from "./helpers.mjs";

/** Every state a view goes through while following a recorded session. */
function states(name) {
  const events = transcript(name);
  const out = [following(events[0].session_id)];
  for (const m of messages(events)) out.push(reduce(out.at(-1), m));
  return out;
}

describe("progress", () => {
  test("a recorded session walks through selecting, waiting, writing, reviewing and refining, then stops", () => {
    const texts = [];
    for (const s of states("multi_round_shadow")) {
      const step = progressStep(s);
      if (step && texts.at(-1) !== step.text) texts.push(step.text);
    }
    assert.equal(texts[0], "Loading the session");
    assert.ok(texts.includes("Selecting a model"), texts.join("\n"));
    assert.ok(texts.includes("Waiting for the first token from qwen/qwen3-coder"), texts.join("\n"));
    assert.ok(texts.some((t) => /^Writing \(≈\d+ tokens\)$/.test(t)), texts.join("\n"));
    assert.ok(texts.includes("Critics reviewing (0 of 2 done)"), texts.join("\n"));
    assert.ok(texts.includes("Critics reviewing (1 of 2 done)"), texts.join("\n"));
    assert.ok(texts.includes("Refining (round 2): waiting for the first token from qwen/qwen3-coder"), texts.join("\n"));
    assert.ok(texts.some((t) => /^Refining \(round 3, ≈\d+ tokens\)$/.test(t)), texts.join("\n"));
    assert.equal(progressStep(states("multi_round_shadow").at(-1)), null, "an ended session has no progress");
  });

  test("the step key changes when a step begins, not when its count moves", () => {
    const keys = states("multi_round_shadow").map((s) => progressStep(s)).filter(Boolean);
    const reviewing = keys.filter((k) => k.key === "reviewing-1").map((k) => k.text);
    assert.deepEqual([...new Set(reviewing)],
      ["Critics reviewing (0 of 2 done)", "Critics reviewing (1 of 2 done)", "Critics reviewing (2 of 2 done)"]);
  });

  test("a failed critic counts as done; no critics means finishing after the answer", () => {
    const s = session();
    const base = run(initialState(), [
      { type: "start", ref: 1 },
      { type: "ack", action: "orchestrate", ref: 1, session_id: s.id },
      s.event("session_started", { request: { prompt: "p" } }),
      s.event("model_selected", { primary_model: "a/one", critic_models: ["b/two", "c/three"] }),
      s.event("response_completed", { round: 1, model: "a/one", text: "x" }),
    ]);
    const failed = reduce(base, s.event("warning", { code: "WARNING_CODE_CRITIC_FAILED", round: 1, model: "b/two" }));
    assert.equal(progressStep(failed).text, "Critics reviewing (1 of 2 done)");
    const t = session("s-2");
    const alone = run(initialState(), [
      { type: "start", ref: 1 },
      { type: "ack", action: "orchestrate", ref: 1, session_id: t.id },
      t.event("session_started", { request: { prompt: "p" } }),
      t.event("model_selected", { primary_model: "a/one", critic_models: [] }),
      t.event("response_completed", { round: 1, model: "a/one", text: "x" }),
    ]);
    assert.equal(progressStep(alone).text, "Finishing");
  });

  test("starting, cancelling and replaying", () => {
    const started = reduce(initialState(), { type: "start", ref: 1 });
    assert.deepEqual(progressStep(started), { key: "starting", text: "Starting the session" });
    const s = session();
    const live = run(started, [
      { type: "ack", action: "orchestrate", ref: 1, session_id: s.id },
      s.event("session_started", {}),
    ]);
    assert.equal(progressStep(live).text, "Selecting a model");
    assert.equal(progressStep(reduce(live, { type: "cancel" })).text, "Cancelling");
    assert.equal(progressStep(reduce(live, { type: "replay", sessionId: s.id, status: "completed" })), null);
  });

  test("the label ticks; after STUCK_AFTER_MS of silence it says so, and screen readers hear only changes", () => {
    const step = { key: "reviewing-1", text: "Critics reviewing (1 of 2 done)" };
    const a = progressLabel(step, 3_000, 1_000);
    const b = progressLabel(step, 4_000, 2_000);
    assert.equal(a.label, "Critics reviewing (1 of 2 done) · 3 s");
    assert.equal(b.label, "Critics reviewing (1 of 2 done) · 4 s");
    assert.equal(a.stuck, "");
    assert.equal(a.announce, b.announce, "the seconds are not announced");
    const stuck = progressLabel(step, 30_000, STUCK_AFTER_MS + 5_000);
    assert.equal(stuck.stuck, "No news from the orchestrator for 25 s — still waiting");
    assert.equal(stuck.announce, progressLabel(step, 31_000, STUCK_AFTER_MS + 6_000).announce);
    assert.notEqual(stuck.announce, a.announce);
    assert.equal(progressLabel(step, 30_000, STUCK_AFTER_MS - 1).stuck, "", "just under the limit");
  });

  test("elapsed time reads in seconds, then minutes", () => {
    assert.equal(elapsedText(0), "0 s");
    assert.equal(elapsedText(59_999), "59 s");
    assert.equal(elapsedText(65_000), "1 min 05 s");
    assert.equal(elapsedText(-5), "0 s");
  });
});

describe("plain words", () => {
  test("every warning code the orchestrator emits has a sentence; none repeats the internal message", () => {
    const codes = [
      "CRITIC_FAILED", "ALL_CRITICS_FAILED", "SELECTOR_UNAVAILABLE", "ANALYTICS_UNAVAILABLE", "CONTEXT_TRIMMED",
      "REFINEMENT_FAILED", "SHADOW_FAILED", "CALL_CANCELLED",
    ];
    for (const code of codes) {
      const internal = "call to x/y cancelled; usage estimated from 0 tokens received";
      const sentence = warningText({ code: `WARNING_CODE_${code}`, message: internal, round: 2, model: "x/y" });
      assert.ok(WARNINGS[`WARNING_CODE_${code}`], code);
      assert.doesNotMatch(sentence, /usage estimated|tokens received|\{|\}/, sentence);
      assert.match(sentence, /^[A-Z].*\.$/, sentence);
    }
  });

  test("round and model are filled in when told, and read naturally when not", () => {
    assert.equal(warningText({ code: "WARNING_CODE_CRITIC_FAILED", round: 2, model: "b/two" }),
      "A critic (b/two) did not answer in round 2; the others' reviews were used.");
    assert.equal(warningText({ code: "WARNING_CODE_CRITIC_FAILED" }), "A critic did not answer; the others' reviews were used.");
    assert.equal(warningText({ code: "WARNING_CODE_CALL_CANCELLED" }),
      "A call to a model was stopped by the cancellation; its cost is estimated.");
    assert.equal(warningText({ code: "WARNING_CODE_ALL_CRITICS_FAILED" }),
      "No critic could review a round, so the best answer so far was kept.");
  });

  test("an unknown or missing code gets the generic sentence, never its message", () => {
    assert.equal(warningText({ code: "WARNING_CODE_NEW_THING", message: "Traceback: KeyError" }), UNKNOWN_WARNING);
    assert.equal(warningText({}), UNKNOWN_WARNING);
  });

  test("a cancelled session with a best answer reads as cancelled, not as ended without an answer", () => {
    const base = { reason: "", costUsd: 0, usage: {} };
    assert.equal(failureTitle({ ...base, status: "cancelled", bestText: "x" }), "Cancelled — showing the best answer so far");
    assert.equal(failureTitle({ ...base, status: "cancelled", bestText: "" }), "Cancelled before an answer was written");
    assert.equal(failureTitle({ ...base, status: "failed", bestText: "x" }), "Failed — showing the best answer so far");
    assert.equal(failureTitle({ ...base, status: "failed", bestText: "" }), "Session failed without an answer");
  });

  test("the recorded cancelled session reads as cancelled", () => {
    const end = states("cancelled").at(-1);
    assert.match(failureTitle(end.failure), /^Cancelled/);
  });
});

describe("which draft a refinement refined", () => {
  test("the best round when the previous round ended, else the previous round", () => {
    const rounds = states("multi_round_shadow").at(-1).rounds;
    assert.deepEqual(rounds.map((r) => [r.number, r.refines]), [[1, null], [2, 1], [3, 2]]);
    const s = session();
    const next = run(following(s.id), [
      s.event("session_started", {}),
      s.event("response_completed", { round: 1, text: "a" }),
      s.event("round_completed", { round: 1, best_round: 1 }),
      s.event("response_completed", { round: 2, text: "b" }),
      s.event("round_completed", { round: 2, best_round: 1 }),
      s.event("response_completed", { round: 3, text: "c" }),
    ]);
    assert.equal(next.rounds[2].refines, 1, "round 2 scored lower: round 3 refines round 1");
    const untold = run(following(s.id), [s.event("response_completed", { round: 2, text: "b" })]);
    assert.equal(untold.rounds[0].refines, 1);
  });
});

describe("word diff", () => {
  test("insertions and deletions, and both texts can be rebuilt from the segments", () => {
    const before = "The sea is blue.\n\nWaves come in.";
    const after = "The sea is deep and blue.\n\nWaves roll in.\n\n### Edge cases\n\nStorms.";
    const segments = wordDiff(before, after);
    const rebuilt = (kinds) => segments.filter((s) => kinds.includes(s.kind)).map((s) => s.text).join("");
    assert.equal(rebuilt(["same", "ins"]), after);
    assert.equal(rebuilt(["same", "del"]), before);
    assert.match(insertedText(segments), /deep/);
    assert.match(insertedText(segments), /### Edge cases/);
    assert.ok(segments.some((s) => s.kind === "del" && /come/.test(s.text)));
    const stats = diffStats(segments);
    assert.ok(stats.inserted >= 6 && stats.removed >= 1, JSON.stringify(stats));
  });

  test("long unchanged runs fold to a count, keeping two lines of context around each change", () => {
    const lines = Array.from({ length: 12 }, (_, i) => `line ${i}`);
    const between = fold(`rest\n${lines.join("\n")}\nstart of`, false, false);
    assert.equal(between.head, "rest\nline 0\nline 1\n");
    assert.equal(between.tail, "\nline 10\nline 11\nstart of");
    assert.equal(between.skipped, 8);
    const opening = fold(`${lines.join("\n")}\nstart of`, true, false);
    assert.equal(opening.head, "");
    assert.equal(opening.skipped, 10);
    const closing = fold(`rest\n${lines.join("\n")}`, false, true);
    assert.equal(closing.tail, "");
    assert.equal(closing.skipped, 10);
    assert.deepEqual(fold("a\nb\nc", false, false), { head: "a\nb\nc", skipped: 0, tail: "" }, "short runs stay whole");
  });

  test("identical texts have no change", () => {
    assert.deepEqual(wordDiff("same text", "same text"), [{ kind: "same", text: "same text" }]);
    assert.deepEqual(diffStats(wordDiff("", "")), { inserted: 0, removed: 0 });
  });
});

describe("addressed points (an estimate)", () => {
  test("stemming and key terms drop fillers and match inflections", () => {
    assert.equal(stem("cases"), stem("case"));
    assert.equal(stem("handling"), stem("handled"));
    assert.equal(stem("examples"), stem("example"));
    assert.deepEqual(keyTerms("Add a short section on the edge cases, please."), [stem("edge"), stem("case")]);
  });

  test("headings: ATX, bold-only lines and bold lead-ins", () => {
    assert.deepEqual(
      headings("# Title\ntext\n### Edge cases ###\n**Summary:**\nnot **a** heading\n**How it works:** it loops.\n"
        + "__Complexity__: O(n).\n**bold** in a sentence"),
      ["Title", "Edge cases", "Summary", "How it works", "Complexity"]);
  });

  test("a point is addressed by a new heading it names, or by inserted text that covers its terms", () => {
    const critiques = [{
      critic: "b/two",
      weaknesses: ["Ignores empty and very large inputs.", "The tone is flat."],
      suggestions: ["Add a short 'Edge cases' section.", "Include a worked example with numbers."],
    }];
    const inserted = "### Edge cases\n\nEmpty input returns nothing; very large inputs are streamed.";
    const verdicts = assessPoints(critiques, inserted, ["Edge cases"]);
    const by = Object.fromEntries(verdicts.map((v) => [v.text, v]));
    assert.equal(by["Add a short 'Edge cases' section."].how, "heading");
    assert.equal(by["Ignores empty and very large inputs."].how, "terms");
    assert.equal(by["The tone is flat."].addressed, false);
    assert.equal(by["Include a worked example with numbers."].addressed, false);
    assert.deepEqual(verdicts.map((v) => v.kind), ["weakness", "weakness", "suggestion", "suggestion"]);
  });

  test("the simulator's refinements: a bold lead-in section counts for the points that name it", () => {
    const critiques = [{
      critic: "a/one",
      weaknesses: ["The code is given without saying how it works."],
      suggestions: ["Add a short 'How it works' paragraph walking through the loop.",
        "Add a one-line 'Complexity' note (time and extra space)."],
    }];
    const inserted = "**How it works:** the function walks the input once and returns a new list.";
    const verdicts = assessPoints(critiques, inserted, headings(inserted));
    assert.deepEqual(verdicts.map((v) => [v.addressed, v.heading]),
      [[true, "How it works"], [true, "How it works"], [false, ""]]);
  });

  test("a heading that is not named does not count; a point made only of fillers is never addressed", () => {
    const critiques = [{ critic: "c", weaknesses: ["Could be clearer."], suggestions: ["Discuss the history of tides."] }];
    const verdicts = assessPoints(critiques, "### Conclusion\n\nIn the end it works.", ["Conclusion"]);
    assert.ok(verdicts.every((v) => !v.addressed), JSON.stringify(verdicts));
  });

  test("coverage just under the threshold is not enough", () => {
    const critiques = [{ critic: "c", weaknesses: ["alpha beta gamma delta epsilon"], suggestions: [] }];
    assert.equal(assessPoints(critiques, "alpha beta", []).at(0).addressed, false); // 2 of 5
    assert.equal(assessPoints(critiques, "alpha beta gamma", []).at(0).addressed, true); // 3 of 5
  });
});

describe("export", () => {
  test("Markdown has the prompt, settings, each round with its critiques, and the final answer", () => {
    const end = states("multi_round_shadow").at(-1);
    const md = sessionMarkdown(end, "2026-12-05T18:00:00.000Z");
    assert.match(md, new RegExp(`^# OrchestrateX session ${end.sessionId}\n`));
    assert.ok(md.includes(`> ${end.prompt.split("\n")[0]}`));
    assert.match(md, /## Settings\n\n- Max rounds: \d+/);
    assert.match(md, /## Round 1 · answer by qwen\/qwen3-coder — score \d+\.\d\d/);
    assert.match(md, /## Round 3 · refinement of round 2 by /);
    assert.match(md, /### Critiques of round 1\n\n- \*\*[^*]+\*\* — \d+\.\d \/ 10/);
    assert.ok(md.includes(`## Final answer\n\n${end.result.finalText}\n`));
    assert.match(md, /- Best version: round 2 by /);
  });

  test("Markdown of a cancelled session says how it ended", () => {
    const end = states("cancelled").at(-1);
    assert.match(sessionMarkdown(end, "t"), /## Ended: cancelled\n/);
  });

  test("JSON is the event log as received, with the session id", () => {
    const events = transcript("unscored");
    const doc = JSON.parse(sessionJson("abc", events, "t"));
    assert.equal(doc.session_id, "abc");
    assert.deepEqual(doc.events, events);
  });

  test("file names carry the session id, made safe", () => {
    assert.equal(exportName("3f2a-9c", "md"), "orchestratex-session-3f2a-9c.md");
    assert.equal(exportName("../x y", "json"), "orchestratex-session-___x_y.json");
  });
});
