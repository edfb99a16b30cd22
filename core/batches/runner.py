"""The batch runner: sends a stored batch through fal's queue and records every step in the store.

Invariants:
- Write before you send: every request row exists (status `planned`) before its POST; the row is
  marked `submitted` just before the POST leaves, `queued` with fal's request id and URLs as soon
  as fal accepts it, then `running`, then a final status. A crash therefore loses nothing.
- Nothing is lost: when fal cannot be reached while following an accepted job (status or result),
  its row stays queued/running and the run ends unfinished, so a resume follows it later.
- Nothing is paid twice. Resuming polls the requests that already have a fal request id and
  sends only those never sent. A request left `submitted` WITHOUT a fal id (the POST may have
  reached fal) is never resent: it is marked failed, error_type "submit_unconfirmed".
  A submit that fal surely did not accept (refused key, 429, no connection) goes back to `planned`.
- A batch is run by at most one live runner (`store.claim_batch`: runner pid + heartbeat).
- Bounded concurrency: `concurrency` worker threads (default `settings.concurrency`), each with
  its own SQLite connection, sharing one pooled `FalClient`; each worker follows one job at a
  time from submit to stored images, so at most `concurrency` jobs are at fal at once.
- `reference://` tokens become `data:` URIs only in the body handed to `FalClient.submit`
  (`references.resolve_payload`); the stored payload never changes.
- Cancel (`request_cancel`): nothing more is sent, unsent requests are marked cancelled, and
  each job fal still holds gets a cancel PUT; a job that finishes anyway is kept (it is paid).
- Without FAL_KEY a batch is a dry run: payloads validated and recorded as `dry_run`, nothing sent.
- Polling is adaptive (`PollPolicy`): quiet until shortly before the earliest completion observed
  for that endpoint in this run, fast around the expected completion, backing off after it.
"""
from __future__ import annotations

import collections
import dataclasses
import logging
import os
import queue
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from core import store
from core.config import REPO_ROOT, Settings, load_settings
from core.store import ACTIVE_STATUSES, RequestStatus, Store, open_store
from core.errors import (
    BatchBusy,
    DashboardError,
    FalAuthError,
    FalCancelled,
    FalError,
    FalRateLimited,
    FalServerError,
    FalTimeout,
    FalUnavailable,
    FalValidationError,
    PayloadError,
)
from core.catalog.payloads import REFERENCE_SCHEME

if TYPE_CHECKING:
    from core.batches.fal import FalClient, QueueHandle

log = logging.getLogger(__name__)

# errors that say nothing about the job itself: following it later may still succeed
_TRANSIENT = (FalUnavailable, FalServerError, FalTimeout, FalRateLimited)
HEARTBEAT_EVERY_S = 5.0
CHECK_CANCEL_EVERY_S = 0.25
MAX_RATE_LIMIT_RETRIES = 5
_EXT = {"image/jpeg": "jpg", "image/png": "png", "image/webp": "webp", "image/gif": "gif"}
_ERROR_TYPES: tuple[tuple[type, str], ...] = (
    (FalAuthError, "auth"), (FalValidationError, "validation"), (FalRateLimited, "rate_limited"),
    (FalCancelled, "cancelled"), (FalTimeout, "timeout"), (FalUnavailable, "unavailable"),
    (FalServerError, "server_error"), (FalError, "fal_error"),
)


@dataclass(frozen=True)
class PollPolicy:
    """How often to poll a job's status.

    Before any job of an endpoint completed in this run: every `first` seconds (fal_client's own
    fixed cadence is 0.1 s), or `proportion` of the time already waited when that is longer, up to
    `cap`: the detection delay stays within about 10% of the job's time. Afterwards, with the 10th..90th percentile [lo, hi] of the submit-to-completion
    times seen (last `window` jobs): sleep until just before `lo`, poll every `step` (spread/8,
    clamped to [`fast`, `max_step`]) until `hi`, then back off by a quarter of the lateness up to
    `cap`. A job still unfinished after `give_up_after` is left to a later resume."""

    fast: float = 0.01
    max_step: float = 0.5
    first: float = 0.1
    proportion: float = 0.1
    cap: float = 2.0
    window: int = 16
    give_up_after: float = 3600.0


