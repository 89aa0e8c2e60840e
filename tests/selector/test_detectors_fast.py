"""The fast prompt detectors (issue #4) give the answers of plain implementations, also on adversarial text.

Each plain implementation below is the straightforward code the fast one replaced: every regex searched
as written, every line tested in Python, every word counted. Hypothesis feeds both texts built from
the fragments the fast paths are most likely to get wrong: line starts, fences, operators, quotes,
apostrophes, non-ASCII letters and line breaks other than "\\n".
"""

from __future__ import annotations

import json
import re
from collections import Counter
from pathlib import Path

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from services.selector import detectors
from services.selector.classifier import DATA_PATH
from services.selector.classifier.rules import RULES, WORD_PROBLEM, RuleLayer, Signal, SignalRule, instruction_window

# --------------------------------------------------------------------------------------------------
# Texts

_FRAGMENTS = [
    *"abcxyzABSEL019_'\"`~#$(){}[]<>=;:,.|&+-*/!?^%@\\²³×−∫≤",
    *["def", "async", "import", "from", "const", "let", "var", "if", "for", "while", "with", "try", "else"],
    *["elif", "class", "struct", "enum", "interface", "switch", "public", "static", "void", "function"],
    *["SELECT", "FROM", "console.log", "System.out.print", "#include", "#!/", "std::", "self.", "this."],
    *["```", "~~~", "```python", "```json", "---", "|---|", ":--", "===", "!==", "&&", "||", "+=", "->"],
    *["=>", "::", "$('", "<div>", "</span>", "x = 1", "f(x)", "a.b(c)", "print(x);", "{", "}", "//", "/*"],
    *["the", "and", "of", "de", "la", "und", "está", "más", "não", "für", "è", "it's", "don't", "l'est"],
    *["İ", "Σ", "ΣΑΣ", "é", "ß", "日本", "Ωμέγα", "Привет", "–", "£", "\u00a0", "\u2028", "\x85"],
    *["summarize", "classify", "extract", "write a", "poem", "story", "in python", "how many", "ideas for"],
    *["solve for", "tl;dr", "role-play", "give me", "3x + 7 = 22", "dy/dx", "sin(", "10 - 3", "$x^2$"],
    *["|---|---|", "| a | b |", ":---:", "\n|", "a,b,c\n", "1\t2\t3\n", "python", "c++", "node.js", "javascript"],
    *["x+=1", "a===b", "i++", "a->b", "x => y", "a::b", "a && b", "a || b", "y -= 2", "a !== b", "f(x) ;"],
    *["ln(", "log (", "cos(", "tan(", "2y**3", "x²", "= 2x - 1", "6 / 2", "$\\frac{1}{2}$", "√"],
    *[" ", " ", "  ", "    ", "\t", "\n", "\n", "\n\n", "\r\n", "\r", "\x0b", "\x1c"],
]
# The literal words of every rule's pattern as written (not of its faster parts, which are under test),
# so that each alternative gets its chance to match.
_RULE_FRAGMENTS = sorted(
    {
        words
        for r in RULES
        if isinstance(r.pattern, Signal)
        for words in re.findall(r"[a-z][a-z ;'-]*[a-z]", re.sub(r"\\[a-z]", " ", r.pattern.source))
    }
)
# Code only: more of each construct per text than in the mixture.
_CODE_FRAGMENTS = [f for f in _FRAGMENTS if not f.isalpha() or f in ("def", "class", "if", "for", "import")] + [
    "x",
    "self.x",
    "this.y",
    "std::cout",
    "obj.run()",
]
_SEPARATORS = ["", "", " ", " ", "\n", ".", ",", "\t", "("]


@st.composite
def _joined(draw: st.DrawFn, fragments: list[str]) -> str:
    """Fragments joined by separators, mostly blanks: words then stand on their own (\\b) often enough."""
    parts = draw(st.lists(st.tuples(st.sampled_from(fragments), st.sampled_from(_SEPARATORS)), max_size=40))
    return "".join(f + sep for f, sep in parts)


