// The browser app's modules as files: each is type-checked, the state module stays pure, and only it reads events.
import assert from "node:assert/strict";
import { readdirSync, readFileSync } from "node:fs";
import { test } from "node:test";

const STATIC = new URL("../../gateway/static/", import.meta.url);
const modules = readdirSync(STATIC).filter((f) => f.endsWith(".js")).sort();
const source = (name) => readFileSync(new URL(name, STATIC), "utf8");
/** The code without comments, so documentation may name what the code must not use. */
const code = (name) => source(name).replace(/\/\*[\s\S]*?\*\//g, "").replace(/\/\/.*$/gm, "");

test("the app's modules are found", () => {
  for (const name of ["app.js", "live.js", "state.js", "format.js", "render.js", "ws.js"]) {
    assert.ok(modules.includes(name), name);
  }
});

test("every module of ours starts with // @ts-check (tsc checks only those; vendor/ is not ours)", () => {
  for (const name of modules) {
    assert.ok(source(name).startsWith("// @ts-check\n"), `${name} lacks // @ts-check on its first line`);
  }
});

test("state.js, format.js and addressed.js are pure: no DOM, no browser globals, no I/O, no clock, no randomness", () => {
  const imports = { "state.js": ["./format.js"], "format.js": [], "addressed.js": [] };
  const globals = [
    "document", "window", "globalThis", "self", "navigator", "location", "history", "localStorage", "sessionStorage",
    "fetch", "WebSocket", "XMLHttpRequest", "requestAnimationFrame", "setTimeout", "setInterval", "queueMicrotask",
    "Date\\.now", "Math\\.random", "console",
  ];
  const forbidden = new RegExp(`\\b(${globals.join("|")})\\b|new Date\\(\\s*\\)`);
  for (const [name, allowed] of Object.entries(imports)) {
    const text = code(name);
    const found = [...text.matchAll(/^\s*(?:import|export)\b[^;]*?from\s+"([^"]+)"/gm)].map((m) => m[1]);
    assert.deepEqual(found, allowed, `${name} imports`);
    assert.doesNotMatch(text, /\bimport\s*\(/, `${name} imports dynamically`);
    const hit = forbidden.exec(text);
    assert.equal(hit, null, `${name} uses ${hit && hit[0]}`);
  }
});

test("only state.js reads orchestration events (the view renders state)", () => {
  const names = [
    "session_started", "model_selected", "response_delta", "response_completed", "critique_completed",
    "round_completed", "provider_fallback", "session_completed", "session_failed",
  ];
  const kinds = new RegExp(`\\b(${names.join("|")})\\b`);
  for (const name of modules.filter((n) => n !== "state.js")) {
    const hit = kinds.exec(code(name));
    assert.equal(hit, null, `${name} reads ${hit && hit[0]}`);
  }
});
