"""The migrations list: every change to the store's schema, in order, each a named function.

Append-only (sqlite-utils' `Migrations`, llm's `m001_...`): a migration once released is never
edited; a new change is a new function at the end. `core/store/db.py` applies the pending ones,
each in its own transaction with its record, or creates a blank file from the snapshot in
core/store/_schema.py in one step (a test holds the snapshot to replaying this list). The length of
this module is its job: it is the schema's whole history.
"""
from __future__ import annotations

from collections.abc import Callable
from typing import Any

MIGRATION_SET = "dashboard"
REGISTERED: list[Callable[[Any], None]] = []   # in order; see `_migration`


def _migration(fn: Callable[[Any], None]) -> Callable[[Any], None]:
    """Register a migration (applied in the order registered, named after the function)."""
    REGISTERED.append(fn)
    return fn


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
    """"All batches" on the Leaderboard merges each batch's figures (core/evaluation/batch_parts.py)
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


@_migration
def m020_models(db: Any) -> None:
    """Any fal image model (issue 18): an endpoint added from fal's OpenAPI document is kept with
    its document (text and sha256), who added it and when, its price if known, and a refreshed
    document waiting to be adopted; each request records the schema version it was validated
    against (the document's sha256, or the built-in schema's)."""
    db.execute("""CREATE TABLE models (
        endpoint_id TEXT PRIMARY KEY, label TEXT NOT NULL, category TEXT NOT NULL,
        document TEXT NOT NULL, sha256 TEXT NOT NULL, source TEXT NOT NULL,
        added_at TEXT NOT NULL, added_by TEXT, fetched_at TEXT, archived_at TEXT,
        price_usd REAL, price_unit TEXT, price_source TEXT,
        pending_document TEXT, pending_sha256 TEXT, pending_fetched_at TEXT)""")
    db.execute("ALTER TABLE requests ADD COLUMN schema_version TEXT")


@_migration
def m021_audit_and_limits(db: Any) -> None:
    """Sign-in and spending limits (issue 20): an audit trail of who sent which batch at what
    estimated cost, who changed a model, a photo or a limit; and the spending limits an admin set
    on the dashboard, which take the place of the configured ones (a NULL amount: no limit)."""
    db.execute("""CREATE TABLE audit (
        id TEXT PRIMARY KEY, at TEXT NOT NULL, who TEXT, action TEXT NOT NULL,
        subject TEXT NOT NULL, detail TEXT NOT NULL DEFAULT '', usd REAL)""")
    db.execute("CREATE INDEX idx_audit_at ON audit (at)")
    db.execute("""CREATE TABLE limits (
        name TEXT PRIMARY KEY, usd REAL, set_by TEXT, set_at TEXT NOT NULL)""")


@_migration
def m022_billable_units(db: Any) -> None:
    """What fal billed each finished job (`x-fal-billable-units` on its result) and that many units
    at the endpoint's price: what the spending limits count once fal said it, instead of the
    estimate."""
    db.execute("ALTER TABLE requests ADD COLUMN billable_units REAL")
    db.execute("ALTER TABLE requests ADD COLUMN billed_cost REAL")
