"""How the store's values and results cross psycopg (core/store/pg.py sets each new session
up with `adapt_session`):

- a bool is sent as 0/1 (the store's columns are integers, as in SQLite);
- a `numeric` result (a sum of integers) comes back as int or float, never Decimal;
- a cursor's `description` is kept per column list (names, types and modifiers of the result,
  read in C): psycopg builds a Column object per column on each access, and the store reads
  the names of every result (docs/postgres.md, *Column names are read once per column list*).
"""
from __future__ import annotations

import collections
import functools
from typing import Any


@functools.lru_cache(maxsize=1)
def _adapter_classes() -> tuple[type, type]:
    import psycopg
    from psycopg.adapt import Dumper, Loader

    class BoolAsInt(Dumper):
        oid = psycopg.postgres.types["int8"].oid

        def dump(self, obj: bool) -> bytes:
            return b"1" if obj else b"0"

    class NumericAsNumber(Loader):
        def load(self, data: Any) -> int | float:
            text = bytes(data).decode()
            return float(text) if any(c in text for c in ".eEN") else int(text)

    return BoolAsInt, NumericAsNumber


# DB-API's seven items of a column, as psycopg's Column holds them, in a plain tuple
_Column = collections.namedtuple("_Column", "name type_code display_size internal_size precision scale null_ok")
_DESCRIPTIONS: dict[tuple, list[_Column]] = {}
_MAX_DESCRIPTIONS = 512   # result shapes kept; the store's statements have a few dozen


@functools.lru_cache(maxsize=1)
def _cursor_class() -> type:
    import psycopg

    class Cursor(psycopg.Cursor):
        """psycopg's cursor with `description` kept per column list (names, types, modifiers:
        the key, read from the result in C). psycopg builds a Column object per column on each
        access, 67 us for the 42 of `SELECT * FROM requests` here, which the store reads on
        every row it loads: 0.28 s of a 200-request run's interpreter time went to it."""

        @property
        def description(self) -> list[_Column] | None:
            res = self.pgresult
            if res is None or not res.nfields:
                return super().description
            fields = range(res.nfields)
            key = (tuple(map(res.fname, fields)), tuple(map(res.ftype, fields)),
                   tuple(map(res.fmod, fields)))
            columns = _DESCRIPTIONS.get(key)
            if columns is None:
                columns = [_Column(*column) for column in super().description]
                if len(_DESCRIPTIONS) < _MAX_DESCRIPTIONS:
                    _DESCRIPTIONS[key] = columns
            return list(columns)

    return Cursor


def adapt_session(conn: Any) -> None:
    """A new session's adapters and cursors as the store needs them: bools sent as integers,
    numeric read back as int or float (SQLite's sum of integers is an integer, never a
    Decimal), and descriptions kept per column list."""
    bool_as_int, numeric_as_number = _adapter_classes()
    conn.adapters.register_dumper(bool, bool_as_int)
    conn.adapters.register_loader("numeric", numeric_as_number)
    conn.cursor_factory = _cursor_class()
