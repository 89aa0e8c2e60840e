"""OpenRouter — and any OpenAI-compatible endpoint — as a :class:`Backend`.

One :class:`OpenRouterBackend` serves every catalogue model whose provider is an OpenAI-compatible
endpoint (``[[providers]]`` in the catalogue), with one pooled ``aiohttp.ClientSession`` per endpoint
(its connector holds at most the provider's ``max_connections``). A stream is read in whatever pieces have
arrived (``StreamReader.readany``: one await per wake-up, not one per line) and cut into lines and events
in one pass by :class:`EventStreamParser`, which follows the WHATWG "interpret an event stream" steps:
keep-alive comments such as ``: OPENROUTER PROCESSING``, ``\\r\\n`` line endings, multi-line ``data``,
``event`` / ``id`` / ``retry`` fields and a leading BOM are handled by the parser, never by ad-hoc string tests.

Why no SSE library: aiohttp was chosen for the upstream read path because it costs about a quarter of
httpx + httpx-sse's CPU per streamed call (``docs/benchmarks.md``), and no maintained SSE parser on
PyPI fits it. ``aiohttp-sse-client2`` (last release 2023) owns the request: it raises on an error
status without the headers (losing ``Retry-After``), refuses a JSON 200 body, and on a stream that
ends *reconnects and re-sends the POST* — a second, billed generation. ``aiosseclient`` only GETs;
``assel`` shares one UTF-8 decoder between all parser instances (concurrent streams corrupt each
other); ``axio-sse`` needs Python 3.12; ``sseclient-py`` and ``requests-sse`` are synchronous;
``httpx-sse``'s decoder is private to httpx. So aiohttp reads the body and a small, spec-tested parser
cuts it into events (``tests/providers/test_sse_parser.py``).

What this client does about OpenRouter's protocol (``docs/openrouter.md``):

* always sends ``max_tokens`` (without it OpenRouter reserves credit for the model's whole output
  ceiling, and a low balance fails with 402), ``stream`` and ``stream_options.include_usage``
  (a no-op on OpenRouter, required by vLLM and OpenAI for streamed usage);
* reads ``usage`` from ANY chunk and never indexes ``choices[0]`` blindly (the usage chunk has
  empty ``choices``); checks for a top-level ``error`` before reading ``choices`` — in 200 bodies,
  in stream chunks, and in a bare ``data: {"error": ...}``; accepts ``error.code`` as int or string;
* a stream that ends with an error event (no ``[DONE]``), or a choice with ``finish_reason:
  "error"``, is a failure — ``MID_STREAM_ERROR`` once text was produced — carrying the usage seen;
* the served model comes from the response's ``model``; reasoning from ``reasoning`` (then
  ``reasoning_content``, then ``reasoning_details``); the generation id from ``X-Generation-Id``
  or ``id``; cost from ``usage.cost`` when present (else None: ``generation`` prices it from the
  catalogue);
* timeouts: connect, time to first token, idle between data events (keep-alive comments do not
  count, so a hung stream is cut even while OpenRouter keeps it "alive"), and total. While a stream
  is read they are enforced by one timer per call (not one per event) that fails the pending read;
* closing the stream (``aclose``) or cancelling its task closes the upstream HTTP connection at once,
  which is how OpenRouter learns to stop (and stop billing) the generation; a stream read to
  ``[DONE]`` is drained to its end so that its connection goes back to the pool;
* ``Retry-After`` (seconds or HTTP date), ``X-RateLimit-Reset`` (epoch milliseconds) and the
  retry hints inside error metadata become :attr:`BackendError.retry_after`.

What it does about local OpenAI-compatible servers (llama-cpp-python's above all; ``tests/real_model``):

* a JSON Schema goes in the form the provider entry names (``schema_style``: OpenAI's ``json_schema``,
  or llama-cpp-python's ``json_object`` + ``schema``);
* a stream that breaks before its first event is followed, when the provider has
  ``probe_broken_streams``, by the same request without streaming and with ``max_tokens`` 1, whose
  error is reported instead (llama-cpp-python refuses an over-long prompt only that way);
* a stream that reaches ``[DONE]`` after text but without a finish reason was cut short by the server
  (llama-cpp-python's ``--interrupt_requests``): a MID_STREAM_ERROR, never a complete answer;
* context-length errors are read in OpenRouter's, OpenAI's / vLLM's / llama-cpp-python's ("... in the
  messages, ... in the completion") and llama.cpp ``llama-server``'s ("context size") wording.

Keys never leave this module except in the ``Authorization`` header: vendor text quoted in error
messages (and the served model and generation id it reports) is scrubbed of every key this backend
holds, in every form a vendor may echo one — without its prefix, URL-encoded, JSON-escaped, or any
16+ character piece of it (:class:`orchestratex.secrets.SecretScrubber`) — and of anything shaped
like an ``sk-…`` key.
"""

from __future__ import annotations

import asyncio
import contextlib
import email.utils
import http
import logging
import math
import os
import re
import time
from collections.abc import AsyncGenerator, Awaitable, Callable, Mapping
from dataclasses import dataclass, replace
from typing import Any, TypeVar

import aiohttp
import orjson
from aiohttp.helpers import get_env_proxy_for_url
from aiohttp.http_exceptions import LineTooLong
from yarl import URL

from orchestratex.config import MAX_UPSTREAM_TIMEOUT, ProvidersSettings, Secret, Settings
from orchestratex.errors import ConfigError
from orchestratex.secrets import SecretScrubber
from services.providers.backend import (
    BackendError,
    ErrorCategory,
    FailureKind,
    FinishReason,
    GenerationRequest,
    OutputFormat,
    StreamEnd,
    StreamEvent,
    TextDelta,
    Timing,
    TokenUsage,
)
from services.providers.catalogue import Catalogue, ModelSpec, ProviderSpec, SchemaStyle
from services.providers.sse import EventStreamParser, ServerSentEvent
from services.providers.sse import LineTooLong as SSELineTooLong

log = logging.getLogger(__name__)

T = TypeVar("T")

OPENROUTER_KEY_ENV = "OPENROUTER_API_KEY"
"""Providers whose ``api_key_env`` is this take their key from ``Settings.providers.openrouter_api_key``
(which also reads ``ORX_OPENROUTER_API_KEY_FILE``)."""
OPENROUTER_PROVIDER = "openrouter"
"""The provider name that gets OpenRouter's extras (attribution headers, ``provider`` routing)."""
APP_TITLE = "OrchestrateX"

