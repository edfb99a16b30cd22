"""`python -m core store copy --to postgresql://...`: move a team's history into Postgres.

Copies every table of the SQLite file (`--from`, default the data directory's `dashboard.db`)
into the Postgres store at `--to` (migrated first): requests, result images, votes, reference
photos, contenders, models, the audit trail and the limits; checks each table by count and
checksum; one transaction, so a refused row or a failed check writes nothing. Run it again at
any time: nothing is copied twice, and rows changed in the file since are brought up to date.
The image files themselves stay where they are (the data directory, or the Supabase bucket):
the rows name them. Then set DATABASE_URL to the same URL on every host.
"""
from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from core.errors import DashboardError


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser("store", help="the store itself: copy the SQLite history into Postgres",
                                   description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="store_command", required=True, metavar="SUBCOMMAND")
    copy = sub.add_parser("copy", help="copy the SQLite file's history into a Postgres store, checked",
                          description=__doc__.split("\n\n")[1])
    copy.add_argument("--to", required=True, metavar="postgresql://...", dest="to")
    copy.add_argument("--from", dest="source", type=Path, default=None, metavar="dashboard.db",
                      help="the SQLite file (default: the data directory's)")
    copy.set_defaults(func=_copy, needs="store")


def _copy(args: argparse.Namespace) -> int:
    from core.config import load_settings
    from core.store import open_store
    from core.store.copy import copy_store
    from core.store.pg import label

    if not args.to.startswith(("postgresql://", "postgres://")):
        raise DashboardError("--to must be a Postgres URL like postgresql://user:password@host:5432/postgres.")
    settings = load_settings()
    source_path = args.source or settings.db_path
    if not source_path.is_file():
        raise DashboardError(f"there is no SQLite store at {source_path}: give --from the dashboard.db to copy.")
    with open_store(source_path) as source, open_store(args.to) as target:
        tables = copy_store(source.db, target.db)
        total = sum(t.added + t.updated for t in tables)
        who = args.person.name if args.person is not None else None
        target.add_audit(who=who, action="store.copied", subject=label(args.to),
                         detail=f"from {source_path}: " + ", ".join(f"{t.table} {t.rows}" for t in tables))
    for t in tables:
        print(f"{t.table:<17} {t.rows:>8} rows  {t.added:>8} added  {t.updated:>6} updated  "
              f"sha256 {t.checksum[:16]}  ok")
    print(f"copied {source_path} into {label(args.to)}: {total} rows written, every table checked.")
    return 0
