"""Prompt analysis: domain probabilities and the features ranking needs. Pure: no I/O, no gRPC.

The domain classifier sits behind :class:`DomainClassifier` (``predict(prompt) -> {domain: p}``) so a
trained model can replace :class:`RuleClassifier` without touching callers. The rule classifier is a
transparent weighted keyword/regex scorer: every matching rule adds its weight to one domain's logit,
and a softmax turns the logits into probabilities. Each domain's probability comes with the rules that
fired, so a surprising classification can be explained from the response alone.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable

from orchestratex.domains import DOMAINS
from orchestratex.usage import estimate_tokens
from services.selector.detectors import detect_language, has_code, has_data

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
# Rule classifier

_FLAGS = re.IGNORECASE | re.MULTILINE


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