_TIMEOUT_ENV = {
    "connect_timeout": "ORX_CONNECT_TIMEOUT",
    "first_token_timeout": "ORX_FIRST_TOKEN_TIMEOUT",
    "idle_timeout": "ORX_IDLE_TIMEOUT",
    "total_timeout": "ORX_TOTAL_TIMEOUT",
}
_MAX_TIMEOUT = MAX_UPSTREAM_TIMEOUT
_MAX_DETAIL = 300
_DRAIN_SECONDS = 1.0
_MAX_LINE = 1 << 20
"""Longest SSE line accepted (bytes): a bound on what one event can make us buffer."""
# OpenAI-style string codes seen in error bodies, mapped to the HTTP status they stand for.
_STRING_CODES = {
    "invalid_request_error": 400,
    "context_length_exceeded": 400,
    "invalid_api_key": 401,
    "authentication_error": 401,
    "insufficient_quota": 402,
    "permission_denied": 403,
    "model_not_found": 404,
    "not_found": 404,
    "timeout": 408,
    "rate_limit_exceeded": 429,
    "server_error": 500,
    "internal_error": 500,
    "overloaded_error": 529,
}
_FINISH = {
    "stop": FinishReason.STOP,
    "length": FinishReason.LENGTH,
    "content_filter": FinishReason.CONTENT_FILTER,
    "tool_calls": FinishReason.STOP,
    "function_call": FinishReason.STOP,
}
# Literal first (a leading \b made re scan 30x slower); the word boundary is checked in _redact_key_like.
_KEY_LIKE = re.compile(r"sk-[A-Za-z0-9_-]{8,}")
_CONTEXT_LIMIT = re.compile(r"maximum context length is ([\d,]+) tokens", re.IGNORECASE)
_CONTEXT_REQUESTED = re.compile(r"(?:requested|resulted in)(?: about)? ([\d,]+) tokens", re.IGNORECASE)
# OpenRouter: "(135904 of text input, 4096 in the output)"; llama-cpp-python: "(2107 in the messages, 8 in
# the completion)".
_CONTEXT_INPUT = re.compile(r"([\d,]+) (?:of text input|in the messages)", re.IGNORECASE)
_CONTEXT_OUTPUT = re.compile(r"([\d,]+) in the (?:output|completion)", re.IGNORECASE)


@dataclass(frozen=True)
class OpenRouterConfig:
    """Timeouts of upstream calls, in seconds.

    ``connect_timeout``: TCP/TLS connect (and request write); ``first_token_timeout``: from sending
    the request to the first text or reasoning delta; ``idle_timeout``: longest silence between two
    data events once text has started; ``total_timeout``: the whole call.
    """

    connect_timeout: float = 10.0
    first_token_timeout: float = 120.0
    idle_timeout: float = 60.0
    total_timeout: float = 600.0
    app_url: str = ""
    """Sent as ``HTTP-Referer`` for OpenRouter's app attribution when set (``ORX_APP_URL``)."""

    def __post_init__(self) -> None:
        for name, var in _TIMEOUT_ENV.items():
            value = getattr(self, name)
            if not (math.isfinite(value) and 0 < value <= _MAX_TIMEOUT):
                raise ConfigError(f"{var}: must be more than 0 and at most {_MAX_TIMEOUT:g} seconds, got {value!r}")

    @classmethod
    def from_settings(cls, settings: ProvidersSettings) -> OpenRouterConfig:
        """The timeouts and app URL of ``settings`` (``Settings.providers``, parsed by :mod:`orchestratex.config`)."""
        timeouts = settings.timeouts
        return cls(
            connect_timeout=timeouts.connect,
            first_token_timeout=timeouts.first_token,
            idle_timeout=timeouts.idle,
            total_timeout=timeouts.total,
            app_url=settings.app_url,
        )

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> OpenRouterConfig:
        """:meth:`from_settings` of ``ORX_CONNECT_TIMEOUT``, ``ORX_FIRST_TOKEN_TIMEOUT``, ``ORX_IDLE_TIMEOUT``,
        ``ORX_TOTAL_TIMEOUT`` (seconds) and ``ORX_APP_URL`` in ``env``. Errors name the variable."""
        return cls.from_settings(ProvidersSettings.from_env(env))


def resolve_keys(settings: Settings, catalogue: Catalogue, env: Mapping[str, str] | None = None) -> dict[str, Secret]:
    """The key of every provider that serves a catalogue model, by provider name.

    ``OPENROUTER_API_KEY`` comes from ``settings`` (it also reads the key file); any other
    ``api_key_env`` is read from ``env`` (default ``os.environ``). A missing key is an empty Secret:
    local endpoints (vLLM, Ollama) often need none.
    """
    env = os.environ if env is None else env
    keys: dict[str, Secret] = {}
    for name in _used_providers(catalogue):
        spec = catalogue.providers[name]
        if spec.api_key_env == OPENROUTER_KEY_ENV:
            keys[name] = settings.providers.openrouter_api_key
        else:
            keys[name] = Secret(env.get(spec.api_key_env, "").strip())
    return keys


