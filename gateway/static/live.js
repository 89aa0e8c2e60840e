// @ts-check
// The live view of one session: starts or follows it over the WebSocket and renders its state. What the view
// knows lives in state.js (`reduce`, pure and unit-tested); this module sends messages, dispatches what
// happens, and renders the state it gets back, touching only the parts that changed. The counters on #session
// (data-last-sequence, data-applied, data-gaps) make the in-sequence application of events observable.
// Beside the events it shows what the session is doing now (a progress line with the step's elapsed time, and a
// warning when the orchestrator has gone quiet), what each refinement changed (diff.js) and which critique
// points it took up (addressed.js), and offers the answer and the session as Markdown and JSON (export.js).
import { assessPoints, headings } from "./addressed.js";
import { api } from "./api.js";
import { ScoreChart } from "./charts.js";
import { diffStats, insertedText, renderDiff, wordDiff } from "./diff.js";
import { copyText, download, exportName, sessionJson, sessionMarkdown } from "./export.js";
import {
  byId, enumLabel, make, modelLabel, num, plural, renderMarkdown, seconds, setPill, text, tokens, usd,
} from "./render.js";
import {
  canCancel, failureTitle, initialState, needsWatch, progressLabel, progressStep, reduce, scoreSeries,
} from "./state.js";

/** @typedef {import("./state.js").LiveState} LiveState */
/** @typedef {import("./state.js").Action} Action */
/** @typedef {import("./state.js").Round} Round */
/** @typedef {import("./state.js").OrchestrationEvent} OrchestrationEvent */
/** @typedef {import("./ws.js").Channel} Channel */

/**
 * The DOM of one round, and the round state it shows.
 * @typedef {object} RoundView
 * @property {HTMLElement} root
 * @property {HTMLElement} answer
 * @property {HTMLElement} critiques
 * @property {HTMLElement} summary
 * @property {HTMLElement} model
 * @property {HTMLElement} meta
 * @property {HTMLElement} score
 * @property {HTMLElement} finalRef    "this version became the final answer" (the answer itself collapsed)
 * @property {HTMLButtonElement} showAnswer
 * @property {HTMLDetailsElement} changes
 * @property {Round | null} shown
 * @property {boolean} queued  a Markdown render is waiting for the next frame
 * @property {boolean} isFinal  the final answer below shows this round's text
 * @property {unknown[]} changesOf  what the "What changed" block was computed from (compared by identity)
 */

/**
 * What the form learns about a session when it is shown (see `onSessionLoaded`).
 * @typedef {{sessionId: string, threadId: string, request: object, status: string}} SessionInfo
 */

/**
 * A refused start, as the gateway told it (`field` names the request field at fault, when one is).
 * @typedef {{code: string, status: number, message: string, field?: string}} StartError
 */

/**
 * @typedef {object} LiveOptions
 * @property {(id: string) => void} [onSessionChanged]  another session is shown (its id)
 * @property {(error: StartError) => boolean | void} [onStartError]  the server refused a start; the view went back
 * @property {(info: SessionInfo) => void} [onSessionLoaded]  once per shown session (live, reloaded or replayed),
 *   with its request as accepted and its status; called when the session ends or, for one still running, once
 *   its recorded events have been caught up with (no terminal event within LOADED_AFTER_MS of its start event)
 */

/** How long after a session's start event the view waits for its end before reporting it as running. */
const LOADED_AFTER_MS = 300;
/** Prompts longer than this (lines, or characters) are shown collapsed. */
const PROMPT_LINES = 6;
const PROMPT_CHARS = 600;

/**
 * @param {Element} root
 * @param {string} selector
 * @returns {HTMLElement}
 */
function part(root, selector) {
  const el = root.querySelector(selector);
  if (!(el instanceof HTMLElement)) throw new Error(`${selector} is missing from a template`);
  return el;
}

/**
 * A fresh copy of a <template>'s first element.
 * @param {HTMLTemplateElement} template
 * @returns {HTMLElement}
 */
function instantiate(template) {
  const first = template.content.firstElementChild;
  if (!first) throw new Error(`#${template.id} is empty`);
  return /** @type {HTMLElement} */ (first.cloneNode(true));
}

/** @type {Record<string, [string, string]>} */
const PILLS = {
  idle: ["", "muted"],
  starting: ["starting…", "warn"],
  loading: ["loading…", "muted"],
  running: ["running", "warn"],
  cancelling: ["cancelling…", "warn"],
  lost: ["unknown", "bad"],
  not_found: ["not found", "bad"],
};

