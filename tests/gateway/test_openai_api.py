"""The OpenAI-compatible surface (``/openai/v1``) through the real gateway, in front of the real services on the
simulator (tests/gateway/live_stack.py), with a plain HTTP client: what goes on the wire.

Every response body is validated against the OpenAPI document's schemas; the sessions the surface starts are
read back over REST (``/v1/orchestrations``) to check the mapping, the tenant and the outcome.
"""

from __future__ import annotations

import asyncio
import io
import json
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import jsonschema
import pytest
from multidict import CIMultiDictProxy

from gateway.openai_stream import Progress
from gateway.openapi import document
from orchestratex.v1 import orchestrator_pb2 as pb

from .live_stack import Stack, poll, running_stack, session_of, sessions

DOC = document()
SESSION_HEADER = "X-OrchestrateX-Session-Id"
PROMPT = "Write a Python function that merges two sorted lists"


def check(component: str, body: Any) -> None:
    """Validate ``body`` against ``components.schemas[component]`` of the OpenAPI document."""
    schema = {"$ref": f"#/components/schemas/{component}", "components": DOC["components"]}
    jsonschema.Draft202012Validator(schema).validate(body)


@pytest.fixture
async def stack(tmp_path: Path) -> AsyncIterator[Stack]:
    async with running_stack(tmp_path) as running:
        yield running


def user(text: str = PROMPT) -> list[dict[str, Any]]:
    return [{"role": "user", "content": f"{text} ({uuid.uuid4().hex[:8]})"}]


async def post(
    stack: Stack, body: Any = None, *, key: str | None = None, data: Any = None, headers: dict[str, str] | None = None
) -> tuple[int, Any, CIMultiDictProxy[str]]:
    """POST /chat/completions: status, parsed body (JSON, or the SSE text of a stream) and headers."""
    auth = {} if key == "" else stack.auth(key)
    async with (
        aiohttp.ClientSession() as http,
        http.post(
            f"{stack.openai_base}/chat/completions",
            json=body if data is None else None,
            data=data,
            headers={**auth, **(headers or {})},
        ) as resp,
    ):
        text = await resp.text()
        if resp.content_type == "text/event-stream":
            return resp.status, text, resp.headers
        return resp.status, (await resp.json(content_type=None)) if text else None, resp.headers


def sse_data(text: str) -> list[Any]:
    """The ``data:`` payloads of an event stream, parsed (``[DONE]`` kept as the string); comments dropped."""
    out: list[Any] = []
    for block in text.replace("\r\n", "\n").split("\n\n"):
        lines = [line[len("data: ") :] for line in block.split("\n") if line.startswith("data: ")]
        if lines:
            payload = "\n".join(lines)
            out.append(payload if payload == "[DONE]" else json.loads(payload))
    return out


def delta_kinds(chunks: list[dict[str, Any]]) -> list[str]:
    """Per chunk: role, reasoning, content, finish or usage (in order, consecutive repeats merged)."""
    kinds: list[str] = []
    for chunk in chunks:
        if not chunk["choices"]:
            kind = "usage"
        else:
            choice = chunk["choices"][0]
            delta = choice["delta"]
            if "role" in delta:
                kind = "role"
            elif choice["finish_reason"]:
                kind = "finish"
            elif "content" in delta:
                kind = "content"
            else:
                kind = "reasoning"
        if not kinds or kinds[-1] != kind:
            kinds.append(kind)
    return kinds


async def catalogue_ids(stack: Stack) -> list[str]:
    async with (
        aiohttp.ClientSession() as http,
        http.get(f"{stack.openai_base}/models", headers=stack.auth()) as resp,
    ):
        return [m["id"] for m in (await resp.json())["data"] if not m["id"].startswith("orchestratex")]


# ------------------------------------------------------------------------------------------------- models


