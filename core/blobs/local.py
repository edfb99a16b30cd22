"""Image bytes in a local folder (`<data dir>/images` unless told otherwise).

A write goes to a temporary file in the same folder, fsynced, then linked (or renamed, with
`overwrite`) into place: after a crash there is the old state or the new one, and a leftover
`.<name>.part` that `remove_partial_writes` deletes once it is older than any write still running.
"""
from __future__ import annotations

import os
import tempfile
import time
from pathlib import Path

from core.blobs.journal import CleanupJournal
from core.blobs.storage import StoredObject, check_path, record_undeleted
from core.errors import ObjectExists, ObjectMissing, StorageError


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
        return self.root / check_path(path)

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
            raise ObjectMissing(f"no stored object {path} under {self.root}: it was deleted, or "
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
            journal = record_undeleted(self, path, str(e))
            if journal:
                raise StorageError(f"{e} It is recorded in {journal}; `python -m core reference cleanup` "
                                   "deletes it later.") from None
            raise

    def exists(self, path: str) -> bool:
        return self._file(path).is_file()

    def public_url(self, path: str) -> str | None:
        return None
