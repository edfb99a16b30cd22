"""The SQLite schema: each table's columns from a blank file to the latest migration, a failing
migration that leaves nothing behind, and new data directories opened by several processes at once.

Pins the schema itself (as llm's test_migrate does), not the private list of migration names:
a migration that drops, renames or retypes a column fails here, and so does a value type of the
store that no longer matches its table.
"""
from __future__ import annotations

import dataclasses
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest
from sqlite_utils.migrations import Migrations

from core import values
from core.store import db, open_store
from core.values import Batch, Group, Reference, RequestRecord, ResultImage, StoredModel, StoredVote
from core.values import METRIC_COLUMNS

EXPECTED: dict[str, dict[str, str]] = {
    "reference_photos": {
        "id": "TEXT", "sha256": "TEXT", "role": "TEXT", "owner": "TEXT", "original_name": "TEXT",
        "content_type": "TEXT", "width": "INTEGER", "height": "INTEGER", "size_bytes": "INTEGER",
        "storage_backend": "TEXT", "storage_path": "TEXT", "public_url": "TEXT", "created_at": "TEXT",
        "created_by": "TEXT", "archived_at": "TEXT",
    },
    "batches": {
        "id": "TEXT", "name": "TEXT", "created_at": "TEXT", "created_by": "TEXT", "plan_json": "TEXT",
        "status": "TEXT", "dry_run": "INTEGER", "concurrency": "INTEGER", "cancel_requested": "INTEGER",
        "runner_pid": "INTEGER", "runner_host": "TEXT", "heartbeat_at": "TEXT", "started_at": "TEXT",
        "finished_at": "TEXT", "request_count": "INTEGER", "estimated_cost": "REAL",
        "stop_reason": "TEXT", "stopped_at": "TEXT",
        "launched_at": "TEXT", "fal_unreachable_since": "TEXT", "launch_key": "TEXT",
    },
    "groups": {
        "id": "TEXT", "batch_id": "TEXT", "variant_key": "TEXT", "prompt": "TEXT", "options_json": "TEXT",
        "seed": "INTEGER", "image_size": "TEXT", "reference_ids": "TEXT", "created_at": "TEXT",
    },
    "requests": {
        "id": "TEXT", "batch_id": "TEXT", "group_id": "TEXT", "endpoint": "TEXT", "prompt": "TEXT",
        "options_json": "TEXT", "seed": "INTEGER", "image_size": "TEXT", "reference_ids": "TEXT",
        "payload_json": "TEXT", "payload_hash": "TEXT", "status": "TEXT", "dry_run": "INTEGER",
        "fal_request_id": "TEXT", "status_url": "TEXT", "response_url": "TEXT", "cancel_url": "TEXT",
        "queue_position": "INTEGER", "created_at": "TEXT", "submitted_at": "TEXT", "queued_at": "TEXT",
        "started_at": "TEXT", "completed_at": "TEXT", "queue_time_s": "REAL", "inference_time_s": "REAL",
        "total_time_s": "REAL", "http_status": "INTEGER", "error_type": "TEXT", "error_message": "TEXT",
        "estimated_cost": "REAL", "response_json": "TEXT", "logs_json": "TEXT", "rerun_of": "TEXT",
        "created_by": "TEXT", "attempts": "INTEGER", "contender_id": "TEXT",
        "resent_by": "TEXT", "resent_at": "TEXT", "schema_version": "TEXT",
        "billable_units": "REAL", "billed_cost": "REAL",
    },
    "contenders": {"id": "TEXT", "endpoint": "TEXT", "params_json": "TEXT"},
    "models": {
        "endpoint_id": "TEXT", "label": "TEXT", "category": "TEXT", "document": "TEXT", "sha256": "TEXT",
        "source": "TEXT", "added_at": "TEXT", "added_by": "TEXT", "fetched_at": "TEXT", "archived_at": "TEXT",
        "price_usd": "REAL", "price_unit": "TEXT", "price_source": "TEXT", "pending_document": "TEXT",
        "pending_sha256": "TEXT", "pending_fetched_at": "TEXT",
    },
    "audit": {"id": "TEXT", "at": "TEXT", "who": "TEXT", "action": "TEXT", "subject": "TEXT", "detail": "TEXT",
              "usd": "REAL"},
    "limits": {"name": "TEXT", "usd": "REAL", "set_by": "TEXT", "set_at": "TEXT"},
    "result_images": {
        "id": "TEXT", "request_id": "TEXT", "idx": "INTEGER", "fal_url": "TEXT", "storage_backend": "TEXT",
        "storage_path": "TEXT", "sha256": "TEXT", "width": "INTEGER", "height": "INTEGER",
        "content_type": "TEXT", "size_bytes": "INTEGER", "nsfw": "INTEGER", "created_at": "TEXT",
        "face_status": "TEXT", "face_distance": "REAL", "faces_reference": "INTEGER",
        "faces_output": "INTEGER", "phash_distance": "INTEGER", "ciede2000": "REAL", "ssim": "REAL",
        "metrics_reference_id": "TEXT", "metrics_version": "TEXT", "metrics_at": "TEXT",
        "metrics_error": "TEXT", "requested_width": "INTEGER", "requested_height": "INTEGER",
        "pixel_width": "INTEGER", "pixel_height": "INTEGER", "seed_sent": "INTEGER",
        "seed_returned": "INTEGER", "check_flags": "TEXT", "checked_at": "TEXT",
    },
    # the history export's ready CSV text of each final request (core/store/history.py)
    "export_lines": {"request_id": "TEXT", "idx": "INTEGER", "version": "TEXT", "head": "TEXT", "tail": "TEXT"},
    "votes": {
        "id": "TEXT", "group_id": "TEXT", "rater": "TEXT", "left_request_id": "TEXT",
        "right_request_id": "TEXT", "verdict": "TEXT", "winner": "TEXT", "note": "TEXT", "created_at": "TEXT",
    },
    "batch_stamps": {"batch_id": "TEXT", "stamp": "INTEGER"},
    "batch_figures": {"batch_id": "TEXT", "stamp": "INTEGER", "figures": "TEXT"},
}

