"""The store: the SQLite file behind one `Store` object, and image blobs (local or Supabase).

`open_store(settings)` gives a Store; its methods are the only code that reads or writes SQL.
"""
from core.catalog.payloads import DiffEntry, PayloadDiff
from core.store.batches import HEARTBEAT_STALE_S, runner_alive
from core.store.history import MAX_PAGE_SIZE
from core.store.store import Store, open_store
from core.store.values import (
    BATCH_STATUSES, Batch, BatchProgress, Group, HistoryFilter, Page, RequestRecord, ResultImage,
)

__all__ = [
    "BATCH_STATUSES", "HEARTBEAT_STALE_S", "MAX_PAGE_SIZE",
    "Batch", "BatchProgress", "DiffEntry", "Group", "HistoryFilter", "Page", "PayloadDiff",
    "RequestRecord", "ResultImage", "Store",
    "open_store", "runner_alive",
]
