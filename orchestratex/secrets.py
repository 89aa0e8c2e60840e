"""Find secrets in text in every form a vendor may echo them, and redact them.

A vendor that rejects a key often quotes it back in its error, and not always as it was sent: without
its ``sk-or-v1-`` prefix, URL-encoded, JSON-escaped inside a JSON string, or cut short. Matching only the
exact key (or only ``sk-…``) once let 61 of 64 characters of a key through. :class:`SecretScrubber`
redacts, for every secret it holds:

* **any run of** :data:`FRAGMENT` **(16) or more consecutive characters of the secret** — so the whole
  key, the key without its prefix and a key cut short are all caught. A secret shorter than 16
  characters is matched whole, and so is its body after a ``prefix-`` / ``prefix_`` when that body has
  8 to 15 characters (``sk-abc123def456`` → ``abc123def456``). Secrets under :data:`MIN_SECRET` (8)
  characters are ignored: redacting ``EMPTY`` or ``none`` (common placeholder keys of local endpoints)
  from every message would garble text and protect nothing;
* **in any encoding built from percent escapes and JSON escapes**, layered up to :data:`MAX_LAYERS`
  deep: raw, ``quote`` / ``quote_plus`` with any set of safe characters, upper- or lower-case hex (even
  mixed), every byte escaped, URL-encoded twice, ``\\uXXXX`` / ``\\/`` / ``\\"`` JSON escapes, JSON inside
  JSON, URL-encoded JSON and JSON-encoded URLs.

How, and what it costs
----------------------
The text is decoded layer by layer, each layer undoing ONE kind of escape (percent, or JSON), every
combination up to :data:`MAX_LAYERS` deep, while a small table maps each decoded character back to
the span of the original text it came from. Decoding one kind at a time matters: a key that contains
``%41`` and a ``"`` sits in a JSON body as ``%41`` and ``\\"``, and undoing both at once would turn its
``%41`` into ``A``. Layers are only built when the text contains escapes of that kind, so plain text
costs one pass.

In each layer the secret is located through fixed blocks of it — 8-character blocks every 8
characters in the raw text (any 16-character fragment contains one whole block), 6-character blocks
every 4 characters in decoded layers (see below) — found with ``str.find`` (C speed), so a 4 KB body is
searched with about ``len(secret) / 8`` scans rather than one per 16-character shingle. Each hit is
extended left and right against the secret; runs of 16+ characters are mapped back to the original
text and replaced by :data:`REDACTED` (overlapping runs merge into one). On a 4 KB vendor body with a
73-character key this costs tens of microseconds (``docs/_providers_notes.md`` has the figures).

Decoding is greedy, as every decoder's is, so an escape just before an echoed key can swallow its
first characters (``…%4`` + ``1bc…`` decodes to ``A`` + ``bc…``; ``\\u`` + ``0041…`` to ``A…``): at
most five characters at the left edge and two at the right. The smaller blocks of decoded layers
still find such a cut run, and the characters swallowed are recovered by comparing the source of the
escape at each edge with the secret, so a 16-character fragment is caught whatever precedes it.

Not covered: other encodings (base64 of ``user:key``, HTML entities, upper-casing), and fragments
under 16 characters (a vendor's ``sk-or-v1-abc…xyz`` mask is fine).
"""

from __future__ import annotations

import bisect
import re
from collections.abc import Iterable
from dataclasses import dataclass, field

REDACTED = "[REDACTED]"
"""What replaces each secret (or run of one)."""
FRAGMENT = 16
"""The shortest run of a secret's characters that is redacted; shorter secrets are matched whole."""
MIN_SECRET = 8
"""Secrets shorter than this are ignored (placeholders such as ``EMPTY``; nothing worth protecting)."""
MAX_LAYERS = 4
"""How many escape layers are undone at most (JSON of a URL-encoded-twice key inside a JSON body: 4)."""

