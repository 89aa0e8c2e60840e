"""What local OpenAI-compatible servers do differently, reproduced by the stand-in over real HTTP.

llama-cpp-python's server: its context-length message ("... (2107 in the messages, 8 in the completion)");
a request it cannot serve dropped after the stream's 200 headers with no event (``probe_broken_streams``
asks again without streaming to learn why); a stream cut by a newer request with a bare ``[DONE]`` and no
finish reason (its ``--interrupt_requests``); no usage in streams. The real server is exercised in
``tests/real_model``.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager
from pathlib import Path

import grpc
import pytest

from orchestratex.errors import error_details
from orchestratex.v1 import common_pb2, providers_pb2
from services.providers.backend import estimate_prompt_tokens
from tests.providers.helpers import catalogue_text, collect, request
from tests.providers.openrouter_standin import (
    DEFAULT_KEY,
    LiveProviders,
    OpenRouterStandIn,
    Reply,
    error_reply,
    live_providers,
)

TINY = "acme/tiny"
Local = Callable[[str], AbstractAsyncContextManager[LiveProviders]]


def llama_context_error(prompt: int, completion: int) -> Reply:
    """llama-cpp-python's 400 for a prompt longer than its context window (``--n_ctx 2048``)."""
    return error_reply(
        400,
        message=(
            f"This model's maximum context length is 2048 tokens. However, you requested {prompt + completion} tokens "
            f"({prompt} in the messages, {completion} in the completion). Please reduce the length of the messages "
            "or completion."
        ),
        code="context_length_exceeded",
    )


@pytest.fixture
async def standin() -> AsyncIterator[OpenRouterStandIn]:
    async with OpenRouterStandIn() as server:
        yield server


@pytest.fixture
def local(
    standin: OpenRouterStandIn, tmp_path: Path, write_file: Callable[..., Path], monkeypatch: pytest.MonkeyPatch
) -> Local:
    """``local(provider_options)``: a live providers server whose only provider is the stand-in."""
    monkeypatch.setenv("LOCAL_KEY", DEFAULT_KEY)

    def start(options: str) -> AbstractAsyncContextManager[LiveProviders]:
        path = write_file(catalogue_text(standin.base_url, options, "supports_structured_outputs = true"))
        return live_providers(standin, tmp_path, key="", ORX_CATALOGUE=str(path))

    return start


async def call(live: LiveProviders, req: providers_pb2.GenerateRequest, streaming: bool) -> grpc.aio.AioRpcError:
    """The error a call ends with (StreamGenerate must send no event before it)."""
    if streaming:
        events, err = await collect(live.stub, req)
        assert events == [] and err is not None
        return err
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await live.stub.Generate(req, timeout=10)
    return info.value


@pytest.mark.parametrize("streaming", [False, True])
async def test_llama_cpp_pythons_context_error_names_the_limit(
    standin: OpenRouterStandIn, local: Local, streaming: bool
) -> None:
    standin.script.append(llama_context_error(2107, 8))
    async with local("streaming = false") as live:
        err = await call(live, request(TINY, max_tokens=8), streaming)
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT
    prefix = "request." if streaming else ""
    assert err.details() == (
        f"{prefix}messages: {TINY}: the prompt is 2,107 tokens and max_tokens is 8; together 2,115 exceed the "
        "2,048-token context window"
    )
    assert error_details(err).reason == "FAILURE_KIND_INVALID_REQUEST"


@pytest.mark.parametrize("streaming", [False, True])
async def test_a_stream_dropped_before_any_event_is_explained_by_a_probe(
    standin: OpenRouterStandIn, local: Local, streaming: bool
) -> None:
    standin.script.extend([Reply(abort_before_data=True), llama_context_error(2107, 1)])
    async with local("probe_broken_streams = true") as live:
        err = await call(live, request(TINY, max_tokens=100), streaming)
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT
    # The message names the caller's max_tokens, not the probe's 1.
    assert (err.details() or "").endswith(
        f"messages: {TINY}: the prompt is 2,107 tokens and max_tokens is 100; together 2,207 exceed the "
        "2,048-token context window"
    )
    stream, probe = standin.chat_requests()
    assert stream.body["stream"] is True and stream.body["max_tokens"] == 100
    assert probe.body["stream"] is False and probe.body["max_tokens"] == 1
    assert probe.body["messages"] == stream.body["messages"]


async def test_without_the_probe_a_dropped_stream_is_unavailable(standin: OpenRouterStandIn, local: Local) -> None:
    standin.script.extend([Reply(abort_before_data=True), llama_context_error(2107, 1)])
    async with local("") as live:
        err = await call(live, request(TINY, max_tokens=100), True)
    assert err.code() == grpc.StatusCode.UNAVAILABLE
    assert len(standin.chat_requests()) == 1


async def test_a_probe_that_succeeds_keeps_the_original_failure(standin: OpenRouterStandIn, local: Local) -> None:
    standin.script.extend([Reply(abort_before_data=True), Reply(content=["x"], finish_reason="length")])
    async with local("probe_broken_streams = true") as live:
        err = await call(live, request(TINY, max_tokens=100), True)
    assert err.code() == grpc.StatusCode.UNAVAILABLE
    assert "connection to local failed" in (err.details() or "")
    assert error_details(err).reason == "FAILURE_KIND_UPSTREAM_ERROR"
    assert len(standin.chat_requests()) == 2


async def test_a_stream_cut_without_a_finish_reason_is_a_mid_stream_failure(
    standin: OpenRouterStandIn, local: Local
) -> None:
    standin.script.append(Reply(content=["Once", " upon"], finish_reason=""))
    async with local("") as live:
        events, err = await collect(live.stub, request(TINY, max_tokens=100))
    assert err is not None and err.code() == grpc.StatusCode.UNAVAILABLE
    assert "".join(e.delta.text for e in events[:-1]) == "Once upon"
    failed = events[-1].failed
    assert failed.kind == common_pb2.FAILURE_KIND_MID_STREAM_ERROR
    assert "without a finish reason" in failed.message and failed.partial_text == "Once upon"


async def test_no_usage_in_a_stream_cut_by_max_tokens_counts_max_tokens(
    standin: OpenRouterStandIn, local: Local
) -> None:
    standin.script.append(Reply(content=["a", "b", "c"], finish_reason="length", send_usage=False))
    async with local("") as live:
        events, err = await collect(live.stub, request(TINY, max_tokens=37, text="Count."))
    assert err is None
    done = events[-1].completed
    assert done.finish_reason == providers_pb2.FINISH_REASON_LENGTH
    assert done.usage.completion_tokens == 37
    assert done.usage.prompt_tokens == estimate_prompt_tokens(["Count."])


async def test_llama_servers_context_size_error_is_a_context_error(standin: OpenRouterStandIn, local: Local) -> None:
    # llama.cpp's own C++ server words it differently.
    standin.script.append(
        error_reply(
            400,
            message="the request exceeds the available context size, try increasing it",
            code=400,
            metadata={"type": "exceed_context_size_error"},
        )
    )
    async with local("") as live:
        err = await call(live, request(TINY, max_tokens=8), False)
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert err.details() == (
        f"messages: {TINY}: the request does not fit the model's context window: the request exceeds the available "
        "context size, try increasing it"
    )
