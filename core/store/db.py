"""The SQLite file: connection settings and the schema, as append-only named migrations.

Invariants:
- One file, `<data dir>/dashboard.db`, in WAL mode with a busy timeout, so several runner
  processes and the dashboard can read and write at once without "database is locked".
- A data directory that cannot be written still serves reads (`is_read_only`); a file that is
  not a dashboard database is refused with what to do, and never written to.
- Migrations are named functions registered with `@_migration`, applied in order (sqlite-utils'
  `MIGRATIONS`), each in one transaction with its record in `_sqlite_migrations`. Never edit or
  reorder an applied one: append a new `mNNN_...` function instead.
- A brand-new file gets the latest schema in one transaction from `core/store/_schema.py` (the
  statements the migrations leave in `sqlite_master`, and their names recorded as applied)
  instead of replaying every migration; tests/store/test_db.py proves both give the same
  schema, and a migration the snapshot does not list is replayed as usual.
- sqlite-utils is loaded only when a migration has to run or a caller asks for more than the
  store uses (`Database`): opening an up-to-date or brand-new file does not import it.
- Times are ISO 8601 UTC text (`now()`), which sorts and compares as text.
- The closed sets stored in text columns (request statuses, reference roles) are defined once,
  in core/store/values.py.
"""
from __future__ import annotations

import contextlib
import datetime as _dt
import fcntl
import sqlite3
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO
from urllib.parse import quote

from core.errors import StoreError
from core.store.boundary import is_corruption
from core.store.migrations import MIGRATION_SET, REGISTERED

if TYPE_CHECKING:
    import sqlite_utils

def _import_sqlite_utils() -> Any:
    from core._imports import hidden

    # nothing here hands sqlite-utils a pandas or numpy value (core/_imports.py)
    with hidden("pandas", "numpy"):
        import sqlite_utils
        import sqlite_utils.migrations
    return sqlite_utils


def __getattr__(name: str) -> Any:
    # `MIGRATIONS`, sqlite-utils' Migrations of the registered functions, is built on first use
    if name == "MIGRATIONS":
        sqlite_utils = _import_sqlite_utils()
        migrations = sqlite_utils.migrations.Migrations(MIGRATION_SET)
        for fn in REGISTERED:
            migrations()(fn)
        globals()["MIGRATIONS"] = migrations
        return migrations
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


class Database:
    """One SQLite connection as the store uses it: `execute`, `conn`, `atomic`, `close`, which
    behave as sqlite-utils' `Database` does on an autocommit connection. Anything else
    (`db["table"]`, `table_names()`, `query()`: migrations, tests, tools) goes to a
    `sqlite_utils.Database` on the same connection, made on first use, so a runner that only
    reads and writes rows never loads sqlite-utils (0.07-0.15 s of start-up)."""

    engine = "sqlite"

    def __init__(self, conn: sqlite3.Connection) -> None:
        self.conn = conn
        self._utils: sqlite_utils.Database | None = None
        conn.execute("PRAGMA recursive_triggers = on")   # as sqlite-utils sets it

    @property
    def lock_key(self) -> str:
        """What the process-wide write lock is keyed on: the file (core/store/_sql.py)."""
        return self._file() or f"memory:{id(self)}"

    @property
    def path(self) -> Path:
        """The database file (`connect`'s path, resolved)."""
        name = self._file()
        if not name:
            raise StoreError("this store is in memory: it has no file another connection could open")
        return Path(name)

    @property
    def location(self) -> Path:
        """The data directory holding the file (for messages)."""
        return Path(self._file() or ".").parent

    def _file(self) -> str:
        """The main database's file name as SQLite resolved it ("" in memory)."""
        return self.conn.execute("PRAGMA database_list").fetchone()[2]

    @property
    def read_only(self) -> bool:
        """True for a connection `connect` opened read-only (its data directory cannot be written)."""
        return is_read_only(self)

    def execute(self, sql: str, parameters: Any = None) -> sqlite3.Cursor:
        return self.conn.execute(sql) if parameters is None else self.conn.execute(sql, parameters)

    @contextlib.contextmanager
    def atomic(self) -> Iterator[Database]:
        """A transaction; nested blocks use savepoints (sqlite-utils' `atomic`)."""
        if self.conn.in_transaction:
            savepoint = f"sp_{uuid.uuid4().hex}"
            self.conn.execute(f"SAVEPOINT {savepoint}")
            try:
                yield self
            except BaseException:
                if self.conn.in_transaction:
                    self.conn.execute(f"ROLLBACK TO SAVEPOINT {savepoint}")
                    self.conn.execute(f"RELEASE SAVEPOINT {savepoint}")
                raise
            self.conn.execute(f"RELEASE SAVEPOINT {savepoint}")
            return
        self.conn.execute("BEGIN")
        try:
            yield self
        except BaseException:
            if self.conn.in_transaction:
                self.conn.execute("ROLLBACK")
            raise
        self.conn.execute("COMMIT")

    def warm(self, sessions: int) -> None:
        """Nothing to prepare: a connection to the file opens in microseconds (on Postgres,
        sessions for workers about to start are opened in the background)."""

    def close(self) -> None:
        self.conn.close()

    @property
    def utils(self) -> sqlite_utils.Database:
        if self._utils is None:
            self._utils = _import_sqlite_utils().Database(self.conn)
        return self._utils

    def __getitem__(self, table: str) -> Any:
        return self.utils[table]

    def __getattr__(self, name: str) -> Any:
        if name.startswith("_"):
            raise AttributeError(name)
        return getattr(self.utils, name)


