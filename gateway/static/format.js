// @ts-check
// Formatting of numbers, enums, durations and usage as text. Pure: no DOM, so state.js and the unit tests
// (node --test) can use it too; render.js re-exports it for the views.

/**
 * Token and cost figures of one call or a whole session (proto `Usage`; int64 fields arrive as strings).
 * @typedef {object} Usage
 * @property {string | number} [prompt_tokens]
 * @property {string | number} [completion_tokens]
 * @property {string | number} [total_tokens]
 * @property {number} [cost_usd]
 */

const PLURAL_RULES = new Intl.PluralRules("en");

/**
 * "1 rating", "2 ratings", "1,234 tokens".
 * @param {unknown} count
 * @param {string} one
 * @param {string} [many] defaults to `one` + "s"
 */
export function plural(count, one, many) {
  const n = Number(count || 0);
  return `${n.toLocaleString("en")} ${PLURAL_RULES.select(n) === "one" ? one : many || `${one}s`}`;
}

/**
 * "STOP_REASON_MAX_ROUNDS" -> "max rounds".
 * @param {string | null | undefined} value
 * @param {string} prefix
 * @returns {string}
 */
export function enumLabel(value, prefix) {
  if (!value) return "";
  return String(value).replace(prefix, "").toLowerCase().replace(/_/g, " ");
}

/**
 * @param {unknown} value
 * @param {number} digits
 * @returns {string}
 */
export function num(value, digits) {
  const n = Number(value || 0);
  return Number.isFinite(n) ? n.toFixed(digits) : String(value);
}

/**
 * @param {unknown} value
 * @returns {string}
 */
export function usd(value) {
  const n = Number(value || 0);
  return "$" + (n !== 0 && Math.abs(n) < 0.01 ? n.toFixed(5) : n.toFixed(4));
}

/**
 * Proto Duration JSON ("1.530s") -> "1.53 s".
 * @param {string | null | undefined} duration
 * @returns {string}
 */
export function seconds(duration) {
  if (!duration) return "";
  const n = parseFloat(duration);
  return Number.isFinite(n) ? `${n.toFixed(2)} s` : String(duration);
}

/**
 * @param {Usage | null | undefined} usage
 * @returns {string}
 */
export function tokens(usage) {
  const u = usage || {};
  return `${Number(u.total_tokens || 0).toLocaleString()} (prompt ${Number(u.prompt_tokens || 0).toLocaleString()}, `
    + `completion ${Number(u.completion_tokens || 0).toLocaleString()})`;
}

/**
 * @param {string | null | undefined} timestamp
 * @returns {string}
 */
export function when(timestamp) {
  if (!timestamp) return "";
  const d = new Date(timestamp);
  return Number.isNaN(d.getTime()) ? String(timestamp) : d.toLocaleString();
}
