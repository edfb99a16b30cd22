"""Result-image rows: one per output image of a request, idempotent per (request, idx), each
read with its measured metrics (`ResultImage.metrics`)."""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from core.store._sql import _Base, placeholders
from core.store.db import new_id, now
from core.store.values import METRIC_COLUMNS, ImageMetrics, ResultImage

CHUNK = 500  # ids per IN (...): well under SQLite's bound-parameter limit


def metrics_from_row(row: Mapping[str, Any], image_id: str, request_id: str) -> ImageMetrics:
    """The ImageMetrics of a result_images row (`check_flags` is space-separated text)."""
    values = {c: row.get(c) for c in METRIC_COLUMNS}
    values["check_flags"] = tuple((values["check_flags"] or "").split())
    return ImageMetrics(image_id=image_id, request_id=request_id, **values)


def image_from_row(row: Mapping[str, Any]) -> ResultImage:
    """A ResultImage, with its metrics, from a `SELECT *` row of result_images."""
    nsfw = row["nsfw"]
    return ResultImage(
        id=row["id"], request_id=row["request_id"], idx=row["idx"], fal_url=row["fal_url"],
        storage_backend=row["storage_backend"], storage_path=row["storage_path"],
        sha256=row["sha256"], width=row["width"], height=row["height"],
        content_type=row["content_type"], size_bytes=row["size_bytes"],
        nsfw=None if nsfw is None else bool(nsfw), created_at=row["created_at"],
        metrics=metrics_from_row(row, row["id"], row["request_id"]))


class ImagesMixin(_Base):
    """Rows of `result_images` as the runner writes them (the metrics columns: MetricsMixin)."""

    def add_result_image(self, request_id: str, *, idx: int, fal_url: str | None,
                         storage_backend: str | None, storage_path: str | None, sha256: str | None,
                         width: int | None, height: int | None, content_type: str | None,
                         size_bytes: int | None, nsfw: bool | None) -> ResultImage:
        """Record one output image; idempotent per (request, idx), so a resumed download overwrites."""
        self.get_request(request_id)
        row = {
            "request_id": request_id, "idx": idx, "fal_url": fal_url,
            "storage_backend": storage_backend, "storage_path": storage_path, "sha256": sha256,
            "width": width, "height": height, "content_type": content_type, "size_bytes": size_bytes,
            "nsfw": None if nsfw is None else int(bool(nsfw)), "created_at": now(),
        }
        cols = ["id", *row]
        updates = ", ".join(f"{c} = excluded.{c}" for c in row if c not in ("request_id", "idx"))
        self._write(f"INSERT INTO result_images ({', '.join(cols)}) VALUES ({placeholders(len(cols))}) "
                    f"ON CONFLICT(request_id, idx) DO UPDATE SET {updates}", [new_id(), *row.values()])
        return image_from_row(next(self._rows(
            "SELECT * FROM result_images WHERE request_id = ? AND idx = ?", [request_id, idx])))

    def result_images(self, request_ids: Sequence[str]) -> dict[str, list[ResultImage]]:
        """Images per request id, in output order (every id present, possibly with no images)."""
        out: dict[str, list[ResultImage]] = {rid: [] for rid in request_ids}
        ids = list(out)
        for start in range(0, len(ids), CHUNK):
            chunk = ids[start:start + CHUNK]
            for row in self._rows(f"SELECT * FROM result_images WHERE request_id IN "
                                  f"({placeholders(len(chunk))}) ORDER BY request_id, idx", chunk):
                out[row["request_id"]].append(image_from_row(row))
        return out
