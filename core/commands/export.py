"""`python -m core export --out FILE.csv [filters]`: the request history as a spreadsheet-safe CSV.

One row per request and result image (see core/export.py); the filters are those of the history
page. pandas is imported only when this command runs.
"""
from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any


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
    parser.set_defaults(func=_export)


def _export(args: argparse.Namespace) -> int:
    from core import export, store
    from core.config import load_settings
    from core.db import connect

    settings = load_settings()
    settings.ensure_dirs()
    db = connect(settings.db_path)
    f = store.HistoryFilter(endpoint=args.endpoint, status=args.status, batch_id=args.batch_id,
                            date_from=args.date_from, date_to=args.date_to, text=args.text)
    if args.batch_id:
        store.get_batch(db, args.batch_id)
    result = export.to_csv(db, args.out, f)
    print(f"wrote {result.requests} requests ({result.rows} rows) to {result.path}")
    return 0
