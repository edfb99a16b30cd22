"""Reference photos: upload (checked, normalised, deduplicated) and the URL each one becomes in a
stored payload and in what fal receives. Rows are read, listed and archived through the Store
(`st.get_reference`, `st.list_references`, `st.archive_reference`).

Invariants:
- A reference is a row in `reference_photos` plus one stored object at `<owner>/<id>.<ext>`
  (the old system's `user_id/uuid.jpg` layout). The object is written first, then the row; if
  the row cannot be written the object is deleted again. A refused file leaves neither.
- `sha256` is that of the STORED (normalised) bytes; it is unique: the same photo uploaded again
  returns the existing reference (`existing=True`) and stores nothing new. Re-uploading an
  archived photo restores it; re-uploading one whose object went missing (or that lives in the
  other backend) stores it again under the same id.
- Stored payloads carry `payload_url(ref)`: the public URL for Supabase, `reference://<id>` for
  local storage. The `data:` URI fal needs for a local photo is built only at send time
  (`fal_url`, `resolve_payload`) from the stored bytes, after checking their sha256; it is never
  written to the database or to a log.
"""
from __future__ import annotations

import base64
import dataclasses
import hashlib
import logging
import re
from typing import TYPE_CHECKING, Any

from core.config import Settings, load_settings
from core.store.db import new_id, now
from core.store.values import REFERENCE_ROLES, Reference  # Reference: importable here too
from core.errors import StorageError, StoreError, UploadRejected
from core.photos.images import NormalisedImage, normalise_upload
from core.catalog.payloads import REFERENCE_SCHEME, reference_token
from core.store.blobs import Storage

if TYPE_CHECKING:
    from core.store import Store

log = logging.getLogger(__name__)


def add_reference(st: Store, storage: Storage, data: bytes, *, role: str = "other",
                  filename: str | None = None, owner: str = "team", created_by: str | None = None,
                  settings: Settings | None = None) -> Reference:
    """Check, normalise and store a photo; the same photo again returns the existing reference."""
    if role not in REFERENCE_ROLES:
        raise UploadRejected("invalid_role", f"role {role!r} is not one of {', '.join(REFERENCE_ROLES)}.")
    settings = settings or load_settings()
    image = normalise_upload(data, filename=filename, max_bytes=settings.max_upload_bytes,
                             max_long_edge=settings.max_long_edge)
    found = st.reference_by_sha(image.sha256)
    if found is not None:
        return _reuse(st, storage, found, image)

    reference_id = new_id()
    path = f"{_slug(owner)}/{reference_id}.{image.ext}"
    stored = storage.put(path, image.data, image.content_type)
    ref = Reference(
        id=reference_id, sha256=image.sha256, role=role, owner=owner or "team",
        original_name=filename, content_type=image.content_type, width=image.width,
        height=image.height, size_bytes=len(image.data), storage_backend=storage.backend,
        storage_path=path, public_url=stored.public_url, created_at=now(),
        created_by=created_by, archived_at=None)
    try:
        written = st.insert_reference(ref)
    except BaseException:
        _discard(storage, path)
        raise
    if written is None:
        # another upload of the same photo won the race: keep its row, drop our copy
        _discard(storage, path)
        winner = st.reference_by_sha(image.sha256)
        if winner is None:
            raise StoreError(f"could not record reference photo {filename or ''}; nothing was kept, "
                             "try again.")
        return dataclasses.replace(winner, notes=image.notes, existing=True)
    log.info("stored reference %s (sha256 %s) at %s:%s", reference_id, image.sha256[:12],
             storage.backend, path)
    return dataclasses.replace(written, notes=image.notes)


def payload_url(reference: Reference) -> str:
    """What a STORED payload carries: the public URL (Supabase) or `reference://<id>` (local)."""
    if reference.storage_backend == "supabase" and reference.public_url:
        return reference.public_url
    return reference_token(reference.id)


def fal_url(reference: Reference, storage: Storage) -> str:
    """What fal RECEIVES at send time: the public URL, or a data: URI of the stored bytes."""
    if reference.storage_backend != storage.backend:
        raise StorageError(
            f"reference photo {reference.id} is stored in {reference.storage_backend} storage but the "
            f"dashboard now uses {storage.backend} storage: upload the photo again to copy it over.")
    url = storage.public_url(reference.storage_path)
    if url:
        return url
    data = storage.get(reference.storage_path)
    if hashlib.sha256(data).hexdigest() != reference.sha256:
        raise StorageError(
            f"the stored file of reference photo {reference.id} ({reference.storage_path}) has changed "
            "since upload (sha256 differs); upload the photo again.")
    return f"data:{reference.content_type};base64,{base64.b64encode(data).decode('ascii')}"


def resolve_payload(payload: dict, st: Store, storage: Storage) -> dict:
    """A copy of `payload` with every `reference://<id>` replaced by `fal_url(...)` (send time only)."""
    cache: dict[str, str] = {}

    def walk(obj: Any) -> Any:
        if isinstance(obj, str) and obj.startswith(REFERENCE_SCHEME):
            reference_id = obj[len(REFERENCE_SCHEME):]
            if reference_id not in cache:
                cache[reference_id] = fal_url(st.get_reference(reference_id), storage)
            return cache[reference_id]
        if isinstance(obj, dict):
            return {k: walk(v) for k, v in obj.items()}
        if isinstance(obj, (list, tuple)):
            return [walk(v) for v in obj]
        return obj

    return walk(payload)


# -- helpers -------------------------------------------------------------------------------------

def _reuse(st: Store, storage: Storage, found: Reference, image: NormalisedImage) -> Reference:
    notes = list(image.notes)
    updates: dict[str, Any] = {}
    if found.archived_at is not None:
        updates["archived_at"] = None
        notes.append("was archived: restored")
    moved = found.storage_backend != storage.backend
    if moved or not storage.exists(found.storage_path):
        path = f"{_slug(found.owner or 'team')}/{found.id}.{image.ext}"
        stored = storage.put(path, image.data, image.content_type, overwrite=not moved)
        updates.update(storage_backend=storage.backend, storage_path=path, public_url=stored.public_url)
        notes.append(f"moved from {found.storage_backend} to {storage.backend} storage" if moved
                     else "stored file was missing: stored again")
    if updates:
        found = st.update_reference(found.id, **updates)
    return dataclasses.replace(found, notes=tuple(notes), existing=True)


def _discard(storage: Storage, path: str) -> None:
    try:
        storage.delete(path)
    except Exception:  # the caller's error is the one to report
        log.warning("could not delete %s:%s after a failed upload", storage.backend, path)


def _slug(owner: str | None) -> str:
    slug = re.sub(r"[^a-z0-9_-]+", "-", (owner or "").lower()).strip("-")[:64]
    return slug or "team"
