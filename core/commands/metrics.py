"""`python -m core metrics [--batch ID]`: measure every pending result image now (fidelity to the
reference and response checks, see core/evaluation/fidelity.py), in this process, and print a summary.

`--retry-failed` and `--recompute outdated|all` make measured rows pending again first.
`--worker` is what the dashboard and the batch runner start in the background: it holds the
worker lock, follows live runners and exits when idle.
"""
from __future__ import annotations

import argparse
import sys
from typing import Any


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser("metrics", help="measure pending result images (fidelity, response checks)",
                                   description=__doc__.split("\n\n")[0])
    parser.add_argument("--batch", dest="batch_id", default=None, metavar="ID", help="only this batch")
    parser.add_argument("--retry-failed", action="store_true", help="measure again the images that failed")
    parser.add_argument("--recompute", choices=("outdated", "all"), default=None,
                        help="measure again images measured by an older metrics version, or all")
    parser.add_argument("--quiet", action="store_true", help="only the summary")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.set_defaults(func=_metrics)


def _metrics(args: argparse.Namespace) -> int:
    from core.evaluation import fidelity
    from core import store
    from core.config import load_settings
    from core.store import open_store
    from core.store.blobs import open_storage

    settings = load_settings()
    settings.ensure_dirs()
    if args.worker:
        report = fidelity.run_worker(settings)
        if report is None:
            print("another metrics worker is running; it measures what is pending")
        else:
            print(f"metrics worker done: {report.measured} measured ({report.failed} failed), "
                  f"{report.remaining} pending")
        return 0
    st = open_store(settings.db_path)
    if args.batch_id:
        st.get_batch(args.batch_id)
    reset = fidelity.reset(st, batch_id=args.batch_id, failed=args.retry_failed,
                           outdated=args.recompute == "outdated", everything=args.recompute == "all")
    if reset:
        print(f"{reset} image(s) to measure again")
    total = st.pending_count(batch_id=args.batch_id)
    done = 0

    def show(m: fidelity.ImageMetrics) -> None:
        nonlocal done
        done += 1
        if not args.quiet:
            print(f"[{done}/{total}] {m.image_id[:8]} {m.summary()}", flush=True)

    report = fidelity.compute_pending(st, open_storage(settings), batch_id=args.batch_id, on_image=show)
    print(f"measured {report.measured} image(s), {report.failed} with an error; "
          f"{report.remaining} pending")
    if report.failed:
        print("errors are kept per image (metrics_error); retry with `python -m core metrics "
              "--retry-failed`", file=sys.stderr)
    return 0
