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
- The worker measures in a `MeasuringPool` of `DASHBOARD_METRICS_WORKERS` processes (in itself
  when that is 1), all at niceness `NICENESS`, so a busy machine still serves pages first. Only
  the worker (or command) process touches the store: pool processes get a row and a reference's
  location, and return the outcome. Each process loads the models once and prepares each
  reference once (`metrics.prepare_reference`); the numbers do not depend on the pool size.
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

from core.values import now
from core.values import ImageMetrics  # the value lives with the row it reads; importable here

if TYPE_CHECKING:
    from core.store import Store
    from core.store.metrics import ImageToMeasure

    from core.config import Settings
    from core.blobs import Storage

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
# Pool processes and the background worker run at this niceness: when the machine is busy, a page
# (niceness 0) gets about ten times their share of a core.
NICENESS = 10
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
    from core.fal.values import parse_output
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


@dataclass(frozen=True)
class _RefLocation:
    """Where a reference photo's bytes are, as the store said (or why it could not say)."""
    reference_id: str
    backend: str | None = None
    path: str | None = None
    error: str | None = None


def _locate(st: Store, reference_id: str) -> _RefLocation:
    from core.errors import DashboardError

    try:
        ref = st.get_reference(reference_id)
    except DashboardError as e:
        return _RefLocation(reference_id, error=str(e))
    return _RefLocation(reference_id, ref.storage_backend, ref.storage_path)


class _References:
    """Prepared reference photos (`metrics.prepare_reference`: decoded, face descriptor, hashes) by
    id, a few at most: a batch shares its references, so each is read and prepared once per process."""

    def __init__(self, storage: Storage):
        self.storage = storage
        self._cache: OrderedDict[str, Any] = OrderedDict()

    def get(self, where: _RefLocation) -> Any:
        from core.evaluation import metrics
        from core.errors import StorageError, StoreError

        if where.reference_id in self._cache:
            self._cache.move_to_end(where.reference_id)
            return self._cache[where.reference_id]
        if where.error is not None:
            raise StoreError(where.error)
        if where.backend != self.storage.backend:
            raise StorageError(f"reference photo {where.reference_id} is stored in {where.backend}, "
                               f"but this process uses {self.storage.backend} storage")
        assert where.path is not None
        prepared = metrics.prepare_reference(_decode(self.storage.get(where.path)))
        self._cache[where.reference_id] = prepared
        if len(self._cache) > _REFERENCE_CACHE:
            self._cache.popitem(last=False)
        return prepared


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
    row = st.image_to_measure(image_id)
    where = _locate(st, row.reference_ids[0]) if row.reference_ids else None
    return st.save_image_metrics(_measure_row(row, where, storage, _refs or _References(storage)))


def _measure_row(row: ImageToMeasure, where: _RefLocation | None, storage: Storage, refs: _References,
                 *, failure: str | None = None) -> ImageMetrics:
    """The outcome of checking and measuring one image, not yet stored; no SQL (it also runs in
    the pool's processes). With `failure`, the metrics are not attempted and that error is recorded
    (the response checks still are)."""
    from core.evaluation import metrics
    from core.catalog import registry
    from core.errors import DashboardError, StoreError

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

    reference_id = where.reference_id if where else None
    values: dict[str, Any] = dict.fromkeys(("face_distance", "faces_reference", "faces_output",
                                            "phash_distance", "ciede2000", "ssim"))
    face_status = "error"
    if output is not None and failure is not None:
        error = failure
    elif output is not None:
        if where is None:
            face_status = "no_reference"
        else:
            try:
                reference = refs.get(where)
                try:
                    edit = registry.get_endpoint(row.endpoint).mode == "edit"
                except DashboardError:
                    edit = False
                fid = metrics.measure(reference, output, same_framing=edit)
            except DashboardError as e:
                error = f"reference {reference_id}: {_short(e)}"
            except Exception as e:  # noqa: BLE001 - one odd image must not stall every later one
                log.exception("measuring result image %s failed", row.image_id)
                error = f"measuring failed: {e!r}"
            else:
                face_status = fid.face.status
                values.update(face_distance=fid.face.distance, faces_reference=fid.face.faces_reference,
                              faces_output=fid.face.faces_output, phash_distance=fid.phash_distance,
                              ciede2000=fid.ciede2000, ssim=fid.ssim)
                if fid.face.detail:
                    error = fid.face.detail
    stamp = now()
    return ImageMetrics(
        image_id=row.image_id, request_id=row.request_id, **values,
        face_status=face_status, metrics_reference_id=reference_id,
        metrics_version=metrics.METRICS_VERSION, metrics_at=stamp, metrics_error=error,
        requested_width=check.requested[0] if check.requested else None,
        requested_height=check.requested[1] if check.requested else None,
        pixel_width=pixels[0] if pixels else None, pixel_height=pixels[1] if pixels else None,
        seed_sent=check.seed_sent, seed_returned=check.seed_returned,
        check_flags=check.flags, checked_at=stamp,
    )


