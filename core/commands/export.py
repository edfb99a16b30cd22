"""`python -m core export --out FILE.csv [filters]`: the request history as a spreadsheet-safe CSV.

One row per request and result image (see core/export/history.py); the filters are those of the history
page. The history export needs no pandas (the comparison CSV imports it when asked).
With `--comparison` (and optionally `--batch`): one row per group instead, each model's payload
hash, image and fidelity metrics side by side per contender (model and settings), and the votes (core/export/comparison.py); images whose
metrics are still pending are measured first, so the file is complete.

`--out` is checked before anything is read: never the database (or its -wal, -shm, lock files),
nothing inside the data directory's folders, no directory, device or symlink; a missing parent
directory is created. The file is written under a unique temporary name beside it and renamed
when complete, so two exports to one path never mix and a failed one leaves no file.
"""
from __future__ import annotations

import argparse
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from core.config import Settings
from core.errors import DashboardError
from core.store import Store

# SQLite refuses LIKE patterns over 50,000 bytes; a prompt filter is a few words
MAX_TEXT = 1000


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
    parser.add_argument("--audit", action="store_true",
                        help="the audit trail instead (admins; no other filter applies)")
    parser.set_defaults(func=_export, needs=lambda a: "audit" if a.audit else "read")


def _export(args: argparse.Namespace) -> int:
    from core import export
    from core.values import HistoryFilter
    from core.config import load_settings
    from core.models import install_added_models
    from core.store import open_store

    if args.text is not None and len(args.text) > MAX_TEXT:
        raise DashboardError(f"--text is {len(args.text):,} characters long; give at most {MAX_TEXT} "
                             "(the prompt text to look for).")
    settings = load_settings()
    out = checked_out(args.out, settings)
    settings.ensure_dirs()
    store = open_store(settings)
    install_added_models(store)   # the labels of the endpoints the team added
    try:
        f = HistoryFilter(endpoint=args.endpoint, status=args.status, batch_id=args.batch_id,
                                date_from=args.date_from, date_to=args.date_to, text=args.text)
        if args.batch_id:
            store.get_batch(args.batch_id)
        if args.comparison:
            return _comparison(args, store, settings, out)
        if args.audit:
            from core.export import audit

            lines = audit.rows(store)
            write_atomically(out, lambda tmp: tmp.write_bytes(audit.to_csv_bytes(store)))
            print(f"wrote {len(lines)} audit lines to {out}")
            return 0
        result = write_atomically(out, lambda tmp: export.to_csv(store, tmp, f))
        print(f"wrote {result.requests} requests ({result.rows} rows) to {out}")
        return 0
    finally:
        store.close()


def _comparison(args: argparse.Namespace, store: Store, settings: Settings, out: Path) -> int:
    from core.evaluation import fidelity
    from core.export import comparison
    from core.blobs.backend import open_storage

    ignored = [name for name in ("endpoint", "status", "text", "date_from", "date_to") if getattr(args, name)]
    if ignored:
        raise DashboardError(f"--comparison exports whole groups; only --batch applies (drop "
                             f"{', '.join('--' + n.replace('date_', '') for n in ignored)}).")
    pending = store.pending_count(batch_id=args.batch_id)
    if pending and not store.read_only:
        print(f"measuring {pending} image(s) first...", flush=True)
        fidelity.compute_pending(store, open_storage(settings), batch_id=args.batch_id)
    result = write_atomically(out, lambda tmp: comparison.to_csv(store, tmp, batch_id=args.batch_id))
    print(f"wrote {result.groups} groups x {len(result.contenders)} contenders to {out}")
    for label in result.contenders:
        print(f"  {label}")
    return 0


def checked_out(out: Path, settings: Settings) -> Path:
    """`out` as an absolute path an export may write, its parent directory created; a
    DashboardError saying what to give instead otherwise."""
    out = Path(os.path.abspath(out))
    if out.is_symlink():
        raise DashboardError(f"--out {out} is a symbolic link; give the path of a regular file.")
    if out.is_dir():
        raise DashboardError(f"--out {out} is a directory; give a file name, e.g. {out / 'history.csv'}.")
    if out.exists() and not out.is_file():
        raise DashboardError(f"--out {out} is a device or special file, not a regular file; "
                             "give the path of a .csv file.")
    data_dir = settings.data_dir.resolve()
    real = out.parent.resolve() / out.name
    if real.is_relative_to(data_dir):
        inner = real.relative_to(data_dir)
        if len(inner.parts) > 1 or inner.name.startswith(settings.db_path.name):
            raise DashboardError(f"--out {out} is inside the dashboard's own files in {data_dir} "
                                 "(database, images, logs); write the CSV somewhere else.")
    if out.exists() and settings.db_path.exists() and os.path.samefile(out, settings.db_path):
        raise DashboardError(f"--out {out} is the dashboard's database; write the CSV somewhere else.")
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise DashboardError(f"cannot create the directory {out.parent} for --out ({e.strerror}); "
                             "give a path in a directory you may write.") from None
    return out


def write_atomically(out: Path, write: Callable[[Path], Any]) -> Any:
    """`write(tmp)` to a unique temporary file beside `out`, then renamed over `out`: readers see
    the old file or the whole new one, and two writers never mix their rows."""
    from core.blobs.local import remove_partial_writes

    # what an export killed mid-write left beside the same file is removed first
    remove_partial_writes(out.parent, patterns=(f".{out.name}.*.tmp",), recursive=False)
    try:
        fd, name = tempfile.mkstemp(prefix=f".{out.name}.", suffix=".tmp", dir=out.parent)
    except OSError as e:
        raise DashboardError(f"cannot write in {out.parent} ({e.strerror}); give another --out.") from None
    os.close(fd)
    tmp = Path(name)
    try:
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)   # what a plain open() would have given the file
        result = write(tmp)
        os.replace(tmp, out)
    except OSError as e:
        raise DashboardError(f"could not write {out} ({e.strerror or e}); nothing was written "
                             "there.") from None
    finally:
        tmp.unlink(missing_ok=True)
    return result
