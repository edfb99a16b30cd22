"""The store: the dashboard's SQLite file behind one `Store` object.

`open_store(settings)` gives a Store; its methods are the only code in the project that reads or
writes SQL. They take and hand out the frozen values of `core.values`, never rows or cursors.
"""
from core.store.batches import HEARTBEAT_STALE_S, runner_alive
from core.store.history import HISTORY_CELLS, MAX_PAGE_SIZE, safe_cell
from core.store.metrics import ImageToMeasure
from core.store.store import Store, open_store

__all__ = [
    "HEARTBEAT_STALE_S",
    "HISTORY_CELLS",
    "ImageToMeasure",
    "MAX_PAGE_SIZE",
    "Store",
    "open_store",
    "runner_alive",
    "safe_cell",
]
