// @ts-check
// A session as documents: Markdown for people (prompt, settings, rounds with scores and critiques, the final
// answer) and JSON for programs (the event log exactly as received, proto JSON). `sessionMarkdown` and
// `sessionJson` are pure (tests/browser_unit runs them); `download` and `copyText` are the browser's part.
import { enumLabel, num, usd } from "./format.js";

/** @typedef {import("./state.js").LiveState} LiveState */

/**
 * @param {string} text
 * @returns {string}
 */
function quote(text) {
  return text.split("\n").map((line) => (line ? `> ${line}` : ">")).join("\n");
}

/**
 * The settings worth repeating in a report, from the request as accepted.
 * @param {LiveState} state
 * @returns {string[]}
 */
function settings(state) {
  const r = state.request || {};
  /** @type {string[]} */
  const lines = [];
  /**
   * @param {string} label
   * @param {unknown} value
   */
  const add = (label, value) => {
    if (value !== undefined && value !== null && value !== "") lines.push(`- ${label}: ${value}`);
  };
  add("Max rounds", r.max_rounds);
  add("Quality threshold", r.quality_threshold);
  add("Critics", r.critic_count);
  add("Budget", r.budget_usd != null ? usd(r.budget_usd) : undefined);
  add("Thread", r.thread_id);
  if (r.preferences && typeof r.preferences === "object") add("Preferences", JSON.stringify(r.preferences));
  const s = state.selection;
  if (s) {
    add("Primary model", s.primaryModel);
    add("Domain", enumLabel(s.domain, "DOMAIN_"));
    add("Critic models", s.criticModels.join(", ") || "none");
  }
  if (state.simulated) add("Models", "simulated");
  return lines;
}

/**
 * The session as a Markdown document.
 * @param {LiveState} state
 * @param {string} exportedAt ISO timestamp
 * @returns {string}
 */
export function sessionMarkdown(state, exportedAt) {
  const out = [`# OrchestrateX session ${state.sessionId || ""}`.trim(), ""];
  out.push(`Status: ${state.status || "unknown"} · exported ${exportedAt}`, "");
  out.push("## Prompt", "", quote(state.prompt), "");
  const set = settings(state);
  if (set.length) out.push("## Settings", "", ...set, "");
  for (const round of state.rounds) {
    const title = round.number === 1 ? "answer" : `refinement of round ${round.refines || round.number - 1}`;
    const score = round.outcome ? ` — score ${num(round.outcome.aggregate, 2)}` : "";
    out.push(`## Round ${round.number} · ${title} by ${round.servedModel || round.model || "?"}${score}`, "");
    out.push(round.text || "_(no text)_", "");
    if (round.critiques.length) {
      out.push(`### Critiques of round ${round.number}`, "");
      for (const c of round.critiques) {
        out.push(`- **${c.critic}** — ${num(c.score, 1)} / 10${c.rationale ? `: ${c.rationale}` : ""}`);
        for (const s of c.strengths) out.push(`  - Strength: ${s}`);
        for (const s of c.weaknesses) out.push(`  - Weakness: ${s}`);
        for (const s of c.suggestions) out.push(`  - Suggestion: ${s}`);
      }
      out.push("");
    }
    if (round.outcome && round.outcome.reason) out.push(`Decision: ${round.outcome.reason}`, "");
  }
  if (state.notices.length) out.push("## Notices", "", ...state.notices.map((n) => `- ${n}`), "");
  const done = state.result;
  if (done) {
    out.push("## Final answer", "", done.finalText, "");
    out.push(`- Score: ${done.score == null ? "unscored" : `${num(done.score, 2)} / 10`}`);
    out.push(`- Best version: round ${done.bestRound} by ${done.bestModel}`);
    out.push(`- Stop reason: ${enumLabel(done.stopReason, "STOP_REASON_")}${done.stopDetail ? ` — ${done.stopDetail}` : ""}`);
    out.push(`- Cost: ${usd(done.costUsd)}`, "");
  }
  const failed = state.failure;
  if (failed) {
    out.push(`## Ended: ${failed.status}`, "", failed.reason, "");
    if (failed.bestText) out.push("### Best answer so far", "", failed.bestText, "");
    out.push(`- Cost: ${usd(failed.costUsd)}`, "");
  }
  return out.join("\n");
}

/**
 * The session's event log as a JSON document: the events exactly as the gateway sent them (proto JSON).
 * @param {string} sessionId
 * @param {readonly unknown[]} events
 * @param {string} exportedAt ISO timestamp
 * @returns {string}
 */
export function sessionJson(sessionId, events, exportedAt) {
  return JSON.stringify({ session_id: sessionId, exported_at: exportedAt, events }, null, 2) + "\n";
}

/**
 * A file name for an export: the session id, made safe for file systems.
 * @param {string} sessionId
 * @param {"md" | "json"} extension
 */
export function exportName(sessionId, extension) {
  return `orchestratex-session-${sessionId.replace(/[^A-Za-z0-9_-]/g, "_")}.${extension}`;
}

/**
 * Offer `text` as a file download (a Blob behind a temporary object URL; nothing leaves the browser).
 * @param {string} name
 * @param {string} text
 * @param {string} type
 */
export function download(name, text, type) {
  const url = URL.createObjectURL(new Blob([text], { type }));
  const link = document.createElement("a");
  link.href = url;
  link.download = name;
  link.hidden = true;
  document.body.appendChild(link);
  link.click();
  link.remove();
  // Revoked on the next task: the click has started the download by then.
  window.setTimeout(() => URL.revokeObjectURL(url), 0);
}

/**
 * Put `text` on the clipboard. Resolves to false when the browser offers no clipboard here (an insecure
 * origin, or permission refused): the caller says so instead of pretending.
 * @param {string} text
 * @returns {Promise<boolean>}
 */
export async function copyText(text) {
  if (!navigator.clipboard || !window.isSecureContext) return false;
  try {
    await navigator.clipboard.writeText(text);
    return true;
  } catch {
    return false;
  }
}
