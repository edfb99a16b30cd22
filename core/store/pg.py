"""The store on Postgres (DATABASE_URL=postgresql://...): the connection the Store wraps there.

The store's statements are written once, in SQLite's dialect (core/store/*.py); this module
makes a psycopg 3 connection answer them as the SQLite one does, so no caller and no table
module knows which engine it has. What it takes, and why each holds:

- Statements (translated by core/store/pg_sql.py): `?` placeholders become `%s` (and a literal
  `%` becomes `%%`) outside quoted text; `LIKE` becomes `ILIKE` (SQLite's LIKE ignores ASCII
  case); `LIMIT -1` is `LIMIT ALL`; `INSERT OR IGNORE` is `INSERT ... ON CONFLICT DO NOTHING`;
  SQLite's row triggers become plpgsql functions. `BEGIN IMMEDIATE` (a write
  transaction that takes the write lock first) is BEGIN plus a transaction-scoped advisory lock,
  so writers queue across every host as they do on one SQLite file and a read-then-write (a
  runner claiming a batch, a request marked sent) can never interleave with another's.
- Names SQLite has built in are defined in the database by `_COMPAT` (the first migration):
  the `nocase` collation (ICU, case-insensitive), `total()`, `instr()`.
- Every table gets a `rowid` column (an identity, last): the store orders ties by insertion
  order, as SQLite's rowid does, and `store copy` fills it in SQLite's order.
- Values and results (core/store/pg_values.py): a bool is sent as 0/1 (the columns are
  integers, as in SQLite); a `numeric` result (sum of integers) comes back as int or float,
  never Decimal; a cursor's `description` is built once per column list and process.
- Durability as the SQLite file's (WAL, synchronous=NORMAL): `synchronous_commit = off` for
  the store's sessions, so a write waits for no disk flush; a killed client loses nothing, a
  crashed server at most its last fraction of a second, and fal's ids are in the runner's
  fsynced journal first.
- Planning: a server left at the default `random_page_cost` (4, spinning disks) gets 1.1 for the
  store's sessions (solid-state storage, as Postgres's docs suggest), so a batch's images are
  read by index rather than by scanning them all.
- Errors: psycopg's are raised as the sqlite3 exception of the same kind (IntegrityError,
  OperationalError...), which is what core/store/boundary.py turns into the project's
  StoreUnavailable/StoreError; a lost connection is reopened on the next statement outside a
  transaction (a server restart or a failover is an outage the runner rides through).
- Migrations are the same named functions (core/store/migrations.py), recorded in the same
  `_sqlite_migrations` table; `PgTable` gives them the three sqlite-utils calls they use, DDL
  types are mapped (INTEGER -> bigint, REAL -> double precision) and SQLite triggers become a
  plpgsql function and a row trigger. Each migration runs in its own transaction with its
  record (Postgres's DDL is transactional), under a session advisory lock so two hosts starting
  at once migrate once.
- Sessions: a closed store's session is kept for the next store of the process, a run's
  senders' and finishers' sessions open in the background, and the worker stores (`Store.twin`)
  share a few, statement by statement (core/store/pg_sessions.py).
- The password in DATABASE_URL never reaches a message: errors name the server by
  `core.config.url_label` (`label` here).
"""
from __future__ import annotations

import contextlib
import datetime as _dt
import os
import sqlite3
import uuid
from collections.abc import Iterator, Sequence
from typing import Any

from core.config import url_label as label
from core.errors import StoreError
from core.store.db import Database
from core.store.pg_sessions import IdleSessions, ReadRows, WorkerSessions
from core.store.pg_sql import translate
from core.store.pg_values import adapt_session
from core.store.migrations import MIGRATION_SET, REGISTERED

# one key for the store's advisory locks (an arbitrary constant: "fal dashboard")
_WRITE_LOCK = 0x6661_6C64
_MIGRATE_LOCK = _WRITE_LOCK + 1
CONNECT_TIMEOUT_S = 10
# a statement waiting longer than this for a row or advisory lock gives up as "locked"
LOCK_TIMEOUT_MS = 30_000

