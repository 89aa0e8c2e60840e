"""A local OpenRouter stand-in: an aiohttp server speaking OpenRouter's real protocol over real HTTP.

It reproduces the behaviours and faults listed in ``docs/openrouter.md``: keep-alive comment lines,
``\\r\\n`` line endings, usage in a final chunk with empty ``choices`` (or on a chunk that still has a
choice), 200 bodies that are errors, mid-stream error events without ``[DONE]``, bare error events,
``error.code`` as int or string, a served ``model`` that differs from the requested one,
the shapes of ``stop`` and ``user`` checked and a reply cut before the first stop sequence it contains,
``reasoning`` / ``reasoning_details`` deltas, every status of the error table, hung streams and slow
first tokens.

Start it::

    async with OpenRouterStandIn(api_key="sk-or-v1-test") as standin:
        base_url = standin.base_url          # http://127.0.0.1:PORT/api/v1
        ...

Script what the next chat requests get (FIFO, one :class:`Reply` per request), or per model (used
whenever the script is empty), or change the default::

    standin.script.append(Reply(content=["Hi", "!"], model="z-ai/glm-4.5-air"))
    standin.script.append(error_reply(429, retry_after="17"))
    standin.by_model["qwen/qwen3-coder"] = Reply(hang_after=2)

Observe: ``standin.requests`` (every request: method, path, query, headers, JSON body),
``standin.chat_requests()``, ``await standin.wait_for_requests(n)``; ``standin.disconnected``
(an ``asyncio.Event`` set when a client closes a chat request before its reply was complete) and
``RecordedRequest.disconnected_at`` (``time.perf_counter()``) to measure cancellation latency.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import math
import secrets
import time
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from decimal import Decimal
from pathlib import Path
from types import TracebackType
from typing import Any

import grpc
import orjson
from aiohttp import web
from multidict import CIMultiDict

from orchestratex.config import Settings
from orchestratex.grpc_client import open_channel
from orchestratex.grpc_server import GrpcServer
from orchestratex.v1 import providers_pb2_grpc
from services.providers.server import build
from tests.providers.helpers import ONE_ATTEMPT_NO_BREAKER

KEEPALIVE = ": OPENROUTER PROCESSING"
DEFAULT_KEY = "sk-or-v1-standin-0000000000000000000000000000000000000000000000000000000000000000"


_PARAMETERS = ["max_tokens", "temperature", "top_p", "seed", "stop", "response_format", "reasoning"]


def _model(
    model_id: str,
    name: str,
    context: int,
    max_out: int | None,
    prompt: str,
    completion: str,
    structured: bool = True,
    **extra: Any,
) -> dict[str, Any]:
    return {
        "id": model_id,
        "canonical_slug": model_id,
        "name": name,
        "created": 1_750_000_000,
        "description": f"{name} (stand-in)",
        "context_length": context,
        "architecture": {"modality": "text->text", "input_modalities": ["text"], "output_modalities": ["text"]},
        "pricing": {"prompt": prompt, "completion": completion, "request": "0", "image": "0", **extra},
        "top_provider": {"context_length": context, "max_completion_tokens": max_out, "is_moderated": False},
        "per_request_limits": None,
        "supported_parameters": [*_PARAMETERS, "structured_outputs"] if structured else list(_PARAMETERS),
    }


def default_models() -> list[dict[str, Any]]:
    """``/models`` entries of the project's six models (mid-2026 prices, USD per TOKEN as strings) and two siblings."""
    return [
        _model(
            "z-ai/glm-4.5", "Z.AI: GLM 4.5", 131_072, 98_304, "0.0000006", "0.0000022", input_cache_read="0.00000011"
        ),
        _model("z-ai/glm-4.5-air", "Z.AI: GLM 4.5 Air", 131_072, 98_304, "0.000000104", "0.00000068"),
        _model("openai/gpt-oss-120b", "OpenAI: gpt-oss-120b", 131_072, 32_768, "0.000000039", "0.00000018"),
        _model("openai/gpt-oss-120b:free", "OpenAI: gpt-oss-120b (free)", 131_072, 32_768, "0", "0"),
        _model("meta-llama/llama-4-maverick", "Meta: Llama 4 Maverick", 1_048_576, 16_384, "0.00000015", "0.0000006"),
        _model("moonshotai/kimi-k2", "MoonshotAI: Kimi K2", 131_072, 16_384, "0.00000057", "0.0000023"),
        _model("qwen/qwen3-coder", "Qwen: Qwen3 Coder", 262_144, 65_536, "0.00000022", "0.0000018"),
        _model(
            "tngtech/deepseek-r1t2-chimera",
            "TNG: DeepSeek R1T2 Chimera",
            163_840,
            65_536,
            "0.0000003",
            "0.0000012",
            structured=False,
        ),
    ]


