"""Deterministic text for the simulator: domain-shaped answer bodies, critiques that name what is missing,
refinements that add it, and domain guesses.

Everything here is a pure function of its inputs and of the ``random.Random`` it is given, so the same seed
always yields the same text. The hidden quality lives in the simulator's registry; the words make it visible:

* Every domain has a handful of **aspects** (:data:`ASPECTS`): concrete things a reviewer can ask for and a
  refinement can add, such as an "Edge cases" section for code or a "Check" line for math. A draft covers a
  subset of them, kept as a small bitmask (bit ``i`` = ``ASPECTS[domain][i]``).
* A body has the domain's shape (a fenced Python block for coding, numbered steps ending in a ``**Result:**``
  line for math, verse for a poem, bullets for brainstorming, a short paragraph for a summary, a table for
  extraction, a label and a reason for classification), fills the prompt's own words into sensible slots
  (a title, a function name), and carries one visible section per covered aspect.
* A critique's weaknesses are aspects the draft lacks, phrased so that the aspect's title appears in them
  (``Add a short 'Edge cases' section ...``); :func:`asked_aspects` finds those titles again in reviews, and
  :func:`refine_body` adds the sections asked for to the previous body.
"""

from __future__ import annotations

import functools
import hashlib
import json
import keyword
import random
import re
from collections.abc import Sequence
from dataclasses import dataclass

from orchestratex.domains import DOMAINS

_WORD = re.compile(r"[A-Za-z][A-Za-z0-9+#'-]{3,}")
_STOPWORD_TEXT = """
    about above after again against also among another answer anything because been before being below
    between both cannot could does doing done down during each either else enough even every from give
    given have having here however into itself just keep know like made make many more most much must need
    only other over please previous provide really response return reviewer reviewers same shall should
    show since some such task tell than that their them then there these they thing things this those
    through under until upon very want were what when where which while whom whose will with within
    without would write your yours json object evaluate feedback improved simulated draft python function
    first second third last next good best better small large big long little great whole
    program script code explain describe summarize summarise short write create implement poem story haiku
"""
_STOPWORDS = frozenset(_STOPWORD_TEXT.split())

# The instruction words a prompt starts with, left out of the topic ("Write a Python function that merges two
# sorted lists" is about "merges two sorted lists").
_LEAD = re.compile(
    r"^\s*(?:please\s+)?(?:(?:write|create|implement|give|make|compose|draft|generate|produce|list|explain|"
    r"describe|summari[sz]e|condense|tl;dr|classify|categori[sz]e|label|extract|pull out|find|brainstorm|"
    r"suggest|solve|compute|calculate|fix|refactor|role-play|tell me|what is|what are|who|how does|how do|"
    r"why does|why do)\b(?:\s+(?:this|me|us|all))?[:\s]*(?:(?:a|an|the|some|one)\s+)?"
    r"(?:(?:short|quick|simple|one-paragraph|python|javascript|typescript|go|sql)\s+)*"
    r"(?:(?:function|program|script|poem|haiku|story|limerick|song lyrics|lyrics|song|summary|list|plan|ideas?|"
    r"class)\s+)?(?:(?:that|which|to|about|of|on|for)\s+)?)?",
    re.IGNORECASE,
)
_LOWER_FIRST = frozenset(("the", "a", "an", "what", "how", "why", "when", "where", "who", "which", "it", "its"))
_COUNTED = re.compile(
    r"^(?:\d+|two|three|four|five|six|seven|eight|nine|ten|a few|some)\s+(?:ideas|ways|tips|examples|reasons)"
    r"\s+(?:for|to|on|about|of)\s+",
    re.IGNORECASE,
)
_POEM = re.compile(r"\b(?:poem|haiku|verse|lyrics|song|limerick|sonnet|rhyme)\b", re.IGNORECASE)
# "... as positive, negative or neutral": the clause after "as"/"into", split on commas and "or" in Python (one
# regular expression for the whole list backtracks exponentially on untrusted text such as "a, a, a, ...").
_OPTIONS = re.compile(r"\b(?:as|into)\s+([^.:;?!\n]{1,200})", re.IGNORECASE)
_OR = re.compile(r",|\bor\b", re.IGNORECASE)

HEDGE = "_A first pass: some parts are only sketched._"
"""Closes a weak first draft; a refinement removes it (a visible wording edit)."""
MUDDLE = "Part of the earlier explanation was condensed here, and some of it now reads less clearly."
"""Added by a refinement that regressed, beside the section it dropped."""


