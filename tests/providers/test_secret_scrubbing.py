"""Provider keys are scrubbed in every form a vendor may echo them (issue 12, defect 1).

Property: for a random key (five alphabets, 16-120 characters, with and without a vendor prefix)
embedded in a random vendor error body — whole, without its prefix, or cut to a fragment of 16+
characters; raw, percent-encoded (``quote`` / ``quote_plus``, upper- or lower-case hex, every character,
twice over), JSON-escaped (``\\/``, ``\\uXXXX``, JSON inside JSON), URL-encoded JSON and JSON-encoded
URLs; the body itself sometimes a JSON document — no run of 16 or more of the key's characters survives,
in any of those encodings, in:

* :class:`orchestratex.secrets.SecretScrubber` itself;
* ``OpenRouterBackend.scrub``, from which every upstream error message is built (gRPC status details,
  ``StreamFailure.message``, logs);
* a log line written by the JSON or the text formatter once the key is registered (the last line of defence).

More examples than the default 300 (any number; a new seed each run)::

    ORX_SCRUB_EXAMPLES=20000 .venv/bin/pytest tests/providers/test_secret_scrubbing.py -p no:cacheprovider
"""

from __future__ import annotations

import functools
import logging
import os
import re
from collections.abc import Iterator
from contextlib import contextmanager
from urllib.parse import quote

import orjson
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from orchestratex.config import Secret
from orchestratex.logging import JsonFormatter, TextFormatter, _Redactor, register_secret
from services.providers.catalogue import DEFAULT_CATALOGUE, Catalogue, load_catalogue_file
from services.providers.openrouter import OpenRouterBackend, _redact_key_like
from tests.providers.leaks import ALPHABETS, ENCODINGS, FRAGMENT, PREFIXES, Leaks, must_not_survive

EXAMPLES = int(os.environ.get("ORX_SCRUB_EXAMPLES", "300"))


@st.composite
def keys(draw: st.DrawFn, min_body: int = FRAGMENT, max_body: int = 111) -> str:
    alphabet = draw(st.sampled_from(sorted(ALPHABETS)))
    prefix = draw(st.sampled_from(PREFIXES))
    body = draw(st.text(alphabet=ALPHABETS[alphabet], min_size=min_body, max_size=max_body))
    return prefix + body


def _echoed(draw: st.DrawFn, key: str) -> str:
    """What a careless vendor quotes back: the key, the key without its prefix, or a long piece of it."""
    what = draw(st.sampled_from(("whole", "bare", "fragment")))
    if what == "bare":
        cut = max((i + 1 for i, c in enumerate(key[:FRAGMENT]) if c in "-_"), default=0)
        if len(key) - cut >= FRAGMENT:
            return key[cut:]
    if what == "fragment" and len(key) > FRAGMENT:
        start = draw(st.integers(0, len(key) - FRAGMENT))
        end = draw(st.integers(start + FRAGMENT, len(key)))
        return key[start:end]
    return key


@st.composite
def vendor_bodies(draw: st.DrawFn, key: str) -> str:
    """A random error body quoting ``key`` one to three times, each time in a random encoding."""
    pieces = []
    for _ in range(draw(st.integers(1, 3))):
        pieces.append(draw(st.text(max_size=40)))
        encoding = draw(st.sampled_from(sorted(ENCODINGS)))
        pieces.append(ENCODINGS[encoding](_echoed(draw, key)))
    pieces.append(draw(st.text(max_size=40)))
    body = "".join(pieces)
    if draw(st.booleans()):
        body = orjson.dumps({"error": {"code": 401, "message": body}, "user_id": "user_x"}).decode()
    return body


@contextmanager
def registered(*secrets: str) -> Iterator[None]:
    """Register ``secrets`` with the log redactor for the duration, then restore the previous list."""
    saved = list(_Redactor.secrets)
    try:
        for secret in secrets:
            register_secret(secret)
        yield
    finally:
        _Redactor.secrets[:] = saved


@functools.cache
def packaged_catalogue() -> Catalogue:
    return load_catalogue_file(DEFAULT_CATALOGUE, "https://openrouter.ai/api/v1")


def backend_for(key: str, other: str) -> OpenRouterBackend:
    """A backend holding ``key`` for OpenRouter and ``other`` for a second provider (nothing is called)."""
    return OpenRouterBackend(packaged_catalogue(), {"openrouter": Secret(key), "local": Secret(other)})


def log_lines(text: str) -> list[str]:
    """``text`` logged through both formatters; for the JSON one, also its decoded ``msg`` field."""
    record = logging.makeLogRecord({"msg": "upstream said: %s", "args": (text,), "levelno": logging.WARNING})
    line = JsonFormatter("providers").format(record)
    return [line, orjson.loads(line)["msg"], TextFormatter("providers").format(record)]


_SETTINGS = settings(
    max_examples=EXAMPLES, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large]
)

# The issue as reported: the vendor echoed the key without its ``sk-`` prefix, or URL-encoded it.
_REPORTED = "sk-or-v1-" + "0123456789abcdef" * 4


