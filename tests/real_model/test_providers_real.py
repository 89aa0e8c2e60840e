"""The providers service against a real llama.cpp server (llama-cpp-python, Gemma 3 270M), over real gRPC and HTTP.

Real tokens and usage, finish reasons, structured output bound by a schema, the server's own
context-length error, cancellation that frees the server, queueing at a server that decodes one request
at a time, a server killed mid-stream, and a stream the server cuts short. Outputs are kept short (a few
to a few dozen tokens) so the directory runs in well under a minute on two cores.
"""

from __future__ import annotations

import asyncio
import json
import re
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import grpc
import httpx
import jsonschema
import pytest

from orchestratex.errors import error_details
from orchestratex.v1 import common_pb2, providers_pb2
from services.providers.backend import estimate_prompt_tokens
from tests.real_model.llama import (
    MODELS,
    LlamaServer,
    RealProviders,
    catalogue_for,
    ensure_gguf,
    gguf_path,
    real_providers,
    start_llama_server,
)

LARK, WREN, FINCH = MODELS
# At temperature 0 this prompt makes the model go on until max_tokens (measured: 600 of 600 tokens).
LONG = "Count from 1 to 500, separated by commas."
VERDICT = {
    "type": "object",
    "properties": {
        "verdict": {"type": "string", "enum": ["good", "bad"]},
        "score": {"type": "integer", "enum": list(range(1, 11))},
    },
    "required": ["verdict", "score"],
    "additionalProperties": False,
}
# llama-cpp-python prints its timings when a generation runs to its end, never for one it abandoned.
TIMINGS = r"llama_perf_context_print: +total time"


def request(model: str, text: str, max_tokens: int, **fields: Any) -> providers_pb2.GenerateRequest:
    msg = providers_pb2.GenerateRequest(
        model=model,
        messages=[common_pb2.ChatMessage(role=common_pb2.ROLE_USER, content=text)],
        max_tokens=max_tokens,
        temperature=0.0,
        seed=7,
        context=providers_pb2.CallContext(purpose=common_pb2.CALL_PURPOSE_ANSWER, session_id=uuid.uuid4().hex),
    )
    for key, value in fields.items():
        if isinstance(value, providers_pb2.ResponseFormat):
            msg.response_format.CopyFrom(value)
        else:
            setattr(msg, key, value)
    return msg


def stream(stub: Any, req: providers_pb2.GenerateRequest, timeout: float = 60) -> Any:
    """A StreamGenerate call with a deadline of ``timeout`` seconds."""
    return stub.StreamGenerate(providers_pb2.StreamGenerateRequest(request=req), timeout=timeout)


async def collect(
    stub: Any, req: providers_pb2.GenerateRequest, deadline: float = 60
) -> tuple[list[providers_pb2.StreamGenerateResponse], grpc.aio.AioRpcError | None]:
    """Every event of a StreamGenerate call (deadline in seconds), and the error it ended with."""
    events: list[providers_pb2.StreamGenerateResponse] = []
    try:
        async for event in stream(stub, req, deadline):
            events.append(event)
    except grpc.aio.AioRpcError as err:
        return events, err
    return events, None


def completed(events: list[providers_pb2.StreamGenerateResponse]) -> providers_pb2.GenerateResponse:
    """The ``completed`` event, after checking the stream's shape: deltas, gap-free sequence, the text joined."""
    assert [e.sequence for e in events] == list(range(1, len(events) + 1))
    assert [e.WhichOneof("event") for e in events[:-1]] == ["delta"] * (len(events) - 1)
    assert events[-1].WhichOneof("event") == "completed"
    done = events[-1].completed
    assert "".join(e.delta.text for e in events[:-1]) == done.text
    return done


async def direct(server: LlamaServer, text: str, max_tokens: int, **extra: Any) -> dict[str, Any]:
    """The same question asked of the llama server itself, without streaming (its reply carries usage)."""
    body = {
        "model": LARK,
        "messages": [{"role": "user", "content": text}],
        "max_tokens": max_tokens,
        "temperature": 0.0,
        "seed": 7,
        **extra,
    }
    async with httpx.AsyncClient(timeout=60) as client:
        reply = await client.post(f"{server.base_url}/chat/completions", json=body)
    assert reply.status_code == 200, reply.text
    payload: dict[str, Any] = reply.json()
    return payload