class _Cadence:
    """Completion times per endpoint seen in this run, and the poll delay they suggest."""

    def __init__(self, policy: PollPolicy):
        self.policy = policy
        self._lock = threading.Lock()
        self._seen: dict[str, collections.deque[float]] = {}

    def observe(self, endpoint: str, seconds: float) -> None:
        with self._lock:
            self._seen.setdefault(endpoint, collections.deque(maxlen=self.policy.window)).append(seconds)

    def next_delay(self, endpoint: str, elapsed: float, queue_position: int | None = None) -> float:
        p = self.policy
        with self._lock:
            seen = sorted(self._seen.get(endpoint, ()))
        if not seen:
            return min(p.cap, max(p.first, elapsed * p.proportion))
        cut = len(seen) // 10
        lo, hi = seen[cut], seen[-cut - 1]
        step = min(p.max_step, max(p.fast, (hi - lo) / 8))
        if elapsed < lo - step:
            delay = min(p.cap, lo - step - elapsed)
        elif elapsed <= hi + step:
            delay = step
        else:
            delay = min(p.cap, step + (elapsed - hi) / 4)
        if queue_position:
            # jobs ahead of this one must run first: it cannot be about to finish
            delay = max(delay, min(p.cap, step + 0.1 * queue_position))
        return delay


@dataclass(frozen=True)
class RunReport:
    batch_id: str
    progress: store.BatchProgress
    dry_run: bool
    cancelled: bool
    stopped: str | None = None  # why the run stopped with requests left (resumable)

    @property
    def finished(self) -> bool:
        return self.progress.is_finished


@dataclass
class _Task:
    request_id: str
    follow: bool = False           # already at fal: poll, never send
    rate_limited: int = 0
    record: store.RequestRecord | None = None   # as loaded at start (payload and endpoint)


def error_type_of(e: BaseException) -> str:
    """A short stable code for a FalError, preferring fal's own error_type."""
    if isinstance(e, FalError) and e.error_type:
        return str(e.error_type)
    for cls, code in _ERROR_TYPES:
        if isinstance(e, cls):
            return code
    return type(e).__name__


def _surely_not_sent(e: FalError) -> bool:
    """fal surely did not take this submit (so it may be sent again later)."""
    return isinstance(e, (FalAuthError, FalRateLimited)) or e.not_sent


# ---------------------------------------------------------------------------- running


def run_batch(batch_id: str, *, settings: Settings | None = None, concurrency: int | None = None,
              poll: PollPolicy = PollPolicy(), on_progress: Callable[[store.BatchProgress], None] | None = None,
              progress_every: float = 1.0, fal: FalClient | None = None) -> RunReport:
    """Run (or resume) a batch in this process until every request is final, the batch is
    cancelled, or the run has to stop (refused key, fal unreachable). BatchBusy if another live
    runner owns it."""
    settings = settings or load_settings()
    st = open_store(settings.db_path)
    first = True
    while True:
        try:
            batch = st.claim_batch(batch_id)
        except BatchBusy:
            if first:
                st.close()
                raise
            break   # another runner took over the requests that arrived meanwhile
        first = False
        try:
            if batch.dry_run:
                stopped = _dry_run(st, batch_id, on_progress)
            elif settings.dry_run:
                stopped = _without_key(st, batch)
            else:
                run = _LiveRun(st, batch_id, settings,
                               concurrency or batch.concurrency or settings.concurrency,
                               poll, on_progress, progress_every, fal)
                stopped = run.run()
        finally:
            batch = st.release_batch(batch_id)
        # a re-run added between the workers' last look and the release above would be refused
        # by a new runner (BatchBusy while we held the batch): take it ourselves
        if stopped or batch.cancel_requested or not st.batch_requests(batch_id, (RequestStatus.PLANNED,)):
            break
    if stopped:
        st.set_stop_reason(batch_id, stopped)
    progress = st.batch_progress(batch_id)
    st.close()
    return RunReport(batch_id=batch_id, progress=progress, dry_run=batch.dry_run,
                     cancelled=batch.cancel_requested, stopped=stopped)


