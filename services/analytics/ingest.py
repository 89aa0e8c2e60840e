"""What each orchestration event means for analytics: protobuf events in, :class:`EventFacts` out.

Each provider call appears as exactly one event:

* ``response_completed`` — a successful author call (answer, refinement, or a shadow runner-up answer);
* ``critique_completed`` — a successful critic call (it also yields the critique's score);
* ``provider_fallback`` — a failed author call (another model takes over);
* ``warning`` with ``model`` and a ``failure_kind`` — a failed critic, refinement or shadow call.

``session_started``, ``model_selected``, ``session_completed`` and ``session_failed`` update the session;
``round_completed`` and warnings that are not about a call are only recorded for idempotency;
``response_delta`` events are skipped entirely (see :func:`facts_from_event`).

Everything stored must fit the stores, which keep integers in 64 bits: event times are nanoseconds since
the epoch (so between :data:`EARLIEST_NS` and :data:`LATEST_NS`, years 1677 to 2262), durations
nanoseconds, costs nano-dollars. Per call, each token count is at most :data:`MAX_CALL_TOKENS` and the cost
at most :data:`MAX_CALL_COST_USD`, far above any real call, so that the counters, which add up the calls of
a tenant, a model and up to 64 days, cannot overflow either. Anything else is ``INVALID_ARGUMENT`` naming
the field, before the store sees it.
"""

from __future__ import annotations

import math
from dataclasses import replace

from google.protobuf.duration_pb2 import Duration
from google.protobuf.message import Message

from orchestratex.errors import InvalidArgument
from orchestratex.v1 import analytics_pb2, common_pb2, orchestrator_pb2
from orchestratex.validation import INT64_MAX, INT64_MIN, check_max_len, check_timestamp
from services.analytics.store.model import (
    STATUS_CANCELLED,
    STATUS_COMPLETED,
    STATUS_FAILED,
    CallFact,
    CritiqueFact,
    EventFacts,
    SessionEnd,
    TokenUsage,
)

MAX_BATCH = 10_000
MAX_ID_CHARS = 256
#: The earliest and latest event times the stores can hold (nanoseconds since the epoch in 64 bits).
EARLIEST_NS = INT64_MIN
LATEST_NS = INT64_MAX
#: Per call: the most tokens of each kind, and the highest cost, accepted.
MAX_CALL_TOKENS = 1_000_000_000
MAX_CALL_COST_USD = 1_000.0


def facts_from_request(request: analytics_pb2.IngestEventsRequest) -> tuple[list[EventFacts], int]:
    """Validate and translate a batch. Returns the facts to store and the number of skipped deltas.

    Any invalid event rejects the whole batch with :class:`InvalidArgument` naming ``events[i]....``,
    so nothing of a malformed batch is stored.
    """
    if len(request.events) > MAX_BATCH:
        raise InvalidArgument("events", f"{len(request.events):,} events; at most {MAX_BATCH:,} per batch")
    facts: list[EventFacts] = []
    for index, event in enumerate(request.events):
        fact = facts_from_event(event, f"events[{index}]")
        if fact is not None:
            facts.append(fact)
    return facts, len(request.events) - len(facts)


