"""The orchestrator's Prometheus metrics, defined once.

Module-level metric objects on the default ``prometheus_client.REGISTRY`` are prometheus_client's idiom
(the registry is the process's; a metric registered twice is an error), so they live here and the code
updates them exactly where the counted thing happens. They are exposed by the process's metrics
endpoint (``ORX_ORCHESTRATOR_METRICS_LISTEN``, set up in ``orchestratex``); nothing here serves them.

Labels are bounded: enum names lowercased (without their prefix), gRPC status codes lowercased. Never
a session id, thread id, tenant, prompt or key.

==================================================  =========  ===========  ==========================================
Name                                                Type       Labels       Meaning
==================================================  =========  ===========  ==========================================
``orx_orchestrator_sessions_started_total``         counter                 Sessions started (record written, loop
                                                                            launched).
``orx_orchestrator_sessions_total``                 counter    status,      Sessions ended (terminal event durable),
                                                               stop_reason  by status (``completed``, ``failed``,
                                                                            ``cancelled``) and the stop reason of a
                                                                            completed one (``threshold``, ``plateau``,
                                                                            ``max_rounds``, ``budget``, ``deadline``,
                                                                            ``no_critique``; ``unspecified``: kept the
                                                                            best version after a failed refinement),
                                                                            ``none`` for the others.
``orx_orchestrator_sessions_running``               gauge                   Sessions whose loop runs in this process.
``orx_orchestrator_sessions_interrupted_total``     counter                 Sessions a previous process left running,
                                                                            ended as failed by recovery at start.
``orx_orchestrator_session_rounds``                 histogram  status       Rounds (drafts written) per ended session.
``orx_orchestrator_session_duration_seconds``       histogram  status       From the session's request to its terminal
                                                                            event being durable.
``orx_orchestrator_critic_calls_total``             counter                 Critic calls made (shadow critiques
                                                                            included).
``orx_orchestrator_critic_failures_total``          counter    kind         Critic calls that gave no usable critique,
                                                                            by failure kind (``invalid_output``,
                                                                            ``timeout``, ``upstream_error``,
                                                                            ``cancelled``, ...).
``orx_orchestrator_author_failures_total``          counter    kind         Author calls (answers, refinements) that
                                                                            failed, by failure kind; each hands over
                                                                            to the next candidate, if any.
``orx_orchestrator_event_writer_batch_size``        histogram               Events per event-writer commit.
``orx_orchestrator_event_writer_commit_seconds``    histogram               Time to commit one batch of events.
``orx_orchestrator_event_writer_failures_total``    counter                 Batch writes that failed (each is
                                                                            retried).
``orx_orchestrator_outbox_backlog_events``          gauge                   Stored events after the outbox cursor, not
                                                                            yet delivered to analytics (response
                                                                            deltas included: the cursor passes them);
                                                                            measured after every delivery attempt.
``orx_orchestrator_outbox_delivered_events_total``  counter                 Events analytics accepted from the outbox.
``orx_orchestrator_outbox_rejected_events_total``   counter                 Events analytics rejected as invalid, set
                                                                            aside (logged) so delivery goes on.
``orx_orchestrator_outbox_failures_total``          counter    code         Delivery attempts that failed, by gRPC
                                                                            status code (``unavailable``,
                                                                            ``deadline_exceeded``, ...; ``internal``
                                                                            for a local error).
``orx_orchestrator_leases_held``                    gauge                   Database leases this process holds (its
                                                                            own, and the leader's if it leads).
``orx_orchestrator_lease_takeovers_total``          counter                 Leases taken over from a dead holder on
                                                                            this machine.
``orx_orchestrator_leases_lost_total``              counter                 Leases lost (another holder, or not
                                                                            renewed in time): the process stops.
``orx_orchestrator_change_feed_live``              gauge                   1 while the store's change feed (MongoDB
                                                                            change streams) wakes followers of other
                                                                            replicas' sessions; 0 while they poll.
==================================================  =========  ===========  ==========================================
"""

from __future__ import annotations

from google.protobuf.internal.enum_type_wrapper import EnumTypeWrapper
from prometheus_client import Counter, Gauge, Histogram

from orchestratex.v1 import common_pb2
from orchestratex.v1 import orchestrator_pb2 as pb

#: Label value for a session that ended without a stop reason (it failed or was cancelled).
NO_STOP_REASON = "none"


def _enum_labels(enum: EnumTypeWrapper) -> dict[int, str]:
    """Each value of a proto enum as a label: its name without the enum's prefix, lowercased."""
    prefix = enum.Name(0).removesuffix("UNSPECIFIED")
    return {value: name.removeprefix(prefix).lower() for name, value in enum.items()}


_STATUS = _enum_labels(pb.SessionStatus)
_STOP_REASON = _enum_labels(pb.StopReason)
_FAILURE_KIND = _enum_labels(common_pb2.FailureKind)
_DECISION = _enum_labels(pb.RoundDecision)
_DOMAIN = _enum_labels(common_pb2.Domain)


