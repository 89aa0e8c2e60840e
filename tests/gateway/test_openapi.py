"""SSE, feedback and analytics endpoints; every real response validated against the OpenAPI 3.1 document."""

from __future__ import annotations

import io
import re
from typing import Any

import jsonschema
import pytest
from aiohttp.test_utils import TestClient

from gateway.openapi import document

from .conftest import GatewayFactory, Peers, wait_until
from .test_ws import recv

Client = TestClient[Any, Any]

DOC = document()
VALIDATOR_CLS = jsonschema.Draft202012Validator


def check_response(method: str, path: str, status: int, body: Any) -> None:
    """Validate ``body`` against the schema documented for (method, path, status)."""
    template = next((t for t in DOC["paths"] if _matches(t, path)), None)
    assert template is not None, f"{path} is not documented"
    operation = DOC["paths"][template][method.lower()]
    responses = operation["responses"]
    documented = responses.get(str(status)) or responses.get("default")
    assert documented is not None, f"{method} {template} does not document {status}"
    content = documented.get("content", {}).get("application/json")
    assert content is not None, f"{method} {template} {status} has no JSON schema"
    schema = {**content["schema"], "components": DOC["components"]}
    VALIDATOR_CLS(schema).validate(body)


def _matches(template: str, path: str) -> bool:
    pattern = "^" + re.sub(r"\\\{[a-z]+\\\}", "[^/:]+", re.escape(template)) + "$"
    return re.match(pattern, path.split("?", maxsplit=1)[0]) is not None


async def call(client: Client, method: str, path: str, status: int, **kwargs: Any) -> Any:
    response = await client.request(method, path, **kwargs)
    assert response.status == status, await response.text()
    body = await response.json()
    check_response(method, path, status, body)
    return body


def test_the_document_is_a_valid_openapi_31_document() -> None:
    assert DOC["openapi"].startswith("3.1")
    VALIDATOR_CLS.check_schema({"components": DOC["components"], "$ref": "#/components/schemas/Error"})
    for name, schema in DOC["components"]["schemas"].items():
        VALIDATOR_CLS.check_schema(schema), name
    ids = [op["operationId"] for item in DOC["paths"].values() for op in item.values()]
    assert len(ids) == len(set(ids))


def test_the_document_passes_the_openapi_31_meta_schema() -> None:
    """Schemathesis's loader validates against the official OpenAPI 3.1 schema (3.2 keywords such as
    ``itemSchema`` are refused there)."""
    import schemathesis

    schemathesis.openapi.from_dict(DOC).validate()


def test_every_name_in_the_document_is_snake_case() -> None:
    """One JSON naming convention: body fields, response fields and query parameters are snake_case."""
    snake = re.compile(r"^[a-z][a-z0-9_]*$")
    names: list[str] = []

    def walk(node: Any) -> None:
        if isinstance(node, dict):
            names.extend(node.get("properties", {}))
            names.extend(node.get("required", []))
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)

    walk(DOC["components"]["schemas"])
    for item in DOC["paths"].values():
        for operation in item.values():
            names.extend(p["name"] for p in operation.get("parameters", []) if p["in"] == "query")
            walk(operation.get("responses", {}))
    assert names and [n for n in names if not snake.match(n)] == []
    links = [
        link["parameters"]["id"]
        for link in DOC["paths"]["/v1/orchestrations"]["post"]["responses"]["201"]["links"].values()
    ]
    assert set(links) == {"$response.body#/session_id"}


async def test_every_route_is_documented(client: Client) -> None:
    documented = {(m.upper(), p) for p, item in DOC["paths"].items() for m in item}
    for route in client.app.router.routes():
        if route.method in ("HEAD", "OPTIONS"):
            continue
        info = route.resource.get_info() if route.resource is not None else {}
        raw = info.get("path") or info.get("formatter")
        assert raw is not None
        path = re.sub(r"\{([a-z]+)(:[^}]*)?\}", r"{\1}", raw)
        if path == "/v1/ws":
            # A WebSocket protocol is beyond OpenAPI; the document points to docs/gateway.md instead.
            assert "/v1/ws" in DOC["info"]["description"]
            continue
        assert (route.method, path) in documented, (route.method, path)
    served = await client.get("/v1/openapi.json")
    assert served.status == 200 and await served.json() == DOC


async def completed_session(client: Client) -> str:
    """Run a whole scripted session over the WebSocket (the fake completes only while streamed)."""
    async with client.ws_connect("/v1/ws") as ws:
        await ws.send_json({"type": "orchestrate", "request": {"prompt": "complete it", "detached": True}})
        session_id: str = (await recv(ws))["session_id"]
        while (await recv(ws))["type"] != "end":
            pass
    return session_id