def facts_from_event(event: orchestrator_pb2.OrchestrationEvent, path: str = "event") -> EventFacts | None:
    """Translate one event; None for ``response_delta`` (not a call, and its text is never stored).

    Raises :class:`InvalidArgument` naming the field (prefixed by ``path``) when the event is malformed.
    """
    session_id = _required_id(event.session_id, f"{path}.session_id")
    if event.sequence < 1:
        raise InvalidArgument(f"{path}.sequence", f"must be >= 1, got {event.sequence}")
    if not event.HasField("time"):
        raise InvalidArgument(f"{path}.time", "is required")
    kind = event.WhichOneof("kind")
    if kind is None:
        raise InvalidArgument(f"{path}.kind", "no event kind is set")
    if kind == "response_delta":
        return None
    time_ns = check_timestamp(event.time, f"{path}.time", earliest_ns=EARLIEST_NS, latest_ns=LATEST_NS)
    head = EventFacts(session_id, event.sequence, time_ns, kind)
    where = f"{path}.{kind}"
    if kind == "session_started":
        return replace(head, started=True)
    if kind == "model_selected":
        selected = event.model_selected
        primary = check_max_len(selected.primary_model, f"{where}.primary_model", MAX_ID_CHARS)
        return replace(head, primary_model=primary, primary_domain=known_domain(selected.analysis.primary_domain))
    if kind == "response_completed":
        return replace(head, call=_response_call(event.response_completed, where))
    if kind == "critique_completed":
        call, critique = _critique(event.critique_completed, where)
        return replace(head, call=call, critique=critique)
    if kind == "provider_fallback":
        return replace(head, call=_fallback_call(event.provider_fallback, where))
    if kind == "warning":
        return replace(head, call=_warning_call(event.warning, where))
    if kind == "session_completed":
        done = event.session_completed
        # An unscored session has no score: None, so it never pulls an average down like a 0 would.
        score = None if done.unscored else _finite(done.final_score, f"{where}.final_score")
        best = check_max_len(done.best_model, f"{where}.best_model", MAX_ID_CHARS)
        return replace(head, end=SessionEnd(STATUS_COMPLETED, score, best))
    if kind == "session_failed":
        cancelled = event.session_failed.status == orchestrator_pb2.SESSION_STATUS_CANCELLED
        return replace(head, end=SessionEnd(STATUS_CANCELLED if cancelled else STATUS_FAILED))
    # round_completed: recorded for idempotency only.
    return head


def _response_call(done: orchestrator_pb2.ResponseCompleted, where: str) -> CallFact:
    model = _required_id(done.model or done.served_model, f"{where}.model")
    return CallFact(
        model=model,
        purpose=common_pb2.CALL_PURPOSE_REFINE if done.round > 1 else common_pb2.CALL_PURPOSE_ANSWER,
        shadow=done.shadow,
        round=done.round,
        success=True,
        failure_kind=common_pb2.FAILURE_KIND_UNSPECIFIED,
        usage=usage_from_proto(done.usage, f"{where}.usage"),
        latency_ns=_duration(done.latency, f"{where}.latency"),
        ttft_ns=_optional_duration(done, "time_to_first_token", where),
    )


def _critique(done: orchestrator_pb2.CritiqueCompleted, where: str) -> tuple[CallFact, CritiqueFact]:
    critic = _required_id(done.critic_model, f"{where}.critic_model")
    author = _required_id(done.author_model, f"{where}.author_model")
    score = _finite(done.score, f"{where}.score")
    if not 0.0 <= score <= 10.0:
        raise InvalidArgument(f"{where}.score", f"must be in [0, 10], got {score:g}")
    call = CallFact(
        model=critic,
        purpose=common_pb2.CALL_PURPOSE_CRITIQUE,
        shadow=done.shadow,
        round=done.round,
        success=True,
        failure_kind=common_pb2.FAILURE_KIND_UNSPECIFIED,
        usage=usage_from_proto(done.usage, f"{where}.usage"),
        latency_ns=_duration(done.latency, f"{where}.latency"),
        ttft_ns=_optional_duration(done, "time_to_first_token", where),
    )
    return call, CritiqueFact(done.round, critic, author, score, done.shadow)


def _fallback_call(fallback: orchestrator_pb2.ProviderFallback, where: str) -> CallFact:
    ttft = _optional_duration(fallback, "time_to_first_token", where)
    return CallFact(
        model=_required_id(fallback.failed_model, f"{where}.failed_model"),
        purpose=common_pb2.CALL_PURPOSE_REFINE if fallback.round > 1 else common_pb2.CALL_PURPOSE_ANSWER,
        shadow=False,
        round=fallback.round,
        success=False,
        failure_kind=fallback.failure_kind,
        usage=usage_from_proto(fallback.usage, f"{where}.usage"),
        latency_ns=_duration(fallback.latency, f"{where}.latency"),
        # A failed call reports a zero time to first token when no token arrived.
        ttft_ns=ttft or None,
    )


