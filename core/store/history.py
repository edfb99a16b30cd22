"""History: every request, filtered, newest first; one page at a time, or streamed for export.

Invariants:
- Reads never load a whole table: a page is LIMIT/OFFSET on indexed columns; `iter_history_csv`
  is one statement read in chunks, so memory stays bounded by the chunk size.
- The page and the CSV export select exactly the same rows: both build their WHERE clause with
  `_history_where`.
- The export's lines are built by column in SQL (`_CELLS`), not row by row in Python: only a
  cell that needs rewriting (a `data:` URI, a guarded first character, a float SQLite would
  write differently from Python) reaches a Python function.
- A final request's lines are built once and stored (`export_lines`, with the version of the
  statement that built them); the export reads them as they are. A stored line never outlives
  its cells: triggers (migration m016) delete a request's lines on ANY write to the request or
  its images, whoever writes, and a line of another version is never read. Storing them is only
  a matter of speed: a request without current lines is built by the export, with the same
  bytes (tests/export/test_export_equivalence.py compares both with the former export).
"""
from __future__ import annotations

import datetime as _dt
import functools
import logging
import sqlite3
import zlib
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

from core.errors import StoreError
from core.store._sql import _Base, build
from core.store.export_cells import (  # noqa: F401 - _CELLS: read by tests
    _CELLS, _DANGEROUS_FIRST, _FINAL, _HEAD, _QUOTE_WHEN, HISTORY_CELLS, _abbreviate_json, _abbreviate_text,
    _float_text, safe_cell)
from core.store.boundary import sqlite_boundary
from core.values import REQUEST_STATUSES, HistoryFilter, Page, RequestRecord

MAX_PAGE_SIZE = 500
log = logging.getLogger(__name__)


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
    """The SQL WHERE clause (without the keyword; "TRUE" when empty) and its parameters for a filter."""
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
    return (" AND ".join(clauses) or "TRUE"), params




def _first_in(column: str, chars: str) -> str:
    """SQL: the text of `column` starts with one of `chars`."""
    return f"unicode({column}) IN ({', '.join(str(ord(c)) for c in chars)})"


def _quoted(column: str) -> str:
    """SQL: the field as Python's csv writer writes it (quoted, quotes doubled, when needed)."""
    needs = " OR ".join(f"instr({column}, {_sql_char(c)})" for c in _QUOTE_WHEN)
    return f"CASE WHEN {needs} THEN '\"' || replace({column}, '\"', '\"\"') || '\"' ELSE {column} END"


def _sql_char(c: str) -> str:
    return "'" + c.replace("'", "''") + "'" if c.isprintable() else f"char({ord(c)})"


_UDFS = {"_export_abbreviate": _abbreviate_text, "_export_abbreviate_json": _abbreviate_json,
         "_export_float": _float_text, "_export_guard": safe_cell}