@pytest.fixture
async def providers(real_catalogue: Path, tmp_path: Path) -> AsyncIterator[RealProviders]:
    async with real_providers(real_catalogue, tmp_path) as live:
        yield live


@pytest.fixture
async def unary_providers(llama_server: LlamaServer, tmp_path: Path) -> AsyncIterator[RealProviders]:
    """The same server and models through a provider entry with ``streaming = false``."""
    path = tmp_path / "catalogue.toml"
    path.write_text(catalogue_for(llama_server.base_url, streaming=False), encoding="utf-8")
    async with real_providers(path, tmp_path) as live:
        yield live


# ---------------------------------------------------------------------------- the catalogue


async def test_three_models_of_three_families_on_one_server(providers: RealProviders) -> None:
    reply = await providers.stub.ListModels(providers_pb2.ListModelsRequest(), timeout=10)
    assert [m.id for m in reply.models] == list(MODELS)
    assert len({m.family for m in reply.models}) == 3
    for info in reply.models:
        assert info.provider == "llama-cpp" and not info.simulated
        assert info.supports_structured_outputs and info.supports_json_mode
        assert info.context_length == 2048
    assert not reply.simulated


# ---------------------------------------------------------------------------- real tokens, usage, finish reasons


async def test_stream_carries_the_servers_tokens_and_a_max_tokens_cut_is_length(
    providers: RealProviders, llama_server: LlamaServer
) -> None:
    events, err = await collect(providers.stub, request(LARK, LONG, max_tokens=12))
    assert err is None
    done = completed(events)
    assert len(events) >= 3  # token by token, not one block
    reference = await direct(llama_server, LONG, 12)
    assert done.text == reference["choices"][0]["message"]["content"]
    assert done.finish_reason == providers_pb2.FINISH_REASON_LENGTH
    assert reference["choices"][0]["finish_reason"] == "length"
    assert (done.requested_model, done.served_model) == (LARK, LARK)  # the server echoes the requested id
    # llama-cpp-python sends no usage in a stream: a max_tokens cut counts exactly max_tokens.
    assert done.usage.completion_tokens == reference["usage"]["completion_tokens"] == 12
    assert done.usage.cost_usd == 0.0 and not done.simulated
    assert done.time_to_first_token.ToNanoseconds() > 0 and done.latency.ToNanoseconds() > 0


async def test_generate_reports_the_servers_own_usage(
    unary_providers: RealProviders, llama_server: LlamaServer
) -> None:
    text = "Write the numbers from 1 to 1000 in words, one per line."
    done = await unary_providers.stub.Generate(request(WREN, text, max_tokens=10), timeout=60)
    reference = await direct(llama_server, text, 10)
    assert done.text == reference["choices"][0]["message"]["content"]
    assert done.finish_reason == providers_pb2.FINISH_REASON_LENGTH
    usage = reference["usage"]
    assert (done.usage.prompt_tokens, done.usage.completion_tokens) == (usage["prompt_tokens"], 10)
    assert done.usage.total_tokens == usage["total_tokens"]
    # The service's own estimate differs: the numbers above are the server's count.
    assert done.usage.prompt_tokens != estimate_prompt_tokens([text])


@pytest.mark.parametrize("streaming", [False, True])
async def test_json_schema_output_validates_and_ends_with_stop(providers: RealProviders, streaming: bool) -> None:
    rf = providers_pb2.ResponseFormat(
        type=providers_pb2.RESPONSE_FORMAT_TYPE_JSON_SCHEMA,
        schema_name="verdict",
        json_schema=json.dumps(VERDICT),
        strict=True,
    )
    req = request(
        FINCH,
        'Rate this answer: "Paris is the capital of France." Reply with JSON: a verdict and a score from 1 to 10.',
        max_tokens=40,
        response_format=rf,
    )
    if streaming:
        events, err = await collect(providers.stub, req)
        assert err is None
        done = completed(events)
    else:
        done = await providers.stub.Generate(req, timeout=60)
    # The schema became a grammar: the reply is exactly the schema's shape, and closing it stops generation.
    jsonschema.validate(json.loads(done.text), VERDICT)
    assert done.finish_reason == providers_pb2.FINISH_REASON_STOP


# ---------------------------------------------------------------------------- the server's own errors


