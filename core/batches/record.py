"""What a job's end means for its request row: the one place where fal's answers and errors become
request statuses, and where a result (its images kept) is written.

Invariants:
- A job fal accepted is paid. A failure that says nothing about the job (fal unreachable, storage
  or disk trouble, a locked or full database) never makes its request final: it stays resumable
  with fal's id kept (`Resumable`), and a resume fetches the result and images again.
- Images of a result are kept one by one. One that fal's CDN no longer serves (404, 410, 403) is
  recorded as missing (an image row without a stored copy); the others are kept. A result whose
  every image is missing fails as `download_failed`, with fal's answer kept.
- An answer that is not what fal documents (a list body, no images) fails the request with the
  answer kept, never leaves it waiting.
- Stored copies live at `results/<request id>/<idx>-<sha256 prefix>.<ext>`: the path is derived
  from the bytes, so keeping an image again never needs to overwrite (storage keys that may insert
  but not update keep working) and an object already there holds exactly those bytes.
- fal's id is written with retries; if the database still refuses, the caller keeps following the
  job in memory and the id goes to the batch's recovery journal (`Journal`), which resume reads.
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from core.fal.follow import is_transient
from core.errors import (
    DashboardError,
    FalAuthError,
    FalBadResponse,
    FalCancelled,
    FalError,
    FalRateLimited,
    FalServerError,
    FalTimeout,
    FalUnavailable,
    FalValidationError,
    ObjectExists,
    StoreUnavailable,
)

from core.fal.client import FalClient
from core.fal.values import Completed, FalOutput, QueueHandle
from core.store import Store
from core.blobs.results import result_path
from core.blobs.storage import Storage

log = logging.getLogger(__name__)

_EXT = {"image/jpeg": "jpg", "image/png": "png", "image/webp": "webp", "image/gif": "gif"}
_ERROR_TYPES: tuple[tuple[type, str], ...] = (
    (FalBadResponse, "bad_response"), (FalAuthError, "auth"), (FalValidationError, "validation"), (FalRateLimited, "rate_limited"),
    (FalCancelled, "cancelled"), (FalTimeout, "timeout"), (FalUnavailable, "unavailable"),
    (FalServerError, "server_error"), (FalError, "fal_error"),
)
UNCONFIRMED_MESSAGE = ("The runner stopped while this request was being submitted, before fal confirmed "
                       "it. It may have run (and been paid) at fal, so it was NOT sent again: look it up "
                       "in fal's request history, then send it again (it may be paid twice) or give it up.")


def error_type_of(e: BaseException) -> str:
    """A short stable code for an error, preferring fal's own error_type."""
    if isinstance(e, FalError) and e.error_type:
        return str(e.error_type)
    for cls, code in _ERROR_TYPES:
        if isinstance(e, cls):
            return code
    return type(e).__name__


# ---------------------------------------------------------------------------- outcomes


@dataclass(frozen=True)
class Unsent:
    """fal surely did not take the submit: the request goes back to `planned`."""

    error: FalError

    @property
    def needs_a_person(self) -> bool:
        """A refused key or quota: retrying cannot help until someone acts."""
        return isinstance(self.error, FalAuthError)


@dataclass(frozen=True)
class Failed:
    """A final failure, with what happened and what to do."""

    error_type: str
    message: str
    http_status: int | None = None
    response: Any = None
    inference_s: float | None = None


@dataclass(frozen=True)
class Cancelled:
    reason: str
    http_status: int | None = None


@dataclass(frozen=True)
class Resumable:
    """Nothing final: the row keeps fal's id and a later resume finishes it."""

    reason: str


@dataclass(frozen=True)
class InDoubt:
    """The submit may have reached fal and no answer says whether it was accepted: the request
    is `in_doubt`, never sent again by itself. `outage` when the error also says fal (or the way
    to it) is in trouble, so no new submit should start."""

    reason: str
    http_status: int | None = None
    outage: bool = True


Outcome = Failed | Cancelled | Resumable


def submit_failure(e: FalError) -> Unsent | Failed | InDoubt:
    """What a failed submit means (the rule and its sources: docs/fal.md, "A submit that
    failed"). Sent again only when fal surely did not get it (no connection was made, 429, a
    gateway page without fal's request id, a refused key); final when fal answered it with a
    refusal (422, another 4xx); in doubt otherwise (a dropped or reset connection after sending, a
    timeout, a 5xx fal gave an id, an answer of the wrong shape)."""
    if isinstance(e, (FalAuthError, FalRateLimited)) or e.not_sent:
        return Unsent(e)
    if isinstance(e, FalValidationError):
        return Failed("validation", str(e), e.status_code, {"detail": e.detail})
    code = e.status_code
    if code is not None and 400 <= code < 500 and code != 408:
        return Failed(error_type_of(e), str(e), code)
    doubt = (f"{e} fal may have accepted it, so it was NOT sent again: look it up in fal's request "
             "history, then send it again (it may be paid twice) or give it up.")
    return InDoubt(doubt, code, outage=isinstance(e, (FalUnavailable, FalTimeout, FalServerError)))


