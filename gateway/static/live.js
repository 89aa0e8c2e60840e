// The live view of one session: starts or follows it over the WebSocket and renders its events.
// Events are applied strictly in sequence: duplicates (replays after a resume) are dropped, and the
// counters on #session (data-last-sequence, data-applied, data-gaps) make that observable.
import { api } from "./api.js";
import { ScoreChart } from "./charts.js";
import {
  enumLabel, make, modelLabel, num, renderMarkdown, seconds, setPill, text, tokens, usd,
} from "./render.js";

const $ = (id) => document.getElementById(id);

export class LiveSession {
  constructor(channel, { onSessionChanged } = {}) {
    this.channel = channel;
    this.onSessionChanged = onSessionChanged || (() => {});
    this.els = {
      session: $("session"),
      sessionId: $("session-id"),
      simulated: $("simulated"),
      status: $("session-status"),
      prompt: $("session-prompt"),
      selection: $("selection"),
      ranking: $("ranking"),
      primary: $("primary-model"),
      domain: $("domain"),
      critics: $("critic-models"),
      shadow: $("shadow-models"),
      shadowLabel: $("shadow-label"),
      candidates: $("candidates"),
      chartBlock: $("score-block"),
      rounds: $("rounds"),
      notices: $("notices"),
      final: $("final"),
      finalText: $("final-text"),
      finalStats: $("final-stats"),
      perModel: $("per-model"),
      failure: $("failure"),
      failureReason: $("failure-reason"),
      failureBest: $("failure-best"),
      cancel: $("cancel"),
      replay: $("replay"),
      start: $("start"),
      error: $("form-error"),
      announcer: $("announcer"),
      rating: $("rating"),
      ratingForm: $("rating-form"),
      ratingNote: $("rating-note"),
      ratingComment: $("rating-comment"),
      roundTemplate: $("round-template"),
      critiqueTemplate: $("critique-template"),
    };
    this.chart = new ScoreChart($("score-chart"));
    this.rounds = new Map();
    this.renderQueued = new Set();
    this.resetState();
    this.log = []; // events applied, for replays
    this.replayToken = 0;

    channel.on("open", () => this.resume());
    channel.on("message", (msg) => this.onMessage(msg));
    this.els.cancel.addEventListener("click", () => this.cancel());
    this.els.replay.addEventListener("click", () => this.replay());
    this.els.ratingForm.addEventListener("submit", (e) => {
      e.preventDefault();
      this.rate();
    });
  }

  // ---- starting, following, resuming ---------------------------------------------------------------

  /** Start a new session from an OrchestrateRequest (proto JSON). */
  start(request) {
    this.reset();
    // Detached: the session survives a reload or a dropped socket; Cancel stops it explicitly.
    const ref = this.channel.send({ type: "orchestrate", request: { ...request, detached: true } });
    if (ref == null) {
      this.showError("Not connected to the gateway yet; try again in a moment.");
      return;
    }
    this.pendingRef = ref;
    this.running = true;
    this.els.session.hidden = false;
    setPill(this.els.status, "starting…", "warn");
    this.els.start.disabled = true;
  }

  /** Show a past or running session: replay its events from the start, then follow live ones. */
  follow(sessionId) {
    if (sessionId === this.sessionId && (this.running || this.finished)) return;
    this.reset();
    this.setSession(sessionId);
    this.running = true;
    this.els.session.hidden = false;
    setPill(this.els.status, "loading…", "muted");
    this.watch();
  }

  /** After a (re)connect: pick the stream up where it stopped. */
  resume() {
    if (this.sessionId && this.running) {
      this.watch();
    } else if (this.pendingRef != null && !this.sessionId) {
      // The connection dropped before the session was named: it may exist, but it cannot be followed from here.
      this.pendingRef = null;
      this.stop();
      setPill(this.els.status, "unknown", "bad");
      this.showError("The connection dropped while the session was starting; look for it under Sessions.");
    }
  }

  watch() {
    this.watchRef = this.channel.send({ type: "watch", sessionId: this.sessionId, afterSequence: this.lastSequence });
  }

