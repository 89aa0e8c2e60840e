"""REST endpoints against fake peers: happy paths, error mapping, malformed input."""

from __future__ import annotations

import asyncio
import io
from typing import Any

import grpc
import pytest
from aiohttp.test_utils import TestClient
from google.protobuf import json_format
from google.protobuf.timestamp_pb2 import Timestamp
from grpc_health.v1 import health_pb2

from gateway.errors import GatewayError, from_rpc, http_status
from gateway.state import BACKGROUND
from orchestratex import errors
from orchestratex.v1 import orchestrator_pb2 as pb
from orchestratex.v1 import providers_pb2

from .conftest import GatewayFactory, Peers, make_settings, wait_until

Client = TestClient[Any, Any]


async def error_of(response: Any, status: int) -> dict[str, str]:
    assert response.status == status, await response.text()
    assert response.content_type == "application/json"
    body = await response.json()
    assert set(body) == {"error"}
    assert {"code", "status", "message"} <= set(body["error"]) <= {"code", "status", "message", "field", "retry_after"}
    assert body["error"]["status"] == response.status
    error: dict[str, str] = body["error"]
    return error


# ---- POST /v1/orchestrations ---------------------------------------------------------------------


async def test_create_returns_the_session_id_and_leaves_the_session_running(client: Client, peers: Peers) -> None:
    response = await client.post("/v1/orchestrations", json={"prompt": "block for a while", "criticCount": 1})
    assert response.status == 201
    body = await response.json()
    session_id = body["session_id"]
    assert body == {"session_id": session_id}
    assert response.headers["Location"] == f"/v1/orchestrations/{session_id}"
    upstream = peers.orchestrator.orchestrate_requests[-1]
    assert upstream.detached is True and upstream.critic_count == 1
    # The stream is dropped after the first event, without cancelling the session.
    await asyncio.wait_for(peers.orchestrator.orchestrate_stream_cancelled.wait(), 5)
    assert peers.orchestrator.cancel_requests == []
    assert peers.orchestrator.sessions[session_id].status == pb.SESSION_STATUS_RUNNING


async def test_create_passes_request_ids_to_the_orchestrator(client: Client, peers: Peers) -> None:
    response = await client.post("/v1/orchestrations", json={"prompt": "complete"}, headers={"X-Request-Id": "req-42"})
    assert response.status == 201
    assert response.headers["X-Request-Id"] == "req-42"
    assert peers.orchestrator.request_ids[-1] == "req-42"


@pytest.mark.parametrize(
    ("body", "status", "expected"),
    [
        (b"{oops", 400, "body: malformed JSON"),
        (b"", 400, "body: is required"),
        (b"[]", 400, "body: expected a JSON object, got an array"),
        (b"null", 400, "body: expected a JSON object, got null"),
        (b"{}", 400, "prompt: is required"),
        (b'{"prompt": ""}', 400, "prompt: is required"),
        (b'{"prompt": 5}', 400, "prompt: expected a string"),
        (b'{"prompt": "x", "maxRounds": "lots"}', 400, "maxRounds: expected an integer"),
        (b'{"prompt": "x", "budget": 1}', 400, "budget: unknown field"),
        (
            b'{"prompt": "x", "preferences": {"qualityWeight": "high"}}',
            400,
            "preferences.qualityWeight: expected a number",
        ),
    ],
)
async def test_create_rejects_bad_bodies(client: Client, peers: Peers, body: bytes, status: int, expected: str) -> None:
    response = await client.post("/v1/orchestrations", data=body, headers={"Content-Type": "application/json"})
    error = await error_of(response, status)
    assert error["code"] == "INVALID_ARGUMENT"
    assert expected in error["message"]
    assert peers.orchestrator.orchestrate_requests == []


async def test_create_rejects_a_body_over_the_limit(client: Client, peers: Peers) -> None:
    body = io.BytesIO(b'{"prompt": "' + b"x" * (1024 * 1024) + b'"}')
    response = await client.post("/v1/orchestrations", data=body)
    error = await error_of(response, 413)
    assert error["code"] == "PAYLOAD_TOO_LARGE"
    assert "body" in error["message"]


async def test_create_relays_upstream_invalid_argument(client: Client) -> None:
    response = await client.post("/v1/orchestrations", json={"prompt": "invalid"})
    assert await error_of(response, 400) == {
        "code": "INVALID_ARGUMENT",
        "status": 400,
        "field": "max_rounds",
        "message": "max_rounds: must be in [1, 10], got 99",
    }


