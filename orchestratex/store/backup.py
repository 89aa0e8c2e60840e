"""``orchestratex backup`` and ``orchestratex restore`` for both storage backends.

A backup is a directory with a ``manifest.json`` (backend, schema versions, creation time, and for
every file its SHA-256 and row or document counts) and the data:

* SQLite: a copy of each database (``orchestrator.db``, ``analytics.db``) taken with SQLite's online
  backup API, which copies a consistent snapshot while the services keep running;
* MongoDB: every collection of the configured database as canonical Extended JSON, one document per
  line (``bson.json_util``, lossless: binary, 64-bit integers, ObjectIds and dates keep their types),
  plus each collection's index definitions. On a replica set the export reads one snapshot (a
  ``snapshot=True`` session), so it is consistent across collections; on a standalone server it cannot
  be, and the manifest says ``"consistency": "best-effort"`` (stop the services first for a clean copy).

The backup directory is written under a temporary name and renamed into place at the end, so a
failed backup leaves nothing that looks like a backup. Restore checks everything (manifest, backend,
checksums, counts, every line parsed) before it touches the target, refuses a target that holds data
unless ``force`` is set, and then swaps the data in: SQLite files are copied to temporary files and
renamed over the old ones; MongoDB collections are loaded into temporary collections and renamed over
the old ones. Stop the services before restoring.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import os
import shutil
import sqlite3
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bson import json_util
from bson.json_util import CANONICAL_JSON_OPTIONS
from pymongo import AsyncMongoClient

from orchestratex.config import Settings
from orchestratex.store.mongo import SCHEMA_COLLECTION, Document, MongoDb, connect
from orchestratex.store.sqlite import ANALYTICS_FILE, SESSIONS_FILE

MANIFEST = "manifest.json"
FORMAT = "orchestratex-backup"
FORMAT_VERSION = 1
SQLITE_FILES = (SESSIONS_FILE, ANALYTICS_FILE)
RESTORE_PREFIX = "__orx_restore_"
_CHUNK = 1 << 20
_INSERT_BATCH = 1000


class BackupError(Exception):
    """A backup or restore that cannot proceed; the message says why. Nothing was changed."""


@dataclass(frozen=True)
class Result:
    """What a backup or restore did: the backend and the counts per file or collection."""

    backend: str
    path: Path
    counts: dict[str, int]
    notes: list[str]


# ---------------------------------------------------------------------------------------- entry points


async def run_backup(settings: Settings, target: Path) -> Result:
    """Back up the configured backend into the new directory ``target``."""
    if settings.common.storage_backend == "mongodb":
        client = await _connect(settings)
        try:
            return await backup_mongo(client, settings.common.mongodb.database, target)
        finally:
            await client.close()
    return await asyncio.to_thread(backup_sqlite, settings.common.data_dir, target)


async def run_restore(settings: Settings, source: Path, *, force: bool = False) -> Result:
    """Restore the backup in ``source`` into the configured backend."""
    manifest = read_manifest(source)
    backend = manifest["backend"]
    if backend != settings.common.storage_backend:
        raise BackupError(
            f"{source} is a {backend} backup but the configured backend is {settings.common.storage_backend} "
            "(ORX_MONGODB_URI decides)"
        )
    if backend == "mongodb":
        client = await _connect(settings)
        try:
            return await restore_mongo(client, settings.common.mongodb.database, source, force=force)
        finally:
            await client.close()
    return await asyncio.to_thread(restore_sqlite, settings.common.data_dir, source, force=force)


async def _connect(settings: Settings) -> AsyncMongoClient[Document]:
    try:
        return await connect(settings, "orchestratex-backup")
    except ConnectionError as exc:
        raise BackupError(str(exc)) from None


# ------------------------------------------------------------------------------------------- helpers


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        while chunk := fh.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


@contextlib.contextmanager
def _staging(target: Path) -> Iterator[Path]:
    """A temporary directory beside ``target``, renamed to ``target`` when the block succeeds."""
    if target.exists() and (not target.is_dir() or any(target.iterdir())):
        raise BackupError(f"{target} already exists and is not an empty directory")
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = target.parent / f".{target.name}.partial-{uuid.uuid4().hex[:8]}"
    staging.mkdir()
    try:
        yield staging
        _fsync_dir(staging)
        os.replace(staging, target)
        _fsync_dir(target.parent)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _write_manifest(directory: Path, manifest: dict[str, Any]) -> None:
    path = directory / MANIFEST
    with path.open("w", encoding="utf-8") as fh:
        json.dump(manifest, fh, indent=2, sort_keys=True)
        fh.write("\n")
        fh.flush()
        os.fsync(fh.fileno())


def read_manifest(source: Path) -> dict[str, Any]:
    """The parsed manifest of the backup in ``source``; :class:`BackupError` when missing or malformed."""
    if not source.is_dir():
        raise BackupError(f"{source} is not a directory")
    path = source / MANIFEST
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise BackupError(f"{source} has no {MANIFEST}; not an orchestratex backup") from None
    except (OSError, ValueError, UnicodeError) as exc:
        raise BackupError(f"{path} is not readable JSON ({type(exc).__name__})") from None
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise BackupError(f"{path} is not an orchestratex backup manifest")
    if manifest.get("format_version") != FORMAT_VERSION:
        raise BackupError(f"{path} has format version {manifest.get('format_version')!r}; expected {FORMAT_VERSION}")
    backend = manifest.get("backend")
    entries = manifest.get("files") if backend == "sqlite" else manifest.get("collections")
    if backend not in ("sqlite", "mongodb") or not isinstance(entries, dict):
        raise BackupError(f"{path} is malformed (backend or file list)")
    for name, entry in entries.items():
        if (
            not isinstance(entry, dict)
            or not isinstance(entry.get("sha256"), str)
            or not isinstance(entry.get("file"), str)
            or Path(entry["file"]).name != entry["file"]
        ):
            raise BackupError(f"{path} is malformed (entry {name!r})")
    return manifest


def _verify_checksum(source: Path, name: str, entry: dict[str, Any]) -> Path:
    path = source / str(entry["file"])
    if not path.is_file():
        raise BackupError(f"{path} is listed in the manifest but missing")
    if _sha256(path) != entry["sha256"]:
        raise BackupError(f"{path} does not match its checksum in the manifest ({name} is damaged)")
    return path


# -------------------------------------------------------------------------------------------- SQLite


def _sqlite_counts(conn: sqlite3.Connection) -> dict[str, int]:
    tables = [
        str(r[0])
        for r in conn.execute(
            "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%' ORDER BY name"
        )
    ]
    return {t: int(conn.execute(f'SELECT COUNT(*) FROM "{t}"').fetchone()[0]) for t in tables}


def _schema_version(conn: sqlite3.Connection) -> int:
    return int(conn.execute("PRAGMA user_version").fetchone()[0])


def backup_sqlite(data_dir: Path, target: Path) -> Result:
    """Copy every service database under ``data_dir`` into ``target`` with the online backup API."""
    present = [name for name in SQLITE_FILES if (data_dir / name).is_file()]
    if not present:
        raise BackupError(f"no database to back up in {data_dir} (ORX_DATA_DIR)")
    files: dict[str, Any] = {}
    with _staging(target) as staging:
        for name in present:
            # ``mode=ro``: a backup must never create or change the source
            source = sqlite3.connect(f"file:{data_dir / name}?mode=ro", uri=True)
            copy = sqlite3.connect(staging / name)
            try:
                source.backup(copy)  # one step: a single consistent snapshot, even while services write
                copy.execute("PRAGMA journal_mode=DELETE")  # a self-contained file, no -wal beside it
                files[name] = {
                    "file": name,
                    "schema_version": _schema_version(copy),
                    "tables": _sqlite_counts(copy),
                }
            finally:
                copy.close()
                source.close()
            files[name]["sha256"] = _sha256(staging / name)
            files[name]["bytes"] = (staging / name).stat().st_size
        _write_manifest(
            staging,
            {
                "format": FORMAT,
                "format_version": FORMAT_VERSION,
                "backend": "sqlite",
                "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                "created_ns": time.time_ns(),
                "consistency": "snapshot per database",
                "files": files,
            },
        )
    counts = {f"{name}:{table}": n for name, entry in files.items() for table, n in entry["tables"].items()}
    return Result("sqlite", target, counts, [])


def _has_rows(path: Path) -> bool:
    if not path.is_file():
        return False
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        return any(_sqlite_counts(conn).values())
    except sqlite3.DatabaseError:
        return True  # unreadable: treat as data, never overwrite it silently
    finally:
        conn.close()


def restore_sqlite(data_dir: Path, source: Path, *, force: bool = False) -> Result:
    """Replace the databases under ``data_dir`` with the ones backed up in ``source``."""
    manifest = read_manifest(source)
    if manifest["backend"] != "sqlite":
        raise BackupError(f"{source} is a {manifest['backend']} backup, not a SQLite one")
    files: dict[str, Any] = manifest["files"]
    unknown = set(files) - set(SQLITE_FILES)
    if unknown:
        raise BackupError(f"{source} lists unknown databases: {', '.join(sorted(unknown))}")
    for name, entry in files.items():
        path = _verify_checksum(source, name, entry)
        conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
        try:
            if conn.execute("PRAGMA integrity_check").fetchone()[0] != "ok":
                raise BackupError(f"{path} fails SQLite's integrity check")
            if _sqlite_counts(conn) != entry.get("tables"):
                raise BackupError(f"{path} row counts differ from the manifest")
        except sqlite3.DatabaseError:
            raise BackupError(f"{path} is not a SQLite database") from None
        finally:
            conn.close()
    occupied = [name for name in SQLITE_FILES if _has_rows(data_dir / name)]
    if occupied and not force:
        raise BackupError(f"{data_dir} already holds data ({', '.join(occupied)}); use --force to replace it")
    data_dir.mkdir(parents=True, exist_ok=True)
    staged: list[tuple[Path, Path]] = []
    try:
        for name, entry in files.items():
            temp = data_dir / f".{name}.restore-{uuid.uuid4().hex[:8]}"
            shutil.copyfile(source / entry["file"], temp)
            with temp.open("rb+") as fh:
                os.fsync(fh.fileno())
            if _sha256(temp) != entry["sha256"]:
                raise BackupError(f"copying {name} into {data_dir} changed it (disk problem?)")
            staged.append((temp, data_dir / name))
        # Everything is verified and in place beside the targets: only renames are left.
        for temp, final in staged:
            for suffix in ("-wal", "-shm", "-journal"):
                # a WAL left by the old database would be replayed into the restored one
                Path(f"{final}{suffix}").unlink(missing_ok=True)
            os.replace(temp, final)
        for name in set(SQLITE_FILES) - set(files):
            if force:
                for suffix in ("", "-wal", "-shm", "-journal"):
                    Path(f"{data_dir / name}{suffix}").unlink(missing_ok=True)
        _fsync_dir(data_dir)
    finally:
        for temp, _ in staged:
            temp.unlink(missing_ok=True)
    counts = {f"{name}:{table}": n for name, entry in files.items() for table, n in entry["tables"].items()}
    return Result("sqlite", source, counts, [])


# ------------------------------------------------------------------------------------------- MongoDB


async def _supports_snapshot(client: Any) -> bool:
    hello = await client.admin.command("hello")
    return bool(hello.get("setName")) or hello.get("msg") == "isdbgrid"


async def _collections(db: MongoDb) -> list[str]:
    names = await db.list_collection_names()
    return sorted(n for n in names if not n.startswith("system.") and not n.startswith(RESTORE_PREFIX))


async def backup_mongo(client: Any, database: str, target: Path) -> Result:
    """Export every collection of ``database`` into ``target`` (canonical Extended JSON lines)."""
    db: MongoDb = client[database]
    snapshot = await _supports_snapshot(client)
    notes = (
        []
        if snapshot
        else ["standalone server: no snapshot reads, export is best-effort; stop the services for a clean copy"]
    )
    session = client.start_session(snapshot=True) if snapshot else None
    collections: dict[str, Any] = {}
    try:
        with _staging(target) as staging:
            for name in await _collections(db):
                coll = db[name]
                file = f"{name}.jsonl"
                count = 0
                with (staging / file).open("w", encoding="utf-8", newline="\n") as fh:
                    async for doc in coll.find({}, session=session).sort("_id", 1):
                        fh.write(json_util.dumps(doc, json_options=CANONICAL_JSON_OPTIONS) + "\n")
                        count += 1
                    fh.flush()
                    os.fsync(fh.fileno())
                info = await coll.index_information()
                indexes = [
                    {"name": n, "key": [[k, v] for k, v in spec["key"]], "unique": bool(spec.get("unique"))}
                    for n, spec in sorted(info.items())
                    if n != "_id_"
                ]
                collections[name] = {
                    "file": file,
                    "documents": count,
                    "sha256": _sha256(staging / file),
                    "indexes": indexes,
                }
            schema = {}
            if SCHEMA_COLLECTION in collections:
                async for doc in db[SCHEMA_COLLECTION].find({}, session=session):
                    schema[str(doc["_id"])] = int(doc.get("version", 0))
            _write_manifest(
                staging,
                {
                    "format": FORMAT,
                    "format_version": FORMAT_VERSION,
                    "backend": "mongodb",
                    "database": database,
                    "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                    "created_ns": time.time_ns(),
                    "consistency": "snapshot" if snapshot else "best-effort",
                    "schema_versions": schema,
                    "collections": collections,
                },
            )
    finally:
        if session is not None:
            await session.end_session()
    return Result("mongodb", target, {n: c["documents"] for n, c in collections.items()}, notes)


def _load_collection(source: Path, name: str, entry: dict[str, Any]) -> list[Document]:
    path = _verify_checksum(source, name, entry)
    docs: list[Document] = []
    with path.open(encoding="utf-8") as fh:
        for number, line in enumerate(fh, 1):
            try:
                doc = json_util.loads(line, json_options=CANONICAL_JSON_OPTIONS)
            except ValueError:
                raise BackupError(f"{path} line {number} is not Extended JSON") from None
            if not isinstance(doc, dict):
                raise BackupError(f"{path} line {number} is not a document")
            docs.append(doc)
    if len(docs) != entry.get("documents"):
        raise BackupError(f"{path} holds {len(docs)} documents; the manifest says {entry.get('documents')}")
    return docs


async def restore_mongo(client: Any, database: str, source: Path, *, force: bool = False) -> Result:
    """Replace the collections of ``database`` with the ones exported in ``source``."""
    manifest = read_manifest(source)
    if manifest["backend"] != "mongodb":
        raise BackupError(f"{source} is a {manifest['backend']} backup, not a MongoDB one")
    entries: dict[str, Any] = manifest["collections"]
    # Parse everything before touching the database: a damaged backup changes nothing.
    loaded = {name: _load_collection(source, name, entry) for name, entry in entries.items()}
    db: MongoDb = client[database]
    existing = await _collections(db)
    occupied = [n for n in existing if await db[n].count_documents({}, limit=1)]
    if occupied and not force:
        raise BackupError(
            f"MongoDB database {database} already holds data ({', '.join(occupied)}); use --force to replace it"
        )
    temps: list[str] = []
    try:
        for name, docs in loaded.items():
            temp = f"{RESTORE_PREFIX}{name}"
            await db.drop_collection(temp)
            temps.append(temp)
            await db.create_collection(temp)
            coll = db[temp]
            for start in range(0, len(docs), _INSERT_BATCH):
                await coll.insert_many(docs[start : start + _INSERT_BATCH], ordered=True)
            for index in entries[name].get("indexes", []):
                keys = [(str(k), v) for k, v in index["key"]]
                await coll.create_index(keys, name=index["name"], unique=bool(index.get("unique")))
            if await coll.count_documents({}) != len(docs):
                raise BackupError(f"restoring {name} stored a different number of documents")
        # Every collection is loaded and indexed beside its target: only renames are left.
        for name in loaded:
            await db[f"{RESTORE_PREFIX}{name}"].rename(name, dropTarget=True)
            temps.remove(f"{RESTORE_PREFIX}{name}")
        if force:
            for name in set(existing) - set(loaded):
                await db.drop_collection(name)
    finally:
        for temp in temps:
            await db.drop_collection(temp)
    return Result("mongodb", source, {n: len(d) for n, d in loaded.items()}, [])
