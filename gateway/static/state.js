// @ts-check
// The live view's state as a pure reducer: `reduce(state, action)` returns the next state and never changes the
// one it is given (an action that changes nothing returns the very same object). No DOM, no globals, no I/O:
// live.js feeds it the WebSocket's messages and the user's actions and renders what it returns, and
// tests/browser_unit runs it under `node --test`.
//
// Events are applied strictly in sequence: one whose sequence is not above the last applied one (a replay
// overlapping what was already shown, after a resume) is ignored, and a jump past the next sequence is applied
// but counted in `gaps`. Events carry proto field names (snake_case, int64 as strings): this module is the only
// place that reads them.
import { enumLabel, num, plural } from "./format.js";

// ---- the wire: server messages (proto JSON) ------------------------------------------------------------------

/** @typedef {import("./format.js").Usage} Usage */

/**
 * @typedef {object} OrchestrationEvent
 * @property {string} [session_id]
 * @property {string | number} [sequence]
 * @property {string} [time]
 * @property {{request?: OrchestrateRequest, simulated?: boolean}} [session_started]
 * @property {ModelSelectedEvent} [model_selected]
 * @property {{round?: number, model?: string, text?: string}} [response_delta]
 * @property {ResponseCompletedEvent} [response_completed]
 * @property {CritiqueCompletedEvent} [critique_completed]
 * @property {RoundCompletedEvent} [round_completed]
 * @property {ProviderFallbackEvent} [provider_fallback]
 * @property {SessionWarningEvent} [warning]
 * @property {SessionCompletedEvent} [session_completed]
 * @property {SessionFailedEvent} [session_failed]
 */

/**
 * The request as the orchestrator accepted it (defaults applied). Only the fields the view reads are typed; the
 * whole object is kept as received (`LiveState.request`) and handed to the form as it is.
 * @typedef {{prompt?: string, quality_threshold?: number, max_rounds?: number, critic_count?: number,
 *   thread_id?: string, [key: string]: unknown}} OrchestrateRequest
 */

/**
 * @typedef {object} SessionWarningEvent
 * @property {string} [code]      WarningCode enum value
 * @property {string} [message]   the orchestrator's own wording: internal, never shown as it is
 * @property {number} [round]
 * @property {string} [model]
 * @property {string} [purpose]   CallPurpose enum value
 */

/**
 * @typedef {{rank?: number, model?: string, score?: number, estimated_cost_usd?: number, reason?: string}} WireCandidate
 */

/**
 * @typedef {object} ModelSelectedEvent
 * @property {string} [primary_model]
 * @property {string[]} [critic_models]
 * @property {string[]} [shadow_models]
 * @property {WireCandidate[]} [candidates]
 * @property {{primary_domain?: string, confidence?: number}} [analysis]
 * @property {boolean} [from_defaults]
 */

/**
 * @typedef {object} ProviderFallbackEvent
 * @property {number} [round]
 * @property {string} [failed_model]
 * @property {string} [replacement_model]  unset when no model was left
 * @property {string} [failure_kind]
 */

/**
 * @typedef {object} ResponseCompletedEvent
 * @property {number} [round]
 * @property {string} [model]
 * @property {string} [served_model]
 * @property {string} [text]
 * @property {Usage} [usage]
 * @property {string} [latency]
 * @property {boolean} [shadow]
 */

/**
 * @typedef {object} CritiqueCompletedEvent
 * @property {number} [round]
 * @property {string} [critic_model]
 * @property {number} [score]
 * @property {string} [rationale]
 * @property {string[]} [strengths]
 * @property {string[]} [weaknesses]
 * @property {string[]} [suggestions]
 * @property {boolean} [shadow]
 */

/**
 * @typedef {object} RoundCompletedEvent
 * @property {number} [round]
 * @property {number} [aggregate_score]
 * @property {number} [score_change]
 * @property {string} [decision]
 * @property {string} [stop_reason]
 * @property {string} [reason]
 * @property {number} [best_round]
 */

