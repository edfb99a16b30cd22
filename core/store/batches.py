"""Batches and their groups: create a planned batch, read it, and the one-runner ownership rule.

Invariants:
- `create_batch` writes the batch, its groups, its contenders and one `planned` request per
  planned request (naming its contender) in one transaction; nothing is sent here.
- A batch is run by at most one live runner, wherever it runs: the owner (pid AND host) is a
  lease in the batch's row, renewed by `heartbeat`. `claim_batch` takes ownership atomically
  (BEGIN IMMEDIATE; on Postgres the store's advisory lock, so across hosts too) when there is no
  owner, the owner's heartbeat is stale (the lease lapsed: a host that died or lost the
  database) or its pid is dead on this host; otherwise it raises BatchBusy. Only the owner
  (same pid on the same host) renews or releases the lease. Claiming clears the previous stop
  reason. Hosts are assumed to keep their clocks in step (NTP: well under the 30 s a lease
  lasts), since a heartbeat is each host's own time.
- `set_stop_reason` records why a runner stopped before every request was final, so a page
  reads it from the row (never from a log).
"""
from __future__ import annotations

import datetime as _dt

import os
import socket
from collections.abc import Collection
from typing import Any

from core.catalog.payloads import canonical_json, payload_hash
from core.errors import BatchBusy, StoreError
from core.processes import pid_alive
from core.store._sql import _Base, build, check_payload, placeholders, seconds_between
from core.store.boundary import sqlite_boundary
from core.values import new_id, now
from core.store.inputs import NewBatch
from core.values import (
    UNFINISHED_STATUSES, Batch, BatchProgress, Group, RequestRecord, RequestStatus,
)


HEARTBEAT_STALE_S = 30.0
_UNFINISHED = tuple(sorted(UNFINISHED_STATUSES))


def runner_alive(batch: Batch, *, stale_after: float = HEARTBEAT_STALE_S) -> bool:
    """Whether the batch has a live owner: a fresh heartbeat and, on this host, a live pid."""
    if batch.runner_pid is None or batch.heartbeat_at is None:
        return False
    age = seconds_between(batch.heartbeat_at, now())
    if age is None or age > stale_after:
        return False
    if batch.runner_host == socket.gethostname():
        return pid_alive(batch.runner_pid)
    return True


