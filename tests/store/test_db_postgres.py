"""The schema on Postgres: the same migrations (core/store/migrations.py) leave the same tables,
columns and indexes as on SQLite (tests/store/test_db.py pins SQLite's: the same EXPECTED), the
same triggers keep the export lines and the figures' stamps, a failing migration leaves nothing
behind, and hosts starting on a blank database at once migrate it once."""
from __future__ import annotations

import subprocess
import sys

import pytest

from core.store import open_store, pg
from core.store.migrations import REGISTERED
from tests.pg_fixtures import drop_database, fresh_database
from tests.store.test_db import EXPECTED, EXPECTED_INDEXES

TRIGGERS = {f"export_lines_{t}_{e}" for t, events in (("requests", ("update", "delete")),
                                                      ("result_images", ("insert", "update", "delete")))
            for e in events} | {f"stamp_{t}_{e}" for t in ("requests", "result_images")
                                for e in ("insert", "update", "delete")}


@pytest.fixture
def blank(pg_server):
    """A database with nothing in it (not the migrated template)."""
    url = fresh_database(pg_server, "template0")
    yield url
    drop_database(url)


def _columns(d) -> dict[str, dict[str, str]]:
    return {t: {c.name: c.type for c in d[t].columns} for t in d.table_names() if not t.startswith("_")}


def _indexes(d) -> dict[str, set[tuple[tuple[str, ...], bool]]]:
    out: dict[str, set] = {}
    for table, columns, unique in d.execute(
            "SELECT t.relname, array_agg(a.attname ORDER BY k.n), ix.indisunique FROM pg_index ix "
            "JOIN pg_class t ON t.oid = ix.indrelid JOIN pg_namespace s ON s.oid = t.relnamespace "
            "CROSS JOIN LATERAL unnest(ix.indkey) WITH ORDINALITY AS k(attnum, n) "
            "JOIN pg_attribute a ON a.attrelid = t.oid AND a.attnum = k.attnum "
            "WHERE s.nspname = current_schema() AND NOT ix.indisprimary AND t.relname NOT LIKE '\\_%' "
            "GROUP BY ix.indexrelid, t.relname, ix.indisunique"):
        out.setdefault(table, set()).add((tuple(columns), unique))
    return out


def _sqlite_indexes(d) -> dict[str, set[tuple[tuple[str, ...], bool]]]:
    out: dict[str, set] = {}
    for table in d.table_names():
        if table.startswith("_"):
            continue
        for _, name, unique, origin, _ in d.execute(f"PRAGMA index_list('{table}')").fetchall():
            if origin == "pk":
                continue
            columns = tuple(r[2] for r in d.execute(f"PRAGMA index_info('{name}')").fetchall())
            out.setdefault(table, set()).add((columns, bool(unique)))
    return out


def test_a_blank_database_migrates_to_the_columns_and_indexes_sqlite_has(blank, tmp_path):
    on_pg = open_store(blank)
    on_sqlite = open_store(tmp_path / "dashboard.db")
    try:
        assert _columns(on_pg.db) == EXPECTED == _columns(on_sqlite.db)
        pg_indexes, sqlite_indexes = _indexes(on_pg.db), _sqlite_indexes(on_sqlite.db)
        assert pg_indexes == sqlite_indexes
        for table, wanted in EXPECTED_INDEXES.items():
            assert wanted <= pg_indexes[table], table
        names = {r[0] for r in on_pg.db.execute("SELECT tgname FROM pg_trigger WHERE NOT tgisinternal")}
        assert names == TRIGGERS
        sqlite_triggers = {r[0] for r in on_sqlite.db.execute("SELECT name FROM sqlite_master WHERE type = 'trigger'")}
        assert sqlite_triggers == TRIGGERS
        # recorded the same way: every migration, in order, in _sqlite_migrations
        assert pg.applied_names(on_pg.db) == [fn.__name__ for fn in REGISTERED]
        assert [r[0] for r in on_sqlite.db.execute("SELECT name FROM _sqlite_migrations ORDER BY id")] == \
            [fn.__name__ for fn in REGISTERED]
    finally:
        on_pg.close()
        on_sqlite.close()