_COMPAT = (
    "CREATE COLLATION IF NOT EXISTS nocase (provider = icu, locale = 'und-u-ks-level2', deterministic = false)",
    "CREATE OR REPLACE AGGREGATE total(double precision) (sfunc = float8pl, stype = float8, initcond = '0')",
    "CREATE OR REPLACE FUNCTION instr(text, text) RETURNS integer LANGUAGE sql IMMUTABLE PARALLEL SAFE "
    "AS 'SELECT strpos($1, $2)'",
)


# ---- errors -------------------------------------------------------------------------------

def _as_sqlite(e: Exception, where: str) -> sqlite3.Error:
    """A psycopg error as the sqlite3 exception of the same kind (see the module's notes)."""
    import psycopg

    # one line: psycopg's text carries the statement's LINE and a caret on lines of their own
    text = f"{type(e).__name__}: " + "; ".join(p.strip() for p in str(e).splitlines() if p.strip())
    if isinstance(e, psycopg.IntegrityError):
        return sqlite3.IntegrityError(text)
    if isinstance(e, (psycopg.errors.LockNotAvailable, psycopg.errors.QueryCanceled,
                      psycopg.errors.DeadlockDetected, psycopg.errors.SerializationFailure)):
        return sqlite3.OperationalError(f"database is locked ({text})")
    if isinstance(e, psycopg.errors.DiskFull):
        return sqlite3.OperationalError(f"database or disk is full ({text})")
    if isinstance(e, psycopg.errors.ReadOnlySqlTransaction):
        return sqlite3.OperationalError(f"attempt to write a readonly database ({text})")
    if isinstance(e, (psycopg.OperationalError, psycopg.InterfaceError)):
        return sqlite3.OperationalError(f"the database server {where} is unreachable ({text})")
    if isinstance(e, (psycopg.ProgrammingError, psycopg.DataError, psycopg.NotSupportedError)):
        return sqlite3.ProgrammingError(text)
    return sqlite3.DatabaseError(text)


# ---- the connection ---------------------------------------------------------------------

def _new_connection(url: str, where: str) -> Any:
    """A new session on the server, set up for the store."""
    import psycopg

    try:
        # prepare_threshold=None: Supabase's transaction pooler (port 6543) cannot keep
        # prepared statements across a client's transactions
        conn = psycopg.connect(url, autocommit=True, prepare_threshold=None, connect_timeout=CONNECT_TIMEOUT_S)
        # the session's settings, in one round trip:
        # - lock_timeout: a write waits at most LOCK_TIMEOUT_MS for another's lock, then fails
        #   in one line;
        # - synchronous_commit off: the durability of SQLite's WAL with synchronous=NORMAL,
        #   which the file store has: a commit survives any kill of this process at once, and
        #   a crash of the server itself may lose the last fraction of a second of them, never
        #   corrupting; fal's ids are fsynced to the runner's journal before the store is told
        #   (core/batches/record.py). A write then waits for no disk flush: 2.6 ms instead of 7
        #   a request row here;
        # - random_page_cost 1.1 when left at the default 4 (which models spinning disks): the
        #   store's reads are index lookups (a batch's requests, then each one's images), and
        #   at 4 the planner scans all 84,000 images instead (84 ms against 41 for the
        #   Leaderboard's read). Postgres's docs suggest 1.1 for solid-state storage; a value
        #   an administrator chose is left alone.
        conn.execute(f"SET lock_timeout = {LOCK_TIMEOUT_MS}; SET synchronous_commit = off; "
                     "SELECT CASE WHEN current_setting('random_page_cost') = '4' "
                     "THEN set_config('random_page_cost', '1.1', false) END")
    except psycopg.Error as e:
        raise _as_sqlite(e, where) from None
    adapt_session(conn)
    return conn


_IDLE = IdleSessions(_new_connection)
os.register_at_fork(after_in_child=_IDLE.forget)

# the sessions the worker stores (`Store.twin`) share, per server (pg_sessions.WorkerSessions)
_WORKERS = WorkerSessions(_IDLE, _new_connection)
os.register_at_fork(after_in_child=_WORKERS.forget)


def close_idle(url: str | None = None) -> None:
    """Close the sessions this process keeps for the next store (on the server at `url`, or on
    every one): a database with sessions open cannot be dropped or used as a template."""
    _IDLE.close(url)