def status_label(status: int) -> str:
    """``completed``, ``failed``, ``cancelled`` ... (``unknown`` for a value this version does not know)."""
    return _STATUS.get(status, "unknown")


def stop_reason_label(reason: int) -> str:
    """``threshold``, ``plateau``, ``max_rounds`` ... (``unknown`` for a value this version does not know)."""
    return _STOP_REASON.get(reason, "unknown")


def failure_kind_label(kind: int) -> str:
    """``timeout``, ``invalid_output``, ``cancelled`` ... (``unknown`` for a value this version does not know)."""
    return _FAILURE_KIND.get(kind, "unknown")


def decision_label(decision: int) -> str:
    """``continue`` or ``stop``."""
    return _DECISION.get(decision, "unknown")


def domain_label(domain: int) -> str:
    """``factual``, ``coding`` ... (``unknown`` for a value this version does not know)."""
    return _DOMAIN.get(domain, "unknown")


_ROUND_BUCKETS = (0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10)
_SESSION_SECONDS_BUCKETS = (0.1, 0.25, 0.5, 1, 2.5, 5, 10, 20, 30, 60, 120, 300, 600, 1800, 3600)
_BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1000)
_COMMIT_SECONDS_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5)

SESSIONS_STARTED = Counter("orx_orchestrator_sessions_started", "Sessions started (record written, loop launched).")
SESSIONS = Counter(
    "orx_orchestrator_sessions",
    "Sessions ended, by status and stop reason (none unless completed).",
    ("status", "stop_reason"),
)
SESSIONS_RUNNING = Gauge("orx_orchestrator_sessions_running", "Sessions whose loop runs in this process.")
SESSIONS_INTERRUPTED = Counter(
    "orx_orchestrator_sessions_interrupted",
    "Sessions a previous process left running, ended as failed by recovery.",
)
SESSION_ROUNDS = Histogram(
    "orx_orchestrator_session_rounds", "Rounds (drafts written) per ended session.", ("status",), buckets=_ROUND_BUCKETS
)
SESSION_DURATION = Histogram(
    "orx_orchestrator_session_duration_seconds",
    "Time from a session's request to its terminal event being durable.",
    ("status",),
    buckets=_SESSION_SECONDS_BUCKETS,
)
CRITIC_CALLS = Counter("orx_orchestrator_critic_calls", "Critic calls made (shadow critiques included).")
CRITIC_FAILURES = Counter(
    "orx_orchestrator_critic_failures", "Critic calls that gave no usable critique, by failure kind.", ("kind",)
)
AUTHOR_FAILURES = Counter(
    "orx_orchestrator_author_failures", "Author calls (answers, refinements) that failed, by failure kind.", ("kind",)
)
EVENT_BATCH_SIZE = Histogram(
    "orx_orchestrator_event_writer_batch_size", "Events per event-writer commit.", buckets=_BATCH_BUCKETS
)
EVENT_COMMIT_SECONDS = Histogram(
    "orx_orchestrator_event_writer_commit_seconds",
    "Time to commit one batch of session events.",
    buckets=_COMMIT_SECONDS_BUCKETS,
)
EVENT_WRITE_FAILURES = Counter(
    "orx_orchestrator_event_writer_failures", "Event batch writes that failed (they are retried)."
)
OUTBOX_BACKLOG = Gauge(
    "orx_orchestrator_outbox_backlog_events", "Stored events not yet delivered to analytics (after the outbox cursor)."
)
OUTBOX_DELIVERED = Counter("orx_orchestrator_outbox_delivered_events", "Events analytics accepted from the outbox.")
OUTBOX_REJECTED = Counter(
    "orx_orchestrator_outbox_rejected_events", "Events analytics rejected as invalid and the outbox set aside."
)
OUTBOX_FAILURES = Counter(
    "orx_orchestrator_outbox_failures", "Outbox delivery attempts that failed, by gRPC status code.", ("code",)
)
LEASES_HELD = Gauge("orx_orchestrator_leases_held", "Database leases this process holds.")
LEASE_TAKEOVERS = Counter("orx_orchestrator_lease_takeovers", "Leases taken over from a dead holder.")
LEASES_LOST = Counter("orx_orchestrator_leases_lost", "Leases lost to another holder or not renewed in time.")
CHANGE_FEED_LIVE = Gauge(
    "orx_orchestrator_change_feed_live", "1 while the store's change feed wakes followers (0: they poll)."
)


def session_ended(status: int, stop_reason: int | None, rounds: int, seconds: float) -> None:
    """Count an ended session: ``stop_reason`` is None unless it completed."""
    status_name = status_label(status)
    reason = NO_STOP_REASON if stop_reason is None else stop_reason_label(stop_reason)
    SESSIONS.labels(status_name, reason).inc()
    SESSION_ROUNDS.labels(status_name).observe(rounds)
    SESSION_DURATION.labels(status_name).observe(seconds)