def result_failure(e: FalError, *, status: Completed, cancel_sent: bool) -> Outcome:
    """What a failed result fetch means for a job fal reported done."""
    inference = status.metrics.get("inference_time") if status.metrics else None
    if isinstance(e, FalCancelled):
        return Cancelled(str(e), e.status_code)
    if cancel_sent and not status.ok:
        return Cancelled(f"cancelled ({e})", e.status_code)
    if status.ok and is_transient(e):
        return Resumable(f"fal finished request but its result could not be fetched ({e})")
    raw = getattr(e, "raw", None)
    detail = getattr(e, "detail", None)
    response = raw if raw is not None else ({"detail": detail} if detail is not None else None)
    return Failed(status.error_type or error_type_of(e), str(e), e.status_code, response, inference)


def record_outcome(store: Store, request_id: str, outcome: Outcome) -> None:
    if isinstance(outcome, Failed):
        store.mark_failed(request_id, error_type=outcome.error_type, error_message=outcome.message,
                       http_status=outcome.http_status, response=outcome.response,
                       inference_time_s=outcome.inference_s)
    elif isinstance(outcome, Cancelled):
        store.mark_cancelled(request_id, reason=outcome.reason, http_status=outcome.http_status)


# ---------------------------------------------------------------------------- results


@dataclass(frozen=True)
class KeptImage:
    idx: int
    fal_url: str
    backend: str
    path: str
    sha256: str
    width: int | None
    height: int | None
    content_type: str
    size_bytes: int
    nsfw: bool | None


@dataclass(frozen=True)
class MissingImage:
    idx: int
    fal_url: str | None
    reason: str
    nsfw: bool | None = None


@dataclass(frozen=True)
class Result:
    """A finished job's output with its images kept (or recorded as missing), ready to write."""

    output: FalOutput
    images: tuple[KeptImage | MissingImage, ...]
    inference_s: float | None = None
    logs: tuple[str, ...] = ()


def keep_images(fal: FalClient, storage: Storage, request_id: str, output: FalOutput, *,
                kept: Sequence[int] = ()) -> tuple[KeptImage | MissingImage, ...]:
    """Download and store each image of `output` not already kept (`kept` = their indexes).

    Raises a transient FalError, a StorageError or an OSError when trying again later may work:
    the caller leaves the request resumable. A file the CDN says is gone is a `MissingImage`."""
    out: list[KeptImage | MissingImage] = []
    for idx, img in enumerate(output.images):
        if idx in kept:
            continue
        nsfw = output.nsfw[idx] if idx < len(output.nsfw) else None
        if not img.url:
            out.append(MissingImage(idx, None, "the result lists this image without a URL", nsfw))
            continue
        try:
            data, content_type = fal.download(img.url)
        except FalError as e:
            if is_transient(e):
                raise
            out.append(MissingImage(idx, img.url, str(e), nsfw))   # gone (404/410/403), too large...
            continue
        decoded = _decoded(data)
        if decoded is None:
            # an HTML page, a JSON error, a truncated file: whatever its Content-Type says
            out.append(MissingImage(idx, img.url, f"the file at this URL is not an image ({content_type or 'no type'}, "
                                    f"{len(data)} bytes; it does not decode)", nsfw))
            continue
        out.append(_store(storage, request_id, idx, img, data, decoded[0], nsfw, size=decoded[1:]))
    return tuple(out)


def load_decoder() -> None:
    """Import what `keep_images` decodes with (Pillow and its plugins: ~0.1 s), ahead of the
    first result; a failure is met again, and reported, by the first `keep_images`."""
    with contextlib.suppress(Exception):
        import core.photos.images  # noqa: F401


def _decoded(data: bytes) -> tuple[str, int, int] | None:
    """(content type, width, height) of bytes that decode as an image, else None."""
    from core.photos.images import image_info

    try:
        content_type, width, height = image_info(data)
    except DashboardError:
        return None
    return content_type, width, height