@dataclass(frozen=True)
class Usage:
    """What the stand-in reports in ``usage`` (``cost`` in US dollars; None omits the field)."""

    prompt_tokens: int
    completion_tokens: int
    cost: float | None = None
    cached_tokens: int = 0
    reasoning_tokens: int = 0
    is_byok: bool = False
    upstream_inference_cost: float | None = None

    def to_json(self) -> dict[str, Any]:
        """The ``usage`` object as OpenRouter sends it."""
        body: dict[str, Any] = {
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": self.completion_tokens,
            "total_tokens": self.prompt_tokens + self.completion_tokens,
            "prompt_tokens_details": {"cached_tokens": self.cached_tokens},
            "completion_tokens_details": {"reasoning_tokens": self.reasoning_tokens},
            "is_byok": self.is_byok,
        }
        if self.cost is not None:
            body["cost"] = self.cost
            body["cost_details"] = {"upstream_inference_cost": self.upstream_inference_cost}
        return body


@dataclass(frozen=True)
class Reply:
    """What the stand-in does with one chat completion request. Defaults: a short successful answer.

    Content: ``content`` / ``reasoning`` are the deltas, one chunk each (a non-streaming reply joins
    them); ``reasoning_details`` also sends them as ``reasoning_details`` entries; ``model`` is the
    served model (None: the requested one); ``finish_reason`` of the last chunk (``"error"`` on a
    non-streaming request gives a 200 whose choice failed, with the partial content).

    Usage: ``usage`` (None: computed from the stand-in's prices); ``send_usage``; ``usage_on_choice``
    puts it on the finish chunk (which still has a choice) instead of a final chunk with EMPTY choices.

    Faults (N counts delta chunks: reasoning ones first, then content):
    ``status`` (non-200: ``error`` is the error object, ``headers`` extra headers);
    ``error_in_200`` (status 200, body ``{"error": ...}``); ``error_after=N`` (an error event with a
    top-level ``error`` and ``finish_reason: "error"``, then the stream ends WITHOUT ``[DONE]``;
    ``error_usage`` sends the usage so far first); ``bare_error`` (the event is just
    ``{"error":{"message":"Provider returned error","code":502}}``); ``hang_after=N`` (stop sending,
    keep the connection open; ``keepalive_while_hung`` keeps sending comments every
    ``keepalive_interval``); ``end_after=N`` (end the response cleanly: no finish reason, no error, no
    ``[DONE]`` — a dropped upstream); ``first_token_delay`` (seconds, with comments every
    ``keepalive_interval``); ``crlf`` line endings; ``send_done``; ``echo_auth`` (an error message that
    echoes the caller's Authorization header, as careless vendors do); ``echo_key`` (the error — of a
    non-200 reply, a 200 error body or a mid-stream error event — quotes the key it received, passed
    through this function: without its prefix, URL-encoded, JSON-escaped..., in its message and in an
    upstream ``metadata.raw`` JSON string); ``abort_before_data`` (a streaming request gets its 200
    event-stream headers, then the connection is dropped before any byte of the body, as
    llama-cpp-python's server does when the request fails once the stream has started).
    """

    content: Sequence[str] = ("Hello", " from", " the", " stand-in", ".")
    reasoning: Sequence[str] = ()
    reasoning_details: bool = False
    model: str | None = None
    provider: str = "StandIn"
    finish_reason: str = "stop"
    usage: Usage | None = None
    send_usage: bool = True
    usage_on_choice: bool = False
    status: int = 200
    error: Mapping[str, Any] | None = None
    headers: Mapping[str, str] = field(default_factory=dict)
    error_in_200: bool = False
    error_after: int | None = None
    error_usage: bool = False
    bare_error: bool = False
    hang_after: int | None = None
    keepalive_while_hung: bool = False
    end_after: int | None = None
    first_token_delay: float = 0.0
    keepalive_interval: float = 0.02
    keepalives_before: int = 2
    keepalives_between: int = 1
    crlf: bool = False
    send_done: bool = True
    echo_auth: bool = False
    echo_key: Callable[[str], str] | None = None
    abort_before_data: bool = False


