// @ts-check
// OrchestrateX browser app: wiring, navigation (#/, #/session/<id>, #/sessions, #/dashboard) and the prompt form.
import { api } from "./api.js";
import { Dashboard } from "./dashboard.js";
import { LiveSession } from "./live.js";
import { byId, catalogue, setModels, setPill } from "./render.js";
import { SessionList } from "./sessions.js";
import { Channel } from "./ws.js";

// Selection weights (quality, cost, latency) per preference; "balanced" leaves the service defaults.
/** @type {Record<string, {quality_weight: number, cost_weight: number, latency_weight: number} | null>} */
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

const VIEWS = { ask: byId("view-ask"), sessions: byId("view-sessions"), dashboard: byId("view-dashboard") };

/** @param {keyof typeof VIEWS} view */
function show(view) {
  for (const [name, el] of Object.entries(VIEWS)) el.hidden = name !== view;
  for (const link of document.querySelectorAll("nav.tabs a")) {
    if (!(link instanceof HTMLElement)) continue;
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
  const pill = byId("connection");
  if (status === "connected") setPill(pill, "live", "good");
  else if (status === "connecting") setPill(pill, "connecting…", "muted");
  else if (status === "unauthenticated") setPill(pill, "API key needed", "bad");
  else setPill(pill, `reconnecting (${code})…`, "bad");
  pill.dataset.state = status;
  byId("start", HTMLButtonElement).disabled = status !== "connected" || live.running;
});

// ---- the form ----------------------------------------------------------------------------------------------

/**
 * The number in input `id`, or undefined when it holds none.
 * @param {string} id
 * @param {(value: string) => number} parse
 */
function number(id, parse) {
  const value = parse(byId(id, HTMLInputElement).value);
  return Number.isFinite(value) ? value : undefined;
}

const promptField = byId("prompt", HTMLTextAreaElement);
const promptForm = byId("prompt-form", HTMLFormElement);

promptForm.addEventListener("submit", (e) => {
  e.preventDefault();
  const prompt = promptField.value;
  if (!prompt.trim()) {
    live.showError("Write a prompt first.");
    promptField.focus();
    return;
  }
  /** @type {{prompt: string, max_rounds?: number, quality_threshold?: number, budget_usd?: number,
   *   critic_count?: number, preferences?: {[key: string]: unknown}}} */
  const request = { prompt };
  const maxRounds = number("max-rounds", (v) => parseInt(v, 10));
  if (maxRounds !== undefined) request.max_rounds = maxRounds;
  const threshold = number("threshold", parseFloat);
  if (threshold !== undefined) request.quality_threshold = threshold;
  const budget = number("budget", parseFloat);
  if (budget !== undefined && budget > 0) request.budget_usd = budget;
  const critics = number("critics", (v) => parseInt(v, 10));
  if (critics !== undefined) request.critic_count = critics;
  /** @type {{[key: string]: unknown}} */
  const preferences = { ...(PREFERENCES[byId("preference", HTMLSelectElement).value] || {}) };
  const pinned = byId("pinned-model", HTMLSelectElement).value;
  if (pinned) preferences.pinned_model = pinned;
  if (Object.keys(preferences).length) request.preferences = preferences;
  show("ask");
  live.start(request);
});

// Ctrl/Cmd+Enter in the prompt starts the session.
promptField.addEventListener("keydown", (e) => {
  if (e.key === "Enter" && (e.ctrlKey || e.metaKey)) promptForm.requestSubmit();
});

// ---- start-up ------------------------------------------------------------------------------------------------

async function loadModels() {
  try {
    const response = await api("/v1/models");
    setModels(response || {});
    byId("sim-banner").hidden = !(response && response.simulated);
    const select = byId("pinned-model", HTMLSelectElement);
    for (const m of catalogue()) {
      const option = document.createElement("option");
      option.value = m.id;
      option.textContent = m.simulated ? `${m.id} (simulated)` : m.id;
      select.appendChild(option);
    }
  } catch (err) {
    live.showError(`Could not load the model catalogue: ${err instanceof Error ? err.message : err}`);
  }
}

// The catalogue first: a 401 there asks for the key before the WebSocket needs it.
await loadModels();
channel.connect();
route();