def _store(storage: Storage, request_id: str, idx: int, img: Any, data: bytes, content_type: str,
           nsfw: bool | None, *, size: tuple[int, int] | None = None) -> KeptImage:
    sha = hashlib.sha256(data).hexdigest()
    path = result_path(request_id, f"{idx}-{sha[:16]}.{_EXT.get(content_type, 'bin')}")
    try:
        stored = storage.put(path, data, content_type)
        backend = stored.backend
    except ObjectExists:
        backend = storage.backend   # the same bytes, kept by an earlier attempt
    width, height = img.width, img.height
    if size is not None and not (isinstance(width, int) and isinstance(height, int)):
        width, height = size
    if not (isinstance(width, int) and isinstance(height, int)):
        from core.photos.images import image_info

        try:
            _, width, height = image_info(data)
        except DashboardError:
            width = height = None
    return KeptImage(idx, img.url, backend, path, sha, width, height, content_type, len(data), nsfw)


def record_result(store: Store, request_id: str, result: Result) -> str:
    """Write a finished job's images and final status; returns the status written.

    The one function that records a result: the runner and the tests' helpers both call it."""
    written = {}
    for img in result.images:
        if isinstance(img, KeptImage):
            row = store.add_result_image(request_id, idx=img.idx, fal_url=img.fal_url, storage_backend=img.backend,
                                         storage_path=img.path, sha256=img.sha256, width=img.width,
                                         height=img.height, content_type=img.content_type,
                                         size_bytes=img.size_bytes, nsfw=img.nsfw)
        else:
            row = store.add_result_image(request_id, idx=img.idx, fal_url=img.fal_url, storage_backend=None,
                                         storage_path=None, sha256=None, width=None, height=None,
                                         content_type=None, size_bytes=None, nsfw=img.nsfw)
        written[row.idx] = row
    # every image of the result was just written (the usual case): those rows are its images;
    # else an earlier attempt kept some, and they are read
    kept = (list(written.values()) if set(written) >= set(range(len(result.output.images)))
            else store.result_images([request_id])[request_id])
    raw = result.output.raw
    logs = list(result.logs) or None
    if not result.output.images:
        store.mark_failed(request_id, error_type="no_images", http_status=200, response=raw,
                       error_message="fal finished the job but returned no image; re-run it.",
                       inference_time_s=result.inference_s)
        return "failed"
    if not any(i.storage_path for i in kept):
        reasons = "; ".join(f"image {i.idx}: {i.reason}" for i in result.images if isinstance(i, MissingImage))
        store.mark_failed(request_id, error_type="download_failed", http_status=200, response=raw,
                       inference_time_s=result.inference_s,
                       error_message=(f"fal finished (and billed) the job but none of its images could "
                                      f"be kept ({reasons}); re-run the request."))
        return "failed"
    units = result.output.billable_units
    store.mark_completed(request_id, response=raw, http_status=200, inference_time_s=result.inference_s,
                      logs=logs, billable_units=units, billed_cost=billed_cost(store, request_id, units))
    return "completed"


def billed_cost(store: Store, request_id: str, units: float | None) -> float | None:
    """fal's billable units at the endpoint's price per unit (per megapixel, or per image); None
    when fal did not say or the price is unknown."""
    from core.catalog import registry
    from core.errors import PayloadError

    if units is None:
        return None
    try:
        price = registry.get_endpoint(store.get_request(request_id).endpoint).price
    except PayloadError:   # an endpoint no longer installed: no price to apply
        return None
    return None if price is None else round(units * price.usd_per_mp, 6)


# ---------------------------------------------------------------------------- fal's id


