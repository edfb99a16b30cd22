"""CSV exports, spreadsheet-safe and streamed.

    history      the request history: one row per request and image, by the history page's filter
    comparison   the comparison: one row per group, the contenders side by side with metrics and votes
    audit        the audit trail: who sent, resumed, cancelled, added, archived or changed what
"""
from core._surface import lazy

_EXPORTS = {
    "history": "", "comparison": "", "audit": "",
    "CHUNK_SIZE": "history", "COLUMNS": "history", "ExportResult": "history",
    "iter_csv": "history", "to_csv": "history", "to_csv_bytes": "history",
}
__all__ = sorted(_EXPORTS)
__getattr__ = lazy(__name__, _EXPORTS)
