// Thin wrappers around Chart.js (vendor/chartjs/chart.umd.min.js, loaded as a classic script: window.Chart).
// Every chart also gets a text summary as its aria-label, since a canvas says nothing to a screen reader.

const PALETTE = ["#3056d3", "#d9480f", "#2b8a3e", "#ae3ec9", "#1098ad", "#e67700", "#c2255c", "#5c940d"];

function css(name, fallback) {
  const value = getComputedStyle(document.documentElement).getPropertyValue(name).trim();
  return value || fallback;
}

export function colour(i) {
  return PALETTE[i % PALETTE.length];
}

function base() {
  const text = css("--text", "#1d2330");
  const grid = css("--border", "#dde1e7");
  return {
    responsive: true,
    maintainAspectRatio: false,
    animation: { duration: 250 },
    color: text,
    plugins: { legend: { labels: { color: text, boxWidth: 12 } }, tooltip: { enabled: true } },
    scales: {
      x: { ticks: { color: text }, grid: { color: grid } },
      y: { ticks: { color: text }, grid: { color: grid } },
    },
  };
}

/** Make (or replace) a chart on `canvas`. */
export function chart(canvas, type, data, options = {}, summary = "") {
  if (!window.Chart) return null;
  const existing = window.Chart.getChart(canvas);
  if (existing) existing.destroy();
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
  return new window.Chart(canvas, { type, data, options: opts });
}

/** The live score chart of one session: the aggregate per round, each critic's score, the threshold. */
export class ScoreChart {
  constructor(canvas) {
    this.canvas = canvas;
    this.threshold = null;
    this.rounds = new Map(); // round -> {aggregate: number|null, critics: Map(model -> score)}
    this.chart = null;
  }

  reset(threshold) {
    this.threshold = threshold;
    this.rounds.clear();
    if (this.chart) this.chart.destroy();
    this.chart = null;
  }

  round(n) {
    let r = this.rounds.get(n);
    if (!r) {
      r = { aggregate: null, critics: new Map() };
      this.rounds.set(n, r);
    }
    return r;
  }

  critique(roundNo, model, score) {
    this.round(roundNo).critics.set(model, Number(score || 0));
    this.draw();
  }

  aggregate(roundNo, score) {
    this.round(roundNo).aggregate = Number(score || 0);
    this.draw();
  }

  draw() {
    const numbers = [...this.rounds.keys()].sort((a, b) => a - b);
    const labels = numbers.map((n) => `Round ${n}`);
    const critics = new Set();
    for (const r of this.rounds.values()) for (const m of r.critics.keys()) critics.add(m);
    const datasets = [{
      label: "Aggregate",
      data: numbers.map((n) => this.rounds.get(n).aggregate),
      borderColor: colour(0),
      backgroundColor: colour(0),
      borderWidth: 3,
      pointRadius: 5,
      spanGaps: true,
    }];
    [...critics].forEach((m, i) => {
      datasets.push({
        label: m,
        data: numbers.map((n) => this.rounds.get(n).critics.get(m) ?? null),
        borderColor: colour(i + 1),
        backgroundColor: colour(i + 1),
        borderWidth: 1,
        borderDash: [2, 3],
        pointRadius: 4,
        pointStyle: "rectRot",
        spanGaps: true,
      });
    });
    if (this.threshold != null) {
      datasets.push({
        label: "Threshold",
        data: numbers.map(() => this.threshold),
        borderColor: css("--good", "#1a7f4b"),
        borderDash: [6, 4],
        borderWidth: 1.5,
        pointRadius: 0,
      });
    }
    const summary = "Scores by round: " + numbers.map((n) => {
      const a = this.rounds.get(n).aggregate;
      return `round ${n} ${a == null ? "pending" : a.toFixed(2)}`;
    }).join(", ");
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
