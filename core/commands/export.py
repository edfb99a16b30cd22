"""`python -m core export --out FILE.csv [filters]`: the request history as a spreadsheet-safe CSV.

One row per request and result image (see core/export/history.py); the filters are those of the history
page. The history export needs no pandas (the comparison CSV imports it when asked).
With `--comparison` (and optionally `--batch`): one row per group instead, each model's payload
hash, image and fidelity metrics side by side, and the votes (core/evaluation/comparison.py); images whose
metrics are still pending are measured first, so the file is complete.
"""
from __future__ import annotations

import argparse
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from core.store import Store


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser("export", help="write the request history as CSV",
                                   description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, required=True, metavar="FILE.csv")
    parser.add_argument("--batch", dest="batch_id", default=None, metavar="ID")
    parser.add_argument("--endpoint", default=None, metavar="ID", help="e.g. fal-ai/flux/schnell")
    parser.add_argument("--status", default=None, metavar="S",
                        help="planned, submitted, queued, running, completed, failed, cancelled, dry_run")
    parser.add_argument("--text", default=None, help="prompt contains this text (case-insensitive)")
    parser.add_argument("--from", dest="date_from", default=None, metavar="DATE", help="YYYY-MM-DD (UTC)")
    parser.add_argument("--to", dest="date_to", default=None, metavar="DATE", help="YYYY-MM-DD, inclusive")
    parser.add_argument("--comparison", action="store_true",
                        help="one row per group: models side by side with metrics and votes (only --batch applies)")
    parser.set_defaults(func=_export)


def _export(args: argparse.Namespace) -> int:
    from core import export
    from core import store
    from core.config import load_settings
    from core.store import open_store

    settings = load_settings()
    settings.ensure_dirs()
    st = open_store(settings.db_path)
    f = store.HistoryFilter(endpoint=args.endpoint, status=args.status, batch_id=args.batch_id,
                            date_from=args.date_from, date_to=args.date_to, text=args.text)
    if args.batch_id:
        st.get_batch(args.batch_id)
    if args.comparison:
        return _comparison(args, st, settings)
    result = export.to_csv(st, args.out, f)
    print(f"wrote {result.requests} requests ({result.rows} rows) to {result.path}")
    return 0


def _comparison(args: argparse.Namespace, st: Store, settings: Any) -> int:
    from core.evaluation import comparison
    from core.evaluation import fidelity
    from core.errors import DashboardError
    from core.store.blobs import open_storage

    ignored = [name for name in ("endpoint", "status", "text", "date_from", "date_to") if getattr(args, name)]
    if ignored:
        raise DashboardError(f"--comparison exports whole groups; only --batch applies (drop "
                             f"{', '.join('--' + n.replace('date_', '') for n in ignored)}).")
    pending = st.pending_count(batch_id=args.batch_id)
    if pending:
        print(f"measuring {pending} image(s) first...", flush=True)
        fidelity.compute_pending(st, open_storage(settings), batch_id=args.batch_id)
    result = comparison.comparison_to_csv(st, args.out, batch_id=args.batch_id)
    print(f"wrote {result.groups} groups x {len(result.models)} models to {result.path}")
    return 0