export class LiveSession {
  /**
   * @param {Channel} channel
   * @param {LiveOptions} [options]
   */
  constructor(channel, { onSessionChanged, onStartError, onSessionLoaded } = {}) {
    this.channel = channel;
    this.onSessionChanged = onSessionChanged || (() => {});
    this.onStartError = onStartError || (() => {});
    this.onSessionLoaded = onSessionLoaded || (() => {});
    this.els = {
      session: byId("session"),
      sessionId: byId("session-id"),
      simulated: byId("simulated"),
      status: byId("session-status"),
      prompt: byId("session-prompt"),
      promptToggle: byId("prompt-toggle", HTMLButtonElement),
      progress: byId("progress"),
      progressLabel: byId("progress-label"),
      progressStuck: byId("progress-stuck"),
      progressLive: byId("progress-live"),
      exportMd: byId("export-md", HTMLButtonElement),
      exportJson: byId("export-json", HTMLButtonElement),
      copy: byId("copy-answer", HTMLButtonElement),
      copyNote: byId("copy-note"),
      failureTitle: byId("failure-title"),
      selection: byId("selection"),
      ranking: byId("ranking"),
      primary: byId("primary-model"),
      domain: byId("domain"),
      critics: byId("critic-models"),
      shadow: byId("shadow-models"),
      shadowLabel: byId("shadow-label"),
      candidates: byId("candidates"),
      chartBlock: byId("score-block"),
      rounds: byId("rounds"),
      notices: byId("notices"),
      final: byId("final"),
      finalText: byId("final-text"),
      finalStats: byId("final-stats"),
      perModel: byId("per-model"),
      failure: byId("failure"),
      failureReason: byId("failure-reason"),
      failureBest: byId("failure-best"),
      cancel: byId("cancel", HTMLButtonElement),
      replay: byId("replay", HTMLButtonElement),
      start: byId("start", HTMLButtonElement),
      error: byId("form-error"),
      announcer: byId("announcer"),
      rating: byId("rating"),
      ratingForm: byId("rating-form", HTMLFormElement),
      ratingNote: byId("rating-note"),
      ratingComment: byId("rating-comment", HTMLInputElement),
      roundTemplate: byId("round-template", HTMLTemplateElement),
      critiqueTemplate: byId("critique-template", HTMLTemplateElement),
    };
    this.chart = new ScoreChart(byId("score-chart", HTMLCanvasElement));
    this.chartKey = "";
    /** @type {Map<number, RoundView>} */
    this.roundViews = new Map();
    /** The state on screen. */
    this.state = initialState();
    /** @type {OrchestrationEvent[]} events applied since the view was last reset, for Replay */
    this.log = [];
    /** @type {OrchestrationEvent[]} the log of the session shown before a start, restored if the start fails */
    this.previousLog = [];
    this.replayToken = 0;
    // Progress: when the current step began, when the last event arrived (performance.now()), the ticking timer.
    this.stepKey = "";
    this.stepSince = 0;
    this.lastEventAt = 0;
    /** @type {number | undefined} */
    this.ticker = undefined;
    this.lastAnnounced = "";
    // onSessionLoaded: the session already reported, and a pending report.
    this.reported = "";
    /** @type {number | undefined} */
    this.loadedTimer = undefined;

    channel.on("open", () => this.resume());
    channel.on("message", (msg) => this.onMessage(msg));
    this.els.cancel.addEventListener("click", () => this.cancel());
    this.els.replay.addEventListener("click", () => this.replay());
    this.els.ratingForm.addEventListener("submit", (e) => {
      e.preventDefault();
      this.rate();
    });
    this.els.promptToggle.addEventListener("click", () => this.togglePrompt());
    this.els.copy.addEventListener("click", () => this.copyAnswer());
    this.els.exportMd.addEventListener("click", () => this.exportMarkdown());
    this.els.exportJson.addEventListener("click", () => this.exportJson());
  }

  /** True while a live stream is followed (app.js keeps Start disabled meanwhile). */
  get running() {
    return this.state.running;
  }

  // ---- starting, following, resuming ---------------------------------------------------------------

