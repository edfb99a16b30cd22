"""Where image bytes live: a local folder, or a public Supabase Storage bucket; and the journal
of objects that may still need deleting.

One small interface (`Storage`) for reference photos and result images.

Invariants:
- `put` is all-or-nothing as far as the backend lets it be: after a failure there is no object
  at the path (local: a temp file in the same folder, then an atomic link/rename; Supabase: the
  server stores an upload only when it is complete, and an answer lost in transit is followed
  by a delete). A delete the backend refuses or ignores is written to the cleanup journal, so
  nothing is silently orphaned.
- Writes never need to replace anything: callers give every write a fresh path
  (`unique_path`). `put` refuses an existing path unless `overwrite=True`, and on Supabase an
  overwrite (an upsert) works only with the service-role key: a key with an insert policy and
  no update policy is refused every upsert, even to a new path.
- A delete is only trusted when the object is gone afterwards: Supabase answers a delete that
  row-level security filtered out with 200 `[]`, exactly like a delete of nothing.
- Paths are relative, "/"-separated, without empty, "." or ".." segments; on Supabase also
  only the characters its server accepts in object keys (ASCII; see `_SUPABASE_KEY`).
- Supabase objects are uploaded with their real content type (without it Supabase serves
  `text/plain`) and `upsert` as the string "true"/"false" (a bool crashes inside httpx).
- The bucket must be public: fal fetches reference photos by their public URL. It is created
  (public) when missing and the key may create buckets, also when it disappears while the
  process runs (deleted, or SUPABASE_BUCKET changed).
- Every failure is a `StorageError` subclass whose message says what to do; no message ever
  contains the Supabase key, nor any part of it, even when the server echoes it back.

The cleanup journal (`<data dir>/storage-cleanup.jsonl`, one JSON object per line) holds two
kinds of entries: "delete" (an object that must go but the backend kept: a refused or no-op
delete, or an upload whose answer was lost) and "unconfirmed" (an object written before the
row that names it; resolved once the row exists). `sweep` retries the first kind and deletes
the second kind when, after a grace period, no row names the object. Appends and rewrites
take an exclusive lock on a sibling `.lock` file, so several processes can share the journal.
"""
from __future__ import annotations

import base64
import fcntl
import json
import logging
import os
import re
import secrets
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

from core._imports import hidden

with hidden("click"):   # httpx's command-line client, unused (core/_imports.py)
    import httpx

from core.errors import (
    BucketNotFound,
    ObjectExists,
    ObjectTooLarge,
    StorageError,
    StoragePermissionError,
    UnsupportedContentType,
)

if TYPE_CHECKING:
    from core.config import Settings

log = logging.getLogger(__name__)

# Object paths are never reused for other content: let CDNs and fal keep them a year.
CACHE_CONTROL = "31536000"
JOURNAL_NAME = "storage-cleanup.jsonl"
# An "unconfirmed" object younger than this may belong to an upload still in progress in
# another process (an upload times out after 30 s; its row follows at once).
UNCONFIRMED_GRACE_S = 15 * 60
# Supabase Storage's own check of object keys (storage-api `isValidKey`): ASCII word characters
# and a few punctuation marks. Anything else ("é") is refused by the server with InvalidKey.
_SUPABASE_KEY = re.compile(r"^(\w|/|!|-|\.|\*|'|\(|\)| |&|\$|@|=|;|:|\+|,|\?)*$", re.ASCII)


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


def open_storage(settings: Settings) -> Storage:
    """Supabase when SUPABASE_URL and SUPABASE_KEY are set, else the local images folder; both
    keep their cleanup journal in the data directory."""
    journal = CleanupJournal(settings.data_dir / JOURNAL_NAME)
    if settings.storage_backend == "supabase":
        assert settings.supabase_url and settings.supabase_key
        return SupabaseStorage(settings.supabase_url, settings.supabase_key, settings.supabase_bucket,
                               journal=journal)
    return LocalStorage(settings.images_dir, journal=journal)


