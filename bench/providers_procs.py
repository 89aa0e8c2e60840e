"""Processes for ``bench.providers_bench``: the OpenRouter stand-in, the providers service, LiteLLM's proxy, clients.

Each runs as its own subprocess on 127.0.0.1 and is stopped with SIGTERM when its context exits. Their
stderr goes to a log file in the run's temporary directory; a process that fails to start raises with
the end of its log. CPU is read from ``/proc`` for a process and its descendants (worker processes).
"""

from __future__ import annotations

import asyncio
import json
import os
import select
import signal
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from bench._suite import BIN, _wait_healthy, descendants, free_port
from tests.providers.openrouter_standin import DEFAULT_KEY

LITELLM_VENV = Path(__file__).resolve().parent / ".litellm-venv"
# Pinned: on this registry the newest releases need litellm-proxy(-extras) versions that are not published.
LITELLM_PROXY = "litellm[proxy]==1.106.12"
"""LiteLLM lives in its own virtual environment (gitignored) so it never touches the project's."""
LITELLM_MASTER_KEY = "sk-bench-litellm-master-key-not-a-secret-0000000000000000"
"""LiteLLM's proxy refuses to start without a master key; this one only guards a local benchmark."""
STANDIN_KEY = DEFAULT_KEY
MODEL = "z-ai/glm-4.5"

_CLK_TCK = os.sysconf("SC_CLK_TCK")


@dataclass(frozen=True)
class Proc:
    """A running subprocess and where it listens."""

    name: str
    proc: subprocess.Popen[bytes]
    port: int
    log: Path

    @property
    def pid(self) -> int:
        """The process id."""
        return self.proc.pid

    def cpu_seconds(self) -> float:
        """User + system CPU time of the process and its live descendants so far."""
        return tree_cpu_seconds(self.pid)

    def cpu_by_pid(self) -> dict[int, float]:
        """User + system CPU time so far of the process and of each live descendant (worker processes)."""
        return tree_cpu_by_pid(self.pid)


def tree_cpu_seconds(pid: int) -> float:
    """CPU seconds (user + system, all threads) used by ``pid`` and its live descendants."""
    return sum(tree_cpu_by_pid(pid).values())


def tree_cpu_by_pid(pid: int) -> dict[int, float]:
    """CPU seconds (user + system, all threads) of ``pid`` and of each of its live descendants, by pid."""
    return {p: cpu for p in [pid, *descendants(pid)] if (cpu := process_cpu_seconds(p)) is not None}


class _ThreadClocks:
    """CPU time of processes from their threads' ``schedstat`` (nanoseconds), which survives threads exiting.

    ``/proc/<pid>/stat`` counts in clock ticks (10 ms), too coarse for a block of a few calls; a thread's
    ``/proc/<pid>/task/<tid>/schedstat`` is exact, but vanishes with the thread. So the last reading of every
    thread is kept, and a thread that is gone keeps counting with it: only what a thread used between the
    last reading and its exit is missed.
    """

    def __init__(self) -> None:
        self._last: dict[tuple[int, int], int] = {}
        self._gone: dict[int, int] = {}

    def seconds(self, pid: int) -> float | None:
        """CPU seconds (user + system) of every thread ``pid`` has had since first read; None if it is gone."""
        base = Path(f"/proc/{pid}/task")
        live: dict[int, int] = {}
        try:
            for task in base.iterdir():
                try:
                    live[int(task.name)] = int((task / "schedstat").read_text().split()[0])
                except (OSError, ValueError, IndexError):
                    continue
        except OSError:
            return None
        for key in [k for k in self._last if k[0] == pid and k[1] not in live]:
            self._gone[pid] = self._gone.get(pid, 0) + self._last.pop(key)
        for tid, ns in live.items():
            self._last[(pid, tid)] = ns
        return (sum(live.values()) + self._gone.get(pid, 0)) / 1e9


_CLOCKS = _ThreadClocks()


def stat_cpu_seconds(pid: int) -> float:
    """CPU seconds of ``pid`` in clock ticks, exited threads included (``/proc/<pid>/stat``): to check
    :func:`process_cpu_seconds` over long spans."""
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return 0.0
    fields = raw[raw.rfind(")") + 2 :].split()
    return (int(fields[11]) + int(fields[12])) / _CLK_TCK  # utime, stime (fields 14 and 15 of stat)


