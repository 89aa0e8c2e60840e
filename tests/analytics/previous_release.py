"""A database made by the previous release, for the upgrade test (``test_a_previous_release_database_upgrades``).

``fixtures/release-<commit>/`` holds what the analytics store of release ``<commit>`` wrote for
:func:`history`: ``analytics.sql`` (the SQLite file as an SQL script, :func:`sql_dump`),
``analytics-mongo.jsonl`` (every MongoDB document as relaxed Extended JSON, one per line, written through
the in-process double; the last batch is left in the journal, as a crash would leave it) and
``reports.json`` (what that release answered for :func:`scopes`). The test opens both databases with the
current code, which must answer the same, then goes on with :func:`later`.

To make the fixture of another release, run this module with that release's code (any tree that has this
file and ``tests/analytics/builders.py``)::

    git archive <commit> | tar -x -C /tmp/prev && cp tests/analytics/previous_release.py /tmp/prev/tests/analytics/
    cd /tmp/prev && /path/to/.venv/bin/python -m tests.analytics.previous_release \\
        /path/to/repo/tests/analytics/fixtures/release-<short commit>

Only what every release has is used here: the stores' public methods and the event builders.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import random
import sqlite3
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from orchestratex.v1 import common_pb2
from orchestratex.v1 import orchestrator_pb2 as pb
from services.analytics.ingest import facts_from_event
from services.analytics.store.model import AnalyticsStore, EventFacts, Scope
from tests.analytics.builders import DAY, HOUR, SECOND, FakeSession, day_start, random_session

#: The release whose databases the checked-in fixture holds.
RELEASE = "e6a485f"
FIXTURES = Path(__file__).parent / "fixtures" / f"release-{RELEASE}"
SQL_DUMP = "analytics.sql"
MONGO_DUMP = "analytics-mongo.jsonl"
REPORTS = "reports.json"

BASE = day_start(1_780_000_000 * SECOND)
TENANTS = ("t-a", "t-b", "")
#: A session whose events come only after the upgrade; a rating waits for it in the old database.
LATE_SESSION = "prev-late"

# ("ingest", tenant, facts) or ("feedback", session_id, user_id, rating, comment, now_ns, tenant)
Operation = tuple[Any, ...]


def facts(events: Sequence[pb.OrchestrationEvent]) -> list[EventFacts]:
    return [f for f in (facts_from_event(e) for e in events) if f is not None]


def history() -> list[Operation]:
    """What the previous release was given: out-of-order, redelivered batches and ratings (some early)."""
    rng = random.Random(14)
    sessions: list[tuple[str, list[EventFacts]]] = []
    for i in range(9):
        # some a few seconds before midnight, so their events straddle two days
        offset = rng.choice([rng.randrange(3 * DAY), rng.randint(1, 3) * DAY - rng.randint(1, 5) * SECOND])
        events = facts(random_session(rng, BASE + offset, f"prev-s{i:02d}").events)
        if i % 3 == 0:
            events = events[2:] + events[:2]  # a late start: counted on the wrong day and domain first
        sessions.append((TENANTS[i % 3], events))
    # one start comes last of all, a day earlier than the rest: it moves a rated session to another day
    held = sessions[2][1].pop(0)
    assert held.started
    ops: list[Operation] = [
        # ratings before their session: one that joins, one of another tenant (dropped), one that waits
        ("feedback", "prev-s04", "u-early", 5, "early", BASE, "t-b"),
        ("feedback", "prev-s04", "u-other", 1, "not mine", BASE, "t-a"),
        ("feedback", LATE_SESSION, "u-early", 2, "waits", BASE, "t-a"),
    ]
    deliveries = [(tenant, f) for tenant, events in sessions for f in events]
    deliveries += rng.sample(deliveries, len(deliveries) // 5)
    firsts = {events[0].session_id: (tenant, events[0]) for tenant, events in sessions}
    ops += [("ingest", tenant, [first]) for tenant, first in firsts.values()]
    rng.shuffle(deliveries)
    while deliveries:
        size = rng.randint(1, 30)
        chunk, deliveries = deliveries[:size], deliveries[size:]
        by_tenant: dict[str, list[EventFacts]] = {}
        for tenant, fact in chunk:
            by_tenant.setdefault(tenant, []).append(fact)
        ops += [("ingest", tenant, batch) for tenant, batch in by_tenant.items()]
        if rng.random() < 0.3:
            sid = rng.choice(sorted(firsts))
            user = rng.choice(["u1", "u2", "u3"])
            ops.append(("feedback", sid, user, rng.randint(1, 5), "", BASE + 4 * DAY, firsts[sid][0]))
    for i in range(0, 9, 2):
        sid = f"prev-s{i:02d}"
        ops.append(("feedback", sid, "u1", 1 + i % 5, "", BASE + 5 * DAY, ""))
        ops.append(("feedback", sid, "u1", 5 - i % 5, "changed", BASE + 5 * DAY + 1, ""))
    start = dataclasses.replace(held, time_ns=held.time_ns - DAY - 3 * HOUR)
    ops += [("feedback", "prev-s02", "u9", 4, "", BASE + 5 * DAY, ""), ("ingest", "", [start])]
    return ops


def later() -> list[Operation]:
    """What the upgraded store is given next: the waiting session arrives, old sessions go on."""
    rng = random.Random(41)
    late = facts(random_session(rng, BASE + 2 * DAY + 30 * 60 * SECOND, LATE_SESSION).events)
    more = FakeSession(BASE, session_id="prev-s05", events=[pb.OrchestrationEvent() for _ in range(40)])
    more.response("m/a", 0.5, round_no=3).critique("m/b", "m/a", 6.5, 0.001, round_no=3)
    return [
        ("ingest", "t-a", late),
        ("ingest", "t-b", facts(more.events[40:])),
        ("feedback", "prev-s05", "u7", 3, "", BASE + 6 * DAY, ""),
        ("feedback", "prev-s01", "u1", 2, "", BASE + 6 * DAY, ""),
    ]


async def apply(store: AnalyticsStore, ops: Sequence[Operation]) -> None:
    for op in ops:
        if op[0] == "ingest":
            await store.ingest(op[1], op[2])
        else:
            _, sid, user, rating, comment, now, tenant = op
            await store.put_feedback(sid, user, rating, comment, now, tenant=tenant)


def scopes() -> list[Scope]:
    out = []
    for tenant in TENANTS:
        out += [
            Scope(tenant, BASE - 2 * DAY, BASE + 5 * DAY),
            Scope(tenant, BASE + 7 * HOUR + 5 * SECOND, BASE + 2 * DAY + 5 * HOUR),
            Scope(tenant, BASE + DAY, BASE + 2 * DAY),
            Scope(tenant, BASE + 2 * DAY + 1, BASE + 3 * DAY - 1, domain=common_pb2.DOMAIN_MATH),
        ]
    return out


def _plain(value: Any) -> Any:
    """A report as JSON values: dataclasses as dicts, histograms as ``{bucket: count}`` of their non-zero buckets."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        out = {}
        for f in dataclasses.fields(value):
            item = getattr(value, f.name)
            if f.name.endswith("_histogram"):
                out[f.name] = {str(i): n for i, n in enumerate(item) if n}
            else:
                out[f.name] = _plain(item)
        return out
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    return value


