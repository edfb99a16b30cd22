"""Result images where every host can read them: with Supabase, in a private bucket, read by the
server and kept in a local cache; without it, in the local images folder as before.

Invariants:
- A result image's path is `results/<request id>/<file>` (`result_path`), three segments; a
  reference photo's is `<owner>/<file>`, two. Each path goes to its own bucket by
  that shape alone (`is_result_path`, in `supabase.TeamBuckets`), so every reader (pages,
  metrics, the grid, exports) keeps calling one `Storage` and rows keep `storage_backend`
  "supabase" and the path.
- The results bucket is private: a result has no public URL (`public_url` is None) and no page
  gets a URL for it; the server downloads the bytes with the key and hands them over. The key
  never leaves the server (messages go through `core.redact`, as in `SupabaseStorage`).
- A read looks in the local cache (`<data dir>/images`, the folder local storage uses) first,
  then in the bucket, and keeps what it downloaded: a second read on the same host is local. A
  write goes to the bucket first and to the cache only once the bucket has it; a cache that
  cannot be written only costs a later download.
- Results kept before this bucket existed went to the references bucket at the same paths: a
  result missing from the results bucket is looked for there before it counts as missing.
- A missing object is `ObjectMissing`; a bucket that cannot be reached, another `StorageError`.
  `read_image` turns both into a small outcome a page shows as a sentence.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass

from core.blobs.local import LocalStorage
from core.blobs.storage import Storage, StoredObject
from core.errors import BucketNotFound, ObjectExists, ObjectMissing, StorageError

log = logging.getLogger("core.blobs")

RESULTS_FOLDER = "results"


def result_path(request_id: str, name: str) -> str:
    """Where a request's result image is kept: `results/<request id>/<name>`."""
    return f"{RESULTS_FOLDER}/{request_id}/{name}"


def is_result_path(path: str) -> bool:
    """True for a path `result_path` built (three segments under `results/`)."""
    parts = path.split("/")
    return len(parts) == 3 and parts[0] == RESULTS_FOLDER


class CachedResults:
    """Result images in a remote `Storage` (the private bucket), cached in a local folder."""

    def __init__(self, remote: Storage, cache: LocalStorage, *, legacy: Storage | None = None):
        self.remote = remote
        self.cache = cache
        self.legacy = legacy   # where results went before they had a bucket of their own
        self.backend = remote.backend
        self.journal = remote.journal

    def __repr__(self) -> str:
        return f"CachedResults({self.remote!r}, cache={self.cache!r})"

    @property
    def location(self) -> str:
        return self.remote.location

    def close(self) -> None:
        try:
            self.remote.close()
        finally:
            if self.legacy is not None:
                self.legacy.close()

    def put(self, path: str, data: bytes, content_type: str, *, overwrite: bool = False) -> StoredObject:
        stored = self.remote.put(path, data, content_type, overwrite=overwrite)
        self._keep(path, data, content_type)
        return StoredObject(stored.backend, stored.path, stored.content_type, stored.size, None)

    def get(self, path: str) -> bytes:
        if self.cache.exists(path):
            try:
                return self.cache.get(path)
            except StorageError as e:   # unreadable copy: the bucket still has it
                log.warning("cached %s unreadable (%s); downloading it again", path, e)
        try:
            data = self.remote.get(path)
        except (ObjectMissing, BucketNotFound) as e:
            data = self._from_legacy(path, e)
        self._keep(path, data, None)
        return data

    def _from_legacy(self, path: str, missing: StorageError) -> bytes:
        if self.legacy is not None:
            try:
                return self.legacy.get(path)
            except (ObjectMissing, BucketNotFound):
                pass
        raise ObjectMissing(str(missing)) from None

    def _keep(self, path: str, data: bytes, content_type: str | None) -> None:
        try:
            self.cache.put(path, data, content_type or "application/octet-stream")
        except ObjectExists:
            pass   # another thread or process cached the same bytes (paths carry their hash)
        except (StorageError, OSError) as e:
            log.warning("could not cache %s locally (%s); it is read from the bucket next time", path, e)

    def try_delete(self, path: str) -> bool:
        gone = self.remote.try_delete(path)
        self.cache.try_delete(path)
        return gone

    def delete(self, path: str) -> None:
        self.remote.delete(path)
        self.cache.try_delete(path)

    def exists(self, path: str) -> bool:
        return self.cache.exists(path) or self.remote.exists(path)

    def public_url(self, path: str) -> str | None:
        return None


@dataclass(frozen=True)
class ImageRead:
    """What reading a stored image came to: its bytes, or why there are none.

    `problem` is None (read), "missing" (no such object: deleted, or never stored) or
    "unreadable" (storage could not be reached or refused); `message` says it in a sentence."""
    data: bytes | None
    problem: str | None = None
    message: str = ""


def read_image(storage: Storage, backend: str | None, path: str | None) -> ImageRead:
    """Read a stored image (reference or result) for a page or a measurement, never raising for
    what storage answers."""
    if not backend or not path:
        return ImageRead(None, "missing", "this image was not kept")
    if backend != storage.backend:
        return ImageRead(None, "unreadable", f"this image is in {backend} storage, but the dashboard "
                                             f"now uses {storage.backend} storage")
    try:
        return ImageRead(storage.get(path))
    except (ObjectMissing, BucketNotFound) as e:
        return ImageRead(None, "missing", f"the stored image is missing: {e}")
    except StorageError as e:
        return ImageRead(None, "unreadable", f"the stored image cannot be read now: {e}")
    except ValueError as e:   # a path the storage refuses: a row no writer of ours made
        return ImageRead(None, "missing", str(e))
