"""Session records and event logs: the orchestrator's storage.

The interface (:class:`SessionStore`) is backend-neutral; :class:`SqliteSessionStore` is the embedded
implementation. Events are stored as serialised ``OrchestrationEvent`` protobufs keyed by
``(session_id, sequence)``; every event also gets a store-wide increasing position, which the outbox
uses as its delivery cursor to analytics.
"""

from __future__ import annotations

import abc
import base64
from collections.abc import AsyncGenerator, Sequence
from dataclasses import dataclass

from orchestratex.v1 import common_pb2, orchestrator_pb2


@dataclass(frozen=True)
class StoredEvent:
    """An event as stored: its store-wide position, its tenant and its bytes."""

    position: int
    tenant: str
    session_id: str
    payload: bytes


@dataclass(frozen=True)
class SessionQuery:
    """Filters and paging for :meth:`SessionStore.list_sessions`."""

    tenant: str = ""
    page_size: int = 20
    page_token: str = ""
    status: int = 0
    thread_id: str = ""
    start_us: int | None = None
    end_us: int | None = None
    prompt_contains: str = ""
    """Only sessions whose search text (:func:`search_text`) contains this, case-folded by the caller."""


@dataclass(frozen=True)
class SessionPage:
    """One page of sessions."""

    sessions: list[orchestrator_pb2.Session]
    next_token: str


SEARCH_CHARS = 4000
"""How much of a prompt is kept for search (a prompt can be 100,000 characters; its head is what people recall)."""


def search_text(session: orchestrator_pb2.Session) -> str:
    """What ``ListSessions(prompt_contains=...)`` searches: the session's prompt (or, for a session started with
    ``messages``, its last user message), case-folded and cut to :data:`SEARCH_CHARS` characters."""
    request = session.request
    prompt = request.prompt
    if not prompt:
        users = [m.content for m in request.messages if m.role == common_pb2.ROLE_USER]
        prompt = users[-1] if users else ""
    return prompt[:SEARCH_CHARS].casefold()


def encode_page_token(create_us: int, session_id: str) -> str:
    """Opaque keyset-pagination token."""
    return base64.urlsafe_b64encode(f"{create_us}|{session_id}".encode()).decode()


def decode_page_token(token: str) -> tuple[int, str]:
    """Inverse of :func:`encode_page_token`; raises ``ValueError`` when malformed."""
    try:
        raw = base64.urlsafe_b64decode(token.encode()).decode()
        created, _, session_id = raw.partition("|")
        position = int(created)
    except (ValueError, UnicodeError) as exc:
        raise ValueError("malformed page token") from exc
    if not -(2**63) <= position < 2**63:
        raise ValueError("malformed page token")  # no store holds such a time: it was not ours
    return position, session_id


@dataclass(frozen=True)
class RunningSession:
    """A running session as replicas see it: who runs it, and the cancel asked for (None: none)."""

    session_id: str
    owner: str
    """The orchestrator instance running it ("" for sessions started before replicas existed)."""
    cancel_reason: str | None = None


@dataclass(frozen=True)
class LeaseRecord:
    """Who holds a named lease, and until when (unix microseconds, the claimer's clock)."""

    holder: str
    expires_us: int


