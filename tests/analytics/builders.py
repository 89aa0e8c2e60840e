"""Builders of realistic orchestration event logs for analytics tests."""

from __future__ import annotations

import random
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field

from google.protobuf.duration_pb2 import Duration
from google.protobuf.timestamp_pb2 import Timestamp

from orchestratex.v1 import common_pb2, selector_pb2
from orchestratex.v1 import orchestrator_pb2 as pb

SECOND = 1_000_000_000
HOUR = 3600 * SECOND
DAY = 24 * HOUR


def now_ns() -> int:
    return time.time_ns()


def day_start(ns: int) -> int:
    """Midnight UTC of the day containing ``ns``."""
    return ns - ns % DAY


def ts(ns: int) -> Timestamp:
    value = Timestamp()
    value.FromNanoseconds(ns)
    return value


def dur(seconds: float) -> Duration:
    value = Duration()
    value.FromNanoseconds(round(seconds * SECOND))
    return value


def usage(cost: float, prompt: int = 100, completion: int = 50) -> common_pb2.Usage:
    return common_pb2.Usage(
        prompt_tokens=prompt,
        completion_tokens=completion,
        total_tokens=prompt + completion,
        cost_usd=cost,
    )


def new_id(prefix: str = "s") -> str:
    return f"{prefix}-{uuid.uuid4().hex}"


@dataclass
class FakeSession:
    """One session's event log: sequences from 1, events one second apart from ``start_ns``."""

    start_ns: int
    session_id: str = field(default_factory=new_id)
    events: list[pb.OrchestrationEvent] = field(default_factory=list)
    call_costs: list[float] = field(default_factory=list)

    def add(self, **kind: object) -> pb.OrchestrationEvent:
        sequence = len(self.events) + 1
        event = pb.OrchestrationEvent(
            session_id=self.session_id,
            sequence=sequence,
            time=ts(self.start_ns + (sequence - 1) * SECOND),
            **kind,  # type: ignore[arg-type]
        )
        self.events.append(event)
        return event

    def started(self) -> FakeSession:
        self.add(session_started=pb.SessionStarted(request=pb.OrchestrateRequest(prompt="hello")))
        return self

    def selected(
        self, primary: str, domain: int = common_pb2.DOMAIN_CODING, critics: Sequence[str] = ()
    ) -> FakeSession:
        self.add(
            model_selected=pb.ModelSelected(
                primary_model=primary,
                critic_models=list(critics),
                analysis=selector_pb2.PromptAnalysis(primary_domain=domain),  # type: ignore[arg-type]
            )
        )
        return self

    def delta(self, model: str, text: str = "partial text") -> FakeSession:
        self.add(response_delta=pb.ResponseDelta(round=1, model=model, text=text))
        return self

    def response(
        self,
        model: str,
        cost: float,
        *,
        round_no: int = 1,
        latency: float = 2.0,
        ttft: float | None = 0.3,
        shadow: bool = False,
    ) -> FakeSession:
        done = pb.ResponseCompleted(
            round=round_no, model=model, served_model=model, text="answer", usage=usage(cost), shadow=shadow
        )
        done.latency.CopyFrom(dur(latency))
        if ttft is not None:
            done.time_to_first_token.CopyFrom(dur(ttft))
        self.call_costs.append(cost)
        self.add(response_completed=done)
        return self

    def critique(
        self,
        critic: str,
        author: str,
        score: float,
        cost: float,
        *,
        round_no: int = 1,
        shadow: bool = False,
        latency: float = 1.0,
        ttft: float = 0.2,
    ) -> FakeSession:
        self.call_costs.append(cost)
        self.add(
            critique_completed=pb.CritiqueCompleted(
                round=round_no,
                critic_model=critic,
                author_model=author,
                score=score,
                rationale="because",
                usage=usage(cost),
                latency=dur(latency),
                time_to_first_token=dur(ttft),
                shadow=shadow,
            )
        )
        return self

    def round_done(self, round_no: int = 1, score: float = 7.5) -> FakeSession:
        self.add(round_completed=pb.RoundCompleted(round=round_no, aggregate_score=score))
        return self

    def fallback(
        self, failed: str, replacement: str, kind: int, cost: float, *, round_no: int = 1, latency: float = 5.0
    ) -> FakeSession:
        self.call_costs.append(cost)
        self.add(
            provider_fallback=pb.ProviderFallback(
                round=round_no,
                failed_model=failed,
                replacement_model=replacement,
                failure_kind=kind,  # type: ignore[arg-type]
                reason="failed",
                usage=usage(cost),
                latency=dur(latency),
                time_to_first_token=dur(0),
            )
        )
        return self

    def failed_call(
        self,
        model: str,
        kind: int,
        cost: float,
        *,
        code: int = pb.WARNING_CODE_CRITIC_FAILED,
        purpose: int = common_pb2.CALL_PURPOSE_CRITIQUE,
        round_no: int = 1,
        latency: float = 1.0,
    ) -> FakeSession:
        self.call_costs.append(cost)
        self.add(
            warning=pb.SessionWarning(
                code=code,  # type: ignore[arg-type]
                message="call failed",
                round=round_no,
                model=model,
                failure_kind=kind,  # type: ignore[arg-type]
                usage=usage(cost),
                latency=dur(latency),
                purpose=purpose,  # type: ignore[arg-type]
            )
        )
        return self

    def notice(self) -> FakeSession:
        """A warning that is not about a call."""
        self.add(warning=pb.SessionWarning(code=pb.WARNING_CODE_SELECTOR_UNAVAILABLE, message="defaults used"))
        return self

    def completed(self, score: float = 8.0, best_model: str = "") -> FakeSession:
        self.add(
            session_completed=pb.SessionCompleted(
                final_text="final", final_score=score, best_model=best_model, total_cost_usd=sum(self.call_costs)
            )
        )
        return self

    def failed(self, status: int = pb.SESSION_STATUS_FAILED) -> FakeSession:
        self.add(session_failed=pb.SessionFailed(reason="gave up", status=status))  # type: ignore[arg-type]
        return self


