"""The history export's lines on Postgres: the same bytes as on SQLite, built in Python.

On SQLite the lines are built by column in SQL (`core.store.history._parts_sql`: printf and the
export's functions registered on the connection); Postgres has neither, so here a row's cells are
read as they are stored and written by `parts`, which follows `_CELLS` cell by cell with the
same rules (Python's csv quoting, `safe_cell`, `abbreviate`, floats as `repr`). The stored
lines (`export_lines`, kept never stale by the triggers of m017, translated to plpgsql) make the
export of final requests a single indexed read on both engines; tests/export checks both
engines' files byte for byte against the former export.
"""
from __future__ import annotations

import heapq
import json
import re
from collections.abc import Iterator, Sequence
from typing import Any

from core.catalog.prompts import OPTION_KEYS
from core.store.export_cells import (_CELLS, _DANGEROUS_FIRST, _FINAL, _HEAD, _QUOTE_WHEN, _abbreviate_json,
                                     _abbreviate_text, safe_cell)

_REQUEST_COLUMNS = ("id", "batch_id", "group_id", "rerun_of", "created_at", "submitted_at", "completed_at",
                    "endpoint", "contender_id", "status", "dry_run", "options_json", "prompt", "seed",
                    "image_size", "reference_ids", "payload_hash", "payload_json", "fal_request_id",
                    "queue_time_s", "inference_time_s", "total_time_s", "http_status", "estimated_cost",
                    "error_type", "error_message")
_IMAGE_COLUMNS = ("idx", "fal_url", "storage_backend", "storage_path", "sha256", "width", "height",
                  "content_type", "size_bytes", "nsfw", "face_status", "face_distance", "phash_distance",
                  "ciede2000", "ssim", "check_flags", "metrics_at")
_SELECT = ("SELECT " + ", ".join(f"r.{c}" for c in _REQUEST_COLUMNS) + ", "
           + ", ".join(f"i.{c} AS i_{c}" for c in _IMAGE_COLUMNS)
           + " FROM requests r LEFT JOIN result_images i ON i.request_id = r.id")
_R = {c: n for n, c in enumerate(_REQUEST_COLUMNS)}
_I = {c: len(_REQUEST_COLUMNS) + n for n, c in enumerate(_IMAGE_COLUMNS)}


def _bool(v: Any) -> str:
    return "" if v is None else ("True" if v else "False")


def _reference_ids(v: Any) -> str | None:
    if v is None or v in ("", "[]"):
        return None
    return " ".join(str(x) for x in json.loads(v))


def _options(row: Sequence[Any]) -> dict[str, Any]:
    text = row[_R["options_json"]]
    return json.loads(text) if text else {}


def _getters() -> list[tuple[str, Any]]:
    """Per export cell (bar the contender's), its kind and how to read it from a row."""
    out: list[tuple[str, Any]] = []
    for name, expr, kind in _CELLS:
        if kind == "raw":
            continue
        if name in OPTION_KEYS:
            out.append((kind, lambda row, opts, k=name: opts.get(k)))
        elif name == "dry_run":
            out.append(("bool", lambda row, opts: "True" if row[_R["dry_run"]] else "False"))
        elif name == "image_nsfw":
            out.append(("bool", lambda row, opts: _bool(row[_I["nsfw"]])))
        elif name == "reference_ids":
            out.append((kind, lambda row, opts: _reference_ids(row[_R["reference_ids"]])))
        elif name == "payload":
            out.append((kind, lambda row, opts: _abbreviate_json(row[_R["payload_json"]])))
        elif name == "image_fal_url":
            out.append((kind, lambda row, opts: _abbreviate_text(row[_I["fal_url"]])))
        else:   # a column as it is stored: `r.<column>` or `i.<column>`
            alias, column = re.fullmatch(r"([ri])\.(\w+)", expr).groups()
            out.append((kind, lambda row, opts, at=(_R if alias == "r" else _I)[column]: row[at]))
    return out


_GETTERS = _getters()


