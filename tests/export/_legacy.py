"""The history export as it was before it became columnar (row by row through typed values, cell
by cell through `safe_cell`, pandas writing each chunk), kept here ONLY as the reference the
columnar export must match byte for byte (tests/export/test_export_equivalence.py). Not used by
the dashboard or the command line.

It reads with its own copy of the former `Store.iter_history` (keyset chunks of requests, then
their images), so it does not depend on any read path the columnar export uses.
"""
from __future__ import annotations

import io
import json
import re
from typing import Any

import pandas as pd

from core.catalog.payloads import canonical_json
from core.redact import abbreviate
from core.catalog.prompts import OPTION_KEYS
from core.store import Store
from core.values import HistoryFilter
from core.store.history import _history_where
from core.store.images import image_from_row

_REQUEST_FIELDS = ("id", "created_at", "batch_id", "group_id", "rerun_of", "submitted_at", "completed_at",
                   "endpoint", "status", "dry_run", "options_json", "prompt", "seed", "image_size",
                   "reference_ids", "payload_hash", "payload_json", "fal_request_id", "queue_time_s",
                   "inference_time_s", "total_time_s", "http_status", "estimated_cost", "error_type",
                   "error_message")
_REQUEST_COLUMNS = (
    "request_id", "batch_id", "group_id", "rerun_of", "created_at", "submitted_at", "completed_at",
    "endpoint", "status", "dry_run",
)
_AFTER_OPTIONS = (
    "prompt", "seed", "image_size", "reference_ids", "payload_hash", "payload", "fal_request_id",
    "queue_time_s", "inference_time_s", "total_time_s", "http_status", "estimated_cost",
    "error_type", "error_message",
)
_IMAGE_COLUMNS = (
    "image_idx", "image_fal_url", "image_storage_backend", "image_storage_path", "image_sha256",
    "image_width", "image_height", "image_content_type", "image_size_bytes", "image_nsfw",
    "image_face_status", "image_face_distance", "image_phash_distance", "image_ciede2000",
    "image_ssim", "image_check_flags", "image_metrics_at",
)
COLUMNS = _REQUEST_COLUMNS + OPTION_KEYS + _AFTER_OPTIONS + _IMAGE_COLUMNS
_DANGEROUS_FIRST = frozenset("=+-@\t\r")
_PLAIN_NUMBER = re.compile(r"[+-]?(?:\d+\.?\d*|\.\d+)\Z")
_INT_COLUMNS = ("seed", "http_status", "image_idx", "image_width", "image_height", "image_size_bytes",
                "image_phash_distance")
_FLOAT_COLUMNS = ("queue_time_s", "inference_time_s", "total_time_s", "estimated_cost",
                  "image_face_distance", "image_ciede2000", "image_ssim")
_BOOL_COLUMNS = ("dry_run", "image_nsfw")


def safe_cell(value: Any) -> Any:
    if isinstance(value, str) and value[:1] in _DANGEROUS_FIRST and not _PLAIN_NUMBER.match(value):
        return "'" + value
    return value


def _requests(st: Store, f: HistoryFilter, chunk_size: int):
    where, params = _history_where(f, "r")
    select = ", ".join(f"r.{c}" for c in _REQUEST_FIELDS)
    key = None
    while True:
        extra, extra_params = ("", []) if key is None else (" AND (r.created_at, r.id) < (?, ?)", list(key))
        rows = [dict(zip(_REQUEST_FIELDS, r)) for r in st.db.execute(
            f"SELECT {select} FROM requests r WHERE {where}{extra} ORDER BY r.created_at DESC, r.id DESC LIMIT ?",
            [*params, *extra_params, chunk_size]).fetchall()]
        if not rows:
            return
        for r in rows:
            cursor = st.db.execute("SELECT * FROM result_images WHERE request_id = ? ORDER BY idx", [r["id"]])
            keys = [d[0] for d in cursor.description]
            r["images"] = [image_from_row(dict(zip(keys, i))) for i in cursor.fetchall()]
            r["dry_run"] = bool(r["dry_run"])
        yield rows
        key = (rows[-1]["created_at"], rows[-1]["id"])
        if len(rows) < chunk_size:
            return


def _rows_of(r: dict[str, Any]) -> list[dict[str, Any]]:
    options = json.loads(r["options_json"]) if r["options_json"] else {}
    refs = json.loads(r["reference_ids"]) if r["reference_ids"] else []
    payload = r["payload_json"]
    if "data:" in payload:
        payload = canonical_json(abbreviate(json.loads(payload)))
    base: dict[str, Any] = {
        "request_id": r["id"], "batch_id": r["batch_id"], "group_id": r["group_id"],
        "rerun_of": r["rerun_of"], "created_at": r["created_at"], "submitted_at": r["submitted_at"],
        "completed_at": r["completed_at"], "endpoint": r["endpoint"], "status": r["status"],
        "dry_run": r["dry_run"],
        **{key: options.get(key) for key in OPTION_KEYS},
        "prompt": r["prompt"], "seed": r["seed"], "image_size": r["image_size"],
        "reference_ids": " ".join(refs) or None, "payload_hash": r["payload_hash"],
        "payload": payload, "fal_request_id": r["fal_request_id"],
        "queue_time_s": r["queue_time_s"], "inference_time_s": r["inference_time_s"],
        "total_time_s": r["total_time_s"], "http_status": r["http_status"],
        "estimated_cost": r["estimated_cost"], "error_type": r["error_type"],
        "error_message": r["error_message"],
    }
    if not r["images"]:
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
    } for img in r["images"]]


def _frame(requests: list[dict[str, Any]]) -> pd.DataFrame:
    rows = [row for r in requests for row in _rows_of(r)]
    data: dict[str, Any] = {}
    for col in COLUMNS:
        values = [row.get(col) for row in rows]
        if col in _INT_COLUMNS:
            data[col] = pd.array(values, dtype="Int64")
        elif col in _FLOAT_COLUMNS:
            data[col] = pd.array(values, dtype="Float64")
        elif col in _BOOL_COLUMNS:
            data[col] = pd.array(values, dtype="boolean")
        else:
            data[col] = pd.array([safe_cell(v) for v in values], dtype=object)
    return pd.DataFrame(data, columns=list(COLUMNS))


def legacy_csv_bytes(st: Store, f: HistoryFilter | None = None, *, chunk_size: int = 5000) -> bytes:
    """The whole CSV exactly as the former export wrote it (BOM, header, CRLF)."""
    out = io.StringIO()
    out.write("\ufeff")
    first = True
    for chunk in _requests(st, f or HistoryFilter(), chunk_size):
        _frame(chunk).to_csv(out, header=first, index=False, lineterminator="\r\n")
        first = False
    if first:
        out.write(",".join(COLUMNS) + "\r\n")
    return out.getvalue().encode("utf-8")