def _warning_call(warning: orchestrator_pb2.SessionWarning, where: str) -> CallFact | None:
    """A warning is a failed call only when it names the model and the failure kind."""
    if not warning.model or warning.failure_kind == common_pb2.FAILURE_KIND_UNSPECIFIED:
        return None
    return CallFact(
        model=_required_id(warning.model, f"{where}.model"),
        purpose=warning.purpose or common_pb2.CALL_PURPOSE_OTHER,
        shadow=warning.code == orchestrator_pb2.WARNING_CODE_SHADOW_FAILED,
        round=warning.round,
        success=False,
        failure_kind=warning.failure_kind,
        usage=usage_from_proto(warning.usage, f"{where}.usage"),
        latency_ns=_duration(warning.latency, f"{where}.latency"),
        ttft_ns=None,
    )


def known_domain(value: int) -> int:
    """A ``Domain`` value; a number this version does not know (a newer peer's) counts as not known (0)."""
    return value if value in common_pb2.Domain.values() else common_pb2.DOMAIN_UNSPECIFIED


def usage_from_proto(usage: common_pb2.Usage, field: str = "usage") -> TokenUsage:
    """Tokens as given and the cost in integer nano-dollars (rounded), so sums are exact.

    Each count must be in [0, :data:`MAX_CALL_TOKENS`] and the cost in [0, :data:`MAX_CALL_COST_USD`].
    """
    cost = _finite(usage.cost_usd, f"{field}.cost_usd")
    if not 0 <= cost <= MAX_CALL_COST_USD:
        raise InvalidArgument(f"{field}.cost_usd", f"must be in [0, {MAX_CALL_COST_USD:g}] per call, got {cost:g}")
    counts = (
        usage.prompt_tokens,
        usage.completion_tokens,
        usage.reasoning_tokens,
        usage.cached_tokens,
        usage.total_tokens,
    )
    names = ("prompt_tokens", "completion_tokens", "reasoning_tokens", "cached_tokens", "total_tokens")
    for name, value in zip(names, counts, strict=True):
        if not 0 <= value <= MAX_CALL_TOKENS:
            raise InvalidArgument(f"{field}.{name}", f"must be in [0, {MAX_CALL_TOKENS:,}] per call, got {value:,}")
    return TokenUsage(*counts, cost_nanos=round(cost * 1e9))


def usage_to_proto(usage: TokenUsage) -> common_pb2.Usage:
    """The inverse of :func:`usage_from_proto` (cost back in USD).

    Counts saturate at the int64 maximum rather than fail the report (sums of accepted calls never get
    there; see the module docstring).
    """
    return common_pb2.Usage(
        prompt_tokens=min(usage.prompt_tokens, INT64_MAX),
        completion_tokens=min(usage.completion_tokens, INT64_MAX),
        reasoning_tokens=min(usage.reasoning_tokens, INT64_MAX),
        cached_tokens=min(usage.cached_tokens, INT64_MAX),
        total_tokens=min(usage.total_tokens, INT64_MAX),
        cost_usd=usage.cost_usd,
    )


def _required_id(value: str, field: str) -> str:
    if not value or not value.strip():
        raise InvalidArgument(field, "is required and must not be blank")
    if len(value) > MAX_ID_CHARS:
        raise InvalidArgument(field, f"is {len(value):,} characters; the limit is {MAX_ID_CHARS}")
    return value


def _finite(value: float, field: str) -> float:
    if not math.isfinite(value):
        raise InvalidArgument(field, f"must be a finite number, got {value}")
    return value


def _duration(value: Duration, field: str) -> int:
    nanos = value.ToNanoseconds()
    if nanos < 0:
        raise InvalidArgument(field, "must not be negative")
    if nanos > INT64_MAX:
        raise InvalidArgument(field, f"must be at most {INT64_MAX // 1_000_000_000:,} seconds")
    return nanos


def _optional_duration(message: Message, name: str, where: str) -> int | None:
    """The duration field ``name`` of ``message`` in nanoseconds, or None when unset."""
    if not message.HasField(name):
        return None
    value: Duration = getattr(message, name)
    return _duration(value, f"{where}.{name}")