  /**
   * Start a new session from an OrchestrateRequest (proto JSON).
   * @param {object} request
   */
  start(request) {
    const log = this.log;
    this.forget();
    // Detached: the session survives a reload or a dropped socket; Cancel stops it explicitly.
    const ref = this.channel.send({ type: "orchestrate", request: { ...request, detached: true } });
    this.previousLog = ref == null ? [] : log;
    this.dispatch({ type: "start", ref });
  }

  /**
   * Show a past or running session: replay its events from the start, then follow live ones.
   * @param {string} sessionId
   */
  follow(sessionId) {
    const next = reduce(this.state, { type: "follow", sessionId });
    if (next === this.state) return; // already shown
    this.forget();
    this.commit(next);
    this.watch();
  }

  /** After a (re)connect: pick the stream up where it stopped. */
  resume() {
    this.dispatch({ type: "reconnected" });
    if (needsWatch(this.state)) this.watch();
  }

  watch() {
    const { sessionId, lastSequence } = this.state;
    const ref = this.channel.send({ type: "watch", session_id: sessionId, after_sequence: lastSequence });
    this.dispatch({ type: "watching", ref });
  }

  cancel() {
    const next = reduce(this.state, { type: "cancel" });
    if (next === this.state) return;
    this.channel.send({ type: "cancel", session_id: this.state.sessionId });
    this.commit(next);
  }

  /**
   * @param {string} message shown under the form ("" hides it)
   */
  showError(message) {
    this.dispatch({ type: "form_error", message });
  }

  /**
   * A message from the gateway.
   * @param {any} msg
   */
  onMessage(msg) {
    if (msg.type !== "ack" && msg.type !== "event" && msg.type !== "error") return;
    const before = this.state.applied;
    const refused = msg.type === "error" && msg.ref != null && msg.ref === this.state.pendingRef;
    if (refused) this.log = this.previousLog;
    this.dispatch(msg);
    if (this.state.applied > before) {
      this.log.push(msg.event);
      this.lastEventAt = performance.now();
      this.tick();
    }
    if (refused) {
      /** @type {StartError} */
      const error = { code: String(msg.code || "UNKNOWN"), status: Number(msg.status || 0), message: String(msg.message || "") };
      if (msg.field) error.field = String(msg.field);
      // Shown next to the field it names: the form-level line would only say it twice.
      if (this.onStartError(error) === true) this.dispatch({ type: "form_error", message: "" });
    }
    this.previousLog = this.state.pendingRef == null ? [] : this.previousLog;
  }

  /** Play a finished session's events again, at twice their recorded pace (pauses capped at 1 s). */
  async replay() {
    const events = this.log.slice();
    const id = this.state.sessionId;
    const status = this.state.status;
    if (!events.length || !id) return;
    this.forget();
    const token = this.replayToken;
    this.dispatch({ type: "replay", sessionId: id, status });
    /** @type {number | null} */
    let previous = null;
    for (const event of events) {
      const at = Date.parse(event.time || "");
      const pause = previous == null || Number.isNaN(at) ? 0 : Math.min(1000, Math.max(0, at - previous) / 2);
      if (!Number.isNaN(at)) previous = at;
      if (pause > 0) await new Promise((resolve) => window.setTimeout(resolve, pause));
      if (token !== this.replayToken) return; // another session was opened meanwhile
      this.onMessage({ type: "event", event });
    }
    this.dispatch({ type: "replay_done" });
  }

  /** Drop what belongs to the session shown so far: its event log, a running replay, the rating form. */
  forget() {
    this.replayToken += 1;
    this.log = [];
    this.reported = "";
    window.clearTimeout(this.loadedTimer);
    this.lastEventAt = performance.now();
    text(this.els.copyNote, "");
    text(this.els.ratingNote, "");
    this.els.ratingForm.reset();
    delete this.els.rating.dataset.rated;
  }

  // ---- rating ------------------------------------------------------------------------------------------

  async rate() {
    const choice = this.els.ratingForm.querySelector("input[name=rating]:checked");
    if (!(choice instanceof HTMLInputElement)) {
      text(this.els.ratingNote, "Pick 1 to 5 stars first.");
      return;
    }
    /** @type {{rating: number, comment?: string}} */
    const body = { rating: Number(choice.value) };
    const comment = this.els.ratingComment.value.trim();
    if (comment) body.comment = comment;
    const submit = /** @type {HTMLButtonElement} */ (this.els.ratingForm.querySelector("button[type=submit]"));
    submit.disabled = true;
    try {
      const res = await api(`/v1/orchestrations/${encodeURIComponent(this.state.sessionId || "")}/feedback`, {
        method: "POST", body,
      });
      const verb = res && res.updated ? "updated" : "saved";
      text(this.els.ratingNote, `Thanks: your rating (${body.rating}/5) was ${verb}.`);
      this.els.rating.dataset.rated = String(body.rating);
    } catch (err) {
      text(this.els.ratingNote, `Could not save the rating: ${err instanceof Error ? err.message : err}`);
    } finally {
      submit.disabled = false;
    }
  }