def process_cpu_seconds(pid: int) -> float | None:
    """CPU seconds (user + system, every thread, nanosecond resolution) of ``pid``; None if it is gone."""
    return _CLOCKS.seconds(pid)


def machine_busy_seconds() -> float:
    """CPU seconds all cores of the machine have spent busy since boot (``/proc/stat``)."""
    fields = [int(v) for v in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    user, nice, system, _idle, _iowait, irq, softirq, steal = fields[:8]
    return (user + nice + system + irq + softirq + steal) / _CLK_TCK


@dataclass(frozen=True)
class Load:
    """A snapshot to tell how much of the machine other work used meanwhile (it is shared)."""

    wall: float
    busy: float
    ours: float

    @classmethod
    def now(cls) -> Load:
        """Wall clock, the machine's busy CPU, and this process tree's CPU (client and every server)."""
        return cls(time.monotonic(), machine_busy_seconds(), tree_cpu_seconds(os.getpid()))

    def since(self, start: Load) -> dict[str, float]:
        """Cores used on average between ``start`` and this snapshot: by the benchmark, and by other work."""
        wall = max(1e-9, self.wall - start.wall)
        ours = (self.ours - start.ours) / wall
        return {
            "seconds": wall,
            "benchmark_cores": ours,
            "other_cores": max(0.0, (self.busy - start.busy) / wall - ours),
            "loadavg_1min_end": os.getloadavg()[0],
        }


def _tail(log: Path, lines: int = 30) -> str:
    try:
        return "\n".join(log.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


def _stop(proc: subprocess.Popen[bytes], within: float = 30) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(within)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@contextmanager
def _running(
    argv: list[str], env: Mapping[str, str], log: Path, stdout: int | None, stdin: int = subprocess.DEVNULL
) -> Iterator[subprocess.Popen[bytes]]:
    with log.open("wb") as sink:
        proc = subprocess.Popen(argv, env=dict(env), stdout=stdout, stderr=sink, stdin=stdin)
    try:
        yield proc
    finally:
        _stop(proc)


@contextmanager
def _announced(name: str, argv: list[str], log: Path, stdin: int = subprocess.DEVNULL) -> Iterator[Proc]:
    """A process that prints ``READY <port>`` on stdout once it listens."""
    with _running(argv, os.environ, log, subprocess.PIPE, stdin) as proc:
        assert proc.stdout is not None
        deadline = time.monotonic() + 60
        line = b""
        while not line.startswith(b"READY "):
            remaining = deadline - time.monotonic()
            ready, _, _ = select.select([proc.stdout], [], [], max(0.0, remaining))
            if not ready or proc.poll() is not None:
                raise RuntimeError(f"{name} did not start:\n{_tail(log)}")
            line = proc.stdout.readline()
        yield Proc(name, proc, int(line.split()[1]), log)


@contextmanager
def standin_process(tmp: Path, chunks: int, gap_ms: float, loop: str = "auto", nice: int = 0) -> Iterator[Proc]:
    """The OpenRouter stand-in (``bench.providers_standin_proc``) in its own process, at ``nice``."""
    argv = [sys.executable, "-m", "bench.providers_standin_proc", "--chunks", str(chunks), "--gap-ms", str(gap_ms)]
    argv = [*_niced(nice), *argv, "--loop", loop]
    with _announced("standin", argv, tmp / "standin.log") as proc:
        yield proc


@contextmanager
def client_process(tmp: Path, name: str, argv: list[str], nice: int = 0) -> Iterator[Proc]:
    """A client (``bench.providers_client_proc`` with ``argv``) at ``nice``, ready once its connections are open."""
    argv = [*_niced(nice), sys.executable, "-m", "bench.providers_client_proc", *argv]
    with _announced(name, argv, tmp / f"{name}.log", subprocess.PIPE) as proc:
        yield proc


def _niced(nice: int) -> list[str]:
    """A command prefix that runs the command at ``nice`` (``nice`` execs it: same process, every thread
    inherits). Lowering it needs CAP_SYS_NICE; without, the command runs at the usual priority (see
    :func:`niceness`)."""
    return ["nice", "-n", str(nice)] if nice else []


def niceness(pid: int) -> int | None:
    """The nice value of ``pid``'s main thread (``/proc/<pid>/stat`` field 19), or None if it is gone."""
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return int(raw[raw.rfind(")") + 2 :].split()[16])


def pacing_stats(standin: Proc) -> dict[str, Any]:
    """The stand-in's pacing counters (SIGUSR1 makes it print them as one JSON line)."""
    assert standin.proc.stdout is not None
    standin.proc.send_signal(signal.SIGUSR1)
    ready, _, _ = select.select([standin.proc.stdout], [], [], 10)
    if not ready:
        raise RuntimeError("the stand-in did not report its pacing")
    return dict(json.loads(standin.proc.stdout.readline()))


def base_url(standin: Proc) -> str:
    """The stand-in's OpenRouter base URL."""
    return f"http://127.0.0.1:{standin.port}/api/v1"


@contextmanager
def providers_process(
    tmp: Path,
    standin: Proc,
    profile: Path | None = None,
    *,
    name: str = "providers",
    extra_env: Mapping[str, str] | None = None,
    workers: int = 1,
) -> Iterator[Proc]:
    """``orchestratex serve providers`` in live mode against the stand-in (under cProfile when ``profile``).

    The client-side limits are raised (1,000,000 requests/minute, 4,096 concurrent per model) so that
    the benchmark measures overhead, not the default policy (600/minute, 32 concurrent, which would
    queue a 64-stream round). The limiter and the breaker still run on every call. ``workers`` sets
    ``ORX_PROVIDERS_WORKERS``; with more than one, this waits until that many sockets listen on the
    port (a service that does not know the variable has one, and this gives up after 20 s: the caller
    counts them with :func:`listening_sockets` to tell).
    """
    port = free_port()
    data = tmp / f"{name}-data"
    data.mkdir(exist_ok=True)
    env = {
        **os.environ,
        "ORX_DATA_DIR": str(data),
        "ORX_LOG_LEVEL": "WARNING",
        "ORX_PROVIDERS_LISTEN": f"127.0.0.1:{port}",
        "ORX_PROVIDER_MODE": "live",
        "OPENROUTER_API_KEY": STANDIN_KEY,
        "ORX_OPENROUTER_BASE_URL": base_url(standin),
        "ORX_PROVIDER_RPM": "1000000",
        "ORX_PROVIDER_CONCURRENCY": "4096",
        "ORX_PROVIDERS_WORKERS": str(workers),
        **(extra_env or {}),
    }
    if profile is None:
        argv = [str(BIN / "orchestratex"), "serve", "providers"]
    else:
        argv = [sys.executable, "-m", "cProfile", "-o", str(profile), "-m", "services.cli", "serve", "providers"]
    log = tmp / f"{name}.log"
    with _running(argv, env, log, subprocess.DEVNULL) as proc:
        try:
            asyncio.run(_wait_healthy(f"127.0.0.1:{port}", "orchestratex.v1.ProviderService", proc))
        except RuntimeError as exc:
            raise RuntimeError(f"{exc}:\n{_tail(log)}") from None
        deadline = time.monotonic() + 20
        while workers > 1 and listening_sockets(port) < workers and time.monotonic() < deadline:
            time.sleep(0.2)
        yield Proc(name, proc, port, log)


def listening_sockets(port: int) -> int:
    """How many TCP sockets listen on ``port`` (``/proc/net/tcp*``): one per worker with ``SO_REUSEPORT``."""
    count = 0
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            rows = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for row in rows:
            fields = row.split()
            if fields[3] == "0A" and int(fields[1].rsplit(":", 1)[1], 16) == port:  # 0A: LISTEN
                count += 1
    return count


def ensure_litellm_venv() -> Path:
    """The ``litellm`` executable of ``bench/.litellm-venv``, creating the venv first when it is missing."""
    exe = LITELLM_VENV / "bin" / "litellm"
    if exe.exists():
        return exe
    print(f"creating {LITELLM_VENV} and installing {LITELLM_PROXY!r} (once; it is gitignored)", file=sys.stderr)
    subprocess.run([sys.executable, "-m", "venv", str(LITELLM_VENV)], check=True)
    pip = LITELLM_VENV / "bin" / "pip"
    subprocess.run([str(pip), "install", "--quiet", LITELLM_PROXY], check=True)
    return exe


def litellm_version() -> str:
    """The installed LiteLLM version (from its venv's metadata)."""
    python = LITELLM_VENV / "bin" / "python"
    out = subprocess.run(
        [str(python), "-c", "import importlib.metadata as m; print(m.version('litellm'), m.version('uvicorn'))"],
        check=True,
        capture_output=True,
        text=True,
    )
    litellm, uvicorn = out.stdout.split()
    return f"{litellm} (uvicorn {uvicorn}, uvloop)"


def litellm_config(standin: Proc) -> str:
    """LiteLLM's proxy config: the model routed to the stand-in as an OpenAI-compatible endpoint.

    JSON strings are valid YAML scalars, so values are written with ``json.dumps``. ``master_key`` is
    required since LiteLLM refuses to start without one; no database is configured, so keys are checked
    against it in memory and spend logs are off.
    """
    q = json.dumps
    return "\n".join(
        [
            "model_list:",
            f"  - model_name: {q(MODEL)}",
            "    litellm_params:",
            f"      model: {q('openai/' + MODEL)}",
            f"      api_base: {q(base_url(standin))}",
            f"      api_key: {q(STANDIN_KEY)}",
            "litellm_settings:",
            "  drop_params: true",
            "  telemetry: false",
            "general_settings:",
            f"  master_key: {q(LITELLM_MASTER_KEY)}",
            "  disable_spend_logs: true",
            "",
        ]
    )


@contextmanager
def litellm_process(tmp: Path, standin: Proc) -> Iterator[Proc]:
    """LiteLLM's proxy (``litellm --config``, one uvicorn worker) in front of the stand-in, fully offline.

    ``LITELLM_LOCAL_MODEL_COST_MAP=True`` makes it read its bundled price map instead of fetching it
    from GitHub at start-up (without it, start-up retries the download for several seconds, then falls
    back to the same file); ``--telemetry False``; no ``DATABASE_URL`` (no Prisma, no spend writes);
    ``LITELLM_LOG=ERROR`` also silences uvicorn's per-request access log, as our service logs at WARNING.
    """
    exe = ensure_litellm_venv()
    config = tmp / "litellm.yaml"
    config.write_text(litellm_config(standin))
    port = free_port()
    env = {k: v for k, v in os.environ.items() if k not in {"DATABASE_URL", "REDIS_HOST", "REDIS_URL"}}
    env.update({"LITELLM_LOCAL_MODEL_COST_MAP": "True", "LITELLM_LOG": "ERROR", "NO_DOCS": "True"})
    # uvicorn closes idle keep-alive connections after 5 s by default, racing a client that reuses one
    # (ReadError); 75 s is aiohttp's default, what the stand-in and our service's peers get.
    argv = [
        *(str(exe), "--config", str(config), "--host", "127.0.0.1", "--port", str(port)),
        *("--telemetry", "False", "--keepalive_timeout", "75"),
    ]
    log = tmp / "litellm.log"
    with _running(argv, env, log, subprocess.DEVNULL) as proc:
        wait_for_http(proc, f"http://127.0.0.1:{port}/health/liveliness", log, "LiteLLM's proxy", 180, 0.25)
        yield Proc("litellm", proc, port, log)


def wait_for_http(
    proc: subprocess.Popen[bytes], url: str, log: Path, name: str, within: float, interval: float
) -> None:
    """Poll ``url`` until it answers 200; fail with the log's tail if ``proc`` exits or time runs out."""
    deadline = time.monotonic() + within
    while True:
        if proc.poll() is not None:
            raise RuntimeError(f"{name} exited with {proc.returncode}:\n{_tail(log)}")
        try:
            if httpx.get(url, timeout=2).status_code == 200:
                return
        except httpx.TransportError:
            pass
        if time.monotonic() > deadline:
            raise RuntimeError(f"{name} was not ready in {within:.0f} s:\n{_tail(log)}")
        time.sleep(interval)
