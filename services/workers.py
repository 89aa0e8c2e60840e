"""Several worker processes of one stateless service on one port (``ORX_<SERVICE>_WORKERS``).

One Python process runs on one core. The selector, the providers service and the gateway keep no state that
must outlive a call, so ``orchestratex serve <name>`` with ``ORX_<NAME>_WORKERS=N`` (N > 1) becomes a small parent
that starts N copies of itself as workers, each listening on the same address with ``SO_REUSEPORT``: the kernel
hands each new TCP connection to one of them (by a hash of the connection's addresses and ports). ``up``,
compose and Kubernetes see one process per service, as before.

The parent

* reserves the port first: a bound (never listening) ``SO_REUSEPORT`` socket, so port 0 resolves to one port
  for every worker, and another program cannot take it while a worker restarts;
* gives worker ``i`` ``ORX_WORKER_INDEX=i``, the resolved listen address, its own metrics port (the configured
  one plus ``i``, when ``ORX_<NAME>_METRICS_LISTEN`` is set) and its own ``ORX_LOOP_MONITOR`` file (``.i``);
* forwards SIGTERM/SIGINT/SIGHUP to every worker (each stops gracefully) and exits 0 once all have;
* stops the others and exits non-zero when a worker dies on its own (2 when it was a configuration error), so
  whatever supervises the service (``up``, compose, Kubernetes) restarts it whole: a half-running service is
  never left behind looking healthy.

What the workers share, and what they do not, is documented with the settings that divide it: the providers
service divides its per-model limits (:meth:`~orchestratex.config.ResilienceSettings.per_worker`); circuit
breakers, vendor holds and the gateway's per-key rate limit are per worker (docs/operations.md).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import socket
import stat
import subprocess
import sys

from orchestratex.config import WORKER_INDEX_VAR, Address, Settings

log = logging.getLogger(__name__)

# How a worker is started: this very command, `serve <name>`, in a new process.
SERVE_COMMAND = ("-m", "services.cli", "serve")
CONFIG_ERROR_EXIT = 2


def reserve_port(address: Address) -> socket.socket:
    """A socket bound to ``address`` with ``SO_REUSEPORT`` and never listening: it resolves port 0 and holds the
    port for the workers (a socket that does not listen receives no connections). Raises ``OSError``."""
    sock = socket.socket(socket.AF_INET6 if ":" in address.host else socket.AF_INET, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        sock.bind((address.host.strip("[]"), address.port))
    except OSError:
        sock.close()
        raise
    return sock


def worker_env(name: str, settings: Settings, index: int, port: int) -> dict[str, str]:
    """The environment of worker ``index``: the parent's, plus its index, the resolved port, its metrics port
    and its loop-monitor file."""
    common = settings.common
    listen = common.listen[name]
    env = {
        **os.environ,
        WORKER_INDEX_VAR: str(index),
        f"ORX_{name.upper()}_LISTEN": str(Address(listen.host, port)),
        "ORX_STOP_ON_STDIN_EOF": "1",
    }
    metrics = common.metrics_listen.get(name)
    if metrics is not None and metrics.port != 0:
        env[f"ORX_{name.upper()}_METRICS_LISTEN"] = str(Address(metrics.host, metrics.port + index))
    if common.loop_monitor is not None:
        env["ORX_LOOP_MONITOR"] = f"{common.loop_monitor}.{index}"
    return env


def metrics_addresses(name: str, settings: Settings) -> list[Address]:
    """Where the workers of ``name`` serve ``/metrics``: the configured port, then one more per further worker."""
    address = settings.common.metrics_listen.get(name)
    if address is None:
        return []
    if address.port == 0:
        return [address]
    return [Address(address.host, address.port + i) for i in range(settings.common.workers_of(name))]


def run_workers(name: str, settings: Settings) -> int:
    """Run ``ORX_<NAME>_WORKERS`` workers of service ``name`` until told to stop; the exit status."""
    count = settings.common.workers_of(name)
    address = settings.common.listen[name]
    with reserve_port(address) as reserved:
        port = reserved.getsockname()[1]
        log.info("starting %d %s workers on port %d (SO_REUSEPORT)", count, name, port)
        envs = [worker_env(name, settings, index, port) for index in range(count)]
        return asyncio.run(_Parent(name, envs, settings.common.stop_on_stdin_eof).run())


class _Parent:
    def __init__(self, name: str, envs: list[dict[str, str]], stop_on_stdin_eof: bool) -> None:
        self.name = name
        self.envs = envs
        self.stop_on_stdin_eof = stop_on_stdin_eof
        self.procs: list[asyncio.subprocess.Process] = []
        self.stopping = asyncio.Event()

    async def run(self) -> int:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
            loop.add_signal_handler(sig, self.stopping.set)
        if self.stop_on_stdin_eof:
            stop_on_stdin_eof()
        for index, env in enumerate(self.envs):
            proc = await asyncio.create_subprocess_exec(
                sys.executable, *SERVE_COMMAND, self.name, env=env, stdin=subprocess.PIPE
            )
            self.procs.append(proc)
            log.info("%s worker %d started (pid %d)", self.name, index, proc.pid)
        exits = {asyncio.ensure_future(proc.wait()): index for index, proc in enumerate(self.procs)}
        stop = asyncio.ensure_future(self.stopping.wait())
        done, _ = await asyncio.wait([stop, *exits], return_when=asyncio.FIRST_COMPLETED)
        code = 0
        if stop not in done:
            first = next(task for task in done if task is not stop)
            index, status = exits[first], first.result()
            code = CONFIG_ERROR_EXIT if status == CONFIG_ERROR_EXIT else 1
            log.error(
                "%s worker %d (pid %d) exited with %d; stopping the other workers",
                self.name,
                index,
                self.procs[index].pid,
                status,
                extra={"event": "worker_exited", "worker": index, "exit_code": status},
            )
        stop.cancel()
        for proc in self.procs:
            if proc.returncode is None:
                with contextlib.suppress(ProcessLookupError):
                    proc.send_signal(signal.SIGTERM)
        statuses = await asyncio.gather(*exits)
        if code == 0 and any(status != 0 for status in statuses):
            code = 1
        return code


def stop_on_stdin_eof() -> None:
    """SIGTERM this process (a graceful stop) once stdin, a pipe, reaches end of file.

    ``up`` starts each service with a pipe as stdin and keeps its write end, as a worker parent does for its
    workers. Should the supervisor die in any way, SIGKILL included, the kernel closes that end, and the process
    stops instead of running on, orphaned.
    """
    try:
        if not stat.S_ISFIFO(os.fstat(0).st_mode):
            return
    except OSError:  # no stdin at all
        return
    loop = asyncio.get_running_loop()

    def readable() -> None:
        try:
            data = os.read(0, 4096)
        except BlockingIOError:
            return
        except OSError:
            data = b""
        if not data:
            loop.remove_reader(0)
            log.warning("stdin closed (the supervising process is gone): stopping")
            os.kill(os.getpid(), signal.SIGTERM)

    loop.add_reader(0, readable)
