"""The process pool: result images measured in other processes while the caller reads rows and
stores outcomes.

Invariants:
- Only the caller touches the store: a pool process gets a row and a reference's location and
  returns the outcome (`measuring.measure_row`), which the caller stores as it arrives.
- Every process runs at niceness `NICENESS` or more (`renice`), so a busy machine still serves
  pages first. Processes are spawned, never forked from a process with threads and connections.
- A process loads the models once and keeps them, with its prepared references, until the pool
  closes; the numbers do not depend on the pool size.
- A process that dies never makes a pass loop: the images in flight are measured again one at a
  time in a new pool, and an image that breaks it alone is recorded as failed.
"""
from __future__ import annotations

import logging
import os
import threading
from collections.abc import Callable
from typing import Any

from core.blobs.backend import open_storage
from core.blobs.storage import Storage
from core.config import Settings
from core.evaluation import measuring
from core.store import ImageToMeasure, Store
from core.values import ImageMetrics

log = logging.getLogger(__name__)

# Pool processes and the background worker run at this niceness: when the machine is busy, a page
# (niceness 0) gets about ten times their share of a core.
NICENESS = 10


def renice(niceness: int = NICENESS) -> None:
    """Lower this process's priority to at least `niceness` (an unprivileged process can never
    raise it again, so this is only called in processes that do nothing else)."""
    current = os.nice(0)
    if niceness > current:
        os.nice(niceness - current)


# The state of a pool process: its storage client and its prepared references.
_child: tuple[Storage, measuring.References] | None = None


def _child_start(settings: Settings, niceness: int) -> None:
    global _child
    renice(niceness)
    storage = open_storage(settings)
    _child = (storage, measuring.References(storage))


def _child_measure(row: ImageToMeasure, where: measuring.RefLocation | None) -> ImageMetrics:
    """One image, in a pool process. The dlib models load on the first call, once per process."""
    assert _child is not None, "not a pool process"
    storage, refs = _child
    return measuring.measure_row(row, where, storage, refs)


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
                 task: Callable[[ImageToMeasure, measuring.RefLocation | None], ImageMetrics] = _child_measure):
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

    def _submit(self, row: ImageToMeasure, where: measuring.RefLocation | None) -> Any:
        if self._executor is None:
            import multiprocessing
            from concurrent.futures import ProcessPoolExecutor

            # spawn: a fresh interpreter, never a fork of a process with threads and connections
            self._executor = ProcessPoolExecutor(
                self.workers, mp_context=multiprocessing.get_context("spawn"),
                initializer=_child_start, initargs=(self.settings, self.niceness))
        return self._executor.submit(self._task, row, where)

    def measure(self, store: Store, storage: Storage, image_ids: list[str], *,
                stop: threading.Event | None = None,
                on_image: Callable[[ImageMetrics], None] | None = None) -> tuple[int, int]:
        """Measure `image_ids` (in that order, two per process in flight) and store each outcome
        as it arrives; returns (measured, failed). After `stop`, only what is in flight finishes."""
        from collections import deque
        from concurrent.futures import FIRST_COMPLETED, wait
        from concurrent.futures.process import BrokenProcessPool

        queue = deque(image_ids)
        places: dict[str, measuring.RefLocation] = {}
        suspects: set[str] = set()  # in flight when a process died: measured again, one at a time
        inflight: dict[Any, tuple[ImageToMeasure, measuring.RefLocation | None]] = {}
        measured = failed = 0

        def keep(m: ImageMetrics) -> None:
            nonlocal measured, failed
            saved = store.save_image_metrics(m)
            measured += 1
            failed += saved.metrics_error is not None
            if on_image:
                on_image(saved)

        def alone() -> bool:
            return any(row.image_id in suspects for row, _ in inflight.values())

        while True:
            while (queue and not (stop is not None and stop.is_set()) and len(inflight) < 2 * self.workers
                   and not alone() and not (queue[0] in suspects and inflight)):
                row = store.image_to_measure(queue.popleft())
                where = None
                if row.reference_ids:
                    rid = row.reference_ids[0]
                    where = places[rid] if rid in places else places.setdefault(rid, measuring.locate(store, rid))
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
                keep(result)
            if broken is None:
                continue
            # every job still in flight went down with the pool
            crashed = list(inflight.values())
            inflight.clear()
            self.close()
            log.warning("a measuring process died (%s) with %d image(s) in flight", broken, len(crashed))
            for row, where in reversed(crashed):
                if len(crashed) == 1:
                    keep(measuring.measure_row(row, where, storage, measuring.References(storage), failure=(
                        "measuring failed: the measuring process died on this image "
                        f"({measuring.short_error(broken)}); retry with `python -m core metrics --retry-failed`")))
                else:
                    suspects.add(row.image_id)
                    queue.appendleft(row.image_id)
        return measured, failed
