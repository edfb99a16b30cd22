"""The store: the dashboard's database (the SQLite file, or Postgres: DATABASE_URL) behind one `Store` object.

`open_store(settings)` gives a Store; its methods are the only code in the project that reads or
writes SQL. They take and hand out the frozen values of `core.values`, never rows or cursors.
"""
from core.store.batches import HEARTBEAT_STALE_S, runner_alive
from core.store.export_cells import HISTORY_CELLS, safe_cell
from core.store.history import MAX_PAGE_SIZE
from core.store.metrics import ImageToMeasure
from core.store.store import Store, open_store, store_location

__all__ = [
    "HEARTBEAT_STALE_S",
    "HISTORY_CELLS",
    "ImageToMeasure",
    "MAX_PAGE_SIZE",
    "Store",
    "open_store",
    "runner_alive",
    "safe_cell",
    "store_location",
]