async def reports(store: AnalyticsStore) -> list[dict[str, Any]]:
    """Every report of every scope, as JSON values."""
    out = []
    for scope in scopes():
        out.append(
            {
                "scope": _plain(scope),
                "performance": _plain(await store.performance(scope)),
                "performance_m_b": _plain(await store.performance(scope, "m/b")),
                "cost": _plain(await store.cost_summary(scope, 5)),
                "accuracy": _plain(await store.selection_accuracy(scope)),
                "satisfaction": _plain(await store.satisfaction(scope)),
            }
        )
    return out


def _sql_literal(value: Any) -> str:
    if value is None:
        return "NULL"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, bytes):
        return f"X'{value.hex()}'"
    # ``sqlite3``'s own iterdump() loses what follows a NUL (ALL_TENANTS is "\x00all"): spell NULs out.
    return "(" + " || char(0) || ".join("'" + part.replace("'", "''") + "'" for part in str(value).split("\x00")) + ")"


def sql_dump(conn: sqlite3.Connection) -> str:
    """An exact SQL script of a database: its tables (as created), rows, indexes and ``user_version``."""
    lines = ["BEGIN TRANSACTION;"]
    tables = conn.execute(
        "SELECT name, sql FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%' ORDER BY rowid"
    ).fetchall()
    for name, sql in tables:
        lines.append(f"{sql};")
        width = len(conn.execute(f'PRAGMA table_info("{name}")').fetchall())
        order = ", ".join(str(i + 1) for i in range(width))
        for row in conn.execute(f'SELECT * FROM "{name}" ORDER BY {order}'):
            lines.append(f'INSERT INTO "{name}" VALUES({",".join(_sql_literal(v) for v in row)});')
    for (sql,) in conn.execute("SELECT sql FROM sqlite_master WHERE type = 'index' AND sql IS NOT NULL ORDER BY rowid"):
        lines.append(f"{sql};")
    lines.append("COMMIT;")
    lines.append(f"PRAGMA user_version={conn.execute('PRAGMA user_version').fetchone()[0]};")
    return "\n".join(lines) + "\n"