  setSession(id) {
    this.sessionId = id;
    this.els.session.dataset.sessionId = id;
    text(this.els.sessionId, id);
    this.onSessionChanged(id);
  }

  cancel() {
    if (!this.sessionId) return;
    this.channel.send({ type: "cancel", sessionId: this.sessionId });
    this.els.cancel.disabled = true;
    setPill(this.els.status, "cancelling…", "warn");
  }

  // ---- server messages -------------------------------------------------------------------------------

  onMessage(msg) {
    switch (msg.type) {
      case "ack":
        if (msg.action === "orchestrate" && msg.ref === this.pendingRef) {
          this.pendingRef = null;
          this.setSession(msg.sessionId);
          this.els.cancel.disabled = false;
        }
        break;
      case "event":
        this.onEvent(msg.event || {});
        break;
      case "error":
        if (msg.ref === this.pendingRef || msg.ref === this.watchRef
            || (msg.sessionId && msg.sessionId === this.sessionId)) {
          if (msg.ref === this.pendingRef || msg.ref === this.watchRef) this.stop();
          this.pendingRef = null;
          this.showError(`${msg.code}: ${msg.message}`);
          if (msg.code === "NOT_FOUND") setPill(this.els.status, "not found", "bad");
        }
        break;
      default:
        break;
    }
  }

  onEvent(event) {
    if (!this.sessionId || event.session_id !== this.sessionId) return;
    const sequence = Number(event.sequence || 0);
    if (sequence <= this.lastSequence) return; // already applied (replay overlap after a resume)
    if (sequence !== this.lastSequence + 1) this.gaps += 1;
    this.lastSequence = sequence;
    this.applied += 1;
    this.log.push(event);
    const ds = this.els.session.dataset;
    ds.lastSequence = String(sequence);
    ds.applied = String(this.applied);
    ds.gaps = String(this.gaps);

    if (event.session_started) this.onStarted(event.session_started);
    else if (event.model_selected) this.onSelected(event.model_selected);
    else if (event.response_delta) this.onDelta(event.response_delta);
    else if (event.response_completed) this.onResponse(event.response_completed);
    else if (event.critique_completed) this.onCritique(event.critique_completed);
    else if (event.round_completed) this.onRound(event.round_completed);
    else if (event.provider_fallback) this.onFallback(event.provider_fallback);
    else if (event.warning) this.onWarning(event.warning);
    else if (event.session_completed) this.onCompleted(event.session_completed);
    else if (event.session_failed) this.onFailed(event.session_failed);
  }

  onStarted(started) {
    this.els.simulated.hidden = !started.simulated;
    const request = started.request || {};
    text(this.els.prompt, request.prompt || "");
    const threshold = request.quality_threshold != null ? Number(request.quality_threshold) : 8;
    this.chart.reset(threshold);
    setPill(this.els.status, "running", "warn");
    this.els.cancel.disabled = false;
    this.els.session.dataset.status = "running";
  }

  onSelected(selected) {
    const els = this.els;
    els.selection.hidden = false;
    els.ranking.hidden = false;
    els.primary.replaceChildren(modelLabel(selected.primary_model));
    const analysis = selected.analysis || {};
    const domain = enumLabel(analysis.primary_domain, "DOMAIN_");
    text(els.domain, domain ? `${domain} · ${num((analysis.confidence || 0) * 100, 0)}% confidence` : "");
    els.critics.replaceChildren();
    for (const m of selected.critic_models || []) els.critics.appendChild(modelLabel(m));
    if (!(selected.critic_models || []).length) els.critics.textContent = "none";
    const shadow = selected.shadow_models || [];
    els.shadow.hidden = !shadow.length;
    els.shadowLabel.hidden = !shadow.length;
    els.shadow.replaceChildren(...shadow.map((m) => modelLabel(m)));
    els.candidates.replaceChildren();
    for (const c of selected.candidates || []) {
      const tr = make("tr");
      if (c.model === selected.primary_model) tr.className = "chosen";
      tr.appendChild(make("td", c.rank || ""));
      const model = make("td");
      model.appendChild(modelLabel(c.model));
      tr.appendChild(model);
      tr.appendChild(make("td", num(c.score, 3), "num"));
      tr.appendChild(make("td", usd(c.estimated_cost_usd), "num"));
      tr.appendChild(make("td", c.reason || ""));
      els.candidates.appendChild(tr);
    }
    if (selected.from_defaults) this.notice("Selector unavailable: catalogue defaults were used.");
    this.announce(`Selected ${selected.primary_model}`);
  }