def error_body(
    status: int, message: str, metadata: Mapping[str, Any] | None = None, code: Any = None
) -> dict[str, Any]:
    """An OpenRouter error object (``code`` defaults to ``status``)."""
    error: dict[str, Any] = {"code": status if code is None else code, "message": message}
    if metadata is not None:
        error["metadata"] = dict(metadata)
    return error


def error_reply(status: int, **kwargs: Any) -> Reply:
    """A realistic reply for each status of OpenRouter's error table (keyword arguments tweak it).

    ``retry_after`` / ``reset_ms`` add ``Retry-After`` / ``X-RateLimit-*`` headers (429, 503).
    ``context`` on 400 gives a context-length error; ``reasons`` on 403 a moderation refusal.
    """
    headers: dict[str, str] = dict(kwargs.pop("headers", {}))
    retry_after = kwargs.pop("retry_after", None)
    if retry_after is not None:
        headers["Retry-After"] = str(retry_after)
    reset_ms = kwargs.pop("reset_ms", None)
    if reset_ms is not None:
        headers.update({"X-RateLimit-Limit": "20", "X-RateLimit-Remaining": "0", "X-RateLimit-Reset": str(reset_ms)})
    model = kwargs.pop("model_slug", "z-ai/glm-4.5")
    if status == 400 and kwargs.pop("context", False):
        error = error_body(
            400,
            "This endpoint's maximum context length is 131072 tokens. However, you requested about 140000 tokens "
            "(135904 of text input, 4096 in the output). Please reduce the length of either one, or use the "
            '"middle-out" transform to compress your prompt automatically.',
        )
    elif status == 403:
        reasons = kwargs.pop("reasons", ["violence"])
        error = error_body(
            403,
            f'{model} requires moderation on OpenAI. Your input was flagged for "{reasons[0]}". '
            "No credits were charged.",
            {"reasons": reasons, "flagged_input": "how to make a …", "provider_name": "OpenAI", "model_slug": model},
        )
    elif status == 502:
        error = error_body(
            502,
            "Provider returned error",
            {
                "raw": '{"error":{"message":"upstream model is overloaded","type":"overloaded_error"}}',
                "provider_name": "Chutes",
            },
        )
    elif status == 503:
        error = error_body(503, "No allowed providers are available for the selected model.")
        error["availability"] = {"code": "no_endpoints", "retryable": True, "retry_after": 5}
    elif status == 429:
        error = error_body(
            429,
            "Rate limit exceeded: free-models-per-min.",
            {"headers": {"X-RateLimit-Limit": "20", "X-RateLimit-Remaining": "0"}, "provider_name": None},
        )
    else:
        error = error_body(status, _MESSAGES.get(status, "Error"))
    if "message" in kwargs:
        error["message"] = kwargs.pop("message")
    if "code" in kwargs:
        error["code"] = kwargs.pop("code")
    if "metadata" in kwargs:
        error["metadata"] = kwargs.pop("metadata")
    return Reply(status=status, error=error, headers=headers, **kwargs)


_MESSAGES = {
    400: "Invalid request: temperature must be between 0 and 2",
    401: "No auth credentials found",
    402: (
        "This request requires more credits, or fewer max_tokens. You requested up to 4096 tokens, but can only "
        "afford 1207. To increase, visit https://openrouter.ai/settings/credits and upgrade to a paid account"
    ),
    404: "No endpoints found for z-ai/glm-4.5.",
    408: "Request timed out",
    413: "Request body too large",
    422: "Unprocessable entity: messages[0].content must be a string or an array",
    500: "Internal Server Error",
    504: "Gateway timeout: the upstream provider did not respond in time",
    524: "Provider timed out",
    529: "Provider overloaded",
}
ERROR_STATUSES = (400, 401, 402, 403, 404, 408, 413, 422, 429, 500, 502, 503, 504, 524, 529)
"""Every status of OpenRouter's error table."""


@dataclass
class RecordedRequest:
    """One request the stand-in received."""

    method: str
    path: str
    query: dict[str, str]
    headers: CIMultiDict[str]
    body: Any
    raw: bytes
    received_at: float
    peer: str = ""
    """``host:port`` of the client's connection (the same value twice means a pooled, reused connection)."""
    disconnected_at: float | None = None
    """``time.perf_counter()`` when the client closed the connection before the reply was complete."""

    @property
    def key(self) -> str:
        """The bearer token sent, or ''."""
        auth = self.headers.get("Authorization", "")
        return auth[len("Bearer ") :] if auth.startswith("Bearer ") else ""