  // ---- state -> DOM ------------------------------------------------------------------------------------

  /** @param {Action} action */
  dispatch(action) {
    this.commit(reduce(this.state, action));
  }

  /** @param {LiveState} next */
  commit(next) {
    const prev = this.state;
    if (next === prev) return;
    this.state = next;
    this.render(next, prev);
  }

  /**
   * Bring the DOM from showing `p` to showing `s`. Slices are compared by identity: the reducer replaces
   * exactly the objects that changed.
   * @param {LiveState} s
   * @param {LiveState} p
   */
  render(s, p) {
    const els = this.els;
    if (s.sessionId && s.sessionId !== p.sessionId) this.onSessionChanged(s.sessionId);
    els.session.hidden = !s.visible;
    const ds = els.session.dataset;
    setData(ds, "sessionId", s.sessionId);
    setData(ds, "status", s.status);
    setData(ds, "replaying", s.replaying ? "true" : "");
    setData(ds, "lastSequence", s.applied ? String(s.lastSequence) : "");
    setData(ds, "applied", s.applied ? String(s.applied) : "");
    setData(ds, "gaps", s.applied ? String(s.gaps) : "");
    text(els.sessionId, s.sessionId || "");
    if (s.prompt !== p.prompt) this.renderPrompt(s.prompt);
    els.simulated.hidden = !s.simulated;
    if (s.phase !== p.phase || s.status !== p.status || s.replaying !== p.replaying) this.renderPill(s);
    els.start.disabled = s.running || !this.channel.ready;
    els.cancel.disabled = !canCancel(s);
    els.replay.hidden = !s.finished;
    els.exportMd.hidden = !s.applied || s.replaying;
    els.exportJson.hidden = els.exportMd.hidden;
    text(els.error, s.error);
    els.error.hidden = !s.error;
    if (s.announcement !== p.announcement) text(els.announcer, s.announcement);
    if (s.selection !== p.selection) this.renderSelection(s.selection);
    if (s.rounds !== p.rounds) this.renderRounds(s.rounds);
    if (s.rounds !== p.rounds || s.result !== p.result || s.failure !== p.failure) this.markFinal(s);
    if (s.rounds !== p.rounds || s.threshold !== p.threshold) this.renderChart(s);
    if (s.notices !== p.notices) els.notices.replaceChildren(...s.notices.map((n) => make("li", n)));
    if (s.result !== p.result) this.renderResult(s.result);
    if (s.failure !== p.failure) this.renderFailure(s.failure);
    this.tick();
    this.reportLoaded(s);
  }

  /** @param {LiveState} s */
  renderPill(s) {
    if (s.replaying) {
      // The events being replayed say "running" until their end: the pill tells the real outcome meanwhile.
      setPill(this.els.status, `${s.replayOf || "recorded"} · replaying`, "muted");
    } else if (s.phase === "ended") {
      setPill(this.els.status, s.status, s.status === "completed" ? "good" : "bad");
    } else {
      const [label, tone] = PILLS[s.phase];
      setPill(this.els.status, label, tone);
    }
  }

  /**
   * The prompt, collapsed to its first lines when it is long.
   * @param {string} prompt
   */
  renderPrompt(prompt) {
    const els = this.els;
    text(els.prompt, prompt);
    const long = prompt.split("\n").length > PROMPT_LINES || prompt.length > PROMPT_CHARS;
    els.promptToggle.hidden = !long;
    this.setPromptExpanded(!long);
  }

  togglePrompt() {
    this.setPromptExpanded(this.els.promptToggle.getAttribute("aria-expanded") !== "true");
  }

  /** @param {boolean} expanded */
  setPromptExpanded(expanded) {
    const els = this.els;
    if (expanded) delete els.prompt.dataset.collapsed;
    else els.prompt.dataset.collapsed = "true";
    els.promptToggle.setAttribute("aria-expanded", String(expanded));
    text(els.promptToggle, expanded ? "Show less" : "Show full prompt");
  }

