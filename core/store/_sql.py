"""What every table module of the store shares: the connection, the write lock, row helpers.

Invariants:
- Every write of a `Store` goes through `_write`, `_insert`, `_insert_all` or
  `_write_transaction`, which take the store's write lock first. The lock is one per database
  FILE in this process (several `Store`s on one file, e.g. one per runner thread, share it), so
  threads queue on it instead of on SQLite's busy handler, which sleeps in steps of up to
  100 ms; other processes still meet the busy timeout.
- Rows are turned into frozen values here (`build`, `fast_build`); no row dict or cursor
  leaves the store package.
- SQLite specifics (BEGIN IMMEDIATE, PRAGMA, row values, `excluded.`) stay inside core/store.
"""
from __future__ import annotations

import contextlib
import dataclasses
import datetime as _dt
import threading
from collections.abc import Iterator, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from core.catalog.payloads import canonical_json
from core.redact import abbreviate
from core.errors import StoreError
from core.values import Batch, RequestStatus

if TYPE_CHECKING:
    import sqlite3

    import sqlite_utils

_LOCKS_GUARD = threading.Lock()
_LOCKS: dict[str, threading.RLock] = {}

_BOOLEAN = frozenset({"dry_run", "cancel_requested"})
_DEFAULT_ZERO = frozenset({"attempts", "request_count"})
_FIELDS: dict[type, tuple[tuple[str, bool], ...]] = {}


def _file_write_lock(db: Any) -> threading.RLock:
    """The lock a store takes to write: on a SQLite file, the process-wide lock of that file (one
    writer at a time, so no connection of this process meets SQLITE_BUSY on another); on
    Postgres (`lock_key` None), the store's own, since the server orders its sessions' writes
    (row locks, and the advisory lock of every write transaction) and a process-wide lock only
    made each write of a run's 32 sessions wait for the others' round trips."""
    if db.lock_key is None:
        return threading.RLock()
    with _LOCKS_GUARD:
        return _LOCKS.setdefault(db.lock_key, threading.RLock())


def build(cls: type, row: Mapping[str, Any]):
    """A frozen value of `cls` from a row: columns the value does not name are ignored, a field
    with a default is left to it when the row lacks the column; 0/1 become bools, a request
    status becomes a RequestStatus."""
    fields = _FIELDS.get(cls)
    if fields is None:
        fields = _FIELDS[cls] = tuple((f.name, f.default is not dataclasses.MISSING)
                                      for f in dataclasses.fields(cls))
    values = {}
    for name, has_default in fields:
        if name not in row:
            if has_default:
                continue
            v = None
        else:
            v = row[name]
        if name in _BOOLEAN or (name == "nsfw" and v is not None):
            v = bool(v)
        elif name == "status" and v is not None and cls is not Batch:
            v = RequestStatus(v)
        elif v is None and name in _DEFAULT_ZERO:
            v = 0
        values[name] = v
    return cls(**values)


def fast_build(cls: type, values: dict[str, Any]):
    """A frozen dataclass instance from a dict holding EVERY field, without running its
    `__init__`, which sets each field through object.__setattr__ and is 3-4x slower: the history
    export builds hundreds of thousands of rows and images. Only for values built here, from rows."""
    obj = object.__new__(cls)
    obj.__dict__.update(values)
    return obj


def seconds_between(start: str | None, end: str | None) -> float | None:
    if not start or not end:
        return None
    delta = _dt.datetime.fromisoformat(end) - _dt.datetime.fromisoformat(start)
    return round(delta.total_seconds(), 6)


def check_payload(payload: Mapping[str, Any]) -> str:
    """The canonical JSON text of a payload to store; StoreError if it carries a data: URI."""
    text = canonical_json(payload)
    if '"data:' in text:
        raise StoreError("A payload to be stored carries a data: URI; store local reference photos "
                         "as reference://<id> and build the data: URI only at send time.")
    return text


def json_or_none(value: Any) -> str | None:
    if value is None:
        return None
    return canonical_json(abbreviate(value))


# the most of one fal answer kept on a request row; a larger one is kept as a summary
RESPONSE_LIMIT = 256 * 1024


def response_json(value: Any) -> str | None:
    """A fal answer as stored on its request: the JSON itself (`data:` URIs abbreviated) when it
    is at most `RESPONSE_LIMIT` characters, else a summary (`truncated`, its size, its SHA-256
    and its first 4,000 characters), so no answer can grow the database without bound."""
    text = json_or_none(value)
    if text is None or len(text) <= RESPONSE_LIMIT:
        return text
    import hashlib

    return canonical_json({"truncated": True, "chars": len(text),
                           "sha256": hashlib.sha256(text.encode("utf-8", "replace")).hexdigest(),
                           "head": text[:4000]})


def placeholders(n: int) -> str:
    return ",".join("?" * n)


class _Base:
    """The connection and the write lock; the table mixins add the statements."""

    db: sqlite_utils.Database
    _lock: threading.RLock

    def __init__(self, db: sqlite_utils.Database) -> None:
        self.db = db
        self._lock = _file_write_lock(db)

    def _rows(self, sql: str, params: Sequence[Any] = ()) -> Iterator[dict[str, Any]]:
        cursor = self.db.execute(sql, list(params))
        keys = [d[0] for d in cursor.description]
        for row in cursor:
            yield dict(zip(keys, row))

    def _one(self, sql: str, params: Sequence[Any] = ()) -> tuple:
        return self.db.execute(sql, list(params)).fetchone()

    def _write(self, sql: str, params: Sequence[Any] = ()) -> sqlite3.Cursor:
        with self._lock:
            return self.db.execute(sql, list(params))

    @contextlib.contextmanager
    def _write_transaction(self) -> Iterator[None]:
        """BEGIN IMMEDIATE under the write lock: a read-then-write never fails with SQLITE_BUSY
        on lock upgrade (the busy timeout does not cover that case). Nested calls join the
        outer transaction through a savepoint."""
        with self._lock:
            if self.db.conn.in_transaction:
                with self.db.atomic():
                    yield
                return
            self.db.execute("BEGIN IMMEDIATE")
            try:
                yield
            except BaseException:
                if self.db.conn.in_transaction:
                    self.db.execute("ROLLBACK")
                raise
            self.db.execute("COMMIT")

    def _insert(self, table: str, row: Mapping[str, Any]) -> None:
        """INSERT one row (call inside `_write_transaction` or `_write`'s lock)."""
        cols = list(row)
        self._write(f"INSERT INTO {table} ({', '.join(cols)}) VALUES ({placeholders(len(cols))})",
                    list(row.values()))

    def _insert_all(self, table: str, rows: Sequence[Mapping[str, Any]]) -> None:
        if not rows:
            return
        cols = list(rows[0])
        with self._lock:
            self.db.conn.executemany(
                f"INSERT INTO {table} ({', '.join(cols)}) VALUES ({placeholders(len(cols))})",
                [[r[c] for c in cols] for r in rows])
