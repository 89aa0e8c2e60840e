"""What a prompt contains, for ranking: code, tabular or structured data, and its language. Pure functions.

These run on every ``AnalyzePrompt`` and ``SelectModels`` call, over at most the head and tail of a
prompt (:data:`FEATURE_HEAD_CHARS`, :data:`FEATURE_TAIL_CHARS`), so they are written for speed: see
the notes at the patterns below, and ``tests/selector/test_fast_paths.py`` and
``tests/selector/test_detectors_fast.py``, which hold every fast form to the pattern as written.
"""

from __future__ import annotations

import functools
import itertools
import re
import unicodedata
from collections import Counter
from collections.abc import Iterator, Mapping
from dataclasses import dataclass

#: Feature detectors (code, data) look at most at this much of a prompt: its head and its tail. Their
#: cost grows with the text (some 50 us for these 4,000 characters), and code or data that matters is
#: not only in the middle of a long prompt: pasted material starts near the top, and the question
#: about it sits at one end. (Was 16,000 + 4,000, which cost ~2 ms per long prompt; issue #4.)
FEATURE_HEAD_CHARS = 3_000
FEATURE_TAIL_CHARS = 1_000
#: Language detection reads the prose of the first ``2 x`` this many characters, and this many of it.
#: Its cost is per word. (Was 2,000, which cost ~70 us per pasted document; issue #4. Over the 4,471
#: prompts of the selector's verification corpus, 1,200 changes 19 answers (0.42%), all of them
#: generated log lines or CSV exports, where function words are noise: und -> en for CSV under an
#: English instruction, en -> und for logs, pt/nl -> und where country codes read as Portuguese or
#: Dutch. 1,500 changed 10 but labelled two CSV exports Dutch or Portuguese.)
LANGUAGE_SAMPLE_CHARS = 1_200


def _sample(text: str, head: int = FEATURE_HEAD_CHARS, tail: int = FEATURE_TAIL_CHARS) -> str:
    """``text`` when short; otherwise its first ``head`` and last ``tail`` characters, newline-joined."""
    if len(text) <= head + tail:
        return text
    return text[:head] + "\n" + text[-tail:]


# These run on every request, over up to FEATURE_HEAD_CHARS + FEATURE_TAIL_CHARS characters, so how a
# pattern is written matters (issue #4). Python's regex engine skips ahead fast (about 1 ns per
# character) only to a leading literal; a pattern that starts with a class, an anchor (^, \b) or an
# alternation of different characters is tried at every position, 10-20 ns each, some 50 us on a
# pasted document. So the patterns below start with a literal: "\n" in place of "^" (searched in
# "\n" + text), the literal first and a look-behind after it in place of "\b", or the pattern written
# backwards and searched in the reversed text. A substring test for one character (memchr) is faster
# still, so most patterns sit behind characters or words that every one of their matches contains.
# tests/selector/test_fast_paths.py checks every fast form against the pattern as written.

_FLAGS = re.IGNORECASE | re.MULTILINE

# "^" written as "\n": searched in "\n" + text, see _Scan.lines.
_CODE_FENCE = re.compile(r"\n[ \t]*(```|~~~)[ \t]*([\w+#.-]*)[ \t]*\n(.*?)(^[ \t]*\1|\Z)", re.MULTILINE | re.DOTALL)
#: Fence info strings that announce data or prose, not code.
_NON_CODE_FENCES = frozenset(
    {"", "text", "txt", "plain", "plaintext", "markdown", "md", "json", "csv", "tsv", "yaml", "yml", "log", "output"}
)