/**
 * @typedef {{model?: string, calls?: number, usage?: Usage}} ModelUsage
 */

/**
 * @typedef {object} SessionCompletedEvent
 * @property {string} [final_text]
 * @property {number} [best_round]
 * @property {string} [best_model]
 * @property {number} [final_score]
 * @property {number} [rounds_used]
 * @property {string} [stop_reason]
 * @property {string} [stop_detail]
 * @property {number} [total_cost_usd]
 * @property {Usage} [usage]
 * @property {ModelUsage[]} [per_model]
 * @property {string} [wall_time]
 * @property {boolean} [unscored]
 */

/**
 * @typedef {object} SessionFailedEvent
 * @property {string} [reason]
 * @property {string} [status]
 * @property {number} [total_cost_usd]
 * @property {Usage} [usage]
 * @property {string} [best_text]
 */

/**
 * Messages from the gateway's WebSocket that concern the live view (snake_case keys, as everything the gateway
 * writes).
 * @typedef {{type: "ack", action?: string, ref?: number | null, session_id?: string}
 *   | {type: "event", event?: OrchestrationEvent}
 *   | {type: "error", ref?: number | null, session_id?: string, code?: string, status?: number, message?: string,
 *     field?: string}} ServerMessage
 */

/**
 * What the user (or the page) did. `ref` is the ref the channel gave the message it sent, or null when it could
 * not send (not connected).
 * @typedef {{type: "start", ref: number | null}
 *   | {type: "follow", sessionId: string}
 *   | {type: "watching", ref: number | null}
 *   | {type: "reconnected"}
 *   | {type: "cancel"}
 *   | {type: "replay", sessionId: string, status: string}
 *   | {type: "replay_done"}
 *   | {type: "form_error", message: string}} UserAction
 */

/** @typedef {ServerMessage | UserAction} Action */

// ---- the state ---------------------------------------------------------------------------------------------

/**
 * Where the view stands with its session. "idle": nothing asked yet (or a replay before its first event);
 * "starting": `orchestrate` sent, no id yet; "loading": following a session from its first event; "running" and
 * "cancelling": events arriving; "ended": a terminal event applied; "lost": the connection dropped before the
 * session was named; "not_found": the gateway does not know the session.
 * @typedef {"idle" | "starting" | "loading" | "running" | "cancelling" | "ended" | "lost" | "not_found"} Phase
 */

/**
 * @typedef {object} Candidate
 * @property {number | null} rank
 * @property {string} model
 * @property {number} score
 * @property {number} costUsd
 * @property {string} reason
 */

/**
 * @typedef {object} Selection
 * @property {string} primaryModel
 * @property {readonly string[]} criticModels
 * @property {readonly string[]} shadowModels
 * @property {readonly Candidate[]} candidates
 * @property {string} domain       enum value, e.g. "DOMAIN_CODING" ("" when unknown)
 * @property {number} confidence   0-1
 * @property {boolean} fromDefaults
 */

/**
 * @typedef {object} Critique
 * @property {string} critic
 * @property {number} score
 * @property {string} rationale
 * @property {readonly string[]} strengths
 * @property {readonly string[]} weaknesses
 * @property {readonly string[]} suggestions
 */

/**
 * @typedef {object} RoundOutcome
 * @property {number} aggregate
 * @property {number} change
 * @property {string} decision     enum value ("" when unset)
 * @property {string} stopReason   enum value ("" when unset)
 * @property {string} reason
 * @property {number} bestRound    best round so far, as the orchestrator counts it (0 when not told)
 */