async def test_create_with_a_stream_that_ends_without_events(client: Client) -> None:
    response = await client.post("/v1/orchestrations", json={"prompt": "empty"})
    error = await error_of(response, 502)
    assert error["code"] == "UNKNOWN"
    assert "before its first event" in error["message"]


async def test_orchestrator_down_is_503_with_a_clean_message(gateway_factory: GatewayFactory, tmp_path: Any) -> None:
    settings = make_settings(tmp_path, ORX_ORCHESTRATOR_ADDR="127.0.0.1:1", ORX_PROVIDERS_ADDR="127.0.0.1:1")
    client = await gateway_factory(settings_=settings)
    response = await client.post("/v1/orchestrations", json={"prompt": "hello"})
    assert await error_of(response, 503) == {
        "code": "UNAVAILABLE",
        "status": 503,
        "message": "the orchestrator service is unavailable; try again later",
    }
    response = await client.get("/v1/models")
    error = await error_of(response, 503)
    assert error["message"] == "the providers service is unavailable; try again later"


# ---- sessions ------------------------------------------------------------------------------------


async def test_get_list_and_cancel_sessions(client: Client, peers: Peers) -> None:
    created = await client.post("/v1/orchestrations", json={"prompt": "block", "threadId": "t-1"})
    session_id = (await created.json())["session_id"]

    got = await client.get(f"/v1/orchestrations/{session_id}")
    assert got.status == 200
    expected = pb.GetSessionResponse(session=peers.orchestrator.sessions[session_id].proto())
    assert await got.json() == json_format.MessageToDict(expected, preserving_proto_field_name=True)

    listed = await client.get("/v1/orchestrations?page_size=5&page_token=abc&status=running&thread_id=t-1")
    assert listed.status == 200
    body = await listed.json()
    assert [s["session_id"] for s in body["sessions"]] == [session_id]
    assert body["next_page_token"] == "page-2"
    sent = peers.orchestrator.list_requests[-1]
    assert (sent.page_size, sent.page_token, sent.status, sent.thread_id) == (
        5,
        "abc",
        pb.SESSION_STATUS_RUNNING,
        "t-1",
    )

    cancelled = await client.post(f"/v1/orchestrations/{session_id}:cancel", json={"reason": "changed my mind"})
    assert cancelled.status == 200
    assert (await cancelled.json())["session"]["status"] == "SESSION_STATUS_CANCELLED"
    assert [(r.session_id, r.reason) for r in peers.orchestrator.cancel_requests] == [(session_id, "changed my mind")]


async def test_cancel_without_a_body_uses_a_default_reason(client: Client, peers: Peers) -> None:
    created = await client.post("/v1/orchestrations", json={"prompt": "block"})
    session_id = (await created.json())["session_id"]
    response = await client.post(f"/v1/orchestrations/{session_id}:cancel")
    assert response.status == 200
    assert peers.orchestrator.cancel_requests[-1].reason == "cancelled over the REST API"


async def test_list_accepts_camel_case_parameters_and_maps_the_time_range(client: Client, peers: Peers) -> None:
    query = "pageSize=5&pageToken=abc&threadId=t-1&startTime=2025-01-01T00:00:00Z&endTime=2025-02-01T00:00:00Z"
    assert (await client.get(f"/v1/orchestrations?{query}")).status == 200
    sent = peers.orchestrator.list_requests[-1]
    assert (sent.page_size, sent.page_token, sent.thread_id) == (5, "abc", "t-1")
    assert sent.range.start_time.ToJsonString() == "2025-01-01T00:00:00Z"
    assert sent.range.end_time.ToJsonString() == "2025-02-01T00:00:00Z"
    assert (await client.get("/v1/orchestrations?end_time=2025-02-01T00:00:00Z")).status == 200
    sent = peers.orchestrator.list_requests[-1]
    assert sent.HasField("range") and not sent.range.HasField("start_time")
    assert (await client.get("/v1/orchestrations")).status == 200
    assert not peers.orchestrator.list_requests[-1].HasField("range")
    both = await error_of(await client.get("/v1/orchestrations?page_size=5&pageSize=5"), 400)
    assert both["field"] == "pageSize" and "given twice" in both["message"]


async def test_list_passes_the_search_text_as_written(client: Client, peers: Peers) -> None:
    assert (await client.get("/v1/orchestrations?q=Write%20a%20HAIKU%20%25_*")).status == 200
    assert peers.orchestrator.list_requests[-1].prompt_contains == "Write a HAIKU %_*"
    assert (await client.get("/v1/orchestrations")).status == 200
    assert peers.orchestrator.list_requests[-1].prompt_contains == ""