class SessionStore(abc.ABC):
    """What the orchestrator needs from storage."""

    #: Whether processes on other machines can reach this store (then an orchestrator that cannot
    #: renew its lease must assume another one took over).
    shared: bool = False

    #: Whether :meth:`change_feed` returns a feed (it may still fail to open: MongoDB needs a replica set).
    has_change_feed: bool = False

    def change_feed(self) -> AsyncGenerator[str, None] | None:
        """A push feed of stored events, or None when the store has none (followers then poll).

        Iterating it yields "" once the feed is open, then the session id of every event any process stores,
        soon after it is stored; it raises when the feed breaks. Followers use it only as a wake-up: what they
        send is always read from the store, so a missed or late notification delays, never loses, an event.
        """
        return None

    @abc.abstractmethod
    async def claim_lease(
        self, name: str, holder: str, now_us: int, until_us: int, *, steal_from: str | None = None
    ) -> LeaseRecord:
        """Take or renew lease ``name`` for ``holder`` until ``until_us``, atomically, if it is free,
        expired at ``now_us``, already ``holder``'s, or held by ``steal_from`` (a holder known to be
        dead). Returns the lease as it stands afterwards: ``holder`` is someone else's when refused."""

    @abc.abstractmethod
    async def release_lease(self, name: str, holder: str) -> None:
        """Give up lease ``name`` if ``holder`` still holds it."""

    @abc.abstractmethod
    async def get_lease(self, name: str) -> LeaseRecord | None:
        """Lease ``name`` as stored (expired or not), or None when nobody ever took it or it was released."""

    @abc.abstractmethod
    async def create_session(self, tenant: str, session: orchestrator_pb2.Session, owner: str = "") -> None:
        """Insert a new session record, run by orchestrator instance ``owner``."""

    @abc.abstractmethod
    async def save_session(self, session: orchestrator_pb2.Session) -> None:
        """Replace an existing session record (status, result...)."""

    @abc.abstractmethod
    async def get_session(self, session_id: str, tenant: str) -> orchestrator_pb2.Session | None:
        """A session, or None when unknown or owned by another tenant (``tenant`` "" sees all)."""

    @abc.abstractmethod
    async def list_sessions(self, query: SessionQuery) -> SessionPage:
        """Newest first, keyset-paged."""

    @abc.abstractmethod
    async def append_events(self, events: Sequence[tuple[str, int, bytes]]) -> None:
        """Append ``(session_id, sequence, payload)`` rows in one transaction; duplicates are ignored."""

    @abc.abstractmethod
    async def read_events(self, session_id: str, after_sequence: int, limit: int = 1000) -> list[bytes]:
        """Stored events of a session with sequence > ``after_sequence``, in order."""

    @abc.abstractmethod
    async def last_sequence(self, session_id: str) -> int:
        """Highest stored sequence of a session (0 when none)."""

    @abc.abstractmethod
    async def running_sessions(self) -> list[orchestrator_pb2.Session]:
        """Sessions still marked running (used at start-up to recover from a crash)."""

    @abc.abstractmethod
    async def running_owners(self) -> list[RunningSession]:
        """Every session still marked running, with its owner and whether a cancel was asked for."""

    @abc.abstractmethod
    async def adopt_session(self, session_id: str, owner: str, new_owner: str) -> bool:
        """Make ``new_owner`` the owner of a running session still owned by ``owner``, atomically; False when
        it is no longer running or another instance adopted it first (exactly one adopter wins)."""

    @abc.abstractmethod
    async def request_cancel(self, session_id: str, reason: str) -> bool:
        """Ask a running session's owner to cancel it (the first reason asked for is kept); False when the
        session is not running."""

    @abc.abstractmethod
    async def cancel_requests(self, owner: str) -> list[RunningSession]:
        """The running sessions of ``owner`` whose cancel was asked for."""

    @abc.abstractmethod
    async def thread_sessions(self, tenant: str, thread_id: str, limit: int) -> list[orchestrator_pb2.Session]:
        """Completed sessions of a thread, oldest first (at most ``limit``, the most recent ones)."""

    @abc.abstractmethod
    async def events_after(self, position: int, limit: int) -> list[StoredEvent]:
        """Events at store positions greater than ``position``, in order (for the outbox)."""

    @abc.abstractmethod
    async def newest_position(self) -> int:
        """The highest store position a reader of :meth:`events_after` can reach (0 when none): with the
        outbox cursor, about how many events are still to deliver (an upper bound: positions can have gaps)."""

    @abc.abstractmethod
    async def get_cursor(self, name: str) -> int:
        """A named delivery cursor (0 when never set)."""

    @abc.abstractmethod
    async def set_cursor(self, name: str, position: int) -> None:
        """Advance a named delivery cursor."""

    @abc.abstractmethod
    async def close(self) -> None:
        """Release connections."""
