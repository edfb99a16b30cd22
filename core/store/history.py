"""History: every request, filtered, newest first; one page at a time, or streamed for export.

Invariants:
- Reads never load a whole table: a page is LIMIT/OFFSET on indexed columns; `iter_history_csv`
  is one statement read in chunks, so memory stays bounded by the chunk size.
- The page and the CSV export select exactly the same rows: both build their WHERE clause with
  `_history_where`.
- The export's lines are built by column in SQL (`_CELLS`), not row by row in Python: only a
  cell that needs rewriting (a `data:` URI, a guarded first character, a float SQLite would
  write differently from Python) reaches a Python function.
"""
from __future__ import annotations

import dataclasses
import datetime as _dt
import json
from collections.abc import Callable, Iterator
from typing import Any

from core.catalog.payloads import abbreviate, canonical_json
from core.catalog.prompts import OPTION_KEYS
from core.errors import StoreError
from core.store._sql import _Base, build
from core.store.values import REQUEST_STATUSES, HistoryFilter, Page, RequestRecord

MAX_PAGE_SIZE = 500


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


@dataclasses.dataclass(frozen=True)
class TextGuard:
    """A rewrite of the text cells that start with one of the characters of `first` (e.g. a
    spreadsheet's formula triggers): SQL finds them by column, `fix` is called on those only."""
    first: str
    fix: Callable[[Any], Any]


def _abbreviate_text(value: Any) -> Any:
    return abbreviate(value) if isinstance(value, str) and "data:" in value else value


def _abbreviate_json(value: Any) -> Any:
    """Stored payloads carry no data: URI; abbreviate anyway should one slip in by hand."""
    if isinstance(value, str) and "data:" in value:
        return canonical_json(abbreviate(json.loads(value)))
    return value


def _float_text(value: Any) -> Any:
    """Python's shortest round-trip text of a float (what the csv module and pandas write)."""
    return repr(value) if isinstance(value, float) else value