async def test_rest_responses_match_the_document(client: Client, peers: Peers) -> None:
    await call(client, "POST", "/v1/orchestrations", 201, json={"prompt": "complete doc check"})
    session_id = await completed_session(client)
    await call(
        client, "GET", "/v1/orchestrations", 200, params={"page_size": "5", "start_time": "2025-01-01T00:00:00Z"}
    )
    await call(client, "GET", f"/v1/orchestrations/{session_id}", 200)
    await call(client, "POST", f"/v1/orchestrations/{session_id}:cancel", 200)
    await call(client, "GET", "/v1/models", 200)
    feedback = await call(
        client, "POST", f"/v1/orchestrations/{session_id}/feedback", 200, json={"rating": 5, "userId": "u1"}
    )
    assert feedback["feedback"]["rating"] == 5 and feedback["feedback"]["user_id"] == "u1"
    perf = await call(client, "GET", "/v1/analytics/performance", 200, params={"domain": "coding", "model": "m"})
    assert perf["models"][0]["ttft_p50"] == "0.250s"
    assert peers.analytics is not None and peers.analytics.requests[-1].domain == 1
    await call(client, "GET", "/v1/analytics/costs", 200, params={"session_limit": "10"})
    await call(client, "GET", "/v1/analytics/selection-accuracy", 200)
    await call(client, "GET", "/v1/analytics/satisfaction", 200, params={"endTime": "2030-01-01T00:00:00Z"})
    await call(client, "GET", "/healthz", 200)
    await call(client, "GET", "/readyz", 200)


@pytest.mark.parametrize(
    ("method", "path", "kwargs", "status", "field"),
    [
        ("POST", "/v1/orchestrations", {"data": b"{"}, 400, "body"),
        ("POST", "/v1/orchestrations", {"json": {"prompt": " "}}, 400, "prompt"),
        ("POST", "/v1/orchestrations", {"json": {"prompt": "invalid"}}, 400, "max_rounds"),
        ("GET", "/v1/orchestrations?page_size=x", {}, 400, "page_size"),
        ("GET", "/v1/orchestrations?startTime=yesterday", {}, 400, "startTime"),
        ("GET", "/v1/orchestrations/sess-missing", {}, 404, None),
        ("GET", "/v1/orchestrations/sess-missing/events", {}, 404, None),
        ("POST", "/v1/orchestrations/sess-missing/feedback", {"json": {"rating": 4}}, 404, None),
        ("POST", "/v1/orchestrations/s1/feedback", {"json": {"rating": 9}}, 400, "rating"),
        ("POST", "/v1/orchestrations/s1/feedback", {"json": {"comment": "no rating"}}, 400, "rating"),
        ("POST", "/v1/orchestrations/s1/feedback", {"json": {"rating": 3, "comment": 5}}, 400, "comment"),
        ("POST", "/v1/orchestrations/s1/feedback", {"json": {"rating": 3, "stars": 5}}, 400, "stars"),
        ("GET", "/v1/analytics/performance?domain=cooking", {}, 400, "domain"),
        ("GET", "/v1/analytics/costs?session_limit=0", {}, 400, "session_limit"),
        ("GET", "/v1/analytics/satisfaction?end_time=nope", {}, 400, "end_time"),
        ("POST", "/v1/orchestrations", {"data": io.BytesIO(b"x" * (1024 * 1024 + 10))}, 413, "body"),
    ],
)
async def test_error_responses_match_the_document(
    client: Client, method: str, path: str, kwargs: dict[str, Any], status: int, field: str | None
) -> None:
    body = await call(client, method, path, status, **kwargs)
    assert body["error"]["status"] == status
    assert body["error"].get("field") == field
    if field:
        assert field in body["error"]["message"]


async def test_the_websocket_endpoint_without_an_upgrade_is_426(client: Client) -> None:
    response = await client.get("/v1/ws")
    assert response.status == 426 and response.headers["Upgrade"] == "websocket"
    body = await response.json()
    VALIDATOR_CLS({**DOC["components"]["schemas"]["Error"], "components": DOC["components"]}).validate(body)


async def test_feedback_on_a_running_session_is_409(client: Client, peers: Peers) -> None:
    started = await call(client, "POST", "/v1/orchestrations", 201, json={"prompt": "block fb"})
    body = await call(client, "POST", f"/v1/orchestrations/{started['session_id']}/feedback", 409, json={"rating": 2})
    assert body["error"]["code"] == "FAILED_PRECONDITION"


