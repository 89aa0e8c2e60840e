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
from dataclasses import dataclass, field
from typing import Protocol

from services.selector.detectors import contains_any, has_code

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
    """What a rule searches the window with: a compiled regex, or :class:`Signal`. Truthy on a hit."""

    def search(self, text: str, /) -> object:
        """A match (truthy) or a falsy value."""
        ...


class Part:
    """One regex of a :class:`Signal`, searched only when the text holds one of its ``needles`` (if any).

    ``gate``: a cheaper regex that matches in every text in which ``pattern`` does, searched first. ``backwards``:
    ``pattern`` is written backwards and searched in the reversed text (a match of a regex in a text
    is a match of the regex written backwards in the reversed text; ``\\b`` and ``\\s`` read the same
    both ways).
    """

    __slots__ = ("backwards", "chars", "gate", "needles", "pattern")

    def __init__(self, pattern: str, needles: tuple[str, ...] = (), gate: str = "", backwards: bool = False) -> None:
        self.pattern = re.compile(pattern)
        # One-character needles are looked up in the window's set of characters (see _Window).
        self.chars = frozenset(needles) if needles and all(len(n) == 1 for n in needles) else frozenset()
        self.needles = () if self.chars else needles
        self.gate = re.compile(gate) if gate else None
        self.backwards = backwards


class _Window:
    """A lower-cased instruction window, and what several rules derive from it, computed once."""

    __slots__ = ("_reversed", "chars", "text")

    def __init__(self, text: str) -> None:
        self.text = text
        #: The characters of :data:`_NEEDLE_CHARS` in the window (a substring test each, at memchr speed).
        self.chars = frozenset([c for c in _NEEDLE_CHARS if c in text])
        self._reversed: str | None = None

    @property
    def reversed(self) -> str:
        """The window backwards, for parts written backwards."""
        if self._reversed is None:
            self._reversed = self.text[::-1]
        return self._reversed


class Signal:
    """A rule's regex as written (``source``), searched as faster ``parts`` that find a match exactly when it does.

    A search finds a match of ``a|b`` exactly when it finds one of ``a`` or of ``b``, so an
    alternation splits into parts. Python's regex engine skips ahead fast only to a leading literal:
    from ``\\b`` or a class it tries every position, which made these rules cost more than the rest
    of the selector. So a part starts with its word and checks the word boundary before it with a
    look-behind (``word(?<=\\bword)`` matches where ``\\bword`` does, see :func:`_word_first`), or is
    written backwards. ``requires``: every match contains one of these, tested before any part (by
    default the parts' needles, when every part has some).
    """

    __slots__ = ("chars", "parts", "requires", "source")

    def __init__(self, source: str, *parts: Part, requires: tuple[str, ...] = ()) -> None:
        self.source = source
        self.parts = parts
        if not requires and all(p.needles for p in parts):
            requires = tuple(dict.fromkeys(n for p in parts for n in p.needles))
        self.requires = requires
        # Likewise one test for parts that all need one of a few characters.
        self.chars = frozenset().union(*(p.chars for p in parts)) if all(p.chars for p in parts) else frozenset()

    def search(self, text: str, /) -> bool:
        """True when ``source`` occurs in ``text``."""
        return self.occurs(_Window(text))

    def occurs(self, window: _Window) -> bool:
        """True when ``source`` occurs in the window."""
        # Plain loops, no generator expressions: on most windows every test fails at once, and the
        # Python around the tests is then most of the cost.
        text = window.text
        if self.chars and self.chars.isdisjoint(window.chars):
            return False
        if self.requires and not contains_any(text, self.requires):
            return False
        for part in self.parts:
            if part.chars and part.chars.isdisjoint(window.chars):
                continue
            if part.needles and not contains_any(text, part.needles):
                continue
            if part.gate is not None and part.gate.search(text) is None:
                continue
            if part.pattern.search(window.reversed if part.backwards else text) is not None:
                return True
        return False


def _word_first(word: str, rest: str) -> Part:
    r"""The part for ``\b`` + ``word`` + ``rest``: ``word`` (a literal) first, behind the needle ``word``."""
    literal = re.escape(word)
    return Part(f"{literal}(?<=\\b{literal}){rest}", (word,))


def _words_first(words: str, rest: str) -> tuple[Part, ...]:
    r"""The parts for ``\b(w1|w2|...)`` + ``rest`` (``words`` as in the regex: literals joined by ``|``)."""
    return tuple(_word_first(word, rest) for word in words.split("|"))


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