class _Scan:
    """A text under test, and what several detectors derive from it: each computed once, when first needed."""

    __slots__ = ("_calls", "_keywords", "_lines", "_reversed", "present", "text")

    def __init__(self, text: str) -> None:
        self.text = text
        #: The characters of :data:`_GATE_CHARS` in the text (a substring test each, at memchr speed),
        #: and "::", which two detectors need (one search shared).
        present = [c for c in _GATE_CHARS if c in text]
        if ":" in present and "::" in text:
            present.append("::")
        self.present = frozenset(present)
        self._lines: str | None = None
        self._reversed: str | None = None
        self._keywords: frozenset[str] | None = None
        self._calls: bool | None = None

    @property
    def lines(self) -> str:
        """``"\\n" + text``: there a pattern's leading "\\n" matches wherever "^" (MULTILINE) did in ``text``."""
        if self._lines is None:
            self._lines = "\n" + self.text
        return self._lines

    @property
    def reversed(self) -> str:
        """The text backwards, for patterns written backwards."""
        if self._reversed is None:
            self._reversed = self.text[::-1]
        return self._reversed

    @property
    def keywords(self) -> frozenset[str]:
        """The keywords of :data:`_LINE_KEYWORD` that start a line (after blanks)."""
        if self._keywords is None:
            self._keywords = frozenset(_LINE_KEYWORD.findall(self.lines))
        return self._keywords

    @property
    def calls(self) -> bool:
        """True when a word character is followed by "(" somewhere (a call, in code)."""
        if self._calls is None:
            # Every detector that needs a call also needs ")": without it, the answer does not matter.
            self._calls = ")" in self.present and _CALL.search(self.text) is not None
        return self._calls


@dataclass(frozen=True, slots=True)
class _Part:
    """A regex searched in one form of the text (``"text"``, ``"lines"`` or ``"reversed"``, see :class:`_Scan`).

    It is searched only if the text contains every character of ``chars``, one of ``needles`` (when
    given) and a match of ``gate`` (when given): every match of the regex contains them, so the answer
    is the same, at memchr speed for most prompts.
    """

    pattern: re.Pattern[str]
    form: str = "text"
    chars: frozenset[str] = frozenset()
    needles: tuple[str, ...] = ()
    gate: re.Pattern[str] | None = None


@dataclass(frozen=True, slots=True)
class _Detector:
    """Code evidence: ``source`` (the pattern as written, with ``flags``) occurs in the text.

    ``parts`` are faster equivalents: ``source`` occurs exactly when one of them does. ``keywords``:
    every match starts a line with one of them (after blanks); ``call``: every match contains a word
    character followed by "(". Both are answered once per text for all detectors (:class:`_Scan`).
    """

    source: str
    flags: int
    parts: tuple[_Part, ...]
    keywords: frozenset[str] = frozenset()
    call: bool = False

    def search(self, scan: _Scan) -> bool:
        """True when ``source`` occurs in the scanned text."""
        return self.applies(scan.present, scan.keywords, scan.calls) and self.found(scan)

    def applies(self, present: frozenset[str], keywords: frozenset[str], calls: bool) -> bool:
        """False when no match is possible in a text with these characters, line keywords and calls."""
        if self.keywords and self.keywords.isdisjoint(keywords):
            return False
        if self.call and not calls:
            return False
        return any(part.chars <= present for part in self.parts)

    def found(self, scan: _Scan) -> bool:
        """True when a part occurs in the scanned text (to which the detector :meth:`applies`)."""
        # Plain loops, no generator expressions: on prose nearly every test fails at once, so the
        # Python around the tests is most of the cost.
        text = scan.text
        for part in self.parts:
            if not part.chars <= scan.present:
                continue
            if part.needles and not contains_any(text, part.needles):
                continue
            if part.gate is not None and part.gate.search(text) is None:
                continue
            form = text if part.form == "text" else scan.lines if part.form == "lines" else scan.reversed
            if part.pattern.search(form) is not None:
                return True
        return False


def contains_any(text: str, needles: tuple[str, ...]) -> bool:
    """True when one of ``needles`` occurs in ``text``."""
    for needle in needles:  # noqa: SIM110 - a loop, not any(): no generator to set up (hot path)
        if needle in text:
            return True
    return False