  round(number) {
    const key = Number(number || 1);
    let r = this.rounds.get(key);
    if (!r) {
      const root = this.els.roundTemplate.content.firstElementChild.cloneNode(true);
      root.dataset.round = String(key);
      r = {
        root,
        answer: root.querySelector(".answer"),
        critiques: root.querySelector(".critiques"),
        summary: root.querySelector(".round-summary"),
        model: root.querySelector(".round-model"),
        meta: root.querySelector(".round-meta"),
        score: root.querySelector(".round-score"),
        text: "",
      };
      text(root.querySelector(".round-title"), key === 1 ? "Round 1 · answer" : `Round ${key} · refinement`);
      this.rounds.set(key, r);
      this.els.rounds.appendChild(root);
    }
    return r;
  }

  // Streaming Markdown is re-rendered at most once per frame.
  queueRender(r) {
    if (this.renderQueued.has(r)) return;
    this.renderQueued.add(r);
    requestAnimationFrame(() => {
      this.renderQueued.delete(r);
      renderMarkdown(r.answer, r.text);
    });
  }

  onDelta(delta) {
    const r = this.round(delta.round);
    if (delta.model && !r.model.childNodes.length) r.model.replaceChildren(modelLabel(delta.model));
    r.answer.classList.add("streaming");
    r.answer.setAttribute("aria-busy", "true");
    r.root.dataset.state = "streaming";
    r.text += delta.text || "";
    this.queueRender(r);
  }

  onResponse(done) {
    if (done.shadow) {
      this.notice(`Shadow answer by ${done.model} (checks the selection; not part of the result).`);
      return;
    }
    const r = this.round(done.round);
    r.answer.classList.remove("streaming");
    r.answer.removeAttribute("aria-busy");
    r.root.dataset.state = "answered";
    r.text = done.text || "";
    renderMarkdown(r.answer, r.text); // the complete text replaces the streamed pieces
    r.model.replaceChildren(modelLabel(done.model));
    if (done.served_model && done.served_model !== done.model) {
      r.model.appendChild(make("span", " served by ", "muted"));
      r.model.appendChild(modelLabel(done.served_model));
    }
    const usage = done.usage || {};
    text(r.meta, `${Number(usage.total_tokens || 0).toLocaleString()} tokens · ${usd(usage.cost_usd)}`
      + (done.latency ? ` · ${seconds(done.latency)}` : ""));
    this.announce(`Round ${done.round || 1} answer complete`);
  }

  onCritique(critique) {
    if (critique.shadow) return;
    const r = this.round(critique.round);
    const node = this.els.critiqueTemplate.content.firstElementChild.cloneNode(true);
    node.dataset.critic = critique.critic_model || "";
    node.querySelector(".critic").appendChild(modelLabel(critique.critic_model));
    const score = Number(critique.score || 0);
    const badge = node.querySelector(".score");
    text(badge, `${num(score, 1)} / 10`);
    badge.classList.add(score >= 8 ? "score-good" : score >= 6 ? "score-mid" : "score-low");
    text(node.querySelector(".rationale"), critique.rationale);
    const points = node.querySelector(".points");
    const add = (items, cls, label) => {
      for (const s of items || []) {
        const li = make("li", s, cls);
        li.setAttribute("aria-label", `${label}: ${s}`);
        points.appendChild(li);
      }
    };
    add(critique.strengths, "strength", "strength");
    add(critique.weaknesses, "weakness", "weakness");
    add(critique.suggestions, "suggestion", "suggestion");
    r.critiques.appendChild(node);
    this.els.chartBlock.hidden = false;
    this.chart.critique(Number(critique.round || 1), critique.critic_model, score);
    this.announce(`${critique.critic_model} scored round ${critique.round || 1}: ${num(score, 1)}`);
  }

