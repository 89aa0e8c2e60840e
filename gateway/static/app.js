// OrchestrateX browser app: wiring, navigation (#/, #/session/<id>, #/sessions, #/dashboard) and the prompt form.
import { api } from "./api.js";
import { Dashboard } from "./dashboard.js";
import { LiveSession } from "./live.js";
import { catalogue, setModels, setPill } from "./render.js";
import { SessionList } from "./sessions.js";
import { Channel } from "./ws.js";

const $ = (id) => document.getElementById(id);

// Selection weights (quality, cost, latency) per preference; "balanced" leaves the service defaults.
const PREFERENCES = {
  balanced: null,
  quality: { quality_weight: 1, cost_weight: 0.05, latency_weight: 0.05 },
  cost: { quality_weight: 0.4, cost_weight: 1, latency_weight: 0.1 },
  speed: { quality_weight: 0.4, cost_weight: 0.1, latency_weight: 1 },
};

const channel = new Channel();
const sessions = new SessionList();
const dashboard = new Dashboard();
const live = new LiveSession(channel, {
  onSessionChanged(id) {
    const hash = id ? `#/session/${encodeURIComponent(id)}` : "#/";
    if (location.hash !== hash) history.replaceState(null, "", hash);
  },
});

// ---- navigation ----------------------------------------------------------------------------------------

const VIEWS = { ask: $("view-ask"), sessions: $("view-sessions"), dashboard: $("view-dashboard") };

function show(view) {
  for (const [name, el] of Object.entries(VIEWS)) el.hidden = name !== view;
  for (const link of document.querySelectorAll("nav.tabs a")) {
    if (link.dataset.view === view) link.setAttribute("aria-current", "page");
    else link.removeAttribute("aria-current");
  }
}

function route() {
  const hash = location.hash || "#/";
  const match = /^#\/session\/(.+)$/.exec(hash);
  if (match) {
    show("ask");
    live.follow(decodeURIComponent(match[1]));
  } else if (hash === "#/sessions") {
    show("sessions");
    sessions.load(true);
  } else if (hash === "#/dashboard") {
    show("dashboard");
    dashboard.load();
  } else {
    show("ask");
  }
}

window.addEventListener("hashchange", route);

// ---- connection status -----------------------------------------------------------------------------------

channel.on("status", (status, code) => {
  const pill = $("connection");
  if (status === "connected") setPill(pill, "live", "good");
  else if (status === "connecting") setPill(pill, "connecting…", "muted");
  else if (status === "unauthenticated") setPill(pill, "API key needed", "bad");
  else setPill(pill, `reconnecting (${code})…`, "bad");
  pill.dataset.state = status;
  $("start").disabled = status !== "connected" || live.running;
});

// ---- the form ----------------------------------------------------------------------------------------------

function number(id, parse) {
  const value = parse($(id).value);
  return Number.isFinite(value) ? value : undefined;
}

$("prompt-form").addEventListener("submit", (e) => {
  e.preventDefault();
  const prompt = $("prompt").value;
  if (!prompt.trim()) {
    live.showError("Write a prompt first.");
    $("prompt").focus();
    return;
  }
  const request = { prompt };
  const maxRounds = number("max-rounds", (v) => parseInt(v, 10));
  if (maxRounds !== undefined) request.max_rounds = maxRounds;
  const threshold = number("threshold", parseFloat);
  if (threshold !== undefined) request.quality_threshold = threshold;
  const budget = number("budget", parseFloat);
  if (budget !== undefined && budget > 0) request.budget_usd = budget;
  const critics = number("critics", (v) => parseInt(v, 10));
  if (critics !== undefined) request.critic_count = critics;
  const preferences = { ...(PREFERENCES[$("preference").value] || {}) };
  const pinned = $("pinned-model").value;
  if (pinned) preferences.pinned_model = pinned;
  if (Object.keys(preferences).length) request.preferences = preferences;
  show("ask");
  live.start(request);
});

// Ctrl/Cmd+Enter in the prompt starts the session.
$("prompt").addEventListener("keydown", (e) => {
  if (e.key === "Enter" && (e.ctrlKey || e.metaKey)) $("prompt-form").requestSubmit();
});

// ---- start-up ------------------------------------------------------------------------------------------------

async function loadModels() {
  try {
    const response = await api("/v1/models");
    setModels(response || {});
    $("sim-banner").hidden = !(response && response.simulated);
    const select = $("pinned-model");
    for (const m of catalogue()) {
      const option = document.createElement("option");
      option.value = m.id;
      option.textContent = m.simulated ? `${m.id} (simulated)` : m.id;
      select.appendChild(option);
    }
  } catch (err) {
    live.showError(`Could not load the model catalogue: ${err.message}`);
  }
}

// The catalogue first: a 401 there asks for the key before the WebSocket needs it.
await loadModels();
channel.connect();
route();