def _plain(pattern: str, chars: str, flags: int = 0, call: bool = False) -> _Detector:
    """A detector for a pattern that is fast as written (it starts with a literal)."""
    return _Detector(pattern, flags, (_Part(re.compile(pattern, flags), chars=frozenset(chars)),), call=call)


def _line(pattern: str, keywords: str = "", chars: str = "") -> _Detector:
    """A detector for a MULTILINE pattern that starts ``^[ \\t]*``, optionally followed by one of ``keywords``.

    A line-start anchor gives the regex engine nothing to skip ahead to. Searched in "\\n" + text,
    "\\n" in place of "^" matches exactly where "^" did (at the start and after each newline), and
    the engine skips from newline to newline.
    """
    if not pattern.startswith("^[ \\t]*"):
        raise ValueError(f"{pattern!r} does not start a line")
    fast = re.compile("\n" + pattern[1:], re.MULTILINE)
    return _Detector(pattern, re.MULTILINE, (_Part(fast, "lines", frozenset(chars)),), frozenset(keywords.split()))


def _word(pattern: str, word: str, chars: str = "") -> _Detector:
    r"""A detector for a pattern that starts with ``\b`` and a literal ``word``, behind the needle ``word``.

    The word goes first and ``\b`` after it, as a look-behind (``word(?<=\bword)`` matches where
    ``\bword`` does), so the regex engine can skip to it.
    """
    prefix = "\\b" + re.escape(word)
    if not pattern.startswith(prefix):
        raise ValueError(f"{pattern!r} does not start with {prefix!r}")
    fast = re.compile(f"{re.escape(word)}(?<={prefix}){pattern[len(prefix) :]}")
    return _Detector(pattern, 0, (_Part(fast, chars=frozenset(chars), needles=(word,)),))


