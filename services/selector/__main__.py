"""Run the selector service: ``python -m services.selector`` (configured by ``ORX_*`` variables)."""

from __future__ import annotations

import asyncio

from orchestratex.config import Settings
from orchestratex.errors import ConfigError
from orchestratex.grpc_server import serve
from orchestratex.logging import setup_logging
from services.selector.server import build


async def _run(settings: Settings) -> None:
    srv = await build(settings)
    await serve(srv, settings.shutdown_grace)


def main() -> None:
    """Parse settings once, configure logging, serve until SIGTERM/SIGINT."""
    try:
        settings = Settings.from_env()
    except ConfigError as exc:
        raise SystemExit(f"selector: {exc}") from None
    setup_logging("selector", settings.log_level, settings.log_format)
    asyncio.run(_run(settings))


if __name__ == "__main__":
    main()