def chat_body(
    request: GenerationRequest,
    *,
    stream: bool,
    openrouter: bool,
    schema_style: SchemaStyle = SchemaStyle.JSON_SCHEMA,
) -> dict[str, Any]:
    """The JSON body of ``POST /chat/completions`` for ``request``.

    A JSON Schema goes in the form the endpoint takes (``schema_style``, from the provider entry):
    OpenAI's ``{"type": "json_schema", "json_schema": {...}}`` or llama-cpp-python's
    ``{"type": "json_object", "schema": {...}}`` (always enforced: it becomes a grammar). Stop sequences
    go as ``stop`` and the end-user id as ``user``, OpenAI's names, only when set.
    """
    body: dict[str, Any] = {
        "model": request.model.id,
        "messages": [{"role": m.role.value, "content": m.content} for m in request.messages],
        # Always: without it OpenRouter reserves credit for the model's whole output ceiling.
        "max_tokens": request.max_tokens,
        "stream": stream,
    }
    if stream:
        body["stream_options"] = {"include_usage": True}
    if request.temperature is not None:
        body["temperature"] = request.temperature
    if request.top_p is not None:
        body["top_p"] = request.top_p
    if request.seed is not None:
        body["seed"] = request.seed
    if request.stop:
        body["stop"] = list(request.stop)
    if request.end_user:
        body["user"] = request.end_user
    rf = request.response_format
    if rf.type is OutputFormat.JSON_OBJECT:
        body["response_format"] = {"type": "json_object"}
    elif rf.type is OutputFormat.JSON_SCHEMA and schema_style is SchemaStyle.JSON_OBJECT:
        body["response_format"] = {"type": "json_object", "schema": dict(rf.schema or {})}
    elif rf.type is OutputFormat.JSON_SCHEMA:
        body["response_format"] = {
            "type": "json_schema",
            "json_schema": {"name": rf.schema_name, "strict": rf.strict, "schema": dict(rf.schema or {})},
        }
    if rf.type is not OutputFormat.TEXT and openrouter:
        # Route only to upstream endpoints that support response_format instead of silently ignoring it.
        body["provider"] = {"require_parameters": True}
    return body


def parse_retry_after(headers: Mapping[str, str], now: float) -> float | None:
    """Seconds to wait from ``Retry-After`` (seconds or HTTP date) or ``X-RateLimit-Reset`` (epoch ms).

    ``headers`` must be case-insensitive (aiohttp's ``CIMultiDictProxy``) or use lower-case keys; ``now`` is the
    wall clock (``time.time()``). None when neither header is usable.
    """
    value = (headers.get("retry-after") or "").strip()
    if value:
        seconds = _retry_after_value(value, now)
        if seconds is not None:
            return seconds
    reset = (headers.get("x-ratelimit-reset") or "").strip()
    if reset:
        try:
            epoch = float(reset)
        except ValueError:
            return None
        if math.isfinite(epoch) and epoch > 0:
            # OpenRouter sends milliseconds; tolerate seconds from other gateways.
            epoch_seconds = epoch / 1000 if epoch > 1e11 else epoch
            return max(0.0, epoch_seconds - now)
    return None


def _retry_after_value(value: str, now: float) -> float | None:
    try:
        seconds = float(value)
    except ValueError:
        try:
            when = email.utils.parsedate_to_datetime(value)
        except (TypeError, ValueError):
            return None
        return max(0.0, when.timestamp() - now)
    return max(0.0, seconds) if math.isfinite(seconds) else None


@dataclass
class _Endpoint:
    spec: ProviderSpec
    key: Secret
    url: str
    openrouter: bool
    session: aiohttp.ClientSession | None = None
    """Created on first use, inside the running loop (aiohttp binds a session to its loop)."""
    target: URL | None = None
    """``url`` parsed once."""
    proxy: URL | None = None
    proxy_headers: dict[str, str] | None = None
    """Sent to the proxy in its CONNECT request (https endpoints)."""
    proxy_auth: str = ""
    """``Proxy-Authorization`` sent with each request itself (http endpoints: no CONNECT)."""


