"""Leases on the orchestrator's database: named, renewable claims with a holder and an expiry.

Every orchestrator process holds its own instance lease (``instance:<token>``, services/orchestrator/replicas.py),
and one of them at a time also holds the database-wide lease :data:`LEASE_NAME` as the leader (the outbox runs
there, and sessions from before replicas are recovered there). A lease is claimed before anything depends on it and
renewed every third of its time to live; :class:`OrchestratorLease` refuses a lease someone else holds
(:class:`LeaseHeld`). A holder that died without releasing (SIGKILL, power loss) keeps its lease until it expires,
except when the claimer can prove it dead: same host and boot, and its process is gone (no process with its pid, or
one that started at another time: the pid was reused, say by the claimer in a restarted container). That is what
makes ``orchestratex up`` recover a crashed orchestrator's sessions at once.

A holder that cannot renew before its lease expires must assume someone else took over: it stops
(health NOT_SERVING, then a graceful shutdown). Expiry compares wall clocks of different hosts on
MongoDB, so keep them in sync (NTP) and the time to live well above their skew.

Metrics: ``orx_orchestrator_leases_held`` (this process's leases), ``..._lease_takeovers_total`` and
``..._leases_lost_total``.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import socket
import time
import uuid
from collections.abc import Callable
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path

from orchestratex.errors import ConfigError
from services.orchestrator import metrics
from services.orchestrator.store.base import LeaseRecord, SessionStore

log = logging.getLogger(__name__)

LEASE_NAME = "orchestrator"
_BOOT_ID = Path("/proc/sys/kernel/random/boot_id")


class LeaseHeld(ConfigError):
    """Another live orchestrator holds this database's lease."""


@dataclass(frozen=True)
class Holder:
    """Who holds a lease: enough to tell a dead holder on this machine from a live one elsewhere."""

    host: str
    boot: str
    pid: int
    started: int
    """The process's start time (clock ticks since boot; 0 when unknown)."""
    token: str

    @classmethod
    def this_process(cls) -> Holder:
        """A new identity (``token`` differs for every lease object, even within one process)."""
        try:
            boot = _BOOT_ID.read_text(encoding="ascii").strip()
        except OSError:
            boot = ""
        pid = os.getpid()
        return cls(socket.gethostname(), boot, pid, process_start(pid) or 0, uuid.uuid4().hex[:12])

    def encode(self) -> str:
        """The holder as stored."""
        return json.dumps(asdict(self), separators=(",", ":"), sort_keys=True)

    @classmethod
    def decode(cls, text: str) -> Holder | None:
        """A stored holder, or None when it is not one of ours."""
        try:
            data = json.loads(text)
            return cls(str(data["host"]), str(data["boot"]), int(data["pid"]), int(data["started"]), str(data["token"]))
        except (ValueError, TypeError, KeyError):
            return None

    def describe(self) -> str:
        """For people: host and pid."""
        return f"pid {self.pid} on host {self.host}"


def process_start(pid: int) -> int | None:
    """When process ``pid`` started (clock ticks since boot, from ``/proc``), or None when there is none."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text(encoding="ascii", errors="replace")
    except FileNotFoundError:
        return None
    except OSError:
        return 0
    # Fields after the command name (which may hold spaces and parentheses); starttime is field 22.
    fields = stat[stat.rfind(")") + 2 :].split()
    try:
        return int(fields[19])
    except (IndexError, ValueError):
        return 0


def provably_dead(other: Holder, me: Holder) -> bool:
    """True when ``other`` ran on this machine since its last boot and its process is gone: no process
    has its pid, or the one that has it started at another time (the pid was reused)."""
    if not other.boot or other.host != me.host or other.boot != me.boot or other.token == me.token:
        return False
    started = process_start(other.pid)
    if started is None:
        return True
    return other.started != 0 and started not in (0, other.started)


def _until(expires_us: int) -> str:
    return datetime.fromtimestamp(expires_us / 1e6, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


class OrchestratorLease:
    """Claims, renews and releases the orchestrator lease of one database."""

    def __init__(
        self,
        store: SessionStore,
        ttl: float,
        *,
        holder: Holder | None = None,
        clock: Callable[[], float] = time.time,
        name: str = LEASE_NAME,
    ) -> None:
        self.store = store
        self.ttl = ttl
        self.holder = holder or Holder.this_process()
        self.clock = clock
        self.name = name
        self.lost = asyncio.Event()
        self._me = self.holder.encode()
        self._renewed_at = 0.0
        self._task: asyncio.Task[None] | None = None
        self._held = False

    async def acquire(self) -> None:
        """Take the lease, or raise :class:`LeaseHeld` naming the live holder."""
        record = await self._claim()
        if record.holder == self._me:
            self._hold()
            return
        other = Holder.decode(record.holder)
        if other is not None and provably_dead(other, self.holder):
            log.warning("taking over the lease of a dead orchestrator (%s)", other.describe())
            record = await self._claim(steal_from=record.holder)
            if record.holder == self._me:
                metrics.LEASE_TAKEOVERS.inc()
                self._hold()
                return
            other = Holder.decode(record.holder)
        who = other.describe() if other is not None else "an unknown process"
        raise LeaseHeld(
            f"another orchestrator ({who}) holds this database's lease until {_until(record.expires_us)}; "
            "run one orchestrator per database (stop the other one, or point ORX_DATA_DIR / "
            "ORX_MONGODB_DATABASE elsewhere; if it crashed on another machine, start again once its lease "
            "has expired)"
        )

    def start(self) -> None:
        """Renew every third of the time to live until :meth:`release`; set ``lost`` when a renewal
        finds another holder or none succeeds in time."""
        self._task = asyncio.ensure_future(self._renew_forever())

    async def release(self) -> None:
        """Stop renewing and give the lease up (unless it was lost)."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        self._let_go()
        if not self.lost.is_set():
            try:
                await self.store.release_lease(self.name, self._me)
            except Exception:
                log.warning("could not release the orchestrator lease; it expires in %.0f s", self.ttl)

    def _hold(self) -> None:
        if not self._held:
            self._held = True
            metrics.LEASES_HELD.inc()

    def _let_go(self) -> None:
        if self._held:
            self._held = False
            metrics.LEASES_HELD.dec()

    async def _claim(self, steal_from: str | None = None) -> LeaseRecord:
        now = self.clock()
        record = await self.store.claim_lease(
            self.name, self._me, int(now * 1e6), int((now + self.ttl) * 1e6), steal_from=steal_from
        )
        if record.holder == self._me:
            self._renewed_at = now
        return record

    async def _renew_forever(self) -> None:
        period = self.ttl / 3
        while True:
            await asyncio.sleep(period)
            try:
                record = await self._claim()
            except Exception as exc:
                # A store only this machine reaches (SQLite) fails for everyone alike: nobody can take
                # over meanwhile. A shared one (MongoDB) may be reachable by others: assume it lost.
                if not self.store.shared or self.clock() - self._renewed_at < self.ttl - period / 2:
                    log.warning("could not renew the orchestrator lease (%s); retrying", type(exc).__name__)
                    continue
                record = None
            if record is not None and record.holder == self._me:
                continue
            other = Holder.decode(record.holder) if record is not None else None
            log.error(
                "lost the orchestrator lease%s: stopping so that two orchestrators never run one database",
                f" to {other.describe()}" if other is not None else " (could not renew it in time)",
            )
            metrics.LEASES_LOST.inc()
            self._let_go()
            self.lost.set()
            return
