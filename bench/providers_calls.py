"""One streamed chat call on each path of ``bench.providers_bench``, timed the same way everywhere.

* :func:`sse_caller`: an OpenAI-compatible streamed chat completion over HTTP with aiohttp and a minimal SSE
  reader (split the body on blank lines, ``orjson.loads`` each ``data:`` payload). This is the direct path
  (straight to the stand-in) and the LiteLLM path: a fast client, so that the reference is never what limits
  a run;
* :func:`grpc_caller`: ``ProviderService.StreamGenerate``;
* :func:`http_caller`: the same call with httpx + httpx-sse, the client of earlier runs, kept for
  ``bench.openai_bench``.

Every caller returns a :class:`Sample` and raises :class:`CallError` unless the stream was complete: the whole
reply text, the usage (with the cost where the path reports it) and the end marker (``[DONE]``, ``completed``).
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass

import aiohttp
import httpx
import orjson
from httpx_sse import aconnect_sse

from bench.providers_procs import MODEL
from bench.providers_standin_proc import reply_chunks
from orchestratex.v1 import common_pb2, providers_pb2, providers_pb2_grpc

SYSTEM = "You are a concise senior engineer. Answer in one paragraph."
PROMPT = "Which data structure should a scheduler use to always pick the event with the earliest deadline?"
MAX_TOKENS = 1024


class CallError(Exception):
    """A call that did not deliver a complete, priced stream."""


@dataclass(frozen=True)
class Sample:
    """One streamed call, in seconds from the moment the request was sent.

    ``chunks`` counts the stand-in's content chunks; ``messages`` the messages the client received (gRPC
    responses, or SSE ``data:`` events, the end marker included); ``deltas`` those that carried text.
    ``started`` is when the call began, in seconds since its block began (for throughput windows).
    """

    latency: float
    ttft: float
    chunks: int
    messages: int
    deltas: int = 0
    started: float = 0.0

    @property
    def per_chunk(self) -> float:
        """(latency - TTFT) / (chunks - 1): what each chunk after the first costs."""
        return (self.latency - self.ttft) / (self.chunks - 1)


Call = Callable[[], Awaitable[Sample]]


def chat_body(*, stream: bool = True) -> bytes:
    """The request body of every HTTP path: what the providers service sends upstream for the same request."""
    body: dict[str, object] = {
        "model": MODEL,
        "messages": [{"role": "system", "content": SYSTEM}, {"role": "user", "content": PROMPT}],
        "max_tokens": MAX_TOKENS,
    }
    if stream:
        body.update({"stream": True, "stream_options": {"include_usage": True}})
    return orjson.dumps(body)


def grpc_request() -> providers_pb2.StreamGenerateRequest:
    """The same request for ``StreamGenerate``."""
    return providers_pb2.StreamGenerateRequest(
        request=providers_pb2.GenerateRequest(
            model=MODEL,
            messages=[
                common_pb2.ChatMessage(role=common_pb2.ROLE_SYSTEM, content=SYSTEM),
                common_pb2.ChatMessage(role=common_pb2.ROLE_USER, content=PROMPT),
            ],
            max_tokens=MAX_TOKENS,
        )
    )


def sse_caller(session: aiohttp.ClientSession, url: str, headers: Mapping[str, str], chunks: int) -> Call:
    """A streamed chat completion read with aiohttp and a minimal SSE reader.

    The body is read as it arrives (``iter_any``) and cut into events at blank lines; each ``data:`` payload
    but ``[DONE]`` is decoded with orjson and its content delta collected. Comments (OpenRouter's
    keep-alives) are skipped. The body is read to its end, so the connection goes back to the pool.
    """
    body = chat_body()
    expected = "".join(reply_chunks(chunks))
    sent_headers = dict(headers)

    async def call() -> Sample:
        start = time.perf_counter()
        ttft: float | None = None
        end: float | None = None
        messages = deltas = 0
        text: list[str] = []
        usage: dict[str, object] | None = None
        buffer = b""
        async with session.post(url, data=body, headers=sent_headers) as response:
            if response.status != 200:
                raw = await response.read()
                raise CallError(f"HTTP {response.status}: {raw[:200]!r}")
            async for data in response.content.iter_any():
                buffer += data
                while (cut := buffer.find(b"\n\n")) >= 0:
                    event, buffer = buffer[:cut], buffer[cut + 2 :]
                    for line in event.split(b"\n"):
                        if not line.startswith(b"data:"):
                            continue
                        payload = line[5:].strip()
                        messages += 1
                        if payload == b"[DONE]":
                            end = time.perf_counter()
                            continue
                        chunk = orjson.loads(payload)
                        if chunk.get("error") is not None:
                            raise CallError(f"error event: {chunk['error']}")
                        for choice in chunk.get("choices") or ():
                            content = (choice.get("delta") or {}).get("content")
                            if content:
                                text.append(content)
                                deltas += 1
                                if ttft is None:
                                    ttft = time.perf_counter() - start
                        if isinstance(chunk.get("usage"), dict):
                            usage = chunk["usage"]
        if end is None or ttft is None or usage is None or "".join(text) != expected:
            raise CallError(f"incomplete stream: {deltas} deltas, usage {usage is not None}, [DONE] {end is not None}")
        return Sample(end - start, ttft, chunks, messages, deltas)

    return call


def grpc_caller(stub: providers_pb2_grpc.ProviderServiceStub, chunks: int) -> Call:
    """``StreamGenerate`` through a gRPC ProviderService; ``messages`` counts every response received."""
    request = grpc_request()
    expected = "".join(reply_chunks(chunks))

    async def call() -> Sample:
        start = time.perf_counter()
        ttft: float | None = None
        end: float | None = None
        messages = deltas = 0
        text: list[str] = []
        cost = 0.0
        async for response in stub.StreamGenerate(request, timeout=120):
            messages += 1
            kind = response.WhichOneof("event")
            if kind == "delta":
                if response.delta.text:
                    text.append(response.delta.text)
                    deltas += 1
                    if ttft is None:
                        ttft = time.perf_counter() - start
            elif kind == "completed":
                end = time.perf_counter()
                cost = response.completed.usage.cost_usd
            else:
                raise CallError(f"failed event: {response.failed.message}")
        if end is None or ttft is None or cost <= 0 or "".join(text) != expected:
            raise CallError(f"incomplete stream: {deltas} deltas, cost {cost}, completed {end is not None}")
        return Sample(end - start, ttft, chunks, messages, deltas)

    return call


def http_caller(client: httpx.AsyncClient, url: str, headers: Mapping[str, str], chunks: int) -> Call:
    """A streamed chat completion with httpx + httpx-sse (the client ``bench.openai_bench`` uses)."""
    body = chat_body()
    expected = "".join(reply_chunks(chunks))

    async def call() -> Sample:
        start = time.perf_counter()
        ttft: float | None = None
        end: float | None = None
        messages = deltas = 0
        text: list[str] = []
        cost: float | None = None
        async with aconnect_sse(client, "POST", url, content=body, headers=dict(headers)) as source:
            if source.response.status_code != 200:
                raw = await source.response.aread()
                raise CallError(f"HTTP {source.response.status_code}: {raw[:200]!r}")
            # Read to the end (not just to [DONE]) so the connection goes back to the pool.
            async for sse in source.aiter_sse():
                messages += 1
                if sse.data == "[DONE]":
                    end = time.perf_counter()
                    continue
                chunk = orjson.loads(sse.data)
                if chunk.get("error") is not None:
                    raise CallError(f"error event: {chunk['error']}")
                for choice in chunk.get("choices") or ():
                    content = (choice.get("delta") or {}).get("content")
                    if content:
                        text.append(content)
                        deltas += 1
                        if ttft is None:
                            ttft = time.perf_counter() - start
                usage = chunk.get("usage")
                if isinstance(usage, dict) and usage.get("cost") is not None:
                    cost = float(usage["cost"])
        if end is None or ttft is None or cost is None or "".join(text) != expected:
            raise CallError(f"incomplete stream: {deltas} deltas, cost {cost}, [DONE] {end is not None}")
        return Sample(end - start, ttft, chunks, deltas)

    return call
