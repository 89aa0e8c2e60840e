"""The clients people already use, against the OpenAI-compatible surface of the real gateway in front of the real
services on the simulator: the official ``openai`` SDK (sync and async, streaming and not, its typed exceptions
and its retries), langchain-openai's ``ChatOpenAI`` (invoke and stream), litellm as a client (an ``openai/``
model prefix and an ``api_base``; sync and async, streaming and not, with the network refused) and curl ``-N``.

The sync clients block, so they run in a worker thread while the gateway serves on the test's event loop.
"""

from __future__ import annotations

import asyncio
import logging
import shutil
import socket
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import openai
import pytest

from gateway.state import SECURITY

from .live_stack import Stack, poll, running_stack, session_of, sessions

PROMPT = "Write a Python function that merges two sorted lists"


@pytest.fixture
async def stack(tmp_path: Path) -> AsyncIterator[Stack]:
    async with running_stack(tmp_path) as running:
        yield running


def messages(text: str = PROMPT) -> list[Any]:
    return [
        {"role": "system", "content": "Answer briefly."},
        {"role": "user", "content": f"{text} ({uuid.uuid4().hex[:8]})"},
    ]


def extra(value: Any, name: str) -> Any:
    """A field the SDK's types do not declare (``reasoning_content``, ``usage.cost``): kept as an extra."""
    return (value.model_extra or {}).get(name)


def retries(caplog: pytest.LogCaptureFixture) -> int:
    return sum("Retrying request" in record.getMessage() for record in caplog.records)


# ---------------------------------------------------------------------------------------------- openai SDK


async def test_the_sync_sdk_completes_and_streams(stack: Stack) -> None:
    def run() -> tuple[Any, str, list[Any]]:
        with openai.OpenAI(base_url=stack.openai_base, api_key=stack.key_a, max_retries=0) as client:
            raw = client.chat.completions.with_raw_response.create(
                model="orchestratex", messages=messages(), extra_body={"orchestratex": {"max_rounds": 1}}
            )
            session_id = raw.headers["x-orchestratex-session-id"]
            completion = raw.parse()
            chunks = list(
                client.chat.completions.create(
                    model="orchestratex",
                    messages=messages(),
                    stream=True,
                    stream_options={"include_usage": True},
                    temperature=0.2,
                    max_completion_tokens=500,
                    extra_body={"orchestratex": {"max_rounds": 1}},
                )
            )
            return completion, session_id, chunks

    completion, session_id, chunks = await asyncio.to_thread(run)
    assert completion.id == f"chatcmpl-{session_id}" and completion.model == "orchestratex"
    _, found = await session_of(stack, session_id)
    assert completion.choices[0].message.content == found["session"]["result"]["final_text"]
    assert completion.choices[0].finish_reason == "stop"
    assert "Selected " in extra(completion.choices[0].message, "reasoning_content")
    assert completion.usage is not None and completion.usage.total_tokens > 0
    assert extra(completion.usage, "cost") == pytest.approx(found["session"]["result"]["total_cost_usd"])

    reasoning = "".join(extra(c.choices[0].delta, "reasoning_content") or "" for c in chunks if c.choices)
    content = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert "Selected " in reasoning and " scores " in reasoning and content
    assert chunks[-1].choices == [] and chunks[-1].usage is not None and extra(chunks[-1].usage, "cost") > 0
    assert chunks[-2].choices[0].finish_reason == "stop"


async def test_the_async_sdk_completes_streams_and_passes_through(stack: Stack) -> None:
    async with openai.AsyncOpenAI(base_url=stack.openai_base, api_key=stack.key_a, max_retries=0) as client:
        models = [m.id async for m in client.models.list()]
        plain = next(m for m in models if not m.startswith("orchestratex"))
        assert (await client.models.retrieve(f"orchestratex/{plain}")).id == f"orchestratex/{plain}"
        completion = await client.chat.completions.create(
            model=f"orchestratex/{plain}",
            messages=messages(),
            extra_body={"orchestratex": {"max_rounds": 1, "reasoning_field": "reasoning"}},
        )
        assert completion.choices[0].message.content
        assert f"Selected {plain}" in extra(completion.choices[0].message, "reasoning")

        stream = await client.chat.completions.create(model="orchestratex", messages=messages(), stream=True)
        kinds = []
        async for chunk in stream:
            delta = chunk.choices[0].delta
            kinds.append("reasoning" if extra(delta, "reasoning_content") else "content" if delta.content else "-")
        assert kinds.index("content") > kinds.index("reasoning")
        assert "reasoning" not in kinds[kinds.index("content") :]

        single = await client.chat.completions.create(model=plain, messages=messages(), max_tokens=200, seed=3)
        assert single.model == plain and single.choices[0].message.content and single.usage is not None
        pieces = [
            c.choices[0].delta.content or ""
            async for c in await client.chat.completions.create(model=plain, messages=messages(), stream=True)
        ]
        assert "".join(pieces)