/**
 * @typedef {object} Round
 * @property {number} number       from 1
 * @property {"" | "streaming" | "answered" | "done"} progress
 * @property {boolean} streaming   text is still arriving
 * @property {string} model        author as requested
 * @property {string} servedModel  the model that served the answer ("" until answered)
 * @property {string} text         the answer's Markdown: streamed pieces, then the complete text
 * @property {{usage: Usage, latency: string} | null} answered  set when the answer is complete
 * @property {readonly Critique[]} critiques
 * @property {number} criticFailures  critics of this round that failed (a warning each)
 * @property {RoundOutcome | null} outcome
 * @property {number | null} refines  for a refinement, the round whose draft it refined: the best round so far
 *   when the previous round ended (the orchestrator refines its best-scored draft), else the previous round
 */

/**
 * @typedef {object} Result
 * @property {string} finalText
 * @property {boolean} unscored    no critic produced a score: `score` is null, never 0
 * @property {number | null} score
 * @property {number} bestRound
 * @property {string} bestModel
 * @property {number} roundsUsed
 * @property {string} stopReason   enum value
 * @property {string} stopDetail
 * @property {number} costUsd
 * @property {Usage} usage
 * @property {string} wallTime     proto Duration ("" when unset)
 * @property {readonly ModelUsage[]} perModel
 */

/**
 * @typedef {object} Failure
 * @property {string} status       "failed", "cancelled"...
 * @property {string} reason
 * @property {number} costUsd
 * @property {Usage} usage
 * @property {string} bestText
 */

/**
 * @typedef {object} LiveState
 * @property {string | null} sessionId    the session shown
 * @property {number | null} pendingRef   ref of the `orchestrate` message awaiting its ack
 * @property {number | null} watchRef     ref of the last `watch` message
 * @property {boolean} visible            the session card is shown
 * @property {boolean} running            following a live stream: a reconnect resumes it, Start waits
 * @property {boolean} finished           a terminal event was applied
 * @property {boolean} replaying          a local replay is rebuilding the view
 * @property {string} replayOf            during a replay, the status the session really ended with
 * @property {Phase} phase
 * @property {string} status             lifecycle told by the events: "", "running", "completed", "failed"...
 * @property {number} lastSequence       sequence of the last applied event
 * @property {number} applied            events applied
 * @property {number} gaps               events applied whose sequence skipped one or more
 * @property {boolean} simulated
 * @property {string} prompt
 * @property {OrchestrateRequest | null} request  the request as accepted (from session_started)
 * @property {number | null} threshold    quality threshold, once the session started
 * @property {Selection | null} selection
 * @property {readonly Round[]} rounds    in round order
 * @property {readonly string[]} notices  degradations and shadow answers, in order
 * @property {Result | null} result
 * @property {Failure | null} failure
 * @property {string} announcement       the latest message for screen readers
 * @property {string} error              the message under the form ("" when none)
 * @property {LiveState | null} before    while starting: the view as it was, restored if the start is refused
 */

const NOT_CONNECTED = "Not connected to the gateway yet; try again in a moment.";
const LOST = "The connection dropped while the session was starting; look for it under Sessions.";
const DEFAULT_THRESHOLD = 8;

/** @returns {LiveState} */
export function initialState() {
  return {
    sessionId: null,
    pendingRef: null,
    watchRef: null,
    visible: false,
    running: false,
    finished: false,
    replaying: false,
    replayOf: "",
    phase: "idle",
    status: "",
    lastSequence: 0,
    applied: 0,
    gaps: 0,
    simulated: false,
    prompt: "",
    request: null,
    threshold: null,
    selection: null,
    rounds: [],
    notices: [],
    result: null,
    failure: null,
    announcement: "",
    error: "",
    before: null,
  };
}

/**
 * The next state after `action`; `state` itself when the action changes nothing.
 * @param {LiveState} state
 * @param {Action} action
 * @returns {LiveState}
 */