@functools.lru_cache(maxsize=64)
def _parts_sql(where: str) -> str:
    """The statement giving, per export row of the requests matching `where` (alias `r`, images
    `i`), in no particular order: request_id, idx (the image index, -1 for a request without
    images), contender_id, created_at, status, and the row's CSV text in two parts, `head` (the cells
    before the contender's) and `tail` (those after it), each cells joined by commas.

    In three steps so no expression is computed twice: the cells (with the row check of the plain
    cells), the guard on the text cells, then the parts (`printf`, one call per part)."""
    first = _DANGEROUS_FIRST
    cells = [f"{expr} AS {name}" for name, expr, kind in _CELLS if kind != "raw"]
    plain = [name for name, _, kind in _CELLS if kind == "plain"]
    guarded = []
    for name, _, kind in _CELLS:
        if kind == "text":
            guarded.append(f"CASE WHEN {_first_in(name, first)} THEN _export_guard({name}) ELSE {name} END AS {name}")
        elif kind != "raw":
            guarded.append(name)
    # the plain cells run together, and their first characters (printf's `!` counts characters)
    guarded.append(f"printf('{'%s' * len(plain)}', {', '.join(plain)}) AS _plain")
    guarded.append(f"printf('{'%!.1s' * len(plain)}', {', '.join(plain)}) AS _firsts")
    plain_ok = " AND ".join([f"NOT instr(_plain, {_sql_char(c)})" for c in _QUOTE_WHEN]
                            + [f"NOT instr(_firsts, {_sql_char(c)})" for c in first])

    def fields(fast: bool) -> list[str]:
        out = []
        for name, _, kind in _CELLS:
            if kind == "text" or (kind == "plain" and not fast):
                value = name
                if kind == "plain":
                    value = f"(CASE WHEN {_first_in(name, first)} THEN _export_guard({name}) ELSE {name} END)"
                out.append(_quoted(value))
            elif kind == "json":
                out.append(f"CASE WHEN instr({name}, '\"') OR instr({name}, ',') "
                           f"THEN '\"' || replace({name}, '\"', '\"\"') || '\"' ELSE {name} END")
            elif kind == "float":
                text = f"CAST({name} AS TEXT)"
                # SQLite writes 15 significant digits; where that is not Python's text, ask Python
                out.append(f"CASE WHEN {name} IS NULL OR ({name} <> 0 AND instr({text}, 'e') = 0 "
                           f"AND CAST({text} AS REAL) = {name}) THEN {name} ELSE _export_float({name}) END")
            else:
                out.append(name)
        return out

    def part(fast: bool, head: bool) -> str:
        f = fields(fast)
        f = f[:_HEAD] if head else f[_HEAD + 1:]
        return f"printf('{','.join(['%s'] * len(f))}', {', '.join(f)})"

    return (f"SELECT request_id, coalesce(image_idx, -1) AS idx, contender_id, created_at, status, "
            f"CASE WHEN {plain_ok} THEN {part(True, True)} ELSE {part(False, True)} END AS head, "
            f"CASE WHEN {plain_ok} THEN {part(True, False)} ELSE {part(False, False)} END AS tail FROM ("
            f"SELECT {', '.join(guarded)} FROM ("
            f"SELECT {', '.join(cells)} FROM requests r LEFT JOIN result_images i ON i.request_id = r.id "
            f"WHERE {where} LIMIT -1 OFFSET 0))")


# Which text the stored lines hold: the statement that writes them, and a number to raise when a
# Python function behind it (`safe_cell`, `abbreviate`, `_float_text`) changes what it writes.
# Lines of another version are not used (the export computes those rows) and are rewritten on
# the next fill.
_LINES_FORMAT = 1
EXPORT_LINES_VERSION = f"{_LINES_FORMAT}-{zlib.crc32(_parts_sql('1').encode()):08x}"
_FILL_CHUNK = 500


def _history_csv_sql(where: str) -> str:
    """The statement giving, per export row, newest request first, its images by index:
    (request_id, the CSV text before the contender's cells and a comma, contender_id, a comma and
    the text after them, created_at, idx, fill), the texts as UTF-8 bytes (SQLite's own, never
    decoded into Python text). The stored lines of the current version where the request has
    them (fill 0), else the lines built from its cells (fill 1 when the request is final: its
    lines are missing and worth storing). Parameters: `where`'s, version, version, `where`'s.

    A compound SELECT ordered as a whole: SQLite merges its two parts, each in order, so the
    stored lines come in the order of an index (requests by `(created_at, id, contender_id)`,
    whose rows are never read) and only the lines of requests created at the same moment are
    sorted (by id, idx). The contender's cells are put in by the caller (a dict lookup per row,
    whatever the number of contenders; a join in SQL scanned them all on every row)."""
    # the requests without current lines, found from two indexes (never reading the requests'
    # rows, a quarter of a second at 100,000), then only those looked up to build theirs
    computed = _parts_sql("r.id IN (SELECT s.id FROM requests s WHERE NOT EXISTS (SELECT 1 FROM "
                          f"export_lines l WHERE l.request_id = s.id AND l.version = ?)) AND ({where})")
    final = ", ".join(f"'{s}'" for s in _FINAL)
    return ("SELECT r.id, CAST(l.head || ',' AS BLOB), r.contender_id, CAST(',' || l.tail AS BLOB), "
            "r.created_at, l.idx, 0 FROM requests r CROSS JOIN export_lines l ON l.request_id = r.id "
            f"WHERE ({where}) AND l.version = ? "
            "UNION ALL "
            "SELECT p.request_id, CAST(p.head || ',' AS BLOB), p.contender_id, CAST(',' || p.tail AS BLOB), "
            f"p.created_at, p.idx, p.status IN ({final}) FROM ({computed}) p "
            "ORDER BY 5 DESC, 1 DESC, 6")