_OPERAND = r"[\w)\]'\"]"
# One match of any of these is enough: they do not occur in prose.
_CODE_UNMISTAKABLE = (
    _line(r"^[ \t]*#include\s*[<\"]", "#include"),
    _line(r"^[ \t]*(async\s+)?def\s+\w+\s*\([^)\n]*\)\s*(->\s*[\w\[\], .]+)?:[ \t]*$", "async def", chars="():"),
    _word(r"\bpublic\s+(static\s+)?(void|class|int|String|boolean)\b", "public"),
    _word(r"\bconsole\.log\s*\(", "console.log", chars="("),
    _word(r"\bSystem\.out\.print", "System.out.print"),
    _line(r"^[ \t]*#!/\S+", "#!/"),
    _word(r"\bSELECT\b[^;]{1,300}?\bFROM\b\s+\w+", "SELECT"),
    _word(r"\bfunction\s*\w*\s*\([^)\n]*\)\s*\{", "function", chars="(){"),
    _plain(r"</?(div|span|html|body|script|button|input|form|table|ul|li|img|template)\b[^>\n]*>", "<>", _FLAGS),
    _plain(r"\$\(\s*['\"][^'\"]+['\"]\s*\)", "$()"),
)
# Weaker hints; two different ones are needed.
_CODE_HINTS = (
    _line(r"^[ \t]*(import|from)\s+[\w.]+(\s+import\s+[\w*, ]+)?\s*;?[ \t]*$", "import from"),
    _line(r"^[ \t]*(const|let|var)\s+\w+\s*=", "const let var", chars="="),
    _line(r"^[ \t]*(if|for|while|switch)\s*\(.*\)\s*\{?[ \t]*$", "if for while switch", chars="()"),
    _line(r"^[ \t]*(class|struct|interface|enum)\s+\w+[\w<>, ]*\s*[:({]", "class struct interface enum"),
    # An operator after an operand. Written backwards (a class first, then an operator, is slow to
    # search forwards): each part is an operator backwards, so it starts with a literal, behind a
    # gate that finds the operator forwards (the reversed text costs a copy). The pattern's final
    # \s* cannot change the answer.
    _Detector(
        rf"{_OPERAND}\s*(===|!==|&&|\|\||\+=|-=|\+\+|::|->|=>)\s*",
        0,
        tuple(
            _Part(
                re.compile(rf"{backwards}\s*{_OPERAND}"),
                "reversed",
                frozenset({chars}),
                needles,
                re.compile(gate) if gate else None,
            )
            for backwards, chars, needles, gate in (
                (r"=(?:==|=!|\+|-)", "=", (), r"=(?:(?<=[=!]==)|(?<=[+-]=))"),  # ===, !==, +=, -=
                (r">[-=]", ">", (), r">(?<=[-=]>)"),  # ->, =>
                ("&&", "&", ("&&",), ""),
                (r"\|\|", "|", ("||",), ""),
                (r"\+\+", "+", ("++",), ""),
                ("::", "::", (), ""),  # "::" is in _Scan.present
            )
        ),
    ),
    _Detector(
        r"\w\([^()\n]*\)\s*;[ \t]*$",
        re.MULTILINE,
        (_Part(re.compile(r"\((?<=\w\()[^()\n]*\)\s*;[ \t]*$", re.MULTILINE), chars=frozenset(";)")),),
        call=True,
    ),
    _line(r"^[ \t]*[{}][ \t]*$", "{ }"),
    # Same matches as r"\b\w+\.\w+\(...\)" (a word ends wherever a word character precedes the dot),
    # but starting from the dot, which the regex engine finds fast (the look-behind follows it).
    _plain(r"\.(?<=\w\.)\w+\([^()\n]*\)", ".)", call=True),
    _line(r"^[ \t]*(//|/\*|\*/)", "// /* */"),
    _Detector(
        r"\b(std::|self\.|this\.)\w+",
        0,
        (
            _Part(re.compile(r"\.(?<=\bself\.|\bthis\.)\w")),  # from the dot, as above
            _Part(re.compile(r"::(?<=\bstd::)\w"), chars=frozenset({"::"})),
        ),
    ),
    _line(
        r"^[ \t]*(for\s+\w+\s+in\s|if\s|elif\s|while\s|with\s|try|else)[^\n]*:[ \t]*$",
        "for if elif while with try else",
        chars=":",
    ),
    _line(r"^[ \t]*[A-Za-z_]\w*(\[\w*\])?\s*=\s*[\[{\"'\w]", chars="="),
    _Detector(
        r"\b[a-z_]\w*\([\w\"'][^()\n]*\)",
        0,
        (_Part(re.compile(r"\)[^()\n]*[\w\"']\(\w*[a-z_]\b"), "reversed", chars=frozenset(")")),),  # written backwards
        call=True,
    ),
)


def _keyword_pattern(detectors: tuple[_Detector, ...]) -> re.Pattern[str]:
    """One pass that finds the keywords starting lines, for all line-start detectors at once."""
    keywords = sorted(set().union(*(d.keywords for d in detectors)))
    # A line reports one keyword: it must be the only one it starts with.
    for a in keywords:
        if any(b != a and b.startswith(a) for b in keywords):
            raise ValueError(f"keyword {a!r} is a prefix of another")
    # The class of first characters rejects most lines (prose) in one test.
    first = "".join(sorted({re.escape(k[0]) for k in keywords}))
    return re.compile(rf"\n[ \t]*(?=[{first}])(" + "|".join(map(re.escape, keywords)) + ")")


_LINE_KEYWORD = _keyword_pattern(_CODE_UNMISTAKABLE + _CODE_HINTS)
_GATE_CHARS = "".join(
    sorted({c for d in _CODE_UNMISTAKABLE + _CODE_HINTS for p in d.parts for c in p.chars if len(c) == 1})
)
_CALL = re.compile(r"\((?<=\w\()")


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
    if _fenced(text):
        for fence in _CODE_FENCE.finditer("\n" + text):
            if fence.group(2).lower() not in _NON_CODE_FENCES or _looks_like_code(fence.group(3), hints=1):
                return True
    return _looks_like_code(text, hints=2)