async def test_models_are_orchestratex_pinned_ids_and_catalogue_ids(stack: Stack) -> None:
    async with aiohttp.ClientSession() as http:
        async with http.get(f"{stack.openai_base}/models", headers=stack.auth()) as resp:
            assert resp.status == 200
            listed = await resp.json()
        check("OpenAIModelList", listed)
        ids = [m["id"] for m in listed["data"]]
        plain = [i for i in ids if not i.startswith("orchestratex")]
        assert ids[0] == "orchestratex" and plain
        assert ids == ["orchestratex", *(f"orchestratex/{i}" for i in plain), *plain]
        for model_id in ("orchestratex", f"orchestratex/{plain[0]}", plain[0]):
            async with http.get(f"{stack.openai_base}/models/{model_id}", headers=stack.auth()) as resp:
                assert resp.status == 200, model_id
                model = await resp.json()
            check("OpenAIModel", model)
            assert model["id"] == model_id and model["object"] == "model"
        for unknown in ("gpt-4o", "orchestratex/gpt-4o", "orchestratexx"):
            async with http.get(f"{stack.openai_base}/models/{unknown}", headers=stack.auth()) as resp:
                assert resp.status == 404
                body = await resp.json()
            check("OpenAIError", body)
            assert body["error"]["code"] == "model_not_found" and body["error"]["type"] == "not_found_error"


# ----------------------------------------------------------------------------------------- non-streaming


async def test_a_completion_is_the_session_s_best_answer_with_every_call_s_usage(stack: Stack) -> None:
    messages: list[dict[str, Any]] = [
        {"role": "developer", "content": "Answer with code only."},
        {"role": "user", "content": "Hello"},
        {"role": "assistant", "content": [{"type": "text", "text": "Hi."}, {"type": "text", "text": "Ask away."}]},
        *user(),
    ]
    body = {
        "model": "orchestratex",
        "messages": messages,
        "temperature": 0.4,
        "top_p": 0.9,
        "max_completion_tokens": 700,
        "seed": 7,
        "stop": "END",
        "user": "end-user-1",
        "orchestratex": {"max_rounds": 2, "critic_count": 2, "quality_threshold": 9.5, "optimize_for": "cost"},
    }
    status, completion, headers = await post(stack, body)
    assert status == 200, completion
    check("OpenAIChatCompletion", completion)
    session_id = headers[SESSION_HEADER]
    assert completion["id"] == f"chatcmpl-{session_id}" and completion["orchestratex"]["session_id"] == session_id
    assert completion["model"] == "orchestratex" and completion["object"] == "chat.completion"
    choice = completion["choices"][0]
    assert choice["finish_reason"] == "stop" and choice["message"]["role"] == "assistant"
    progress = choice["message"]["reasoning_content"]
    assert "Selected " in progress and "/10 — " in progress and "Round 1: score" in progress

    # The session, as the same tenant sees it over REST: what was sent, and what it produced.
    code, found = await session_of(stack, session_id)
    assert code == 200
    session = found["session"]
    assert session["status"] == "SESSION_STATUS_COMPLETED"
    result = session["result"]
    assert choice["message"]["content"] == result["final_text"]
    usage = completion["usage"]
    assert usage["total_tokens"] == int(result["usage"]["total_tokens"]) > 0
    assert usage["prompt_tokens"] == int(result["usage"]["prompt_tokens"])
    assert usage["cost"] == pytest.approx(result["total_cost_usd"]) and usage["cost"] > 0
    # Every call is counted, not only the answer's: the critics' calls too.
    assert sum(int(m["calls"]) for m in result["per_model"]) >= 3
    request = session["request"]
    assert [m["role"] for m in request["messages"]] == ["ROLE_SYSTEM", "ROLE_USER", "ROLE_ASSISTANT", "ROLE_USER"]
    assert request["messages"][2]["content"] == "Hi.\nAsk away."
    assert request["messages"][3]["content"] == messages[3]["content"]
    assert request["author_options"] == {
        "temperature": 0.4,
        "top_p": 0.9,
        "max_tokens": 700,
        "seed": "7",
        "stop_sequences": ["END"],
        "end_user": "end-user-1",
    }
    assert request["max_rounds"] == 2 and request["quality_threshold"] == 9.5
    assert request["preferences"] == {"quality_weight": 0.4, "cost_weight": 1.0, "latency_weight": 0.2}
    assert "detached" not in request

    # The session is the tenant's: listed for it, invisible to the other tenant.
    assert session_id in [s["session_id"] for s in await sessions(stack)]
    assert session_id not in [s["session_id"] for s in await sessions(stack, stack.key_b)]
    code, other = await session_of(stack, session_id, stack.key_b)
    assert code == 404 and other["error"]["code"] == "NOT_FOUND"