# The export's cells in file order: (name, SQL expression, kind).
# - "plain": text that seldom needs quotes or a guard (ids, times, hashes, options, fal's answers,
#   errors): checked once per row; a row where any of them would need quoting or guarding takes
#   the cell-by-cell path for all of them, so the result is the same, only slower, whatever they hold.
# - "text": the prompt, which often holds commas: guarded and quoted cell by cell.
# - "json": the payload, canonical JSON of an object (`check_payload`): it starts with `{` (never
#   guarded) and holds no raw line break, so only a quote or a comma makes it need quotes.
# - "int", "float", "bool": never quoted or guarded (a negative number stays a number).
# - "raw": already CSV (quoted and guarded by the caller), written as is.
# Option values are text (plans refuse anything else); json_extract would give a number as is.
_CELLS: tuple[tuple[str, str, str], ...] = (
    ("request_id", "r.id", "plain"), ("batch_id", "r.batch_id", "plain"),
    ("group_id", "r.group_id", "plain"), ("rerun_of", "r.rerun_of", "plain"),
    ("created_at", "r.created_at", "plain"), ("submitted_at", "r.submitted_at", "plain"),
    ("completed_at", "r.completed_at", "plain"), ("endpoint", "r.endpoint", "plain"),
    ("contender_id", "r.contender_id", "plain"),
    # "raw": a ready CSV fragment, the contender's label and its swept settings (one or more
    # cells, see `iter_history_csv`), computed once per contender in Python
    ("contender", "_export_contender(r.contender_id)", "raw"),
    ("status", "r.status", "plain"),
    ("dry_run", "CASE WHEN r.dry_run THEN 'True' ELSE 'False' END", "bool"),
    *((key, f"json_extract(NULLIF(r.options_json, ''), '$.{key}')", "plain") for key in OPTION_KEYS),
    ("prompt", "r.prompt", "text"), ("seed", "r.seed", "int"), ("image_size", "r.image_size", "plain"),
    ("reference_ids", "CASE WHEN r.reference_ids IS NULL OR r.reference_ids IN ('', '[]') THEN NULL "
                      "ELSE (SELECT group_concat(value, ' ') FROM json_each(r.reference_ids)) END", "plain"),
    ("payload_hash", "r.payload_hash", "plain"),
    ("payload", "CASE WHEN instr(r.payload_json, 'data:') THEN _export_abbreviate_json(r.payload_json) "
                "ELSE r.payload_json END", "json"),
    ("fal_request_id", "r.fal_request_id", "plain"),
    ("queue_time_s", "r.queue_time_s", "float"), ("inference_time_s", "r.inference_time_s", "float"),
    ("total_time_s", "r.total_time_s", "float"), ("http_status", "r.http_status", "int"),
    ("estimated_cost", "r.estimated_cost", "float"), ("error_type", "r.error_type", "plain"),
    ("error_message", "r.error_message", "plain"),
    ("image_idx", "i.idx", "int"),
    ("image_fal_url", "CASE WHEN instr(i.fal_url, 'data:') THEN _export_abbreviate(i.fal_url) "
                      "ELSE i.fal_url END", "plain"),
    ("image_storage_backend", "i.storage_backend", "plain"),
    ("image_storage_path", "i.storage_path", "plain"), ("image_sha256", "i.sha256", "plain"),
    ("image_width", "i.width", "int"), ("image_height", "i.height", "int"),
    ("image_content_type", "i.content_type", "plain"), ("image_size_bytes", "i.size_bytes", "int"),
    ("image_nsfw", "CASE WHEN i.nsfw IS NULL THEN NULL WHEN i.nsfw THEN 'True' ELSE 'False' END", "bool"),
    ("image_face_status", "i.face_status", "plain"), ("image_face_distance", "i.face_distance", "float"),
    ("image_phash_distance", "i.phash_distance", "int"), ("image_ciede2000", "i.ciede2000", "float"),
    ("image_ssim", "i.ssim", "float"), ("image_check_flags", "i.check_flags", "plain"),
    ("image_metrics_at", "i.metrics_at", "plain"),
)
HISTORY_CELLS: tuple[str, ...] = tuple(name for name, _, _ in _CELLS)
# what makes a field need quotes in a CSV line (Python's csv.QUOTE_MINIMAL, CRLF line ends)
_QUOTE_WHEN = ',"\r\n'


def _first_in(column: str, chars: str) -> str:
    """SQL: the text of `column` starts with one of `chars`."""
    return f"unicode({column}) IN ({', '.join(str(ord(c)) for c in chars)})"


def _quoted(column: str) -> str:
    """SQL: the field as Python's csv writer writes it (quoted, quotes doubled, when needed)."""
    needs = " OR ".join(f"instr({column}, {_sql_char(c)})" for c in _QUOTE_WHEN)
    return f"CASE WHEN {needs} THEN '\"' || replace({column}, '\"', '\"\"') || '\"' ELSE {column} END"


def _sql_char(c: str) -> str:
    return "'" + c.replace("'", "''") + "'" if c.isprintable() else f"char({ord(c)})"


