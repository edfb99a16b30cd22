"""CSV export of the request history, selected by the same `HistoryFilter` as the page.

Invariants:
- One row per request AND result image: request columns repeat on each of its image rows; a
  request without images (failed, cancelled, dry run) has one row with the image columns empty.
  So a spreadsheet filter on `image_idx` or `status` never has to split joined cells.
- Prompt options are separate columns (`subject`, `purpose`, ... in `prompts.OPTION_KEYS` order).
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

import io
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

from core import store
from core.store import HISTORY_CELLS, TextGuard

if TYPE_CHECKING:
    from core.store import Store

CHUNK_SIZE = 5000

COLUMNS: tuple[str, ...] = HISTORY_CELLS

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


def _write(st: Store, f: store.HistoryFilter, out: IO[str], chunk_size: int) -> Iterator[tuple[int, int]]:
    """Write BOM, header and rows to `out`; after each chunk, yield (rows, requests) so far."""
    out.write("\ufeff" + ",".join(COLUMNS) + "\r\n")
    rows = requests = 0
    last = None
    for chunk in st.iter_history_csv(f, guard=_GUARD, chunk_size=chunk_size):
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