_CODE_OBJECTS = (
    r"(function|method|class|program|snippet|algorithm|(sql|database) query|regex|regular expression|unit tests?"
    rf"|api endpoint|one-liner|dockerfile|makefile|(shell|{_LANGUAGES}) script)\b"
)
_CREATIVE_PIECES = (
    r"\s+(me\s+|us\s+)?(a|an|some|one|two|three|\d+|the)?\s*(?:(?!of\b|about\b|for\b|on\b)[\w'-]+\s+){0,3}?(poem|poems"
    r"|haiku|limerick|sonnet|lyrics|song|rap|ballad|story|stories|fable|fairy tale|screenplay|scene"
    r"|monologue|ode|villanelle|(movie |film )?plot)\b"
)
_CODE_VERBS = "write|implement|create|generate|code|build|design|define|construct|develop|give me|make"
_CREATIVE_VERBS = "write|compose|pen|make up|tell me|create|generate|build|develop|come up with"
_EQUATION_PARTS = (
    r"\d\s*[+*×÷^]\s*\(?\d",  # 12 * 7, 3 + 4
    r"\d\s+[-/−]\s+\d",  # 10 - 3, 6 / 2
    r"\b\d*[a-z]\s*(?:\^|\*\*)\s*\d",  # x^2, 2y**3
    r"[a-z][²³]",  # x²
    r"\b\d*[a-z]\s*[-+]\s*\d+\s*=|=\s*-?\d*[a-z]\s*[-+*/]",  # 3x + 7 = ..., = 2x - 1
    r"\$[^$\n]{0,80}(?:\\frac|\\sqrt|\\int|\\sum|\\cdot|\\times|\\pi|\^|=)[^$\n]{0,80}\$",  # LaTeX
    r"[∫∑√∞≤≥]",
    r"\bd[xyt]\s*/\s*d[xyt]\b",  # dy/dx
    r"\b(?:sin|cos|tan|log|ln)\s*\(",
)

