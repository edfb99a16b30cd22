"""CSV exports: the request history (one row per request and image), spreadsheet-safe and streamed."""
from core.export.history import CHUNK_SIZE, COLUMNS, ExportResult, iter_csv, to_csv, to_csv_bytes  # noqa: F401

__all__ = ["CHUNK_SIZE", "COLUMNS", "ExportResult", "iter_csv", "to_csv", "to_csv_bytes"]
