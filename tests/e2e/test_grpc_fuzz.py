"""Fuzz every RPC of every service: no request, however malformed, gets UNKNOWN or INTERNAL.

The four real services run in this process on port-0 servers, with simulated models at the
simulator's top speed and a temporary data directory (``grpc_fuzz.start_services``). For each RPC listed
in the contracts' service descriptors, Hypothesis sends ``ORX_FUZZ_CASES`` cases (default 1,000): messages
generated from the request's descriptor, hand-made seeds, and raw or mangled bytes as the body, through a
generic channel method with identity serializers (see ``grpc_fuzz``). Any status but UNKNOWN and INTERNAL
passes, OK included: the claim is that every bad input is answered with a deliberate status (normally
INVALID_ARGUMENT naming the field), never with an unhandled error. So, too, nothing may be logged at
ERROR meanwhile: a crash in a background task (a session, the outbox) or a task error nobody read is the
same defect out of sight. Streams are read to their end, or cancelled after a few messages (some cases)
or ``MAX_STREAM_MESSAGES``; some cases give the call a deadline so short that it expires mid-way.

Run it alone with ``pytest -m fuzz tests/e2e/test_grpc_fuzz.py``; longer with e.g. ``ORX_FUZZ_CASES=20000``,
and over other cases with ``ORX_FUZZ_SEED=<n>``. Without a seed the cases are derandomized (the same on
every run and machine), so a failure reproduces; the report prints the case that failed.
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import AsyncIterator, Callable, Coroutine
from typing import Any

import grpc
import pytest
import pytest_asyncio
from google.protobuf.descriptor import MethodDescriptor
from hypothesis import HealthCheck, given, seed, settings

from tests.e2e.grpc_fuzz import (
    CALL_TIMEOUT,
    Case,
    Hints,
    Services,
    all_methods,
    cases,
    is_streaming,
    method_path,
    seed_requests,
    start_services,
)

FUZZ_CASES = int(os.environ.get("ORX_FUZZ_CASES", "1000"))
# Unset: the same cases on every run and machine. A number explores other cases, reproducibly.
FUZZ_SEED = os.environ.get("ORX_FUZZ_SEED", "").strip()
MAX_STREAM_MESSAGES = 200
FORBIDDEN = frozenset({grpc.StatusCode.UNKNOWN, grpc.StatusCode.INTERNAL})
METHODS = all_methods()

pytestmark = [pytest.mark.fuzz, pytest.mark.e2e]

FUZZ_SETTINGS = settings(
    max_examples=FUZZ_CASES,
    deadline=None,
    derandomize=not FUZZ_SEED,
    database=None,
    print_blob=False,
    suppress_health_check=[
        HealthCheck.too_slow,
        HealthCheck.data_too_large,
        HealthCheck.large_base_example,
        HealthCheck.filter_too_much,
    ],
)


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def services(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Services]:
    running = await start_services(tmp_path_factory.mktemp("fuzz"))
    try:
        yield running
    finally:
        await running.stop()


def test_every_rpc_of_every_service_is_fuzzed() -> None:
    names = [method_path(m) for m in METHODS]
    assert len(names) == len(set(names)) == 16, names
    services = {m.containing_service.full_name for m in METHODS}
    assert services == {
        f"orchestratex.v1.{s}"
        for s in ("SelectorService", "ProviderService", "OrchestratorService", "AnalyticsService")
    }


@pytest.mark.asyncio(loop_scope="module")
@pytest.mark.timeout(max(120, FUZZ_CASES * 0.4))
@pytest.mark.parametrize("method", METHODS, ids=lambda m: f"{m.containing_service.name}.{m.name}")
async def test_no_input_gets_unknown_or_internal(
    method: MethodDescriptor, services: Services, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.ERROR)
    hints = Hints(services.model_ids, services.session_ids, services.thread_ids, services.page_tokens)
    ran = 0
    async with grpc.aio.insecure_channel(
        services.address(method), options=[("grpc.max_receive_message_length", 64 * 1024 * 1024)]
    ) as channel:
        send = _streaming(channel, method) if is_streaming(method) else _unary(channel, method)

        @FUZZ_SETTINGS
        @given(case=cases(method, hints, seed_requests(method, hints)))
        async def one(case: Case) -> None:
            nonlocal ran
            ran += 1
            code, details = await send(case)
            assert code not in FORBIDDEN, f"{method_path(method)} answered {code.name}: {details}"

        await _drive(seed(int(FUZZ_SEED))(one) if FUZZ_SEED else one)
    assert ran >= FUZZ_CASES
    # Nor did anything fail out of sight: an error in a background task, a task exception nobody read.
    errors = [f"{r.name}: {r.getMessage()}" for r in caplog.records if r.levelno >= logging.ERROR and not _benign(r)]
    assert not errors, "\n".join(errors)


def _benign(record: logging.LogRecord) -> bool:
    """grpcio's own report that a finished handler's status could not reach a client that had gone (its
    deadline passed, or it cancelled the stream): nothing the service did, nothing it could do."""
    return record.name == "grpc._cython.cygrpc" and record.getMessage().startswith("ExecuteBatchError raised in core")


Sender = Callable[[Case], Coroutine[Any, Any, tuple[grpc.StatusCode, str]]]


def _unary(channel: grpc.aio.Channel, method: MethodDescriptor) -> Sender:
    # No serializers: the body goes as given, the reply comes back as bytes.
    call = channel.unary_unary(method_path(method), request_serializer=None, response_deserializer=None)

    async def send(case: Case) -> tuple[grpc.StatusCode, str]:
        try:
            await call(case.body, timeout=case.timeout, metadata=case.metadata or None)
        except grpc.aio.AioRpcError as exc:
            return exc.code(), exc.details() or ""
        return grpc.StatusCode.OK, ""

    return send


def _streaming(channel: grpc.aio.Channel, method: MethodDescriptor) -> Sender:
    open_stream = channel.unary_stream(method_path(method), request_serializer=None, response_deserializer=None)

    async def send(case: Case) -> tuple[grpc.StatusCode, str]:
        call = open_stream(case.body, timeout=case.timeout, metadata=case.metadata or None)
        limit = case.stop_after or MAX_STREAM_MESSAGES
        received = 0
        try:
            async for _ in call:
                received += 1
                if received >= limit:
                    call.cancel()
                    return grpc.StatusCode.OK, f"{received} messages read, then cancelled"
        except grpc.aio.AioRpcError as exc:
            return exc.code(), exc.details() or ""
        return await call.code(), await call.details() or ""

    return send


async def _drive(test: Any) -> None:
    """Run an async Hypothesis test: Hypothesis runs in a worker thread and each case's coroutine on
    this loop (where the services live), so failures are seen, shrunk and reported by Hypothesis."""
    loop = asyncio.get_running_loop()
    inner = test.hypothesis.inner_test

    def sync_inner(*args: Any, **kwargs: Any) -> None:
        asyncio.run_coroutine_threadsafe(inner(*args, **kwargs), loop).result(timeout=CALL_TIMEOUT * 3)

    test.hypothesis.inner_test = sync_inner
    await asyncio.to_thread(test)