async def test_list_with_full_status_name(client: Client, peers: Peers) -> None:
    response = await client.get("/v1/orchestrations?status=SESSION_STATUS_FAILED")
    assert response.status == 200
    assert await response.json() == {}  # proto3 JSON omits the empty list and token
    assert peers.orchestrator.list_requests[-1].status == pb.SESSION_STATUS_FAILED


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        ("page_size=ten", "page_size: expected an integer"),
        ("page_size=-1", "page_size: must be between 1 and 100"),
        ("pageSize=0", "pageSize: must be between 1 and 100"),  # errors name the parameter as it was spelt
        ("status=", "status: unknown status ''"),
        ("status=RUNNING", "status: unknown status"),
        ("status=sleeping", "status: unknown status 'sleeping'"),
        ("page_token=" + "t" * 3000, "page_token: is 3,000 characters"),
        ("q=" + "x" * 201, "q: is 201 characters; the limit is 200"),
    ],
)
async def test_list_rejects_bad_query_parameters(client: Client, peers: Peers, query: str, expected: str) -> None:
    error = await error_of(await client.get(f"/v1/orchestrations?{query}"), 400)
    assert error["code"] == "INVALID_ARGUMENT"
    assert expected in error["message"]
    assert peers.orchestrator.list_requests == []


async def test_unknown_session_is_404(client: Client) -> None:
    assert await error_of(await client.get("/v1/orchestrations/sess-missing"), 404) == {
        "code": "NOT_FOUND",
        "status": 404,
        "message": "session 'sess-missing' not found",
    }
    error = await error_of(await client.post("/v1/orchestrations/sess-missing:cancel"), 404)
    assert error["code"] == "NOT_FOUND"


async def test_cancel_rejects_bad_bodies(client: Client, peers: Peers) -> None:
    error = await error_of(await client.post("/v1/orchestrations/s1:cancel", data=b"{nope"), 400)
    assert error["message"].startswith("body: malformed JSON")
    error = await error_of(await client.post("/v1/orchestrations/s1:cancel", json={"reason": 3}), 400)
    assert error["message"] == "reason: expected a string"
    assert peers.orchestrator.cancel_requests == []


async def test_over_long_session_id_is_400(client: Client) -> None:
    error = await error_of(await client.get("/v1/orchestrations/" + "s" * 200), 400)
    assert error["message"].startswith("session_id: is 200 characters")


# ---- models --------------------------------------------------------------------------------------


async def test_list_models(client: Client, peers: Peers) -> None:
    response = await client.get("/v1/models?include_unavailable=true")
    assert response.status == 200
    body = await response.json()
    expected = await peers.providers.ListModels(providers_pb2.ListModelsRequest(), None)
    assert body == json_format.MessageToDict(expected, preserving_proto_field_name=True)
    assert body["simulated"] is True and body["models"][0]["context_length"] == "131072"
    assert peers.providers.list_requests[0].include_unavailable is True


async def test_list_models_rejects_a_bad_flag(client: Client, peers: Peers) -> None:
    error = await error_of(await client.get("/v1/models?includeUnavailable=perhaps"), 400)
    assert error["message"].startswith("includeUnavailable: expected true or false")
    assert peers.providers.list_requests == []


@pytest.mark.parametrize(
    ("exc", "status", "code"),
    [
        (errors.InvalidArgument("model", "unknown"), 400, "INVALID_ARGUMENT"),
        (errors.NotFound("no catalogue"), 404, "NOT_FOUND"),
        (errors.FailedPrecondition("catalogue not loaded"), 409, "FAILED_PRECONDITION"),
        (errors.ResourceExhausted("slow down", retry_after=3), 429, "RESOURCE_EXHAUSTED"),
        (errors.Unavailable("vendor down"), 503, "UNAVAILABLE"),
        (errors.DeadlineExceeded("vendor too slow"), 504, "DEADLINE_EXCEEDED"),
        (errors.Unauthenticated("who are you"), 401, "UNAUTHENTICATED"),
        (errors.PermissionDenied("not yours"), 403, "PERMISSION_DENIED"),
        (RuntimeError("secret internals"), 502, "INTERNAL"),
    ],
)
async def test_upstream_status_codes_map_to_http(
    client: Client, peers: Peers, exc: Exception, status: int, code: str
) -> None:
    peers.providers.fail_with = exc  # type: ignore[assignment]
    error = await error_of(await client.get("/v1/models"), status)
    assert error["code"] == code
    if isinstance(exc, errors.OrxError):
        assert error["message"] == exc.message
    else:
        assert "secret internals" not in error["message"]
        assert error["message"].startswith("internal error (request id")