BUSY_TIMEOUT_S = 30.0   # how long a write waits for another connection's lock


def connect(path: Path | str, *, migrate: bool = True) -> Database:
    """A connection to the store at `path` (created if missing), migrated to the latest schema.

    Each thread or process opens its own connection. A data directory that cannot be written
    (a read-only mount, no permission) gives a read-only connection (`is_read_only`): reads work,
    writes fail with SQLite's "readonly database". A file that is not a dashboard database
    (corrupted, another program's, a directory or a device) raises StoreError, and nothing is
    written to it.
    """
    path = Path(path)
    _refuse_non_file(path)
    _refuse_emptied(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        lock = open(path.with_name(path.name + ".lock"), "a+b")   # noqa: SIM115 - closed below
    except OSError as e:
        if not path.is_file():
            raise StoreError(f"cannot create the database {path} ({e.strerror}): set "
                             "DASHBOARD_DATA_DIR to a directory this user may write.") from None
        return _connect_read_only(path)
    conn = sqlite3.connect(str(path), timeout=BUSY_TIMEOUT_S, check_same_thread=False,
                           isolation_level=None)
    try:
        with lock:
            conn.execute(f"PRAGMA busy_timeout = {int(BUSY_TIMEOUT_S * 1000)}")
            _refuse_foreign(conn, path)
            # Switching a fresh file to WAL and migrating it take locks that busy_timeout does
            # not wait for ("database is locked" when two processes open a new data dir at once):
            # serialise them across processes with an advisory file lock; pending migrations are
            # re-read under it.
            with _file_lock(lock):
                conn.execute("PRAGMA journal_mode = WAL")
                db = Database(conn)
                if migrate:
                    migrate_db(db)
        conn.execute("PRAGMA synchronous = NORMAL")
        conn.execute("PRAGMA foreign_keys = ON")
    except sqlite3.DatabaseError as e:
        conn.close()
        if isinstance(e, sqlite3.OperationalError) and not is_corruption(e):
            raise
        raise StoreError(_not_a_database(path, e)) from None
    except BaseException:
        conn.close()
        raise
    return db


def is_read_only(db: Database) -> bool:
    """True for a connection `connect` opened read-only (its data directory cannot be written)."""
    return bool(db.execute("PRAGMA query_only").fetchone()[0])


def _refuse_non_file(path: Path) -> None:
    if path.exists() and not path.is_file():
        raise StoreError(f"{path} is not a database file (a directory or a device): set "
                         "DASHBOARD_DATA_DIR to the dashboard's data directory.")


# what a data directory holds once it has been used: an emptied database beside any of these
# lost a history, and starting a new one over it would hide that
_USED_MARKS = ("images", "recovery")


def _refuse_emptied(path: Path) -> None:
    """A 0-byte or truncated database file beside a used data directory is refused (never taken
    for a new store): its history is gone from the file, and only a person can restore it."""
    try:
        size = path.stat().st_size
    except OSError:
        return
    if size >= 512:      # the smallest SQLite file is one 512-byte page: the usual checks follow
        return
    used = [name for name in _USED_MARKS if _has_files(path.parent / name)]
    if used:
        raise StoreError(f"{path} is {'empty' if not size else f'only {size} bytes'} although the data "
                         f"directory holds {', '.join(used) or 'other files'}: the history was lost from "
                         "the file. Restore it from a backup, or move the data directory aside "
                         f"(`mv {path.parent} {path.parent}.damaged`) to start afresh; nothing was written.")


def _has_files(folder: Path) -> bool:
    try:
        return any(p.is_file() for p in folder.rglob("*"))
    except OSError:
        return False


def _not_a_database(path: Path, e: BaseException) -> str:
    return (f"{path} is not a usable dashboard database ({e}); it was left unchanged. Move it aside "
            f"(`mv {path} {path}.broken`) to start with an empty history, or restore it from a backup.")


def _refuse_foreign(conn: sqlite3.Connection, path: Path) -> None:
    """Refuse a readable SQLite file that holds another program's tables (never migrate into it);
    reading its schema is also where a damaged or non-SQLite file is first noticed."""
    names = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    if names and not names & {"_sqlite_migrations", "requests"}:
        raise StoreError(f"{path} is an SQLite file of another program (tables: "
                         f"{', '.join(sorted(names)[:5])}); it was left unchanged. Set "
                         "DASHBOARD_DATA_DIR to the dashboard's data directory.")


def _connect_read_only(path: Path) -> Database:
    """The database of a data directory this process cannot write, for reading.

    `mode=ro` needs the WAL index (-shm) to exist or be creatable; when it is neither, nobody can
    be writing the file (a WAL writer needs that directory too), so it is opened immutable."""
    quoted = quote(str(path.resolve()))
    last: sqlite3.Error | None = None
    for flags in ("mode=ro", "immutable=1"):
        conn = sqlite3.connect(f"file:{quoted}?{flags}", uri=True, timeout=BUSY_TIMEOUT_S,
                               check_same_thread=False, isolation_level=None)
        try:
            conn.execute("PRAGMA query_only = ON")
            _refuse_foreign(conn, path)
            db = Database(conn)
            pending = _pending(db)
        except sqlite3.DatabaseError as e:
            conn.close()
            if is_corruption(e):
                raise StoreError(_not_a_database(path, e)) from None
            last = e
            continue
        except BaseException:
            conn.close()
            raise
        if pending:
            conn.close()
            raise StoreError(f"the database {path} needs an upgrade but its directory is read-only: "
                             "make the data directory writable and run any command once.")
        return db
    raise StoreError(f"cannot read the database {path} in a read-only directory ({last}).")


@contextlib.contextmanager
def _file_lock(f: BinaryIO) -> Iterator[None]:
    fcntl.flock(f.fileno(), fcntl.LOCK_EX)
    try:
        yield
    finally:
        fcntl.flock(f.fileno(), fcntl.LOCK_UN)


def _applied_names(db: Database) -> list[str] | None:
    """Names of the applied migrations, None when the file has no migrations table."""
    if not db.execute("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = '_sqlite_migrations'"
                      ).fetchone():
        return None
    return [r[0] for r in db.execute("SELECT name FROM _sqlite_migrations WHERE migration_set = ? "
                                     "ORDER BY rowid", [MIGRATION_SET])]


def _pending(db: Database) -> bool:
    migrations = globals().get("MIGRATIONS")
    if migrations is not None:   # built, or replaced by a test: it is the list that counts
        return bool(migrations.pending(db))
    done = set(_applied_names(db) or ())
    return any(fn.__name__ not in done for fn in REGISTERED)


def migrate_db(db: Database) -> None:
    """Bring the file to the latest schema: a brand-new one in one step from the snapshot
    (`_create_latest`), an older one by applying its pending migrations (each in its own
    transaction with its record)."""
    if "MIGRATIONS" not in globals() and _create_latest(db):
        return
    if _pending(db):
        migrations = sys.modules[__name__].MIGRATIONS
        migrations.apply(db)


def _create_latest(db: Database) -> bool:
    """On a file without any table, create the schema the migrations would leave and record
    them as applied, in one transaction; False (nothing done) when the file is not blank or the
    snapshot does not cover every registered migration."""
    from core.store import _schema

    if [fn.__name__ for fn in REGISTERED] != list(_schema.MIGRATIONS):
        return False
    with db.atomic():
        if db.execute("SELECT 1 FROM sqlite_master").fetchone():
            return False
        for statement in _schema.STATEMENTS:
            db.execute(statement)
        applied = str(_dt.datetime.now(_dt.timezone.utc))   # as sqlite-utils records it
        db.conn.executemany("INSERT INTO _sqlite_migrations (migration_set, name, applied_at) VALUES (?, ?, ?)",
                            [(MIGRATION_SET, name, applied) for name in _schema.MIGRATIONS])
    return True
