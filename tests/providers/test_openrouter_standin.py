"""The OpenRouter stand-in speaks the real wire protocol (checked with a raw HTTP client, no SSE parser)."""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator

import httpx
import pytest

from tests.providers.openrouter_standin import (
    DEFAULT_KEY,
    KEEPALIVE,
    OpenRouterStandIn,
    Reply,
    Usage,
    error_reply,
)

AUTH = {"Authorization": f"Bearer {DEFAULT_KEY}"}
BODY = {"model": "z-ai/glm-4.5", "messages": [{"role": "user", "content": "Hi"}], "max_tokens": 50}


@pytest.fixture
async def standin() -> AsyncIterator[OpenRouterStandIn]:
    async with OpenRouterStandIn() as server:
        yield server


async def raw_stream(standin: OpenRouterStandIn, **body: object) -> tuple[httpx.Response, str]:
    async with (
        httpx.AsyncClient() as client,
        client.stream(
            "POST", f"{standin.base_url}/chat/completions", json={**BODY, "stream": True, **body}, headers=AUTH
        ) as response,
    ):
        text = (await response.aread()).decode()
    return response, text


def data_events(text: str) -> list[str]:
    return [line[len("data: ") :] for line in text.replace("\r\n", "\n").split("\n") if line.startswith("data: ")]


async def test_stream_has_keepalives_usage_chunk_with_empty_choices_and_done(standin: OpenRouterStandIn) -> None:
    standin.script.append(Reply(content=["A", "B"], usage=Usage(9, 2, cost=0.000123, cached_tokens=4)))
    response, text = await raw_stream(standin, usage={"include": True}, stream_options={"include_usage": True})
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/event-stream")
    assert response.headers["x-generation-id"].startswith("gen-")
    assert text.startswith(f"{KEEPALIVE}\n\n{KEEPALIVE}\n\n")
    events = data_events(text)
    assert events[-1] == "[DONE]"
    chunks = [json.loads(e) for e in events[:-1]]
    assert [c["choices"][0]["delta"].get("content") for c in chunks[1:3]] == ["A", "B"]
    assert chunks[-2]["choices"][0]["finish_reason"] == "stop" and "usage" not in chunks[-2]
    usage_chunk = chunks[-1]
    assert usage_chunk["choices"] == []
    assert usage_chunk["usage"]["cost"] == 0.000123
    assert usage_chunk["usage"]["prompt_tokens_details"]["cached_tokens"] == 4
    assert all(c["id"] == response.headers["x-generation-id"] for c in chunks)


async def test_crlf_usage_on_choice_and_served_model(standin: OpenRouterStandIn) -> None:
    standin.script.append(Reply(crlf=True, usage_on_choice=True, model="z-ai/glm-4.5-air", reasoning=["hm"]))
    _, text = await raw_stream(standin)
    assert "\r\n\r\n" in text and "\n\n" not in text.replace("\r\n", "")
    chunks = [json.loads(e) for e in data_events(text)[:-1]]
    assert {c["model"] for c in chunks} == {"z-ai/glm-4.5-air"}
    assert chunks[1]["choices"][0]["delta"]["reasoning"] == "hm"
    assert chunks[-1]["choices"][0]["finish_reason"] == "stop" and "usage" in chunks[-1]


async def test_mid_stream_error_has_no_done(standin: OpenRouterStandIn) -> None:
    standin.script.append(Reply(error_after=1))
    _, text = await raw_stream(standin)
    events = data_events(text)
    assert "[DONE]" not in events
    last = json.loads(events[-1])
    assert last["error"]["code"] == 502 and last["choices"][0]["finish_reason"] == "error"


async def test_bare_error_event(standin: OpenRouterStandIn) -> None:
    standin.script.append(Reply(error_after=0, bare_error=True))
    _, text = await raw_stream(standin)
    assert data_events(text)[-1] == '{"error":{"message":"Provider returned error","code":502}}'


async def test_errors_non_stream_and_records(standin: OpenRouterStandIn) -> None:
    standin.script.extend([error_reply(429, retry_after=17, reset_ms=1_900_000_000_000), Reply(finish_reason="error")])
    async with httpx.AsyncClient() as client:
        limited = await client.post(f"{standin.base_url}/chat/completions", json=BODY, headers=AUTH)
        failed = await client.post(f"{standin.base_url}/chat/completions", json=BODY, headers=AUTH)
        anonymous = await client.post(f"{standin.base_url}/chat/completions", json=BODY)
        unknown = await client.post(f"{standin.base_url}/chat/completions", json={**BODY, "model": "x/y"}, headers=AUTH)
    assert limited.status_code == 429 and limited.headers["retry-after"] == "17"
    assert limited.headers["x-ratelimit-reset"] == "1900000000000"
    assert limited.json()["error"]["code"] == 429
    assert failed.status_code == 200 and failed.json()["choices"][0]["finish_reason"] == "error"
    assert anonymous.status_code == 401 and anonymous.json()["error"]["message"] == "No auth credentials found"
    assert unknown.status_code == 400 and "x/y is not a valid model ID" in unknown.json()["error"]["message"]
    assert [r.body["max_tokens"] for r in standin.chat_requests()] == [50, 50, 50, 50]
    assert standin.chat_requests()[0].key == DEFAULT_KEY


async def test_models_key_and_generation_endpoints(standin: OpenRouterStandIn) -> None:
    async with httpx.AsyncClient() as client:
        done = await client.post(f"{standin.base_url}/chat/completions", json=BODY, headers=AUTH)
        models = await client.get(f"{standin.base_url}/models")
        key = await client.get(f"{standin.base_url}/key", headers=AUTH)
        generation = await client.get(f"{standin.base_url}/generation", params={"id": done.json()["id"]}, headers=AUTH)
        missing = await client.get(f"{standin.base_url}/generation", params={"id": "gen-nope"}, headers=AUTH)
    glm = next(m for m in models.json()["data"] if m["id"] == "z-ai/glm-4.5")
    assert glm["pricing"]["prompt"] == "0.0000006" and glm["top_provider"]["max_completion_tokens"] == 98_304
    assert "max_tokens" in glm["supported_parameters"]
    assert key.json()["data"]["usage"] == pytest.approx(done.json()["usage"]["cost"])
    assert DEFAULT_KEY not in key.text  # the label is masked, as OpenRouter's is
    data = generation.json()["data"]
    assert (data["tokens_prompt"], data["streamed"], data["cancelled"]) == (
        done.json()["usage"]["prompt_tokens"],
        False,
        False,
    )
    assert missing.status_code == 404


async def test_free_models_are_rate_limited_per_minute(standin: OpenRouterStandIn) -> None:
    standin.free_requests_per_minute = 2
    free = {**BODY, "model": "openai/gpt-oss-120b:free"}
    async with httpx.AsyncClient() as client:
        replies = [await client.post(f"{standin.base_url}/chat/completions", json=free, headers=AUTH) for _ in range(3)]
        paid = await client.post(f"{standin.base_url}/chat/completions", json=BODY, headers=AUTH)
    assert [r.status_code for r in replies] == [200, 200, 429]
    assert paid.status_code == 200
    limited = replies[-1]
    assert limited.headers["x-ratelimit-remaining"] == "0"
    assert 0 < int(limited.headers["x-ratelimit-reset"]) / 1000 - time.time() <= 60
    assert limited.json()["error"]["message"] == "Rate limit exceeded: free-models-per-min."
