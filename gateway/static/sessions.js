// @ts-check
// Past sessions: a paged list, newest first, filtered by status and searched by prompt text; each row opens its
// session in the live view, which replays its events.
import { api } from "./api.js";
import { byId, enumLabel, make, modelLabel, num, usd, when } from "./render.js";

const PAGE_SIZE = 20;
// Typing pauses this long before the list asks again: one request per word, not per key.
const SEARCH_DELAY_MS = 300;

/** @type {Record<string, string>} */
const TONES = { completed: "good", running: "warn", failed: "bad", cancelled: "bad" };

/**
 * One row of `GET /v1/orchestrations` (a stored Session, proto field names).
 * @typedef {object} SessionRow
 * @property {string} session_id
 * @property {string} [create_time]
 * @property {{prompt?: string}} [request]
 * @property {string} [status]
 * @property {string} [primary_model]
 * @property {string} [primary_domain]
 * @property {{unscored?: boolean, final_score?: number, total_cost_usd?: number}} [result]
 * @property {{total_cost_usd?: number}} [failure]
 */

/**
 * A table cell labelled with its column (the label shows when the table stacks on a phone).
 * @param {string} label
 * @param {string | null} value
 * @param {string} [className]
 */
function cell(label, value, className) {
  const td = make("td", value, className);
  td.dataset.label = label;
  return td;
}

export class SessionList {
  constructor() {
    this.body = byId("sessions-body");
    this.more = byId("sessions-more");
    this.note = byId("sessions-note");
    this.filter = byId("sessions-status", HTMLSelectElement);
    this.search = byId("sessions-q", HTMLInputElement);
    this.nextToken = "";
    // Answers to superseded loads (an older search still in flight) are dropped.
    this.loadToken = 0;
    /** @type {number | undefined} */
    this.searchTimer = undefined;
    this.more.addEventListener("click", () => this.load(false));
    this.filter.addEventListener("change", () => this.load(true));
    this.search.addEventListener("input", () => {
      window.clearTimeout(this.searchTimer);
      this.searchTimer = window.setTimeout(() => this.load(true), SEARCH_DELAY_MS);
    });
    // Enter searches at once (a search field inside no form submits nothing by itself).
    this.search.addEventListener("keydown", (e) => {
      if (e.key !== "Enter") return;
      window.clearTimeout(this.searchTimer);
      this.load(true);
    });
    byId("sessions-refresh").addEventListener("click", () => this.load(true));
  }

  async load(fresh = true) {
    const token = ++this.loadToken;
    const q = this.search.value.trim();
    const pageToken = fresh ? "" : this.nextToken;
    const list = byId("view-sessions");
    list.dataset.loading = "true";
    this.note.textContent = "Loading…";
    try {
      const page = await api("/v1/orchestrations", {
        query: { page_size: PAGE_SIZE, page_token: pageToken, status: this.filter.value, q },
      });
      if (token !== this.loadToken) return;
      if (fresh) this.body.replaceChildren();
      for (const s of (page && page.sessions) || []) this.body.appendChild(this.row(s));
      this.nextToken = (page && page.next_page_token) || "";
      this.more.hidden = !this.nextToken;
      let empty = "No sessions yet: ask something first.";
      if (q) empty = `No sessions match “${q}”.`;
      else if (this.filter.value) empty = `No ${this.filter.value} sessions.`;
      this.note.textContent = this.body.childNodes.length ? "" : empty;
      list.dataset.query = q;
    } catch (err) {
      if (token !== this.loadToken) return;
      this.note.textContent = `Could not load sessions: ${err instanceof Error ? err.message : err}`;
    } finally {
      if (token === this.loadToken) delete list.dataset.loading;
    }
  }

  /**
   * A row that opens its session wherever it is clicked: the prompt is the row's link (so keyboards and screen
   * readers reach it) and the stylesheet stretches the link over the whole row.
   * @param {SessionRow} s
   */
  row(s) {
    const tr = make("tr", null, "row-link");
    tr.dataset.sessionId = s.session_id;
    tr.appendChild(cell("Started", when(s.create_time), "nowrap"));
    const prompt = cell("Prompt", null, "prompt-cell");
    const link = make("a", ((s.request || {}).prompt || "(no prompt)").slice(0, 140));
    link.href = `#/session/${encodeURIComponent(s.session_id)}`;
    link.title = "Open and replay this session";
    prompt.appendChild(link);
    tr.appendChild(prompt);
    const status = enumLabel(s.status, "SESSION_STATUS_") || "unknown";
    const pill = make("span", status, `pill pill-${TONES[status] || "muted"}`);
    const statusCell = cell("Status", null);
    statusCell.appendChild(pill);
    tr.appendChild(statusCell);
    const model = cell("Primary", null, "model-cell");
    if (s.primary_model) model.appendChild(modelLabel(s.primary_model));
    tr.appendChild(model);
    tr.appendChild(cell("Domain", enumLabel(s.primary_domain, "DOMAIN_")));
    const result = s.result || {};
    const failure = s.failure || {};
    const score = !s.result ? "—" : result.unscored ? "unscored" : num(result.final_score, 2);
    tr.appendChild(cell("Score", score, "num"));
    tr.appendChild(cell("Cost", usd(result.total_cost_usd || failure.total_cost_usd), "num"));
    return tr;
  }
}