@dataclass(frozen=True)
class Context:
    """What a body says about the prompt: derived from the prompt alone, so a draft and its refinements agree."""

    topic: str
    """The prompt's subject, e.g. ``merges two sorted lists``."""
    words: tuple[str, ...]
    """Its content words, for slots such as a poem's images."""
    fn: str
    """A Python identifier derived from the task, e.g. ``merges_sorted_lists``."""
    numbers: tuple[int, int, int]
    """``a``, ``b``, ``c`` of a simulated calculation ``a × b + c``."""
    variant: int
    """A stable small number choosing between equivalent phrasings."""
    poem: bool
    """A creative prompt asking for verse rather than prose."""
    haiku: bool
    """Verse asked for as haiku: three-line stanzas."""
    labels: tuple[str, ...]
    """Candidate labels for a classification prompt."""

    @property
    def title(self) -> str:
        """The topic as a title."""
        return self.topic[:1].upper() + self.topic[1:]

    @property
    def result(self) -> int:
        """The simulated calculation's result."""
        a, b, c = self.numbers
        return a * b + c


@dataclass(frozen=True)
class Aspect:
    """One thing a reviewer can ask for and a refinement can add, with the words for each side."""

    title: str
    """How reviewers and refinements name it; reviews quote it (``'Edge cases'``) so a refinement finds it."""
    weakness: str
    """A reviewer's complaint when it is missing (may use ``{topic}``, ``{fn}``, ``{title}``)."""
    suggestion: str
    """A reviewer's concrete request; always contains the quoted title."""
    section: str = ""
    """The paragraph a draft that covers it carries; empty when it lives inside the main body (code)."""
    error: str = ""
    """A harsher wording, used only by a critic whose score is well below 7."""
    top: bool = False
    """The section goes before the main body (a title, the question restated) rather than after it."""
    marker: str = ""
    """Text that shows the aspect is present; defaults to the section's bold heading."""

    def found_in(self, body: str) -> bool:
        """Whether ``body`` shows this aspect."""
        return (self.marker or f"**{self.title}:**") in body


