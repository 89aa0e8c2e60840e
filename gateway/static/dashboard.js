// @ts-check
// Analytics dashboard: performance per model and domain, cost over time, satisfaction, selection accuracy.
import { api } from "./api.js";
import { chart, colour, destroyChart } from "./charts.js";
import { byId, enumLabel, make, modelLabel, num, plural, seconds, text, usd } from "./render.js";

// The reports are proto JSON straight from the API: their shapes are documented in docs/contracts.md.
/** @typedef {any} Report */

/** @param {unknown} x */
const pct = (x) => `${num(Number(x || 0) * 100, 0)}%`;


/** @param {string} id */
const canvasById = (id) => byId(id, HTMLCanvasElement);

/**
 * @param {string} label
 * @param {string} value
 * @param {string} [detail]
 */
function kpi(label, value, detail) {
  const div = make("div", null, "kpi");
  div.appendChild(make("div", value, "kpi-value"));
  div.appendChild(make("div", label, "kpi-label"));
  if (detail) div.appendChild(make("div", detail, "kpi-detail"));
  return div;
}

/**
 * @param {HTMLCanvasElement} canvas
 * @returns {HTMLElement}
 */
function chartBox(canvas) {
  const box = canvas.closest(".chart-box");
  if (!(box instanceof HTMLElement)) throw new Error(`#${canvas.id} is not in a .chart-box`);
  return box;
}

/**
 * @param {HTMLCanvasElement} canvas
 * @param {string} message
 */
function empty(canvas, message) {
  const box = chartBox(canvas);
  destroyChart(canvas);
  box.dataset.empty = "true";
  const note = box.querySelector(".chart-empty");
  if (note) text(note, message);
}

/** @param {HTMLCanvasElement} canvas */
function filled(canvas) {
  delete chartBox(canvas).dataset.empty;
}

export class Dashboard {
  constructor() {
    this.note = byId("dashboard-note");
    byId("dashboard-refresh").addEventListener("click", () => this.load());
  }

  async load() {
    text(this.note, "Loading…");
    const results = await Promise.allSettled([
      api("/v1/analytics/performance"),
      api("/v1/analytics/costs"),
      api("/v1/analytics/satisfaction"),
      api("/v1/analytics/selection-accuracy"),
    ]);
    const [perf, cost, sat, acc] = results.map((r) => (r.status === "fulfilled" ? r.value || {} : null));
    const failed = results.map((r) => (r.status === "rejected" ? String(r.reason && r.reason.message) : null))
      .filter((m) => m != null);
    text(this.note, failed.length ? `Some reports are unavailable: ${failed.join("; ")}` : "");
    this.kpis(cost, sat, acc);
    if (perf) this.performance(perf);
    if (cost) this.costs(cost);
    if (sat) this.satisfaction(sat);
    if (acc) this.accuracy(acc);
    byId("dashboard").dataset.loaded = "true";
  }

  /**
   * @param {Report} cost
   * @param {Report} sat
   * @param {Report} acc
   */
  kpis(cost, sat, acc) {
    const box = byId("kpis");
    box.replaceChildren();
    if (cost) {
      box.appendChild(kpi("Total cost", usd(cost.total_cost_usd), plural(cost.calls, "provider call")));
      box.appendChild(kpi("Sessions", String(Number(cost.session_count || 0)),
        plural((cost.usage || {}).total_tokens, "token")));
    }
    if (sat) {
      const overall = sat.overall || {};
      box.appendChild(kpi("Satisfaction", Number(overall.count || 0) ? `${num(overall.mean, 2)} / 5` : "—",
        plural(overall.count, "rating")));
    }
    if (acc) {
      const shadow = acc.shadow || {};
      box.appendChild(kpi("Selection accuracy (shadow)", Number(shadow.sample_size || 0) ? pct(shadow.accuracy) : "—",
        Number(shadow.sample_size || 0)
          ? `95% CI ${pct(shadow.ci_low)}–${pct(shadow.ci_high)}, n=${shadow.sample_size}` : "no sampled sessions yet"));
      const fb = acc.feedback || {};
      box.appendChild(kpi("Selection accuracy (ratings)", Number(fb.sample_size || 0) ? pct(fb.accuracy) : "—",
        Number(fb.sample_size || 0) ? `95% CI ${pct(fb.ci_low)}–${pct(fb.ci_high)}, n=${fb.sample_size}` : "no ratings yet"));
    }
  }

