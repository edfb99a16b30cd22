"""The store: the ONLY module that writes batch, group, request and result-image rows.

Invariants:
- Write before you send, update after: `record_request` / `create_batch` write a request row
  (status `planned`) before anything leaves; every later step is an update of that row.
- A stored payload is the exact body as canonical JSON plus its `payload_hash`. It never holds a
  `data:` URI (local reference photos appear as `reference://<id>`): writing one raises StoreError.
- Status moves one way: planned -> submitted -> queued -> running -> completed | failed |
  cancelled, or planned -> dry_run. A `mark_*` call that would move a request backwards or out of
  a final state changes nothing and returns False, so a late or repeated update is harmless.
- A batch is run by at most one live runner: `claim_batch` takes ownership atomically
  (BEGIN IMMEDIATE) when there is no owner, the owner's heartbeat is stale or its pid is dead on
  this host; otherwise it raises BatchBusy.
- Reads never load a whole table: history is paginated with LIMIT/OFFSET on indexed columns,
  exports iterate in chunks.
- Functions take a `sqlite_utils.Database` from `core.store.db.connect`; each thread or process uses
  its own connection. Values crossing this module are frozen dataclasses, not dicts.
- Writes of one process to one file take a process-wide lock first, so threads never wait in
  SQLite's busy handler (which sleeps in steps of up to 100 ms); WAL lets readers go on.
"""
from __future__ import annotations

import contextlib
import dataclasses
import datetime as _dt
import json
import os
import socket
import threading
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from core.store.db import FINAL_STATUSES, REQUEST_STATUSES, new_id, now
from core.errors import BatchBusy, StoreError
from core.catalog.payloads import abbreviate, canonical_json, payload_hash

if TYPE_CHECKING:
    import sqlite_utils

    from core.batches.plans import Plan

# Batch statuses: planned (written, never run), running (a runner took it at least once),
# finished (every request final), cancelled (cancel requested and every request final).
BATCH_STATUSES = ("planned", "running", "finished", "cancelled")
HEARTBEAT_STALE_S = 30.0
MAX_PAGE_SIZE = 500

_ACTIVE = ("submitted", "queued", "running")


# ---------------------------------------------------------------------------- values


@dataclass(frozen=True)
class Batch:
    id: str
    name: str
    created_at: str
    status: str
    dry_run: bool
    concurrency: int | None
    cancel_requested: bool
    runner_pid: int | None
    runner_host: str | None
    heartbeat_at: str | None
    started_at: str | None
    finished_at: str | None
    request_count: int
    estimated_cost: float | None
    created_by: str | None
    plan_json: str | None = field(default=None, repr=False)

    @property
    def plan(self) -> dict[str, Any]:
        return json.loads(self.plan_json) if self.plan_json else {}


class _OptionsAndReferences:
    """The JSON text columns groups and requests share, decoded."""

    options_json: str | None
    reference_ids: str | None

    @property
    def options(self) -> dict[str, Any]:
        return json.loads(self.options_json) if self.options_json else {}

    @property
    def references(self) -> tuple[str, ...]:
        return tuple(json.loads(self.reference_ids)) if self.reference_ids else ()


@dataclass(frozen=True)
class Group(_OptionsAndReferences):
    """Requests that share one prompt variant, seed and image size across models."""

    id: str
    batch_id: str | None
    variant_key: str | None
    prompt: str
    options_json: str | None
    seed: int | None
    image_size: str | None
    reference_ids: str | None
    created_at: str


@dataclass(frozen=True)
class RequestRecord(_OptionsAndReferences):
    id: str
    batch_id: str | None
    group_id: str | None
    endpoint: str
    prompt: str | None
    options_json: str | None
    seed: int | None
    image_size: str | None
    reference_ids: str | None
    payload_json: str = field(repr=False)
    payload_hash: str
    status: str
    dry_run: bool
    fal_request_id: str | None
    status_url: str | None
    response_url: str | None
    cancel_url: str | None
    queue_position: int | None
    created_at: str
    submitted_at: str | None
    queued_at: str | None
    started_at: str | None
    completed_at: str | None
    queue_time_s: float | None
    inference_time_s: float | None
    total_time_s: float | None
    http_status: int | None
    error_type: str | None
    error_message: str | None
    estimated_cost: float | None
    response_json: str | None = field(repr=False)
    logs_json: str | None = field(repr=False)
    rerun_of: str | None
    created_by: str | None
    attempts: int

    @property
    def payload(self) -> dict[str, Any]:
        return json.loads(self.payload_json)


    @property
    def response(self) -> dict[str, Any] | None:
        return json.loads(self.response_json) if self.response_json else None

    @property
    def is_final(self) -> bool:
        return self.status in FINAL_STATUSES