def _fail_unconfirmed(st: Store, batch_id: str) -> None:
    """Requests left `submitted` without a fal id by a runner that died inside the POST."""
    for rec in st.batch_requests(batch_id, statuses=(RequestStatus.SUBMITTED,)):
        if not rec.fal_request_id:
            st.mark_failed(rec.id, error_type="submit_unconfirmed",
                error_message=("The runner stopped while this request was being submitted, before fal "
                               "confirmed it. It may have run (and been paid) at fal, so it was NOT sent "
                               "again; re-run it by hand if its result is missing."))


def _without_key(st: Store, batch: store.Batch) -> str | None:
    """A live batch in a process without FAL_KEY: nothing can be sent or polled. A cancel still
    cancels what was never sent; jobs already at fal need the key to be followed or cancelled."""
    _fail_unconfirmed(st, batch.id)
    if batch.cancel_requested:
        for rec in st.batch_requests(batch.id, statuses=(RequestStatus.PLANNED,)):
            st.mark_cancelled(rec.id, reason="batch cancelled before this request was sent")
        if st.batch_progress(batch.id).is_finished:
            return None
    return ("this batch was planned to be sent but FAL_KEY is not set: set FAL_KEY and resume it "
            f"with `python -m core batch resume {batch.id}`")


def _dry_run(st: Store, batch_id: str,
             on_progress: Callable[[store.BatchProgress], None] | None) -> str | None:
    from core.catalog import registry

    for rec in st.batch_requests(batch_id, statuses=(RequestStatus.PLANNED,)):
        if st.get_batch(batch_id).cancel_requested:
            st.mark_cancelled(rec.id, reason="batch cancelled (dry run)")
            continue
        try:
            registry.validate_payload(rec.endpoint, rec.payload)
        except PayloadError as e:
            st.mark_failed(rec.id, error_type="validation", error_message="; ".join(e.messages))
            continue
        st.mark_dry_run(rec.id)
    for rec in st.batch_requests(batch_id, statuses=ACTIVE_STATUSES):
        # a dry-run batch never sends; anything in flight here was written by hand
        st.mark_failed(rec.id, error_type="dry_run", error_message="dry-run batch: not followed")
    if on_progress:
        on_progress(st.batch_progress(batch_id))
    return None