  /** @param {Report} perf */
  performance(perf) {
    /** @type {Report[]} */
    const models = perf.models || [];
    const canvas = canvasById("chart-performance");
    if (!models.length) {
      empty(canvas, "No provider calls recorded yet.");
    } else {
      filled(canvas);
      const labels = models.map((m) => m.model);
      chart(canvas, "bar", {
        labels,
        datasets: [
          { label: "Mean score as author (0-10)", data: models.map((m) => Number(m.mean_score_as_author || 0)),
            backgroundColor: colour(0), yAxisID: "y" },
          { label: "Success rate (%)", data: models.map((m) => Number(m.success_rate || 0) * 100),
            backgroundColor: colour(2), yAxisID: "y1" },
        ],
      }, {
        scales: {
          y: { min: 0, max: 10, title: { display: true, text: "score" } },
          y1: { min: 0, max: 100, position: "right", grid: { drawOnChartArea: false },
            title: { display: true, text: "success %" } },
        },
      }, "Mean author score per model: " + models.map((m) => `${m.model} ${num(m.mean_score_as_author, 2)}`).join(", "));
    }
    const body = byId("performance-body");
    body.replaceChildren();
    for (const m of models) {
      const tr = make("tr");
      const cell = make("td");
      cell.appendChild(modelLabel(m.model));
      tr.appendChild(cell);
      tr.appendChild(make("td", Number(m.calls || 0), "num"));
      tr.appendChild(make("td", pct(m.success_rate), "num"));
      tr.appendChild(make("td", Number(m.critiques_received || 0) ? num(m.mean_score_as_author, 2) : "—", "num"));
      tr.appendChild(make("td", seconds(m.ttft_p50) || "—", "num"));
      tr.appendChild(make("td", seconds(m.latency_p50) || "—", "num"));
      tr.appendChild(make("td", usd((m.usage || {}).cost_usd), "num"));
      body.appendChild(tr);
    }
    this.heatmap(perf.by_domain || []);
  }

  /**
   * Model x domain mean author score, as a table with shaded cells (readable by screen readers too).
   * @param {Report[]} rows
   */
  heatmap(rows) {
    const table = byId("domain-table", HTMLTableElement);
    const head = table.tHead && table.tHead.rows[0];
    const body = table.tBodies[0];
    if (!head || !body) throw new Error("#domain-table needs a header row and a body");
    head.replaceChildren(make("th", "Model"));
    body.replaceChildren();
    const domains = [...new Set(rows.map((r) => r.domain).filter(Boolean))].sort();
    const models = [...new Set(rows.map((r) => r.model))].sort();
    table.hidden = !rows.length;
    byId("domain-empty").hidden = Boolean(rows.length);
    for (const d of domains) head.appendChild(make("th", enumLabel(d, "DOMAIN_")));
    const index = new Map(rows.map((r) => [`${r.model}|${r.domain}`, r]));
    for (const m of models) {
      const tr = make("tr");
      const th = make("th");
      th.scope = "row";
      th.appendChild(modelLabel(m));
      tr.appendChild(th);
      for (const d of domains) {
        const r = index.get(`${m}|${d}`);
        const scored = r && Number(r.critiques_received || 0) > 0;
        const td = make("td", scored ? num(r.mean_score_as_author, 1) : "—", "num heat");
        if (scored) td.dataset.level = String(Math.max(0, Math.min(10, Math.round(Number(r.mean_score_as_author)))));
        if (r) td.title = `${plural(r.calls, "call")}, ${pct(r.success_rate)} success`;
        tr.appendChild(td);
      }
      body.appendChild(tr);
    }
  }