_PREFIX_SEPARATORS = "-_"
_RAW_BLOCK, _RAW_STEP = 8, 8
# In decoded layers up to 5 + 2 characters of a 16-character fragment may be swallowed by escapes at its
# edges, leaving 9: a 6-character block every 4 characters always lies wholly inside 9.
_CUT_BLOCK, _CUT_STEP = 6, 4
# Each pattern starts with its literal character, outside any group: ``re`` then skips to it at C speed
# (a leading group or alternation made these scans 40x slower).
_PERCENT = re.compile(r"%[0-9A-Fa-f]{2}(?:%[0-9A-Fa-f]{2})*")
_JSON = re.compile(r"\\(?:u[0-9A-Fa-f]{4}(?:\\u[0-9A-Fa-f]{4})*|[\"\\/bfnrt])")
_ESCAPE = re.compile(r"\\u[0-9A-Fa-f]{4}|\\.|%[0-9A-Fa-f]{2}", re.DOTALL)
"""One escape of the original text, as a reader would split it: a redaction never cuts one in two."""
_JSON_SIMPLE = {'"': '"', "\\": "\\", "/": "/", "b": "\b", "f": "\f", "n": "\n", "r": "\r", "t": "\t"}


@dataclass(frozen=True)
class _Pattern:
    """One form of one secret and the blocks it is found by."""

    text: str
    whole: bool
    """True for short forms: only an occurrence of the whole text counts."""
    raw_blocks: dict[str, list[int]] = field(default_factory=dict)
    cut_blocks: dict[str, list[int]] = field(default_factory=dict)


def _blocks(text: str, size: int, step: int) -> dict[str, list[int]]:
    """Block of ``size`` characters every ``step`` (and one ending at the end) -> their offsets."""
    offsets = list(range(0, len(text) - size + 1, step))
    if offsets and offsets[-1] != len(text) - size:
        offsets.append(len(text) - size)
    blocks: dict[str, list[int]] = {}
    for offset in offsets:
        blocks.setdefault(text[offset : offset + size], []).append(offset)
    return blocks


def _patterns(secret: str) -> list[_Pattern]:
    forms: list[tuple[str, bool]] = []
    if len(secret) >= FRAGMENT:
        forms.append((secret, False))
    else:
        forms.append((secret, True))
    # The body after a vendor prefix (sk-, sk-or-v1-, gsk_ ...) when it is too short to hold a fragment.
    for i, char in enumerate(secret[:FRAGMENT]):
        body = secret[i + 1 :]
        if char in _PREFIX_SEPARATORS and MIN_SECRET <= len(body) < FRAGMENT:
            forms.append((body, True))
    # quote_plus writes a space as "+".
    if " " in secret:
        forms += [(text.replace(" ", "+"), whole) for text, whole in list(forms)]
    patterns = []
    for text, whole in dict.fromkeys(forms):
        if whole:
            patterns.append(_Pattern(text, True))
        else:
            patterns.append(
                _Pattern(text, False, _blocks(text, _RAW_BLOCK, _RAW_STEP), _blocks(text, _CUT_BLOCK, _CUT_STEP))
            )
    return patterns


class _Layer:
    """A decoding of its parent layer's text, with the map from its characters back to the parent's."""

    __slots__ = ("d_end", "d_start", "parent", "s_end", "s_start", "stride", "text")

    def __init__(self, text: str, parent: _Layer | None) -> None:
        self.text = text
        self.parent = parent
        # One entry per escape run: decoded [d_start, d_end) came from parent [s_start, s_end); ``stride`` is
        # the parent length of each decoded character (3 for %XX, 6 for \uXXXX), 0 when not uniform.
        self.d_start: list[int] = []
        self.d_end: list[int] = []
        self.s_start: list[int] = []
        self.s_end: list[int] = []
        self.stride: list[int] = []

    def _token(self, i: int) -> int:
        """Index of the escape run decoded character ``i`` belongs to, or the last one before it (-1: none)."""
        return bisect.bisect_right(self.d_start, i) - 1

    def source(self, i: int) -> tuple[int, int, bool]:
        """The parent span decoded character ``i`` came from, and whether it was an escape."""
        k = self._token(i)
        if k >= 0 and i < self.d_end[k]:
            stride = self.stride[k]
            if stride:
                start = self.s_start[k] + stride * (i - self.d_start[k])
                return start, start + stride, True
            return self.s_start[k], self.s_end[k], True
        shift = self.s_end[k] - self.d_end[k] if k >= 0 else 0
        return i + shift, i + shift + 1, False

    def to_root(self, start: int, end: int) -> tuple[int, int]:
        """The span of the original text that decoded ``[start, end)`` of this layer came from."""
        layer: _Layer | None = self
        while layer is not None and layer.parent is not None:
            start, end = layer.source(start)[0], layer.source(end - 1)[1]
            layer = layer.parent
        return start, end


