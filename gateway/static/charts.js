// @ts-check
// Thin wrappers around Chart.js (vendor/chartjs/chart.umd.min.js, loaded as a classic script: window.Chart).
// Every chart also gets a text summary as its aria-label, since a canvas says nothing to a screen reader.

/**
 * The parts of Chart.js this app uses (it is a classic script, so its types are not imported).
 * @typedef {{data: {labels?: unknown[], datasets: object[]}, update(mode?: string): void, destroy(): void}} ChartInstance
 * @typedef {{
 *   new (canvas: HTMLCanvasElement, config: {type: string, data: object, options: object}): ChartInstance,
 *   getChart(canvas: HTMLCanvasElement): ChartInstance | undefined,
 * }} ChartClass
 * @typedef {{label?: string, data: (number | null)[], maxBarThickness?: number, [option: string]: unknown}} Dataset
 */

/** @returns {ChartClass | undefined} */
const ChartJs = () => /** @type {{Chart?: ChartClass}} */ (/** @type {unknown} */ (window)).Chart;

const PALETTE = ["#3056d3", "#d9480f", "#2b8a3e", "#ae3ec9", "#1098ad", "#e67700", "#c2255c", "#5c940d"];

/**
 * @param {string} name
 * @param {string} fallback
 */
function css(name, fallback) {
  const value = getComputedStyle(document.documentElement).getPropertyValue(name).trim();
  return value || fallback;
}

/**
 * Text and borders without a colour of their own (axis titles, for one) follow the page's scheme.
 * @param {unknown} Chart
 */
function schemeDefaults(Chart) {
  const defaults = /** @type {{defaults?: {color?: string, borderColor?: string}}} */ (Chart).defaults;
  if (!defaults) return;
  defaults.color = css("--text", "#1d2330");
  defaults.borderColor = css("--border", "#dde1e7");
}

/**
 * Give a chart's options the page's current text and grid colours (where the chart's own options set them).
 * @param {{[option: string]: any}} opts
 */
function recolour(opts) {
  const text = css("--text", "#1d2330");
  const grid = css("--border", "#dde1e7");
  opts.color = text;
  if (opts.plugins && opts.plugins.legend && opts.plugins.legend.labels) opts.plugins.legend.labels.color = text;
  for (const scale of Object.values(opts.scales || {})) {
    if (scale.ticks) scale.ticks.color = text;
    if (scale.grid) scale.grid.color = grid;
    if (scale.title) scale.title.color = text;
  }
}

// Colours are read when a chart is made, so a scheme that changes later (the system's dark mode at dusk)
// recolours the charts on the page.
matchMedia("(prefers-color-scheme: dark)").addEventListener("change", () => {
  const Chart = /** @type {{instances?: {[id: string]: ChartInstance & {options: object}}} | undefined} */ (
    /** @type {unknown} */ (ChartJs()));
  if (!Chart || !Chart.instances) return;
  schemeDefaults(Chart);
  for (const instance of Object.values(Chart.instances)) {
    recolour(instance.options);
    instance.update("none");
  }
});

/** @param {number} i */
export function colour(i) {
  return PALETTE[i % PALETTE.length];
}

/** @returns {{[option: string]: any}} */
function base() {
  const text = css("--text", "#1d2330");
  const grid = css("--border", "#dde1e7");
  return {
    responsive: true,
    maintainAspectRatio: false,
    // Motion only for those who have not asked for less (WCAG 2.3.3); screenshots then show the final chart.
    animation: matchMedia("(prefers-reduced-motion: reduce)").matches ? false : { duration: 250 },
    color: text,
    plugins: { legend: { labels: { color: text, boxWidth: 12 } }, tooltip: { enabled: true } },
    scales: {
      x: { ticks: { color: text }, grid: { color: grid } },
      y: { ticks: { color: text }, grid: { color: grid } },
    },
  };
}

/**
 * Remove the chart drawn on `canvas`, if any.
 * @param {HTMLCanvasElement} canvas
 */
