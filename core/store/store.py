"""The Store: the ONE object that reads and writes the dashboard's SQLite file.

Invariants:
- Only the store writes SQL, and every write takes its write lock (core/store/_sql.py): one
  lock per database file in this process, shared by every `Store` on that file.
- A `Store` wraps one connection; each thread or process opens its own (`open_store`).
- Callers get frozen values (core/store/values.py), never rows or cursors; SQLite specifics stay
  inside core/store, the seam behind which another engine could be added without touching a
  caller. `st.db` is there for tests only.
"""
from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from core.store.aggregates import AggregatesMixin
from core.store.batches import BatchesMixin
from core.store.contenders import ContendersMixin
from core.store.db import connect
from core.store.history import HistoryMixin
from core.store.images import ImagesMixin
from core.store.metrics import MetricsMixin
from core.store.references import ReferencesMixin
from core.store.requests import RequestsMixin
from core.store.votes import VotesMixin

if TYPE_CHECKING:
    from core.config import Settings


class Store(BatchesMixin, RequestsMixin, ImagesMixin, MetricsMixin, HistoryMixin, VotesMixin,
            ReferencesMixin, AggregatesMixin, ContendersMixin):
    """Every table of the dashboard, on one connection: batches and groups, requests, result
    images and their metrics, history, votes, reference photos, contenders, and the comparison's reads.

    `Store(db)` wraps an open `sqlite_utils.Database` (migrated by `connect`); `open_store`
    is the usual way in."""

    def close(self) -> None:
        self.db.close()

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def open_store(path_or_settings: Path | str | Settings, *, migrate: bool = True) -> Store:
    """A Store on the SQLite file at a path (or `settings.db_path`), created if missing and
    migrated to the latest schema unless `migrate=False`."""
    path = getattr(path_or_settings, "db_path", path_or_settings)
    return Store(connect(path, migrate=migrate))
