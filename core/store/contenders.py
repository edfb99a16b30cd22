"""Contenders (table `contenders`, migration m014): an endpoint at one parameter set, stored once
and named by `requests.contender_id`.

Invariants:
- A stored contender is read back as it was written: `Contender(id, endpoint,
  json.loads(params_json))`, never recomputed from today's schema defaults, so an old batch keeps
  the ids and settings it was recorded with.
- Writing a contender that exists already changes nothing (its id is a hash of its content).
"""
from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from typing import Any

from core.catalog.contenders import Contender
from core.store._sql import _Base, placeholders
from core.store.boundary import sqlite_boundary
from core.store.images import CHUNK


class ContendersMixin(_Base):
    """Rows of `contenders`, and which contenders a selection of requests holds."""

    @sqlite_boundary
    def save_contenders(self, contenders: Iterable[Contender]) -> None:
        """Store each contender once (call inside the transaction that writes its requests)."""
        rows = {c.id: (c.id, c.endpoint, c.params_json) for c in contenders}
        if rows:
            with self._lock:
                self.db.conn.executemany(
                    "INSERT OR IGNORE INTO contenders (id, endpoint, params_json) VALUES (?, ?, ?)",
                    list(rows.values()))

    @sqlite_boundary
    def get_contenders(self, contender_ids: Sequence[str]) -> dict[str, Contender]:
        """The stored contenders with these ids (unknown ids are left out), in the order asked."""
        ids: list[Any] = list(dict.fromkeys(i for i in contender_ids if i))
        found: dict[str, Contender] = {}
        for start in range(0, len(ids), CHUNK):
            chunk = ids[start:start + CHUNK]
            for cid, endpoint, params_json in self.db.execute(
                    f"SELECT id, endpoint, params_json FROM contenders WHERE id IN ({placeholders(len(chunk))})",
                    chunk):
                found[cid] = Contender(id=cid, endpoint=endpoint, params=json.loads(params_json))
        return {i: found[i] for i in ids if i in found}

    @sqlite_boundary
    def contenders_in(self, *, batch_id: str | None = None) -> list[Contender]:
        """The contenders of a batch's grouped requests (or of every batch), in the order they
        first appear (planning order)."""
        where, params = ("AND batch_id = ? ", [batch_id]) if batch_id else ("", [])
        ids = [row[0] for row in self.db.execute(
            "SELECT contender_id, min(rowid) AS first FROM requests WHERE group_id IS NOT NULL "
            f"AND contender_id IS NOT NULL {where}GROUP BY contender_id ORDER BY first", params)]
        return list(self.get_contenders(ids).values())
