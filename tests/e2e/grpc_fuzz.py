"""Helpers of the gRPC fuzzer (``test_grpc_fuzz.py``): the four real services in this process, and
Hypothesis strategies that build request bodies for any RPC from its protobuf descriptors.

A *case* is the bytes sent as one RPC's request body, with the metadata sent beside it. It is one of:

* a **generated message**: every field drawn from its type (strings from empty to beyond the 8 MiB
  message limit, any unicode; integers at their limits; floats with NaN, infinities and subnormals; enums
  with numbers no version defines; timestamps and durations far outside their valid range; nested
  messages, oneofs, repeated fields), biased by :data:`HINTS` towards values the services accept (known
  model and session ids, small round counts), so that generated requests also get past validation and
  run real sessions;
* a **hand-made seed** (:func:`seed_requests`): realistic valid requests, and a few no generator would
  reach (an ``IngestEvents`` batch over the 10,000-event limit);
* **raw bytes**: random bytes, or a generated message's encoding cut short, extended or with bytes
  flipped. The server must answer ``INVALID_ARGUMENT`` to what does not decode.
"""

from __future__ import annotations

import base64
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
from google.protobuf import text_format
from google.protobuf.descriptor import Descriptor, FieldDescriptor, MethodDescriptor
from google.protobuf.message import Message
from google.protobuf.message_factory import GetMessageClass
from hypothesis import strategies as st

from orchestratex.config import Settings
from orchestratex.grpc_server import GrpcServer
from orchestratex.v1 import (
    analytics_pb2,
    analytics_pb2_grpc,
    common_pb2,
    orchestrator_pb2,
    orchestrator_pb2_grpc,
    providers_pb2,
    providers_pb2_grpc,
    selector_pb2,
)
from orchestratex.validation import INT64_MAX, INT64_MIN, TIMESTAMP_MAX_SECONDS, TIMESTAMP_MIN_SECONDS
from services.analytics import server as analytics_server
from services.orchestrator import server as orchestrator_server
from services.providers import server as providers_server
from services.selector import server as selector_server
from tests.analytics.builders import HOUR, FakeSession, realistic
from tests.gateway.protogen import INT_RANGES

PROTO_MODULES = (selector_pb2, providers_pb2, orchestrator_pb2, analytics_pb2)

# ----------------------------------------------------------------------------------------- the RPCs


def all_methods() -> list[MethodDescriptor]:
    """Every RPC of every service in the contracts, in declaration order."""
    return [
        method
        for module in PROTO_MODULES
        for service in module.DESCRIPTOR.services_by_name.values()
        for method in service.methods
    ]


def method_path(method: MethodDescriptor) -> str:
    """``/orchestratex.v1.Service/Method``."""
    return f"/{method.containing_service.full_name}/{method.name}"


def is_streaming(method: MethodDescriptor) -> bool:
    """True for a server-streaming RPC (none of ours streams its requests)."""
    return bool(method.server_streaming)


# ------------------------------------------------------------------------------- the running services


@dataclass
class Services:
    """The four real services on port-0 servers in this process, and what the fuzzer aims at.

    ``model_ids``, ``session_ids``, ``thread_ids`` and ``page_tokens`` are real values gathered once at
    start-up, so that generated requests can name things that exist (and the cases stay reproducible).
    """

    servers: dict[str, GrpcServer]
    model_ids: list[str] = field(default_factory=list)
    session_ids: list[str] = field(default_factory=list)
    thread_ids: list[str] = field(default_factory=list)
    page_tokens: list[str] = field(default_factory=list)

    def address(self, method: MethodDescriptor) -> str:
        """Where the service of ``method`` listens."""
        return f"127.0.0.1:{self.servers[method.containing_service.name].port}"

    async def stop(self) -> None:
        """Stop the callers before their peers."""
        for name in ("OrchestratorService", "SelectorService", "AnalyticsService", "ProviderService"):
            srv = self.servers.pop(name, None)
            if srv is not None:
                await srv.stop(0)