@pytest.mark.parametrize("streaming", [False, True])
async def test_a_prompt_longer_than_the_context_window_is_invalid_argument(
    providers: RealProviders, llama_server: LlamaServer, streaming: bool
) -> None:
    # Digits are one token each for Gemma: about 4,000 tokens that the service's estimate (chars / 4)
    # puts near 1,000, so the request passes validation and the server itself must refuse it.
    text = "Add these numbers: " + " ".join(f"{n:03d}" for n in range(1000))
    assert estimate_prompt_tokens([text]) + 16 < 2048
    mark = llama_server.log_size()
    req = request(LARK, text, max_tokens=16)
    if streaming:
        events, err = await collect(providers.stub, req)
        assert events == [] and err is not None
    else:
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await providers.stub.Generate(req, timeout=60)
        err = info.value
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT
    details = err.details() or ""
    prefix = "request." if streaming else ""
    match = re.fullmatch(
        rf"{prefix}messages: {LARK}: the prompt is ([\d,]+) tokens and max_tokens is 16; together ([\d,]+) exceed "
        r"the 2,048-token context window",
        details,
    )
    assert match, details
    prompt_tokens = int(match.group(1).replace(",", ""))
    assert prompt_tokens > 2048 and int(match.group(2).replace(",", "")) == prompt_tokens + 16
    assert error_details(err).reason == "FAILURE_KIND_INVALID_REQUEST"
    # The server's own words, in its log: the stream dropped, the probe answered.
    await llama_server.wait_for_log(rf"Requested tokens \({prompt_tokens}\) exceed context window of 2048", start=mark)


# ---------------------------------------------------------------------------- cancellation and queueing


async def _first_deltas(call: Any, count: int) -> int:
    """Read ``call`` until ``count`` deltas arrived; returns how many were read."""
    seen = 0
    async for event in call:
        if event.WhichOneof("event") == "delta":
            seen += 1
            if seen >= count:
                break
    return seen


async def test_cancelling_a_stream_stops_the_servers_generation(
    providers: RealProviders, llama_server: LlamaServer
) -> None:
    mark = llama_server.log_size()
    call = stream(providers.stub, request(LARK, LONG, max_tokens=1000), timeout=120)
    assert await _first_deltas(call, 3) == 3
    call.cancel()
    # The server notices the closed connection and drops the generation ...
    await llama_server.wait_for_log(r"Disconnected from client", start=mark)
    # ... so it is free at once: the next request runs, and the 1,000-token generation never finished (it
    # would have printed its timings before the next one could start: the server decodes one at a time).
    done = await providers.stub.Generate(request(WREN, "Say hello.", max_tokens=4), timeout=60)
    assert done.finish_reason == providers_pb2.FINISH_REASON_LENGTH
    log = await llama_server.wait_for_log(TIMINGS, start=mark)
    assert len(re.findall(TIMINGS, log)) == 1


async def test_concurrent_calls_queue_at_the_server_and_all_finish(
    providers: RealProviders, llama_server: LlamaServer
) -> None:
    mark = llama_server.log_size()

    async def streamed(model: str) -> providers_pb2.GenerateResponse:
        events, err = await collect(providers.stub, request(model, LONG, max_tokens=8), deadline=90)
        assert err is None
        return completed(events)

    async def unary(model: str) -> providers_pb2.GenerateResponse:
        reply: providers_pb2.GenerateResponse = await providers.stub.Generate(
            request(model, LONG, max_tokens=8), timeout=90
        )
        return reply

    results = await asyncio.gather(streamed(LARK), unary(WREN), streamed(FINCH), unary(LARK))
    assert [r.requested_model for r in results] == [LARK, WREN, FINCH, LARK]
    assert all(r.finish_reason == providers_pb2.FINISH_REASON_LENGTH and r.text for r in results)
    # Greedy decoding of one prompt: four identical answers, whichever "model" and however it was asked.
    assert len({r.text for r in results}) == 1
    await llama_server.wait_for_log(TIMINGS, start=mark, count=4)


