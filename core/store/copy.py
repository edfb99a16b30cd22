"""`store copy`: a team's history from its SQLite file into the Postgres store, checked.

Invariants:
- One transaction on the target: a copy that fails (a row Postgres refuses, the server gone)
  leaves the target as it was; the source file is only read.
- Idempotent: each row is keyed by its table's primary key; a row already in the target is left
  alone when equal and brought up to date when the file's changed since (a request that
  completed after the last copy), so running it again copies nothing twice.
- Checked: after writing, every source row is read back from the target and compared, table by
  table, by count and by a SHA-256 over the rows in key order (values as text, NULL distinct
  from ''); a mismatch rolls the whole copy back.
- Tables in reference order (a request before the votes and images naming it, a re-run after
  the request it repeats: rows go in the file's insertion order). The caches (`export_lines`,
  `batch_figures`) are not copied: the target rebuilds them, and its triggers keep the stamps.
- Rows go through COPY into a temporary table, then one INSERT ... ON CONFLICT per table:
  100,000 requests copy in seconds, not the minutes one INSERT per row would take.
"""
from __future__ import annotations

import hashlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from core.errors import StoreError

# (table, primary key), parents first
TABLES: tuple[tuple[str, str], ...] = (
    ("reference_photos", "id"), ("batches", "id"), ("groups", "id"), ("contenders", "id"),
    ("models", "endpoint_id"), ("requests", "id"), ("result_images", "id"), ("votes", "id"),
    ("audit", "id"), ("limits", "name"),
)
_CHUNK = 5000


@dataclass(frozen=True)
class TableCopy:
    table: str
    rows: int        # in the source
    added: int       # new in the target
    updated: int     # in the target already, brought up to date
    checksum: str    # of the source's rows, equal to the target's


def _columns(sqlite_db: Any, table: str) -> list[str]:
    return [r[1] for r in sqlite_db.execute(f"PRAGMA table_info('{table}')").fetchall()]


def _digest(rows: Iterable[Sequence[Any]]) -> tuple[int, str]:
    """(count, SHA-256) of rows: each value as its text, NULL as a byte no text holds. An int
    and a float are told apart by value only (5 and 5.0 are one number), as the engines store
    them alike."""
    h = hashlib.sha256()
    n = 0
    for row in rows:
        n += 1
        for v in row:
            if v is None:
                h.update(b"\x00N")
            elif isinstance(v, float) and v.is_integer():
                h.update(b"\x00" + str(int(v)).encode())
            else:
                h.update(b"\x00" + str(v).encode("utf-8", "surrogatepass"))
        h.update(b"\x01")
    return n, h.hexdigest()


def copy_store(source: Any, target: Any) -> list[TableCopy]:
    """Copy every table of `source` (a core.store.db.Database on the SQLite file) into `target`
    (a core.store.pg.PgDatabase, migrated), checked; returns what each table did. StoreError
    (nothing written) when a row is refused or a check fails."""
    if getattr(target, "engine", None) != "postgres":
        raise StoreError("store copy writes into a Postgres store: give --to postgresql://...")
    done: list[TableCopy] = []
    with target.atomic():
        for table, key in TABLES:
            done.append(_copy_table(source, target, table, key))
        # fresh statistics for the planner: without them the first pages after a copy of
        # 100,000 requests plan as if the tables were empty (until autovacuum gets to them)
        for table, _ in TABLES:
            target.execute(f'ANALYZE "{table}"')
    return done


def _copy_table(source: Any, target: Any, table: str, key: str) -> TableCopy:
    columns = _columns(source, table)
    names = ", ".join(f'"{c}"' for c in columns)
    target.execute(f'CREATE TEMP TABLE "_copy_{table}" ON COMMIT DROP AS SELECT {names} FROM "{table}" WITH NO DATA')
    target.execute(f'ALTER TABLE "_copy_{table}" ADD COLUMN _order bigint')
    raw = target.conn._ready()
    try:
        with raw.cursor().copy(f'COPY "_copy_{table}" ({names}, _order) FROM STDIN') as copy:
            for row in source.execute(f'SELECT {names}, rowid FROM "{table}" ORDER BY rowid'):
                copy.write_row(row)
    except Exception as e:
        if type(e).__module__.split(".")[0] != "psycopg":
            raise
        why = "; ".join(part.strip() for part in str(e).splitlines() if part.strip())
        raise StoreError(f"the {table} table could not be copied: Postgres refused a row ({why}); "
                         "nothing was written.") from None
    changed = " OR ".join(f't."{c}" IS DISTINCT FROM excluded."{c}"' for c in columns if c != key)
    sets = ", ".join(f'"{c}" = excluded."{c}"' for c in columns if c != key)
    result = target.execute(
        f'INSERT INTO "{table}" AS t ({names}) SELECT {names} FROM "_copy_{table}" ORDER BY _order '
        f'ON CONFLICT ("{key}") DO UPDATE SET {sets} WHERE {changed} RETURNING (xmax = 0)').fetchall()
    added = sum(1 for (new,) in result if new)
    # both in the key's byte order (SQLite's BINARY, Postgres's "C")
    source_n, source_sum = _digest(source.execute(f'SELECT {names} FROM "{table}" ORDER BY "{key}"'))
    target_n, target_sum = _digest(target.conn.stream(
        f'SELECT {", ".join(f"t.{chr(34)}{c}{chr(34)}" for c in columns)} FROM "{table}" t '
        f'WHERE t."{key}" IN (SELECT "{key}" FROM "_copy_{table}") ORDER BY t."{key}" COLLATE "C"', [], _CHUNK))
    if (source_n, source_sum) != (target_n, target_sum):
        raise StoreError(f"the copy of {table} does not match its source ({source_n} rows, checksum "
                         f"{source_sum[:12]}; copied {target_n}, {target_sum[:12]}): nothing was written.")
    return TableCopy(table, source_n, added, len(result) - added, source_sum)
