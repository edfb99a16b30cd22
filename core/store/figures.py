"""Each batch's Leaderboard figures, kept with the batch's write stamp (tables `batch_stamps`,
`batch_figures`, migrations m016 and m018): "all batches" merges them instead of reading every row.

Invariant: a batch's stamp changes with every insert, update or delete of its requests and their
images (metrics included) (SQLite triggers); not with votes, which the stored figures do not
hold. Stored figures are used only at the stamp they were computed at. The figures are opaque text here: core/evaluation/batch_parts.py
computes, encodes and merges them.
"""
from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from core.store._sql import _Base, placeholders
from core.store.boundary import sqlite_boundary
from core.store.images import CHUNK

NO_BATCH = ""  # the stamp key of requests recorded without a batch


class FiguresMixin(_Base):
    """Rows of `batch_stamps` and `batch_figures`."""

    @sqlite_boundary
    def batch_stamps(self) -> dict[str, int]:
        """Every batch that holds requests (and `NO_BATCH`, for requests without one) with its
        write stamp (requests and images; votes leave it)."""
        return dict(self.db.execute("SELECT batch_id, stamp FROM batch_stamps"))

    @sqlite_boundary
    def stored_figures(self, batch_ids: Sequence[str]) -> dict[str, tuple[int, str]]:
        """batch id -> (stamp computed at, figures) for those stored."""
        out: dict[str, tuple[int, str]] = {}
        ids: list[Any] = list(batch_ids)
        for start in range(0, len(ids), CHUNK):
            chunk = ids[start:start + CHUNK]
            for batch_id, stamp, text in self.db.execute(
                    f"SELECT batch_id, stamp, figures FROM batch_figures WHERE batch_id IN "
                    f"({placeholders(len(chunk))})", chunk):
                out[batch_id] = (stamp, text)
        return out

    @sqlite_boundary
    def save_figures(self, figures: Sequence[tuple[str, int, str]]) -> None:
        """Keep (batch id, stamp, figures) rows, replacing older ones; in one transaction."""
        if not figures:
            return
        with self._write_transaction():
            self.db.conn.executemany(
                "INSERT INTO batch_figures (batch_id, stamp, figures) VALUES (?, ?, ?) "
                "ON CONFLICT (batch_id) DO UPDATE SET stamp = excluded.stamp, figures = excluded.figures",
                list(figures))
