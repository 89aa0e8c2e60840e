"""`orchestratex up` supervises its services: a dead one is restarted with backoff, the others keep running.

The process fault tests start the real `orchestratex up` as a subprocess (as a user does), kill one service's
process with SIGKILL, and follow what happens through the supervisor's JSON log records and gRPC health.
The backoff bookkeeping itself is pure and tested without processes.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from orchestratex.config import RestartPolicy
from services.launcher import SERVICE_NAMES, _Restarts
from tests.ports import free_port

pytestmark = pytest.mark.timeout(60)

BIN = Path(sys.executable).parent
SERVICES = ("selector", "providers", "orchestrator", "analytics", "gateway")


# ------------------------------------------------------------- the bookkeeping, without processes


def test_backoff_doubles_from_the_first_delay_up_to_the_cap() -> None:
    restarts = _Restarts(RestartPolicy(delay=0.5, max_delay=4, max_failures=100, window=60))
    delays = [restarts.after_exit(now=float(t), uptime=0.1) for t in range(6)]
    assert delays == [0.5, 1, 2, 4, 4, 4]


def test_a_run_that_lasted_resets_the_backoff() -> None:
    restarts = _Restarts(RestartPolicy(delay=0.5, max_delay=30, reset_after=30, max_failures=100, window=60))
    assert [restarts.after_exit(now=float(t), uptime=1) for t in range(3)] == [0.5, 1, 2]
    assert restarts.after_exit(now=100.0, uptime=30) == 0.5
    assert restarts.after_exit(now=101.0, uptime=1) == 1


def test_gives_up_after_max_failures_within_the_window_only() -> None:
    policy = RestartPolicy(delay=0.5, max_delay=30, reset_after=1000, max_failures=5, window=60)
    fast = _Restarts(policy)
    assert [fast.after_exit(now=float(t), uptime=1) is None for t in range(5)] == [False] * 4 + [True]
    slow = _Restarts(policy)
    # one failure every 20 s: never 5 within 60 s, so it keeps being restarted (the delay is capped)
    assert all(slow.after_exit(now=20.0 * t, uptime=19) is not None for t in range(50))
    assert slow.after_exit(now=1000.0, uptime=19) == 30


def test_a_huge_number_of_restarts_keeps_the_delay_at_the_cap() -> None:
    restarts = _Restarts(RestartPolicy(delay=0.5, max_delay=30, max_failures=2, window=1))
    delays = [restarts.after_exit(now=10.0 * t, uptime=1) for t in range(2000)]
    assert delays == [0.5, 1, 2, 4, 8, 16] + [30] * 1994


# ------------------------------------------------------------------- the real `orchestratex up`


@dataclass
class Up:
    """A running `orchestratex up`: its addresses, and what it printed (supervisor records parsed)."""

    proc: subprocess.Popen[str]
    addr: dict[str, str]
    output: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)

    def records(self, event: str, child: str | None = None) -> list[dict[str, Any]]:
        """The supervisor's log records of ``event`` (for ``child`` when given), oldest first."""
        found = []
        for line in list(self.errors):
            if not line.startswith("{"):
                continue
            record = json.loads(line)
            if record.get("service") != "up" or record.get("event") != event:
                continue
            if child is None or record.get("child") == child:
                found.append(record)
        return found

    def pids(self, child: str) -> list[int]:
        """Every pid the supervisor started ``child`` as, oldest first."""
        return [int(r["pid"]) for r in self.records("started", child)]


def _pump(stream: Any, sink: list[str], ready: threading.Event | None) -> None:
    for line in stream:
        sink.append(line)
        if ready is not None and "Ctrl-C stops everything" in line:
            ready.set()