def fuzz_settings(data_dir: Path, **peers: int) -> Settings:
    """Settings for one service: simulated models at the simulator's top speed, data under ``data_dir``."""
    return Settings.from_env(
        {
            "ORX_DATA_DIR": str(data_dir),
            "ORX_PROVIDER_MODE": "simulated",
            # Sessions must be cheap: 1,000 generated Orchestrate cases start hundreds of real sessions.
            "ORX_SIM_SPEED": "1000",
            "ORX_SHADOW_SAMPLE_RATE": "0",
            "ORX_SELECTOR_SEED": "20261212",
            # Deliver to analytics while the fuzzer runs, so ingestion of real events is exercised too.
            "ORX_OUTBOX_INTERVAL": "0.2",
            "ORX_LOG_LEVEL": "WARNING",
            **{f"ORX_{name.upper()}_ADDR": f"127.0.0.1:{port}" for name, port in peers.items()},
        }
    )


async def start_services(data_dir: Path) -> Services:
    """Build and start providers and analytics, then the selector, then the orchestrator (each needs the
    addresses of those before it); then gather real ids to aim at."""
    servers: dict[str, GrpcServer] = {}
    services = Services(servers)
    try:
        servers["ProviderService"] = await providers_server.build(fuzz_settings(data_dir), "127.0.0.1:0")
        await servers["ProviderService"].start()
        servers["AnalyticsService"] = await analytics_server.build(fuzz_settings(data_dir), "127.0.0.1:0")
        await servers["AnalyticsService"].start()
        peers = {"providers": servers["ProviderService"].port, "analytics": servers["AnalyticsService"].port}
        servers["SelectorService"] = await selector_server.build(fuzz_settings(data_dir, **peers), "127.0.0.1:0")
        await servers["SelectorService"].start()
        servers["OrchestratorService"] = await orchestrator_server.build(
            fuzz_settings(data_dir, **peers, selector=servers["SelectorService"].port), "127.0.0.1:0"
        )
        await servers["OrchestratorService"].start()
        await _gather_targets(services)
    except BaseException:
        await services.stop()
        raise
    return services


async def _gather_targets(services: Services) -> None:
    """Model ids from the catalogue; a few finished sessions (some in a thread) and a page token; sessions
    that analytics alone knows, one of them still running there."""
    methods = {m.name: m for m in all_methods()}
    async with grpc.aio.insecure_channel(services.address(methods["ListModels"])) as channel:
        listed = await providers_pb2_grpc.ProviderServiceStub(channel).ListModels(
            providers_pb2.ListModelsRequest(include_unavailable=True), timeout=10
        )
        services.model_ids = sorted(m.id for m in listed.models)
    async with grpc.aio.insecure_channel(services.address(methods["Orchestrate"])) as channel:
        orchestrator = orchestrator_pb2_grpc.OrchestratorServiceStub(channel)
        for i, thread in enumerate(("", "fuzz-thread", "fuzz-thread")):
            request = orchestrator_pb2.OrchestrateRequest(
                prompt=f"Explain recursion to a child ({i})", max_rounds=2, thread_id=thread
            )
            async for reply in orchestrator.Orchestrate(request, timeout=30):
                services.session_ids.append(reply.event.session_id)
        services.session_ids = sorted(set(services.session_ids))
        services.thread_ids = ["fuzz-thread"]
        page = await orchestrator.ListSessions(orchestrator_pb2.ListSessionsRequest(page_size=1), timeout=10)
        services.page_tokens = [page.next_page_token]
    async with grpc.aio.insecure_channel(services.address(methods["IngestEvents"])) as channel:
        now = time.time_ns()
        known = realistic(now - HOUR, primary=services.model_ids[0])
        running = FakeSession(now - HOUR).started().selected(services.model_ids[0])
        batch = analytics_pb2.IngestEventsRequest(events=[*known.events, *running.events])
        await analytics_pb2_grpc.AnalyticsServiceStub(channel).IngestEvents(batch, timeout=10)
        services.session_ids += [known.session_id, running.session_id]


