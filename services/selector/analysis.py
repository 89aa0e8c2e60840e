"""Prompt analysis: domain probabilities and the features ranking needs. Pure: no I/O, no gRPC.

The domain classifier sits behind :class:`DomainClassifier` (``predict(prompt) -> {domain: p}``) so a
trained model can replace :class:`RuleClassifier` without touching callers. The rule classifier is a
transparent weighted keyword/regex scorer: every matching rule adds its weight to one domain's logit,
and a softmax turns the logits into probabilities. Each domain's probability comes with the rules that
fired, so a surprising classification can be explained from the response alone.
"""

from __future__ import annotations

import functools
import math
import re
import unicodedata
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable

from orchestratex.domains import DOMAINS

CLASSIFIER_VERSION = "rules-0.1"

#: Expected completion length per domain when the caller gives none (cost and window estimates).
DEFAULT_OUTPUT_TOKENS: Mapping[str, int] = {
    "coding": 900,
    "math": 600,
    "reasoning": 500,
    "creative": 800,
    "factual": 500,
    "summarization": 250,
    "extraction": 300,
    "classification": 50,
    "brainstorming": 700,
}
FALLBACK_OUTPUT_TOKENS = 600

#: Characters per token for the estimate. Crude, but vendor tokenisers differ anyway and the
#: estimate only feeds cost ranking and a safety margin on context windows.
CHARS_PER_TOKEN = 4


#: Feature detectors (code, data) look at most at this much of a prompt: its head and its tail. The
#: detectors' regexes cost about a microsecond per 10 characters, and code or data that matters is not
#: only in the middle of a long prompt: pasted material starts near the top, and the question about
#: it sits at one end. (Was 16,000 + 4,000, which cost ~2 ms per long prompt; issue #4.)
FEATURE_HEAD_CHARS = 3_000
FEATURE_TAIL_CHARS = 1_000
#: Language detection reads the prose of the first ``2 x`` this many characters, and this many of it.
LANGUAGE_SAMPLE_CHARS = 2_000


def _sample(text: str, head: int = FEATURE_HEAD_CHARS, tail: int = FEATURE_TAIL_CHARS) -> str:
    """``text`` when short; otherwise its first ``head`` and last ``tail`` characters, newline-joined."""
    if len(text) <= head + tail:
        return text
    return text[:head] + "\n" + text[-tail:]


def estimate_tokens(text: str) -> int:
    """Estimated tokens of ``text``: ``ceil(chars / 4)``."""
    return math.ceil(len(text) / CHARS_PER_TOKEN)


def default_output_tokens(domain: str) -> int:
    """Typical completion length for ``domain``."""
    return DEFAULT_OUTPUT_TOKENS.get(domain, FALLBACK_OUTPUT_TOKENS)


# --------------------------------------------------------------------------------------------------
# Classifier interface


class DomainClassifier(Protocol):
    """Anything that maps a prompt to a probability per domain.

    ``predict`` may return any subset of :data:`DOMAINS`; :func:`analyze` fills the missing ones with
    0 and renormalises, so a classifier need not be exact about the sum.
    """

    @property
    def version(self) -> str:
        """Identifies the classifier in responses and analytics (e.g. ``rules-0.1``)."""
        ...

    def predict(self, prompt: str) -> dict[str, float]:
        """Probability (or unnormalised non-negative weight) of each domain."""
        ...


@runtime_checkable
class ExplainingClassifier(Protocol):
    """A classifier that can also say why, per domain, in a few words."""

    def predict_with_reasons(self, prompt: str) -> tuple[dict[str, float], dict[str, str]]:
        """Probabilities and a short reason per domain (only for domains with evidence)."""
        ...


# --------------------------------------------------------------------------------------------------
# Features: code, data, language

_FLAGS = re.IGNORECASE | re.MULTILINE

_CODE_FENCE = re.compile(r"^[ \t]*(```|~~~)[ \t]*([\w+#.-]*)[ \t]*\n(.*?)(^[ \t]*\1|\Z)", re.MULTILINE | re.DOTALL)
#: Fence info strings that announce data or prose, not code.
_NON_CODE_FENCES = frozenset(
    {"", "text", "txt", "plain", "plaintext", "markdown", "md", "json", "csv", "tsv", "yaml", "yml", "log", "output"}
)


@dataclass(frozen=True)
class _Detector:
    """A regex behind a cheap necessary condition: it is searched only if ``text`` contains one of ``needles``.

    Most prompts are prose, and a substring test (memchr speed) rules most patterns out at once; the
    result is the same as searching every pattern, at a fraction of the cost (measured in
    ``bench/selector_perf_bench.py``). Every match of ``pattern`` must contain one of the needles.
    ``source`` is the pattern as written; ``pattern`` may be an equivalent, faster form of it (see
    :func:`_detector`).
    """

    pattern: re.Pattern[str]
    needles: tuple[str, ...]
    source: str
    line_start: bool = False
    """``pattern`` starts with ``\\n`` instead of ``^``: search it in ``"\\n" + text``."""
    reverse: bool = False
    """``pattern`` is ``source`` written backwards: search it in the reversed text."""

    def search(self, text: str) -> bool:
        """True when ``source`` occurs in ``text``."""
        if not any(n in text for n in self.needles):
            return False
        if self.line_start:
            text = "\n" + text
        elif self.reverse:
            text = text[::-1]
        return self.pattern.search(text) is not None


