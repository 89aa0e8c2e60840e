"""The gateway's Prometheus metrics and OpenTelemetry spans, through the real gateway in front of fake peers.

Metrics live on the process's default registry, shared by every test: each test reads the samples it cares about
before and after, and asserts the difference. Secrets, prompts, session ids and tenants must never be label
values; the route label is the route template.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import WSMsgType
from aiohttp.test_utils import TestClient
from opentelemetry import trace
from opentelemetry.instrumentation.aiohttp_server import AioHttpServerInstrumentor
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from prometheus_client import REGISTRY

from gateway import metrics, tracing
from gateway.security import hash_key
from gateway.state import METRICS_TENANTS_VAR, GatewayOptions
from orchestratex.config import Settings
from orchestratex.errors import ConfigError, Unavailable
from orchestratex.tracing import private_id_generator

from .conftest import GatewayFactory, Peers, make_settings, peer_env, wait_connections_closed, wait_until
from .live_stack import running_stack
from .test_ws import orchestrate, recv, recv_until

Client = TestClient[Any, Any]
Labels = tuple[tuple[str, str], ...]
Samples = dict[tuple[str, Labels], float]

SESSION_ROUTE = "/v1/orchestrations/{id}"
EVENTS_ROUTE = "/v1/orchestrations/{id}/events"


def value(name: str, **labels: str) -> float:
    """A sample's current value (0 when it does not exist yet)."""
    return REGISTRY.get_sample_value(name, labels) or 0.0


def requests(method: str, route: str, status: int) -> float:
    return value("orx_gateway_http_requests_total", method=method, route=route, status=str(status))


def rejected(reason: str) -> float:
    return value("orx_gateway_rejected_requests_total", reason=reason)


def closes(reason: str, transport: str = "ws") -> float:
    return value("orx_gateway_stream_closes_total", transport=transport, reason=reason)


def samples() -> Samples:
    """Every sample of the registry, by name and labels."""
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for metric in REGISTRY.collect()
        for sample in metric.samples
    }


def label_values() -> set[str]:
    return {v for (_, labels) in samples() for _, v in labels}


def assert_no_label_contains(*secrets: str) -> None:
    for found in label_values():
        for secret in secrets:
            assert secret not in found, f"a label value holds {secret!r}: {found!r}"


def keyed_settings(tmp_path: Path, peers: Peers, keys: dict[str, str], **env: str) -> Settings:
    """Settings with one API key per tenant (``{tenant: key}``)."""
    entries = ",".join(f"{tenant}:{hash_key(key)}" for tenant, key in keys.items())
    return make_settings(tmp_path, **peer_env(peers), ORX_GATEWAY_API_KEYS=entries, **env)