export function reduce(state, action) {
  switch (action.type) {
    case "start":
      return action.ref == null
        ? { ...initialState(), error: NOT_CONNECTED }
        : {
          ...initialState(), pendingRef: action.ref, visible: true, running: true, phase: "starting",
          before: { ...state, before: null, error: "" },
        };
    case "follow":
      if (action.sessionId === state.sessionId && (state.running || state.finished)) return state;
      return { ...initialState(), sessionId: action.sessionId, visible: true, running: true, phase: "loading" };
    case "watching":
      return action.ref === state.watchRef ? state : { ...state, watchRef: action.ref };
    case "reconnected":
      // The session may exist, but without its id it cannot be followed from here.
      if (state.pendingRef == null || state.sessionId) return state;
      return { ...state, pendingRef: null, running: false, phase: "lost", error: LOST, before: null };
    case "cancel":
      return canCancel(state) ? { ...state, phase: "cancelling" } : state;
    case "replay":
      return { ...initialState(), sessionId: action.sessionId, visible: true, replaying: true, replayOf: action.status };
    case "replay_done":
      return state.replaying ? { ...state, replaying: false } : state;
    case "form_error":
      return action.message === state.error ? state : { ...state, error: action.message };
    case "ack":
      if (action.action !== "orchestrate" || action.ref == null || action.ref !== state.pendingRef) return state;
      return { ...state, pendingRef: null, sessionId: action.session_id || null, before: null };
    case "error":
      return applyError(state, action);
    case "event":
      return action.event ? applyEvent(state, action.event) : state;
    default:
      return state;
  }
}

/**
 * True when a (re)opened connection should send `watch` to pick the stream up after `lastSequence`.
 * @param {LiveState} state
 */
export function needsWatch(state) {
  return Boolean(state.sessionId) && state.running;
}

/**
 * True when Cancel means something: a named session is being followed and no cancel was asked yet.
 * @param {LiveState} state
 */
export function canCancel(state) {
  return Boolean(state.sessionId) && state.running && !state.finished && state.phase !== "cancelling";
}

/** @typedef {{round: number, aggregate: number | null, critics: [string, number][]}} ScorePoint */

/**
 * The score chart's data: each round that has a critique or an aggregate, each critic's latest score in it.
 * @param {LiveState} state
 * @returns {{threshold: number | null, rounds: ScorePoint[]}}
 */
export function scoreSeries(state) {
  const rounds = [];
  for (const r of state.rounds) {
    if (!r.critiques.length && !r.outcome) continue;
    /** @type {Map<string, number>} */
    const critics = new Map();
    for (const c of r.critiques) critics.set(c.critic, c.score);
    rounds.push({ round: r.number, aggregate: r.outcome ? r.outcome.aggregate : null, critics: [...critics] });
  }
  return { threshold: state.threshold, rounds };
}

// ---- progress ----------------------------------------------------------------------------------------------

/**
 * The step a running session is at. `key` changes exactly when a new step begins (the view restarts its elapsed
 * time then); `text` may change within a step ("Critics reviewing (1 of 2 done)" -> "(2 of 2 done)").
 * @typedef {{key: string, text: string}} Step
 */

/** No event for this long while running: the view says it is waiting on a silent orchestrator. */
export const STUCK_AFTER_MS = 20_000;

/**
 * What the session shown is doing now, or null when it is not running (ended, idle, replaying).
 * @param {LiveState} state
 * @returns {Step | null}
 */