class Connection:
    """psycopg's connection with the sqlite3 surface the store uses: `execute`, `executemany`,
    `in_transaction`, `close`. Autocommit, as the SQLite connection is (isolation_level=None):
    transactions are the store's own BEGIN/COMMIT.

    With `shared` (a worker store, `Store.twin`), it holds a session only while it needs one: it
    borrows one for each statement outside a transaction (whose rows are read before the
    session goes back) and keeps it from BEGIN to COMMIT or ROLLBACK, or while a stream is read."""

    def __init__(self, url: str, *, shared: bool = False) -> None:
        self.url = url
        self.where = label(url)
        self._conn: Any = None
        self._shared = _WORKERS.join(url, self.where) if shared else None
        self._pinned = 0   # streams being read: the session stays
        if self._shared is None:
            self._open()

    def _open(self) -> None:
        self._conn = _IDLE.take(self.url) or _new_connection(self.url, self.where)

    @property
    def in_transaction(self) -> bool:
        from psycopg.pq import TransactionStatus

        return (self._conn is not None and not self._conn.closed
                and self._conn.info.transaction_status != TransactionStatus.IDLE)

    def _ready(self) -> Any:
        if self._shared is not None:
            if self._conn is not None and (self._conn.closed or self._conn.broken):
                self._settle()
            if self._conn is None:
                self._conn = self._shared.borrow()
            return self._conn
        if self._conn is None or self._conn.closed or self._conn.broken:
            self._open()
        return self._conn

    def _settle(self) -> None:
        """A shared session goes back once its statement left it outside a transaction."""
        conn = self._conn
        if self._shared is None or conn is None or self._pinned or (self.in_transaction and not conn.broken):
            return
        self._conn = None
        self._shared.give_back(conn)

    def execute(self, sql: str, parameters: Sequence[Any] | None = None) -> Any:
        if sql == "BEGIN IMMEDIATE":
            # one round trip (two statements, no parameters: the simple query protocol)
            try:
                return self.execute(f"BEGIN; SELECT pg_advisory_xact_lock({_WRITE_LOCK})")
            except BaseException:   # as SQLite's: a BEGIN IMMEDIATE that fails leaves no transaction
                with contextlib.suppress(Exception):
                    self._conn.execute("ROLLBACK")
                self._settle()
                raise
        conn = self._ready()
        params = list(parameters) if parameters else None
        try:
            cursor = conn.execute(translate(sql, params is not None), params)
            if self._shared is not None:
                cursor = ReadRows(cursor)
            return cursor
        except Exception as e:
            if type(e).__module__.split(".")[0] != "psycopg":
                raise
            raise _as_sqlite(e, self.where) from e
        finally:
            self._settle()

    def executemany(self, sql: str, rows: Sequence[Sequence[Any]]) -> Any:
        conn = self._ready()
        try:
            cursor = conn.cursor()
            cursor.executemany(translate(sql), [list(r) for r in rows])
            return ReadRows(cursor) if self._shared is not None else cursor
        except Exception as e:
            if type(e).__module__.split(".")[0] != "psycopg":
                raise
            raise _as_sqlite(e, self.where) from e
        finally:
            self._settle()

    def stream(self, sql: str, parameters: Sequence[Any], chunk_size: int) -> Iterator[tuple]:
        """The rows of a long read, fetched `chunk_size` at a time through a server-side cursor,
        so memory stays bounded whatever the table size and other statements may run on this
        connection between two fetches. Inside a transaction the rows stream as the server
        finds them; outside one the cursor is WITH HOLD, which the server fills first."""
        conn = self._ready()
        self._pinned += 1
        try:
            cursor = conn.cursor(name=f"read_{uuid.uuid4().hex}", withhold=not self.in_transaction)
            try:
                cursor.execute(translate(sql), list(parameters))
                while rows := cursor.fetchmany(chunk_size):
                    yield from rows
            finally:
                cursor.close()
        except Exception as e:
            if type(e).__module__.split(".")[0] != "psycopg":
                raise
            raise _as_sqlite(e, self.where) from e
        finally:
            self._pinned -= 1
            self._settle()

    def close(self) -> None:
        """Give the session back for the next store on this server (closed if it cannot be kept);
        a worker store's to the shared ones, and it leaves them."""
        conn, self._conn = self._conn, None
        shared, self._shared = self._shared, None
        if shared is not None:
            if conn is not None:
                shared.give_back(conn)
            _WORKERS.leave(self.url, shared)
        elif conn is not None:
            _IDLE.give(self.url, conn)

    def __del__(self) -> None:
        # a store dropped without close() (a page's cached one at exit, a test's) closes its
        # connection, as a sqlite3 connection does when collected, instead of psycopg's warning
        conn = getattr(self, "_conn", None)
        if conn is not None and not conn.closed:
            conn.close()
        shared = getattr(self, "_shared", None)
        if shared is not None and conn is not None:
            shared.give_back(conn)   # counted as lent no more (it is closed: not lent again)


