"""The Store: the ONE object that reads and writes the dashboard's database (the SQLite file, or
Postgres when DATABASE_URL is set: core/store/pg.py).

Invariants:
- Only the store writes SQL, and every write takes its write lock (core/store/_sql.py): one
  lock per database file in this process, shared by every `Store` on that file.
- A `Store` wraps one connection; each thread or process opens its own (`open_store`, or
  `store.twin()` for a worker thread of a store already open).
- Callers get frozen values (core/values.py), never rows or cursors; SQLite specifics stay
  inside core/store, the seam behind which another engine could be added without touching a
  caller. `store.db` is there for tests only.
- No SQLite error leaves a public method: each carries `@sqlite_boundary` (core/store/boundary.py).
"""
from __future__ import annotations

import sqlite3
from pathlib import Path

from core.config import Settings
from core.store.aggregates import AggregatesMixin
from core.store.audit import AuditMixin
from core.store.batches import BatchesMixin
from core.store.contenders import ContendersMixin
from core.store.boundary import refused
from core.store.db import connect
from core.store.figures import FiguresMixin
from core.store.history import HistoryMixin
from core.store.images import ImagesMixin
from core.store.metrics import MetricsMixin
from core.store.models import ModelsMixin
from core.store.references import ReferencesMixin
from core.store.requests import RequestsMixin
from core.store.votes import VotesMixin


class Store(BatchesMixin, RequestsMixin, ImagesMixin, MetricsMixin, HistoryMixin, VotesMixin,
            ReferencesMixin, AggregatesMixin, ContendersMixin, FiguresMixin, ModelsMixin, AuditMixin):
    """Every table of the dashboard, on one connection: batches and groups, requests, result
    images and their metrics, history, votes, reference photos, contenders, the comparison's reads,
    the endpoints added from fal's documents, and the audit trail with the limits admins set.

    `Store(db)` wraps an open `sqlite_utils.Database` (migrated by `connect`); `open_store`
    is the usual way in."""

    @property
    def read_only(self) -> bool:
        """True when the data directory cannot be written: reads work, writes are refused."""
        return self.db.read_only

    @property
    def engine(self) -> str:
        """"sqlite" or "postgres" (for messages and the `store` commands; nothing else asks)."""
        return self.db.engine

    def twin(self) -> Store:
        """Another Store on this one's database, for a worker thread (a runner's sender or
        finisher; one thread each): opened without the schema check this store passed when it
        was opened (on Postgres a round trip). On SQLite it is a connection of its own; on
        Postgres the twins of a process share a few sessions, statement by statement
        (core/store/pg_sessions.py, `SharedSessions`)."""
        # asked by engine, not by probing for a `url`: an attribute the SQLite Database lacks is
        # looked up on sqlite-utils, whose import (0.15 s) then landed on every sender's first POST
        if self.db.engine == "sqlite":
            return open_store(self.db.path, migrate=False)
        from core.store import pg

        return Store(pg.PgDatabase(self.db.url, shared=True))

    def warm(self, workers: int) -> None:
        """`workers` threads are about to open a store each on this database: on Postgres their
        sessions start opening now, in the background (nothing to do on a SQLite file)."""
        self.db.warm(workers)

    def close(self) -> None:
        self.db.close()

    @property
    def _where(self) -> Path | str:
        """The data directory holding this store's file, or the Postgres server (for messages)."""
        return self.db.location

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def store_location(settings: Settings) -> str:
    """What `open_store` opens for these settings, as text: DATABASE_URL, or the SQLite file's
    path. Pages key their cached connections on it (it may carry a password: never shown)."""
    return settings.database_url or str(settings.db_path)


def open_store(path_or_settings: Path | str | Settings, *, migrate: bool = True) -> Store:
    """A Store on the settings' database (DATABASE_URL's Postgres, else `settings.db_path`), on
    a `postgresql://` URL, or on the SQLite file at a path; created if missing and migrated to
    the latest schema unless `migrate=False`."""
    url = getattr(path_or_settings, "database_url", None)
    if url is None and isinstance(path_or_settings, str) and path_or_settings.startswith(("postgresql://", "postgres://")):
        url = path_or_settings
    if url:
        from core.store import pg

        try:
            return Store(pg.connect(url, migrate=migrate))
        except sqlite3.OperationalError as e:
            raise refused(e, pg.label(url)) from e
    path = getattr(path_or_settings, "db_path", path_or_settings)
    try:
        return Store(connect(path, migrate=migrate))
    except sqlite3.OperationalError as e:
        raise refused(e, Path(path).parent) from e

