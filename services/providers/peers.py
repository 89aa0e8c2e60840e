"""How many providers pods share the per-model limits: the addresses of ``ORX_PROVIDER_PEERS``, re-counted.

In Kubernetes the providers' headless Service resolves to one address per *ready* pod, so counting the distinct
addresses of its name counts the pods that take calls. :class:`PeerCount` resolves it every ``interval`` seconds
(``ORX_PROVIDER_PEERS_INTERVAL``, 10 s) in a background task, never on a call's path, and hands each new count to
``on_change`` (the server passes :meth:`Resilience.share_among`), which changes every limiter's share in place.

* At least 1: a name that resolves to nothing (every pod unready, this one starting) means "alone".
* A failed resolution keeps the last count: a DNS hiccup must not hand every pod the whole limits at once. It is
  logged once at WARNING (and again only after a success in between), not every ``interval``.
* The count lags a scale-out or scale-in by up to ``interval`` plus the time DNS takes to see the change, and a
  pod starting is not yet in the list it reads (it is not ready): during that window the pods' shares add up to
  more than the limit, at most by one pod's share (docs/deployment.md, "Scaling each service").
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
from collections.abc import Awaitable, Callable

from services.providers import metrics
from services.providers.resilience.clock import SYSTEM_CLOCK, Clock

log = logging.getLogger(__name__)

Resolve = Callable[[str], Awaitable[frozenset[str]]]
"""The addresses a name resolves to; raises :class:`OSError` when it cannot be resolved."""


async def resolve_addresses(name: str) -> frozenset[str]:
    """The distinct IPv4 and IPv6 addresses of ``name``, from the event loop's ``getaddrinfo`` (a thread)."""
    infos = await asyncio.get_running_loop().getaddrinfo(name, None, type=socket.SOCK_STREAM)
    return frozenset(str(info[4][0]) for info in infos)


class PeerCount:
    """The number of providers pods behind ``name``, re-resolved every ``interval`` seconds once started.

    ``resolve`` and ``clock`` are injectable so tests drive it without DNS or real time; :meth:`refresh` resolves
    once, now. ``timeout`` bounds one resolution (a resolver that hangs counts as a failure).
    """

    def __init__(
        self,
        name: str,
        on_change: Callable[[int], None],
        *,
        interval: float = 10.0,
        timeout: float | None = None,
        resolve: Resolve = resolve_addresses,
        clock: Clock = SYSTEM_CLOCK,
    ) -> None:
        self._name = name
        self._on_change = on_change
        self._interval = interval
        self._timeout = interval if timeout is None else timeout
        self._resolve = resolve
        self._clock = clock
        self._peers = 1
        self._failing = False
        self._task: asyncio.Task[None] | None = None
        metrics.PEERS.set(1)

    @property
    def peers(self) -> int:
        """The latest count (1 until a resolution succeeds)."""
        return self._peers

    async def refresh(self) -> int:
        """Resolve ``name`` once and apply the count if it changed; returns the count in force."""
        try:
            async with asyncio.timeout(self._timeout):
                addresses = await self._resolve(self._name)
        except (OSError, TimeoutError) as exc:
            if not self._failing:
                self._failing = True
                log.warning(
                    "ORX_PROVIDER_PEERS: cannot resolve %s (%s); keeping the last count, %d pod(s)",
                    self._name,
                    exc.strerror if isinstance(exc, OSError) and exc.strerror else type(exc).__name__,
                    self._peers,
                )
            return self._peers
        if self._failing:
            self._failing = False
            log.info("ORX_PROVIDER_PEERS: %s resolves again", self._name)
        peers = max(1, len(addresses))
        if peers != self._peers:
            log.info("ORX_PROVIDER_PEERS: %d providers pod(s) share the per-model limits (was %d)", peers, self._peers)
            self._peers = peers
            metrics.PEERS.set(peers)
            self._on_change(peers)
        return peers

    def start(self) -> None:
        """Re-resolve every ``interval`` seconds in the background until :meth:`close`."""
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._run(), name="providers-peer-count")

    async def close(self) -> None:
        """Stop re-resolving and wait for the background task to end."""
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def _run(self) -> None:
        while True:
            await self._clock.sleep(self._interval)
            await self.refresh()