def _decode(parent: _Layer, kind: str) -> _Layer | None:
    """``parent``'s text with one kind of escape (``percent`` or ``json``) undone; None when it has none."""
    text = parent.text
    pattern = _PERCENT if kind == "percent" else _JSON
    pieces: list[str] = []
    layer: _Layer | None = None
    position = length = 0
    for match in pattern.finditer(text):
        if layer is None:
            layer = _Layer("", parent)
        start, end = match.span()
        if start > position:
            pieces.append(text[position:start])
            length += start - position
        escape = match.group()
        stride = 0
        if kind == "percent":
            raw = bytes.fromhex(escape.replace("%", ""))
            decoded = raw.decode("utf-8", "surrogateescape")
            if len(decoded) == len(raw):
                stride = 3
        elif escape[1] == "u":
            units = b"".join(int(escape[i + 2 : i + 6], 16).to_bytes(2, "little") for i in range(0, len(escape), 6))
            decoded = units.decode("utf-16-le", "surrogatepass")
            if len(decoded) * 6 == len(escape):
                stride = 6
        else:
            decoded, stride = _JSON_SIMPLE[escape[1]], 2
        layer.d_start.append(length)
        layer.d_end.append(length + len(decoded))
        layer.s_start.append(start)
        layer.s_end.append(end)
        layer.stride.append(stride)
        pieces.append(decoded)
        length += len(decoded)
        position = end
    if layer is None:
        return None
    pieces.append(text[position:])
    layer.text = "".join(pieces)
    return layer


def _layers(text: str) -> list[_Layer]:
    """The text and every distinct decoding of it, one kind of escape per step, at most :data:`MAX_LAYERS` deep."""
    root = _Layer(text, None)
    layers, frontier, seen = [root], [root], {text}
    for _ in range(MAX_LAYERS):
        next_frontier = []
        for layer in frontier:
            for kind, marker in (("percent", "%"), ("json", "\\")):
                if marker not in layer.text:
                    continue
                decoded = _decode(layer, kind)
                if decoded is not None and decoded.text not in seen:
                    seen.add(decoded.text)
                    next_frontier.append(decoded)
        if not next_frontier:
            break
        layers += next_frontier
        frontier = next_frontier
    return layers


def _edge(parent: str, span: tuple[int, int], key: str, offset: int, left: bool) -> int:
    """How many characters of ``key`` (ending before / starting at ``offset``) the escape at ``span`` swallowed."""
    start, end = span
    best = 0
    for m in range(1, end - start + 1):
        if left:
            if m > offset or parent[end - m : end] != key[offset - m : offset]:
                break
        elif offset + m > len(key) or parent[start : start + m] != key[offset : offset + m]:
            break
        best = m
    return best


def _regions(layer: _Layer, reach: int) -> list[tuple[int, int]]:
    """Where a run can be in ``layer`` that its parent does not hold verbatim: within ``reach`` of an escape.

    Elsewhere a decoded layer is a plain copy of its parent, already searched (the root is searched whole).
    """
    n = len(layer.text)
    if layer.parent is None:
        return [(0, n)]
    regions: list[tuple[int, int]] = []
    for start, end in zip(layer.d_start, layer.d_end, strict=True):
        lo, hi = max(0, start - reach), min(n, end + reach)
        if regions and lo <= regions[-1][1]:
            regions[-1] = (regions[-1][0], hi)
        else:
            regions.append((lo, hi))
    return regions


