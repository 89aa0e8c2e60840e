// @ts-check
// What a refinement changed: a word-level diff (jsdiff's diffWordsWithSpace, vendored) of the refined draft against the
// new one, and its DOM. The text is untrusted model output: it reaches the page only as text nodes inside
// <ins>/<del>, each with a visually hidden "added"/"removed" label so the change is not told by colour alone.
import { diffWordsWithSpace } from "./vendor/diff/diff/word.js";

/** @typedef {{kind: "same" | "ins" | "del", text: string}} Segment */

/**
 * The word-level changes from `before` to `after`, adjacent pieces of one kind merged.
 * @param {string} before
 * @param {string} after
 * @returns {Segment[]}
 */
export function wordDiff(before, after) {
  /** @type {Segment[]} */
  const out = [];
  // Whitespace counts as tokens (diffWordsWithSpace): both texts can be rebuilt exactly from the segments, so
  // line breaks and indentation of the Markdown survive in the rendered diff.
  const changes = /** @type {{value: string, added?: boolean, removed?: boolean}[]} */ (
    diffWordsWithSpace(before, after));
  for (const change of changes) {
    /** @type {Segment["kind"]} */
    const kind = change.added ? "ins" : change.removed ? "del" : "same";
    const last = out.at(-1);
    if (last && last.kind === kind) last.text += change.value;
    else if (change.value) out.push({ kind, text: change.value });
  }
  return out;
}

/**
 * Everything the new version inserted, one piece per line.
 * @param {readonly Segment[]} segments
 */
export function insertedText(segments) {
  return segments.filter((s) => s.kind === "ins").map((s) => s.text).join("\n");
}

/**
 * Words inserted and removed, for the summary line.
 * @param {readonly Segment[]} segments
 * @returns {{inserted: number, removed: number}}
 */
export function diffStats(segments) {
  /** @param {string} text */
  const words = (text) => (text.match(/\S+/g) || []).length;
  let inserted = 0;
  let removed = 0;
  for (const s of segments) {
    if (s.kind === "ins") inserted += words(s.text);
    else if (s.kind === "del") removed += words(s.text);
  }
  return { inserted, removed };
}

/** Unchanged lines kept on each side of a change; longer unchanged runs are folded into a marker. */
const CONTEXT = 2;

/**
 * An unchanged run as what to show: its first and last lines around a change, the rest counted.
 * @param {string} text
 * @param {boolean} first  the run opens the text (nothing before it to keep context for)
 * @param {boolean} last   the run closes the text
 * @returns {{head: string, skipped: number, tail: string}}
 */
export function fold(text, first, last) {
  const lines = text.split("\n");
  // A run between two changes starts with the rest of a changed line and ends with the start of one.
  const head = first ? 0 : CONTEXT + 1;
  const tail = last ? 0 : CONTEXT + 1;
  const skipped = lines.length - head - tail;
  if (skipped < 3) return { head: text, skipped: 0, tail: "" };
  return {
    head: head ? lines.slice(0, head).join("\n") + "\n" : "",
    skipped,
    tail: tail ? "\n" + lines.slice(-tail).join("\n") : "",
  };
}

/**
 * Render `segments` into `container` as text: unchanged runs as text nodes (long ones folded), changes as
 * <ins>/<del>.
 * @param {Element} container
 * @param {readonly Segment[]} segments
 */
export function renderDiff(container, segments) {
  const doc = container.ownerDocument;
  /** @type {Node[]} */
  const nodes = [];
  segments.forEach((s, i) => {
    if (s.kind === "same") {
      const { head, skipped, tail } = fold(s.text, i === 0, i === segments.length - 1);
      // The marker is a block of its own: the line breaks on either side of it would only add blank lines.
      const around = skipped ? [head.replace(/\n$/, ""), tail.replace(/^\n/, "")] : [head, tail];
      if (around[0]) nodes.push(doc.createTextNode(around[0]));
      if (skipped) {
        const marker = doc.createElement("span");
        marker.className = "diff-skip";
        marker.textContent = `⋯ ${skipped} unchanged lines ⋯`;
        nodes.push(marker);
      }
      if (around[1]) nodes.push(doc.createTextNode(around[1]));
      return;
    }
    const el = doc.createElement(s.kind);
    const label = doc.createElement("span");
    label.className = "visually-hidden";
    label.textContent = s.kind === "ins" ? "[added: " : "[removed: ";
    const end = doc.createElement("span");
    end.className = "visually-hidden";
    end.textContent = "]";
    el.append(label, doc.createTextNode(s.text), end);
    nodes.push(el);
  });
  container.replaceChildren(...nodes);
}