  // ---- progress --------------------------------------------------------------------------------------

  /**
   * Bring the progress line up to date: a new step restarts its clock; one interval timer ticks while the
   * session runs and is cleared when it does not. Screen readers hear the step, not the seconds.
   */
  tick() {
    const els = this.els;
    const step = progressStep(this.state);
    const now = performance.now();
    if (!step) {
      window.clearInterval(this.ticker);
      this.ticker = undefined;
      this.stepKey = "";
      els.progress.hidden = true;
      if (this.lastAnnounced) text(els.progressLive, "");
      this.lastAnnounced = "";
      return;
    }
    if (step.key !== this.stepKey) {
      this.stepKey = step.key;
      this.stepSince = now;
    }
    if (this.ticker === undefined) this.ticker = window.setInterval(() => this.tick(), 1000);
    const shown = progressLabel(step, now - this.stepSince, now - (this.lastEventAt || now));
    els.progress.hidden = false;
    els.progress.dataset.step = step.key;
    text(els.progressLabel, shown.label);
    text(els.progressStuck, shown.stuck);
    els.progressStuck.hidden = !shown.stuck;
    if (shown.stuck) els.progress.dataset.stuck = "true";
    else delete els.progress.dataset.stuck;
    if (shown.announce !== this.lastAnnounced) {
      this.lastAnnounced = shown.announce;
      text(els.progressLive, shown.announce);
    }
  }

  // ---- telling the form --------------------------------------------------------------------------------

  /**
   * Call onSessionLoaded once per shown session: at its end, or LOADED_AFTER_MS after its start event when it
   * is still running by then (a finished session's recorded events all arrive within that burst).
   * @param {LiveState} s
   */
  reportLoaded(s) {
    if (!s.sessionId || !s.request || this.reported === s.sessionId) return;
    if (s.finished || s.replaying) {
      this.reported = s.sessionId;
      window.clearTimeout(this.loadedTimer);
      this.loadedTimer = undefined;
      const status = s.replaying ? s.replayOf || s.status : s.status;
      this.onSessionLoaded({ sessionId: s.sessionId, threadId: String(s.request.thread_id || ""), request: s.request, status });
      return;
    }
    if (this.loadedTimer !== undefined) return;
    const id = s.sessionId;
    this.loadedTimer = window.setTimeout(() => {
      this.loadedTimer = undefined;
      const now = this.state;
      if (now.sessionId !== id || !now.request || this.reported === id) return;
      this.reported = id;
      this.onSessionLoaded({ sessionId: id, threadId: String(now.request.thread_id || ""), request: now.request,
        status: now.status || "running" });
    }, LOADED_AFTER_MS);
  }

  // ---- copy and export -------------------------------------------------------------------------------

  async copyAnswer() {
    const done = this.state.result;
    if (!done) return;
    const ok = await copyText(done.finalText);
    text(this.els.copyNote, ok ? "Copied (Markdown)."
      : "Copying is not available here (the browser allows it only on https or localhost). "
        + "Select the answer to copy it, or use Export Markdown.");
    this.els.copyNote.dataset.state = ok ? "copied" : "unavailable";
  }

  exportMarkdown() {
    const id = this.state.sessionId;
    if (!id) return;
    download(exportName(id, "md"), sessionMarkdown(this.state, new Date().toISOString()), "text/markdown");
  }

  exportJson() {
    const id = this.state.sessionId;
    if (!id) return;
    download(exportName(id, "json"), sessionJson(id, this.log, new Date().toISOString()), "application/json");
  }

  /** @param {LiveState["selection"]} selected */
  renderSelection(selected) {
    const els = this.els;
    els.selection.hidden = !selected;
    els.ranking.hidden = !selected;
    els.candidates.replaceChildren();
    if (!selected) {
      els.shadow.hidden = true;
      els.shadowLabel.hidden = true;
      return;
    }
    els.primary.replaceChildren(modelLabel(selected.primaryModel));
    const domain = enumLabel(selected.domain, "DOMAIN_");
    text(els.domain, domain ? `${domain} · ${num(selected.confidence * 100, 0)}% confidence` : "");
    els.critics.replaceChildren(...selected.criticModels.map((m) => modelLabel(m)));
    if (!selected.criticModels.length) els.critics.textContent = "none";
    const shadow = selected.shadowModels;
    els.shadow.hidden = !shadow.length;
    els.shadowLabel.hidden = !shadow.length;
    els.shadow.replaceChildren(...shadow.map((m) => modelLabel(m)));
    for (const c of selected.candidates) {
      const tr = make("tr");
      if (c.model === selected.primaryModel) tr.className = "chosen";
      tr.appendChild(make("td", c.rank || ""));
      const model = make("td");
      model.appendChild(modelLabel(c.model));
      tr.appendChild(model);
      tr.appendChild(make("td", num(c.score, 3), "num"));
      tr.appendChild(make("td", usd(c.costUsd), "num"));
      tr.appendChild(make("td", c.reason));
      els.candidates.appendChild(tr);
    }
  }