# ------------------------------------------------------------------------------------- strategies


def integers(low: int, high: int) -> st.SearchStrategy[int]:
    """Any integer of the range, its limits and the usual suspects drawn often."""
    edges = sorted({v for v in (0, 1, -1, 2, low, low + 1, high - 1, high) if low <= v <= high})
    return st.one_of(st.sampled_from(edges), st.integers(low, high))


FLOATS = st.one_of(
    st.sampled_from([-math.inf, math.nan]),
    st.sampled_from(
        [0.0, -0.0, 1.0, -1.0, 0.5, 4.0, 10.0, 10.000001, 1e-9, 5e-324, 1e300, -1e300, 1.7976931348623157e308, math.inf]
    ),
    st.floats(),
)
FLOATS32 = st.one_of(st.sampled_from([0.0, -0.0, math.inf, -math.inf, math.nan]), st.floats(width=32))

# Strings no generator would hit often: blanks, control and direction characters, injection-looking
# text, each documented length limit and one past it, and one string beyond the 8 MiB message limit.
SPECIAL_STRINGS: tuple[str, ...] = (
    "",
    " ",
    "\t\n\r",
    "\x00",
    "a\x00b",
    "\x7f\x1b[2J",
    "é",
    "𝕏𝔶𝖟",
    "\u202eevil",
    "\ufeffbom",
    "null",
    "{}",
    "[]",
    "{'a': 1}",
    '{"type": "object", "properties": {"a": {"type": "string"}}, "required": ["a"]}',
    '{"type": "nope"}',
    '{"$ref": "#"}',
    "../../etc/passwd",
    "'; DROP TABLE sessions; --",
    '{"$where": "1"}',
    "%s%n%x",
    "x" * 128,
    "x" * 129,
    "x" * 256,
    "x" * 257,
    "x" * 1001,
    "x" * 5001,
    "é" * 70_000,
    "word " * 40_001,
    "x" * (9 * 1024 * 1024),
)
STRINGS = st.one_of(
    st.text(st.characters(codec="utf-8"), max_size=30),
    st.text(st.characters(codec="utf-8"), max_size=30),
    st.text(st.characters(min_codepoint=32, max_codepoint=126), min_size=1, max_size=12),
    st.sampled_from(SPECIAL_STRINGS),
)
BYTES = st.one_of(st.binary(max_size=40), st.sampled_from([b"", b"\x00", b"\xff" * 300]))


def _seconds(low: int, high: int, near: Sequence[int]) -> st.SearchStrategy[int]:
    return st.one_of(st.sampled_from(sorted(set(near))), integers(INT64_MIN, INT64_MAX), st.integers(low, high))


_NOW_S = 1_780_000_000  # a fixed "now" (2026-05) keeps generated cases reproducible
_NANOS = st.one_of(
    st.sampled_from([0, 1, 999_999_999, 10**9, -1, -(10**9), 2**31 - 1, -(2**31)]), integers(-(2**31), 2**31 - 1)
)
TIMESTAMPS = st.tuples(
    _seconds(
        _NOW_S - 400 * 86_400,
        _NOW_S + 86_400,
        [
            0,
            _NOW_S,
            TIMESTAMP_MIN_SECONDS - 1,
            TIMESTAMP_MIN_SECONDS,
            TIMESTAMP_MAX_SECONDS,
            TIMESTAMP_MAX_SECONDS + 1,
            -9_223_372_037,  # around the earliest and latest times 64-bit nanoseconds hold
            -9_223_372_036,
            9_223_372_036,
            9_223_372_037,
        ],
    ),
    _NANOS,
)
DURATIONS = st.tuples(
    _seconds(-5, 4000, [0, 1, -1, 3600, 3601, 315_576_000_000, 315_576_000_001, -315_576_000_000]), _NANOS
)


