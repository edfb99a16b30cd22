"""The history export's cells, one definition for both engines: which cells, in which order, of
what kind, and the rules a cell is written by (the spreadsheet guard, `data:` URIs abbreviated,
floats as Python writes them). core/store/history.py builds the lines from them in SQL
(SQLite), core/store/export_pg.py in Python (Postgres); tests/export holds both to the same bytes.
"""
from __future__ import annotations

import json
import re
from typing import Any

from core.catalog.payloads import canonical_json
from core.catalog.prompts import OPTION_KEYS
from core.redact import abbreviate
from core.values import FINAL_STATUSES

# The spreadsheet guard of the export (core/export/history.py documents it). It lives here because
# the store keeps each final request's CSV lines ready (`export_lines`), written when the request
# or its images change: the rule must be known where the lines are written.
_DANGEROUS_FIRST = "=+-@\t\r"
# "-5" or "+0.25" typed as text is read by a spreadsheet as a number, never as a formula
_PLAIN_NUMBER = re.compile(r"[+-]?(?:\d+\.?\d*|\.\d+)\Z")


def safe_cell(value: Any) -> Any:
    """A text cell no spreadsheet will run as a formula: one starting with `=`, `+`, `-`, `@`, a
    tab or a carriage return gets a `'` in front, unless it is only a plain number."""
    if isinstance(value, str) and value[:1] in _DANGEROUS_FIRST and not _PLAIN_NUMBER.match(value):
        return "'" + value
    return value


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
    # cells, see `iter_history_csv`): it depends on the contenders of the export, so it is never
    # stored; the export joins it in by `contender_id`
    ("contender", "", "raw"),
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
_HEAD = HISTORY_CELLS.index("contender")   # the cells before the contender's fragment
_FINAL = tuple(sorted(FINAL_STATUSES))
