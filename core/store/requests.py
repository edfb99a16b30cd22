"""Request rows: write before you send, then one update per step of the lifecycle.

Invariants:
- `record_request` (and `create_batch`) write a `planned` row before anything leaves; every
  later step is an update of that row. Every row names its contender (`contender_id`); a re-run
  keeps the one of the request it repeats.
- A stored payload is the exact body as canonical JSON plus its `payload_hash`. It never holds a
  `data:` URI (local reference photos appear as `reference://<id>`): writing one raises StoreError.
- Status moves one way: planned -> submitted -> queued -> running -> completed | failed |
  cancelled, or planned -> dry_run; `mark_unsent` is the one way back (submitted -> planned, when
  fal surely did not accept the job). A `mark_*` call that would move a request backwards or out
  of a final state changes nothing and returns False, so a late or repeated update is harmless.
"""
from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

from core.catalog.payloads import DiffEntry, PayloadDiff, canonical_json, diff_values, payload_hash
from core.redact import abbreviate
from core.catalog import contenders
from core.catalog.contenders import Contender
from core.errors import StoreError
from core.store._sql import (
    _Base,
    build,
    check_payload,
    json_or_none,
    placeholders,
    response_json,
    seconds_between,
)
from core.store.boundary import sqlite_boundary
from core.values import new_id, now
from core.values import (
    ACTIVE_STATUSES, FINAL_STATUSES, UNFINISHED_STATUSES, RequestRecord, RequestStatus,
)

_ACTIVE = tuple(sorted(ACTIVE_STATUSES))
_UNFINISHED = tuple(sorted(UNFINISHED_STATUSES))