class Journal:
    """The batch's recovery journal: the fal id of every job fal accepted in a run, one JSON line
    each, fsynced BEFORE the database is told (so a kill, a full disk or a locked database between
    fal's answer and the row's update loses no paid job).

    `reserve()` (at the start of a run) allocates `RESERVE` bytes on disk up front, and entries
    are written into that space, so a disk that fills up during the run still takes them. `replay`
    puts the ids into the store on the next run, before anything else is looked at; `close()`
    removes the file once every id it holds is in the database."""

    RESERVE = 512 * 1024   # ~2,000 entries; past it the file grows as usual

    def __init__(self, data_dir: Path, batch_id: str):
        self.path = data_dir / "recovery" / f"batch-{batch_id}.jsonl"
        self._fd: int | None = None
        self._offset = 0
        self._lock = threading.Lock()
        self._pending: set[str] = set()   # journaled, not yet confirmed on the row

    def reserve(self) -> bool:
        """Open the journal for this run with its space allocated; False if the disk refused
        (entries are then appended as space allows)."""
        with self._lock:
            if self._fd is not None:
                return True
            try:
                self.path.parent.mkdir(parents=True, exist_ok=True)
                fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
            except OSError as e:
                log.error("could not open the recovery journal %s: %s", self.path, e)
                return False
            try:
                existing = os.fstat(fd).st_size
                if existing:   # entries a replay could not take: write after them
                    data = os.pread(fd, existing, 0)
                    self._offset = len(data.rstrip(b"\0"))
                if existing < self.RESERVE:
                    os.posix_fallocate(fd, 0, self.RESERVE)
            except OSError as e:
                log.warning("could not reserve space for the recovery journal %s: %s", self.path, e)
            self._fd = fd
            return True

    def add(self, request_id: str, handle: QueueHandle) -> bool:
        line = (json.dumps({"request_id": request_id, "endpoint": handle.endpoint,
                            "fal_request_id": handle.request_id, "status_url": handle.status_url,
                            "response_url": handle.response_url, "cancel_url": handle.cancel_url})
                + "\n").encode()
        with self._lock:
            self._pending.add(request_id)
            try:
                if self._fd is None:
                    self.path.parent.mkdir(parents=True, exist_ok=True)
                    with open(self.path, "ab") as f:
                        f.write(line)
                        f.flush()
                        os.fsync(f.fileno())
                    return True
                os.pwrite(self._fd, line, self._offset)
                os.fdatasync(self._fd)
                self._offset += len(line)
                return True
            except OSError as e:
                log.error("could not journal fal id %s of request %s: %s", handle.request_id, request_id, e)
                return False

    def stored(self, request_id: str) -> None:
        """The row now carries the id journaled for `request_id`."""
        with self._lock:
            self._pending.discard(request_id)

    def close(self, *, keep: bool) -> None:
        """End this run's journal: removed unless `keep`, or some id journaled is not yet on its
        row (a worker still between the two writes when the run ended). An id journaled after
        this goes to the file again, for the next run's replay."""
        with self._lock:
            if self._fd is not None:
                with contextlib.suppress(OSError):
                    os.close(self._fd)
                self._fd = None
            if not keep and not self._pending:
                with contextlib.suppress(FileNotFoundError):
                    self.path.unlink()

    def entries(self) -> Iterator[dict[str, Any]]:
        try:
            text = self.path.read_bytes().rstrip(b"\0").decode("utf-8", "replace")
        except FileNotFoundError:
            return
        for line in text.splitlines():
            with contextlib.suppress(ValueError):
                entry = json.loads(line.strip("\0"))
                if isinstance(entry, dict) and entry.get("request_id") and entry.get("fal_request_id"):
                    yield entry

    def replay(self, store: Store) -> int:
        """Store every journaled id whose request still waits for it (`submitted`, or in doubt:
        the id settles the doubt); remove the journal."""
        n = 0
        for e in self.entries():
            if store.mark_queued(e["request_id"], fal_request_id=e["fal_request_id"],
                              status_url=e.get("status_url"), response_url=e.get("response_url"),
                              cancel_url=e.get("cancel_url")):
                n += 1
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()
        return n


def write_retrying(fn: Any, *, attempts: int = 8, first_wait: float = 0.5, cap: float = 15.0) -> Any:
    """Call a store write, retrying while the database is locked, full or unavailable (about a
    minute in all); the last error is raised."""
    for attempt in range(attempts):
        try:
            return fn()
        except StoreUnavailable as e:
            if attempt == attempts - 1 or (e.needs_a_person and attempt >= 1):
                raise   # a full disk or a read-only directory does not pass by waiting
            log.warning("store write failed (%s); retrying", e)
            time.sleep(min(cap, first_wait * 2 ** attempt))
    raise AssertionError("unreachable")


def record_accepted(store: Store, request_id: str, handle: QueueHandle, journal: Journal, *,
                    attempts: int = 8) -> bool:
    """Store fal's id and URLs for a job it accepted: first in the journal (fsynced), then on the
    row. False when the database refused even after retries (or failed in any other way): the
    id is then in the journal only, and the caller follows the job from memory."""
    journal.add(request_id, handle)
    try:
        write_retrying(lambda: store.mark_queued(
            request_id, fal_request_id=handle.request_id, status_url=handle.status_url,
            response_url=handle.response_url, cancel_url=handle.cancel_url,
            queue_position=handle.queue_position), attempts=attempts)
        journal.stored(request_id)
        return True
    except Exception as e:  # noqa: BLE001 - whatever the database says, the id must not be lost
        log.error("could not store fal id %s of request %s (%s); it is in %s", handle.request_id,
                  request_id, e, journal.path)
        return False

