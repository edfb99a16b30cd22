"""History: every request, filtered, newest first; one page at a time, or streamed for export.

Invariants:
- Reads never load a whole table: a page is LIMIT/OFFSET on indexed columns; `iter_history`
  walks keyset chunks on (created_at, id), so memory stays bounded by the chunk size.
- The page and the CSV export select exactly the same rows: both build their WHERE clause with
  `_history_where`.
"""
from __future__ import annotations

import dataclasses
import datetime as _dt
from collections.abc import Iterator
from typing import Any

from core.errors import StoreError
from core.store._sql import _Base, build, fast_build, placeholders
from core.store.images import CHUNK, IMAGE_SELECT, image_from_tuple
from core.store.values import (
    REQUEST_STATUSES, HistoryFilter, HistoryRow, Page, RequestRecord, ResultImage,
)

MAX_PAGE_SIZE = 500
# HistoryRow's request fields, in order (id and created_at first: the keyset)
_HISTORY_COLUMNS = tuple(f.name for f in dataclasses.fields(HistoryRow) if f.name != "images")


def _bound(value: _dt.date | _dt.datetime | str, *, end: bool) -> str:
    """An ISO UTC text bound comparable with stored `created_at`; a bare date covers its day."""
    if isinstance(value, str):
        try:
            value = _dt.datetime.fromisoformat(value) if "T" in value or " " in value \
                else _dt.date.fromisoformat(value)
        except ValueError:
            raise StoreError(f"{value!r} is not a date; use YYYY-MM-DD or an ISO date-time.") from None
    if isinstance(value, _dt.datetime):
        if value.tzinfo is None:
            value = value.replace(tzinfo=_dt.timezone.utc)
        return value.astimezone(_dt.timezone.utc).isoformat(timespec="microseconds")
    day = _dt.datetime.combine(value, _dt.time.max if end else _dt.time.min, tzinfo=_dt.timezone.utc)
    return day.isoformat(timespec="microseconds")


def _like_escape(text: str) -> str:
    return text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


def _history_where(f: HistoryFilter, alias: str = "") -> tuple[str, list[Any]]:
    """The SQL WHERE clause (without the keyword; "1" when empty) and its parameters for a filter."""
    a = f"{alias}." if alias else ""
    clauses: list[str] = []
    params: list[Any] = []
    if f.endpoint:
        clauses.append(f"{a}endpoint = ?")
        params.append(f.endpoint)
    if f.status:
        if f.status not in REQUEST_STATUSES:
            raise StoreError(f"Unknown status {f.status!r}; one of {', '.join(REQUEST_STATUSES)}.")
        clauses.append(f"{a}status = ?")
        params.append(f.status)
    if f.batch_id:
        clauses.append(f"{a}batch_id = ?")
        params.append(f.batch_id)
    if f.date_from:
        clauses.append(f"{a}created_at >= ?")
        params.append(_bound(f.date_from, end=False))
    if f.date_to:
        clauses.append(f"{a}created_at <= ?")
        params.append(_bound(f.date_to, end=True))
    if f.text and f.text.strip():
        # LIKE is case-insensitive for ASCII; fast enough at 100k rows (tests/bench/bench_history.py)
        clauses.append(f"{a}prompt LIKE ? ESCAPE '\\'")
        params.append(f"%{_like_escape(f.text.strip())}%")
    if f.surprises:
        clauses.append(f"EXISTS (SELECT 1 FROM result_images si WHERE si.request_id = {a or 'requests.'}id "
                       "AND si.check_flags <> '')")
    return (" AND ".join(clauses) or "1"), params


class HistoryMixin(_Base):
    """Filtered reads of `requests` (and their `result_images`) for History and the CSV export."""

    def count_history(self, f: HistoryFilter) -> int:
        where, params = _history_where(f)
        return self._one(f"SELECT count(*) FROM requests WHERE {where}", params)[0]

    def query_history(self, f: HistoryFilter) -> Page:
        """One page of requests matching `f`, newest first, and the total count."""
        if not 1 <= f.page_size <= MAX_PAGE_SIZE:
            raise StoreError(f"page_size must be between 1 and {MAX_PAGE_SIZE}, got {f.page_size}.")
        page = max(1, f.page)
        where, params = _history_where(f)
        total = self.count_history(f)
        rows = tuple(build(RequestRecord, r) for r in self._rows(
            f"SELECT * FROM requests WHERE {where} ORDER BY created_at DESC, id DESC "
            f"LIMIT ? OFFSET ?", [*params, f.page_size, (page - 1) * f.page_size]))
        return Page(rows=rows, total=total, page=page, page_size=f.page_size)

    def history_contender_ids(self, f: HistoryFilter) -> list[str]:
        """The contender ids of the requests matching `f` (ignoring page), in the order they
        first appear: what the history export labels and spreads into columns."""
        where, params = _history_where(f)
        return [row[0] for row in self.db.execute(
            f"SELECT contender_id, min(rowid) AS first FROM requests WHERE {where} "
            "AND contender_id IS NOT NULL GROUP BY contender_id ORDER BY first", params)]

    def iter_history(self, f: HistoryFilter, *, chunk_size: int = 5000) -> Iterator[list[HistoryRow]]:
        """Every request matching `f` (ignoring page), newest first, in chunks of HistoryRow (the
        request columns the export reads, never response bodies or logs), each with its images
        (and their metrics) in output order. Keyset pagination on (created_at, id): memory stays
        bounded by `chunk_size` whatever the table size."""
        where, params = _history_where(f, "r")
        select = ", ".join(f"r.{c}" for c in _HISTORY_COLUMNS)
        cursor_key: tuple[str, str] | None = None
        while True:
            extra, extra_params = "", []
            if cursor_key is not None:
                # a row value keeps the created_at index usable (an OR would sort the rest each chunk)
                extra = " AND (r.created_at, r.id) < (?, ?)"
                extra_params = list(cursor_key)
            rows = self.db.execute(
                f"SELECT {select} FROM requests r WHERE {where}{extra} "
                f"ORDER BY r.created_at DESC, r.id DESC LIMIT ?", [*params, *extra_params, chunk_size]).fetchall()
            if not rows:
                return
            images: dict[str, list[ResultImage]] = {r[0]: [] for r in rows}
            ids = list(images)
            for start in range(0, len(ids), CHUNK):
                part = ids[start:start + CHUNK]
                for img in self.db.execute(f"SELECT {IMAGE_SELECT} FROM result_images WHERE request_id IN "
                                           f"({placeholders(len(part))}) ORDER BY request_id, idx", part):
                    image = image_from_tuple(img)
                    images[image.request_id].append(image)
            chunk = []
            for r in rows:
                values = dict(zip(_HISTORY_COLUMNS, r))
                values["dry_run"] = bool(values["dry_run"])
                values["images"] = tuple(images[r[0]])
                chunk.append(fast_build(HistoryRow, values))
            yield chunk
            cursor_key = (rows[-1][1], rows[-1][0])
            if len(rows) < chunk_size:
                return