def _fenced(text: str) -> bool:
    """True when ``text`` holds a code fence (three backticks or tildes): most prompts are spared the scan."""
    # One-character (memchr) tests first: a search for a short string costs about as much as a regex.
    return ("`" in text and "```" in text) or ("~" in text and "~~~" in text)


def _looks_like_code(text: str, hints: int) -> bool:
    scan = _Scan(text)
    unmistakable, weak = _applicable(scan.present, scan.keywords, scan.calls)
    for detector in unmistakable:
        if detector.found(scan):
            return True
    found = 0
    for detector in weak:
        if detector.found(scan):
            found += 1
            if found >= hints:  # the rest cannot change the answer
                return True
    return False


# Texts share a few combinations of these facts (prose: no keyword, no call, a few characters), and
# skipping the detectors that cannot match saves a Python call each.
@functools.lru_cache(maxsize=1024)
def _applicable(
    present: frozenset[str], keywords: frozenset[str], calls: bool
) -> tuple[tuple[_Detector, ...], tuple[_Detector, ...]]:
    """The unmistakable and the hint detectors that can match a text with these characters, keywords, calls."""
    return (
        tuple(d for d in _CODE_UNMISTAKABLE if d.applies(present, keywords, calls)),
        tuple(d for d in _CODE_HINTS if d.applies(present, keywords, calls)),
    )


# "^" written as "\n" (searched in "\n" + text). Written so that no two [ \t]* runs are adjacent: that
# would backtrack quadratically on long blanks.
_DATA_FENCE = re.compile(r"\n[ \t]*```\s*(json|csv|tsv|yaml|yml|xml)\b", re.IGNORECASE)
_TABLE_SEPARATOR = re.compile(
    r"\n[ \t]*(?:\|[ \t]*)?:?-{3,}:?[ \t]*(?:\|[ \t]*:?-{3,}:?[ \t]*)+(?:\|[ \t]*)?$", re.MULTILINE
)
_JSON_KEY = r"[{,\[]\s*\"[^\"\n]{1,64}\"\s*:"  # as written; searched backwards:
# It starts with a class, slow to search forwards. A match holds exactly two quotes, around its key,
# so no match lies inside another (both ways round), and a scan for non-overlapping matches finds two
# exactly when two disjoint matches exist: in the text or, the same ones reversed, in its reverse.
_JSON_KEY_BACKWARDS = re.compile(r":\s*\"[^\"\n]{1,64}\"\s*[{,\[]")
_JSON_KEY_END = re.compile(r"\"\s*:")  # in every match; starts with a literal


def has_data(text: str) -> bool:
    """True when ``text`` contains structured data: a table, CSV/TSV rows or a JSON-looking block."""
    text = _sample(text)
    # Each pattern needs its characters (a data fence "`", a table separator "|" and "---"): the
    # substring tests spare most prompts the scan.
    if "`" in text and "```" in text and _DATA_FENCE.search("\n" + text):
        return True
    if "|" in text and "---" in text and _TABLE_SEPARATOR.search("\n" + text):
        return True
    if '"' in text and _JSON_KEY_END.search(text) and _json_keys(text[::-1]) >= 2:
        return True
    return _has_delimited_rows(text)


def _json_keys(backwards: str, enough: int = 2) -> int:
    """JSON-looking keys in the text whose reverse is ``backwards`` (counting stops at ``enough``)."""
    found = 0
    for _ in _JSON_KEY_BACKWARDS.finditer(backwards):
        found += 1
        if found >= enough:
            break
    return found


#: Consecutive lines with the same number of one delimiter that make a table or CSV.
_MIN_ROWS = 3


