"""Result-image rows: one per output image of a request, idempotent per (request, idx), each
read with its measured metrics (`ResultImage.metrics`)."""
from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from typing import Any

from core.store._sql import _Base, fast_build, placeholders
from core.store.boundary import sqlite_boundary
from core.values import new_id, now
from core.values import FINAL_STATUSES, METRIC_COLUMNS, ImageMetrics, ResultImage

CHUNK = 500  # ids per IN (...): well under SQLite's bound-parameter limit
_IMAGE_FIELDS = tuple(f.name for f in dataclasses.fields(ResultImage) if f.name != "metrics")


def metrics_from_row(row: Mapping[str, Any], image_id: str, request_id: str) -> ImageMetrics:
    """The ImageMetrics of a result_images row (`check_flags` is space-separated text)."""
    values = {"image_id": image_id, "request_id": request_id}
    for c in METRIC_COLUMNS:
        values[c] = row.get(c)
    values["check_flags"] = tuple((values["check_flags"] or "").split())
    return fast_build(ImageMetrics, values)


def image_from_row(row: Mapping[str, Any]) -> ResultImage:
    """A ResultImage, with its metrics, from a `SELECT *` row of result_images."""
    return image_from_tuple(tuple(row[c] for c in IMAGE_COLUMNS))


# the columns `image_from_tuple` reads, in order: select them as `IMAGE_SELECT`
IMAGE_COLUMNS = (*_IMAGE_FIELDS, *METRIC_COLUMNS)
IMAGE_SELECT = ", ".join(IMAGE_COLUMNS)
_N_IMAGE = len(_IMAGE_FIELDS)


def image_from_tuple(row: Sequence[Any]) -> ResultImage:
    """A ResultImage, with its metrics, from a row of `SELECT {IMAGE_SELECT}` (the fast path:
    result images are read by the 100,000 in the history export)."""
    values = dict(zip(_IMAGE_FIELDS, row))
    if values["nsfw"] is not None:
        values["nsfw"] = bool(values["nsfw"])
    metrics = dict(zip(METRIC_COLUMNS, row[_N_IMAGE:]))
    metrics["image_id"], metrics["request_id"] = values["id"], values["request_id"]
    metrics["check_flags"] = tuple((metrics["check_flags"] or "").split())
    values["metrics"] = fast_build(ImageMetrics, metrics)
    return fast_build(ResultImage, values)


class ImagesMixin(_Base):
    """Rows of `result_images` as the runner writes them (the metrics columns: MetricsMixin)."""

    @sqlite_boundary
    def add_result_image(self, request_id: str, *, idx: int, fal_url: str | None,
                         storage_backend: str | None, storage_path: str | None, sha256: str | None,
                         width: int | None, height: int | None, content_type: str | None,
                         size_bytes: int | None, nsfw: bool | None) -> ResultImage:
        """Record one output image; idempotent per (request, idx), so a resumed download overwrites."""
        request = self.get_request(request_id)
        row = {
            "request_id": request_id, "idx": idx, "fal_url": fal_url,
            "storage_backend": storage_backend, "storage_path": storage_path, "sha256": sha256,
            "width": width, "height": height, "content_type": content_type, "size_bytes": size_bytes,
            "nsfw": None if nsfw is None else int(bool(nsfw)), "created_at": now(),
        }
        cols = ["id", *row]
        updates = ", ".join(f"{c} = excluded.{c}" for c in row if c not in ("request_id", "idx"))
        # the row as written comes back with the write (RETURNING: one round trip on Postgres);
        # fetched to the end, so SQLite's statement (and its write transaction) is over
        written = self._write(f"INSERT INTO result_images ({', '.join(cols)}) VALUES ({placeholders(len(cols))}) "
                              f"ON CONFLICT(request_id, idx) DO UPDATE SET {updates} RETURNING {IMAGE_SELECT}",
                              [new_id(), *row.values()]).fetchall()
        if request.status in FINAL_STATUSES:   # else its lines are stored when it becomes final
            self._keep_export_lines(request_id)
        return image_from_tuple(written[0])

    @sqlite_boundary
    def result_images(self, request_ids: Sequence[str]) -> dict[str, list[ResultImage]]:
        """Images per request id, in output order (every id present, possibly with no images)."""
        out: dict[str, list[ResultImage]] = {rid: [] for rid in request_ids}
        ids = list(out)
        for start in range(0, len(ids), CHUNK):
            chunk = ids[start:start + CHUNK]
            for row in self.db.execute(f"SELECT {IMAGE_SELECT} FROM result_images WHERE request_id IN "
                                       f"({placeholders(len(chunk))}) ORDER BY request_id, idx", chunk):
                image = image_from_tuple(row)
                out[image.request_id].append(image)
        return out
