"""The embedded shard's durable storage: one SQLite database in WAL mode.

One row per object (its JSON as the client will see it, and beside it what loading it needs
besides the JSON: `rv_at`, `attrs`) and one revision counter, written in the same transaction,
so after any crash the database holds exactly the acknowledged writes and the revision sequence
continues where it stopped. In WAL mode a committed transaction is in the operating system's
hands before `commit()` returns, so it survives `kill -9` of the process; `durable=True`
(synchronous=FULL) also makes it survive power loss, at an fsync a write.
"""

from __future__ import annotations

import fcntl
import os
import sqlite3
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

DB_FILE = "shard.db"
# Held (flock) while a process has the data dir open; holds that process's pid for the message.
LOCK_FILE = "lock"
# How long a write waits for a lock held by another connection (a backup, an inspecting sqlite3
# shell) before failing, instead of failing at once.
BUSY_TIMEOUT_MS = 5000
# 2: `rv_at` and `attrs` beside each body (NULL in rows written at 1: the load decodes those).
SCHEMA_VERSION = 2
# What brings a database from a version to the next, in one transaction with the new version.
_MIGRATIONS: dict[int, tuple[str, ...]] = {
    1: ("ALTER TABLE objects ADD COLUMN rv_at INTEGER", "ALTER TABLE objects ADD COLUMN attrs BLOB"),
}


@dataclass(frozen=True)
class Row:
    """One stored object: where it lives, its revision and its encoded JSON; `rv_at` and `attrs`
    are what loading it needs besides the JSON (`core.objects.stored_attributes`; None: decode it)."""

    cluster: str
    storage_key: str
    namespace: str
    name: str
    rv: int
    body: bytes
    rv_at: int | None = None
    attrs: bytes | None = None


@dataclass(frozen=True)
class Put:
    row: Row


@dataclass(frozen=True)
class Remove:
    cluster: str
    storage_key: str
    namespace: str
    name: str


Change = Put | Remove


class StorageError(Exception):
    """The database could not be opened or written."""


