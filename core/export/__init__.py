"""CSV exports."""
from core.export.history import CHUNK_SIZE, COLUMNS, ExportResult, iter_csv, safe_cell, to_csv, to_csv_bytes  # noqa: F401