def test_http_status_table() -> None:
    expected = {
        grpc.StatusCode.INVALID_ARGUMENT: 400,
        grpc.StatusCode.NOT_FOUND: 404,
        grpc.StatusCode.FAILED_PRECONDITION: 409,
        grpc.StatusCode.RESOURCE_EXHAUSTED: 429,
        grpc.StatusCode.UNAVAILABLE: 503,
        grpc.StatusCode.DEADLINE_EXCEEDED: 504,
        grpc.StatusCode.UNAUTHENTICATED: 401,
        grpc.StatusCode.PERMISSION_DENIED: 403,
    }
    assert {code: http_status(code) for code in expected} == expected
    assert GatewayError(grpc.StatusCode.NOT_FOUND, "x").body() == {
        "error": {"code": "NOT_FOUND", "status": 404, "message": "x"}
    }


@pytest.mark.parametrize(
    ("code", "details", "expected"),
    [
        (grpc.StatusCode.UNAVAILABLE, "failed to connect to all addresses; last error: ipv4:10.0.0.1:5", "unavailable"),
        (grpc.StatusCode.DEADLINE_EXCEEDED, "Deadline Exceeded", "did not answer in time"),
        (grpc.StatusCode.UNKNOWN, "Unexpected <class 'KeyError'>: 'password'", "failed (UNKNOWN)"),
        (grpc.StatusCode.UNIMPLEMENTED, "Method not found!", "does not implement"),
        (grpc.StatusCode.INTERNAL, "Failed to deserialize response message", "failed (INTERNAL)"),
    ],
)
def test_transport_noise_never_reaches_clients(code: grpc.StatusCode, details: str, expected: str) -> None:
    err = grpc.aio.AioRpcError(code, grpc.aio.Metadata(), grpc.aio.Metadata(), details, None)
    message = from_rpc(err, "orchestrator").message
    assert expected in message
    assert details not in message


# ---- probes, routing -----------------------------------------------------------------------------


async def test_healthz(client: Client) -> None:
    response = await client.get("/healthz")
    assert response.status == 200
    assert await response.json() == {"status": "ok"}


async def test_readyz_ready_then_not_serving(client: Client, peers: Peers) -> None:
    response = await client.get("/readyz")
    assert response.status == 200
    assert await response.json() == {"status": "ready", "checks": {"orchestrator": "SERVING", "providers": "SERVING"}}
    await peers.orchestrator_server.health.set(
        "orchestratex.v1.OrchestratorService", health_pb2.HealthCheckResponse.NOT_SERVING
    )
    response = await client.get("/readyz")
    assert response.status == 503
    assert await response.json() == {
        "status": "not ready",
        "checks": {"orchestrator": "NOT_SERVING", "providers": "SERVING"},
    }


async def test_readyz_with_a_peer_down(gateway_factory: GatewayFactory, tmp_path: Any, peers: Peers) -> None:
    settings = make_settings(
        tmp_path,
        ORX_ORCHESTRATOR_ADDR=f"127.0.0.1:{peers.orchestrator_server.port}",
        ORX_PROVIDERS_ADDR="127.0.0.1:1",
    )
    client = await gateway_factory(settings_=settings)
    response = await client.get("/readyz")
    assert response.status == 503
    assert (await response.json())["checks"] == {"orchestrator": "SERVING", "providers": "UNREACHABLE"}


async def test_unknown_route_and_wrong_method_are_json(client: Client) -> None:
    error = await error_of(await client.get("/v1/nothing-here"), 404)
    assert error["code"] == "NOT_FOUND"
    response = await client.delete("/v1/models")
    error = await error_of(response, 405)
    assert error["code"] == "METHOD_NOT_ALLOWED"
    assert "GET" in response.headers["Allow"]
    # ".../{id}:cancel" is never read as a session id.
    error = await error_of(await client.get("/v1/orchestrations/abc:cancel"), 405)
    assert error["code"] == "METHOD_NOT_ALLOWED"


async def test_rest_started_session_survives_the_handler(client: Client, peers: Peers) -> None:
    # Several starts at once: each gets its own session, none is cancelled.
    responses = await asyncio.gather(*(client.post("/v1/orchestrations", json={"prompt": "block"}) for _ in range(5)))
    ids = {(await r.json())["session_id"] for r in responses}
    assert len(ids) == 5
    await wait_until(lambda: not client.app[BACKGROUND], what="the start tasks to finish")
    assert all(peers.orchestrator.sessions[i].status == pb.SESSION_STATUS_RUNNING for i in ids)
    assert peers.orchestrator.cancel_requests == []


# ---- time ranges the services can represent ---------------------------------------------------------

