"""Image bytes in a Supabase Storage bucket, through the official `supabase` client: the public
bucket of reference photos, or the private one of result images (`public=False`).

Invariants:
- The server stores an upload only when it is complete, and an answer lost in transit is
  followed by a delete; a refused delete goes to the clean-up journal.
- On Supabase an overwrite (an upsert) works only with the service-role key: a key with an
  insert policy and no update policy is refused every upsert, even to a new path.
- A delete is only trusted when the object is gone afterwards: Supabase answers a delete that
  row-level security filtered out with 200 `[]`, exactly like a delete of nothing.
- Object keys are also limited to the characters its server accepts (ASCII; `_SUPABASE_KEY`).
- Objects are uploaded with their real content type (without it Supabase serves `text/plain`)
  and `upsert` as the string "true"/"false" (a bool crashes inside httpx).
- The references bucket must be public: fal fetches reference photos by their public URL; the
  results bucket must be private: its objects are read with the key, by the server only, and
  have no public URL. A bucket is created (public or private as it must be) when missing and
  the key may create buckets, also when it disappears while the process runs (deleted, or its
  setting changed).
- No message ever contains the Supabase key, nor any part of it, even when the server echoes it
  back (`core.redact.redact`).
"""
from __future__ import annotations

import logging
import re
import threading
from typing import Any

from core._imports import hidden

with hidden("click"):   # httpx's command-line client, unused (core/_imports.py)
    import httpx

from core.blobs.journal import CleanupJournal
from core.blobs.results import is_result_path
from core.blobs.storage import CACHE_CONTROL, Storage, StoredObject, check_path, record_undeleted
from core.errors import (
    BucketNotFound,
    ObjectExists,
    ObjectMissing,
    ObjectTooLarge,
    StorageError,
    StoragePermissionError,
    UnsupportedContentType,
)
from core.redact import redact

log = logging.getLogger("core.blobs")

# Supabase Storage's own check of object keys (storage-api `isValidKey`): ASCII word characters
# and a few punctuation marks. Anything else ("é") is refused by the server with InvalidKey.
_SUPABASE_KEY = re.compile(r"^(\w|/|!|-|\.|\*|'|\(|\)| |&|\$|@|=|;|:|\+|,|\?)*$", re.ASCII)


class SupabaseStorage:
    """A Supabase Storage bucket, through the official `supabase` client: public (references,
    named by SUPABASE_BUCKET) or private (`public=False`: results, SUPABASE_RESULTS_BUCKET)."""

    backend = "supabase"

    def __init__(self, url: str, key: str, bucket: str, *, create_bucket: bool = True,
                 timeout: float = 30.0, journal: CleanupJournal | None = None, public: bool = True,
                 setting: str = "SUPABASE_BUCKET"):
        # Imported here: the client is heavy and only needed when Supabase is configured.
        from supabase import create_client
        from supabase.lib.client_options import SyncClientOptions

        self.url = url.rstrip("/")
        self.bucket = bucket
        self.create_bucket = create_bucket
        self.public = public
        self.setting = setting   # the setting that names this bucket, for messages
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
        return f"SupabaseStorage({self.url!r}, bucket={self.bucket!r}{'' if self.public else ', private'})"

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
        check_path(path)
        if not _SUPABASE_KEY.match(path):
            raise ValueError(f"invalid Supabase object key {path!r}: Supabase accepts only ASCII "
                             "letters, digits and a few punctuation marks")
        return path

    def ensure_bucket(self) -> None:
        """Check the bucket exists and is public (private for results); create it so when
        missing and allowed.

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
            if self.public and not bucket.public:
                raise StorageError(
                    f"Supabase bucket '{self.bucket}' is private, but fal fetches reference photos "
                    "by public URL: make the bucket public (Storage > bucket > Edit) or set "
                    "SUPABASE_BUCKET to a public bucket.")
            if not self.public and bucket.public:
                raise StorageError(
                    f"Supabase bucket '{self.bucket}' is public, so anyone with a link could see the "
                    f"result images kept in it: make it private (Storage > bucket > Edit) or set "
                    f"{self.setting} to a private bucket.")
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
            self._client.storage.create_bucket(self.bucket, options={"public": self.public})
            log.info("created %s Supabase bucket %s", "public" if self.public else "private", self.bucket)
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
        record_undeleted(self, path, self._clean(reason))

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
        journal = record_undeleted(self, path, "SUPABASE_KEY may not delete it (Supabase answered 200 [])")
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
        """The object's public URL; None in a private bucket, whose objects have none."""
        self._check(path)
        return self._files.get_public_url(path) if self.public else None

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
        kind = "public" if self.public else "private"
        if self._create_refused:
            return (f"Supabase bucket '{self.bucket}' does not exist and SUPABASE_KEY may not create "
                    f"buckets: create a {kind} bucket named '{self.bucket}' in the Supabase dashboard, "
                    "or use the service-role key.")
        return (f"Supabase bucket '{self.bucket}' does not exist: create it ({kind}) in the Supabase "
                f"dashboard, or set {self.setting} to an existing {kind} bucket.")

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
            return ObjectMissing(self._clean(f"no object {what} ({detail}): it was deleted, or "
                                             f"{self.setting} names another bucket."))
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
        return redact(text, [self._key])


def _human(n: int) -> str:
    return f"{n / (1024 * 1024):.1f} MB" if n >= 100 * 1024 else f"{n / 1024:.1f} KB"


class TeamBuckets(SupabaseStorage):
    """The references bucket (public), keeping result images in `results` instead: a private
    bucket with a local cache (`core.blobs.results.CachedResults`). A path goes by its shape
    (`is_result_path`), so callers keep one `Storage` for both kinds of image."""

    def __init__(self, url: str, key: str, bucket: str, *, results: Storage, **options: Any):
        super().__init__(url, key, bucket, **options)
        self.results = results
        self.inner_storages = (results,)   # its journal entries are swept with ours (`storage.sweep`)

    def __repr__(self) -> str:
        return f"TeamBuckets({self.url!r}, bucket={self.bucket!r}, results={self.results!r})"

    def close(self) -> None:
        try:
            self.results.close()
        finally:
            super().close()

    def put(self, path: str, data: bytes, content_type: str, *, overwrite: bool = False) -> StoredObject:
        if is_result_path(path):
            return self.results.put(path, data, content_type, overwrite=overwrite)
        return super().put(path, data, content_type, overwrite=overwrite)

    def get(self, path: str) -> bytes:
        return self.results.get(path) if is_result_path(path) else super().get(path)

    def try_delete(self, path: str) -> bool:
        return self.results.try_delete(path) if is_result_path(path) else super().try_delete(path)

    def delete(self, path: str) -> None:
        if is_result_path(path):
            self.results.delete(path)
        else:
            super().delete(path)

    def exists(self, path: str) -> bool:
        return self.results.exists(path) if is_result_path(path) else super().exists(path)

    def public_url(self, path: str) -> str | None:
        return self.results.public_url(path) if is_result_path(path) else super().public_url(path)
