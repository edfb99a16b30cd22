"""Blind review verdicts (table `votes`, migration m011): one row per rater's verdict on two
outputs of a group, with the left/right order the rater saw. The rules (who may vote on what,
each rater's latest verdict) are core/evaluation/review.py's; this module only reads and writes."""
from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any

from core.errors import StoreError
from core.store._sql import _Base, build, fast_build, placeholders
from core.store.boundary import sqlite_boundary
from core.values import new_id, now
from core.store.images import CHUNK
from core.values import Group, StoredVote

# a StoredVote's fields in order, each read as is (no field needs `build`'s conversions), so the
# Leaderboard's 1,000s of votes are built positionally
_VOTE_FIELDS = tuple(f.name for f in dataclasses.fields(StoredVote))
_SIDES = {"left_endpoint": "lr.endpoint", "right_endpoint": "rr.endpoint",
          "left_contender": "lr.contender_id", "right_contender": "rr.contender_id"}
_VOTE_SQL = ("SELECT " + ", ".join(_SIDES.get(name, f"v.{name}") for name in _VOTE_FIELDS) + " FROM votes v "
             "JOIN requests lr ON lr.id = v.left_request_id JOIN requests rr ON rr.id = v.right_request_id ")


def _vote(row: Sequence[Any]) -> StoredVote:
    return fast_build(StoredVote, dict(zip(_VOTE_FIELDS, row)))


class VotesMixin(_Base):
    """Rows of `votes`."""

    @sqlite_boundary
    def add_vote(self, *, group_id: str, rater: str, left_request_id: str, right_request_id: str,
                 verdict: str, winner: str | None, note: str | None) -> StoredVote:
        vote_id = new_id()
        self._insert("votes", {
            "id": vote_id, "group_id": group_id, "rater": rater, "left_request_id": left_request_id,
            "right_request_id": right_request_id, "verdict": verdict, "winner": winner, "note": note,
            "created_at": now(),
        })
        return self.get_vote(vote_id)

    @sqlite_boundary
    def get_vote(self, vote_id: str) -> StoredVote:
        for row in self.db.execute(_VOTE_SQL + "WHERE v.id = ?", [vote_id]):
            return _vote(row)
        raise StoreError(f"No vote with id {vote_id!r}.")

    @sqlite_boundary
    def list_votes(self, *, batch_id: str | None = None, rater: str | None = None) -> list[StoredVote]:
        """Votes oldest first, optionally of one batch and/or one rater (case-insensitive)."""
        clauses, params = [], []
        if batch_id is not None:
            clauses.append("v.group_id IN (SELECT id FROM groups WHERE batch_id = ?)")
            params.append(batch_id)
        if rater is not None:
            clauses.append("v.rater = ? COLLATE NOCASE")
            params.append(rater.strip())
        where = ("WHERE " + " AND ".join(clauses) + " ") if clauses else ""
        return [_vote(row) for row in self.db.execute(_VOTE_SQL + where + "ORDER BY v.created_at, v.rowid",
                                                      params)]

    @sqlite_boundary
    def newest_voted_batch(self) -> str | None:
        """The batch holding the most recent vote, or None when nobody has voted."""
        for row in self._rows("SELECT g.batch_id FROM votes v JOIN groups g ON g.id = v.group_id "
                              "ORDER BY v.created_at DESC, v.rowid DESC LIMIT 1", []):
            return row["batch_id"]
        return None

    @sqlite_boundary
    def voted_pairs(self, batch_id: str, rater: str) -> set[tuple[str, str, str]]:
        """(group id, left contender id, right contender id) of every vote of `rater`
        (case-insensitive) in the batch."""
        rows = self.db.execute(
            "SELECT v.group_id, coalesce(lr.contender_id, lr.endpoint), coalesce(rr.contender_id, rr.endpoint) "
            "FROM votes v JOIN groups g ON g.id = v.group_id "
            "JOIN requests lr ON lr.id = v.left_request_id JOIN requests rr ON rr.id = v.right_request_id "
            "WHERE g.batch_id = ? AND v.rater = ? COLLATE NOCASE", [batch_id, rater]).fetchall()
        return {(g, a, b) for g, a, b in rows}

    @sqlite_boundary
    def groups_by_id(self, group_ids: Sequence[str]) -> dict[str, Group]:
        """The groups with these ids (unknown ids are left out)."""
        out: dict[str, Group] = {}
        ids: list[Any] = list(dict.fromkeys(group_ids))
        for start in range(0, len(ids), CHUNK):
            chunk = ids[start:start + CHUNK]
            for row in self._rows(f"SELECT * FROM groups WHERE id IN ({placeholders(len(chunk))})", chunk):
                out[row["id"]] = build(Group, row)
        return out