texts = st.one_of(_joined(_FRAGMENTS + _RULE_FRAGMENTS), _joined(_CODE_FRAGMENTS))
lower_texts = st.one_of(_joined(_RULE_FRAGMENTS), texts.map(str.lower))
# Lines of tables, CSV and prose; empty ones make paragraphs.
table_texts = st.lists(
    st.sampled_from(
        ["|---|---|", "| a | b |", ":--|--:", "a,b,c", "1,2,3", "1\t2\t3", "x;y;z", "Prose, line.", "", " "]
    ),
    max_size=14,
).map("\n".join)
# Prose-like: words, blanks, indents and line breaks only (the fast paths for text without code).
prose_texts = st.lists(
    st.sampled_from(["the", "cat", "de", "la", "it's", "é", " ", " ", "\n", "\n\n", "    ", "\t", "\r\n", "\n    x"]),
    max_size=40,
).map("".join)
_EXAMPLES = settings(max_examples=500, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@pytest.fixture(scope="module")
def corpus() -> list[str]:
    """The training prompts, pasted documents of each kind, and this repository's own code."""
    lines = Path(DATA_PATH).read_text(encoding="utf-8").splitlines()
    prompts = [json.loads(line)["prompt"] for line in lines if line]
    root = Path(detectors.__file__).parents[2]
    sources = [p.read_text(encoding="utf-8") for p in sorted(root.glob("services/selector/**/*.py"))]
    return (
        prompts
        + sources
        + [s[i : i + 5000] + "\n\n" + p for s, p in zip(sources, prompts, strict=False) for i in (0, 700)]
    )


# --------------------------------------------------------------------------------------------------
# Plain implementations (the code before issue #4's rewrite)

_CODE_FENCE = re.compile(r"^[ \t]*(```|~~~)[ \t]*([\w+#.-]*)[ \t]*\n(.*?)(^[ \t]*\1|\Z)", re.MULTILINE | re.DOTALL)


def plain_looks_like_code(text: str, hints: int) -> bool:
    if any(re.search(d.source, text, d.flags) for d in detectors._CODE_UNMISTAKABLE):
        return True
    return sum(re.search(d.source, text, d.flags) is not None for d in detectors._CODE_HINTS) >= hints


def plain_has_code(text: str) -> bool:
    text = detectors._sample(text)
    for fence in _CODE_FENCE.finditer(text):
        if fence.group(2).lower() not in detectors._NON_CODE_FENCES or plain_looks_like_code(fence.group(3), 1):
            return True
    return plain_looks_like_code(text, 2)


def plain_has_data(text: str) -> bool:
    text = detectors._sample(text)
    if re.search(r"^[ \t]*```\s*(json|csv|tsv|yaml|yml|xml)\b", text, re.IGNORECASE | re.MULTILINE):
        return True
    separator = r"^[ \t]*(?:\|[ \t]*)?:?-{3,}:?[ \t]*(?:\|[ \t]*:?-{3,}:?[ \t]*)+(?:\|[ \t]*)?$"
    if re.search(separator, text, re.MULTILINE):
        return True
    if len(re.findall(detectors._JSON_KEY, text)) >= 2:
        return True
    lines = text.splitlines()
    for delimiter in ("|", "\t", ",", ";"):
        run, previous = 0, -1
        for line in lines:
            count = line.count(delimiter)
            stripped = line.strip()
            row_like = count >= 2 and len(stripped) <= 300 and not stripped.endswith((".", "?", "!"))
            if row_like and (count == previous or run == 0):
                run += 1
                if run >= 3:
                    return True
            else:
                run = 1 if row_like else 0
            previous = count if row_like else -1
    return False


def plain_prose(text: str) -> str:
    text_without_blocks = re.sub(r"^[ \t]*(```|~~~).*?^[ \t]*\1", "\n", text, flags=re.MULTILINE | re.DOTALL)
    lines = [line for line in text_without_blocks.splitlines() if not re.search(r"[=;{}<>]|^( {4}|\t)", line)]
    prose = "\n".join(lines)
    return prose if prose.strip() else text


def plain_words(text: str) -> Counter[str]:
    return Counter(w.lower() for w in re.findall(r"[^\W\d_]+(?:'[^\W\d_]+)?", text))


def plain_detect_language(text: str, sample_chars: int = detectors.LANGUAGE_SAMPLE_CHARS) -> str:
    head = plain_prose(text[: sample_chars * 2])[:sample_chars]
    scripts: dict[str, int] = {}
    for char, count in Counter(head).items():
        script = detectors._script(char)
        if script:
            scripts[script] = scripts.get(script, 0) + count
    latin = scripts.pop("latin", 0)
    other = sum(scripts.values())
    if other > latin:
        if scripts.get("ja", 0) > 0 and scripts.get("zh", 0) + scripts.get("ja", 0) >= other / 2:
            return "ja"
        return max(scripts.items(), key=lambda kv: kv[1])[0]
    words = plain_words(head)
    if words.total() < 2:
        return "und"
    hits = {lang: sum(words[w] for w in vocab) for lang, vocab in detectors._FUNCTION_WORDS.items()}
    best, best_hits = max(hits.items(), key=lambda kv: kv[1])
    if best_hits == 0:
        return "en" if all(w.isascii() for w in words) and words.total() <= 6 else "und"
    runner_up = max(v for k, v in hits.items() if k != best)
    return "und" if best_hits <= runner_up else best


def plain_fire(prompt: str) -> list[str]:
    window = instruction_window(prompt)
    instruction = window.lower()
    fired = []
    for rule in RULES:
        if rule.pattern is None:
            hit = plain_has_code(window)
        else:
            assert isinstance(rule.pattern, Signal)
            hit = re.search(rule.pattern.source, instruction) is not None
            if rule.label == WORD_PROBLEM:
                hit = hit and len(prompt) <= 500 and len(re.findall(r"(?<![\w.])\$?\d+(?:[.,]\d+)?%?", prompt)) >= 3
        if hit:
            fired.append(rule)
    labels = {r.label for r in fired}
    return [r.label for r in fired if not labels.intersection(r.unless)]


# --------------------------------------------------------------------------------------------------
# Code


@_EXAMPLES
@given(texts)
def test_each_code_detector_finds_what_its_pattern_finds(text: str) -> None:
    scan = detectors._Scan(text)
    for detector in (*detectors._CODE_UNMISTAKABLE, *detectors._CODE_HINTS):
        expected = re.search(detector.source, text, detector.flags) is not None
        assert detector.search(scan) == expected, detector.source


@_EXAMPLES
@given(texts)
@example("Here:\n~~~\nx = 1\nprint(x)\n~~~\n")  # a tilde fence
@example("```text\nfoo(bar);\n```")  # a prose fence holding code
@example("  x += 1\n\ty->z")  # operators after operands, backwards
def test_has_code_matches_the_plain_implementation(text: str) -> None:
    assert detectors._has_code.__wrapped__(detectors._sample(text)) == plain_has_code(text)


def test_has_code_matches_the_plain_implementation_on_the_corpus(corpus: list[str]) -> None:
    answers = [detectors._has_code.__wrapped__(detectors._sample(text)) for text in corpus]
    assert answers == [plain_has_code(text) for text in corpus]
    assert 50 < sum(answers) < len(corpus) - 50  # both answers are exercised


def test_line_keywords_must_not_be_prefixes_of_each_other() -> None:
    # A line reports one keyword; "def" and "default" would hide one another.
    lines = (detectors._line(r"^[ \t]*def\b", "def"), detectors._line(r"^[ \t]*default\b", "default"))
    with pytest.raises(ValueError, match="prefix"):
        detectors._keyword_pattern(lines)


# --------------------------------------------------------------------------------------------------
# Data

_DATA_TEXTS = st.lists(
    st.sampled_from(['{"a": 1', ', "b":', '[ "c" :', '"', ":", ",", "{", "[", " ", "\n", "x", "a,b,c", "|", "\t"]),
    max_size=40,
).map("".join)


@_EXAMPLES
@given(st.one_of(texts, _DATA_TEXTS, table_texts))
def test_has_data_matches_the_plain_implementation(text: str) -> None:
    assert detectors.has_data(text) == plain_has_data(text)


def test_has_data_matches_the_plain_implementation_on_the_corpus(corpus: list[str]) -> None:
    answers = [detectors.has_data(text) for text in corpus]
    assert answers == [plain_has_data(text) for text in corpus]
    assert sum(answers) > 10


@_EXAMPLES
@given(_DATA_TEXTS)
def test_json_keys_are_counted_alike_backwards(text: str) -> None:
    # Overlapping candidates ('{"a, ": ":') are where a backwards count could differ.
    assert (detectors._json_keys(text[::-1]) >= 2) == (len(re.findall(detectors._JSON_KEY, text)) >= 2)


# --------------------------------------------------------------------------------------------------
# Language


@_EXAMPLES
@given(st.one_of(texts, prose_texts))
@example("a\n~~~\nb = 1\n~~~\nc")
@example("one\n    two\n\tthree\r\nfour\n")
def test_prose_matches_the_plain_computation(text: str) -> None:
    assert detectors._prose(text) == plain_prose(text)


@_EXAMPLES
@given(texts)
def test_function_words_are_counted_as_words_are(text: str) -> None:
    words = plain_words(text)
    hits = {lang: sum(words[w] for w in vocab) for lang, vocab in detectors._FUNCTION_WORDS.items()}
    assert detectors._function_word_hits(text) == (words.total(), hits)


@_EXAMPLES
@given(st.one_of(texts, prose_texts))
def test_detect_language_matches_the_plain_implementation(text: str) -> None:
    assert detectors.detect_language(text) == plain_detect_language(text)
    assert detectors.detect_language(text, 40) == plain_detect_language(text, 40)


def test_detect_language_matches_the_plain_implementation_on_the_corpus(corpus: list[str]) -> None:
    answers = [detectors.detect_language(text) for text in corpus]
    assert answers == [plain_detect_language(text) for text in corpus]
    assert {"en", "und"} <= set(answers)


def test_letters_before_the_first_non_latin_code_point_are_latin_or_of_no_script() -> None:
    # _script_counts skips texts without a character from _FIRST_NON_LATIN on.
    below = {detectors._script(chr(c)) for c in range(ord(detectors._FIRST_NON_LATIN))}
    assert below == {"", "latin"}
    assert detectors._script(detectors._FIRST_NON_LATIN) == "el"  # Greek starts there


def test_the_language_sample_is_the_documented_prefix() -> None:
    # Function words past 2 x LANGUAGE_SAMPLE_CHARS characters are not read.
    filler = "0123456789 " * (2 * detectors.LANGUAGE_SAMPLE_CHARS // 11 + 1)
    assert detectors.detect_language(filler + "le chat et la souris sont dans la maison") == "und"
    assert detectors.detect_language("le chat et la souris sont dans la maison " + filler) == "fr"


# --------------------------------------------------------------------------------------------------
# Rules


@_EXAMPLES
@given(lower_texts)
def test_each_rule_signal_finds_what_its_pattern_finds(text: str) -> None:
    for rule in RULES:
        if isinstance(rule.pattern, Signal):
            assert rule.pattern.search(text) == (re.search(rule.pattern.source, text) is not None), rule.label


@_EXAMPLES
@given(texts)
def test_fire_matches_the_plain_rule_layer(text: str) -> None:
    assert [r.label for r in RuleLayer().fire(text)] == plain_fire(text)


def test_fire_matches_the_plain_rule_layer_on_the_corpus(corpus: list[str]) -> None:
    layer = RuleLayer()
    fired = [[r.label for r in layer.fire(text)] for text in corpus]
    assert fired == [plain_fire(text) for text in corpus]
    assert len({label for labels in fired for label in labels}) >= 8  # most rules are exercised


def test_a_rule_cancelled_early_still_cancels_the_rules_it_names() -> None:
    # "second" is cancelled by "first"; it cancels "third" all the same (whether it fires matters).
    def rule(label: str, unless: tuple[str, ...] = ()) -> SignalRule:
        return SignalRule("math", label, 1.0, re.compile("x"), unless)

    layer = RuleLayer((rule("first"), rule("second", ("first",)), rule("third", ("second",))))
    assert [r.label for r in layer.fire("x")] == ["first"]
    assert [r.label for r in layer.fire("y")] == []
