"""API keys and tenants, exposure check, WebSocket auth, rate limits, CORS and secrets hygiene."""

from __future__ import annotations

import asyncio
import logging
import sys
from pathlib import Path
from typing import Any

import pytest
from aiohttp import WSServerHandshakeError
from aiohttp.test_utils import TestClient

from gateway.app import start_gateway
from gateway.security import (
    KeyRing,
    OriginPolicy,
    RateLimiter,
    check_exposure,
    hash_key,
    parse_key_entries,
)
from gateway.state import GatewayOptions
from orchestratex.config import is_loopback
from orchestratex.errors import ConfigError

from .conftest import GatewayFactory, Peers, make_settings, peer_env, wait_connections_closed, wait_until
from .test_ws import orchestrate, recv, recv_until, start_blocking

Client = TestClient[Any, Any]

KEY_A = "orx_key-of-tenant-a_0123456789"
KEY_A2 = "orx_second-key-of-tenant-a"
KEY_B = "orx_key-of-tenant-b_9876543210"


def keyed_env(peers: Peers, **extra: str) -> dict[str, str]:
    keys = f"tenant-a:{hash_key(KEY_A)}, tenant-a:{hash_key(KEY_A2).removeprefix('sha256:')},tenant-b:{hash_key(KEY_B)}"
    return {**peer_env(peers), "ORX_GATEWAY_API_KEYS": keys, **extra}


@pytest.fixture
async def keyed(gateway_factory: GatewayFactory, tmp_path: Path, peers: Peers) -> Client:
    client: Client = await gateway_factory(settings_=make_settings(tmp_path, **keyed_env(peers)))
    return client