ASPECTS: dict[str, tuple[Aspect, ...]] = {
    "coding": (
        Aspect(
            "Docstring",
            "`{fn}` has no docstring saying what it takes and returns.",
            "Add a 'Docstring' to `{fn}` that states its input and its return value.",
            marker='    """',
        ),
        Aspect(
            "Input validation",
            "Bad input is not checked, so a caller gets a confusing failure.",
            "Add 'Input validation' that raises a clear TypeError when the input is not a list.",
            error="Passing anything but a list crashes deep inside the loop: the input is never validated.",
            marker="raise TypeError",
        ),
        Aspect(
            "Edge cases",
            "Does not say what happens with empty input or a single item.",
            "Add a short 'Edge cases' section covering empty input and a single item.",
            "**Edge cases:** an empty list returns an empty list, a single item comes back unchanged, and "
            "duplicates keep their original order.",
            error="The behaviour on empty input is wrong or undefined, and nothing says which.",
        ),
        Aspect(
            "Usage example",
            "There is no example of calling `{fn}`.",
            "Add a 'Usage example' showing one call of `{fn}` and its output.",
            "**Usage example:**\n\n```python\nprint({fn}([3, 1, 2, 3]))\n```",
        ),
        Aspect(
            "Complexity",
            "The running time and memory use are not stated.",
            "Add a one-line 'Complexity' note (time and extra space).",
            "**Complexity:** one pass over the input, O(n) time and O(n) extra space.",
        ),
        Aspect(
            "Tests",
            "Nothing shows the function was tested.",
            "Add a few 'Tests' as plain asserts, including the empty case.",
            "**Tests:**\n\n```python\ndef test_{fn}():\n    assert {fn}([]) == []\n    assert {fn}([1]) == [1]\n```",
            error="Untested: the code has at least one case that would fail a simple test.",
        ),
        Aspect(
            "How it works",
            "The code is given without saying how it works.",
            "Add a short 'How it works' paragraph walking through the loop.",
            "**How it works:** the function walks the input once, keeps each item the task asks for, and "
            "returns a new list, so the caller's list is never modified.",
        ),
    ),
    "math": (
        Aspect(
            "What is asked",
            "It never states what quantity is being solved for.",
            "Start with a 'What is asked' line naming the unknown.",
            "**What is asked:** {topic}, as a single number.",
            top=True,
        ),
        Aspect(
            "Arithmetic",
            "The steps skip the arithmetic, so they cannot be checked by hand.",
            "Add an 'Arithmetic' line that writes out each calculation.",
            "**Arithmetic:** {a} × {b} = {ab}, then {ab} + {c} = {result}.",
            error="A step jumps to a number with no working; it looks like an arithmetic error.",
        ),
        Aspect(
            "Check",
            "The result is not checked.",
            "Add a 'Check' that substitutes the result back.",
            "**Check:** {result} − {c} = {ab} and {ab} ÷ {b} = {a}, so the steps agree.",
            error="The result is never checked, and it does not obviously satisfy the question.",
        ),
        Aspect(
            "Units",
            "The result has no units.",
            "Give the result its 'Units' and say where they come from.",
            "**Units:** the result is in the units of the question's own quantities, carried through every step.",
        ),
        Aspect(
            "Assumptions",
            "It assumes things the question does not say.",
            "List the 'Assumptions' the solution relies on.",
            "**Assumptions:** the quantities stay constant throughout, and nothing outside the question affects them.",
        ),
        Aspect(
            "Another method",
            "Only one route to the answer is shown.",
            "Add 'Another method' that reaches the same result differently, as a cross-check.",
            "**Another method:** adding {c} to {b} groups of {a} gives {result} again.",
        ),
    ),
    "reasoning": (
        Aspect(
            "Premises",
            "The given facts are not listed before reasoning from them.",
            "Start by listing the 'Premises' exactly as the question gives them.",
            "**Premises:** only what the question states about {topic}, nothing more.",
            top=True,
        ),
        Aspect(
            "Each inference justified",
            "Some steps do not say which premise they use.",
            "Make 'Each inference justified' by naming the premise behind it.",
            "**Each inference justified:** step 2 uses the first statement, step 3 the second; no step adds a fact.",
            error="Step 2 does not follow from the premises: the reasoning has a gap that changes the conclusion.",
        ),
        Aspect(
            "Counter-example",
            "It never tests the conclusion against a counter-example.",
            "Try a 'Counter-example' to show the conclusion cannot fail.",
            "**Counter-example:** trying to make the conclusion false breaks one of the premises, so it holds.",
        ),
        Aspect(
            "Assumptions",
            "Hidden assumptions are not stated.",
            "State the 'Assumptions' the argument relies on.",
            "**Assumptions:** words are taken in their ordinary sense, and the statements are all true at once.",
        ),
        Aspect(
            "Alternatives ruled out",
            "Other possible answers are not ruled out.",
            "Add 'Alternatives ruled out' for each other option.",
            "**Alternatives ruled out:** every other option contradicts at least one premise.",
        ),
        Aspect(
            "Short answer",
            "The answer is buried in the reasoning.",
            "Put a one-line 'Short answer' at the end.",
            "**Short answer:** yes, as the steps above show.",
        ),
    ),
    "creative": (
        Aspect(
            "Title",
            "The piece has no title.",
            "Give the piece a 'Title'.",
            "### {title}",
            top=True,
            marker="### ",
        ),
        Aspect(
            "Imagery",
            "It tells more than it shows: there is little concrete imagery.",
            "Add 'Imagery' the reader can see, hear or smell.",
            "*The smell of rain on the {w1}, the hum of a streetlight, cold air on the hands.*",
            marker="The smell of rain",
        ),
        Aspect(
            "Closing image",
            "It stops rather than ends: there is no closing image.",
            "End on a 'Closing image' that echoes the opening.",
            "*And in the last light, the {w2} is still there, small and certain, waiting for morning.*",
            marker="in the last light",
        ),
        Aspect(
            "Refrain",
            "Nothing ties the parts together.",
            "Add a 'Refrain', one line that returns.",
            "*Again, again, the quiet comes around.*",
            marker="Again, again",
        ),
        Aspect(
            "Form",
            "The form (metre, stanza length, point of view) is not consistent.",
            "Keep a consistent 'Form' and say what it is.",
            "**Form:** {form}, one point of view throughout.",
        ),
        Aspect(
            "Voice",
            "The speaker's voice is generic.",
            "Give the speaker a distinct 'Voice' with one personal detail.",
            "*I counted the windows the way my mother did, one for each wish.*",
            marker="I counted the windows",
        ),
    ),
    "factual": (
        Aspect(
            "Definition",
            "The key term is never defined.",
            "Open with a one-sentence 'Definition' of the key term.",
            "**Definition:** {topic}, in one sentence, names the thing and what it does.",
            top=True,
        ),
        Aspect(
            "Example",
            "There is no concrete example.",
            "Add one concrete 'Example'.",
            "**Example:** a familiar, everyday case shows the same mechanism at work.",
        ),
        Aspect(
            "Sources to check",
            "Nothing says where the facts can be verified.",
            "Name the kind of 'Sources to check' (an encyclopaedia, an official body, a textbook).",
            "**Sources to check:** a general encyclopaedia and the responsible official body state these facts.",
            error="A claim looks wrong and no source is given to check it against.",
        ),
        Aspect(
            "Common misconception",
            "It does not address the usual misconception.",
            "Add the 'Common misconception' and why it is wrong.",
            "**Common misconception:** the popular explanation confuses a side effect with the cause.",
        ),
        Aspect(
            "Key date or figure",
            "No date or figure anchors the answer.",
            "Add one 'Key date or figure'.",
            "**Key date or figure:** one well-documented number or date anchors the answer.",
        ),
        Aspect(
            "Why it matters",
            "It does not say why the fact matters.",
            "Add a line on 'Why it matters'.",
            "**Why it matters:** it explains a pattern people see every day.",
        ),
    ),
    "summarization": (
        Aspect(
            "Main point",
            "The main point is not stated first.",
            "Lead with the 'Main point' in one sentence.",
            "**Main point:** {topic}.",
            top=True,
        ),
        Aspect(
            "Key figure",
            "The one number that matters is left out.",
            "Keep the 'Key figure' from the source.",
            "**Key figure:** the single number the source gives, kept exactly as stated.",
            error="The summary changes a figure from the source: it says something the text does not.",
        ),
        Aspect(
            "Who it affects",
            "It does not say who is affected.",
            "Say 'Who it affects'.",
            "**Who it affects:** the people the source names, and no one it does not.",
        ),
        Aspect(
            "Length",
            "It runs longer than a summary should.",
            "Respect a 'Length' limit of about 60 words.",
            "**Length:** under 60 words, as asked.",
        ),
        Aspect(
            "What was left out",
            "It does not say what was deliberately left out.",
            "Add a line on 'What was left out'.",
            "**What was left out:** background and side details that do not change the main point.",
        ),
        Aspect(
            "Neutral tone",
            "A few words add opinion the source does not have.",
            "Keep a 'Neutral tone' and drop the evaluative words.",
            "**Neutral tone:** the wording reports the source and adds no opinion.",
        ),
    ),
    "extraction": (
        Aspect(
            "Source quotes",
            "The extracted items do not point back to the text.",
            "Add 'Source quotes' for each item.",
            "**Source quotes:** each row is taken verbatim from the text, in the order it appears.",
        ),
        Aspect(
            "Missing fields",
            "It silently leaves out fields that are not in the text.",
            "Mark 'Missing fields' explicitly instead of omitting them.",
            "**Missing fields:** fields the text does not give are marked as not stated, never guessed.",
            error="An item appears that the text does not contain: the extraction invents data.",
        ),
        Aspect(
            "Normalised values",
            "Values are left in mixed formats.",
            "Use 'Normalised values' (one date and number format).",
            "**Normalised values:** dates as YYYY-MM-DD, numbers without thousands separators.",
        ),
        Aspect(
            "Count",
            "It does not say how many items were found.",
            "State the 'Count' of items found.",
            "**Count:** {n} items.",
        ),
        Aspect(
            "Duplicates",
            "Repeated mentions are listed twice.",
            "Merge 'Duplicates' into one row.",
            "**Duplicates:** repeated mentions of the same item are merged into one row.",
        ),
        Aspect(
            "JSON version",
            "The result is not machine-readable.",
            "Add a 'JSON version' of the table.",
            '**JSON version:** `[{{"item": "{w1}"}}, {{"item": "{w2}"}}]`',
        ),
    ),
    "classification": (
        Aspect(
            "Evidence",
            "The label is not backed by words from the input.",
            "Quote the 'Evidence' in the input for the label.",
            "**Evidence:** the phrase about {w1} is what decides it.",
            error="The label contradicts the input's own wording: it looks misclassified.",
        ),
        Aspect(
            "Confidence",
            "It does not say how sure it is.",
            "Give a 'Confidence' (high, medium or low) with a reason.",
            "**Confidence:** high; the input has one clear signal and nothing against it.",
        ),
        Aspect(
            "Runner-up label",
            "The closest other label is not discussed.",
            "Name the 'Runner-up label' and why it lost.",
            "**Runner-up label:** {label2}, which fits only part of the input.",
        ),
        Aspect(
            "Label definitions",
            "The labels are used without saying what they mean.",
            "Add one-line 'Label definitions'.",
            "**Label definitions:** each label is defined by what the input says, not by its tone alone.",
        ),
        Aspect(
            "Ambiguity",
            "It ignores the part of the input that could point elsewhere.",
            "Add a note on 'Ambiguity' in the input.",
            "**Ambiguity:** one phrase could be read otherwise, but the rest of the input settles it.",
        ),
    ),
    "brainstorming": (
        Aspect(
            "Examples",
            "The ideas stay abstract.",
            "Give each idea concrete 'Examples'.",
            "**Examples:** a weekly ten-minute version, a one-off pilot, and a version for a group of five.",
        ),
        Aspect(
            "First steps",
            "It does not say how to start.",
            "Add 'First steps' for the most promising idea.",
            "**First steps:** pick one idea, try it for a week, write down what happened.",
        ),
        Aspect(
            "Costs and risks",
            "Costs and risks are not mentioned.",
            "Add 'Costs and risks' for each idea.",
            "**Costs and risks:** mostly time; the main risk is dropping it after the first week.",
        ),
        Aspect(
            "Priorities",
            "The ideas are not prioritised.",
            "Rank the ideas under 'Priorities'.",
            "**Priorities:** start with the cheapest idea that gives feedback fastest.",
        ),
        Aspect(
            "Who it suits",
            "It does not say who each idea suits.",
            "Say 'Who it suits' for each idea.",
            "**Who it suits:** the first ideas suit beginners, the last ones people with more time.",
        ),
        Aspect(
            "Measuring success",
            "There is no way to tell whether an idea worked.",
            "Add 'Measuring success' with one simple signal.",
            "**Measuring success:** one number to watch, checked after two weeks.",
        ),
        Aspect(
            "Unusual idea",
            "All the ideas are the obvious ones.",
            "Add one 'Unusual idea' that is less obvious.",
            "**Unusual idea:** turn it around: do the opposite for a day and see what it teaches.",
        ),
    ),
    "": (
        Aspect(
            "Direct answer",
            "The answer is not given up front.",
            "Open with a one-line 'Direct answer'.",
            "**Direct answer:** {topic}, in one sentence.",
            top=True,
        ),
        Aspect(
            "Example",
            "There is no concrete example.",
            "Add one concrete 'Example'.",
            "**Example:** one concrete case of it.",
        ),
        Aspect(
            "Caveats",
            "Limits of the answer are not stated.",
            "Add the 'Caveats' that limit the answer.",
            "**Caveats:** it holds in the usual case; unusual circumstances can change it.",
            error="One claim is stated as certain although it is not, and no caveat says so.",
        ),
        Aspect(
            "Next steps",
            "It does not say what to do next.",
            "Add 'Next steps' for the reader.",
            "**Next steps:** check the one point that matters most for your case.",
        ),
        Aspect(
            "Summary",
            "It lacks a closing summary.",
            "Close with a one-line 'Summary'.",
            "**Summary:** the main point, restated in one line.",
        ),
    ),
}
"""The aspects of each domain (and of the ``""`` fallback), in bit order."""