def _has_delimited_rows(text: str) -> bool:
    """:data:`_MIN_ROWS` consecutive lines with the same number (>= 2) of one delimiter: a table or CSV."""
    groups: list[str] | None = None
    for delimiter in ("|", "\t", ",", ";"):
        # _MIN_ROWS rows of >= 2 delimiters each: fewer in the whole text cannot make a table. (The
        # memchr test first: counting scans the whole text, even for a delimiter it does not hold.)
        if delimiter not in text or text.count(delimiter) < 2 * _MIN_ROWS:
            continue
        if groups is None:
            groups = _line_groups(text)
        for group in groups:
            if group.count(delimiter) >= 2 * _MIN_ROWS and _has_rows(group.splitlines(), delimiter):
                return True
    return False


def _line_groups(text: str) -> list[str]:
    """``text`` cut at its empty lines (which no run of rows crosses), keeping the parts of enough lines.

    Prose is mostly paragraphs between empty lines: this spares a look at each of its lines.
    """
    if _has_other_line_breaks(text):
        return [text]  # empty lines that "\n\n" would not find
    return [group for group in text.split("\n\n") if group.count("\n") >= _MIN_ROWS - 1]


def _has_rows(lines: list[str], delimiter: str) -> bool:
    run, previous = 0, -1
    for line in lines:
        count = line.count(delimiter)
        stripped = line.strip()
        # Prose lines with delimiters are long and end like sentences; rows are short and regular.
        row_like = count >= 2 and len(stripped) <= 300 and not stripped.endswith((".", "?", "!"))
        if row_like and (count == previous or run == 0):
            run += 1
            if run >= _MIN_ROWS:
                return True
        else:
            run = 1 if row_like else 0
        previous = count if row_like else -1
    return False


