"""The store: the SQLite file behind one `Store` object, and image blobs (local or Supabase).

`open_store(settings)` gives a Store; its methods are the only code that reads or writes SQL,
and they hand out the frozen values below.
"""
from core.catalog.payloads import DiffEntry, PayloadDiff
from core.store.batches import HEARTBEAT_STALE_S, runner_alive
from core.store.history import HISTORY_CELLS, MAX_PAGE_SIZE, safe_cell
from core.store.metrics import ImageToMeasure
from core.store.store import Store, open_store
from core.store.values import (
    ACTIVE_STATUSES,
    BATCH_STATUSES,
    FINAL_STATUSES,
    REFERENCE_ROLES,
    REQUEST_STATUSES,
    SAME_PERSON_THRESHOLD,
    UNFINISHED_STATUSES,
    Batch,
    BatchProgress,
    Group,
    GroupOutput,
    HistoryFilter,
    ImageMetrics,
    MetricRow,
    Page,
    Reference,
    RequestCost,
    RequestRecord,
    RequestStatus,
    ResultImage,
    StoredVote,
    is_same_person,
    pick_output,
)

__all__ = [
    "ACTIVE_STATUSES", "BATCH_STATUSES", "FINAL_STATUSES", "HEARTBEAT_STALE_S", "HISTORY_CELLS", "MAX_PAGE_SIZE",
    "REFERENCE_ROLES", "REQUEST_STATUSES", "SAME_PERSON_THRESHOLD", "UNFINISHED_STATUSES",
    "Batch", "BatchProgress", "DiffEntry", "Group", "GroupOutput", "HistoryFilter",
    "ImageMetrics", "ImageToMeasure", "MetricRow", "Page", "PayloadDiff", "Reference",
    "RequestCost", "RequestRecord", "RequestStatus", "ResultImage", "Store", "StoredVote",
    "is_same_person", "open_store", "pick_output", "runner_alive", "safe_cell",
]