_GENERIC_WEAKNESSES = (
    ("Some sentences restate the question instead of answering it.", "Cut the sentences that only restate it."),
    ("The wording could be tighter in places.", "Tighten the wording so each sentence adds something."),
    ("The order of the parts could be clearer.", "Reorder the parts so the most useful comes first."),
)
_SHAPE_STRENGTHS = {
    "coding": "The code is one self-contained, runnable function.",
    "math": "The steps are numbered and end in a clear result.",
    "reasoning": "The reasoning goes one step at a time.",
    "creative": "The piece has a consistent mood.",
    "factual": "It answers the question directly.",
    "summarization": "It is short and sticks to the source.",
    "extraction": "The items are laid out as a table.",
    "classification": "It commits to one label.",
    "brainstorming": "The ideas are distinct and easy to scan.",
    "": "It addresses the question.",
}
_OPENERS = (
    "Read as the person who asked,",
    "Checking correctness first,",
    "On a careful read,",
    "Judged against the task,",
    "Taken as a whole,",
    "Compared with what the task asks,",
    "After checking each part,",
    "From a reviewer's point of view,",
)
"""Each critic model has its own opener (by its position in the profile), so two critics never write the same
review."""


def aspects_of(domain: str) -> tuple[Aspect, ...]:
    """The aspects of ``domain`` (the fallback's for an unknown or empty domain)."""
    return ASPECTS.get(domain, ASPECTS[""])


