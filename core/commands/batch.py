"""`python -m core batch plan|run|resume|cancel|status`: batches of requests from a plan file.

`plan` shows what a plan file would send (counts, cost, payloads) without writing anything.
`run` records the batch, then sends it, printing a progress line per second; exit 0 when every
request reached a final state, 1 with a summary otherwise. Without FAL_KEY it is a dry run.
`resume` continues a batch (default: every unfinished one) after a crash or a stop.
`doubt` lists the requests whose submit fal never answered (in doubt: fal may hold them), and
sends them again (`--send-again`, knowing each may be paid twice) or gives them up (`--give-up`),
recorded with who decided (`--by`).

Exit status of `run` and `resume`: 0 every request final; 3 finished except requests in doubt
(a person decides: `batch doubt`); 1 stopped with requests left (resumable); 2 a usage or input
error, or a batch over a spending limit (DASHBOARD_BUDGET_USD_PER_BATCH/_PER_DAY: one line, with
nothing uploaded, written or sent).

Imports are lazy: this path never loads pandas, streamlit, supabase or scikit-image.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:   # annotations only: the command line imports what a command runs, when it runs
    from core.batches.plans import Plan
    from core.config import Settings
    from core.store import Store


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser("batch", help="plan, run, resume, cancel batches",
                                   description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="batch_command", required=True, metavar="SUBCOMMAND")

    plan = sub.add_parser("plan", help="show requests, cost and payloads of a plan file; writes nothing")
    plan.add_argument("plan", type=Path, metavar="PLAN.json")
    plan.add_argument("--payloads", action="store_true", help="print every payload as one JSON line")
    plan.set_defaults(func=_plan, needs="upload")

    run = sub.add_parser("run", help="record a plan file as a batch and send it")
    run.add_argument("plan", type=Path, metavar="PLAN.json")
    run.add_argument("--concurrency", type=_positive, default=None,
                     help="jobs at fal at once (default DASHBOARD_CONCURRENCY, 8)")
    run.add_argument("--by", dest="created_by", default=None, help="who runs it (recorded)")
    run.add_argument("--quiet", action="store_true", help="no progress lines, only the summary")
    run.set_defaults(func=_run, needs="run")

    resume = sub.add_parser("resume", help="continue a batch (default: every unfinished batch)")
    resume.add_argument("batch_id", nargs="?", metavar="BATCH_ID")
    resume.add_argument("--concurrency", type=_positive, default=None)
    resume.add_argument("--quiet", action="store_true")
    resume.add_argument("--runner", action="store_true", help=argparse.SUPPRESS)  # started by a page: it audited
    resume.set_defaults(func=_resume, needs="resume")

    cancel = sub.add_parser("cancel", help="stop a batch: send nothing more, cancel what fal holds")
    cancel.add_argument("batch_id", metavar="BATCH_ID")
    cancel.set_defaults(func=_cancel, needs="cancel")

    doubt = sub.add_parser("doubt", help="requests whose submit fal never answered: list, send again or give up")
    doubt.add_argument("batch_id", metavar="BATCH_ID")
    doubt.add_argument("--request", action="append", dest="requests", metavar="REQUEST_ID",
                       help="only this request (repeatable); default: every request in doubt")
    action = doubt.add_mutually_exclusive_group()
    action.add_argument("--send-again", action="store_true",
                        help="send them again: fal may run (and bill) each one twice")
    action.add_argument("--give-up", action="store_true", help="make them final (failed) without sending")
    doubt.add_argument("--by", default=None, help="who decides (recorded; required with an action)")
    doubt.set_defaults(func=_doubt, needs=lambda a: "resume" if a.send_again or a.give_up else "read")

    status = sub.add_parser("status", help="progress of one batch, or the latest batches")
    status.add_argument("batch_id", nargs="?", metavar="BATCH_ID")
    status.add_argument("--limit", type=_positive, default=20)
    status.set_defaults(func=_status, needs="read")


def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value < 1:
        raise argparse.ArgumentTypeError("must be at least 1")
    return value


def _settings_store(settings: Any = None) -> tuple[Any, Any]:
    from core.config import load_settings
    from core.models import install_added_models
    from core.store import open_store

    settings = settings or load_settings()
    settings.ensure_dirs()
    store = open_store(settings)
    install_added_models(store)   # plans and runners may name endpoints the team added
    return settings, store


def _make_plan(path: Path, store: Store, settings: Settings, *, upload: bool) -> Plan:
    from core.batches.plan_file import load_plan_file
    from core.batches.service import plan_batch

    spec = load_plan_file(path)
    storage = None
    if upload and spec.get("references"):
        from core.blobs.backend import open_storage

        storage = open_storage(settings)
    return plan_batch(spec, store=store, storage=storage, base_dir=path.parent, upload=upload,
                      max_reference_bytes=settings.max_upload_bytes)


def _describe(plan: Plan) -> str:
    """The plan's one-line size and cost, then one line per contender (its label, requests, cost)."""
    lines = [plan.summary()]
    lines += [f"  {line.label}: {line.requests} requests, ${line.estimated_cost:.3f}" for line in plan.contender_lines()]
    return "\n".join(lines)


