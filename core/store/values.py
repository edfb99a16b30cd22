"""The values the store hands out: frozen dataclasses, built from rows inside core/store only.

A caller never sees a row dict or a cursor: what crosses the store is one of these.
"""
from __future__ import annotations

import datetime as _dt
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from core.store.db import FINAL_STATUSES, REQUEST_STATUSES

# Batch statuses: planned (written, never run), running (a runner took it at least once),
# finished (every request final), cancelled (cancel requested and every request final).
BATCH_STATUSES = ("planned", "running", "finished", "cancelled")


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
    # why the batch's runner last stopped before every request was final (None when it did not,
    # or since a runner took the batch again), and when
    stop_reason: str | None = None
    stopped_at: str | None = None
    # when a runner was last started for the batch, and since when fal has not answered it
    launched_at: str | None = None
    fal_unreachable_since: str | None = None

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
