"""Application wiring: static page, start_gateway on port 0, graceful shutdown, ``python -m gateway``."""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import sys
from pathlib import Path
from typing import Any

import aiohttp
from aiohttp import WSMsgType
from aiohttp.test_utils import TestClient

from gateway import start_gateway
from gateway.app import STATIC_DIR
from orchestratex.config import Settings
from orchestratex.v1 import orchestrator_pb2 as pb

from .conftest import Peers

Client = TestClient[Any, Any]


async def test_index_page_is_served_as_html_with_a_strict_policy(client: Client) -> None:
    response = await client.get("/")
    assert response.status == 200
    assert response.content_type == "text/html"
    assert response.charset == "utf-8"
    text = await response.text()
    assert "<title>OrchestrateX</title>" in text
    assert 'src="/static/app.js"' in text
    csp = response.headers["Content-Security-Policy"]
    assert "script-src 'self'" in csp and "default-src 'none'" in csp
    assert response.headers["X-Content-Type-Options"] == "nosniff"


async def test_script_and_stylesheet_content_types(client: Client) -> None:
    js = await client.get("/static/app.js")
    assert js.status == 200 and js.content_type == "text/javascript"
    assert (await js.read()) == (STATIC_DIR / "app.js").read_bytes()
    css = await client.get("/static/style.css")
    assert css.status == 200 and css.content_type == "text/css"
    missing = await client.get("/static/secrets.txt")
    assert missing.status == 404
    assert (await missing.json())["error"]["code"] == "NOT_FOUND"
    traversal = await client.get("/static/..%2Fapp.py")
    assert traversal.status == 404


def test_page_never_inserts_markup() -> None:
    # Model output is untrusted: the page may only use textContent / text nodes.
    js = "\n".join(path.read_text(encoding="utf-8") for path in sorted(STATIC_DIR.glob("*.js")))
    for sink in ("innerHTML", "outerHTML", "insertAdjacentHTML", "document.write", "eval(", "new Function"):
        assert sink not in js, sink
    html = (STATIC_DIR / "index.html").read_text(encoding="utf-8")
    assert "http://" not in html and "https://" not in html  # no CDN
    # Every element the modules look up exists in the page.
    ids = set(re.findall(r'byId\("([a-z-]+)"', js))
    assert ids and all(f'id="{i}"' in html for i in ids), ids - set(re.findall(r'id="([a-z-]+)"', html))


async def test_start_gateway_on_port_zero(settings: Settings) -> None:
    runner, port = await start_gateway(settings, "127.0.0.1", 0)
    try:
        assert port > 0
        async with aiohttp.ClientSession() as http, http.get(f"http://127.0.0.1:{port}/healthz") as response:
            assert response.status == 200
            assert await response.json() == {"status": "ok"}
    finally:
        await runner.cleanup()


async def test_shutdown_closes_sockets_with_1001_and_leaves_sessions_running(settings: Settings, peers: Peers) -> None:
    runner, port = await start_gateway(settings, "127.0.0.1", 0)
    stopped = False
    try:
        async with aiohttp.ClientSession() as http, http.ws_connect(f"http://127.0.0.1:{port}/v1/ws") as ws:
            await ws.send_json({"type": "orchestrate", "request": {"prompt": "block"}})
            ack = json.loads((await ws.receive(timeout=5)).data)
            session_id = ack["session_id"]
            cleanup = asyncio.create_task(runner.cleanup())
            while True:
                msg = await ws.receive(timeout=10)
                if msg.type is not WSMsgType.TEXT:
                    break
            assert msg.type is WSMsgType.CLOSE
            assert msg.data == 1001
            assert "shutting down" in (msg.extra or "")
            await asyncio.wait_for(cleanup, 10)
            stopped = True
    finally:
        if not stopped:
            await runner.cleanup()
    # The client can reconnect (to another instance) and watch: the session was not cancelled.
    await asyncio.wait_for(peers.orchestrator.orchestrate_stream_cancelled.wait(), 5)
    assert peers.orchestrator.cancel_requests == []
    assert peers.orchestrator.sessions[session_id].status == pb.SESSION_STATUS_RUNNING


async def test_python_dash_m_gateway_serves_and_stops_on_sigterm(tmp_path: Path, peers: Peers) -> None:
    env = {
        **os.environ,
        "ORX_DATA_DIR": str(tmp_path),
        "ORX_GATEWAY_LISTEN": "127.0.0.1:0",
        "ORX_ORCHESTRATOR_ADDR": f"127.0.0.1:{peers.orchestrator_server.port}",
        "ORX_PROVIDERS_ADDR": f"127.0.0.1:{peers.providers_server.port}",
        "ORX_LOG_FORMAT": "json",
        "ORX_SHUTDOWN_GRACE": "3",
    }
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "gateway", env=env, stderr=asyncio.subprocess.PIPE, cwd=Path(__file__).parents[2]
    )
    try:
        assert proc.stderr is not None
        port = None
        while port is None:
            line = await asyncio.wait_for(proc.stderr.readline(), 20)
            assert line, "the gateway exited before listening"
            match = re.search(r"gateway listening on 127\.0\.0\.1:(\d+)", json.loads(line)["msg"])
            port = int(match.group(1)) if match else None
        async with aiohttp.ClientSession() as http, http.get(f"http://127.0.0.1:{port}/readyz") as response:
            assert response.status == 200
        proc.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(proc.wait(), 20) == 0
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()


async def test_configuration_errors_name_the_variable(tmp_path: Path) -> None:
    env = {**os.environ, "ORX_DATA_DIR": str(tmp_path), "ORX_GATEWAY_LISTEN": "nowhere"}
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "gateway", env=env, stderr=asyncio.subprocess.PIPE, cwd=Path(__file__).parents[2]
    )
    _, stderr = await asyncio.wait_for(proc.communicate(), 20)
    assert proc.returncode == 2  # the CLI's exit code for a configuration error
    assert b"ORX_GATEWAY_LISTEN" in stderr
    assert b"Traceback" not in stderr