async def test_reasoning_goes_to_the_field_asked_for_or_nowhere(stack: Stack) -> None:
    for field, expected in (("reasoning", "reasoning"), ("none", None)):
        body = {
            "model": "orchestratex",
            "messages": user(),
            "orchestratex": {"reasoning_field": field, "max_rounds": 1},
        }
        status, completion, _ = await post(stack, body)
        assert status == 200, completion
        check("OpenAIChatCompletion", completion)
        message = completion["choices"][0]["message"]
        assert "reasoning_content" not in message
        assert ("reasoning" in message) == (expected is not None)


async def test_a_pinned_model_is_the_primary_and_is_still_critiqued(stack: Stack) -> None:
    pinned = (await catalogue_ids(stack))[-1]
    body = {"model": f"orchestratex/{pinned}", "messages": user(), "orchestratex": {"max_rounds": 1}}
    status, completion, headers = await post(stack, body)
    assert status == 200, completion
    assert completion["model"] == f"orchestratex/{pinned}"
    _, found = await session_of(stack, headers[SESSION_HEADER])
    session = found["session"]
    assert session["primary_model"] == pinned and session["request"]["preferences"]["pinned_model"] == pinned
    assert f"Selected {pinned}" in completion["choices"][0]["message"]["reasoning_content"]
    assert " scores " in completion["choices"][0]["message"]["reasoning_content"]


async def test_a_catalogue_id_passes_through_as_one_call_without_a_session(stack: Stack) -> None:
    model = (await catalogue_ids(stack))[0]
    before = await sessions(stack)
    status, completion, headers = await post(stack, {"model": model, "messages": user(), "max_tokens": 300})
    assert status == 200, completion
    check("OpenAIChatCompletion", completion)
    assert SESSION_HEADER not in headers and "orchestratex" not in completion
    assert completion["model"] == model and completion["choices"][0]["message"]["content"]
    assert completion["usage"]["completion_tokens"] > 0 and completion["usage"]["cost"] > 0
    status, text, headers = await post(
        stack, {"model": model, "messages": user(), "stream": True, "stream_options": {"include_usage": True}}
    )
    assert status == 200 and headers["Content-Type"].startswith("text/event-stream")
    events = sse_data(text)
    assert events[-1] == "[DONE]"
    chunks = events[:-1]
    for chunk in chunks:
        check("OpenAIChatCompletionChunk", chunk)
    assert delta_kinds(chunks) == ["role", "content", "finish", "usage"]
    assert chunks[-1]["usage"]["total_tokens"] > 0
    assert await sessions(stack) == before


# ------------------------------------------------------------------------------------------------ streaming


