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
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO
from urllib.parse import quote

from core.errors import StoreError

if TYPE_CHECKING:
    import sqlite_utils

MIGRATION_SET = "dashboard"
_MIGRATIONS: list[Callable[[Any], None]] = []   # in order; see `_migration`


def _migration(fn: Callable[[Any], None]) -> Callable[[Any], None]:
    """Register a migration (applied in the order registered, named after the function)."""
    _MIGRATIONS.append(fn)
    return fn


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
        for fn in _MIGRATIONS:
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

    def __init__(self, conn: sqlite3.Connection) -> None:
        self.conn = conn
        self._utils: sqlite_utils.Database | None = None
        conn.execute("PRAGMA recursive_triggers = on")   # as sqlite-utils sets it

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
        if isinstance(e, sqlite3.OperationalError) and not _is_corruption(e):
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


def _is_corruption(e: sqlite3.Error) -> bool:
    text = str(e).lower()
    return "not a database" in text or "malformed" in text or "corrupt" in text


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
            if _is_corruption(e):
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
    return any(fn.__name__ not in done for fn in _MIGRATIONS)


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

    if [fn.__name__ for fn in _MIGRATIONS] != list(_schema.MIGRATIONS):
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


@_migration
def m001_initial(db: Any) -> None:
    db["reference_photos"].create(
        {
            "id": str, "sha256": str, "role": str, "owner": str, "original_name": str,
            "content_type": str, "width": int, "height": int, "size_bytes": int,
            "storage_backend": str, "storage_path": str, "public_url": str,
            "created_at": str, "created_by": str, "archived_at": str,
        },
        pk="id", not_null={"sha256", "role", "content_type", "storage_backend", "storage_path", "created_at"},
    )
    db["reference_photos"].create_index(["sha256"], unique=True)
    db["reference_photos"].create_index(["created_at"])

    db["batches"].create(
        {
            "id": str, "name": str, "created_at": str, "created_by": str, "plan_json": str,
            "status": str, "dry_run": int, "concurrency": int, "cancel_requested": int,
            "runner_pid": int, "runner_host": str, "heartbeat_at": str,
            "started_at": str, "finished_at": str, "request_count": int, "estimated_cost": float,
        },
        pk="id", not_null={"name", "created_at", "status"},
        defaults={"cancel_requested": 0, "dry_run": 0, "request_count": 0},
    )
    db["batches"].create_index(["created_at"])

    db["groups"].create(
        {
            "id": str, "batch_id": str, "variant_key": str, "prompt": str, "options_json": str,
            "seed": int, "image_size": str, "reference_ids": str, "created_at": str,
        },
        pk="id", foreign_keys=[("batch_id", "batches", "id")], not_null={"prompt", "created_at"},
    )
    db["groups"].create_index(["batch_id"])

    db["requests"].create(
        {
            "id": str, "batch_id": str, "group_id": str, "endpoint": str, "prompt": str,
            "options_json": str, "seed": int, "image_size": str, "reference_ids": str,
            "payload_json": str, "payload_hash": str, "status": str, "dry_run": int,
            "fal_request_id": str, "status_url": str, "response_url": str, "cancel_url": str,
            "queue_position": int, "created_at": str, "submitted_at": str, "queued_at": str,
            "started_at": str, "completed_at": str, "queue_time_s": float,
            "inference_time_s": float, "total_time_s": float, "http_status": int,
            "error_type": str, "error_message": str, "estimated_cost": float,
            "response_json": str, "logs_json": str, "rerun_of": str, "created_by": str,
            "attempts": int,
        },
        pk="id",
        foreign_keys=[("batch_id", "batches", "id"), ("group_id", "groups", "id"),
                      ("rerun_of", "requests", "id")],
        not_null={"endpoint", "payload_json", "payload_hash", "status", "created_at"},
        defaults={"dry_run": 0, "attempts": 0},
    )
    for cols in (["batch_id", "status"], ["endpoint", "created_at"], ["status", "created_at"],
                 ["created_at"], ["group_id"], ["fal_request_id"], ["submitted_at"]):
        db["requests"].create_index(cols)

    db["result_images"].create(
        {
            "id": str, "request_id": str, "idx": int, "fal_url": str, "storage_backend": str,
            "storage_path": str, "sha256": str, "width": int, "height": int,
            "content_type": str, "size_bytes": int, "nsfw": int, "created_at": str,
        },
        pk="id", foreign_keys=[("request_id", "requests", "id")], not_null={"request_id", "created_at"},
    )
    db["result_images"].create_index(["request_id", "idx"], unique=True)


@_migration
def m002_history_indexes(db: Any) -> None:
    """History by batch is shown newest first; re-runs are looked up by the request they repeat."""
    db["requests"].create_index(["batch_id", "created_at"], if_not_exists=True)
    db["requests"].create_index(["rerun_of"], if_not_exists=True)