  /** @param {readonly Round[]} rounds */
  renderRounds(rounds) {
    const numbers = new Set(rounds.map((r) => r.number));
    for (const [n, view] of this.roundViews) {
      if (!numbers.has(n)) {
        view.root.remove();
        this.roundViews.delete(n);
      }
    }
    /** @type {HTMLElement | null} */
    let previous = null;
    for (const round of rounds) {
      let view = this.roundViews.get(round.number);
      if (!view) {
        view = this.roundView(round.number);
        if (previous) previous.after(view.root);
        else this.els.rounds.prepend(view.root);
      }
      if (view.shown !== round) this.renderRound(view, round);
      this.renderChanges(view, round, rounds);
      previous = view.root;
    }
  }

  /**
   * The round whose text the final answer shows keeps it collapsed behind a reference: the answer is on the
   * page once.
   * @param {LiveState} s
   */
  markFinal(s) {
    let best = s.result ? s.result.bestRound : 0;
    const kept = s.failure && s.failure.bestText;
    if (kept) best = [...s.rounds].reverse().find((r) => r.text === kept)?.number || 0;
    for (const [n, view] of this.roundViews) {
      const isFinal = n === best;
      if (isFinal === view.isFinal) continue;
      view.isFinal = isFinal;
      view.finalRef.hidden = !isFinal;
      text(part(view.finalRef, ".round-final-note"), kept
        ? "This version is the best answer so far, shown below."
        : "This version became the final answer, shown below.");
      view.root.classList.toggle("is-final", isFinal);
      this.showRoundAnswer(view, !isFinal);
    }
  }

  /**
   * @param {RoundView} view
   * @param {boolean} shown
   */
  showRoundAnswer(view, shown) {
    view.answer.hidden = !shown;
    view.showAnswer.setAttribute("aria-expanded", String(shown));
    text(view.showAnswer, shown ? "Hide it here" : "Show it here too");
  }

  /**
   * "What changed": for a complete refinement, the word diff against the draft it refined and, per critique
   * point that draft received, whether the refinement visibly took it up (an estimate).
   * @param {RoundView} view
   * @param {Round} round
   * @param {readonly Round[]} rounds
   */
  renderChanges(view, round, rounds) {
    const base = round.refines ? rounds.find((r) => r.number === round.refines) : undefined;
    const ready = Boolean(base && base.text && round.answered && !round.streaming);
    const of = ready && base ? [round.text, base.text, base.critiques] : [];
    if (of.length === view.changesOf.length && of.every((v, i) => v === view.changesOf[i])) return;
    view.changesOf = of;
    view.changes.hidden = !ready;
    if (!ready || !base) return;
    const segments = wordDiff(base.text, round.text);
    const { inserted, removed } = diffStats(segments);
    const before = new Set(headings(base.text));
    const added = headings(round.text).filter((h) => !before.has(h));
    const verdicts = assessPoints(base.critiques, insertedText(segments), added);
    const addressed = verdicts.filter((v) => v.addressed).length;
    text(part(view.changes, ".changes-summary"), `+${inserted} / −${removed} words`
      + (verdicts.length ? ` · ${addressed} of ${plural(verdicts.length, "point")} addressed (estimate)` : ""));
    text(part(view.changes, ".changes-base"),
      `Round ${round.number} against round ${round.refines}, the best-scored draft it refined. `
      + "Added words are underlined, removed ones struck through.");
    renderDiff(part(view.changes, ".diff"), segments);
    const list = part(view.changes, ".addressed");
    part(view.changes, ".addressed-block").hidden = !verdicts.length;
    list.replaceChildren(...verdicts.map((v) => {
      const li = make("li");
      li.dataset.addressed = String(v.addressed);
      li.appendChild(make("span", v.addressed ? "addressed" : "not visibly addressed",
        v.addressed ? "verdict verdict-yes" : "verdict verdict-no"));
      li.append(" ");
      li.appendChild(make("span", v.kind === "weakness" ? "Weakness" : "Suggestion", "point-kind"));
      li.append(" ");
      li.appendChild(modelLabel(v.critic));
      li.append(": ", v.text);
      if (v.heading) li.appendChild(make("span", ` (new section “${v.heading}”)`, "muted"));
      return li;
    }));
  }