def _detector(pattern: str, needles: str | tuple[str, ...], flags: int = 0) -> _Detector:
    needles = (needles,) if isinstance(needles, str) else needles
    if pattern.startswith("^") and flags & re.MULTILINE:
        # A line-start anchor gives the regex engine nothing to skip ahead to, so it tries every
        # position (~5x slower on a few thousand characters). Searched in "\n" + text, "\n" in place of
        # "^" matches exactly where "^" did (MULTILINE: at the start and after each newline), and a
        # leading literal is found at memchr speed. Needles never contain a newline, so the test on
        # the prefixed text gives the same answer.
        if any("\n" in n for n in needles):
            raise ValueError(f"a needle of {pattern!r} contains a newline")
        return _Detector(re.compile("\n" + pattern[1:], flags), needles, pattern, line_start=True)
    return _Detector(re.compile(pattern, flags), needles, pattern)


def _reversed_detector(pattern: str, backwards: str, needles: str | tuple[str, ...]) -> _Detector:
    """A detector for ``pattern`` that searches ``backwards`` (the same regex, reversed) in the reversed text.

    For patterns that start with a broad class (``\\w``, which nearly every position matches) and
    end with a literal: the regex engine then tries nearly every position of the text, and backwards
    it skips straight to the literal (10-20x faster on a few thousand characters). A match of one in
    a text is a match of the other in the reversed text, read backwards; ``\\b`` and ``\\s`` are
    symmetric. Only for patterns without anchors or look-arounds.
    """
    return _Detector(re.compile(backwards), (needles,) if isinstance(needles, str) else needles, pattern, reverse=True)


_OPERATORS = ("===", "!==", "&&", "||", "+=", "-=", "++", "::", "->", "=>")
# One match of any of these is enough: they do not occur in prose.
_CODE_UNMISTAKABLE = (
    _detector(r"^[ \t]*#include\s*[<\"]", "#include", re.MULTILINE),
    _detector(r"^[ \t]*(async\s+)?def\s+\w+\s*\([^)\n]*\)\s*(->\s*[\w\[\], .]+)?:[ \t]*$", "def", re.MULTILINE),
    _detector(r"\bpublic\s+(static\s+)?(void|class|int|String|boolean)\b", "public"),
    _detector(r"\bconsole\.log\s*\(", "console.log"),
    _detector(r"\bSystem\.out\.print", "System.out.print"),
    _detector(r"^[ \t]*#!/\S+", "#!/", re.MULTILINE),
    _detector(r"\bSELECT\b[^;]{1,300}?\bFROM\b\s+\w+", "SELECT"),
    _detector(r"\bfunction\s*\w*\s*\([^)\n]*\)\s*\{", "function"),
    _detector(r"</?(div|span|html|body|script|button|input|form|table|ul|li|img|template)\b[^>\n]*>", "<", _FLAGS),
    _detector(r"\$\(\s*['\"][^'\"]+['\"]\s*\)", "$("),
)
# Weaker hints; two different ones are needed.
_CODE_HINTS = (
    _detector(r"^[ \t]*(import|from)\s+[\w.]+(\s+import\s+[\w*, ]+)?\s*;?[ \t]*$", ("import", "from"), re.MULTILINE),
    _detector(r"^[ \t]*(const|let|var)\s+\w+\s*=", "=", re.MULTILINE),
    _detector(r"^[ \t]*(if|for|while|switch)\s*\(.*\)\s*\{?[ \t]*$", "(", re.MULTILINE),
    _detector(
        r"^[ \t]*(class|struct|interface|enum)\s+\w+[\w<>, ]*\s*[:({]",
        ("class", "struct", "interface", "enum"),
        re.MULTILINE,
    ),
    _reversed_detector(
        r"[\w)\]'\"]\s*(===|!==|&&|\|\||\+=|-=|\+\+|::|->|=>)\s*",
        r"(?:===|==!|&&|\|\||=\+|=-|\+\+|::|>-|>=)\s*[\w)\]'\"]",  # the final \s* cannot change the answer
        _OPERATORS,
    ),
    _detector(r"\w\([^()\n]*\)\s*;[ \t]*$", ";", re.MULTILINE),
    _detector(r"^[ \t]*[{}][ \t]*$", ("{", "}"), re.MULTILINE),
    # Same matches as r"\b\w+\.\w+\(...\)" (a word ends wherever a word character precedes the dot),
    # but starting from the dot, which the regex engine finds fast (the look-behind follows it).
    _detector(r"\.(?<=\w\.)\w+\([^()\n]*\)", "."),
    _detector(r"^[ \t]*(//|/\*|\*/)", ("//", "/*", "*/"), re.MULTILINE),
    # Same as r"\b(std::|self\.|this\.)\w+", with the word boundary checked after the literal.
    _detector(r"(?:std::|self\.|this\.)(?<=\bstd::|\bself\.|\bthis\.)\w+", ("std::", "self.", "this.")),
    _detector(r"^[ \t]*(for\s+\w+\s+in\s|if\s|elif\s|while\s|with\s|try|else)[^\n]*:[ \t]*$", ":", re.MULTILINE),
    _detector(r"^[ \t]*[A-Za-z_]\w*(\[\w*\])?\s*=\s*[\[{\"'\w]", "=", re.MULTILINE),
    _reversed_detector(r"\b[a-z_]\w*\([\w\"'][^()\n]*\)", r"\)[^()\n]*[\w\"']\(\w*[a-z_]\b", "("),
)