export function destroyChart(canvas) {
  const existing = ChartJs()?.getChart(canvas);
  if (existing) existing.destroy();
}

/**
 * Make (or replace) a chart on `canvas`.
 * @param {HTMLCanvasElement} canvas
 * @param {string} type
 * @param {{labels: unknown[], datasets: Dataset[]}} data
 * @param {{[option: string]: any}} [options] merged into the defaults (`scales` and `plugins` key by key)
 * @param {string} [summary] the chart in words, for screen readers
 * @returns {ChartInstance | null}
 */
export function chart(canvas, type, data, options = {}, summary = "") {
  const Chart = ChartJs();
  if (!Chart) return null;
  destroyChart(canvas);
  schemeDefaults(Chart);
  const opts = base();
  for (const [k, v] of Object.entries(options)) {
    if (k === "scales") {
      for (const [axis, cfg] of Object.entries(v)) opts.scales[axis] = { ...(opts.scales[axis] || {}), ...cfg };
    } else if (k === "plugins") {
      opts.plugins = { ...opts.plugins, ...v };
    } else {
      opts[k] = v;
    }
  }
  if (type === "doughnut" || type === "pie") delete opts.scales;
  canvas.setAttribute("role", "img");
  if (summary) canvas.setAttribute("aria-label", summary);
  if (type === "bar") for (const ds of data.datasets) ds.maxBarThickness ??= 44;
  return new Chart(canvas, { type, data, options: opts });
}

/** @typedef {ReturnType<typeof import("./state.js").scoreSeries>} ScoreSeries */

/** The live score chart of one session: the aggregate per round, each critic's score, the threshold. */
export class ScoreChart {
  /** @param {HTMLCanvasElement} canvas */
  constructor(canvas) {
    this.canvas = canvas;
    /** @type {ChartInstance | null} */
    this.chart = null;
  }

  /**
   * Draw `series` (see state.js `scoreSeries`); no rounds removes the chart.
   * @param {ScoreSeries} series
   */
  draw(series) {
    if (!series.rounds.length) {
      if (this.chart) this.chart.destroy();
      this.chart = null;
      return;
    }
    const labels = series.rounds.map((r) => `Round ${r.round}`);
    const scores = series.rounds.map((r) => new Map(r.critics));
    /** @type {Set<string>} */
    const critics = new Set();
    for (const r of series.rounds) for (const [m] of r.critics) critics.add(m);
    /** @type {Dataset[]} */
    const datasets = [{
      label: "Aggregate",
      data: series.rounds.map((r) => r.aggregate),
      borderColor: colour(0),
      backgroundColor: colour(0),
      borderWidth: 3,
      pointRadius: 5,
      spanGaps: true,
    }];
    [...critics].forEach((m, i) => {
      datasets.push({
        label: m,
        data: scores.map((s) => s.get(m) ?? null),
        borderColor: colour(i + 1),
        backgroundColor: colour(i + 1),
        borderWidth: 1,
        borderDash: [2, 3],
        pointRadius: 4,
        pointStyle: "rectRot",
        spanGaps: true,
      });
    });
    const threshold = series.threshold;
    if (threshold != null) {
      datasets.push({
        label: "Threshold",
        data: series.rounds.map(() => threshold),
        borderColor: css("--good", "#1a7f4b"),
        borderDash: [6, 4],
        borderWidth: 1.5,
        pointRadius: 0,
      });
    }
    const summary = "Scores by round: " + series.rounds.map((r) => (
      `round ${r.round} ${r.aggregate == null ? "pending" : r.aggregate.toFixed(2)}`)).join(", ");
    if (this.chart) {
      this.chart.data.labels = labels;
      this.chart.data.datasets = datasets;
      this.chart.update();
      this.canvas.setAttribute("aria-label", summary);
      return;
    }
    this.chart = chart(this.canvas, "line", { labels, datasets }, {
      // offset: points sit in the middle of their round's band, so a single round is visible too.
      scales: { x: { offset: true }, y: { min: 0, max: 10, title: { display: true, text: "score (0-10)" } } },
    }, summary);
  }
}
