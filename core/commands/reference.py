"""`python -m core reference add|list|archive`: reference photos from the command line.

`add` stores a photo with the configured backend (Supabase when SUPABASE_URL and SUPABASE_KEY
are set, else the local data directory) and prints the stored reference as one JSON object,
including `fal_url`, the URL fal would receive (a data: URI is shown abbreviated). `list` prints
one JSON object per line, newest first. A refused file exits 2 with the reason on stderr.
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from core.store import REFERENCE_ROLES


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser("reference", help="add and list reference photos",
                                   description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="reference_command", required=True, metavar="SUBCOMMAND")

    add = sub.add_parser("add", help="store a photo (JPEG, PNG, WebP, HEIC) and print it as JSON")
    add.add_argument("path", type=Path, metavar="PATH")
    add.add_argument("--role", choices=REFERENCE_ROLES, default="other")
    add.add_argument("--owner", default="team", help="folder in storage and owner column (default: team)")
    add.add_argument("--by", dest="created_by", default=None, help="who uploads (recorded as created_by)")
    add.set_defaults(func=_add)

    ls = sub.add_parser("list", help="print stored references, one JSON object per line")
    ls.add_argument("--all", action="store_true", help="include archived references")
    ls.set_defaults(func=_list)

    archive = sub.add_parser("archive", help="hide a reference from lists (payloads still resolve)")
    archive.add_argument("reference_id", metavar="ID")
    archive.set_defaults(func=_archive)


def _open_store() -> tuple[Any, Any]:
    from core.config import load_settings
    from core.store import open_store

    settings = load_settings()
    settings.ensure_dirs()
    return settings, open_store(settings.db_path)


def _close(storage: Any) -> None:
    close = getattr(storage, "close", None)
    if close:
        close()


def _add(args: argparse.Namespace) -> int:
    from core.errors import UploadRejected
    from core.catalog.payloads import abbreviate
    from core.photos.references import add_reference, fal_url

    try:
        data = args.path.read_bytes()
    except OSError as e:
        raise UploadRejected("unreadable", f"cannot read {args.path}: {e.strerror or e}.") from None
    from core.store.blobs import open_storage

    settings, st = _open_store()
    storage = open_storage(settings)
    try:
        ref = add_reference(st, storage, data, role=args.role, filename=args.path.name, owner=args.owner,
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
        _close(storage)
        st.close()
    print(json.dumps(out, ensure_ascii=False))
    return 0


def _list(args: argparse.Namespace) -> int:
    from core.photos.references import payload_url

    _, st = _open_store()
    try:
        refs = st.list_references(include_archived=args.all)
    finally:
        st.close()
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
    _, st = _open_store()
    try:
        st.archive_reference(args.reference_id)
    finally:
        st.close()
    print(f"archived {args.reference_id}")
    return 0
