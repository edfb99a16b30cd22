"""Reference photos: upload (checked, normalised, deduplicated) and the URL each one becomes in a
stored payload and in what fal receives. Rows are read, listed and archived through the Store
(`Store.get_reference`, `Store.list_references`, `Store.archive_reference`).

Invariants:
- A reference is a row in `reference_photos` plus one stored object at `<owner>/<id>.<ext>`
  (the old system's `user_id/uuid.jpg` layout; a photo stored again gets
  `<owner>/<id>-<random>.<ext>`). Every write goes to a path never used before, so no write needs
  to overwrite (a Supabase key without an UPDATE policy may not).
- The object is written first, then the row. Before the write an "unconfirmed" entry goes into
  the storage's cleanup journal; it is resolved once the row exists. If the row cannot be
  written the object is deleted again (or, when the backend refuses, journaled for deletion);
  if the process dies between the two, `sweep_orphans` (run on the first upload of a later
  process, and by `python -m core reference cleanup`) finds the object named by no row and
  deletes it. A refused file leaves neither.
- `sha256` is that of the STORED (normalised) bytes; it is unique: the same photo uploaded again
  returns the existing reference (`existing=True`) and stores nothing new. Re-uploading an
  archived photo restores it; re-uploading one whose object went missing (or that lives in the
  other backend) stores it again under the same id.
- Stored payloads carry `payload_url(ref)`: the public URL for Supabase, `reference://<id>` for
  local storage. The `data:` URI fal needs for a local photo is built only at send time
  (`fal_url`, `resolve_payload`) from the stored bytes, after checking their sha256; it is never
  written to the database or to a log.
- Before a batch sends, `check_reachable` fetches the start of each reference's public URL the
  way fal will (no credentials): a bucket switched to private, a deleted object or a non-image
  answer stops the batch instead of making fal bill jobs that cannot see the photo.
"""
from __future__ import annotations

import base64
import dataclasses
import hashlib
import json
import logging
import re
from typing import Any

from core._imports import hidden

with hidden("click"):   # httpx's command-line client, unused (core/_imports.py)
    import httpx

from core.config import Settings, load_settings
from core.values import new_id, now
from core.values import REFERENCE_ROLES, Reference  # Reference: importable here too
from core.errors import StorageError, StoreError, UploadRejected
from core.photos.images import NormalisedImage, normalise_upload
from core.catalog.payloads import REFERENCE_SCHEME, reference_token
from core.blobs.journal import SweepReport
from core.blobs.storage import Storage, sweep, unique_path

from core.store import Store

log = logging.getLogger(__name__)

JOURNAL_TAG = "reference"
# A reachability check is one small GET per photo before money is spent: keep it short.
REACHABLE_TIMEOUT_S = 5.0
_SWEPT: set[str] = set()    # journals already swept by this process (one sweep per process)


def add_reference(store: Store, storage: Storage, data: bytes, *, role: str = "other",
                  filename: str | None = None, owner: str = "team", created_by: str | None = None,
                  settings: Settings | None = None) -> Reference:
    """Check, normalise and store a photo; the same photo again returns the existing reference."""
    if role not in REFERENCE_ROLES:
        raise UploadRejected("invalid_role", f"role {role!r} is not one of {', '.join(REFERENCE_ROLES)}.")
    settings = settings or load_settings()
    image = normalise_upload(data, filename=filename, max_bytes=settings.max_upload_bytes,
                             max_long_edge=settings.max_long_edge)
    _sweep_once(store, storage)
    found = store.reference_by_sha(image.sha256)
    if found is not None:
        return _reuse(store, storage, found, image)

    reference_id = new_id()
    path = f"{_slug(owner)}/{reference_id}.{image.ext}"
    intent = _intend(storage, path)
    try:
        stored = storage.put(path, image.data, image.content_type)
    except BaseException:
        _settle(storage, intent)  # put is all-or-nothing (or journaled its own clean-up)
        raise
    ref = Reference(
        id=reference_id, sha256=image.sha256, role=role, owner=owner or "team",
        original_name=filename, content_type=image.content_type, width=image.width,
        height=image.height, size_bytes=len(image.data), storage_backend=storage.backend,
        storage_path=path, public_url=stored.public_url, created_at=now(),
        created_by=created_by, archived_at=None)
    try:
        written = store.insert_reference(ref)
    except BaseException:
        _discard(storage, path, intent)
        raise
    if written is None:
        # another upload of the same photo won the race: keep its row, drop our copy
        _discard(storage, path, intent)
        winner = store.reference_by_sha(image.sha256)
        if winner is None:
            raise StoreError(f"could not record reference photo {filename or ''}; nothing was kept, "
                             "try again.")
        return dataclasses.replace(winner, notes=(), existing=True)
    _settle(storage, intent)
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