def auth(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def new_key() -> str:
    return f"orx_secret_{uuid.uuid4().hex}"


def new_tenant() -> str:
    return f"t{uuid.uuid4().hex[:12]}"


# ---- HTTP requests ---------------------------------------------------------------------------------


async def test_rest_requests_are_counted_by_method_route_template_and_status(client: Client, peers: Peers) -> None:
    peers.orchestrator.finish_all = True
    created = await client.post("/v1/orchestrations", json={"prompt": "complete counted"})
    assert created.status == 201
    session_id = (await created.json())["session_id"]
    before = samples()
    found = await client.get(f"/v1/orchestrations/{session_id}")
    missing_id = f"sess-{uuid.uuid4().hex}"
    missing = await client.get(f"/v1/orchestrations/{missing_id}")
    bad = await client.post("/v1/orchestrations", json={"prompt": "complete", "max_rounds": "many"})
    nowhere = await client.get(f"/no/such/{missing_id}")
    assert (found.status, missing.status, bad.status, nowhere.status) == (200, 404, 400, 404)
    after = samples()

    def delta(name: str, **labels: str) -> float:
        key = (name, tuple(sorted(labels.items())))
        return after.get(key, 0.0) - before.get(key, 0.0)

    counted = "orx_gateway_http_requests_total"
    assert delta(counted, method="GET", route=SESSION_ROUTE, status="200") == 1
    assert delta(counted, method="GET", route=SESSION_ROUTE, status="404") == 1
    assert delta(counted, method="POST", route="/v1/orchestrations", status="400") == 1
    assert delta(counted, method="GET", route=metrics.UNMATCHED, status="404") == 1
    assert delta("orx_gateway_http_request_duration_seconds_count", method="GET", route=SESSION_ROUTE) == 2
    assert delta("orx_gateway_rejected_requests_total", reason="validation") == 1
    assert delta("orx_gateway_rejected_requests_total", reason="auth") == 0
    # Every request finished: nothing left in flight.
    assert delta("orx_gateway_http_requests_in_flight") == 0
    # The route is the template, never the path with its session id.
    routes = {dict(labels).get("route") for (name, labels) in after if name == counted}
    assert SESSION_ROUTE in routes
    assert_no_label_contains(session_id, missing_id)


async def test_methods_beyond_the_known_ones_are_one_label_value(client: Client) -> None:
    # aiohttp's parser refuses unregistered methods (400 before any middleware) but knows WebDAV's and others.
    before = requests("other", metrics.UNMATCHED, 405)
    response = await client.request("PROPFIND", f"/v1/orchestrations/{uuid.uuid4().hex}")
    assert response.status == 405
    assert requests("other", metrics.UNMATCHED, 405) - before == 1
    assert "PROPFIND" not in label_values()


async def test_unauthenticated_requests_count_as_auth_rejections_and_no_label_holds_a_key_or_prompt(
    gateway_factory: GatewayFactory, tmp_path: Path, peers: Peers
) -> None:
    key = new_key()
    client = await gateway_factory(settings_=keyed_settings(tmp_path, peers, {new_tenant(): key}))
    marker = f"prompt-marker-{uuid.uuid4().hex}"
    auth_before, listed_before = rejected("auth"), requests("GET", "/v1/orchestrations", 401)
    assert (await client.get("/v1/orchestrations")).status == 401
    assert (await client.get("/v1/orchestrations", headers=auth("orx_not_a_key"))).status == 401
    assert rejected("auth") - auth_before == 2
    assert requests("GET", "/v1/orchestrations", 401) - listed_before == 2
    created = await client.post("/v1/orchestrations", json={"prompt": f"complete {marker}"}, headers=auth(key))
    assert created.status == 201
    # The key in a WebSocket subprotocol, and a prompt over the socket, leave no trace either.
    async with client.ws_connect("/v1/ws", protocols=("orx.v1", f"orx.bearer.{key}")) as ws:
        await ws.send_json(orchestrate(f"complete {marker}"))
        await recv_until(ws, lambda m: m["type"] == "end")
    await wait_connections_closed(client)
    assert_no_label_contains(key, marker, "orx_not_a_key")


async def test_rate_limited_requests_count_as_rate_limit_rejections(
    gateway_factory: GatewayFactory, tmp_path: Path, peers: Peers
) -> None:
    settings = make_settings(tmp_path, **peer_env(peers), ORX_GATEWAY_RATE_LIMIT="1")
    client = await gateway_factory(settings_=settings)
    before = rejected("rate_limit")
    assert (await client.get("/v1/orchestrations")).status == 200
    assert (await client.get("/v1/orchestrations")).status == 429
    assert rejected("rate_limit") - before == 1


# ---- WebSockets ------------------------------------------------------------------------------------


async def test_a_websocket_is_an_open_stream_until_it_closes_and_its_events_are_counted(
    client: Client, peers: Peers
) -> None:
    open_before = value("orx_gateway_open_streams", transport="ws")
    sent_before = value("orx_gateway_events_sent_total", transport="ws")
    depth_before = value("orx_gateway_send_queue_depth_count")
    closes_before = closes("normal")
    upgrades_before = requests("GET", "/v1/ws", 101)
    async with client.ws_connect("/v1/ws") as ws:
        await ws.send_json(orchestrate("complete streamed"))
        messages = await recv_until(ws, lambda m: m["type"] == "end")
        # The socket's handler is serving (it answered), so it is counted as open.
        assert value("orx_gateway_open_streams", transport="ws") - open_before == 1
    events = [m for m in messages if m["type"] == "event"]
    assert len(events) == len(next(iter(peers.orchestrator.sessions.values())).events) > 0
    assert value("orx_gateway_events_sent_total", transport="ws") - sent_before == len(events)
    # Every message (ack, events, end) was sampled as it was queued.
    assert value("orx_gateway_send_queue_depth_count") - depth_before == len(messages)
    assert value("orx_gateway_send_queue_depth_max") >= 1
    await wait_until(
        lambda: requests("GET", "/v1/ws", 101) - upgrades_before == 1, what="the socket's request to be counted"
    )
    assert value("orx_gateway_open_streams", transport="ws") == open_before
    assert closes("normal") - closes_before == 1


async def test_a_slow_consumer_close_is_counted(gateway_factory: GatewayFactory, peers: Peers) -> None:
    client = await gateway_factory(GatewayOptions(send_queue_size=8))
    slow_before = value("orx_gateway_slow_consumer_closes_total", transport="ws")
    closes_before = closes("slow_consumer")
    async with client.ws_connect("/v1/ws") as ws:
        # As in test_ws: far more than socket buffers hold while the client reads nothing.
        await ws.send_json(orchestrate(f"flood {400} {64 * 1024}"))
        # Reading nothing until the gateway gave up on this socket (and so cancelled the upstream stream).
        await asyncio.wait_for(peers.orchestrator.orchestrate_stream_cancelled.wait(), 20)
        close = None
        for _ in range(1000):
            msg = await ws.receive(timeout=10)
            if msg.type is not WSMsgType.TEXT:
                close = msg
                break
        assert close is not None and close.data == 1008
    await wait_connections_closed(client)
    assert value("orx_gateway_slow_consumer_closes_total", transport="ws") - slow_before == 1
    # The queue held its 8 messages when the 9th overflowed it.
    assert value("orx_gateway_send_queue_depth_max") >= 8
    await wait_until(
        lambda: closes("slow_consumer") - closes_before == 1,
        what="the slow socket's close to be counted",
    )


async def test_websocket_rejections_are_counted(gateway_factory: GatewayFactory, tmp_path: Path, peers: Peers) -> None:
    key = new_key()
    client = await gateway_factory(settings_=keyed_settings(tmp_path, peers, {new_tenant(): key}))
    validation, auth_before = rejected("validation"), rejected("auth")
    async with client.ws_connect("/v1/ws", headers=auth(key)) as ws:
        await ws.send_json({"type": "watch"})
        error = await recv(ws)
        assert error["code"] == "INVALID_ARGUMENT"
    assert rejected("validation") - validation == 1
    unauthenticated = closes("unauthenticated")
    async with client.ws_connect("/v1/ws") as ws:
        await ws.send_json({"type": "auth", "key": "orx_wrong"})
        msg = await ws.receive(timeout=5)
        assert msg.type is WSMsgType.CLOSE and msg.data == 4401
    assert rejected("auth") - auth_before == 1
    await wait_until(lambda: closes("unauthenticated") - unauthenticated == 1, what="the 4401 close to be counted")


async def test_sockets_the_gateway_closes_are_counted_by_its_close_code(gateway_factory: GatewayFactory) -> None:
    client = await gateway_factory(GatewayOptions(max_ws_message_bytes=1024))
    binary, too_big = closes("unsupported_data"), closes("too_big")
    async with client.ws_connect("/v1/ws") as ws:
        await ws.send_bytes(b"\x00")
        assert (await ws.receive(timeout=5)).data == 1003
    async with client.ws_connect("/v1/ws") as ws:
        await ws.send_str("x" * 2048)
        assert (await ws.receive(timeout=5)).data == 1009
    await wait_until(
        lambda: (closes("unsupported_data") - binary, closes("too_big") - too_big) == (1, 1),
        what="both closes to be counted",
    )


# ---- Server-Sent Events ----------------------------------------------------------------------------


async def test_an_sse_stream_is_open_until_it_ends_and_its_events_are_counted(client: Client, peers: Peers) -> None:
    open_before = value("orx_gateway_open_streams", transport="sse")
    sent_before = value("orx_gateway_events_sent_total", transport="sse")
    completed_before = closes("completed", "sse")
    streams_before = requests("GET", EVENTS_ROUTE, 200)
    started = await client.post("/v1/orchestrations", json={"prompt": "block watched"})
    session_id = (await started.json())["session_id"]
    response = await client.get(f"/v1/orchestrations/{session_id}/events")
    assert response.status == 200
    assert await response.content.readuntil(b"\n\n") == b"retry: 2000\n\n"
    first = await response.content.readuntil(b"\n\n")
    assert first.startswith(b"id: 1\n")
    assert value("orx_gateway_open_streams", transport="sse") - open_before == 1
    # Cancelling adds the terminal event, which ends the stream.
    assert (await client.post(f"/v1/orchestrations/{session_id}:cancel")).status == 200
    rest = (first + await response.content.read()).decode()
    ids = [line for line in rest.splitlines() if line.startswith("id: ")]
    assert len(ids) == len(peers.orchestrator.sessions[session_id].events) >= 2
    await wait_until(
        lambda: requests("GET", EVENTS_ROUTE, 200) - streams_before == 1, what="the stream's request to be counted"
    )
    assert value("orx_gateway_open_streams", transport="sse") == open_before
    assert value("orx_gateway_events_sent_total", transport="sse") - sent_before == len(ids)
    assert closes("completed", "sse") - completed_before == 1
    assert_no_label_contains(session_id)


async def test_an_sse_client_that_leaves_is_counted_as_gone(gateway_factory: GatewayFactory, peers: Peers) -> None:
    client = await gateway_factory(GatewayOptions(sse_heartbeat=0.05))
    open_before = value("orx_gateway_open_streams", transport="sse")
    gone_before = closes("client_gone", "sse")
    started = await client.post("/v1/orchestrations", json={"prompt": "block left"})
    session_id = (await started.json())["session_id"]
    response = await client.get(f"/v1/orchestrations/{session_id}/events")
    seen = b""
    while b": ping" not in seen:
        seen += await response.content.readany()
    assert value("orx_gateway_open_streams", transport="sse") - open_before == 1
    response.close()
    await wait_until(
        lambda: closes("client_gone", "sse") - gone_before == 1,
        what="the stream's end to be counted",
    )
    assert value("orx_gateway_open_streams", transport="sse") == open_before


async def test_a_streamed_openai_completion_is_an_sse_stream(client: Client) -> None:
    open_before = value("orx_gateway_open_streams", transport="sse")
    completed_before = closes("completed", "sse")
    body = {"model": "orchestratex", "stream": True, "messages": [{"role": "user", "content": "complete it"}]}
    response = await client.post("/openai/v1/chat/completions", json=body)
    assert response.status == 200
    text = await response.text()
    assert text.rstrip().endswith("data: [DONE]")
    await wait_until(
        lambda: closes("completed", "sse") - completed_before == 1,
        what="the stream's end to be counted",
    )
    assert value("orx_gateway_open_streams", transport="sse") == open_before


# ---- the real services -----------------------------------------------------------------------------


async def test_a_live_session_leaves_no_key_prompt_or_session_id_in_any_metric(tmp_path: Path) -> None:
    """A whole session on the real services (simulator), over a WebSocket, then over SSE: every metric of the
    process, the services' included, is free of the key, the prompt and the session id."""
    marker = f"prompt-marker-{uuid.uuid4().hex}"
    sent_ws, sent_sse = (
        value("orx_gateway_events_sent_total", transport="ws"),
        value("orx_gateway_events_sent_total", transport="sse"),
    )
    async with running_stack(tmp_path) as stack, aiohttp.ClientSession() as http:
        async with http.ws_connect(f"{stack.base}/v1/ws", headers=stack.auth()) as ws:
            await ws.send_json(orchestrate(f"Write a haiku about {marker}"))
            messages = await recv_until(ws, lambda m: m["type"] in ("end", "error"), limit=1000)
        assert messages[-1]["type"] == "end", messages[-1]
        session_id = messages[0]["session_id"]
        events = sum(m["type"] == "event" for m in messages)
        assert value("orx_gateway_events_sent_total", transport="ws") - sent_ws == events
        async with http.get(f"{stack.base}/v1/orchestrations/{session_id}/events", headers=stack.auth()) as resp:
            assert resp.status == 200
            replayed = [line for line in (await resp.text()).splitlines() if line.startswith("id: ")]
        # The stream replays the whole session (it has ended) and its handler counted each event before ending.
        assert len(replayed) == events
        await wait_until(
            lambda: value("orx_gateway_events_sent_total", transport="sse") - sent_sse == events,
            what="the replayed events to be counted",
        )
        assert_no_label_contains(stack.key_a, marker, session_id)
        gateway_labels = {v for (name, labels) in samples() if name.startswith("orx_gateway_") for _, v in labels}
        assert "tenant-a" not in gateway_labels


# ---- tenants ---------------------------------------------------------------------------------------


def tenant_samples() -> Samples:
    return {key: v for key, v in samples().items() if any(name == "tenant" for name, _ in key[1])}


async def test_without_tenant_labelling_no_tenant_appears(
    gateway_factory: GatewayFactory, tmp_path: Path, peers: Peers
) -> None:
    tenant, key = new_tenant(), new_key()
    client = await gateway_factory(settings_=keyed_settings(tmp_path, peers, {tenant: key}))
    assert client.app is not None
    before = tenant_samples()
    for _ in range(3):
        assert (await client.get("/v1/orchestrations", headers=auth(key))).status == 200
    assert tenant_samples() == before  # off: the tenant metric gains no series and no count
    assert tenant not in label_values()


async def test_tenant_labelling_is_capped_and_the_rest_is_other(
    gateway_factory: GatewayFactory, tmp_path: Path, peers: Peers
) -> None:
    tenants = {new_tenant(): new_key() for _ in range(3)}
    settings = keyed_settings(tmp_path, peers, tenants, **{METRICS_TENANTS_VAR: "1"})
    options = GatewayOptions.from_settings(settings)
    assert options.metrics_tenants == 1
    client = await gateway_factory(options, settings)

    def other() -> float:
        return value("orx_gateway_tenant_requests_total", tenant=metrics.OTHER_TENANT, status_class="2xx")

    other_before = other()
    first, *rest = tenants
    for tenant in [first, first, *rest]:
        assert (await client.get("/v1/orchestrations", headers=auth(tenants[tenant]))).status == 200
    assert value("orx_gateway_tenant_requests_total", tenant=first, status_class="2xx") == 2
    assert other() - other_before == 2
    labelled = {dict(labels)["tenant"] for (_, labels) in tenant_samples()}
    assert labelled & set(tenants) == {first}
    assert_no_label_contains(*tenants.values())


def test_the_tenant_cap_is_a_bounded_whole_number() -> None:
    assert Settings.from_env({}, sections=("gateway",)).gateway.metrics_tenants == 0
    assert Settings.from_env({METRICS_TENANTS_VAR: "25"}, sections=("gateway",)).gateway.metrics_tenants == 25
    for bad in ("-1", "1001", "lots", "2.5"):
        with pytest.raises(ConfigError, match=METRICS_TENANTS_VAR):
            Settings.from_env({METRICS_TENANTS_VAR: bad}, sections=("gateway",))


def test_tenant_labels_are_the_first_tenants_seen_then_other() -> None:
    labels = metrics.TenantLabels(2)
    assert [labels.label(t) for t in ("a", "b", "c", "a", "d", "b")] == ["a", "b", "other", "a", "other", "b"]
    assert metrics.TenantLabels(0).label("a") == "other"


# ---- tracing ---------------------------------------------------------------------------------------


@pytest.fixture
def spans(monkeypatch: pytest.MonkeyPatch) -> Iterator[InMemorySpanExporter]:
    """An in-memory exporter on an SDK tracer provider: the process's global one when it is an SDK provider,
    else one that ``trace.get_tracer_provider()`` returns for this test only. The global provider can be set once
    per process, and orchestratex.tracing installs its own there: a test must not take that place."""
    provider = trace.get_tracer_provider()
    if not isinstance(provider, TracerProvider):
        local = TracerProvider(id_generator=private_id_generator())
        monkeypatch.setattr(trace, "get_tracer_provider", lambda: local)
        provider = local
    exporter = InMemorySpanExporter()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    try:
        yield exporter
    finally:
        # A global provider keeps its processors; a stopped exporter keeps nothing more.
        exporter.shutdown()


def server_spans(exporter: InMemorySpanExporter) -> list[ReadableSpan]:
    return [span for span in exporter.get_finished_spans() if span.kind is trace.SpanKind.SERVER]


def assert_no_attribute_contains(span: ReadableSpan, *secrets: str) -> None:
    for name, found in (span.attributes or {}).items():
        for secret in secrets:
            assert secret not in str(found), f"span attribute {name} holds {secret!r}"


async def test_a_request_is_a_server_span_named_by_its_route_template(
    spans: InMemorySpanExporter, gateway_factory: GatewayFactory, tmp_path: Path, peers: Peers
) -> None:
    peers.orchestrator.finish_all = True
    key = new_key()
    client = await gateway_factory(settings_=keyed_settings(tmp_path, peers, {new_tenant(): key}))
    assert client.app is not None
    assert "tracing_middleware" in client.app.middlewares[0].__qualname__
    marker = f"prompt-marker-{uuid.uuid4().hex}"
    created = await client.post("/v1/orchestrations", json={"prompt": f"complete {marker}"}, headers=auth(key))
    assert created.status == 201
    session_id = (await created.json())["session_id"]
    trace_id, parent_id = uuid.uuid4().int, uuid.uuid4().int >> 64
    traceparent = f"00-{trace_id:032x}-{parent_id:016x}-01"
    found = await client.get(f"/v1/orchestrations/{session_id}", headers={**auth(key), "traceparent": traceparent})
    assert found.status == 200
    by_name = {span.name: span for span in server_spans(spans)}
    assert {"POST /v1/orchestrations", f"GET {SESSION_ROUTE}"} <= set(by_name)
    span = by_name[f"GET {SESSION_ROUTE}"]
    attributes = dict(span.attributes or {})
    assert attributes["http.route"] == SESSION_ROUTE
    assert attributes[tracing.REQUEST_ID_ATTRIBUTE] == found.headers["X-Request-Id"]
    assert span.context is not None and span.context.trace_id == trace_id
    assert span.parent is not None and span.parent.span_id == parent_id
    assert span.status.status_code is trace.StatusCode.UNSET
    for server_span in server_spans(spans):
        assert session_id not in server_span.name
        assert_no_attribute_contains(server_span, key, marker)


async def test_a_5xx_span_is_an_error_and_a_404_is_not(
    spans: InMemorySpanExporter, gateway_factory: GatewayFactory, peers: Peers
) -> None:
    client = await gateway_factory()  # built once the SDK provider is in place
    peers.providers.fail_with = Unavailable("providers are down")
    assert (await client.get("/v1/models")).status == 503
    assert (await client.get(f"/v1/orchestrations/{uuid.uuid4().hex}")).status == 404
    by_name = {span.name: span for span in server_spans(spans)}
    assert by_name["GET /v1/models"].status.status_code is trace.StatusCode.ERROR
    assert by_name[f"GET {SESSION_ROUTE}"].status.status_code is trace.StatusCode.UNSET


async def test_without_an_sdk_tracer_provider_no_tracing_middleware_is_installed(
    gateway_factory: GatewayFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(trace, "get_tracer_provider", trace.NoOpTracerProvider)
    assert not tracing.tracing_configured()
    assert tracing.tracing_middleware() is None
    client = await gateway_factory()
    assert client.app is not None
    names = [m.__qualname__ for m in client.app.middlewares]
    assert len(names) == 3 and names[0].startswith("http_middleware.")
    assert (await client.get("/healthz")).status == 200


async def test_the_instrumentor_when_active_traces_each_request_once(
    spans: InMemorySpanExporter, gateway_factory: GatewayFactory
) -> None:
    provider = trace.get_tracer_provider()
    instrumentor = AioHttpServerInstrumentor()
    # One reason gateway.tracing does not use it: it subclasses web.Application, which aiohttp discourages.
    with pytest.warns(DeprecationWarning, match="Inheritance class _InstrumentedApplication"):
        instrumentor.instrument(tracer_provider=provider)
    try:
        assert tracing.tracing_middleware() is None
        client = await gateway_factory()
        assert (await client.get("/healthz")).status == 200
    finally:
        instrumentor.uninstrument()
    assert [span.name for span in server_spans(spans)] == ["GET /healthz"]


def test_without_tracing_the_gateway_imports_no_opentelemetry_sdk() -> None:
    """The default stack pays nothing for tracing: building the app loads neither the SDK nor an instrumentation."""
    code = (
        "import sys, gateway.app\n"
        "loaded = [m for m in sys.modules if m.startswith(('opentelemetry.sdk', 'opentelemetry.instrumentation'))]\n"
        "print(loaded)\n"
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("OTEL_")}
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "[]", done.stdout