def auth(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


# ---- key configuration ---------------------------------------------------------------------------


def test_key_entries_parse_hashes_and_name_the_bad_entry() -> None:
    entries = parse_key_entries(f"a:{hash_key('k1')},  b:{'0' * 64} ,", "VAR", by_lines=False)
    assert [e.tenant for e in entries] == ["a", "b"]
    ring = KeyRing(entries)
    principal = ring.authenticate("k1")
    assert principal is not None and principal.tenant == "a"
    assert ring.authenticate("k2") is None and ring.authenticate("") is None
    assert ring.authenticate("x" * 10_000) is None
    with pytest.raises(ConfigError, match=r"VAR: entry 2: expected a SHA-256 hash") as bad:
        parse_key_entries("a:" + "0" * 64 + ",b:my-raw-secret-key", "VAR", by_lines=False)
    assert "my-raw-secret-key" not in str(bad.value)  # a pasted raw key is never echoed
    with pytest.raises(ConfigError, match="VAR: entry 1: the tenant must be"):
        parse_key_entries(f"bad tenant:{'0' * 64}", "VAR", by_lines=False)
    with pytest.raises(ConfigError, match="expected tenant:sha256"):
        parse_key_entries("0" * 64, "VAR", by_lines=False)


def test_key_file_allows_comments(tmp_path: Path) -> None:
    path = tmp_path / "keys"
    path.write_text(f"# production keys\n\nops:{hash_key('k')}  # rotated 2025-10\n", encoding="utf-8")
    settings = make_settings(tmp_path, ORX_GATEWAY_API_KEYS_FILE=str(path))
    from gateway.security import load_keyring

    ring = load_keyring(settings)
    assert len(ring) == 1 and ring.tenants == {"ops"}
    path.write_text("ops:nothex\n", encoding="utf-8")
    with pytest.raises(ConfigError, match=r"ORX_GATEWAY_API_KEYS_FILE \(keys\): line 1"):
        load_keyring(settings)


def test_hash_key_cli_reads_stdin() -> None:
    import subprocess

    done = subprocess.run(
        [sys.executable, "-m", "gateway", "hash-key"], input="s3cret\n", capture_output=True, text=True, check=True
    )
    assert done.stdout.strip() == hash_key("s3cret")
    assert "s3cret" not in done.stdout
    made = subprocess.run(
        [sys.executable, "-m", "gateway", "new-key", "acme"], capture_output=True, text=True, check=True
    )
    key = made.stdout.split("key:")[1].split()[0]
    assert f"acme:{hash_key(key)}" in made.stdout


@pytest.mark.parametrize(
    ("host", "loopback"),
    [
        ("127.0.0.1", True),
        ("127.0.0.5", True),
        ("::1", True),
        ("[::1]", True),
        ("localhost", True),
        ("0.0.0.0", False),
        ("::", False),
        ("", False),
        ("10.0.0.2", False),
        ("gateway.example", False),
    ],
)
def test_loopback_detection(host: str, loopback: bool) -> None:
    assert is_loopback(host) is loopback


def test_beyond_loopback_without_keys_refuses_to_start(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as refused:
        check_exposure("0.0.0.0", KeyRing([]))
    message = str(refused.value)
    assert "ORX_GATEWAY_API_KEYS" in message and "ORX_GATEWAY_API_KEYS_FILE" in message
    check_exposure("0.0.0.0", KeyRing(parse_key_entries(f"a:{hash_key('k')}", "V", by_lines=False)))
    check_exposure("127.0.0.1", KeyRing([]))


async def test_start_gateway_refuses_a_wildcard_bind_without_keys(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="ORX_GATEWAY_API_KEYS"):
        await start_gateway(make_settings(tmp_path), "0.0.0.0", 0)


async def test_python_dash_m_gateway_names_the_variables_when_exposed(tmp_path: Path) -> None:
    import os

    env = {**os.environ, "ORX_DATA_DIR": str(tmp_path), "ORX_GATEWAY_LISTEN": "0.0.0.0:0"}
    env.pop("ORX_GATEWAY_API_KEYS", None)
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "gateway", env=env, stderr=asyncio.subprocess.PIPE, cwd=Path(__file__).parents[2]
    )
    _, stderr = await asyncio.wait_for(proc.communicate(), 30)
    assert proc.returncode == 2
    assert b"ORX_GATEWAY_API_KEYS" in stderr and b"Traceback" not in stderr


# ---- REST auth and tenancy -----------------------------------------------------------------------


async def test_rest_requires_a_valid_key(keyed: Client) -> None:
    for headers in ({}, auth("wrong"), {"Authorization": "Basic abc"}, {"Authorization": "Bearer"}):
        response = await keyed.get("/v1/models", headers=headers)
        assert response.status == 401, headers
        body = await response.json()
        assert body["error"]["code"] == "UNAUTHENTICATED" and body["error"]["status"] == 401
        assert response.headers["WWW-Authenticate"].startswith("Bearer")
    assert (await keyed.get("/v1/models", headers=auth(KEY_A))).status == 200
    assert (await keyed.get("/v1/models", headers=auth(KEY_A2))).status == 200
    # Public: the page, probes and the API description.
    for path in ("/", "/healthz", "/v1/openapi.json"):
        assert (await keyed.get(path)).status == 200, path


async def test_each_key_is_a_tenant_that_sees_only_its_own_sessions(keyed: Client, peers: Peers) -> None:
    created = await keyed.post("/v1/orchestrations", json={"prompt": "block a"}, headers=auth(KEY_A))
    assert created.status == 201
    session_id = (await created.json())["session_id"]
    assert peers.orchestrator.sessions[session_id].tenant == "tenant-a"  # x-orx-tenant reached the service
    # The other tenant: NOT_FOUND everywhere, never the data.
    for method, path, body in (
        ("GET", f"/v1/orchestrations/{session_id}", None),
        ("GET", f"/v1/orchestrations/{session_id}/events", None),
        ("POST", f"/v1/orchestrations/{session_id}:cancel", {}),
        ("POST", f"/v1/orchestrations/{session_id}/feedback", {"rating": 5}),
    ):
        response = await keyed.request(method, path, json=body, headers=auth(KEY_B))
        assert response.status == 404, (method, path)
        text = await response.text()
        assert "block a" not in text
    listed = await (await keyed.get("/v1/orchestrations", headers=auth(KEY_B))).json()
    assert listed.get("sessions", []) == []
    own = await (await keyed.get("/v1/orchestrations", headers=auth(KEY_A2))).json()
    assert [s["session_id"] for s in own["sessions"]] == [session_id]
    assert peers.orchestrator.sessions[session_id].status == pb_running()
    costs_b = await (await keyed.get("/v1/analytics/costs", headers=auth(KEY_B))).json()
    assert costs_b.get("sessions", []) == []
    assert peers.analytics is not None and peers.analytics.tenants[-1] == "tenant-b"
    costs_a = await (await keyed.get("/v1/analytics/costs", headers=auth(KEY_A))).json()
    assert [s["session_id"] for s in costs_a["sessions"]] == [session_id]


def pb_running() -> int:
    from orchestratex.v1 import orchestrator_pb2

    return orchestrator_pb2.SESSION_STATUS_RUNNING


async def test_without_keys_requests_run_as_the_default_tenant(client: Client, peers: Peers) -> None:
    created = await client.post("/v1/orchestrations", json={"prompt": "block d"})
    session_id = (await created.json())["session_id"]
    assert peers.orchestrator.sessions[session_id].tenant == ""


# ---- WebSocket auth ------------------------------------------------------------------------------


async def test_ws_key_as_subprotocol(keyed: Client, peers: Peers) -> None:
    async with keyed.ws_connect("/v1/ws", protocols=("orx.v1", f"orx.bearer.{KEY_A}")) as ws:
        assert ws.protocol == "orx.v1"  # the key is never echoed back
        session_id = await start_blocking(ws, peers)
    assert peers.orchestrator.sessions[session_id].tenant == "tenant-a"


async def test_ws_key_in_the_authorization_header(keyed: Client, peers: Peers) -> None:
    async with keyed.ws_connect("/v1/ws", headers=auth(KEY_B)) as ws:
        session_id = await start_blocking(ws, peers)
    assert peers.orchestrator.sessions[session_id].tenant == "tenant-b"


async def test_ws_key_in_the_first_message_and_tenant_isolation(keyed: Client, peers: Peers) -> None:
    async with keyed.ws_connect("/v1/ws") as ws:
        await ws.send_json({"type": "auth", "key": KEY_A, "ref": 1})
        assert await recv(ws) == {"type": "ack", "action": "auth", "ref": 1}
        await ws.send_json(orchestrate("block iso", detached=True))
        ack = await recv(ws)
        session_id = ack["session_id"]
        await recv(ws), await recv(ws)
    assert peers.orchestrator.sessions[session_id].tenant == "tenant-a"
    async with keyed.ws_connect("/v1/ws", protocols=("orx.v1", f"orx.bearer.{KEY_B}")) as other:
        for message in (
            {"type": "watch", "session_id": session_id},
            {"type": "cancel", "session_id": session_id},
        ):
            await other.send_json(message)
            replies = await recv_until(other, lambda m: m["type"] == "error")
            assert replies[-1]["code"] == "NOT_FOUND" and replies[-1]["status"] == 404
    assert peers.orchestrator.sessions[session_id].status == pb_running()


@pytest.mark.parametrize(
    "first",
    [
        {"type": "auth", "key": "wrong"},
        {"type": "orchestrate", "request": {"prompt": "x"}},
        "not json",
        {"type": "auth"},
    ],
)
async def test_ws_without_a_valid_key_closes_with_4401(keyed: Client, first: Any) -> None:
    async with keyed.ws_connect("/v1/ws") as ws:
        if isinstance(first, str):
            await ws.send_str(first)
        else:
            await ws.send_json(first)
        msg = await ws.receive(timeout=5)
        assert msg.type.name == "CLOSE" and msg.data == 4401
        assert str(msg.extra).startswith("unauthenticated:")
    await wait_connections_closed(keyed)


async def test_ws_auth_deadline(gateway_factory: GatewayFactory, tmp_path: Path, peers: Peers) -> None:
    settings = make_settings(tmp_path, **keyed_env(peers))
    client = await gateway_factory(GatewayOptions.from_settings(settings, auth_timeout=0.2), settings)
    async with client.ws_connect("/v1/ws") as ws:
        msg = await ws.receive(timeout=5)
        assert msg.data == 4401 and "in time" in msg.extra


async def test_ws_bad_key_on_the_upgrade_is_401(keyed: Client) -> None:
    with pytest.raises(WSServerHandshakeError) as refused:
        await keyed.ws_connect("/v1/ws", protocols=("orx.v1", "orx.bearer.wrong"))
    assert refused.value.status == 401


# ---- rate limits ---------------------------------------------------------------------------------


def test_token_bucket() -> None:
    now = [0.0]
    limiter = RateLimiter(60, burst=2, clock=lambda: now[0])
    assert limiter.acquire("k") == 0 and limiter.acquire("k") == 0
    assert limiter.acquire("k") == 1  # one token per second
    assert limiter.acquire("other") == 0  # buckets are per key
    now[0] += 1.0
    assert limiter.acquire("k") == 0
    slow = RateLimiter(1, clock=lambda: now[0])  # 1 per minute
    assert slow.acquire("k") == 0 and slow.acquire("k") == 60
    assert RateLimiter(0).acquire("k") == 0  # off


async def test_rest_rate_limit_is_429_with_retry_after(
    gateway_factory: GatewayFactory, tmp_path: Path, peers: Peers
) -> None:
    client = await gateway_factory(settings_=make_settings(tmp_path, **keyed_env(peers, ORX_GATEWAY_RATE_LIMIT="2")))
    assert (await client.get("/v1/models", headers=auth(KEY_A))).status == 200
    assert (await client.get("/v1/models", headers=auth(KEY_A))).status == 200
    limited = await client.get("/v1/models", headers=auth(KEY_A))
    assert limited.status == 429
    retry = int(limited.headers["Retry-After"])
    assert retry >= 1
    body = await limited.json()
    assert body["error"]["code"] == "RESOURCE_EXHAUSTED" and body["error"]["retry_after"] == retry
    # Another key has its own bucket; health probes are never limited.
    assert (await client.get("/v1/models", headers=auth(KEY_B))).status == 200
    assert (await client.get("/healthz")).status == 200


async def test_ws_messages_count_against_the_rate_limit(
    gateway_factory: GatewayFactory, tmp_path: Path, peers: Peers
) -> None:
    client = await gateway_factory(settings_=make_settings(tmp_path, **peer_env(peers), ORX_GATEWAY_RATE_LIMIT="3"))
    async with client.ws_connect("/v1/ws") as ws:  # the upgrade costs one token
        await ws.send_json({"type": "detach", "session_id": "s1", "ref": 1})
        assert (await recv(ws))["code"] == "NOT_FOUND"
        await ws.send_json({"type": "detach", "session_id": "s1", "ref": 2})
        assert (await recv(ws))["code"] == "NOT_FOUND"
        await ws.send_json({"type": "detach", "session_id": "s1", "ref": 3})
        limited = await recv(ws)
        assert limited["code"] == "RESOURCE_EXHAUSTED" and limited["status"] == 429
        assert limited["retry_after"] >= 1 and limited["ref"] == 3
        assert not ws.closed  # refused, not disconnected


async def test_failed_key_guesses_are_rate_limited(
    gateway_factory: GatewayFactory, tmp_path: Path, peers: Peers
) -> None:
    client = await gateway_factory(settings_=make_settings(tmp_path, **keyed_env(peers, ORX_GATEWAY_RATE_LIMIT="2")))
    statuses = [(await client.get("/v1/models", headers=auth(f"guess-{i}"))).status for i in range(4)]
    assert statuses[:2] == [401, 401] and statuses[-1] == 429


# ---- CORS and origins ----------------------------------------------------------------------------


def test_origin_policy() -> None:
    policy = OriginPolicy(["https://app.example"])
    assert policy.permits(None, "gw:8080")
    assert policy.permits("http://gw:8080", "gw:8080")  # same origin
    assert policy.permits("https://app.example/", "gw:8080")
    assert not policy.permits("https://evil.example", "gw:8080")
    assert not policy.permits("null", "gw:8080")
    assert OriginPolicy(["*"]).permits("https://any.example", "gw:8080")


async def test_cors_allow_list(gateway_factory: GatewayFactory, tmp_path: Path, peers: Peers) -> None:
    settings = make_settings(tmp_path, **peer_env(peers), ORX_GATEWAY_CORS_ORIGINS="https://app.example")
    client = await gateway_factory(settings_=settings)
    preflight = await client.options(
        "/v1/orchestrations",
        headers={
            "Origin": "https://app.example",
            "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": "authorization, content-type",
        },
    )
    assert preflight.status == 204
    assert preflight.headers["Access-Control-Allow-Origin"] == "https://app.example"
    assert "Authorization" in preflight.headers["Access-Control-Allow-Headers"]
    allowed = await client.get("/v1/models", headers={"Origin": "https://app.example"})
    assert allowed.status == 200 and allowed.headers["Access-Control-Allow-Origin"] == "https://app.example"
    assert "Retry-After" in allowed.headers["Access-Control-Expose-Headers"]
    denied = await client.post(
        "/v1/orchestrations", json={"prompt": "block x"}, headers={"Origin": "https://evil.example"}
    )
    assert denied.status == 403
    assert (await denied.json())["error"]["code"] == "PERMISSION_DENIED"
    assert "Access-Control-Allow-Origin" not in denied.headers
    assert not peers.orchestrator.orchestrate_requests  # nothing started
    bad_preflight = await client.options(
        "/v1/orchestrations", headers={"Origin": "https://evil.example", "Access-Control-Request-Method": "POST"}
    )
    assert bad_preflight.status == 403
    with pytest.raises(WSServerHandshakeError) as refused:
        await client.ws_connect("/v1/ws", headers={"Origin": "https://evil.example"})
    assert refused.value.status == 403


# ---- secrets hygiene -----------------------------------------------------------------------------


async def test_keys_never_appear_in_logs_or_responses(
    keyed: Client, peers: Peers, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    texts = []
    for key in (KEY_A, "wrong-guess-key-123"):
        response = await keyed.get("/v1/models", headers=auth(key))
        texts.append(await response.text())
        texts.append(str(response.headers))
    async with keyed.ws_connect("/v1/ws", protocols=("orx.v1", f"orx.bearer.{KEY_B}")) as ws:
        await ws.send_json({"type": "auth", "key": KEY_B})
        texts.append(str(await ws.receive(timeout=5)))
    logs = caplog.text + " ".join(texts)
    for secret in (KEY_A, KEY_B, "wrong-guess-key-123"):
        assert secret not in logs
    await wait_until(lambda: True)


# ---- Host names (DNS rebinding) ------------------------------------------------------------------------

REBIND = "rebind.evil.example"


def rebound(port: int | None = None) -> dict[str, str]:
    """What a browser sends from a page at http://rebind.evil.example[:port] once its name points to 127.0.0.1."""
    host = REBIND if port is None else f"{REBIND}:{port}"
    return {"Host": host, "Origin": f"http://{host}"}


async def _refused_as_misdirected(response: Any) -> None:
    assert response.status == 421, await response.text()
    error = (await response.json())["error"]
    assert error["code"] == "MISDIRECTED_REQUEST" and error["status"] == 421 and error["field"] == "host"
    assert "ORX_GATEWAY_ALLOWED_HOSTS" in error["message"]


@pytest.mark.parametrize(
    ("method", "path", "body"),
    [
        ("GET", "/v1/orchestrations", None),
        ("POST", "/v1/orchestrations", {"prompt": "block rebind"}),
        ("GET", "/v1/orchestrations/s-1/events", None),
        ("GET", "/v1/models", None),
        ("GET", "/", None),
        ("GET", "/static/app.js", None),
        ("GET", "/healthz", None),
    ],
)
async def test_dns_rebinding_is_refused_without_keys(
    client: Client, peers: Peers, method: str, path: str, body: Any
) -> None:
    response = await client.request(method, path, json=body, headers=rebound(client.port))
    await _refused_as_misdirected(response)
    assert peers.orchestrator.orchestrate_requests == [] and peers.orchestrator.list_requests == []


async def test_dns_rebinding_websocket_upgrade_is_refused(client: Client, peers: Peers) -> None:
    with pytest.raises(WSServerHandshakeError) as refused:
        await client.ws_connect("/v1/ws", headers=rebound(client.port))
    assert refused.value.status == 421


@pytest.mark.parametrize("host", ["localhost", "LOCALHOST:9", "127.0.0.1", "127.1.2.3:8080", "[::1]", "[::1]:8080"])
async def test_loopback_host_names_are_answered(client: Client, host: str) -> None:
    response = await client.get("/v1/models", headers={"Host": host, "Origin": f"http://{host}"})
    assert response.status == 200, await response.text()


async def test_configured_host_names_are_answered(gateway_factory: GatewayFactory, settings: Any) -> None:
    options = GatewayOptions.from_settings(settings, allowed_hosts=("orx.example.com",))
    client = await gateway_factory(options)
    assert (await client.get("/v1/models", headers={"Host": "orx.example.com:8443"})).status == 200
    assert (await client.get("/v1/models", headers={"Host": "localhost:1"})).status == 200
    await _refused_as_misdirected(await client.get("/v1/models", headers={"Host": "other.example.com"}))


async def test_with_keys_the_host_is_checked_only_against_a_configured_list(
    gateway_factory: GatewayFactory, tmp_path: Path, peers: Peers
) -> None:
    settings = make_settings(tmp_path, **keyed_env(peers))
    open_client = await gateway_factory(settings_=settings)
    # A rebinding page has no key: the key requirement already stops it.
    assert (await open_client.get("/v1/models", headers=rebound())).status == 401
    assert (await open_client.get("/v1/models", headers={**auth(KEY_A), "Host": "gw.internal:8080"})).status == 200
    listed = await gateway_factory(GatewayOptions.from_settings(settings, allowed_hosts=("gw.internal",)), settings)
    assert (await listed.get("/v1/models", headers={**auth(KEY_A), "Host": "gw.internal:8080"})).status == 200
    await _refused_as_misdirected(await listed.get("/v1/models", headers={**auth(KEY_A), "Host": REBIND}))
