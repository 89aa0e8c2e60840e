"""The orchestrator's OpenTelemetry spans.

Only the OpenTelemetry API is used here: every span is a no-op until the process installs an SDK
``TracerProvider`` (``orchestratex`` does when ``OTEL_*`` variables configure tracing). The module-level
tracer is OpenTelemetry's idiom: a proxy that starts real spans once a provider is set.

========================  =====================================  ==================================================
Span                      Parent                                 Attributes
========================  =====================================  ==================================================
``orchestrator.session``  the ``Orchestrate`` gRPC server span   ``orx.session_id``, ``orx.max_rounds``,
                          (when the server is instrumented)      ``orx.critic_count``, ``orx.detached``,
                                                                 ``orx.primary_model``, and at the end
                                                                 ``orx.status``, ``orx.stop_reason``,
                                                                 ``orx.rounds``, ``orx.cost_usd``,
                                                                 ``orx.final_score``
``orchestrator.select``   the session                            ``orx.primary_model``, ``orx.critic_models``,
                                                                 ``orx.from_defaults``, ``orx.domain``
``orchestrator.round``    the session                            ``orx.round``, ``orx.aggregate_score``,
                                                                 ``orx.decision``, ``orx.stop_reason``,
                                                                 ``orx.critics_scored``
``orchestrator.answer``   the round (1); a shadow answer's       ``gen_ai.request.model``, ``gen_ai.response.model``,
``orchestrator.refine``   ``orchestrator.shadow`` span           ``gen_ai.usage.input_tokens``,
                          the round (2, 3, ...)                  ``gen_ai.usage.output_tokens``, ``orx.cost_usd``,
                                                                 ``orx.round``, ``orx.shadow``; a failed call's
                                                                 ``orx.failure_kind`` (also ``error.type``) and
                                                                 ``orx.fallback_model`` (who takes over, if any);
                                                                 ``orx.fallback`` on the call of a replacement
``orchestrator.critic``   the round, or an ``orchestrator.       the call attributes, plus ``orx.score``
                          shadow`` span
``orchestrator.shadow``   the session                            ``gen_ai.request.model`` (a runner-up answering
                                                                 round 1 beside the session, then critiqued)
========================  =====================================  ==================================================

The outgoing gRPC calls (selector, providers) are children of these spans once the gRPC client is
instrumented. The session runs in its own task, which starts from the context of the ``Orchestrate``
call, so the session span is a child of the RPC's server span; a detached session (and a session that
records its end after the client has gone) goes on after that RPC ends, so its span may end after its
parent's. That is valid OpenTelemetry: a parent's end does not end its children.

Attributes never carry a prompt, an answer, a critique's text, a tenant or a key: only ids from the
catalogue, numbers and enum names. A span that fails gets status ERROR with the exception's type (never
its message, which may quote a provider's reply); a cancelled one gets ``orx.cancelled`` and no error.

The outbox's ``orchestrator.outbox.deliver`` spans are in :mod:`services.orchestrator.outbox`.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from contextlib import contextmanager

from opentelemetry import trace
from opentelemetry.trace import Span, Status, StatusCode
from opentelemetry.util.types import Attributes

from orchestratex.v1 import common_pb2
from orchestratex.v1 import orchestrator_pb2 as pb
from services.orchestrator.metrics import failure_kind_label, status_label, stop_reason_label

tracer = trace.get_tracer("orchestratex.orchestrator")

SESSION = "orchestrator.session"
SELECT = "orchestrator.select"
ROUND = "orchestrator.round"
ANSWER = "orchestrator.answer"
REFINE = "orchestrator.refine"
CRITIC = "orchestrator.critic"
SHADOW = "orchestrator.shadow"
DELIVER = "orchestrator.outbox.deliver"


def fail(span: Span, exc: BaseException) -> None:
    """Mark ``span`` as ended by ``exc``: cancelled (no error), else ERROR with the exception's type."""
    if isinstance(exc, asyncio.CancelledError):
        span.set_attribute("orx.cancelled", True)
    else:
        span.set_status(Status(StatusCode.ERROR, type(exc).__name__))


@contextmanager
def span(name: str, attributes: Attributes = None) -> Iterator[Span]:
    """A child of the current span, current while the block runs; see :func:`fail` for how it ends on error."""
    with tracer.start_as_current_span(
        name, attributes=attributes, record_exception=False, set_status_on_exception=False
    ) as current:
        try:
            yield current
        except BaseException as exc:
            fail(current, exc)
            raise


def start_session(request: pb.OrchestrateRequest) -> Span:
    """The session's span, started (not current): the session's task makes it current and ends it."""
    return tracer.start_span(
        SESSION,
        attributes={
            "orx.max_rounds": request.max_rounds,
            "orx.critic_count": request.critic_count,
            "orx.detached": request.detached,
        },
    )


def end_session(span: Span, terminal: pb.OrchestrationEvent, rounds: int) -> None:
    """Record how the session ended (from its terminal event) and end its span."""
    if span.is_recording():
        attributes: dict[str, str | int | float] = {"orx.rounds": rounds}
        if terminal.HasField("session_completed"):
            done = terminal.session_completed
            attributes["orx.status"] = status_label(pb.SESSION_STATUS_COMPLETED)
            attributes["orx.stop_reason"] = stop_reason_label(done.stop_reason)
            attributes["orx.cost_usd"] = done.total_cost_usd
            if not done.unscored:
                attributes["orx.final_score"] = done.final_score
        else:
            failed = terminal.session_failed
            status = failed.status or pb.SESSION_STATUS_FAILED
            attributes["orx.status"] = status_label(status)
            attributes["orx.cost_usd"] = failed.total_cost_usd
            if status == pb.SESSION_STATUS_FAILED:
                span.set_status(Status(StatusCode.ERROR, "session failed"))
        span.set_attributes(attributes)
    span.end()


def call_attributes(model: str, round_no: int, *, shadow: bool = False, fallback: bool = False) -> Attributes:
    """The attributes a provider call's span starts with (``fallback``: this author replaces one that failed)."""
    attributes: dict[str, str | int | bool] = {
        "gen_ai.request.model": model,
        "orx.round": round_no,
        "orx.shadow": shadow,
    }
    if fallback:
        attributes["orx.fallback"] = True
    return attributes


def call_done(span: Span, usage: common_pb2.Usage, served_model: str = "") -> None:
    """A provider call finished: what it used and cost."""
    if span.is_recording():
        span.set_attributes(
            {
                "gen_ai.response.model": served_model,
                "gen_ai.usage.input_tokens": usage.prompt_tokens,
                "gen_ai.usage.output_tokens": usage.completion_tokens,
                "orx.cost_usd": usage.cost_usd,
            }
        )


def call_failed(span: Span, kind: common_pb2.FailureKind, usage: common_pb2.Usage) -> None:
    """A provider call failed (or its reply was unusable): its failure kind, and what it cost anyway."""
    if span.is_recording():
        label = failure_kind_label(kind)
        span.set_attributes(
            {
                "orx.failure_kind": label,
                "error.type": label,
                "gen_ai.usage.input_tokens": usage.prompt_tokens,
                "gen_ai.usage.output_tokens": usage.completion_tokens,
                "orx.cost_usd": usage.cost_usd,
            }
        )
        span.set_status(Status(StatusCode.ERROR, label))
