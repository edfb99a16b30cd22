"""The project's values: the frozen records every layer passes around, and the rules that read one.

A leaf: this module imports nothing of the project, so every layer may depend on it. The store
builds these from rows (a caller never sees a row dict or a cursor) and takes the `New*` records
as its input; plans build those. The closed
sets of the schema (request statuses, reference roles) and the rules that read a stored value
the same way everywhere (the same-person threshold, a model's output in a group) live here too.
"""
from __future__ import annotations

import datetime as _dt
import enum
import json
import uuid
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any


def now() -> str:
    """The current time as the store writes it: UTC ISO 8601 with microseconds."""
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="microseconds")


def new_id() -> str:
    """A new record id: 32 hex digits of a random UUID."""
    return uuid.uuid4().hex


class RequestStatus(enum.StrEnum):
    """Where a request is. It moves one way: planned -> submitted (POST under way, no fal id yet)
    -> queued -> running -> completed | failed | cancelled, or planned -> dry_run (nothing sent).
    A submit whose answer never came (the connection dropped after sending, a timeout, a 5xx from
    fal, a runner killed inside the POST) is `in_doubt`: fal may hold the job and nobody knows its
    id. It is neither done nor failed; only a person moves it on (send again, knowing it may be
    paid twice, or give up), or a journaled fal id found later settles it as `queued`.
    A StrEnum: it compares equal to, and is stored as, its text."""

    PLANNED = "planned"
    SUBMITTED = "submitted"
    IN_DOUBT = "in_doubt"
    QUEUED = "queued"
    RUNNING = "running"
    COMPLETED = "completed"
    FAILED = "failed"
    CANCELLED = "cancelled"
    DRY_RUN = "dry_run"


REQUEST_STATUSES: tuple[RequestStatus, ...] = tuple(RequestStatus)
# nothing more will happen to the request
FINAL_STATUSES = frozenset({RequestStatus.COMPLETED, RequestStatus.FAILED, RequestStatus.CANCELLED,
                            RequestStatus.DRY_RUN})
# the job may exist at fal: a runner follows it (never sends it again)
ACTIVE_STATUSES = frozenset({RequestStatus.SUBMITTED, RequestStatus.QUEUED, RequestStatus.RUNNING})
# not final: a batch with one of these is unfinished
UNFINISHED_STATUSES = frozenset({RequestStatus.PLANNED, RequestStatus.IN_DOUBT, *ACTIVE_STATUSES})

REFERENCE_ROLES = ("face", "product", "background", "other")

# Batch statuses: planned (written, never run), running (a runner took it at least once),
# finished (every request final), cancelled (cancel requested and every request final).
BATCH_STATUSES = ("planned", "running", "finished", "cancelled")

# dlib's face-recognition model calls two faces the same person when the distance of their
# descriptors is under 0.6 (its documented operating point). Every page, export and statistic
# asks `is_same_person`.
SAME_PERSON_THRESHOLD = 0.6


def is_same_person(face_status: str | None, face_distance: float | None) -> bool | None:
    """dlib's verdict on a measured face distance; None unless both faces were found ("ok")."""
    if face_status != "ok" or face_distance is None or face_distance != face_distance:  # NaN
        return None
    return face_distance < SAME_PERSON_THRESHOLD


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
    # what the person confirmed when launching it (`Store.create_batch(launch_key=...)`): the
    # same key again returns this batch instead of making a second paid one
    launch_key: str | None = None

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
    status: RequestStatus
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
    # the contender (endpoint at one parameter set) the request belongs to; see Store.get_contenders
    contender_id: str | None = None
    # who decided about it while it was in doubt (sent again, or gave it up), and when
    resent_by: str | None = None
    resent_at: str | None = None
    schema_version: str | None = None   # sha256 of the schema its body was validated against
    # what fal billed (x-fal-billable-units) and that at the endpoint's price; None: fal did not say
    billable_units: float | None = None
    billed_cost: float | None = None

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
class ImageMetrics:
    """The measured fidelity and response checks of one result image (None where not measured).

    Written by the metrics worker (core/evaluation/fidelity.py) through `Store.save_image_metrics`;
    PENDING while `metrics_at` is None."""
    image_id: str
    request_id: str
    face_status: str | None = None
    face_distance: float | None = None
    faces_reference: int | None = None
    faces_output: int | None = None
    phash_distance: int | None = None
    ciede2000: float | None = None
    ssim: float | None = None
    metrics_reference_id: str | None = None
    metrics_version: str | None = None
    metrics_at: str | None = None
    metrics_error: str | None = None
    requested_width: int | None = None
    requested_height: int | None = None
    pixel_width: int | None = None
    pixel_height: int | None = None
    seed_sent: int | None = None
    seed_returned: int | None = None
    check_flags: tuple[str, ...] = ()
    checked_at: str | None = None

    @property
    def pending(self) -> bool:
        return self.metrics_at is None

    @property
    def same_person(self) -> bool | None:
        """dlib's verdict (`is_same_person`), only when both faces were found."""
        return is_same_person(self.face_status, self.face_distance)

    def summary(self) -> str:
        """One line for a caption: face, hash, colour, SSIM and surprises."""
        if self.pending:
            return "metrics pending"
        parts = []
        if self.face_status == "ok" and self.face_distance is not None:
            verdict = "same person" if self.same_person else "different person"
            parts.append(f"face {self.face_distance:.2f} ({verdict})")
        elif self.face_status:
            parts.append(self.face_status.replace("_", " "))
        if self.phash_distance is not None:
            parts.append(f"phash {self.phash_distance}")
        if self.ciede2000 is not None:
            parts.append(f"ΔE {self.ciede2000:.1f}")
        if self.ssim is not None:
            parts.append(f"SSIM {self.ssim:.2f}")
        if self.metrics_error:
            parts.append(f"error: {self.metrics_error}")
        if self.check_flags:
            parts.append("surprises: " + ", ".join(f.replace("_", " ") for f in self.check_flags))
        return " · ".join(parts)


