"""The batch runner: sends a stored batch through fal's queue, a bounded number of jobs at once.

It only schedules. Following one job is `core.batches.follow` (no store), what an answer or an
error means for the request row is `core.batches.record`; this module moves requests between them.

    senders (n = concurrency)      each: take a planned request, POST it, store fal's id, follow
        |                               the job until fal says COMPLETED (one slot per job at fal)
        v  _FinishedJob
    finishers (n)                  each: fetch the result, keep the images, record the outcome
    supervisor (the calling thread) heartbeat, cancel requests, signals, progress, fal outages

Invariants:
- Write before you send: every request row exists (`planned`) before its POST; it is marked
  `submitted` just before the POST leaves and `queued` with fal's id as soon as fal accepts.
- Nothing is paid twice: a request left `submitted` without a fal id (the POST may have reached
  fal) is never resent; it becomes `in_doubt` (record.submit_failure says which answers prove a
  submit was not accepted; docs/fal.md gives the rule and its sources). Only a submit fal surely
  did not take goes back to `planned`; a person may send an in-doubt one again, explicitly.
- Nothing accepted is lost: fal's id is journaled (fsynced, `record.Journal`) before the row is
  told; an outage, a storage or database fault while following or finishing a job leaves it
  resumable; an odd answer is retried, never a reason to drop a job.
- Outages are ridden through: the first failed call of any kind (no connection, a dropped or
  reset one, a timeout, a gateway page, a 5xx) stops new submits at once; while it lasts, one
  sender at a time probes fal with a call that cannot start a job (`FalClient.probe`), and
  sending resumes by itself when fal answers. At most the submits already in flight can end in
  doubt. The run stops only for what a person must fix (a refused key, a full disk), a cancel, a
  signal, or an outage longer than `Settings.outage_limit_s`; the reason is stored on the batch
  (`Store.set_stop_reason`).
- A stop is a stop: one flag (`halted`) that every wait obeys (backoff, Retry-After, reads);
  a run that was stopped is never followed by a second pass. SIGTERM, SIGINT and SIGHUP (when
  `handle_signals`): no submit starts after the signal, submits in flight get `DRAIN_GRACE_S`
  to store their ids (a cut one is in doubt), and the process is back within about 5 s.
- A batch is run by at most one live runner (`Store.claim_batch`: pid + heartbeat).
- Before anything is sent, each reference photo of the requests to send is checked once
  (`core.photos.references.check_reachable`): one fal could not fetch stops the batch with the
  reason stored and nothing sent (the requests stay planned; accepted jobs are still followed).
- `reference://` tokens become `data:` URIs only in the body handed to `FalClient.submit`.
- Without FAL_KEY a batch is a dry run: payloads validated and recorded as `dry_run`.
"""
from __future__ import annotations

import collections
import contextlib
import dataclasses
import errno
import logging
import queue
import signal
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from core.batches import record
from core.fal.follow import Cadence, Finished, Gone, Outage, PollPolicy, Signals, follow
from core.catalog.payloads import REFERENCE_SCHEME
from core.config import Settings, load_settings
from core.errors import (
    BatchBusy,
    DashboardError,
    FalError,
    FalRateLimited,
    PayloadError,
    StoreError,
    StoreUnavailable,
)
from core.store import Store, open_store
from core.values import BatchProgress, RequestRecord, now as utc_now

from core.fal.client import FalClient
from core.fal.values import QueueHandle

log = logging.getLogger(__name__)

HEARTBEAT_EVERY_S = 5.0
CHECK_CANCEL_EVERY_S = 0.25
MAX_RATE_LIMIT_RETRIES = 5
MAX_RATE_LIMIT_WAIT_S = 60.0   # the longest one Retry-After is waited for
DRAIN_GRACE_S = 2.0            # after a stop signal, how long submits in flight may take
JOIN_GRACE_S = 1.0             # then, how long the workers get to return
_SIGNALS = ("SIGTERM", "SIGINT", "SIGHUP")

ProgressCallback = Callable[[BatchProgress, Outage], None]


@dataclass(frozen=True)
class RunReport:
    batch_id: str
    progress: BatchProgress
    dry_run: bool
    cancelled: bool
    stopped: str | None = None  # why the run stopped with requests left (resumable)

    @property
    def finished(self) -> bool:
        return self.progress.is_finished