  onRound(done) {
    const r = this.round(done.round);
    const change = Number(done.score_change || 0);
    const sign = change > 0 ? "+" : "";
    const decision = enumLabel(done.decision, "ROUND_DECISION_") || "continue";
    const stop = done.stop_reason ? ` (${enumLabel(done.stop_reason, "STOP_REASON_")})` : "";
    text(r.score, `${num(done.aggregate_score, 2)}`);
    r.score.hidden = false;
    text(r.summary, `Aggregate ${num(done.aggregate_score, 2)}`
      + (Number(done.round || 1) > 1 ? ` (${sign}${num(change, 2)})` : "")
      + ` · ${decision}${stop}` + (done.reason ? ` — ${done.reason}` : ""));
    r.root.dataset.state = "done";
    this.chart.aggregate(Number(done.round || 1), done.aggregate_score);
  }

  onFallback(fallback) {
    this.notice(`Round ${fallback.round || 1}: ${fallback.failed_model} failed `
      + `(${enumLabel(fallback.failure_kind, "FAILURE_KIND_")}); ${fallback.replacement_model} took over.`);
  }

  onWarning(warning) {
    this.notice(`${enumLabel(warning.code, "WARNING_CODE_")}: ${warning.message || ""}`);
  }

  stat(label, value) {
    this.els.finalStats.appendChild(make("dt", label));
    const dd = make("dd");
    if (value instanceof Node) dd.appendChild(value);
    else dd.textContent = String(value);
    this.els.finalStats.appendChild(dd);
  }

  perModel(rows) {
    const body = this.els.perModel;
    body.replaceChildren();
    for (const row of rows || []) {
      const tr = make("tr");
      const m = make("td");
      m.appendChild(modelLabel(row.model));
      tr.appendChild(m);
      tr.appendChild(make("td", row.calls || 0, "num"));
      tr.appendChild(make("td", Number((row.usage || {}).total_tokens || 0).toLocaleString(), "num"));
      tr.appendChild(make("td", usd((row.usage || {}).cost_usd), "num"));
      body.appendChild(tr);
    }
    body.closest("table").hidden = !body.childNodes.length;
  }

  endStreaming() {
    for (const r of this.rounds.values()) {
      r.answer.classList.remove("streaming");
      r.answer.removeAttribute("aria-busy");
    }
  }

  onCompleted(done) {
    this.endStreaming();
    const els = this.els;
    els.final.hidden = false;
    renderMarkdown(els.finalText, done.final_text);
    els.finalStats.replaceChildren();
    // No critic produced a score: say so, never "0.00 / 10".
    this.stat("Score", done.unscored ? "unscored" : `${num(done.final_score, 2)} / 10`);
    const best = make("span");
    best.append(`round ${done.best_round || 1} by `, modelLabel(done.best_model));
    this.stat("Best version", best);
    this.stat("Rounds used", done.rounds_used || 0);
    this.stat("Stop reason", enumLabel(done.stop_reason, "STOP_REASON_") + (done.stop_detail ? ` — ${done.stop_detail}` : ""));
    this.stat("Cost", usd(done.total_cost_usd));
    this.stat("Tokens", tokens(done.usage));
    if (done.wall_time) this.stat("Wall time", seconds(done.wall_time));
    this.perModel(done.per_model);
    setPill(els.status, "completed", "good");
    els.session.dataset.status = "completed";
    els.rating.hidden = false;
    this.announce("Session completed");
    this.finish();
  }

  onFailed(failed) {
    this.endStreaming();
    const els = this.els;
    els.failure.hidden = false;
    const status = enumLabel(failed.status, "SESSION_STATUS_") || "failed";
    text(els.failureReason, `${failed.reason || status} · cost ${usd(failed.total_cost_usd)} · tokens ${tokens(failed.usage)}`);
    if (failed.best_text) {
      els.failureBest.hidden = false;
      renderMarkdown(els.failureBest, failed.best_text);
    }
    setPill(els.status, status, "bad");
    els.session.dataset.status = status;
    this.announce(`Session ${status}`);
    this.finish();
  }

