"""Following one job that fal has accepted, until it ends: the one status-following path. No
store here: `follow` returns what happened and the scheduler records it (`core.batches.record`).

Invariants:
- An accepted job is paid: nothing here gives it up for a passing fault. A status poll that fails
  for a reason that says nothing about the job (fal unreachable, 5xx, timeout, 429) is retried
  with capped backoff for as long as the run's `Outage` allows (the setting
  `DASHBOARD_OUTAGE_LIMIT_S`, 10 minutes by default); polls are free. Past that limit, or when the
  run stops, the outcome is `Lost`: the row keeps fal's id and stays resumable.
- `Gone` means fal itself said the job does not exist (404 on status, NOT_FOUND on cancel).
- Completion arrives through fal's status stream (`GET {status_url}/stream`, see docs/fal.md),
  read by a thread of its own so the follower still answers cancel and stop at once. When the
  stream fails or closes early, polling takes over, adaptive (`PollPolicy`): quiet until shortly
  before the earliest completion observed for that endpoint in this run, fast around the expected
  completion, backing off after it.
"""
from __future__ import annotations

import collections
import datetime as _dt
import json
import logging
import queue
import random
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from core.errors import FalBadResponse, FalError, FalRateLimited, FalServerError, FalTimeout, FalUnavailable

from core.fal.client import FalClient
from core.fal.values import Completed, InProgress, QueueHandle, Queued

logger = logging.getLogger("core.fal")

# errors that say nothing about the job itself: asking again later may succeed
TRANSIENT = (FalUnavailable, FalServerError, FalTimeout, FalRateLimited)
# how long a follower reading the status stream goes without looking at cancel and stop
CHECK_SIGNALS_S = 0.1
# a status stream that brings no status for this long (keep-alive comments only) is checked by
# one poll, and again after as long: a job fal finished is never held "running" by a silent stream
STREAM_SILENCE_S = 20.0
MAX_BAD_ANSWERS = 50   # unusable status answers in a row before a job is left to a resume


def is_transient(e: BaseException) -> bool:
    """A fal error that says nothing about the job: fal (or the way to it) is having trouble."""
    return isinstance(e, TRANSIENT) and getattr(e, "status_code", None) != 404


@dataclass(frozen=True)
class PollPolicy:
    """How often to poll a job's status.

    Before any job of an endpoint completed in this run: every `first` seconds (fal_client's own
    fixed cadence is 0.1 s), or `proportion` of the time already waited when that is longer, up to
    `cap`: the detection delay stays within about 10% of the job's time. Afterwards, with the
    10th..90th percentile [lo, hi] of the submit-to-completion times seen (last `window` jobs):
    sleep until just before `lo`, poll every `step` (spread/8, clamped to [`fast`, `max_step`])
    until `hi`, then back off by a quarter of the lateness up to `cap`. A job still unfinished
    after `give_up_after` is left to a later resume."""

    fast: float = 0.01
    max_step: float = 0.5
    first: float = 0.1
    proportion: float = 0.1
    cap: float = 2.0
    window: int = 16
    give_up_after: float = 3600.0


class Cadence:
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


class Outage:
    """Whether fal is reachable, shared by every thread of one run.

    Any failed call that says nothing about the job starts (or prolongs) an outage; an answer to
    a call made after it began ends it. While it lasts no new submit starts; past `limit_s` the
    run gives up on it."""

    def __init__(self, limit_s: float, *, base: float = 0.5, cap: float = 15.0):
        self.limit_s = limit_s
        self.base = base
        self.cap = cap
        self._lock = threading.Lock()
        self._since: float | None = None       # monotonic
        self._since_wall: _dt.datetime | None = None
        self._failures = 0

    @property
    def since(self) -> _dt.datetime | None:
        """When the current outage began (UTC), or None while fal answers."""
        return self._since_wall

    @property
    def active(self) -> bool:
        return self._since is not None

    def failed(self) -> None:
        with self._lock:
            if self._since is None:
                self._since = time.monotonic()
                self._since_wall = _dt.datetime.now(_dt.timezone.utc)
            self._failures += 1

    def recovered(self, asked_at: float | None = None) -> None:
        """fal answered a call made at `asked_at` (time.monotonic(); None: made just now). Only a
        call made after the outage began ends it: the answer to an older one (an event on a
        status stream opened before, a submit or poll that left before the first failure) may
        have been given before fal went away and says nothing about now; taken as a recovery, it
        let new submits leave into the outage, each one more request in doubt."""
        with self._lock:
            if asked_at is not None and self._since is not None and asked_at < self._since:
                return
            self._since = self._since_wall = None
            self._failures = 0

    def over(self) -> bool:
        """True once the outage has lasted longer than the limit."""
        since = self._since
        return since is not None and time.monotonic() - since > self.limit_s

    def delay(self) -> float:
        """Capped exponential backoff with jitter for the next try during this outage."""
        n = min(self._failures, 16)
        return min(self.cap, self.base * 2 ** max(0, n - 1)) * (0.5 + random.random() / 2)

    def describe(self) -> str:
        since = self._since_wall
        return "fal answers" if since is None else \
            f"fal unreachable since {since.astimezone().strftime('%H:%M:%S')}, retrying"


@dataclass(frozen=True)
class Signals:
    """What the scheduler tells its followers: cancel the batch's jobs, or stop following."""

    cancel: threading.Event
    stop: threading.Event


@dataclass(frozen=True)
class Finished:
    """fal reported COMPLETED (successfully or not); the result is to be fetched."""

    status: Completed
    cancel_sent: bool


@dataclass(frozen=True)
class Gone:
    """fal no longer knows the job (404 on status, NOT_FOUND on cancel)."""

    message: str
    cancelled: bool = False