  /**
   * @param {number} number
   * @returns {RoundView}
   */
  roundView(number) {
    const root = instantiate(this.els.roundTemplate);
    root.dataset.round = String(number);
    text(part(root, ".round-title"), number === 1 ? "Round 1 · answer" : `Round ${number} · refinement`);
    /** @type {RoundView} */
    const view = {
      root,
      answer: part(root, ".answer"),
      critiques: part(root, ".critiques"),
      summary: part(root, ".round-summary"),
      model: part(root, ".round-model"),
      meta: part(root, ".round-meta"),
      score: part(root, ".round-score"),
      finalRef: part(root, ".round-final-ref"),
      showAnswer: /** @type {HTMLButtonElement} */ (part(root, ".round-show")),
      changes: /** @type {HTMLDetailsElement} */ (part(root, ".changes")),
      shown: null,
      queued: false,
      isFinal: false,
      changesOf: [],
    };
    const answerId = `round-${number}-answer`;
    view.answer.id = answerId;
    view.showAnswer.setAttribute("aria-controls", answerId);
    view.showAnswer.addEventListener("click",
      () => this.showRoundAnswer(view, view.showAnswer.getAttribute("aria-expanded") !== "true"));
    this.roundViews.set(number, view);
    return view;
  }

  /**
   * @param {RoundView} view
   * @param {Round} round
   */
  renderRound(view, round) {
    const old = view.shown;
    view.shown = round;
    if (round.progress) view.root.dataset.state = round.progress;
    else delete view.root.dataset.state;
    view.answer.classList.toggle("streaming", round.streaming);
    if (round.streaming) view.answer.setAttribute("aria-busy", "true");
    else view.answer.removeAttribute("aria-busy");
    if (!old || old.model !== round.model || old.servedModel !== round.servedModel || old.answered !== round.answered) {
      view.model.replaceChildren();
      if (round.model || round.answered) view.model.appendChild(modelLabel(round.model));
      if (round.servedModel && round.servedModel !== round.model) {
        view.model.appendChild(make("span", " served by ", "muted"));
        view.model.appendChild(modelLabel(round.servedModel));
      }
    }
    if (!old || old.text !== round.text || old.streaming !== round.streaming) {
      // Streaming Markdown is re-rendered at most once per frame; a complete answer at once.
      if (round.streaming) this.queueMarkdown(view);
      else renderMarkdown(view.answer, round.text);
    }
    if (!old || old.answered !== round.answered) {
      const a = round.answered;
      text(view.meta, a ? `${plural(a.usage.total_tokens, "token")} · ${usd(a.usage.cost_usd)}`
        + (a.latency ? ` · ${seconds(a.latency)}` : "") : "");
    }
    if (!old || old.critiques !== round.critiques) {
      view.critiques.replaceChildren(...round.critiques.map((c) => this.critiqueNode(c)));
    }
    if (!old || old.outcome !== round.outcome) {
      const done = round.outcome;
      view.score.hidden = !done;
      if (!done) {
        text(view.score, "");
        text(view.summary, "");
      } else {
        const sign = done.change > 0 ? "+" : "";
        const decision = enumLabel(done.decision, "ROUND_DECISION_") || "continue";
        const stop = done.stopReason ? ` (${enumLabel(done.stopReason, "STOP_REASON_")})` : "";
        text(view.score, num(done.aggregate, 2));
        text(view.summary, `Aggregate ${num(done.aggregate, 2)}`
          + (round.number > 1 ? ` (${sign}${num(done.change, 2)})` : "")
          + ` · ${decision}${stop}` + (done.reason ? ` — ${done.reason}` : ""));
      }
    }
  }

  /** @param {RoundView} view */
  queueMarkdown(view) {
    if (view.queued) return;
    view.queued = true;
    requestAnimationFrame(() => {
      view.queued = false;
      if (view.shown) renderMarkdown(view.answer, view.shown.text);
    });
  }