async def test_the_sdk_raises_its_typed_exceptions(stack: Stack) -> None:
    async with openai.AsyncOpenAI(base_url=stack.openai_base, api_key=stack.key_a, max_retries=0) as client:
        with pytest.raises(openai.BadRequestError) as bad:
            await client.chat.completions.create(
                model="orchestratex",
                messages=messages(),
                tools=[{"type": "function", "function": {"name": "f", "parameters": {"type": "object"}}}],
            )
        assert bad.value.status_code == 400 and bad.value.param == "tools" and bad.value.code == "unsupported_parameter"
        with pytest.raises(openai.BadRequestError) as bad:
            await client.chat.completions.create(model="orchestratex", messages=messages(), n=3)
        assert bad.value.param == "n"
        with pytest.raises(openai.BadRequestError) as bad:
            await client.chat.completions.create(
                model="orchestratex", messages=messages(), extra_body={"orchestratex": {"critic_count": 9}}
            )
        assert bad.value.param == "orchestratex.critic_count"
        with pytest.raises(openai.NotFoundError) as missing:
            await client.chat.completions.create(model="gpt-4o", messages=messages())
        assert missing.value.code == "model_not_found"
        with pytest.raises(openai.NotFoundError):
            await client.models.retrieve("gpt-4o")
    async with openai.AsyncOpenAI(base_url=stack.openai_base, api_key="orx_wrong", max_retries=0) as client:
        with pytest.raises(openai.AuthenticationError) as denied:
            await client.chat.completions.create(model="orchestratex", messages=messages())
        assert denied.value.status_code == 401 and denied.value.code == "invalid_api_key"
    assert await sessions(stack) == []


async def test_the_sdk_retries_a_429_after_retry_after(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="openai")
    async with running_stack(tmp_path, ORX_GATEWAY_RATE_LIMIT="60") as stack:
        assert stack.app is not None
        # One request a second, in bursts of one: the second request at once is refused for a second.
        stack.app[SECURITY].limiter.capacity = 1.0
        async with openai.AsyncOpenAI(base_url=stack.openai_base, api_key=stack.key_a, max_retries=0) as client:
            await client.models.list()
            with pytest.raises(openai.RateLimitError) as limited:
                await client.models.list()
            assert limited.value.response.headers["retry-after"] == "1"
            assert limited.value.code == "rate_limit_exceeded"
        assert retries(caplog) == 0
        async with openai.AsyncOpenAI(base_url=stack.openai_base, api_key=stack.key_a, max_retries=2) as client:
            started = asyncio.get_running_loop().time()
            completion = await client.chat.completions.create(
                model="orchestratex", messages=messages(), extra_body={"orchestratex": {"max_rounds": 1}}
            )
            assert completion.choices[0].message.content
            assert asyncio.get_running_loop().time() - started >= 0.9  # it waited as told
        assert retries(caplog) == 1


async def test_the_sdk_retries_a_503_then_gives_up(stack: Stack, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="openai")
    await stack.servers["orchestrator"].stop(0)
    async with openai.AsyncOpenAI(base_url=stack.openai_base, api_key=stack.key_a, max_retries=2) as client:
        with pytest.raises(openai.InternalServerError) as down:
            await client.chat.completions.create(model="orchestratex", messages=messages())
    assert down.value.status_code == 503 and down.value.code == "service_unavailable"
    assert retries(caplog) == 2


