"""CSV export of the request history (pandas), selected by the same `HistoryFilter` as the page.

Invariants:
- One row per request AND result image: request columns repeat on each of its image rows; a
  request without images (failed, cancelled, dry run) has one row with the image columns empty.
  So a spreadsheet filter on `image_idx` or `status` never has to split joined cells.
- Prompt options are separate columns (`subject`, `purpose`, ... in `prompts.OPTION_KEYS` order).
- Each request's contender (core/catalog/contenders.py) is named by `contender_id` and
  `contender` (its label among the contenders of the export), and every parameter swept among
  them has a column of its own at the end (`param_<name>`: the value the request sent, the
  endpoint's default when it left it out, empty when its endpoint has no such parameter).
- Spreadsheet-safe: a text cell starting with `=`, `+`, `-`, `@`, a tab or a carriage return is
  prefixed with `'` so no spreadsheet runs it as a formula; numeric columns stay numbers (a real
  negative number is never touched) and a text cell that is only a plain number is left as is.
- UTF-8 with a byte order mark, so Excel opens accents and emoji right.
- No secret and no `data:` URI: no credentials are stored at all, and every `data:` URI is
  abbreviated. Response bodies and logs are not exported.
- Streamed: rows are read and written in chunks (keyset pagination in `Store.iter_history`), so
  100,000 requests never sit in memory at once.
"""
from __future__ import annotations

import io
import json
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pandas as pd

from core import store
from core.catalog import contenders
from core.catalog.contenders import Contender
from core.catalog.payloads import abbreviate, canonical_json
from core.catalog.prompts import OPTION_KEYS
from core.errors import DashboardError

if TYPE_CHECKING:
    from core.store import HistoryRow, Store

CHUNK_SIZE = 5000

_REQUEST_COLUMNS = (
    "request_id", "batch_id", "group_id", "rerun_of", "created_at", "submitted_at", "completed_at",
    "endpoint", "contender_id", "contender", "status", "dry_run",
)
_AFTER_OPTIONS = (
    "prompt", "seed", "image_size", "reference_ids", "payload_hash", "payload", "fal_request_id",
    "queue_time_s", "inference_time_s", "total_time_s", "http_status", "estimated_cost",
    "error_type", "error_message",
)
_IMAGE_COLUMNS = (
    "image_idx", "image_fal_url", "image_storage_backend", "image_storage_path", "image_sha256",
    "image_width", "image_height", "image_content_type", "image_size_bytes", "image_nsfw",
    # fidelity to the reference and response checks (core/evaluation/fidelity.py; empty while pending)
    "image_face_status", "image_face_distance", "image_phash_distance", "image_ciede2000",
    "image_ssim", "image_check_flags", "image_metrics_at",
)
COLUMNS: tuple[str, ...] = _REQUEST_COLUMNS + OPTION_KEYS + _AFTER_OPTIONS + _IMAGE_COLUMNS

_INT_COLUMNS = ("seed", "http_status", "image_idx", "image_width", "image_height", "image_size_bytes",
                "image_phash_distance")
_FLOAT_COLUMNS = ("queue_time_s", "inference_time_s", "total_time_s", "estimated_cost",
                  "image_face_distance", "image_ciede2000", "image_ssim")
_BOOL_COLUMNS = ("dry_run", "image_nsfw")
_DANGEROUS_FIRST = frozenset("=+-@\t\r")
# "-5" or "+0.25" typed as text is read by a spreadsheet as a number, never as a formula
_PLAIN_NUMBER = re.compile(r"[+-]?(?:\d+\.?\d*|\.\d+)\Z")


@dataclass(frozen=True)
class ExportResult:
    path: Path
    rows: int
    requests: int


@dataclass(frozen=True)
class _Contenders:
    """The contenders of an export: labels and the swept parameters' columns."""
    by_id: dict[str, Contender]
    labels: dict[str, str]
    parameters: tuple[str, ...]

    @property
    def columns(self) -> tuple[str, ...]:
        return tuple(f"param_{p}" for p in self.parameters)

    def cells(self, contender_id: str | None) -> dict[str, Any]:
        c = self.by_id.get(contender_id or "")
        out: dict[str, Any] = {"contender": self.labels.get(contender_id or "")}
        for p in self.parameters:
            value = None
            if c is not None and p in _schema_parameters(c.endpoint):
                value = c.value(p)
            out[f"param_{p}"] = value if value is None or isinstance(value, (int, float, str)) \
                else canonical_json(value)
        return out


def _schema_parameters(endpoint: str) -> frozenset[str]:
    from core.catalog import registry

    try:
        return frozenset(registry.get_endpoint(endpoint).schema.get("properties", {}))
    except DashboardError:
        return frozenset()


def _export_contenders(st: Store, f: store.HistoryFilter) -> _Contenders:
    by_id = st.get_contenders(st.history_contender_ids(f))
    axes = contenders.swept_axes(by_id.values())
    return _Contenders(by_id, contenders.labels(by_id.values()),
                       tuple(dict.fromkeys(a.parameter for a in axes)))