  /** @param {import("./state.js").Critique} critique */
  critiqueNode(critique) {
    const node = instantiate(this.els.critiqueTemplate);
    node.dataset.critic = critique.critic;
    part(node, ".critic").appendChild(modelLabel(critique.critic));
    const badge = part(node, ".score");
    const score = critique.score;
    text(badge, `${num(score, 1)} / 10`);
    badge.classList.add(score >= 8 ? "score-good" : score >= 6 ? "score-mid" : "score-low");
    text(part(node, ".rationale"), critique.rationale);
    const points = part(node, ".points");
    /**
     * @param {readonly string[]} items
     * @param {string} label
     */
    const add = (items, label) => {
      for (const s of items) {
        const li = make("li", s, label);
        li.setAttribute("aria-label", `${label}: ${s}`);
        points.appendChild(li);
      }
    };
    add(critique.strengths, "strength");
    add(critique.weaknesses, "weakness");
    add(critique.suggestions, "suggestion");
    return node;
  }

  /** @param {LiveState} s */
  renderChart(s) {
    const series = scoreSeries(s);
    const key = JSON.stringify(series);
    if (key === this.chartKey) return;
    this.chartKey = key;
    this.chart.draw(series);
    this.els.chartBlock.hidden = !s.rounds.some((r) => r.critiques.length);
  }

  /** @param {LiveState["result"]} done */
  renderResult(done) {
    const els = this.els;
    els.final.hidden = !done;
    els.rating.hidden = !done;
    els.finalStats.replaceChildren();
    text(els.copyNote, "");
    if (!done) {
      els.finalText.replaceChildren();
      this.renderPerModel([]);
      return;
    }
    renderMarkdown(els.finalText, done.finalText);
    // No critic produced a score: say so, never "0.00 / 10".
    this.stat("Score", done.score == null ? "unscored" : `${num(done.score, 2)} / 10`);
    const best = make("span");
    best.append(`round ${done.bestRound} by `, modelLabel(done.bestModel));
    this.stat("Best version", best);
    this.stat("Rounds used", done.roundsUsed);
    this.stat("Stop reason",
      enumLabel(done.stopReason, "STOP_REASON_") + (done.stopDetail ? ` — ${done.stopDetail}` : ""));
    this.stat("Cost", usd(done.costUsd));
    this.stat("Tokens", tokens(done.usage));
    if (done.wallTime) this.stat("Wall time", seconds(done.wallTime));
    this.renderPerModel(done.perModel);
  }

  /**
   * @param {string} label
   * @param {unknown} value
   */
  stat(label, value) {
    this.els.finalStats.appendChild(make("dt", label));
    const dd = make("dd");
    if (value instanceof Node) dd.appendChild(value);
    else dd.textContent = String(value);
    this.els.finalStats.appendChild(dd);
  }

  /** @param {readonly import("./state.js").ModelUsage[]} rows */
  renderPerModel(rows) {
    const body = this.els.perModel;
    body.replaceChildren();
    for (const row of rows) {
      const tr = make("tr");
      const m = make("td");
      m.appendChild(modelLabel(row.model));
      tr.appendChild(m);
      tr.appendChild(make("td", row.calls || 0, "num"));
      tr.appendChild(make("td", Number((row.usage || {}).total_tokens || 0).toLocaleString(), "num"));
      tr.appendChild(make("td", usd((row.usage || {}).cost_usd), "num"));
      body.appendChild(tr);
    }
    const table = body.closest("table");
    if (table) table.hidden = !body.childNodes.length;
  }

  /** @param {LiveState["failure"]} failed */
  renderFailure(failed) {
    const els = this.els;
    els.failure.hidden = !failed;
    els.failureBest.hidden = !(failed && failed.bestText);
    if (!failed) {
      text(els.failureReason, "");
      els.failureBest.replaceChildren();
      return;
    }
    text(els.failureTitle, failureTitle(failed));
    text(els.failureReason,
      `${failed.reason || failed.status} · cost ${usd(failed.costUsd)} · tokens ${tokens(failed.usage)}`);
    if (failed.bestText) renderMarkdown(els.failureBest, failed.bestText);
    else els.failureBest.replaceChildren();
  }
}

/**
 * Set a data attribute, or remove it when `value` is empty.
 * @param {DOMStringMap} dataset
 * @param {string} key
 * @param {string | null} value
 */
function setData(dataset, key, value) {
  if (value) dataset[key] = value;
  else delete dataset[key];
}