# Every rule is behind needles: words or characters that each of its matches contains. (As a single
# alternation the equation rule alone cost more than all the others together.)
RULES: tuple[SignalRule, ...] = (
    SignalRule("coding", CODE, 3.0, None),
    SignalRule(
        "coding",
        CODE_REQUEST,
        2.0,
        Signal(
            rf"\b({_CODE_VERBS})\b(?:\s+[\w+#-]+){{0,6}}?\s+{_CODE_OBJECTS}",
            *_words_first(_CODE_VERBS, rf"\b(?:\s+[\w+#-]+){{0,6}}?\s+{_CODE_OBJECTS}"),
            # The most frequent first: the test stops at the first one found.
            requires=(
                "class",
                "function",
                "program",
                "method",
                " script",
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
            ),
        ),
    ),
    SignalRule(
        "coding",
        "names a language",
        1.0,
        Signal(rf"\b(in|using|with) ({_LANGUAGES})\b", *_words_first("in |using |with ", rf"({_LANGUAGES})\b")),
    ),
    SignalRule(
        "math",
        "equation",
        2.0,
        Signal(
            "|".join(_EQUATION_PARTS),
            Part(_EQUATION_PARTS[0], ("+", "*", "×", "÷", "^")),
            # Behind an operator with a blank on each side (the pattern starts with a class: slow to
            # search, and windows often hold "-" or "/").
            *(Part(rf"\d\s+{op}\s+\d", (op,), gate=rf"{op}(?<=\s{op})(?=\s)") for op in ("-", "/", "−")),
            Part(_EQUATION_PARTS[2], ("^", "**")),
            Part(_EQUATION_PARTS[3], ("²", "³")),
            Part(r"=\s*\d+\s*[-+]\s*[a-z]\d*\b", ("=",), backwards=True),  # the first half of [4], backwards
            Part(r"=\s*-?\d*[a-z]\s*[-+*/]", ("=",)),
            Part(_EQUATION_PARTS[5], ("$",)),
            Part(_EQUATION_PARTS[6], ("∫", "∑", "√", "∞", "≤", "≥")),
            Part(r"d(?<=\bd)[xyt]\s*/\s*d[xyt]\b", ("/",)),
            Part(r"\(\s*(?:nis|soc|nat|gol|nl)\b", ("(",), backwards=True),
        ),
        unless=(CODE, CODE_REQUEST),
    ),
    SignalRule(
        "math",
        "solve/compute",
        1.0,
        Signal(
            r"\b(solve (for|the (equation|system|inequality))|derivative|integral|integrate|differentiate"
            r"|simplify the expression|factor(i[sz]e)? completely|evaluate the (limit|integral|expression)"
            r"|probability (that|of (getting|drawing|rolling))|how many (different )?ways)\b",
            _word_first("solve ", r"(for|the (equation|system|inequality))\b"),
            *_words_first("derivative|differentiate|simplify the expression", r"\b"),
            _word_first("integra", r"(l|te)\b"),
            _word_first("factor", r"(i[sz]e)? completely\b"),
            _word_first("evaluate the ", r"(limit|integral|expression)\b"),
            _word_first("probability ", r"(that|of (getting|drawing|rolling))\b"),
            _word_first("how many ", r"(different )?ways\b"),
            requires=(
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
        ),
        unless=(CODE, CODE_REQUEST),
    ),
    SignalRule(
        "math",
        WORD_PROBLEM,
        1.5,
        Signal(
            r"\b(how (many|much|long|far|old|fast)|what (is|was|are|will be) the (total|average|sum|difference"
            r"|cost|price|value|area|volume|percentage)|what percent(age)?|what fraction)\b",
            _word_first("how ", r"(many|much|long|far|old|fast)\b"),
            _word_first(
                "what ",
                r"((is|was|are|will be) the (total|average|sum|difference|cost|price|value|area|volume|percentage)"
                r"|percent(age)?|fraction)\b",
            ),
        ),
        unless=(CODE, CODE_REQUEST),
    ),
    SignalRule(
        "summarization",
        "summarize",
        2.5,
        Signal(
            r"\b(summar(y|ies|i[sz]e[sd]?|i[sz]ing|i[sz]ation)|tl;?\s?dr|recap)\b",
            _word_first("summar", r"(y|ies|i[sz]e[sd]?|i[sz]ing|i[sz]ation)\b"),
            _word_first("tl", r";?\s?dr\b"),
            _word_first("recap", r"\b"),
        ),
        unless=(CODE, CODE_REQUEST),
    ),
    SignalRule(
        "classification",
        "classify",
        2.0,
        Signal(
            r"\b(classify|categori[sz]e|sentiment|positive or negative|negative or positive|spam or (not|ham))\b",
            *_words_first("classify|sentiment|positive or negative|negative or positive", r"\b"),
            _word_first("categori", r"[sz]e\b"),
            _word_first("spam or ", r"(not|ham)\b"),
        ),
        unless=(CODE, CODE_REQUEST),
    ),
    SignalRule(
        "extraction",
        "extract",
        2.5,
        Signal(
            r"\b(extract(s|ed|ing)?|pull out|named entit(y|ies))\b",
            _word_first("extract", r"(s|ed|ing)?\b"),
            _word_first("pull out", r"\b"),
            _word_first("named entit", r"(y|ies)\b"),
        ),
        unless=(CODE, CODE_REQUEST),
    ),
    SignalRule(
        "creative",
        "creative piece",
        2.0,
        Signal(
            rf"\b({_CREATIVE_VERBS}){_CREATIVE_PIECES}",
            *_words_first(_CREATIVE_VERBS, _CREATIVE_PIECES),
            # The most frequent first (in words like "history", "code", "paragraph" too).
            requires=(
                "stor",
                "ode",
                "rap",
                "poem",
                "plot",
                "scene",
                "song",
                "haiku",
                "limerick",
                "sonnet",
                "lyrics",
                "ballad",
                "fable",
                "fairy tale",
                "screenplay",
                "monologue",
                "villanelle",
            ),
        ),
        unless=(CODE, CODE_REQUEST),
    ),
    SignalRule(
        "creative",
        "role-play",
        1.5,
        Signal(
            r"\b(role-?play|stay in character|in character)\b",
            _word_first("role", r"-?play\b"),
            *_words_first("stay in character|in character", r"\b"),
        ),
    ),
    SignalRule(
        "brainstorming",
        "ideas",
        1.5,
        Signal(
            r"\b(brainstorm\w*|ideas (for|to|on|about)|give me (some |a few |\d+ )?ideas|suggestions (for|on)"
            r"|tips (for|on|to))\b",
            _word_first("brainstorm", r"\w*\b"),
            _word_first("ideas ", r"(for|to|on|about)\b"),
            _word_first("give me ", r"(some |a few |\d+ )?ideas\b"),
            _word_first("suggestions ", r"(for|on)\b"),
            _word_first("tips ", r"(for|on|to)\b"),
        ),
        unless=(CODE, CODE_REQUEST),
    ),
)

_NEEDLE_CHARS = "".join(
    sorted(set().union(*(p.chars for r in RULES if isinstance(r.pattern, Signal) for p in r.pattern.parts)))
)


@dataclass(frozen=True)
class RuleLayer:
    """Applies :data:`RULES` (or other rules) on top of model probabilities."""

    rules: tuple[SignalRule, ...] = RULES
    revision: int = RULES_REVISION
    _cancelling: frozenset[str] = field(init=False, repr=False, compare=False)
    """Labels named in some rule's ``unless``."""

    def __post_init__(self) -> None:
        object.__setattr__(self, "_cancelling", frozenset(label for rule in self.rules for label in rule.unless))

    def fire(self, prompt: str) -> tuple[SignalRule, ...]:
        """The rules whose signal is in ``prompt``, after cancellations."""
        window = instruction_window(prompt)
        instruction = window.lower()
        shared = _Window(instruction)
        fired: list[SignalRule] = []
        labels: set[str] = set()
        for rule in self.rules:
            # A rule that a fired rule cancels is dropped anyway: not searched, unless it cancels
            # others itself (then whether it fires matters).
            if labels and rule.label not in self._cancelling and not labels.isdisjoint(rule.unless):
                continue
            if rule.pattern is None:
                hit = has_code(window)
            elif rule.label == WORD_PROBLEM and not _word_problem(prompt):
                hit = False
            elif isinstance(rule.pattern, Signal):
                hit = rule.pattern.occurs(shared)
            else:
                hit = bool(rule.pattern.search(instruction))
            if hit:
                fired.append(rule)
                labels.add(rule.label)
        return tuple(r for r in fired if labels.isdisjoint(r.unless))

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