def _plan(args: argparse.Namespace) -> int:
    settings, store = _settings_store()
    plan = _make_plan(args.plan, store, settings, upload=False)
    print(f"plan {plan.name!r}: {_describe(plan)}")
    for warning in plan.warnings:
        print(f"warning: {warning}")
    if not plan.final:
        print("(reference files not uploaded yet: payloads show reference://pending-N)")
    if args.payloads:
        from core.catalog.payloads import canonical_json

        for r in plan.requests:
            print(canonical_json({"endpoint": r.endpoint, "seed": r.seed, "estimated_cost": r.estimated_cost,
                                  "payload_hash": r.payload_hash, "payload": r.payload}))
    return 0


def _progress_printer(quiet: bool) -> Any:
    if quiet:
        return None
    started = time.monotonic()

    def show(progress: Any, outage: Any) -> None:
        extra = f"; {outage.describe()}" if outage.active else ""
        print(f"[{time.monotonic() - started:6.1f}s] {progress.summary()}{extra}", flush=True)

    return show


def _report(report: Any) -> int:
    from core.values import RequestStatus

    p = report.progress
    done_word = "DRY RUN finished" if report.dry_run else ("cancelled" if report.cancelled else "finished")
    if p.settled and p.in_doubt and report.stopped is None:
        print(f"batch {report.batch_id} finished EXCEPT {p.in_doubt} request(s) in doubt: {p.summary()}")
        print(f"{p.in_doubt} submit(s) got no answer from fal (it may hold them, and bill them): look them "
              f"up in fal's request history, then `python -m core batch doubt {report.batch_id} "
              "--send-again --by NAME` (may pay twice) or `--give-up --by NAME`")
        return 3
    if p.is_finished:
        print(f"batch {report.batch_id} {done_word}: {p.summary()}")
        failed = p.counts.get(RequestStatus.FAILED, 0)
        if failed:
            print(f"{failed} request(s) failed: see `python -m core export --batch {report.batch_id} "
                  f"--status failed --out failed.csv` for the errors")
        return 0
    print(f"batch {report.batch_id} NOT finished: {p.summary()}", file=sys.stderr)
    if report.stopped:
        print(f"stopped: {report.stopped}", file=sys.stderr)
    print(f"resume with `python -m core batch resume {report.batch_id}`", file=sys.stderr)
    return 1


def _warm_up() -> Any:
    """Settings; for a live run, the TLS context its first POST needs starts building (in the
    background) before the store is opened and the plan made."""
    from core.config import load_settings

    settings = load_settings()
    if not settings.dry_run:
        from core import fal

        fal.warm_tls()
    return settings