_WORD = re.compile(r"[^\W\d_]+(?:'[^\W\d_]+)?")


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
            "it": "il lo la gli le di che e è un una per con non del della sono como",
            "nl": "de het een en van is dat niet ik je met op voor zijn",
        }.items()
    },
}
# Function words are counted as UTF-8 bytes (see _function_word_hits), each word pointing at the set
# of languages whose list holds it ("de" is Spanish, French, Portuguese and Dutch).
_WORD_LANGUAGES: Mapping[str, tuple[str, ...]] = {
    word: tuple(lang for lang, vocab in _FUNCTION_WORDS.items() if word in vocab)
    for word in sorted(set().union(*_FUNCTION_WORDS.values()))
}
# Numbered from 1, so that a filter(None, ...) keeps them all.
_LANGUAGE_SETS: tuple[tuple[str, ...], ...] = ((), *sorted(set(_WORD_LANGUAGES.values())))
_WORD_LANGUAGE_SET: Mapping[bytes, int] = {
    word.encode(): _LANGUAGE_SETS.index(langs) for word, langs in _WORD_LANGUAGES.items()
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
#: Below this code point every letter is Latin or of no script in :data:`_SCRIPT_LANGUAGE` (tested).
_FIRST_NON_LATIN = "\u0370"
# UTF-8 text to words at C speed (bytes.translate, then bytes.split): ASCII letters lower-cased,
# apostrophes and non-ASCII bytes kept, every other ASCII character a space.
_WORD_BYTES = bytes(
    b if b >= 128 else ord(chr(b).lower() if chr(b).isalpha() or chr(b) == "'" else " ") for b in range(256)
)


def detect_language(text: str, sample_chars: int = LANGUAGE_SAMPLE_CHARS) -> str:
    """A light guess at the ISO 639-1 language of ``text``: script first, then common function words.

    Returns ``"und"`` when there is too little text or no clear winner. Good enough to flag
    non-English prompts; not a language identifier.
    """
    head = _prose(text[: sample_chars * 2])[:sample_chars]
    scripts = _script_counts(head)
    latin = scripts.pop("latin", 0)
    other = sum(scripts.values())
    if other > latin:
        # Kana means Japanese even when Han characters outnumber it.
        if scripts.get("ja", 0) > 0 and scripts.get("zh", 0) + scripts.get("ja", 0) >= other / 2:
            return "ja"
        return max(scripts.items(), key=lambda kv: kv[1])[0]
    words, hits = _function_word_hits(head)
    if words < 2:
        return "und"
    best, best_hits = max(hits.items(), key=lambda kv: kv[1])
    if best_hits == 0:
        # Short English prompts often have no function word ("Python quicksort?").
        return "en" if words <= 6 and all(w.lower().isascii() for w in _WORD.findall(head)) else "und"
    runner_up = max(v for k, v in hits.items() if k != best)
    if best_hits <= runner_up:
        return "und"
    return best


def _script_counts(head: str) -> dict[str, int]:
    """Letters of ``head`` per script (``"latin"`` or a language code); empty when no other script has any."""
    # Most prompts are ASCII or Latin-1: all their letters are Latin, no per-character look-up needed.
    if head.isascii():
        return {}
    try:
        head.encode("latin-1")
    except UnicodeEncodeError:
        if not any(_script(c) not in ("", "latin") for c in set(head) if c >= _FIRST_NON_LATIN):
            return {}
    else:
        return {}
    scripts: dict[str, int] = {}
    for char, count in Counter(head).items():
        script = _script(char)
        if script:
            scripts[script] = scripts.get(script, 0) + count
    return scripts


def _function_word_hits(text: str) -> tuple[int, dict[str, int]]:
    """The number of words in ``text``, and how many of them are function words of each language.

    A word is a run of letters, two runs joined by one apostrophe ("don't"), lower-cased: ``_WORD``'s
    matches. They are split at C speed: a chunk between ASCII non-letters is one word unless it holds
    an apostrophe or a non-ASCII character; only those few chunks go through ``_WORD``.
    """
    data = text.encode("utf-8", "surrogatepass").translate(_WORD_BYTES)
    chunks = data.split()
    words = len(chunks)
    sets = Counter(filter(None, map(_WORD_LANGUAGE_SET.get, chunks)))  # most words are not function words
    if not data.isascii() or b"'" in data:
        extra: list[int] = []
        for chunk in _odd_chunks(data, chunks):
            count, keys = _chunk_words(chunk)
            words += count - 1  # counted as one word above
            extra += keys
            own = _WORD_LANGUAGE_SET.get(chunk)
            if own:  # "más" and the like: counted above, and again in keys
                sets[own] -= 1
        sets.update(extra)
    hits = dict.fromkeys(_FUNCTION_WORDS, 0)
    for key, count in sets.items():
        for lang in _LANGUAGE_SETS[key]:
            hits[lang] += count
    return words, hits


def _odd_chunks(data: bytes, chunks: list[bytes]) -> Iterator[bytes]:
    """The chunks of ``data`` (``chunks``: split at its spaces) that hold an apostrophe or a non-ASCII byte."""
    marked = data.translate(_ODD_BYTES)
    if marked.count(b"'") > 16:
        yield from itertools.filterfalse(bytes.isalpha, chunks)  # many: one test per chunk is cheaper
        return
    # Few (the usual case): found from their marks, at memchr speed, not by a test of every chunk.
    end = 0
    while (mark := marked.find(b"'", end)) >= 0:
        start = marked.rfind(b" ", 0, mark) + 1
        end = marked.find(b" ", mark)
        if end < 0:
            end = len(marked)
        yield data[start:end]


# Apostrophes and non-ASCII bytes as apostrophes, for _odd_chunks.
_ODD_BYTES = bytes(b if b < 128 else ord("'") for b in range(256))


# The same few such chunks come back all the time ("it's", "don't", "–", "£"): cached.
@functools.lru_cache(maxsize=4096)
def _chunk_words(chunk: bytes) -> tuple[int, tuple[int, ...]]:
    """For a chunk with an apostrophe or a non-ASCII character: its words (by ``_WORD``), and the
    language sets (:data:`_LANGUAGE_SETS` indices) of those that are function words."""
    tokens = _WORD.findall(chunk.decode("utf-8", "surrogatepass"))
    keys = [_WORD_LANGUAGE_SET.get(t.lower().encode("utf-8", "surrogatepass")) for t in tokens]
    return len(tokens), tuple(k for k in keys if k)


@functools.lru_cache(maxsize=4096)
def _script(char: str) -> str:
    """``"latin"``, a language code for a script in :data:`_SCRIPT_LANGUAGE`, or ``""`` (not a letter, other)."""
    if not char.isalpha():
        return ""
    script = unicodedata.name(char, "").split(" ", 1)[0]
    return "latin" if script == "LATIN" else _SCRIPT_LANGUAGE.get(script, "")


# "^" written as "\n": searched in "\n" + text.
_FENCED_BLOCK = re.compile(r"\n[ \t]*(```|~~~).*?^[ \t]*\1", re.MULTILINE | re.DOTALL)
#: Characters that make a line look like code (as does a four-space or tab indent); written out in _prose.
_CODE_CHARS = ("=", ";", "{", "}", "<", ">")
#: Line boundaries of str.splitlines besides "\n".
_OTHER_LINE_BREAKS = "\r\x0b\x0c\x1c\x1d\x1e\x85\u2028\u2029"


def _prose(text: str) -> str:
    """``text`` without fenced blocks and code-looking lines: identifiers are not words of a language.

    A code-looking line holds one of :data:`_CODE_CHARS` or starts with four spaces or a tab. The
    lines left are joined with "\\n" (``str.splitlines`` lines); ``text`` itself if nothing is left.
    """
    # Each block goes with the newline before it (the pattern's "^"), which the replacement restores.
    text_without_blocks = _FENCED_BLOCK.sub("\n\n", "\n" + text)[1:] if _fenced(text) else text
    if _has_other_line_breaks(text_without_blocks):
        lines = text_without_blocks.splitlines()
    else:
        # Same lines as splitlines: split at "\n", without the empty one after a final newline.
        body = text_without_blocks[:-1] if text_without_blocks.endswith("\n") else text_without_blocks
        if not contains_any(body, _CODE_CHARS) and not _indented(body):
            return body if _has_text(body) else text  # no code-looking line: most prose, at memchr speed
        lines = body.split("\n")
    # The test written out (not a function, not any()): a call per line costs more than the tests.
    prose = "\n".join(
        [
            line
            for line in lines
            if not (
                "=" in line
                or ";" in line
                or "{" in line
                or "}" in line
                or "<" in line
                or ">" in line
                or line.startswith(("    ", "\t"))
            )
        ]
    )
    return prose if _has_text(prose) else text


def _has_text(text: str) -> bool:
    """Same as ``bool(text.strip())``, without copying ``text``."""
    return bool(text) and not text.isspace()


def _indented(text: str) -> bool:
    """True when a line of ``text`` (split at "\\n") starts with four spaces or a tab."""
    if text.startswith(("    ", "\t")):
        return True
    # One-character (memchr) tests first: a search for a longer string costs more.
    return ("\t" in text and "\n\t" in text) or _INDENTED_LINE.search(text) is not None


_INDENTED_LINE = re.compile("\n    ")


def _has_other_line_breaks(text: str) -> bool:
    """True when ``text`` holds a line boundary of ``str.splitlines`` other than "\\n"."""
    breaks = _OTHER_LINE_BREAKS[:6] if text.isascii() else _OTHER_LINE_BREAKS  # the rest are not ASCII
    for char in breaks:  # noqa: SIM110 - a loop, not any(): no generator to set up (hot path)
        if char in text:
            return True
    return False
