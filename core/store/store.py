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

import functools
import inspect
import sqlite3
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from core.errors import StoreError, StoreUnavailable
from core.store.aggregates import AggregatesMixin
from core.store.batches import BatchesMixin
from core.store.contenders import ContendersMixin
from core.store.db import _is_corruption, connect, is_read_only
from core.store.figures import FiguresMixin
from core.store.history import HistoryMixin
from core.store.images import ImagesMixin
from core.store.metrics import MetricsMixin
from core.store.references import ReferencesMixin
from core.store.requests import RequestsMixin
from core.store.votes import VotesMixin

if TYPE_CHECKING:
    from core.config import Settings


def refused(e: sqlite3.Error, where: Path | str) -> StoreUnavailable:
    """The one message for a database that refused an operation for a reason that may pass."""
    text = str(e)
    if "readonly" in text.replace(" ", "").lower():
        return StoreUnavailable(
            f"the data directory {where} is read-only: this needs to write to it. Make it writable "
            "(read-only commands such as `batch status` and `export` still work).", reason="read_only")
    if "locked" in text or "busy" in text:
        return StoreUnavailable(f"the database in {where} stayed locked by another process ({text}); "
                                "try again when it is done.", reason="locked")
    if "full" in text:
        return StoreUnavailable(f"the disk holding {where} is full ({text}); free some space and try again.",
                                reason="full")
    return StoreUnavailable(f"the database in {where} refused the operation ({text}); if it is "
                            "damaged, move dashboard.db aside and restore it from a backup.")


def damaged(e: sqlite3.DatabaseError, where: Path | str) -> StoreError:
    """The one message for a database file found damaged while in use (a corrupt page)."""
    return StoreError(f"the database {Path(where) / 'dashboard.db'} is damaged ({e}): restore it from "
                      f"a backup, or move the data directory aside (`mv {where} {where}.damaged`) to "
                      "start with an empty history; nothing more was written to it.")


def _translate(e: sqlite3.DatabaseError, where: Path) -> StoreError:
    if isinstance(e, sqlite3.OperationalError) and not _is_corruption(e):
        return refused(e, where)
    return damaged(e, where) if _is_corruption(e) else refused(e, where)


def _translated(method: Callable[..., Any]) -> Callable[..., Any]:
    if inspect.isgeneratorfunction(method):
        @functools.wraps(method)
        def iterate(self: Store, *args: Any, **kwargs: Any) -> Any:
            try:
                yield from method(self, *args, **kwargs)
            except (sqlite3.OperationalError, sqlite3.DatabaseError) as e:
                raise _translate(e, self._where) from e
        return iterate

    @functools.wraps(method)
    def call(self: Store, *args: Any, **kwargs: Any) -> Any:
        try:
            return method(self, *args, **kwargs)
        except sqlite3.DatabaseError as e:
            if type(e) not in (sqlite3.OperationalError, sqlite3.DatabaseError):
                raise   # IntegrityError, ProgrammingError...: bugs, not the file
            raise _translate(e, self._where) from e
    return call


class Store(BatchesMixin, RequestsMixin, ImagesMixin, MetricsMixin, HistoryMixin, VotesMixin,
            ReferencesMixin, AggregatesMixin, ContendersMixin, FiguresMixin):
    """Every table of the dashboard, on one connection: batches and groups, requests, result
    images and their metrics, history, votes, reference photos, contenders, and the comparison's reads.

    `Store(db)` wraps an open `sqlite_utils.Database` (migrated by `connect`); `open_store`
    is the usual way in."""

    @property
    def read_only(self) -> bool:
        """True when the data directory cannot be written: reads work, writes are refused."""
        return is_read_only(self.db)

    def close(self) -> None:
        self.db.close()

    @property
    def _where(self) -> Path:
        """The data directory holding this store's file (for messages)."""
        return Path(self.db.conn.execute("PRAGMA database_list").fetchone()[2] or ".").parent

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def open_store(path_or_settings: Path | str | Settings, *, migrate: bool = True) -> Store:
    """A Store on the SQLite file at a path (or `settings.db_path`), created if missing and
    migrated to the latest schema unless `migrate=False`."""
    path = getattr(path_or_settings, "db_path", path_or_settings)
    try:
        return Store(connect(path, migrate=migrate))
    except sqlite3.OperationalError as e:
        raise refused(e, Path(path).parent) from e


# SQLite's own errors stay behind this seam: a caller sees StoreUnavailable, never sqlite3
for _name in dir(Store):
    _method = getattr(Store, _name)
    if not _name.startswith("_") and _name != "close" and inspect.isfunction(_method):
        setattr(Store, _name, _translated(_method))