async def test_a_stream_is_progress_as_reasoning_then_the_answer_then_usage_then_done(stack: Stack) -> None:
    body = {
        "model": "orchestratex",
        "messages": user(),
        "stream": True,
        "stream_options": {"include_usage": True},
        "orchestratex": {"max_rounds": 2},
    }
    status, text, headers = await post(stack, body)
    assert status == 200 and headers["Content-Type"].startswith("text/event-stream")
    session_id = headers[SESSION_HEADER]
    events = sse_data(text)
    assert events[-1] == "[DONE]" and "[DONE]" not in events[:-1]
    chunks = events[:-1]
    for chunk in chunks:
        check("OpenAIChatCompletionChunk", chunk)
        assert chunk["id"] == f"chatcmpl-{session_id}" and chunk["model"] == "orchestratex"
    assert delta_kinds(chunks) == ["role", "reasoning", "content", "finish", "usage"]
    reasoning = "".join(c["choices"][0]["delta"].get("reasoning_content", "") for c in chunks if c["choices"])
    lines = reasoning.splitlines()
    assert lines[0] == f"OrchestrateX session {session_id} (simulated models)."
    assert lines[1].startswith("Selected ")
    assert any(" scores " in line and "/10 — " in line for line in lines)
    assert any(line.startswith("Round 1: score") for line in lines)
    content = "".join(c["choices"][0]["delta"].get("content", "") for c in chunks if c["choices"])
    finish = chunks[-2]
    assert finish["choices"][0]["finish_reason"] == "stop" and finish["orchestratex"]["session_id"] == session_id
    usage = chunks[-1]["usage"]
    _, found = await session_of(stack, session_id)
    result = found["session"]["result"]
    assert content == result["final_text"]
    assert usage["cost"] == pytest.approx(result["total_cost_usd"]) and usage["total_tokens"] > 0
    # Without include_usage: no usage chunk; with reasoning_field reasoning: OpenRouter's field.
    body = {**body, "stream_options": None, "orchestratex": {"max_rounds": 1, "reasoning_field": "reasoning"}}
    status, text, _ = await post(stack, {**body, "messages": user()})
    chunks = sse_data(text)[:-1]
    assert delta_kinds(chunks) == ["role", "reasoning", "content", "finish"]
    assert all("reasoning_content" not in c["choices"][0]["delta"] for c in chunks)


def test_progress_lines_name_the_selection_each_critic_and_each_decision() -> None:
    progress = Progress()
    event = pb.OrchestrationEvent(
        session_id="s1",
        critique_completed=pb.CritiqueCompleted(
            round=2, critic_model="m/critic", score=6.25, weaknesses=["", "  misses   the empty list  "]
        ),
    )
    assert progress.text(event) == "Round 2: m/critic scores 6.2/10 — misses the empty list\n"
    shadow = pb.OrchestrationEvent(critique_completed=pb.CritiqueCompleted(shadow=True, score=1))
    assert progress.text(shadow) is None
    decided = pb.OrchestrationEvent(
        round_completed=pb.RoundCompleted(
            round=2,
            aggregate_score=7.5,
            score_change=1.25,
            critics_scored=2,
            decision=pb.ROUND_DECISION_CONTINUE,
            reason="below the threshold 8",
        )
    )
    assert progress.text(decided) == "Round 2: score 7.5 (2 critics, +1.2); refining: below the threshold 8\n"
    first = pb.OrchestrationEvent(response_delta=pb.ResponseDelta(round=1, model="m/a", text="x"))
    assert progress.text(first) == "Round 1: m/a is writing the answer…\n"
    assert progress.text(first) is None  # once per round


# ------------------------------------------------------------------------------------------------ bad input


