"""Gateway benchmark (issue #7): latency the gateway adds between an event's gRPC receipt and its WebSocket
delivery, sustained events/s, and the effect of one stalled client on the others.

    .venv/bin/python -m bench.gateway_bench [--quick] [--out bench/results/gateway.json]

Processes, all on 127.0.0.1, each its own OS process so the gateway's process is measured alone:

* fake orchestrator (``--role fake``): a small ``OrchestratorService`` servicer on the real server stack
  (``orchestratex.grpc_server.create_server``). ``Orchestrate`` reads its pacing from the prompt (JSON:
  events/s, event count, start offset) and streams a realistic mix: ``session_started``, ``model_selected``,
  then rounds of 30 ``response_delta`` (50-200 characters each), ``response_completed`` (the round's whole
  text), three ``critique_completed`` and ``round_completed``; ``session_completed`` last. Each event's
  ``time`` is stamped (wall clock) just before it is handed to gRPC;
* the real gateway: ``orchestratex serve gateway`` with ``ORX_ORCHESTRATOR_ADDR`` = the fake, rate limit off;
* clients (``--role client``): aiohttp WebSockets sending ``{"type": "orchestrate"}``, or, for the floor,
  ``grpc.aio`` streams read straight from the fake (``open_channel``, as the gateway dials it). 200 sockets
  are split over two client processes so the clients are not the bottleneck (their CPU is reported).

Latency = receipt time in the client - the event's ``time`` stamp (same machine, same clock). The floor is
the same streams read over gRPC directly by the client; "added" = gateway path - floor at the same
percentile (p50 and p99 over all events of a run, the first 3 events of each stream skipped). Each
configuration runs ``--repeats`` times, the floor and the gateway path alternating; figures are medians
over repetitions. Sustained throughput ramps the per-socket rate at 200 sockets until
the gateway falls behind (it delivers < 95 % of what the floor delivers at that rate) or uses a whole core;
each step's added p50/p99 tells up to which rate the targets hold.

Stalled client: 200 sockets at the base rate plus one socket whose session streams fast (``--stall-rate``
events/s), run twice: once that socket reads normally, once it never calls receive (a raw socket with a 4 KiB
receive buffer, so its TCP window fills). The others' p99 both ways, their ratio (target <= 1.10), and the close
code and reason the stalled socket finds once it reads again (expected 1008, "consumer too slow: ...").
The machine is shared: each run records its CPU use and the other work's (``Load``).

Fan-out with the real orchestrator (issue 18), run on its own:

    .venv/bin/python -m bench.gateway_bench --fanout [--quick] [--fanout-watchers 1 2] [--label before]

Every service is a real subprocess (``orchestratex serve providers|analytics|selector|orchestrator|gateway``,
simulated models, per-model limits raised so that the limiter never queues). Each block starts 200 fresh
sessions (``Orchestrate`` with ``detached``, dropped after the first event, from the client processes), watches
each ``W`` times, and cancels them at the end. The simulated speed is set from ``W`` so that the clients receive
about 1,000 events/s (:func:`fanout_tokens_per_second`: 20 tokens/s, 5 events/s per session, for W = 1; 10 for
W = 2). Gateway path: one WebSocket per watcher sending ``watch``. Reference: the same watchers as gRPC
``WatchSession`` calls straight to the orchestrator, from the same client processes. Blocks alternate (gateway,
reference; then reference, gateway; ...); latency = receipt time - the event's ``time`` (stamped by the
orchestrator when the event happens) over the events received in each block's window; added = gateway -
reference at the same percentile, per pair of blocks, median over pairs. CPU of every service (/proc/<pid>/stat)
and of the client processes is read at the window's edges: gateway CPU per event = its CPU / events delivered.
The latest run is stored under ``fanout`` in the results file and its headline appended to ``fanout_runs``.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import os
import random
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import aiohttp
import orjson

from bench._suite import BIN, _wait_healthy, _wait_http, cluster, free_port, percentile
from bench.providers_procs import Load, tree_cpu_seconds
from orchestratex.grpc_client import open_channel
from orchestratex.grpc_server import ServiceBinding, create_server
from orchestratex.v1 import common_pb2, orchestrator_pb2_grpc
from orchestratex.v1 import orchestrator_pb2 as pb

ORCHESTRATOR_SERVICE = "orchestratex.v1.OrchestratorService"
WARM_EVENTS = 3
"""Events skipped at the start of each stream (connection and stream set-up)."""
DELTAS_PER_ROUND = 30
FAST_CHARS = (2000, 4000)
"""Delta sizes of the fast socket's session in the stalled-client scenario: it fills the kernel's socket
buffers (up to 4 MiB here) and the gateway's send queue within seconds."""
CRITICS = 3
MODELS = ("z-ai/glm-4.5", "openai/gpt-4o-mini", "anthropic/claude-3.5-haiku", "google/gemini-2.0-flash")
_PROSE = (
    "the function returns a sorted list of values merged from both inputs while keeping stable order "
    "so equal keys from the first list come before those from the second and the loop ends early when "
    "either list is exhausted then appends the remainder which is already sorted by construction"
)
WORDS = tuple(_PROSE.split())


# ---------------------------------------------------------------------------- fake orchestrator


def _text(rng: random.Random, low: int = 50, high: int = 200) -> str:
    target = rng.randint(low, high)
    out: list[str] = []
    size = 0
    while size < target:
        word = rng.choice(WORDS)
        out.append(word)
        size += len(word) + 1
    return " ".join(out)[:target]


def script(
    session_id: str, count: int, rng: random.Random, chars: tuple[int, int] = (50, 200)
) -> Iterator[pb.OrchestrationEvent]:
    """``count`` events of one session in a realistic order (unstamped; ``time`` is set at send), the
    deltas ``chars`` characters long."""
    seq = 0

    def event(**kind: Any) -> pb.OrchestrationEvent:
        nonlocal seq
        seq += 1
        return pb.OrchestrationEvent(session_id=session_id, sequence=seq, **kind)

    author = rng.choice(MODELS)
    critics = [m for m in MODELS if m != author][:CRITICS]
    yield event(session_started=pb.SessionStarted(request=pb.OrchestrateRequest(prompt="bench"), simulated=True))
    yield event(model_selected=pb.ModelSelected(primary_model=author, critic_models=critics))
    round_no = 1
    round_text: list[str] = []
    while seq < count - 1:
        if len(round_text) < DELTAS_PER_ROUND:
            delta = _text(rng, *chars)
            round_text.append(delta)
            yield event(response_delta=pb.ResponseDelta(round=round_no, model=author, text=delta))
            continue
        usage = common_pb2.Usage(prompt_tokens=120, completion_tokens=900, total_tokens=1020, cost_usd=0.0012)
        yield event(
            response_completed=pb.ResponseCompleted(
                round=round_no, model=author, served_model=author, text="".join(round_text), usage=usage
            )
        )
        for critic in critics:
            if seq >= count - 1:
                break
            yield event(
                critique_completed=pb.CritiqueCompleted(
                    round=round_no,
                    critic_model=critic,
                    author_model=author,
                    score=7.5,
                    rationale=_text(rng),
                    strengths=[_text(rng)],
                    weaknesses=[_text(rng)],
                    suggestions=[_text(rng)],
                )
            )
        if seq < count - 1:
            yield event(
                round_completed=pb.RoundCompleted(
                    round=round_no, aggregate_score=7.5, decision=pb.ROUND_DECISION_CONTINUE, critics_scored=CRITICS
                )
            )
        round_no += 1
        round_text = []
    yield event(
        session_completed=pb.SessionCompleted(
            final_text="done", best_round=1, best_model=author, final_score=7.5, rounds_used=round_no
        )
    )