# the indexes reads rely on (history pages, pending metrics, dedup of photos and images)
EXPECTED_INDEXES: dict[str, set[tuple[tuple[str, ...], bool]]] = {
    "reference_photos": {(("created_at",), False), (("sha256",), True)},
    "batches": {(("created_at",), False), (("launch_key",), True)},
    "groups": {(("batch_id",), False)},
    "requests": {(("batch_id", "created_at"), False), (("batch_id", "status"), False),
                 (("created_at",), False), (("endpoint", "created_at"), False),
                 (("fal_request_id",), False), (("group_id",), False), (("rerun_of",), False),
                 (("status", "created_at"), False), (("submitted_at",), False),
                 (("batch_id", "contender_id"), False), (("completed_at",), False),
                 (("created_at", "id", "contender_id"), False)},
    "result_images": {(("request_id",), False), (("request_id", "idx"), True),
                      (("metrics_at",), False), (("checked_at",), False)},
    "votes": {(("group_id", "rater"), False), (("rater", "created_at"), False)},
    "audit": {(("at",), False)},
}


def _columns(d) -> dict[str, dict[str, str]]:
    return {t: {c.name: c.type for c in d[t].columns} for t in d.table_names() if not t.startswith("_")}


def test_blank_file_migrates_to_exactly_the_expected_columns(tmp_path):
    d = db.connect(tmp_path / "store.db")
    assert _columns(d) == EXPECTED
    for table, wanted in EXPECTED_INDEXES.items():
        indexes = {(tuple(i.columns), bool(i.unique)) for i in d[table].indexes if i.columns != ["id"]}
        assert indexes == wanted, table
    assert d.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


