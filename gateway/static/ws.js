// @ts-check
// One WebSocket to /v1/ws that reconnects with backoff and authenticates with the first message.
// Resuming streams after a reconnect is the listeners' job (they get an "open" callback each time).
import { apiKey, askForKey, forgetKey } from "./api.js";

const UNAUTHENTICATED = 4401;

/**
 * What a listener of each kind receives: "open" after every (re)connect, "message" each parsed server message,
 * "status" the connection's state ("connecting", "connected", "disconnected" with the close code,
 * "unauthenticated").
 * @typedef {{open: () => void, message: (msg: any) => void, status: (status: string, code?: number) => void}} Listeners
 */

export class Channel {
  constructor() {
    /** @type {WebSocket | null} */
    this.ws = null;
    this.retries = 0;
    this.ready = false; // open (and authenticated when a key is used)
    this.nextRef = 1;
    /** @type {{[K in keyof Listeners]: Listeners[K][]}} */
    this.listeners = { open: [], message: [], status: [] };
    /** @type {number | undefined} */
    this.timer = undefined;
  }

  /**
   * @template {keyof Listeners} K
   * @param {K} kind
   * @param {Listeners[K]} fn
   */
  on(kind, fn) {
    this.listeners[kind].push(fn);
  }

  /**
   * @template {keyof Listeners} K
   * @param {K} kind
   * @param {Parameters<Listeners[K]>} args
   */
  emit(kind, ...args) {
    for (const fn of this.listeners[kind]) /** @type {(...a: Parameters<Listeners[K]>) => void} */ (fn)(...args);
  }

  connect() {
    window.clearTimeout(this.timer);
    const scheme = location.protocol === "https:" ? "wss:" : "ws:";
    const ws = new WebSocket(`${scheme}//${location.host}/v1/ws`);
    this.ws = ws;
    this.ready = false;
    this.emit("status", "connecting");
    const key = apiKey();

    ws.addEventListener("open", () => {
      if (key) ws.send(JSON.stringify({ type: "auth", key }));
      else this.opened();
    });
    ws.addEventListener("message", (e) => {
      let msg;
      try {
        msg = JSON.parse(e.data);
      } catch (_err) {
        return;
      }
      if (!this.ready && ((msg.type === "ack" && msg.action === "auth") || msg.type === "error")) {
        // An error answering `auth` means this gateway takes no keys: the socket is usable as it is.
        this.opened();
        if (msg.type === "ack") return;
      }
      this.emit("message", msg);
    });
    ws.addEventListener("close", (e) => this.closed(ws, e));
  }

  opened() {
    this.retries = 0;
    this.ready = true;
    this.emit("status", "connected");
    this.emit("open");
  }

  /**
   * @param {WebSocket} ws
   * @param {CloseEvent} e
   */
  async closed(ws, e) {
    if (this.ws !== ws) return;
    this.ws = null;
    this.ready = false;
    if (e.code === UNAUTHENTICATED) {
      forgetKey();
      this.emit("status", "unauthenticated");
      const key = await askForKey("The live connection needs an API key.");
      if (key) this.connect();
      return;
    }
    this.emit("status", "disconnected", e.code);
    const delay = Math.min(10000, 250 * 2 ** this.retries);
    this.retries += 1;
    this.timer = window.setTimeout(() => this.connect(), delay);
  }

  /**
   * Send a client message; answers its ref, or null when not connected.
   * @param {object} message
   * @returns {number | null}
   */
  send(message) {
    if (!this.ready || !this.ws || this.ws.readyState !== WebSocket.OPEN) return null;
    const ref = this.nextRef++;
    this.ws.send(JSON.stringify({ ...message, ref }));
    return ref;
  }
}