# ---- Server-Sent Events --------------------------------------------------------------------------


def parse_sse(text: str) -> list[dict[str, str]]:
    events = []
    for block in text.split("\n\n"):
        fields: dict[str, str] = {}
        for line in block.splitlines():
            if line.startswith(":") or not line:
                continue
            name, _, value = line.partition(":")
            fields[name] = value.removeprefix(" ")
        if fields:
            events.append(fields)
    return events


async def test_sse_streams_a_session_and_resumes(client: Client, peers: Peers) -> None:
    import orjson

    from gateway.events_json import event_to_dict

    session_id = await completed_session(client)
    events = peers.orchestrator.sessions[session_id].events
    response = await client.get(f"/v1/orchestrations/{session_id}/events")
    assert response.status == 200 and response.content_type == "text/event-stream"
    blocks = parse_sse(await response.text())
    assert blocks[0] == {"retry": "2000"}
    data = blocks[1:]
    assert [int(b["id"]) for b in data] == [e.sequence for e in events]
    assert [orjson.loads(b["data"]) for b in data] == [event_to_dict(e) for e in events]
    resumed = await client.get(f"/v1/orchestrations/{session_id}/events", headers={"Last-Event-ID": "7"})
    assert [int(b["id"]) for b in parse_sse(await resumed.text())[1:]] == [8, 9, 10]
    by_query = await client.get(f"/v1/orchestrations/{session_id}/events?after=9")
    assert [int(b["id"]) for b in parse_sse(await by_query.text())[1:]] == [10]
    done = await client.get(f"/v1/orchestrations/{session_id}/events", headers={"Last-Event-ID": "10"})
    assert done.status == 204  # EventSource stops reconnecting
    bad = await client.get(f"/v1/orchestrations/{session_id}/events", headers={"Last-Event-ID": "x"})
    assert bad.status == 400 and (await bad.json())["error"]["field"] == "Last-Event-ID"


async def test_sse_follows_a_live_session_until_its_end(client: Client, peers: Peers) -> None:
    started = await call(client, "POST", "/v1/orchestrations", 201, json={"prompt": "block sse"})
    session_id = started["session_id"]
    response = await client.get(f"/v1/orchestrations/{session_id}/events")
    assert response.status == 200
    first = await response.content.readuntil(b"\n\n")
    assert first == b"retry: 2000\n\n"
    # REST starts drop their stream after the first event; cancelling adds the terminal event,
    # which ends the SSE stream.
    await client.post(f"/v1/orchestrations/{session_id}:cancel")
    blocks = parse_sse((await response.content.read()).decode())
    ids = [int(b["id"]) for b in blocks]
    assert ids == list(range(1, len(ids) + 1)) and len(ids) >= 2
    assert "session_failed" in blocks[-1]["data"]


async def test_sse_heartbeat_and_client_disconnect_stop_the_watch(
    gateway_factory: GatewayFactory, peers: Peers
) -> None:
    from gateway.state import GatewayOptions

    client = await gateway_factory(GatewayOptions(sse_heartbeat=0.05))
    async with client.ws_connect("/v1/ws") as ws:
        await ws.send_json({"type": "orchestrate", "request": {"prompt": "block hb", "detached": True}})
        session_id = (await recv(ws))["session_id"]
    response = await client.get(f"/v1/orchestrations/{session_id}/events")
    seen = b""
    while b": ping" not in seen:
        seen += await response.content.readany()
    response.close()
    await wait_until(peers.orchestrator.watch_stream_cancelled.is_set, what="the watch stream to be cancelled")
    assert peers.orchestrator.sessions[session_id].status == 1  # watching never cancels the session


# ---- found by Schemathesis (long runs) --------------------------------------------------------------


@pytest.mark.parametrize("value", ["", "-0", "+5", "٣"])
async def test_a_last_event_id_that_is_not_a_sequence_is_400(client: Client, value: str) -> None:
    body = await call(client, "GET", "/v1/orchestrations/sess-x/events", 400, headers={"Last-Event-ID": value})
    assert body["error"]["field"] == "Last-Event-ID"


async def test_a_long_non_ascii_page_token_is_a_json_400(client: Client, peers: Peers) -> None:
    # 2,048 characters, 12 KiB once percent-encoded: beyond aiohttp's default 8 KiB request line.
    body = await call(client, "GET", "/v1/orchestrations", 400, params={"page_token": "Å" * 2048})
    assert body["error"]["field"] == "page_token"
    assert peers.orchestrator.list_requests == []
