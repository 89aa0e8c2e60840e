"""Prometheus metrics of the providers service, defined once on the default registry.

Module-level metric objects are prometheus_client's idiom: a metric is registered once per process on
``prometheus_client.REGISTRY`` and every part of the service updates it; whatever serves ``/metrics`` (the
shared metrics endpoint, ``ORX_PROVIDERS_METRICS_LISTEN``) exposes them without being told they exist.
They hold counts only — nothing here decides anything — and importing this module reads no environment
and opens nothing.

Labels are bounded: ``model`` is a catalogue id (requests are validated against the catalogue before any
metric is touched), ``purpose`` a :class:`~services.providers.backend.Purpose` value, ``outcome``,
``reason``, ``kind`` and ``result`` small enums listed below. Session ids, prompts, end-user ids, tenants
and keys never become label values.

============================================ ========= ======================= ========================================
name                                         type      labels                  meaning
============================================ ========= ======================= ========================================
``orx_provider_calls_total``                 counter   model, purpose, outcome calls (Generate, StreamGenerate), by end
``orx_provider_attempts_total``              counter   model, outcome          upstream requests (retries included)
``orx_provider_retries_total``               counter   model, reason           failed attempts retried, by what failed
``orx_provider_tokens_total``                counter   model, kind             tokens billed by the calls that ended
``orx_provider_cost_usd_total``              counter   model                   what those tokens cost, in US dollars
``orx_provider_time_to_first_token_seconds`` histogram model                   call start (queue, retries) to 1st delta
``orx_provider_call_duration_seconds``       histogram model, result           call start to call end
``orx_provider_breaker_state``               gauge     model                   0 closed, 1 half-open, 2 open circuit
``orx_provider_breaker_trips_total``         counter   model                   times the circuit opened
``orx_provider_limiter_queue_length``        gauge     model                   calls waiting for a rate-limiter slot
``orx_provider_limiter_in_flight``           gauge     model                   upstream requests holding a slot
``orx_provider_limiter_wait_seconds``        histogram model                   wait for a slot, per attempt (0: free)
``orx_provider_rejections_total``            counter   model, reason           calls refused here, with no request sent
``orx_provider_peers``                       gauge     (none)                  providers pods sharing the limits (1
                                                                               without ``ORX_PROVIDER_PEERS``)
============================================ ========= ======================= ========================================

Label values:

* ``outcome`` of calls: ``success``; ``cancelled`` (the caller left); the failure kind the caller is told
  (a ``FailureKind`` value such as ``rate_limited``, ``upstream_error``, ``timeout``, ``mid_stream_error``,
  ``auth``, or ``circuit_open``); ``internal`` (a bug). Of attempts: ``success``, ``cancelled`` or the
  ``FailureKind`` value the backend raised.
* ``reason`` of retries: the ``FailureKind`` value of the failure retried. Of rejections: ``circuit_open``,
  ``circuit_trial_in_flight`` (half-open, its one trial call is running), ``queue_full``, ``queue_timeout``
  (no slot within ``ORX_PROVIDER_QUEUE_WAIT``), ``deadline`` (no slot before the caller's deadline), or
  ``held_`` + the ``FailureKind`` value of a vendor hold (``held_rate_limited``, ``held_upstream_error``,
  ``held_auth``...).
* ``kind`` of tokens: ``prompt``, ``completion``, ``reasoning`` (part of completion), ``cached`` (part of prompt).
* ``result`` of call durations: ``success``, ``failure``, ``cancelled``.

The gauges are read from the breaker and the limiter when scraped (``set_function``): exact whatever path
a call took, free on the call path, and right for the breaker, whose open circuit turns half-open by the
clock alone with no call to notice. Each shows the model's latest breaker and limiter (one of each per model
and process, outside tests).

Tokens and cost are counted once per call, when it ends, from the usage the caller is told (a failed
call's usage covers its billed attempts; a call the caller left is counted with the estimate that is
logged for cost reconciliation). The service does no model fallback of its own (the orchestrator picks
another model), so there is no fallback metric here.

Hot path: children are bound once and cached (:func:`for_model`, :func:`calls`, :func:`attempts`,
:func:`retries`; each limiter and breaker binds its own), so a call costs a handful of increments and two
histogram observations, no label lookups; the gauges cost nothing until scraped. The caches are bounded
like the labels.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

from prometheus_client import Counter, Gauge, Histogram

TOKEN_KINDS = ("prompt", "completion", "reasoning", "cached")
"""Values of ``kind`` in ``orx_provider_tokens_total``."""

RESULTS = ("success", "failure", "cancelled")
"""Values of ``result`` in ``orx_provider_call_duration_seconds``."""

BREAKER_CLOSED, BREAKER_HALF_OPEN, BREAKER_OPEN = 0, 1, 2
"""Values of ``orx_provider_breaker_state``."""

_SECONDS_TO_FIRST_TOKEN = (0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 4.0, 8.0, 15.0, 30.0, 60.0)
_CALL_SECONDS = (0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 20.0, 40.0, 80.0, 160.0, 300.0)
_WAIT_SECONDS = (0.005, 0.01, 0.05, 0.1, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)

CALLS = Counter(
    "orx_provider_calls",
    "Provider calls (Generate and StreamGenerate) by how they ended.",
    ("model", "purpose", "outcome"),
)
ATTEMPTS = Counter(
    "orx_provider_attempts",
    "Upstream requests made for provider calls, by how they ended.",
    ("model", "outcome"),
)
RETRIES = Counter(
    "orx_provider_retries",
    "Failed attempts that were retried, by the failure kind retried.",
    ("model", "reason"),
)
TOKENS = Counter(
    "orx_provider_tokens",
    "Tokens billed by provider calls (reasoning is part of completion, cached part of prompt).",
    ("model", "kind"),
)
COST = Counter(
    "orx_provider_cost_usd",
    "Cost of provider calls in US dollars (vendor-reported, else from catalogue prices).",
    ("model",),
)
TIME_TO_FIRST_TOKEN = Histogram(
    "orx_provider_time_to_first_token_seconds",
    "Time from the start of a provider call (queueing and retries included) to its first delta.",
    ("model",),
    buckets=_SECONDS_TO_FIRST_TOKEN,
)
CALL_DURATION = Histogram(
    "orx_provider_call_duration_seconds",
    "Time from the start of a provider call to its end, by result.",
    ("model", "result"),
    buckets=_CALL_SECONDS,
)
BREAKER_STATE = Gauge(
    "orx_provider_breaker_state",
    "Circuit breaker state per model: 0 closed, 1 half-open, 2 open.",
    ("model",),
)
BREAKER_TRIPS = Counter(
    "orx_provider_breaker_trips",
    "Times a model's circuit breaker opened.",
    ("model",),
)
LIMITER_QUEUE_LENGTH = Gauge(
    "orx_provider_limiter_queue_length",
    "Calls waiting for a slot of the model's client-side rate limiter.",
    ("model",),
)
LIMITER_IN_FLIGHT = Gauge(
    "orx_provider_limiter_in_flight",
    "Upstream requests holding a slot of the model's client-side rate limiter.",
    ("model",),
)
LIMITER_WAIT = Histogram(
    "orx_provider_limiter_wait_seconds",
    "Time an attempt waited for a rate-limiter slot (0 when one was free).",
    ("model",),
    buckets=_WAIT_SECONDS,
)
REJECTIONS = Counter(
    "orx_provider_rejections",
    "Calls refused without an upstream request (open circuit, client-side rate limit, vendor hold), by reason.",
    ("model", "reason"),
)
PEERS = Gauge(
    "orx_provider_peers",
    "Providers pods counted at ORX_PROVIDER_PEERS, which share the per-model limits (1 when it is unset).",
)
PEERS.set(1)  # alone until a count says otherwise (services.providers.peers)


@dataclass(frozen=True)
class ModelMetrics:
    """The children of the per-call metrics for one model, bound once."""

    prompt_tokens: Counter
    completion_tokens: Counter
    reasoning_tokens: Counter
    cached_tokens: Counter
    cost: Counter
    time_to_first_token: Histogram
    duration_success: Histogram
    duration_failure: Histogram
    duration_cancelled: Histogram


@functools.cache
def for_model(model_id: str) -> ModelMetrics:
    """The bound children of ``model_id`` (a catalogue id; the cache is bounded by the catalogue)."""
    return ModelMetrics(
        prompt_tokens=TOKENS.labels(model_id, "prompt"),
        completion_tokens=TOKENS.labels(model_id, "completion"),
        reasoning_tokens=TOKENS.labels(model_id, "reasoning"),
        cached_tokens=TOKENS.labels(model_id, "cached"),
        cost=COST.labels(model_id),
        time_to_first_token=TIME_TO_FIRST_TOKEN.labels(model_id),
        duration_success=CALL_DURATION.labels(model_id, "success"),
        duration_failure=CALL_DURATION.labels(model_id, "failure"),
        duration_cancelled=CALL_DURATION.labels(model_id, "cancelled"),
    )


@functools.cache
def calls(model_id: str, purpose: str, outcome: str) -> Counter:
    """The bound ``orx_provider_calls_total`` child."""
    return CALLS.labels(model_id, purpose, outcome)


@functools.cache
def attempts(model_id: str, outcome: str) -> Counter:
    """The bound ``orx_provider_attempts_total`` child."""
    return ATTEMPTS.labels(model_id, outcome)


@functools.cache
def retries(model_id: str, reason: str) -> Counter:
    """The bound ``orx_provider_retries_total`` child."""
    return RETRIES.labels(model_id, reason)