def load_sqlite(path: Path, fixtures: Path = FIXTURES) -> None:
    """Make the previous release's SQLite file at ``path`` from its dump."""
    with sqlite3.connect(path) as conn:
        conn.executescript((fixtures / SQL_DUMP).read_text(encoding="utf-8"))
    conn.close()


def mongo_documents(fixtures: Path = FIXTURES) -> list[tuple[str, dict[str, Any]]]:
    """The previous release's MongoDB documents, ``(collection, document)`` in their order."""
    from bson import json_util

    out = []
    for line in (fixtures / MONGO_DUMP).read_text(encoding="utf-8").splitlines():
        item = json_util.loads(line)
        out.append((item["collection"], item["document"]))
    return out


def expected_reports(fixtures: Path = FIXTURES) -> list[dict[str, Any]]:
    """What the previous release answered."""
    result: list[dict[str, Any]] = json.loads((fixtures / REPORTS).read_text(encoding="utf-8"))
    return result


async def _make(out: Path) -> None:  # pragma: no cover - run by hand with the release's code
    from bson import json_util

    from services.analytics.store.mongo import MongoAnalyticsStore
    from services.analytics.store.sqlite import SqliteAnalyticsStore
    from tests.store.mongo_double import AsyncClientDouble

    out.mkdir(parents=True, exist_ok=True)  # noqa: ASYNC240 - a script
    ops = history()
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "analytics.db"
        sqlite_store = await SqliteAnalyticsStore.open(path)
        await apply(sqlite_store, ops)
        expected = await reports(sqlite_store)
        await sqlite_store.close()
        with sqlite3.connect(path) as conn:
            dump = sql_dump(conn)
        conn.close()
    (out / SQL_DUMP).write_text(dump, encoding="utf-8")
    lines = [json.dumps(item, sort_keys=True, separators=(",", ":")) for item in expected]
    (out / REPORTS).write_text("[\n" + ",\n".join(lines) + "\n]\n", encoding="utf-8")

    client = AsyncClientDouble()
    db: Any = client["previous"]
    mongo_store = await MongoAnalyticsStore.attach(db)
    await apply(mongo_store, ops[:-1])
    assert await reports(mongo_store) != expected  # the last batch matters...
    real_apply = MongoAnalyticsStore._apply

    async def crash(self: MongoAnalyticsStore, entry: Any) -> None:
        raise ConnectionError("crashed after journalling")

    MongoAnalyticsStore._apply = crash  # type: ignore[method-assign]
    try:
        await apply(mongo_store, ops[-1:])
    except ConnectionError:
        pass
    finally:
        MongoAnalyticsStore._apply = real_apply  # type: ignore[method-assign]
    lines = []
    for name in sorted(await db.list_collection_names()):
        for doc in await db[name].find({}).sort("_id", 1).to_list(None):
            lines.append(json_util.dumps({"collection": name, "document": doc}))
    (out / MONGO_DUMP).write_text("\n".join(lines) + "\n", encoding="utf-8")
    # ... and the release itself finishes the journal at restart and then answers like its SQLite store;
    # so it does from the files written (the dumps are exact).
    restarted = await MongoAnalyticsStore.attach(db)
    assert await reports(restarted) == expected
    reloaded: Any = client["reloaded"]
    for name, doc in mongo_documents(out):
        await reloaded[name].insert_one(doc)
    assert await reports(await MongoAnalyticsStore.attach(reloaded)) == expected
    with tempfile.TemporaryDirectory() as tmp:
        load_sqlite(Path(tmp) / "analytics.db", out)
        sqlite_store = await SqliteAnalyticsStore.open(Path(tmp) / "analytics.db")
        assert await reports(sqlite_store) == expected
        await sqlite_store.close()
    print(f"wrote {out}: {len(dump):,} characters of SQL, {len(lines)} MongoDB documents")


if __name__ == "__main__":  # pragma: no cover
    asyncio.run(_make(Path(sys.argv[1])))
