"""The one interface for image bytes (`Storage`), the rules of object paths, and the sweep of the
clean-up journal that every backend shares.

Invariants (each backend keeps them):
- `put` is all-or-nothing as far as the backend lets it be: after a failure there is no object
  at the path. A delete the backend refuses or ignores is written to the clean-up journal, so
  nothing is silently orphaned.
- Writes never need to replace anything: callers give every write a fresh path
  (`unique_path`). `put` refuses an existing path unless `overwrite=True`.
- Paths are relative, "/"-separated, without empty, "." or ".." segments (`check_path`).
- Every failure is a `core.errors.StorageError` subclass whose message says what to do.
"""
from __future__ import annotations

import logging
import secrets
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

from core.blobs.journal import UNCONFIRMED_GRACE_S, CleanupJournal, JournalEntry, SweepReport
from core.errors import StorageError

log = logging.getLogger("core.blobs")

# Object paths are never reused for other content: let CDNs and fal keep them a year.
CACHE_CONTROL = "31536000"


@dataclass(frozen=True)
class StoredObject:
    backend: str
    path: str
    content_type: str
    size: int
    public_url: str | None


@runtime_checkable
class Storage(Protocol):
    backend: str
    journal: CleanupJournal | None

    @property
    def location(self) -> str: ...
    def put(self, path: str, data: bytes, content_type: str, *, overwrite: bool = False) -> StoredObject: ...
    def get(self, path: str) -> bytes: ...
    def delete(self, path: str) -> None: ...
    def try_delete(self, path: str) -> bool: ...
    def exists(self, path: str) -> bool: ...
    def public_url(self, path: str) -> str | None: ...
    def close(self) -> None: ...




def unique_path(stem: str, ext: str) -> str:
    """`<stem>-<random>.<ext>`: a path no earlier write used, so a write never needs to overwrite
    (which a Supabase key without an UPDATE policy may not do)."""
    return f"{stem}-{secrets.token_hex(6)}.{ext.lstrip('.')}"


def check_path(path: str) -> str:
    parts = path.split("/")
    if (not path or path.startswith("/") or "\\" in path or "\x00" in path
            or any(p in ("", ".", "..") for p in parts)):
        raise ValueError(f"invalid storage path {path!r}: use relative 'folder/name.ext' segments")
    return path


def sweep(storage: Storage, *, is_named: Mapping[str, Callable[[str], bool]] | None = None,
          grace_s: float = UNCONFIRMED_GRACE_S) -> SweepReport:
    """Settle this storage's journal entries.

    "delete" entries are deleted again. An "unconfirmed" entry older than `grace_s` is resolved
    when `is_named[entry.tag](path)` says a row names the object, and deleted otherwise; one
    whose tag has no predicate is left alone. An entry whose delete is refused again stays for
    a later sweep.
    """
    report = _sweep_one(storage, is_named or {}, grace_s)
    for inner in getattr(storage, "inner_storages", ()):   # supabase.TeamBuckets' results bucket
        more = sweep(inner, is_named=is_named, grace_s=grace_s)
        report = SweepReport(report.deleted + more.deleted, report.kept + more.kept, report.left + more.left)
    return report


def _sweep_one(storage: Storage, is_named: Mapping[str, Callable[[str], bool]], grace_s: float) -> SweepReport:
    journal = storage.journal
    if journal is None or not journal.path.exists():
        return SweepReport((), (), ())
    deleted: list[str] = []
    kept: list[str] = []
    left: list[JournalEntry] = []
    now = time.time()
    for entry in journal.pending(storage.location):
        if entry.kind == "unconfirmed":
            named = is_named.get(entry.tag)
            if named is None or now - entry.at < grace_s:
                left.append(entry)
                continue
            if named(entry.path):
                journal.resolve(entry.id)
                kept.append(entry.path)
                continue
        try:
            gone = storage.try_delete(entry.path)
        except (StorageError, ValueError) as e:
            log.warning("clean-up of %s:%s failed: %s", storage.backend, entry.path, e)
            gone = False
        if gone:
            journal.resolve(entry.id)
            deleted.append(entry.path)
        else:
            left.append(entry)
    try:
        journal.compact()
    except OSError as e:  # the resolutions are appended already; compacting can wait
        log.warning("could not compact %s: %s", journal.path, e)
    return SweepReport(tuple(deleted), tuple(kept), tuple(left))


def record_undeleted(storage: Storage, path: str, reason: str) -> str | None:
    """Journal a delete the backend did not do; returns the journal's file name, or None."""
    journal = storage.journal
    if journal is None:
        log.warning("%s:%s could not be deleted (%s) and there is no cleanup journal", storage.backend,
                    path, reason)
        return None
    try:
        journal.add(storage.location, path, "delete", reason=reason)
    except OSError as e:
        log.warning("could not journal %s:%s for clean-up (%s)", storage.backend, path, e)
        return None
    return str(journal.path)