  /** Play a finished session's events again, at twice their recorded pace (pauses capped at 1 s). */
  async replay() {
    const events = this.log.slice();
    const id = this.sessionId;
    if (!events.length || !id) return;
    this.reset();
    const token = this.replayToken;
    this.setSession(id);
    this.els.session.hidden = false;
    this.els.session.dataset.replaying = "true";
    let previous = null;
    for (const event of events) {
      const at = Date.parse(event.time || "");
      const pause = previous == null || Number.isNaN(at) ? 0 : Math.min(1000, Math.max(0, at - previous) / 2);
      if (!Number.isNaN(at)) previous = at;
      if (pause > 0) await new Promise((resolve) => window.setTimeout(resolve, pause));
      if (token !== this.replayToken) return; // another session was opened meanwhile
      this.onEvent(event);
    }
    delete this.els.session.dataset.replaying;
  }

  // ---- rating ------------------------------------------------------------------------------------------

  async rate() {
    const choice = this.els.ratingForm.querySelector("input[name=rating]:checked");
    if (!choice) {
      text(this.els.ratingNote, "Pick 1 to 5 stars first.");
      return;
    }
    const body = { rating: Number(choice.value) };
    const comment = this.els.ratingComment.value.trim();
    if (comment) body.comment = comment;
    const submit = this.els.ratingForm.querySelector("button[type=submit]");
    submit.disabled = true;
    try {
      const res = await api(`/v1/orchestrations/${encodeURIComponent(this.sessionId)}/feedback`, {
        method: "POST", body,
      });
      const verb = res && res.updated ? "updated" : "saved";
      text(this.els.ratingNote, `Thanks: your rating (${body.rating}/5) was ${verb}.`);
      this.els.rating.dataset.rated = String(body.rating);
    } catch (err) {
      text(this.els.ratingNote, `Could not save the rating: ${err.message}`);
    } finally {
      submit.disabled = false;
    }
  }

  // ---- state -------------------------------------------------------------------------------------------

  finish() {
    this.running = false;
    this.finished = true;
    this.els.replay.hidden = false;
    this.els.start.disabled = false;
    this.els.cancel.disabled = true;
  }

  stop() {
    this.running = false;
    this.els.start.disabled = false;
    this.els.cancel.disabled = true;
  }

  /** The followed session's bookkeeping, back to "no session" (no DOM work). */
  resetState() {
    this.sessionId = null;
    this.pendingRef = null;
    this.watchRef = null;
    this.running = false;
    this.finished = false;
    this.lastSequence = 0;
    this.applied = 0;
    this.gaps = 0;
    this.rounds.clear();
  }

  reset() {
    const els = this.els;
    this.replayToken += 1;
    this.log = [];
    els.replay.hidden = true;
    delete els.session.dataset.replaying;
    this.resetState();
    this.chart.reset(null);
    for (const k of ["sessionId", "lastSequence", "applied", "gaps", "status"]) delete els.session.dataset[k];
    els.rounds.replaceChildren();
    els.notices.replaceChildren();
    els.candidates.replaceChildren();
    els.finalStats.replaceChildren();
    els.finalText.replaceChildren();
    els.failureBest.replaceChildren();
    els.perModel.replaceChildren();
    text(els.sessionId, "");
    text(els.prompt, "");
    text(els.ratingNote, "");
    els.ratingForm.reset();
    delete els.rating.dataset.rated;
    for (const el of [els.selection, els.ranking, els.shadow, els.shadowLabel, els.final, els.failure, els.failureBest, els.simulated, els.rating, els.chartBlock]) {
      el.hidden = true;
    }
    this.showError("");
  }

  notice(message) {
    this.els.notices.appendChild(make("li", message));
  }

  announce(message) {
    text(this.els.announcer, message);
  }

  showError(message) {
    text(this.els.error, message);
    this.els.error.hidden = !message;
  }
}
