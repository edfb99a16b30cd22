"""Fidelity metrics and response checks for every stored result image, computed in the background:
the passes over the pending rows and the one background worker that runs them.

Each row of `result_images` gets two sets of columns (migration m010): the response checks
(core/evaluation/checks.py) and the fidelity to the group's first reference photo
(core/evaluation/measuring.py), measured here or in a `MeasuringPool` (core/evaluation/pool.py).

Invariants:
- A row is PENDING while `metrics_at` is null; every attempt sets it, also when it failed, so a
  pass never loops on a bad image. `reset` makes rows pending again (outdated `metrics_version`,
  or failed ones). A pass measures what is pending when it starts, oldest first; images that
  arrive meanwhile are left to the next pass.
- Nothing here blocks a page: pages call `start_background`, which at most spawns ONE detached
  worker process (`python -m core metrics --worker`, an exclusive file lock `LOCK_NAME` in the
  data directory). The worker measures whatever is pending, keeps following while a batch has a
  live runner, and exits after `IDLE_EXIT_S` idle. Pending rows survive a restart: the next
  worker, `python -m core metrics` or a comparison export picks them up.
- The worker measures in a pool of `DASHBOARD_METRICS_WORKERS` processes (in itself when that is
  1), at the pool's niceness. Only the worker (or command) process touches the store, and only
  the metrics and check columns, through `Store.save_image_metrics` and `Store.reset_metrics`.
- Importing this module is cheap (no numpy, PIL or dlib until something is measured): the batch
  command calls `start_background` on its start-up path.
"""
from __future__ import annotations

import fcntl
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from core import processes
from core.blobs.backend import open_storage
from core.blobs.storage import Storage
from core.config import Settings
from core.evaluation import measuring
from core.evaluation.pool import MeasuringPool
from core.store import Store, open_store, runner_alive
from core.values import ImageMetrics

IDLE_EXIT_S = 10.0
POLL_S = 1.0
LOCK_NAME = "metrics-worker.lock"


@dataclass(frozen=True)
class PassReport:
    measured: int
    failed: int
    remaining: int



def reset(store: Store, *, batch_id: str | None = None, failed: bool = False,
          outdated: bool = False, everything: bool = False) -> int:
    """Make rows pending again: those that failed, those measured by another METRICS_VERSION, or
    all of them. Returns how many rows became pending."""
    from core.evaluation.metrics import METRICS_VERSION  # numpy, PIL: only when asked

    return store.reset_metrics(batch_id=batch_id, failed=failed, everything=everything,
                            other_version_than=METRICS_VERSION if outdated else None)


def compute_pending(store: Store, storage: Storage, *, batch_id: str | None = None,
                    limit: int | None = None, stop: threading.Event | None = None,
                    on_image: Callable[[ImageMetrics], None] | None = None,
                    pool: MeasuringPool | None = None) -> PassReport:
    """Measure what is pending now (oldest first) until done, `limit` images, or `stop` is set:
    in this thread, or in `pool`'s processes (this thread then only reads rows and stores
    outcomes). Images that arrive meanwhile are left to the next pass."""
    image_ids = store.pending_image_ids(batch_id=batch_id, limit=limit)
    if pool is not None:
        measured, failed = pool.measure(store, storage, image_ids, stop=stop, on_image=on_image)
        return PassReport(measured=measured, failed=failed, remaining=store.pending_count(batch_id=batch_id))
    refs = measuring.References(storage)
    measured = failed = 0
    for image_id in image_ids:
        if stop is not None and stop.is_set():
            break
        result = measuring.measure_image(store, storage, image_id, refs=refs)
        measured += 1
        failed += result.metrics_error is not None
        if on_image:
            on_image(result)
    return PassReport(measured=measured, failed=failed, remaining=store.pending_count(batch_id=batch_id))



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


def _live_runner(store: Store) -> bool:
    return any(runner_alive(b) and not b.dry_run for b in store.unfinished_batches())


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
        store = open_store(settings)
        try:
            if not store.pending_image_ids(limit=1):
                return None
        finally:
            store.close()
    if worker_running(settings):
        return None
    return processes.spawn(settings, ["metrics", "--worker"], log_name="metrics")


def run_worker(settings: Settings, *, idle_exit: float = IDLE_EXIT_S, poll: float = POLL_S,
               stop: threading.Event | None = None, workers: int | None = None) -> PassReport | None:
    """The worker's body: hold the lock, measure pending images as they arrive, exit after
    `idle_exit` seconds with nothing pending and no live runner. None when another worker holds
    the lock (it will see whatever is pending).

    With more than one worker (`settings.metrics_workers` unless given) the images are measured by
    a `MeasuringPool` that lives as long as this function, so each process loads the models once;
    with one, they are measured in this thread."""
    stop = stop or threading.Event()
    fd = _try_lock(settings)
    if fd is None:
        return None
    store = open_store(settings)
    storage = open_storage(settings)
    workers = settings.metrics_workers if workers is None else workers
    pool = MeasuringPool(settings, workers) if workers > 1 else None
    measured = failed = 0
    try:
        while True:
            idle_since = time.monotonic()
            while not stop.is_set():
                report = compute_pending(store, storage, stop=stop, pool=pool)
                measured += report.measured
                failed += report.failed
                if report.measured:
                    idle_since = time.monotonic()
                    continue
                if _live_runner(store):
                    idle_since = time.monotonic()
                elif time.monotonic() - idle_since >= idle_exit:
                    break
                stop.wait(poll)
            _unlock(fd)
            fd = None
            # rows written between the last look and the unlock would wait for the next trigger:
            # look once more, and carry on if this process can take the lock again
            if stop.is_set() or not store.pending_image_ids(limit=1):
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
        remaining = store.pending_count()
        store.close()
    return PassReport(measured=measured, failed=failed, remaining=remaining)