def _rows_of(r: HistoryRow, named: _Contenders) -> list[dict[str, Any]]:
    """The CSV rows of one request: one per image, or one with empty image columns."""
    options = json.loads(r.options_json) if r.options_json else {}
    refs = json.loads(r.reference_ids) if r.reference_ids else []
    payload = r.payload_json
    if "data:" in payload:  # stored payloads carry none; abbreviate anyway should one slip in
        payload = canonical_json(abbreviate(json.loads(payload)))
    base: dict[str, Any] = {
        "request_id": r.id, "batch_id": r.batch_id, "group_id": r.group_id,
        "rerun_of": r.rerun_of, "created_at": r.created_at, "submitted_at": r.submitted_at,
        "completed_at": r.completed_at, "endpoint": r.endpoint, "contender_id": r.contender_id,
        **named.cells(r.contender_id), "status": r.status,
        "dry_run": r.dry_run,
        **{key: options.get(key) for key in OPTION_KEYS},
        "prompt": r.prompt, "seed": r.seed, "image_size": r.image_size,
        "reference_ids": " ".join(refs) or None, "payload_hash": r.payload_hash,
        "payload": payload, "fal_request_id": r.fal_request_id,
        "queue_time_s": r.queue_time_s, "inference_time_s": r.inference_time_s,
        "total_time_s": r.total_time_s, "http_status": r.http_status,
        "estimated_cost": r.estimated_cost, "error_type": r.error_type,
        "error_message": r.error_message,
    }
    if not r.images:
        return [base]
    return [{
        **base, "image_idx": img.idx, "image_fal_url": abbreviate(img.fal_url),
        "image_storage_backend": img.storage_backend, "image_storage_path": img.storage_path,
        "image_sha256": img.sha256, "image_width": img.width, "image_height": img.height,
        "image_content_type": img.content_type, "image_size_bytes": img.size_bytes,
        "image_nsfw": img.nsfw,
        "image_face_status": img.metrics.face_status, "image_face_distance": img.metrics.face_distance,
        "image_phash_distance": img.metrics.phash_distance, "image_ciede2000": img.metrics.ciede2000,
        "image_ssim": img.metrics.ssim,
        "image_check_flags": " ".join(img.metrics.check_flags),
        "image_metrics_at": img.metrics.metrics_at,
    } for img in r.images]


def safe_cell(value: Any) -> Any:
    """A text cell no spreadsheet will run as a formula (see the module invariants)."""
    if isinstance(value, str) and value[:1] in _DANGEROUS_FIRST and not _PLAIN_NUMBER.match(value):
        return "'" + value
    return value


def _frame(requests: list[HistoryRow], named: _Contenders) -> pd.DataFrame:
    rows = [row for r in requests for row in _rows_of(r, named)]
    columns = COLUMNS + named.columns
    data: dict[str, Any] = {}
    for col in columns:
        values = [row.get(col) for row in rows]
        if col in _INT_COLUMNS:
            data[col] = pd.array(values, dtype="Int64")
        elif col in _FLOAT_COLUMNS:
            data[col] = pd.array(values, dtype="Float64")
        elif col in _BOOL_COLUMNS:
            data[col] = pd.array(values, dtype="boolean")
        else:
            # object, not pandas' inferred string dtype: no conversion, and neutralised as built
            data[col] = pd.array([safe_cell(v) for v in values], dtype=object)
    return pd.DataFrame(data, columns=list(columns))


def _chunks(st: Store, f: store.HistoryFilter,
            chunk_size: int) -> Iterator[tuple[str, int, int]]:
    """(csv text, image rows, requests) per chunk; the first text starts with BOM and header."""
    first = True
    named = _export_contenders(st, f)
    for rows in st.iter_history(f, chunk_size=chunk_size):
        buf = io.StringIO()
        if first:
            buf.write("\ufeff")
        _frame(rows, named).to_csv(buf, header=first, index=False, lineterminator="\r\n")
        first = False
        yield buf.getvalue(), sum(max(1, len(r.images)) for r in rows), len(rows)
    if first:
        yield "\ufeff" + ",".join(COLUMNS + named.columns) + "\r\n", 0, 0


def iter_csv(st: Store, f: store.HistoryFilter | None = None, *,
             chunk_size: int = CHUNK_SIZE) -> Iterator[str]:
    """The CSV as text chunks (for streaming); with no matching request, the BOM and header alone."""
    for text, _, _ in _chunks(st, f or store.HistoryFilter(), chunk_size):
        yield text


def to_csv(st: Store, out: str | Path, f: store.HistoryFilter | None = None, *,
               chunk_size: int = CHUNK_SIZE) -> ExportResult:
    """Write the filtered history to `out` (through a temporary name then renamed, so a failed
    export never leaves a half-written file under the requested name)."""
    out = Path(out)
    tmp = out.with_name(out.name + ".part")
    rows = requests = 0
    try:
        with open(tmp, "w", encoding="utf-8", newline="") as fh:
            for text, n_rows, n_requests in _chunks(st, f or store.HistoryFilter(), chunk_size):
                fh.write(text)
                rows += n_rows
                requests += n_requests
        tmp.replace(out)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return ExportResult(path=out, rows=rows, requests=requests)


def to_csv_bytes(st: Store, f: store.HistoryFilter | None = None) -> bytes:
    """The whole CSV in memory, for a page's download button (a page-sized history)."""
    return "".join(iter_csv(st, f)).encode("utf-8")
