"""The batches service: what the pages and the command line call to launch, re-run, cancel and
resume batches, and to ask what a batch is doing. Business rules about batches live here, not in
a page or a command.

Invariants:
- Record, then run: a batch (every request row, `planned`) is written before its runner starts.
  Pages start the runner as a detached process (`core.processes.spawn`), so closing the tab does not
  stop it; the command line runs it in its own process (`run_here`), printing progress.
- One rule for cancel: the batch is flagged; its live runner sends nothing more and cancels what fal
  holds. With no live runner, one is started to do it (or run here).
- `state` is the one answer to "what is this batch doing": `Starting` (launched, the runner not up
  yet, at most `START_GRACE_S`), `Running` (a live runner; `unreachable_since` while fal does not
  answer), `Stopped` (no live runner and requests left: its stored reason, or that it died),
  `Finished` or `Cancelled`. The reason is stored by the runner, never parsed from its log.
"""
from __future__ import annotations

import datetime as _dt
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from core import processes
from core.config import Settings
from core.store import Batch, BatchProgress, RequestRecord, Store, runner_alive

if TYPE_CHECKING:
    from core.batches.plans import Plan
    from core.batches.schedule import ProgressCallback, RunReport

# a runner just started has not claimed its batch yet: it is "starting", not "stopped", this long
START_GRACE_S = 15.0


@dataclass(frozen=True)
class Starting:
    progress: BatchProgress


@dataclass(frozen=True)
class Running:
    progress: BatchProgress
    runner_pid: int | None
    unreachable_since: str | None = None   # ISO UTC, while fal does not answer


@dataclass(frozen=True)
class Stopped:
    """Requests are left and no runner works on them; `reason` says why and what to do."""

    progress: BatchProgress
    reason: str
    log_path: str


@dataclass(frozen=True)
class Finished:
    progress: BatchProgress


@dataclass(frozen=True)
class Cancelled:
    progress: BatchProgress


BatchState = Starting | Running | Stopped | Finished | Cancelled


def runner_log(settings: Settings, batch_id: str) -> str:
    return str(processes.log_path(settings, f"batch-{batch_id}"))


def start_runner(store: Store, settings: Settings, batch_id: str, *, concurrency: int | None = None) -> int:
    """Start a detached runner for the batch (it resumes whatever is left); returns its pid.
    A second runner for a batch that has a live one exits at once (BatchBusy), harmlessly."""
    store.mark_launched(batch_id)
    args = ["batch", "resume", batch_id]
    if concurrency:
        args += ["--concurrency", str(concurrency)]
    return processes.spawn(settings, args, log_name=f"batch-{batch_id}")


def record(store: Store, plan: Plan, settings: Settings, *, created_by: str | None = None,
           concurrency: int | None = None) -> Batch:
    """Write the batch (dry run when there is no FAL_KEY); nothing is sent."""
    return store.create_batch(plan, dry_run=settings.dry_run, concurrency=concurrency, created_by=created_by)


def launch(store: Store, plan: Plan, settings: Settings, *, created_by: str | None = None,
           concurrency: int | None = None) -> Batch:
    """Record the batch, then start its detached runner."""
    batch = record(store, plan, settings, created_by=created_by, concurrency=concurrency)
    start_runner(store, settings, batch.id, concurrency=concurrency)
    return batch


def run_here(batch_id: str, settings: Settings, *, concurrency: int | None = None,
             on_progress: ProgressCallback | None = None,
             on_sending: Callable[[], None] | None = None) -> RunReport:
    """Run the batch in this process (the command line), draining on SIGTERM/SIGINT/SIGHUP;
    `on_sending()` once fal accepted its first job (see `schedule.run_batch`)."""
    from core.batches.schedule import run_batch

    return run_batch(batch_id, settings=settings, concurrency=concurrency, on_progress=on_progress,
                     handle_signals=True, on_sending=on_sending)


def rerun(store: Store, request_id: str, settings: Settings, *, created_by: str | None = None) -> RequestRecord:
    """A new request with the same endpoint and payload, in the current mode (live or dry run),
    sent by a runner (the batch's live one picks it up, else one is started)."""
    new = store.rerun_request(request_id, created_by=created_by, dry_run=settings.dry_run)
    if new.batch_id is not None and not runner_alive(store.get_batch(new.batch_id)):
        start_runner(store, settings, new.batch_id)
    return new


def cancel(store: Store, batch_id: str, settings: Settings, *, here: bool = False) -> BatchState:
    """Ask the batch to stop: nothing more is sent, unsent requests are cancelled and fal is asked
    to cancel every job it still holds (a job that finishes anyway is kept: it is paid)."""
    batch = store.request_cancel(batch_id)
    if not runner_alive(batch) and not store.batch_progress(batch_id).is_finished:
        if here:
            run_here(batch_id, settings)
        else:
            start_runner(store, settings, batch_id)
    return state(store, batch_id, settings)


def resume(store: Store, batch_id: str, settings: Settings, *, concurrency: int | None = None) -> BatchState:
    """Start a runner for what is left of the batch (a no-op if one is alive)."""
    if not runner_alive(store.get_batch(batch_id)):
        start_runner(store, settings, batch_id, concurrency=concurrency)
    return state(store, batch_id, settings)


def resume_orphans(store: Store, settings: Settings) -> list[str]:
    """Batches a runner left unfinished without saying why (it was killed, the machine restarted)
    get a runner again. A batch stopped for a stated reason waits for a person."""
    started = []
    for batch in store.unfinished_batches():
        if runner_alive(batch) or batch.stop_reason:
            continue
        if not batch.dry_run and settings.dry_run:
            continue   # needs the key this process does not have
        if isinstance(state(store, batch.id, settings), Stopped):
            start_runner(store, settings, batch.id)
            started.append(batch.id)
    return started


def state(store: Store, batch_id: str, settings: Settings, *, now: _dt.datetime | None = None) -> BatchState:
    """What the batch is doing now."""
    batch = store.get_batch(batch_id)
    progress = store.batch_progress(batch_id)
    if progress.is_finished:
        return Cancelled(progress) if batch.cancel_requested else Finished(progress)
    if runner_alive(batch):
        return Running(progress, batch.runner_pid, batch.fal_unreachable_since)
    log = runner_log(settings, batch_id)
    if batch.stop_reason:
        return Stopped(progress, batch.stop_reason, log)
    now = now or _dt.datetime.now(_dt.timezone.utc)
    launched = _dt.datetime.fromisoformat(batch.launched_at) if batch.launched_at else None
    if launched is not None and (now - launched).total_seconds() < START_GRACE_S:
        return Starting(progress)
    return Stopped(progress, "the runner ended without finishing the batch (it was stopped or the "
                             "machine restarted); resume it to send what is left", log)