def unique_path(stem: str, ext: str) -> str:
    """`<stem>-<random>.<ext>`: a path no earlier write used, so a write never needs to overwrite
    (which a Supabase key without an UPDATE policy may not do)."""
    return f"{stem}-{secrets.token_hex(6)}.{ext.lstrip('.')}"


def _check_path(path: str) -> str:
    parts = path.split("/")
    if (not path or path.startswith("/") or "\\" in path or "\x00" in path
            or any(p in ("", ".", "..") for p in parts)):
        raise ValueError(f"invalid storage path {path!r}: use relative 'folder/name.ext' segments")
    return path


# -- cleanup journal -----------------------------------------------------------------------------

@dataclass(frozen=True)
class JournalEntry:
    id: str
    at: float                 # unix time the entry was written
    location: str             # the storage it belongs to (`Storage.location`)
    path: str
    kind: str                 # "delete" | "unconfirmed"
    tag: str                  # who wrote it ("reference", ...): which table may name the object
    reason: str


@dataclass(frozen=True)
class SweepReport:
    deleted: tuple[str, ...]      # objects deleted now
    kept: tuple[str, ...]         # confirmed: a row names them
    left: tuple[JournalEntry, ...]  # still pending (refused again, or too recent)


class CleanupJournal:
    """Objects that may be orphaned, as JSON lines. See the module docstring."""

    def __init__(self, path: Path | str):
        self.path = Path(path)

    def __repr__(self) -> str:
        return f"CleanupJournal({str(self.path)!r})"

    @contextmanager
    def _locked(self) -> Iterator[None]:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.path.with_name(self.path.name + ".lock"), "a") as lock:
            fcntl.flock(lock.fileno(), fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(lock.fileno(), fcntl.LOCK_UN)

    def _append(self, record: dict[str, Any]) -> None:
        line = (json.dumps(record, ensure_ascii=False, sort_keys=True) + "\n").encode("utf-8")
        with self._locked(), open(self.path, "a+b") as f:
            if f.tell() > 0:
                f.seek(-1, os.SEEK_END)
                if f.read(1) != b"\n":  # a line torn by a crash: do not glue this one to it
                    line = b"\n" + line
            f.write(line)
            f.flush()
            os.fsync(f.fileno())  # an intent must survive the crash it is there for

    def add(self, location: str, path: str, kind: str, *, tag: str = "", reason: str = "") -> str:
        """Record an object that may need deleting; returns the entry id (for `resolve`)."""
        assert kind in ("delete", "unconfirmed"), kind
        entry = JournalEntry(uuid.uuid4().hex, time.time(), location, path, kind, tag, reason)
        self._append(asdict(entry))
        return entry.id

    def resolve(self, entry_id: str) -> None:
        """The entry needs nothing more (its row exists, or its object is gone)."""
        self._append({"resolved": entry_id, "at": time.time()})

    def _read(self) -> list[dict[str, Any]]:
        try:
            text = self.path.read_text(encoding="utf-8")
        except FileNotFoundError:
            return []
        records = []
        for line in text.splitlines():
            try:
                record = json.loads(line)
            except ValueError:
                continue  # a line torn by a crash mid-write: the rest is still good
            if isinstance(record, dict):
                records.append(record)
        return records

    def pending(self, location: str | None = None) -> list[JournalEntry]:
        """Unresolved entries, oldest first (of one storage when `location` is given)."""
        records = self._read()
        resolved = {r["resolved"] for r in records if "resolved" in r}
        out = []
        for r in records:
            if "resolved" in r or r.get("id") in resolved:
                continue
            try:
                entry = JournalEntry(**{k: r[k] for k in JournalEntry.__dataclass_fields__})
            except (KeyError, TypeError):
                continue
            if location is None or entry.location == location:
                out.append(entry)
        return out

    def compact(self) -> None:
        """Rewrite the file with only the unresolved entries (atomically, under the lock)."""
        with self._locked():
            records = self._read()
            resolved = {r["resolved"] for r in records if "resolved" in r}
            keep = [r for r in records if "resolved" not in r and r.get("id") not in resolved]
            if len(keep) == len(records):
                return
            if not keep:
                self.path.unlink(missing_ok=True)
                return
            tmp = self.path.with_name(self.path.name + ".tmp")
            tmp.write_text("".join(json.dumps(r, ensure_ascii=False, sort_keys=True) + "\n" for r in keep),
                           encoding="utf-8")
            os.replace(tmp, self.path)


def sweep(storage: Storage, *, is_named: Mapping[str, Callable[[str], bool]] | None = None,
          grace_s: float = UNCONFIRMED_GRACE_S) -> SweepReport:
    """Settle this storage's journal entries.

    "delete" entries are deleted again. An "unconfirmed" entry older than `grace_s` is resolved
    when `is_named[entry.tag](path)` says a row names the object, and deleted otherwise; one
    whose tag has no predicate is left alone. An entry whose delete is refused again stays for
    a later sweep.
    """
    journal = storage.journal
    if journal is None or not journal.path.exists():
        return SweepReport((), (), ())
    is_named = is_named or {}
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


def _record(storage: Storage, path: str, reason: str) -> str | None:
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


# -- local ---------------------------------------------------------------------------------------

PARTIAL_GRACE_S = 600.0   # a temporary file older than this belongs to no write still running


def remove_partial_writes(folder: Path, *, patterns: tuple[str, ...] = (".*.part", ".*.tmp"),
                          older_than_s: float = PARTIAL_GRACE_S, recursive: bool = True) -> list[Path]:
    """Delete the temporary files a killed write left in `folder` (`.<name>.part` of an image,
    `.<name>.tmp` of an export), those older than `older_than_s`; the paths removed. A file
    still being written by a live process is younger than the grace and left alone."""
    removed: list[Path] = []
    cutoff = time.time() - older_than_s
    for pattern in patterns:
        try:
            found = list(folder.rglob(pattern) if recursive else folder.glob(pattern))
        except OSError:
            continue
        for path in found:
            try:
                if path.is_file() and path.stat().st_mtime < cutoff:
                    path.unlink()
                    removed.append(path)
            except OSError:
                continue
    return removed


class LocalStorage:
    """Files under `root` (normally `<data dir>/images`). Not reachable by fal: see `core.photos.references.fal_url`."""

    backend = "local"

    def __init__(self, root: Path | str, *, journal: CleanupJournal | None = None):
        self.root = Path(root)
        self.journal = journal

    def __repr__(self) -> str:
        return f"LocalStorage({str(self.root)!r})"

    def close(self) -> None:
        """Nothing to release (the Supabase backend closes its HTTP client)."""

    @property
    def location(self) -> str:
        return f"local:{self.root.resolve()}"

    def _file(self, path: str) -> Path:
        return self.root / _check_path(path)

    def put(self, path: str, data: bytes, content_type: str, *, overwrite: bool = False) -> StoredObject:
        target = self._file(path)
        tmp: str | None = None
        try:
            target.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=".", suffix=".part")
            with os.fdopen(fd, "wb") as f:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
            os.chmod(tmp, 0o644)
            if overwrite:
                os.replace(tmp, target)
                tmp = None
            else:
                # link() fails when the target exists: create-if-absent in one atomic step
                os.link(tmp, target)
        except FileExistsError:
            raise ObjectExists(f"{path} already exists in local storage ({self.root}); "
                               "stored objects are never replaced silently.") from None
        except OSError as e:
            raise StorageError(f"could not write {path} under {self.root} ({e.strerror or e}); "
                               "check free disk space and that the data directory is writable.") from None
        finally:
            if tmp is not None:
                try:
                    os.unlink(tmp)
                except FileNotFoundError:
                    pass
        return StoredObject(self.backend, path, content_type, len(data), None)

    def get(self, path: str) -> bytes:
        try:
            return self._file(path).read_bytes()
        except FileNotFoundError:
            raise StorageError(f"no stored object {path} under {self.root}: it was deleted, or "
                               "DASHBOARD_DATA_DIR points at another data directory.") from None
        except OSError as e:
            raise StorageError(f"could not read {path} under {self.root} ({e.strerror or e}).") from None

    def try_delete(self, path: str) -> bool:
        try:
            self._file(path).unlink(missing_ok=True)
        except OSError as e:
            raise StorageError(f"could not delete {path} under {self.root} ({e.strerror or e}).") from None
        return True

    def delete(self, path: str) -> None:
        try:
            self.try_delete(path)
        except StorageError as e:
            journal = _record(self, path, str(e))
            if journal:
                raise StorageError(f"{e} It is recorded in {journal}; `python -m core reference cleanup` "
                                   "deletes it later.") from None
            raise

    def exists(self, path: str) -> bool:
        return self._file(path).is_file()

    def public_url(self, path: str) -> str | None:
        return None