class HistoryMixin(_Base):
    """Filtered reads of `requests` (and their `result_images`) for History and the CSV export."""

    @sqlite_boundary
    def count_history(self, f: HistoryFilter) -> int:
        where, params = _history_where(f)
        return self._one(f"SELECT count(*) FROM requests WHERE {where}", params)[0]

    @sqlite_boundary
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

    @sqlite_boundary
    def history_contender_ids(self, f: HistoryFilter) -> list[str]:
        """The contender ids of the requests matching `f` (ignoring page), in the order they
        first appear: what the history export labels and spreads into columns."""
        where, params = _history_where(f)
        return [row[0] for row in self.db.execute(
            f"SELECT contender_id, min(rowid) AS first FROM requests WHERE {where} "
            "AND contender_id IS NOT NULL GROUP BY contender_id ORDER BY first", params)]

    @sqlite_boundary
    def iter_history_csv(self, f: HistoryFilter, *, contender_cells: Mapping[str, str] | None = None,
                         other_contender: str = "", chunk_size: int = 5000) -> Iterator[list[tuple[str, bytes]]]:
        """Every request matching `f` (ignoring page) as lines of CSV, `(request_id, line)` with
        the line in UTF-8 bytes, in chunks of `chunk_size`: one line per request and result image
        (one with empty image cells for a request without images), newest request first, its
        images by index; the fields are `HISTORY_CELLS`, written exactly as Python's csv writer
        writes them (minimal quoting, floats as `repr`, None empty), booleans as `True`/`False`,
        every `data:` URI abbreviated, and `safe_cell` applied to the text cells. The `contender`
        cell is `contender_cells[contender_id]`, a ready CSV fragment (the caller's: a label and
        one cell per swept setting), or `other_contender` for a contender not in the mapping.

        A final request's lines are stored (`export_lines`, see `refresh_export_lines`) and read
        as they are. The other rows (requests still under way, lines never written or of an
        older format) are built by column in SQL, one `printf` per part, only a cell that needs
        rewriting (a data: URI, a guarded first character, a float SQLite would print otherwise)
        reaching Python; the final requests among them get their lines stored once the read is
        done (when the store may write), so the next export reads them ready. One statement read
        with `fetchmany`: memory stays bounded by the chunk size whatever the table size, and
        under WAL the read never blocks a writer."""
        where, params = _history_where(f, "r")
        cells = {cid: text.encode("utf-8") for cid, text in (contender_cells or {}).items()}
        other = other_contender.encode("utf-8")
        to_fill: list[str] = []
        for rows in self._export_rows(where, params, chunk_size):
            to_fill.extend(row[0] for row in rows if row[6])
            yield [(row[0], row[1] + cells.get(row[2], other) + row[3]) for row in rows]
        if to_fill:
            try:
                self.refresh_export_lines(to_fill)
            except StoreError as e:   # a cache: this export was complete without it
                log.info("export lines of %d requests not stored (%s)", len(set(to_fill)), e)

    def _export_rows(self, where: str, params: list[Any], chunk_size: int) -> Iterator[list[tuple]]:
        """The export's rows in chunks: (request_id, head and a comma as bytes, contender_id, a
        comma and tail as bytes, created_at, idx, fill); Postgres's in core/store/export_pg.py."""
        if self.db.engine == "postgres":
            from core.store import export_pg

            yield from export_pg.iter_rows(self.db, where, params, chunk_size, EXPORT_LINES_VERSION)
            return
        self._export_functions()
        cursor = self.db.conn.execute(_history_csv_sql(where),
                                      [*params, EXPORT_LINES_VERSION, EXPORT_LINES_VERSION, *params])
        try:
            while rows := cursor.fetchmany(chunk_size):
                yield rows
        finally:
            cursor.close()

    def _export_functions(self) -> None:
        """The Python functions the export's SQL calls, on this connection (once)."""
        conn = self.db.conn
        if getattr(self, "_export_conn", None) is not conn:
            register_export_functions(conn)
            self._export_conn = conn

    def _keep_export_lines(self, request_id: str) -> None:
        """After a write that made a request final or changed a final request's images: store its
        lines now, so no export has to build them. A cache: should SQLite refuse (disk full, a lock
        held too long), the write that called this stands and an export builds the lines."""
        try:
            self.refresh_export_lines([request_id])
        except (sqlite3.Error, StoreError) as e:
            log.info("export lines of request %s not stored (%s)", request_id, e)

    @sqlite_boundary
    def refresh_export_lines(self, request_ids: Sequence[str] | None = None) -> int:
        """Write the stored CSV lines of the given final requests (all final requests whose lines
        are missing or of another version when None); returns how many requests were written.

        Triggers (migration m016) delete a request's lines whenever the request or one of its
        images changes, by whatever writer, so a stored line never outlives its cells; the
        store's write methods that make a request final or change its images call this, and the
        export calls it for the final requests it had to build (written by hand, lines of an
        older format). Requests not final yet are never stored: they change."""
        if self.read_only:
            return 0
        if self.db.engine == "sqlite":
            self._export_functions()
        stale = stale_export_lines(self.db) if request_ids is None else list(dict.fromkeys(request_ids))
        for start in range(0, len(stale), _FILL_CHUNK):
            with self._write_transaction():
                write_export_lines(self.db, stale[start:start + _FILL_CHUNK])
        return len(stale)