def resolve_payload(payload: dict, store: Store, storage: Storage) -> dict:
    """A copy of `payload` with every `reference://<id>` replaced by `fal_url(...)` (send time only)."""
    cache: dict[str, str] = {}

    def walk(obj: Any) -> Any:
        if isinstance(obj, str) and obj.startswith(REFERENCE_SCHEME):
            reference_id = obj[len(REFERENCE_SCHEME):]
            if reference_id not in cache:
                cache[reference_id] = fal_url(store.get_reference(reference_id), storage)
            return cache[reference_id]
        if isinstance(obj, dict):
            return {k: walk(v) for k, v in obj.items()}
        if isinstance(obj, (list, tuple)):
            return [walk(v) for v in obj]
        return obj

    return walk(payload)


def sweep_orphans(store: Store, storage: Storage, *, grace_s: float | None = None) -> SweepReport:
    """Settle the storage's cleanup journal: retry deletes the backend refused before, and delete
    reference objects written by a process that died before their row existed (once they are
    older than the grace period and no row names them)."""
    kwargs = {} if grace_s is None else {"grace_s": grace_s}
    return sweep(storage, is_named={JOURNAL_TAG: lambda path: store.reference_path_named(storage.backend, path)},
                 **kwargs)


def check_reachable(reference: Reference, storage: Storage, *, timeout: float = REACHABLE_TIMEOUT_S,
                    client: httpx.Client | None = None) -> None:
    """Raise StorageError unless fal can fetch this reference: its public URL (the one stored in
    payloads) answers, without credentials, with image bytes. Local references (sent as data:
    URIs) need their stored file. One small ranged GET per call; pass `client` to reuse
    connections across a batch's references."""
    name = f"reference photo {reference.original_name or reference.id} ({reference.id})"
    if reference.storage_backend != storage.backend:
        raise StorageError(
            f"{name} is stored in {reference.storage_backend} storage but the dashboard now uses "
            f"{storage.backend} storage: upload the photo again to copy it over, then retry.")
    url = reference.public_url or storage.public_url(reference.storage_path)
    if not url:
        if not storage.exists(reference.storage_path):
            raise StorageError(f"{name}: its stored file {reference.storage_path} is missing: upload "
                               "the photo again, then retry. Nothing was sent.")
        return
    http = client or httpx.Client(timeout=timeout)
    try:
        with http.stream("GET", url, headers={"Range": "bytes=0-63"}, timeout=timeout) as response:
            status = response.status_code
            content_type = response.headers.get("content-type", "").split(";")[0].strip().lower()
            head = b""
            if status in (200, 206):
                for chunk in response.iter_bytes():
                    head += chunk
                    if len(head) >= 64:
                        break
            else:
                head = response.read()[:4096]
    except httpx.HTTPError as e:
        raise StorageError(f"{name}: its public URL {url} did not answer ({type(e).__name__}); fal "
                           "could not fetch it either. Check SUPABASE_URL and the network, then retry. "
                           "Nothing was sent.") from None
    finally:
        if client is None:
            http.close()
    if status in (200, 206):
        if not content_type.startswith("image/") or not _looks_like_image(head):
            raise StorageError(
                f"{name}: its public URL {url} answers {content_type or 'no content type'}, not an "
                "image, so fal would not see the photo. Upload the photo again, then retry. "
                "Nothing was sent.")
        return
    code = _storage_error_code(head)
    bucket = getattr(storage, "bucket", "the bucket")
    if "nosuchbucket" in code or "bucket not found" in code:
        raise StorageError(
            f"{name}: its public URL {url} is refused (bucket '{bucket}' is private or gone), so "
            "fal could not see the photo. Make the bucket public in Supabase (Storage > bucket > "
            "Edit > Public bucket), or upload the photo again, then retry. Nothing was sent.")
    if "not_found" in code or "nosuchkey" in code:
        raise StorageError(
            f"{name}: its stored file is missing from bucket '{bucket}' ({url}). Upload the photo "
            "again, then retry. Nothing was sent.")
    raise StorageError(f"{name}: its public URL {url} answers HTTP {status}, so fal could not fetch "
                       "it. Check the bucket in Supabase, then retry. Nothing was sent.")