export function progressStep(state) {
  if (!state.running || state.replaying) return null;
  if (state.phase === "starting") return { key: "starting", text: "Starting the session" };
  if (state.phase === "loading") return { key: "loading", text: "Loading the session" };
  if (state.phase === "cancelling") return { key: "cancelling", text: "Cancelling" };
  if (state.phase !== "running") return null;
  const selection = state.selection;
  if (!selection) return { key: "selecting", text: "Selecting a model" };
  const last = state.rounds.at(-1);
  if (!last) return waiting(1, selection.primaryModel);
  const n = last.number;
  if (last.progress === "" || (last.progress === "streaming" && !last.text)) {
    return waiting(n, last.model || selection.primaryModel);
  }
  if (last.progress === "streaming") {
    const written = `≈${plural(estimateTokens(last.text), "token")}`;
    return { key: `writing-${n}`, text: n === 1 ? `Writing (${written})` : `Refining (round ${n}, ${written})` };
  }
  const critics = selection.criticModels.length;
  if (last.progress === "answered") {
    if (!critics) return { key: "finishing", text: "Finishing" };
    const done = Math.min(critics, last.critiques.length + last.criticFailures);
    return { key: `reviewing-${n}`, text: `Critics reviewing (${done} of ${critics} done)` };
  }
  if (last.outcome && last.outcome.decision === "ROUND_DECISION_STOP") return { key: "finishing", text: "Finishing" };
  return waiting(n + 1, last.servedModel || last.model || selection.primaryModel);
}

/**
 * @param {number} round
 * @param {string} model
 * @returns {Step}
 */
function waiting(round, model) {
  const from = `waiting for the first token from ${model || "the model"}`;
  return round === 1
    ? { key: "waiting-1", text: `Waiting for the first token from ${model || "the model"}` }
    : { key: `waiting-${round}`, text: `Refining (round ${round}): ${from}` };
}

/**
 * Roughly how many tokens `text` is (about four characters each), for a progress label only.
 * @param {string} text
 */
export function estimateTokens(text) {
  return text ? Math.max(1, Math.round(text.length / 4)) : 0;
}

/**
 * "12 s", "1 min 05 s".
 * @param {number} ms
 */
export function elapsedText(ms) {
  const total = Math.max(0, Math.floor(ms / 1000));
  if (total < 60) return `${total} s`;
  return `${Math.floor(total / 60)} min ${String(total % 60).padStart(2, "0")} s`;
}

/**
 * The progress line for `step`: the visible label (ticks every second), the stuck warning ("" unless no event
 * came for `STUCK_AFTER_MS`), and what screen readers are told, which changes only when the step or the stuck
 * state does, never with the ticking seconds.
 * @param {Step} step
 * @param {number} elapsedMs   since the step began
 * @param {number} silentMs    since the last event arrived
 * @returns {{label: string, stuck: string, announce: string}}
 */
export function progressLabel(step, elapsedMs, silentMs) {
  const label = `${step.text} · ${elapsedText(elapsedMs)}`;
  if (silentMs < STUCK_AFTER_MS) return { label, stuck: "", announce: step.text };
  return {
    label,
    stuck: `No news from the orchestrator for ${elapsedText(silentMs)} — still waiting`,
    announce: `${step.text}. No news from the orchestrator for over ${STUCK_AFTER_MS / 1000} s — still waiting.`,
  };
}

// ---- plain words --------------------------------------------------------------------------------------------

/**
 * What each warning means for the reader. The orchestrator's own message is internal (model ids, token counts,
 * exception text): it goes to the exported event log, never to the page.
 * @type {Record<string, string>}
 */
export const WARNINGS = {
  WARNING_CODE_CRITIC_FAILED: "A critic ({model}) did not answer in round {round}; the others' reviews were used.",
  WARNING_CODE_ALL_CRITICS_FAILED: "No critic could review round {round}, so the best answer so far was kept.",
  WARNING_CODE_SELECTOR_UNAVAILABLE:
    "The model selector could not be reached, so a standard set of models was used.",
  WARNING_CODE_ANALYTICS_UNAVAILABLE:
    "Analytics could not be reached; this session's figures will be recorded when it is back.",
  WARNING_CODE_CONTEXT_TRIMMED: "The conversation was too long for the model; its oldest turns were left out.",
  WARNING_CODE_REFINEMENT_FAILED: "Refining the answer failed in round {round}, so the best version so far was kept.",
  WARNING_CODE_SHADOW_FAILED:
    "A background check of the model choice failed; it does not affect this answer.",
  WARNING_CODE_CALL_CANCELLED: "A call to {model} was stopped by the cancellation; its cost is estimated.",
};

