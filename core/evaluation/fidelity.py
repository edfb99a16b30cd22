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
- This module writes only its own columns of `result_images` (metrics and checks); every other
  column of every table stays written by `core.store.records` alone.
- Deterministic: the same stored bytes and reference give the same numbers (`core.evaluation.metrics`).
- Importing this module is cheap (no numpy, PIL or dlib until something is measured): the batch
  command calls `start_background` on its start-up path.
"""
from __future__ import annotations

import fcntl
import io
import json
import logging
import os
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from core.store.db import now

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

_COLUMNS = (
    "face_status", "face_distance", "faces_reference", "faces_output", "phash_distance", "ciede2000",
    "ssim", "metrics_reference_id", "metrics_version", "metrics_at", "metrics_error",
    "requested_width", "requested_height", "pixel_width", "pixel_height", "seed_sent",
    "seed_returned", "check_flags", "checked_at",
)


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
class ImageMetrics:
    """The stored metrics and checks of one result image (None where not measured)."""
    image_id: str
    request_id: str
    face_status: str | None
    face_distance: float | None
    faces_reference: int | None
    faces_output: int | None
    phash_distance: int | None
    ciede2000: float | None
    ssim: float | None
    metrics_reference_id: str | None
    metrics_version: str | None
    metrics_at: str | None
    metrics_error: str | None
    requested_width: int | None
    requested_height: int | None
    pixel_width: int | None
    pixel_height: int | None
    seed_sent: int | None
    seed_returned: int | None
    check_flags: tuple[str, ...]
    checked_at: str | None

    @property
    def pending(self) -> bool:
        return self.metrics_at is None

    @property
    def same_person(self) -> bool | None:
        """dlib's verdict (distance under 0.6), only when both faces were found."""
        if self.face_status != "ok" or self.face_distance is None:
            return None
        from core.evaluation.metrics import SAME_PERSON_THRESHOLD
        return self.face_distance < SAME_PERSON_THRESHOLD

    def summary(self) -> str:
        """One line for a caption: face, hash, colour, SSIM and surprises."""
        if self.pending:
            return "metrics pending"
        parts = []
        if self.face_status == "ok" and self.face_distance is not None:
            parts.append(f"face {self.face_distance:.2f} ({'same person' if self.same_person else 'different person'})")
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
        ref = references.get_reference(self.st, reference_id)
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


_ROW_SQL = """
SELECT i.id, i.request_id, i.idx, i.storage_backend, i.storage_path, i.nsfw,
       r.endpoint, r.payload_json, r.response_json, r.seed, r.reference_ids AS request_refs,
       g.reference_ids AS group_refs
FROM result_images i JOIN requests r ON r.id = i.request_id LEFT JOIN groups g ON g.id = r.group_id
WHERE i.id = ?
"""


def measure_image(st: Store, storage: Storage, image_id: str, *,
                  _refs: _References | None = None) -> ImageMetrics:
    """Check and measure one stored result image now, store the outcome, and return it.

    Raises StoreError for an unknown id; every other failure is recorded on the row.
    """
    from core.evaluation import metrics
    from core.catalog import registry
    from core.errors import DashboardError, StoreError

    rows = list(st.db.query(_ROW_SQL, [image_id]))
    if not rows:
        raise StoreError(f"No result image with id {image_id!r}.")
    row = rows[0]
    refs = _refs or _References(st, storage)
    payload = json.loads(row["payload_json"]) if row["payload_json"] else {}
    response = json.loads(row["response_json"]) if row["response_json"] else None
    reported, seed_returned = _reported(response, row["idx"])
    seed_sent = _int_or_none(payload.get("seed"))
    if seed_sent is None:
        seed_sent = row["seed"]

    output = None
    error: str | None = None
    try:
        if row["storage_backend"] != storage.backend or not row["storage_path"]:
            raise StoreError(f"the output is stored in {row['storage_backend'] or 'no'} storage, "
                             f"not reachable from {storage.backend} storage")
        output = _decode(storage.get(row["storage_path"]))
    except DashboardError as e:
        error = f"output image: {_short(e)}"
    pixels = output.size if output is not None else None
    check = check_response(requested=_requested_size(row["endpoint"], payload), reported=reported,
                           pixels=pixels, seed_sent=seed_sent, seed_returned=seed_returned,
                           nsfw=None if row["nsfw"] is None else bool(row["nsfw"]),
                           readable=output is not None)

    reference_ids = json.loads(row["group_refs"] or row["request_refs"] or "[]")
    reference_id = reference_ids[0] if reference_ids else None
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
                    edit = registry.get_endpoint(row["endpoint"]).mode == "edit"
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
    values.update(
        face_status=face_status, metrics_reference_id=reference_id,
        metrics_version=metrics.METRICS_VERSION, metrics_at=stamp, metrics_error=error,
        requested_width=check.requested[0] if check.requested else None,
        requested_height=check.requested[1] if check.requested else None,
        pixel_width=pixels[0] if pixels else None, pixel_height=pixels[1] if pixels else None,
        seed_sent=check.seed_sent, seed_returned=check.seed_returned,
        check_flags=" ".join(check.flags), checked_at=stamp,
    )
    st.db.execute(f"UPDATE result_images SET {', '.join(f'{k} = ?' for k in values)} WHERE id = ?",
               [*values.values(), image_id])
    return image_metrics(st, [image_id])[image_id]