def reset(st: Store, *, batch_id: str | None = None, failed: bool = False,
          outdated: bool = False, everything: bool = False) -> int:
    """Make rows pending again: those that failed, those measured by another METRICS_VERSION, or
    all of them. Returns how many rows became pending."""
    from core.evaluation.metrics import METRICS_VERSION

    return st.reset_metrics(batch_id=batch_id, failed=failed, everything=everything,
                            other_version_than=METRICS_VERSION if outdated else None)


def compute_pending(st: Store, storage: Storage, *, batch_id: str | None = None,
                    limit: int | None = None, stop: threading.Event | None = None,
                    on_image: Callable[[ImageMetrics], None] | None = None,
                    pool: MeasuringPool | None = None) -> PassReport:
    """Measure what is pending now (oldest first) until done, `limit` images, or `stop` is set:
    in this thread, or in `pool`'s processes (this thread then only reads rows and stores
    outcomes). Images that arrive meanwhile are left to the next pass."""
    image_ids = st.pending_image_ids(batch_id=batch_id, limit=limit)
    if pool is not None:
        measured, failed = pool.measure(st, storage, image_ids, stop=stop, on_image=on_image)
        return PassReport(measured=measured, failed=failed, remaining=st.pending_count(batch_id=batch_id))
    refs = _References(storage)
    measured = failed = 0
    for image_id in image_ids:
        if stop is not None and stop.is_set():
            break
        result = measure_image(st, storage, image_id, _refs=refs)
        measured += 1
        failed += result.metrics_error is not None
        if on_image:
            on_image(result)
    return PassReport(measured=measured, failed=failed, remaining=st.pending_count(batch_id=batch_id))


# ---------------------------------------------------------------------------- the pool


def renice(niceness: int = NICENESS) -> None:
    """Lower this process's priority to at least `niceness` (an unprivileged process can never
    raise it again, so this is only called in processes that do nothing else)."""
    current = os.nice(0)
    if niceness > current:
        os.nice(niceness - current)


# The state of a pool process: its storage client and its prepared references.
_child: tuple[Storage, _References] | None = None


def _child_start(settings: Settings, niceness: int) -> None:
    global _child
    from core.blobs import open_storage

    renice(niceness)
    storage = open_storage(settings)
    _child = (storage, _References(storage))


def _child_measure(row: ImageToMeasure, where: _RefLocation | None) -> ImageMetrics:
    """One image, in a pool process. The dlib models load on the first call, once per process."""
    assert _child is not None, "not a pool process"
    storage, refs = _child
    return _measure_row(row, where, storage, refs)