class BatchesMixin(_Base):
    """Rows of `batches` and `groups`."""

    @sqlite_boundary
    def create_batch(self, batch: NewBatch, *, dry_run: bool, concurrency: int | None = None,
                     created_by: str | None = None, launch_key: str | None = None) -> Batch:
        """Write a planned batch in one transaction: the batch, its groups and one `planned` row
        per request. Nothing is sent here. With `launch_key` (what the person confirmed), a batch
        already written under that key is returned instead: a double click, a reload during the
        launch or a second tab never make a second batch."""
        if launch_key is not None:
            found = self.batch_by_launch_key(launch_key)
            if found is not None:
                return found
        if not batch.final:
            raise StoreError("This plan is a preview: its reference files are not uploaded yet. "
                             "Plan it again with upload (`service.plan_batch(..., upload=True)`) before recording it.")
        created = now()
        batch_id = new_id()
        for req in batch.requests:
            check_payload(req.payload)
        with self._write_transaction():
            if launch_key is not None:
                found = self.batch_by_launch_key(launch_key)   # under the write lock: the truth
                if found is not None:
                    return found
            self._insert("batches", {
                "id": batch_id, "name": batch.name, "created_at": created, "created_by": created_by,
                "launch_key": launch_key,
                "plan_json": canonical_json(batch.plan_json), "status": "planned",
                "dry_run": int(dry_run), "concurrency": concurrency, "cancel_requested": 0,
                "request_count": len(batch.requests), "estimated_cost": batch.estimated_cost,
            })
            group_ids: dict[str, str] = {}
            groups = []
            for g in batch.groups:
                group_ids[g.key] = new_id()
                groups.append({
                    "id": group_ids[g.key], "batch_id": batch_id, "variant_key": g.variant_key,
                    "prompt": g.prompt, "options_json": canonical_json(g.options), "seed": g.seed,
                    "image_size": g.image_size,
                    "reference_ids": canonical_json(list(g.reference_ids)), "created_at": created,
                })
            self._insert_all("groups", groups)
            self.save_contenders(req.contender for req in batch.requests)
            self._insert_all("requests", [{
                "id": new_id(), "batch_id": batch_id, "group_id": group_ids[req.group_key],
                "endpoint": req.endpoint, "prompt": req.prompt,
                "options_json": canonical_json(req.options), "seed": req.seed,
                "image_size": req.image_size,
                "reference_ids": canonical_json(list(req.reference_ids)),
                "payload_json": canonical_json(req.payload), "payload_hash": payload_hash(req.payload),
                "status": RequestStatus.PLANNED, "dry_run": int(dry_run), "created_at": now(),
                "estimated_cost": req.estimated_cost, "created_by": created_by, "attempts": 0,
                "contender_id": req.contender.id, "schema_version": req.schema_version or None,
            } for req in batch.requests])
        return self.get_batch(batch_id)

    @sqlite_boundary
    def batch_by_launch_key(self, launch_key: str) -> Batch | None:
        for row in self._rows("SELECT * FROM batches WHERE launch_key = ?", [launch_key]):
            return build(Batch, row)
        return None

    @sqlite_boundary
    def get_batch(self, batch_id: str) -> Batch:
        for row in self._rows("SELECT * FROM batches WHERE id = ?", [batch_id]):
            return build(Batch, row)
        raise StoreError(f"No batch with id {batch_id!r}; list batches with `python -m core batch status`.")

    @sqlite_boundary
    def list_batches(self, *, limit: int = 50, offset: int = 0) -> list[Batch]:
        """Newest first."""
        return [build(Batch, r) for r in self._rows(
            "SELECT * FROM batches ORDER BY created_at DESC, id DESC LIMIT ? OFFSET ?", [limit, offset])]

    @sqlite_boundary
    def get_groups(self, batch_id: str) -> list[Group]:
        return [build(Group, r) for r in self._rows(
            "SELECT * FROM groups WHERE batch_id = ? ORDER BY created_at, rowid", [batch_id])]

    @sqlite_boundary
    def batch_requests(self, batch_id: str, statuses: Collection[str] | None = None) -> list[RequestRecord]:
        """The requests of a batch in planning order, optionally only those in `statuses`."""
        sql = "SELECT * FROM requests WHERE batch_id = ?"
        params: list[Any] = [batch_id]
        if statuses:
            sql += f" AND status IN ({placeholders(len(statuses))})"
            params += sorted(statuses)
        return [build(RequestRecord, r) for r in self._rows(sql + " ORDER BY created_at, rowid", params)]

    @sqlite_boundary
    def batch_progress(self, batch_id: str) -> BatchProgress:
        batch = self.get_batch(batch_id)
        counts: dict[str, int] = {}
        est = done_cost = 0.0
        for row in self._rows("SELECT status, count(*) AS n, total(estimated_cost) AS cost FROM requests "
                              "WHERE batch_id = ? GROUP BY status", [batch_id]):
            counts[row["status"]] = row["n"]
            est += row["cost"]
            if row["status"] == RequestStatus.COMPLETED:
                done_cost += row["cost"]
        return BatchProgress(batch_id=batch_id, total=sum(counts.values()), counts=counts,
                             estimated_cost=round(est, 6), completed_cost=round(done_cost, 6),
                             dry_run=batch.dry_run, cancel_requested=batch.cancel_requested)

    @sqlite_boundary
    def unfinished_batches(self) -> list[Batch]:
        """Batches with work left for a runner (a request planned, being sent or at fal), oldest
        first. Requests in doubt are not such work: only a person moves them on."""
        work = tuple(s for s in _UNFINISHED if s != RequestStatus.IN_DOUBT)
        sql = ("SELECT * FROM batches b WHERE EXISTS (SELECT 1 FROM requests r WHERE r.batch_id = b.id "
               f"AND r.status IN ({placeholders(len(work))})) ORDER BY created_at, id")
        return [build(Batch, r) for r in self._rows(sql, work)]

    @sqlite_boundary
    def request_cancel(self, batch_id: str) -> Batch:
        """Ask the batch's runner to stop: it sends nothing more and cancels what fal still holds."""
        self.get_batch(batch_id)
        self._write("UPDATE batches SET cancel_requested = 1 WHERE id = ?", [batch_id])
        return self.get_batch(batch_id)

    @sqlite_boundary
    def claim_batch(self, batch_id: str, *, pid: int | None = None,
                    stale_after: float = HEARTBEAT_STALE_S) -> Batch:
        """Make the caller (`pid`, default this process) the batch's runner, or raise BatchBusy.
        A new owner starts with no stop reason."""
        pid = os.getpid() if pid is None else pid
        with self._write_transaction():
            batch = self.get_batch(batch_id)
            if batch.runner_pid is not None and runner_alive(batch, stale_after=stale_after):
                raise BatchBusy(
                    f"Batch {batch_id} is being run by process {batch.runner_pid} on {batch.runner_host} "
                    f"(heartbeat {batch.heartbeat_at}); wait for it or cancel it with "
                    f"`python -m core batch cancel {batch_id}`.")
            stamp = now()
            self._write(
                "UPDATE batches SET runner_pid = ?, runner_host = ?, heartbeat_at = ?, status = ?, "
                "started_at = coalesce(started_at, ?), finished_at = NULL, stop_reason = NULL, "
                "stopped_at = NULL WHERE id = ?",
                [pid, socket.gethostname(), stamp, "running", stamp, batch_id])
        return self.get_batch(batch_id)

    @sqlite_boundary
    def heartbeat(self, batch_id: str, *, pid: int | None = None) -> Batch:
        """Refresh the owner's heartbeat; BatchBusy if another runner took the batch over."""
        pid = os.getpid() if pid is None else pid
        cur = self._write("UPDATE batches SET heartbeat_at = ? WHERE id = ? AND runner_pid = ? AND runner_host = ?",
                          [now(), batch_id, pid, socket.gethostname()])
        if cur.rowcount == 0:
            raise BatchBusy(f"Batch {batch_id} is no longer owned by process {pid} on {socket.gethostname()}; "
                            "another runner took it over.")
        return self.get_batch(batch_id)

    @sqlite_boundary
    def release_batch(self, batch_id: str, *, pid: int | None = None) -> Batch:
        """Give up ownership; the batch is `finished` / `cancelled` if every request is final."""
        pid = os.getpid() if pid is None else pid
        with self._write_transaction():
            progress = self.batch_progress(batch_id)
            if progress.is_finished:
                status = "cancelled" if progress.cancel_requested else "finished"
                self._write("UPDATE batches SET status = ?, finished_at = ?, runner_pid = NULL, "
                            "heartbeat_at = NULL WHERE id = ? AND ((runner_pid = ? AND runner_host = ?) "
                            "OR runner_pid IS NULL)", [status, now(), batch_id, pid, socket.gethostname()])
            else:
                self._write("UPDATE batches SET runner_pid = NULL, heartbeat_at = NULL "
                            "WHERE id = ? AND runner_pid = ? AND runner_host = ?",
                            [batch_id, pid, socket.gethostname()])
        return self.get_batch(batch_id)

    @sqlite_boundary
    def set_stop_reason(self, batch_id: str, reason: str | None) -> Batch:
        """Record why the batch's runner stopped (and when); None clears both."""
        self.get_batch(batch_id)
        self._write("UPDATE batches SET stop_reason = ?, stopped_at = ? WHERE id = ?",
                    [reason, None if reason is None else now(), batch_id])
        return self.get_batch(batch_id)

    @sqlite_boundary
    def mark_launched(self, batch_id: str) -> Batch:
        """A runner is being started for the batch: it is "starting" until it claims the batch;
        an earlier stop reason no longer applies."""
        self.get_batch(batch_id)
        self._write("UPDATE batches SET launched_at = ?, stop_reason = NULL, stopped_at = NULL "
                    "WHERE id = ?", [now(), batch_id])
        return self.get_batch(batch_id)

    @sqlite_boundary
    def set_unreachable(self, batch_id: str, since: _dt.datetime | None) -> None:
        """Since when fal has not answered the batch's runner (None: it answers)."""
        value = None if since is None else since.astimezone(_dt.timezone.utc).isoformat(timespec="seconds")
        self._write("UPDATE batches SET fal_unreachable_since = ? WHERE id = ?", [value, batch_id])
