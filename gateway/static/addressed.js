// @ts-check
// Which critique points a refinement addressed: an estimate, shown as one. A weakness or suggestion counts as
// addressed when the text the refinement inserted covers most of its key terms (content words, lower-cased and
// crudely stemmed), or when the refinement added a heading that the point names ("Add a short 'Edge cases'
// section" and a new "### Edge cases"). Pure: no DOM, so tests/browser_unit runs it under `node --test`.

/** Share of a point's key terms the inserted text must contain. */
export const COVERAGE = 0.6;

// Function words, and the verbs and fillers critics wrap every request in: they say nothing about the topic.
const STOP_WORDS = new Set(`
a about above after again against all also an and any are as at be because been before being below between both
but by can could did do does doing down during each few for from further had has have having here how i if in
into is it its itself just more most much no nor not of off on once only or other our out over own same she
should so some such than that the their them then there these they this those through to too under until up
very was we were what when where which while who whom why will with would you your
add added adding answer answers better briefly clear clearer clearly consider could currently deserve deserves
explain explicit explicitly give include included including instead look make making mention missing more need
needs please provide quite rather really response section separate short should some something still would
`.trim().split(/\s+/));

/**
 * A crude suffix stripper: enough to match "cases" with "case" and "handling" with "handle(d)". Both sides go
 * through it, so it needs to be consistent, not right.
 * @param {string} word lower-case
 * @returns {string}
 */
export function stem(word) {
  let w = word.replace(/'s$/, "");
  if (w.length > 4 && w.endsWith("ies")) return w.slice(0, -3) + "y";
  if (w.length > 5 && w.endsWith("ing")) w = w.slice(0, -3);
  else if (w.length > 4 && w.endsWith("ed")) w = w.slice(0, -2);
  else if (w.length > 4 && w.endsWith("ly")) w = w.slice(0, -2);
  else if (w.length > 3 && w.endsWith("es") && /(ss|x|ch|sh)es$/.test(w)) w = w.slice(0, -2);
  else if (w.length > 3 && w.endsWith("s") && !/(ss|us|is)$/.test(w)) w = w.slice(0, -1);
  return w.endsWith("e") && w.length > 3 ? w.slice(0, -1) : w;
}

/**
 * The stemmed content words of `text`, in order of first appearance, without repeats.
 * @param {string} text
 * @returns {string[]}
 */
export function keyTerms(text) {
  const seen = new Set();
  for (const raw of text.toLowerCase().match(/[\p{L}\p{N}][\p{L}\p{N}'_-]*/gu) || []) {
    for (const part of raw.split(/[-_]/)) {
      if (part.length < 3 || STOP_WORDS.has(part) || /^\d+$/.test(part)) continue;
      seen.add(stem(part));
    }
  }
  return [...seen];
}

/**
 * The Markdown headings of `text`, as written: ATX ("## Title"), a line that is only bold text ("**Title**"),
 * and a bold lead-in that opens a paragraph ("**Title:** text").
 * @param {string} text
 * @returns {string[]}
 */
export function headings(text) {
  const found = [];
  for (const line of text.split("\n")) {
    const atx = /^\s{0,3}#{1,6}\s+(.+?)\s*#*\s*$/.exec(line);
    const bold = /^\s*(?:\*\*|__)([^*_\n]{1,80}?)(?:\*\*|__)\s*$/.exec(line);
    const leadIn = /^\s*(?:\*\*|__)([^*_\n]{1,80}?):(?:\*\*|__)\s|^\s*(?:\*\*|__)([^*_\n]{1,80}?)(?:\*\*|__):\s/.exec(line);
    const title = atx ? atx[1] : bold ? bold[1] : leadIn ? leadIn[1] || leadIn[2] : "";
    if (title) found.push(title.trim().replace(/:$/, ""));
  }
  return found;
}

/**
 * @typedef {object} PointVerdict
 * @property {string} critic
 * @property {"weakness" | "suggestion"} kind
 * @property {string} text
 * @property {boolean} addressed
 * @property {"heading" | "terms" | ""} how   what made it addressed ("" when it is not)
 * @property {number} coverage               share of its key terms found in the inserted text, 0-1
 * @property {string} heading                the new heading that matched ("" when none)
 */

/**
 * True when the point names the heading: a quoted phrase equal to it, or all its key terms among the point's.
 * @param {string} point
 * @param {readonly string[]} pointTerms
 * @param {string} heading
 */
function namesHeading(point, pointTerms, heading) {
  const title = heading.toLowerCase().replace(/[*_`]/g, "").trim();
  for (const m of point.matchAll(/["'“‘]([^"'”’]{2,80})["'”’]/g)) {
    if (m[1].toLowerCase().trim() === title) return true;
  }
  const terms = keyTerms(heading);
  return terms.length > 0 && terms.every((t) => pointTerms.includes(t));
}

/**
 * Judge each weakness and suggestion of the critiques a refinement was given.
 * @param {readonly {critic: string, weaknesses: readonly string[], suggestions: readonly string[]}[]} critiques
 * @param {string} inserted     the text the refinement inserted (the diff's insertions, joined)
 * @param {readonly string[]} newHeadings  headings of the refined text that the refined draft did not have
 * @returns {PointVerdict[]}
 */
export function assessPoints(critiques, inserted, newHeadings) {
  const present = new Set(keyTerms(inserted));
  /** @type {PointVerdict[]} */
  const verdicts = [];
  for (const c of critiques) {
    /** @type {[("weakness" | "suggestion"), readonly string[]][]} */
    const groups = [["weakness", c.weaknesses], ["suggestion", c.suggestions]];
    for (const [kind, points] of groups) {
      for (const text of points) {
        const terms = keyTerms(text);
        const found = terms.filter((t) => present.has(t)).length;
        const coverage = terms.length ? found / terms.length : 0;
        const heading = newHeadings.find((h) => namesHeading(text, terms, h)) || "";
        const how = heading ? "heading" : terms.length && coverage >= COVERAGE ? "terms" : "";
        verdicts.push({ critic: c.critic, kind, text, addressed: how !== "", how, coverage, heading });
      }
    }
  }
  return verdicts;
}