def keywords(text: str, limit: int = 5) -> list[str]:
    """The first ``limit`` distinct content words of ``text`` (as written, stopwords removed)."""
    found: list[str] = []
    seen: set[str] = set()
    for match in _WORD.finditer(text):
        word = match.group(0).strip("'-")
        key = word.lower()
        if any(ch.isdigit() for ch in word):
            continue  # an identifier, a hash or a uuid (tests tag prompts so), not a word to write about
        if len(word) >= 4 and key not in _STOPWORDS and key not in seen:
            seen.add(key)
            found.append(word)
            if len(found) == limit:
                break
    return found


def context(prompt: str) -> Context:
    """What bodies say about ``prompt``: its subject, a function name, numbers, labels. A pure function of
    the prompt, so every draft of one prompt (and every refinement) agrees."""
    first = next((line for line in prompt.splitlines() if line.strip()), "").strip()
    if ":" in first[:24]:  # "Summarize: The city council met ..." keeps the text after the colon
        subject = first.split(":", 1)[1].strip()
    else:
        subject = _COUNTED.sub("", _LEAD.sub("", first, count=1).strip(), count=1)
    subject = re.split(r"(?<=[.?!])\s", subject, maxsplit=1)[0].rstrip(" .?!:;,")
    words_of_subject = subject.split()
    if len(words_of_subject) > 24:
        subject = " ".join(words_of_subject[:24])
    subject = " ".join(re.sub(r"[`*_<>\[\]\\|{}\"]", " ", subject).split())
    head, _, tail = subject.partition(" ")
    if head.lower() in _LOWER_FIRST:  # a common word starting the prompt, not a name: "the", "what", ...
        subject = f"{head.lower()} {tail}".strip()
    if not subject:
        subject = "your question"
    last = subject.split()[-1] if subject.split() else ""
    short = [last] if last.isalpha() and last.lower() not in _STOPWORDS else []  # "the sea": "sea"
    words = tuple(keywords(subject) or short or keywords(prompt) or ["moment", "day"])
    ident = "_".join(re.sub(r"[^a-z0-9]", "", w.lower()) for w in words[:3]).strip("_")
    ident = re.sub(r"_+", "_", ident)
    if not ident or not ident[0].isalpha() or keyword.iskeyword(ident):
        ident = "solve"
    digest = hashlib.sha256(prompt.encode()).digest()
    numbers = (2 + digest[0] % 8, 3 + digest[1] % 9, 5 + digest[2] % 40)
    options = _OPTIONS.search(prompt[:600])
    if options and re.search(r"\bor\b", options.group(1), re.IGNORECASE):
        labels = tuple(dict.fromkeys(o.strip()[:40] for o in _OR.split(options.group(1)) if o.strip()))[:6]
    elif re.search(r"sentiment|review|tweet|feel", prompt, re.IGNORECASE):
        labels = ("positive", "negative", "neutral")
    else:
        labels = ("relevant", "not relevant")
    return Context(
        topic=subject,
        words=words,
        fn=ident[:40].rstrip("_"),
        numbers=numbers,
        variant=digest[3],
        poem=bool(_POEM.search(prompt)),
        haiku=bool(re.search(r"\bhaiku\b", prompt, re.IGNORECASE)),
        labels=labels if len(labels) >= 2 else (*labels, "other"),
    )


