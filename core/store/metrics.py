"""The measured columns of `result_images`: what the metrics worker reads to measure an image,
writes back, and what is still pending.

Invariants:
- A row is PENDING while `metrics_at` is null; the partial index of migration m010 keeps
  finding pending rows cheap whatever the table size.
- `save_image_metrics` writes only the metrics and check columns; the runner's columns are
  written by ImagesMixin alone.
"""
from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from core.errors import StoreError
from core.store._sql import _Base, placeholders
from core.store.boundary import sqlite_boundary
from core.store.images import CHUNK, metrics_from_row
from core.values import METRIC_COLUMNS, ImageMetrics


@dataclass(frozen=True)
class ImageToMeasure:
    """What measuring one result image needs: where its bytes are, what was asked and answered,
    and the reference photos of its group (else of its request)."""
    image_id: str
    request_id: str
    idx: int
    storage_backend: str | None
    storage_path: str | None
    nsfw: bool | None
    endpoint: str
    payload: dict[str, Any]
    response: Any
    seed: int | None
    reference_ids: tuple[str, ...]


def _scope(batch_id: str | None) -> tuple[str, list[Any]]:
    if batch_id is None:
        return "", []
    return " AND i.request_id IN (SELECT id FROM requests WHERE batch_id = ?)", [batch_id]


class MetricsMixin(_Base):
    """The metrics and check columns of `result_images`."""

    @sqlite_boundary
    def image_to_measure(self, image_id: str) -> ImageToMeasure:
        for row in self._rows(
                "SELECT i.id, i.request_id, i.idx, i.storage_backend, i.storage_path, i.nsfw, "
                "r.endpoint, r.payload_json, r.response_json, r.seed, r.reference_ids AS request_refs, "
                "g.reference_ids AS group_refs FROM result_images i "
                "JOIN requests r ON r.id = i.request_id LEFT JOIN groups g ON g.id = r.group_id "
                "WHERE i.id = ?", [image_id]):
            return ImageToMeasure(
                image_id=row["id"], request_id=row["request_id"], idx=row["idx"],
                storage_backend=row["storage_backend"], storage_path=row["storage_path"],
                nsfw=None if row["nsfw"] is None else bool(row["nsfw"]), endpoint=row["endpoint"],
                payload=json.loads(row["payload_json"]) if row["payload_json"] else {},
                response=json.loads(row["response_json"]) if row["response_json"] else None,
                seed=row["seed"],
                reference_ids=tuple(json.loads(row["group_refs"] or row["request_refs"] or "[]")))
        raise StoreError(f"No result image with id {image_id!r}.")

    @sqlite_boundary
    def save_image_metrics(self, m: ImageMetrics) -> ImageMetrics:
        """Store the outcome of measuring one image (every metrics column, `m.metrics_at` set)."""
        values = {c: getattr(m, c) for c in METRIC_COLUMNS}
        values["check_flags"] = " ".join(m.check_flags)
        cur = self._write(f"UPDATE result_images SET {', '.join(f'{k} = ?' for k in values)} WHERE id = ?",
                          [*values.values(), m.image_id])
        if cur.rowcount == 0:
            raise StoreError(f"No result image with id {m.image_id!r}.")
        self._keep_export_lines(m.request_id)
        return self.image_metrics([m.image_id])[m.image_id]

    @sqlite_boundary
    def image_metrics(self, image_ids: Sequence[str]) -> dict[str, ImageMetrics]:
        """Stored metrics per result image id (ids that do not exist are left out)."""
        out: dict[str, ImageMetrics] = {}
        ids = list(dict.fromkeys(image_ids))
        for start in range(0, len(ids), CHUNK):
            chunk = ids[start:start + CHUNK]
            for row in self._rows(f"SELECT id, request_id, {', '.join(METRIC_COLUMNS)} FROM result_images "
                                  f"WHERE id IN ({placeholders(len(chunk))})", chunk):
                out[row["id"]] = metrics_from_row(row, row["id"], row["request_id"])
        return out

    @sqlite_boundary
    def pending_image_ids(self, *, batch_id: str | None = None, limit: int | None = None) -> list[str]:
        """Result images never measured (or reset), oldest first."""
        extra, params = _scope(batch_id)
        sql = (f"SELECT i.id FROM result_images i WHERE i.metrics_at IS NULL{extra} "
               "ORDER BY i.created_at, i.id")
        if limit is not None:
            sql += " LIMIT ?"
            params.append(limit)
        return [r[0] for r in self.db.execute(sql, params).fetchall()]

    @sqlite_boundary
    def pending_count(self, *, batch_id: str | None = None) -> int:
        extra, params = _scope(batch_id)
        return self._one(f"SELECT count(*) FROM result_images i WHERE i.metrics_at IS NULL{extra}", params)[0]

    @sqlite_boundary
    def reset_metrics(self, *, batch_id: str | None = None, failed: bool = False,
                      other_version_than: str | None = None, everything: bool = False) -> int:
        """Make measured rows pending again: those that failed, those measured by another
        metrics version than `other_version_than`, or all. Returns how many became pending."""
        conditions = []
        params: list[Any] = []
        if failed:
            conditions.append("i.metrics_error IS NOT NULL")
        if other_version_than is not None:
            conditions.append("i.metrics_version IS NOT ?")
            params.append(other_version_than)
        if everything:
            conditions.append("TRUE")
        if not conditions:
            return 0
        extra, scope_params = _scope(batch_id)
        cur = self._write(f"UPDATE result_images SET metrics_at = NULL WHERE id IN (SELECT i.id FROM "
                          f"result_images i WHERE i.metrics_at IS NOT NULL AND ({' OR '.join(conditions)})"
                          f"{extra})", [*params, *scope_params])
        return cur.rowcount
