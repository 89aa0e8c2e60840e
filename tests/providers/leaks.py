"""What counts as a leaked provider key, in every form a vendor may echo it: shared by the key-scrubbing tests."""

from __future__ import annotations

import json
import re
import string
from collections.abc import Callable
from urllib.parse import quote, quote_plus, unquote, unquote_plus

FRAGMENT = 16
"""The shortest run of a key's characters that must never survive (documented in orchestratex/secrets.py)."""

HEX = "0123456789abcdef"
ALNUM = string.ascii_letters + string.digits
ALPHABETS = {
    "hex": HEX,
    "alnum": ALNUM,
    "base64url": ALNUM + "-_",
    "base64": ALNUM + "+/=",
    "printable": "".join(chr(c) for c in range(33, 127)),  # every visible ASCII character: % \ " / + ...
}
PREFIXES = ("", "sk-", "sk-or-v1-", "sk-proj-", "sk-ant-api03-", "gsk_", "xai-", "AIza")


def _lower_hex(text: str) -> str:
    return re.sub(r"%[0-9A-F]{2}", lambda m: m.group().lower(), text)


def _json(text: str) -> str:
    return json.dumps(text)[1:-1]


ENCODINGS: dict[str, Callable[[str], str]] = {
    "raw": lambda s: s,
    "quote": lambda s: quote(s, safe=""),
    "quote-slash-safe": quote,
    "quote_plus": quote_plus,
    "quote-lower-hex": lambda s: _lower_hex(quote(s, safe="")),
    "percent-every-byte": lambda s: "".join(f"%{b:02X}" for b in s.encode()),
    "percent-every-byte-lower": lambda s: "".join(f"%{b:02x}" for b in s.encode()),
    "quote-twice": lambda s: quote(quote(s, safe=""), safe=""),
    "json": _json,
    "json-escaped-slash": lambda s: _json(s).replace("/", "\\/"),
    "json-unicode-every-char": lambda s: "".join(f"\\u{ord(c):04x}" for c in s),
    "json-unicode-every-char-upper": lambda s: "".join(f"\\u{ord(c):04X}" for c in s),
    "json-in-json": lambda s: _json(_json(s)),
    "quote-of-json": lambda s: quote(_json(s), safe=""),
    "json-of-quote-lower": lambda s: _json(_lower_hex(quote(s, safe=""))),
}
"""Per-character encodings: the encoding of a fragment is a substring of the encoding of the key."""


def _then_json(encode: Callable[[str], str]) -> Callable[[str], str]:
    return lambda s: _json(encode(s))


CHECKED: dict[str, Callable[[str], str]] = {
    **ENCODINGS,
    # The body may itself be a JSON document: every encoding above, once more JSON-escaped.
    **{f"json({name})": _then_json(enc) for name, enc in ENCODINGS.items()},
}


def must_not_survive(key: str) -> set[str]:
    """Every run of 16 characters of ``key`` (the whole key when shorter), and its body after a ``prefix-``."""
    out = {key[i : i + FRAGMENT] for i in range(len(key) - FRAGMENT + 1)} or {key}
    for i, char in enumerate(key[:FRAGMENT]):
        rest = key[i + 1 :]
        if char in "-_" and 8 <= len(rest) < FRAGMENT:
            out.add(rest)
    return out


class Leaks:
    """The forms in which a key must not appear in any output, computed once per key."""

    def __init__(self, key: str) -> None:
        self.key = key
        self.fragments = must_not_survive(key)
        self.forms = {(name, enc(f)) for f in self.fragments for name, enc in CHECKED.items()}

    def found(self, output: str) -> list[str]:
        """The encodings in which a fragment of the key survives in ``output``."""
        leaks = [name for name, form in self.forms if form in output]
        # An independent decoder as well: percent-decoding the output (twice) must not reveal a fragment.
        for decoded in (unquote(output), unquote(unquote(output)), unquote_plus(output)):
            leaks += [f"decoded: {f}" for f in self.fragments if f in decoded]
        return leaks
