"""Backup and restore: round trips (back up, wipe, restore, compare everything) and refused inputs."""

from __future__ import annotations

import asyncio
import json
import shutil
import sqlite3
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest

from orchestratex.store.backup import MANIFEST, BackupError, backup_mongo, restore_mongo
from orchestratex.v1 import orchestrator_pb2 as pb
from services.analytics.ingest import facts_from_event
from services.analytics.store.model import EventFacts
from services.analytics.store.mongo import ANALYTICS_MIGRATIONS, MongoAnalyticsStore
from services.analytics.store.sqlite import SqliteAnalyticsStore
from services.cli import main
from services.orchestrator.store.mongo import SESSION_MIGRATIONS, MongoSessionStore
from services.orchestrator.store.sqlite import _MIGRATIONS as SESSION_SQLITE_MIGRATIONS
from services.orchestrator.store.sqlite import SqliteSessionStore
from tests.analytics.builders import now_ns, realistic
from tests.store.conftest import BACKENDS, MongoTarget
from tests.store.test_session_store_contract import event, session, tenant

# ------------------------------------------------------------------------------------------- SQLite


def facts(events: Sequence[pb.OrchestrationEvent]) -> list[EventFacts]:
    return [f for f in (facts_from_event(e) for e in events) if f is not None]


async def populate_sqlite(data_dir: Path) -> None:
    sessions = await SqliteSessionStore.open(data_dir / "orchestrator.db")
    analytics = await SqliteAnalyticsStore.open(data_dir / "analytics.db")
    try:
        a = tenant()
        for i in range(5):
            rec = session(us=i, status=pb.SESSION_STATUS_COMPLETED if i % 2 else pb.SESSION_STATUS_RUNNING)
            await sessions.create_session(a, rec)
            await sessions.append_events([event(rec.session_id, seq) for seq in range(1, 40)])
        await sessions.set_cursor("analytics", 17)
        for _ in range(3):
            await analytics.ingest(a, facts(realistic(now_ns()).events))
    finally:
        await analytics.close()
        await sessions.close()