def _run(args: argparse.Namespace) -> int:
    from core.batches import budget, service
    from core.errors import BudgetExceeded

    settings, store = _settings_store(_warm_up())
    # the limits are checked on the preview, before a reference file is uploaded (`record`
    # checks again before it writes the batch)
    plan = _make_plan(args.plan, store, settings, upload=False)
    if not settings.dry_run:
        # each of the run's senders opens a store: on Postgres their sessions open while the
        # batch is written and read back, not after
        store.warm(min(args.concurrency or settings.concurrency, len(plan.requests)))
    estimate = budget.of_plan(plan)
    try:
        budget.check(store, settings, estimate_usd=estimate.usd, unpriced=estimate.unpriced, person=args.created_by)
    except BudgetExceeded:
        store.close()   # before the interpreter exits, with the TLS warm-up thread still running
        raise
    if not plan.final:
        plan = _make_plan(args.plan, store, settings, upload=True)
    batch = service.record(store, plan, settings, concurrency=args.concurrency, created_by=args.created_by)
    print(f"batch {batch.id} {plan.name!r}: {_describe(plan)}", flush=True)
    if batch.dry_run:
        print("DRY RUN: nothing sent (no FAL_KEY); payloads are validated and recorded as dry_run",
              flush=True)
    # the metrics worker starts once fal has accepted a job, not while this process starts up;
    # the run goes on on this store (on Postgres a second connection would cost a connect and
    # the schema check before the first POST)
    try:
        report = service.run_here(batch.id, settings, concurrency=args.concurrency,
                                  on_progress=_progress_printer(args.quiet), store=store,
                                  on_sending=None if batch.dry_run else lambda: _measure_in_background(settings))
    finally:
        store.close()
    _ran_to_the_end()
    return _report(report)


def _ran_to_the_end() -> None:
    """The runner's workers are joined and its stores closed: the process may end without the
    interpreter's teardown (core.cli.end_at_once)."""
    from core.cli import end_at_once

    end_at_once()


def _measure_in_background(settings: Any) -> None:
    """Results get their fidelity metrics from a detached worker that follows this run
    (core/evaluation/fidelity.py); it never slows the run down, and a failure to start it only warns."""
    from core.evaluation.fidelity import start_background

    try:
        start_background(settings, expect_results=True)
    except OSError as e:
        print(f"warning: metrics worker not started ({e}); run `python -m core metrics` later",
              file=sys.stderr)


def _resume(args: argparse.Namespace) -> int:
    from core.batches import service
    from core.errors import BatchBusy, BudgetExceeded

    settings, store = _settings_store(_warm_up())

    ids = [args.batch_id] if args.batch_id else [b.id for b in store.unfinished_batches()]
    refused = 0
    try:
        if args.batch_id:
            store.get_batch(args.batch_id)
            service.check_resume(store, settings, args.batch_id)   # over a limit: one line, exit 2
        for batch_id in [] if args.batch_id else list(ids):
            try:
                service.check_resume(store, settings, batch_id)
            except BudgetExceeded as e:
                print(f"skipped {batch_id}: {e}", file=sys.stderr)
                ids.remove(batch_id)
                refused = 2
    finally:
        store.close()
    if not ids:
        if not refused:
            print("no unfinished batch")
        return refused
    if not args.runner:   # a person resumed these here (a page's runner was audited by the page)
        _audit_resumes(settings, ids, args.person.name if args.person else None)
    if not settings.dry_run:
        _measure_in_background(settings)
    code = refused
    for batch_id in ids:
        try:
            report = service.run_here(batch_id, settings, concurrency=args.concurrency,
                                      on_progress=_progress_printer(args.quiet))
        except BatchBusy as e:
            if args.batch_id:
                raise
            print(f"skipped: {e}", file=sys.stderr)
            continue
        code = max(code, _report(report))
    _ran_to_the_end()
    return code