# -- helpers -------------------------------------------------------------------------------------

def _sweep_once(store: Store, storage: Storage) -> None:
    """The first upload of a process settles what earlier processes left (never fails it)."""
    journal = getattr(storage, "journal", None)
    if journal is None:
        return
    key = f"{journal.path}|{storage.location}"
    if key in _SWEPT:
        return
    _SWEPT.add(key)
    try:
        report = sweep_orphans(store, storage)
    except Exception as e:  # clean-up must never stop an upload
        log.warning("clean-up of earlier uploads failed: %s", e)
        return
    if report.deleted or report.left:
        log.info("storage clean-up: %d deleted, %d left", len(report.deleted), len(report.left))


def _storage_error_code(body: bytes) -> str:
    """The `error` and `code` of a Supabase Storage error body, lower-cased ('' if none)."""
    try:
        obj = json.loads(body)
    except ValueError:
        return ""
    if not isinstance(obj, dict):
        return ""
    return f"{obj.get('error', '')} {obj.get('code', '')} {obj.get('message', '')}".lower()


def _looks_like_image(head: bytes) -> bool:
    """Magic numbers of the formats a stored reference can be (JPEG, PNG; WebP, HEIC, GIF)."""
    return (head.startswith((b"\xff\xd8\xff", b"\x89PNG\r\n\x1a\n", b"GIF8"))
            or (head[:4] == b"RIFF" and head[8:12] == b"WEBP") or head[4:8] == b"ftyp")


def _reuse(store: Store, storage: Storage, found: Reference, image: NormalisedImage) -> Reference:
    # what was done to this upload is moot unless its bytes are stored again (below)
    notes: list[str] = []
    updates: dict[str, Any] = {}
    if found.archived_at is not None:
        updates["archived_at"] = None
        notes.append("was archived: restored")
    moved = found.storage_backend != storage.backend
    path = None
    intent = None
    if moved or not storage.exists(found.storage_path):
        # a fresh path: the old one may still exist where this key cannot see or replace it
        path = unique_path(f"{_slug(found.owner or 'team')}/{found.id}", image.ext)
        intent = _intend(storage, path)
        try:
            stored = storage.put(path, image.data, image.content_type)
        except BaseException:
            _settle(storage, intent)
            raise
        updates.update(storage_backend=storage.backend, storage_path=path, public_url=stored.public_url)
        notes.extend(image.notes)
        notes.append(f"moved from {found.storage_backend} to {storage.backend} storage" if moved
                     else "stored file was missing: stored again")
    if updates:
        try:
            found = store.update_reference(found.id, **updates)
        except BaseException:
            if path is not None:
                _discard(storage, path, intent)
            raise
    _settle(storage, intent)
    return dataclasses.replace(found, notes=tuple(notes), existing=True)


def _discard(storage: Storage, path: str, intent: str | None) -> None:
    """Delete an object whose row could not be written. When the backend refuses or fails, the
    journal's "unconfirmed" entry stays: `sweep_orphans` deletes the object later."""
    try:
        gone = storage.try_delete(path)
    except Exception as e:  # the caller's error is the one to report
        log.warning("could not delete %s:%s after a failed upload: %s", storage.backend, path, e)
        gone = False
    if gone:
        _settle(storage, intent)
    else:
        log.warning("%s:%s is left for clean-up%s", storage.backend, path,
                    " (journaled)" if intent else " (no journal: delete it by hand)")


def _intend(storage: Storage, path: str) -> str | None:
    """Journal the object about to be written before its row exists (None without a journal)."""
    journal = getattr(storage, "journal", None)
    if journal is None:
        return None
    try:
        return journal.add(storage.location, path, "unconfirmed", tag=JOURNAL_TAG,
                           reason="reference photo written before its row")
    except OSError as e:  # nothing is stored yet: refuse rather than risk an untracked orphan
        raise StorageError(f"could not write the storage cleanup journal {journal.path} "
                           f"({e.strerror or e}); check that the data directory is writable. "
                           "Nothing was stored.") from None


def _settle(storage: Storage, intent: str | None) -> None:
    if intent is None:
        return
    try:
        storage.journal.resolve(intent)
    except OSError as e:  # the sweep will find the row and resolve it then
        log.warning("could not update the cleanup journal: %s", e)


def _slug(owner: str | None) -> str:
    slug = re.sub(r"[^a-z0-9_-]+", "-", (owner or "").lower()).strip("-")[:64]
    return slug or "team"
