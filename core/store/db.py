"""The SQLite file: connection settings and the schema, as append-only named migrations.

Invariants:
- One file, `<data dir>/dashboard.db`, in WAL mode with a busy timeout, so several runner
  processes and the dashboard can read and write at once without "database is locked".
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


def connect(path: Path | str, *, migrate: bool = True) -> sqlite_utils.Database:
    """A connection to the store at `path` (created if missing), migrated to the latest schema.

    Each thread or process opens its own connection.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    conn = sqlite3.connect(str(path), timeout=30, check_same_thread=False, isolation_level=None)
    conn.execute("PRAGMA busy_timeout = 30000")
    # Switching a fresh file to WAL and migrating it take locks that busy_timeout does not wait
    # for ("database is locked" when two processes open a new data dir at once): serialise
    # them across processes with an advisory file lock; pending migrations are re-read under it.
    with _file_lock(path.with_name(path.name + ".lock")):
        conn.execute("PRAGMA journal_mode = WAL")
        db = sqlite_utils.Database(conn)
        if migrate:
            migrate_db(db)
    conn.execute("PRAGMA synchronous = NORMAL")
    conn.execute("PRAGMA foreign_keys = ON")
    return db


@contextlib.contextmanager
def _file_lock(lock_path: Path) -> Iterator[None]:
    with open(lock_path, "a+b") as f:
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
def m014_version_indexes(db: sqlite_utils.Database) -> None:
    """The Leaderboard's data version over every batch asks for the newest completion, measurement
    and check: indexes answer those maxima without reading the tables (100,000 requests)."""
    db["requests"].create_index(["completed_at"], if_not_exists=True)
    db["result_images"].create_index(["metrics_at"], if_not_exists=True)
    db["result_images"].create_index(["checked_at"], if_not_exists=True)