def test_opening_a_migrated_file_again_changes_nothing(tmp_path):
    path = tmp_path / "store.db"
    first = db.connect(path)
    applied = db.MIGRATIONS.applied(first)
    again = db.connect(path)
    assert db.MIGRATIONS.applied(again) == applied and _columns(again) == EXPECTED


def test_the_store_values_name_every_column_of_their_table():
    """Each frozen value holds its row: a new column must reach the value (or this fails)."""
    def names(cls, *, without=()):
        return {f.name for f in dataclasses.fields(cls)} - set(without)

    assert names(Batch) == set(EXPECTED["batches"])
    assert names(Group) == set(EXPECTED["groups"])
    assert names(RequestRecord) == set(EXPECTED["requests"])
    assert names(StoredModel) == set(EXPECTED["models"])
    assert names(Reference, without=("notes", "existing")) == set(EXPECTED["reference_photos"])
    assert names(ResultImage, without=("metrics",)) | set(METRIC_COLUMNS) == set(EXPECTED["result_images"])
    assert names(StoredVote, without=("left_endpoint", "right_endpoint", "left_contender", "right_contender",
                                      "winner_contender")) == set(EXPECTED["votes"])


def test_a_file_at_m001_is_upgraded_without_losing_rows(tmp_path):
    """An existing store (only m001 applied, one request) is migrated in place by open_store()."""
    path = tmp_path / "old.db"
    raw = db.connect(path, migrate=False)
    db.MIGRATIONS.apply(raw, stop_before="m002_history_indexes")
    raw["requests"].insert({"id": "r1", "endpoint": "fal-ai/flux/schnell", "payload_json": "{}",
                            "payload_hash": "v1:x", "status": "planned", "created_at": values.now()})
    raw.close()
    st = open_store(path)
    assert _columns(st.db) == EXPECTED and st.get_request("r1").status == "planned"


def test_a_store_from_before_the_stop_reason_is_upgraded_in_place(tmp_path):
    """A data dir written before m012 keeps its batches, which get an empty stop reason."""
    path = tmp_path / "old.db"
    old = db.connect(path, migrate=False)
    db.MIGRATIONS.apply(old, stop_before="m012_batch_stop_reason")
    old["batches"].insert({"id": "b1", "name": "old", "created_at": values.now(), "status": "finished"})
    old.close()
    st = open_store(path)
    assert _columns(st.db) == EXPECTED
    batch = st.get_batch("b1")
    assert (batch.name, batch.stop_reason, batch.stopped_at) == ("old", None, None)


def test_a_store_before_m018_drops_its_vote_stamps_and_the_figures_that_counted_votes(tmp_path):
    """m018: the figures kept before counted reviewed outputs (votes), so they go; and a vote no
    longer bumps its batch's stamp, while a request still does."""
    path = tmp_path / "old.db"
    old = db.connect(path, migrate=False)
    db.MIGRATIONS.apply(old, stop_before="m018_votes_leave_batch_stamps")
    old["batch_figures"].insert({"batch_id": "b1", "stamp": 3, "figures": "{}"})
    old.close()
    st = open_store(path)
    assert _columns(st.db) == EXPECTED and st.stored_figures(["b1"]) == {}
    triggers = {name for (name,) in st.db.execute("SELECT name FROM sqlite_master WHERE type = 'trigger'")}
    assert not any(t.startswith("stamp_votes_") for t in triggers)
    assert {"stamp_requests_insert", "stamp_result_images_update"} <= triggers


def test_a_failing_migration_rolls_back_and_stays_pending(tmp_path, monkeypatch):
    """A migration that raises halfway leaves neither its changes nor its record: the file stays
    at the previous schema and the next start tries it again."""
    broken = Migrations(db.MIGRATIONS.name)
    broken._migrations = list(db.MIGRATIONS._migrations)  # the real ones, then a broken one

    @broken()
    def m999_half_done(d):
        d["batches"].add_column("half_done", str)
        d["brand_new"].create({"id": str}, pk="id")
        raise RuntimeError("disk full halfway")

    monkeypatch.setattr(db, "MIGRATIONS", broken)
    path = tmp_path / "store.db"
    with pytest.raises(RuntimeError, match="disk full halfway"):
        db.connect(path)
    d = db.connect(path, migrate=False)
    assert _columns(d) == EXPECTED                       # no half_done column, no brand_new table
    assert [m.name for m in broken.pending(d)] == ["m999_half_done"]