/** A warning this version does not know. */
export const UNKNOWN_WARNING = "Something went wrong along the way, but the session carried on.";

/**
 * A warning in plain words, from its code (never from its internal message).
 * @param {SessionWarningEvent} warning
 * @returns {string}
 */
export function warningText(warning) {
  const template = WARNINGS[warning.code || ""] || UNKNOWN_WARNING;
  return template
    .replace(" ({model})", warning.model ? ` (${warning.model})` : "")
    .replace("{model}", warning.model || "a model")
    .replace(" in round {round}", warning.round ? ` in round ${warning.round}` : "")
    .replace("round {round}", warning.round ? `round ${warning.round}` : "a round");
}

/**
 * The heading of a session that ended without a completed answer: a cancelled session reads as cancelled, and
 * says whether the best version so far is shown under it.
 * @param {Failure} failure
 */
export function failureTitle(failure) {
  const cancelled = failure.status === "cancelled";
  if (failure.bestText) {
    return cancelled ? "Cancelled — showing the best answer so far" : "Failed — showing the best answer so far";
  }
  return cancelled ? "Cancelled before an answer was written" : "Session failed without an answer";
}

// ---- server errors -----------------------------------------------------------------------------------------

/**
 * @param {LiveState} state
 * @param {{ref?: number | null, session_id?: string, code?: string, message?: string}} error
 * @returns {LiveState}
 */
function applyError(state, error) {
  const answers = error.ref != null && (error.ref === state.pendingRef || error.ref === state.watchRef);
  const about = Boolean(error.session_id) && error.session_id === state.sessionId;
  if (!answers && !about) return state;
  const message = `${error.code}: ${error.message}`;
  if (answers && error.ref === state.pendingRef && state.before) {
    // The start was refused: nothing was created, so the view goes back to what it showed before.
    return { ...state.before, error: message };
  }
  /** @type {LiveState} */
  const next = { ...state, pendingRef: null, error: message, before: null };
  if (answers) next.running = false; // the request failed: nothing more will come for it
  if (error.code === "NOT_FOUND") next.phase = "not_found";
  return next;
}

// ---- events ------------------------------------------------------------------------------------------------

/**
 * @param {LiveState} state
 * @param {OrchestrationEvent} event
 * @returns {LiveState}
 */
function applyEvent(state, event) {
  if (!state.sessionId || event.session_id !== state.sessionId) return state;
  const sequence = Number(event.sequence || 0);
  if (!(sequence > state.lastSequence)) return state; // already applied (or no sequence at all)
  const counted = {
    ...state,
    lastSequence: sequence,
    applied: state.applied + 1,
    gaps: state.gaps + (sequence === state.lastSequence + 1 ? 0 : 1),
  };
  if (event.session_started) return sessionStarted(counted, event.session_started);
  if (event.model_selected) return modelSelected(counted, event.model_selected);
  if (event.response_delta) return responseDelta(counted, event.response_delta);
  if (event.response_completed) return responseCompleted(counted, event.response_completed);
  if (event.critique_completed) return critiqueCompleted(counted, event.critique_completed);
  if (event.round_completed) return roundCompleted(counted, event.round_completed);
  if (event.provider_fallback) {
    const f = event.provider_fallback;
    const next = f.replacement_model ? `${f.replacement_model} took over` : "no model was left to take over";
    return notice(counted, `Round ${f.round || 1}: ${f.failed_model} failed `
      + `(${enumLabel(f.failure_kind, "FAILURE_KIND_")}); ${next}.`);
  }
  if (event.warning) return warned(counted, event.warning);
  if (event.session_completed) return sessionCompleted(counted, event.session_completed);
  if (event.session_failed) return sessionFailed(counted, event.session_failed);
  return counted; // a kind this version does not show: counted, so the sequence stays whole
}

/**
 * @param {LiveState} state
 * @param {NonNullable<OrchestrationEvent["session_started"]>} started
 * @returns {LiveState}
 */