@contextmanager
def up(tmp_path: Path, *, wait_ready: bool = True, extra: dict[str, str] | None = None) -> Iterator[Up]:
    """Start `orchestratex up` on free loopback ports; stop it (SIGTERM) and reap it at the end."""
    ports = {name: free_port() for name in SERVICES}
    env = {
        **os.environ,
        "ORX_DATA_DIR": str(tmp_path),
        "ORX_LOG_FORMAT": "json",
        "ORX_SHUTDOWN_GRACE": "2",
        **{f"ORX_{name.upper()}_LISTEN": f"127.0.0.1:{port}" for name, port in ports.items()},
        **(extra or {}),
    }
    for var in ("OPENROUTER_API_KEY", "ORX_GATEWAY_API_KEYS", "ORX_GATEWAY_API_KEYS_FILE", "ORX_MONGODB_URI"):
        if var not in (extra or {}):
            env.pop(var, None)
    proc = subprocess.Popen(
        [str(BIN / "orchestratex"), "up"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,  # its own process group, as in a terminal: killpg(proc.pid) is a Ctrl-C
    )
    suite = Up(proc, {n: f"127.0.0.1:{p}" for n, p in ports.items()})
    ready = threading.Event()
    pumps = [
        threading.Thread(target=_pump, args=(proc.stdout, suite.output, ready), daemon=True),
        threading.Thread(target=_pump, args=(proc.stderr, suite.errors, None), daemon=True),
    ]
    for pump in pumps:
        pump.start()
    try:
        if wait_ready:
            wait_for(lambda: ready.is_set() or proc.poll() is not None, within=30)
            assert ready.is_set(), "orchestratex up did not become ready:\n" + "".join(suite.errors[-30:])
        yield suite
    finally:
        if proc.poll() is None:
            proc.terminate()
        try:
            proc.wait(30)
        finally:
            # Never leave a service behind, even when a test fails (its own assertions report that).
            for pid in [pid for name in SERVICES for pid in suite.pids(name) if alive(pid)]:
                os.kill(pid, signal.SIGKILL)
            for pump in pumps:
                pump.join(10)
            if not any(pump.is_alive() for pump in pumps):
                for pipe in (proc.stdout, proc.stderr):
                    if pipe is not None:
                        pipe.close()


def wait_for(predicate: Callable[[], object], within: float = 20.0) -> None:
    """Poll a condition until it holds (never a fixed sleep)."""
    deadline = time.monotonic() + within
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        time.sleep(0.02)


def alive(pid: int) -> bool:
    """True while ``pid`` runs (an exited process its parent has not reaped yet, a zombie, does not)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    return stat.rpartition(")")[2].split()[0] not in {"Z", "X"}


def serving(addr: str, service: str) -> bool:
    """True when ``addr`` answers the standard gRPC health check with SERVING for ``service``."""
    with grpc.insecure_channel(addr) as channel:
        try:
            resp = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(service=service), timeout=1)
        except grpc.RpcError:
            return False
    return bool(resp.status == health_pb2.HealthCheckResponse.SERVING)


def test_a_killed_service_is_restarted_and_the_others_keep_running(tmp_path: Path) -> None:
    with up(tmp_path) as suite:
        before = {name: suite.pids(name) for name in SERVICES}
        assert all(len(pids) == 1 for pids in before.values()), before
        victim = before["selector"][0]
        os.kill(victim, signal.SIGKILL)

        wait_for(lambda: len(suite.pids("selector")) == 2)
        replacement = suite.pids("selector")[-1]
        assert replacement != victim
        wait_for(lambda: serving(suite.addr["selector"], SERVICE_NAMES["selector"]))
        assert not alive(victim) and alive(replacement)
        wait_for(lambda: [r for r in suite.records("ready", "selector") if r["pid"] == replacement])

        (restart,) = suite.records("restarting", "selector")
        assert restart["pid"] == victim and restart["signal"] == "SIGKILL" and restart["exit_code"] is None
        assert restart["restart"] == 1 and restart["delay_s"] == 0.5 and restart["level"] == "WARNING"
        assert "selector" in restart["msg"] and "SIGKILL" in restart["msg"]
        for name in SERVICES:
            if name != "selector":
                assert suite.pids(name) == before[name] and alive(before[name][0]), name
        assert suite.proc.poll() is None
    assert suite.proc.returncode == 0
    assert not any(alive(pid) for name in SERVICES for pid in suite.pids(name))


def test_gives_up_after_repeated_fast_failures_and_stops_the_rest(tmp_path: Path) -> None:
    fast = {"ORX_RESTART_DELAY": "0.05", "ORX_RESTART_MAX_FAILURES": "3", "ORX_RESTART_WINDOW": "60"}
    with up(tmp_path, extra=fast) as suite:
        others = {name: suite.pids(name)[0] for name in SERVICES if name != "selector"}
        killed: list[int] = []

        def kill_each_new_selector() -> bool:
            for pid in suite.pids("selector"):
                if pid not in killed:
                    killed.append(pid)
                    os.kill(pid, signal.SIGKILL)
            return suite.proc.poll() is not None

        wait_for(kill_each_new_selector, within=30)
        assert suite.proc.returncode == 1
        assert len(killed) == 3
        assert [r["restart"] for r in suite.records("restarting", "selector")] == [1, 2]
        (gave_up,) = suite.records("gave_up", "selector")
        assert gave_up["level"] == "ERROR" and gave_up["failures"] == 3 and "giving up" in gave_up["msg"]
        assert not any(alive(pid) for pid in others.values())
        assert not suite.records("killed"), "the others stop gracefully, within their grace period"


def test_a_configuration_error_at_start_is_not_retried(tmp_path: Path) -> None:
    # The gateway refuses to listen beyond loopback without API keys: exit status 2, a configuration error.
    port = free_port()
    with up(tmp_path, wait_ready=False, extra={"ORX_GATEWAY_LISTEN": f"0.0.0.0:{port}"}) as suite:
        suite.proc.wait(30)
    assert suite.proc.returncode == 2
    assert len(suite.pids("gateway")) == 1
    (gave_up,) = suite.records("gave_up", "gateway")
    assert gave_up["exit_code"] == 2 and "configuration error" in gave_up["msg"]
    assert not suite.records("restarting")
    assert any("ORX_GATEWAY_LISTEN" in line and "configuration error" in line for line in suite.errors)
    assert not any(alive(pid) for name in SERVICES for pid in suite.pids(name))
    assert "Traceback" not in "".join(suite.errors)


def test_ctrl_c_in_the_terminal_stops_everything_in_reverse_order_without_restarts(tmp_path: Path) -> None:
    with up(tmp_path) as suite:
        pids = {name: suite.pids(name)[0] for name in SERVICES}
        os.killpg(suite.proc.pid, signal.SIGINT)  # what a terminal does: the whole foreground process group
        suite.proc.wait(30)
    assert suite.proc.returncode == 0
    assert not suite.records("restarting") and not suite.records("killed")
    assert not any(alive(pid) for pid in pids.values())
    stopped = [r["service"] for r in map(json.loads, filter(_is_json, suite.errors)) if r.get("msg") == "stopped"]
    assert stopped == ["gateway", "orchestrator", "selector", "analytics", "providers"]


def test_the_services_stop_when_up_itself_is_killed(tmp_path: Path) -> None:
    with up(tmp_path) as suite:
        pids = {name: suite.pids(name)[0] for name in SERVICES}
        suite.proc.kill()
        suite.proc.wait(30)
        wait_for(lambda: not any(alive(pid) for pid in pids.values()))
    stopped = {r["service"] for r in map(json.loads, filter(_is_json, suite.errors)) if r.get("msg") == "stopped"}
    assert stopped == set(SERVICES), "each one stopped gracefully, on its own"


def _is_json(line: str) -> bool:
    return line.startswith("{")