class _LiveRun:
    def __init__(self, st: Store, batch_id: str, settings: Settings, concurrency: int,
                 poll: PollPolicy, on_progress: Callable[[store.BatchProgress], None] | None,
                 progress_every: float, fal: FalClient | None):
        self.st = st
        self.batch_id = batch_id
        self.settings = dataclasses.replace(settings, concurrency=max(1, concurrency))
        self.concurrency = max(1, concurrency)
        self.cadence = _Cadence(poll)
        self.poll = poll
        self.on_progress = on_progress
        self.progress_every = progress_every
        self._fal = fal
        self._own_fal = fal is None
        self.tasks: collections.deque[_Task] = collections.deque()
        self._taken: set[str] = set()   # request ids handed to a sender in this run
        self.lock = threading.Lock()
        self.cancel = threading.Event()
        self.stop = threading.Event()
        self.stopped: str | None = None
        self._storage: Any = None
        # jobs fal reported COMPLETED, waiting for result fetch, downloads and store writes
        self.finished: queue.Queue[tuple[str, QueueHandle, Any, bool] | None] = queue.Queue()
        self.done = threading.Event()   # set when the last finisher has exited
        self._live_finishers = 0

    # -- setup -------------------------------------------------------------------------------

    def run(self) -> str | None:
        st = self.st
        _fail_unconfirmed(st, self.batch_id)
        for rec in st.batch_requests(self.batch_id, statuses=ACTIVE_STATUSES):
            self.tasks.append(_Task(rec.id, follow=True))
        for rec in st.batch_requests(self.batch_id, statuses=(RequestStatus.PLANNED,)):
            self.tasks.append(_Task(rec.id, record=rec))
        if not self.tasks:
            return None
        if st.get_batch(self.batch_id).cancel_requested:
            self.cancel.set()
        from core.batches.fal import FalClient
        from core.store.blobs import open_storage

        if self._fal is None:
            self._fal = FalClient(self.settings)
        self._storage = open_storage(self.settings)
        n = min(self.concurrency, len(self.tasks))
        # A job takes a slot (sender) from its submit until fal says COMPLETED; fetching its result
        # and images is a finisher's work, so the next job is submitted without waiting for them.
        senders = [threading.Thread(target=self._sender, name=f"runner-send-{i}", daemon=True)
                   for i in range(n)]
        finishers = [threading.Thread(target=self._finisher, name=f"runner-finish-{i}", daemon=True)
                     for i in range(n)]
        self._live_finishers = len(finishers)
        closer = threading.Thread(target=self._close_when_sent, args=(senders, len(finishers)),
                                  name="runner-closer", daemon=True)
        try:
            for t in (*senders, *finishers, closer):
                t.start()
            self._supervise()
        finally:
            self.stop.set()
            for t in (*senders, closer, *finishers):
                t.join()
            if self._own_fal:
                self._fal.close()
            close = getattr(self._storage, "close", None)
            if close:
                close()
        return self.stopped

    def _close_when_sent(self, senders: list[threading.Thread], finishers: int) -> None:
        for t in senders:
            t.join()
        for _ in range(finishers):
            self.finished.put(None)

    def _supervise(self) -> None:
        """Heartbeat, watch for a cancel request, report progress, until the workers are done."""
        last_beat = last_report = time.monotonic()
        last_counts: dict[str, int] | None = None
        while not self.done.wait(CHECK_CANCEL_EVERY_S):
            now = time.monotonic()
            try:
                if now - last_beat >= HEARTBEAT_EVERY_S:
                    batch = self.st.heartbeat(self.batch_id)
                    last_beat = now
                else:
                    batch = self.st.get_batch(self.batch_id)
            except BatchBusy as e:
                self._halt(str(e))
                continue
            if batch.cancel_requested and not self.cancel.is_set():
                log.info("batch %s: cancel requested", self.batch_id)
                self.cancel.set()
            if self.on_progress and now - last_report >= self.progress_every:
                progress = self.st.batch_progress(self.batch_id)
                if dict(progress.counts) != last_counts:
                    self.on_progress(progress)
                    last_counts = dict(progress.counts)
                last_report = now

    def _note(self, reason: str) -> None:
        """Remember why requests are left unfinished (the first reason wins)."""
        with self.lock:
            if self.stopped is None:
                self.stopped = reason

    def _halt(self, reason: str) -> None:
        """Stop the whole run: nothing more is sent or polled; what is left stays resumable."""
        self._note(reason)
        self.stop.set()

    # -- workers -----------------------------------------------------------------------------

    def _next(self, st: Store) -> _Task | None:
        with self.lock:
            if not self.tasks and not self.cancel.is_set():
                # requests added while this runner works (a re-run from History lands in the
                # batch whose runner may be alive) are picked up before the runner exits
                for rec in st.batch_requests(self.batch_id, statuses=(RequestStatus.PLANNED,)):
                    if rec.id not in self._taken:
                        self.tasks.append(_Task(rec.id, record=rec))
            if not self.tasks:
                return None
            task = self.tasks.popleft()
            self._taken.add(task.request_id)
            return task

    def _guarded(self, st: Store, request_id: str, fn: Callable[[], None]) -> None:
        try:
            fn()
        except Exception as e:  # noqa: BLE001 - a bug in one request must not stop the batch
            log.exception("batch %s: request %s failed unexpectedly", self.batch_id, request_id)
            try:
                st.mark_failed(request_id, error_type="runner_error",
                                  error_message=f"unexpected error in the runner: {e!r}; re-run it")
            except Exception:  # noqa: BLE001
                log.exception("could not record the failure of %s", request_id)

    def _sender(self) -> None:
        st = open_store(self.settings.db_path, migrate=False)
        try:
            while not self.stop.is_set():
                task = self._next(st)
                if task is None:
                    return
                if task.follow:
                    self._guarded(st, task.request_id, lambda: self._resume_follow(st, task))
                elif self.cancel.is_set():
                    st.mark_cancelled(task.request_id,
                                         reason="batch cancelled before this request was sent")
                else:
                    self._guarded(st, task.request_id, lambda: self._send(st, task))
        finally:
            st.close()

    def _finisher(self) -> None:
        st = open_store(self.settings.db_path, migrate=False)
        try:
            while (item := self.finished.get()) is not None:
                if self.stop.is_set():
                    continue  # left queued/running in the store: a resume polls and finishes it
                request_id, handle, status, cancel_sent = item
                self._guarded(st, request_id,
                              lambda: self._finish(st, request_id, handle, status, cancel_sent))
        finally:
            st.close()
            with self.lock:
                self._live_finishers -= 1
                if self._live_finishers == 0:
                    self.done.set()

    def _send(self, st: Store, task: _Task) -> None:
        # the row as loaded at start: only this runner writes it, and mark_submitted below only
        # moves a row that is still `planned`
        rec = task.record or st.get_request(task.request_id)
        if rec.status != RequestStatus.PLANNED:
            return
        body: dict[str, Any] = rec.payload
        if REFERENCE_SCHEME in rec.payload_json:
            from core.photos.references import resolve_payload

            try:
                body = resolve_payload(body, st, self._storage)
            except DashboardError as e:
                st.mark_failed(rec.id, error_type="reference_unavailable", error_message=str(e))
                return
        if not st.mark_submitted(rec.id):
            return
        sent_at = time.monotonic()
        try:
            handle = self._fal.submit(rec.endpoint, body)
        except FalError as e:
            self._submit_failed(st, task, e)
            return
        finally:
            del body
        st.mark_queued(rec.id, fal_request_id=handle.request_id, status_url=handle.status_url,
                          response_url=handle.response_url, cancel_url=handle.cancel_url,
                          queue_position=handle.queue_position)
        self._follow(st, rec.id, handle, sent_at=sent_at, queue_position=handle.queue_position)

    def _submit_failed(self, st: Store, task: _Task, e: FalError) -> None:
        rid = task.request_id
        if _surely_not_sent(e):
            st.mark_unsent(rid)
            if isinstance(e, FalRateLimited) and task.rate_limited < MAX_RATE_LIMIT_RETRIES:
                task.rate_limited += 1
                self.stop.wait(e.retry_after if e.retry_after is not None else 2.0 ** task.rate_limited)
                with self.lock:
                    self.tasks.append(task)
                return
            self._halt(f"{e} The unsent requests stay planned: resume the batch with "
                       f"`python -m core batch resume {self.batch_id}`.")
            return
        if isinstance(e, FalValidationError):
            st.mark_failed(rid, error_type="validation", error_message=str(e),
                              http_status=e.status_code, response={"detail": e.detail})
            return
        # fal may have accepted it: never sent again automatically
        st.mark_failed(rid, error_type="submit_unconfirmed",
                          error_message=f"{e} It may have run at fal; re-run it by hand if needed.",
                          http_status=e.status_code)

    def _resume_follow(self, st: Store, task: _Task) -> None:
        from core.batches.fal import handle_from_row

        rec = st.get_request(task.request_id)
        if rec.is_final or not rec.fal_request_id:
            return
        handle = handle_from_row(rec.endpoint, rec.fal_request_id, rec.status_url, rec.response_url,
                                 rec.cancel_url, queue_url=self.settings.fal_queue_url)
        self._follow(st, rec.id, handle, sent_at=None, queue_position=rec.queue_position,
                     running=rec.status == RequestStatus.RUNNING)

    def _follow(self, st: Store, request_id: str, handle: QueueHandle, *,
                sent_at: float | None, queue_position: int | None, running: bool = False) -> None:
        from core.batches.fal import Completed, InProgress, Queued

        start = sent_at if sent_at is not None else time.monotonic()
        cancel_sent = False
        while True:
            if self.cancel.is_set() and not cancel_sent:
                cancel_sent = True
                try:
                    answer = self._fal.cancel(handle)
                except FalError as e:
                    log.warning("cancel of fal request %s failed: %s", handle.request_id, e)
                    answer = None
                if answer == "NOT_FOUND":
                    st.mark_cancelled(request_id, reason="cancelled; fal no longer knows the job")
                    return
            elapsed = time.monotonic() - start
            if elapsed > self.poll.give_up_after:
                self._note(f"fal request {handle.request_id} is still unfinished after "
                           f"{self.poll.give_up_after:.0f} s; resume the batch later to follow it.")
                return
            delay = self.cadence.next_delay(handle.endpoint, elapsed, queue_position)
            if cancel_sent:
                delay = min(delay, 0.25)
            # a cancel request wakes sleeping pollers so their jobs are cancelled at once
            (self.stop if cancel_sent else self.cancel).wait(delay)
            if self.stop.is_set():
                return
            try:
                status = self._fal.status(handle)
            except FalError as e:
                if e.status_code == 404:
                    st.mark_failed(request_id, error_type="not_found", http_status=404,
                                      error_message=f"fal no longer knows request {handle.request_id} "
                                                    f"({e}); re-run it if its result is needed.")
                else:
                    self._lost_contact(handle, e)
                return
            if isinstance(status, Queued):
                if status.position != queue_position:
                    queue_position = status.position
                    st.update_queue_position(request_id, status.position)
            elif isinstance(status, InProgress):
                queue_position = None
                if not running:
                    running = True
                    st.mark_running(request_id, logs=list(status.logs) or None)
            elif isinstance(status, Completed):
                if sent_at is not None:
                    self.cadence.observe(handle.endpoint, time.monotonic() - sent_at)
                self.finished.put((request_id, handle, status, cancel_sent))
                return

    def _lost_contact(self, handle: QueueHandle, e: FalError) -> None:
        """fal could not be reached (after the client's retries) while following a job it has
        accepted: the row stays queued/running, so `batch resume` follows it later."""
        self._note(f"lost contact with fal while following request {handle.request_id} ({e}); "
                   f"resume the batch to follow it: `python -m core batch resume {self.batch_id}`.")

    def _finish(self, st: Store, request_id: str, handle: QueueHandle,
                status: Any, cancel_sent: bool) -> None:
        inference = status.metrics.get("inference_time") if status.metrics else None
        logs = list(status.logs) or None
        try:
            result = self._fal.result(handle)
        except FalCancelled as e:
            st.mark_cancelled(request_id, reason=str(e), http_status=e.status_code)
            return
        except FalError as e:
            if cancel_sent and not status.ok:
                st.mark_cancelled(request_id, reason=f"cancelled ({e})", http_status=e.status_code)
                return
            if status.ok and isinstance(e, _TRANSIENT):
                # the job succeeded and is paid: an outage while fetching must not lose it
                self._lost_contact(handle, e)
                return
            detail = getattr(e, "detail", None)
            st.mark_failed(request_id, error_type=status.error_type or error_type_of(e),
                              error_message=str(e), http_status=e.status_code,
                              response={"detail": detail} if detail is not None else None,
                              inference_time_s=inference)
            return
        images = result.get("images") if isinstance(result, dict) else None
        if not isinstance(images, list) or not images:
            st.mark_failed(request_id, error_type="no_images", http_status=200, response=result,
                              error_message="fal finished the job but returned no image; re-run it.",
                              inference_time_s=inference)
            return
        nsfw = result.get("has_nsfw_concepts") or []
        for idx, img in enumerate(images):
            try:
                self._keep_image(st, request_id, idx, img, nsfw[idx] if idx < len(nsfw) else None)
            except (FalError, DashboardError, OSError) as e:
                st.mark_failed(request_id, error_type="download_failed", http_status=200, response=result,
                    inference_time_s=inference,
                    error_message=(f"fal finished (and billed) the job but image {idx} could not be "
                                   f"kept: {e} Its fal URL is in the response; it expires, so "
                                   "re-run the request if it is gone."))
                return
        st.mark_completed(request_id, response=result, http_status=200,
                             inference_time_s=inference, logs=logs)

    def _keep_image(self, st: Store, request_id: str, idx: int, img: Any,
                    nsfw: Any) -> None:
        import hashlib

        url = img.get("url") if isinstance(img, dict) else None
        if not isinstance(url, str) or not url:
            raise FalError(f"image {idx} of the result has no URL")
        data, content_type = self._fal.download(url)
        ext = _EXT.get(content_type, "bin")
        stored = self._storage.put(f"results/{request_id}/{idx}.{ext}", data, content_type,
                                   overwrite=True)
        width, height = img.get("width"), img.get("height")
        if not (isinstance(width, int) and isinstance(height, int)):
            from core.photos.images import image_info

            try:
                _, width, height = image_info(data)
            except DashboardError:
                width = height = None
        st.add_result_image(request_id, idx=idx, fal_url=url, storage_backend=stored.backend,
            storage_path=stored.path, sha256=hashlib.sha256(data).hexdigest(), width=width,
            height=height, content_type=content_type, size_bytes=len(data),
            nsfw=None if nsfw is None else bool(nsfw))


