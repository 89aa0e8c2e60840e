"""Deterministic text for the simulator: answer bodies, critiques, domain guesses.

Everything here is a pure function of its inputs and of the ``random.Random`` it is given, so the
same seed always yields the same text. The text only has to be plausible and prompt-related; the
hidden quality lives in the simulator's registry, not in the words.
"""

from __future__ import annotations

import json
import random
import re
from collections.abc import Sequence

from orchestratex.domains import DOMAINS

_WORD = re.compile(r"[A-Za-z][A-Za-z0-9+#'-]{3,}")
_STOPWORD_TEXT = """
    about above after again against also among another answer anything because been before being below
    between both cannot could does doing done down during each either else enough even every from give
    given have having here however into itself just keep know like made make many more most much must need
    only other over please previous provide really response return reviewer reviewers same shall should
    show since some such task tell than that their them then there these they thing things this those
    through under until upon very want were what when where which while whom whose will with within
    without would write your yours json object evaluate feedback improved simulated draft
"""
_STOPWORDS = frozenset(_STOPWORD_TEXT.split())

_OPENINGS = {
    "coding": "Here is a working approach to {topic}.",
    "math": "Let's solve this step by step, starting from {topic}.",
    "reasoning": "Let's reason through {topic} one step at a time.",
    "creative": "Here is a short piece inspired by {topic}.",
    "factual": "In short, a few key facts explain {topic}.",
    "summarization": "Summary: the text is mainly about {topic}.",
    "extraction": "Here are the items extracted about {topic}.",
    "classification": "The input about {topic} fits one label better than the others.",
    "brainstorming": "Here are some ideas around {topic}.",
    "": "Here is an answer about {topic}.",
}
_MIDDLE = (
    "The key point about {a} is that it depends on the surrounding constraints.",
    "Looking at {a} and {b} together gives a clearer picture.",
    "A common mistake is to overlook how {a} interacts with {b}.",
    "In practice, {a} is usually handled first, and {b} follows from it.",
    "A useful check is whether the conclusion about {a} still holds when {b} changes.",
    "A small example helps: apply {a} to a simple case and compare the result with {b}.",
    "It is worth stating the assumption behind {a} explicitly.",
    "This also explains why {a} matters for {b}.",
    "Edge cases around {a} deserve a separate look.",
    "The trade-off between {a} and {b} is usually worth making explicit.",
)
_DETAIL = (
    "Each step follows from the previous one, so the result can be verified independently.",
    "The reasoning above covers the main cases without relying on unstated assumptions.",
    "Concrete numbers or examples make each claim easy to check.",
    "The structure mirrors the question, so nothing it asks is left out.",
)
_HEDGES = (
    "Some details may not be entirely accurate.",
    "A few parts of the question are only touched on briefly.",
    "This is a rough outline rather than a complete treatment.",
)
_CLOSINGS = (
    "In summary, the answer on {topic} rests on {a} and {b}.",
    "That covers the main aspects of {topic}.",
    "Together, these points answer the question about {topic}.",
)

_STRENGTHS = (
    "Addresses the main question about {a} directly.",
    "Clear structure that is easy to follow.",
    "Correct handling of {a}.",
    "Uses a concrete example involving {b}.",
    "States its assumptions explicitly.",
    "Concise without leaving out essential steps.",
)
_WEAKNESSES = (
    "The treatment of {a} is too brief.",
    "Does not consider edge cases around {b}.",
    "Some claims about {a} are not justified.",
    "Parts of the answer are vague.",
    "Misses how {a} relates to {b}.",
    "Contains a likely error in the discussion of {b}.",
)
_SUGGESTIONS = (
    "Expand the explanation of {a} with a worked example.",
    "Add a short section on edge cases involving {b}.",
    "Justify each claim about {a} explicitly.",
    "Tighten the wording so every sentence adds information.",
    "Check the discussion of {b} for errors.",
    "Close with a one-line summary of the answer.",
)

# Keyword hints per domain, "|"-separated (multi-word hints allowed), matched on word boundaries.
_DOMAIN_HINTS = {
    "coding": "code|function|python|javascript|bug|sql|regex|compile|refactor|class|script|html|css|api|program",
    "math": "solve|equation|integral|probability|calculate|derivative|percent|sum|how many|how much|algebra",
    "reasoning": "puzzle|logic|deduce|riddle|strategy|if all|which of|infer",
    "creative": "story|poem|haiku|lyrics|song|scene|character|fiction|verse",
    "factual": "what is|who|when did|where is|history|explain|capital|why does",
    "summarization": "summarize|summarise|summary|tl;dr|condense|shorten|key points",
    "extraction": "extract|list all|entities|fields|pull out|find all|names of",
    "classification": "classify|categorize|categorise|label|sentiment|which category",
    "brainstorming": "ideas|brainstorm|suggest|plan|tips|recommend|ways to",
}