def dump_sqlite(data_dir: Path) -> dict[str, dict[str, list[tuple[Any, ...]]]]:
    """Every row of every table of both databases, and each schema version."""
    out: dict[str, dict[str, list[tuple[Any, ...]]]] = {}
    for name in ("orchestrator.db", "analytics.db"):
        conn = sqlite3.connect(data_dir / name)
        try:
            tables = [r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table' ORDER BY name")]
            out[name] = {t: sorted(conn.execute(f'SELECT * FROM "{t}"').fetchall(), key=repr) for t in tables}
            out[name]["__version__"] = [conn.execute("PRAGMA user_version").fetchone()]
        finally:
            conn.close()
    return out


@pytest.fixture
def data_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    path = tmp_path / "data"
    path.mkdir()
    monkeypatch.setenv("ORX_DATA_DIR", str(path))
    monkeypatch.delenv("ORX_MONGODB_URI", raising=False)
    return path


def names(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir())


def wipe(directory: Path) -> None:
    shutil.rmtree(directory)
    directory.mkdir()


async def run(*argv: str) -> int:
    """The real command line, in a thread (it runs its own event loop); returns the exit code."""

    def call() -> int:
        try:
            main(list(argv))
        except SystemExit as exc:
            return int(exc.code or 0)
        raise AssertionError("main() did not exit")

    return await asyncio.to_thread(call)


async def test_sqlite_round_trip(data_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    await populate_sqlite(data_dir)
    before = dump_sqlite(data_dir)
    assert sum(len(rows) for rows in before["orchestrator.db"].values()) > 200
    assert sum(len(rows) for rows in before["analytics.db"].values()) > 10
    target = tmp_path / "backup-1"
    assert await run("backup", str(target)) == 0
    manifest = json.loads((target / MANIFEST).read_text())
    assert manifest["backend"] == "sqlite"
    assert manifest["files"]["orchestrator.db"]["tables"]["events"] == 5 * 39
    assert manifest["files"]["orchestrator.db"]["schema_version"] == len(SESSION_SQLITE_MIGRATIONS)
    assert "events: 195" in capsys.readouterr().out.replace("orchestrator.db:", "")
    wipe(data_dir)
    assert await run("restore", str(target)) == 0
    assert dump_sqlite(data_dir) == before
    # the restored store works: it continues where it was
    store = await SqliteSessionStore.open(data_dir / "orchestrator.db")
    assert await store.get_cursor("analytics") == 17
    assert len(await store.events_after(0, 1000)) == 195
    await store.close()


async def test_sqlite_backup_while_the_store_is_open(data_dir: Path, tmp_path: Path) -> None:
    await populate_sqlite(data_dir)
    store = await SqliteSessionStore.open(data_dir / "orchestrator.db")
    rec = session()
    await store.create_session(tenant(), rec)
    await store.append_events([event(rec.session_id, 1)])  # sits in the WAL, not yet checkpointed
    target = tmp_path / "online"
    assert await run("backup", str(target)) == 0
    await store.close()
    restored = tmp_path / "restored"
    restored.mkdir()
    from orchestratex.store.backup import restore_sqlite

    restore_sqlite(restored, target)
    again = await SqliteSessionStore.open(restored / "orchestrator.db")
    assert await again.last_sequence(rec.session_id) == 1
    await again.close()


async def test_restore_refuses_data_unless_forced(
    data_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    await populate_sqlite(data_dir)
    target = tmp_path / "b"
    assert await run("backup", str(target)) == 0
    store = await SqliteSessionStore.open(data_dir / "orchestrator.db")
    extra = session()
    await store.create_session(tenant(), extra)
    await store.close()
    changed = dump_sqlite(data_dir)
    capsys.readouterr()
    assert await run("restore", str(target)) == 2
    assert "--force" in capsys.readouterr().err
    assert dump_sqlite(data_dir) == changed
    assert await run("restore", str(target), "--force") == 0
    assert extra.session_id not in repr(dump_sqlite(data_dir)["orchestrator.db"]["sessions"])


async def test_backup_refuses_a_non_empty_directory(data_dir: Path, tmp_path: Path) -> None:
    await populate_sqlite(data_dir)
    target = tmp_path / "taken"
    target.mkdir()
    (target / "keep.txt").write_text("mine")
    assert await run("backup", str(target)) == 2
    assert names(target) == ["keep.txt"]
    assert not any(name.startswith(".taken") for name in names(tmp_path))


async def test_backup_of_nothing_is_refused(data_dir: Path, tmp_path: Path) -> None:
    assert await run("backup", str(tmp_path / "x")) == 2
    assert not (tmp_path / "x").exists()


def corrupt_byte(path: Path, offset: int = 200) -> None:
    data = bytearray(path.read_bytes())
    data[offset] ^= 0xFF
    path.write_bytes(bytes(data))


BAD_SQLITE_BACKUPS: dict[str, tuple[Any, str]] = {
    "missing directory": (shutil.rmtree, "is not a directory"),
    "missing manifest": (lambda b: (b / MANIFEST).unlink(), "no manifest.json"),
    "corrupt manifest": (lambda b: (b / MANIFEST).write_text("{not json"), "not readable JSON"),
    "foreign manifest": (lambda b: (b / MANIFEST).write_text('{"format": "other"}'), "not an orchestratex backup"),
    "checksum mismatch": (lambda b: corrupt_byte(b / "orchestrator.db", 5000), "does not match its checksum"),
    "missing file": (lambda b: (b / "analytics.db").unlink(), "missing"),
    "path in manifest": (
        lambda b: _edit_manifest(b, lambda m: m["files"]["analytics.db"].update(file="../analytics.db")),
        "malformed",
    ),
    "row count mismatch": (
        lambda b: _edit_manifest(b, lambda m: m["files"]["orchestrator.db"]["tables"].update(events=1)),
        "row counts differ",
    ),
}


def _edit_manifest(backup: Path, change: Any) -> None:
    manifest = json.loads((backup / MANIFEST).read_text())
    change(manifest)
    (backup / MANIFEST).write_text(json.dumps(manifest))


@pytest.mark.parametrize("case", sorted(BAD_SQLITE_BACKUPS))
async def test_bad_sqlite_backups_change_nothing(
    case: str, data_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    await populate_sqlite(data_dir)
    target = tmp_path / "b"
    assert await run("backup", str(target)) == 0
    before = dump_sqlite(data_dir)
    files_before = names(data_dir)
    damage, message = BAD_SQLITE_BACKUPS[case]
    damage(target)
    capsys.readouterr()
    assert await run("restore", str(target), "--force") == 2
    err = capsys.readouterr().err
    assert message in err and err.startswith("orchestratex: restore: ")
    assert dump_sqlite(data_dir) == before
    assert names(data_dir) == files_before


async def test_backend_mismatch_is_refused_before_connecting(
    data_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    await populate_sqlite(data_dir)
    target = tmp_path / "b"
    assert await run("backup", str(target)) == 0
    # nothing listens there: the refusal must come from the manifest, not from a failed connection
    monkeypatch.setenv("ORX_MONGODB_URI", "mongodb://127.0.0.1:1/?directConnection=true")
    monkeypatch.setenv("ORX_MONGODB_TIMEOUT", "0.1")
    capsys.readouterr()
    assert await run("restore", str(target)) == 2
    assert "is a sqlite backup but the configured backend is mongodb" in capsys.readouterr().err


# ------------------------------------------------------------------------------------------ MongoDB


@pytest.fixture(params=BACKENDS[1:])
def backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
async def target(mongo_target: MongoTarget | None) -> MongoTarget:
    assert mongo_target is not None
    return mongo_target


async def populate_mongo(db: Any) -> None:
    store = await MongoSessionStore.attach(db)
    a = tenant()
    for i in range(4):
        rec = session(us=i)
        await store.create_session(a, rec)
        await store.append_events([event(rec.session_id, seq) for seq in range(1, 30)])
    await store.set_cursor("analytics", 11)
    analytics = await MongoAnalyticsStore.attach(db)
    await analytics.ingest(a, facts(realistic(now_ns()).events))
    await analytics.close()
    await db["misc"].insert_one({"_id": "big", "n": 2**40, "f": 1.5, "b": b"\x00\xff", "nested": {"l": [1, "x"]}})
    await db.create_collection("empty")
    await store.close()


async def dump_mongo(db: Any) -> dict[str, list[dict[str, Any]]]:
    names = sorted(n for n in await db.list_collection_names() if not n.startswith("system."))
    return {n: await db[n].find({}).sort("_id", 1).to_list(None) for n in names}


async def test_mongo_round_trip(target: MongoTarget, tmp_path: Path) -> None:
    await populate_mongo(target.db)
    before = await dump_mongo(target.db)
    assert len(before["events"]) == 4 * 29 and before["empty"] == []
    result = await backup_mongo(target.client, target.name, tmp_path / "m")
    assert result.counts["events"] == 116
    manifest = json.loads((tmp_path / "m" / MANIFEST).read_text())
    assert manifest["schema_versions"] == {"analytics": len(ANALYTICS_MIGRATIONS), "sessions": len(SESSION_MIGRATIONS)}
    assert manifest["collections"]["analytics_calls"]["documents"] > 0
    if target.settings is None:
        assert manifest["consistency"] == "best-effort" and result.notes
    for name in before:
        await target.db.drop_collection(name)
    assert await dump_mongo(target.db) == {}
    await restore_mongo(target.client, target.name, tmp_path / "m")
    after = await dump_mongo(target.db)
    assert after == before
    assert type(after["misc"][0]["b"]) is bytes and after["misc"][0]["n"] == 2**40
    info = await target.db["events"].index_information()
    assert info["session_sequence"].get("unique") and info["position"].get("unique")
    # the restored store continues: new events get positions after the restored ones
    store = await MongoSessionStore.attach(target.db)
    first = before["sessions"][0]["_id"]
    await store.append_events([event(first, 30)])
    rows = await store.events_after(0, 1000)
    assert len(rows) == 117 and rows[-1].position == 117
    await store.close()


async def test_mongo_restore_refuses_data_unless_forced(target: MongoTarget, tmp_path: Path) -> None:
    await populate_mongo(target.db)
    await backup_mongo(target.client, target.name, tmp_path / "m")
    await target.db["sessions"].delete_many({})
    await target.db["stray"].insert_one({"_id": 1})
    changed = await dump_mongo(target.db)
    with pytest.raises(BackupError, match="--force"):
        await restore_mongo(target.client, target.name, tmp_path / "m")
    assert await dump_mongo(target.db) == changed
    await restore_mongo(target.client, target.name, tmp_path / "m", force=True)
    after = await dump_mongo(target.db)
    assert len(after["sessions"]) == 4 and "stray" not in after


def _rewrite_jsonl(backup: Path, name: str, change: Any) -> None:
    """Edit a collection file and fix its checksum, so only the content check can catch it."""
    from orchestratex.store.backup import _sha256

    path = backup / f"{name}.jsonl"
    path.write_text(change(path.read_text()))
    _edit_manifest(backup, lambda m: m["collections"][name].update(sha256=_sha256(path)))


BAD_MONGO_BACKUPS = {
    "checksum mismatch": (
        lambda b: (b / "events.jsonl").write_text((b / "events.jsonl").read_text() + "\n"),
        "does not match its checksum",
    ),
    "not extended json": (lambda b: _rewrite_jsonl(b, "events", lambda t: t + "{oops\n"), "not Extended JSON"),
    "count mismatch": (lambda b: _rewrite_jsonl(b, "events", lambda t: t.split("\n", 1)[1]), "manifest says"),
    "sqlite manifest": (lambda b: _edit_manifest(b, lambda m: m.update(backend="sqlite")), "malformed"),
    "missing manifest": (lambda b: (b / MANIFEST).unlink(), "no manifest.json"),
}


@pytest.mark.parametrize("case", sorted(BAD_MONGO_BACKUPS))
async def test_bad_mongo_backups_change_nothing(case: str, target: MongoTarget, tmp_path: Path) -> None:
    await populate_mongo(target.db)
    await backup_mongo(target.client, target.name, tmp_path / "m")
    await target.db["events"].delete_many({"sequence": {"$gt": 5}})
    before = await dump_mongo(target.db)
    damage, message = BAD_MONGO_BACKUPS[case]
    damage(tmp_path / "m")
    with pytest.raises(BackupError, match=message):
        await restore_mongo(target.client, target.name, tmp_path / "m", force=True)
    assert await dump_mongo(target.db) == before