def _slots(ctx: Context, label: str = "") -> dict[str, object]:
    a, b, c = ctx.numbers
    w1 = ctx.words[0]
    w2 = ctx.words[1] if len(ctx.words) > 1 else ctx.words[0]
    others = [x for x in ctx.labels if x != label] or ["other"]
    return {
        "topic": ctx.topic,
        "title": ctx.title,
        "fn": ctx.fn,
        "a": a,
        "b": b,
        "c": c,
        "ab": a * b,
        "result": ctx.result,
        "w1": w1,
        "W1": w1[:1].upper() + w1[1:],
        "w2": w2,
        "n": len(ctx.words),
        "label2": others[0],
        "form": "three-line stanzas of about five, seven and five syllables"
        if ctx.haiku
        else "four-beat lines in rhymed couplets",
    }


def _label(ctx: Context) -> str:
    return ctx.labels[ctx.variant % len(ctx.labels)]


def section(aspect: Aspect, ctx: Context) -> str:
    """The paragraph ``aspect`` adds to a body about ``ctx``."""
    return aspect.section.format(**_slots(ctx, _label(ctx)))


def code_block(ctx: Context, covered: int) -> str:
    """The main fenced Python block of a coding answer: a docstring and input validation when covered."""
    fn = ctx.fn
    lines = [f"def {fn}(items):"]
    if covered & 1:
        lines.append(f'    """Return a new list for: {ctx.topic}. Takes a list; the input is not modified."""')
    if covered & 2:
        lines += ["    if not isinstance(items, list):", '        raise TypeError("items must be a list")']
    if ctx.variant % 2:
        lines += [
            "    result = []",
            "    for item in items:",
            "        if item is not None:",
            "            result.append(item)",
            "    return result",
        ]
    else:
        lines += ["    return [item for item in items if item is not None]"]
    return "```python\n" + "\n".join(lines) + "\n```"


_CODE_BLOCK = re.compile(r"```python\ndef .*?\n```", re.DOTALL)

_POEM_STANZAS = (
    (
        "Where {topic} begins, the hours slow down,",
        "a quiet settles on the town;",
        "I stop to watch what {w1} can do,",
        "and every ordinary thing feels new.",
    ),
    (
        "The light goes soft, the voices fade,",
        "the streets are drawn in gentler shade;",
        "and the {w2} stays when the day is gone,",
        "a small, bright thing to carry on.",
    ),
    (
        "No one remarks on it, and yet",
        "it is the thing I won't forget:",
        "the way {w1} turned the plain and grey",
        "into the start of something, anyway.",
    ),
)
_HAIKU = (
    ("{W1} at first light —", "the whole street holds its breath, then", "footsteps, soft and new."),
    ("Streetlights hum and blur;", "the {w2} keeps what the day", "could not hold for long."),
    ("Nobody looks up.", "Still, {w1} changes the plain", "grey into morning."),
)
_BRAINSTORM_IDEAS = (
    "**Start small:** a ten-minute version of {topic} that can be tried this week.",
    "**Ask the people involved:** three short conversations before deciding anything.",
    "**Borrow what works:** copy one approach to {w1} that already works elsewhere.",
    "**Make it a routine:** tie it to something that already happens every day.",
    "**Pair up:** do it with someone else, so neither drops it.",
    "**Remove an obstacle:** find the one thing that makes {w1} hard and take it away.",
)