class FakeOrchestrator(orchestrator_pb2_grpc.OrchestratorServiceServicer):
    """``Orchestrate`` streams scripted events at the pace the prompt asks for:
    ``{"rate": events/s, "events": n, "offset": seconds before the first, "chars": [min, max] per delta}``."""

    def __init__(self) -> None:
        self._sessions = 0

    async def Orchestrate(self, request: pb.OrchestrateRequest, context: Any) -> AsyncIterator[pb.OrchestrateResponse]:
        params = json.loads(request.prompt)
        rate, count, offset = float(params["rate"]), int(params["events"]), float(params.get("offset", 0.0))
        self._sessions += 1
        rng = random.Random(self._sessions)
        low, high = params.get("chars", (50, 200))
        loop = asyncio.get_running_loop()
        start = loop.time() + offset
        for i, event in enumerate(script(f"bench-{os.getpid()}-{self._sessions}", count, rng, (low, high))):
            # An absolute schedule: a late event does not push back the ones after it.
            delay = start + i / rate - loop.time()
            if delay > 0:
                await asyncio.sleep(delay)
            event.time.FromNanoseconds(time.time_ns())
            yield pb.OrchestrateResponse(event=event)


async def run_fake(listen: str) -> None:
    """Serve the fake orchestrator until killed."""
    binding = ServiceBinding(
        orchestrator_pb2_grpc.add_OrchestratorServiceServicer_to_server, FakeOrchestrator(), ORCHESTRATOR_SERVICE
    )
    srv = create_server([binding], listen)
    await srv.start()
    await asyncio.Event().wait()


# ---------------------------------------------------------------------------- clients

_SECOND_CACHE: dict[str, int] = {}


def stamp_ns(text: str) -> int:
    """Nanoseconds since the epoch of an RFC 3339 ``...Z`` timestamp (as the gateway writes them)."""
    head, _, frac = text[:-1].partition(".")
    base = _SECOND_CACHE.get(head)
    if base is None:
        base = int(datetime.fromisoformat(head + "+00:00").timestamp())
        _SECOND_CACHE[head] = base
    return base * 1_000_000_000 + (int(frac.ljust(9, "0")) if frac else 0)


@dataclass
class StreamResult:
    """What one client stream saw."""

    latencies_us: list[int]
    events: int
    first_ns: int
    last_ns: int


def _prompt(rate: float, events: int, offset: float, chars: tuple[int, int] = (50, 200)) -> str:
    return json.dumps({"rate": rate, "events": events, "offset": offset, "chars": chars})


async def _ws_stream(session: aiohttp.ClientSession, url: str, prompt: str, start_at: float) -> StreamResult:
    """One socket: start a session and read it to its end."""
    lat: list[int] = []
    first = last = 0
    count = 0
    async with session.ws_connect(url, max_msg_size=0) as ws:
        await asyncio.sleep(max(0.0, start_at - time.time()))
        await ws.send_str(_orchestrate(prompt))
        while True:
            msg = await ws.receive()
            now = time.time_ns()
            if msg.type is not aiohttp.WSMsgType.TEXT:
                raise RuntimeError(f"socket closed early: {msg.type.name} {msg.data} {msg.extra}")
            data = orjson.loads(msg.data)
            kind = data.get("type")
            if kind == "event":
                count += 1
                if not first:
                    first = now
                last = now
                if count > WARM_EVENTS:
                    lat.append((now - stamp_ns(data["event"]["time"])) // 1000)
            elif kind == "end":
                break
            elif kind == "error":
                raise RuntimeError(f"gateway error: {data}")
    return StreamResult(lat, count, first, last)


def _orchestrate(prompt: str) -> str:
    return json.dumps({"type": "orchestrate", "request": {"prompt": prompt}})


def _client_frame(text: str) -> bytes:
    """A masked WebSocket text frame (RFC 6455 5.3: client frames are masked)."""
    payload = text.encode()
    mask = os.urandom(4)
    size = len(payload)
    header = bytes([0x81]) + (bytes([0x80 | size]) if size < 126 else bytes([0x80 | 126]) + size.to_bytes(2, "big"))
    return header + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(payload))


class StalledSocket:
    """A WebSocket client that never reads after the handshake: a plain blocking socket with a 4 KiB receive
    buffer set before connecting, so the TCP window fills after a few KiB (a frozen tab, a dead mobile link).
    Library clients keep reading into memory on their own; this one really stops."""

    def __init__(self, addr: str) -> None:
        host, port = addr.rsplit(":", 1)
        self.sock = socket.socket()
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        self.sock.settimeout(30)
        self.sock.connect((host, int(port)))
        key = base64.b64encode(os.urandom(16)).decode()
        self.sock.sendall(
            f"GET /v1/ws HTTP/1.1\r\nHost: {addr}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n".encode()
        )
        buf = b""
        while b"\r\n\r\n" not in buf:
            chunk = self.sock.recv(4096)
            if not chunk:
                raise RuntimeError("the gateway closed the upgrade")
            buf += chunk
        head, _, self.buffer = buf.partition(b"\r\n\r\n")
        if b" 101 " not in head.split(b"\r\n", 1)[0]:
            raise RuntimeError(f"upgrade refused: {head[:80]!r}")

    def send(self, text: str) -> None:
        """Send one text message."""
        self.sock.sendall(_client_frame(text))

    def drain(self) -> dict[str, Any]:
        """Read everything the gateway managed to send: events counted, then its close frame (or EOF)."""
        buf = bytearray(self.buffer)
        events = 0

        def need(size: int) -> None:
            while len(buf) < size:
                chunk = self.sock.recv(65536)
                if not chunk:
                    raise EOFError
                buf.extend(chunk)

        try:
            while True:
                need(2)
                opcode, size, offset = buf[0] & 0x0F, buf[1] & 0x7F, 2
                if size == 126:
                    need(4)
                    size, offset = int.from_bytes(buf[2:4], "big"), 4
                elif size == 127:
                    need(10)
                    size, offset = int.from_bytes(buf[2:10], "big"), 10
                need(offset + size)
                payload = bytes(buf[offset : offset + size])
                del buf[: offset + size]
                if opcode == 0x1 and payload.startswith(b'{"type":"event"'):
                    events += 1
                elif opcode == 0x1 and payload.startswith(b'{"type":"end"'):
                    return {"events": events, "close_code": None, "close_reason": "", "ended": True}
                elif opcode == 0x8:
                    code = int.from_bytes(payload[:2], "big") if len(payload) >= 2 else None
                    return {"events": events, "close_code": code, "close_reason": payload[2:].decode(errors="replace")}
        except (EOFError, OSError) as exc:
            return {"events": events, "close_code": None, "close_reason": "", "eof": type(exc).__name__}
        finally:
            self.sock.close()