async def _unsupported_cases(stack: Stack) -> list[tuple[str, dict[str, Any] | bytes, int, str | None, str]]:
    plain = (await catalogue_ids(stack))[0]
    m = user()
    return [
        ("malformed JSON", b'{"model": "orchestratex", "messages": [', 400, "body", "invalid_json"),
        ("not an object", b"[1, 2]", 400, "body", "invalid_json"),
        ("no body", b"", 400, "body", "missing_required_parameter"),
        ("no model", {"messages": m}, 400, "model", "missing_required_parameter"),
        ("unknown model", {"model": "gpt-4o", "messages": m}, 404, "model", "model_not_found"),
        ("unknown pinned model", {"model": "orchestratex/gpt-4o", "messages": m}, 404, "model", "model_not_found"),
        ("empty messages", {"model": "orchestratex", "messages": []}, 400, "messages", "invalid_value"),
        ("messages not a list", {"model": "orchestratex", "messages": "hi"}, 400, "messages", "invalid_value"),
        (
            "unknown role",
            {"model": "orchestratex", "messages": [{"role": "robot", "content": "x"}]},
            400,
            "messages[0].role",
            "invalid_value",
        ),
        (
            "tool role",
            {"model": "orchestratex", "messages": [{"role": "tool", "content": "x", "tool_call_id": "1"}, *m]},
            400,
            "messages[0].role",
            "unsupported_value",
        ),
        (
            "last message not the user's",
            {"model": "orchestratex", "messages": [*m, {"role": "assistant", "content": "Sure."}]},
            400,
            "messages[1].role",
            "invalid_value",
        ),
        (
            "blank content",
            {"model": "orchestratex", "messages": [{"role": "user", "content": "  "}]},
            400,
            "messages[0].content",
            "invalid_value",
        ),
        (
            "image part",
            {
                "model": "orchestratex",
                "messages": [
                    {
                        "role": "user",
                        "content": [
                            {"type": "text", "text": "What is this?"},
                            {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA"}},
                        ],
                    }
                ],
            },
            400,
            "messages[0].content[1].type",
            "unsupported_value",
        ),
        (
            "message name",
            {"model": "orchestratex", "messages": [{**m[0], "name": "bob"}]},
            400,
            "messages[0].name",
            "unsupported_parameter",
        ),
        ("tools", {"model": "orchestratex", "messages": m, "tools": []}, 400, "tools", "unsupported_parameter"),
        (
            "tool_choice",
            {"model": plain, "messages": m, "tool_choice": "auto"},
            400,
            "tool_choice",
            "unsupported_parameter",
        ),
        (
            "functions",
            {"model": "orchestratex", "messages": m, "functions": []},
            400,
            "functions",
            "unsupported_parameter",
        ),
        ("n > 1", {"model": "orchestratex", "messages": m, "n": 2}, 400, "n", "unsupported_value"),
        ("logprobs", {"model": "orchestratex", "messages": m, "logprobs": True}, 400, "logprobs", "unsupported_value"),
        (
            "top_logprobs",
            {"model": plain, "messages": m, "top_logprobs": 2},
            400,
            "top_logprobs",
            "unsupported_parameter",
        ),
        ("audio", {"model": "orchestratex", "messages": m, "audio": {}}, 400, "audio", "unsupported_parameter"),
        (
            "modalities",
            {"model": "orchestratex", "messages": m, "modalities": ["text"]},
            400,
            "modalities",
            "unsupported_parameter",
        ),
        (
            "penalty",
            {"model": "orchestratex", "messages": m, "presence_penalty": 0.5},
            400,
            "presence_penalty",
            "unsupported_value",
        ),
        ("unknown key", {"model": "orchestratex", "messages": m, "foo": 1}, 400, "foo", "unknown_parameter"),
        (
            "unknown orchestratex key",
            {"model": "orchestratex", "messages": m, "orchestratex": {"rounds": 2}},
            400,
            "orchestratex.rounds",
            "unknown_parameter",
        ),
        (
            "temperature",
            {"model": "orchestratex", "messages": m, "temperature": 3},
            400,
            "temperature",
            "invalid_value",
        ),
        ("top_p 0", {"model": plain, "messages": m, "top_p": 0}, 400, "top_p", "invalid_value"),
        (
            "both ceilings",
            {"model": "orchestratex", "messages": m, "max_tokens": 5, "max_completion_tokens": 5},
            400,
            "max_completion_tokens",
            "invalid_value",
        ),
        ("five stops", {"model": "orchestratex", "messages": m, "stop": list("abcde")}, 400, "stop", "invalid_value"),
        (
            "response_format",
            {"model": "orchestratex", "messages": m, "response_format": {"type": "xml"}},
            400,
            "response_format",
            "invalid_value",
        ),
        (
            "loop settings on a pass-through model",
            {"model": plain, "messages": m, "orchestratex": {"max_rounds": 2}},
            400,
            "orchestratex.max_rounds",
            "unsupported_parameter",
        ),
        (
            "max_rounds out of range",
            {"model": "orchestratex", "messages": m, "orchestratex": {"max_rounds": 11}},
            400,
            "orchestratex.max_rounds",
            "invalid_value",
        ),
        # Rules across fields: the orchestrator's (its BadRequest field, named as the client named it).
        (
            "no critic but two rounds",
            {"model": "orchestratex", "messages": m, "orchestratex": {"critic_count": 0, "max_rounds": 2}},
            400,
            "orchestratex.critic_count",
            "invalid_value",
        ),
        (
            "pinned twice",
            {
                "model": f"orchestratex/{plain}",
                "messages": m,
                "orchestratex": {"preferences": {"pinned_model": "other/model"}},
            },
            400,
            "orchestratex.preferences.pinned_model",
            "invalid_value",
        ),
        (
            "max_tokens above the pinned model's ceiling",
            {"model": f"orchestratex/{plain}", "messages": m, "max_tokens": 10_000_000},
            400,
            "max_tokens",
            "invalid_value",
        ),
        # The providers' checks, for a pass-through model.
        (
            "max_completion_tokens above the model's ceiling",
            {"model": plain, "messages": m, "max_completion_tokens": 10_000_000},
            400,
            "max_completion_tokens",
            "invalid_value",
        ),
    ]


async def test_bad_input_is_400_or_404_in_openai_s_shape_naming_the_parameter(stack: Stack) -> None:
    failures = []
    for name, body, status, param, code in await _unsupported_cases(stack):
        if isinstance(body, bytes):
            got, error, _ = await post(stack, data=body, headers={"Content-Type": "application/json"})
        else:
            got, error, _ = await post(stack, body)
        try:
            assert got == status, (got, error)
            check("OpenAIError", error)
            assert error["error"]["param"] == param, error
            assert error["error"]["code"] == code, error
            assert error["error"]["type"] == ("not_found_error" if status == 404 else "invalid_request_error")
            if param not in (None, "body"):
                assert error["error"]["message"].startswith(param + ":"), error
        except AssertionError as exc:
            failures.append(f"{name}: {exc}")
    assert not failures, "\n".join(failures)
    # Nothing was started by any of them.
    assert await sessions(stack) == []


async def test_an_oversize_body_is_413_and_the_connection_closes(stack: Stack) -> None:
    status, error, _ = await post(
        stack, data=io.BytesIO(b"x" * (1024 * 1024 + 10)), headers={"Content-Type": "application/json"}
    )
    assert status == 413
    check("OpenAIError", error)
    assert error["error"]["code"] == "payload_too_large" and error["error"]["param"] == "body"


async def test_a_missing_or_invalid_key_is_401_in_openai_s_shape(stack: Stack) -> None:
    body = {"model": "orchestratex", "messages": user()}
    for key in ("", "orx_not-a-key"):
        status, error, headers = await post(stack, body, key=key)
        assert status == 401, error
        check("OpenAIError", error)
        assert error["error"]["type"] == "authentication_error" and error["error"]["code"] == "invalid_api_key"
        assert headers["WWW-Authenticate"].startswith("Bearer")
        assert (key or "Bearer") not in error["error"]["message"] or not key
    async with aiohttp.ClientSession() as http, http.get(f"{stack.openai_base}/models") as resp:
        assert resp.status == 401
        check("OpenAIError", await resp.json())
    async with aiohttp.ClientSession() as http, http.get(f"{stack.openai_base}/nothing", headers=stack.auth()) as resp:
        assert resp.status == 404
        check("OpenAIError", await resp.json())
    async with (
        aiohttp.ClientSession() as http,
        http.get(f"{stack.openai_base}/chat/completions", headers=stack.auth()) as resp,
    ):
        assert resp.status == 405 and "POST" in resp.headers["Allow"]
        check("OpenAIError", await resp.json())


async def test_the_rate_limit_is_429_with_retry_after(tmp_path: Path) -> None:
    async with running_stack(tmp_path, ORX_GATEWAY_RATE_LIMIT="2") as stack:
        statuses = []
        for _ in range(3):
            status, error, headers = await post(stack, {"model": "gpt-4o", "messages": user()})
            statuses.append(status)
        assert statuses == [404, 404, 429]
        check("OpenAIError", error)
        assert error["error"]["type"] == "rate_limit_error" and error["error"]["code"] == "rate_limit_exceeded"
        assert int(headers["Retry-After"]) >= 1


async def test_a_provider_s_rate_limit_is_429_with_its_retryinfo_delay(tmp_path: Path) -> None:
    async with running_stack(tmp_path, ORX_PROVIDER_RPM="1", ORX_PROVIDER_QUEUE="0") as stack:
        model = (await catalogue_ids(stack))[0]
        status, _, _ = await post(stack, {"model": model, "messages": user()})
        assert status == 200
        status, error, headers = await post(stack, {"model": model, "messages": user()})
        assert status == 429, error
        check("OpenAIError", error)
        assert error["error"]["type"] == "rate_limit_error"
        # The providers' RetryInfo (a minute for one request a minute), not a guess.
        assert 50 <= int(headers["Retry-After"]) <= 60


async def test_a_service_down_is_503(stack: Stack) -> None:
    await stack.servers["orchestrator"].stop(0)
    status, error, _ = await post(stack, {"model": "orchestratex", "messages": user()})
    assert status == 503, error
    check("OpenAIError", error)
    assert error["error"]["type"] == "server_error" and error["error"]["code"] == "service_unavailable"
    assert "127.0.0.1" not in error["error"]["message"]


# ----------------------------------------------------------------------------------------------- disconnect


async def test_closing_the_connection_cancels_the_session(tmp_path: Path) -> None:
    """Streaming and not: when the client goes away, the Orchestrate call is cancelled and so is the session."""
    async with running_stack(tmp_path, sim_speed=0.5, heartbeat=0.05) as stack:
        body = {"model": "orchestratex", "messages": user(), "stream": True}
        async with aiohttp.ClientSession() as http:
            resp = await http.post(f"{stack.openai_base}/chat/completions", json=body, headers=stack.auth())
            assert resp.status == 200
            session_id = resp.headers[SESSION_HEADER]
            seen = b""
            while b": keep-alive" not in seen or b"Selected " not in seen:
                seen += await asyncio.wait_for(resp.content.readany(), 10)
            resp.close()  # drops the connection
        await _cancelled(stack, session_id)

        # Not streaming: the client gives up while the session runs.
        async with aiohttp.ClientSession() as http:
            request = asyncio.create_task(
                http.post(
                    f"{stack.openai_base}/chat/completions",
                    json={"model": "orchestratex", "messages": user()},
                    headers=stack.auth(),
                )
            )

            async def started() -> bool:
                return any(s["status"] == "SESSION_STATUS_RUNNING" for s in await sessions(stack))

            await poll(started, "the second session starts")
            request.cancel()
            await asyncio.gather(request, return_exceptions=True)
        second = next(s["session_id"] for s in await sessions(stack) if s["session_id"] != session_id)
        await _cancelled(stack, second)


async def _cancelled(stack: Stack, session_id: str) -> None:
    async def cancelled() -> bool:
        _, found = await session_of(stack, session_id)
        status = found["session"]["status"]
        assert status in ("SESSION_STATUS_RUNNING", "SESSION_STATUS_CANCELLED"), status
        return bool(status == "SESSION_STATUS_CANCELLED")

    await poll(cancelled, f"session {session_id} is cancelled")