# -- Supabase ------------------------------------------------------------------------------------

class SupabaseStorage:
    """A public Supabase Storage bucket, through the official `supabase` client."""

    backend = "supabase"

    def __init__(self, url: str, key: str, bucket: str, *, create_bucket: bool = True,
                 timeout: float = 30.0, journal: CleanupJournal | None = None):
        # Imported here: the client is heavy and only needed when Supabase is configured.
        from supabase import create_client
        from supabase.lib.client_options import SyncClientOptions

        self.url = url.rstrip("/")
        self.bucket = bucket
        self.create_bucket = create_bucket
        self.journal = journal
        self._key = key
        # Our own httpx client: the default path passes deprecated timeout/verify arguments to
        # storage3 (DeprecationWarning) and opens HTTP/2 connections we do not need.
        self._http = httpx.Client(timeout=timeout)
        try:
            self._client = create_client(self.url, key, options=SyncClientOptions(httpx_client=self._http))
        except Exception as e:  # the client validates URL and key itself; its words may quote the key
            self._http.close()
            raise StorageError(self._clean(f"cannot use SUPABASE_URL/SUPABASE_KEY ({e}); check both.")) from None
        self._bucket_ready = False
        self._create_refused = False
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return f"SupabaseStorage({self.url!r}, bucket={self.bucket!r})"

    @property
    def location(self) -> str:
        return f"supabase:{self.url}/{self.bucket}"

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> SupabaseStorage:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    @property
    def _files(self) -> Any:
        return self._client.storage.from_(self.bucket)

    def _check(self, path: str) -> str:
        _check_path(path)
        if not _SUPABASE_KEY.match(path):
            raise ValueError(f"invalid Supabase object key {path!r}: Supabase accepts only ASCII "
                             "letters, digits and a few punctuation marks")
        return path

    def ensure_bucket(self) -> None:
        """Check the bucket exists and is public; create it (public) when missing and allowed.

        A key restricted by row-level security (the anon key with an insert policy, as the old
        system used) may neither see nor create buckets yet still upload: when creating is
        refused, the upload itself is tried and its own error, if any, is reported.
        """
        if self._bucket_ready:
            return
        with self._lock:
            if self._bucket_ready:
                return
            bucket = self._get_bucket()
            if bucket is None:
                if not self.create_bucket:
                    raise BucketNotFound(self._no_bucket_message())
                if not self._create_bucket():
                    self._create_refused = True
                    self._bucket_ready = True  # unverified: let the upload answer
                    return
                bucket = self._get_bucket()
                if bucket is None:
                    raise BucketNotFound(self._no_bucket_message())
            if not bucket.public:
                raise StorageError(
                    f"Supabase bucket '{self.bucket}' is private, but fal fetches reference photos "
                    "by public URL: make the bucket public (Storage > bucket > Edit) or set "
                    "SUPABASE_BUCKET to a public bucket.")
            self._bucket_ready = True

    def _get_bucket(self) -> Any:
        try:
            return self._call(lambda: self._client.storage.get_bucket(self.bucket), "read")
        except BucketNotFound:
            return None

    def _create_bucket(self) -> bool:
        """True when the bucket now exists; False when this key may not create buckets."""
        from storage3.exceptions import StorageApiError

        try:
            self._client.storage.create_bucket(self.bucket, options={"public": True})
            log.info("created public Supabase bucket %s", self.bucket)
        except StorageApiError as e:
            if str(e.status) == "409":
                return True  # created meanwhile by another process: fine
            if str(e.status) == "403":
                log.info("SUPABASE_KEY may not create bucket %s; trying the upload anyway", self.bucket)
                return False
            raise self._map(e, "create the bucket") from None
        except httpx.HTTPError as e:
            raise self._transport(e) from None
        return True

    def put(self, path: str, data: bytes, content_type: str, *, overwrite: bool = False) -> StoredObject:
        self._check(path)
        self.ensure_bucket()
        try:
            self._upload(path, data, content_type, overwrite)
        except BucketNotFound:
            if self._create_refused or not self.create_bucket:
                raise
            # The bucket was there when first checked and is gone now (deleted in the dashboard,
            # or another process switched SUPABASE_BUCKET): create it again, once.
            log.info("Supabase bucket %s disappeared; checking it again", self.bucket)
            self._bucket_ready = False
            self.ensure_bucket()
            self._upload(path, data, content_type, overwrite)
        return StoredObject(self.backend, path, content_type, len(data), self.public_url(path))

    def _upload(self, path: str, data: bytes, content_type: str, overwrite: bool) -> None:
        from storage3.exceptions import StorageApiError

        options = {"content-type": content_type, "cache-control": CACHE_CONTROL,
                   "upsert": "true" if overwrite else "false"}
        try:
            self._files.upload(path, data, options)
        except StorageApiError as e:
            if overwrite and str(e.status) == "403":
                raise StoragePermissionError(self._clean(
                    f"SUPABASE_KEY may not replace {path} in bucket '{self.bucket}' (Supabase answered "
                    f"403 {e.code}: {e.message}): an upsert needs SELECT, INSERT and UPDATE storage "
                    "policies, or the service-role key. Write to a new path instead.")) from None
            raise self._map(e, "upload", path=path, size=len(data), content_type=content_type) from None
        except (httpx.ReadTimeout, httpx.ReadError, httpx.RemoteProtocolError) as e:
            # the request went out but its answer did not come back: it may have been stored
            self._forget(path, f"the answer to its upload was lost ({type(e).__name__})")
            raise self._transport(e) from None
        except httpx.HTTPError as e:
            raise self._transport(e) from None

    def _forget(self, path: str, reason: str) -> None:
        """An upload may have landed without us knowing: delete it, or journal it for later."""
        try:
            if self.try_delete(path):
                return
            reason += "; SUPABASE_KEY may not delete it"
        except Exception as e:  # the original error is what the user must see
            reason += f"; deleting it failed too ({e})"
        _record(self, path, self._clean(reason))

    def get(self, path: str) -> bytes:
        self._check(path)
        return self._call(lambda: self._files.download(path), "download", path=path)

    def try_delete(self, path: str) -> bool:
        """True when the object is gone afterwards. Supabase answers a delete that row-level
        security filtered out with 200 `[]`, like a delete of nothing: look again to tell."""
        self._check(path)
        rows = self._call(lambda: self._files.remove([path]), "delete", path=path)
        if any(isinstance(r, dict) and r.get("name") == path for r in rows or []):
            return True
        return not self.exists(path)

    def delete(self, path: str) -> None:
        if self.try_delete(path):
            return
        journal = _record(self, path, "SUPABASE_KEY may not delete it (Supabase answered 200 [])")
        where = (f"; it is recorded in {journal} and `python -m core reference cleanup`, run with "
                 "a key that may delete, removes it" if journal else "")
        raise StoragePermissionError(
            f"Supabase kept {path} in bucket '{self.bucket}': SUPABASE_KEY has no DELETE storage "
            f"policy (Supabase answers such a delete with 200 and an empty list){where}.")

    def exists(self, path: str) -> bool:
        self._check(path)
        try:
            return bool(self._call(lambda: self._files.exists(path), "check", path=path))
        except BucketNotFound:
            return False  # no bucket, no object: a later put creates the bucket when it may

    def public_url(self, path: str) -> str | None:
        return self._files.get_public_url(self._check(path))

    # -- errors ----------------------------------------------------------------------------------

    def _call(self, fn: Any, action: str, **ctx: Any) -> Any:
        from storage3.exceptions import StorageApiError

        try:
            return fn()
        except StorageApiError as e:
            raise self._map(e, action, **ctx) from None
        except httpx.HTTPError as e:
            raise self._transport(e) from None

    def _transport(self, e: httpx.HTTPError) -> StorageError:
        return StorageError(self._clean(
            f"cannot reach Supabase Storage at {self.url} ({type(e).__name__}: {e}); "
            "check SUPABASE_URL and the network, then retry."))

    def _no_bucket_message(self) -> str:
        if self._create_refused:
            return (f"Supabase bucket '{self.bucket}' does not exist and SUPABASE_KEY may not create "
                    f"buckets: create a public bucket named '{self.bucket}' in the Supabase dashboard, "
                    "or use the service-role key.")
        return (f"Supabase bucket '{self.bucket}' does not exist: create it (public) in the Supabase "
                "dashboard, or set SUPABASE_BUCKET to an existing public bucket.")

    def _map(self, e: Any, action: str, *, path: str | None = None, size: int | None = None,
             content_type: str | None = None) -> StorageError:
        """A StorageError for a storage3 StorageApiError (`.status` a string, `.code` the
        body's `error` field), with what to do."""
        status, code, message = str(e.status), str(e.code), str(e.message)
        what = f"{path} in bucket '{self.bucket}'" if path else f"bucket '{self.bucket}'"
        detail = f"Supabase answered {status} {code}: {message}"
        if status == "403" or code == "InvalidJWT":
            text = (f"no permission to {action} {what} ({detail}). Check SUPABASE_KEY: it must be "
                    "this project's service-role key (or a key whose storage policies allow this).")
            return StoragePermissionError(self._clean(text))
        if status == "400" and "authorization" in message.lower():
            return StoragePermissionError(self._clean(
                f"Supabase received no key ({detail}). Check SUPABASE_KEY is set."))
        if status == "500" and code == "DatabaseError":
            return StoragePermissionError(self._clean(
                f"Supabase could not {action} {what} as the role in SUPABASE_KEY ({detail}). Check "
                "SUPABASE_KEY: use this project's service-role key."))
        if status == "404" and code == "Not Found":  # the web server's own 404: no such route
            return StorageError(self._clean(
                f"Supabase Storage has no such route ({detail}). Check SUPABASE_URL: it must be the "
                "project URL (https://<project>.supabase.co) without a path."))
        if status == "404":
            if "bucket" in (code + message).lower():
                return BucketNotFound(self._clean(self._no_bucket_message()))
            return StorageError(self._clean(f"no object {what} ({detail}): it was deleted, or "
                                            "SUPABASE_BUCKET names another bucket."))
        if status == "409":
            return ObjectExists(self._clean(f"{what} already exists ({detail}); stored objects are "
                                            "never replaced silently."))
        if status == "413":
            size_text = f" ({_human(size)})" if size is not None else ""
            return ObjectTooLarge(self._clean(
                f"{what}{size_text} is over the bucket's file size limit ({detail}). Raise the "
                "bucket's file size limit in Supabase, or lower DASHBOARD_MAX_LONG_EDGE."))
        if status == "415":
            return UnsupportedContentType(self._clean(
                f"bucket '{self.bucket}' does not accept {content_type or 'this type'} ({detail}). "
                "Add image/jpeg and image/png to the bucket's allowed MIME types, or remove the "
                "restriction."))
        return StorageError(self._clean(f"could not {action} {what} ({detail})."))

    def _clean(self, text: str) -> str:
        return mask_secret(text, self._key)


def mask_secret(text: str, secret: str | None) -> str:
    """`text` without `secret`, nor any long piece of it: a server may echo the key, or only the
    JWT's payload or signature, in an error message."""
    if not secret:
        return text
    text = text.replace(secret, "***")
    for piece in re.split(r"[.\s]", secret):
        if len(piece) >= 16:
            text = text.replace(piece, "***")
    return text


def _human(n: int) -> str:
    return f"{n / (1024 * 1024):.1f} MB" if n >= 100 * 1024 else f"{n / 1024:.1f} KB"