_DATA_FENCE = re.compile(r"^[ \t]*```\s*(json|csv|tsv|yaml|yml|xml)\b", _FLAGS)
# Written so that no two [ \t]* runs are adjacent: that would backtrack quadratically on long blanks.
_TABLE_SEPARATOR = re.compile(
    r"^[ \t]*(?:\|[ \t]*)?:?-{3,}:?[ \t]*(?:\|[ \t]*:?-{3,}:?[ \t]*)+(?:\|[ \t]*)?$", re.MULTILINE
)
_JSON_KEY = re.compile(r"[{,\[]\s*\"[^\"\n]{1,64}\"\s*:")


def has_code(text: str) -> bool:
    """True when ``text`` contains program code: a fenced code block, an unmistakable construct, or two hints.

    Fences alone are not enough: people also use them to delimit plain text ("the text in triple
    backticks"), so an untagged fence must hold something code-like.
    """
    return _has_code(_sample(text))


# Analysis asks about the whole prompt and the classifier's rule layer about its instruction window,
# which is the same string for prompts up to a few hundred characters: answer the second time from
# here. Small, so that it holds only the few prompts being analysed right now.
@functools.lru_cache(maxsize=16)
def _has_code(text: str) -> bool:
    if "```" in text or "~~~" in text:
        for fence in _CODE_FENCE.finditer(text):
            if fence.group(2).lower() not in _NON_CODE_FENCES or _looks_like_code(fence.group(3), hints=1):
                return True
    return _looks_like_code(text, hints=2)


def _looks_like_code(text: str, hints: int) -> bool:
    if any(p.search(text) for p in _CODE_UNMISTAKABLE):
        return True
    found = 0
    for p in _CODE_HINTS:
        if p.search(text):
            found += 1
            if found >= hints:  # the rest cannot change the answer
                return True
    return False


def has_data(text: str) -> bool:
    """True when ``text`` contains structured data: a table, CSV/TSV rows or a JSON-looking block."""
    text = _sample(text)
    # Each pattern needs its literal ("```", "---"): the substring test spares most prompts the scan.
    if ("```" in text and _DATA_FENCE.search(text)) or ("---" in text and _TABLE_SEPARATOR.search(text)):
        return True
    if len(_JSON_KEY.findall(text)) >= 2:
        return True
    return _has_delimited_rows(text)


def _has_delimited_rows(text: str, min_rows: int = 3) -> bool:
    """Three or more consecutive lines with the same number (>= 2) of one delimiter: a table or CSV."""
    lines: list[str] | None = None
    for delimiter in ("|", "\t", ",", ";"):
        # min_rows rows of >= 2 delimiters each: fewer in the whole text cannot make a table.
        if text.count(delimiter) < 2 * min_rows:
            continue
        if lines is None:
            lines = text.splitlines()
        run, previous = 0, -1
        for line in lines:
            count = line.count(delimiter)
            stripped = line.strip()
            # Prose lines with commas are long and end like sentences; rows are short and regular.
            row_like = count >= 2 and len(stripped) <= 300 and not stripped.endswith((".", "?", "!"))
            if row_like and (count == previous or run == 0):
                run += 1
                if run >= min_rows:
                    return True
            else:
                run = 1 if row_like else 0
            previous = count if row_like else -1
    return False


_WORD = re.compile(r"[^\W\d_]+(?:'[^\W\d_]+)?")
_ASCII_WORD = re.compile(r"[a-z]+(?:'[a-z]+)?")


def _words(text: str) -> frozenset[str]:
    return frozenset(text.split())


_ENGLISH = _words(
    "the and of to a an is in that it for you with on are this be was have what how can not or from my your"
    " do does if will would should which who i me about as at by into please write create make give tell we"
    " they he she his her there their when where why all any some has had been were one more use using"
    " following than then so no"
)
# Other languages' common words, minus those that are also English ("a", "do", "no", "die"...),
# so English text never scores for them.
_FUNCTION_WORDS: Mapping[str, frozenset[str]] = {
    "en": _ENGLISH,
    **{
        lang: _words(words) - _ENGLISH
        for lang, words in {
            "es": "el la los las de que y en un una es por para con se del como pero más está",
            "fr": "le la les de des et est un une que qui dans pour pas sur avec ce je vous",
            "de": "der die das und ist nicht ein eine zu den mit von ich sie es auf für wie",
            "pt": "o os as de que e é um uma para com não do da em se por mais está",
            "it": "il lo la gli le di che e è un una per con non del della sono come",
            "nl": "de het een en van is dat niet ik je met op voor zijn",
        }.items()
    },
}
# Scripts identified by the first word of the Unicode character name.
_SCRIPT_LANGUAGE = {
    "CYRILLIC": "ru",
    "GREEK": "el",
    "ARABIC": "ar",
    "HEBREW": "he",
    "DEVANAGARI": "hi",
    "THAI": "th",
    "HANGUL": "ko",
    "HIRAGANA": "ja",
    "KATAKANA": "ja",
    "CJK": "zh",
}


