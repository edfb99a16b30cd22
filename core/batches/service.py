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
  `Undecided` (only requests in doubt are left: a person decides), `Finished` or `Cancelled`.
- One batch per intent: `launch` is keyed by what the person confirmed (`launch_key`). The reason is stored by the runner, never parsed from its log.
- Spending limits before anything: `record`, `rerun` and `resume` ask `budget.check` before a row
  is written or a runner started; a live batch over a limit is refused (BudgetExceeded), a dry
  run never is.
"""
from __future__ import annotations

import datetime as _dt
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from core import processes
from core.batches import budget, plans
from core.batches.spec import plan_shape, show
from core.batches.plan_file import read_capped
from core.batches.plans import Plan, PlanReference
from core.blobs.storage import Storage
from core.config import Settings
from core.errors import DashboardError, PlanError, UploadRejected
from core.store import Store, runner_alive
from core.values import Batch, BatchProgress, RequestRecord

if TYPE_CHECKING:
    from core.batches.schedule import ProgressCallback, RunReport

MAX_REFERENCE_BYTES = 20 * 1024 * 1024  # the upload limit's default (DASHBOARD_MAX_UPLOAD_BYTES)
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


@dataclass(frozen=True)
class Undecided:
    """Nothing is left for a runner, but `progress.in_doubt` submits were never answered: fal
    may hold them. A person decides (send again, knowing it may be paid twice, or give up)."""

    progress: BatchProgress


BatchState = Starting | Running | Stopped | Finished | Cancelled | Undecided


def runner_log(settings: Settings, batch_id: str) -> str:
    return str(processes.log_path(settings, f"batch-{batch_id}"))


def start_runner(store: Store, settings: Settings, batch_id: str, *, concurrency: int | None = None,
                 by: str | None = None) -> int:
    """Start a detached runner for the batch (it resumes whatever is left); returns its pid.
    A second runner for a batch that has a live one exits at once (BatchBusy), harmlessly.
    It acts as `by` (who started or resumed it), else the batch's creator: with sign-in on, that
    person's role must still allow it (core.access)."""
    batch = store.mark_launched(batch_id)
    args = ["batch", "resume", batch_id, "--runner"]
    if concurrency:
        args += ["--concurrency", str(concurrency)]
    return processes.spawn(settings, args, log_name=f"batch-{batch_id}", as_person=by or batch.created_by)


def plan_batch(spec: Mapping[str, Any], *, store: Store | None, storage: Storage | None = None,
               base_dir: str | Path | None = None, upload: bool = True,
               max_reference_bytes: int = MAX_REFERENCE_BYTES) -> Plan:
    """A plan for `spec` (a plan file's JSON or the Generate form), its references resolved: ids
    looked up in `store`, files read from disk (relative to `base_dir`, at most
    `max_reference_bytes` each). With `upload`, new reference files are then stored
    (`core.photos.references.add_reference`, deduplicated) and the plan names them by id; without
    it, the plan is a preview (`final` False). A plan that is refused uploads nothing: the spec is
    planned in full with the files still pending before the first upload."""
    shape = plan_shape(spec)
    refs = _read_references(spec.get("references", []), store=store, base_dir=base_dir,
                            needed=bool(shape.edit_models), max_bytes=max_reference_bytes)
    plan = plans.make_plan(spec, references=refs)
    if plan.final or not upload:
        return plan
    if store is None or storage is None:
        pending = next(r for r in refs if r.id is None)
        raise PlanError(f"`{pending.field_name}`: uploading {pending.filename} needs the store and storage")
    return plans.make_plan(spec, references=[r if r.id is not None else _upload(r, store, storage)
                                             for r in refs])


