"""The event loop every service runs on: uvloop where it is installed (the default), else asyncio's own.

uvloop (libuv under asyncio's API) lowers the CPU cost of each gRPC call, HTTP request and stream
chunk: on the selector's benchmark an empty unary servicer went from about 1,800 to about 2,200
requests per second on one core (``docs/benchmarks.md``). Nothing in the code depends on it:
``ORX_EVENT_LOOP=asyncio`` runs the standard loop (and is what the unit tests run on), and a
platform without uvloop (Windows) falls back to it under ``auto``.
"""

from __future__ import annotations

import asyncio
import importlib.util
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

from orchestratex.errors import ConfigError

T = TypeVar("T")

LoopFactory = Callable[[], asyncio.AbstractEventLoop]


def loop_factory(choice: str) -> LoopFactory | None:
    """The factory for ``ORX_EVENT_LOOP`` (``auto``, ``asyncio``, ``uvloop``); ``None`` means asyncio's default."""
    if choice == "asyncio":
        return None
    if importlib.util.find_spec("uvloop") is None:
        if choice == "uvloop":
            raise ConfigError("ORX_EVENT_LOOP: uvloop is not installed (pip install uvloop, or use asyncio)")
        return None
    import uvloop  # noqa: PLC0415  # optional: imported only when used

    return uvloop.new_event_loop


def loop_name(choice: str) -> str:
    """``uvloop`` or ``asyncio``: what :func:`run` uses for ``choice``."""
    return "asyncio" if loop_factory(choice) is None else "uvloop"


def run(main: Coroutine[Any, Any, T], choice: str) -> T:
    """Run ``main`` to completion on the loop ``choice`` names (like :func:`asyncio.run`)."""
    with asyncio.Runner(loop_factory=loop_factory(choice)) as runner:
        return runner.run(main)