def _audit_resumes(settings: Any, ids: list[str], by: str | None) -> None:
    from core.batches import budget
    from core.store import open_store

    with open_store(settings) as store:
        for batch_id in ids:
            batch = store.get_batch(batch_id)
            store.add_audit(who=by, action="batch.resumed", subject=batch_id, detail=f"{batch.name} (command line)",
                            usd=None if batch.dry_run else budget.left_in_batch(store, batch_id).usd)


def _cancel(args: argparse.Namespace) -> int:
    from core.batches import service

    settings, store = _settings_store()
    try:
        if store.batch_progress(args.batch_id).is_finished:
            print(f"batch {args.batch_id} has already finished; nothing to cancel")
            return 0
        state = service.cancel(store, args.batch_id, settings, here=True, by=args.person.name if args.person else None)
    finally:
        store.close()
    if isinstance(state, service.Running):
        print(f"cancel requested: runner {state.runner_pid} stops sending and cancels the jobs fal "
              f"holds; follow it with `python -m core batch status {args.batch_id}`")
        return 0
    print(f"batch {args.batch_id}: {type(state).__name__.lower()}: {state.progress.summary()}")
    return 0 if state.progress.is_finished else 1


def _doubt(args: argparse.Namespace) -> int:
    from core.batches import service
    from core.errors import DashboardError
    from core.values import RequestStatus

    settings, store = _settings_store()
    try:
        doubtful = [r for r in store.batch_requests(args.batch_id, (RequestStatus.IN_DOUBT,))
                    if not args.requests or r.id in args.requests]
        if args.requests:
            unknown = sorted(set(args.requests) - {r.id for r in doubtful})
            if unknown:
                raise DashboardError(f"not in doubt in batch {args.batch_id}: {', '.join(unknown)}")
        if not (args.send_again or args.give_up):
            if not doubtful:
                print(f"batch {args.batch_id}: no request in doubt")
            for r in doubtful:
                print(f"{r.id}  {r.endpoint}  submitted {(r.submitted_at or '')[:19]}  {r.error_message or ''}")
            return 0
        if not args.by or not args.by.strip():
            raise DashboardError("say who decides with --by NAME (it is recorded with each request)")
        ids = [r.id for r in doubtful]
        if args.send_again:
            moved = service.send_again(store, args.batch_id, settings, by=args.by, request_ids=ids)
            print(f"{len(moved)} request(s) sent again by {args.by.strip()} (each may be paid twice); "
                  f"follow them with `python -m core batch status {args.batch_id}`")
        else:
            done = service.give_up(store, args.batch_id, by=args.by, request_ids=ids)
            print(f"{len(done)} request(s) given up by {args.by.strip()}")
    finally:
        store.close()
    return 0


def _status(args: argparse.Namespace) -> int:
    from core.batches import service

    settings, store = _settings_store()
    batches = [store.get_batch(args.batch_id)] if args.batch_id else store.list_batches(limit=args.limit)
    if not batches:
        print("no batch yet: `python -m core batch run PLAN.json`")
    for b in batches:
        state = service.state(store, b.id, settings)
        p = state.progress
        runner_text = {service.Running: f"runner {b.runner_pid} alive", service.Starting: "runner starting",
                       service.Stopped: "no runner"}.get(type(state), "")
        flags = " ".join(x for x in ("DRY RUN" if b.dry_run else "",
                                     "cancel requested" if b.cancel_requested else "", runner_text) if x)
        print(f"{b.id}  {b.created_at[:19]}  {b.status:<9} {b.name!r}: {p.summary()}"
              + (f"  [{flags}]" if flags else ""))
        if isinstance(state, service.Stopped) and args.batch_id:
            print(f"stopped: {state.reason}")
        if args.batch_id:
            print(json.dumps({"id": b.id, "status": b.status, "counts": dict(p.counts),
                              "estimated_cost": p.estimated_cost, "completed_cost": p.completed_cost,
                              "dry_run": b.dry_run, "cancel_requested": b.cancel_requested,
                              "runner_pid": b.runner_pid, "heartbeat_at": b.heartbeat_at,
                              "stop_reason": b.stop_reason}))
    store.close()
    return 0