# ---------------------------------------------------------------------------- control


def request_cancel(batch_id: str, *, settings: Settings | None = None) -> store.Batch:
    """Ask for a batch to stop. Its live runner notices within a fraction of a second; when no
    runner is alive and requests are left, a background runner is started to do the cancelling
    (mark unsent requests cancelled, cancel jobs fal still holds)."""
    settings = settings or load_settings()
    st = open_store(settings.db_path)
    try:
        batch = st.request_cancel(batch_id)
        if not store.runner_alive(batch) and not st.batch_progress(batch_id).is_finished:
            start_batch_process(batch_id, settings=settings)
        return batch
    finally:
        st.close()


def log_path(settings: Settings, batch_id: str) -> Path:
    return settings.data_dir / "logs" / f"batch-{batch_id}.log"


def start_batch_process(batch_id: str, *, settings: Settings | None = None,
                        concurrency: int | None = None) -> int:
    """Run a batch in a detached `python -m core batch resume <id>` process (its own session, so
    closing the browser tab or restarting the page process does not stop it); output goes to
    `<data dir>/logs/batch-<id>.log`. Returns the pid. Progress is read from the store."""
    settings = settings or load_settings()
    path = log_path(settings, batch_id)
    path.parent.mkdir(parents=True, exist_ok=True)
    cmd = [sys.executable, "-m", "core", "batch", "resume", batch_id]
    if concurrency:
        cmd += ["--concurrency", str(concurrency)]
    env = {**os.environ, "DASHBOARD_DATA_DIR": str(settings.data_dir)}
    with open(path, "ab") as out:
        proc = subprocess.Popen(cmd, cwd=str(REPO_ROOT), stdin=subprocess.DEVNULL, stdout=out,
                                stderr=subprocess.STDOUT, env=env, start_new_session=True)
    # reap it when it ends, so a finished runner does not linger as a zombie of the page process
    threading.Thread(target=proc.wait, name=f"reap-{proc.pid}", daemon=True).start()
    return proc.pid