def _field(kind: str, value: Any) -> str:
    if value is None:
        return ""
    if kind == "float":
        return repr(float(value))
    if kind in ("int", "bool"):
        return str(value)
    text = str(value)
    if kind in ("plain", "text") and text and text[0] in _DANGEROUS_FIRST:
        text = safe_cell(text)
    if kind == "json":
        needs = '"' in text or "," in text
    else:
        needs = any(c in text for c in _QUOTE_WHEN)
    return '"' + text.replace('"', '""') + '"' if needs else text


def parts(row: Sequence[Any]) -> tuple[str, str]:
    """A row of `_SELECT` as its CSV text before the contender's cells and after them."""
    opts = _options(row)
    fields = [_field(kind, get(row, opts)) for kind, get in _GETTERS]
    return ",".join(fields[:_HEAD]), ",".join(fields[_HEAD:])


def _computed(db: Any, where: str, params: Sequence[Any], chunk_size: int, version: str) -> Iterator[tuple]:
    """The export rows of the requests matching `where` that have no current lines, in the
    export's order, as (request_id, head, contender_id, tail, created_at, idx, fill)."""
    sql = (f"{_SELECT} WHERE ({where}) AND NOT EXISTS (SELECT 1 FROM export_lines l WHERE "
           "l.request_id = r.id AND l.version = ?) ORDER BY r.created_at DESC, r.id DESC, i.idx")
    for row in db.conn.stream(sql, [*params, version], chunk_size):
        head, tail = parts(row)
        idx = row[_I["idx"]]
        yield (row[0], head, row[_R["contender_id"]], tail, row[_R["created_at"]],
               -1 if idx is None else idx, row[_R["status"]] in _FINAL)


def iter_rows(db: Any, where: str, params: Sequence[Any], chunk_size: int, version: str) -> Iterator[list[tuple]]:
    """The export's rows, stored lines (of `version`, history.EXPORT_LINES_VERSION) and computed
    ones merged in the export's order (newest request first, ties by id, images by index), in
    chunks; the texts are UTF-8 bytes with the commas around the contender's cells, as
    `history._history_csv_sql` gives them."""
    stored_sql = ("SELECT r.id, l.head, r.contender_id, l.tail, r.created_at, l.idx, false FROM requests r "
                  f"JOIN export_lines l ON l.request_id = r.id WHERE ({where}) AND l.version = ? "
                  "ORDER BY r.created_at DESC, r.id DESC, l.idx")
    # one snapshot for both reads (a request finishing meanwhile is in one of them, never both
    # nor neither), streamed as the server reads it
    began = not db.conn.in_transaction
    if began:
        db.execute("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")
    try:
        stored = db.conn.stream(stored_sql, [*params, version], chunk_size)
        merged = heapq.merge(stored, _computed(db, where, params, chunk_size, version),
                             key=lambda r: (r[4], r[0], -r[5]), reverse=True)
        chunk: list[tuple] = []
        for r in merged:
            chunk.append((r[0], (r[1] + ",").encode(), r[2], ("," + r[3]).encode(), r[4], r[5], r[6]))
            if len(chunk) >= chunk_size:
                yield chunk
                chunk = []
        if chunk:
            yield chunk
    finally:
        if began and db.conn.in_transaction:
            db.execute("COMMIT")


def write_lines(db: Any, request_ids: Sequence[str], version: str) -> None:
    """Replace the stored lines of these requests by their current ones (none for a request not
    final); inside a write transaction."""
    marks = ", ".join("?" * len(request_ids))
    db.execute(f"DELETE FROM export_lines WHERE request_id IN ({marks})", list(request_ids))
    rows = []
    for row in db.execute(f"{_SELECT} WHERE r.id IN ({marks}) AND r.status IN ({', '.join('?' * len(_FINAL))})",
                          [*request_ids, *_FINAL]).fetchall():
        head, tail = parts(row)
        idx = row[_I["idx"]]
        rows.append((row[0], -1 if idx is None else idx, version, head, tail))
    if rows:
        db.conn.executemany("INSERT INTO export_lines (request_id, idx, version, head, tail) "
                            "VALUES (?, ?, ?, ?, ?)", rows)
