// OrchestrateX browser client: one WebSocket to /v1/ws, events rendered as they arrive.
// Model output is untrusted: it is only ever inserted with textContent / text nodes, never as HTML.
"use strict";

(() => {
  const $ = (id) => document.getElementById(id);

  const els = {
    connection: $("connection"),
    form: $("prompt-form"),
    prompt: $("prompt"),
    maxRounds: $("max-rounds"),
    threshold: $("threshold"),
    start: $("start"),
    cancel: $("cancel"),
    formError: $("form-error"),
    session: $("session"),
    sessionId: $("session-id"),
    simulated: $("simulated"),
    status: $("session-status"),
    selection: $("selection"),
    primary: $("primary-model"),
    domain: $("domain"),
    critics: $("critic-models"),
    candidates: $("candidates"),
    rounds: $("rounds"),
    notices: $("notices"),
    final: $("final"),
    finalText: $("final-text"),
    finalStats: $("final-stats"),
    failure: $("failure"),
    failureReason: $("failure-reason"),
    failureBest: $("failure-best"),
    roundTemplate: $("round-template"),
    critiqueTemplate: $("critique-template"),
  };

  const state = {
    ws: null,
    retries: 0,
    nextRef: 1,
    pendingRef: null, // ref of the orchestrate request waiting for its session id
    sessionId: null,
    running: false,
    lastSequence: 0,
    rounds: new Map(), // round number -> {root, answer, critiques, summary, model}
  };

  // ---- small helpers -------------------------------------------------------------------------

  function text(el, value) {
    el.textContent = value == null ? "" : String(value);
  }

  function make(tag, value, className) {
    const el = document.createElement(tag);
    if (value != null) el.textContent = String(value);
    if (className) el.className = className;
    return el;
  }

  // "STOP_REASON_MAX_ROUNDS" -> "max rounds"
  function enumLabel(value, prefix) {
    if (!value) return "";
    return String(value).replace(prefix, "").toLowerCase().replace(/_/g, " ");
  }

  function num(value, digits) {
    const n = Number(value || 0);
    return Number.isFinite(n) ? n.toFixed(digits) : String(value);
  }

  function usd(value) {
    return "$" + num(value, 4);
  }

  function tokens(usage) {
    if (!usage) return "0";
    const total = usage.totalTokens || "0";
    return `${total} (prompt ${usage.promptTokens || "0"}, completion ${usage.completionTokens || "0"})`;
  }

  function setPill(el, label, tone) {
    text(el, label);
    el.className = "pill pill-" + (tone || "muted");
  }

  function showError(message) {
    text(els.formError, message);
    els.formError.hidden = !message;
  }

  function notice(message) {
    els.notices.appendChild(make("li", message));
  }

  // ---- connection ----------------------------------------------------------------------------

  function connect() {
    const scheme = location.protocol === "https:" ? "wss:" : "ws:";
    const ws = new WebSocket(`${scheme}//${location.host}/v1/ws`);
    state.ws = ws;
    setPill(els.connection, "connecting…");

    ws.addEventListener("open", () => {
      state.retries = 0;
      setPill(els.connection, "connected", "good");
      els.start.disabled = state.running;
      // Resume a session we were following (after a server restart, for example).
      if (state.running && state.sessionId) {
        send({ type: "watch", sessionId: state.sessionId, afterSequence: state.lastSequence });
      }
    });

    ws.addEventListener("message", (e) => {
      let msg;
      try {
        msg = JSON.parse(e.data);
      } catch (_err) {
        return;
      }
      handleMessage(msg);
    });

    ws.addEventListener("close", (e) => {
      if (state.ws !== ws) return;
      state.ws = null;
      els.start.disabled = true;
      const why = e.reason ? `: ${e.reason}` : "";
      setPill(els.connection, `disconnected (${e.code}${why})`, "bad");
      const delay = Math.min(15000, 500 * 2 ** state.retries);
      state.retries += 1;
      window.setTimeout(connect, delay);
    });
  }

  function send(message) {
    if (!state.ws || state.ws.readyState !== WebSocket.OPEN) {
      showError("Not connected to the gateway; retrying…");
      return false;
    }
    state.ws.send(JSON.stringify(message));
    return true;
  }

  // ---- server messages -----------------------------------------------------------------------

  function handleMessage(msg) {
    switch (msg.type) {
      case "ack":
        if (msg.action === "orchestrate" && msg.ref === state.pendingRef) {
          state.pendingRef = null;
          state.sessionId = msg.sessionId;
          text(els.sessionId, msg.sessionId);
          els.cancel.disabled = false;
        } else if (msg.action === "cancel" && msg.sessionId === state.sessionId) {
          setPill(els.status, "cancelling…", "warn");
        }
        break;
      case "event":
        handleEvent(msg.event || {});
        break;
      case "error":
        if (msg.ref === state.pendingRef || (msg.sessionId && msg.sessionId === state.sessionId)) {
          state.pendingRef = null;
          finish();
        }
        showError(`${msg.code}: ${msg.message}`);
        break;
      case "end":
        if (msg.sessionId === state.sessionId && state.running) finish();
        break;
      default:
        break;
    }
  }

  function handleEvent(event) {
    if (state.sessionId && event.sessionId !== state.sessionId) return;
    const sequence = Number(event.sequence || 0);
    if (sequence && sequence <= state.lastSequence) return; // replayed after a resume
    state.lastSequence = sequence;

    if (event.sessionStarted) onStarted(event.sessionStarted);
    else if (event.modelSelected) onSelected(event.modelSelected);
    else if (event.responseDelta) onDelta(event.responseDelta);
    else if (event.responseCompleted) onResponse(event.responseCompleted);
    else if (event.critiqueCompleted) onCritique(event.critiqueCompleted);
    else if (event.roundCompleted) onRound(event.roundCompleted);
    else if (event.providerFallback) onFallback(event.providerFallback);
    else if (event.warning) onWarning(event.warning);
    else if (event.sessionCompleted) onCompleted(event.sessionCompleted);
    else if (event.sessionFailed) onFailed(event.sessionFailed);
  }

  function onStarted(started) {
    els.simulated.hidden = !started.simulated;
    setPill(els.status, "running", "warn");
  }

  function onSelected(selected) {
    els.selection.hidden = false;
    text(els.primary, selected.primaryModel);
    const analysis = selected.analysis || {};
    const domain = enumLabel(analysis.primaryDomain, "DOMAIN_");
    text(els.domain, domain ? `· ${domain} (${num((analysis.confidence || 0) * 100, 0)}% confidence)` : "");
    text(els.critics, (selected.criticModels || []).join(", ") || "none");
    els.candidates.replaceChildren();
    for (const c of selected.candidates || []) {
      const li = make("li");
      li.appendChild(make("strong", c.model));
      li.appendChild(document.createTextNode(` — score ${num(c.score, 3)}, est. ${usd(c.estimatedCostUsd)}`));
      if (c.reason) li.appendChild(make("div", c.reason, "muted"));
      els.candidates.appendChild(li);
    }
    if (selected.fromDefaults) notice("Selector unavailable: catalogue defaults were used.");
  }

  function round(number) {
    const key = Number(number || 1);
    let r = state.rounds.get(key);
    if (!r) {
      const root = els.roundTemplate.content.firstElementChild.cloneNode(true);
      r = {
        root,
        answer: root.querySelector(".answer"),
        critiques: root.querySelector(".critiques"),
        summary: root.querySelector(".round-summary"),
        model: root.querySelector(".round-model"),
      };
      text(root.querySelector(".round-title"), key === 1 ? "Round 1 — answer" : `Round ${key} — refinement`);
      state.rounds.set(key, r);
      els.rounds.appendChild(root);
    }
    return r;
  }

  function onDelta(delta) {
    const r = round(delta.round);
    if (delta.model && !r.model.textContent) text(r.model, delta.model);
    r.answer.classList.add("streaming");
    r.answer.appendChild(document.createTextNode(delta.text || ""));
  }

  function onResponse(done) {
    if (done.shadow) {
      notice(`Shadow answer by ${done.model} (selection check).`);
      return;
    }
    const r = round(done.round);
    r.answer.classList.remove("streaming");
    text(r.answer, done.text); // the complete text replaces the streamed pieces
    const served = done.servedModel && done.servedModel !== done.model ? ` (served by ${done.servedModel})` : "";
    const usage = done.usage || {};
    text(r.model, `${done.model}${served} · ${usage.totalTokens || "0"} tokens · ${usd(usage.costUsd)}`
      + (done.latency ? ` · ${done.latency}` : ""));
  }

  function onCritique(critique) {
    if (critique.shadow) return;
    const r = round(critique.round);
    const node = els.critiqueTemplate.content.firstElementChild.cloneNode(true);
    text(node.querySelector(".critic"), critique.criticModel);
    text(node.querySelector(".score"), `${num(critique.score, 1)} / 10`);
    text(node.querySelector(".rationale"), critique.rationale);
    const points = node.querySelector(".points");
    for (const s of critique.strengths || []) points.appendChild(make("li", "+ " + s));
    for (const w of critique.weaknesses || []) points.appendChild(make("li", "− " + w));
    for (const s of critique.suggestions || []) points.appendChild(make("li", "→ " + s));
    r.critiques.appendChild(node);
  }

  function onRound(done) {
    const r = round(done.round);
    const change = Number(done.scoreChange || 0);
    const sign = change > 0 ? "+" : "";
    const decision = enumLabel(done.decision, "ROUND_DECISION_") || "continue";
    const stop = done.stopReason ? ` (${enumLabel(done.stopReason, "STOP_REASON_")})` : "";
    text(r.summary, `Aggregate ${num(done.aggregateScore, 2)} (${sign}${num(change, 2)}) · ${decision}${stop}`
      + (done.reason ? ` — ${done.reason}` : ""));
  }

  function onFallback(fallback) {
    notice(`Round ${fallback.round || 1}: ${fallback.failedModel} failed (${enumLabel(fallback.failureKind, "FAILURE_KIND_")}); `
      + `${fallback.replacementModel} took over.`);
  }

  function onWarning(warning) {
    notice(`${enumLabel(warning.code, "WARNING_CODE_")}: ${warning.message || ""}`);
  }

  function stat(label, value) {
    els.finalStats.appendChild(make("dt", label));
    els.finalStats.appendChild(make("dd", value));
  }

  function onCompleted(done) {
    for (const r of state.rounds.values()) r.answer.classList.remove("streaming");
    els.final.hidden = false;
    text(els.finalText, done.finalText);
    els.finalStats.replaceChildren();
    stat("Score", `${num(done.finalScore, 2)} / 10`);
    stat("Best", `round ${done.bestRound || 1} by ${done.bestModel || "?"}`);
    stat("Rounds used", done.roundsUsed || 0);
    stat("Stop reason", enumLabel(done.stopReason, "STOP_REASON_") + (done.stopDetail ? ` — ${done.stopDetail}` : ""));
    stat("Cost", usd(done.totalCostUsd));
    stat("Tokens", tokens(done.usage));
    if (done.wallTime) stat("Wall time", done.wallTime);
    setPill(els.status, "completed", "good");
    finish();
  }

  function onFailed(failed) {
    for (const r of state.rounds.values()) r.answer.classList.remove("streaming");
    els.failure.hidden = false;
    const status = enumLabel(failed.status, "SESSION_STATUS_") || "failed";
    text(els.failureReason, `${failed.reason || status} · cost ${usd(failed.totalCostUsd)} · ${tokens(failed.usage)} tokens`);
    if (failed.bestText) {
      els.failureBest.hidden = false;
      text(els.failureBest, failed.bestText);
    }
    setPill(els.status, status, "bad");
    finish();
  }

  // ---- user actions --------------------------------------------------------------------------

  function reset() {
    state.sessionId = null;
    state.lastSequence = 0;
    state.rounds.clear();
    els.rounds.replaceChildren();
    els.notices.replaceChildren();
    els.candidates.replaceChildren();
    els.finalStats.replaceChildren();
    text(els.sessionId, "");
    text(els.finalText, "");
    text(els.failureBest, "");
    els.selection.hidden = true;
    els.final.hidden = true;
    els.failure.hidden = true;
    els.failureBest.hidden = true;
    els.simulated.hidden = true;
    showError("");
  }

  function finish() {
    state.running = false;
    els.start.disabled = !state.ws;
    els.cancel.disabled = true;
  }

  els.form.addEventListener("submit", (e) => {
    e.preventDefault();
    const prompt = els.prompt.value;
    if (!prompt.trim()) {
      showError("Write a prompt first.");
      return;
    }
    const request = { prompt };
    const maxRounds = parseInt(els.maxRounds.value, 10);
    if (Number.isFinite(maxRounds)) request.maxRounds = maxRounds;
    const threshold = parseFloat(els.threshold.value);
    if (Number.isFinite(threshold)) request.qualityThreshold = threshold;

    reset();
    const ref = state.nextRef++;
    if (!send({ type: "orchestrate", ref, request })) return;
    state.pendingRef = ref;
    state.running = true;
    els.session.hidden = false;
    setPill(els.status, "starting…", "warn");
    els.start.disabled = true;
  });

  els.cancel.addEventListener("click", () => {
    if (state.sessionId) send({ type: "cancel", sessionId: state.sessionId });
  });

  connect();
})();
