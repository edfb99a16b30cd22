"""CSV export of the request history, selected by the same `HistoryFilter` as the page.

Invariants:
- One row per request AND result image: request columns repeat on each of its image rows; a
  request without images (failed, cancelled, dry run) has one row with the image columns empty.
  So a spreadsheet filter on `image_idx` or `status` never has to split joined cells.
- Prompt options are separate columns (`subject`, `purpose`, ... in `prompts.OPTION_KEYS` order).
- Each request's contender (core/catalog/contenders.py) is named by `contender_id` and
  `contender` (its label among the contenders of the export), followed by one `param_<name>`
  column per parameter swept among them (empty for a contender without that parameter).
- Spreadsheet-safe: a text cell starting with `=`, `+`, `-`, `@`, a tab or a carriage return is
  prefixed with `'` so no spreadsheet runs it as a formula; numeric columns stay numbers (a real
  negative number is never touched) and a text cell that is only a plain number is left as is.
- UTF-8 with a byte order mark, CRLF line ends, so Excel opens accents and emoji right.
- No secret and no `data:` URI: no credentials are stored at all, and every `data:` URI is
  abbreviated. Response bodies and logs are not exported.
- Columnar and streamed: each final request's line is kept ready in the store, written when the
  request or its images change (`Store.refresh_export_lines`; the contender's cells, which depend
  on the export, are put in as it reads), and the other rows are built by column in SQL
  (`Store.iter_history_csv`: quoted exactly as Python's csv writer quotes, only the few cells to
  neutralise reaching `safe_cell`). Written chunk by chunk, so memory stays flat in the history
  size. pandas is not needed (nor imported) to export.
"""
from __future__ import annotations

import csv
import io
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from core.values import HistoryFilter
from core.catalog import contenders
from core.catalog.payloads import canonical_json
from core.errors import DashboardError
from core.store import HISTORY_CELLS, Store, safe_cell

CHUNK_SIZE = 5000

COLUMNS: tuple[str, ...] = HISTORY_CELLS   # before the `param_<name>` columns an export adds


@dataclass(frozen=True)
class ExportResult:
    path: Path
    rows: int
    requests: int


@dataclass(frozen=True)
class _Contenders:
    """The contenders of an export: the header's swept-parameter columns, and per contender
    the ready CSV fragment of its `contender` cell and those columns."""
    columns: tuple[str, ...]
    fragments: dict[str, str]

    @property
    def other(self) -> str:
        """The cells of a request without a known contender: all empty."""
        return "," * len(self.columns)


def _schema_parameters(endpoint: str) -> frozenset[str]:
    from core.catalog import registry

    try:
        return frozenset(registry.get_endpoint(endpoint).schema.get("properties", {}))
    except DashboardError:
        return frozenset()


def _csv_fragment(cells: Sequence[Any]) -> str:
    buf = io.StringIO()
    csv.writer(buf, lineterminator="").writerow([safe_cell(c) for c in cells])
    return buf.getvalue()


def _export_contenders(store: Store, f: HistoryFilter) -> _Contenders:
    by_id = store.get_contenders(store.history_contender_ids(f))
    labels = contenders.labels(by_id.values())
    parameters = tuple(dict.fromkeys(a.parameter for a in contenders.swept_axes(by_id.values())))
    fragments = {}
    for cid, c in by_id.items():
        values = []
        for p in parameters:
            value = c.value(p) if p in _schema_parameters(c.endpoint) else None
            values.append(value if value is None or isinstance(value, (int, float, str)) else canonical_json(value))
        fragments[cid] = _csv_fragment([labels.get(cid, ""), *values])
    return _Contenders(tuple(f"param_{p}" for p in parameters), fragments)


def _header(named: _Contenders) -> list[str]:
    i = COLUMNS.index("contender") + 1
    return [*COLUMNS[:i], *named.columns, *COLUMNS[i:]]


def _write(store: Store, f: HistoryFilter, out: IO[bytes], chunk_size: int) -> Iterator[tuple[int, int]]:
    """Write BOM, header and rows to `out` (UTF-8 bytes, as SQLite holds them: never decoded
    and encoded again); after each chunk, yield (rows, requests) so far."""
    named = _export_contenders(store, f)
    out.write(("\ufeff" + ",".join(_header(named)) + "\r\n").encode("utf-8"))
    rows = requests = 0
    last = None
    for chunk in store.iter_history_csv(f, contender_cells=named.fragments, other_contender=named.other,
                                     chunk_size=chunk_size):
        out.write(b"\r\n".join([line for _, line in chunk]))
        out.write(b"\r\n")
        rows += len(chunk)
        for request_id, _ in chunk:      # a request's image rows are consecutive
            if request_id != last:
                requests += 1
                last = request_id
        yield rows, requests


def iter_csv(store: Store, f: HistoryFilter | None = None, *,
             chunk_size: int = CHUNK_SIZE) -> Iterator[str]:
    """The CSV as text chunks (for streaming), one per `chunk_size` rows; the first starts with
    the BOM and the header (alone when nothing matches)."""
    for data in _chunks(store, f, chunk_size):
        yield data.decode("utf-8")


def _chunks(store: Store, f: HistoryFilter | None, chunk_size: int) -> Iterator[bytes]:
    buf = io.BytesIO()
    for _ in _write(store, f or HistoryFilter(), buf, chunk_size):
        yield buf.getvalue()
        buf.seek(0)
        buf.truncate()
    if buf.tell():
        yield buf.getvalue()


def to_csv(store: Store, out: str | Path, f: HistoryFilter | None = None, *,
           chunk_size: int = CHUNK_SIZE) -> ExportResult:
    """Write the filtered history to `out` (through a temporary name then renamed, so a failed
    export never leaves a half-written file under the requested name)."""
    out = Path(out)
    tmp = out.with_name(out.name + ".part")
    rows = requests = 0
    try:
        with open(tmp, "wb", buffering=1 << 20) as fh:
            for rows, requests in _write(store, f or HistoryFilter(), fh, chunk_size):
                pass
        tmp.replace(out)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return ExportResult(path=out, rows=rows, requests=requests)


def to_csv_bytes(store: Store, f: HistoryFilter | None = None) -> bytes:
    """The whole CSV as bytes, for a page's deferred download button (Streamlit holds a download
    in memory; this builds it chunk by chunk, with no text copy)."""
    buf = io.BytesIO()
    for _ in _write(store, f or HistoryFilter(), buf, CHUNK_SIZE):
        pass
    return buf.getvalue()