def detect_language(text: str, sample_chars: int = LANGUAGE_SAMPLE_CHARS) -> str:
    """A light guess at the ISO 639-1 language of ``text``: script first, then common function words.

    Returns ``"und"`` when there is too little text or no clear winner. Good enough to flag
    non-English prompts; not a language identifier.
    """
    head = _prose(text[: sample_chars * 2])[:sample_chars]
    scripts: dict[str, int] = {}
    # ASCII letters are all Latin: most prompts need no per-character look-up at all.
    if not head.isascii():
        for char, count in Counter(head).items():
            script = _script(char)
            if script:
                scripts[script] = scripts.get(script, 0) + count
    latin = scripts.pop("latin", 0) if scripts else 0
    other = sum(scripts.values())
    if other > latin:
        # Kana means Japanese even when Han characters outnumber it.
        if scripts.get("ja", 0) > 0 and scripts.get("zh", 0) + scripts.get("ja", 0) >= other / 2:
            return "ja"
        return max(scripts.items(), key=lambda kv: kv[1])[0]
    if head.isascii():
        # Same words: on ASCII, lower-casing first keeps letters letters, and the letters are a-z.
        words = Counter(_ASCII_WORD.findall(head.lower()))
    else:
        words = Counter(w.lower() for w in _WORD.findall(head))
    if words.total() < 2:
        return "und"
    hits = {lang: sum(map(words.__getitem__, vocab.intersection(words))) for lang, vocab in _FUNCTION_WORDS.items()}
    best, best_hits = max(hits.items(), key=lambda kv: kv[1])
    if best_hits == 0:
        # Short English prompts often have no function word ("Python quicksort?").
        return "en" if all(w.isascii() for w in words) and words.total() <= 6 else "und"
    runner_up = max(v for k, v in hits.items() if k != best)
    if best_hits <= runner_up:
        return "und"
    return best


@functools.lru_cache(maxsize=4096)
def _script(char: str) -> str:
    """``"latin"``, a language code for a script in :data:`_SCRIPT_LANGUAGE`, or ``""`` (not a letter, other)."""
    if not char.isalpha():
        return ""
    script = unicodedata.name(char, "").split(" ", 1)[0]
    return "latin" if script == "LATIN" else _SCRIPT_LANGUAGE.get(script, "")


_FENCED_BLOCK = re.compile(r"^[ \t]*(```|~~~).*?^[ \t]*\1", re.MULTILINE | re.DOTALL)
_CODE_LINE = re.compile(r"[=;{}<>]|^( {4}|\t)")


def _prose(text: str) -> str:
    """``text`` without fenced blocks and code-looking lines: identifiers are not words of a language."""
    # A fenced block needs one of its fences: the substring test spares most prompts the scan.
    fenced = "```" in text or "~~~" in text
    text_without_blocks = _FENCED_BLOCK.sub("\n", text) if fenced else text
    search = _CODE_LINE.search
    lines = [line for line in text_without_blocks.splitlines() if not search(line)]
    prose = "\n".join(lines)
    return prose if prose.strip() else text


# --------------------------------------------------------------------------------------------------
# Rule classifier


@dataclass(frozen=True)
class Rule:
    """One piece of evidence: when ``pattern`` matches, ``weight`` is added to ``domain``'s logit."""

    domain: str
    label: str
    pattern: re.Pattern[str]
    weight: float


def _rule(domain: str, label: str, pattern: str, weight: float, flags: int = _FLAGS) -> Rule:
    return Rule(domain, label, re.compile(pattern, flags), weight)