def _find(layer: _Layer, pattern: _Pattern, regions: list[tuple[int, int]], spans: list[tuple[int, int]]) -> None:
    """Add to ``spans`` (original-text coordinates) every run of ``pattern`` found in ``layer``'s ``regions``."""
    text, key = layer.text, pattern.text
    n, k = len(text), len(key)
    if pattern.whole:
        for region_lo, region_hi in regions:
            at = text.find(key, region_lo, region_hi)
            while at != -1:
                spans.append(layer.to_root(at, at + k))
                at = text.find(key, at + 1, region_hi)
        return
    parent = layer.parent
    blocks = pattern.raw_blocks if parent is None else pattern.cut_blocks
    covered: dict[int, list[tuple[int, int]]] = {}  # alignment (text index of key[0]) -> runs already found
    size = len(next(iter(blocks)))
    for region_lo, region_hi in regions:
        for block, offsets in blocks.items():
            at = text.find(block, region_lo, region_hi)
            while at != -1:
                for offset in offsets:
                    runs = covered.setdefault(at - offset, [])
                    if _inside(runs, at):
                        continue
                    lo, ko = at, offset
                    hi, kh = at + size, offset + size
                    if at >= offset and text.startswith(key, at - offset):  # the whole key: nothing to extend
                        lo, ko, hi, kh = at - offset, 0, at - offset + k, k
                    else:
                        while lo > 0 and ko > 0 and text[lo - 1] == key[ko - 1]:
                            lo, ko = lo - 1, ko - 1
                        while hi < n and kh < k and text[hi] == key[kh]:
                            hi, kh = hi + 1, kh + 1
                    runs.append((lo, hi))
                    if parent is None:
                        if hi - lo >= FRAGMENT:
                            spans.append((lo, hi))
                        continue
                    # Characters of the key swallowed by an escape at either edge (see the module docstring).
                    left = right = 0
                    if lo > 0 and ko > 0:
                        s_start, s_end, escaped = layer.source(lo - 1)
                        left = _edge(parent.text, (s_start, s_end), key, ko, left=True) if escaped else 0
                    if hi < n and kh < k:
                        r_start, r_end, escaped = layer.source(hi)
                        right = _edge(parent.text, (r_start, r_end), key, kh, left=False) if escaped else 0
                    if hi - lo + left + right < FRAGMENT:
                        continue
                    start, end = layer.to_root(lo, hi)
                    if left:
                        start = parent.to_root(s_end - left, s_end)[0]
                    if right:
                        end = parent.to_root(r_start, r_start + right)[1]
                    spans.append((start, end))
                at = text.find(block, at + 1, region_hi)


def _inside(runs: list[tuple[int, int]], position: int) -> bool:
    return any(lo <= position < hi for lo, hi in runs)


class SecretScrubber:
    """Redacts every form of the secrets it holds from text (see the module docstring for what "every" means).

    Build one per set of secrets (the blocks are computed once) and call :meth:`scrub` on any text
    that came from outside (vendor error bodies) or is about to leave (logs, error messages). Thread-safe:
    it holds no mutable state.
    """

    def __init__(self, secrets: Iterable[str]) -> None:
        unique = dict.fromkeys(s for s in secrets if len(s) >= MIN_SECRET)
        self._patterns = [p for secret in unique for p in _patterns(secret)]
        self._shortest = min((len(p.text) if p.whole else FRAGMENT for p in self._patterns), default=0)
        self._reach = max((len(p.text) for p in self._patterns), default=0)

    def __bool__(self) -> bool:
        return bool(self._patterns)

    def __repr__(self) -> str:
        return f"SecretScrubber({len(self._patterns)} patterns)"

    def scrub(self, text: str) -> str:
        """``text`` with every run of a secret, in any supported encoding, replaced by :data:`REDACTED`."""
        if not self._patterns or len(text) < self._shortest:
            return text
        spans: list[tuple[int, int]] = []
        for layer in _layers(text):
            regions = _regions(layer, self._reach)
            for pattern in self._patterns:
                _find(layer, pattern, regions, spans)
        if not spans:
            return text
        return _redact(text, spans)


def _widen(text: str, spans: list[tuple[int, int]]) -> list[tuple[int, int]]:
    """``spans`` widened so that none starts or ends inside an escape (``\\u0041``, ``\\n``, ``%2F``).

    Cutting one would leave half an escape beside the redaction — in a JSON log line, invalid JSON.
    """
    if "\\" not in text and "%" not in text:
        return spans
    starts: list[int] = []
    ends: list[int] = []
    for match in _ESCAPE.finditer(text):
        starts.append(match.start())
        ends.append(match.end())

    def inside(position: int) -> int:
        k = bisect.bisect_right(starts, position) - 1
        return k if k >= 0 and starts[k] < position < ends[k] else -1

    widened = []
    for start, end in spans:
        k, j = inside(start), inside(end)
        widened.append((starts[k] if k >= 0 else start, ends[j] if j >= 0 else end))
    return widened


def _redact(text: str, spans: list[tuple[int, int]]) -> str:
    """``text`` with the union of ``spans`` replaced, each maximal run by one :data:`REDACTED`."""
    spans = sorted(_widen(text, spans))
    out: list[str] = []
    position = 0
    merged_start, merged_end = spans[0]
    for start, end in spans[1:]:
        if start <= merged_end:
            merged_end = max(merged_end, end)
            continue
        out += [text[position:merged_start], REDACTED]
        position = merged_end
        merged_start, merged_end = start, end
    out += [text[position:merged_start], REDACTED, text[merged_end:]]
    return "".join(out)