@_SETTINGS
@example(key=_REPORTED, data=None)
@given(key=keys(), data=st.data())
def test_no_fragment_of_a_key_survives_the_backend_or_the_logs(key: str, data: st.DataObject | None) -> None:
    if data is None:
        body = f"Incorrect API key provided: {_REPORTED[3:]} / {quote(_REPORTED, safe='')} / {_REPORTED[9:]}"
    else:
        body = data.draw(vendor_bodies(key))
    leaks = Leaks(key)
    other = "local-" + "x" * 30  # a second configured key: both are scrubbed, neither hides the other
    backend = backend_for(key, other)
    outputs = {"backend.scrub": backend.scrub(body)}
    with registered(key, other):
        for i, line in enumerate(log_lines(body)):
            outputs[f"log line {i}"] = line
    for where, output in outputs.items():
        assert not leaks.found(output), (where, output, leaks.found(output))


@_SETTINGS
@given(key=keys(), data=st.data())
def test_the_scrubber_leaves_nothing_of_the_key(key: str, data: st.DataObject) -> None:
    from orchestratex.secrets import REDACTED, SecretScrubber

    body = data.draw(vendor_bodies(key))
    scrubbed = SecretScrubber([key]).scrub(body)
    assert not Leaks(key).found(scrubbed), scrubbed
    assert REDACTED in scrubbed


@_SETTINGS
@given(key=keys(min_body=8, max_body=15), data=st.data())
def test_short_keys_are_scrubbed_whole_in_every_encoding(key: str, data: st.DataObject) -> None:
    """Keys under 16 characters count only whole (and their body after a ``prefix-``, when 8+ characters).

    Unlike long keys, they are not promised to survive adversarial neighbours (a partial escape such as
    ``%4`` just before them): the echo is delimited here, as vendors write it.
    """
    from orchestratex.secrets import SecretScrubber

    encoding = data.draw(st.sampled_from(sorted(ENCODINGS)))
    echoed = ENCODINGS[encoding](data.draw(st.sampled_from(sorted(must_not_survive(key)))))
    body = f"{data.draw(st.text(max_size=30))} '{echoed}' {data.draw(st.text(max_size=30))}"
    scrubbed = SecretScrubber([key]).scrub(body)
    assert not Leaks(key).found(scrubbed), scrubbed


def test_text_without_the_key_is_left_alone() -> None:
    """No over-redaction: real vendor error bodies, numbers, ids and URLs go through unchanged."""
    from orchestratex.secrets import SecretScrubber

    key = "sk-or-v1-" + "5f3c9a0e7b1d2c4f" * 4
    bodies = [
        '{"error":{"code":402,"message":"This request requires more credits, or fewer max_tokens. You requested up '
        'to 4096 tokens, but can only afford 1207. To increase, visit https://openrouter.ai/settings/credits"}}',
        '{"error":{"message":"Provider returned error","code":502,"metadata":{"raw":"{\\"error\\":{\\"message\\":'
        '\\"upstream model is overloaded\\",\\"type\\":\\"overloaded_error\\"}}","provider_name":"Chutes"}}}',
        "gen-1760000000-AbCdEfGhIjKlMnOpQrSt 0.000000350 https://openrouter.ai/api/v1/chat/completions?x=%2F%3D",
        "sk-or-v1-5f3c9a" + "~" * 40,  # the key's first 15 characters: not a fragment
    ]
    scrubber = SecretScrubber([key, "local-" + "y" * 30])
    for body in bodies:
        assert scrubber.scrub(body) == body


K = "sk-or-v1-0123456789abcdef/+0123456789abcdef0123"


@pytest.mark.parametrize(
    ("echo", "expected"),
    [
        pytest.param(f"bad key {K}", "bad key [REDACTED]", id="whole"),
        pytest.param(f"bad key {K[9:]}", "bad key [REDACTED]", id="without-its-prefix"),
        pytest.param("key=" + K.replace("/", "%2F").replace("+", "%2b"), "key=[REDACTED]", id="percent-mixed-case"),
        pytest.param(
            '"key":"' + K[9:].replace("c", "\\u0063").replace("/", "\\/") + '"', '"key":"[REDACTED]"', id="json"
        ),
        pytest.param(f"...{K[20:36]}...", "...[REDACTED]...", id="a-16-character-fragment"),
        pytest.param(f"...{K[20:35]}...", f"...{K[20:35]}...", id="15-characters-are-not-a-fragment"),
    ],
)
def test_examples_of_echoed_keys(echo: str, expected: str) -> None:
    from orchestratex.secrets import SecretScrubber

    assert SecretScrubber([K]).scrub(echo) == expected


_OLD_KEY_LIKE = re.compile(r"\bsk-[A-Za-z0-9_-]{8,}")


@settings(max_examples=EXAMPLES, deadline=None)
@given(st.lists(st.sampled_from(["sk-", "xsk-", "_sk-", "é", " ", "-", "abcdEFGH12", "_", "sk-abcdefgh"]), max_size=12))
def test_the_sk_key_guess_redacts_what_the_old_word_boundary_regex_did(parts: list[str]) -> None:
    """``sk-…`` shapes are still guessed at word boundaries only (rewritten for speed, same result)."""
    text = "".join(parts)
    assert _redact_key_like(text) == _OLD_KEY_LIKE.sub("[REDACTED]", text)
