"""Result-image rows: one per output image of a request, idempotent per (request, idx)."""
from __future__ import annotations

from collections.abc import Sequence

from core.store._sql import _Base, build, placeholders
from core.store.db import new_id, now
from core.store.values import ResultImage

_CHUNK = 500  # ids per IN (...): well under SQLite's bound-parameter limit


class ImagesMixin(_Base):
    """Rows of `result_images` (the measured metrics columns are in MetricsMixin)."""

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
        return build(ResultImage, next(self._rows(
            "SELECT * FROM result_images WHERE request_id = ? AND idx = ?", [request_id, idx])))

    def result_images(self, request_ids: Sequence[str]) -> dict[str, list[ResultImage]]:
        """Images per request id, in output order (every id present, possibly with no images)."""
        out: dict[str, list[ResultImage]] = {rid: [] for rid in request_ids}
        ids = list(out)
        for start in range(0, len(ids), _CHUNK):
            chunk = ids[start:start + _CHUNK]
            for row in self._rows(f"SELECT * FROM result_images WHERE request_id IN "
                                  f"({placeholders(len(chunk))}) ORDER BY request_id, idx", chunk):
                out[row["request_id"]].append(build(ResultImage, row))
        return out
