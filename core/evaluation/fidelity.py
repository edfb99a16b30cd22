"""Fidelity metrics and response checks for every stored result image, computed in the background.

For each row of `result_images` this module fills two sets of columns (migration m010):
- response checks: the size the request asked for (`registry.output_size`) against the pixels
  stored and the size fal reported, the seed sent against the seed returned, fal's NSFW flag.
  Surprises are the space-separated codes in `check_flags` (empty when none), from `CHECK_FLAGS`.
- fidelity: `core.evaluation.metrics.measure` of the output against the FIRST reference photo of its group
  (face distance, phash distance, CIEDE2000; SSIM only for edit endpoints, whose outputs keep
  the reference's framing). A group without a reference photo records face_status
  "no_reference"; a face that is not found is a status ("no_face_output"...), never an error.

Invariants:
- A row is PENDING while `metrics_at` is null. Every attempt ends with `metrics_at` set, also
  when it failed (`metrics_error` says why, face_status "error"): a pass never loops on a bad
  image. `reset` makes rows pending again (outdated `metrics_version`, or failed ones).
- Nothing here blocks a page: pages call `start_background`, which at most spawns ONE detached
  worker process (`python -m core metrics --worker`, an exclusive file lock in the data
  directory). The worker measures whatever is pending, oldest first, keeps following while a
  batch has a live runner, and exits after `IDLE_EXIT_S` idle. Pending rows survive a restart:
  the next worker, `python -m core metrics` or a comparison export picks them up.
- It writes only the metrics and check columns of `result_images`, and only through the store
  (`Store.save_image_metrics`, `Store.reset_metrics`); it holds no SQL.
- Deterministic: the same stored bytes and reference give the same numbers (`core.evaluation.metrics`).
- Importing this module is cheap (no numpy, PIL or dlib until something is measured): the batch
  command calls `start_background` on its start-up path.
"""
from __future__ import annotations

import fcntl
import io
import logging
import os
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from core.store.db import now
from core.store.values import ImageMetrics  # the value lives with the row it reads; importable here

if TYPE_CHECKING:
    from core.store import Store

    from core.config import Settings
    from core.store.blobs import Storage

log = logging.getLogger(__name__)

CHECK_FLAGS = (
    "size_mismatch",        # stored pixels differ from the requested width x height
    "aspect_mismatch",      # ... and so does the shape (aspect ratio off by more than ASPECT_TOLERANCE)
    "reported_size_wrong",  # fal's width/height in the response differ from the stored pixels
    "seed_mismatch",        # the response's seed differs from the seed sent
    "seed_missing",         # a seed was sent and the response carries none
    "nsfw",                 # fal flagged the image (has_nsfw_concepts)
    "unreadable",           # the stored image could not be read or decoded
)
# Row-level face statuses: core.evaluation.metrics' statuses plus "no_reference" (nothing to compare with).
FACE_STATUSES = ("ok", "no_face_reference", "no_face_output", "error", "no_reference")
ASPECT_TOLERANCE = 0.02
IDLE_EXIT_S = 10.0
POLL_S = 1.0
LOCK_NAME = "metrics-worker.lock"
_REFERENCE_CACHE = 8

# ---------------------------------------------------------------------------- values


@dataclass(frozen=True)
class ResponseCheck:
    """What fal answered against what was asked, for one image. Sizes are (width, height)."""
    requested: tuple[int, int] | None
    reported: tuple[int, int] | None
    pixels: tuple[int, int] | None
    seed_sent: int | None
    seed_returned: int | None
    nsfw: bool | None
    flags: tuple[str, ...]

    @property
    def surprising(self) -> bool:
        return bool(self.flags)


@dataclass(frozen=True)
class PassReport:
    measured: int
    failed: int
    remaining: int


# ---------------------------------------------------------------------------- response checks


def check_response(*, requested: tuple[int, int] | None, reported: tuple[int, int] | None,
                   pixels: tuple[int, int] | None, seed_sent: int | None, seed_returned: int | None,
                   nsfw: bool | None, readable: bool = True) -> ResponseCheck:
    """Compare one image of fal's answer with the request. Pure: no store, no bytes."""
    flags: list[str] = []
    actual = pixels or reported
    if requested and actual and tuple(actual) != tuple(requested):
        flags.append("size_mismatch")
        want, got = requested[0] / requested[1], actual[0] / actual[1]
        if abs(got / want - 1) > ASPECT_TOLERANCE:
            flags.append("aspect_mismatch")
    if reported and pixels and tuple(reported) != tuple(pixels):
        flags.append("reported_size_wrong")
    if seed_sent is not None:
        if seed_returned is None:
            flags.append("seed_missing")
        elif int(seed_returned) != int(seed_sent):
            flags.append("seed_mismatch")
    if nsfw:
        flags.append("nsfw")
    if not readable:
        flags.append("unreadable")
    return ResponseCheck(requested, reported, pixels, seed_sent, seed_returned, nsfw, tuple(flags))