# Weights are in logit units: 3-4 is an unmistakable signal, ~1.5 a strong hint, < 1 a nudge.
RULES: tuple[Rule, ...] = (
    # coding
    _rule(
        "coding",
        "names a programming language or tool",
        r"\b(python|javascript|typescript|java|c\+\+|c#|golang|rust|ruby|php|perl|kotlin|scala|haskell"
        r"|matlab|sql|mysql|postgres(ql)?|sqlite|html5?|css3?|regex|regexp|bash|powershell|jquery|react(js)?"
        r"|vue(js)?|angular|node\.?js|django|flask|pandas|numpy|tensorflow|pytorch|keras|dockerfile"
        r"|kubernetes|latex|sed|awk|excel formula|vba|json schema)\b",
        2.0,
    ),
    _rule(
        "coding",
        "asks for code",
        r"\b(write|create|implement|generate|build|design|make|code)\b[^.?!\n]{0,50}\b(function|program|script"
        r"|class|method|query|api|app|code|regex|algorithm|component|website|web ?page|endpoint|loop|bot)\b",
        2.0,
    ),
    _rule(
        "coding",
        "asks to fix or explain code",
        r"\b(fix|debug|refactor|optimi[sz]e|convert|translate|rewrite|explain|simplify|review|complete)\b"
        r"[^.?!\n]{0,40}\b(code|function|script|query|program|snippet|regex|expression|class)\b",
        2.0,
    ),
    _rule("coding", "variable assigned a literal", r"^[ \t]*[A-Za-z_]\w*\s*=\s*[\[{\"']", 2.0, re.MULTILINE),
    _rule(
        "coding",
        "programming vocabulary",
        r"\b(code|coding|source code|compiler?|compil(es|ed|ing)|debug(ging)?|stack ?trace|syntax error|algorithm"
        r"|refactor(ing)?|unit tests?|recursion|recursive|linked list|hash ?map|api|regular expression"
        r"|runtime|exception|null pointer|segfault|git|github|repository|frontend|backend|command line"
        r"|terminal)\b",
        1.5,
    ),
    _rule(
        "coding",
        "technical terms",
        r"\b(arrays?|strings?|integers?|boolean|loops?|quer(y|ies)|database|scripts?|programs?|implement"
        r"|methods?|variables?|librar(y|ies)|modules?|json|xml|website|web ?app|button|element|class(es)?"
        r"|objects?|parameters?|return(s|ed)? (the|a|an)|input|output|server|client|data ?frame|floats?"
        r"|decimal points|groupby|package|npm|pip|dictionary|random string)\b",
        0.6,
    ),
    # math
    _rule(
        "math",
        "contains arithmetic or an equation",
        r"(\d\s*[+*×÷^]\s*\(?\d|\d\s+[-/]\s+\d|\b\d*[a-z]\s*[\^²³]\s*\d?|\b\d+[a-z]\s*[-+]\s*\d+\s*="
        r"|\b[a-z]\s*=\s*-?\d|\\(frac|sqrt|int|sum|lim|cdot|times)\b|[∫∑√π≤≥≠])",
        2.5,
        re.MULTILINE,
    ),
    _rule(
        "math",
        "math vocabulary",
        r"\b(solve|equations?|integral|integrate|derivative|differentiate|calculus|algebra(ic)?|geometry"
        r"|trigonometr\w*|probability|polynomial|quadratic|logarithms?|theorem|prove that|factori[sz]e"
        r"|matri(x|ces)|eigen\w*|prime numbers?|divisible|remainder|square root|arithmetic|mathematic(s|al)"
        r"|maths?|expected value|variance|standard deviation|hypotenuse|perimeter|how many ways|combinatorics"
        r"|permutations?|fractions?|simplify the expression|molar mass|resistance of|velocity|acceleration"
        r"|to the power( of)?|squared|cubed|in base \d+|largest area|maximi[sz]e|minimi[sz]e)\b",
        1.8,
    ),
    _rule(
        "math",
        "quantitative wording",
        r"\b(calculate|compute|percent(age)?|average|total|sum of|product of|area of|volume of|radius"
        r"|ratio|interest rate|twice|half as|times as (many|much)|per (hour|day|week|month|year|minute)"
        r"|each costs?|costs? \$?\d)\b",
        0.8,
    ),
    # reasoning
    _rule(
        "reasoning",
        "logic puzzle",
        r"\b(riddle|puzzle|brain ?teaser|logic(al)? (puzzle|test|problem|question|reasoning)|knights? and knaves"
        r"|syllogism|deduce|deduction|lateral thinking)\b",
        3.0,
    ),
    _rule(
        "reasoning",
        "argument analysis question",
        r"\bwhich of the following\b[^?\n]{0,120}\b(conclusions?|assumptions?|statements?|arguments?|inference"
        r"|must be|most strongly|weaken|strengthen|supports?|undermine|flaw|principle|if true|can be (drawn"
        r"|inferred)|logically)",
        3.0,
    ),
    _rule(
        "reasoning",
        "premises to evaluate",
        r"\b(if true|can be inferred|it follows that|premises?|which of the following|based on the above)\b",
        1.5,
    ),
    _rule(
        "reasoning",
        "pick the sensible option",
        r"\b(most suitable (answer|option)|(choose|select|pick) the (best|correct|right|most \w+) (answer|option)"
        r"|best answer to the question)\b",
        2.0,
    ),
    _rule(
        "reasoning",
        "commonsense question",
        r"\b(common ?sense|most (sensical|likely|logical|reasonable)|makes (the )?(most )?sense"
        r"|want to do next|need to do before|how would you describe \w+|how would \w+ feel"
        r"|why did \w+ do this|what will happen (next|to)|given (these|the two|the) facts)\b",
        2.0,
    ),
    _rule(
        "reasoning",
        "conditional deduction",
        r"\bif\b[^?]{1,160}\b(then\b[^?]{0,80}\b(who|which|what|how many)|who (is|was|must)|which one)\b",
        2.0,
    ),
    _rule(
        "reasoning",
        "process or cause-and-effect question",
        r"\b(missing (first|last) step|(first|last|next) step of the (following )?process|suppose\b[^.?]{0,100}"
        r"\b(happens|how will|will it affect)|how (will|would|does)\b[^.?]{0,60}\baffect)\b",
        3.0,
    ),
    _rule(
        "reasoning",
        "who is lying",
        r"\b(who|which one) (is|was) (lying|telling the truth|guilty|the (thief|murderer|culprit|liar))\b",
        3.0,
    ),
    _rule("reasoning", "multiple-choice options", r"(\(A\)[\s\S]{1,300}\(B\)|^[ \t]*[A-D][.)]\s+\S)", 0.8),
    _rule(
        "reasoning",
        "yes/no question needing inference",
        r"\A\s*(did|could|would|can|does|do|is|are|was|were|has|have|will|might)\b[^?\n]{3,200}\?\s*\Z",
        1.3,
    ),
    # creative
    _rule(
        "creative",
        "asks for a creative piece",
        r"\b(write|compose|create|generate|tell|craft|pen|build|come up with|make up|make)\b[^.?!\n]{0,60}"
        r"\b(story|stories|tale|poems?|poetry|haiku|sonnet|limerick|ballad|lyrics|song|rap|verses?|screenplay"
        r"|script for|scene|dialogue|monologue|fable|fairy ?tale|novel|chapter|narrative|(movie )?plot"
        r"|fan ?fiction|jokes?)\b",
        3.5,
    ),
    _rule(
        "creative",
        "creative vocabulary",
        r"\b(story|stories|poem|poetry|haiku|sonnet|limerick|lyrics|rhym\w+|verse|stanza|screenplay"
        r"|fiction(al)?|fairy ?tale|fable|villain|protagonist|characters?|role-?play|pretend (you are|to be)"
        r"|in the (style|voice) of|speaking style|movie plot|plot points)\b",
        1.2,
    ),
    _rule(
        "creative",
        "role-play framing",
        r"\b(act as|act like|you are (a|an|the)|imagine you|in character|play the role|role-?play|embody"
        r"|dungeon master|you will (act|play|be))\b",
        1.0,
    ),
    _rule("creative", "open writing task", r"\A\s*write (about|an essay|a piece|a letter from)\b", 1.5),
    # factual
    _rule("factual", "wh-question", r"\A\s*(who|what|when|where|which|why|how)\b", 1.2),
    _rule(
        "factual",
        "knowledge question",
        r"\b(explain|describe|define|definition of|what (is|are|was|were) the|who (is|was|were|wrote|invented"
        r"|discovered|played|sang|won)|when (did|was|is|were)|where (is|was|did|are)|history of"
        r"|difference between|meaning of|tell me about|is it true|fact[- ]check|true or false)\b",
        1.0,
    ),
    _rule("factual", "closed-book Q/A format", r"\A\s*Q:[\s\S]*\bA:\s*\Z", 1.5),
    _rule("factual", "asks for an answer", r"\b(answer (this|the following) question|formulate an answer)\b", 0.8),
    # summarization
    _rule(
        "summarization",
        "asks for a summary",
        r"\b(summar(y|ies|i[sz]e[sd]?|i[sz]ing|i[sz]ation)|tl;?\s?dr|recap|synopsis|condense|abridge|gist"
        r"|in a nutshell|key (points|takeaways)|main (points|takeaways)|boils? down)\b",
        3.5,
    ),
    _rule(
        "summarization",
        "asks for a shorter form",
        r"\b(in (one|1|two|2|three|3|a few|a single|\d+ or \d+) (short )?(sentences?|words|bullet points|lines)"
        r"|(write|give|create)\b[^.?\n]{0,30}\b(abstract|outline)|sum (up|the following)|in brief|short notes"
        r"|brief overview|rephrase\b[^.?\n]{0,30}\bfew words"
        r"|what (this|the) (article|text|passage|post|document) (means|is about)|highlights)\b",
        2.2,
    ),
    # extraction
    _rule(
        "extraction",
        "asks to extract",
        r"\b(extract(ed|ion)?|pull out|named entit(y|ies)|(bio|biomedical) entities|entities|keywords?"
        r"|key ?phrases|key details|give details on|details (about|on)\b[^.?\n]{0,60}\b(extracted|gathered))\b",
        3.0,
    ),
    _rule(
        "extraction",
        "asks to list items from a text",
        r"\b(list|find|identify|enumerate|pick out|get)\b\s+(all|every|each|the)\b[^.?\n]{0,40}\b(names|dates"
        r"|emails?|addresses|numbers|people|places|companies|organi[sz]ations|ingredients|fields|mentions)\b",
        2.0,
    ),
    _rule(
        "extraction",
        "reading-comprehension question",
        r"\b(from the (following|given|above|below|provided) (text|context|passage|paragraph|bio|article"
        r"|document|email|table|data)|according to the (text|passage|context|article)|based on the"
        r" (text|context|passage))\b",
        1.5,
    ),
    _rule("extraction", "labelled source text", r"^[ \t]*(context|passage|bio)\s*:", 0.8),
    # classification
    _rule(
        "classification",
        "asks to classify",
        r"\b(classify|classification|categori[sz]e|categori[sz]ation|which (of the following )?(categor(y|ies)"
        r"|class|label|sections?|topic|genre)|what (label|category|topic)|label (each|the following|these|this)"
        r"|sentiment|positive or"
        r" negative|negative or positive|(star|★)[- ]?rating|rate this review|flattering or unflattering"
        r"|satisfied or dissatisfied|good or bad|spam or (not|ham))\b",
        3.5,
    ),
    _rule(
        "classification",
        "judging a given text",
        r"\b(this (product )?review|the reviewer|the review|tone|on a scale of \d|is this (a piece of news|text"
        r"|tweet|email|message)|identify the (type|kind|genre|language))\b",
        1.5,
    ),
    _rule(
        "classification",
        "asks for a rating or verdict on a text",
        r"(\brating of (this|the) (review|text|comment)|★|\bwould you recommend this (app|product|movie|book)"
        r"|\bhow does the (viewer|reviewer|writer|author|customer|user|reader) feel)",
        3.0,
    ),
    _rule("classification", "labelled review", r"^[ \t]*(review|product review|title)\s*:", 0.8),
    # brainstorming
    _rule(
        "brainstorming",
        "asks for ideas or advice",
        r"\b(ideas?|brainstorm\w*|suggest(ions?)?|recommend(ations?)?|tips|advice|advise|itinerary|itenary"
        r"|come up with|names for|slogans?|taglines?|propose|possibilities|possible topics)\b",
        2.5,
    ),
    _rule(
        "brainstorming",
        "asks for a plan or options",
        r"\b(plan|planning|strateg(y|ies)|ways to|what should i|should i|how (can|could|should|do) i"
        r"|help me (decide|choose|pick|find|improve)|give me (some|a few|\d+|three|five|ten)|options for"
        r"|alternatives|pros and cons|best way to|budget for|trip|vacation|travel(l?ing)?|list (some|a few)"
        r"|routine|go about|things (to|i need)|need to (check|know|consider)|before i (buy|start))\b",
        1.8,
    ),
)

