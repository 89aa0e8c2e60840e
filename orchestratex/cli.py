"""The ``orchestratex`` command: ``up``, ``serve``, ``ask``, ``backup``, ``restore``.

``up`` runs the whole suite on one machine — each service in its own process, exactly as compose or
Kubernetes would run them — waits until every one reports SERVING on the standard health service,
prints where everything listens, and on Ctrl-C (or SIGTERM) stops them in reverse order, gracefully.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import importlib
import os
import shutil
import signal
import socket
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TextIO

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from orchestratex import eventloop
from orchestratex.config import SERVICES, Settings
from orchestratex.errors import ConfigError
from orchestratex.logging import register_secret, setup_logging
from orchestratex.loopmon import LoopLagMonitor

START_ORDER = ("providers", "analytics", "selector", "orchestrator", "gateway")
SERVICE_NAMES = {
    "selector": "orchestratex.v1.SelectorService",
    "providers": "orchestratex.v1.ProviderService",
    "orchestrator": "orchestratex.v1.OrchestratorService",
    "analytics": "orchestratex.v1.AnalyticsService",
}
READY_TIMEOUT = 60.0


def main(argv: Sequence[str] | None = None) -> None:
    """Entry point of the console script."""
    parser = _parser()
    args = parser.parse_args(argv)
    try:
        settings = Settings.from_env()
    except ConfigError as exc:
        print(f"orchestratex: configuration error: {exc}", file=sys.stderr)
        raise SystemExit(2) from None
    register_secret(settings.openrouter_api_key.get())
    register_secret(settings.mongodb_uri.get())
    if args.command == "serve":
        setup_logging(args.service, settings.log_level, settings.log_format)
        try:
            with contextlib.suppress(KeyboardInterrupt):
                eventloop.run(_serve(args.service, settings), settings.event_loop)
        except ConfigError as exc:
            print(f"orchestratex: configuration error: {exc}", file=sys.stderr)
            raise SystemExit(2) from None
        except OSError as exc:
            var = f"ORX_{args.service.upper()}_LISTEN"
            print(f"orchestratex: {args.service}: {exc} (set {var} to another address)", file=sys.stderr)
            raise SystemExit(1) from None
    elif args.command == "up":
        raise SystemExit(_up(settings))
    elif args.command == "healthcheck":
        raise SystemExit(0 if asyncio.run(_probe(args.service, settings)) else 1)
    elif args.command == "ask":
        setup_logging("ask", "WARNING", "text")
        raise SystemExit(asyncio.run(_ask(settings, args)))
    elif args.command == "models":
        from orchestratex.models_sync import run as run_models_sync

        setup_logging("models", "WARNING", "text")
        raise SystemExit(run_models_sync(settings, args))
    elif args.command in ("backup", "restore"):
        setup_logging(args.command, "WARNING", "text")
        raise SystemExit(asyncio.run(_backup_or_restore(settings, args)))
    else:
        parser.print_help()
        raise SystemExit(2)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="orchestratex", description="Several LLMs, one excellent answer.")
    sub = parser.add_subparsers(dest="command")
    sub.add_parser("up", help="run the whole suite (four gRPC services and the gateway) on this machine")
    serve = sub.add_parser("serve", help="run one service")
    serve.add_argument("service", choices=[*SERVICES, "gateway"])
    check = sub.add_parser("healthcheck", help="exit 0 when a service reports SERVING (for container probes)")
    check.add_argument("service", choices=[*SERVICES, "gateway"])
    ask = sub.add_parser("ask", help="run an orchestration from the terminal and watch it live")
    ask.add_argument("prompt")
    ask.add_argument("--rounds", type=int, default=None, help="max rounds, 1-10 (default 3)")
    ask.add_argument("--threshold", type=float, default=None, help="quality threshold, 0-10 (default 8)")
    ask.add_argument("--critics", type=int, default=None, help="number of critics, 0-5 (default 2)")
    ask.add_argument("--budget", type=float, default=None, help="budget in USD")
    ask.add_argument("--model", default="", help="pin the primary model")
    ask.add_argument("--thread", default="", help="thread id for follow-up prompts")
    ask.add_argument("--target", default="", help="orchestrator address (default ORX_ORCHESTRATOR_ADDR)")
    models = sub.add_parser("models", help="manage the model catalogue")
    models_actions = models.add_subparsers(dest="action", required=True)
    sync = models_actions.add_parser(
        "sync", help="refresh prices, context lengths and max output from OpenRouter's /models"
    )
    sync.add_argument(
        "--output",
        type=Path,
        default=None,
        help="file to write (default: the catalogue read, ORX_CATALOGUE or packaged)",
    )
    sync.add_argument("--dry-run", action="store_true", help="print the changes without writing anything")
    backup = sub.add_parser(
        "backup", help="back up the configured store (SQLite files or MongoDB) into a new directory"
    )
    backup.add_argument("directory", type=Path, help="where to write the backup (must not exist, or be empty)")
    restore = sub.add_parser("restore", help="restore a backup made by `orchestratex backup` (stop the services first)")
    restore.add_argument("directory", type=Path, help="the backup directory")
    restore.add_argument("--force", action="store_true", help="replace a store that already holds data")
    return parser


# ------------------------------------------------------------ backup / restore


async def _backup_or_restore(settings: Settings, args: argparse.Namespace) -> int:
    """Run ``backup`` or ``restore``; a refused or failed one prints why and exits 2, having changed nothing."""
    from orchestratex.store.backup import BackupError, run_backup, run_restore

    try:
        if args.command == "backup":
            result = await run_backup(settings, args.directory)
        else:
            result = await run_restore(settings, args.directory, force=args.force)
    except BackupError as exc:
        print(f"orchestratex: {args.command}: {exc}", file=sys.stderr)
        return 2
    done = "backed up into" if args.command == "backup" else "restored from"
    print(f"{result.backend}: {done} {result.path}")
    for name, count in sorted(result.counts.items()):
        print(f"  {name}: {count}")
    for note in result.notes:
        print(f"  note: {note}")
    return 0


# ------------------------------------------------------------------ serve


async def _serve(name: str, settings: Settings) -> None:
    monitor = None
    if settings.loop_monitor is not None:
        monitor = LoopLagMonitor()
        monitor.start()
    try:
        await _serve_one(name, settings)
    finally:
        if monitor is not None:
            await monitor.stop()
            monitor.write(settings.loop_monitor)  # type: ignore[arg-type]


async def _serve_one(name: str, settings: Settings) -> None:
    from orchestratex.grpc_server import serve

    if name == "gateway":
        gateway_app = importlib.import_module("gateway.app")
        await gateway_app.serve(settings)
        return
    module = importlib.import_module(f"services.{name}.server")
    srv = await module.build(settings)
    await serve(srv, settings.shutdown_grace)


# --------------------------------------------------------------------- up


def _up(settings: Settings) -> int:
    env = dict(os.environ)
    env["ORX_DATA_DIR"] = str(settings.data_dir.resolve())
    env.setdefault("ORX_LOG_FORMAT", "text" if sys.stderr.isatty() else "json")
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    children: list[tuple[str, subprocess.Popen[bytes]]] = []
    stopping = False

    def request_stop(signum: int, frame: object) -> None:
        nonlocal stopping
        stopping = True

    busy = [name for name in START_ORDER if not _port_free(settings.listen[name].host, settings.listen[name].port)]
    if busy:
        for name in busy:
            print(
                f"orchestratex: {settings.listen[name]} is already in use; stop what listens there "
                f"or set ORX_{name.upper()}_LISTEN",
                file=sys.stderr,
            )
        return 1
    signal.signal(signal.SIGTERM, request_stop)
    signal.signal(signal.SIGINT, request_stop)
    try:
        for name in START_ORDER:
            proc = subprocess.Popen([sys.executable, "-m", "orchestratex.cli", "serve", name], env=env)
            children.append((name, proc))
            if not asyncio.run(_wait_ready(name, settings, proc, lambda: stopping)):
                if not stopping:
                    print(f"orchestratex: {name} did not become ready; stopping", file=sys.stderr)
                return 0 if stopping else 1
        _print_banner(settings, sys.stdout)
        while not stopping:
            for name, proc in children:
                if proc.poll() is not None:
                    print(f"orchestratex: {name} exited with code {proc.returncode}; stopping", file=sys.stderr)
                    return 1
            with contextlib.suppress(subprocess.TimeoutExpired):
                children[0][1].wait(timeout=0.5)
        return 0
    finally:
        _stop_all(children, settings.shutdown_grace)


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


async def _wait_ready(name: str, settings: Settings, proc: subprocess.Popen[bytes], stopping: object) -> bool:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + READY_TIMEOUT
    while loop.time() < deadline:
        if proc.poll() is not None or (callable(stopping) and stopping()):
            return False
        if await _probe(name, settings):
            return True
        await asyncio.sleep(0.1)
    return False


async def _probe(name: str, settings: Settings) -> bool:
    if name == "gateway":
        import aiohttp

        url = f"http://{settings.listen['gateway'].dialable()}/healthz"
        try:
            async with aiohttp.ClientSession() as http, http.get(url, timeout=aiohttp.ClientTimeout(total=1)) as r:
                return r.status == 200
        except (aiohttp.ClientError, TimeoutError):
            return False
    async with grpc.aio.insecure_channel(settings.peers[name]) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        try:
            resp = await stub.Check(health_pb2.HealthCheckRequest(service=SERVICE_NAMES[name]), timeout=1)
        except grpc.aio.AioRpcError:
            return False
        return bool(resp.status == health_pb2.HealthCheckResponse.SERVING)


def _stop_all(children: list[tuple[str, subprocess.Popen[bytes]]], grace: float) -> None:
    for name, proc in reversed(children):
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=grace + 5)
            except subprocess.TimeoutExpired:
                print(f"orchestratex: {name} did not stop in time; killing it", file=sys.stderr)
                proc.kill()
                proc.wait()


def _print_banner(settings: Settings, out: TextIO) -> None:
    mode = (
        "SIMULATED models (set OPENROUTER_API_KEY for real ones)"
        if settings.simulated
        else "live models through OpenRouter"
    )
    store = "MongoDB" if settings.storage_backend == "mongodb" else f"SQLite in {settings.data_dir.resolve()}"
    gateway = settings.listen["gateway"].dialable()
    orch = settings.listen["orchestrator"].dialable()
    lines = [
        "",
        f"OrchestrateX is up — {mode}; store: {store}",
        f"  browser       http://{gateway}/",
        *(f"  {name:<13} {settings.listen[name]}  ({SERVICE_NAMES[name]})" for name in SERVICES),
        f"  gateway       {settings.listen['gateway']}  (WebSocket /v1/ws, REST /v1)",
        "",
        "Try:",
        f"  grpcurl -plaintext {orch} list",
        f'  grpcurl -plaintext -d \'{{"prompt": "Write a haiku about gRPC"}}\' {orch} '
        "orchestratex.v1.OrchestratorService/Orchestrate",
        f'  {_command()} ask "Explain the CAP theorem in three sentences"',
        "",
        "Ctrl-C stops everything.",
        "",
    ]
    out.write("\n".join(lines))
    out.flush()


def _command() -> str:
    """How the user can run this command again: plain when on PATH, else the venv path."""
    script = Path(sys.executable).parent / "orchestratex"
    if shutil.which("orchestratex") == str(script):
        return "orchestratex"
    try:
        return str(script.relative_to(Path.cwd()))
    except ValueError:
        return str(script)


# -------------------------------------------------------------------- ask


async def _ask(settings: Settings, args: argparse.Namespace) -> int:
    from orchestratex.ask import run_ask

    return await run_ask(settings, args)


if __name__ == "__main__":
    main()