@dataclass(frozen=True)
class Hints:
    """Real values to aim at (see :class:`Services`)."""

    model_ids: Sequence[str] = ()
    session_ids: Sequence[str] = ()
    thread_ids: Sequence[str] = ()
    page_tokens: Sequence[str] = ()


PROMPTS = (
    "Write a Python function that merges two sorted lists",
    "What is the capital of Australia?",
    "Prove that the square root of 2 is irrational",
    "Summarise: the quick brown fox jumps over the lazy dog.",
)
JSON_SCHEMAS = (
    '{"type": "object", "properties": {"answer": {"type": "string"}}, "required": ["answer"]}',
    '{"type": "array", "items": {"type": "integer"}}',
    '{"type": 5}',
    "[",
    "",
)


def _enums(module: Any) -> dict[str, st.SearchStrategy[int]]:
    return {
        name: st.sampled_from([*sorted(v.number for v in enum.values), len(enum.values), -1, 2**31 - 1])
        for name, enum in module.DESCRIPTOR.enum_types_by_name.items()
    }


_ENUMS = _enums(common_pb2)
_ENUMS_PROVIDERS = _enums(providers_pb2)


@dataclass(frozen=True)
class FieldHints:
    """Strategies for particular fields, by full name. ``tame``: generate only values the services accept
    (and set every such field), so that generated requests also run real sessions and reach the stores."""

    strategies: dict[str, st.SearchStrategy[Any]]
    tame: bool


