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
- Columnar and streamed: the lines are built by column in SQL (`Store.iter_history_csv`: quoted
  exactly as Python's csv writer quotes), only the few cells to neutralise reach `safe_cell`, and
  they are written chunk by chunk, so memory stays flat in the history size. pandas is not
  needed (nor imported) to export.
"""
from __future__ import annotations

import csv
import io
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

from core import store
from core.catalog import contenders
from core.catalog.payloads import canonical_json
from core.errors import DashboardError
from core.store import HISTORY_CELLS, TextGuard

if TYPE_CHECKING:
    from core.store import Store

CHUNK_SIZE = 5000

COLUMNS: tuple[str, ...] = HISTORY_CELLS   # before the `param_<name>` columns an export adds

_DANGEROUS_FIRST = "=+-@\t\r"
# "-5" or "+0.25" typed as text is read by a spreadsheet as a number, never as a formula
_PLAIN_NUMBER = re.compile(r"[+-]?(?:\d+\.?\d*|\.\d+)\Z")


@dataclass(frozen=True)
class ExportResult:
    path: Path
    rows: int
    requests: int


def safe_cell(value: Any) -> Any:
    """A text cell no spreadsheet will run as a formula (see the module invariants)."""
    if isinstance(value, str) and value[:1] in _DANGEROUS_FIRST and not _PLAIN_NUMBER.match(value):
        return "'" + value
    return value


_GUARD = TextGuard(first=_DANGEROUS_FIRST, fix=safe_cell)


@dataclass(frozen=True)
class _Contenders:
    """The contenders of an export: the header's swept-parameter columns, and per contender
    the ready CSV fragment of its `contender` cell and those columns."""
    columns: tuple[str, ...]
    fragments: dict[str, str]

    def cells(self, contender_id: str | None) -> str:
        return self.fragments.get(contender_id or "", "," * len(self.columns))


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


def _export_contenders(st: Store, f: store.HistoryFilter) -> _Contenders:
    by_id = st.get_contenders(st.history_contender_ids(f))
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


def _write(st: Store, f: store.HistoryFilter, out: IO[str], chunk_size: int) -> Iterator[tuple[int, int]]:
    """Write BOM, header and rows to `out`; after each chunk, yield (rows, requests) so far."""
    named = _export_contenders(st, f)
    out.write("\ufeff" + ",".join(_header(named)) + "\r\n")
    rows = requests = 0
    last = None
    for chunk in st.iter_history_csv(f, guard=_GUARD, contender_cells=named.cells, chunk_size=chunk_size):
        out.write("\r\n".join([line for _, line in chunk]))
        out.write("\r\n")
        rows += len(chunk)
        for request_id, _ in chunk:      # a request's image rows are consecutive
            if request_id != last:
                requests += 1
                last = request_id
        yield rows, requests


def iter_csv(st: Store, f: store.HistoryFilter | None = None, *,
             chunk_size: int = CHUNK_SIZE) -> Iterator[str]:
    """The CSV as text chunks (for streaming), one per `chunk_size` rows; the first starts with
    the BOM and the header (alone when nothing matches)."""
    buf = io.StringIO()
    for _ in _write(st, f or store.HistoryFilter(), buf, chunk_size):
        yield buf.getvalue()
        buf.seek(0)
        buf.truncate()
    if buf.tell():
        yield buf.getvalue()


def to_csv(st: Store, out: str | Path, f: store.HistoryFilter | None = None, *,
           chunk_size: int = CHUNK_SIZE) -> ExportResult:
    """Write the filtered history to `out` (through a temporary name then renamed, so a failed
    export never leaves a half-written file under the requested name)."""
    out = Path(out)
    tmp = out.with_name(out.name + ".part")
    rows = requests = 0
    try:
        with open(tmp, "w", encoding="utf-8", newline="", buffering=1 << 20) as fh:
            for rows, requests in _write(st, f or store.HistoryFilter(), fh, chunk_size):
                pass
        tmp.replace(out)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return ExportResult(path=out, rows=rows, requests=requests)


def to_csv_bytes(st: Store, f: store.HistoryFilter | None = None) -> bytes:
    """The whole CSV as bytes, for a page's deferred download button (Streamlit holds a download
    in memory; this builds it chunk by chunk, without a second text copy)."""
    buf = io.BytesIO()
    for text in iter_csv(st, f):
        buf.write(text.encode("utf-8"))
    return buf.getvalue()