class PgTable:
    """The three sqlite-utils table calls the migrations make, as Postgres DDL with the same
    names (sqlite-utils' `idx_<table>_<columns>` for indexes) and types (`translate` adds the
    rowid)."""

    _TYPES = {str: "text", int: "bigint", float: "double precision"}

    def __init__(self, db: PgDatabase, name: str) -> None:
        self.db, self.name = db, name

    def create(self, columns: dict[str, type], pk: str, not_null: set[str] | frozenset[str] = frozenset(),
               defaults: dict[str, Any] | None = None, foreign_keys: Sequence[tuple[str, str, str]] = ()) -> None:
        defaults = defaults or {}
        refs = {col: (table, other) for col, table, other in foreign_keys}
        cols = []
        for col, kind in columns.items():
            text = f'"{col}" {self._TYPES[kind]}'
            if col == pk:
                text += " PRIMARY KEY"
            if col in not_null:
                text += " NOT NULL"
            if col in refs:
                text += f' REFERENCES "{refs[col][0]}"("{refs[col][1]}")'
            if col in defaults:
                text += f" DEFAULT {defaults[col]!r}"
            cols.append(text)
        self.db.execute(f'CREATE TABLE "{self.name}" ({", ".join(cols)})')

    def create_index(self, columns: Sequence[str], unique: bool = False, if_not_exists: bool = False) -> None:
        name = f"idx_{self.name}_{'_'.join(columns)}"
        self.db.execute(f"CREATE {'UNIQUE ' if unique else ''}INDEX {'IF NOT EXISTS ' if if_not_exists else ''}"
                        f'"{name}" ON "{self.name}" ({", ".join(f"{chr(34)}{c}{chr(34)}" for c in columns)})')

    def add_column(self, name: str, kind: type) -> None:
        self.db.execute(f'ALTER TABLE "{self.name}" ADD COLUMN "{name}" {self._TYPES[kind]}')

    # what tests read of a table through `store.db[...]`, as sqlite-utils gives it
    @property
    def count(self) -> int:
        return self.db.execute(f'SELECT count(*) FROM "{self.name}"').fetchone()[0]

    @property
    def columns(self) -> list[Any]:
        """(name, type) of each column, types as SQLite names them (the store's own rowid left out)."""
        from types import SimpleNamespace

        names = {"text": "TEXT", "bigint": "INTEGER", "double precision": "REAL"}
        return [SimpleNamespace(name=n, type=names.get(t, t.upper())) for n, t in self.db.execute(
            "SELECT column_name, data_type FROM information_schema.columns WHERE table_schema = current_schema() "
            "AND table_name = ? AND column_name <> 'rowid' ORDER BY ordinal_position", [self.name])]


