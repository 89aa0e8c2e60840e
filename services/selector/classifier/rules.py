"""The rule layer: unmistakable surface signals that adjust the learned model's probabilities.

A learned model trained on a thousand examples misses signals a person never would: a fenced code
block, ``3x + 7 = 22``, "summarize", "classify the following". Each rule below adds its ``weight`` to
the log-probability of one domain when it fires; the result goes through a softmax again::

    p'(d) ∝ p_model(d) · exp(Σ weight of the rules of d that fired)

So a rule multiplies its domain's odds by ``e^weight`` (+2.5 ≈ ×12) and never overrides the model
blindly: if the model is more than that sure of another domain, the model wins. "Write a function
that summarizes a list" fires *summarize*, but also *asks for code*, which cancels it (``unless``).

All rules read only the instruction window (:func:`instruction_window`: the first and last
:data:`INSTRUCTION_CHARS` characters): words inside a pasted article are not instructions, and the
cost stays bounded for huge prompts (the code detector's regexes take about a millisecond on a few
thousand characters). Code pasted into a long prompt still shows at one of its ends in practice,
and the learned model sees code-like character n-grams anyway. Patterns are written in lower case
and searched in the lower-cased window (faster than ``re.IGNORECASE``); the code detector sees the
original text.

=================  ===============  ======  ===================================================
rule               domain           weight  fires on
=================  ===============  ======  ===================================================
contains code      coding           3.0     a code block or unmistakable code (``has_code``)
asks for code      coding           2.0     write/implement/design ... a function, algorithm, SQL query,
                                            regex, Python/shell script (not "a script for a play")
names a language   coding           1.0     "in Python", "using SQL", "with JavaScript", ...
equation           math             2.0     ``3x + 7 = 22``, ``x^2``, ``12 * 7``, LaTeX, ∫ √ ≤
solve/compute      math             1.0     solve for, derivative, integral, probability that
word problem       math             1.5     how many/much/long..., what is the total... and 3+ numbers
summarize          summarization    2.5     summarize/summarise/summary, tl;dr, recap
classify           classification   2.0     classify, categorise, sentiment, positive or negative
extract            extraction       2.5     extract, pull out, named entities
creative piece     creative         2.0     write/compose/create ... a poem, story, song, lyrics, plot
role-play          creative         1.5     role-play, stay in character
ideas              brainstorming    1.5     brainstorm, ideas for, give me ideas, tips for
=================  ===============  ======  ===================================================

Revise :data:`RULES_REVISION` whenever a rule or weight changes: it is part of the classifier
version reported with every analysis.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Protocol

from services.selector.analysis import has_code

RULES_REVISION = 1

#: Characters read at each end of a prompt.
INSTRUCTION_CHARS = 250

#: Floor for a model probability before taking its log (the model never says exactly 0).
_MIN_PROBABILITY = 1e-9

_LANGUAGES = (
    r"python|javascript|typescript|java|c\+\+|c#|golang|rust|ruby|php|kotlin|swift|scala|haskell|perl|sql"
    r"|mysql|postgres(?:ql)?|sqlite|bash|powershell|html|css|regex|pandas|numpy|react|django|flask|node\.?js"
)


class Searcher(Protocol):
    """What a rule searches the window with: a compiled regex, or :class:`AnyOf`. Truthy on a hit."""

    def search(self, text: str, /) -> object:
        """A match (truthy) or a falsy value."""
        ...


class AnyOf:
    """Several regexes, any of which is a hit; each is searched only if the text holds one of its needles.

    Same answer as one alternation of the regexes (a search finds a match of ``a|b`` exactly when it
    finds one of ``a`` or of ``b``), provided every match of a regex contains one of its needles; a
    substring test is far cheaper than a regex scan of text that cannot match.
    """

    __slots__ = ("parts",)

    def __init__(self, *parts: tuple[tuple[str, ...], str]) -> None:
        self.parts = tuple((needles, re.compile(pattern)) for needles, pattern in parts)

    def search(self, text: str, /) -> bool:
        """True when one of the regexes occurs in ``text``."""
        return any(any(n in text for n in needles) and p.search(text) is not None for needles, p in self.parts)


@dataclass(frozen=True)
class SignalRule:
    """One unmistakable signal: when it fires, ``weight`` is added to ``domain``'s log-probability.

    ``pattern`` (lower case) is searched in the lower-cased instruction window; ``None`` means the
    code detector. ``unless`` names rules that cancel this one when they fire too.
    """

    domain: str
    label: str
    weight: float
    pattern: Searcher | None
    unless: tuple[str, ...] = ()


CODE = "contains code"
CODE_REQUEST = "asks for code"
WORD_PROBLEM = "word problem"

#: A word problem asks for a quantity and gives at least this many numbers to compute it from.
WORD_PROBLEM_NUMBERS = 3
_NUMBER = re.compile(r"(?<![\w.])\$?\d+(?:[.,]\d+)?%?")

RULES: tuple[SignalRule, ...] = (
    SignalRule("coding", CODE, 3.0, None),
    SignalRule(
        "coding",
        CODE_REQUEST,
        2.0,
        AnyOf(
            (
                (
                    "function",
                    "method",
                    "class",
                    "program",
                    "snippet",
                    "algorithm",
                    " query",
                    "regex",
                    "regular expression",
                    "unit test",
                    "api endpoint",
                    "one-liner",
                    "dockerfile",
                    "makefile",
                    " script",
                ),
                r"\b(write|implement|create|generate|code|build|design|define|construct|develop|give me|make)\b"
                r"(?:\s+[\w+#-]+){0,6}?\s+(function|method|class|program|snippet|algorithm|(sql|database) query"
                r"|regex|regular expression|unit tests?|api endpoint|one-liner|dockerfile|makefile"
                rf"|(shell|{_LANGUAGES}) script)\b",
            )
        ),
    ),
    SignalRule(
        "coding", "names a language", 1.0, AnyOf((("in ", "using ", "with "), rf"\b(in|using|with) ({_LANGUAGES})\b"))
    ),
    SignalRule(
        "math",
        "equation",
        2.0,
        # One regex per kind of equation, each searched only when the window holds a character it
        # needs: as a single alternation this rule cost more than all the others together. (Every rule
        # is behind such needles: words or characters each of its matches must contain.)
        AnyOf(
            (("+", "*", "×", "÷", "^"), r"\d\s*[+*×÷^]\s*\(?\d"),  # 12 * 7, 3 + 4
            (("-", "/", "−"), r"\d\s+[-/−]\s+\d"),  # 10 - 3, 6 / 2
            (("^", "**"), r"\b\d*[a-z]\s*(?:\^|\*\*)\s*\d"),  # x^2, 2y**3
            (("²", "³"), r"[a-z][²³]"),  # x²
            (("=",), r"\b\d*[a-z]\s*[-+]\s*\d+\s*=|=\s*-?\d*[a-z]\s*[-+*/]"),  # 3x + 7 = ..., = 2x - 1
            (("$",), r"\$[^$\n]{0,80}(?:\\frac|\\sqrt|\\int|\\sum|\\cdot|\\times|\\pi|\^|=)[^$\n]{0,80}\$"),  # LaTeX
            (("∫", "∑", "√", "∞", "≤", "≥"), r"[∫∑√∞≤≥]"),
            (("/",), r"\bd[xyt]\s*/\s*d[xyt]\b"),  # dy/dx
            (("(",), r"\b(?:sin|cos|tan|log|ln)\s*\("),
        ),
        unless=(CODE, CODE_REQUEST),
    ),
    SignalRule(
        "math",
        "solve/compute",
        1.0,
        AnyOf(
            (
                (
                    "solve ",
                    "derivative",
                    "integra",
                    "differentiate",
                    "simplify the expression",
                    "factor",
                    "evaluate the ",
                    "probability ",
                    "how many ",
                ),
                r"\b(solve (for|the (equation|system|inequality))|derivative|integral|integrate|differentiate"
                r"|simplify the expression|factor(i[sz]e)? completely|evaluate the (limit|integral|expression)"
                r"|probability (that|of (getting|drawing|rolling))|how many (different )?ways)\b",
            )
        ),
        unless=(CODE, CODE_REQUEST),
    ),
    SignalRule(
        "math",
        WORD_PROBLEM,
        1.5,
        AnyOf(
            (
                ("how ", "what "),
                r"\b(how (many|much|long|far|old|fast)|what (is|was|are|will be) the (total|average|sum|difference"
                r"|cost|price|value|area|volume|percentage)|what percent(age)?|what fraction)\b",
            )
        ),
        unless=(CODE, CODE_REQUEST),
    ),
    SignalRule(
        "summarization",
        "summarize",
        2.5,
        AnyOf((("summar", "tl", "recap"), r"\b(summar(y|ies|i[sz]e[sd]?|i[sz]ing|i[sz]ation)|tl;?\s?dr|recap)\b")),
        unless=(CODE, CODE_REQUEST),
    ),
    SignalRule(
        "classification",
        "classify",
        2.0,
        AnyOf(
            (
                ("classify", "categori", "sentiment", "positive or negative", "negative or positive", "spam or "),
                r"\b(classify|categori[sz]e|sentiment|positive or negative|negative or positive|spam or (not|ham))\b",
            )
        ),
        unless=(CODE, CODE_REQUEST),
    ),
    SignalRule(
        "extraction",
        "extract",
        2.5,
        AnyOf((("extract", "pull out", "named entit"), r"\b(extract(s|ed|ing)?|pull out|named entit(y|ies))\b")),
        unless=(CODE, CODE_REQUEST),
    ),
    SignalRule(
        "creative",
        "creative piece",
        2.0,
        AnyOf(
            (
                (
                    "poem",
                    "haiku",
                    "limerick",
                    "sonnet",
                    "lyrics",
                    "song",
                    "rap",
                    "ballad",
                    "stor",
                    "fable",
                    "fairy tale",
                    "screenplay",
                    "scene",
                    "monologue",
                    "ode",
                    "villanelle",
                    "plot",
                ),
                r"\b(write|compose|pen|make up|tell me|create|generate|build|develop|come up with)\s+(me\s+|us\s+)?"
                r"(a|an|some|one|two|three|\d+|the)?\s*(?:(?!of\b|about\b|for\b|on\b)[\w'-]+\s+){0,3}?(poem|poems"
                r"|haiku|limerick|sonnet|lyrics|song|rap|ballad|story|stories|fable|fairy tale|screenplay|scene"
                r"|monologue|ode|villanelle|(movie |film )?plot)\b",
            )
        ),
        unless=(CODE, CODE_REQUEST),
    ),
    SignalRule(
        "creative", "role-play", 1.5, AnyOf((("role", "character"), r"\b(role-?play|stay in character|in character)\b"))
    ),
    SignalRule(
        "brainstorming",
        "ideas",
        1.5,
        AnyOf(
            (
                ("brainstorm", "ideas", "suggestions", "tips"),
                r"\b(brainstorm\w*|ideas (for|to|on|about)|give me (some |a few |\d+ )?ideas|suggestions (for|on)"
                r"|tips (for|on|to))\b",
            )
        ),
        unless=(CODE, CODE_REQUEST),
    ),
)


@dataclass(frozen=True)
class RuleLayer:
    """Applies :data:`RULES` (or other rules) on top of model probabilities."""

    rules: tuple[SignalRule, ...] = RULES
    revision: int = RULES_REVISION

    def fire(self, prompt: str) -> tuple[SignalRule, ...]:
        """The rules whose signal is in ``prompt``, after cancellations."""
        window = instruction_window(prompt)
        instruction = window.lower()
        fired: list[SignalRule] = []
        for rule in self.rules:
            if rule.pattern is None:
                hit = has_code(window)
            elif rule.label == WORD_PROBLEM:
                hit = bool(rule.pattern.search(instruction)) and _word_problem(prompt)
            else:
                hit = bool(rule.pattern.search(instruction))
            if hit:
                fired.append(rule)
        labels = {r.label for r in fired}
        return tuple(r for r in fired if not labels.intersection(r.unless))

    def apply(self, probabilities: Mapping[str, float], fired: tuple[SignalRule, ...]) -> dict[str, float]:
        """``probabilities`` adjusted by the ``fired`` rules (same keys; sums to 1)."""
        if not fired:
            return dict(probabilities)
        logits = {d: math.log(max(p, _MIN_PROBABILITY)) for d, p in probabilities.items()}
        for rule in fired:
            if rule.domain in logits:
                logits[rule.domain] += rule.weight
        top = max(logits.values())
        exps = {d: math.exp(v - top) for d, v in logits.items()}
        total = sum(exps.values())
        return {d: v / total for d, v in exps.items()}


def instruction_window(prompt: str) -> str:
    """``prompt`` when short; else its first and last :data:`INSTRUCTION_CHARS` characters."""
    if len(prompt) <= 2 * INSTRUCTION_CHARS:
        return prompt
    return prompt[:INSTRUCTION_CHARS] + "\n" + prompt[-INSTRUCTION_CHARS:]


def _word_problem(prompt: str) -> bool:
    """Enough numbers to compute a quantity from; word problems are short."""
    return len(prompt) <= 2 * INSTRUCTION_CHARS and len(_NUMBER.findall(prompt)) >= WORD_PROBLEM_NUMBERS