  /** @param {Report} cost */
  costs(cost) {
    /** @type {Report[]} */
    const days = cost.days || [];
    const canvas = canvasById("chart-cost");
    if (!days.length) {
      empty(canvas, "No spending recorded yet.");
    } else {
      filled(canvas);
      chart(canvas, "bar", {
        labels: days.map((d) => d.day),
        datasets: [{ label: "Cost (USD)", data: days.map((d) => Number(d.cost_usd || 0)), backgroundColor: colour(1) }],
      }, { scales: { y: { beginAtZero: true, title: { display: true, text: "USD" } } } },
      "Cost per day: " + days.map((d) => `${d.day} ${usd(d.cost_usd)}`).join(", "));
    }
    /** @type {Report[]} */
    const models = cost.models || [];
    const canvas2 = canvasById("chart-cost-models");
    if (!models.length) {
      empty(canvas2, "No spending per model yet.");
    } else {
      filled(canvas2);
      chart(canvas2, "doughnut", {
        labels: models.map((m) => m.model),
        datasets: [{ data: models.map((m) => Number(m.cost_usd || 0)), backgroundColor: models.map((_m, i) => colour(i)) }],
      }, { plugins: { legend: { position: "bottom" } } },
      "Cost per model: " + models.map((m) => `${m.model} ${usd(m.cost_usd)}`).join(", "));
    }
  }

  /** @param {Report} sat */
  satisfaction(sat) {
    const overall = sat.overall || {};
    /** @type {Map<number, number>} */
    const dist = new Map((overall.distribution || []).map((/** @type {Report} */ d) => [Number(d.rating), Number(d.count || 0)]));
    const canvas = canvasById("chart-satisfaction");
    if (!Number(overall.count || 0)) {
      empty(canvas, "No ratings yet: rate an answer to see it here.");
    } else {
      filled(canvas);
      const ratings = [1, 2, 3, 4, 5];
      chart(canvas, "bar", {
        labels: ratings.map((r) => `${r} ★`),
        datasets: [{ label: "Ratings", data: ratings.map((r) => dist.get(r) || 0), backgroundColor: colour(4) }],
      }, { scales: { y: { beginAtZero: true, ticks: { precision: 0 } } }, plugins: { legend: { display: false } } },
      "Ratings: " + ratings.map((r) => `${plural(r, "star")}: ${plural(dist.get(r), "rating")}`).join(", "));
    }
    /** @type {Report[]} */
    const byModel = sat.by_model || [];
    const canvas2 = canvasById("chart-satisfaction-models");
    if (!byModel.length) {
      empty(canvas2, "No ratings per model yet.");
    } else {
      filled(canvas2);
      chart(canvas2, "bar", {
        labels: byModel.map((s) => s.key),
        datasets: [{ label: "Mean rating", data: byModel.map((s) => Number(s.mean || 0)), backgroundColor: colour(3) }],
      }, { indexAxis: "y", scales: { x: { min: 0, max: 5 } }, plugins: { legend: { display: false } } },
      "Mean rating per model: " + byModel.map((s) => `${s.key} ${num(s.mean, 2)}`).join(", "));
    }
  }

  /** @param {Report} acc */
  accuracy(acc) {
    text(byId("accuracy-definition"), acc.definition || "");
    /** @type {Report[]} */
    const rows = (acc.by_domain || []).filter((/** @type {Report} */ d) => Number((d.shadow || {}).sample_size || 0) > 0);
    const canvas = canvasById("chart-accuracy");
    if (!rows.length) {
      empty(canvas, "No shadow evaluations yet (a sample of sessions also asks a runner-up).");
      return;
    }
    filled(canvas);
    chart(canvas, "bar", {
      labels: rows.map((d) => `${enumLabel(d.domain, "DOMAIN_")} (n=${d.shadow.sample_size})`),
      datasets: [{ label: "Shadow accuracy (%)", data: rows.map((d) => Number(d.shadow.accuracy || 0) * 100),
        backgroundColor: colour(5) }],
    }, { scales: { y: { min: 0, max: 100 } }, plugins: { legend: { display: false } } },
    "Shadow accuracy per domain: " + rows.map((d) => `${enumLabel(d.domain, "DOMAIN_")} ${pct(d.shadow.accuracy)}`).join(", "));
  }
}
