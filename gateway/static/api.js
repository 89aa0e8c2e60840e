// @ts-check
// REST client: JSON in and out, the API key as a Bearer token, and a prompt for the key on 401.
import { byId } from "./render.js";

const KEY_STORAGE = "orx.apiKey";
const TIMEOUT_MS = 20000;

export class ApiError extends Error {
  /**
   * @param {number} status HTTP status
   * @param {string} code the API's error code, e.g. "INVALID_ARGUMENT"
   * @param {string} message
   * @param {string} [field] the offending field, when the API names one
   */
  constructor(status, code, message, field) {
    super(message);
    this.status = status;
    this.code = code;
    this.field = field;
  }
}

/** The stored API key, or "" (kept for this tab only). */
export function apiKey() {
  try {
    return sessionStorage.getItem(KEY_STORAGE) || "";
  } catch (_err) {
    return "";
  }
}

/** @param {string} key */
function storeKey(key) {
  try {
    if (key) sessionStorage.setItem(KEY_STORAGE, key);
    else sessionStorage.removeItem(KEY_STORAGE);
  } catch (_err) {
    // Storage disabled: the key lives only as long as this call.
  }
}

// One dialog at a time: concurrent 401s wait for the same answer.
/** @type {Promise<string> | null} */
let pendingKey = null;

/**
 * Ask the user for an API key (modal dialog). Resolves with the key, or "" if dismissed.
 * @param {string} [message]
 * @returns {Promise<string>}
 */
export function askForKey(message) {
  if (pendingKey) return pendingKey;
  const dialog = byId("key-dialog", HTMLDialogElement);
  const form = byId("key-form", HTMLFormElement);
  const input = byId("key-input", HTMLInputElement);
  const note = byId("key-message");
  note.textContent = message || "This gateway needs an API key.";
  input.value = "";
  pendingKey = new Promise((resolve) => {
    /** @param {string} key */
    const done = (key) => {
      form.removeEventListener("submit", onSubmit);
      dialog.removeEventListener("cancel", onCancel);
      if (dialog.open) dialog.close();
      pendingKey = null;
      resolve(key);
    };
    /** @param {SubmitEvent} e */
    const onSubmit = (e) => {
      e.preventDefault();
      const key = input.value.trim();
      storeKey(key);
      done(key);
    };
    const onCancel = () => done("");
    form.addEventListener("submit", onSubmit);
    dialog.addEventListener("cancel", onCancel);
    dialog.showModal();
    input.focus();
  });
  return pendingKey;
}

/** Forget the stored key (the server refused it). */
export function forgetKey() {
  storeKey("");
}

/**
 * Call the REST API. `body` is sent as JSON. Answers the parsed JSON (or null for 204).
 * On 401 the user is asked for a key once and the call is retried; other errors throw ApiError.
 * @param {string} path
 * @param {{method?: string, body?: unknown, query?: Record<string, unknown>}} [options]
 * @returns {Promise<any>}
 */
export async function api(path, { method = "GET", body, query } = {}) {
  let url = path;
  if (query) {
    const params = new URLSearchParams();
    for (const [k, v] of Object.entries(query)) if (v != null && v !== "") params.set(k, String(v));
    const qs = params.toString();
    if (qs) url += "?" + qs;
  }
  for (let attempt = 0; ; attempt++) {
    /** @type {Record<string, string>} */
    const headers = { Accept: "application/json" };
    if (body !== undefined) headers["Content-Type"] = "application/json";
    const key = apiKey();
    if (key) headers.Authorization = `Bearer ${key}`;
    const response = await fetch(url, {
      method,
      headers,
      body: body === undefined ? undefined : JSON.stringify(body),
      credentials: "same-origin",
      signal: AbortSignal.timeout(TIMEOUT_MS),
    });
    if (response.status === 401 && attempt < 2) {
      forgetKey();
      const entered = await askForKey(key ? "That API key was refused. Enter a valid key." : undefined);
      if (!entered) throw new ApiError(401, "UNAUTHENTICATED", "an API key is required");
      continue;
    }
    if (response.status === 204) return null;
    let data = null;
    try {
      data = await response.json();
    } catch (_err) {
      data = null;
    }
    if (!response.ok) {
      const err = (data && data.error) || {};
      throw new ApiError(response.status, err.code || String(response.status), err.message || response.statusText,
        err.field);
    }
    return data;
  }
}