class RequestsMixin(_Base):
    """Rows of `requests` (re-runs also read `batches`: `get_batch` comes from BatchesMixin)."""

    @sqlite_boundary
    def record_request(self, *, endpoint: str, payload: Mapping[str, Any],
                       batch_id: str | None = None, group_id: str | None = None,
                       prompt: str | None = None, options: Mapping[str, Any] | None = None,
                       seed: int | None = None, image_size: str | None = None,
                       reference_ids: Sequence[str] = (), estimated_cost: float | None = None,
                       dry_run: bool = False, rerun_of: str | None = None,
                       created_by: str | None = None,
                       contender: Contender | None = None) -> RequestRecord:
        """Write one `planned` request row, before anything is sent. Its contender is `contender`
        when given (a re-run keeps its own), else derived from the endpoint and payload."""
        text = check_payload(payload)
        request_id = new_id()
        if contender is None:
            contender = contenders.from_request(endpoint, payload)
        with self._write_transaction():
            self.save_contenders([contender])
            self._insert("requests", {
                "id": request_id, "batch_id": batch_id, "group_id": group_id, "endpoint": endpoint,
                "prompt": prompt if prompt is not None else payload.get("prompt"),
                "options_json": canonical_json(dict(options or {})), "seed": seed,
                "image_size": image_size, "reference_ids": canonical_json(list(reference_ids)),
                "payload_json": text, "payload_hash": payload_hash(payload),
                "status": RequestStatus.PLANNED, "dry_run": int(dry_run), "created_at": now(),
                "estimated_cost": estimated_cost, "rerun_of": rerun_of, "created_by": created_by, "attempts": 0,
                "contender_id": contender.id,
            })
            if batch_id is not None:
                self._write("UPDATE batches SET request_count = request_count + 1, "
                            "estimated_cost = coalesce(estimated_cost, 0) + ?, finished_at = NULL, "
                            "status = CASE WHEN status IN ('finished', 'cancelled') THEN 'running' "
                            "ELSE status END WHERE id = ?", [estimated_cost or 0.0, batch_id])
        return self.get_request(request_id)

    @sqlite_boundary
    def get_request(self, request_id: str) -> RequestRecord:
        for row in self._rows("SELECT * FROM requests WHERE id = ?", [request_id]):
            return build(RequestRecord, row)
        raise StoreError(f"No request with id {request_id!r}.")

    def _transition(self, request_id: str, allowed_from: Sequence[str],
                    updates: Mapping[str, Any]) -> bool:
        sets = ", ".join(f"{k} = ?" for k in updates)
        cur = self._write(
            f"UPDATE requests SET {sets} WHERE id = ? AND status IN ({placeholders(len(allowed_from))})",
            [*updates.values(), request_id, *allowed_from])
        if cur.rowcount == 0:
            self.get_request(request_id)  # StoreError when the id is unknown
            return False
        if updates.get("status") in FINAL_STATUSES:
            self._keep_export_lines(request_id)
        return True

    @sqlite_boundary
    def mark_submitted(self, request_id: str, *, at: str | None = None) -> bool:
        """The POST is about to leave: from here on the job MAY exist at fal. `at`: the time to
        record (`now()` when not given); a runner passes its own, which it hands to
        `mark_running` later instead of reading the row back."""
        cur = self._write("UPDATE requests SET status = ?, submitted_at = ?, "
                          "attempts = coalesce(attempts, 0) + 1 WHERE id = ? AND status = ?",
                          [RequestStatus.SUBMITTED, at or now(), request_id, RequestStatus.PLANNED])
        if cur.rowcount == 0:
            self.get_request(request_id)
            return False
        return True

    @sqlite_boundary
    def mark_unsent(self, request_id: str) -> bool:
        """Back to `planned` after a submit that fal surely did not accept (refused key, 429, no
        connection): nothing exists at fal, so sending it later cannot run it twice."""
        return self._transition(request_id, (RequestStatus.SUBMITTED,),
                                {"status": RequestStatus.PLANNED, "submitted_at": None})

    @sqlite_boundary
    def mark_in_doubt(self, request_id: str, *, reason: str, http_status: int | None = None) -> bool:
        """The submit's answer never came: fal may hold the job (see RequestStatus.IN_DOUBT)."""
        return self._transition(request_id, (RequestStatus.SUBMITTED,), {
            "status": RequestStatus.IN_DOUBT, "error_type": "in_doubt",
            "error_message": abbreviate(reason), "http_status": http_status})

    @sqlite_boundary
    def send_again(self, request_id: str, *, by: str) -> bool:
        """A person chose to send an in-doubt request again, knowing fal may run (and bill) it
        twice: back to `planned`, with who chose it and when kept on the row."""
        if not by or not by.strip():
            raise StoreError("say who chooses to send it again (it may be paid twice).")
        return self._transition(request_id, (RequestStatus.IN_DOUBT,), {
            "status": RequestStatus.PLANNED, "submitted_at": None, "resent_by": by.strip(),
            "resent_at": now(), "error_type": None, "error_message": None, "http_status": None})

    @sqlite_boundary
    def give_up(self, request_id: str, *, by: str) -> bool:
        """A person gave up on an in-doubt request (found it in fal's history, or does not need
        it): final as failed `submit_unconfirmed`, with who decided."""
        if not by or not by.strip():
            raise StoreError("say who gives the request up.")
        rec = self.get_request(request_id)
        done = now()
        return self._transition(request_id, (RequestStatus.IN_DOUBT,), {
            "status": RequestStatus.FAILED, "completed_at": done, "resent_by": by.strip(),
            "resent_at": done, "total_time_s": seconds_between(rec.submitted_at, done),
            "error_type": "submit_unconfirmed",
            "error_message": abbreviate(f"given up by {by.strip()} while in doubt: {rec.error_message or ''}")})

    @sqlite_boundary
    def mark_queued(self, request_id: str, *, fal_request_id: str, status_url: str | None,
                    response_url: str | None, cancel_url: str | None,
                    queue_position: int | None = None, http_status: int | None = 200) -> bool:
        """fal accepted the job; its id and URLs are what a resumed runner polls. A request in
        doubt whose id turns up (the recovery journal) is settled here too."""
        return self._transition(request_id, (RequestStatus.SUBMITTED, RequestStatus.IN_DOUBT), {
            "status": RequestStatus.QUEUED, "queued_at": now(), "fal_request_id": fal_request_id,
            "status_url": status_url, "response_url": response_url, "cancel_url": cancel_url,
            "queue_position": queue_position, "http_status": http_status,
            "error_type": None, "error_message": None,
        })

    @sqlite_boundary
    def mark_running(self, request_id: str, *, logs: Any = None, submitted_at: str | None = None) -> bool:
        """fal reported IN_PROGRESS; the queue time is submit -> now. `submitted_at`: the row's
        submit time when the caller has it (the runner that wrote it, `mark_submitted(at=)`):
        one statement instead of a read and a write, on the sender's path."""
        if submitted_at is None:
            submitted_at = self.get_request(request_id).submitted_at
        started = now()
        updates: dict[str, Any] = {"status": RequestStatus.RUNNING, "started_at": started,
                                   "queue_time_s": seconds_between(submitted_at, started)}
        if logs is not None:
            updates["logs_json"] = json_or_none(logs)
        return self._transition(request_id, (RequestStatus.QUEUED,), updates)

    @sqlite_boundary
    def update_queue_position(self, request_id: str, position: int | None) -> None:
        self._write("UPDATE requests SET queue_position = ? WHERE id = ? AND status = ?",
                    [position, request_id, RequestStatus.QUEUED])

    @sqlite_boundary
    def mark_completed(self, request_id: str, *, response: Any, http_status: int | None = 200,
                       inference_time_s: float | None = None, logs: Any = None,
                       billable_units: float | None = None, billed_cost: float | None = None) -> bool:
        """The result is in and its images are stored. Timings: total = submit -> now; queue time =
        submit -> IN_PROGRESS seen, else total minus `inference_time_s` (fal's `timings.inference`,
        read from the response by the fal client: the store does not parse fal's bodies)."""
        rec = self.get_request(request_id)
        done = now()
        total = seconds_between(rec.submitted_at, done)
        queue_time = rec.queue_time_s
        if queue_time is None and total is not None and inference_time_s is not None:
            queue_time = max(0.0, round(total - inference_time_s, 6))
        updates: dict[str, Any] = {
            "status": RequestStatus.COMPLETED, "completed_at": done, "total_time_s": total,
            "queue_time_s": queue_time, "inference_time_s": inference_time_s,
            "http_status": http_status, "response_json": response_json(response),
            "error_type": None, "error_message": None,
            "billable_units": billable_units, "billed_cost": billed_cost,
        }
        if logs is not None:
            updates["logs_json"] = json_or_none(logs)
        return self._transition(request_id, _ACTIVE, updates)

    @sqlite_boundary
    def mark_failed(self, request_id: str, *, error_type: str, error_message: str,
                    http_status: int | None = None, response: Any = None,
                    inference_time_s: float | None = None) -> bool:
        """A final failure, with what happened and what to do in `error_message`."""
        rec = self.get_request(request_id)
        done = now()
        return self._transition(request_id, _UNFINISHED, {
            "status": RequestStatus.FAILED, "completed_at": done,
            "total_time_s": seconds_between(rec.submitted_at, done),
            "inference_time_s": inference_time_s, "http_status": http_status,
            "error_type": error_type, "error_message": abbreviate(error_message),
            "response_json": response_json(response),
        })

    @sqlite_boundary
    def mark_cancelled(self, request_id: str, *, reason: str = "cancelled by user",
                       http_status: int | None = None) -> bool:
        rec = self.get_request(request_id)
        done = now()
        return self._transition(request_id, _UNFINISHED, {
            "status": RequestStatus.CANCELLED, "completed_at": done,
            "total_time_s": seconds_between(rec.submitted_at, done),
            "error_type": "cancelled", "error_message": reason, "http_status": http_status,
        })

    @sqlite_boundary
    def mark_dry_run(self, request_id: str) -> bool:
        """Built and validated, recorded, and deliberately not sent (no FAL_KEY)."""
        return self._transition(request_id, (RequestStatus.PLANNED,),
                                {"status": RequestStatus.DRY_RUN, "dry_run": 1, "completed_at": now()})

    @sqlite_boundary
    def rerun_request(self, request_id: str, *, created_by: str | None = None,
                      dry_run: bool | None = None) -> RequestRecord:
        """A new `planned` row with the same endpoint and payload, linked by `rerun_of`, in the
        same batch (or a new one-request batch), so the batch runner sends it.

        `dry_run` is the mode to re-run in (the current settings'): a dry-run request re-run once
        a key is set goes to a new live one-request batch, and the other way round."""
        with self._write_transaction():
            old = self.get_request(request_id)
            mode = old.dry_run if dry_run is None else bool(dry_run)
            batch_id = old.batch_id
            if batch_id is not None and bool(self.get_batch(batch_id).dry_run) != mode:
                batch_id = None
            if batch_id is None:
                batch_id = new_id()
                self._insert("batches", {
                    "id": batch_id, "name": f"re-run of {old.id}", "created_at": now(),
                    "created_by": created_by, "status": "planned", "dry_run": int(mode),
                    "cancel_requested": 0, "request_count": 0, "estimated_cost": 0.0,
                })
            else:
                # a re-run in a batch that was cancelled must not be cancelled on arrival
                self._write("UPDATE batches SET cancel_requested = 0 WHERE id = ?", [batch_id])
            kept = self.get_contenders([old.contender_id]).get(old.contender_id or "")
            return self.record_request(
                endpoint=old.endpoint, payload=old.payload, batch_id=batch_id, group_id=old.group_id,
                prompt=old.prompt, options=old.options, seed=old.seed, image_size=old.image_size,
                reference_ids=old.references, estimated_cost=old.estimated_cost, dry_run=mode,
                rerun_of=old.id, created_by=created_by, contender=kept)

    @sqlite_boundary
    def last_payload_sent(self) -> RequestRecord | None:
        """The newest request that actually left for fal, with its payload abbreviated (the old
        `/api/debug/last-prompt`)."""
        for row in self._rows("SELECT * FROM requests WHERE submitted_at IS NOT NULL "
                              "ORDER BY submitted_at DESC LIMIT 1"):
            row["payload_json"] = canonical_json(abbreviate(json.loads(row["payload_json"])))
            return build(RequestRecord, row)
        return None

    @sqlite_boundary
    def diff_payloads(self, a_id: str, b_id: str) -> PayloadDiff:
        """What changed from request `a` to request `b` (payloads, with data: URIs abbreviated)."""
        a, b = self.get_request(a_id), self.get_request(b_id)
        added, removed, changed = diff_values(abbreviate(a.payload), abbreviate(b.payload))
        if a.endpoint != b.endpoint:
            changed.insert(0, DiffEntry("(endpoint)", old=a.endpoint, new=b.endpoint))
        return PayloadDiff(a_id, b_id, tuple(added), tuple(removed), tuple(changed))
