// Formatting helpers shared by every view (format.js): pure, so they run under node.
import assert from "node:assert/strict";
import { test } from "node:test";

import { plural } from "../../gateway/static/format.js";

test("plural picks the English form from the count, and formats the number", () => {
  assert.equal(plural(1, "rating"), "1 rating");
  assert.equal(plural(0, "rating"), "0 ratings");
  assert.equal(plural(2, "point"), "2 points");
  assert.equal(plural("1", "token"), "1 token"); // int64 fields arrive as strings
  assert.equal(plural(1234, "token"), "1,234 tokens");
  assert.equal(plural(undefined, "call"), "0 calls");
  assert.equal(plural(3, "reply", "replies"), "3 replies");
});