class MeasuringPool:
    """Processes that measure result images while the caller reads rows and stores outcomes.

    Processes, not threads: dlib and numpy hold the interpreter lock in places. Each process runs
    at `niceness` or more (the caller's, if higher): the background worker's pool leaves pages
    their priority; `python -m core metrics` passes 0. A process starts on first use, loads the
    models once and keeps them, with its prepared references, until `close` (about 190 MB each).
    A process that dies (dlib crash, out of memory) breaks the pool: the images it was measuring
    are measured again one at a time in a new pool, and an image that breaks it alone is
    recorded as failed, so a pass never loops on it.
    """

    def __init__(self, settings: Settings, workers: int, *, niceness: int = NICENESS,
                 task: Callable[[ImageToMeasure, _RefLocation | None], ImageMetrics] = _child_measure):
        if workers < 1:
            raise ValueError("a pool needs at least one process")
        self.settings, self.workers, self.niceness, self._task = settings, workers, niceness, task
        self._executor: Any = None

    def __enter__(self) -> MeasuringPool:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Stop the processes (after the images they are measuring)."""
        if self._executor is not None:
            self._executor.shutdown(wait=True, cancel_futures=True)
            self._executor = None

    def _submit(self, row: ImageToMeasure, where: _RefLocation | None) -> Any:
        if self._executor is None:
            import multiprocessing
            from concurrent.futures import ProcessPoolExecutor

            # spawn: a fresh interpreter, never a fork of a process with threads and connections
            self._executor = ProcessPoolExecutor(
                self.workers, mp_context=multiprocessing.get_context("spawn"),
                initializer=_child_start, initargs=(self.settings, self.niceness))
        return self._executor.submit(self._task, row, where)

    def measure(self, st: Store, storage: Storage, image_ids: list[str], *,
                stop: threading.Event | None = None,
                on_image: Callable[[ImageMetrics], None] | None = None) -> tuple[int, int]:
        """Measure `image_ids` (in that order, two per process in flight) and store each outcome
        as it arrives; returns (measured, failed). After `stop`, only what is in flight finishes."""
        from collections import deque
        from concurrent.futures import FIRST_COMPLETED, wait
        from concurrent.futures.process import BrokenProcessPool

        queue = deque(image_ids)
        places: dict[str, _RefLocation] = {}
        suspects: set[str] = set()  # in flight when a process died: measured again, one at a time
        inflight: dict[Any, tuple[ImageToMeasure, _RefLocation | None]] = {}
        measured = failed = 0

        def store(m: ImageMetrics) -> None:
            nonlocal measured, failed
            saved = st.save_image_metrics(m)
            measured += 1
            failed += saved.metrics_error is not None
            if on_image:
                on_image(saved)

        def alone() -> bool:
            return any(row.image_id in suspects for row, _ in inflight.values())

        while True:
            while (queue and not (stop is not None and stop.is_set()) and len(inflight) < 2 * self.workers
                   and not alone() and not (queue[0] in suspects and inflight)):
                row = st.image_to_measure(queue.popleft())
                where = None
                if row.reference_ids:
                    rid = row.reference_ids[0]
                    where = places[rid] if rid in places else places.setdefault(rid, _locate(st, rid))
                inflight[self._submit(row, where)] = (row, where)
            if not inflight:
                break
            done, _ = wait(list(inflight), return_when=FIRST_COMPLETED)
            broken: BrokenProcessPool | None = None
            for future in done:
                try:
                    result = future.result()
                except BrokenProcessPool as e:
                    broken = e
                    continue
                suspects.discard(inflight.pop(future)[0].image_id)
                store(result)
            if broken is None:
                continue
            # every job still in flight went down with the pool
            crashed = list(inflight.values())
            inflight.clear()
            self.close()
            log.warning("a measuring process died (%s) with %d image(s) in flight", broken, len(crashed))
            for row, where in reversed(crashed):
                if len(crashed) == 1:
                    store(_measure_row(row, where, storage, _References(storage), failure=(
                        "measuring failed: the measuring process died on this image "
                        f"({_short(broken)}); retry with `python -m core metrics --retry-failed`")))
                else:
                    suspects.add(row.image_id)
                    queue.appendleft(row.image_id)
        return measured, failed


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
               stop: threading.Event | None = None, workers: int | None = None) -> PassReport | None:
    """The worker's body: hold the lock, measure pending images as they arrive, exit after
    `idle_exit` seconds with nothing pending and no live runner. None when another worker holds
    the lock (it will see whatever is pending).

    With more than one worker (`settings.metrics_workers` unless given) the images are measured by
    a `MeasuringPool` that lives as long as this function, so each process loads the models once;
    with one, they are measured in this thread."""
    from core.store import open_store
    from core.blobs import open_storage

    stop = stop or threading.Event()
    fd = _try_lock(settings)
    if fd is None:
        return None
    st = open_store(settings.db_path)
    storage = open_storage(settings)
    workers = settings.metrics_workers if workers is None else workers
    pool = MeasuringPool(settings, workers) if workers > 1 else None
    measured = failed = 0
    try:
        while True:
            idle_since = time.monotonic()
            while not stop.is_set():
                report = compute_pending(st, storage, stop=stop, pool=pool)
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
        if pool is not None:
            pool.close()
        if fd is not None:
            _unlock(fd)
        storage.close()
        remaining = st.pending_count()
        st.close()
    return PassReport(measured=measured, failed=failed, remaining=remaining)