def test_processes_opening_a_fresh_store_at_once_never_see_database_locked(tmp_path):
    """Two runners (or a runner and the dashboard) may open a new data dir at the same moment:
    switching to WAL and migrating must be serialised, not fail with "database is locked"."""
    code = ("import sys; from core.store import open_store; st = open_store(sys.argv[1]); "
            "print(','.join(st.db.table_names()))")
    for attempt in range(4):
        path = tmp_path / f"fresh{attempt}" / "dashboard.db"
        procs = [subprocess.Popen([sys.executable, "-c", code, str(path)], stdout=subprocess.PIPE,
                                  stderr=subprocess.PIPE, text=True) for _ in range(4)]
        results = [p.communicate(timeout=60) for p in procs]
        for p, (out, err) in zip(procs, results):
            assert p.returncode == 0, err
            assert set(EXPECTED) <= set(out.strip().split(","))


def _master(conn) -> list[tuple]:
    return conn.execute("SELECT type, name, tbl_name, sql FROM sqlite_master ORDER BY type, name").fetchall()


def test_a_brand_new_file_gets_exactly_the_schema_replaying_every_migration_gives(tmp_path):
    """A blank file is created from core/store/_schema.py in one step: the same tables, columns,
    indexes and statement text as replaying the migrations, and every migration recorded."""
    from tests.store import schema_snapshot

    assert (Path(db.__file__).with_name("_schema.py").read_text() == schema_snapshot.module_text()), \
        "core/store/_schema.py is stale: run `python -m tests.store.schema_snapshot > core/store/_schema.py`"
    replayed = tmp_path / "replayed.db"
    schema_snapshot.replayed_schema(replayed)
    fresh = db.connect(tmp_path / "fresh.db")
    assert _master(fresh.conn) == _master(sqlite3.connect(replayed))
    assert [m.name for m in db.MIGRATIONS.applied(fresh)] == [fn.__name__ for fn in db.REGISTERED]
    assert db.MIGRATIONS.pending(fresh) == []


def test_a_migration_the_snapshot_lacks_is_replayed_on_a_brand_new_file(tmp_path, monkeypatch):
    def m999_extra(d):
        d.execute("CREATE TABLE extra (id TEXT)")

    monkeypatch.setattr(db, "REGISTERED", [*db.REGISTERED, m999_extra])
    if "MIGRATIONS" in vars(db):
        monkeypatch.delattr(db, "MIGRATIONS")   # built from the registered list on first use
    d = db.connect(tmp_path / "store.db")
    assert "extra" in d.table_names() and _columns(d)["requests"] == EXPECTED["requests"]


def test_opening_a_new_or_current_file_or_its_twin_does_not_load_sqlite_utils(tmp_path):
    """The runner's start-up: creating a store, a twin of it for each sender (Store.twin) and
    writing to them needs only sqlite3 (sqlite-utils is 0.15 s of imports before the first POST)."""
    code = ("import sys; from core.store import open_store; st = open_store(sys.argv[1]); "
            "st.heartbeat; st.db.execute('SELECT count(*) FROM requests').fetchone(); "
            "tw = st.twin(); tw.db.execute('SELECT count(*) FROM requests').fetchone(); tw.close(); st.close(); "
            "print('sqlite_utils' in sys.modules)")
    path = tmp_path / "dashboard.db"
    for _ in range(2):   # brand new, then up to date
        out = subprocess.run([sys.executable, "-c", code, str(path)], capture_output=True, text=True, check=True)
        assert out.stdout.strip() == "False", out.stderr