@_migration
def m010_result_metrics(db: Any) -> None:
    """Fidelity of each output to its group's first reference (core/evaluation/fidelity.py fills these in the
    background) and the checks of fal's answer against the request. A row is PENDING while
    `metrics_at` is null: the partial index keeps finding pending rows cheap whatever the table size."""
    table = db["result_images"]
    for name, kind in (
        ("face_status", str), ("face_distance", float), ("faces_reference", int),
        ("faces_output", int), ("phash_distance", int), ("ciede2000", float), ("ssim", float),
        ("metrics_reference_id", str), ("metrics_version", str), ("metrics_at", str),
        ("metrics_error", str),
        ("requested_width", int), ("requested_height", int), ("pixel_width", int),
        ("pixel_height", int), ("seed_sent", int), ("seed_returned", int), ("check_flags", str),
        ("checked_at", str),
    ):
        table.add_column(name, kind)
    db.execute("CREATE INDEX IF NOT EXISTS idx_result_images_metrics_pending "
               "ON result_images(request_id) WHERE metrics_at IS NULL")


@_migration
def m011_votes(db: Any) -> None:
    """Blind review verdicts (core/evaluation/review.py): one row per rater's verdict on two outputs of a
    group, with the left/right order the rater saw; `winner` is the winning endpoint or null."""
    db["votes"].create(
        {
            "id": str, "group_id": str, "rater": str, "left_request_id": str,
            "right_request_id": str, "verdict": str, "winner": str, "note": str, "created_at": str,
        },
        pk="id",
        foreign_keys=[("group_id", "groups", "id"), ("left_request_id", "requests", "id"),
                      ("right_request_id", "requests", "id")],
        not_null={"group_id", "rater", "left_request_id", "right_request_id", "verdict", "created_at"},
    )
    db["votes"].create_index(["group_id", "rater"])
    db["votes"].create_index(["rater", "created_at"])


@_migration
def m012_batch_stop_reason(db: Any) -> None:
    """Why a batch's runner stopped before every request was final, written by the runner (not
    parsed from its log), and when; a runner that takes the batch again clears both."""
    db["batches"].add_column("stop_reason", str)
    db["batches"].add_column("stopped_at", str)


@_migration
def m013_batch_runner_state(db: Any) -> None:
    """What a page needs to say what a batch's runner is doing, without reading its log: when a
    runner was last started for it (a runner not up yet is "starting", not "stopped"), and since
    when fal has been unreachable for it (the runner rides through outages and says so)."""
    db["batches"].add_column("launched_at", str)
    db["batches"].add_column("fal_unreachable_since", str)


@_migration
def m014_contenders(db: Any) -> None:
    """What a comparison compares is a CONTENDER (core/catalog/contenders.py): an endpoint at one
    parameter set. Each is stored once (`contenders`: id, endpoint, canonical params JSON) and
    named on every request (`requests.contender_id`). Requests recorded before this migration
    get theirs derived from their endpoint and stored payload, exactly as a new one would."""
    from core.catalog import contenders

    db["contenders"].create({"id": str, "endpoint": str, "params_json": str}, pk="id",
                            not_null={"endpoint", "params_json"})
    db["requests"].add_column("contender_id", str)
    db.execute("CREATE INDEX IF NOT EXISTS idx_requests_batch_contender "
               "ON requests(batch_id, contender_id)")
    # keyset pages by rowid: no cursor stays open over the rows being updated
    last = 0
    while rows := db.execute("SELECT rowid, id, endpoint, payload_json FROM requests WHERE rowid > ? "
                             "ORDER BY rowid LIMIT 5000", [last]).fetchall():
        last = rows[-1][0]
        found: dict[str, contenders.Contender] = {}
        updates = []
        for _, request_id, endpoint, payload_json in rows:
            c = contenders.from_request(endpoint, payload_json)
            found.setdefault(c.id, c)
            updates.append((c.id, request_id))
        db.conn.executemany("INSERT OR IGNORE INTO contenders (id, endpoint, params_json) VALUES (?, ?, ?)",
                            [(c.id, c.endpoint, c.params_json) for c in found.values()])
        db.conn.executemany("UPDATE requests SET contender_id = ? WHERE id = ?", updates)


@_migration
def m015_version_indexes(db: Any) -> None:
    """The Leaderboard's data version over every batch asks for the newest completion, measurement
    and check: indexes answer those maxima without reading the tables (100,000 requests)."""
    db["requests"].create_index(["completed_at"], if_not_exists=True)
    db["result_images"].create_index(["metrics_at"], if_not_exists=True)
    db["result_images"].create_index(["checked_at"], if_not_exists=True)


