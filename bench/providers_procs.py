"""Processes for ``bench.providers_bench``: the OpenRouter stand-in, our providers service and LiteLLM's proxy.

Each runs as its own subprocess on 127.0.0.1 and is stopped with SIGTERM when its context exits. Their
stderr goes to a log file in the run's temporary directory; a process that fails to start raises with
the end of its log.
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

import httpx

from bench._suite import BIN, _wait_healthy, free_port
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


def tree_cpu_seconds(pid: int) -> float:
    """CPU seconds (user + system, all threads) used by ``pid`` and its live descendants."""
    children: dict[int, list[int]] = {}
    stats: dict[int, list[str]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            raw = (entry / "stat").read_text()
        except OSError:
            continue
        # The command name (field 2) may contain spaces: split after its closing parenthesis.
        fields = raw[raw.rfind(")") + 2 :].split()
        child = int(entry.name)
        stats[child] = fields
        children.setdefault(int(fields[1]), []).append(child)
    total = 0
    todo = [pid]
    while todo:
        current = todo.pop()
        stat = stats.get(current)
        if stat is not None:
            total += int(stat[11]) + int(stat[12])  # utime, stime (fields 14 and 15 of stat)
        todo.extend(children.get(current, ()))
    return total / _CLK_TCK


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
    argv: list[str], env: Mapping[str, str], log: Path, stdout: int | None
) -> Iterator[subprocess.Popen[bytes]]:
    with log.open("wb") as sink:
        proc = subprocess.Popen(argv, env=dict(env), stdout=stdout, stderr=sink, stdin=subprocess.DEVNULL)
    try:
        yield proc
    finally:
        _stop(proc)


@contextmanager
def _announced(name: str, argv: list[str], log: Path) -> Iterator[Proc]:
    """A process that prints ``READY <port>`` on stdout once it listens."""
    with _running(argv, os.environ, log, subprocess.PIPE) as proc:
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
def standin_process(tmp: Path, chunks: int, gap_ms: float) -> Iterator[Proc]:
    """The OpenRouter stand-in (``bench.providers_standin_proc``) in its own process."""
    argv = [sys.executable, "-m", "bench.providers_standin_proc", "--chunks", str(chunks), "--gap-ms", str(gap_ms)]
    with _announced("standin", argv, tmp / "standin.log") as proc:
        yield proc


@contextmanager
def floor_process(tmp: Path, chunks: int) -> Iterator[Proc]:
    """The gRPC floor (``bench.providers_floor_proc``): our server stack with a canned reply, no upstream."""
    argv = [sys.executable, "-m", "bench.providers_floor_proc", "--chunks", str(chunks)]
    with _announced("floor", argv, tmp / "floor.log") as proc:
        yield proc


def base_url(standin: Proc) -> str:
    """The stand-in's OpenRouter base URL."""
    return f"http://127.0.0.1:{standin.port}/api/v1"


@contextmanager
def providers_process(tmp: Path, standin: Proc, profile: Path | None = None) -> Iterator[Proc]:
    """``orchestratex serve providers`` in live mode against the stand-in (under cProfile when ``profile``).

    The client-side limits are raised (1,000,000 requests/minute, 128 concurrent per model) so that
    the benchmark measures overhead, not the default policy (600/minute, 32 concurrent, which would
    queue a 64-stream round). The limiter and the breaker still run on every call.
    """
    port = free_port()
    data = tmp / "providers-data"
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
        "ORX_PROVIDER_CONCURRENCY": "128",
    }
    if profile is None:
        argv = [str(BIN / "orchestratex"), "serve", "providers"]
    else:
        argv = [sys.executable, "-m", "cProfile", "-o", str(profile), "-m", "services.cli", "serve", "providers"]
    log = tmp / "providers.log"
    with _running(argv, env, log, subprocess.DEVNULL) as proc:
        try:
            asyncio.run(_wait_healthy(f"127.0.0.1:{port}", "orchestratex.v1.ProviderService", proc))
        except RuntimeError as exc:
            raise RuntimeError(f"{exc}:\n{_tail(log)}") from None
        yield Proc("providers", proc, port, log)


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
