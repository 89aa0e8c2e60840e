// @ts-check
// Rendering helpers. Model output is untrusted: it reaches the DOM only through renderMarkdown (marked,
// raw HTML escaped, then DOMPurify with a strict allow-list, inserted as a DOM fragment) or as text nodes.
import { Marked } from "./vendor/marked/marked.esm.js";
import purify from "./vendor/dompurify/purify.es.js";

export { enumLabel, num, seconds, tokens, usd, when } from "./format.js";

/** @type {Record<string, string>} */
const ESCAPES = { "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;" };
/** @param {unknown} s */
const escapeHtml = (s) => String(s).replace(/[&<>"']/g, (c) => ESCAPES[c]);

// Raw HTML in a model's Markdown is shown as text, not interpreted: `<script>` stays visible and inert.
const markdown = new Marked({
  gfm: true,
  breaks: false,
  async: false,
  renderer: {
    /** @param {{text: string}} token */
    html(token) {
      return escapeHtml(token.text);
    },
  },
});

// The vendored file is dompurify's dist/purify.es.mjs: type it with that package's declarations.
const DOMPurify = /** @type {import("dompurify").DOMPurify} */ (/** @type {unknown} */ (purify));

// Second line of defence: whatever marked produces is filtered by an allow-list.
// No style, no images, no forms or iframes; links only to http(s) and mailto.
/** @type {import("dompurify").Config & {RETURN_DOM_FRAGMENT: true}} */
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
  if (node instanceof Element && node.nodeName === "A") {
    if (node.hasAttribute("href")) {
      node.setAttribute("rel", "noopener noreferrer nofollow");
      node.setAttribute("target", "_blank");
    }
  }
});

/**
 * Replace `el`'s content with `text` rendered as sanitised Markdown.
 * @param {Element} el
 * @param {string | null | undefined} text
 */
export function renderMarkdown(el, text) {
  const html = markdown.parse(String(text || ""));
  el.replaceChildren(DOMPurify.sanitize(html, PURIFY));
}

/**
 * The element with this id; throws when the page lacks it (a markup and script mismatch), so callers need no
 * null checks. With `type`, also checks the element's class.
 * @template {HTMLElement} T
 * @param {string} id
 * @param {new () => T} [type]
 * @returns {T}
 */
export function byId(id, type) {
  const el = document.getElementById(id);
  if (!el) throw new Error(`#${id} is missing from the page`);
  if (type && !(el instanceof type)) throw new Error(`#${id} is not a ${type.name}`);
  return /** @type {T} */ (el);
}

/**
 * Set an element's text (never HTML).
 * @param {Element} el
 * @param {unknown} value
 */
export function text(el, value) {
  el.textContent = value == null ? "" : String(value);
}

/**
 * A new element with optional text and class.
 * @template {keyof HTMLElementTagNameMap} K
 * @param {K} tag
 * @param {unknown} [value]
 * @param {string} [className]
 * @returns {HTMLElementTagNameMap[K]}
 */
export function make(tag, value, className) {
  const el = document.createElement(tag);
  if (value != null) el.textContent = String(value);
  if (className) el.className = className;
  return el;
}

// ---- models --------------------------------------------------------------------------------------

/** @typedef {{id: string, simulated?: boolean}} ModelInfo */

/** @type {Map<string, ModelInfo>} */
const models = new Map(); // id -> ModelInfo (snake_case proto JSON)
let allSimulated = false;

/**
 * Remember the catalogue (ListModelsResponse) so model names can carry a "simulated" mark.
 * @param {{models?: ModelInfo[], simulated?: boolean}} response
 */
export function setModels(response) {
  models.clear();
  for (const m of response.models || []) models.set(m.id, m);
  allSimulated = Boolean(response.simulated);
}

/**
 * True when the catalogue says this model is served by the simulator.
 * @param {string} id
 */
export function isSimulated(id) {
  const m = models.get(id);
  return m ? Boolean(m.simulated) : allSimulated;
}

export function catalogue() {
  return [...models.values()];
}

/**
 * A model name element, with a visible SIM badge when the model is simulated.
 * @param {string | null | undefined} id
 */
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

// ---- status pills ------------------------------------------------------------------------------

/**
 * @param {Element} el
 * @param {string} label
 * @param {string} [tone] "good", "warn", "bad" or "muted"
 */
export function setPill(el, label, tone) {
  text(el, label);
  el.className = "pill pill-" + (tone || "muted");
}
