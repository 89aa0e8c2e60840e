// Rendering helpers. Model output is untrusted: it reaches the DOM only through renderMarkdown (marked,
// raw HTML escaped, then DOMPurify with a strict allow-list, inserted as a DOM fragment) or as text nodes.
import { Marked } from "./vendor/marked/marked.esm.js";
import DOMPurify from "./vendor/dompurify/purify.es.js";

const ESCAPES = { "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;" };
const escapeHtml = (s) => String(s).replace(/[&<>"']/g, (c) => ESCAPES[c]);

// Raw HTML in a model's Markdown is shown as text, not interpreted: `<script>` stays visible and inert.
const markdown = new Marked({
  gfm: true,
  breaks: false,
  async: false,
  renderer: {
    html(token) {
      return escapeHtml(token.text);
    },
  },
});

// Second line of defence: whatever marked produces is filtered by an allow-list.
// No style, no images, no forms or iframes; links only to http(s) and mailto.
const PURIFY = {
  ALLOWED_TAGS: [
    "p", "br", "hr", "h1", "h2", "h3", "h4", "h5", "h6", "strong", "em", "del", "s", "code", "pre",
    "blockquote", "ul", "ol", "li", "a", "table", "thead", "tbody", "tr", "th", "td", "span", "sup", "sub",
  ],
  ALLOWED_ATTR: ["href", "title", "start", "align"],
  ALLOWED_URI_REGEXP: /^(?:https?:|mailto:)/i,
  ALLOW_DATA_ATTR: false,
  ALLOW_ARIA_ATTR: false,
  RETURN_DOM_FRAGMENT: true,
};

DOMPurify.addHook("afterSanitizeAttributes", (node) => {
  if (node.nodeName === "A") {
    if (node.hasAttribute("href")) {
      node.setAttribute("rel", "noopener noreferrer nofollow");
      node.setAttribute("target", "_blank");
    }
  }
});

/** Replace `el`'s content with `text` rendered as sanitised Markdown. */
export function renderMarkdown(el, text) {
  const html = markdown.parse(String(text || ""));
  el.replaceChildren(DOMPurify.sanitize(html, PURIFY));
}

/** Set an element's text (never HTML). */
export function text(el, value) {
  el.textContent = value == null ? "" : String(value);
}

/** A new element with optional text and class. */
export function make(tag, value, className) {
  const el = document.createElement(tag);
  if (value != null) el.textContent = String(value);
  if (className) el.className = className;
  return el;
}

// ---- models --------------------------------------------------------------------------------------

const models = new Map(); // id -> ModelInfo (snake_case proto JSON)
let allSimulated = false;

/** Remember the catalogue (ListModelsResponse) so model names can carry a "simulated" mark. */
export function setModels(response) {
  models.clear();
  for (const m of response.models || []) models.set(m.id, m);
  allSimulated = Boolean(response.simulated);
}

/** True when the catalogue says this model is served by the simulator. */
export function isSimulated(id) {
  const m = models.get(id);
  return m ? Boolean(m.simulated) : allSimulated;
}

export function catalogue() {
  return [...models.values()];
}

/** A model name element, with a visible SIM badge when the model is simulated. */
export function modelLabel(id) {
  const span = make("span", null, "model");
  span.appendChild(make("span", id || "?", "model-id"));
  if (id && isSimulated(id)) {
    const badge = make("span", "SIM", "badge badge-sim");
    badge.title = "Simulated model: answers come from the deterministic simulator";
    badge.setAttribute("aria-label", "simulated");
    span.appendChild(badge);
  }
  return span;
}

// ---- formatting ----------------------------------------------------------------------------------

/** "STOP_REASON_MAX_ROUNDS" -> "max rounds". */
export function enumLabel(value, prefix) {
  if (!value) return "";
  return String(value).replace(prefix, "").toLowerCase().replace(/_/g, " ");
}

export function num(value, digits) {
  const n = Number(value || 0);
  return Number.isFinite(n) ? n.toFixed(digits) : String(value);
}

export function usd(value) {
  const n = Number(value || 0);
  return "$" + (n !== 0 && Math.abs(n) < 0.01 ? n.toFixed(5) : n.toFixed(4));
}

/** Proto Duration JSON ("1.530s") -> "1.53 s". */
export function seconds(duration) {
  if (!duration) return "";
  const n = parseFloat(duration);
  return Number.isFinite(n) ? `${n.toFixed(2)} s` : String(duration);
}

export function tokens(usage) {
  const u = usage || {};
  return `${Number(u.total_tokens || 0).toLocaleString()} (prompt ${Number(u.prompt_tokens || 0).toLocaleString()}, `
    + `completion ${Number(u.completion_tokens || 0).toLocaleString()})`;
}

export function when(timestamp) {
  if (!timestamp) return "";
  const d = new Date(timestamp);
  return Number.isNaN(d.getTime()) ? String(timestamp) : d.toLocaleString();
}

export function setPill(el, label, tone) {
  text(el, label);
  el.className = "pill pill-" + (tone || "muted");
}
