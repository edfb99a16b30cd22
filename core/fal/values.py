"""What fal's queue answers, as small typed values: a job's handle, its statuses (`Queued`,
`InProgress`, `Completed`, as in fal_client) and its result (`FalOutput` of `OutputImage`s).

Invariants:
- A result is parsed once, by `parse_output`. One of an unexpected shape (not an object,
  `images` missing or not a list of objects with a `url`) raises FalBadResponse carrying the
  body: never a KeyError later on.
- A status answer is parsed once, by `parse_status`; an unknown status is FalBadResponse (the
  follower asks again), never taken for an outage.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


from core.config import load_settings
from core.errors import (
    FalBadResponse,
)


MAX_QUEUE_POSITION = 2 ** 31 - 1


@dataclass(frozen=True)
class Queued:
    """Waiting for a runner; `position` is the number of requests ahead (0-based) when fal says."""
    position: int | None
    logs: tuple = ()


@dataclass(frozen=True)
class InProgress:
    logs: tuple = ()


@dataclass(frozen=True)
class Completed:
    """Final. A failed or cancelled job is also Completed, with `error` / `error_type` set."""
    logs: tuple = ()
    metrics: dict = field(default_factory=dict)
    error: str | None = None
    error_type: str | None = None

    @property
    def ok(self) -> bool:
        return self.error is None and self.error_type is None


Status = Queued | InProgress | Completed


@dataclass(frozen=True)
class QueueHandle:
    """What a submit returned; enough to poll, fetch, cancel, and to resume after a crash."""
    endpoint: str
    request_id: str
    status_url: str
    response_url: str
    cancel_url: str
    queue_position: int | None = None


@dataclass(frozen=True)
class OutputImage:
    """One image of a result. Only `url` is promised by every endpoint (an http(s) URL on fal's
    CDN, or a `data:` URI with sync_mode); the rest is None when fal left it out or mistyped it."""
    url: str
    width: int | None = None
    height: int | None = None
    content_type: str | None = None
    file_size: int | None = None


@dataclass(frozen=True)
class FalOutput:
    """A model's output, parsed once (`parse_output`). `nsfw[i]` is fal's flag for image i (None
    when fal gave none for it); `inference_s` is fal's `timings.inference`; `raw` is the body as
    received, kept for the store."""
    images: tuple[OutputImage, ...]
    seed: int | None = None
    nsfw: tuple[bool | None, ...] = ()
    inference_s: float | None = None
    raw: Any = field(default=None, repr=False, compare=False)
    # what fal billed the job, in its endpoint's unit (`x-fal-billable-units` on the result's
    # answer); None when fal did not say
    billable_units: float | None = None


def billable_units(header: str | None) -> float | None:
    """`x-fal-billable-units` as a number of units; None when absent or not a finite number >= 0
    (an odd header never becomes a cost)."""
    try:
        units = float((header or "").strip())
    except ValueError:
        return None
    return units if 0 <= units < 1e9 else None


def parse_output(body: Any, *, request_id: str | None = None) -> FalOutput:
    """fal's output JSON (schnell's legacy Image or FLUX.2's ImageFile shape) as a FalOutput.

    FalBadResponse (with `.raw` = body) when the body is not an object, or `images` is missing,
    not a list, or holds an entry that is not an object with a non-empty string `url`. Other
    fields are optional: missing or mistyped ones become None (or `()` for the NSFW flags)."""
    which = f"for request {request_id} " if request_id else ""

    def bad(problem: str) -> FalBadResponse:
        return FalBadResponse(f"fal's result {which}is not what its schema promises ({problem}); "
                              "the answer is kept with the request. Re-run it; if it happens "
                              "again, the endpoint's output format has changed.",
                              raw=body, request_id=request_id)

    if not isinstance(body, dict):
        raise bad(f"the body is {json_kind(body)}, not an object")
    images = body.get("images")
    if images is None:
        raise bad("no `images`")
    if not isinstance(images, list):
        raise bad(f"`images` is {json_kind(images)}, not a list")
    parsed = []
    for idx, image in enumerate(images):
        url = image.get("url") if isinstance(image, dict) else None
        if not isinstance(url, str) or not url:
            raise bad(f"image {idx} has no URL")
        parsed.append(OutputImage(url=url, width=positive_int(image.get("width")),
                                  height=positive_int(image.get("height")),
                                  content_type=str_or_none(image.get("content_type")),
                                  file_size=positive_int(image.get("file_size"))))
    flags = body.get("has_nsfw_concepts")
    nsfw = tuple(f if isinstance(f, bool) else None for f in flags) if isinstance(flags, list) else ()
    timings = body.get("timings")
    inference = timings.get("inference") if isinstance(timings, dict) else None
    if isinstance(inference, bool) or not isinstance(inference, (int, float)):
        inference = None
    seed = body.get("seed")
    if isinstance(seed, bool) or not isinstance(seed, int):
        seed = None
    return FalOutput(images=tuple(parsed), seed=seed, nsfw=nsfw,
                     inference_s=None if inference is None else float(inference), raw=body)


def json_kind(value: Any) -> str:
    for kind, name in ((bool, "a boolean"), (dict, "an object"), (list, "a list"), (str, "a string"),
                       ((int, float), "a number")):
        if isinstance(value, kind):
            return name
    return "null" if value is None else type(value).__name__


def positive_int(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else None


def str_or_none(value: Any) -> str | None:
    return value if isinstance(value, str) and value else None


def handle_from_row(endpoint: str, request_id: str, status_url: str | None,
                    response_url: str | None, cancel_url: str | None,
                    *, queue_url: str | None = None) -> QueueHandle:
    """A handle rebuilt from a stored row (resume after a crash). Missing URLs are derived the way
    fal builds them: `<queue>/<owner>/<app>/requests/<id>` (only owner/app, not the full path)."""
    if not (status_url and response_url and cancel_url):
        base = request_base(queue_url or load_settings().fal_queue_url, endpoint, request_id)
        status_url = status_url or f"{base}/status"
        response_url = response_url or base
        cancel_url = cancel_url or f"{base}/cancel"
    return QueueHandle(endpoint, request_id, status_url, response_url, cancel_url)


def request_base(queue_url: str, endpoint: str, request_id: str) -> str:
    owner_app = "/".join(endpoint.split("/")[:2])
    return f"{queue_url.rstrip('/')}/{owner_app}/requests/{request_id}"


def queue_position_of(value: Any) -> int | None:
    """fal's `queue_position` when it is a plausible one (a non-negative integer that fits a
    column), else None: an odd value is not worth failing a job fal accepted."""
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= MAX_QUEUE_POSITION:
        return None
    return value


def parse_status(body: dict, handle: QueueHandle) -> Status:
    """A status body as a Status. Only `status` must be right (an unknown one raises, and is
    asked again); `logs`, `metrics`, `queue_position`, `error` of an odd shape are dropped."""
    raw_logs = body.get("logs")
    logs = tuple(raw_logs) if isinstance(raw_logs, list) else ()
    state = body.get("status")
    if state == "IN_QUEUE":
        return Queued(position=queue_position_of(body.get("queue_position")), logs=logs)
    if state == "IN_PROGRESS":
        return InProgress(logs=logs)
    if state == "COMPLETED":
        metrics = body.get("metrics")
        metrics = {k: v for k, v in metrics.items() if isinstance(k, str)} if isinstance(metrics, dict) else {}
        inference = metrics.get("inference_time")
        if inference is not None and (isinstance(inference, bool) or not isinstance(inference, (int, float))):
            metrics.pop("inference_time")
        error, error_type = body.get("error"), body.get("error_type")
        return Completed(logs=logs, metrics=metrics,
                         error=None if error is None else str(error)[:2000],
                         error_type=None if error_type is None else str(error_type)[:200])
    # a bad answer, not an outage: the follower asks again (up to MAX_BAD_ANSWERS), sending goes on
    raise FalBadResponse(f"fal answered an unknown status {str(state)[:100]!r} for request "
                         f"{handle.request_id}; poll again later.", raw=body, request_id=handle.request_id)