class SqliteStore:
    """Rows of objects plus the shard revision; every `commit` is one transaction."""

    def __init__(self, data_dir: Path, durable: bool = False) -> None:
        self.path = data_dir / DB_FILE
        self._lock = _lock_data_dir(data_dir)
        try:
            self._db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute(f"PRAGMA synchronous={'FULL' if durable else 'NORMAL'}")
            self._db.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")
            self._migrate()
        except sqlite3.Error as exc:
            os.close(self._lock)
            raise StorageError(f"cannot open the shard database {self.path}: {exc}") from exc

    def _migrate(self) -> None:
        db = self._db
        db.execute(
            "CREATE TABLE IF NOT EXISTS objects ("
            " cluster TEXT NOT NULL, storage_key TEXT NOT NULL, namespace TEXT NOT NULL, name TEXT NOT NULL,"
            " rv INTEGER NOT NULL, body BLOB NOT NULL, rv_at INTEGER, attrs BLOB,"
            " PRIMARY KEY (cluster, storage_key, namespace, name)) WITHOUT ROWID"
        )
        db.execute("CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value INTEGER NOT NULL)")
        db.execute("INSERT OR IGNORE INTO meta (key, value) VALUES ('revision', 0)")
        db.execute("INSERT OR IGNORE INTO meta (key, value) VALUES ('schema', ?)", (SCHEMA_VERSION,))
        (schema,) = db.execute("SELECT value FROM meta WHERE key = 'schema'").fetchone()
        if schema == SCHEMA_VERSION:
            return
        if schema > SCHEMA_VERSION:
            # A newer vwproxy's database may hold what this one would lose by writing to it.
            raise StorageError(f"{self.path} has schema version {schema}, of a newer vwproxy; this one reads up to {SCHEMA_VERSION}")
        if schema not in _MIGRATIONS:
            raise StorageError(f"{self.path} has schema version {schema}; this vwproxy reads {min(_MIGRATIONS)} to {SCHEMA_VERSION}")
        db.execute("BEGIN IMMEDIATE")
        try:
            for version in range(schema, SCHEMA_VERSION):
                for statement in _MIGRATIONS[version]:
                    db.execute(statement)
            db.execute("UPDATE meta SET value = ? WHERE key = 'schema'", (SCHEMA_VERSION,))
            db.execute("COMMIT")
        except BaseException:
            if db.in_transaction:
                db.execute("ROLLBACK")
            raise

    def revision(self) -> int:
        (value,) = self._db.execute("SELECT value FROM meta WHERE key = 'revision'").fetchone()
        return int(value)

    def marker(self, key: str) -> int:
        """A number kept beside the objects (0 when never set), e.g. whether the seed was applied."""
        found = self._db.execute("SELECT value FROM meta WHERE key = ?", (f"marker:{key}",)).fetchone()
        return int(found[0]) if found else 0

    def set_marker(self, key: str, value: int) -> None:
        try:
            self._db.execute("INSERT OR REPLACE INTO meta (key, value) VALUES (?, ?)", (f"marker:{key}", value))
        except sqlite3.Error as exc:
            raise StorageError(f"write to {self.path} failed: {exc}") from exc

    def rows(self) -> Iterator[Row]:
        cursor = self._db.execute(
            "SELECT cluster, storage_key, namespace, name, rv, body FROM objects ORDER BY cluster, storage_key, namespace, name"
        )
        for cluster, key, namespace, name, rv, body in cursor:
            yield Row(cluster, key, namespace, name, rv, bytes(body))

    def row_tuples(self) -> Iterator[tuple[str, str, str, str, int, bytes, int | None, bytes | None]]:
        """`rows` as plain tuples (cluster, storage key, namespace, name, rv, body, rv_at, attrs),
        for loading a whole shard: at 150,000 rows, building a `Row` each is a measurable share of a start."""
        return iter(self._db.execute(
            "SELECT cluster, storage_key, namespace, name, rv, body, rv_at, attrs FROM objects ORDER BY cluster, storage_key, namespace, name"
        ))

    def fill_attributes(self, filled: Iterable[tuple[int, bytes | None, str, str, str, str]]) -> None:
        """Set (rv_at, attrs) of rows (cluster, storage key, namespace, name) in one transaction:
        a load keeps what it derived from rows stored without them, so the next start need not."""
        db = self._db
        try:
            db.execute("BEGIN IMMEDIATE")
            try:
                db.executemany(
                    "UPDATE objects SET rv_at = ?, attrs = ? WHERE cluster = ? AND storage_key = ? AND namespace = ? AND name = ?", filled,
                )
                db.execute("COMMIT")
            except BaseException:
                if db.in_transaction:
                    db.execute("ROLLBACK")
                raise
        except sqlite3.Error as exc:
            raise StorageError(f"write to {self.path} failed: {exc}") from exc

    def commit(self, revision: int, changes: Sequence[Change]) -> None:
        """Apply `changes` and set the revision atomically; raises StorageError, leaving nothing applied."""
        db = self._db
        try:
            db.execute("BEGIN IMMEDIATE")
            try:
                for change in changes:
                    if isinstance(change, Put):
                        r = change.row
                        db.execute(
                            "INSERT OR REPLACE INTO objects (cluster, storage_key, namespace, name, rv, body, rv_at, attrs) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                            (r.cluster, r.storage_key, r.namespace, r.name, r.rv, r.body, r.rv_at, r.attrs),
                        )
                    else:
                        db.execute(
                            "DELETE FROM objects WHERE cluster = ? AND storage_key = ? AND namespace = ? AND name = ?",
                            (change.cluster, change.storage_key, change.namespace, change.name),
                        )
                db.execute("UPDATE meta SET value = ? WHERE key = 'revision'", (revision,))
                db.execute("COMMIT")
            except BaseException:
                if db.in_transaction:  # SQLite rolls back by itself on some errors (SQLITE_FULL)
                    db.execute("ROLLBACK")
                raise
        except sqlite3.Error as exc:
            raise StorageError(f"write to {self.path} failed: {exc}") from exc

    def close(self) -> None:
        self._db.close()
        os.close(self._lock)  # releases the data dir's lock


def _lock_data_dir(data_dir: Path) -> int:
    """Create `data_dir` if needed and lock it for this process: two shards writing one SQLite
    database would interleave their revision sequences. One-line errors, no traceback."""
    try:
        data_dir.mkdir(parents=True, exist_ok=True)
    except FileExistsError:
        raise StorageError(f"data dir {data_dir}: a file is in the way (not a directory)") from None
    except OSError as exc:
        raise StorageError(f"data dir {data_dir}: cannot create it: {exc.strerror}") from None
    if not data_dir.is_dir():
        raise StorageError(f"data dir {data_dir}: a file is in the way (not a directory)")
    lock_path = data_dir / LOCK_FILE
    try:
        fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o644)
    except OSError as exc:
        raise StorageError(f"data dir {data_dir}: cannot use it: {exc.strerror}") from None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "unknown"
        os.close(fd)
        raise StorageError(f"data dir {data_dir} is in use by another vwproxy process (pid {holder})") from None
    os.ftruncate(fd, 0)
    os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
    return fd


def stored_marker(data_dir: Path, key: str) -> int:
    """A marker of the shard database in `data_dir`, read without opening it for writing (0 when
    there is no database yet, or no such marker): e.g. whether the config was applied before, to
    know at start whether it must be read at all."""
    path = data_dir / DB_FILE
    if not path.exists():
        return 0
    try:
        db = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
        try:
            found = db.execute("SELECT value FROM meta WHERE key = ?", (f"marker:{key}",)).fetchone()
        finally:
            db.close()
    except sqlite3.Error:
        return 0  # opening it for real says what is wrong
    return int(found[0]) if found else 0