class PgDatabase:
    """The store's database on Postgres, with the surface of core.store.db.Database."""

    engine = "postgres"

    def __init__(self, url: str, *, shared: bool = False) -> None:
        self.url = url
        self.conn = Connection(url, shared=shared)
        self.location = self.conn.where
        self.lock_key = None   # the server orders the writes: no process-wide lock (core/store/_sql.py)
        self.read_only = False

    def execute(self, sql: str, parameters: Any = None) -> Any:
        return self.conn.execute(sql, parameters)

    # a transaction, nested blocks as savepoints: the SQLite connection's own, on this one's
    # `conn` (in_transaction, execute)
    atomic = Database.atomic

    def __getitem__(self, table: str) -> PgTable:
        return PgTable(self, table)

    def table_names(self) -> list[str]:
        return [r[0] for r in self.execute(
            "SELECT tablename FROM pg_tables WHERE schemaname = current_schema() ORDER BY tablename")]

    def warm(self, workers: int) -> None:
        """Open sessions in the background for `workers` worker stores about to start: one each,
        up to the cap of the sessions they share (`SharedSessions`)."""
        cap = _WORKERS.cap(self.url, self.conn._ready())
        _IDLE.warm(self.url, self.location, workers if cap is None else min(workers, cap))

    def close(self) -> None:
        self.conn.close()


# ---- opening and migrating ----------------------------------------------------------------

def connect(url: str, *, migrate: bool = True) -> PgDatabase:
    """A connection to the store on the Postgres at `url`, migrated to the latest schema (one
    query when it is up to date)."""
    db = PgDatabase(url)
    try:
        applied = applied_names(db)
        if applied is None:
            _refuse_foreign(db)
        if migrate and (applied is None or set(applied) < {fn.__name__ for fn in REGISTERED}):
            migrate_db(db)
        elif not migrate and applied is not None and not set(applied) >= {fn.__name__ for fn in REGISTERED}:
            raise StoreError(f"the database {db.location} needs an upgrade: run any command once.")
    except BaseException:
        db.close()
        raise
    return db


def _refuse_foreign(db: PgDatabase) -> None:
    names = set(db.table_names())
    if names and not names & {"_sqlite_migrations", "requests"}:
        raise StoreError(f"the database {db.location} holds another program's tables "
                         f"({', '.join(sorted(names)[:5])}); it was left unchanged. Point DATABASE_URL "
                         "at an empty database, or at the dashboard's.")


def applied_names(db: PgDatabase) -> list[str] | None:
    """The migrations recorded in the database, None when it has no record table (one round
    trip when it has one: the usual case, each time a store is opened)."""
    import psycopg

    names = "SELECT name FROM _sqlite_migrations WHERE migration_set = ? ORDER BY id"
    if db.conn.in_transaction:   # a failed statement would end the transaction: ask first
        if not db.execute("SELECT to_regclass('_sqlite_migrations')").fetchone()[0]:
            return None
        return [r[0] for r in db.execute(names, [MIGRATION_SET])]
    try:
        return [r[0] for r in db.execute(names, [MIGRATION_SET])]
    except sqlite3.Error as e:
        if isinstance(e.__cause__, psycopg.errors.UndefinedTable):
            return None
        raise


def migrate_db(db: PgDatabase, registered: Sequence[Any] | None = None) -> list[str]:
    """Apply the pending migrations, each in its own transaction with its record, under a
    session advisory lock (another host starting at the same moment waits, then finds them
    applied). Returns the names applied."""
    registered = REGISTERED if registered is None else registered
    done: list[str] = []
    db.execute(f"SELECT pg_advisory_lock({_MIGRATE_LOCK})")
    try:
        _refuse_foreign(db)
        if applied_names(db) is None:
            with db.atomic():
                for statement in _COMPAT:
                    db.execute(statement)
                db.execute("CREATE TABLE _sqlite_migrations (id bigint GENERATED BY DEFAULT AS IDENTITY "
                           "PRIMARY KEY, migration_set text, name text, applied_at text)")
                db.execute('CREATE UNIQUE INDEX "idx__sqlite_migrations_migration_set_name" '
                           "ON _sqlite_migrations (migration_set, name)")
        applied = set(applied_names(db) or ())
        for fn in registered:
            if fn.__name__ in applied:
                continue
            with db.atomic():
                fn(db)
                db.execute("INSERT INTO _sqlite_migrations (migration_set, name, applied_at) VALUES (?, ?, ?)",
                           [MIGRATION_SET, fn.__name__, str(_dt.datetime.now(_dt.timezone.utc))])
            done.append(fn.__name__)
    finally:
        with contextlib.suppress(sqlite3.Error):
            db.execute(f"SELECT pg_advisory_unlock({_MIGRATE_LOCK})")
    return done
