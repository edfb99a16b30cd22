"""`python -m core metrics [--batch ID]`: measure every pending result image now (fidelity to the
reference and response checks, see core/evaluation/fidelity.py), in this process, and print a summary.

`--retry-failed` and `--recompute outdated|all` make measured rows pending again first.
`--workers N` measures in N processes (default `DASHBOARD_METRICS_WORKERS`; 1 measures in this one),
at this process's niceness (`nice -n 10 python -m core metrics` leaves pages their priority).
`--worker` is what the dashboard and the batch runner start in the background: it holds the
worker lock, follows live runners and exits when idle, at a raised niceness (pages keep priority);
SIGTERM lets it finish the images in flight and exit.
"""
from __future__ import annotations

import argparse
import signal
import sys
import threading
from contextlib import nullcontext
from typing import Any

from core.values import ImageMetrics


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser("metrics", help="measure pending result images (fidelity, response checks)",
                                   description=__doc__.split("\n\n")[0])
    parser.add_argument("--batch", dest="batch_id", default=None, metavar="ID", help="only this batch")
    parser.add_argument("--retry-failed", action="store_true", help="measure again the images that failed")
    parser.add_argument("--recompute", choices=("outdated", "all"), default=None,
                        help="measure again images measured by an older metrics version, or all")
    parser.add_argument("--workers", type=_workers, default=None, metavar="N",
                        help="processes measuring at once (default: DASHBOARD_METRICS_WORKERS)")
    parser.add_argument("--quiet", action="store_true", help="only the summary")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.set_defaults(func=_metrics, needs=lambda a: None if a.worker else "run")  # the worker: internal


def _workers(value: str) -> int:
    from core.config import RANGES

    low, high = RANGES["DASHBOARD_METRICS_WORKERS"]
    try:
        number = int(value)
    except ValueError:
        number = 0
    if not low <= number <= high:
        raise argparse.ArgumentTypeError(f"must be a whole number from {low} to {high}, got {value!r}")
    return number


def _stop_on_sigterm() -> threading.Event:
    """An event SIGTERM sets: the worker then finishes what is in flight, stores it and exits."""
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    return stop


def _metrics(args: argparse.Namespace) -> int:
    from core.evaluation import fidelity, pool
    from core.config import load_settings
    from core.store import open_store
    from core.blobs.backend import open_storage

    settings = load_settings()
    settings.ensure_dirs()
    workers = args.workers or settings.metrics_workers
    if args.worker:
        pool.renice()
        report = fidelity.run_worker(settings, workers=workers, stop=_stop_on_sigterm())
        if report is None:
            print("another metrics worker is running; it measures what is pending")
        else:
            print(f"metrics worker done: {report.measured} measured ({report.failed} failed), "
                  f"{report.remaining} pending")
        return 0
    store = open_store(settings)
    if args.batch_id:
        store.get_batch(args.batch_id)
    reset = fidelity.reset(store, batch_id=args.batch_id, failed=args.retry_failed,
                           outdated=args.recompute == "outdated", everything=args.recompute == "all")
    if reset:
        print(f"{reset} image(s) to measure again")
    total = store.pending_count(batch_id=args.batch_id)
    done = 0

    def show(m: ImageMetrics) -> None:
        nonlocal done
        done += 1
        if not args.quiet:
            print(f"[{done}/{total}] {m.image_id[:8]} {m.summary()}", flush=True)

    # asked for now, so not niced: the pool processes keep this process's niceness
    with pool.MeasuringPool(settings, workers, niceness=0) if workers > 1 else nullcontext() as processes:
        report = fidelity.compute_pending(store, open_storage(settings), batch_id=args.batch_id,
                                          on_image=show, pool=processes)
    print(f"measured {report.measured} image(s), {report.failed} with an error; "
          f"{report.remaining} pending")
    if report.failed:
        print("errors are kept per image (metrics_error); retry with `python -m core metrics "
              "--retry-failed`", file=sys.stderr)
    return 0