async def test_a_call_queued_past_its_deadline_ends_and_never_runs_later(
    providers: RealProviders, llama_server: LlamaServer
) -> None:
    mark = llama_server.log_size()
    holder = stream(providers.stub, request(LARK, LONG, max_tokens=1000), timeout=120)
    assert await _first_deltas(holder, 1) == 1
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await providers.stub.Generate(request(WREN, "Say hello.", max_tokens=4), timeout=1.5)
    assert info.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    holder.cancel()
    done = await providers.stub.Generate(request(FINCH, "Say hello.", max_tokens=4), timeout=60)
    assert done.finish_reason == providers_pb2.FINISH_REASON_LENGTH
    # Only that last call ran to its end: the expired one was dropped by the server, not queued behind.
    log = await llama_server.wait_for_log(TIMINGS, start=mark)
    assert len(re.findall(TIMINGS, log)) == 1
    assert len(re.findall(r"Disconnected from client", log)) >= 1


# ---------------------------------------------------------------------------- a private server


@pytest.fixture
def private_server(llama_server: LlamaServer, tmp_path: Path) -> Any:
    """Factory: a second llama server of our own (stopped at the end), e.g. to kill it."""
    servers: list[LlamaServer] = []

    def start(**options: Any) -> LlamaServer:
        server = start_llama_server(ensure_gguf(gguf_path()), tmp_path / f"llama-{len(servers)}.log", **options)
        servers.append(server)
        return server

    yield start
    for server in servers:
        server.stop()


async def test_a_server_killed_mid_stream_is_unavailable_and_nothing_hangs(private_server: Any, tmp_path: Path) -> None:
    server: LlamaServer = private_server()
    path = tmp_path / "private.toml"
    path.write_text(catalogue_for(server.base_url), encoding="utf-8")
    async with real_providers(path, tmp_path) as live:
        call = stream(live.stub, request(LARK, LONG, max_tokens=1000), timeout=60)
        events: list[providers_pb2.StreamGenerateResponse] = []
        with pytest.raises(grpc.aio.AioRpcError) as info:
            async for event in call:
                events.append(event)
                if len(events) == 2:
                    server.process.kill()
        assert info.value.code() == grpc.StatusCode.UNAVAILABLE
        failed = events[-1]
        assert failed.WhichOneof("event") == "failed"
        assert failed.failed.kind == common_pb2.FAILURE_KIND_MID_STREAM_ERROR
        assert failed.failed.partial_text == "".join(e.delta.text for e in events[:-1])
        assert failed.failed.partial_text
        # The next call finds nobody listening: UNAVAILABLE (after the policy's retries), within its deadline.
        with pytest.raises(grpc.aio.AioRpcError) as again:
            await live.stub.Generate(request(WREN, "Say hello.", max_tokens=4), timeout=30)
        assert again.value.code() == grpc.StatusCode.UNAVAILABLE
        assert error_details(again.value).reason in (
            "FAILURE_KIND_UPSTREAM_ERROR",
            "FAILURE_KIND_CIRCUIT_OPEN",
        )


async def test_a_stream_cut_by_a_newer_request_is_not_taken_for_a_whole_answer(
    private_server: Any, tmp_path: Path
) -> None:
    # llama-cpp-python's default: a new request interrupts the running stream with a bare [DONE].
    server: LlamaServer = private_server(interrupt_requests=True)
    path = tmp_path / "interrupting.toml"
    path.write_text(catalogue_for(server.base_url), encoding="utf-8")
    async with real_providers(path, tmp_path) as live:

        async def newer() -> providers_pb2.GenerateResponse:
            reply: providers_pb2.GenerateResponse = await live.stub.Generate(
                request(WREN, "Say hello.", max_tokens=4), timeout=60
            )
            return reply

        first = stream(live.stub, request(LARK, LONG, max_tokens=1000), timeout=60)
        events: list[providers_pb2.StreamGenerateResponse] = []
        second: asyncio.Task[providers_pb2.GenerateResponse] | None = None
        with pytest.raises(grpc.aio.AioRpcError) as info:
            async for event in first:
                events.append(event)
                if second is None:
                    second = asyncio.create_task(newer())
        assert second is not None
        done = await second
    assert info.value.code() == grpc.StatusCode.UNAVAILABLE
    assert events[-1].WhichOneof("event") == "failed"
    assert events[-1].failed.kind == common_pb2.FAILURE_KIND_MID_STREAM_ERROR
    assert "without a finish reason" in events[-1].failed.message
    assert done.finish_reason == providers_pb2.FINISH_REASON_LENGTH
