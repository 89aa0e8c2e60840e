// @ts-check
// OrchestrateX browser app: wiring, navigation (#/, #/session/<id>, #/sessions, #/dashboard) and the prompt form:
// its checks before sending, the server's field errors shown next to their field, a shown session's settings, and
// follow-ups in the shown session's thread.
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
const WEIGHTS = /** @type {const} */ (["quality_weight", "cost_weight", "latency_weight"]);

// The server's defaults (services/orchestrator/requests.py), for a session whose request omits a value.
const DEFAULTS = { max_rounds: 3, quality_threshold: 8, critic_count: 2 };
const MAX_ROUNDS = 10;

// A request field the gateway names in an error -> the input that sets it.
/** @type {Record<string, string>} */
const FIELD_INPUTS = {
  prompt: "prompt",
  max_rounds: "max-rounds",
  quality_threshold: "threshold",
  budget_usd: "budget",
  critic_count: "critics",
  "preferences.pinned_model": "pinned-model",
};

/**
 * The session an OrchestrateRequest came from, as `onSessionLoaded` reports it.
 * @typedef {object} ShownRequest
 * @property {string} [prompt]
 * @property {number} [max_rounds]
 * @property {number} [quality_threshold]
 * @property {number} [critic_count]
 * @property {number} [budget_usd]
 * @property {string} [thread_id]
 * @property {{quality_weight?: number, cost_weight?: number, latency_weight?: number, pinned_model?: string}} [preferences]
 */

/**
 * @typedef {object} SessionInfo
 * @property {string} sessionId
 * @property {string} [threadId]
 * @property {ShownRequest} [request]
 * @property {string} [status]
 */

