"""Reference photo rows (table `reference_photos`). The upload rules (checks, normalisation,
storing the bytes first) are core/photos/references.py's; this module only reads and writes.

Invariant: `sha256` is unique. `insert_reference` returns None instead of raising when a row
with the same sha256 exists (another upload of the same photo won), so the caller can reuse it.
"""
from __future__ import annotations

import sqlite3
from typing import Any

from core.errors import StoreError
from core.store._sql import _Base, build
from core.store.boundary import sqlite_boundary
from core.values import new_id, now
from core.values import Reference

_UPDATABLE = frozenset({"storage_backend", "storage_path", "public_url", "archived_at"})


class ReferencesMixin(_Base):
    """Rows of `reference_photos`."""

    @sqlite_boundary
    def insert_reference(self, ref: Reference) -> Reference | None:
        """Write a new reference row; None when a reference with its sha256 already exists."""
        row = {f: getattr(ref, f) for f in (
            "id", "sha256", "role", "owner", "original_name", "content_type", "width", "height",
            "size_bytes", "storage_backend", "storage_path", "public_url", "created_at", "created_by",
            "archived_at")}
        try:
            self._insert("reference_photos", row)
        except sqlite3.IntegrityError:
            if self.reference_by_sha(ref.sha256) is not None:
                return None
            raise StoreError(f"could not record reference photo {ref.original_name or ''} "
                             "(constraint failed); nothing was kept, try again.") from None
        except sqlite3.Error as e:
            raise StoreError(f"could not record reference photo {ref.original_name or ''} in the "
                             f"database ({e}); nothing was kept, try again.") from None
        return self.get_reference(ref.id)

    @sqlite_boundary
    def get_reference(self, reference_id: str) -> Reference:
        for row in self._rows("SELECT * FROM reference_photos WHERE id = ?", [reference_id]):
            return build(Reference, row)
        raise StoreError(f"no reference photo with id {reference_id!r}; "
                         "`python -m core reference list --all` shows them.")

    @sqlite_boundary
    def reference_by_sha(self, sha256: str) -> Reference | None:
        for row in self._rows("SELECT * FROM reference_photos WHERE sha256 = ?", [sha256]):
            return build(Reference, row)
        return None

    @sqlite_boundary
    def list_references(self, *, include_archived: bool = False, limit: int | None = None,
                        offset: int = 0) -> list[Reference]:
        """Newest first."""
        sql = "SELECT * FROM reference_photos"
        if not include_archived:
            sql += " WHERE archived_at IS NULL"
        sql += " ORDER BY created_at DESC, id"
        params: list[Any] = []
        if limit is not None:
            sql += " LIMIT ? OFFSET ?"
            params += [limit, offset]
        elif offset:
            sql += " LIMIT -1 OFFSET ?"
            params.append(offset)
        return [build(Reference, r) for r in self._rows(sql, params)]

    @sqlite_boundary
    def update_reference(self, reference_id: str, **fields: Any) -> Reference:
        """Change where a reference is stored (`storage_backend`, `storage_path`, `public_url`)
        or its `archived_at`."""
        unknown = set(fields) - _UPDATABLE
        if unknown:
            raise StoreError(f"reference photos cannot change {', '.join(sorted(unknown))}.")
        if fields:
            self._write(f"UPDATE reference_photos SET {', '.join(f'{k} = ?' for k in fields)} WHERE id = ?",
                        [*fields.values(), reference_id])
        return self.get_reference(reference_id)

    @sqlite_boundary
    def archive_reference(self, reference_id: str, *, by: str | None = None) -> Reference:
        """Hide a reference from the default list (once; archiving again keeps the first date),
        with its line in the audit trail in the same write."""
        ref = self.get_reference(reference_id)
        with self._write_transaction():
            archived = self.db.execute("UPDATE reference_photos SET archived_at = ? WHERE id = ? AND archived_at IS NULL",
                                       [now(), reference_id]).rowcount
            if archived:
                self._insert("audit", {"id": new_id(), "at": now(), "who": by, "action": "photo.archived",
                                       "subject": reference_id, "detail": ref.original_name or "", "usd": None})
        return self.get_reference(reference_id)

    @sqlite_boundary
    def reference_path_named(self, backend: str, path: str) -> bool:
        """Whether a reference row names this stored object (the orphan sweep's question)."""
        return bool(list(self._rows("SELECT 1 FROM reference_photos WHERE storage_backend = ? "
                                    "AND storage_path = ? LIMIT 1", [backend, path])))