def realistic(start_ns: int, primary: str = "m/a", domain: int = common_pb2.DOMAIN_CODING) -> FakeSession:
    """started, selected, answer, 2 critiques, round end, fallback, refinement, a failed critic, the end.

    Models: ``primary`` answers round 1 (2.0 s, TTFT 0.3 s), critics m/b (7) and m/c (8); in round 2
    ``primary`` times out and m/d takes over, m/c fails (UPSTREAM_ERROR), m/b scores m/d 9.
    """
    return (
        FakeSession(start_ns)
        .started()
        .selected(primary, domain, ["m/b", "m/c"])
        .delta(primary)
        .response(primary, 0.0123456789, latency=2.0, ttft=0.3)
        .critique("m/b", primary, 7.0, 0.000311)
        .critique("m/c", primary, 8.0, 0.000722, latency=1.5, ttft=0.25)
        .round_done(1, 7.5)
        .fallback(primary, "m/d", common_pb2.FAILURE_KIND_TIMEOUT, 0.0005, round_no=2)
        .response("m/d", 0.0099, round_no=2, latency=3.0, ttft=0.5)
        .failed_call("m/c", common_pb2.FAILURE_KIND_UPSTREAM_ERROR, 0.0001, round_no=2)
        .critique("m/b", "m/d", 9.0, 0.0004, round_no=2)
        .round_done(2, 9.0)
        .completed(9.0, "m/d")
    )


#: The models and domains of :func:`random_session`.
MODELS = ("m/a", "m/b", "m/c", "m/d")
DOMAINS = (common_pb2.DOMAIN_CODING, common_pb2.DOMAIN_MATH, common_pb2.DOMAIN_FACTUAL)


def random_session(rng: random.Random, start: int, session_id: str | None = None) -> FakeSession:
    """A session with random calls, failures, critiques (some shadow) and a random end."""
    primary, runner, *critics = rng.sample(MODELS, 4)
    s = FakeSession(start, session_id=session_id or new_id()).started().selected(primary, rng.choice(DOMAINS), critics)
    s.response(primary, rng.randint(0, 10**7) / 1e9, latency=rng.uniform(0.0005, 700), ttft=rng.choice([None, 0.2]))
    for critic in critics:
        if rng.random() < 0.8:
            s.critique(critic, primary, rng.randint(0, 20) / 2, rng.randint(0, 10**6) / 1e9)
    if rng.random() < 0.5:
        s.response(runner, rng.randint(0, 10**6) / 1e9, shadow=True, latency=rng.uniform(0.1, 30))
        for critic in critics:
            if rng.random() < 0.8:
                s.critique(critic, runner, rng.randint(0, 20) / 2, 0.0001, shadow=True)
    if rng.random() < 0.3:
        kind = rng.choice([common_pb2.FAILURE_KIND_TIMEOUT, common_pb2.FAILURE_KIND_CANCELLED, 42])
        s.failed_call(critics[0], kind, rng.randint(0, 10**5) / 1e9, round_no=2)
    if rng.random() < 0.3:
        s.fallback(primary, runner, common_pb2.FAILURE_KIND_MID_STREAM_ERROR, 0.00123, round_no=2)
    if rng.random() < 0.8:
        s.completed(rng.uniform(0, 10), primary)
    else:
        s.failed(rng.choice([pb.SESSION_STATUS_FAILED, pb.SESSION_STATUS_CANCELLED]))
    return s