async def _grpc_stream(
    stub: orchestrator_pb2_grpc.OrchestratorServiceStub, prompt: str, start_at: float
) -> StreamResult:
    lat: list[int] = []
    first = last = 0
    count = 0
    await asyncio.sleep(max(0.0, start_at - time.time()))
    async for response in stub.Orchestrate(pb.OrchestrateRequest(prompt=prompt), timeout=600):
        now = time.time_ns()
        count += 1
        if not first:
            first = now
        last = now
        if count > WARM_EVENTS:
            lat.append((now - response.event.time.ToNanoseconds()) // 1000)
    return StreamResult(lat, count, first, last)


async def run_client(args: argparse.Namespace) -> dict[str, Any]:
    """Run ``args.sockets`` streams against the gateway (ws) or the fake (grpc); return their figures."""
    rng = random.Random(args.seed)
    events = max(WARM_EVENTS + 2, round(args.rate * args.seconds))
    cpu0 = time.process_time()
    stall_info: dict[str, Any] | None = None
    prompts = [_prompt(args.rate, events, rng.uniform(0, 1 / args.rate)) for _ in range(args.sockets)]
    if args.mode == "grpc":
        async with open_channel(args.target) as channel:
            stub = orchestrator_pb2_grpc.OrchestratorServiceStub(channel)
            results = list(await asyncio.gather(*(_grpc_stream(stub, p, args.start_at) for p in prompts)))
    else:
        url = f"http://{args.target}/v1/ws"
        connector = aiohttp.TCPConnector(limit=0)
        async with aiohttp.ClientSession(connector=connector) as session:
            # The fast socket: a normal reading client, or one that never reads.
            fast = ""
            if args.fast_rate:
                fast = _prompt(args.fast_rate, round(args.fast_rate * args.seconds), 0.0, FAST_CHARS)
            stalled = StalledSocket(args.target) if fast and args.stall else None
            tasks = [asyncio.create_task(_ws_stream(session, url, p, args.start_at)) for p in prompts]
            reader = None
            if fast and stalled is None:
                reader = asyncio.create_task(_ws_stream(session, url, fast, args.start_at))
            if stalled is not None:
                await asyncio.sleep(max(0.0, args.start_at - time.time()))
                stalled.send(_orchestrate(fast))
            results = list(await asyncio.gather(*tasks))
            if reader is not None:
                await reader
            if stalled is not None:
                stall_info = await asyncio.to_thread(stalled.drain)
    lat = [v for r in results for v in r.latencies_us]
    return {
        "latencies_us": lat,
        "events": sum(r.events for r in results),
        "first_ns": min((r.first_ns for r in results if r.first_ns), default=0),
        "last_ns": max((r.last_ns for r in results), default=0),
        "cpu_s": time.process_time() - cpu0,
        "stall": stall_info,
        "expected_events": events * args.sockets,
    }


# ---------------------------------------------------------------------------- orchestration of a run


@dataclass
class Stack:
    """The fake orchestrator and the gateway, running."""

    fake_addr: str
    gateway_addr: str
    gateway: subprocess.Popen[bytes]
    gateway_log: Path


@contextmanager
def stack(tmp: Path, send_queue: int | None = None, workers: int = 1) -> Iterator[Stack]:
    """Start the fake orchestrator and the real gateway (``orchestratex serve gateway``, ``workers`` worker
    processes) as subprocesses."""
    fake_port, gw_port = free_port(), free_port()
    fake_addr, gateway_addr = f"127.0.0.1:{fake_port}", f"127.0.0.1:{gw_port}"
    env = {
        **os.environ,
        "ORX_DATA_DIR": str(tmp),
        "ORX_LOG_LEVEL": "WARNING",
        "ORX_ORCHESTRATOR_ADDR": fake_addr,
        "ORX_GATEWAY_LISTEN": gateway_addr,
        "ORX_GATEWAY_RATE_LIMIT": "0",
    }
    if send_queue is not None:
        env["ORX_GATEWAY_SEND_QUEUE"] = str(send_queue)
    if workers > 1:
        env["ORX_GATEWAY_WORKERS"] = str(workers)
    # 200 sockets open at once from one address: more than the guard lets wait for their first request
    env["ORX_GATEWAY_MAX_UNAUTHENTICATED_CONNECTIONS"] = "0"
    env.pop("ORX_GATEWAY_API_KEYS", None)
    gateway_log = tmp / "gateway.log"
    procs: list[subprocess.Popen[bytes]] = []
    try:
        fake = subprocess.Popen(
            [sys.executable, "-m", "bench.gateway_bench", "--role", "fake", "--listen", fake_addr],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        procs.append(fake)
        asyncio.run(_wait_healthy(fake_addr, ORCHESTRATOR_SERVICE, fake))
        with gateway_log.open("wb") as log_file:
            gateway = subprocess.Popen(
                [str(BIN / "orchestratex"), "serve", "gateway"], env=env, stdout=log_file, stderr=log_file
            )
        procs.append(gateway)
        asyncio.run(_wait_http(f"http://{gateway_addr}/healthz", gateway))
        yield Stack(fake_addr, gateway_addr, gateway, gateway_log)
    finally:
        for proc in reversed(procs):
            proc.terminate()
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def run_once(
    st: Stack,
    mode: str,
    sockets: int,
    rate: float,
    seconds: float,
    *,
    stall_rate: float = 0.0,
    stall: bool = False,
    processes: int = 1,
) -> dict[str, Any]:
    """One run: ``sockets`` streams at ``rate`` events/s each for ``seconds``, over ``processes`` clients."""
    target = st.gateway_addr if mode == "ws" else st.fake_addr
    processes = max(1, min(processes, sockets))
    shares = [sockets // processes + (1 if i < sockets % processes else 0) for i in range(processes)]
    start_at = time.time() + 3.0 + sockets / 100  # imports and connections first, then all start together
    load0 = Load.now()
    gw_cpu0 = tree_cpu_seconds(st.gateway.pid)
    clients = []
    for i, share in enumerate(shares):
        cmd = [
            sys.executable,
            "-m",
            "bench.gateway_bench",
            "--role",
            "client",
            "--mode",
            mode,
            "--target",
            target,
            "--sockets",
            str(share),
            "--rate",
            str(rate),
            "--seconds",
            str(seconds),
            "--start-at",
            str(start_at),
            "--seed",
            str(i),
        ]
        if i == 0 and stall_rate:
            cmd += ["--fast-rate", str(stall_rate)] + (["--stall"] if stall else [])
        clients.append(subprocess.Popen(cmd, stdout=subprocess.PIPE))
    outputs = []
    for proc in clients:
        out, _ = proc.communicate(timeout=seconds * 4 + 120)
        if proc.returncode != 0:
            raise RuntimeError(f"client exited with {proc.returncode}")
        outputs.append(json.loads(out))
    gw_cpu = tree_cpu_seconds(st.gateway.pid) - gw_cpu0
    load = Load.now().since(load0)
    # The clients have exited by now, so Load counted their CPU as other work: move it back to ours.
    clients_cores = sum(o["cpu_s"] for o in outputs) / load["seconds"]
    load["benchmark_cores"] += clients_cores
    load["other_cores"] = max(0.0, load["other_cores"] - clients_cores)
    lat = [v / 1000 for o in outputs for v in o["latencies_us"]]
    events = sum(o["events"] for o in outputs)
    expected = sum(o["expected_events"] for o in outputs)
    first = min(o["first_ns"] for o in outputs if o["first_ns"])
    last = max(o["last_ns"] for o in outputs)
    span = max(1e-9, (last - first) / 1e9)
    stalls = [o["stall"] for o in outputs if o["stall"] is not None]
    return {
        "mode": mode,
        "sockets": sockets,
        "rate_per_socket": rate,
        "offered_eps": sockets * rate,
        "p50_ms": percentile(lat, 50),
        "p99_ms": percentile(lat, 99),
        "max_ms": max(lat) if lat else float("nan"),
        "samples": len(lat),
        "events": events,
        "delivered_share": events / max(1, expected),
        "delivered_eps": events / span,
        "gateway_cores": gw_cpu / span if mode == "ws" else 0.0,
        "client_cores": [o["cpu_s"] / span for o in outputs],
        "stall": stalls[0] if stalls else None,
        "machine": load,
    }


def _brief(run: dict[str, Any]) -> str:
    return (
        f"{run['mode']:4} n={run['sockets']:3} rate={run['rate_per_socket']:g} p50={run['p50_ms']:.2f} "
        f"p99={run['p99_ms']:.2f} eps={run['delivered_eps']:.0f} share={run['delivered_share']:.3f} "
        f"gw={run['gateway_cores']:.2f} cl={[round(c, 2) for c in run['client_cores']]} "
        f"other={run['machine']['other_cores']:.2f}"
    )


def paired(st: Stack, repeats: int, sockets: int, rate: float, seconds: float, processes: int) -> dict[str, Any]:
    """Floor and gateway runs alternating ``repeats`` times; medians of the per-run figures."""
    reps = []
    for rep in range(repeats):
        order = ("grpc", "ws") if rep % 2 == 0 else ("ws", "grpc")
        runs = {mode: run_once(st, mode, sockets, rate, seconds, processes=processes) for mode in order}
        for mode in order:
            print(_brief(runs[mode]), file=sys.stderr)
        reps.append(runs)

    def med(mode: str, key: str) -> float:
        return float(statistics.median(r[mode][key] for r in reps))

    return {
        "sockets": sockets,
        "rate_per_socket": rate,
        "offered_eps": sockets * rate,
        "client_processes": processes,
        "repeats": repeats,
        "gateway_p50_ms": med("ws", "p50_ms"),
        "gateway_p99_ms": med("ws", "p99_ms"),
        "floor_p50_ms": med("grpc", "p50_ms"),
        "floor_p99_ms": med("grpc", "p99_ms"),
        "added_p50_ms": statistics.median(r["ws"]["p50_ms"] - r["grpc"]["p50_ms"] for r in reps),
        "added_p99_ms": statistics.median(r["ws"]["p99_ms"] - r["grpc"]["p99_ms"] for r in reps),
        "delivered_eps": med("ws", "delivered_eps"),
        "floor_delivered_eps": med("grpc", "delivered_eps"),
        "delivered_share": min(r["ws"]["delivered_share"] for r in reps),
        "gateway_cores": med("ws", "gateway_cores"),
        "client_cores_max": max(max(r["ws"]["client_cores"]) for r in reps),
        "other_cores": statistics.median(r["ws"]["machine"]["other_cores"] for r in reps),
        "runs": reps,
    }


def stalled_scenario(
    st: Stack, repeats: int, sockets: int, rate: float, seconds: float, stall_rate: float, processes: int
) -> dict[str, Any]:
    """The others' p99 with the fast socket reading normally vs never reading, alternating."""
    reps = []
    for rep in range(repeats):
        order = (False, True) if rep % 2 == 0 else (True, False)
        runs = {}
        for stall in order:
            runs[stall] = run_once(
                st, "ws", sockets, rate, seconds, stall_rate=stall_rate, stall=stall, processes=processes
            )
            label = "stalled " if stall else "reading "
            print(label + _brief(runs[stall]), f"stall={runs[stall]['stall']}", file=sys.stderr)
        reps.append({"reading": runs[False], "stalled": runs[True]})
    closes = [r["stalled"]["stall"] for r in reps]
    return {
        "sockets": sockets,
        "rate_per_socket": rate,
        "fast_socket_rate": stall_rate,
        "repeats": repeats,
        "others_p99_reading_ms": statistics.median(r["reading"]["p99_ms"] for r in reps),
        "others_p99_stalled_ms": statistics.median(r["stalled"]["p99_ms"] for r in reps),
        "others_p50_reading_ms": statistics.median(r["reading"]["p50_ms"] for r in reps),
        "others_p50_stalled_ms": statistics.median(r["stalled"]["p50_ms"] for r in reps),
        "p99_ratio": statistics.median(r["stalled"]["p99_ms"] / r["reading"]["p99_ms"] for r in reps),
        "stalled_closes": closes,
        "gateway_slow_consumer_warnings": st.gateway_log.read_text(errors="replace").count("send queue full"),
        "runs": reps,
    }


# ---------------------------------------------------------------------------- fan-out, real orchestrator

FANOUT_TARGET_EPS = 1000
"""Events/s the fan-out scenario delivers to its clients, whatever the number of watchers per session."""


def fanout_tokens_per_second(sessions: int, watchers: int) -> float:
    """The simulated models' speed that makes ``sessions`` sessions, each watched ``watchers`` times, deliver
    about :data:`FANOUT_TARGET_EPS` events/s.

    Answers stream in chunks of 12-16 characters (about 4 tokens; ``services.providers.simulator._chunks``), and
    the orchestrator coalesces answer text every 50 ms at most, so at these speeds each chunk is one
    ``response_delta``: a session emits ``tokens_per_second / 4`` events/s while its author writes (measured:
    20 tokens/s gives 5.1 events/s). 200 sessions x 1 watcher: 20 tokens/s; x 2 watchers: 10 tokens/s.
    """
    return 4.0 * FANOUT_TARGET_EPS / (sessions * watchers)


def fanout_profile(tokens_per_second: float) -> str:
    """The simulator profile of the fan-out scenario: jitter on (speed +-15 %), so that sessions drift apart
    instead of emitting in lockstep."""
    return f"""
seed = 18
latency_jitter = true
[defaults]
ttft_ms = 300
tokens_per_second = {tokens_per_second:g}
"""


FANOUT_ENV = {
    # 200 author calls at once: the shipped per-model limits (32 in flight, 64 queued, 600/min) would queue or
    # reject most of them and starve the event stream. This scenario measures the gateway, not the limiter.
    "ORX_PROVIDER_CONCURRENCY": "10000",
    "ORX_PROVIDER_QUEUE": "10000",
    "ORX_PROVIDER_RPM": "1000000",
}
FANOUT_STAGGER = 1.0
"""Seconds over which a block's sessions are started (evenly), so their events do not come in lockstep."""
FANOUT_WARM = 2.0
"""Seconds from the last session's start to the measurement window (selection, first tokens, watches)."""


def _fanout_request(n: int) -> pb.OrchestrateRequest:
    # Detached: the client drops the Orchestrate stream after the first event, as REST's POST does.
    return pb.OrchestrateRequest(
        prompt=f"Write a Python function that merges two sorted lists (fan-out session {n})",
        detached=True,
        max_rounds=3,
        critic_count=2,
    )


@dataclass
class FanoutStack:
    """Every service as a real subprocess (simulated models) and the gateway in front of the orchestrator."""

    orchestrator_addr: str
    gateway_addr: str
    pids: dict[str, int]
    gateway_log: Path


@contextmanager
def fanout_stack(tmp: Path, tokens_per_second: float) -> Iterator[FanoutStack]:
    """``orchestratex serve providers|analytics|selector|orchestrator|gateway``, each its own process."""
    profile = tmp / "fanout-profile.toml"
    profile.write_text(fanout_profile(tokens_per_second))
    gateway_addr = f"127.0.0.1:{free_port()}"
    extra = {
        "ORX_SIM_PROFILE": str(profile),
        "ORX_GATEWAY_LISTEN": gateway_addr,
        "ORX_GATEWAY_RATE_LIMIT": "0",
        # Without keys a socket counts as unauthenticated until its upgrade is admitted: 100 opened at once
        # from one address would meet the default cap of 64.
        "ORX_GATEWAY_MAX_UNAUTHENTICATED_CONNECTIONS": "0",
        **FANOUT_ENV,
    }
    with cluster(tmp, extra) as c:
        for name in ("providers", "analytics", "selector", "orchestrator"):
            c.start(name)
        env = dict(c.env)
        env.pop("ORX_GATEWAY_API_KEYS", None)
        env.pop("ORX_GATEWAY_API_KEYS_FILE", None)
        gateway_log = tmp / "gateway.log"
        with gateway_log.open("wb") as log_file:
            gateway = subprocess.Popen(
                [str(BIN / "orchestratex"), "serve", "gateway"], env=env, stdout=log_file, stderr=log_file
            )
        try:
            asyncio.run(_wait_http(f"http://{gateway_addr}/healthz", gateway))
            pids = {name: proc.pid for name, proc in c.procs.items()}
            pids["gateway"] = gateway.pid
            yield FanoutStack(c.addr["orchestrator"], gateway_addr, pids, gateway_log)
        finally:
            gateway.terminate()
            try:
                gateway.wait(30)
            except subprocess.TimeoutExpired:
                gateway.kill()
                gateway.wait()


class _Window:
    """Events received inside the measurement window [t0, t1) (wall clock): their count and latencies."""

    def __init__(self, t0: float, t1: float) -> None:
        self.t0_ns, self.t1_ns = int(t0 * 1e9), int(t1 * 1e9)
        self.latencies_us: list[int] = []
        self.events = 0
        self.sequence_errors = 0

    def record(self, now_ns: int, stamp: int) -> None:
        if self.t0_ns <= now_ns < self.t1_ns:
            self.events += 1
            self.latencies_us.append((now_ns - stamp) // 1000)


async def _watch_ws(ws: aiohttp.ClientWebSocketResponse, session_id: str, window: _Window) -> str:
    await ws.send_str(json.dumps({"type": "watch", "session_id": session_id, "after_sequence": 1}))
    last = 1
    async for msg in ws:
        now = time.time_ns()
        if msg.type is not aiohttp.WSMsgType.TEXT:
            return f"socket closed: {msg.type.name}"
        data = orjson.loads(msg.data)
        kind = data.get("type")
        if kind == "event":
            event = data["event"]
            window.record(now, stamp_ns(event["time"]))
            sequence = int(event["sequence"])
            window.sequence_errors += sequence != last + 1
            last = sequence
        elif kind == "error":
            return f"gateway error: {data.get('code')}"
        elif kind == "end":
            return "end"
    return "socket closed"


async def _watch_grpc(stub: orchestrator_pb2_grpc.OrchestratorServiceStub, session_id: str, window: _Window) -> str:
    call = stub.WatchSession(pb.WatchSessionRequest(session_id=session_id, after_sequence=1), timeout=600)
    last = 1
    try:
        async for response in call:
            now = time.time_ns()
            event = response.event
            window.record(now, event.time.ToNanoseconds())
            window.sequence_errors += event.sequence != last + 1
            last = event.sequence
    finally:
        call.cancel()
    return "end"


async def run_fanout_client(args: argparse.Namespace) -> dict[str, Any]:
    """Start ``args.sessions`` sessions on the orchestrator, watch each ``args.watchers`` times over the gateway
    (``ws``) or straight over gRPC (``grpc``) until the window ends, then cancel them."""
    t0, t1 = args.window
    window = _Window(t0, t1)
    stagger = FANOUT_STAGGER / max(1, args.sessions)
    cpu: dict[str, float] = {}
    outcomes: list[str] = []
    session_ids: list[str] = []

    async def sample_cpu() -> None:
        await asyncio.sleep(max(0.0, t0 - time.time()))
        cpu["t0"] = time.process_time()
        await asyncio.sleep(max(0.0, t1 - time.time()))
        cpu["t1"] = time.process_time()

    async def until_window_end(watch: Any) -> None:
        try:
            async with asyncio.timeout(max(0.0, t1 - time.time()) + 0.05):
                outcomes.append(await watch)
        except TimeoutError:
            outcomes.append("window over")

    async with open_channel(args.orchestrator) as channel:
        stub = orchestrator_pb2_grpc.OrchestratorServiceStub(channel)
        connector = aiohttp.TCPConnector(limit=0)
        async with aiohttp.ClientSession(connector=connector) as http:
            sockets: list[aiohttp.ClientWebSocketResponse] = []
            if args.mode == "ws":
                # Connected before the sessions start: handshakes stay out of the measurement.
                url = f"http://{args.target}/v1/ws"
                sockets = list(
                    await asyncio.gather(
                        *(http.ws_connect(url, max_msg_size=0) for _ in range(args.sessions * args.watchers))
                    )
                )

            async def one(i: int) -> None:
                await asyncio.sleep(max(0.0, args.start_at + i * stagger - time.time()))
                call = stub.Orchestrate(_fanout_request(args.seed * 100_000 + i), timeout=60)
                session_id = ""
                try:
                    async for response in call:
                        session_id = response.event.session_id
                        break
                finally:
                    call.cancel()
                session_ids.append(session_id)
                watches = []
                for w in range(args.watchers):
                    if args.mode == "ws":
                        watches.append(until_window_end(_watch_ws(sockets[i * args.watchers + w], session_id, window)))
                    else:
                        watches.append(until_window_end(_watch_grpc(stub, session_id, window)))
                await asyncio.gather(*watches)

            sampler = asyncio.create_task(sample_cpu())
            await asyncio.gather(*(one(i) for i in range(args.sessions)))
            await sampler
            await asyncio.gather(*(ws.close() for ws in sockets))
        # The sessions would run on for a minute: stop them so that the next block starts on an idle stack.
        cancels = [
            stub.CancelSession(pb.CancelSessionRequest(session_id=sid, reason="benchmark block over"), timeout=30)
            for sid in session_ids
        ]
        await asyncio.gather(*cancels, return_exceptions=True)
    return {
        "latencies_us": window.latencies_us,
        "events": window.events,
        "sequence_errors": window.sequence_errors,
        "cpu_s": cpu["t1"] - cpu["t0"],
        "outcomes": {o: outcomes.count(o) for o in set(outcomes)},
    }


def fanout_block(
    st: FanoutStack, mode: str, sessions: int, watchers: int, seconds: float, processes: int
) -> dict[str, Any]:
    """One block: fresh sessions, watched over ``mode`` for ``seconds``; CPU of every process in the window."""
    processes = max(1, min(processes, sessions))
    shares = [sessions // processes + (1 if i < sessions % processes else 0) for i in range(processes)]
    start_at = time.time() + 3.0 + sessions * watchers / 200  # imports, channels and sockets first
    t0 = start_at + FANOUT_STAGGER + FANOUT_WARM
    t1 = t0 + seconds
    clients = []
    for i, share in enumerate(shares):
        cmd = [
            sys.executable,
            "-m",
            "bench.gateway_bench",
            "--role",
            "fanout-client",
            "--mode",
            mode,
            "--target",
            st.gateway_addr,
            "--orchestrator",
            st.orchestrator_addr,
            "--sessions",
            str(share),
            "--watchers",
            str(watchers),
            "--start-at",
            str(start_at),
            "--window",
            str(t0),
            str(t1),
            "--seed",
            str(i + 1),
        ]
        clients.append(subprocess.Popen(cmd, stdout=subprocess.PIPE))
    time.sleep(max(0.0, t0 - time.time()))
    load0 = Load.now()
    cpu0 = {name: tree_cpu_seconds(pid) for name, pid in st.pids.items()}
    time.sleep(max(0.0, t1 - time.time()))
    cpu1 = {name: tree_cpu_seconds(pid) for name, pid in st.pids.items()}
    load = Load.now().since(load0)
    outputs = []
    for proc in clients:
        out, _ = proc.communicate(timeout=seconds + 180)
        if proc.returncode != 0:
            raise RuntimeError(f"fan-out client exited with {proc.returncode}")
        outputs.append(json.loads(out))
    time.sleep(1.0)  # the cancelled sessions' last writes
    span = t1 - t0
    lat = [v / 1000 for o in outputs for v in o["latencies_us"]]
    events = sum(o["events"] for o in outputs)
    cores = {name: (cpu1[name] - cpu0[name]) / span for name in cpu0}
    outcomes: dict[str, int] = {}
    for o in outputs:
        for key, count in o["outcomes"].items():
            outcomes[key] = outcomes.get(key, 0) + count
    client_cpu = sum(o["cpu_s"] for o in outputs)
    return {
        "mode": mode,
        "sessions": sessions,
        "watchers_per_session": watchers,
        "window_s": span,
        "events": events,
        "delivered_eps": events / span,
        "p50_ms": percentile(lat, 50),
        "p99_ms": percentile(lat, 99),
        "max_ms": max(lat) if lat else float("nan"),
        "gateway_cpu_ms_per_event": (cpu1["gateway"] - cpu0["gateway"]) * 1000 / max(1, events),
        "client_cpu_ms_per_event": client_cpu * 1000 / max(1, events),
        "client_cores": [o["cpu_s"] / span for o in outputs],
        "cores": cores,
        "sequence_errors": sum(o["sequence_errors"] for o in outputs),
        "outcomes": outcomes,
        "machine": load,
    }


def _fanout_brief(run: dict[str, Any]) -> str:
    cores = run["cores"]
    return (
        f"{run['mode']:4} eps={run['delivered_eps']:.0f} p50={run['p50_ms']:.2f} p99={run['p99_ms']:.2f} "
        f"gw={cores['gateway']:.2f} core ({run['gateway_cpu_ms_per_event']:.3f} ms/event) "
        f"orch={cores['orchestrator']:.2f} prov={cores['providers']:.2f} "
        f"clients={[round(c, 2) for c in run['client_cores']]} other={run['machine']['other_cores']:.2f} "
        f"outcomes={run['outcomes']}"
    )


def fanout_config(sessions: int, watchers: int, pairs: int, seconds: float, processes: int) -> dict[str, Any]:
    """One configuration on a fresh stack: blocks over the gateway and over gRPC straight from the orchestrator,
    alternating; medians over the pairs."""
    tokens_per_second = fanout_tokens_per_second(sessions, watchers)
    reps = []
    with tempfile.TemporaryDirectory() as tmp, fanout_stack(Path(tmp), tokens_per_second) as st:
        fanout_block(st, "ws", min(20, sessions), 1, 1.0, 1)  # warm-up: imports, channels, first sessions
        for rep in range(pairs):
            order = ("grpc", "ws") if rep % 2 == 0 else ("ws", "grpc")
            runs = {}
            for mode in order:
                runs[mode] = fanout_block(st, mode, sessions, watchers, seconds, processes)
                print(_fanout_brief(runs[mode]), file=sys.stderr)
            reps.append(runs)
        slow_warnings = st.gateway_log.read_text(errors="replace").count("send queue full")

    def med(mode: str, key: str) -> float:
        return float(statistics.median(r[mode][key] for r in reps))

    def med_core(mode: str, name: str) -> float:
        return float(statistics.median(r[mode]["cores"][name] for r in reps))

    return {
        "sessions": sessions,
        "watchers_per_session": watchers,
        "tokens_per_second": tokens_per_second,
        "client_processes": processes,
        "window_s": seconds,
        "pairs": pairs,
        "reference_delivered_eps": med("grpc", "delivered_eps"),
        "gateway_delivered_eps": med("ws", "delivered_eps"),
        "reference_p50_ms": med("grpc", "p50_ms"),
        "reference_p99_ms": med("grpc", "p99_ms"),
        "gateway_p50_ms": med("ws", "p50_ms"),
        "gateway_p99_ms": med("ws", "p99_ms"),
        "added_p50_ms": statistics.median(r["ws"]["p50_ms"] - r["grpc"]["p50_ms"] for r in reps),
        "added_p99_ms": statistics.median(r["ws"]["p99_ms"] - r["grpc"]["p99_ms"] for r in reps),
        "added_p50_ms_per_pair": [r["ws"]["p50_ms"] - r["grpc"]["p50_ms"] for r in reps],
        "added_p99_ms_per_pair": [r["ws"]["p99_ms"] - r["grpc"]["p99_ms"] for r in reps],
        "gateway_cpu_ms_per_event": med("ws", "gateway_cpu_ms_per_event"),
        "gateway_cores": med_core("ws", "gateway"),
        "orchestrator_cores_gateway_path": med_core("ws", "orchestrator"),
        "orchestrator_cores_reference": med_core("grpc", "orchestrator"),
        "client_cpu_ms_per_event_gateway_path": med("ws", "client_cpu_ms_per_event"),
        "client_cpu_ms_per_event_reference": med("grpc", "client_cpu_ms_per_event"),
        "busiest_client_cores": max(max(r[m]["client_cores"]) for r in reps for m in r),
        "other_cores_median": statistics.median(r[m]["machine"]["other_cores"] for r in reps for m in r),
        "sequence_errors": sum(r[m]["sequence_errors"] for r in reps for m in r),
        "gateway_slow_consumer_warnings": slow_warnings,
        "runs": reps,
    }


def fanout_scenario(args: argparse.Namespace) -> dict[str, Any]:
    """Every configuration of ``--fanout-watchers`` (a stack each: the profile depends on it)."""
    quick = args.quick
    pairs = 1 if quick else args.repeats
    seconds = 4.0 if quick else args.seconds
    configs = [
        fanout_config(args.fanout_sessions, watchers, pairs, seconds, args.processes)
        for watchers in args.fanout_watchers
    ]
    return {
        "when": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "label": args.label,
        "quick": quick,
        "cpus": len(os.sched_getaffinity(0)),
        "profile": {"ttft_ms": 300, "latency_jitter": True, "env": FANOUT_ENV},
        "configs": configs,
    }


def fanout_markdown(fanout: dict[str, Any]) -> str:
    """The fan-out scenario's figures as a Markdown table, one row per configuration."""
    lines = [
        f"Fan-out, real orchestrator ({fanout['when']}{', ' + fanout['label'] if fanout.get('label') else ''}):",
        "",
        "| sessions x watchers | events/s delivered (gateway / reference) | gateway p50 / p99 (ms) "
        "| reference p50 / p99 (ms) | added p50 / p99 (ms) | gateway CPU per event (ms) "
        "| client CPU per event, gateway / reference (ms) | busiest client (cores) |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for c in fanout["configs"]:
        lines.append(
            f"| {c['sessions']} x {c['watchers_per_session']} "
            f"| {c['gateway_delivered_eps']:.0f} / {c['reference_delivered_eps']:.0f} "
            f"| {c['gateway_p50_ms']:.2f} / {c['gateway_p99_ms']:.2f} "
            f"| {c['reference_p50_ms']:.2f} / {c['reference_p99_ms']:.2f} "
            f"| {c['added_p50_ms']:.2f} / {c['added_p99_ms']:.2f} | {c['gateway_cpu_ms_per_event']:.3f} "
            f"| {c['client_cpu_ms_per_event_gateway_path']:.3f} / {c['client_cpu_ms_per_event_reference']:.3f} "
            f"| {c['busiest_client_cores']:.2f} |"
        )
    return "\n".join(lines)


def workers_scenario(args: argparse.Namespace) -> dict[str, Any]:
    """Throughput of 1 and 2 gateway workers (``ORX_GATEWAY_WORKERS``) at a rate one worker cannot carry:
    200 sockets at ``--workers-rate`` events/s each, fresh stacks, the two alternating ``--repeats`` times.
    Gateway CPU is the whole process tree's (parent and workers); the fake orchestrator and the clients share
    the same 2 cores, and their CPU is reported beside it."""
    seconds = 3.0 if args.quick else args.seconds
    runs: dict[int, list[dict[str, Any]]] = {1: [], 2: []}
    for rep in range(1 if args.quick else args.repeats):
        for workers in (1, 2) if rep % 2 == 0 else (2, 1):
            with tempfile.TemporaryDirectory() as tmp, stack(Path(tmp), workers=workers) as st:
                run_once(st, "ws", 10, args.rate, 1.0)  # warm-up
                run = run_once(st, "ws", 200, args.workers_rate, seconds, processes=args.processes)
            run["workers"] = workers
            runs[workers].append(run)
            print(f"{workers} worker(s): " + _brief(run), file=sys.stderr)

    def med(workers: int, key: str) -> float:
        return float(statistics.median(r[key] for r in runs[workers]))

    summary: dict[str, Any] = {
        "when": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "sockets": 200,
        "offered_eps": 200 * args.workers_rate,
        **{
            f"{w}_workers": {
                "delivered_eps": med(w, "delivered_eps"),
                "p50_ms": med(w, "p50_ms"),
                "p99_ms": med(w, "p99_ms"),
                "gateway_cores": med(w, "gateway_cores"),
                "gateway_cpu_us_per_event": statistics.median(
                    r["gateway_cores"] / r["delivered_eps"] * 1e6 for r in runs[w]
                ),
                "client_cores": statistics.median(sum(r["client_cores"]) for r in runs[w]),
                "other_cores": statistics.median(r["machine"]["other_cores"] for r in runs[w]),
            }
            for w in (1, 2)
        },
        "runs": runs,
    }
    summary["speedup_2_over_1"] = summary["2_workers"]["delivered_eps"] / summary["1_workers"]["delivered_eps"]
    return summary


def bench(args: argparse.Namespace) -> dict[str, Any]:
    """Every scenario, in one stack."""
    quick = args.quick
    repeats = 1 if quick else args.repeats
    seconds = 3.0 if quick else args.seconds
    rate = args.rate
    result: dict[str, Any] = {
        "when": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "cpus": len(os.sched_getaffinity(0)),
        "quick": quick,
        "seconds_per_run": seconds,
    }
    only = args.only
    with tempfile.TemporaryDirectory() as tmp, stack(Path(tmp)) as st:
        run_once(st, "ws", 10, rate, 1.0)  # warm-up: imports, channel, first connections
        if only in (None, "latency"):
            levels = [1, 20] if quick else [1, 50, 200]
            result["latency"] = [
                paired(st, repeats, n, rate, seconds, args.processes if n >= 100 else 1) for n in levels
            ]
        if not quick and only in (None, "throughput"):
            # Ramped until the gateway saturates (it falls behind the offered rate, or uses a whole core);
            # each step's added p99 says up to which rate the 5 ms budget holds.
            ramp = []
            for per_socket in args.ramp:
                step = paired(st, 1, 200, per_socket, seconds, args.processes)
                ramp.append(step)
                # Behind: the gateway delivers less than 95 % of what the same streams deliver over gRPC.
                behind = step["delivered_eps"] < 0.95 * step["floor_delivered_eps"]
                if behind or step["gateway_cores"] > 0.95:
                    break
            result["throughput"] = ramp
            within = [s["delivered_eps"] for s in ramp if s["added_p99_ms"] <= 5 and s["added_p50_ms"] <= 1]
            result["sustained_eps_within_targets"] = max(within, default=0.0)
            result["sustained_eps_max"] = max(s["delivered_eps"] for s in ramp)
        if only in (None, "stalled"):
            sockets = 50 if quick else 200
            stall_seconds = max(seconds, 6.0)
            result["stalled"] = stalled_scenario(
                st, repeats, sockets, rate, stall_seconds, args.stall_rate, 1 if quick else args.processes
            )
    runs = [
        run
        for part in ("latency", "throughput")
        for row in result.get(part, [])
        for rep in row["runs"]
        for run in rep.values()
    ]
    runs += [run for rep in result.get("stalled", {}).get("runs", []) for run in rep.values()]
    result["machine"] = {
        "other_cores_median": statistics.median(r["machine"]["other_cores"] for r in runs),
        "other_cores_max": max(r["machine"]["other_cores"] for r in runs),
        "loadavg_1min_end": os.getloadavg()[0],
    }
    return result


def main(argv: list[str] | None = None) -> None:
    """Entry point: the benchmark (default) or one of its roles (fake orchestrator, client)."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="smoke run (< 1 min)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=10.0, help="length of each run")
    parser.add_argument("--rate", type=float, default=10.0, help="events/s per socket (latency table)")
    parser.add_argument("--ramp", type=float, nargs="+", default=[10, 15, 20, 25, 30, 40, 60])
    parser.add_argument("--stall-rate", type=float, default=800.0, help="events/s of the stalled socket")
    parser.add_argument("--processes", type=int, default=2, help="client processes at >= 100 sockets")
    parser.add_argument("--out", type=Path, default=Path("bench/results/gateway.json"))
    # roles (internal)
    parser.add_argument("--fanout", action="store_true", help="run only the fan-out scenario (real orchestrator)")
    parser.add_argument("--fanout-sessions", type=int, default=200, help="fan-out: sessions per block")
    parser.add_argument(
        "--fanout-watchers", type=int, nargs="+", default=[1, 2], help="fan-out: sockets watching each session"
    )
    parser.add_argument("--label", default="", help="fan-out: a note stored with the figures (e.g. before)")
    parser.add_argument(
        "--workers", action="store_true", help="run only the 1 -> 2 gateway workers throughput scenario"
    )
    parser.add_argument("--workers-rate", type=float, default=40.0, help="workers: events/s per socket (200)")
    parser.add_argument(
        "--role", choices=("bench", "fake", "client", "fanout-client"), default="bench", help=argparse.SUPPRESS
    )
    parser.add_argument("--orchestrator", help=argparse.SUPPRESS)
    parser.add_argument("--sessions", type=int, default=1, help=argparse.SUPPRESS)
    parser.add_argument("--watchers", type=int, default=1, help=argparse.SUPPRESS)
    parser.add_argument("--window", type=float, nargs=2, help=argparse.SUPPRESS)
    parser.add_argument("--listen", help=argparse.SUPPRESS)
    parser.add_argument("--mode", choices=("ws", "grpc"), help=argparse.SUPPRESS)
    parser.add_argument("--target", help=argparse.SUPPRESS)
    parser.add_argument("--sockets", type=int, default=1, help=argparse.SUPPRESS)
    parser.add_argument("--start-at", type=float, default=0.0, help=argparse.SUPPRESS)
    parser.add_argument("--seed", type=int, default=0, help=argparse.SUPPRESS)
    parser.add_argument("--stall", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--fast-rate", type=float, default=0.0, help=argparse.SUPPRESS)
    parser.add_argument("--only", choices=("latency", "throughput", "stalled"), help="run one part, merge results")
    parser.add_argument("--markdown", type=Path, help="print the Markdown tables of a results file and exit")
    args = parser.parse_args(argv)
    if args.markdown is not None:
        print(markdown(json.loads(args.markdown.read_text())))
        return
    if args.role == "fake":
        asyncio.run(run_fake(args.listen))
        return
    if args.role == "client":
        sys.stdout.buffer.write(orjson.dumps(asyncio.run(run_client(args))))
        return
    if args.role == "fanout-client":
        sys.stdout.buffer.write(orjson.dumps(asyncio.run(run_fanout_client(args))))
        return
    if args.workers:
        scaling = workers_scenario(args)
        stored = json.loads(args.out.read_text()) if args.out.exists() else {}
        stored["workers"] = scaling
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(stored, indent=2) + "\n")
        print(json.dumps({k: v for k, v in scaling.items() if k != "runs"}, indent=2))
        return
    if args.fanout:
        fanout = fanout_scenario(args)
        stored = json.loads(args.out.read_text()) if args.out.exists() else {}
        # The latest run in full; every run's headline figures kept in order (before/after a change).
        stored["fanout"] = fanout
        headline = {**fanout, "configs": [{k: v for k, v in c.items() if k != "runs"} for c in fanout["configs"]]}
        stored.setdefault("fanout_runs", []).append(headline)
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(stored, indent=2) + "\n")
        print(json.dumps(headline, indent=2))
        print(fanout_markdown(fanout))
        print(f"written to {args.out}", file=sys.stderr)
        return
    result = bench(args)
    if args.only is not None and args.out.exists():
        # One part re-run: the other parts of the previous results are kept.
        previous = json.loads(args.out.read_text())
        previous.setdefault("partial_runs", []).append({k: result[k] for k in ("when", "machine", "seconds_per_run")})
        result = {**previous, **{k: v for k, v in result.items() if k not in ("when", "machine")}}
    elif args.out.exists():
        # The fan-out scenario runs on its own (--fanout): a full run of the others keeps its figures.
        previous = json.loads(args.out.read_text())
        result.update({k: previous[k] for k in ("fanout", "fanout_runs", "workers") if k in previous})
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(_headline(result), indent=2))
    print(markdown(result))
    print(f"written to {args.out}", file=sys.stderr)


def markdown(result: dict[str, Any]) -> str:
    """The results as Markdown tables (for docs/benchmarks.md)."""
    lines = [
        "| sockets | events/s offered | gateway p50 / p99 (ms) | gRPC floor p50 / p99 (ms) "
        "| added p50 / p99 (ms) | gateway CPU (cores) |",
        "| ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for row in result["latency"]:
        lines.append(
            f"| {row['sockets']} | {row['offered_eps']:.0f} "
            f"| {row['gateway_p50_ms']:.2f} / {row['gateway_p99_ms']:.2f} "
            f"| {row['floor_p50_ms']:.2f} / {row['floor_p99_ms']:.2f} "
            f"| {row['added_p50_ms']:.2f} / {row['added_p99_ms']:.2f} | {row['gateway_cores']:.2f} |"
        )
    if result.get("throughput"):
        lines += [
            "",
            "| events/s per socket (200 sockets) | offered | delivered | added p50 / p99 (ms) "
            "| gateway CPU (cores) | busiest client (cores) |",
            "| ---: | ---: | ---: | ---: | ---: | ---: |",
        ]
        for row in result["throughput"]:
            lines.append(
                f"| {row['rate_per_socket']:g} | {row['offered_eps']:.0f} | {row['delivered_eps']:.0f} "
                f"| {row['added_p50_ms']:.2f} / {row['added_p99_ms']:.2f} | {row['gateway_cores']:.2f} "
                f"| {row['client_cores_max']:.2f} |"
            )
    if "sustained_eps_max" in result:
        lines += [
            "",
            f"Sustained: {result['sustained_eps_max']:.0f} events/s delivered at the highest step; "
            f"{result['sustained_eps_within_targets']:.0f} events/s with added p50 <= 1 ms and p99 <= 5 ms.",
        ]
    stalled = result["stalled"]
    codes = sorted({f"{c.get('close_code')} {c.get('close_reason', '')!r}" for c in stalled["stalled_closes"]})
    lines += [
        "",
        f"| {stalled['sockets']} sockets + 1 fast socket | others p50 (ms) | others p99 (ms) |",
        "| --- | ---: | ---: |",
        f"| fast socket reads | {stalled['others_p50_reading_ms']:.2f} | {stalled['others_p99_reading_ms']:.2f} |",
        f"| fast socket stalled | {stalled['others_p50_stalled_ms']:.2f} | {stalled['others_p99_stalled_ms']:.2f} |",
        "",
        f"p99 ratio stalled / reading: {stalled['p99_ratio']:.2f}; the stalled socket was closed with: "
        + "; ".join(codes),
    ]
    if "fanout" in result:
        lines += ["", fanout_markdown(result["fanout"])]
    return "\n".join(lines)


def _headline(result: dict[str, Any]) -> dict[str, Any]:
    """The figures without the per-run detail."""
    drop = {"runs"}
    out: dict[str, Any] = {}
    for key, value in result.items():
        if key in ("fanout", "fanout_runs"):
            continue  # printed by fanout_markdown
        if isinstance(value, list):
            out[key] = [{k: v for k, v in item.items() if k not in drop} for item in value]
        elif isinstance(value, dict):
            out[key] = {k: v for k, v in value.items() if k not in drop}
        else:
            out[key] = value
    return out


if __name__ == "__main__":
    main()