ANALYTICS_PATHS = [
    "/v1/analytics/performance",
    "/v1/analytics/costs",
    "/v1/analytics/selection-accuracy",
    "/v1/analytics/satisfaction",
    "/v1/orchestrations",
]


@pytest.mark.parametrize("path", ANALYTICS_PATHS)
@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("start_time", "0001-01-01T00:00:00Z"),  # a valid Timestamp, but beyond int64 nanoseconds
        ("end_time", "9999-12-31T23:59:59Z"),
        ("start_time", "1677-01-01T00:00:00Z"),
        ("end_time", "2262-06-01T00:00:00Z"),
        ("startTime", "0000-01-01T00:00:00Z"),  # not a Timestamp at all (camelCase is accepted too)
        ("endTime", "10000-01-01T00:00:00Z"),
        ("startTime", "-0001-01-01T00:00:00Z"),
        ("endTime", "2025-01-01T00:00:00+25:00"),  # an offset RFC 3339 does not allow
        ("startTime", "٢٠٢٥-01-01T00:00:00Z"),  # non-ASCII digits
        ("startTime", "2025-02-30T00:00:00Z"),
        ("endTime", "2025-01-01T00:00:00.1234567891Z"),
        ("endTime", ""),
    ],
)
async def test_times_outside_what_the_services_store_are_400_naming_the_field(
    client: Client, peers: Peers, path: str, name: str, value: str
) -> None:
    error = await error_of(await client.get(path, params={name: value}), 400)
    assert error["code"] == "INVALID_ARGUMENT" and error["field"] == name
    assert error["message"].startswith(f"{name}: ")
    assert peers.analytics is not None and peers.analytics.requests == []
    assert peers.orchestrator.list_requests == []


@pytest.mark.parametrize(
    "value",
    [
        "1678-01-01T00:00:00Z",
        "2261-12-31T23:59:59.999999999Z",
        "2024-02-29T12:00:00+05:30",
        "2025-06-01T00:00:00-00:00",
    ],
)
async def test_times_inside_the_range_are_passed_on(client: Client, peers: Peers, value: str) -> None:
    response = await client.get("/v1/analytics/costs", params={"start_time": value})
    assert response.status == 200, await response.text()
    assert peers.analytics is not None
    expected = Timestamp()
    expected.FromJsonString(value)
    assert peers.analytics.requests[-1].range.start_time == expected


# ---- feedback: the orchestrator decides whether the session exists ----------------------------------


async def test_feedback_asks_the_orchestrator_before_analytics(client: Client, peers: Peers) -> None:
    assert peers.analytics is not None
    # Analytics has not been told about any session yet (its outbox lags) and would accept anything.
    peers.analytics.knows_sessions = False
    missing = await error_of(await client.post("/v1/orchestrations/sess-nobody/feedback", json={"rating": 4}), 404)
    assert missing["code"] == "NOT_FOUND"
    running = (await (await client.post("/v1/orchestrations", json={"prompt": "block fb"})).json())["session_id"]
    busy = await error_of(await client.post(f"/v1/orchestrations/{running}/feedback", json={"rating": 4}), 409)
    assert busy["code"] == "FAILED_PRECONDITION" and "still running" in busy["message"]
    assert peers.analytics.requests == []  # neither reached analytics
    # Finished in the orchestrator, unknown to analytics so far: accepted at once.
    peers.orchestrator.sessions[running].status = pb.SESSION_STATUS_COMPLETED
    done = await client.post(f"/v1/orchestrations/{running}/feedback", json={"rating": 5, "comment": "good"})
    assert done.status == 200, await done.text()
    assert (await done.json())["feedback"]["rating"] == 5
    assert [r.session_id for r in peers.analytics.requests] == [running]


async def test_feedback_on_another_tenants_session_is_404_before_analytics(
    gateway_factory: GatewayFactory, tmp_path: Any, peers: Peers
) -> None:
    from .test_security import KEY_A, KEY_B, keyed_env

    client = await gateway_factory(settings_=make_settings(tmp_path, **keyed_env(peers)))
    assert peers.analytics is not None
    peers.analytics.knows_sessions = False
    created = await client.post(
        "/v1/orchestrations", json={"prompt": "block t"}, headers={"Authorization": f"Bearer {KEY_A}"}
    )
    session_id = (await created.json())["session_id"]
    peers.orchestrator.sessions[session_id].status = pb.SESSION_STATUS_COMPLETED
    response = await client.post(
        f"/v1/orchestrations/{session_id}/feedback", json={"rating": 1}, headers={"Authorization": f"Bearer {KEY_B}"}
    )
    assert (await error_of(response, 404))["code"] == "NOT_FOUND"
    assert peers.analytics.requests == []
