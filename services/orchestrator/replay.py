"""Replay: a session's events read back from the store, for ``WatchSession`` on a session that is not
running in this process (a finished one, or one that ran before a restart).

A session running here is followed through its live log instead (:meth:`LiveSession.follow`); either
way a watcher gets every event after the sequence it names, with no gap and no duplicate.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator

from orchestratex.v1 import orchestrator_pb2 as pb
from services.orchestrator.store.base import SessionStore

PAGE = 500
"""Events read from the store at a time."""


async def stored_events(
    store: SessionStore, session_id: str, after: int
) -> AsyncGenerator[pb.OrchestrationEvent, None]:
    """The session's stored events after sequence ``after``, oldest first, a page at a time."""
    while True:
        rows = await store.read_events(session_id, after, PAGE)
        for payload in rows:
            event = pb.OrchestrationEvent.FromString(payload)
            after = event.sequence
            yield event
        if len(rows) < PAGE:
            return
