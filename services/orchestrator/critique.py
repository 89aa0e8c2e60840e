"""Parsing critics' replies robustly.

Critics are asked for one JSON object (JSON mode when the model supports it). Replies are untrusted:
the parser accepts the object alone, wrapped in a Markdown code fence, or surrounded by prose; it
validates types and the score range; as a last resort it reads a "score: N/10" line. Anything else
raises :class:`UnusableCritique`, which the loop counts as a failed critic — never a crash.

The texts under review are untrusted and may carry a ready-made review ("score": 10) for a critic to
echo. A JSON object or score line found in them (``quoted``) is never taken as the critic's own: a
reply that only repeats one is unusable.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass, field
from typing import Any

_FENCE = re.compile(r"```(?:json)?\s*(\{.*?\})\s*```", re.DOTALL | re.IGNORECASE)
_SCORE_LINE = re.compile(r"\bscore\b\W{0,5}(\d{1,2}(?:\.\d+)?)\s*(?:/\s*10|out of 10)?", re.IGNORECASE)
_MAX_ITEMS = 20
_MAX_ITEM_CHARS = 2000
_MAX_OBJECT_STARTS = 64


class UnusableCritique(ValueError):
    """The reply could not be turned into a critique."""


@dataclass(frozen=True)
class Critique:
    """A validated critique."""

    score: float
    rationale: str = ""
    strengths: list[str] = field(default_factory=list)
    weaknesses: list[str] = field(default_factory=list)
    suggestions: list[str] = field(default_factory=list)
    tolerant: bool = False


def parse_critique(text: str, quoted: tuple[str, ...] = ()) -> Critique:
    """Parse a critic's reply. Raises :class:`UnusableCritique` when no usable score is found.

    ``quoted``: the untrusted texts the critic was shown; a review copied from them does not count.
    """
    planted = [_fingerprint(obj) for q in quoted for obj in json_objects(q)]
    copied = False
    for data in json_objects(text):
        if planted and _fingerprint(data) in planted:
            copied = True
            continue
        return _from_object(data)
    if copied:
        raise UnusableCritique("the reply only repeats a review planted in the text under review")
    for match in reversed(list(_SCORE_LINE.finditer(text))):
        line = _line_at(text, match.start())
        if any(line in q for q in quoted):
            copied = True
            continue
        score = float(match.group(1))
        if 0 <= score <= 10:
            return Critique(score=score, rationale=text[:_MAX_ITEM_CHARS].strip(), tolerant=True)
        break
    if copied:
        raise UnusableCritique("the reply only repeats a review planted in the text under review")
    raise UnusableCritique("no JSON object and no score in the critic's reply")


def json_objects(text: str) -> list[dict[str, Any]]:
    """The JSON objects in ``text``, in order: the text itself, or each object in prose or code fences."""
    found = []
    for candidate in _json_candidates(text):
        try:
            data = json.loads(candidate)
        except ValueError:
            continue
        if isinstance(data, dict):
            found.append(data)
    if found:
        return found
    decoder = json.JSONDecoder()
    position, tries = text.find("{"), 0
    while position >= 0 and tries < _MAX_OBJECT_STARTS:
        tries += 1
        try:
            data, end = decoder.raw_decode(text, position)
        except ValueError:
            position = text.find("{", position + 1)
            continue
        if isinstance(data, dict):
            found.append(data)
        position = text.find("{", end)
    return found


def _fingerprint(data: dict[str, Any]) -> tuple[str, str]:
    """What makes a review someone's own: its score and its words (case and spacing aside)."""
    words = " ".join(str(data.get("rationale") or data.get("reasoning") or "").lower().split())
    return str(data.get("score")), words


def _line_at(text: str, position: int) -> str:
    start = text.rfind("\n", 0, position) + 1
    end = text.find("\n", position)
    return text[start : len(text) if end < 0 else end].strip()


def _json_candidates(text: str) -> list[str]:
    stripped = text.strip()
    candidates = [stripped]
    candidates.extend(m.group(1) for m in _FENCE.finditer(text))
    start, end = stripped.find("{"), stripped.rfind("}")
    if 0 <= start < end:
        candidates.append(stripped[start : end + 1])
    return candidates


def _from_object(data: dict[str, Any]) -> Critique:
    raw = data.get("score")
    if isinstance(raw, str):
        try:
            raw = float(raw.strip().split("/")[0])
        except ValueError:
            raise UnusableCritique("score is not a number") from None
    if isinstance(raw, bool) or not isinstance(raw, int | float) or not math.isfinite(raw):
        raise UnusableCritique("score is missing or not a number")
    if not 0 <= raw <= 10:
        raise UnusableCritique(f"score {raw} is outside 0-10")
    return Critique(
        score=float(raw),
        rationale=_text(data.get("rationale") or data.get("reasoning") or ""),
        strengths=_items(data.get("strengths")),
        weaknesses=_items(data.get("weaknesses")),
        suggestions=_items(data.get("suggestions")),
    )


def _text(value: object) -> str:
    return value[:_MAX_ITEM_CHARS].strip() if isinstance(value, str) else ""


def _items(value: object) -> list[str]:
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list):
        return []
    return [_text(v) for v in value[:_MAX_ITEMS] if isinstance(v, str) and v.strip()]


def feedback_text(critiques: list[Critique]) -> str:
    """Critiques rendered for the refine prompt, anonymised as Reviewer A, B, C...

    Each reviewer's words are quoted line by line (``> ``), so a header a critic wrote ("### Reviewer
    C") stays inside that critic's quote and cannot pass for another review.
    """
    parts = []
    for i, c in enumerate(critiques):
        lines = [f"### Reviewer {chr(65 + i)} (score {c.score:g}/10)"]
        body: list[str] = []
        if c.rationale:
            body.append(c.rationale)
        for title, items in (("Weaknesses", c.weaknesses), ("Suggestions", c.suggestions)):
            if items:
                body.append(f"{title}:")
                body.extend(f"- {item}" for item in items)
        lines.extend(f"> {line}" for chunk in body for line in chunk.splitlines())
        parts.append("\n".join(lines))
    return "\n\n".join(parts)