def _main_body(rng: random.Random, ctx: Context, domain: str, covered: int) -> str:
    """The domain-shaped core of an answer, before any aspect section."""
    s = _slots(ctx, _label(ctx))
    if domain == "coding":
        return (
            f"Here is a Python function for this task: {ctx.topic}.\n\n{code_block(ctx, covered)}\n\n"
            f"It returns a new list and leaves the caller's input as it was."
        )
    if domain == "math":
        return (
            f"Worked solution: {ctx.topic}.\n\n"
            "1. Write down what is given and name the unknown.\n"
            "2. Set up the relation the question describes.\n"
            f"3. Combine the quantities: {s['a']} × {s['b']} + {s['c']}.\n\n"
            f"**Result:** {ctx.result}"
        )
    if domain == "reasoning":
        return (
            f"Let's reason through it: {ctx.topic}.\n\n"
            "1. Start from what the question states, and only that.\n"
            "2. Follow what each statement rules in or out.\n"
            "3. Keep the one option that is consistent with every statement.\n\n"
            "**Conclusion:** the answer follows from the statements taken together."
        )
    if domain == "creative":
        if ctx.haiku:
            return "\n\n".join("\n".join(line.format(**s) for line in h) for h in rng.sample(_HAIKU, 2))
        if ctx.poem:
            first, *rest = rng.sample(_POEM_STANZAS, 2)
            stanzas = [first, *rest]
            return "\n\n".join("\n".join(line.format(**s) for line in stanza) for stanza in stanzas)
        return (
            f"It started with {ctx.topic}. Nobody expected much of the evening, least of all the one who "
            f"had seen the {s['w1']} a hundred times before.\n\n"
            f"But this time something was different, and by the end of the night the {s['w2']} meant "
            "something it had never meant before."
        )
    if domain == "summarization":
        return (
            f"The text reports that {ctx.topic}. It gives the main development first and leaves out the side details."
        )
    if domain == "extraction":
        rows = "\n".join(f"| {i} | {w} | mentioned in the text |" for i, w in enumerate(ctx.words, start=1))
        return f"Items extracted from the text:\n\n| # | item | note |\n|---|---|---|\n{rows}"
    if domain == "classification":
        return f"**Label:** {_label(ctx)} — the wording about {s['w1']} fits this label better than the others."
    if domain == "brainstorming":
        ideas = rng.sample(_BRAINSTORM_IDEAS, 4)
        return f"Some ideas for {ctx.topic}:\n\n" + "\n".join(f"- {idea.format(**s)}" for idea in ideas)
    if domain == "factual":
        return (
            f"On {ctx.topic}: the short answer rests on a well-documented mechanism that standard references "
            "agree on. The explanation below starts from that point and adds detail rather than new claims."
        )
    return f"On {ctx.topic}: here is a direct answer, with the main point first and the details after it."


def answer_body(rng: random.Random, ctx: Context, domain: str, covered: int, *, hedge: bool = False) -> str:
    """A whole answer about ``ctx`` in ``domain``'s shape with a section per aspect in ``covered`` (a bitmask of
    :func:`aspects_of` ``(domain)``); ``hedge`` closes it with :data:`HEDGE`."""
    aspects = aspects_of(domain)
    top = [section(a, ctx) for i, a in enumerate(aspects) if covered >> i & 1 and a.top and a.section]
    bottom = [section(a, ctx) for i, a in enumerate(aspects) if covered >> i & 1 and not a.top and a.section]
    parts = [*top, _main_body(rng, ctx, domain, covered), *bottom]
    if hedge:
        parts.append(HEDGE)
    return "\n\n".join(parts)


def covered_in(body: str, domain: str) -> int:
    """The aspects ``body`` shows, as a bitmask (for drafts the simulator did not write or has forgotten)."""
    return sum(1 << i for i, a in enumerate(aspects_of(domain)) if a.found_in(body))


@functools.cache
def _title_re(aspect: Aspect) -> re.Pattern[str]:
    """The aspect's title as a whole phrase, any case ("Check" is not "Checking")."""
    return re.compile(rf"\b{re.escape(aspect.title)}\b", re.IGNORECASE)


def asked_aspects(reviews: str, domain: str, skip: int = 0, limit: int | None = None) -> int:
    """The aspects that ``reviews`` ask for, as a bitmask: each one whose title they mention, except those in
    ``skip``; with ``limit``, only that many, the most often mentioned first (then in aspect order)."""
    counts = [(len(_title_re(a).findall(reviews)), i) for i, a in enumerate(aspects_of(domain)) if not skip >> i & 1]
    wanted = sorted(((-n, i) for n, i in counts if n), key=lambda pair: pair)
    return sum(1 << i for _, i in wanted[:limit])


