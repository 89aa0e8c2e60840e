// @ts-check
// Rendering helpers. Model output is untrusted: it reaches the DOM only through renderMarkdown (marked,
// raw HTML escaped, then DOMPurify with a strict allow-list, inserted as a DOM fragment) or as text nodes.
// Code blocks are highlighted after sanitising: highlight.js gets a block's text (never HTML), escapes it, and
// its markup passes DOMPurify again (spans with highlight.js classes only).
import { Marked } from "./vendor/marked/marked.esm.js";
import purify from "./vendor/dompurify/purify.es.js";
import hljsCore from "./vendor/highlight/core.min.js";
import bash from "./vendor/highlight/languages/bash.min.js";
import c from "./vendor/highlight/languages/c.min.js";
import cpp from "./vendor/highlight/languages/cpp.min.js";
import css from "./vendor/highlight/languages/css.min.js";
import go from "./vendor/highlight/languages/go.min.js";
import java from "./vendor/highlight/languages/java.min.js";
import javascript from "./vendor/highlight/languages/javascript.min.js";
import json from "./vendor/highlight/languages/json.min.js";
import plaintext from "./vendor/highlight/languages/plaintext.min.js";
import python from "./vendor/highlight/languages/python.min.js";
import rust from "./vendor/highlight/languages/rust.min.js";
import shell from "./vendor/highlight/languages/shell.min.js";
import sql from "./vendor/highlight/languages/sql.min.js";
import typescript from "./vendor/highlight/languages/typescript.min.js";
import xml from "./vendor/highlight/languages/xml.min.js";
import yaml from "./vendor/highlight/languages/yaml.min.js";

export { enumLabel, num, plural, seconds, tokens, usd, when } from "./format.js";

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
  ALLOWED_ATTR: ["href", "title", "start", "align", "class"], // class: see the hook below
  ALLOWED_URI_REGEXP: /^(?:https?:|mailto:)/i,
  ALLOW_DATA_ATTR: false,
  ALLOW_ARIA_ATTR: false,
  RETURN_DOM_FRAGMENT: true,
};

// Classes only where they carry meaning and nothing else: a code block's language (from marked) and
// highlight.js's token classes (from the second pass). A model cannot style the page through either.
const LANGUAGE_CLASS = /^language-[A-Za-z0-9_+#.-]{1,32}$/;
const TOKEN_CLASSES = /^(?:(?:hljs-[a-z_-]+|[a-z]+_+)(?: |$))+$/;
DOMPurify.addHook("uponSanitizeAttribute", (node, data) => {
  if (data.attrName !== "class") return;
  const ok = node.nodeName === "CODE" ? LANGUAGE_CLASS.test(data.attrValue)
    : node.nodeName === "SPAN" && TOKEN_CLASSES.test(data.attrValue);
  if (!ok) data.keepAttr = false;
});

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
  const fragment = DOMPurify.sanitize(html, PURIFY);
  for (const code of fragment.querySelectorAll("pre > code")) highlight(code);
  el.replaceChildren(fragment);
}

// ---- syntax highlighting ------------------------------------------------------------------------------

/**
 * The part of highlight.js's API used here (the vendored ES build ships no type declarations).
 * @typedef {{value: string, language?: string}} HighlightResult
 * @typedef {object} Highlighter
 * @property {(name: string, language: unknown) => void} registerLanguage
 * @property {(name: string) => unknown} getLanguage
 * @property {(code: string, options: {language: string, ignoreIllegals: boolean}) => HighlightResult} highlight
 * @property {(code: string) => HighlightResult} highlightAuto
 */
const hljs = /** @type {Highlighter} */ (/** @type {unknown} */ (hljsCore));
/** @type {Record<string, unknown>} */
const LANGUAGES = {
  bash, c, cpp, css, go, java, javascript, json, plaintext, python, rust, shell, sql, typescript, xml, yaml,
};
for (const [name, language] of Object.entries(LANGUAGES)) hljs.registerLanguage(name, language);

// What highlight.js produces: spans with its token classes, nothing else.
/** @type {import("dompurify").Config & {RETURN_DOM_FRAGMENT: true}} */
const TOKENS = { ALLOWED_TAGS: ["span"], ALLOWED_ATTR: ["class"], RETURN_DOM_FRAGMENT: true };

/** Blocks longer than this are left plain: highlighting them would stall the page for little benefit. */
const HIGHLIGHT_LIMIT = 100_000;

/**
 * Highlight one code block in place: the language its fence names when known, else the likeliest of ours.
 * @param {Element} code
 */
function highlight(code) {
  const source = code.textContent || "";
  if (!source.trim() || source.length > HIGHLIGHT_LIMIT) return;
  const named = /(?:^|\s)language-(\S+)/.exec(code.className);
  const language = named && hljs.getLanguage(named[1]) ? named[1] : "";
  const result = language
    ? hljs.highlight(source, { language, ignoreIllegals: true })
    : hljs.highlightAuto(source);
  code.replaceChildren(DOMPurify.sanitize(result.value, TOKENS));
  code.classList.add("hljs");
  if (result.language) code.setAttribute("data-language", result.language);
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
  span.appendChild(modelId(id || "?"));
  if (id && isSimulated(id)) {
    const badge = make("span", "SIM", "badge badge-sim");
    badge.title = "Simulated model: answers come from the deterministic simulator";
    badge.setAttribute("aria-label", "simulated");
    span.appendChild(badge);
  }
  return span;
}

/**
 * A model id that wraps only after "/" and "-" (a <wbr> there), never inside a word: on a phone,
 * "meta-llama/llama-4-maverick" breaks as "meta-llama/" + "llama-4-maverick", not "meta-lla" + "ma/…".
 * @param {string} id
 */
export function modelId(id) {
  const span = make("span", null, "model-id");
  for (const piece of id.split(/(?<=[/-])/)) {
    if (span.childNodes.length) span.appendChild(document.createElement("wbr"));
    span.appendChild(document.createTextNode(piece));
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