class OpenRouterStandIn:
    """The stand-in server. Use as ``async with OpenRouterStandIn() as s`` (or ``start``/``stop``).

    ``api_key``: the key it accepts (None accepts any bearer token; a missing one is always 401).
    ``models``: the ``/models`` data (default :func:`default_models`). ``affordable_tokens``: when
    set, a request whose ``max_tokens`` is missing or larger gets OpenRouter's 402.
    """

    def __init__(
        self,
        *,
        api_key: str | None = DEFAULT_KEY,
        models: list[dict[str, Any]] | None = None,
        affordable_tokens: int | None = None,
    ) -> None:
        self.api_key = api_key
        self.models = default_models() if models is None else models
        self.affordable_tokens = affordable_tokens
        self.free_requests_per_minute = 20
        """OpenRouter's limit on ``:free`` model ids (429 with ``X-RateLimit-*`` headers past it)."""
        self._free_calls: dict[str, collections.deque[float]] = {}
        self.script: collections.deque[Reply] = collections.deque()
        self.by_model: dict[str, Reply] = {}
        self.default = Reply()
        self.models_reply: Reply | None = None
        """When set, ``GET /models`` answers with this reply's status and error instead of the data."""
        self.requests: list[RecordedRequest] = []
        self.generations: dict[str, dict[str, Any]] = {}
        self.disconnected = asyncio.Event()
        self.completed = 0
        self._changed = asyncio.Condition()
        self._runner: web.AppRunner | None = None
        self._port = 0

    # ------------------------------------------------------------------ lifecycle

    async def start(self) -> None:
        """Listen on 127.0.0.1, port 0."""
        app = web.Application()
        app.router.add_post("/api/v1/chat/completions", self._chat)
        app.router.add_get("/api/v1/models", self._models)
        app.router.add_get("/api/v1/key", self._key)
        app.router.add_get("/api/v1/auth/key", self._key)
        app.router.add_get("/api/v1/generation", self._generation)
        # handler_cancellation: a client closing the connection cancels the handler at once, which is
        # how the stand-in notices (and timestamps) a disconnect while it is waiting.
        self._runner = web.AppRunner(app, handler_cancellation=True, shutdown_timeout=1.0, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self._port = int(self._runner.addresses[0][1])

    async def stop(self) -> None:
        """Stop listening and cancel handlers still running (hung streams)."""
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def __aenter__(self) -> OpenRouterStandIn:
        await self.start()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.stop()

    @property
    def port(self) -> int:
        """The TCP port it listens on."""
        return self._port

    @property
    def base_url(self) -> str:
        """What ``ORX_OPENROUTER_BASE_URL`` should be: ``http://127.0.0.1:PORT/api/v1``."""
        return f"http://127.0.0.1:{self._port}/api/v1"

    # ------------------------------------------------------------------ observation

    def chat_requests(self) -> list[RecordedRequest]:
        """The chat completion requests, in arrival order."""
        return [r for r in self.requests if r.path.endswith("/chat/completions")]

    async def wait_for_requests(self, count: int, within: float = 10.0) -> None:
        """Wait until at least ``count`` chat requests have arrived (at most ``within`` seconds)."""
        async with asyncio.timeout(within), self._changed:
            await self._changed.wait_for(lambda: len(self.chat_requests()) >= count)

    async def wait_for_disconnect(self, within: float = 10.0) -> RecordedRequest:
        """Wait (at most ``within`` seconds) for a client to drop a chat request early; returns that request."""
        async with asyncio.timeout(within):
            await self.disconnected.wait()
        return next(r for r in self.chat_requests() if r.disconnected_at is not None)

    def price(self, model_id: str, prompt_tokens: int, completion_tokens: int) -> float:
        """What the stand-in charges (its ``/models`` prices, exact decimal arithmetic)."""
        pricing = next((m["pricing"] for m in self.models if m["id"] == model_id), {"prompt": "0", "completion": "0"})
        total = Decimal(pricing["prompt"]) * prompt_tokens + Decimal(pricing["completion"]) * completion_tokens
        return float(total)

    async def _record(self, request: web.Request) -> RecordedRequest:
        raw = await request.read()
        body: Any = None
        if raw:
            with contextlib.suppress(orjson.JSONDecodeError):
                body = orjson.loads(raw)
        peer = request.transport.get_extra_info("peername") if request.transport is not None else None
        record = RecordedRequest(
            peer=f"{peer[0]}:{peer[1]}" if isinstance(peer, tuple) else "",
            method=request.method,
            path=request.path,
            query=dict(request.query),
            headers=CIMultiDict(request.headers),
            body=body,
            raw=raw,
            received_at=time.perf_counter(),
        )
        self.requests.append(record)
        async with self._changed:
            self._changed.notify_all()
        return record

    def _disconnect(self, record: RecordedRequest) -> None:
        if record.disconnected_at is None:
            record.disconnected_at = time.perf_counter()
        self.disconnected.set()

    def _auth_error(self, record: RecordedRequest) -> web.Response | None:
        auth = record.headers.get("Authorization", "")
        if not auth.startswith("Bearer ") or not record.key:
            return _json(401, {"error": error_body(401, "No auth credentials found")})
        if self.api_key is not None and record.key != self.api_key:
            return _json(401, {"error": error_body(401, "User not found.")})
        return None

    # ------------------------------------------------------------------ endpoints

    async def _models(self, request: web.Request) -> web.StreamResponse:
        await self._record(request)
        if self.models_reply is not None and self.models_reply.status != 200:
            return _json(self.models_reply.status, {"error": self.models_reply.error}, self.models_reply.headers)
        return _json(200, {"data": self.models})

    async def _key(self, request: web.Request) -> web.StreamResponse:
        record = await self._record(request)
        denied = self._auth_error(record)
        if denied is not None:
            return denied
        used = sum(g["total_cost"] for g in self.generations.values())
        data = {
            "label": f"{record.key[:12]}...{record.key[-3:]}",
            "limit": None,
            "limit_remaining": None,
            "limit_reset": None,
            "usage": used,
            "usage_daily": used,
            "usage_weekly": used,
            "usage_monthly": used,
            "is_free_tier": False,
        }
        return _json(200, {"data": data})

    async def _generation(self, request: web.Request) -> web.StreamResponse:
        record = await self._record(request)
        denied = self._auth_error(record)
        if denied is not None:
            return denied
        gen = self.generations.get(record.query.get("id", ""))
        if gen is None:
            return _json(404, {"error": error_body(404, "Generation not found")})
        return _json(200, {"data": gen})

    async def _chat(self, request: web.Request) -> web.StreamResponse:
        record = await self._record(request)
        denied = self._auth_error(record)
        if denied is not None:
            return denied
        body = record.body
        if not isinstance(body, dict) or not isinstance(body.get("model"), str) or not body.get("messages"):
            return _json(400, {"error": error_body(400, "Invalid request: model and messages are required")})
        requested = body["model"]
        stream = body.get("stream") is True
        refused = self._response_format_error(body) or _stop_and_user_error(body)
        if refused is not None:
            return refused
        if self.script:
            reply = self.script.popleft()
        elif all(m["id"] != requested for m in self.models):
            return _json(400, {"error": error_body(400, f"{requested} is not a valid model ID")})
        else:
            reply = self.by_model.get(requested, self.default)
        reply = _stopped(reply, body.get("stop"))
        limited = self._free_limit(requested)
        if limited is not None:
            return limited
        max_tokens = body.get("max_tokens")
        if self.affordable_tokens is not None and (
            not isinstance(max_tokens, int) or max_tokens > self.affordable_tokens
        ):
            wanted = max_tokens if isinstance(max_tokens, int) else 98_304
            message = (
                f"This request requires more credits, or fewer max_tokens. You requested up to {wanted} tokens, "
                f"but can only afford {self.affordable_tokens}."
            )
            return _json(402, {"error": error_body(402, message)})
        gen_id = f"gen-{int(time.time())}-{secrets.token_hex(10)}"
        served = reply.model or requested
        try:
            if reply.first_token_delay and not stream:
                await asyncio.sleep(reply.first_token_delay)
            if reply.status != 200 or reply.error_in_200:
                error = dict(reply.error or error_body(reply.status, "Error"))
                if reply.echo_auth:
                    error["message"] = f"{error.get('message', '')} (received {record.headers.get('Authorization')})"
                _echo_key(error, reply, record)
                return _json(reply.status, {"error": error, "user_id": "user_standin"}, reply.headers)
            usage = reply.usage or self._usage(body, reply, served)
            if not stream:
                if reply.hang_after is not None:
                    await asyncio.Future()  # never answers; cancelled when the client gives up
                return self._complete(gen_id, served, reply, usage, requested)
            return await self._stream(request, record, gen_id, served, reply, usage, requested)
        except asyncio.CancelledError:
            self._disconnect(record)
            raise

    def _response_format_error(self, body: Mapping[str, Any]) -> web.Response | None:
        """OpenRouter's checks of ``response_format``: its shape (400), and with ``provider.require_parameters``
        a model none of whose endpoints supports it (404; ``structured_outputs`` for a JSON Schema)."""
        rf = body.get("response_format")
        if rf is None:
            return None
        kind = rf.get("type") if isinstance(rf, dict) else None
        if kind not in ("text", "json_object", "json_schema"):
            message = "Invalid request: response_format.type must be one of text, json_object, json_schema"
            return _json(400, {"error": error_body(400, message)})
        if kind == "json_schema":
            spec = rf.get("json_schema")
            if (
                not isinstance(spec, dict)
                or not isinstance(spec.get("name"), str)
                or not spec["name"]
                or not isinstance(spec.get("schema"), dict)
                or not isinstance(spec.get("strict", False), bool)
            ):
                message = "Invalid request: response_format.json_schema needs a name and a schema object"
                return _json(400, {"error": error_body(400, message)})
        provider = body.get("provider")
        if kind == "text" or not isinstance(provider, dict) or provider.get("require_parameters") is not True:
            return None
        needed = "structured_outputs" if kind == "json_schema" else "response_format"
        entry = next((m for m in self.models if m["id"] == body.get("model")), None)
        if entry is not None and needed not in entry.get("supported_parameters", ()):
            message = "No endpoints found that can handle the requested parameters."
            return _json(404, {"error": error_body(404, message)})
        return None

    def _free_limit(self, model_id: str) -> web.Response | None:
        """OpenRouter's 20 requests/minute on ``:free`` variants, with its own rate-limit headers."""
        if not model_id.endswith(":free"):
            return None
        now = time.time()
        calls = self._free_calls.setdefault(model_id, collections.deque())
        while calls and calls[0] <= now - 60:
            calls.popleft()
        if len(calls) >= self.free_requests_per_minute:
            headers = {
                "X-RateLimit-Limit": str(self.free_requests_per_minute),
                "X-RateLimit-Remaining": "0",
                "X-RateLimit-Reset": str(int((calls[0] + 60) * 1000)),
            }
            error = error_body(429, "Rate limit exceeded: free-models-per-min.")
            return _json(429, {"error": error}, headers)
        calls.append(now)
        return None

    def _usage(self, body: Mapping[str, Any], reply: Reply, served: str) -> Usage:
        prompt_chars = sum(len(str(m.get("content", ""))) for m in body["messages"] if isinstance(m, dict))
        prompt = math.ceil(prompt_chars / 3) + 3 * len(body["messages"])
        reasoning = len(reply.reasoning)
        completion = len(reply.content) + reasoning
        return Usage(prompt, completion, self.price(served, prompt, completion), reasoning_tokens=reasoning)

    def _remember(self, gen_id: str, served: str, reply: Reply, usage: Usage, streamed: bool, cancelled: bool) -> None:
        self.generations[gen_id] = {
            "id": gen_id,
            "model": served,
            "total_cost": usage.cost or 0.0,
            "tokens_prompt": usage.prompt_tokens,
            "tokens_completion": usage.completion_tokens,
            "native_tokens_prompt": usage.prompt_tokens,
            "native_tokens_completion": usage.completion_tokens,
            "native_tokens_reasoning": usage.reasoning_tokens,
            "native_tokens_cached": usage.cached_tokens,
            "latency": 5,
            "generation_time": 10,
            "streamed": streamed,
            "cancelled": cancelled,
            "finish_reason": reply.finish_reason,
            "provider_name": reply.provider,
        }

    def _complete(self, gen_id: str, served: str, reply: Reply, usage: Usage, requested: str) -> web.Response:
        message: dict[str, Any] = {"role": "assistant", "content": "".join(reply.content)}
        if reply.reasoning:
            message["reasoning"] = "".join(reply.reasoning)
            if reply.reasoning_details:
                message["reasoning_details"] = [
                    {"type": "reasoning.text", "text": message["reasoning"], "format": "unknown", "index": 0}
                ]
        payload: dict[str, Any] = {
            "id": gen_id,
            "provider": reply.provider,
            "model": served,
            "object": "chat.completion",
            "created": int(time.time()),
            "choices": [
                {
                    "index": 0,
                    "logprobs": None,
                    "finish_reason": reply.finish_reason,
                    "native_finish_reason": reply.finish_reason,
                    "message": message,
                }
            ],
        }
        if reply.send_usage:
            payload["usage"] = usage.to_json()
        self._remember(gen_id, served, reply, usage, streamed=False, cancelled=False)
        self.completed += 1
        return _json(200, payload, {"X-Generation-Id": gen_id, **reply.headers})

    async def _stream(
        self,
        request: web.Request,
        record: RecordedRequest,
        gen_id: str,
        served: str,
        reply: Reply,
        usage: Usage,
        requested: str,
    ) -> web.StreamResponse:
        nl = "\r\n" if reply.crlf else "\n"
        response = web.StreamResponse(
            status=200,
            headers={
                "Content-Type": "text/event-stream",
                "Cache-Control": "no-cache",
                "X-Generation-Id": gen_id,
                **reply.headers,
            },
        )
        await response.prepare(request)
        if reply.abort_before_data:
            assert request.transport is not None
            request.transport.abort()
            return response
        created = int(time.time())

        async def send(data: Mapping[str, Any] | str) -> None:
            text = data if isinstance(data, str) else orjson.dumps(data).decode()
            await response.write(f"data: {text}{nl}{nl}".encode())

        async def comment(count: int = 1) -> None:
            for _ in range(count):
                await response.write(f"{KEEPALIVE}{nl}{nl}".encode())

        def chunk(delta: Mapping[str, Any], finish: str | None = None, **extra: Any) -> dict[str, Any]:
            choice: dict[str, Any] = {"index": 0, "delta": dict(delta), "finish_reason": finish, "logprobs": None}
            if finish is not None:
                choice["native_finish_reason"] = finish
            return {
                "id": gen_id,
                "provider": reply.provider,
                "model": served,
                "object": "chat.completion.chunk",
                "created": created,
                "choices": [choice],
                **extra,
            }

        try:
            await comment(reply.keepalives_before)
            if reply.first_token_delay:
                loop = asyncio.get_running_loop()
                until = loop.time() + reply.first_token_delay
                while loop.time() < until:
                    await asyncio.sleep(min(reply.keepalive_interval, max(0.0, until - loop.time())))
                    await comment()
            await send(chunk({"role": "assistant", "content": ""}))
            pieces: list[dict[str, Any]] = [{"reasoning": r} for r in reply.reasoning]
            if reply.reasoning_details:
                for piece in pieces:
                    piece["reasoning_details"] = [
                        {"type": "reasoning.text", "text": piece["reasoning"], "format": "unknown", "index": 0}
                    ]
            pieces += [{"content": c} for c in reply.content]
            for sent, piece in enumerate(pieces):
                if reply.hang_after is not None and sent == reply.hang_after:
                    await self._hang(reply, comment)
                if reply.error_after is not None and sent == reply.error_after:
                    return await self._fail(response, record, gen_id, served, reply, usage, send, chunk)
                if reply.end_after is not None and sent == reply.end_after:
                    await response.write_eof()
                    return response
                await comment(reply.keepalives_between)
                await send(chunk({"role": "assistant", **piece}))
            if reply.hang_after is not None and reply.hang_after >= len(pieces):
                await self._hang(reply, comment)
            if reply.error_after is not None and reply.error_after >= len(pieces):
                return await self._fail(response, record, gen_id, served, reply, usage, send, chunk)
            if reply.send_usage and reply.usage_on_choice:
                await send(chunk({}, reply.finish_reason, usage=usage.to_json()))
            else:
                await send(chunk({}, reply.finish_reason))
                if reply.send_usage:
                    await comment()
                    await send({**chunk({}), "choices": [], "usage": usage.to_json()})
            if reply.send_done:
                await send("[DONE]")
            await response.write_eof()
        except ConnectionResetError:
            self._disconnect(record)
            self._remember(gen_id, served, reply, usage, streamed=True, cancelled=True)
            return response
        except asyncio.CancelledError:
            self._disconnect(record)
            self._remember(gen_id, served, reply, usage, streamed=True, cancelled=True)
            raise
        self._remember(gen_id, served, reply, usage, streamed=True, cancelled=False)
        self.completed += 1
        return response

    async def _hang(self, reply: Reply, comment: Any) -> None:
        if not reply.keepalive_while_hung:
            await asyncio.Future()  # until the client disconnects (the handler is then cancelled)
        while True:
            await asyncio.sleep(reply.keepalive_interval)
            await comment()

    async def _fail(
        self,
        response: web.StreamResponse,
        record: RecordedRequest,
        gen_id: str,
        served: str,
        reply: Reply,
        usage: Usage,
        send: Any,
        chunk: Any,
    ) -> web.StreamResponse:
        if reply.error_usage:
            await send({**chunk({}), "choices": [], "usage": usage.to_json()})
        if reply.bare_error:
            await send({"error": dict(reply.error or {"message": "Provider returned error", "code": 502})})
        else:
            error = dict(
                reply.error
                or error_body(
                    502,
                    "Upstream provider disconnected mid-stream",
                    {"error_type": "provider_error", "provider_code": "ECONNRESET"},
                )
            )
            _echo_key(error, reply, record)
            await send(chunk({"content": ""}, "error", error=error))
        await response.write_eof()  # no [DONE]
        self._remember(gen_id, served, replace(reply, finish_reason="error"), usage, streamed=True, cancelled=False)
        return response


def _stop_and_user_error(body: Mapping[str, Any]) -> web.Response | None:
    """OpenAI's shapes: ``stop`` is a string or a list of at most 4 strings, ``user`` a string."""
    stop = body.get("stop")
    listed = isinstance(stop, list) and len(stop) <= 4 and all(isinstance(s, str) for s in stop)
    if stop is not None and not isinstance(stop, str) and not listed:
        message = "Invalid request: stop must be a string or an array of at most 4 strings"
        return _json(400, {"error": error_body(400, message)})
    if "user" in body and not isinstance(body["user"], str):
        return _json(400, {"error": error_body(400, "Invalid request: user must be a string")})
    return None


def _stopped(reply: Reply, stop: Any) -> Reply:
    """``reply`` with its content cut before the first stop sequence it contains, as a model stops."""
    stops = [stop] if isinstance(stop, str) else list(stop or ())
    text = "".join(reply.content)
    found = [i for i in (text.find(s) for s in stops if s) if i >= 0]
    if not found:
        return reply
    cut, pieces, used = min(found), [], 0
    for piece in reply.content:
        if used >= cut:
            break
        pieces.append(piece[: cut - used])
        used += len(piece)
    return replace(reply, content=tuple(pieces), finish_reason="stop")


def _echo_key(error: dict[str, Any], reply: Reply, record: RecordedRequest) -> None:
    """Quote the received key (transformed by ``reply.echo_key``) in ``error``, as careless vendors do."""
    if reply.echo_key is None:
        return
    echoed = reply.echo_key(record.key)
    error["message"] = f"{error.get('message', '')} (invalid key: {echoed})"
    upstream = orjson.dumps({"error": {"message": f"Incorrect API key provided: {echoed}"}}).decode()
    error["metadata"] = {**dict(error.get("metadata") or {}), "raw": upstream, "provider_name": "Echo"}


def _json(status: int, payload: Any, headers: Mapping[str, str] | None = None) -> web.Response:
    return web.Response(
        status=status, body=orjson.dumps(payload), content_type="application/json", headers=dict(headers or {})
    )


@dataclass
class LiveProviders:
    """A providers server in live mode whose OpenRouter is the stand-in."""

    stub: providers_pb2_grpc.ProviderServiceStub
    channel: grpc.aio.Channel
    server: GrpcServer
    settings: Settings
    port: int


@contextlib.asynccontextmanager
async def live_providers(
    standin: OpenRouterStandIn, data_dir: Path, *, key: str | None = None, **env: str
) -> AsyncIterator[LiveProviders]:
    """Build and start the real providers server (``build(settings, "127.0.0.1:0")``) against ``standin``.

    ``key`` defaults to the stand-in's accepted key; ``env`` adds settings variables (``ORX_CATALOGUE``,
    ``ORX_IDLE_TIMEOUT``...) to :data:`~tests.providers.helpers.ONE_ATTEMPT_NO_BREAKER`.
    """
    settings = Settings.from_env(
        {
            **ONE_ATTEMPT_NO_BREAKER,
            "ORX_DATA_DIR": str(data_dir),
            "ORX_PROVIDER_MODE": "live",
            "OPENROUTER_API_KEY": key if key is not None else (standin.api_key or DEFAULT_KEY),
            "ORX_OPENROUTER_BASE_URL": standin.base_url,
            **env,
        }
    )
    server = await build(settings, "127.0.0.1:0")
    await server.start()
    channel = open_channel(f"127.0.0.1:{server.port}", unary_timeout=30)
    try:
        yield LiveProviders(providers_pb2_grpc.ProviderServiceStub(channel), channel, server, settings, server.port)
    finally:
        await channel.close(None)
        await server.stop(0)