function sessionStarted(state, started) {
  const request = started.request || {};
  return {
    ...state,
    simulated: Boolean(started.simulated),
    prompt: request.prompt || "",
    request,
    threshold: request.quality_threshold != null ? Number(request.quality_threshold) : DEFAULT_THRESHOLD,
    status: "running",
    phase: state.phase === "cancelling" ? "cancelling" : "running",
  };
}

/**
 * @param {LiveState} state
 * @param {ModelSelectedEvent} selected
 * @returns {LiveState}
 */
function modelSelected(state, selected) {
  const analysis = selected.analysis || {};
  const primaryModel = selected.primary_model || "";
  /** @type {Selection} */
  const selection = {
    primaryModel,
    criticModels: selected.critic_models || [],
    shadowModels: selected.shadow_models || [],
    candidates: (selected.candidates || []).map((c) => ({
      rank: c.rank || null,
      model: c.model || "",
      score: Number(c.score || 0),
      costUsd: Number(c.estimated_cost_usd || 0),
      reason: c.reason || "",
    })),
    domain: analysis.primary_domain || "",
    confidence: Number(analysis.confidence || 0),
    fromDefaults: Boolean(selected.from_defaults),
  };
  const next = { ...state, selection, announcement: `Selected ${primaryModel}` };
  return selection.fromDefaults ? notice(next, WARNINGS.WARNING_CODE_SELECTOR_UNAVAILABLE) : next;
}

/**
 * @param {LiveState} state
 * @param {NonNullable<OrchestrationEvent["response_delta"]>} delta
 * @returns {LiveState}
 */
function responseDelta(state, delta) {
  return updateRound(state, delta.round, (r) => ({
    ...r,
    progress: "streaming",
    streaming: true,
    model: r.model || delta.model || "",
    text: r.text + (delta.text || ""),
  }));
}

/**
 * @param {LiveState} state
 * @param {ResponseCompletedEvent} done
 * @returns {LiveState}
 */
function responseCompleted(state, done) {
  if (done.shadow) {
    return notice(state, `Shadow answer by ${done.model} (checks the selection; not part of the result).`);
  }
  const next = updateRound(state, done.round, (r) => ({
    ...r,
    progress: "answered",
    streaming: false,
    model: done.model || "",
    servedModel: done.served_model || "",
    text: done.text || "", // the complete text replaces the streamed pieces
    answered: { usage: done.usage || {}, latency: done.latency || "" },
  }));
  return { ...next, announcement: `Round ${done.round || 1} answer complete` };
}

/**
 * @param {LiveState} state
 * @param {CritiqueCompletedEvent} critique
 * @returns {LiveState}
 */
function critiqueCompleted(state, critique) {
  if (critique.shadow) return state; // scores a shadow answer: for analytics, not shown
  const score = Number(critique.score || 0);
  /** @type {Critique} */
  const item = {
    critic: critique.critic_model || "",
    score,
    rationale: critique.rationale || "",
    strengths: critique.strengths || [],
    weaknesses: critique.weaknesses || [],
    suggestions: critique.suggestions || [],
  };
  const next = updateRound(state, critique.round, (r) => ({ ...r, critiques: [...r.critiques, item] }));
  return { ...next, announcement: `${item.critic} scored round ${critique.round || 1}: ${num(score, 1)}` };
}

/**
 * @param {LiveState} state
 * @param {RoundCompletedEvent} done
 * @returns {LiveState}
 */
function roundCompleted(state, done) {
  /** @type {RoundOutcome} */
  const outcome = {
    aggregate: Number(done.aggregate_score || 0),
    change: Number(done.score_change || 0),
    decision: done.decision || "",
    stopReason: done.stop_reason || "",
    reason: done.reason || "",
    bestRound: Number(done.best_round || 0),
  };
  return updateRound(state, done.round, (r) => ({ ...r, progress: "done", outcome }));
}

