"""Reads across tables for the Leaderboard and its figures (core/evaluation/leaderboard.py,
tally.py), the comparison CSV and review: each model's output in a group, cost and latency rows,
metric rows, and a data version to cache by.

Invariant: "a model's output in a group" is `values.pick_output` applied to `group_outputs`'s
candidates, for Review, Compare, the Leaderboard and the comparison CSV alike.
"""
from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from core.store._sql import _Base, build, placeholders
from core.store.boundary import sqlite_boundary
from core.store.images import CHUNK
from core.store.images import image_from_row
from core.rows import MetricRow, RequestCost
from core.values import (
    GroupOutput, RequestRecord, RequestStatus, ResultImage, pick_output,
)


def _batch_clause(batch_id: str | None, alias: str = "r", unbatched: bool = False) -> tuple[str, list[Any]]:
    if unbatched:
        return f" AND {alias}.batch_id IS NULL", []
    return (f" AND {alias}.batch_id = ?", [batch_id]) if batch_id else ("", [])


class AggregatesMixin(_Base):
    """Whole-selection reads for the comparison; nothing here writes."""

    @sqlite_boundary
    def group_outputs(self, batch_id: str, *, or_newest: bool = False, by_contender: bool = False,
                      group_ids: Sequence[str] | None = None) -> dict[str, dict[str, GroupOutput]]:
        """Per group id, per endpoint (or per contender id, `by_contender`): the model's (the
        contender's) output in the group (`values.pick_output`; `or_newest` for the CSV, so a
        failure shows). `group_ids` reads only those groups (a page of Compare), by index."""
        candidates: dict[tuple[str, str], list[tuple[RequestRecord, ResultImage | None]]] = {}
        if group_ids is not None:
            ids = list(group_ids)[:CHUNK]
            where, params = f"r.group_id IN ({placeholders(len(ids))})", ids
        else:
            where, params = "r.batch_id = ? AND r.group_id IS NOT NULL", [batch_id]
        images = {row["request_id"]: image_from_row(row) for row in self._rows(
            f"SELECT i.* FROM result_images i JOIN requests r ON r.id = i.request_id "
            f"WHERE {where} AND i.idx = 0", params)}
        for row in self._rows(f"SELECT * FROM requests r WHERE {where} ORDER BY created_at, rowid", params):
            request = build(RequestRecord, row)
            key = (row.get("contender_id") or row["endpoint"]) if by_contender else row["endpoint"]
            candidates.setdefault((row["group_id"], key), []).append(
                (request, images.get(request.id)))
        out: dict[str, dict[str, GroupOutput]] = {}
        for (group_id, key), options in candidates.items():
            picked = pick_output(options, or_newest=or_newest)
            if picked is not None:
                out.setdefault(group_id, {})[key] = GroupOutput(group_id, picked[0].endpoint, *picked)
        return out

    @sqlite_boundary
    def output_contenders(self, batch_id: str) -> list[tuple[str, tuple[str, ...]]]:
        """Every group of the batch in planning order, with the contenders (contender id, else
        endpoint) that have an output in it by `values.pick_output`'s rule (a completed request
        whose idx-0 image is stored), sorted: who Review can pair, without reading a request row."""
        have: dict[str, list[str]] = {}
        for group_id, key in self.db.execute(
                "SELECT r.group_id, coalesce(nullif(r.contender_id, ''), r.endpoint) FROM requests r "
                "JOIN result_images i ON i.request_id = r.id AND i.idx = 0 "
                "WHERE r.batch_id = ? AND r.group_id IS NOT NULL AND r.status = ? "
                "AND coalesce(i.storage_path, '') != '' GROUP BY 1, 2",
                [batch_id, RequestStatus.COMPLETED]):
            have.setdefault(group_id, []).append(key)
        return [(g, tuple(sorted(have.get(g, ())))) for (g,) in self.db.execute(
            "SELECT id FROM groups WHERE batch_id = ? ORDER BY created_at, rowid", [batch_id])]

    @sqlite_boundary
    def data_version(self, *, batch_id: str | None = None) -> tuple[Any, ...]:
        """A cheap stamp that changes whenever requests, their final states, images, metrics or
        votes of this selection can have changed: pages cache aggregates by it. Reads only the
        selection (a batch: its request count, its write stamp and its groups' votes, by index);
        over every batch, counts and maxima that indexes answer without reading the tables."""
        if batch_id is None:
            req = self._one("SELECT count(*), max(completed_at) FROM requests")
            img = self._one("SELECT count(*), (SELECT max(metrics_at) FROM result_images), "
                            "(SELECT max(checked_at) FROM result_images) FROM result_images")
            votes = self._one("SELECT count(*), max(created_at) FROM votes")
            return (None, *req, *img, *votes)
        # the batch's write stamp: bumped by triggers on every write to its requests and their
        # images (m016), so the 4,000 rows of a big batch are not read on every run
        req = self._one("SELECT count(*), (SELECT stamp FROM batch_stamps WHERE batch_id = ?) "
                        "FROM requests WHERE batch_id = ?", [batch_id, batch_id])
        votes = self._one("SELECT count(*), max(v.created_at) FROM groups g JOIN votes v ON v.group_id = g.id "
                          "WHERE g.batch_id = ?", [batch_id])
        return (batch_id, *req, *votes)

    @sqlite_boundary
    def request_costs(self, *, batch_id: str | None = None, unbatched: bool = False,
                      request_ids: Sequence[str] | None = None) -> list[RequestCost]:
        """Every request of the selection (`unbatched`: of no batch; `request_ids`: only those,
        by primary key) with its timings, estimated cost and image count, in planning order."""
        where, params = _batch_clause(batch_id, unbatched=unbatched)
        if request_ids is not None:   # one bound JSON array: no chunks, so one planning order
            where += " AND r.id IN (SELECT value FROM json_each(?))"
            params = [*params, json.dumps(list(request_ids))]
        cursor = self.db.execute(
            "SELECT r.id, r.endpoint, r.status, r.queue_time_s, r.inference_time_s, r.total_time_s, "
            "r.estimated_cost, (SELECT count(*) FROM result_images i WHERE i.request_id = r.id), r.contender_id, "
            "r.billed_cost "
            f"FROM requests r WHERE TRUE{where} ORDER BY r.created_at, r.rowid", params)
        return [RequestCost._make(row) for row in cursor]

    @sqlite_boundary
    def metric_rows(self, *, batch_id: str | None = None, unbatched: bool = False) -> list[MetricRow]:
        """Every result image of the selection's (`unbatched`: no batch's) completed requests with
        its stored metrics."""
        where, params = _batch_clause(batch_id, unbatched=unbatched)
        cursor = self.db.execute(
            "SELECT r.endpoint, r.group_id, r.id, i.id, i.face_status, i.face_distance, "
            "i.phash_distance, i.ciede2000, i.ssim, i.metrics_at, i.metrics_error, "
            "coalesce(i.check_flags, ''), r.contender_id FROM result_images i JOIN requests r ON r.id = i.request_id "
            f"WHERE r.status = ?{where} ORDER BY r.created_at, r.rowid, i.idx",
            [RequestStatus.COMPLETED, *params])
        return [MetricRow._make(row) for row in cursor]

    @sqlite_boundary
    def first_appearances(self, *, batch_id: str | None = None, unbatched: bool = False
                          ) -> tuple[dict[str, tuple[str, int]], dict[str, tuple[str, int]]]:
        """Where each contender first appears in planning order, as (created_at, rowid): among the
        requests (key: contender id, else endpoint, as `request_costs` are grouped) and among the
        completed requests with an image (key as `metric_rows` are grouped)."""
        where, params = _batch_clause(batch_id, unbatched=unbatched)

        def first(key: str, condition: str, args: list[Any]) -> dict[str, tuple[str, int]]:
            return {k: (c, n) for k, c, n in self.db.execute(
                f"SELECT k, created_at, rowid FROM (SELECT {key} AS k, r.created_at, r.rowid, row_number() "
                f"OVER (PARTITION BY {key} ORDER BY r.created_at, r.rowid) AS n FROM requests r "
                f"WHERE {condition}{where}) AS firsts WHERE n = 1", [*args, *params])}

        return (first("coalesce(nullif(r.contender_id, ''), r.endpoint)", "TRUE", []),
                first("coalesce(r.contender_id, r.endpoint)", "r.status = ? AND EXISTS (SELECT 1 FROM "
                      "result_images i WHERE i.request_id = r.id)", [RequestStatus.COMPLETED]))

    @sqlite_boundary
    def comparison_models(self, *, batch_id: str | None = None) -> list[str]:
        """The endpoints with grouped requests in the selection, in the order they first appear."""
        where, params = _batch_clause(batch_id)
        rows = self.db.execute(f"SELECT endpoint, min(rowid) AS first FROM requests r "
                               f"WHERE r.group_id IS NOT NULL{where} GROUP BY endpoint ORDER BY first",
                               params).fetchall()
        return [r[0] for r in rows]

    @sqlite_boundary
    def batch_names(self, batch_id: str | None = None) -> list[tuple[str, str]]:
        """(id, name) of one batch, or of every batch oldest first."""
        if batch_id:
            return [(r[0], r[1]) for r in self.db.execute("SELECT id, name FROM batches WHERE id = ?",
                                                          [batch_id])]
        return [(r[0], r[1]) for r in self.db.execute("SELECT id, name FROM batches ORDER BY created_at, id")]

    @sqlite_boundary
    def count_groups(self, *, batch_id: str | None = None) -> int:
        where, params = _batch_clause(batch_id, "g")
        return self._one(f"SELECT count(*) FROM groups g WHERE TRUE{where}", params)[0]

    @sqlite_boundary
    def spent_since(self, since: str, *, person: str | None) -> tuple[float, int]:
        """What `person` sent since `since` (ISO UTC, as the store writes times), for the daily
        spending limit: the sum of what each cost (fal's billed units at the price once known, else
        the estimate), and how many sent requests had no known price. Sent is any status but planned, cancelled and dry run, timed by its submit
        (else its creation); a person is `created_by`, and no name (None or "") is one bucket."""
        row = self._one(
            "SELECT coalesce(sum(coalesce(billed_cost, estimated_cost)), 0), "
            "sum(CASE WHEN coalesce(billed_cost, estimated_cost) IS NULL THEN 1 ELSE 0 END) FROM requests "
            "WHERE coalesce(created_by, '') = ? AND dry_run = 0 AND status NOT IN (?, ?, ?) "
            "AND coalesce(submitted_at, created_at) >= ?",
            [person or "", RequestStatus.PLANNED, RequestStatus.CANCELLED, RequestStatus.DRY_RUN, since])
        return float(row[0] or 0.0), int(row[1] or 0)