def run_batch(batch_id: str, *, settings: Settings | None = None, concurrency: int | None = None,
              poll: PollPolicy = PollPolicy(), on_progress: ProgressCallback | None = None,
              progress_every: float = 1.0, fal: FalClient | None = None,
              handle_signals: bool = False, stream: bool = True,
              on_sending: Callable[[], None] | None = None, store: Store | None = None) -> RunReport:
    """Run (or resume) a batch in this process until every request is final, the batch is
    cancelled, or the run has to stop. BatchBusy if another live runner owns it. `stream`: follow
    jobs through fal's status stream (polling when it fails); False polls only. `on_sending()` is
    called once, from the supervising thread, after fal accepted the run's first job: work that
    only matters once results can arrive (the metrics worker) starts there, not before the first
    POST. `store`: an open store on `settings`' database to run on (the caller keeps and closes
    it), else one is opened and closed here."""
    settings = settings or load_settings()
    own_store = store is None
    store = open_store(settings) if store is None else store
    stopped: str | None = None
    first = True
    try:
        while True:
            try:
                batch = _unlocked(lambda: store.claim_batch(batch_id))
            except BatchBusy:
                if first:
                    raise
                break   # another runner took over the requests that arrived meanwhile
            first = False
            try:
                if batch.dry_run:
                    stopped = _dry_run(store, batch_id, on_progress)
                elif settings.dry_run:
                    stopped = _without_key(store, batch_id)
                else:
                    run = _LiveRun(store, batch_id, settings,
                                   concurrency or batch.concurrency or settings.concurrency,
                                   poll, on_progress, progress_every, fal, stream, on_sending)
                    on_sending = None   # once per call, whatever the number of passes
                    with _signals_handled(run) if handle_signals else contextlib.nullcontext():
                        stopped = run.run()
            finally:
                with contextlib.suppress(StoreUnavailable):
                    record.write_retrying(lambda: store.set_stop_reason(batch_id, stopped))
                batch = record.write_retrying(lambda: store.release_batch(batch_id))
            # a re-run added between the workers' last look and the release above would be
            # refused by a new runner (BatchBusy while we held the batch): take it ourselves
            if stopped is not None or batch.cancel_requested or not store.batch_requests(batch_id, ("planned",)):
                break   # a stopped run is never followed by a second pass
        progress = store.batch_progress(batch_id)
    finally:
        if own_store:
            store.close()
    return RunReport(batch_id=batch_id, progress=progress, dry_run=batch.dry_run,
                     cancelled=batch.cancel_requested, stopped=stopped)


def _unlocked(fn: Callable[[], Any]) -> Any:
    """A store call at the start of a run: a database that refuses writes is one clear error."""
    try:
        return record.write_retrying(fn, attempts=3)
    except StoreUnavailable as e:
        raise StoreError(f"{e} Then resume the batch.") from None