def keywords(text: str, limit: int = 5) -> list[str]:
    """The first ``limit`` distinct content words of ``text`` (as written, stopwords removed)."""
    found: list[str] = []
    seen: set[str] = set()
    for match in _WORD.finditer(text):
        word = match.group(0).strip("'-")
        key = word.lower()
        if len(word) >= 4 and key not in _STOPWORDS and key not in seen:
            seen.add(key)
            found.append(word)
            if len(found) == limit:
                break
    return found


def _topic(words: Sequence[str]) -> str:
    if not words:
        return "your question"
    if len(words) == 1:
        return words[0]
    return f"{words[0]} and {words[1]}"


def _fill(rng: random.Random, template: str, words: Sequence[str], topic: str) -> str:
    pool = list(words) or ["the question", "the context"]
    a = rng.choice(pool)
    b = rng.choice([w for w in pool if w != a] or ["the context"])
    return template.format(a=a, b=b, topic=topic)


def answer_body(rng: random.Random, words: Sequence[str], domain: str, quality: float) -> str:
    """A few paragraphs about ``words``; better answers are longer and more specific."""
    topic = _topic(words)
    sentences = [_OPENINGS.get(domain, _OPENINGS[""]).format(topic=topic)]
    middle_count = 2 + round(quality * 6) + rng.randint(0, 1)
    sentences += [_fill(rng, t, words, topic) for t in rng.sample(_MIDDLE, min(middle_count, len(_MIDDLE)))]
    if quality >= 0.7:
        sentences.append(rng.choice(_DETAIL))
    if quality < 0.5:
        sentences.append(rng.choice(_HEDGES))
    sentences.append(_fill(rng, rng.choice(_CLOSINGS), words, topic))
    paragraphs: list[str] = []
    while sentences:
        size = rng.randint(2, 3)
        paragraphs.append(" ".join(sentences[:size]))
        sentences = sentences[size:]
    if domain == "coding" and quality >= 0.6:
        name = re.sub(r"[^a-z0-9_]", "_", (words[0] if words else "solve").lower())
        paragraphs.insert(2, f"```python\ndef {name}(data):\n    # handle the {topic} case\n    return data\n```")
    return "\n\n".join(paragraphs)


def critique(rng: random.Random, words: Sequence[str], score: float) -> dict[str, object]:
    """The critique object, keys in contract order; the score is the last key."""
    topic = _topic(words)
    n_strengths = 1 + int(score / 3.5)
    n_weaknesses = 1 + int((10 - score) / 3.5)
    band = (
        "is excellent and nearly flawless"
        if score >= 9
        else "is strong with minor issues"
        if score >= 7.5
        else "is usable but has noticeable gaps"
        if score >= 5
        else "has significant problems"
        if score >= 3
        else "is mostly wrong or unhelpful"
    )
    return {
        "rationale": f"The response about {topic} {band}.",
        "strengths": [_fill(rng, t, words, topic) for t in rng.sample(_STRENGTHS, n_strengths)],
        "weaknesses": [_fill(rng, t, words, topic) for t in rng.sample(_WEAKNESSES, n_weaknesses)],
        "suggestions": [_fill(rng, t, words, topic) for t in rng.sample(_SUGGESTIONS, n_weaknesses)],
        "score": round(score, 1),
    }


def unusable_critique(rng: random.Random, valid: dict[str, object]) -> str:
    """A malformed critic reply: prose without a score, JSON cut short, or a non-numeric score."""
    variant = rng.randrange(3)
    if variant == 0:
        return (
            "I reviewed the response carefully. It covers some of the ground but I would rather not put "
            "a number on it without more context about what the user needs."
        )
    if variant == 1:
        text = json.dumps(valid, ensure_ascii=False)
        return text[: text.index('"weaknesses"')]
    broken = dict(valid)
    broken["score"] = "N/A"
    return json.dumps(broken, ensure_ascii=False)


_HINT_PATTERNS = {
    domain: re.compile(r"\b(?:" + "|".join(map(re.escape, hints.split("|"))) + r")\b")
    for domain, hints in _DOMAIN_HINTS.items()
}


def guess_domain(text: str) -> str:
    """Keyword guess of a prompt's domain; ``factual`` when nothing matches."""
    lowered = text.lower()
    best, best_hits = "factual", 0
    for domain in DOMAINS:
        hits = len(_HINT_PATTERNS[domain].findall(lowered))
        if hits > best_hits:
            best, best_hits = domain, hits
    return best
