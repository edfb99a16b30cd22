"""Where image bytes live: a local folder, or a public Supabase Storage bucket.

One small interface (`Storage`) for reference photos now and result images later.

Invariants:
- `put` is all-or-nothing: after a failure there is no object at the path (local: a temp file
  in the same folder, then an atomic link/rename; Supabase: the server stores an upload only
  when it is complete, and an answer lost in transit is followed by a best-effort delete).
- `put` never replaces an existing object unless `overwrite=True` (paths carry a uuid, so a
  collision means a bug, not a new version).
- Paths are relative, "/"-separated, without empty, "." or ".." segments.
- Supabase objects are uploaded with their real content type (without it Supabase serves
  `text/plain`) and `upsert` as the string "true"/"false" (a bool crashes inside httpx).
- The bucket must be public: fal fetches reference photos by their public URL. It is created
  (public) on first use when missing and the key may create buckets.
- Every failure is a `StorageError` subclass whose message says what to do; no message ever
  contains the Supabase key.
"""
from __future__ import annotations

import base64
import logging
import os
import tempfile
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

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

# Object paths carry a uuid and never change content: let CDNs and fal keep them a year.
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

    def put(self, path: str, data: bytes, content_type: str, *, overwrite: bool = False) -> StoredObject: ...
    def get(self, path: str) -> bytes: ...
    def delete(self, path: str) -> None: ...
    def exists(self, path: str) -> bool: ...
    def public_url(self, path: str) -> str | None: ...
    def close(self) -> None: ...


def open_storage(settings: Settings) -> Storage:
    """Supabase when SUPABASE_URL and SUPABASE_KEY are set, else the local images folder."""
    if settings.storage_backend == "supabase":
        assert settings.supabase_url and settings.supabase_key
        return SupabaseStorage(settings.supabase_url, settings.supabase_key, settings.supabase_bucket)
    return LocalStorage(settings.images_dir)


def _check_path(path: str) -> str:
    parts = path.split("/")
    if (not path or path.startswith("/") or "\\" in path or "\x00" in path
            or any(p in ("", ".", "..") for p in parts)):
        raise ValueError(f"invalid storage path {path!r}: use relative 'folder/name.ext' segments")
    return path


# -- local ---------------------------------------------------------------------------------------

class LocalStorage:
    """Files under `root` (normally `<data dir>/images`). Not reachable by fal: see `core.photos.references.fal_url`."""

    backend = "local"

    def __init__(self, root: Path | str):
        self.root = Path(root)

    def __repr__(self) -> str:
        return f"LocalStorage({str(self.root)!r})"

    def close(self) -> None:
        """Nothing to release (the Supabase backend closes its HTTP client)."""

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

    def delete(self, path: str) -> None:
        try:
            self._file(path).unlink(missing_ok=True)
        except OSError as e:
            raise StorageError(f"could not delete {path} under {self.root} ({e.strerror or e}).") from None

    def exists(self, path: str) -> bool:
        return self._file(path).is_file()

    def public_url(self, path: str) -> str | None:
        return None


# -- Supabase ------------------------------------------------------------------------------------

class SupabaseStorage:
    """A public Supabase Storage bucket, through the official `supabase` client."""

    backend = "supabase"

    def __init__(self, url: str, key: str, bucket: str, *, create_bucket: bool = True,
                 timeout: float = 30.0):
        # Imported here: the client is heavy and only needed when Supabase is configured.
        from supabase import create_client
        from supabase.lib.client_options import SyncClientOptions

        self.url = url.rstrip("/")
        self.bucket = bucket
        self.create_bucket = create_bucket
        self._key = key
        # Our own httpx client: the default path passes deprecated timeout/verify arguments to
        # storage3 (DeprecationWarning) and opens HTTP/2 connections we do not need.
        self._http = httpx.Client(timeout=timeout)
        self._client = create_client(self.url, key, options=SyncClientOptions(httpx_client=self._http))
        self._bucket_ready = False
        self._create_refused = False
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return f"SupabaseStorage({self.url!r}, bucket={self.bucket!r})"

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> SupabaseStorage:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    @property
    def _files(self) -> Any:
        return self._client.storage.from_(self.bucket)

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
        from storage3.exceptions import StorageApiError

        _check_path(path)
        self.ensure_bucket()
        options = {"content-type": content_type, "cache-control": CACHE_CONTROL,
                   "upsert": "true" if overwrite else "false"}
        try:
            self._files.upload(path, data, options)
        except StorageApiError as e:
            raise self._map(e, "upload", path=path, size=len(data), content_type=content_type) from None
        except (httpx.ReadTimeout, httpx.ReadError, httpx.RemoteProtocolError) as e:
            # the request went out but its answer did not come back: it may have been stored
            self._forget(path)
            raise self._transport(e) from None
        except httpx.HTTPError as e:
            raise self._transport(e) from None
        return StoredObject(self.backend, path, content_type, len(data), self.public_url(path))

    def _forget(self, path: str) -> None:
        """The upload's answer was lost: it may have landed. Delete it so nothing half-done stays."""
        try:
            self._files.remove([path])
        except Exception:  # best effort; the original error is what the user must see
            log.warning("could not remove %s after a failed upload", path)

    def get(self, path: str) -> bytes:
        _check_path(path)
        return self._call(lambda: self._files.download(path), "download", path=path)

    def delete(self, path: str) -> None:
        _check_path(path)
        self._call(lambda: self._files.remove([path]), "delete", path=path)

    def exists(self, path: str) -> bool:
        _check_path(path)
        return bool(self._call(lambda: self._files.exists(path), "check", path=path))

    def public_url(self, path: str) -> str | None:
        return self._files.get_public_url(_check_path(path))

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
        status, code, message = str(e.status), str(e.code), str(e.message)
        what = f"{path} in bucket '{self.bucket}'" if path else f"bucket '{self.bucket}'"
        detail = f"Supabase answered {status} {code}: {message}"
        if status == "403" or code == "InvalidJWT" or (status == "400" and code in ("Error", "Unauthorized")):
            text = (f"no permission to {action} {what} ({detail}). Check SUPABASE_KEY: it must be "
                    "this project's service-role key (or a key whose storage policies allow this).")
            return StoragePermissionError(self._clean(text))
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
        return text.replace(self._key, "***") if self._key else text


def _human(n: int) -> str:
    return f"{n / (1024 * 1024):.1f} MB" if n >= 100 * 1024 else f"{n / 1024:.1f} KB"