def stale_export_lines(db: Any) -> list[str]:
    """The final requests whose stored lines are missing or of another version."""
    return [row[0] for row in db.execute(
        f"SELECT r.id FROM requests r WHERE r.status IN ({', '.join('?' * len(_FINAL))}) "
        "AND NOT EXISTS (SELECT 1 FROM export_lines l WHERE l.request_id = r.id AND l.version = ?)",
        [*_FINAL, EXPORT_LINES_VERSION])]


def write_export_lines(db: Any, request_ids: Sequence[str]) -> None:
    """Replace the stored lines of these requests by their current ones (none for a request not
    final). Inside a write transaction, on a connection with the export's functions (on
    Postgres, core/store/export_pg.py builds them)."""
    if db.engine == "postgres":
        from core.store.export_pg import write_lines

        write_lines(db, request_ids, EXPORT_LINES_VERSION)
        return
    marks = ", ".join("?" * len(request_ids))
    db.execute(f"DELETE FROM export_lines WHERE request_id IN ({marks})", list(request_ids))
    db.execute("INSERT INTO export_lines (request_id, idx, version, head, tail) "
               "SELECT request_id, idx, ?, head, tail FROM ("
               # `+`: find the requests by id, never by scanning the status index
               + _parts_sql(f"r.id IN ({marks}) AND +r.status IN ({', '.join('?' * len(_FINAL))})")
               + ")", [EXPORT_LINES_VERSION, *request_ids, *_FINAL])


def register_export_functions(conn: Any) -> None:
    """The Python functions the export's SQL calls, on `conn`."""
    for name, fn in _UDFS.items():
        conn.create_function(name, 1, fn, deterministic=True)