#: Small prior on factual: with no evidence at all, a prompt is most likely a plain question.
PRIOR_LOGITS: Mapping[str, float] = {"factual": 0.3}

#: Characters at each end of the prompt treated as the instruction; the middle is the material it
#: talks about (an article to summarise, a review to label), whose words are weaker evidence.
INSTRUCTION_CHARS = 500
BODY_FACTOR = 0.35
#: Only this much of a very long prompt is scanned: instructions sit at the start or the end.
SCAN_HEAD_CHARS = 3000
SCAN_TAIL_CHARS = 1000


@dataclass(frozen=True)
class RuleClassifier:
    """Weighted keyword/regex scorer with softmax. See the module docstring."""

    rules: tuple[Rule, ...] = RULES
    prior: Mapping[str, float] = field(default_factory=lambda: dict(PRIOR_LOGITS))
    code_weight: float = 4.0
    temperature: float = 1.0
    version: str = CLASSIFIER_VERSION

    def predict(self, prompt: str) -> dict[str, float]:
        """Probability of each of the nine domains (sums to 1)."""
        return self.predict_with_reasons(prompt)[0]

    def predict_with_reasons(self, prompt: str) -> tuple[dict[str, float], dict[str, str]]:
        """Probabilities plus, per domain with evidence, the rules that fired."""
        logits = {d: self.prior.get(d, 0.0) for d in DOMAINS}
        fired: dict[str, list[str]] = {d: [] for d in DOMAINS}
        instruction, body = _split_zones(prompt)
        if has_code(prompt):
            logits["coding"] += self.code_weight
            fired["coding"].append("contains code")
        for rule in self.rules:
            if rule.pattern.search(instruction):
                factor = 1.0
            elif body and rule.pattern.search(body):
                factor = BODY_FACTOR
            else:
                continue
            logits[rule.domain] += rule.weight * factor
            fired[rule.domain].append(rule.label if factor == 1.0 else f"{rule.label} (in the body)")
        extra = _word_problem_bonus(prompt)
        if extra:
            logits["math"] += extra
            fired["math"].append("quantity question with several numbers")
        probabilities = softmax(logits, self.temperature)
        reasons = {d: "matched: " + ", ".join(labels) for d, labels in fired.items() if labels}
        return probabilities, reasons


