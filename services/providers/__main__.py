"""Run the providers service: ``python -m services.providers``."""

from __future__ import annotations

import asyncio

from orchestratex.config import Settings
from orchestratex.errors import ConfigError
from orchestratex.grpc_server import serve
from orchestratex.logging import setup_logging
from services.providers.server import build


async def _run(settings: Settings) -> None:
    srv = await build(settings)
    await serve(srv, settings.shutdown_grace)


def main() -> None:
    """Parse settings once, configure logging, serve until SIGTERM/SIGINT."""
    try:
        settings = Settings.from_env()
    except ConfigError as exc:
        raise SystemExit(f"providers: {exc}") from None
    setup_logging("providers", settings.log_level, settings.log_format)
    try:
        asyncio.run(_run(settings))
    except ConfigError as exc:
        raise SystemExit(f"providers: {exc}") from None


if __name__ == "__main__":
    main()