class OpenRouterBackend:
    """Completions from OpenRouter or any OpenAI-compatible endpoint named in the catalogue.

    ``keys`` maps provider names to their keys (see :func:`resolve_keys`); ``config`` holds the
    timeouts; ``wall_clock`` (``time.time``) converts ``X-RateLimit-Reset`` and HTTP dates into
    delays. Connection pools are opened on first use; call :meth:`aclose` to release them.
    """

    def __init__(
        self,
        catalogue: Catalogue,
        keys: Mapping[str, Secret],
        config: OpenRouterConfig | None = None,
        *,
        wall_clock: Callable[[], float] = time.time,
    ) -> None:
        self._catalogue = catalogue
        self._config = config or OpenRouterConfig()
        self._wall_clock = wall_clock
        self._endpoints: dict[str, _Endpoint] = {}
        for name in _used_providers(catalogue):
            spec = catalogue.providers[name]
            self._endpoints[name] = _Endpoint(
                spec=spec,
                key=keys.get(name, Secret("")),
                url=f"{spec.base_url}/chat/completions",
                openrouter=name == OPENROUTER_PROVIDER,
            )
        self._scrubber = SecretScrubber(key.get() for key in keys.values() if key)
        names = list(self._endpoints)
        self._name = names[0] if len(names) == 1 else "+".join(names)

    @classmethod
    def from_settings(
        cls, settings: Settings, catalogue: Catalogue, env: Mapping[str, str] | None = None
    ) -> OpenRouterBackend:
        """A backend with keys from :func:`resolve_keys` and timeouts from ``settings.providers``."""
        config = OpenRouterConfig.from_settings(settings.providers)
        return cls(catalogue, resolve_keys(settings, catalogue, env), config)

    @property
    def name(self) -> str:
        """The provider name (``openrouter``), or the names joined by ``+`` when several serve the catalogue."""
        return self._name

    @property
    def simulated(self) -> bool:
        """Always False: these are real models."""
        return False

    @property
    def config(self) -> OpenRouterConfig:
        """The timeouts in force."""
        return self._config

    @property
    def secrets(self) -> SecretScrubber:
        """The scrubber of every key this backend holds (no shortening, no ``sk-…`` guessing)."""
        return self._scrubber

    def timing(self, model: ModelSpec) -> Timing:
        """The catalogue's typical latency of ``model``."""
        return Timing(model.typical_ttft_ms / 1000, model.typical_tokens_per_second)

    async def aclose(self) -> None:
        """Close every connection pool (a later call opens a new one)."""
        for endpoint in self._endpoints.values():
            session, endpoint.session = endpoint.session, None
            if session is not None:
                await session.close()

    def _session(self, endpoint: _Endpoint) -> aiohttp.ClientSession:
        session = endpoint.session
        if session is None:
            # HTTP(S)_PROXY / NO_PROXY (and a proxy's .netrc login) are read once per pool, as httpx did.
            # aiohttp's trust_env would read them on every request, in a worker thread: ~1 ms per call.
            endpoint.proxy, endpoint.proxy_headers, endpoint.proxy_auth = None, None, ""
            endpoint.target = url = URL(endpoint.url)
            with contextlib.suppress(LookupError):
                endpoint.proxy, auth = get_env_proxy_for_url(url)
                if auth is not None and url.scheme == "https":
                    endpoint.proxy_headers = {"Proxy-Authorization": auth.encode()}
                elif auth is not None:
                    endpoint.proxy_auth = auth.encode()
            endpoint.session = session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(limit=endpoint.spec.max_connections, limit_per_host=0),
                # Only the TCP/TLS connect has an aiohttp timeout: reads are bounded by our own
                # first-token / idle / total deadlines, and so is waiting for a pooled connection.
                timeout=aiohttp.ClientTimeout(
                    total=None, connect=None, sock_connect=self._config.connect_timeout, sock_read=None
                ),
                # An API client has no use for cookies (and none should carry over between callers).
                cookie_jar=aiohttp.DummyCookieJar(),
            )
        return session

    async def stream(self, request: GenerationRequest) -> AsyncGenerator[StreamEvent, None]:
        """Deltas then one :class:`StreamEnd`; raises :class:`BackendError`. Closing it closes the upstream call."""
        endpoint = self._endpoints.get(request.model.provider)
        if endpoint is None:  # pragma: no cover - every catalogue provider gets an endpoint
            raise BackendError(
                FailureKind.INVALID_REQUEST,
                f"{request.model.id}: provider {request.model.provider!r} is not configured",
                category=ErrorCategory.NOT_FOUND,
            )
        call = _Call(self, endpoint, request)
        spec = endpoint.spec
        streaming = spec.streaming
        session = self._session(endpoint)  # first: it resolves the proxy that _headers may name
        headers = self._headers(endpoint, streaming)
        body = orjson.dumps(
            chat_body(request, stream=streaming, openrouter=endpoint.openrouter, schema_style=spec.schema_style)
        )
        response: aiohttp.ClientResponse | None = None
        try:
            response = await call.within(
                session.post(
                    endpoint.target or endpoint.url,
                    data=body,
                    headers=headers,
                    allow_redirects=False,
                    proxy=endpoint.proxy,
                    proxy_headers=endpoint.proxy_headers,
                ),
                call.deadline() if streaming else call.total_deadline,
            )
            call.generation_id = response.headers.get("x-generation-id", "")
            content_type = response.headers.get("content-type", "")
            if not streaming or response.status != 200 or "text/event-stream" not in content_type:
                # A non-streaming reply, an error status, or a JSON body where a stream was expected
                # (a 200 that is an error).
                for event in await call.json_reply(response):
                    yield event
                return
            reader = response.content
            parser = EventStreamParser(_MAX_LINE)
            call.watch(reader)
            call.stream_open = True
            while not call.done:
                if call.overdue:
                    call.recheck()
                call.reading = True
                raw = await reader.readany()  # whatever has arrived: usually one event, several when busy
                call.reading = False
                if not raw:
                    break  # the end of the body
                for sse in parser.feed(raw):
                    delta = call.absorb(sse)
                    if delta is not None:
                        yield delta
                    if call.done:
                        break
            call.unwatch()
            if call.done:
                await _drain(reader)
            yield call.end()
        except (asyncio.CancelledError, GeneratorExit):
            # The caller went away; the `finally` below closes the connection before this returns.
            log.debug("%s call to %s closed by the caller after %d events", endpoint.spec.name, call.model, call.chunks)
            raise
        except _Expired:
            raise call.expired() from None
        except aiohttp.ConnectionTimeoutError:
            raise call.timeout("connect", self._config.connect_timeout) from None
        except BackendError as exc:
            if call.broke_before_output() and spec.probe_broken_streams:
                raise await self._probe(session, endpoint, request, call, exc) from None
            raise
        except (aiohttp.ClientError, ConnectionError) as exc:
            error = call.connection_error(exc)
            if call.broke_before_output() and spec.probe_broken_streams:
                error = await self._probe(session, endpoint, request, call, error)
            raise error from None
        except SSELineTooLong:
            raise call.invalid("a stream line is too long") from None
        finally:
            call.unwatch()
            if response is not None:
                # A response read to its end has already handed its connection back to the pool, and
                # this does nothing; otherwise it closes the connection, which tells the vendor to stop.
                response.close()

    async def _probe(
        self,
        session: aiohttp.ClientSession,
        endpoint: _Endpoint,
        request: GenerationRequest,
        call: _Call,
        original: BackendError,
    ) -> BackendError:
        """Why a stream broke before its first event: the endpoint's error for the same request, sent
        without streaming and with ``max_tokens`` 1 (``probe_broken_streams``).

        llama-cpp-python's server checks a request (the prompt against its context window) only once the
        stream has started; a failure then drops the connection with no event, while the same request
        without streaming gets a status and a message. ``original`` is returned when the probe succeeds
        (the failure was not the request's) or fails in its turn.
        """
        log.info("%s call to %s: the stream broke before its first event; asking why", endpoint.spec.name, call.model)
        body = chat_body(
            replace(request, max_tokens=1),
            stream=False,
            openrouter=endpoint.openrouter,
            schema_style=endpoint.spec.schema_style,
        )
        # Twice at most: the broken stream's connection went back to the pool just before the server closed
        # it, and the first attempt may pick it up (a reset, or aiohttp's ServerDisconnectedError).
        for attempt in (1, 2):
            try:
                status, headers, raw = await self._post_once(session, endpoint, body, call)
            except aiohttp.ClientConnectionError:
                if attempt == 1:
                    continue
                return original
            except (BackendError, aiohttp.ClientError, ConnectionError):
                return original
            if status == 200:
                return original
            call.probed = True
            return call.http_error(status, headers, raw)
        return original  # pragma: no cover - the loop always returns

    async def _post_once(
        self, session: aiohttp.ClientSession, endpoint: _Endpoint, body: Mapping[str, Any], call: _Call
    ) -> tuple[int, Mapping[str, str], bytes]:
        """One non-streaming request within the call's total deadline: status, headers and body."""
        reply = await call.within(
            session.post(
                endpoint.target or endpoint.url,
                data=orjson.dumps(body),
                headers=self._headers(endpoint, streaming=False),
                allow_redirects=False,
                proxy=endpoint.proxy,
                proxy_headers=endpoint.proxy_headers,
            ),
            call.total_deadline,
        )
        try:
            raw = await call.within(reply.read(), call.total_deadline)
        finally:
            reply.release()
        return reply.status, reply.headers, raw

    def _headers(self, endpoint: _Endpoint, streaming: bool) -> dict[str, str]:
        headers = {"Content-Type": "application/json"}
        if streaming:
            headers["Accept"] = "text/event-stream"
            headers["Cache-Control"] = "no-store"
        if endpoint.proxy_auth:
            headers["Proxy-Authorization"] = endpoint.proxy_auth
        if endpoint.key:
            headers["Authorization"] = f"Bearer {endpoint.key.get()}"
        if endpoint.openrouter:
            headers["X-OpenRouter-Title"] = APP_TITLE
            if self._config.app_url:
                headers["HTTP-Referer"] = self._config.app_url
        return headers

    def scrub(self, text: str) -> str:
        """``text`` with every key in any form (and anything shaped like one) replaced by ``[REDACTED]``, shortened.

        The whole text is scrubbed before it is shortened, so a cut can never keep a piece the scrubber
        would have recognised whole.
        """
        text = _redact_key_like(self._scrubber.scrub(text))
        text = " ".join(text.split())
        return text if len(text) <= _MAX_DETAIL else text[: _MAX_DETAIL - 1] + "…"


