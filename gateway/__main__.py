"""``python -m gateway``: run the HTTP/WebSocket gateway until SIGTERM or SIGINT."""

from __future__ import annotations

import asyncio
import logging
import signal

from gateway.app import start_gateway
from orchestratex.config import Settings
from orchestratex.errors import ConfigError
from orchestratex.logging import setup_logging

log = logging.getLogger("gateway")


async def serve(settings: Settings) -> None:
    """Serve on ``settings.listen["gateway"]`` until SIGTERM/SIGINT, then shut down gracefully:
    stop accepting, close sockets with 1001, let requests finish, close the gRPC channels."""
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    address = settings.listen["gateway"]
    runner, port = await start_gateway(settings, address.host, address.port)
    log.info("gateway listening on %s:%d", address.host, port)
    try:
        await stop.wait()
        log.info("shutting down (grace %.1fs)", settings.shutdown_grace)
    finally:
        await runner.cleanup()
        log.info("stopped")


def main() -> None:
    """Entry point: parse settings once, configure logging, serve."""
    try:
        settings = Settings.from_env()
    except ConfigError as exc:
        raise SystemExit(f"gateway: configuration error: {exc}") from None
    setup_logging("gateway", settings.log_level, settings.log_format)
    asyncio.run(serve(settings))


if __name__ == "__main__":
    main()