def test_opening_a_migrated_database_again_changes_nothing(blank):
    open_store(blank).close()
    again = open_store(blank)
    try:
        assert pg.migrate_db(again.db) == []
        assert _columns(again.db) == EXPECTED
    finally:
        again.close()


def test_a_failing_migration_rolls_back_and_stays_pending(blank):
    """A migration that raises halfway leaves neither its changes nor its record: Postgres's DDL
    is transactional, so the database stays at the previous schema and the next start retries."""
    def m999_half_done(d):
        d["batches"].add_column("half_done", str)
        d["brand_new"].create({"id": str}, pk="id")
        raise RuntimeError("disk full halfway")

    d = pg.connect(blank)
    try:
        with pytest.raises(RuntimeError, match="disk full halfway"):
            pg.migrate_db(d, [*REGISTERED, m999_half_done])
        assert _columns(d) == EXPECTED                    # no half_done column, no brand_new table
        assert "m999_half_done" not in pg.applied_names(d)
        assert not d.conn.in_transaction
        with pytest.raises(RuntimeError, match="disk full halfway"):   # still pending: tried again
            pg.migrate_db(d, [*REGISTERED, m999_half_done])
    finally:
        d.close()


def test_hosts_opening_a_blank_database_at_once_migrate_it_once(blank):
    code = ("import sys; from core.store import open_store; st = open_store(sys.argv[1]); "
            "print(len(st.db.table_names()))")
    procs = [subprocess.Popen([sys.executable, "-c", code, blank], stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for _ in range(4)]
    results = [p.communicate(timeout=60) for p in procs]
    assert all(p.returncode == 0 for p in procs), [err for _, err in results]
    assert {out.strip() for out, _ in results} == {str(len(EXPECTED) + 1)}
    with open_store(blank) as st:
        names = pg.applied_names(st.db)
        assert names == [fn.__name__ for fn in REGISTERED]   # each recorded once


def test_a_database_of_another_program_is_refused_and_left_unchanged(blank):
    import psycopg

    from core.errors import StoreError

    with psycopg.connect(blank, autocommit=True) as conn:
        conn.execute("CREATE TABLE invoices (id int)")
    with pytest.raises(StoreError, match="another program's tables"):
        open_store(blank)
    with psycopg.connect(blank, autocommit=True) as conn:
        assert [r[0] for r in conn.execute("SELECT tablename FROM pg_tables WHERE schemaname = 'public'")] \
            == ["invoices"]


def test_column_lists_kept_per_shape_follow_a_table_that_changes(blank):
    """A cursor's `description` is built once per column list (core/store/pg_values.py): it says
    what psycopg's own says, on a store's session and on the sessions worker stores share, and
    a column added while the process runs is in the next read's names."""
    import psycopg

    store = open_store(blank)
    worker = store.twin()
    try:
        store.record_request(endpoint="fal-ai/flux/schnell", payload={"prompt": "a"})
        sql = "SELECT * FROM requests"
        with psycopg.connect(blank, autocommit=True) as raw:
            theirs = [tuple(c) for c in raw.execute(sql).description]
        for db in (store.db, worker.db):
            for _ in range(2):   # built, then kept
                assert [tuple(c) for c in db.execute(sql).description] == theirs
                assert [c.name for c in db.execute(sql).description] == [c[0] for c in theirs]
        store.db.execute("ALTER TABLE requests ADD COLUMN added_later TEXT")
        for db in (store.db, worker.db):
            names = [c[0] for c in db.execute(sql).description]
            assert names == [c[0] for c in theirs] + ["added_later"]
        assert store.db.execute("UPDATE requests SET added_later = 'x'").description is None
    finally:
        worker.close()
        store.close()
