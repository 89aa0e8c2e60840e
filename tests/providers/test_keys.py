"""Provider keys never leak: not in logs, responses, events, errors, trailers — even when the vendor echoes them.

Calls go through the real providers gRPC server in live mode, against the OpenRouter stand-in, with a
recognisable key. The only place the key may appear is the ``Authorization`` header the stand-in received.
"""

from __future__ import annotations

import logging
import uuid
from pathlib import Path
from typing import Any

import grpc
import pytest

from orchestratex.logging import JsonFormatter, TextFormatter
from orchestratex.v1 import providers_pb2
from tests.providers.helpers import collect, request
from tests.providers.openrouter_standin import OpenRouterStandIn, Reply, error_body, error_reply, live_providers


async def test_the_key_appears_nowhere_but_the_authorization_header(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    key = f"sk-or-v1-LEAKCANARY{uuid.uuid4().hex}{uuid.uuid4().hex}"
    monkeypatch.setenv("ORX_FIRST_TOKEN_TIMEOUT", "0.3")
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
        async with live_providers(standin, tmp_path, key=key) as live:
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