def _int_or_none(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _requested_size(endpoint: str, payload: Mapping[str, Any]) -> tuple[int, int] | None:
    from core.catalog import registry
    from core.errors import DashboardError

    try:
        return registry.output_size(endpoint, dict(payload))
    except (DashboardError, KeyError, TypeError, ValueError):
        return None  # an endpoint no longer in the registry: nothing to compare with


def _reported(response: Any, idx: int) -> tuple[tuple[int, int] | None, int | None]:
    """(fal's width/height of image idx, the seed fal returned) from the stored response, read
    with the client's own parser; a response of another shape reports nothing."""
    from core.batches.fal import parse_output
    from core.errors import FalBadResponse

    try:
        output = parse_output(response)
    except FalBadResponse:
        return None, None
    if idx < len(output.images):
        image = output.images[idx]
        if image.width and image.height:
            return (image.width, image.height), output.seed
    return None, output.seed


# ---------------------------------------------------------------------------- measuring


class _References:
    """Decoded reference photos of one pass, by id (a few at most: batches share references)."""

    def __init__(self, st: Store, storage: Storage):
        self.st, self.storage = st, storage
        self._cache: OrderedDict[str, Any] = OrderedDict()

    def get(self, reference_id: str) -> Any:
        from core.photos import references
        from core.errors import StorageError

        if reference_id in self._cache:
            self._cache.move_to_end(reference_id)
            return self._cache[reference_id]
        ref = self.st.get_reference(reference_id)
        if ref.storage_backend != self.storage.backend:
            raise StorageError(f"reference photo {reference_id} is stored in {ref.storage_backend}, "
                               f"but this process uses {self.storage.backend} storage")
        image = _decode(self.storage.get(ref.storage_path))
        self._cache[reference_id] = image
        if len(self._cache) > _REFERENCE_CACHE:
            self._cache.popitem(last=False)
        return image


def _decode(data: bytes) -> Any:
    from PIL import Image, ImageOps

    from core.errors import MetricsError
    try:
        img = Image.open(io.BytesIO(data))
        img.load()
    except (OSError, ValueError, Image.DecompressionBombError) as e:
        raise MetricsError(f"the image could not be decoded ({e})") from e
    return ImageOps.exif_transpose(img)


def _short(e: BaseException) -> str:
    return str(e).splitlines()[0][:300] if str(e) else type(e).__name__


def measure_image(st: Store, storage: Storage, image_id: str, *,
                  _refs: _References | None = None) -> ImageMetrics:
    """Check and measure one stored result image now, store the outcome, and return it.

    Raises StoreError for an unknown id; every other failure is recorded on the row.
    """
    from core.evaluation import metrics
    from core.catalog import registry
    from core.errors import DashboardError, StoreError

    row = st.image_to_measure(image_id)
    refs = _refs or _References(st, storage)
    payload = row.payload
    reported, seed_returned = _reported(row.response, row.idx)
    seed_sent = _int_or_none(payload.get("seed"))
    if seed_sent is None:
        seed_sent = row.seed

    output = None
    error: str | None = None
    try:
        if row.storage_backend != storage.backend or not row.storage_path:
            raise StoreError(f"the output is stored in {row.storage_backend or 'no'} storage, "
                             f"not reachable from {storage.backend} storage")
        output = _decode(storage.get(row.storage_path))
    except DashboardError as e:
        error = f"output image: {_short(e)}"
    pixels = output.size if output is not None else None
    check = check_response(requested=_requested_size(row.endpoint, payload), reported=reported,
                           pixels=pixels, seed_sent=seed_sent, seed_returned=seed_returned,
                           nsfw=row.nsfw, readable=output is not None)

    reference_id = row.reference_ids[0] if row.reference_ids else None
    values: dict[str, Any] = dict.fromkeys(("face_distance", "faces_reference", "faces_output",
                                            "phash_distance", "ciede2000", "ssim"))
    face_status = "error"
    if output is not None:
        if reference_id is None:
            face_status = "no_reference"
        else:
            try:
                reference = refs.get(reference_id)
                try:
                    edit = registry.get_endpoint(row.endpoint).mode == "edit"
                except DashboardError:
                    edit = False
                fid = metrics.measure(reference, output, same_framing=edit)
            except DashboardError as e:
                error = f"reference {reference_id}: {_short(e)}"
            except Exception as e:  # noqa: BLE001 - one odd image must not stall every later one
                log.exception("measuring result image %s failed", image_id)
                error = f"measuring failed: {e!r}"
            else:
                face_status = fid.face.status
                values.update(face_distance=fid.face.distance, faces_reference=fid.face.faces_reference,
                              faces_output=fid.face.faces_output, phash_distance=fid.phash_distance,
                              ciede2000=fid.ciede2000, ssim=fid.ssim)
                if fid.face.detail:
                    error = fid.face.detail
    stamp = now()
    return st.save_image_metrics(ImageMetrics(
        image_id=image_id, request_id=row.request_id, **values,
        face_status=face_status, metrics_reference_id=reference_id,
        metrics_version=metrics.METRICS_VERSION, metrics_at=stamp, metrics_error=error,
        requested_width=check.requested[0] if check.requested else None,
        requested_height=check.requested[1] if check.requested else None,
        pixel_width=pixels[0] if pixels else None, pixel_height=pixels[1] if pixels else None,
        seed_sent=check.seed_sent, seed_returned=check.seed_returned,
        check_flags=check.flags, checked_at=stamp,
    ))


def reset(st: Store, *, batch_id: str | None = None, failed: bool = False,
          outdated: bool = False, everything: bool = False) -> int:
    """Make rows pending again: those that failed, those measured by another METRICS_VERSION, or
    all of them. Returns how many rows became pending."""
    from core.evaluation.metrics import METRICS_VERSION

    return st.reset_metrics(batch_id=batch_id, failed=failed, everything=everything,
                            other_version_than=METRICS_VERSION if outdated else None)


def compute_pending(st: Store, storage: Storage, *, batch_id: str | None = None,
                    limit: int | None = None, stop: threading.Event | None = None,
                    on_image: Callable[[ImageMetrics], None] | None = None) -> PassReport:
    """Measure what is pending now (oldest first), in this thread, until done, `limit` images,
    or `stop` is set. Images that arrive meanwhile are left to the next pass."""
    refs = _References(st, storage)
    measured = failed = 0
    for image_id in st.pending_image_ids(batch_id=batch_id, limit=limit):
        if stop is not None and stop.is_set():
            break
        result = measure_image(st, storage, image_id, _refs=refs)
        measured += 1
        failed += result.metrics_error is not None
        if on_image:
            on_image(result)
    return PassReport(measured=measured, failed=failed, remaining=st.pending_count(batch_id=batch_id))


# ---------------------------------------------------------------------------- the background worker


def _lock_path(settings: Settings) -> str:
    return str(settings.data_dir / LOCK_NAME)


def _try_lock(settings: Settings) -> int | None:
    """An fd holding the worker lock, or None when another process holds it."""
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    fd = os.open(_lock_path(settings), os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        return None
    return fd


def _unlock(fd: int) -> None:
    fcntl.flock(fd, fcntl.LOCK_UN)
    os.close(fd)


def worker_running(settings: Settings) -> bool:
    """Whether a metrics worker (this host) holds the lock right now."""
    fd = _try_lock(settings)
    if fd is None:
        return True
    _unlock(fd)
    return False


def _live_runner(st: Store) -> bool:
    from core import store

    return any(store.runner_alive(b) and not b.dry_run for b in st.unfinished_batches())


def start_background(settings: Settings, *, expect_results: bool = False) -> int | None:
    """Spawn the detached metrics worker, unless it is switched off (`DASHBOARD_METRICS_WORKER=off`),
    one is running, or there is nothing to do.

    Without `expect_results` it starts only when some image is pending; the batch command passes
    True when it is about to fetch results (the worker then waits for them). Returns the pid, or
    None when nothing was started. Never measures in the caller's process.
    """
    if not settings.metrics_worker:
        return None
    if not expect_results:
        from core.store import open_store

        st = open_store(settings.db_path)
        try:
            if not st.pending_image_ids(limit=1):
                return None
        finally:
            st.close()
    if worker_running(settings):
        return None
    from core import processes

    return processes.spawn(settings, ["metrics", "--worker"], log_name="metrics")


def run_worker(settings: Settings, *, idle_exit: float = IDLE_EXIT_S, poll: float = POLL_S,
               stop: threading.Event | None = None) -> PassReport | None:
    """The worker's body: hold the lock, measure pending images as they arrive, exit after
    `idle_exit` seconds with nothing pending and no live runner. None when another worker holds
    the lock (it will see whatever is pending)."""
    from core.store import open_store
    from core.store.blobs import open_storage

    stop = stop or threading.Event()
    fd = _try_lock(settings)
    if fd is None:
        return None
    st = open_store(settings.db_path)
    storage = open_storage(settings)
    measured = failed = 0
    try:
        while True:
            idle_since = time.monotonic()
            while not stop.is_set():
                report = compute_pending(st, storage, stop=stop)
                measured += report.measured
                failed += report.failed
                if report.measured:
                    idle_since = time.monotonic()
                    continue
                if _live_runner(st):
                    idle_since = time.monotonic()
                elif time.monotonic() - idle_since >= idle_exit:
                    break
                stop.wait(poll)
            _unlock(fd)
            fd = None
            # rows written between the last look and the unlock would wait for the next trigger:
            # look once more, and carry on if this process can take the lock again
            if stop.is_set() or not st.pending_image_ids(limit=1):
                break
            fd = _try_lock(settings)
            if fd is None:
                break
    finally:
        if fd is not None:
            _unlock(fd)
        storage.close()
        remaining = st.pending_count()
        st.close()
    return PassReport(measured=measured, failed=failed, remaining=remaining)

