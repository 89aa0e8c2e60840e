"""The backend abstraction: what every model source (the simulator, OpenRouter) implements.

A :class:`Backend` turns one validated :class:`GenerationRequest` into an async generator of
:class:`TextDelta` events closed by exactly one :class:`StreamEnd`, or raises :class:`BackendError`.
Backends know nothing about gRPC; the servicer maps these types to protobuf and status codes.

Failure contract for implementers:

* Raise :class:`BackendError` with the right :class:`FailureKind`. Whether the failure happened
  before or after the first token is decided by the caller (it saw the deltas); backends only
  report ``usage`` for what was billed when they know it.
* Closing the async iterator (``aclose``) or cancelling the task that drives it must stop the
  upstream work promptly (close the HTTP stream, stop timers) — that is how caller cancellation
  propagates.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator, Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, Protocol

from orchestratex.usage import estimate_tokens
from services.providers.catalogue import ModelSpec


class Role(StrEnum):
    """Author of a chat message (OpenAI wire names)."""

    SYSTEM = "system"
    USER = "user"
    ASSISTANT = "assistant"


class Purpose(StrEnum):
    """Why a model is called (``CallPurpose``); unspecified is normalised to OTHER."""

    ANSWER = "answer"
    CRITIQUE = "critique"
    REFINE = "refine"
    CLASSIFY = "classify"
    OTHER = "other"
    AGGREGATE = "aggregate"
    """Combining several candidate answers into one (panel judge, mixture of agents)."""


class OutputFormat(StrEnum):
    """Requested output shape (``ResponseFormatType``)."""

    TEXT = "text"
    JSON_OBJECT = "json_object"
    JSON_SCHEMA = "json_schema"


class FinishReason(StrEnum):
    """Why generation stopped."""

    STOP = "stop"
    LENGTH = "length"
    CONTENT_FILTER = "content_filter"
    ERROR = "error"


class FailureKind(StrEnum):
    """Classification of a failed call (mirrors ``FailureKind`` in common.proto)."""

    RATE_LIMITED = "rate_limited"
    UPSTREAM_ERROR = "upstream_error"
    TIMEOUT = "timeout"
    MID_STREAM_ERROR = "mid_stream_error"
    INVALID_OUTPUT = "invalid_output"
    INVALID_REQUEST = "invalid_request"
    REFUSED = "refused"
    """Moderation or a guardrail (403)."""
    AUTH = "auth"
    """The provider rejected our API key (401): every model of that provider fails the same way."""
    CREDITS = "credits"
    """The provider account cannot pay for the call (402)."""


@dataclass(frozen=True)
class Message:
    """One chat turn."""

    role: Role
    content: str


@dataclass(frozen=True)
class ResponseFormat:
    """Structured-output request. ``schema`` is the parsed JSON Schema for JSON_SCHEMA."""

    type: OutputFormat = OutputFormat.TEXT
    schema_name: str = ""
    schema: Mapping[str, Any] | None = None
    strict: bool = False


@dataclass(frozen=True)
class GenerationRequest:
    """A validated request for one model. ``max_tokens`` is already resolved (never 0)."""

    model: ModelSpec
    messages: tuple[Message, ...]
    max_tokens: int
    temperature: float | None = None
    top_p: float | None = None
    seed: int | None = None
    stop: tuple[str, ...] = ()
    """Sequences at which generation stops; the text ends before the first one (finish reason STOP)."""
    end_user: str = ""
    """An end-user id for vendors that take one (abuse monitoring); empty when not given."""
    response_format: ResponseFormat = field(default_factory=ResponseFormat)
    purpose: Purpose = Purpose.OTHER
    domain: str = ""
    session_id: str = ""


@dataclass(frozen=True)
class TokenUsage:
    """Tokens used; ``cost_usd`` is None when the backend does not report a price."""

    prompt_tokens: int
    completion_tokens: int
    reasoning_tokens: int = 0
    cached_tokens: int = 0
    cost_usd: float | None = None


@dataclass(frozen=True)
class TextDelta:
    """New completion (and/or reasoning) text."""

    text: str
    reasoning: str = ""


@dataclass(frozen=True)
class StreamEnd:
    """The last event of a successful stream."""

    finish_reason: FinishReason
    served_model: str
    usage: TokenUsage | None = None
    generation_id: str = ""


StreamEvent = TextDelta | StreamEnd


class ErrorCategory(StrEnum):
    """What a failure means for the caller, whatever the transport (the servicer maps it to a status code).

    Backends that talk HTTP set it from the vendor's status; the simulator leaves it unset and the
    servicer falls back on the :class:`FailureKind`.
    """

    BAD_REQUEST = "bad_request"
    """400 / 413 / 422: the request can never succeed as sent (context length, bad parameters)."""
    UNAUTHENTICATED = "unauthenticated"
    """401: the provider key is missing, invalid or disabled (:attr:`FailureKind.AUTH`)."""
    INSUFFICIENT_CREDITS = "insufficient_credits"
    """402: the account cannot pay for the request, or for its ``max_tokens`` (:attr:`FailureKind.CREDITS`)."""
    FORBIDDEN = "forbidden"
    """403: a moderation flag or guardrail refused the input."""
    NOT_FOUND = "not_found"
    """404, or an unknown model id upstream."""
    RATE_LIMITED = "rate_limited"
    """429: retry after ``retry_after``."""
    UNAVAILABLE = "unavailable"
    """5xx, connection errors, invalid or empty replies: retrying later may work."""
    TIMEOUT = "timeout"
    """408 or one of our own timeouts (connect, first token, idle, total)."""


_NOT_RETRYABLE_CATEGORIES = frozenset(
    {
        ErrorCategory.BAD_REQUEST,
        ErrorCategory.UNAUTHENTICATED,
        ErrorCategory.INSUFFICIENT_CREDITS,
        ErrorCategory.FORBIDDEN,
        ErrorCategory.NOT_FOUND,
    }
)
_NOT_RETRYABLE_KINDS = frozenset(
    {FailureKind.INVALID_REQUEST, FailureKind.REFUSED, FailureKind.AUTH, FailureKind.CREDITS}
)


class BackendError(Exception):
    """A failed call. ``message`` is safe to show to clients (no vendor internals, no secrets).

    Optional details, for callers that need more than the :class:`FailureKind`:

    * ``http_status`` — the vendor's HTTP status, or the ``error.code`` of an error delivered inside
      a 200 reply or a stream; None when no HTTP status applies (connection error, our own timeout).
    * ``category`` — what the failure means (see :class:`ErrorCategory`); None for the simulator.
    * ``field`` — for ``BAD_REQUEST``, the request field to blame (``messages``, ``max_tokens``, ...),
      relative to ``GenerateRequest``; empty when the vendor did not say.
    * ``retryable`` — whether the same request may succeed later: True for 408, 429, 5xx, connection
      errors, timeouts and invalid or empty replies; False for 400/401/402/403/404/413/422.
      Derived from ``category`` (or ``kind``) unless given.
    """

    def __init__(
        self,
        kind: FailureKind,
        message: str,
        *,
        retry_after: float | None = None,
        usage: TokenUsage | None = None,
        http_status: int | None = None,
        category: ErrorCategory | None = None,
        field: str = "",
        retryable: bool | None = None,
    ) -> None:
        super().__init__(message)
        self.kind = kind
        self.message = message
        self.retry_after = retry_after
        self.usage = usage
        self.http_status = http_status
        self.category = category
        self.field = field
        if retryable is None:
            if category is not None:
                retryable = category not in _NOT_RETRYABLE_CATEGORIES
            else:
                retryable = kind not in _NOT_RETRYABLE_KINDS
        self.retryable = retryable


@dataclass(frozen=True)
class Timing:
    """Typical latency profile of a model as callers will experience it."""

    ttft_seconds: float
    tokens_per_second: float


class Backend(Protocol):
    """A source of completions. Implemented by ``Simulator`` and ``OpenRouterBackend``."""

    @property
    def name(self) -> str:
        """Provider label shown in ``ModelInfo.provider`` (e.g. ``simulated``, ``openrouter``)."""
        ...

    @property
    def simulated(self) -> bool:
        """True when answers are simulated."""
        ...

    def stream(self, request: GenerationRequest) -> AsyncGenerator[StreamEvent, None]:
        """Deltas then one :class:`StreamEnd`; raises :class:`BackendError` on failure."""
        ...

    def timing(self, model: ModelSpec) -> Timing:
        """Typical time to first token and speed for ``model``."""
        ...

    async def aclose(self) -> None:
        """Release resources (HTTP sessions, ...)."""
        ...


def estimate_prompt_tokens(contents: Sequence[str]) -> int:
    """Prompt tokens of a conversation: ``ceil(chars / 4) + 4`` per message (role framing)."""
    return sum(estimate_tokens(c) + 4 for c in contents)