def _redact_key_like(text: str) -> str:
    """Anything shaped like an ``sk-…`` key (another vendor's, or one we do not hold) as ``[REDACTED]``.

    Same result as ``re.sub(r"\\bsk-[A-Za-z0-9_-]{8,}", ...)``, without the leading ``\\b`` that made
    ``re`` scan character by character: a candidate not at a word boundary is skipped by one character.
    """
    if "sk-" not in text:
        return text
    out: list[str] = []
    position = search = 0
    while (match := _KEY_LIKE.search(text, search)) is not None:
        start = match.start()
        before = text[start - 1] if start else " "
        if before.isalnum() or before == "_":  # inside a word: not a \b
            search = start + 1
            continue
        out += [text[position:start], "[REDACTED]"]
        position = search = match.end()
    out.append(text[position:])
    return "".join(out)


async def _drain(reader: aiohttp.StreamReader) -> None:
    """Read what follows ``[DONE]`` (normally just the end of the chunked body) so the connection is reused.

    aiohttp closes, rather than pools, a connection whose response was not read to the end: without
    this every call would pay a new TCP (and TLS) handshake. Whatever goes wrong here is not the
    call's problem any more.
    """
    if reader.is_eof():
        return
    with contextlib.suppress(TimeoutError, aiohttp.ClientError, ConnectionError, LineTooLong):
        async with asyncio.timeout(_DRAIN_SECONDS):
            while await reader.readany():
                pass


class _Expired(Exception):
    """Set on the response's reader by a call's timer to fail the read it is waiting in."""