def _history_csv_sql(where: str, guard: TextGuard | None) -> str:
    """The statement giving (request_id, CSV line) per export row, in three steps so no
    expression is computed twice: the cells (ordered, with the row check of the plain cells),
    the guard on the text cells, then the line (`printf`, one call per row)."""
    first = guard.first if guard else ""
    cells = [f"{expr} AS {name}" for name, expr, _ in _CELLS]
    plain = [name for name, _, kind in _CELLS if kind == "plain"]
    guarded = []
    for name, _, kind in _CELLS:
        if kind == "text" and first:
            name = f"CASE WHEN {_first_in(name, first)} THEN _export_guard({name}) ELSE {name} END AS {name}"
        guarded.append(name)
    # the plain cells run together, and their first characters (printf's `!` counts characters)
    guarded.append(f"printf('{'%s' * len(plain)}', {', '.join(plain)}) AS _plain")
    guarded.append(f"printf('{'%!.1s' * len(plain)}', {', '.join(plain)}) AS _firsts")
    plain_ok = " AND ".join([f"NOT instr(_plain, {_sql_char(c)})" for c in _QUOTE_WHEN]
                            + [f"NOT instr(_firsts, {_sql_char(c)})" for c in first])

    def line(fast: bool) -> str:
        fields = []
        for name, _, kind in _CELLS:
            if kind == "text" or (kind == "plain" and not fast):
                value = name
                if kind == "plain" and first:
                    value = f"(CASE WHEN {_first_in(name, first)} THEN _export_guard({name}) ELSE {name} END)"
                fields.append(_quoted(value))
            elif kind == "json":
                fields.append(f"CASE WHEN instr({name}, '\"') OR instr({name}, ',') "
                              f"THEN '\"' || replace({name}, '\"', '\"\"') || '\"' ELSE {name} END")
            elif kind == "float":
                text = f"CAST({name} AS TEXT)"
                # SQLite writes 15 significant digits; where that is not Python's text, ask Python
                fields.append(f"CASE WHEN {name} IS NULL OR ({name} <> 0 AND instr({text}, 'e') = 0 "
                              f"AND CAST({text} AS REAL) = {name}) THEN {name} ELSE _export_float({name}) END")
            else:
                fields.append(name)
        return f"printf('{','.join(['%s'] * len(fields))}', {', '.join(fields)})"

    return (f"SELECT request_id, CASE WHEN {plain_ok} THEN {line(True)} ELSE {line(False)} END FROM ("
            f"SELECT {', '.join(guarded)} FROM ("
            f"SELECT {', '.join(cells)} FROM requests r LEFT JOIN result_images i ON i.request_id = r.id "
            f"WHERE {where} ORDER BY r.created_at DESC, r.id DESC, i.idx"
            f") LIMIT -1 OFFSET 0)")


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

    def iter_history_csv(self, f: HistoryFilter, *, guard: TextGuard | None = None,
                         contender_cells: Callable[[str | None], str] = lambda contender_id: "",
                         chunk_size: int = 5000) -> Iterator[list[tuple[str, str]]]:
        """Every request matching `f` (ignoring page) as lines of CSV, `(request_id, line)`, in
        chunks of `chunk_size`: one line per request and result image (one with empty image
        cells for a request without images), newest request first, its images by index; the
        fields are `HISTORY_CELLS`, written exactly as Python's csv writer writes them (minimal
        quoting, floats as `repr`, None empty), booleans as `True`/`False`, every `data:` URI
        abbreviated, and `guard.fix` applied to the text cells that start with `guard.first`.
        The `contender` cell is `contender_cells(contender_id)`, a ready CSV fragment (the
        caller's: a label and one cell per swept setting).

        The lines are built by column in SQL, one `printf` per row; only a cell that needs
        rewriting (a data: URI, a guarded first character, a float SQLite would print otherwise)
        reaches Python. One statement read with `fetchmany`: memory stays bounded by the chunk
        size whatever the table size, and under WAL the read never blocks a writer."""
        where, params = _history_where(f, "r")
        conn = self.db.conn
        conn.create_function("_export_abbreviate", 1, _abbreviate_text, deterministic=True)
        conn.create_function("_export_abbreviate_json", 1, _abbreviate_json, deterministic=True)
        conn.create_function("_export_float", 1, _float_text, deterministic=True)
        conn.create_function("_export_contender", 1, contender_cells, deterministic=True)
        if guard is not None:
            conn.create_function("_export_guard", 1, guard.fix, deterministic=True)
        cursor = conn.execute(_history_csv_sql(where, guard), params)
        try:
            while rows := cursor.fetchmany(chunk_size):
                yield rows
        finally:
            cursor.close()
