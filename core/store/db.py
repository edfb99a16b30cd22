"""The SQLite file: connection settings and the schema, as append-only named migrations.

Invariants:
- One file, `<data dir>/dashboard.db`, in WAL mode with a busy timeout, so several runner
  processes and the dashboard can read and write at once without "database is locked".
- A data directory that cannot be written still serves reads (`is_read_only`); a file that is
  not a dashboard database is refused with what to do, and never written to.
- Migrations are named functions registered on `MIGRATIONS`, applied in order, each in one
  transaction with its record in `_sqlite_migrations`. Never edit or reorder an applied one:
  append a new `mNNN_...` function instead.
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
from typing import BinaryIO
from urllib.parse import quote

from core.errors import StoreError

# sqlite-utils imports pandas and numpy at import time when installed (~0.5 s of start-up), only
# to map their scalar types to column types; nothing here hands it either. Hide them during that
# import so `python -m core batch run` starts lean. They stay importable afterwards.
_hidden = [name for name in ("pandas", "numpy") if name not in sys.modules]
sys.modules.update(dict.fromkeys(_hidden))
try:
    import sqlite_utils
    from sqlite_utils.migrations import Migrations
finally:
    for _name in _hidden:
        if sys.modules.get(_name, "") is None:
            del sys.modules[_name]

MIGRATIONS = Migrations("dashboard")


def now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="microseconds")


def new_id() -> str:
    return uuid.uuid4().hex


BUSY_TIMEOUT_S = 30.0   # how long a write waits for another connection's lock


def connect(path: Path | str, *, migrate: bool = True) -> sqlite_utils.Database:
    """A connection to the store at `path` (created if missing), migrated to the latest schema.

    Each thread or process opens its own connection. A data directory that cannot be written
    (a read-only mount, no permission) gives a read-only connection (`is_read_only`): reads work,
    writes fail with SQLite's "readonly database". A file that is not a dashboard database
    (corrupted, another program's, a directory or a device) raises StoreError, and nothing is
    written to it.
    """
    path = Path(path)
    _refuse_non_file(path)
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
                db = sqlite_utils.Database(conn)
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


def is_read_only(db: sqlite_utils.Database) -> bool:
    """True for a connection `connect` opened read-only (its data directory cannot be written)."""
    return bool(db.execute("PRAGMA query_only").fetchone()[0])


def _refuse_non_file(path: Path) -> None:
    if path.exists() and not path.is_file():
        raise StoreError(f"{path} is not a database file (a directory or a device): set "
                         "DASHBOARD_DATA_DIR to the dashboard's data directory.")


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


def _connect_read_only(path: Path) -> sqlite_utils.Database:
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
            db = sqlite_utils.Database(conn)
            pending = MIGRATIONS.pending(db)
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


def migrate_db(db: sqlite_utils.Database) -> None:
    """Apply pending migrations (each in its own transaction with its record)."""
    if MIGRATIONS.pending(db):
        MIGRATIONS.apply(db)


@MIGRATIONS()
def m001_initial(db: sqlite_utils.Database) -> None:
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


@MIGRATIONS()
def m002_history_indexes(db: sqlite_utils.Database) -> None:
    """History by batch is shown newest first; re-runs are looked up by the request they repeat."""
    db["requests"].create_index(["batch_id", "created_at"], if_not_exists=True)
    db["requests"].create_index(["rerun_of"], if_not_exists=True)


@MIGRATIONS()
def m010_result_metrics(db: sqlite_utils.Database) -> None:
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


@MIGRATIONS()
def m011_votes(db: sqlite_utils.Database) -> None:
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


@MIGRATIONS()
def m012_batch_stop_reason(db: sqlite_utils.Database) -> None:
    """Why a batch's runner stopped before every request was final, written by the runner (not
    parsed from its log), and when; a runner that takes the batch again clears both."""
    db["batches"].add_column("stop_reason", str)
    db["batches"].add_column("stopped_at", str)


@MIGRATIONS()
def m013_batch_runner_state(db: sqlite_utils.Database) -> None:
    """What a page needs to say what a batch's runner is doing, without reading its log: when a
    runner was last started for it (a runner not up yet is "starting", not "stopped"), and since
    when fal has been unreachable for it (the runner rides through outages and says so)."""
    db["batches"].add_column("launched_at", str)
    db["batches"].add_column("fal_unreachable_since", str)


@MIGRATIONS()
def m014_contenders(db: sqlite_utils.Database) -> None:
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


@MIGRATIONS()
def m015_version_indexes(db: sqlite_utils.Database) -> None:
    """The Leaderboard's data version over every batch asks for the newest completion, measurement
    and check: indexes answer those maxima without reading the tables (100,000 requests)."""
    db["requests"].create_index(["completed_at"], if_not_exists=True)
    db["result_images"].create_index(["metrics_at"], if_not_exists=True)
    db["result_images"].create_index(["checked_at"], if_not_exists=True)


@MIGRATIONS()
def m016_batch_figures(db: sqlite_utils.Database) -> None:
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


@MIGRATIONS()
def m017_votes_leave_batch_stamps(db: sqlite_utils.Database) -> None:
    """A batch's stored figures now hold only what its requests and images say (cost, latency,
    fidelity); what votes say is computed from the votes table, which is small, on each visit. So
    a vote no longer bumps its batch's stamp (a vote would otherwise recompute 4,000 requests'
    figures), and the figures kept before, which counted reviewed outputs, are dropped."""
    for event in ("insert", "update", "delete"):
        db.execute(f"DROP TRIGGER IF EXISTS stamp_votes_{event}")
    db.execute("DELETE FROM batch_figures")