/**
 * @param {LiveState} state
 * @param {SessionCompletedEvent} done
 * @returns {LiveState}
 */
function sessionCompleted(state, done) {
  const unscored = Boolean(done.unscored);
  /** @type {Result} */
  const result = {
    finalText: done.final_text || "",
    unscored,
    score: unscored ? null : Number(done.final_score || 0),
    bestRound: Number(done.best_round || 1),
    bestModel: done.best_model || "",
    roundsUsed: Number(done.rounds_used || 0),
    stopReason: done.stop_reason || "",
    stopDetail: done.stop_detail || "",
    costUsd: Number(done.total_cost_usd || 0),
    usage: done.usage || {},
    wallTime: done.wall_time || "",
    perModel: done.per_model || [],
  };
  return ended({ ...state, result, status: "completed", announcement: "Session completed" });
}

/**
 * @param {LiveState} state
 * @param {SessionFailedEvent} failed
 * @returns {LiveState}
 */
function sessionFailed(state, failed) {
  const status = enumLabel(failed.status, "SESSION_STATUS_") || "failed";
  /** @type {Failure} */
  const failure = {
    status,
    reason: failed.reason || "",
    costUsd: Number(failed.total_cost_usd || 0),
    usage: failed.usage || {},
    bestText: failed.best_text || "",
  };
  return ended({ ...state, failure, status, announcement: `Session ${status}` });
}

// ---- helpers -----------------------------------------------------------------------------------------------

/**
 * A warning: a plain sentence among the notices; a failed critic also counts as done for the progress label.
 * @param {LiveState} state
 * @param {SessionWarningEvent} warning
 * @returns {LiveState}
 */
function warned(state, warning) {
  const next = notice(state, warningText(warning));
  if (warning.code !== "WARNING_CODE_CRITIC_FAILED" || !warning.round) return next;
  return updateRound(next, warning.round, (r) => ({ ...r, criticFailures: r.criticFailures + 1 }));
}

/**
 * A terminal event: nothing streams any more and nothing more will come.
 * @param {LiveState} state
 * @returns {LiveState}
 */
function ended(state) {
  const rounds = state.rounds.some((r) => r.streaming)
    ? state.rounds.map((r) => (r.streaming ? { ...r, streaming: false } : r))
    : state.rounds;
  return { ...state, rounds, phase: "ended", running: false, finished: true };
}

/**
 * @param {LiveState} state
 * @param {string} message
 * @returns {LiveState}
 */
function notice(state, message) {
  // The same degradation told twice (the selector's warning and its defaults) is listed once.
  if (state.notices.includes(message)) return state;
  return { ...state, notices: [...state.notices, message] };
}

/**
 * @param {number} number
 * @returns {Round}
 */
function emptyRound(number) {
  return {
    number,
    progress: "",
    streaming: false,
    model: "",
    servedModel: "",
    text: "",
    answered: null,
    critiques: [],
    criticFailures: 0,
    outcome: null,
    refines: null,
  };
}

/**
 * Replace round `number` (created when new, rounds kept in order) with `change(round)`.
 * @param {LiveState} state
 * @param {number | undefined} number
 * @param {(round: Round) => Round} change
 * @returns {LiveState}
 */
function updateRound(state, number, change) {
  const key = Number(number || 1);
  const index = state.rounds.findIndex((r) => r.number === key);
  if (index >= 0) return { ...state, rounds: state.rounds.map((r, i) => (i === index ? change(r) : r)) };
  const fresh = emptyRound(key);
  if (key > 1) {
    const previous = state.rounds.find((r) => r.number === key - 1);
    const best = previous && previous.outcome ? previous.outcome.bestRound : 0;
    fresh.refines = best > 0 && best < key ? best : key - 1;
  }
  const rounds = [...state.rounds, change(fresh)].sort((a, b) => a.number - b.number);
  return { ...state, rounds };
}