class _Call:
    """The state of one upstream call: deadlines, what was produced, usage, and error construction."""

    def __init__(self, backend: OpenRouterBackend, endpoint: _Endpoint, request: GenerationRequest) -> None:
        self.backend = backend
        self.model = request.model.id
        self.provider = endpoint.spec.name
        self.max_tokens = request.max_tokens
        config = backend.config
        self.idle_timeout = config.idle_timeout
        self.first_token_timeout = config.first_token_timeout
        self.total_timeout = config.total_timeout
        self.loop = asyncio.get_running_loop()
        now = self.loop.time()
        self.total_deadline = now + config.total_timeout
        self.first_token_deadline = now + config.first_token_timeout
        self.last_data = now
        self.reader: aiohttp.StreamReader | None = None
        self.alarm: asyncio.TimerHandle | None = None
        self.alarm_at = 0.0
        self.reading = False
        """True while the stream loop waits in ``readline`` (the only time the alarm may fail it)."""
        self.overdue = False
        """The alarm found the deadline past while the consumer held an event: check at the next read."""
        self.produced = False
        self.done = False
        self.chunks = 0
        self.finish: str | None = None
        self.usage: TokenUsage | None = None
        self.served_model = ""
        self.generation_id = ""
        self.stream_open = False
        """The endpoint answered 200 with an event stream (set before the first read)."""
        self.probed = False
        """The error being built is the reply to a probe sent with ``max_tokens`` 1 (see ``_probe``)."""

    def broke_before_output(self) -> bool:
        """True when an event stream was open and ended or broke before any data event."""
        return self.stream_open and self.chunks == 0 and not self.done

    # -- deadlines

    def deadline(self) -> float:
        """The next deadline: first token until text starts, then idle; never past the total."""
        phase = self.last_data + self.idle_timeout if self.produced else self.first_token_deadline
        return min(phase, self.total_deadline)

    async def within(self, awaitable: Awaitable[T], deadline: float) -> T:
        """Await ``awaitable`` until ``deadline`` (loop time); a miss is a TIMEOUT naming the phase.

        For the few awaits of a call outside the stream loop (headers, a JSON body, the drain).
        """
        limit = asyncio.timeout_at(deadline)
        try:
            async with limit:
                return await awaitable
        except TimeoutError:
            if not limit.expired():  # aiohttp's own connect timeout, a TimeoutError too
                raise
            raise self.expired(deadline) from None

    def expired(self, deadline: float | None = None) -> BackendError:
        """The TIMEOUT for a missed ``deadline`` (default: the current one), naming the phase."""
        if deadline is None:
            deadline = self.deadline()
        if deadline >= self.total_deadline:
            return self.timeout("total", self.total_timeout)
        if self.produced:
            return self.timeout("idle", self.idle_timeout)
        return self.timeout("first token", self.first_token_timeout)

    # The stream loop's deadlines: one timer per call instead of an ``asyncio.timeout`` per read
    # (that cost 7% of the service's CPU). The timer never cancels a task — it may fire while the
    # consumer holds an event, and a cancellation there would hit the consumer — it fails the read
    # in progress through the reader (``_Expired``), or marks the call overdue for the next read.

    def watch(self, reader: aiohttp.StreamReader) -> None:
        """Start enforcing the deadlines on reads from ``reader``."""
        self.reader = reader
        self._arm(self.deadline())

    def unwatch(self) -> None:
        """Stop the timer (idempotent)."""
        if self.alarm is not None:
            self.alarm.cancel()
            self.alarm = None

    def recheck(self) -> None:
        """Called before a read when the call is overdue: check again as soon as the read waits."""
        self.overdue = False
        self.unwatch()
        self._arm(self.loop.time())

    def _arm(self, when: float) -> None:
        self.alarm_at = when
        self.alarm = self.loop.call_at(when, self._ring)

    def _ring(self) -> None:
        self.alarm = None
        deadline = self.deadline()
        if self.loop.time() < deadline:
            self._arm(deadline)  # data arrived since the timer was set: the deadline moved on
        elif self.reading and self.reader is not None:
            self.reader.set_exception(_Expired())
        else:
            self.overdue = True

    # -- reading

    def absorb(self, sse: ServerSentEvent) -> TextDelta | None:
        """Take one data event in: metadata, usage, errors, then the delta (None when it has no text)."""
        data = sse.data.strip()
        if not data:
            return None
        if data == "[DONE]":
            self.done = True
            return None
        self.last_data = self.loop.time()
        self.chunks += 1
        chunk = self._parse(data)
        self._metadata(chunk)
        error = chunk.get("error")
        if error is not None:
            raise self.in_band_error(error)
        text = reasoning = ""
        choice = _first_choice(chunk)
        if choice is not None:
            delta = choice.get("delta")
            if isinstance(delta, dict):
                content = delta.get("content")
                if isinstance(content, str):
                    text = content
                if "reasoning" in delta or "reasoning_content" in delta or "reasoning_details" in delta:
                    reasoning = _reasoning(delta)
            finish = choice.get("finish_reason")
            if isinstance(finish, str) and finish:
                self.finish = finish
        delta_event = TextDelta(text, reasoning) if text or reasoning else None
        if self.finish == "error":
            raise self.in_band_error({"message": 'the model stopped with finish_reason "error"'})
        if delta_event is not None and not self.produced:
            self.produced = True
            # From now on the (usually shorter) idle timeout applies: bring the timer forward.
            if self.alarm is not None and self.deadline() < self.alarm_at:
                self.unwatch()
                self._arm(self.deadline())
        return delta_event

    def end(self) -> StreamEnd:
        """The closing event once the stream ended; a stream cut before ``[DONE]`` or a finish reason fails."""
        if not self.done and self.finish is None:
            kind = FailureKind.MID_STREAM_ERROR if self.produced else FailureKind.UPSTREAM_ERROR
            raise BackendError(
                kind,
                f"{self.model}: the {self.provider} stream ended before the reply was complete",
                usage=self.usage,
                category=ErrorCategory.UNAVAILABLE,
            )
        if not self.produced:
            raise self._empty()
        if self.finish is None:
            # [DONE] with no finish reason after text: the server cut the reply short. llama-cpp-python's
            # server does that to a running stream when another request arrives (its --interrupt_requests,
            # on by default); taking it for a complete answer would keep a truncated one.
            raise BackendError(
                FailureKind.MID_STREAM_ERROR,
                f"{self.model}: the {self.provider} stream ended without a finish reason (cut short by the server)",
                usage=self.usage,
                category=ErrorCategory.UNAVAILABLE,
            )
        scrub = self.backend.secrets.scrub  # vendor-reported strings that reach clients and events
        return StreamEnd(
            finish_reason=_FINISH.get(self.finish or "stop", FinishReason.STOP),
            served_model=scrub(self.served_model) or self.model,
            usage=self.usage,
            generation_id=scrub(self.generation_id),
        )

    async def json_reply(self, response: aiohttp.ClientResponse) -> list[StreamEvent]:
        """A whole JSON reply (non-streaming call, or an error status / JSON body on a streaming call)."""
        raw = await self.within(response.read(), self.total_deadline)
        self.generation_id = self.generation_id or response.headers.get("x-generation-id", "")
        if response.status != 200:
            raise self.http_error(response.status, response.headers, raw)
        try:
            payload = orjson.loads(raw)
        except orjson.JSONDecodeError:
            payload = None
        if not isinstance(payload, dict):
            raise self.invalid("the reply is not a JSON object")
        self._metadata(payload)
        if payload.get("error") is not None:
            raise self.in_band_error(payload["error"])
        choices = payload.get("choices")
        if not isinstance(choices, list) or not choices or not isinstance(choices[0], dict):
            raise self.invalid("the reply has no choices")
        choice = choices[0]
        message = choice.get("message")
        message = message if isinstance(message, dict) else {}
        content = message.get("content")
        text = content if isinstance(content, str) else ""
        reasoning = _reasoning(message)
        finish = choice.get("finish_reason")
        self.finish = finish if isinstance(finish, str) and finish else "stop"
        if self.finish == "error":
            # Nothing reached the caller yet, so this is a plain (retryable) failure, not a mid-stream one.
            raise self.in_band_error({"message": 'the model stopped with finish_reason "error"'})
        if not text and not reasoning:
            raise self._empty()
        self.produced = True
        return [TextDelta(text, reasoning), self.end()]

    def _parse(self, data: str) -> dict[str, Any]:
        try:
            chunk = orjson.loads(data)
        except orjson.JSONDecodeError:
            chunk = None
        if not isinstance(chunk, dict):
            raise self.invalid("a stream event is not a JSON object")
        return chunk

    def _metadata(self, payload: Mapping[str, Any]) -> None:
        model = payload.get("model")
        if isinstance(model, str) and model:
            self.served_model = model
        gen_id = payload.get("id")
        if not self.generation_id and isinstance(gen_id, str):
            self.generation_id = gen_id
        raw = payload.get("usage")
        if raw is not None:  # in the last chunk only
            usage = _usage(raw)
            if usage is not None:
                self.usage = usage

    # -- errors

    def http_error(self, status: int, headers: Mapping[str, str], raw: bytes) -> BackendError:
        """The error for a non-200 reply."""
        error: Any = None
        with contextlib.suppress(orjson.JSONDecodeError):
            payload = orjson.loads(raw)
            if isinstance(payload, dict):
                error = payload.get("error")
        if not isinstance(error, dict):
            # Not an OpenRouter error body (e.g. a proxy's HTML page): the status line is all there is.
            error = {"message": error if isinstance(error, str) else _reason_phrase(status)}
        retry_after = parse_retry_after(headers, self.backend._wall_clock())
        return self._classify(status, error, retry_after, in_band=False)

    def in_band_error(self, error: Any) -> BackendError:
        """The error for an ``error`` object inside a 200 body or a stream event."""
        if not isinstance(error, dict):
            error = {"message": error if isinstance(error, str) else ""}
        return self._classify(_status_of(error.get("code")), error, None, in_band=True)

    def _classify(
        self, status: int | None, error: Mapping[str, Any], retry_after: float | None, *, in_band: bool
    ) -> BackendError:
        metadata = error.get("metadata")
        metadata = metadata if isinstance(metadata, Mapping) else {}
        detail = self._detail(error, metadata)
        if retry_after is None:
            retry_after = _metadata_retry_after(error, metadata, self.backend._wall_clock())
        code = status if status is not None else 502
        kind, category, message, field = self._meaning(code, detail, metadata, error)
        if in_band and self.produced:
            kind = FailureKind.MID_STREAM_ERROR
            message = f"{self.model}: the stream failed after output had started: {message.partition(': ')[2]}"
        log.warning(
            "%s call to %s failed: HTTP %s%s (%s)",
            self.provider,
            self.model,
            code,
            " in the reply body" if in_band else "",
            category.value,
        )
        return BackendError(
            kind,
            message,
            retry_after=retry_after,
            usage=self.usage,
            http_status=code,
            category=category,
            field=field,
        )

    def _meaning(
        self, code: int, detail: str, metadata: Mapping[str, Any], error: Mapping[str, Any]
    ) -> tuple[FailureKind, ErrorCategory, str, str]:
        model, provider = self.model, self.provider
        lowered = f"{detail} {error.get('code', '')} {metadata.get('error_type', '')}".lower()
        if code == 400 and "not a valid model id" in lowered:
            code = 404
        # "context length" (OpenAI, OpenRouter, vLLM, llama-cpp-python); "context size" (llama.cpp's llama-server).
        if code == 400 and any(words in lowered for words in ("context length", "context_length", "context size")):
            # A probe asked for 1 token: the vendor's output count is then not the caller's max_tokens.
            message = _context_message(model, detail, self.max_tokens if self.probed else None)
            return FailureKind.INVALID_REQUEST, ErrorCategory.BAD_REQUEST, message, "messages"
        if code in (400, 422) or (400 <= code < 500 and code not in (401, 402, 403, 404, 408, 413, 429)):
            message = f"{model}: {provider} rejected the request ({code}): {detail}"
            return FailureKind.INVALID_REQUEST, ErrorCategory.BAD_REQUEST, message, ""
        if code == 401:
            message = f"{model}: {provider} rejected the API key (missing, invalid or disabled)"
            return FailureKind.AUTH, ErrorCategory.UNAUTHENTICATED, message, ""
        if code == 402:
            message = f"{model}: insufficient credits on {provider}: {detail}"
            return FailureKind.CREDITS, ErrorCategory.INSUFFICIENT_CREDITS, message, ""
        if code == 403:
            reasons = metadata.get("reasons")
            if isinstance(reasons, list) and reasons:
                listed = ", ".join(self.backend.scrub(str(r)) for r in reasons)
                message = f"{model}: refused by moderation (reasons: {listed})"
            else:
                message = f"{model}: refused by {provider}: {detail}"
            return FailureKind.REFUSED, ErrorCategory.FORBIDDEN, message, ""
        if code == 404:
            ids = ", ".join(self.backend._catalogue.ids())
            message = f"{model}: not available from {provider} ({detail}); valid ids: {ids}"
            return FailureKind.INVALID_REQUEST, ErrorCategory.NOT_FOUND, message, "model"
        if code == 408:
            return FailureKind.TIMEOUT, ErrorCategory.TIMEOUT, f"{model}: {provider} timed out (408): {detail}", ""
        if code == 413:
            message = f"{model}: the request is too large for {provider} (413): {detail}"
            return FailureKind.INVALID_REQUEST, ErrorCategory.BAD_REQUEST, message, "messages"
        if code == 429:
            return (
                FailureKind.RATE_LIMITED,
                ErrorCategory.RATE_LIMITED,
                f"{model}: rate limited by {provider}: {detail}",
                "",
            )
        return FailureKind.UPSTREAM_ERROR, ErrorCategory.UNAVAILABLE, f"{model}: {provider} error {code}: {detail}", ""

    def _detail(self, error: Mapping[str, Any], metadata: Mapping[str, Any]) -> str:
        message = error.get("message")
        detail = message if isinstance(message, str) else ""
        inner = _raw_message(metadata.get("raw"))
        if inner and inner not in detail:
            name = metadata.get("provider_name")
            detail = f"{detail} ({name}: {inner})" if isinstance(name, str) and name else f"{detail} ({inner})"
        return self.backend.scrub(detail) or "no details"

    def timeout(self, phase: str, seconds: float) -> BackendError:
        """A TIMEOUT in ``phase`` (connect, first token, idle, total)."""
        what = {
            "connect": f"could not connect to {self.provider} within {seconds:g}s",
            "first token": f"no output within {seconds:g}s (time to first token)",
            "idle": f"the stream stalled for {seconds:g}s",
            "total": f"the call exceeded its total timeout of {seconds:g}s",
        }[phase]
        log.warning("%s call to %s timed out (%s)", self.provider, self.model, phase)
        return BackendError(
            FailureKind.TIMEOUT, f"{self.model}: {what}", usage=self.usage, category=ErrorCategory.TIMEOUT
        )

    def connection_error(self, exc: BaseException) -> BackendError:
        """A connection refused, reset or broken mid-reply."""
        log.warning("%s call to %s: connection error %s", self.provider, self.model, type(exc).__name__)
        kind = FailureKind.MID_STREAM_ERROR if self.produced else FailureKind.UPSTREAM_ERROR
        return BackendError(
            kind,
            f"{self.model}: connection to {self.provider} failed ({type(exc).__name__})",
            usage=self.usage,
            category=ErrorCategory.UNAVAILABLE,
        )

    def invalid(self, problem: str) -> BackendError:
        """An invalid reply (INVALID_OUTPUT, or MID_STREAM_ERROR once text was produced)."""
        kind = FailureKind.MID_STREAM_ERROR if self.produced else FailureKind.INVALID_OUTPUT
        return BackendError(
            kind,
            f"{self.model}: invalid reply from {self.provider}: {problem}",
            usage=self.usage,
            category=ErrorCategory.UNAVAILABLE,
        )

    def _empty(self) -> BackendError:
        return BackendError(
            FailureKind.INVALID_OUTPUT,
            f"{self.model}: {self.provider} returned an empty reply",
            usage=self.usage,
            category=ErrorCategory.UNAVAILABLE,
        )