_QUANTITY_QUESTION = re.compile(
    r"\b(how (many|much|long|far|old|fast|high|tall|wide|deep|heavy)|what (is|was|are) the (total|average|sum"
    r"|difference|cost|price|value|dimensions)|what percent(age)?|what fraction|how many more)\b",
    re.IGNORECASE,
)
_NUMBER = re.compile(
    r"(?<![\w.])\$?\d+(?:[.,]\d+)?%?|\b(two|three|four|five|six|seven|eight|nine|ten|eleven|twelve|twice|half"
    r"|double|triple|quarter|dozen)\b",
    re.IGNORECASE,
)


def _word_problem_bonus(prompt: str) -> float:
    """Word problems ask for a quantity and give the numbers to compute it from."""
    if len(prompt) > 3000 or not _QUANTITY_QUESTION.search(prompt):  # word problems are short
        return 0.0
    numbers = len(_NUMBER.findall(prompt))
    if numbers >= 3:
        return 3.0
    return 1.5 if numbers == 2 else 0.0


def _split_zones(prompt: str) -> tuple[str, str]:
    """(instruction, body): both ends of the prompt, and what lies between (scanned up to a cap)."""
    if len(prompt) <= 2 * INSTRUCTION_CHARS:
        return prompt, ""
    # A newline keeps ^/$ anchored rules from matching across the seam.
    instruction = prompt[:INSTRUCTION_CHARS] + "\n" + prompt[-INSTRUCTION_CHARS:]
    middle = prompt[INSTRUCTION_CHARS:-INSTRUCTION_CHARS]
    if len(middle) > SCAN_HEAD_CHARS + SCAN_TAIL_CHARS:
        middle = middle[:SCAN_HEAD_CHARS] + "\n" + middle[-SCAN_TAIL_CHARS:]
    return instruction, middle


