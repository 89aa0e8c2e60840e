"""Provider keys never leak: not in logs, responses, events, errors, trailers — even when the vendor echoes them.

Calls go through the real providers gRPC server in live mode, against the OpenRouter stand-in, with a
recognisable key. The only place the key may appear is the ``Authorization`` header the stand-in received.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import quote_plus

import grpc
import pytest

from orchestratex.logging import JsonFormatter, TextFormatter
from orchestratex.v1 import providers_pb2
from tests.providers.helpers import collect, request
from tests.providers.leaks import ENCODINGS, Leaks
from tests.providers.openrouter_standin import OpenRouterStandIn, Reply, error_body, error_reply, live_providers


async def test_the_key_appears_nowhere_but_the_authorization_header(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    key = f"sk-or-v1-LEAKCANARY{uuid.uuid4().hex}{uuid.uuid4().hex}"
    caplog.set_level(logging.DEBUG)
    outputs: list[str] = []

    def keep(value: Any) -> None:
        outputs.append(str(value))

    def keep_error(err: grpc.aio.AioRpcError | None) -> None:
        assert err is not None
        keep(err.code())
        keep(err.details())
        keep(err.debug_error_string())
        keep(err.initial_metadata())
        keep(err.trailing_metadata())
        keep(repr(err))

    # (what the stand-in does, how it is called: "stream" or "unary"). Each call sets the stand-in's
    # default reply, so a retrying server would meet the same behaviour on every attempt.
    cases: list[tuple[Reply, str]] = [
        (Reply(), "stream"),
        (Reply(reasoning=["ok"]), "unary"),
        (error_reply(401, echo_auth=True), "unary"),  # a careless vendor echoes the key it rejected
        (error_reply(402, echo_auth=True), "stream"),
        (error_reply(500), "unary"),
        (
            error_reply(
                502,
                metadata={"raw": f'{{"error":{{"message":"upstream rejected key {key}"}}}}', "provider_name": "Echo"},
            ),
            "stream",
        ),
        (error_reply(403, reasons=[f"flagged {key}"]), "unary"),
        (Reply(error_after=2, error=error_body(502, f"stream died; key was {key}")), "stream"),  # mid-stream
        (Reply(error_after=2, error=error_body(502, f"stream died; key was {key}")), "unary"),
        (Reply(hang_after=0, keepalive_while_hung=True), "unary"),  # timeout before the first token
        (Reply(hang_after=0, keepalive_while_hung=True), "stream"),
    ]
    codes: list[grpc.StatusCode] = []
    async with OpenRouterStandIn(api_key=key) as standin:
        async with live_providers(standin, tmp_path, key=key, ORX_FIRST_TOKEN_TIMEOUT="0.3") as live:
            keep(repr(live.settings))
            keep(await live.stub.ListModels(providers_pb2.ListModelsRequest()))
            for reply, mode in cases:
                standin.default = reply
                if mode == "stream":
                    events, err = await collect(live.stub, request())
                    keep(events)
                    if err is not None:
                        keep_error(err)
                else:
                    try:
                        keep(await live.stub.Generate(request()))
                        err = None
                    except grpc.aio.AioRpcError as exc:
                        err = exc
                        keep_error(err)
                codes.append(err.code() if err is not None else grpc.StatusCode.OK)

        # Every behaviour was really exercised, and the vendor did put the key in its replies.
        assert codes == [
            grpc.StatusCode.OK,
            grpc.StatusCode.OK,
            grpc.StatusCode.UNAUTHENTICATED,
            grpc.StatusCode.FAILED_PRECONDITION,
            grpc.StatusCode.UNAVAILABLE,
            grpc.StatusCode.UNAVAILABLE,
            grpc.StatusCode.PERMISSION_DENIED,
            grpc.StatusCode.UNAVAILABLE,
            grpc.StatusCode.UNAVAILABLE,
            grpc.StatusCode.DEADLINE_EXCEEDED,
            grpc.StatusCode.DEADLINE_EXCEEDED,
        ]
        assert len(standin.chat_requests()) >= len(cases)
        for sent in standin.chat_requests():
            assert sent.headers["Authorization"] == f"Bearer {key}"
            others = [f"{name}: {value}" for name, value in sent.headers.items() if name.lower() != "authorization"]
            assert key not in "\n".join(others)
            assert key.encode() not in sent.raw and key not in sent.path and key not in str(sent.query)
        requests_seen = [str(r.body) for r in standin.requests]

    formatter = logging.Formatter("%(name)s %(levelname)s %(message)s")
    log_text = [formatter.format(record) for record in caplog.records]
    log_text += [str(record.__dict__) for record in caplog.records]
    assert any("openrouter call to z-ai/glm-4.5 failed: HTTP 401" in line for line in log_text)
    assert any("openrouter call to z-ai/glm-4.5 timed out (first token)" in line for line in log_text)
    for text in [*outputs, *log_text, *requests_seen]:
        assert key not in text
        assert "LEAKCANARY" not in text
    assert any("[REDACTED]" in text for text in outputs)  # the echoed key was scrubbed, not just absent

    # build() registered the key: even a log line that contained it would be redacted by the formatters.
    record = logging.makeLogRecord({"msg": "oops %s", "args": (key,), "levelno": logging.ERROR})
    assert key not in JsonFormatter("providers").format(record)
    assert key not in TextFormatter("providers").format(record)


# A key with characters that URL encoders escape (+ / =), so every encoding below differs from the raw key.
def _echo_cases() -> dict[str, Callable[[str], str]]:
    cases = {name: ENCODINGS[name] for name in ("raw", "quote", "quote_plus", "quote-lower-hex", "json-escaped-slash")}
    cases["percent-every-byte-lower"] = ENCODINGS["percent-every-byte-lower"]
    cases["json-unicode-every-char"] = ENCODINGS["json-unicode-every-char"]
    cases["without-its-prefix"] = lambda key: key.removeprefix("sk-or-v1-")
    cases["url-encoded-without-its-prefix"] = lambda key: quote_plus(key.removeprefix("sk-or-v1-"))
    cases["a-20-character-fragment"] = lambda key: key[30:50]
    return cases


@pytest.mark.parametrize(("name", "echo"), list(_echo_cases().items()), ids=list(_echo_cases()))
async def test_a_key_echoed_in_any_form_is_scrubbed_end_to_end(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, name: str, echo: Callable[[str], str]
) -> None:
    """The real server against the stand-in, which quotes the key it received (transformed) in its errors.

    Nothing that leaves the service — status details, trailers, StreamFailure messages, log records
    (before any formatter redacts them) — holds 16 consecutive characters of the key in any form.
    """
    key = f"sk-or-v1-{uuid.uuid4().hex}+/={uuid.uuid4().hex}"
    caplog.set_level(logging.DEBUG)
    outputs: list[str] = []
    in_200 = Reply(error_in_200=True, error=error_body(503, "Overloaded"), echo_key=echo)
    calls: list[tuple[Reply, str, grpc.StatusCode]] = [
        (error_reply(402, echo_key=echo), "stream", grpc.StatusCode.FAILED_PRECONDITION),
        (error_reply(500, echo_key=echo), "stream", grpc.StatusCode.UNAVAILABLE),
        (in_200, "unary", grpc.StatusCode.UNAVAILABLE),
        (Reply(error_after=2, echo_key=echo), "stream", grpc.StatusCode.UNAVAILABLE),  # after tokens: StreamFailure
        # Last: a rejected key holds the whole provider for a while, so no later call would reach the vendor.
        (error_reply(401, echo_key=echo), "unary", grpc.StatusCode.UNAUTHENTICATED),
    ]
    async with OpenRouterStandIn(api_key=key) as standin:
        async with live_providers(standin, tmp_path, key=key) as live:
            for reply, mode, code in calls:
                standin.script.append(reply)
                if mode == "stream":
                    events, err = await collect(live.stub, request())
                    outputs.extend(str(e) for e in events)
                else:
                    try:
                        outputs.append(str(await live.stub.Generate(request())))
                        err = None
                    except grpc.aio.AioRpcError as exc:
                        err = exc
                assert err is not None and err.code() == code, (name, reply.status, err)
                outputs += [err.details() or "", err.debug_error_string(), str(err.trailing_metadata())]
        sent = standin.chat_requests()
    assert len(sent) == len(calls) and all(r.key == key for r in sent)
    outputs += [record.getMessage() for record in caplog.records]
    outputs += [str(record.__dict__) for record in caplog.records]
    leaks = Leaks(key)
    for output in outputs:
        assert not leaks.found(output), (name, output)
    assert any("[REDACTED]" in output for output in outputs)  # the echo was there, and was scrubbed