def _reason_phrase(status: int) -> str:
    try:
        return http.HTTPStatus(status).phrase
    except ValueError:
        return f"HTTP {status}"


def _used_providers(catalogue: Catalogue) -> list[str]:
    used = {m.provider for m in catalogue}
    return [name for name in catalogue.providers if name in used]


def _first_choice(chunk: Mapping[str, Any]) -> Mapping[str, Any] | None:
    """The choice with index 0, or None: usage chunks have none."""
    choices = chunk.get("choices")
    if not isinstance(choices, list):
        return None
    for choice in choices:
        if isinstance(choice, dict) and choice.get("index", 0) == 0:
            return choice
    return None


def _reasoning(obj: Mapping[str, Any]) -> str:
    """Reasoning text of a delta or message: ``reasoning``, else ``reasoning_content``, else ``reasoning_details``."""
    for key in ("reasoning", "reasoning_content"):
        value = obj.get(key)
        if isinstance(value, str) and value:
            return value
    details = obj.get("reasoning_details")
    if not isinstance(details, list):
        return ""
    parts: list[str] = []
    for item in details:
        if not isinstance(item, dict):
            continue
        # reasoning.encrypted carries opaque data, not text.
        for key in ("text", "summary"):
            value = item.get(key)
            if isinstance(value, str):
                parts.append(value)
                break
    return "".join(parts)