@dataclass(frozen=True)
class ResultImage:
    id: str
    request_id: str
    idx: int
    fal_url: str | None
    storage_backend: str | None
    storage_path: str | None
    sha256: str | None
    width: int | None
    height: int | None
    content_type: str | None
    size_bytes: int | None
    nsfw: bool | None
    created_at: str


@dataclass(frozen=True)
class HistoryFilter:
    """What the history page and the CSV export select. Every field is optional; `text` matches
    the prompt (case-insensitive substring); dates are inclusive (a bare date covers its day);
    `surprises` keeps requests with an image whose response checks flagged something
    (`result_images.check_flags`, filled by core/evaluation/fidelity.py)."""

    endpoint: str | None = None
    status: str | None = None
    batch_id: str | None = None
    date_from: _dt.date | _dt.datetime | str | None = None
    date_to: _dt.date | _dt.datetime | str | None = None
    text: str | None = None
    surprises: bool = False
    page: int = 1
    page_size: int = 50


@dataclass(frozen=True)
class Page:
    rows: tuple[RequestRecord, ...]
    total: int
    page: int
    page_size: int

    @property
    def pages(self) -> int:
        return max(1, -(-self.total // self.page_size))


@dataclass(frozen=True)
class BatchProgress:
    batch_id: str
    total: int
    counts: Mapping[str, int]
    estimated_cost: float
    completed_cost: float
    dry_run: bool
    cancel_requested: bool

    @property
    def done(self) -> int:
        return sum(n for s, n in self.counts.items() if s in FINAL_STATUSES)

    @property
    def is_finished(self) -> bool:
        return self.total > 0 and self.done == self.total

    def summary(self) -> str:
        parts = [f"{s} {self.counts[s]}" for s in REQUEST_STATUSES if self.counts.get(s)]
        return f"{self.done}/{self.total} done ({', '.join(parts) or 'nothing yet'}), " \
               f"estimated ${self.estimated_cost:.3f}"


@dataclass(frozen=True)
class DiffEntry:
    """One difference; `path` is dotted with list indexes, e.g. `image_size.width`, `loras[0].scale`."""

    path: str
    old: Any = None
    new: Any = None


@dataclass(frozen=True)
class PayloadDiff:
    a_id: str
    b_id: str
    added: tuple[DiffEntry, ...]
    removed: tuple[DiffEntry, ...]
    changed: tuple[DiffEntry, ...]

    @property
    def same(self) -> bool:
        return not (self.added or self.removed or self.changed)


# ---------------------------------------------------------------------------- helpers


def _rows(db: sqlite_utils.Database, sql: str, params: Sequence[Any] = ()) -> Iterator[dict]:
    cursor = db.execute(sql, list(params))
    keys = [d[0] for d in cursor.description]
    for row in cursor:
        yield dict(zip(keys, row))


def _build(cls: type, row: Mapping[str, Any]):
    values = {}
    for f in dataclasses.fields(cls):
        v = row.get(f.name)
        if f.name in ("dry_run", "cancel_requested") or (f.name == "nsfw" and v is not None):
            v = bool(v)
        values[f.name] = v
    if cls is RequestRecord and values["attempts"] is None:
        values["attempts"] = 0
    if cls is Batch and values["request_count"] is None:
        values["request_count"] = 0
    return cls(**values)


def _seconds_between(start: str | None, end: str | None) -> float | None:
    if not start or not end:
        return None
    delta = _dt.datetime.fromisoformat(end) - _dt.datetime.fromisoformat(start)
    return round(delta.total_seconds(), 6)


_LOCKS_GUARD = threading.Lock()
_LOCKS: dict[str, threading.RLock] = {}


def _write_lock(db: sqlite_utils.Database) -> threading.RLock:
    """One lock per database file in this process. Writers of one process (the runner's threads)
    queue on it instead of on SQLite's busy handler, which sleeps in steps of up to 100 ms;
    other processes still meet the busy timeout."""
    lock = getattr(db, "_store_write_lock", None)
    if lock is None:
        path = db.conn.execute("PRAGMA database_list").fetchone()[2] or f"memory:{id(db)}"
        with _LOCKS_GUARD:
            lock = _LOCKS.setdefault(path, threading.RLock())
        db._store_write_lock = lock  # type: ignore[attr-defined]
    return lock


def _write(db: sqlite_utils.Database, sql: str, params: Sequence[Any]) -> Any:
    with _write_lock(db):
        return db.execute(sql, list(params))


@contextlib.contextmanager
def _write_transaction(db: sqlite_utils.Database) -> Iterator[None]:
    """BEGIN IMMEDIATE: take the write lock up front, so a read-then-write never fails with
    SQLITE_BUSY on lock upgrade (the busy timeout does not cover that case)."""
    with _write_lock(db):
        if db.conn.in_transaction:
            with db.atomic():
                yield
            return
        db.execute("BEGIN IMMEDIATE")
        try:
            yield
        except BaseException:
            if db.conn.in_transaction:
                db.execute("ROLLBACK")
            raise
        db.execute("COMMIT")


def _check_payload(payload: Mapping[str, Any]) -> str:
    text = canonical_json(payload)
    if '"data:' in text:
        raise StoreError("A payload to be stored carries a data: URI; store local reference photos "
                         "as reference://<id> and build the data: URI only at send time.")
    return text


def _json_or_none(value: Any) -> str | None:
    if value is None:
        return None
    return canonical_json(abbreviate(value))


# ---------------------------------------------------------------------------- batches


def create_batch(db: sqlite_utils.Database, plan: Plan, *, dry_run: bool,
                 concurrency: int | None = None, created_by: str | None = None) -> Batch:
    """Write a planned batch in one transaction: the batch, its groups and one `planned` row per
    request. Nothing is sent here."""
    if not plan.final:
        raise StoreError("This plan is a preview: its reference files are not uploaded yet. "
                         "Make it again with upload=True before recording the batch.")
    created = now()
    batch_id = new_id()
    for req in plan.requests:
        _check_payload(req.payload)
    with _write_transaction(db):
        db["batches"].insert({
            "id": batch_id, "name": plan.name, "created_at": created, "created_by": created_by,
            "plan_json": canonical_json(plan.plan_json), "status": "planned", "dry_run": int(dry_run),
            "concurrency": concurrency, "cancel_requested": 0,
            "request_count": len(plan.requests), "estimated_cost": plan.estimated_cost,
        })
        group_ids: dict[str, str] = {}
        for g in plan.groups:
            group_ids[g.key] = new_id()
            db["groups"].insert({
                "id": group_ids[g.key], "batch_id": batch_id, "variant_key": g.variant_key,
                "prompt": g.prompt, "options_json": canonical_json(g.options), "seed": g.seed,
                "image_size": g.image_size, "reference_ids": canonical_json(list(g.reference_ids)),
                "created_at": created,
            })
        rows = []
        for req in plan.requests:
            rows.append({
                "id": new_id(), "batch_id": batch_id, "group_id": group_ids[req.group_key],
                "endpoint": req.endpoint, "prompt": req.prompt,
                "options_json": canonical_json(req.options), "seed": req.seed,
                "image_size": req.image_size,
                "reference_ids": canonical_json(list(req.reference_ids)),
                "payload_json": canonical_json(req.payload), "payload_hash": payload_hash(req.payload),
                "status": "planned", "dry_run": int(dry_run), "created_at": now(),
                "estimated_cost": req.estimated_cost, "created_by": created_by, "attempts": 0,
            })
        db["requests"].insert_all(rows)
    return get_batch(db, batch_id)


def get_batch(db: sqlite_utils.Database, batch_id: str) -> Batch:
    for row in _rows(db, "SELECT * FROM batches WHERE id = ?", [batch_id]):
        return _build(Batch, row)
    raise StoreError(f"No batch with id {batch_id!r}; list batches with `python -m core batch status`.")


def list_batches(db: sqlite_utils.Database, *, limit: int = 50, offset: int = 0) -> list[Batch]:
    """Newest first."""
    return [_build(Batch, r) for r in _rows(
        db, "SELECT * FROM batches ORDER BY created_at DESC, id DESC LIMIT ? OFFSET ?", [limit, offset])]


def get_groups(db: sqlite_utils.Database, batch_id: str) -> list[Group]:
    return [_build(Group, r) for r in _rows(
        db, "SELECT * FROM groups WHERE batch_id = ? ORDER BY created_at, rowid", [batch_id])]


def batch_requests(db: sqlite_utils.Database, batch_id: str,
                   statuses: Sequence[str] | None = None) -> list[RequestRecord]:
    """The requests of a batch in planning order, optionally only those in `statuses`."""
    sql = "SELECT * FROM requests WHERE batch_id = ?"
    params: list[Any] = [batch_id]
    if statuses:
        sql += f" AND status IN ({','.join('?' * len(statuses))})"
        params += list(statuses)
    return [_build(RequestRecord, r) for r in _rows(db, sql + " ORDER BY created_at, rowid", params)]


def batch_progress(db: sqlite_utils.Database, batch_id: str) -> BatchProgress:
    batch = get_batch(db, batch_id)
    counts: dict[str, int] = {}
    est = done_cost = 0.0
    for row in _rows(db, "SELECT status, count(*) AS n, total(estimated_cost) AS cost FROM requests "
                         "WHERE batch_id = ? GROUP BY status", [batch_id]):
        counts[row["status"]] = row["n"]
        est += row["cost"]
        if row["status"] == "completed":
            done_cost += row["cost"]
    return BatchProgress(batch_id=batch_id, total=sum(counts.values()), counts=counts,
                         estimated_cost=round(est, 6), completed_cost=round(done_cost, 6),
                         dry_run=batch.dry_run, cancel_requested=batch.cancel_requested)


def unfinished_batches(db: sqlite_utils.Database) -> list[Batch]:
    """Batches with at least one request not in a final state, oldest first."""
    sql = ("SELECT * FROM batches b WHERE EXISTS (SELECT 1 FROM requests r WHERE r.batch_id = b.id "
           f"AND r.status IN ({','.join('?' * 4)})) ORDER BY created_at, id")
    return [_build(Batch, r) for r in _rows(db, sql, ["planned", *_ACTIVE])]


def request_cancel(db: sqlite_utils.Database, batch_id: str) -> Batch:
    """Ask the batch's runner to stop: it sends nothing more and cancels what fal still holds."""
    get_batch(db, batch_id)
    _write(db, "UPDATE batches SET cancel_requested = 1 WHERE id = ?", [batch_id])
    return get_batch(db, batch_id)


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # a killed child nobody has reaped yet still answers kill(0): it is a zombie, not a runner
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            state = f.read().rsplit(b")", 1)[1].split()[0]
        return state not in (b"Z", b"X")
    except (OSError, IndexError):
        return True


def runner_alive(batch: Batch, *, stale_after: float = HEARTBEAT_STALE_S) -> bool:
    """Whether the batch has a live owner: a fresh heartbeat and, on this host, a live pid."""
    if batch.runner_pid is None or batch.heartbeat_at is None:
        return False
    age = _seconds_between(batch.heartbeat_at, now())
    if age is None or age > stale_after:
        return False
    if batch.runner_host == socket.gethostname():
        return _pid_alive(batch.runner_pid)
    return True


def claim_batch(db: sqlite_utils.Database, batch_id: str, *, pid: int | None = None,
                stale_after: float = HEARTBEAT_STALE_S) -> Batch:
    """Make the caller (`pid`, default this process) the batch's runner, or raise BatchBusy."""
    pid = os.getpid() if pid is None else pid
    with _write_transaction(db):
        batch = get_batch(db, batch_id)
        if batch.runner_pid is not None and runner_alive(batch, stale_after=stale_after):
            raise BatchBusy(
                f"Batch {batch_id} is being run by process {batch.runner_pid} on {batch.runner_host} "
                f"(heartbeat {batch.heartbeat_at}); wait for it or cancel it with "
                f"`python -m core batch cancel {batch_id}`.")
        stamp = now()
        db.execute(
            "UPDATE batches SET runner_pid = ?, runner_host = ?, heartbeat_at = ?, status = ?, "
            "started_at = coalesce(started_at, ?), finished_at = NULL WHERE id = ?",
            [pid, socket.gethostname(), stamp, "running", stamp, batch_id])
    return get_batch(db, batch_id)


def heartbeat(db: sqlite_utils.Database, batch_id: str, *, pid: int | None = None) -> Batch:
    """Refresh the owner's heartbeat; BatchBusy if another runner took the batch over."""
    pid = os.getpid() if pid is None else pid
    cur = _write(db, "UPDATE batches SET heartbeat_at = ? WHERE id = ? AND runner_pid = ?",
                     [now(), batch_id, pid])
    if cur.rowcount == 0:
        raise BatchBusy(f"Batch {batch_id} is no longer owned by process {pid}; another runner took it over.")
    return get_batch(db, batch_id)


def release_batch(db: sqlite_utils.Database, batch_id: str, *, pid: int | None = None) -> Batch:
    """Give up ownership; the batch is `finished` / `cancelled` if every request is final."""
    pid = os.getpid() if pid is None else pid
    with _write_transaction(db):
        progress = batch_progress(db, batch_id)
        if progress.is_finished:
            status = "cancelled" if progress.cancel_requested else "finished"
            db.execute("UPDATE batches SET status = ?, finished_at = ?, runner_pid = NULL, "
                       "heartbeat_at = NULL WHERE id = ? AND runner_pid = ?",
                       [status, now(), batch_id, pid])
        else:
            db.execute("UPDATE batches SET runner_pid = NULL, heartbeat_at = NULL "
                       "WHERE id = ? AND runner_pid = ?", [batch_id, pid])
    return get_batch(db, batch_id)


# ---------------------------------------------------------------------------- requests


def record_request(db: sqlite_utils.Database, *, endpoint: str, payload: Mapping[str, Any],
                   batch_id: str | None = None, group_id: str | None = None,
                   prompt: str | None = None, options: Mapping[str, Any] | None = None,
                   seed: int | None = None, image_size: str | None = None,
                   reference_ids: Sequence[str] = (), estimated_cost: float | None = None,
                   dry_run: bool = False, rerun_of: str | None = None,
                   created_by: str | None = None) -> RequestRecord:
    """Write one `planned` request row, before anything is sent."""
    text = _check_payload(payload)
    request_id = new_id()
    with _write_transaction(db):
        db["requests"].insert({
            "id": request_id, "batch_id": batch_id, "group_id": group_id, "endpoint": endpoint,
            "prompt": prompt if prompt is not None else payload.get("prompt"),
            "options_json": canonical_json(dict(options or {})), "seed": seed,
            "image_size": image_size, "reference_ids": canonical_json(list(reference_ids)),
            "payload_json": text, "payload_hash": payload_hash(payload), "status": "planned",
            "dry_run": int(dry_run), "created_at": now(), "estimated_cost": estimated_cost,
            "rerun_of": rerun_of, "created_by": created_by, "attempts": 0,
        })
        if batch_id is not None:
            db.execute("UPDATE batches SET request_count = request_count + 1, "
                       "estimated_cost = coalesce(estimated_cost, 0) + ?, finished_at = NULL, "
                       "status = CASE WHEN status IN ('finished', 'cancelled') THEN 'running' "
                       "ELSE status END WHERE id = ?", [estimated_cost or 0.0, batch_id])
    return get_request(db, request_id)


def get_request(db: sqlite_utils.Database, request_id: str) -> RequestRecord:
    for row in _rows(db, "SELECT * FROM requests WHERE id = ?", [request_id]):
        return _build(RequestRecord, row)
    raise StoreError(f"No request with id {request_id!r}.")


def _transition(db: sqlite_utils.Database, request_id: str, allowed_from: Sequence[str],
                updates: Mapping[str, Any]) -> bool:
    sets = ", ".join(f"{k} = ?" for k in updates)
    cur = _write(
        db, f"UPDATE requests SET {sets} WHERE id = ? AND status IN ({','.join('?' * len(allowed_from))})",
        [*updates.values(), request_id, *allowed_from])
    if cur.rowcount == 0:
        get_request(db, request_id)  # StoreError when the id is unknown
        return False
    return True


def mark_submitted(db: sqlite_utils.Database, request_id: str) -> bool:
    """The POST is about to leave: from here on the job MAY exist at fal."""
    cur = _write(db, "UPDATE requests SET status = 'submitted', submitted_at = ?, "
                     "attempts = coalesce(attempts, 0) + 1 WHERE id = ? AND status = 'planned'",
                     [now(), request_id])
    if cur.rowcount == 0:
        get_request(db, request_id)
        return False
    return True


def mark_unsent(db: sqlite_utils.Database, request_id: str) -> bool:
    """Back to `planned` after a submit that fal surely did not accept (refused key, 429, no
    connection): nothing exists at fal, so sending it later cannot run it twice."""
    return _transition(db, request_id, ("submitted",), {"status": "planned", "submitted_at": None})


def mark_queued(db: sqlite_utils.Database, request_id: str, *, fal_request_id: str,
                status_url: str | None, response_url: str | None, cancel_url: str | None,
                queue_position: int | None = None, http_status: int | None = 200) -> bool:
    """fal accepted the job; its id and URLs are what a resumed runner polls."""
    return _transition(db, request_id, ("submitted",), {
        "status": "queued", "queued_at": now(), "fal_request_id": fal_request_id,
        "status_url": status_url, "response_url": response_url, "cancel_url": cancel_url,
        "queue_position": queue_position, "http_status": http_status,
    })


def mark_running(db: sqlite_utils.Database, request_id: str, *, logs: Any = None) -> bool:
    """fal reported IN_PROGRESS; the queue time is submit -> now."""
    rec = get_request(db, request_id)
    started = now()
    updates: dict[str, Any] = {"status": "running", "started_at": started,
                               "queue_time_s": _seconds_between(rec.submitted_at, started)}
    if logs is not None:
        updates["logs_json"] = _json_or_none(logs)
    return _transition(db, request_id, ("queued",), updates)


def update_queue_position(db: sqlite_utils.Database, request_id: str, position: int | None) -> None:
    _write(db, "UPDATE requests SET queue_position = ? WHERE id = ? AND status = 'queued'",
               [position, request_id])


def mark_completed(db: sqlite_utils.Database, request_id: str, *, response: Any,
                   http_status: int | None = 200, inference_time_s: float | None = None,
                   logs: Any = None) -> bool:
    """The result is in and its images are stored. Timings: total = submit -> now; queue time =
    submit -> IN_PROGRESS seen, else total minus inference time."""
    rec = get_request(db, request_id)
    done = now()
    total = _seconds_between(rec.submitted_at, done)
    if inference_time_s is None and isinstance(response, Mapping):
        timings = response.get("timings")
        if isinstance(timings, Mapping) and isinstance(timings.get("inference"), (int, float)):
            inference_time_s = float(timings["inference"])
    queue_time = rec.queue_time_s
    if queue_time is None and total is not None and inference_time_s is not None:
        queue_time = max(0.0, round(total - inference_time_s, 6))
    updates: dict[str, Any] = {
        "status": "completed", "completed_at": done, "total_time_s": total,
        "queue_time_s": queue_time, "inference_time_s": inference_time_s,
        "http_status": http_status, "response_json": _json_or_none(response),
        "error_type": None, "error_message": None,
    }
    if logs is not None:
        updates["logs_json"] = _json_or_none(logs)
    return _transition(db, request_id, ("submitted", "queued", "running"), updates)


def mark_failed(db: sqlite_utils.Database, request_id: str, *, error_type: str, error_message: str,
                http_status: int | None = None, response: Any = None,
                inference_time_s: float | None = None) -> bool:
    """A final failure, with what happened and what to do in `error_message`."""
    rec = get_request(db, request_id)
    done = now()
    return _transition(db, request_id, ("planned", "submitted", "queued", "running"), {
        "status": "failed", "completed_at": done,
        "total_time_s": _seconds_between(rec.submitted_at, done),
        "inference_time_s": inference_time_s, "http_status": http_status,
        "error_type": error_type, "error_message": abbreviate(error_message),
        "response_json": _json_or_none(response),
    })


def mark_cancelled(db: sqlite_utils.Database, request_id: str, *, reason: str = "cancelled by user",
                   http_status: int | None = None) -> bool:
    rec = get_request(db, request_id)
    done = now()
    return _transition(db, request_id, ("planned", "submitted", "queued", "running"), {
        "status": "cancelled", "completed_at": done,
        "total_time_s": _seconds_between(rec.submitted_at, done),
        "error_type": "cancelled", "error_message": reason, "http_status": http_status,
    })


def mark_dry_run(db: sqlite_utils.Database, request_id: str) -> bool:
    """Built and validated, recorded, and deliberately not sent (no FAL_KEY)."""
    return _transition(db, request_id, ("planned",), {"status": "dry_run", "dry_run": 1,
                                                      "completed_at": now()})


def add_result_image(db: sqlite_utils.Database, request_id: str, *, idx: int, fal_url: str | None,
                     storage_backend: str | None, storage_path: str | None, sha256: str | None,
                     width: int | None, height: int | None, content_type: str | None,
                     size_bytes: int | None, nsfw: bool | None) -> ResultImage:
    """Record one output image; idempotent per (request, idx), so a resumed download overwrites."""
    get_request(db, request_id)
    row = {
        "request_id": request_id, "idx": idx, "fal_url": fal_url,
        "storage_backend": storage_backend, "storage_path": storage_path, "sha256": sha256,
        "width": width, "height": height, "content_type": content_type, "size_bytes": size_bytes,
        "nsfw": None if nsfw is None else int(bool(nsfw)), "created_at": now(),
    }
    cols = ["id", *row]
    updates = ", ".join(f"{c} = excluded.{c}" for c in row if c not in ("request_id", "idx"))
    _write(db, f"INSERT INTO result_images ({', '.join(cols)}) VALUES ({', '.join('?' * len(cols))}) "
               f"ON CONFLICT(request_id, idx) DO UPDATE SET {updates}", [new_id(), *row.values()])
    return _build(ResultImage, next(_rows(
        db, "SELECT * FROM result_images WHERE request_id = ? AND idx = ?", [request_id, idx])))


def result_images(db: sqlite_utils.Database, request_ids: Sequence[str]) -> dict[str, list[ResultImage]]:
    """Images per request id, in output order (every id present, possibly with no images)."""
    out: dict[str, list[ResultImage]] = {rid: [] for rid in request_ids}
    ids = list(out)
    for start in range(0, len(ids), 500):
        chunk = ids[start:start + 500]
        for row in _rows(db, f"SELECT * FROM result_images WHERE request_id IN "
                             f"({','.join('?' * len(chunk))}) ORDER BY request_id, idx", chunk):
            out[row["request_id"]].append(_build(ResultImage, row))
    return out


def rerun_request(db: sqlite_utils.Database, request_id: str, *,
                  created_by: str | None = None, dry_run: bool | None = None) -> RequestRecord:
    """A new `planned` row with the same endpoint and payload, linked by `rerun_of`, in the same
    batch (or a new one-request batch), so the batch runner sends it.

    `dry_run` is the mode to re-run in (the current settings'): a dry-run request re-run once a
    key is set goes to a new live one-request batch, and the other way round."""
    with _write_transaction(db):
        return _rerun(db, get_request(db, request_id), created_by, dry_run)


def _rerun(db: sqlite_utils.Database, old: RequestRecord, created_by: str | None,
           dry_run: bool | None) -> RequestRecord:
    mode = old.dry_run if dry_run is None else bool(dry_run)
    batch_id = old.batch_id
    if batch_id is not None and bool(get_batch(db, batch_id).dry_run) != mode:
        batch_id = None
    if batch_id is None:
        batch_id = new_id()
        db["batches"].insert({
            "id": batch_id, "name": f"re-run of {old.id}", "created_at": now(),
            "created_by": created_by, "status": "planned", "dry_run": int(mode),
            "cancel_requested": 0, "request_count": 0, "estimated_cost": 0.0,
        })
    else:
        # a re-run in a batch that was cancelled must not be cancelled on arrival
        db.execute("UPDATE batches SET cancel_requested = 0 WHERE id = ?", [batch_id])
    return record_request(
        db, endpoint=old.endpoint, payload=old.payload, batch_id=batch_id, group_id=old.group_id,
        prompt=old.prompt, options=old.options, seed=old.seed, image_size=old.image_size,
        reference_ids=old.references, estimated_cost=old.estimated_cost, dry_run=mode,
        rerun_of=old.id, created_by=created_by)


def last_payload_sent(db: sqlite_utils.Database) -> RequestRecord | None:
    """The newest request that actually left for fal, with its payload abbreviated (the old
    `/api/debug/last-prompt`)."""
    for row in _rows(db, "SELECT * FROM requests WHERE submitted_at IS NOT NULL "
                         "ORDER BY submitted_at DESC LIMIT 1"):
        row["payload_json"] = canonical_json(abbreviate(json.loads(row["payload_json"])))
        return _build(RequestRecord, row)
    return None


# ---------------------------------------------------------------------------- diff


def diff_values(a: Any, b: Any, path: str = "") -> tuple[list[DiffEntry], list[DiffEntry], list[DiffEntry]]:
    """(added, removed, changed) between two JSON values, walking dicts by key, lists by index."""
    added: list[DiffEntry] = []
    removed: list[DiffEntry] = []
    changed: list[DiffEntry] = []

    def walk(x: Any, y: Any, p: str) -> None:
        if isinstance(x, Mapping) and isinstance(y, Mapping):
            for k in sorted(set(x) | set(y), key=str):
                sub = f"{p}.{k}" if p else str(k)
                if k not in y:
                    removed.append(DiffEntry(sub, old=x[k]))
                elif k not in x:
                    added.append(DiffEntry(sub, new=y[k]))
                else:
                    walk(x[k], y[k], sub)
        elif isinstance(x, list) and isinstance(y, list):
            for i in range(max(len(x), len(y))):
                sub = f"{p}[{i}]"
                if i >= len(y):
                    removed.append(DiffEntry(sub, old=x[i]))
                elif i >= len(x):
                    added.append(DiffEntry(sub, new=y[i]))
                else:
                    walk(x[i], y[i], sub)
        elif x != y or type(x) is not type(y):
            changed.append(DiffEntry(p, old=x, new=y))

    walk(a, b, path)
    return added, removed, changed


def diff_payloads(db: sqlite_utils.Database, a_id: str, b_id: str) -> PayloadDiff:
    """What changed from request `a` to request `b` (payloads, with data: URIs abbreviated)."""
    a, b = get_request(db, a_id), get_request(db, b_id)
    added, removed, changed = diff_values(abbreviate(a.payload), abbreviate(b.payload))
    if a.endpoint != b.endpoint:
        changed.insert(0, DiffEntry("(endpoint)", old=a.endpoint, new=b.endpoint))
    return PayloadDiff(a_id, b_id, tuple(added), tuple(removed), tuple(changed))


# ---------------------------------------------------------------------------- history


def _bound(value: _dt.date | _dt.datetime | str, *, end: bool) -> str:
    """An ISO UTC text bound comparable with stored `created_at`; a bare date covers its day."""
    if isinstance(value, str):
        try:
            value = _dt.datetime.fromisoformat(value) if "T" in value or " " in value \
                else _dt.date.fromisoformat(value)
        except ValueError:
            raise StoreError(f"{value!r} is not a date; use YYYY-MM-DD or an ISO date-time.") from None
    if isinstance(value, _dt.datetime):
        if value.tzinfo is None:
            value = value.replace(tzinfo=_dt.timezone.utc)
        return value.astimezone(_dt.timezone.utc).isoformat(timespec="microseconds")
    day = _dt.datetime.combine(value, _dt.time.max if end else _dt.time.min, tzinfo=_dt.timezone.utc)
    return day.isoformat(timespec="microseconds")


def _like_escape(text: str) -> str:
    return text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


def history_where(f: HistoryFilter, alias: str = "") -> tuple[str, list[Any]]:
    """The SQL WHERE clause (without the keyword; "1" when empty) and its parameters for a filter.
    Shared by `query_history` and the CSV export so both select exactly the same rows."""
    a = f"{alias}." if alias else ""
    clauses: list[str] = []
    params: list[Any] = []
    if f.endpoint:
        clauses.append(f"{a}endpoint = ?")
        params.append(f.endpoint)
    if f.status:
        if f.status not in REQUEST_STATUSES:
            raise StoreError(f"Unknown status {f.status!r}; one of {', '.join(REQUEST_STATUSES)}.")
        clauses.append(f"{a}status = ?")
        params.append(f.status)
    if f.batch_id:
        clauses.append(f"{a}batch_id = ?")
        params.append(f.batch_id)
    if f.date_from:
        clauses.append(f"{a}created_at >= ?")
        params.append(_bound(f.date_from, end=False))
    if f.date_to:
        clauses.append(f"{a}created_at <= ?")
        params.append(_bound(f.date_to, end=True))
    if f.text and f.text.strip():
        # LIKE is case-insensitive for ASCII; measured fast enough at 100k rows (docs/batch.md)
        clauses.append(f"{a}prompt LIKE ? ESCAPE '\\'")
        params.append(f"%{_like_escape(f.text.strip())}%")
    if f.surprises:
        clauses.append(f"EXISTS (SELECT 1 FROM result_images si WHERE si.request_id = {a or 'requests.'}id "
                       "AND si.check_flags <> '')")
    return (" AND ".join(clauses) or "1"), params


def count_history(db: sqlite_utils.Database, f: HistoryFilter) -> int:
    where, params = history_where(f)
    return db.execute(f"SELECT count(*) FROM requests WHERE {where}", params).fetchone()[0]


def query_history(db: sqlite_utils.Database, f: HistoryFilter) -> Page:
    """One page of requests matching `f`, newest first, and the total count."""
    if not 1 <= f.page_size <= MAX_PAGE_SIZE:
        raise StoreError(f"page_size must be between 1 and {MAX_PAGE_SIZE}, got {f.page_size}.")
    page = max(1, f.page)
    where, params = history_where(f)
    total = count_history(db, f)
    rows = tuple(_build(RequestRecord, r) for r in _rows(
        db, f"SELECT * FROM requests WHERE {where} ORDER BY created_at DESC, id DESC "
            f"LIMIT ? OFFSET ?", [*params, f.page_size, (page - 1) * f.page_size]))
    return Page(rows=rows, total=total, page=page, page_size=f.page_size)


def iter_history(db: sqlite_utils.Database, f: HistoryFilter, *, chunk_size: int = 5000,
                 columns: Sequence[str] | None = None) -> Iterator[list[dict[str, Any]]]:
    """Every request matching `f` (ignoring page), newest first, in chunks of raw row dicts, each
    with an "images" list of raw result_images rows in output order; `columns` limits the request
    columns read (id and created_at are always read). Keyset pagination on
    (created_at, id): memory stays bounded by `chunk_size` whatever the table size."""
    where, params = history_where(f, "r")
    wanted = ["id", "created_at", *(c for c in (columns or ()) if c not in ("id", "created_at"))]
    select = ", ".join(f"r.{c}" for c in wanted) if columns else "r.*"
    cursor_key: tuple[str, str] | None = None
    while True:
        extra, extra_params = "", []
        if cursor_key is not None:
            # a row value keeps the created_at index usable (an OR would sort the rest each chunk)
            extra = " AND (r.created_at, r.id) < (?, ?)"
            extra_params = list(cursor_key)
        requests = list(_rows(
            db, f"SELECT {select} FROM requests r WHERE {where}{extra} "
                f"ORDER BY r.created_at DESC, r.id DESC LIMIT ?", [*params, *extra_params, chunk_size]))
        if not requests:
            return
        by_id = {r["id"]: r for r in requests}
        for r in requests:
            r["images"] = []
        ids = list(by_id)
        for start in range(0, len(ids), 500):
            part = ids[start:start + 500]
            for img in _rows(db, f"SELECT * FROM result_images WHERE request_id IN "
                                 f"({','.join('?' * len(part))}) ORDER BY request_id, idx", part):
                by_id[img["request_id"]]["images"].append(img)
        yield requests
        last = requests[-1]
        cursor_key = (last["created_at"], last["id"])
        if len(requests) < chunk_size:
            return