@contextlib.contextmanager
def _signals_handled(run: _LiveRun):
    """In the main thread: a stop signal drains the run instead of killing it mid-POST."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {}
    for name in _SIGNALS:
        sig = getattr(signal, name, None)
        if sig is not None:
            previous[sig] = signal.signal(sig, lambda signum, frame: run.drain(signal.Signals(signum).name))
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def _fail_unconfirmed(store: Store, batch_id: str) -> None:
    """Requests left `submitted` without a fal id by a runner that died inside the POST: in doubt."""
    for rec in store.batch_requests(batch_id, statuses=("submitted",)):
        if not rec.fal_request_id:
            store.mark_in_doubt(rec.id, reason=record.UNCONFIRMED_MESSAGE)


def _without_key(store: Store, batch_id: str) -> str | None:
    """A live batch in a process without FAL_KEY: nothing can be sent or polled. A cancel still
    cancels what was never sent; jobs already at fal need the key to be followed or cancelled."""
    _fail_unconfirmed(store, batch_id)
    if store.get_batch(batch_id).cancel_requested:
        for rec in store.batch_requests(batch_id, statuses=("planned",)):
            store.mark_cancelled(rec.id, reason="batch cancelled before this request was sent")
        if store.batch_progress(batch_id).is_finished:
            return None
    return ("this batch was planned to be sent but FAL_KEY is not set: set FAL_KEY and resume it "
            f"with `python -m core batch resume {batch_id}`")


def _dry_run(store: Store, batch_id: str, on_progress: ProgressCallback | None) -> str | None:
    from core.catalog import registry

    for rec in store.batch_requests(batch_id, statuses=("planned",)):
        if store.get_batch(batch_id).cancel_requested:
            store.mark_cancelled(rec.id, reason="batch cancelled (dry run)")
            continue
        try:
            registry.validate_payload(rec.endpoint, rec.payload)
        except PayloadError as e:
            store.mark_failed(rec.id, error_type="validation", error_message="; ".join(e.messages))
            continue
        store.mark_dry_run(rec.id)
    for rec in store.batch_requests(batch_id, statuses=("submitted", "queued", "running")):
        # a dry-run batch never sends; anything in flight here was written by hand
        store.mark_failed(rec.id, error_type="dry_run", error_message="dry-run batch: not followed")
    if on_progress:
        on_progress(store.batch_progress(batch_id), Outage(0))
    return None


@dataclass
class _Task:
    """A request handed to a sender: to send (`record` as loaded at start), or to follow."""

    request_id: str
    follow: bool = False
    rate_limited: int = 0
    record: RequestRecord | None = None


@dataclass(frozen=True)
class _FinishedJob:
    """Hand-off from a sender to a finisher: fal said this job is done."""

    request_id: str
    handle: QueueHandle
    finished: Finished


class _LiveRun:
    def __init__(self, store: Store, batch_id: str, settings: Settings, concurrency: int,
                 poll: PollPolicy, on_progress: ProgressCallback | None, progress_every: float,
                 fal: FalClient | None, stream: bool = True, on_sending: Callable[[], None] | None = None):
        self.store = store
        self.batch_id = batch_id
        self.settings = dataclasses.replace(settings, concurrency=max(1, concurrency))
        self.concurrency = max(1, concurrency)
        self.cadence = Cadence(poll)
        self.outage = Outage(settings.outage_limit_s)
        self.journal = record.Journal(settings.data_dir, batch_id)
        self.on_progress = on_progress
        self.progress_every = progress_every
        self.stream = stream
        self._fal = fal
        self._own_fal = fal is None
        self._storage: Any = None
        self.tasks: collections.deque[_Task] = collections.deque()
        self._taken: set[str] = set()   # request ids handed to a sender in this run
        self.lock = threading.Lock()
        self.signals = Signals(cancel=threading.Event(), stop=threading.Event())
        self.draining = threading.Event()   # a stop signal: send nothing new
        self.halted = threading.Event()     # THE stop: set by a signal or `_halt`; every wait obeys it
        self._drain_reason: str | None = None
        self._drain_started: float | None = None
        self._probe_lock = threading.Lock() # one probe of fal at a time during an outage
        self._store_trouble_logged = 0.0
        self._in_flight = 0                 # POSTs under way
        self._no_new_sends = False          # a reference fal could not fetch: send nothing
        self._unstored: set[str] = set()    # accepted jobs whose fal id only the journal holds
        self.stopped: str | None = None
        self.finished: queue.Queue[_FinishedJob | None] = queue.Queue()
        self.done = threading.Event()       # set when the last finisher has exited
        self.on_sending = on_sending
        self.accepted = threading.Event()   # fal accepted a job of this run
        self._live_finishers = 0
        self._finishers_prepared = False

    # -- setup -------------------------------------------------------------------------------

    def run(self) -> str | None:
        store = self.store
        if self.journal.replay(store):
            log.info("batch %s: fal ids recovered from %s", self.batch_id, self.journal.path)
        _fail_unconfirmed(store, self.batch_id)
        from core.blobs.local import remove_partial_writes

        remove_partial_writes(self.settings.images_dir)   # what a killed image write left
        for rec in store.batch_requests(self.batch_id, statuses=("submitted", "queued", "running")):
            self.tasks.append(_Task(rec.id, follow=True))
        for rec in store.batch_requests(self.batch_id, statuses=("planned",)):
            self.tasks.append(_Task(rec.id, record=rec))
        if not self.tasks:
            return None
        store.warm(min(self.concurrency, len(self.tasks)))   # a sender per slot
        if store.get_batch(self.batch_id).cancel_requested:
            self.signals.cancel.set()
        from core.fal.client import FalClient
        from core.blobs.backend import open_storage

        self._storage = open_storage(self.settings)
        refused = self._unreachable_references()
        if refused:
            # nothing is sent (fal would pay for jobs that cannot see the photo); jobs fal already
            # accepted are still followed, and the planned requests stay planned for a resume
            self._note(refused)
            self._no_new_sends = True
            self.tasks = collections.deque(t for t in self.tasks if t.follow)
            if not self.tasks:
                self._storage.close()
                return self.stopped
        if self._fal is None:
            self._fal = FalClient(self.settings)
        else:
            self._fal.carry_on()   # a client given by the caller may come from a stopped run
        self.journal.reserve()
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
            self.signals.stop.set()
            self.halted.set()
            # a worker still inside a call after the grace is cut off (daemon threads): what it
            # was doing stays resumable (a submit without an answer is in doubt at the next run)
            deadline = time.monotonic() + (JOIN_GRACE_S if self.stopped else 3600.0)
            for t in (*senders, closer, *finishers):
                t.join(max(0.0, deadline - time.monotonic()))
            if any(t.is_alive() for t in (*senders, *finishers)):
                self._fal.interrupt()
                for t in (*senders, *finishers):
                    t.join(max(0.0, deadline + 0.5 - time.monotonic()))
            if self._own_fal and not any(t.is_alive() for t in (*senders, *finishers)):
                self._fal.close()
            self._storage.close()
            self.journal.close(keep=bool(self._unstored))
        if self._unstored:
            self._note(f"the database refused to store fal's id for {len(self._unstored)} request(s); "
                       f"they are kept in {self.journal.path}: resume the batch once the database works "
                       f"(`python -m core batch resume {self.batch_id}`)")
        return self.stopped

    def _unreachable_references(self) -> str | None:
        """Why the batch must not send (a reference fal could not fetch), or None. Each reference
        of the requests to send is checked once, over one shared HTTP client. A batch without
        references imports none of it (the photo code loads Pillow: 0.1 s before the first POST)."""
        ids = dict.fromkeys(ref for t in self.tasks if not t.follow and t.record
                            for ref in t.record.references)
        if not ids or self.signals.cancel.is_set():
            return None
        import httpx

        from core.photos.references import REACHABLE_TIMEOUT_S, check_reachable

        with httpx.Client(timeout=REACHABLE_TIMEOUT_S) as client:
            for ref_id in ids:
                try:
                    check_reachable(self.store.get_reference(ref_id), self._storage, client=client)
                except DashboardError as e:
                    log.error("batch %s: not sent: %s", self.batch_id, e)
                    return (f"{e} No request of the batch was sent: fix the reference, then resume it with "
                            f"`python -m core batch resume {self.batch_id}`.")
        return None

    def _close_when_sent(self, senders: list[threading.Thread], finishers: int) -> None:
        for t in senders:
            t.join()
        for _ in range(finishers):
            self.finished.put(None)

    # -- control -----------------------------------------------------------------------------

    def drain(self, signal_name: str) -> None:
        """A stop signal: no new submit; submits in flight finish and store their ids; then stop.
        A second signal stops at once."""
        if self.draining.is_set():
            self._halt(f"stopped by {signal_name} (second signal)")
            return
        self._drain_reason = (f"stopped by {signal_name}; nothing was lost: resume the batch with "
                              f"`python -m core batch resume {self.batch_id}`")
        self._note(self._drain_reason)   # stored whatever happens next: no second pass
        self._drain_started = time.monotonic()
        self.halted.set()
        self.draining.set()
        # when the stop took effect (no submit starts after it), for whoever checks the run
        log.warning("batch %s: %s received at %s; no new submit starts", self.batch_id, signal_name,
                    utc_now())

    def _note(self, reason: str) -> None:
        """Remember why requests are left unfinished (the first reason wins)."""
        with self.lock:
            if self.stopped is None:
                self.stopped = reason

    def _halt(self, reason: str) -> None:
        """Stop the whole run: nothing more is sent or polled; what is left stays resumable."""
        self._note(reason)
        self.halted.set()
        self.signals.stop.set()
        if self._fal is not None:
            self._fal.interrupt()   # retry waits and reads under way end now

    def _supervise(self) -> None:
        """Heartbeat, cancel requests, signals, outages and progress, until the workers are done."""
        last_beat = last_report = time.monotonic()
        last_seen: tuple | None = None
        shown_outage: Any = False
        while not self.done.wait(CHECK_CANCEL_EVERY_S):
            if self.signals.stop.is_set():
                # halted: the workers get JOIN_GRACE_S to return (see `run`), not their reads' time
                break
            now = time.monotonic()
            self._announce_sending()
            self._prepare_finishers()
            if self.draining.is_set() and not self.signals.stop.is_set():
                with self.lock:
                    in_flight = self._in_flight
                waited = now - (self._drain_started or now)
                if in_flight == 0 or waited > DRAIN_GRACE_S:
                    # submits still in flight past the grace are cut: their rows stay
                    # `submitted` and are in doubt at the next run (never sent again)
                    self._halt(self._drain_reason or "stopped by a signal")
            since = self.outage.since
            if since != shown_outage:
                with contextlib.suppress(StoreUnavailable):
                    self.store.set_unreachable(self.batch_id, since)
                    shown_outage = since
            try:
                if now - last_beat >= HEARTBEAT_EVERY_S:
                    batch = self.store.heartbeat(self.batch_id)
                    last_beat = now
                else:
                    batch = self.store.get_batch(self.batch_id)
            except BatchBusy as e:
                self._halt(str(e))
                continue
            except StoreUnavailable as e:
                if e.needs_a_person:
                    self._store_refused(e)
                elif now - self._store_trouble_logged > 30.0:   # one line per 30 s, not per look
                    self._store_trouble_logged = now
                    log.warning("batch %s: store unavailable (%s); carrying on", self.batch_id, e)
                continue
            if batch.cancel_requested and not self.signals.cancel.is_set():
                log.info("batch %s: cancel requested", self.batch_id)
                self.signals.cancel.set()
            if self.on_progress and now - last_report >= self.progress_every:
                with contextlib.suppress(StoreUnavailable):
                    progress = self.store.batch_progress(self.batch_id)
                    seen = (tuple(sorted(progress.counts.items())), self.outage.since)
                    if seen != last_seen:
                        self.on_progress(progress, self.outage)
                        last_seen = seen
                last_report = now
        self._announce_sending()   # a run that ended before the first look still had results
        with contextlib.suppress(StoreUnavailable):
            self.store.set_unreachable(self.batch_id, None)

    def _prepare_finishers(self) -> None:
        """Once, as soon as fal accepted a job of this run: the finishers' sessions (Postgres) and
        the image decoder (Pillow, ~0.1 s of imports) load while the first jobs run, not when the
        first results arrive, with the next submits."""
        if self._finishers_prepared or not self.accepted.is_set():
            return
        self._finishers_prepared = True
        self.store.warm(self._live_finishers)
        threading.Thread(target=record.load_decoder, name="runner-decoder", daemon=True).start()

    def _announce_sending(self) -> None:
        """`on_sending()` once, as soon as fal accepted a job of this run."""
        if self.on_sending is not None and self.accepted.is_set():
            on_sending, self.on_sending = self.on_sending, None
            try:
                on_sending()
            except Exception:  # noqa: BLE001 - a helper that fails to start never stops the run
                log.exception("batch %s: on_sending failed", self.batch_id)

    # -- senders -----------------------------------------------------------------------------

    def _next(self, store: Store) -> _Task | None:
        with self.lock:
            if (not self.tasks and not self.signals.cancel.is_set() and not self.draining.is_set()
                    and not self._no_new_sends):
                # requests added while this runner works (a re-run from History lands in the
                # batch whose runner may be alive) are picked up before the runner exits
                with contextlib.suppress(StoreUnavailable):
                    for rec in store.batch_requests(self.batch_id, statuses=("planned",)):
                        if rec.id not in self._taken:
                            self.tasks.append(_Task(rec.id, record=rec))
            if not self.tasks:
                return None
            task = self.tasks.popleft()
            self._taken.add(task.request_id)
            return task

    def _store_refused(self, e: StoreUnavailable | OSError) -> None:
        """A full disk or a read-only data directory: nothing more can be recorded, so nothing
        more is sent; the run stops in one line, every fal id kept (row or journal)."""
        if not self.halted.is_set() or self.stopped is None:
            log.error("batch %s: stopping: %s", self.batch_id, e)
        self._halt(f"{e} Every job fal accepted keeps its id; once there is space, resume the batch "
                   f"with `python -m core batch resume {self.batch_id}`.")

    def _guarded(self, store: Store, request_id: str, fn: Callable[[], None]) -> None:
        try:
            fn()
        except (StoreUnavailable, OSError) as e:
            # the store or the disk refused: the row keeps what it had and stays resumable
            if (isinstance(e, StoreUnavailable) and e.needs_a_person) or \
                    (isinstance(e, OSError) and e.errno in (errno.ENOSPC, errno.EDQUOT, errno.EROFS)):
                self._store_refused(e)
                return
            log.error("batch %s: request %s left resumable: %s", self.batch_id, request_id, e)
            self._note(f"the database or disk refused a write ({e}); free space or wait for the lock, "
                       f"then resume the batch with `python -m core batch resume {self.batch_id}`")
        except Exception as e:  # noqa: BLE001 - a bug in one request must not stop the batch
            log.exception("batch %s: request %s failed unexpectedly", self.batch_id, request_id)
            with contextlib.suppress(Exception):
                rec = store.get_request(request_id)
                if rec.fal_request_id or rec.status not in ("planned",):
                    # fal holds (or may hold) the job: never dropped for a bug of ours
                    self._note(f"request {request_id} hit an unexpected error ({e!r}); it keeps what "
                               f"fal knows: resume the batch with `python -m core batch resume {self.batch_id}`")
                    return
                store.mark_failed(request_id, error_type="runner_error",
                               error_message=f"unexpected error in the runner: {e!r}; re-run it")

    def _sender(self) -> None:
        store = self.store.twin()
        try:
            while not self.halted.is_set():
                task = self._next(store)
                if task is None:
                    return
                if task.follow:
                    self._guarded(store, task.request_id, lambda: self._resume_follow(store, task))
                elif self.signals.cancel.is_set():
                    store.mark_cancelled(task.request_id, reason="batch cancelled before this request was sent")
                else:
                    self._guarded(store, task.request_id, lambda: self._send(store, task))
        finally:
            store.close()

    def _wait_for_fal(self, endpoint: str) -> bool:
        """While an outage lasts, wait; one sender at a time probes fal (a call that cannot start
        a job) after the outage's backoff. True once fal answers, False when the run stops."""
        while self.outage.active:
            if self.halted.wait(self.outage.delay()):
                return False
            if not self._probe_lock.acquire(blocking=False):
                continue   # another sender is probing: wait for its verdict
            try:
                if not self.outage.active:
                    break
                asked_at = time.monotonic()
                if self._fal.probe(endpoint):
                    log.info("batch %s: fal answers again; sending resumes", self.batch_id)
                    self.outage.recovered(asked_at)
                    break
                self.outage.failed()
                if self.outage.over():
                    self._halt(f"fal unreachable for more than {self.outage.limit_s:.0f} s. The unsent "
                               f"requests stay planned: resume the batch with "
                               f"`python -m core batch resume {self.batch_id}`.")
                    return False
            finally:
                self._probe_lock.release()
        return not self.halted.is_set()

    def _send(self, store: Store, task: _Task) -> None:
        # the row as loaded at start: only this runner writes it, and mark_submitted below only
        # moves a row that is still `planned`
        rec = task.record or store.get_request(task.request_id)
        if rec.status != "planned":
            return
        if self.outage.active and not self._wait_for_fal(rec.endpoint):
            self._requeue(task)
            return
        body: dict[str, Any] = rec.payload
        if REFERENCE_SCHEME in rec.payload_json:
            from core.photos.references import resolve_payload

            try:
                body = resolve_payload(body, store, self._storage)
            except DashboardError as e:
                store.mark_failed(rec.id, error_type="reference_unavailable", error_message=str(e))
                return
        with self.lock:
            # checked under the lock, just before the POST: the first sign of an outage, a stop
            # signal or a halt stops every submit that has not left yet
            if self.halted.is_set() or self.outage.active:
                self._taken.discard(task.request_id)
                self.tasks.appendleft(task)
                return
            self._in_flight += 1
        wait = 0.0
        try:
            submitted_at = utc_now()
            if not store.mark_submitted(rec.id, at=submitted_at):
                return
            if self.halted.is_set() or self.outage.active:
                # the stop (or an outage) came while the row was being written: this POST does
                # not leave, and the row is planned again as it was
                record.write_retrying(lambda: store.mark_unsent(rec.id))
                with self.lock:
                    self._taken.discard(task.request_id)
                    self.tasks.appendleft(task)
                return
            sent_at = time.monotonic()
            try:
                handle = self._fal.submit(rec.endpoint, body)
            except FalError as e:
                wait = self._submit_failed(store, task, e)
                return
            finally:
                del body
            self.outage.recovered(sent_at)   # not when the outage began after this POST left
            stored = record.record_accepted(store, rec.id, handle, self.journal)
            self.accepted.set()
        finally:
            with self.lock:
                self._in_flight -= 1
            if wait:
                # outside the in-flight count: a stop does not wait for a rate limit to pass
                self.halted.wait(wait)
                self._requeue(task)
        if not stored:
            with self.lock:
                self._unstored.add(rec.id)
        if self.halted.is_set():
            return   # fal's id is stored (or journaled): a resume follows it
        self._follow(store, rec.id, handle, sent_at=sent_at, submitted_at=submitted_at,
                     queue_position=handle.queue_position)

    def _requeue(self, task: _Task) -> None:
        with self.lock:
            self._taken.discard(task.request_id)
            self.tasks.appendleft(task)

    def _outage_sign(self, e: FalError) -> None:
        """A failed call that says fal (or the way to it) is in trouble: no new submit starts."""
        self.outage.failed()
        if self.outage.over():
            self._halt(f"fal unreachable for more than {self.outage.limit_s:.0f} s ({e}). The unsent "
                       f"requests stay planned: resume the batch with "
                       f"`python -m core batch resume {self.batch_id}`.")

    def _submit_failed(self, store: Store, task: _Task, e: FalError) -> float:
        """Record what a failed submit means; the seconds to wait before this sender goes on."""
        outcome = record.submit_failure(e)
        if isinstance(outcome, record.Failed):
            record.record_outcome(store, task.request_id, outcome)
            return 0.0
        if isinstance(outcome, record.InDoubt):
            # never sent again by itself; and it is the first sign of an outage (a dropped
            # connection, a timeout, a 5xx): stop new submits now, not after the next one
            store.mark_in_doubt(task.request_id, reason=outcome.reason, http_status=outcome.http_status)
            if outcome.outage and not self.halted.is_set():
                self._outage_sign(e)
            return 0.0
        store.mark_unsent(task.request_id)
        if self.halted.is_set():
            self._requeue(task)
            return 0.0
        if outcome.needs_a_person:
            self._halt(f"{e} The unsent requests stay planned: resume the batch with "
                       f"`python -m core batch resume {self.batch_id}`.")
            return 0.0
        if isinstance(e, FalRateLimited) and task.rate_limited < MAX_RATE_LIMIT_RETRIES:
            task.rate_limited += 1   # requeued by the caller once the wait is over
            wait = e.retry_after if e.retry_after is not None else 2.0 ** task.rate_limited
            return min(MAX_RATE_LIMIT_WAIT_S, max(0.01, wait))
        # fal is unreachable (the submit surely never arrived): wait for it, then send again
        self._outage_sign(e)
        self._requeue(task)
        return 0.0

    def _resume_follow(self, store: Store, task: _Task) -> None:
        from core.fal.values import handle_from_row

        rec = store.get_request(task.request_id)
        if rec.is_final or not rec.fal_request_id:
            return
        handle = handle_from_row(rec.endpoint, rec.fal_request_id, rec.status_url, rec.response_url,
                                 rec.cancel_url, queue_url=self.settings.fal_queue_url)
        self._follow(store, rec.id, handle, sent_at=None, submitted_at=rec.submitted_at,
                     queue_position=rec.queue_position, running=rec.status == "running")

    def _follow(self, store: Store, request_id: str, handle: QueueHandle, *, sent_at: float | None,
                submitted_at: str | None, queue_position: int | None, running: bool = False) -> None:
        def on_queued(position: int | None) -> None:
            with contextlib.suppress(StoreUnavailable):
                store.update_queue_position(request_id, position)

        def on_running(logs: tuple[str, ...]) -> None:
            with contextlib.suppress(StoreUnavailable):
                store.mark_running(request_id, logs=list(logs) or None, submitted_at=submitted_at)

        outcome = follow(self._fal, handle, cadence=self.cadence, signals=self.signals,
                         outage=self.outage, sent_at=sent_at, queue_position=queue_position,
                         running=running, on_queued=on_queued, on_running=on_running, stream=self.stream)
        if isinstance(outcome, Finished):
            self.finished.put(_FinishedJob(request_id, handle, outcome))
        elif isinstance(outcome, Gone):
            if outcome.cancelled:
                store.mark_cancelled(request_id, reason=outcome.message)
            else:
                store.mark_failed(request_id, error_type="not_found", http_status=404,
                               error_message=outcome.message)
        elif self.outage.over():
            self._halt(f"{outcome.reason}; every job fal accepted keeps its id: resume the batch with "
                       f"`python -m core batch resume {self.batch_id}` when fal answers again.")
        elif not self.signals.stop.is_set():
            self._note(f"{outcome.reason}; resume the batch to follow it: "
                       f"`python -m core batch resume {self.batch_id}`.")

    # -- finishers ---------------------------------------------------------------------------

    def _finisher(self) -> None:
        store: Store | None = None
        try:
            while (job := self.finished.get()) is not None:
                if self.signals.stop.is_set():
                    continue  # left queued/running in the store: a resume polls and finishes it
                if store is None:
                    # opened with the first result, not while the first POSTs leave
                    store = self.store.twin()
                self._guarded(store, job.request_id, lambda: self._finish(store, job))
        finally:
            if store is not None:
                store.close()
            with self.lock:
                self._live_finishers -= 1
                if self._live_finishers == 0:
                    self.done.set()

    def _finish(self, store: Store, job: _FinishedJob) -> None:
        status = job.finished.status
        rid = job.request_id
        if rid in self._unstored and record.record_accepted(store, rid, job.handle, self.journal):
            # the database refused fal's id at submit time (it went to the journal): store it now,
            # so the finished row carries it whatever happens next
            with self.lock:
                self._unstored.discard(rid)
        output = self._riding_outages(
            store, rid, "its result", lambda: self._fal.result(job.handle),
            lambda e: record.result_failure(e, status=status, cancel_sent=job.finished.cancel_sent))
        if output is None:
            return
        kept = [i.idx for i in store.result_images([rid])[rid] if i.storage_path]
        images = self._riding_outages(
            store, rid, "its images", lambda: record.keep_images(self._fal, self._storage, rid, output, kept=kept),
            lambda e: record.Resumable(str(e)))
        if images is None:
            return
        inference = status.metrics.get("inference_time") if status.metrics else None
        result = record.Result(output, images, inference if inference is not None else output.inference_s,
                               tuple(status.logs))
        record.write_retrying(lambda: record.record_result(store, rid, result))

    def _riding_outages(self, store: Store, rid: str, what: str, fetch: Callable[[], Any],
                        outcome_of: Callable[[FalError], record.Outcome]) -> Any:
        """`fetch()` for a job fal finished (and billed), tried again through a passing outage or
        storage fault for up to the outage limit. None when the request was recorded as failed or
        cancelled, or is left resumable (the run's stop reason says so)."""
        deadline = time.monotonic() + self.outage.limit_s
        tries = 0
        while True:
            asked_at = time.monotonic()
            try:
                value = fetch()
            except (FalError, DashboardError, OSError) as e:
                if isinstance(e, FalError):
                    outcome = outcome_of(e)
                    if not isinstance(outcome, record.Resumable):
                        record.record_outcome(store, rid, outcome)
                        return None
                    self.outage.failed()
                tries += 1
                if time.monotonic() >= deadline or self.signals.stop.is_set():
                    self._note(f"fal finished request {rid} but {what} could not be kept yet ({e}); "
                               f"resume the batch to fetch them: `python -m core batch resume {self.batch_id}`.")
                    return None
                log.warning("batch %s: request %s: %s could not be kept yet (%s); trying again",
                            self.batch_id, rid, what, e)
                self.signals.stop.wait(min(15.0, 0.5 * 2 ** min(tries, 5)))
                continue
            self.outage.recovered(asked_at)
            return value
