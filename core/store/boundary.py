"""The SQLite-error boundary: where the store's own errors become the project's.

Every public method of a store mixin carries `@sqlite_boundary`, so a reader of any method sees
that a SQLite error cannot leave it: a caller gets `StoreUnavailable` (a reason that may pass:
locked, read-only, disk full; the runner retries or stops cleanly) or `StoreError` (a damaged
file), each with a message that says what to do. `IntegrityError` and `ProgrammingError` are
bugs, not the file, and pass through unchanged.
"""
from __future__ import annotations

import functools
import inspect
import sqlite3
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from core.errors import StoreError, StoreUnavailable

F = TypeVar("F", bound=Callable[..., Any])


def is_corruption(e: sqlite3.Error) -> bool:
    text = str(e).lower()
    return "not a database" in text or "malformed" in text or "corrupt" in text


def refused(e: sqlite3.Error, where: Path | str) -> StoreUnavailable:
    """The one message for a database that refused an operation for a reason that may pass."""
    text = str(e)
    if str(where).startswith("postgresql://"):
        return _refused_by_server(text, str(where))
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


def _refused_by_server(text: str, where: str) -> StoreUnavailable:
    """The same, for the store on Postgres (core/store/pg.py words its errors as SQLite's)."""
    if "unreachable" in text:
        return StoreUnavailable(f"{text}; check DATABASE_URL and that the server is up, then try again.")
    if "readonly" in text.replace(" ", "").lower():
        return StoreUnavailable(f"the database {where} is read-only for this user ({text}).", reason="read_only")
    if "locked" in text:
        return StoreUnavailable(f"the database {where} stayed locked by another writer ({text}); try again "
                                "when it is done.", reason="locked")
    if "full" in text:
        return StoreUnavailable(f"the database server {where} is out of space ({text}).", reason="full")
    return StoreUnavailable(f"the database {where} refused the operation ({text}).")


def damaged(e: sqlite3.DatabaseError, where: Path | str) -> StoreError:
    """The one message for a database file found damaged while in use (a corrupt page)."""
    return StoreError(f"the database {Path(where) / 'dashboard.db'} is damaged ({e}): restore it from "
                      f"a backup, or move the data directory aside (`mv {where} {where}.damaged`) to "
                      "start with an empty history; nothing more was written to it.")


def translate(e: sqlite3.DatabaseError, where: Path | str) -> StoreError:
    if str(where).startswith("postgresql://"):
        return refused(e, where)
    return damaged(e, where) if is_corruption(e) else refused(e, where)


def sqlite_boundary(method: F) -> F:
    """A store method whose SQLite errors reach the caller as StoreUnavailable/StoreError
    (generators too: the error may come while iterating)."""
    if inspect.isgeneratorfunction(method):
        @functools.wraps(method)
        def iterate(self: Any, *args: Any, **kwargs: Any) -> Any:
            try:
                yield from method(self, *args, **kwargs)
            except sqlite3.DatabaseError as e:
                if type(e) not in (sqlite3.OperationalError, sqlite3.DatabaseError):
                    raise
                raise translate(e, self._where) from e
        return iterate  # type: ignore[return-value]

    @functools.wraps(method)
    def call(self: Any, *args: Any, **kwargs: Any) -> Any:
        try:
            return method(self, *args, **kwargs)
        except sqlite3.DatabaseError as e:
            if type(e) not in (sqlite3.OperationalError, sqlite3.DatabaseError):
                raise   # IntegrityError, ProgrammingError...: bugs, not the file
            raise translate(e, self._where) from e
    return call  # type: ignore[return-value]