def _read_references(value: Any, *, store: Store | None, base_dir: str | Path | None, needed: bool,
                     max_bytes: int) -> list[PlanReference]:
    """Each entry of a plan's `references`: an existing file (read, capped, checked to be an
    image; never taken for an id) or a stored reference's id."""
    if not isinstance(value, list):
        raise PlanError("`references` must be a list of image file paths or reference ids")
    if not needed:
        # nothing edits images: the entries are not read; the plan refuses them by count
        return [PlanReference(f"references[{i}]", (0, 0)) for i in range(len(value))]
    if not value:
        return []
    # Pillow loads only for a plan with references: other plans and commands start without it
    from core.photos import references
    from core.photos.images import image_info

    refs: list[PlanReference] = []
    for i, item in enumerate(value):
        name = f"references[{i}]"
        if not isinstance(item, str) or not item.strip():
            raise PlanError(f"`{name}` must be a file path or a reference id, got {show(item)}")
        path = Path(item).expanduser()
        if not path.is_absolute() and base_dir is not None:
            path = Path(base_dir) / path
        if os.path.lexists(path):
            data = read_capped(path, max_bytes, f"`{name}` ({path})")
            try:
                _, w, h = image_info(data)
            except UploadRejected as e:
                raise PlanError(f"`{name}`: {path} is not a usable image: {e}") from None
            refs.append(PlanReference(name, (w, h), data=data, filename=path.name))
            continue
        if store is None:
            raise PlanError(f"`{name}`: no file {path} (and no store to look up a reference id)")
        try:
            ref = store.get_reference(item.strip())
        except DashboardError:
            raise PlanError(f"`{name}`: {item!r} is neither an existing file nor a reference id") from None
        refs.append(PlanReference(name, (ref.width, ref.height), id=ref.id,
                                  payload_url=references.payload_url(ref)))
    ids = [r.id for r in refs if r.id]
    if len(set(ids)) != len(ids):
        raise PlanError("`references` names the same reference twice")
    return refs


def _upload(ref: PlanReference, store: Store, storage: Storage) -> PlanReference:
    from core.photos import references

    try:
        stored = references.add_reference(store, storage, ref.data or b"", role="other", filename=ref.filename)
    except UploadRejected as e:
        raise PlanError(f"`{ref.field_name}`: {ref.filename} was refused: {e}") from None
    return PlanReference(ref.field_name, ref.size, id=stored.id, payload_url=references.payload_url(stored))


def record(store: Store, plan: Plan, settings: Settings, *, created_by: str | None = None,
           concurrency: int | None = None, launch_key: str | None = None) -> Batch:
    """Write the batch (dry run when there is no FAL_KEY); nothing is sent. A live batch over a
    spending limit is refused first (BudgetExceeded), with nothing written."""
    estimate = budget.of_plan(plan)
    budget.check(store, settings, estimate_usd=estimate.usd, unpriced=estimate.unpriced, person=created_by)
    batch = store.create_batch(plan.new_batch(), dry_run=settings.dry_run, concurrency=concurrency,
                               created_by=created_by, launch_key=launch_key)
    if batch.launched_at is None:   # this call wrote it (a second click finds the first's)
        store.add_audit(who=created_by, action="batch.dry_run" if batch.dry_run else "batch.sent", subject=batch.id,
                        detail=f"{batch.name}: {batch.request_count} requests"
                        + (f", {estimate.unpriced} at an unknown price" if estimate.unpriced else ""),
                        usd=None if batch.dry_run else estimate.usd)
    return batch


def launch_key(plan: Plan, settings: Settings, *, created_by: str | None = None,
               repeat_of: str | None = None) -> str:
    """What a person confirms with Send, as one key: who, live or dry run, and every request's
    endpoint and payload. The same key is the same intent (a double click, a reload during the
    launch, a second tab); sending the same batch again on purpose names the batch it repeats."""
    import hashlib
    import json

    intent = {"by": created_by or "", "dry_run": settings.dry_run, "repeat_of": repeat_of or "",
              "requests": [[r.endpoint, r.payload_hash, r.group_key] for r in plan.requests]}
    return hashlib.sha256(json.dumps(intent, sort_keys=True).encode()).hexdigest()


