"""The ``orchestratex`` command: ``up``, ``serve``, ``healthcheck``, ``ask``, ``eval``, ``models sync``, ``backup``,
``restore``.

The console script points here (``python -m services.cli`` is the same command). It sits beside the
services because ``up`` and ``serve`` start them (:mod:`services.launcher`) and ``models sync`` edits the
providers' catalogue (:mod:`services.providers.models_sync`); the client commands, ``ask``, ``backup`` and
``restore``, are thin wrappers around the library (:mod:`orchestratex.ask`, :mod:`orchestratex.store.backup`).
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Sequence
from pathlib import Path

from orchestratex.ask import OPTIMIZE_FOR, AskUsageError, build_request, run_ask
from orchestratex.config import SERVICES, Section, Settings
from orchestratex.errors import ConfigError
from orchestratex.logging import register_secret, setup_logging
from services import launcher


def main(argv: Sequence[str] | None = None) -> None:
    """Entry point of the console script."""
    parser = _parser()
    args = parser.parse_args(argv)
    try:
        settings = Settings.from_env(sections=sections_of(args))
    except ConfigError as exc:
        raise SystemExit(launcher.config_error(exc)) from None
    for secret in settings.secrets():
        register_secret(secret.get())
    if args.command == "serve":
        raise SystemExit(launcher.run_service(args.service, settings))
    elif args.command == "up":
        raise SystemExit(launcher.up(settings))
    elif args.command == "healthcheck":
        raise SystemExit(0 if asyncio.run(launcher.probe(args.service, settings)) else 1)
    elif args.command == "ask":
        try:
            request = build_request(args)
        except AskUsageError as exc:
            args.usage_error(str(exc))
        setup_logging("ask", "WARNING", "text")
        raise SystemExit(asyncio.run(run_ask(settings, args, request=request)))
    elif args.command == "models":
        # Imported only for this command (as are those below): httpx and pymongo slow every start-up.
        from services.providers.models_sync import run as run_models_sync

        setup_logging("models", "WARNING", "text")
        raise SystemExit(run_models_sync(settings, args))
    elif args.command == "eval":
        setup_logging("eval", "WARNING", "text")
        raise SystemExit(_eval(settings, args))
    elif args.command in ("backup", "restore"):
        setup_logging(args.command, "WARNING", "text")
        raise SystemExit(asyncio.run(_backup_or_restore(settings, args)))
    else:
        parser.print_help()
        raise SystemExit(2)


def sections_of(args: argparse.Namespace) -> tuple[Section, ...] | None:
    """The settings sections a command uses besides ``common`` (None: all of them, for ``up``).

    Only these are parsed, so a bad variable of another service cannot stop this one.
    """
    if args.command == "up":
        return None
    if args.command == "serve":
        return (args.service,)
    if args.command == "models":
        return ("providers",)
    return ()


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="orchestratex", description="Several LLMs, one excellent answer.")
    sub = parser.add_subparsers(dest="command")
    sub.add_parser("up", help="run the whole suite (four gRPC services and the gateway) on this machine")
    serve = sub.add_parser("serve", help="run one service")
    serve.add_argument("service", choices=[*SERVICES, "gateway"])
    check = sub.add_parser("healthcheck", help="exit 0 when a service reports SERVING (for container probes)")
    check.add_argument("service", choices=[*SERVICES, "gateway"])
    ask = sub.add_parser("ask", help="run an orchestration from the terminal and watch it live")
    ask.add_argument("prompt", help="the prompt; - reads it from standard input (all of it)")
    ask.add_argument("--rounds", type=int, default=None, help="max rounds, 1-10 (default 3; 1 with --critics 0)")
    ask.add_argument("--threshold", type=float, default=None, help="quality threshold, 0-10 (default 8)")
    ask.add_argument("--critics", type=int, default=None, help="number of critics, 0-5 (default 2)")
    ask.add_argument("--budget", type=float, default=None, help="budget in USD")
    ask.add_argument(
        "--optimize-for",
        choices=list(OPTIMIZE_FOR),
        default="balanced",
        help="what model selection favours, as the browser's choice of the same name (default balanced)",
    )
    ask.add_argument("--model", default="", help="pin the primary model")
    ask.add_argument("--thread", default="", help="thread id for follow-up prompts")
    ask.add_argument("--target", default="", help="orchestrator address (default ORX_ORCHESTRATOR_ADDR)")
    ask.set_defaults(usage_error=ask.error)  # what build_request refuses is a usage error of `ask` (exit 2)
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
    from services.evaluation.arguments import add_parser as add_eval_parser

    add_eval_parser(sub)
    restore = sub.add_parser("restore", help="restore a backup made by `orchestratex backup` (stop the services first)")
    restore.add_argument("directory", type=Path, help="the backup directory")
    restore.add_argument("--force", action="store_true", help="replace a store that already holds data")
    return parser


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


def _eval(settings: Settings, args: argparse.Namespace) -> int:
    from services.evaluation.command import run_command

    try:
        return asyncio.run(run_command(settings, args))
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    main()