# ---------------------------------------------------------------------------- reading


def image_metrics(st: Store, image_ids: Sequence[str]) -> dict[str, ImageMetrics]:
    """Stored metrics per result image id (ids that do not exist are left out)."""
    out: dict[str, ImageMetrics] = {}
    ids = list(dict.fromkeys(image_ids))
    for start in range(0, len(ids), 500):
        chunk = ids[start:start + 500]
        for row in st.db.query(f"SELECT id, request_id, {', '.join(_COLUMNS)} FROM result_images "
                            f"WHERE id IN ({','.join('?' * len(chunk))})", chunk):
            out[row["id"]] = _from_row(row)
    return out


def _from_row(row: Mapping[str, Any]) -> ImageMetrics:
    values = {c: row.get(c) for c in _COLUMNS}
    values["check_flags"] = tuple((values["check_flags"] or "").split())
    return ImageMetrics(image_id=row["id"], request_id=row["request_id"], **values)


def _scope(batch_id: str | None) -> tuple[str, list[Any]]:
    if batch_id is None:
        return "", []
    return " AND i.request_id IN (SELECT id FROM requests WHERE batch_id = ?)", [batch_id]


def pending_image_ids(st: Store, *, batch_id: str | None = None,
                      limit: int | None = None) -> list[str]:
    """Result images never measured (or reset), oldest first."""
    extra, params = _scope(batch_id)
    sql = f"SELECT i.id FROM result_images i WHERE i.metrics_at IS NULL{extra} ORDER BY i.created_at, i.id"
    if limit is not None:
        sql += " LIMIT ?"
        params.append(limit)
    return [r[0] for r in st.db.execute(sql, params).fetchall()]


def pending_count(st: Store, *, batch_id: str | None = None) -> int:
    extra, params = _scope(batch_id)
    return st.db.execute(f"SELECT count(*) FROM result_images i WHERE i.metrics_at IS NULL{extra}",
                      params).fetchone()[0]


def reset(st: Store, *, batch_id: str | None = None, failed: bool = False,
          outdated: bool = False, everything: bool = False) -> int:
    """Make rows pending again: those that failed, those measured by another METRICS_VERSION, or
    all of them. Returns how many rows became pending."""
    from core.evaluation.metrics import METRICS_VERSION

    conditions = []
    params: list[Any] = []
    if failed:
        conditions.append("i.metrics_error IS NOT NULL")
    if outdated:
        conditions.append("i.metrics_version IS NOT ?")
        params.append(METRICS_VERSION)
    if everything:
        conditions.append("1")
    if not conditions:
        return 0
    extra, scope_params = _scope(batch_id)
    cur = st.db.execute(f"UPDATE result_images SET metrics_at = NULL WHERE id IN (SELECT i.id FROM "
                     f"result_images i WHERE i.metrics_at IS NOT NULL AND ({' OR '.join(conditions)})"
                     f"{extra})", [*params, *scope_params])
    return cur.rowcount


def compute_pending(st: Store, storage: Storage, *, batch_id: str | None = None,
                    limit: int | None = None, stop: threading.Event | None = None,
                    on_image: Callable[[ImageMetrics], None] | None = None) -> PassReport:
    """Measure what is pending now (oldest first), in this thread, until done, `limit` images,
    or `stop` is set. Images that arrive meanwhile are left to the next pass."""
    refs = _References(st, storage)
    measured = failed = 0
    for image_id in pending_image_ids(st, batch_id=batch_id, limit=limit):
        if stop is not None and stop.is_set():
            break
        result = measure_image(st, storage, image_id, _refs=refs)
        measured += 1
        failed += result.metrics_error is not None
        if on_image:
            on_image(result)
    return PassReport(measured=measured, failed=failed, remaining=pending_count(st, batch_id=batch_id))


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
            if not pending_image_ids(st, limit=1):
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
            if stop.is_set() or not pending_image_ids(st, limit=1):
                break
            fd = _try_lock(settings)
            if fd is None:
                break
    finally:
        if fd is not None:
            _unlock(fd)
        storage.close()
        remaining = pending_count(st)
        st.close()
    return PassReport(measured=measured, failed=failed, remaining=remaining)

