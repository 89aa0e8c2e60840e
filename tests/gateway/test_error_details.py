"""The gateway fills ``field`` and ``retry_after`` of its error bodies from a peer's structured status details
(``google.rpc.BadRequest``, ``RetryInfo``), never from the message text; the bodies keep their shape."""

from __future__ import annotations

from typing import Any

import grpc
import pytest
from aiohttp.test_utils import TestClient
from google.rpc import error_details_pb2, status_pb2

from gateway.errors import from_orx, from_rpc
from orchestratex import errors

from .conftest import Peers

Client = TestClient[Any, Any]


async def _error(client: Client, status: int) -> tuple[dict[str, Any], Any]:
    response = await client.get("/v1/models")
    assert response.status == status, await response.text()
    body = await response.json()
    assert set(body) == {"error"}
    return body["error"], response.headers


@pytest.mark.parametrize(
    ("exc", "status", "body"),
    [
        pytest.param(
            errors.InvalidArgument("preferences.cost_weight", "must be >= 0, got -1"),
            400,
            {
                "code": "INVALID_ARGUMENT",
                "status": 400,
                "message": "preferences.cost_weight: must be >= 0, got -1",
                "field": "preferences.cost_weight",
            },
            id="dotted-path",
        ),
        pytest.param(
            # A path the old "field: problem" regex could not read (it gave no field at all).
            errors.InvalidArgument('labels["team-a"]', "must be at most 63 characters: got 70"),
            400,
            {
                "code": "INVALID_ARGUMENT",
                "status": 400,
                "message": 'labels["team-a"]: must be at most 63 characters: got 70',
                "field": 'labels["team-a"]',
            },
            id="map-key-path",
        ),
        pytest.param(
            # A message that merely starts like "field: problem" names no field (the regex made it "model").
            errors.NotFound("model: no such model in the catalogue"),
            404,
            {"code": "NOT_FOUND", "status": 404, "message": "model: no such model in the catalogue"},
            id="colon-but-no-field",
        ),
        pytest.param(
            errors.FailedPrecondition("session_id: session 's-1' is still running", field="session_id"),
            409,
            {
                "code": "FAILED_PRECONDITION",
                "status": 409,
                "message": "session_id: session 's-1' is still running",
                "field": "session_id",
            },
            id="precondition-with-field",
        ),
        pytest.param(
            errors.ResourceExhausted("z-ai/glm-4.5: rate limited; retry after 2.2s", 2.2),
            429,
            {
                "code": "RESOURCE_EXHAUSTED",
                "status": 429,
                "message": "z-ai/glm-4.5: rate limited; retry after 2.2s",
                "retry_after": 3,
            },
            id="retry-info-rounded-up",
        ),
        pytest.param(
            errors.ResourceExhausted("slow down"),
            429,
            {"code": "RESOURCE_EXHAUSTED", "status": 429, "message": "slow down", "retry_after": 1},
            id="no-retry-info",
        ),
        pytest.param(
            # As before, a 503 names no wait in its body (the wait still travels on the gRPC status).
            errors.Unavailable("vendor down", retry_after=30.0, reason="FAILURE_KIND_CIRCUIT_OPEN"),
            503,
            {"code": "UNAVAILABLE", "status": 503, "message": "vendor down"},
            id="unavailable",
        ),
    ],
)
async def test_rest_error_bodies_come_from_the_details(
    client: Client, peers: Peers, exc: errors.OrxError, status: int, body: dict[str, Any]
) -> None:
    peers.providers.fail_with = exc
    error, headers = await _error(client, status)
    assert error == body
    if "retry_after" in body:
        assert headers["Retry-After"] == str(body["retry_after"])
    else:
        assert "Retry-After" not in headers


def _rpc_error(code: grpc.StatusCode, message: str, *details: Any) -> grpc.aio.AioRpcError:
    status = status_pb2.Status(code=code.value[0], message=message)
    for detail in details:
        status.details.add().Pack(detail)
    trailers = grpc.aio.Metadata(("grpc-status-details-bin", status.SerializeToString()))
    return grpc.aio.AioRpcError(code, grpc.aio.Metadata(), trailers, message, None)


def test_a_peer_in_another_language_is_read_the_same_way() -> None:
    """Only the standard details count: a peer that is not ours, with its own message style, still gets its
    field and wait through to the client."""
    violation = error_details_pb2.BadRequest.FieldViolation(field="contents[0].parts", description="empty")
    err = _rpc_error(
        grpc.StatusCode.INVALID_ARGUMENT,
        "Request contains an invalid argument.",
        error_details_pb2.BadRequest(field_violations=[violation]),
    )
    assert from_rpc(err, "vendor").fields() == {
        "code": "INVALID_ARGUMENT",
        "status": 400,
        "message": "Request contains an invalid argument.",
        "field": "contents[0].parts",
    }
    retry = error_details_pb2.RetryInfo()
    retry.retry_delay.FromSeconds(41)
    err = _rpc_error(grpc.StatusCode.RESOURCE_EXHAUSTED, "Quota exceeded.", retry)
    assert from_rpc(err, "vendor").fields() == {
        "code": "RESOURCE_EXHAUSTED",
        "status": 429,
        "message": "Quota exceeded.",
        "retry_after": 41,
    }


def test_a_field_on_a_status_whose_message_is_not_passed_on_is_dropped() -> None:
    """An INTERNAL peer error is replaced by a generic message: its details are not passed on either."""
    violation = error_details_pb2.BadRequest.FieldViolation(field="secret_column", description="bad")
    err = _rpc_error(grpc.StatusCode.INTERNAL, "boom", error_details_pb2.BadRequest(field_violations=[violation]))
    assert from_rpc(err, "orchestrator").fields() == {
        "code": "INTERNAL",
        "status": 502,
        "message": "the orchestrator service failed (INTERNAL)",
    }


def test_local_domain_errors_keep_their_field_and_wait() -> None:
    assert from_orx(errors.InvalidArgument("rating", "must be 1 to 5, got 9")).fields() == {
        "code": "INVALID_ARGUMENT",
        "status": 400,
        "message": "rating: must be 1 to 5, got 9",
        "field": "rating",
    }
    assert from_orx(errors.ResourceExhausted("busy", 0.2)).fields() == {
        "code": "RESOURCE_EXHAUSTED",
        "status": 429,
        "message": "busy",
        "retry_after": 1,
    }