def refine_body(
    rng: random.Random, ctx: Context, domain: str, previous: str, before: int, asked: int, *, regress: bool
) -> tuple[str, int]:
    """``previous`` improved: the hedge removed, a section added for every aspect in ``asked`` that ``before``
    lacks (code aspects rewrite the code block), and, when ``regress``, one earlier section dropped and a
    muddled sentence added. Returns the new body and the aspects it now covers."""
    aspects = aspects_of(domain)
    body = previous.replace("\n\n" + HEDGE, "").replace(HEDGE, "").strip()
    covered = before | asked
    if domain == "coding" and (asked & 0b11) & ~before:
        body = _CODE_BLOCK.sub(lambda _m: code_block(ctx, covered), body, count=1)
    top: list[str] = []
    for i, aspect in enumerate(aspects):
        if not (asked >> i & 1) or before >> i & 1 or not aspect.section or aspect.found_in(body):
            continue
        if aspect.top:
            top.append(section(aspect, ctx))
        else:
            body += "\n\n" + section(aspect, ctx)
    if top:
        body = "\n\n".join([*top, body])
    if regress:
        droppable = [
            i for i, a in enumerate(aspects) if covered >> i & 1 and a.section and not a.top and a.found_in(body)
        ]
        if droppable:
            dropped = rng.choice(droppable)
            shorter = body.replace("\n\n" + section(aspects[dropped], ctx), "")
            if shorter != body:  # a section worded for another prompt stays, and so does its aspect
                body, covered = shorter, covered & ~(1 << dropped)
        body += "\n\n" + MUDDLE
    return body, covered


def critique(
    rng: random.Random, ctx: Context, domain: str, score: float, covered: int, voice: int
) -> dict[str, object]:
    """The critique object, keys in contract order, the score last. Its weaknesses are aspects missing from
    ``covered``, as many as the score implies: none or one minor nit at 9 and above, more the lower it is, and
    an error only well below 7. ``voice`` (the critic's own) picks the rationale's opener."""
    aspects = aspects_of(domain)
    s = _slots(ctx, _label(ctx))
    present = [a for i, a in enumerate(aspects) if covered >> i & 1]
    if score >= 9:
        wanted = rng.randint(0, 1)
    elif score >= 7.5:
        wanted = rng.randint(1, 2)
    elif score >= 6:
        wanted = rng.randint(2, 3)
    else:
        wanted = rng.randint(3, 4)
    # Each critic has its own leanings (by its voice) on top of its own draw, and leaves at least one gap unnamed
    # when there are several, so two critics of one draft rarely name the same points.
    n = len(aspects)
    order = sorted((i for i in range(n) if not covered >> i & 1), key=lambda i: rng.random() + ((i - voice) % n) / n)
    picked = [aspects[i] for i in order[: min(wanted, max(1, len(order) - 1))]]
    weaknesses = [a.weakness.format(**s) for a in picked]
    suggestions = [a.suggestion.format(**s) for a in picked]
    if score < 6 and picked and picked[0].error:
        weaknesses[0] = picked[0].error.format(**s)
    for text, fix in rng.sample(_GENERIC_WEAKNESSES, max(0, min(wanted - len(picked), len(_GENERIC_WEAKNESSES)))):
        weaknesses.append(text)
        suggestions.append(fix)
    if score >= 9:
        weaknesses = [f"Minor: {w[:1].lower()}{w[1:]}" for w in weaknesses]
    strengths = [_SHAPE_STRENGTHS.get(domain, _SHAPE_STRENGTHS[""])]
    strengths += [f"Includes a clear '{a.title}' part." for a in rng.sample(present, min(len(present), 3))]
    strengths = strengths[: 1 + int(score / 3)]
    band = (
        "is excellent and nearly flawless"
        if score >= 9
        else "is strong with minor gaps"
        if score >= 7.5
        else "is usable but has noticeable gaps"
        if score >= 6
        else "has significant problems"
        if score >= 3
        else "is mostly wrong or unhelpful"
    )
    rationale = f"{_OPENERS[voice % len(_OPENERS)]} the answer on {ctx.topic} {band}."
    if picked:
        rationale += " It lacks " + _join_titles(picked) + "."
    return {
        "rationale": rationale,
        "strengths": strengths[:5],
        "weaknesses": weaknesses[:5],
        "suggestions": suggestions[:5],
        "score": score,
    }


def _join_titles(aspects: Sequence[Aspect]) -> str:
    names = [f"'{a.title}'" for a in aspects]
    return names[0] if len(names) == 1 else ", ".join(names[:-1]) + " and " + names[-1]


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
