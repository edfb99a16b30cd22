"""Write core/store/_schema.py: the schema a blank file has after replaying every migration.

    .venv/bin/python -m tests.store.schema_snapshot > core/store/_schema.py

tests/store/test_db.py fails (and says to run this) when the snapshot and the migrations differ.
"""
from __future__ import annotations

import sqlite3
import tempfile
from pathlib import Path


def replayed_schema(path: Path) -> tuple[list[str], list[str]]:
    """(statements in `sqlite_master` order, migration names) after replaying every migration
    on a blank file at `path`."""
    from core.store import db

    conn = sqlite3.connect(str(path), isolation_level=None)
    try:
        database = db.Database(conn)
        db.MIGRATIONS.apply(database)
        statements = [r[0] for r in conn.execute(
            "SELECT sql FROM sqlite_master WHERE sql IS NOT NULL ORDER BY rowid")]
        names = [r[0] for r in conn.execute("SELECT name FROM _sqlite_migrations ORDER BY rowid")]
    finally:
        conn.close()
    return statements, names


def module_text() -> str:
    with tempfile.TemporaryDirectory() as tmp:
        statements, names = replayed_schema(Path(tmp) / "replayed.db")
    lines = ['"""The latest schema, as replaying every migration on a blank file leaves it (generated:',
             "`python -m tests.store.schema_snapshot > core/store/_schema.py`; tests/store/test_db.py",
             'checks it). `core.store.db` creates a brand-new file from it in one transaction."""',
             "", "MIGRATIONS = ("]
    lines += [f"    {name!r}," for name in names]
    lines += [")", "", "STATEMENTS = ("]
    lines += [f"    {statement!r}," for statement in statements]
    lines += [")", ""]
    return "\n".join(lines)


if __name__ == "__main__":
    print(module_text(), end="")