def already_launched(store: Store, plan: Plan, settings: Settings, *,
                     created_by: str | None = None) -> Batch | None:
    """The newest batch this exact intent made, if any (the page offers "send again" then): the
    first one, or the latest of the batches sent again on purpose after it, so "send again"
    can be chosen any number of times."""
    batch = store.batch_by_launch_key(launch_key(plan, settings, created_by=created_by))
    while batch is not None:
        again = store.batch_by_launch_key(launch_key(plan, settings, created_by=created_by, repeat_of=batch.id))
        if again is None:
            return batch
        batch = again
    return None


def launch(store: Store, plan: Plan, settings: Settings, *, created_by: str | None = None,
           concurrency: int | None = None, repeat_of: str | None = None) -> Batch:
    """Record the batch, then start its detached runner. Idempotent: the same intent (see
    `launch_key`) returns the batch it made the first time and starts nothing more, so two
    clicks, two tabs or a reload pay once."""
    key = launch_key(plan, settings, created_by=created_by, repeat_of=repeat_of)
    existing = store.batch_by_launch_key(key)
    if existing is not None:
        return existing
    batch = record(store, plan, settings, created_by=created_by, concurrency=concurrency, launch_key=key)
    if batch.launched_at is None:   # the one call that wrote it starts its runner
        start_runner(store, settings, batch.id, concurrency=concurrency)
    return batch


def run_here(batch_id: str, settings: Settings, *, concurrency: int | None = None,
             on_progress: ProgressCallback | None = None,
             on_sending: Callable[[], None] | None = None, store: Store | None = None) -> RunReport:
    """Run the batch in this process (the command line), draining on SIGTERM/SIGINT/SIGHUP;
    `on_sending()` once fal accepted its first job, `store` an open one to run on (see
    `schedule.run_batch`)."""
    from core.batches.schedule import run_batch

    return run_batch(batch_id, settings=settings, concurrency=concurrency, on_progress=on_progress,
                     handle_signals=True, on_sending=on_sending, store=store)


def rerun(store: Store, request_id: str, settings: Settings, *, created_by: str | None = None) -> RequestRecord:
    """A new request with the same endpoint and payload, in the current mode (live or dry run),
    sent by a runner (the batch's live one picks it up, else one is started). Over a spending
    limit it is refused first, counting what its batch already spent, with nothing written."""
    old = store.get_request(request_id)
    joins = old.batch_id if old.batch_id and not store.get_batch(old.batch_id).dry_run else None
    # the batch it joins will also send what it has left: both count
    left = budget.left_in_batch(store, joins) if joins else budget.Estimate(0.0)
    budget.check(store, settings, estimate_usd=(old.estimated_cost or 0.0) + left.usd,
                 unpriced=int(old.estimated_cost is None) + left.unpriced, person=created_by, batch_id=joins)
    new = store.rerun_request(request_id, created_by=created_by, dry_run=settings.dry_run)
    store.add_audit(who=created_by, action="request.rerun", subject=new.id, detail=f"again as {old.id} was sent",
                    usd=None if settings.dry_run else old.estimated_cost)
    if new.batch_id is not None and not runner_alive(store.get_batch(new.batch_id)):
        start_runner(store, settings, new.batch_id, by=created_by)
    return new


def cancel(store: Store, batch_id: str, settings: Settings, *, here: bool = False,
           by: str | None = None) -> BatchState:
    """Ask the batch to stop: nothing more is sent, unsent requests are cancelled and fal is asked
    to cancel every job it still holds (a job that finishes anyway is kept: it is paid)."""
    batch = store.request_cancel(batch_id)
    store.add_audit(who=by, action="batch.cancelled", subject=batch_id, detail=batch.name)
    if not runner_alive(batch) and not store.batch_progress(batch_id).is_finished:
        if here:
            run_here(batch_id, settings)
        else:
            start_runner(store, settings, batch_id, by=by)
    return state(store, batch_id, settings)


def resume(store: Store, batch_id: str, settings: Settings, *, concurrency: int | None = None,
           by: str | None = None) -> BatchState:
    """Start a runner for what is left of the batch (a no-op if one is alive). What is left is
    checked against the spending limits first, counting what the batch already spent."""
    batch = store.get_batch(batch_id)
    if not runner_alive(batch):
        check_resume(store, settings, batch_id)
        left = budget.left_in_batch(store, batch_id)
        store.add_audit(who=by, action="batch.resumed", subject=batch_id, detail=batch.name,
                        usd=None if batch.dry_run else left.usd)
        start_runner(store, settings, batch_id, concurrency=concurrency, by=by)
    return state(store, batch_id, settings)