# the result_images columns ImageMetrics holds (besides its ids), in schema order
METRIC_COLUMNS = (
    "face_status", "face_distance", "faces_reference", "faces_output", "phash_distance", "ciede2000",
    "ssim", "metrics_reference_id", "metrics_version", "metrics_at", "metrics_error",
    "requested_width", "requested_height", "pixel_width", "pixel_height", "seed_sent",
    "seed_returned", "check_flags", "checked_at",
)


@dataclass(frozen=True)
class ResultImage:
    """One output image of a request, with its measured metrics (pending until measured)."""
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
    metrics: ImageMetrics = field(default=None, compare=False, repr=False)  # type: ignore[assignment]

    def __post_init__(self) -> None:
        if self.metrics is None:
            object.__setattr__(self, "metrics", ImageMetrics(self.id, self.request_id))

    @property
    def stored(self) -> bool:
        """Whether the bytes are in our storage (not only at fal's URL)."""
        return bool(self.storage_path)


@dataclass(frozen=True)
class GroupOutput:
    """A model's output in a group: the request chosen by `pick_output` and its first image
    (idx 0), None when that request has no image (failed, cancelled, dry run...)."""
    group_id: str
    endpoint: str
    request: RequestRecord
    image: ResultImage | None

    @property
    def request_id(self) -> str:
        return self.request.id

    @property
    def contender_id(self) -> str | None:
        return self.request.contender_id


def pick_output(candidates: Iterable[tuple[RequestRecord, ResultImage | None]], *,
                or_newest: bool = False) -> tuple[RequestRecord, ResultImage | None] | None:
    """THE rule for a model's output in a group, used by Review, Compare, the Leaderboard and the
    comparison CSV: of one model's requests in one group (oldest first, each with its idx-0
    image), the newest COMPLETED request whose image is stored; else, with `or_newest` (the CSV,
    so a failure shows), the newest request; else None."""
    newest = chosen = None
    for request, image in candidates:
        newest = (request, image)
        if request.status == RequestStatus.COMPLETED and image is not None and image.stored:
            chosen = (request, image)
    if chosen is None and or_newest:
        return newest
    return chosen


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

    @property
    def in_doubt(self) -> int:
        """Submits whose answer never came: fal may hold them (see RequestStatus)."""
        return self.counts.get(RequestStatus.IN_DOUBT, 0)

    @property
    def settled(self) -> bool:
        """Nothing is left for a runner: every request is final or in doubt (a person decides)."""
        return self.total > 0 and self.done + self.in_doubt == self.total

    def summary(self) -> str:
        parts = [f"{s} {self.counts[s]}" for s in REQUEST_STATUSES if self.counts.get(s)]
        return f"{self.done}/{self.total} done ({', '.join(parts) or 'nothing yet'}), " \
               f"estimated ${self.estimated_cost:.3f}"


@dataclass(frozen=True)
class StoredModel:
    """An endpoint added from its fal OpenAPI document (table `models`): the document as fetched or
    uploaded, who added it, its price if known (`price_usd` None: unknown, never $0), a refreshed
    document waiting to be adopted (`pending_*`), and whether it is archived."""
    endpoint_id: str
    label: str
    category: str
    document: str = field(repr=False)
    sha256: str
    source: str                      # "file:<name>" or "fal"
    added_at: str
    added_by: str | None
    fetched_at: str | None
    archived_at: str | None
    price_usd: float | None
    price_unit: str | None           # what fal bills: "image", "megapixels", ...
    price_source: str | None         # "fal" (its pricing API) or "team" (typed by a person)
    pending_document: str | None = field(default=None, repr=False)
    pending_sha256: str | None = None
    pending_fetched_at: str | None = None


@dataclass(frozen=True)
class Reference:
    """A stored reference photo (table `reference_photos`)."""
    id: str
    sha256: str
    role: str
    owner: str | None
    original_name: str | None
    content_type: str
    width: int
    height: int
    size_bytes: int
    storage_backend: str
    storage_path: str
    public_url: str | None
    created_at: str
    created_by: str | None
    archived_at: str | None
    # what happened on this upload: not part of the reference's identity
    notes: tuple[str, ...] = field(default=(), compare=False)
    existing: bool = field(default=False, compare=False)


@dataclass(frozen=True)
class StoredVote:
    """One rater's verdict on two outputs of a group, with the endpoints of both sides."""
    id: str
    group_id: str
    rater: str
    left_request_id: str
    right_request_id: str
    left_endpoint: str
    right_endpoint: str
    verdict: str
    winner: str | None
    note: str | None
    created_at: str
    # the contenders of both sides (their requests' `contender_id`)
    left_contender: str | None = None
    right_contender: str | None = None

    @property
    def winner_contender(self) -> str | None:
        """The contender of the better side, None for a tie."""
        return {"left": self.left_contender, "right": self.right_contender}.get(self.verdict)

    def describe(self) -> str:
        """The unblinded verdict in words, e.g. "left (fal-ai/flux/schnell) better"."""
        if self.verdict == "left":
            return f"left ({self.left_endpoint}) better"
        if self.verdict == "right":
            return f"right ({self.right_endpoint}) better"
        return self.verdict.replace("_", " ")


@dataclass(frozen=True)
class AuditEntry:
    """One line of the audit trail (table `audit`): who did what to which thing, and when; `usd` is
    the estimate of what a send spends (None for the rest)."""
    id: str
    at: str
    who: str | None
    action: str
    subject: str
    detail: str = ""
    usd: float | None = None