def _count(value: Any) -> int:
    if isinstance(value, bool):
        return 0
    if isinstance(value, int):
        return max(0, value)
    if isinstance(value, float) and math.isfinite(value):
        return max(0, int(value))
    return 0


def _money(value: Any) -> float | None:
    if isinstance(value, bool) or value is None:
        return None
    if isinstance(value, str):
        try:
            value = float(value)
        except ValueError:
            return None
    if isinstance(value, int | float) and math.isfinite(value) and value >= 0:
        return float(value)
    return None


def _usage(raw: Any) -> TokenUsage | None:
    """``usage`` of a chunk or reply, or None when absent or malformed."""
    if not isinstance(raw, dict):
        return None
    prompt_details = raw.get("prompt_tokens_details")
    completion_details = raw.get("completion_tokens_details")
    cost = _money(raw.get("cost"))
    if cost is not None and raw.get("is_byok") is True:
        # Bring-your-own-key: `cost` is OpenRouter's fee; the provider billed the rest to the user's key.
        details = raw.get("cost_details")
        upstream = _money(details.get("upstream_inference_cost")) if isinstance(details, dict) else None
        cost += upstream or 0.0
    return TokenUsage(
        prompt_tokens=_count(raw.get("prompt_tokens")),
        completion_tokens=_count(raw.get("completion_tokens")),
        reasoning_tokens=_count(completion_details.get("reasoning_tokens"))
        if isinstance(completion_details, dict)
        else 0,
        cached_tokens=_count(prompt_details.get("cached_tokens")) if isinstance(prompt_details, dict) else 0,
        cost_usd=cost,
    )


def _status_of(code: Any) -> int | None:
    """An HTTP-like status from ``error.code``: an int, a numeric string, or a known string code."""
    if isinstance(code, bool):
        return None
    if isinstance(code, int):
        return code if 100 <= code <= 599 else None
    if isinstance(code, str):
        text = code.strip()
        if text.isdigit():
            number = int(text)
            return number if 100 <= number <= 599 else None
        return _STRING_CODES.get(text.lower())
    return None


def _raw_message(raw: Any) -> str:
    """The upstream message inside older ``metadata.raw`` (often a JSON string needing a second parse)."""
    if isinstance(raw, str):
        text = raw.strip()
        if not text or text.startswith("<"):  # empty, or an HTML error page
            return ""
        try:
            raw = orjson.loads(text)
        except orjson.JSONDecodeError:
            return text
    if isinstance(raw, dict):
        inner = raw.get("error", raw)
        if isinstance(inner, dict):
            inner = inner.get("message")
        return inner if isinstance(inner, str) else ""
    return ""


def _metadata_retry_after(error: Mapping[str, Any], metadata: Mapping[str, Any], now: float) -> float | None:
    """Retry hints inside an error body: ``retry_after_seconds``, ``headers.Retry-After``, ``availability``."""
    seconds = _money(metadata.get("retry_after_seconds"))
    if seconds is not None:
        return seconds
    headers = metadata.get("headers")
    if isinstance(headers, dict):
        for key, value in headers.items():
            if str(key).lower() == "retry-after":
                seconds = _retry_after_value(str(value), now)
                if seconds is not None:
                    return seconds
    availability = error.get("availability")
    if isinstance(availability, dict):
        return _money(availability.get("retry_after"))
    return None


def _context_message(model: str, detail: str, max_tokens: int | None = None) -> str:
    """The client-facing message of a context-length error, with the vendor's token counts.

    ``max_tokens``: the caller's, when the vendor's count of output tokens is not it (a probe).
    """

    def number(pattern: re.Pattern[str]) -> int | None:
        match = pattern.search(detail)
        return int(match.group(1).replace(",", "")) if match else None

    limit, requested = number(_CONTEXT_LIMIT), number(_CONTEXT_REQUESTED)
    prompt, output = number(_CONTEXT_INPUT), number(_CONTEXT_OUTPUT)
    if max_tokens is not None and prompt is not None:
        output, requested = max_tokens, prompt + max_tokens
    if limit is None or requested is None:
        return f"{model}: the request does not fit the model's context window: {detail}"
    if prompt is not None and output is not None:
        return (
            f"{model}: the prompt is {prompt:,} tokens and max_tokens is {output:,}; together {requested:,} "
            f"exceed the {limit:,}-token context window"
        )
    return f"{model}: the request needs {requested:,} tokens, more than the {limit:,}-token context window"