async def test_the_sdk_does_not_retry_a_session_that_ended_without_an_answer(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A session cancelled by someone else ends the call with 502 and ``x-should-retry: false``: the SDK does not
    start (and pay for) another session."""
    caplog.set_level(logging.INFO, logger="openai")
    async with running_stack(tmp_path, sim_speed=0.5) as stack:
        async with openai.AsyncOpenAI(base_url=stack.openai_base, api_key=stack.key_a, max_retries=2) as client:
            call = asyncio.create_task(client.chat.completions.create(model="orchestratex", messages=messages()))

            async def running() -> bool:
                return any(s["status"] == "SESSION_STATUS_RUNNING" for s in await sessions(stack))

            await poll(running, "the session starts")
            session_id = (await sessions(stack))[0]["session_id"]
            async with (
                aiohttp.ClientSession() as http,
                http.post(f"{stack.base}/v1/orchestrations/{session_id}:cancel", headers=stack.auth()) as resp,
            ):
                assert resp.status == 200
            with pytest.raises(openai.InternalServerError) as ended:
                await call
        assert ended.value.status_code == 502 and ended.value.code == "session_cancelled"
        assert ended.value.response.headers["x-should-retry"] == "false"
        assert retries(caplog) == 0
        assert len(await sessions(stack)) == 1

        # Streaming, the status is already 200: the stream's last event is the error, which the SDK raises.
        async with openai.AsyncOpenAI(base_url=stack.openai_base, api_key=stack.key_a, max_retries=2) as client:
            stream = await client.chat.completions.create(model="orchestratex", messages=messages(), stream=True)
            session_id = (await sessions(stack))[0]["session_id"]
            async with (
                aiohttp.ClientSession() as http,
                http.post(f"{stack.base}/v1/orchestrations/{session_id}:cancel", headers=stack.auth()) as resp,
            ):
                assert resp.status == 200
            with pytest.raises(openai.APIError) as failed:
                async for _ in stream:
                    pass
        assert failed.value.code == "session_cancelled" and "cancelled" in failed.value.message
        assert len(await sessions(stack)) == 2


# ------------------------------------------------------------------------------------------------ LangChain


async def test_langchain_chat_openai_invokes_and_streams(stack: Stack) -> None:
    from langchain_openai import ChatOpenAI

    # Our own HTTP clients, closed at the end (ChatOpenAI's default ones are cached for the process).
    async with openai.DefaultAsyncHttpxClient() as async_http:
        with openai.DefaultHttpxClient() as sync_http:
            chat = ChatOpenAI(
                model="orchestratex",
                base_url=stack.openai_base,
                api_key=stack.key_a,  # type: ignore[arg-type]
                max_retries=0,
                extra_body={"orchestratex": {"max_rounds": 1}},
                http_client=sync_http,
                http_async_client=async_http,
            )
            answer = await asyncio.to_thread(chat.invoke, f"{PROMPT} ({uuid.uuid4().hex[:8]})")
            assert isinstance(answer.content, str) and answer.content
            assert answer.response_metadata["id"].startswith("chatcmpl-")
            pieces = [chunk.content async for chunk in chat.astream(f"{PROMPT} ({uuid.uuid4().hex[:8]})")]
            assert "".join(str(p) for p in pieces)
    assert len(await sessions(stack)) == 2


# -------------------------------------------------------------------------------------------------- litellm

_LOOPBACK = ("127.", "::1", "localhost")


@pytest.fixture
def offline(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[str]]:
    """The network beyond loopback refused (name lookups and TCP connects from Python), and every attempt
    recorded: litellm must work without the internet, and must not even try (it would swallow the error)."""
    attempts: list[str] = []
    connect, getaddrinfo = socket.socket.connect, socket.getaddrinfo

    def guarded_connect(sock: socket.socket, address: Any) -> None:
        if sock.family in (socket.AF_INET, socket.AF_INET6) and not str(address[0]).startswith(_LOOPBACK):
            attempts.append(f"connect {address[0]}")
            raise OSError(f"no network in this test: connect to {address[0]}")
        connect(sock, address)

    def guarded_getaddrinfo(host: Any, *args: Any, **kwargs: Any) -> Any:
        name = host.decode() if isinstance(host, bytes) else host
        if name is not None and not str(name).startswith(_LOOPBACK):
            attempts.append(f"lookup {name}")
            raise OSError(f"no network in this test: look up {name}")
        return getaddrinfo(host, *args, **kwargs)

    monkeypatch.setattr(socket.socket, "connect", guarded_connect)
    monkeypatch.setattr(socket, "getaddrinfo", guarded_getaddrinfo)
    # Read when litellm is imported: its bundled price map, not a download from GitHub.
    monkeypatch.setenv("LITELLM_LOCAL_MODEL_COST_MAP", "True")
    monkeypatch.setenv("LITELLM_TELEMETRY", "False")
    yield attempts


def _litellm(stack: Stack) -> dict[str, Any]:
    """What litellm needs to call us: an ``openai/`` model, our base URL and a gateway key."""
    return {"model": "openai/orchestratex", "api_base": stack.openai_base, "api_key": stack.key_a, "num_retries": 0}


async def test_litellm_completes_and_streams_offline(stack: Stack, offline: list[str]) -> None:
    import litellm

    def run() -> tuple[Any, list[Any]]:
        completion = litellm.completion(
            **_litellm(stack), messages=messages(), extra_body={"orchestratex": {"max_rounds": 1}}
        )
        chunks = list(
            litellm.completion(
                **_litellm(stack),
                messages=messages(),
                stream=True,
                stream_options={"include_usage": True},
                temperature=0.2,
                max_tokens=500,
                extra_body={"orchestratex": {"max_rounds": 1}},
            )
        )
        return completion, chunks

    completion, chunks = await asyncio.to_thread(run)
    session_id = completion.id.removeprefix("chatcmpl-")
    # litellm keeps the response headers, prefixed, among its hidden parameters.
    headers = completion._hidden_params["additional_headers"]
    assert headers["llm_provider-x-orchestratex-session-id"] == session_id
    _, found = await session_of(stack, session_id)
    assert completion.choices[0].message.content == found["session"]["result"]["final_text"]
    assert completion.choices[0].finish_reason == "stop"
    assert "Selected " in completion.choices[0].message.reasoning_content
    assert completion.usage.total_tokens > 0
    assert completion.usage.cost == pytest.approx(found["session"]["result"]["total_cost_usd"])

    reasoning = "".join(getattr(c.choices[0].delta, "reasoning_content", None) or "" for c in chunks if c.choices)
    content = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert "Selected " in reasoning and " scores " in reasoning and content
    streamed = chunks[0].id.removeprefix("chatcmpl-")
    _, found = await session_of(stack, streamed)
    assert content == found["session"]["result"]["final_text"]
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "stop"
    assert chunks[-1].usage.cost == pytest.approx(found["session"]["result"]["total_cost_usd"])
    assert len(await sessions(stack)) == 2
    assert offline == []


async def test_litellm_async_streams_passes_through_and_raises_offline(stack: Stack, offline: list[str]) -> None:
    import litellm

    stream = await litellm.acompletion(**_litellm(stack), messages=messages(), stream=True)
    kinds = []
    async for chunk in stream:
        for choice in chunk.choices:
            reasoning = getattr(choice.delta, "reasoning_content", None)
            kinds.append("reasoning" if reasoning else "content" if choice.delta.content else "-")
    assert kinds.index("content") > kinds.index("reasoning")
    assert "reasoning" not in kinds[kinds.index("content") :]

    # A plain catalogue id through the same base URL: one call, no session.
    async with openai.AsyncOpenAI(base_url=stack.openai_base, api_key=stack.key_a, max_retries=0) as client:
        models = [m.id async for m in client.models.list()]
    plain = next(m for m in models if not m.startswith("orchestratex"))
    single = await litellm.acompletion(
        **{**_litellm(stack), "model": f"openai/{plain}"}, messages=messages(), max_tokens=200
    )
    assert single.model.endswith(plain) and single.choices[0].message.content
    assert len(await sessions(stack)) == 1

    # Our errors arrive as litellm's typed exceptions (its mapping of the status codes).
    with pytest.raises(litellm.exceptions.BadRequestError, match="critic_count"):
        await litellm.acompletion(
            **_litellm(stack), messages=messages(), extra_body={"orchestratex": {"critic_count": 9}}
        )
    with pytest.raises(litellm.exceptions.NotFoundError, match="gpt-4o"):
        await litellm.acompletion(**{**_litellm(stack), "model": "openai/gpt-4o"}, messages=messages())
    with pytest.raises(litellm.exceptions.AuthenticationError):
        await litellm.acompletion(**{**_litellm(stack), "api_key": "orx_wrong"}, messages=messages())
    assert offline == []


# ---------------------------------------------------------------------------------------------------- curl


@pytest.mark.skipif(shutil.which("curl") is None, reason="curl is not installed")
async def test_curl_streams_with_n(stack: Stack) -> None:
    body = '{"model": "orchestratex", "stream": true, "messages": [{"role": "user", "content": "Say hello"}]}'
    proc = await asyncio.create_subprocess_exec(
        "curl",
        "-sN",
        "--fail-with-body",
        "-H",
        f"Authorization: Bearer {stack.key_a}",
        "-H",
        "Content-Type: application/json",
        "-d",
        body,
        f"{stack.openai_base}/chat/completions",
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode == 0, err
    text = out.decode()
    assert text.rstrip().endswith("data: [DONE]")
    assert '"reasoning_content":"Selected ' in text and '"content":"' in text
