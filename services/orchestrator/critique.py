"""Parsing critics' replies robustly.

Critics are asked for one JSON object (JSON mode when the model supports it). Replies are untrusted:
the parser accepts the object alone, wrapped in a Markdown code fence, or surrounded by prose; it
validates types and the score range; as a last resort it reads a "score: N/10" line. Anything else
raises :class:`UnusableCritique`, which the loop counts as a failed critic — never a crash.
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


def parse_critique(text: str) -> Critique:
    """Parse a critic's reply. Raises :class:`UnusableCritique` when no usable score is found."""
    for candidate in _json_candidates(text):
        try:
            data = json.loads(candidate)
        except ValueError:
            continue
        if isinstance(data, dict):
            return _from_object(data)
    matches = _SCORE_LINE.findall(text)
    if matches:
        score = float(matches[-1])
        if 0 <= score <= 10:
            return Critique(score=score, rationale=text[:_MAX_ITEM_CHARS].strip(), tolerant=True)
    raise UnusableCritique("no JSON object and no score in the critic's reply")


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
    """Critiques rendered for the refine prompt, anonymised as Reviewer A, B, C..."""
    parts = []
    for i, c in enumerate(critiques):
        lines = [f"### Reviewer {chr(65 + i)} (score {c.score:g}/10)"]
        if c.rationale:
            lines.append(c.rationale)
        for title, items in (("Weaknesses", c.weaknesses), ("Suggestions", c.suggestions)):
            if items:
                lines.append(f"{title}:")
                lines.extend(f"- {item}" for item in items)
        parts.append("\n".join(lines))
    return "\n\n".join(parts)