def field_hints(hints: Hints, *, tame: bool) -> FieldHints:
    """Strategies for particular fields: values that pass validation when ``tame``, else mostly those,
    sometimes anything of the field's type."""

    def _or(preferred: st.SearchStrategy[Any], anything: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
        return preferred if tame else st.one_of(preferred, preferred, anything)

    models = st.sampled_from(list(hints.model_ids) or ["none"])
    sessions = st.sampled_from(list(hints.session_ids) or ["none"])
    threads = st.sampled_from(list(hints.thread_ids) or ["none"])
    tokens = st.one_of(
        st.sampled_from(list(hints.page_tokens) or ["none"]),
        # Well-formed keyset tokens (``base64("<microseconds>|<session id>")``) around the limits.
        st.builds(
            lambda micros, sid: base64.urlsafe_b64encode(f"{micros}|{sid}".encode()).decode(),
            st.one_of(integers(INT64_MIN, INT64_MAX), st.sampled_from([INT64_MAX + 1, INT64_MIN - 1, 10**30])),
            st.one_of(sessions, STRINGS),
        ),
    )
    i32 = integers(-(2**31), 2**31 - 1)
    i64 = integers(INT64_MIN, INT64_MAX)
    small_duration = st.tuples(st.integers(0, 3), st.integers(1, 999_999_999))
    recent = st.tuples(st.integers(_NOW_S - 40 * 86_400, _NOW_S + 3600), st.integers(0, 999_999_999))
    v1 = "orchestratex.v1."
    out: dict[str, st.SearchStrategy[Any]] = {
        f"{v1}OrchestrateRequest.prompt": _or(st.sampled_from(PROMPTS), STRINGS),
        f"{v1}OrchestrateRequest.max_rounds": _or(st.integers(1, 2), i32),
        f"{v1}OrchestrateRequest.time_limit": _or(small_duration, DURATIONS),
        f"{v1}OrchestrateRequest.thread_id": _or(threads, STRINGS),
        f"{v1}OrchestrateRequest.quality_threshold": _or(st.floats(0, 10), FLOATS),
        f"{v1}OrchestrateRequest.budget_usd": _or(st.floats(0.001, 10), FLOATS),
        f"{v1}Preferences.pinned_model": _or(models, STRINGS),
        f"{v1}Preferences.allowed_models": _or(models, STRINGS),
        f"{v1}Preferences.excluded_models": _or(models, STRINGS),
        f"{v1}GenerateRequest.model": _or(models, STRINGS),
        f"{v1}GenerateRequest.max_tokens": _or(st.integers(1, 64), i32),
        f"{v1}ChatMessage.content": _or(st.sampled_from(PROMPTS), STRINGS),
        f"{v1}ResponseFormat.json_schema": _or(st.sampled_from(JSON_SCHEMAS), STRINGS),
        f"{v1}CallContext.session_id": _or(sessions, STRINGS),
        f"{v1}AnalyzePromptRequest.prompt": _or(st.sampled_from(PROMPTS), STRINGS),
        f"{v1}SelectModelsRequest.prompt": _or(st.sampled_from(PROMPTS), STRINGS),
        f"{v1}GetSessionRequest.session_id": _or(sessions, STRINGS),
        f"{v1}WatchSessionRequest.session_id": _or(sessions, STRINGS),
        f"{v1}WatchSessionRequest.after_sequence": _or(st.integers(0, 12), i64),
        f"{v1}CancelSessionRequest.session_id": _or(sessions, STRINGS),
        f"{v1}ListSessionsRequest.page_token": _or(tokens, STRINGS),
        f"{v1}ListSessionsRequest.page_size": _or(st.integers(0, 100), i32),
        f"{v1}ListSessionsRequest.thread_id": _or(threads, STRINGS),
        f"{v1}SubmitFeedbackRequest.session_id": _or(sessions, STRINGS),
        f"{v1}SubmitFeedbackRequest.rating": _or(st.integers(1, 5), i32),
        f"{v1}GetModelPerformanceRequest.model": _or(models, STRINGS),
        f"{v1}GetCostReportRequest.session_limit": _or(st.integers(0, 1000), i32),
        f"{v1}OrchestrationEvent.session_id": _or(sessions, STRINGS),
        f"{v1}OrchestrationEvent.sequence": _or(st.integers(1, 40), i64),
        f"{v1}OrchestrationEvent.time": _or(recent, TIMESTAMPS),
        f"{v1}IngestEventsRequest.tenant": _or(st.sampled_from(["", "tenant-a", "tenant-b"]), STRINGS),
        f"{v1}CritiqueCompleted.score": _or(st.floats(0, 10), FLOATS),
        f"{v1}OrchestrateRequest.plateau_epsilon": _or(st.floats(0, 1), FLOATS),
        f"{v1}OrchestrateRequest.patience": _or(st.integers(1, 2), i32),
        f"{v1}OrchestrateRequest.shadow_evaluation": _or(st.just(False), st.booleans()),
        f"{v1}SelectModelsRequest.critic_count": _or(st.integers(0, 3), i32),
        f"{v1}SelectModelsRequest.expected_output_tokens": _or(st.integers(0, 4000), i32),
        f"{v1}SelectModelsRequest.context_tokens": _or(st.integers(0, 10_000), i64),
        f"{v1}ChatMessage.role": _or(st.sampled_from([common_pb2.ROLE_USER, common_pb2.ROLE_SYSTEM]), _ENUMS["Role"]),
        f"{v1}GetModelPerformanceRequest.domain": _or(st.integers(0, 9), _ENUMS["Domain"]),
        f"{v1}TimeRange.start_time": _or(recent, TIMESTAMPS),
        f"{v1}TimeRange.end_time": _or(recent, TIMESTAMPS),
        f"{v1}Usage.cost_usd": _or(st.floats(0, 1), FLOATS),
        f"{v1}GenerateRequest.temperature": _or(st.floats(0, 2), FLOATS),
        f"{v1}GenerateRequest.top_p": _or(st.floats(0.01, 1), FLOATS),
        f"{v1}ResponseFormat.type": _or(st.integers(0, 2), _ENUMS_PROVIDERS["ResponseFormatType"]),
        f"{v1}ResponseFormat.schema_name": _or(st.from_regex(r"[A-Za-z0-9_-]{1,64}", fullmatch=True), STRINGS),
        f"{v1}CallContext.purpose": _or(st.integers(0, 6), _ENUMS["CallPurpose"]),
        f"{v1}CallContext.domain": _or(st.integers(0, 9), _ENUMS["Domain"]),
        f"{v1}OrchestrateRequest.critic_count": _or(st.integers(1, 2), i32),
    }
    for name in ("quality_weight", "cost_weight", "latency_weight", "max_cost_usd"):
        out[f"{v1}Preferences.{name}"] = _or(st.floats(0, 5), FLOATS)
    for name in ("prompt_tokens", "completion_tokens", "reasoning_tokens", "cached_tokens", "total_tokens"):
        out[f"{v1}Usage.{name}"] = _or(st.integers(0, 100_000), i64)
    for name in ("ResponseCompleted.model", "CritiqueCompleted.critic_model", "CritiqueCompleted.author_model"):
        out[v1 + name] = _or(models, STRINGS)
    for name in ("ModelSelected.primary_model", "ProviderFallback.failed_model", "SessionWarning.model"):
        out[v1 + name] = _or(models, STRINGS)
    return FieldHints(out, tame)


def _scalar(fd: Any) -> st.SearchStrategy[Any]:
    kind = fd.type
    if kind in INT_RANGES:
        return integers(*INT_RANGES[kind])
    if kind == FieldDescriptor.TYPE_DOUBLE:
        return FLOATS
    if kind == FieldDescriptor.TYPE_FLOAT:
        return FLOATS32
    if kind == FieldDescriptor.TYPE_BOOL:
        return st.booleans()
    if kind == FieldDescriptor.TYPE_STRING:
        return STRINGS
    if kind == FieldDescriptor.TYPE_BYTES:
        return BYTES
    if kind == FieldDescriptor.TYPE_ENUM:
        numbers = sorted(v.number for v in fd.enum_type.values)
        # Numbers no version defines too (a newer peer's, or garbage): open enums carry them through.
        return st.sampled_from([*numbers, numbers[-1] + 1, -1, 2**31 - 1, -(2**31)])
    raise AssertionError(f"unhandled field type {kind} of {fd.full_name}")


_WELL_KNOWN = {"google.protobuf.Timestamp": TIMESTAMPS, "google.protobuf.Duration": DURATIONS}
MAX_DEPTH = 6


def messages(descriptor: Descriptor, hints: FieldHints) -> st.SearchStrategy[Message]:
    """A strategy for messages of ``descriptor``: a generated subset of the fields set, recursively."""
    cls = GetMessageClass(descriptor)

    @st.composite
    def build(draw: st.DrawFn) -> Message:
        message = cls()
        _fill(draw, message, hints, 0)
        return message

    return build()


def _fill(draw: st.DrawFn, message: Message, hints: FieldHints, depth: int) -> None:
    descriptor: Any = message.DESCRIPTOR
    pair = _WELL_KNOWN.get(descriptor.full_name)
    if pair is not None:
        message.seconds, message.nanos = draw(pair)  # type: ignore[attr-defined]
        return
    for fd in descriptor.fields:
        hint = hints.strategies.get(fd.full_name)
        oneof = fd.containing_oneof
        if oneof is not None and oneof.name != f"_{fd.name}":  # not the synthetic oneof of an `optional`
            if draw(st.integers(0, len(oneof.fields))) != 0:
                continue  # a real oneof: each member set now and then; the last one set wins
        elif not (hints.tame and hint is not None) and draw(st.integers(0, 2)) == 0:
            continue  # leave about a third of the fields unset
        is_message = fd.type == FieldDescriptor.TYPE_MESSAGE
        if fd.is_repeated:
            size = draw(st.integers(1 if hints.tame else 0, 3 if depth < 2 else 1))
            container: Any = getattr(message, fd.name)
            for _ in range(size):
                if is_message:
                    if depth < MAX_DEPTH:
                        _fill_nested(draw, container.add(), hint, hints, depth)
                else:
                    container.append(draw(hint if hint is not None else _scalar(fd)))
        elif is_message:
            if depth < MAX_DEPTH:
                _fill_nested(draw, getattr(message, fd.name), hint, hints, depth)
                getattr(message, fd.name).SetInParent()
        else:
            setattr(message, fd.name, draw(hint if hint is not None else _scalar(fd)))


def _fill_nested(
    draw: st.DrawFn,
    child: Message,
    hint: st.SearchStrategy[Any] | None,
    hints: FieldHints,
    depth: int,
) -> None:
    if hint is not None and child.DESCRIPTOR.full_name in _WELL_KNOWN:
        child.seconds, child.nanos = draw(hint)  # type: ignore[attr-defined]
    else:
        _fill(draw, child, hints, depth + 1)


# ------------------------------------------------------------------------------------------- cases


@dataclass(frozen=True)
class Case:
    """One request: its body and metadata; ``shown`` is how a failure report prints it.

    ``timeout`` is the call's deadline in seconds (sometimes so short that it expires while the server
    works); a stream is cancelled after ``stop_after`` messages (None: read to its end).
    """

    body: bytes
    metadata: tuple[tuple[str, str], ...]
    shown: str
    timeout: float
    stop_after: int | None = None

    def __repr__(self) -> str:
        return f"Case({self.shown}, metadata={self.metadata!r}, timeout={self.timeout}, stop_after={self.stop_after})"


CALL_TIMEOUT = 20.0
# Mostly time enough; now and then so short that the deadline passes while the server works.
TIMEOUTS = st.sampled_from([CALL_TIMEOUT] * 9 + [0.001, 0.01, 0.05])


TENANTS = st.one_of(
    st.none(),
    st.sampled_from(["tenant-a", "tenant-b", "t" * 128, "t" * 500]),
    st.text(st.characters(min_codepoint=33, max_codepoint=126), min_size=1, max_size=20),
)
REQUEST_IDS = st.one_of(st.none(), st.text(st.characters(min_codepoint=33, max_codepoint=126), max_size=200))


def _shown_message(message: Message) -> str:
    text = text_format.MessageToString(message, as_one_line=True, as_utf8=True)
    if len(text) > 2000:
        text = f"{text[:2000]}... ({len(text):,} characters)"
    return f"{message.DESCRIPTOR.name} {{{text}}}"


def _shown_bytes(kind: str, data: bytes) -> str:
    head = data[:600].hex()
    return f"{kind} {len(data):,} bytes: {head}{'...' if len(data) > 600 else ''}"


def _mutated(encoded: bytes, draw: st.DrawFn) -> bytes:
    how = draw(st.sampled_from(["cut", "append", "flip", "prefix"]))
    if how == "cut" and encoded:
        return encoded[: draw(st.integers(0, len(encoded) - 1))]
    if how == "append":
        return encoded + draw(st.binary(min_size=1, max_size=16))
    if how == "flip" and encoded:
        at = draw(st.integers(0, len(encoded) - 1))
        return encoded[:at] + bytes([encoded[at] ^ draw(st.integers(1, 255))]) + encoded[at + 1 :]
    return draw(st.binary(min_size=1, max_size=8)) + encoded


def cases(method: MethodDescriptor, hints: Hints, seeds: Sequence[Message] = ()) -> st.SearchStrategy[Case]:
    """Cases for ``method``: mostly generated messages, then seeds, raw bytes and mutated encodings."""
    wild = messages(method.input_type, field_hints(hints, tame=False))
    tame = messages(method.input_type, field_hints(hints, tame=True))

    @st.composite
    def build(draw: st.DrawFn) -> Case:
        kind = draw(st.sampled_from(["wild", "wild", "tame", "tame", "seed", "raw", "mutated"]))
        generated = tame if kind == "tame" else wild
        if kind == "seed" and seeds:
            message = draw(st.sampled_from(list(seeds)))
            body, shown = message.SerializeToString(), "seed " + _shown_message(message)
        elif kind == "raw":
            body = draw(st.binary(max_size=64))
            shown = _shown_bytes("raw", body)
        elif kind == "mutated":
            body = _mutated(draw(generated).SerializeToString(), draw)
            shown = _shown_bytes("mutated", body)
        else:
            message = draw(generated)
            body, shown = message.SerializeToString(), _shown_message(message)
        metadata: list[tuple[str, str]] = []
        tenant = draw(TENANTS)
        if tenant is not None:
            metadata.append(("x-orx-tenant", tenant))
        request_id = draw(REQUEST_IDS)
        if request_id:
            metadata.append(("x-request-id", request_id))
        stop_after = draw(st.one_of(st.none(), st.integers(1, 4))) if method.server_streaming else None
        return Case(body, tuple(metadata), shown, draw(TIMEOUTS), stop_after)

    return build()


def seed_requests(method: MethodDescriptor, hints: Hints) -> list[Message]:
    """Hand-made requests for ``method``: valid ones, and a few past the limits a generator would miss."""
    model = hints.model_ids[0] if hints.model_ids else "none"
    session = hints.session_ids[0] if hints.session_ids else "none"
    now = _NOW_S * 1_000_000_000
    name = method.name
    by_name: dict[str, Callable[[], list[Message]]] = {
        "AnalyzePrompt": lambda: [selector_pb2.AnalyzePromptRequest(prompt=p) for p in PROMPTS],
        "SelectModels": lambda: [
            selector_pb2.SelectModelsRequest(prompt=PROMPTS[0], critic_count=2),
            selector_pb2.SelectModelsRequest(
                prompt=PROMPTS[1], preferences=common_pb2.Preferences(pinned_model=model, max_cost_usd=0.0)
            ),
        ],
        "ListModels": lambda: [providers_pb2.ListModelsRequest(include_unavailable=True)],
        "Generate": lambda: [_generate(model)],
        "StreamGenerate": lambda: [providers_pb2.StreamGenerateRequest(request=_generate(model))],
        "Orchestrate": lambda: [
            orchestrator_pb2.OrchestrateRequest(prompt=PROMPTS[0], max_rounds=1),
            orchestrator_pb2.OrchestrateRequest(prompt=PROMPTS[2], max_rounds=2, critic_count=1, detached=True),
        ],
        "WatchSession": lambda: [orchestrator_pb2.WatchSessionRequest(session_id=session, after_sequence=2)],
        "GetSession": lambda: [orchestrator_pb2.GetSessionRequest(session_id=session)],
        "ListSessions": lambda: [orchestrator_pb2.ListSessionsRequest(page_size=2)],
        "CancelSession": lambda: [orchestrator_pb2.CancelSessionRequest(session_id=session, reason="fuzz")],
        "SubmitFeedback": lambda: [analytics_pb2.SubmitFeedbackRequest(session_id=session, rating=4)],
        "IngestEvents": lambda: [
            analytics_pb2.IngestEventsRequest(events=realistic(now - HOUR, primary=model).events),
            analytics_pb2.IngestEventsRequest(events=[FakeSession(now).started().events[0] for _ in range(10_001)]),
        ],
    }
    make = by_name.get(name)
    return make() if make is not None else []


def _generate(model: str) -> providers_pb2.GenerateRequest:
    return providers_pb2.GenerateRequest(
        model=model,
        messages=[common_pb2.ChatMessage(role=common_pb2.ROLE_USER, content=PROMPTS[1])],
        max_tokens=32,
    )
