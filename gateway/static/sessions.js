// @ts-check
// Past sessions: a paged list, newest first; each opens in the live view, which replays its events.
import { api } from "./api.js";
import { byId, enumLabel, make, modelLabel, num, usd, when } from "./render.js";

const PAGE_SIZE = 20;

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

export class SessionList {
  constructor() {
    this.body = byId("sessions-body");
    this.more = byId("sessions-more");
    this.note = byId("sessions-note");
    this.filter = byId("sessions-status", HTMLSelectElement);
    this.nextToken = "";
    this.more.addEventListener("click", () => this.load(false));
    this.filter.addEventListener("change", () => this.load(true));
    byId("sessions-refresh").addEventListener("click", () => this.load(true));
  }

  async load(fresh = true) {
    if (fresh) {
      this.nextToken = "";
      this.body.replaceChildren();
    }
    this.note.textContent = "Loading…";
    try {
      const page = await api("/v1/orchestrations", {
        query: { page_size: PAGE_SIZE, page_token: this.nextToken, status: this.filter.value },
      });
      for (const s of (page && page.sessions) || []) this.body.appendChild(this.row(s));
      this.nextToken = (page && page.next_page_token) || "";
      this.more.hidden = !this.nextToken;
      this.note.textContent = this.body.childNodes.length ? "" : "No sessions yet: ask something first.";
    } catch (err) {
      this.note.textContent = `Could not load sessions: ${err instanceof Error ? err.message : err}`;
    }
  }

  /** @param {SessionRow} s */
  row(s) {
    const tr = make("tr");
    tr.dataset.sessionId = s.session_id;
    tr.appendChild(make("td", when(s.create_time), "nowrap"));
    const prompt = make("td", null, "prompt-cell");
    const link = make("a", ((s.request || {}).prompt || "(no prompt)").slice(0, 140));
    link.href = `#/session/${encodeURIComponent(s.session_id)}`;
    link.title = "Open and replay this session";
    prompt.appendChild(link);
    tr.appendChild(prompt);
    const status = enumLabel(s.status, "SESSION_STATUS_") || "unknown";
    const pill = make("span", status, `pill pill-${TONES[status] || "muted"}`);
    const statusCell = make("td");
    statusCell.appendChild(pill);
    tr.appendChild(statusCell);
    const model = make("td");
    if (s.primary_model) model.appendChild(modelLabel(s.primary_model));
    tr.appendChild(model);
    tr.appendChild(make("td", enumLabel(s.primary_domain, "DOMAIN_")));
    const result = s.result || {};
    const failure = s.failure || {};
    const score = !s.result ? "—" : result.unscored ? "unscored" : num(result.final_score, 2);
    tr.appendChild(make("td", score, "num"));
    tr.appendChild(make("td", usd(result.total_cost_usd || failure.total_cost_usd), "num"));
    return tr;
  }
}
