"""Small asyncio helpers that the standard library leaves to every project."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from typing import TypeVar

T = TypeVar("T")


async def uncancellable(work: Awaitable[T]) -> T:
    """Run ``work`` to its end even if the caller is cancelled meanwhile, then re-raise the cancellation.

    ``asyncio.shield`` alone lets the caller leave while the work goes on unobserved; this waits for
    it, so whatever runs after (releasing a lock, publishing a terminal event) sees the work done.
    Used for what must never be cut in half: a transaction's commit or rollback, a session's last write.
    """
    task = asyncio.ensure_future(work)
    cancelled = False
    while not task.done():
        try:
            await asyncio.wait([task])  # never cancels ``task`` itself
        except asyncio.CancelledError:
            cancelled = True
    if cancelled:
        if not task.cancelled():
            task.exception()  # retrieved: the cancellation wins, without a "never retrieved" warning
        raise asyncio.CancelledError
    return task.result()
