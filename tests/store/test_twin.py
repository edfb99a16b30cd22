"""`Store.twin()`: the store a runner's sender or finisher thread opens on the batch's database.
It is a connection of its own on the same database (SQLite file or Postgres), and it does not
check the schema again: the store it comes from did when it opened (on Postgres that check is a
round trip per worker thread). Runs on both engines (tests/engines.py)."""
from __future__ import annotations

import pytest

from core.store import db as sqlite_db, pg


@pytest.fixture
def no_schema_check(monkeypatch):
    def checked_again(*args, **kwargs):
        raise AssertionError("the schema was checked again")

    monkeypatch.setattr(pg, "applied_names", checked_again)
    monkeypatch.setattr(sqlite_db, "migrate_db", checked_again)


def test_a_twin_is_its_own_connection_on_the_same_database_without_a_second_schema_check(st, no_schema_check):
    twin = st.twin()
    try:
        assert twin.engine == st.engine and twin.db.conn is not st.db.conn
        written = twin.record_request(endpoint="fal-ai/flux/schnell", payload={"prompt": "a red chair"})
        assert st.get_request(written.id).payload == {"prompt": "a red chair"}
        mine = st.record_request(endpoint="fal-ai/flux/schnell", payload={"prompt": "a blue chair"})
        assert twin.get_request(mine.id).prompt == "a blue chair"
        # a transaction open on the store is not the twin's: the twin reads what was committed
        with st._write_transaction():
            st.mark_submitted(mine.id)
            assert twin.get_request(mine.id).status == "planned"
        assert twin.get_request(mine.id).status == "submitted"
    finally:
        twin.close()
