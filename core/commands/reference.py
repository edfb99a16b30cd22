"""`python -m core reference add|list|archive|cleanup`: reference photos from the command line.

`add` stores a photo with the configured backend (Supabase when SUPABASE_URL and SUPABASE_KEY
are set, else the local data directory) and prints the stored reference as one JSON object,
including `fal_url`, the URL fal would receive (a data: URI is shown abbreviated). Only a regular
file is read, and never more than DASHBOARD_MAX_UPLOAD_BYTES. `list` prints one JSON object per
line, newest first. `cleanup` settles the storage's cleanup journal (deletes the backend refused
earlier, objects whose row was never written) and prints what it did. A refused file exits 2
with the reason on stderr.
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

from core.values import REFERENCE_ROLES


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser("reference", help="add and list reference photos",
                                   description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="reference_command", required=True, metavar="SUBCOMMAND")

    add = sub.add_parser("add", help="store a photo (JPEG, PNG, WebP, HEIC) and print it as JSON")
    add.add_argument("path", type=Path, metavar="PATH")
    add.add_argument("--role", choices=REFERENCE_ROLES, default="other")
    add.add_argument("--owner", default="team", help="folder in storage and owner column (default: team)")
    add.add_argument("--by", dest="created_by", default=None, help="who uploads (recorded as created_by)")
    add.set_defaults(func=_add, needs="upload")

    ls = sub.add_parser("list", help="print stored references, one JSON object per line")
    ls.add_argument("--all", action="store_true", help="include archived references")
    ls.set_defaults(func=_list, needs="read")

    archive = sub.add_parser("archive", help="hide a reference from lists (payloads still resolve)")
    archive.add_argument("reference_id", metavar="ID")
    archive.set_defaults(func=_archive, needs="archive")

    cleanup = sub.add_parser(
        "cleanup", help="delete stored objects left behind (refused deletes, uploads without a row)")
    cleanup.add_argument("--grace", type=float, default=None, metavar="SECONDS",
                         help="only objects written longer ago than this without a row "
                              "(default 900: an upload in progress elsewhere is left alone)")
    cleanup.set_defaults(func=_cleanup, needs="archive")


def _open_store() -> tuple[Any, Any]:
    from core.config import load_settings
    from core.store import open_store

    settings = load_settings()
    settings.ensure_dirs()
    return settings, open_store(settings)


def _add(args: argparse.Namespace) -> int:
    from core.redact import abbreviate
    from core.config import load_settings
    from core.photos.images import read_photo_file
    from core.photos.references import add_reference, fal_url
    from core.blobs.backend import open_storage

    data = read_photo_file(args.path, load_settings().max_upload_bytes)
    settings, store = _open_store()
    storage = open_storage(settings)
    try:
        ref = add_reference(store, storage, data, role=args.role, filename=args.path.name, owner=args.owner,
                            created_by=args.created_by, settings=settings)
        out = {
            "id": ref.id, "role": ref.role, "owner": ref.owner, "original_name": ref.original_name,
            "sha256": ref.sha256, "width": ref.width, "height": ref.height,
            "content_type": ref.content_type, "size_bytes": ref.size_bytes,
            "storage_backend": ref.storage_backend, "storage_path": ref.storage_path,
            "existing": ref.existing, "notes": list(ref.notes),
            "fal_url": abbreviate(fal_url(ref, storage)),
        }
    finally:
        storage.close()
        store.close()
    print(json.dumps(out, ensure_ascii=False))
    return 0


def _list(args: argparse.Namespace) -> int:
    from core.photos.references import payload_url

    _, store = _open_store()
    try:
        refs = store.list_references(include_archived=args.all)
    finally:
        store.close()
    for r in refs:
        print(json.dumps({
            "id": r.id, "role": r.role, "owner": r.owner, "original_name": r.original_name,
            "width": r.width, "height": r.height, "content_type": r.content_type,
            "sha256": r.sha256, "storage_backend": r.storage_backend, "storage_path": r.storage_path,
            "payload_url": payload_url(r), "created_at": r.created_at, "created_by": r.created_by,
            "archived_at": r.archived_at,
        }, ensure_ascii=False))
    return 0


def _archive(args: argparse.Namespace) -> int:
    _, store = _open_store()
    try:
        store.archive_reference(args.reference_id, by=args.person.name if args.person else None)
    finally:
        store.close()
    print(f"archived {args.reference_id}")
    return 0


def _cleanup(args: argparse.Namespace) -> int:
    from core.photos.references import sweep_orphans
    from core.blobs.backend import open_storage

    from core.blobs.local import PARTIAL_GRACE_S, remove_partial_writes

    settings, store = _open_store()
    storage = open_storage(settings)
    try:
        report = sweep_orphans(store, storage, grace_s=args.grace)
        if report.deleted:
            store.add_audit(who=args.person.name if args.person else None, action="photo.cleanup",
                            subject=f"{len(report.deleted)} object(s)",
                            detail="deleted what failed or killed uploads left: " + ", ".join(report.deleted)[:500])
    finally:
        storage.close()
        store.close()
    grace = PARTIAL_GRACE_S if args.grace is None else args.grace
    for path in remove_partial_writes(settings.images_dir, older_than_s=grace):
        print(f"deleted {path} (a write that was killed before it finished)")

    for path in report.deleted:
        print(f"deleted {path}")
    refused = 0
    for entry in report.left:
        if entry.kind == "unconfirmed":
            print(f"waiting {entry.path}: written {time.time() - entry.at:.0f} s ago and no row names it "
                  "yet (its upload may still be running; --grace 0 deletes it now)")
        else:
            refused += 1
            print(f"left {entry.path}: {entry.reason}")
    print(f"{len(report.deleted)} deleted, {len(report.kept)} confirmed, {len(report.left)} left"
          + (" (deletes this key may not do: run again with the service-role key)" if refused else ""))
    return 0