@_migration
def m016_batch_figures(db: Any) -> None:
    """"All batches" on the Leaderboard merges each batch's figures (core/evaluation/comparison.py)
    instead of reading 100,000 requests per visit. `batch_stamps` counts the writes to each batch's
    requests, images and votes (triggers, so no writer can forget; '' = requests without a batch);
    `batch_figures` keeps a batch's figures with the stamp they were computed at."""
    db.execute("CREATE TABLE batch_stamps (batch_id TEXT PRIMARY KEY, stamp INTEGER NOT NULL)")
    db.execute("CREATE TABLE batch_figures (batch_id TEXT PRIMARY KEY, stamp INTEGER NOT NULL, "
               "figures TEXT NOT NULL)")
    db.execute("INSERT INTO batch_stamps SELECT DISTINCT coalesce(batch_id, ''), 0 FROM requests")
    bump = ("INSERT INTO batch_stamps (batch_id, stamp) VALUES (coalesce({batch}, ''), 1) "
            "ON CONFLICT (batch_id) DO UPDATE SET stamp = stamp + 1;")
    request_batch = "(SELECT batch_id FROM requests WHERE id = {row}.request_id)"
    group_batch = "(SELECT batch_id FROM groups WHERE id = {row}.group_id)"
    for table, of in (("requests", "{row}.batch_id"), ("result_images", request_batch), ("votes", group_batch)):
        for event, rows in (("INSERT", ("NEW",)), ("UPDATE", ("OLD", "NEW")), ("DELETE", ("OLD",))):
            body = " ".join(bump.format(batch=of.format(row=r)) for r in rows)
            db.execute(f"CREATE TRIGGER stamp_{table}_{event.lower()} AFTER {event} ON {table} "
                       f"BEGIN {body} END")


@_migration
def m017_export_lines(db: Any) -> None:
    """The history export's CSV text of each final request, kept ready (core/store/history.py):
    one row per export row (`idx` -1 for a request without images), the cells before the
    contender's and after it, and the version of the format that wrote them (in the key, so
    "has lines of this version" is answered from the index; and an index on requests in the
    export's order). Triggers delete a
    request's lines whenever the request or one of its images is written, by any writer, so a
    line never outlives its cells. The lines of requests already final are not written here (at
    100,000 requests that held the file lock for up to 47 s on a loaded machine, blocking every
    page once): the first export builds them as before and stores them after."""
    # the export reads requests newest first, ties by id, then their lines: this index gives that
    # order and the contender (the cells it joins in) without reading the requests' rows
    db["requests"].create_index(["created_at", "id", "contender_id"], if_not_exists=True)
    db.execute("CREATE TABLE export_lines (request_id TEXT NOT NULL, idx INTEGER NOT NULL, "
               "version TEXT NOT NULL, head TEXT NOT NULL, tail TEXT NOT NULL, "
               "PRIMARY KEY (request_id, version, idx))")
    for event, table, key in (("UPDATE", "requests", "OLD.id"), ("DELETE", "requests", "OLD.id"),
                              ("INSERT", "result_images", "NEW.request_id"),
                              ("UPDATE", "result_images", "OLD.request_id"),
                              ("DELETE", "result_images", "OLD.request_id")):
        also = f" OR request_id = {key.replace('OLD', 'NEW')}" if event == "UPDATE" else ""
        db.execute(f"CREATE TRIGGER export_lines_{table}_{event.lower()} AFTER {event} ON {table} "
                   f"BEGIN DELETE FROM export_lines WHERE request_id = {key}{also}; END")


@_migration
def m018_votes_leave_batch_stamps(db: Any) -> None:
    """A batch's stored figures now hold only what its requests and images say (cost, latency,
    fidelity); what votes say is computed from the votes table, which is small, on each visit. So
    a vote no longer bumps its batch's stamp (a vote would otherwise recompute 4,000 requests'
    figures), and the figures kept before, which counted reviewed outputs, are dropped."""
    for event in ("insert", "update", "delete"):
        db.execute(f"DROP TRIGGER IF EXISTS stamp_votes_{event}")
    db.execute("DELETE FROM batch_figures")


@_migration
def m019_in_doubt_and_launch_keys(db: Any) -> None:
    """Money safety: a request whose submit was never answered is `in_doubt` (a status value, no
    column); who sent one again (or gave it up) is kept on the row, and a batch remembers the
    launch key of what the person confirmed, unique, so a second click finds the first batch."""
    db.execute("ALTER TABLE requests ADD COLUMN resent_by TEXT")
    db.execute("ALTER TABLE requests ADD COLUMN resent_at TEXT")
    db.execute("ALTER TABLE batches ADD COLUMN launch_key TEXT")
    db.execute("CREATE UNIQUE INDEX idx_batches_launch_key ON batches (launch_key) "
               "WHERE launch_key IS NOT NULL")
