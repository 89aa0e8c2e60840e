// Shared by the browser unit tests: transcripts, event builders, a seeded random generator, deep freezing.
import { readFileSync } from "node:fs";

import { initialState, reduce } from "../../gateway/static/state.js";

/** Fixture names: real sessions recorded from the simulator (`orchestratex up`, SSE `?after=0`). */
export const TRANSCRIPTS = ["multi_round_shadow", "unscored", "fallback", "cancelled", "failed"];

/** The events of a recorded session, as the gateway sends them. */
export function transcript(name) {
  return JSON.parse(readFileSync(new URL(`./fixtures/${name}.json`, import.meta.url), "utf8"));
}

/** The state of a view that follows `sessionId` (what opening #/session/<id> does). */
export function following(sessionId) {
  return reduce(initialState(), { type: "follow", sessionId });
}

/** Apply `actions` in order. */
export function run(state, actions) {
  return actions.reduce(reduce, state);
}

/** Wrap events as the WebSocket's `event` messages. */
export function messages(events) {
  return events.map((event) => ({ type: "event", event }));
}

/** A synthetic session: `event(kind, payload)` numbers events 1, 2, 3... as the orchestrator does. */
export function session(id = "s-1") {
  let sequence = 0;
  return {
    id,
    event(kind, payload = {}) {
      sequence += 1;
      return { type: "event", event: { session_id: id, sequence: String(sequence), [kind]: payload } };
    },
  };
}

/** Freeze `value` and everything reachable from it: a reducer that writes to its input then throws. */
export function deepFreeze(value) {
  if (value && typeof value === "object" && !Object.isFrozen(value)) {
    Object.freeze(value);
    for (const v of Object.values(value)) deepFreeze(v);
  }
  return value;
}

/** mulberry32: a small seeded generator, so a failing random case can be replayed from its seed. */
export function random(seed) {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}