const channel = new Channel();
const sessions = new SessionList();
const dashboard = new Dashboard();
const live = new LiveSession(channel, {
  onSessionChanged(id) {
    const hash = id ? `#/session/${encodeURIComponent(id)}` : "#/";
    if (location.hash !== hash) history.replaceState(null, "", hash);
  },
  onStartError(error) {
    return showServerError(error);
  },
  onSessionLoaded(info) {
    sessionLoaded(info);
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

// ---- field errors ------------------------------------------------------------------------------------------

const promptField = byId("prompt", HTMLTextAreaElement);
const promptForm = byId("prompt-form", HTMLFormElement);
const roundsField = byId("max-rounds", HTMLInputElement);
const criticsField = byId("critics", HTMLInputElement);
const preferenceField = byId("preference", HTMLSelectElement);
const pinnedField = byId("pinned-model", HTMLSelectElement);
const settingsNote = byId("settings-note");

/**
 * Show `message` under the input `id` (its aria-describedby names the message) and mark the input invalid.
 * @param {string} id
 * @param {string} message
 * @param {boolean} [focus]
 */
function setFieldError(id, message, focus = false) {
  const input = byId(id);
  const note = byId(`${id}-error`);
  note.textContent = message;
  note.hidden = false;
  input.setAttribute("aria-invalid", "true");
  if (focus) input.focus();
}

/** @param {string} id */
function clearFieldError(id) {
  const note = document.getElementById(`${id}-error`);
  if (!note || note.hidden) return;
  note.textContent = "";
  note.hidden = true;
  byId(id).removeAttribute("aria-invalid");
}

function clearFieldErrors() {
  for (const note of promptForm.querySelectorAll(".field-error")) {
    if (note instanceof HTMLElement) clearFieldError(note.id.replace(/-error$/, ""));
  }
}

/**
 * The gateway refused a start: put its message next to the field it names (the live view has already gone back
 * to what it showed before, and shows errors that name no field of this form itself).
 * @param {{code?: string, status?: number, message?: string, field?: string}} error
 * @returns {boolean} true when the message went next to a field (the live view then drops its own copy)
 */
function showServerError(error) {
  startedHere = false;
  const field = (error.field || "").replace(/^request\./, "");
  const id = FIELD_INPUTS[field] || (field.startsWith("preferences.") ? "preference" : "");
  if (!id) return false;
  // Messages read "<field>: <problem>"; next to the field, the problem says it all.
  const raw = String(error.message || "is not valid");
  const problem = raw.startsWith(`${error.field}: `) ? raw.slice(`${error.field}: `.length) : raw;
  setFieldError(id, sentence(problem), true);
  return true;
}

/** @param {string} text "must be at most 10" -> "Must be at most 10." */
function sentence(text) {
  const trimmed = text.trim();
  const capital = trimmed.charAt(0).toUpperCase() + trimmed.slice(1);
  return /[.!?]$/.test(capital) ? capital : `${capital}.`;
}

// Editing a field clears its error; any change to a setting also retires the "settings of session" note.
promptForm.addEventListener("input", (e) => {
  const target = e.target;
  if (!(target instanceof HTMLElement) || !target.id) return;
  clearFieldError(target.id);
  if (target !== promptField) settingsNote.textContent = "";
});
promptForm.addEventListener("change", (e) => {
  const target = e.target;
  if (target instanceof HTMLSelectElement) {
    clearFieldError(target.id);
    settingsNote.textContent = "";
  }
});

// ---- ranges ----------------------------------------------------------------------------------------------

/**
 * No critics means nothing can score a refinement: the server accepts one round only, so the form says so and
 * holds max rounds at 1 rather than sending a request it would refuse.
 */
function applyCriticRule() {
  const none = criticsField.value.trim() !== "" && Number(criticsField.value) === 0;
  roundsField.max = none ? "1" : String(MAX_ROUNDS);
  if (none && Number(roundsField.value) > 1) {
    roundsField.value = "1";
    clearFieldError("max-rounds");
  }
  byId("critics-note").hidden = !none;
}
criticsField.addEventListener("input", applyCriticRule);

/**
 * The first problem with an input's value, in words, or "" when it is fine.
 * @param {HTMLInputElement} input
 * @param {string} what e.g. "Max rounds"
 * @param {boolean} whole
 */
function rangeProblem(input, what, whole) {
  const v = input.validity;
  if (v.valid) return "";
  if (v.valueMissing) return `${what} is required.`;
  if (v.badInput) return `${what} must be a number.`;
  const kind = whole ? "a whole number" : "a number";
  if (input === roundsField && input.max === "1") {
    return "With no critics a session runs one round: max rounds must be 1.";
  }
  if (input.id === "budget") return "Budget must be greater than 0 and at most 1,000,000 USD (or empty for none).";
  return `${what} must be ${kind} from ${input.min} to ${input.max}.`;
}

/** Check every field before sending; shows each problem next to its field and focuses the first. */
function checkForm() {
  clearFieldErrors();
  /** @type {[string, string][]} */
  const problems = [];
  if (!promptField.value.trim()) problems.push(["prompt", "Write a prompt first."]);
  /** @type {[HTMLInputElement, string, boolean][]} */
  const numbers = [
    [roundsField, "Max rounds", true],
    [byId("threshold", HTMLInputElement), "Quality threshold", false],
    [byId("budget", HTMLInputElement), "Budget", false],
    [criticsField, "Critics", true],
  ];
  for (const [input, what, whole] of numbers) {
    const problem = rangeProblem(input, what, whole);
    if (problem) problems.push([input.id, problem]);
  }
  problems.forEach(([id, message], i) => setFieldError(id, message, i === 0));
  return problems.length === 0;
}

// ---- follow-ups ---------------------------------------------------------------------------------------------

/** The thread of the session on show (offered for a follow-up) and whether the next start continues it. */
const thread = { id: "", prompt: "", sessionId: "", active: false };
// True from a start on this form until its session is loaded: its settings are the form's own already.
let startedHere = false;

const followUp = byId("follow-up");
const followUpOffer = byId("follow-up-offer", HTMLButtonElement);

/**
 * @param {string} text
 * @param {number} length
 */
function excerpt(text, length) {
  const flat = text.replace(/\s+/g, " ").trim();
  return flat.length > length ? `${flat.slice(0, length - 1)}…` : flat;
}

function renderFollowUp() {
  followUp.hidden = !thread.active;
  followUpOffer.hidden = thread.active || !thread.id;
  byId("follow-up-context").textContent = thread.active && thread.prompt
    ? `Previous turn: “${excerpt(thread.prompt, 80)}”` : "";
}

followUpOffer.addEventListener("click", () => {
  thread.active = true;
  // The previous question still in the field is no draft: make room for the follow-up.
  if (promptField.value.trim() === thread.prompt.trim()) promptField.value = "";
  renderFollowUp();
  promptField.focus();
});
byId("follow-up-clear").addEventListener("click", () => {
  thread.active = false;
  clearFieldError("prompt");
  renderFollowUp();
  promptField.focus();
});

/**
 * A fresh thread id: every session asked here starts or continues a thread, so any of them can be followed up
 * (the orchestrator keys a thread's turns on `thread_id`, exactly as the CLI's `--thread`).
 */
function newThreadId() {
  if (typeof crypto.randomUUID === "function") return crypto.randomUUID();
  const bytes = crypto.getRandomValues(new Uint8Array(16)); // randomUUID needs a secure context
  return Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join("");
}

// ---- a shown session's settings -----------------------------------------------------------------------------

/**
 * @param {string} id
 * @param {number | undefined} value
 */
function setNumber(id, value) {
  byId(id, HTMLInputElement).value = value == null || !Number.isFinite(Number(value)) ? "" : String(value);
}

/**
 * The preset whose weights the session used, or "custom" (the weights then ride on the option).
 * @param {ShownRequest["preferences"]} prefs
 */
function preferenceOf(prefs) {
  const p = prefs || {};
  if (WEIGHTS.every((w) => p[w] == null)) return "balanced";
  for (const [name, weights] of Object.entries(PREFERENCES)) {
    if (weights && WEIGHTS.every((w) => Number(p[w] || 0) === weights[w])) return name;
  }
  return "custom";
}

/** @param {SessionInfo} info */
function sessionLoaded(info) {
  const request = info.request || {};
  const threadId = info.threadId || request.thread_id || "";
  // A session of another thread ends a follow-up in progress; one of the same thread moves it on.
  if (thread.active && threadId !== thread.id) thread.active = false;
  Object.assign(thread, { id: threadId, prompt: request.prompt || "", sessionId: info.sessionId });
  renderFollowUp();
  const ownSettings = startedHere;
  startedHere = false;
  if (!info.request || ownSettings) return;

  clearFieldErrors();
  setNumber("max-rounds", request.max_rounds ?? DEFAULTS.max_rounds);
  setNumber("threshold", request.quality_threshold ?? DEFAULTS.quality_threshold);
  setNumber("budget", request.budget_usd);
  setNumber("critics", request.critic_count ?? DEFAULTS.critic_count);
  applyCriticRule();
  const prefs = request.preferences || {};
  const preference = preferenceOf(prefs);
  const custom = /** @type {HTMLOptionElement} */ (preferenceField.querySelector('option[value="custom"]'));
  custom.hidden = preference !== "custom";
  custom.dataset.weights = preference === "custom"
    ? JSON.stringify(Object.fromEntries(WEIGHTS.map((w) => [w, Number(prefs[w] || 0)]))) : "";
  preferenceField.value = preference;
  const pinned = prefs.pinned_model || "";
  if (pinned && ![...pinnedField.options].some((o) => o.value === pinned)) {
    const option = document.createElement("option");
    option.value = pinned;
    option.textContent = `${pinned} (not in the catalogue)`;
    pinnedField.appendChild(option);
  }
  pinnedField.value = pinned;
  settingsNote.textContent = `Settings of session ${info.sessionId.slice(0, 8)}.`;
}

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

promptForm.addEventListener("submit", (e) => {
  e.preventDefault();
  if (!checkForm()) return;
  /** @type {{prompt: string, max_rounds?: number, quality_threshold?: number, budget_usd?: number,
   *   critic_count?: number, thread_id?: string, preferences?: {[key: string]: unknown}}} */
  const request = { prompt: promptField.value };
  const maxRounds = number("max-rounds", (v) => parseInt(v, 10));
  if (maxRounds !== undefined) request.max_rounds = maxRounds;
  const threshold = number("threshold", parseFloat);
  if (threshold !== undefined) request.quality_threshold = threshold;
  const budget = number("budget", parseFloat);
  if (budget !== undefined && budget > 0) request.budget_usd = budget;
  const critics = number("critics", (v) => parseInt(v, 10));
  if (critics !== undefined) request.critic_count = critics;
  /** @type {{[key: string]: unknown}} */
  let preferences = { ...(PREFERENCES[preferenceField.value] || {}) };
  if (preferenceField.value === "custom") {
    const custom = preferenceField.selectedOptions[0];
    preferences = JSON.parse((custom && custom.dataset.weights) || "{}");
  }
  const pinned = pinnedField.value;
  if (pinned) preferences.pinned_model = pinned;
  if (Object.keys(preferences).length) request.preferences = preferences;
  request.thread_id = thread.active && thread.id ? thread.id : newThreadId();
  settingsNote.textContent = "";
  startedHere = true;
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
    for (const m of catalogue()) {
      const option = document.createElement("option");
      option.value = m.id;
      option.textContent = m.simulated ? `${m.id} (simulated)` : m.id;
      pinnedField.appendChild(option);
    }
  } catch (err) {
    live.showError(`Could not load the model catalogue: ${err instanceof Error ? err.message : err}`);
  }
}

// The catalogue first: a 401 there asks for the key before the WebSocket needs it.
await loadModels();
channel.connect();
route();