@dataclass(frozen=True)
class Lost:
    """Not followed to its end in this run (outage past the limit, run stopping, too long):
    the request keeps fal's id and stays resumable."""

    reason: str


FollowOutcome = Finished | Gone | Lost


class _StreamEnded:
    """The status stream closed (or failed) before COMPLETED: poll from here."""


def _read_stream(fal: FalClient, handle: QueueHandle, into: queue.Queue) -> None:
    reason = "the stream ended before COMPLETED"
    try:
        for status in fal.status_events(handle):
            into.put(status)
            if isinstance(status, Completed):
                return
    except Exception as e:  # noqa: BLE001 - any stream failure: the follower polls instead
        reason = f"{type(e).__name__}: {e}"
    if not fal.interrupted:
        logger.warning(json.dumps({"event": "fal.stream_fallback", "request_id": handle.request_id,
                                   "reason": fal.redacted(reason)[:300]}, separators=(",", ":")))
    into.put(_StreamEnded())


def _gone(handle: QueueHandle, e: FalError) -> Gone:
    """fal answered 404 for a job it accepted: it no longer knows it."""
    return Gone(f"fal no longer knows request {handle.request_id} ({e}); re-run it if its result is needed.")


def follow(fal: FalClient, handle: QueueHandle, *, cadence: Cadence, signals: Signals, outage: Outage,
           sent_at: float | None = None, queue_position: int | None = None, running: bool = False,
           on_queued: Callable[[int | None], None] = lambda position: None,
           on_running: Callable[[tuple[str, ...]], None] = lambda logs: None,
           stream: bool = False, stream_silence_s: float | None = None) -> FollowOutcome:
    """Follow `handle` until fal says it is done, the run stops, or fal is unreachable too long.

    With `stream`, statuses come from fal's status stream while it lasts, then from polling.
    `on_queued(position)` is called when the queue position changes, `on_running(logs)` once when
    the job starts; both are how the caller records progress. A stream silent for
    `stream_silence_s` (default `STREAM_SILENCE_S`) is checked by one poll."""
    if stream_silence_s is None:
        stream_silence_s = STREAM_SILENCE_S

    start = sent_at if sent_at is not None else time.monotonic()
    cancel_sent = False
    bad_answers = 0
    policy = cadence.policy
    events: queue.Queue | None = None
    last_news = time.monotonic()
    asked_at = stream_opened = time.monotonic()   # when the call that brought `status` was made
    if stream:
        events = queue.Queue()
        threading.Thread(target=_read_stream, args=(fal, handle, events), daemon=True,
                         name=f"status-stream-{handle.request_id[:8]}").start()
    while True:
        if signals.cancel.is_set() and not cancel_sent:
            cancel_sent = True
            try:
                if fal.cancel(handle) == "NOT_FOUND":
                    return Gone("cancelled; fal no longer knows the job", cancelled=True)
            except FalError:
                pass   # the job goes on; it is followed (and kept, it is paid) like any other
        elapsed = time.monotonic() - start
        if elapsed > policy.give_up_after:
            return Lost(f"fal request {handle.request_id} is still unfinished after "
                        f"{policy.give_up_after:.0f} s; resume the batch later to follow it.")
        if events is not None:
            # a cancel request or a stop wakes the follower within this bound
            try:
                status = events.get(timeout=CHECK_SIGNALS_S)
                last_news = time.monotonic()
                asked_at = stream_opened
            except queue.Empty:
                if signals.stop.is_set():
                    return Lost("the run stopped before this job finished")
                if time.monotonic() - last_news < stream_silence_s:
                    continue
                # the stream says nothing: ask once (the stream is still read meanwhile)
                last_news = asked_at = time.monotonic()
                try:
                    status = fal.status(handle)
                except FalError as e:
                    if e.status_code == 404:
                        return _gone(handle, e)
                    if is_transient(e):
                        outage.failed()
                    continue
            if isinstance(status, _StreamEnded):
                events = None
                continue
        else:
            if outage.active:
                delay = outage.delay()
            else:
                delay = cadence.next_delay(handle.endpoint, elapsed, queue_position)
            if cancel_sent:
                delay = min(delay, 0.25)
            # a cancel request wakes sleeping pollers so their jobs are cancelled at once
            (signals.stop if cancel_sent else signals.cancel).wait(delay)
            if signals.stop.is_set():
                return Lost("the run stopped before this job finished")
            asked_at = time.monotonic()
            try:
                status = fal.status(handle)
            except FalError as e:
                if e.status_code == 404:
                    return _gone(handle, e)
                if isinstance(e, FalBadResponse):
                    # an answer of the wrong shape (too large, too deep): asked again later, and
                    # the job is never given up for it
                    bad_answers += 1
                    if bad_answers >= MAX_BAD_ANSWERS:
                        return Lost(f"fal's status answers for request {handle.request_id} keep being "
                                    f"unusable ({e}); resume the batch later to follow it.")
                    continue
                if not is_transient(e):
                    return Lost(f"fal refused to report on request {handle.request_id}: {e}")
                outage.failed()
                if outage.over():
                    return Lost(f"fal unreachable for more than {outage.limit_s:.0f} s while following "
                                f"request {handle.request_id} ({e})")
                continue
        outage.recovered(asked_at)
        if isinstance(status, Queued):
            if status.position != queue_position:
                queue_position = status.position
                on_queued(status.position)
        elif isinstance(status, InProgress):
            queue_position = None
            if not running:
                running = True
                on_running(tuple(status.logs))
        elif isinstance(status, Completed):
            if sent_at is not None:
                cadence.observe(handle.endpoint, time.monotonic() - sent_at)
            return Finished(status, cancel_sent)