def softmax(logits: Mapping[str, float], temperature: float = 1.0) -> dict[str, float]:
    """Softmax over ``logits`` (stable: the maximum is subtracted first)."""
    top = max(logits.values())
    exps = {k: math.exp((v - top) / temperature) for k, v in logits.items()}
    total = sum(exps.values())
    return {k: v / total for k, v in exps.items()}


# --------------------------------------------------------------------------------------------------
# Analysis


@dataclass(frozen=True)
class PromptAnalysis:
    """What the selector learned about a prompt (mirrors ``orchestratex.v1.PromptAnalysis``)."""

    probabilities: Mapping[str, float]
    """Probability of each of the nine domains, in :data:`DOMAINS` order; they sum to 1."""
    primary_domain: str
    confidence: float
    estimated_prompt_tokens: int
    needs_long_context: bool
    models_too_small: tuple[str, ...]
    language: str
    has_code: bool
    has_data: bool
    classifier_version: str
    context_tokens: int = 0
    """Extra tokens (thread history) that share the window with the prompt."""
    expected_output_tokens: int = FALLBACK_OUTPUT_TOKENS
    """Completion length assumed for window and cost estimates (caller's value or the domain default)."""
    reasons: Mapping[str, str] = field(default_factory=dict)
    """Why each domain got its probability, for domains with evidence."""

    @property
    def required_window(self) -> int:
        """Tokens a model's context window must hold: prompt + context + expected output."""
        return self.estimated_prompt_tokens + self.context_tokens + self.expected_output_tokens


def too_small(context_length: int, required: int) -> bool:
    """True when a known window (``> 0``) cannot hold ``required`` tokens. Unknown windows pass."""
    return 0 < context_length < required


def analyze(
    prompt: str,
    classifier: DomainClassifier,
    *,
    context_windows: Mapping[str, int] | None = None,
    expected_output_tokens: int = 0,
    context_tokens: int = 0,
) -> PromptAnalysis:
    """Analyse ``prompt``: domains, size, window fit against ``context_windows`` (model id -> tokens).

    ``expected_output_tokens`` of 0 means the primary domain's default. The classifier's output is
    sanitised: missing domains count as 0, the rest is renormalised to sum to 1 (uniform when the
    classifier returns nothing usable).
    """
    # getattr, not isinstance(ExplainingClassifier): a runtime-checkable Protocol check costs tens of
    # microseconds per call.
    explain = getattr(classifier, "predict_with_reasons", None)
    if callable(explain):
        raw, reasons = explain(prompt)
    else:
        raw, reasons = classifier.predict(prompt), {}
    probabilities = normalise_probabilities(raw)
    # Ties go to the earlier domain in DOMAINS order, so results are deterministic.
    primary = max(DOMAINS, key=lambda d: probabilities[d])
    output = expected_output_tokens if expected_output_tokens > 0 else default_output_tokens(primary)
    tokens = estimate_tokens(prompt)
    required = tokens + context_tokens + output
    small = tuple(sorted(m for m, window in (context_windows or {}).items() if too_small(window, required)))
    return PromptAnalysis(
        probabilities=probabilities,
        primary_domain=primary,
        confidence=probabilities[primary],
        estimated_prompt_tokens=tokens,
        needs_long_context=bool(small),
        models_too_small=small,
        language=detect_language(prompt),
        has_code=has_code(prompt),
        has_data=has_data(prompt),
        classifier_version=classifier.version,
        context_tokens=context_tokens,
        expected_output_tokens=output,
        reasons={d: r for d, r in reasons.items() if d in probabilities},
    )


def normalise_probabilities(raw: Mapping[str, float]) -> dict[str, float]:
    """All nine domains in order, non-negative and finite, summing to 1."""
    cleaned = {d: float(raw.get(d, 0.0)) for d in DOMAINS}
    cleaned = {d: v if math.isfinite(v) and v > 0 else 0.0 for d, v in cleaned.items()}
    total = sum(cleaned.values())
    if total <= 0:
        return {d: 1 / len(DOMAINS) for d in DOMAINS}
    return {d: v / total for d, v in cleaned.items()}