def check_resume(store: Store, settings: Settings, batch_id: str) -> None:
    """BudgetExceeded when sending what is left of the batch would pass a limit. A batch being
    cancelled sends nothing more, so it is never refused (its runner must cancel what fal holds);
    the person is the batch's creator, whose day the batch is spending."""
    batch = store.get_batch(batch_id)
    if batch.dry_run or batch.cancel_requested:
        return
    left = budget.left_in_batch(store, batch_id)
    budget.check(store, settings, estimate_usd=left.usd, unpriced=left.unpriced, person=batch.created_by,
                 batch_id=batch_id)


def send_again(store: Store, batch_id: str, settings: Settings, *, by: str,
               request_ids: list[str] | None = None) -> list[str]:
    """A person chose to send the batch's in-doubt requests (or those named) again, knowing fal
    may run and bill them twice: checked against the spending limits (each is paid again, and a
    runner started for them also sends what the batch has left), recorded with who chose it, then
    a runner sends them."""
    from core.values import RequestStatus

    doubtful = [r for r in store.batch_requests(batch_id, (RequestStatus.IN_DOUBT,))
                if request_ids is None or r.id in request_ids]
    batch = store.get_batch(batch_id)
    if doubtful and not batch.dry_run:
        left = budget.left_in_batch(store, batch_id) if not runner_alive(batch) else budget.Estimate(0.0)
        again = sum(r.estimated_cost or 0.0 for r in doubtful)
        budget.check(store, settings, estimate_usd=again + left.usd, person=by, batch_id=batch_id,
                     unpriced=sum(r.estimated_cost is None for r in doubtful) + left.unpriced)
    moved = [r.id for r in doubtful if store.send_again(r.id, by=by)]
    if moved:
        store.add_audit(who=by, action="batch.sent_again", subject=batch_id,
                        detail=f"{len(moved)} request(s) in doubt sent again (may be paid twice)",
                        usd=None if batch.dry_run else sum(r.estimated_cost or 0.0 for r in doubtful if r.id in moved))
    if moved and not runner_alive(store.get_batch(batch_id)):
        start_runner(store, settings, batch_id, by=by)
    return moved


def give_up(store: Store, batch_id: str, *, by: str, request_ids: list[str] | None = None) -> list[str]:
    """A person gave up the batch's in-doubt requests (or those named): final, with who decided."""
    from core.values import RequestStatus

    doubtful = [r.id for r in store.batch_requests(batch_id, (RequestStatus.IN_DOUBT,))
                if request_ids is None or r.id in request_ids]
    done = [rid for rid in doubtful if store.give_up(rid, by=by)]
    if done:
        store.add_audit(who=by, action="batch.gave_up", subject=batch_id, detail=f"{len(done)} request(s) in doubt given up")
    if done and not runner_alive(store.get_batch(batch_id)):
        store.release_batch(batch_id)   # every request final now: the batch is finished
    return done


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
            store.add_audit(who=None, action="batch.resumed", subject=batch.id,
                            detail=f"{batch.name} (automatically: its runner had stopped without a reason; "
                                   f"acting as {batch.created_by or 'nobody named'})",
                            usd=None if batch.dry_run else budget.left_in_batch(store, batch.id).usd)
            start_runner(store, settings, batch.id)
            started.append(batch.id)
    return started


def state(store: Store, batch_id: str, settings: Settings, *, now: _dt.datetime | None = None) -> BatchState:
    """What the batch is doing now."""
    batch = store.get_batch(batch_id)
    progress = store.batch_progress(batch_id)
    if progress.is_finished:
        return Cancelled(progress) if batch.cancel_requested else Finished(progress)
    if progress.settled and not runner_alive(batch):
        return Undecided(progress)
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
