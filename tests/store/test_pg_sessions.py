"""The sessions a process keeps on Postgres (core/store/pg_sessions.py, `IdleSessions`): a closed
store's session serves the next store on that server, as it was set up; a session that cannot be
trusted (left in a transaction, broken, ended by the server) is never handed out; `Store.warm`
opens a run's sessions in the background, and a wrong URL there fails nothing but the store that
needs it."""
from __future__ import annotations

import time

import psycopg
import pytest

from core.errors import StoreUnavailable
from core.store import open_store, pg
from tests.pg_fixtures import session_count


def _pid(store) -> int:
    return store.db.execute("SELECT pg_backend_pid()").fetchone()[0]


@pytest.fixture
def url(pg_url):
    pg.close_idle(pg_url)
    yield pg_url
    pg.close_idle(pg_url)


def test_a_closed_stores_session_serves_the_next_store_set_up_as_new(url):
    first = open_store(url)
    pid = _pid(first)
    first.close()
    second = open_store(url)
    try:
        assert _pid(second) == pid
        # the store's session settings hold on the kept session
        assert second.db.execute("SHOW lock_timeout").fetchone()[0] == "30s"
        assert second.db.execute("SHOW synchronous_commit").fetchone()[0] == "off"
    finally:
        second.close()
    assert session_count(url) == 1   # kept, not closed: one session on the server


def test_a_session_closed_inside_a_transaction_is_not_kept(url):
    store = open_store(url)
    pid = _pid(store)
    store.db.execute("BEGIN")
    store.db.execute("SELECT count(*) FROM requests")
    store.close()   # a store dropped mid-transaction (a bug, a killed page run)
    again = open_store(url)
    try:
        assert _pid(again) != pid
        assert not again.db.conn.in_transaction
    finally:
        again.close()


def test_a_session_the_server_ended_is_not_handed_out(url):
    store = open_store(url)
    pid = _pid(store)
    store.close()
    with psycopg.connect(url, autocommit=True) as admin:
        admin.execute("SELECT pg_terminate_backend(%s)", [pid])
    deadline = time.monotonic() + 5
    while session_count(url) > 0 and time.monotonic() < deadline:
        time.sleep(0.02)
    again = open_store(url)   # its first statement works: the ended session was dropped unseen
    try:
        assert _pid(again) != pid
        assert again.list_batches() == []
    finally:
        again.close()


def test_warm_opens_the_sessions_of_a_runs_workers_before_they_start(url):
    store = open_store(url)
    try:
        store.warm(6)
        deadline = time.monotonic() + 10
        while session_count(url) < 7 and time.monotonic() < deadline:
            time.sleep(0.02)
        assert session_count(url) == 7   # the store's own and six kept
        store.warm(6)                # already warm: nothing more opened
        time.sleep(0.2)
        assert session_count(url) == 7
        workers = [open_store(url, migrate=False) for _ in range(6)]
        assert session_count(url) == 7   # each worker took a kept session
        for w in workers:
            w.close()
    finally:
        store.close()


def test_a_wrong_url_fails_no_warming_and_the_store_that_needs_it_says_so_at_once(pg_server):
    from tests.serving import free_port

    bad = f"postgresql://postgres@127.0.0.1:{free_port()}/nothing"
    pg._IDLE.warm(bad, "127.0.0.1", 4)   # no exception, no thread left hanging
    started = time.monotonic()
    with pytest.raises(StoreUnavailable) as e:
        open_store(bad)
    assert time.monotonic() - started < 5
    assert "127.0.0.1" in str(e.value) and "\n" not in str(e.value)


def test_a_forked_child_forgets_the_parents_sessions_without_closing_them(url):
    import os

    store = open_store(url)
    pid = _pid(store)
    store.close()
    child = os.fork()
    if child == 0:   # pragma: no cover - the child's exit status is the assertion
        os._exit(0 if pg._IDLE.take(url) is None else 1)
    _, status = os.waitpid(child, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    again = open_store(url)   # the parent's kept session still works
    try:
        assert _pid(again) == pid
    finally:
        again.close()
