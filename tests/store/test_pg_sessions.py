"""The sessions a process keeps on Postgres (core/store/pg_sessions.py): a closed store's session
serves the next store on that server, as it was set up; a session that cannot be trusted (left in
a transaction, broken, ended by the server) is never handed out; `Store.warm` opens a run's
sessions in the background, and a wrong URL there fails nothing but the store that needs it.
Worker stores (`Store.twin`) share a few sessions (`SharedSessions`): statement by statement, a
transaction keeping its own, a worker that waits too long opening one more."""
from __future__ import annotations

import threading
import time

import psycopg
import pytest

from core.errors import StoreUnavailable
from core.store import open_store, pg, pg_sessions
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
        ahead = min(6, pg._WORKERS.caps[url] or 6)   # loopback: capped at two per core
        deadline = time.monotonic() + 10
        while session_count(url) < 1 + ahead and time.monotonic() < deadline:
            time.sleep(0.02)
        assert session_count(url) == 1 + ahead   # the store's own and the workers' few, kept
        store.warm(6)                # already warm: nothing more opened
        time.sleep(0.2)
        assert session_count(url) == 1 + ahead
        workers = [store.twin() for _ in range(6)]
        for w in workers:
            assert w.list_batches() == []
        assert session_count(url) == 1 + ahead   # the six workers used kept sessions only
        for w in workers:
            w.close()
    finally:
        store.close()


@pytest.fixture
def patient(pg_url, monkeypatch):
    """Worker stores capped at one shared session, which they wait for (up to 30 s)."""
    monkeypatch.setitem(pg._WORKERS.caps, pg_url, 1)
    monkeypatch.setattr(pg_sessions.SharedSessions, "STALL_S", 30.0)


def test_a_near_servers_worker_sessions_are_capped_at_two_per_core_a_far_ones_are_not(url, monkeypatch):
    import os

    store = open_store(url)
    try:
        assert pg_sessions.worker_cap(store.db.conn._ready()) == 2 * len(os.sched_getaffinity(0))   # loopback
        monkeypatch.setattr(pg_sessions, "NEAR_RTT_S", 0.0)   # every server is far
        assert pg_sessions.worker_cap(store.db.conn._ready()) is None
    finally:
        store.close()


def test_a_probe_on_a_session_the_server_ended_is_not_taken_for_a_far_server(url):
    """A failed probe leaves the cap unknown (uncapped for that open) and not cached: the next
    session's probe decides, so one dropped connection does not uncap the process for good."""
    import os

    from psycopg import sql

    workers = pg_sessions.WorkerSessions(pg._IDLE, pg._new_connection)
    doomed, other = pg._new_connection(url, "test"), pg._new_connection(url, "test")
    try:
        # with a timeout it returns once the session has ended (Postgres 14+), not just signalled
        other.execute(sql.SQL("SELECT pg_terminate_backend({}, 5000)").format(doomed.info.backend_pid))
        assert workers.cap(url, doomed) is None and url not in workers.caps
        assert workers.cap(url, other) == 2 * len(os.sched_getaffinity(0)) == workers.caps[url]
    finally:
        doomed.close()
        other.close()


def test_worker_stores_share_one_session_statement_by_statement_when_it_is_free_soon_enough(url, patient):
    store = open_store(url)
    batch = store.create_batch(_plan(8).new_batch(), dry_run=False)
    ids = [r.id for r in store.batch_requests(batch.id)]
    errors: list[BaseException] = []

    def work(request_id: str) -> None:
        twin = store.twin()
        try:
            for _ in range(5):
                twin.get_request(request_id)
            assert twin.mark_submitted(request_id)
            assert twin.get_request(request_id).status == "submitted"
        except BaseException as e:  # noqa: BLE001 - reported by the test below
            errors.append(e)
        finally:
            twin.close()

    try:
        threads = [threading.Thread(target=work, args=(i,)) for i in ids]
        for t in threads:
            t.start()
        for t in threads:
            t.join(30)
        assert not errors, errors
        assert all(r.status == "submitted" for r in store.batch_requests(batch.id))
        assert session_count(url) == 2   # the store's own and the one the 8 workers shared
    finally:
        store.close()


@pytest.fixture
def workers(url):
    """The run's own store and two worker stores (`Store.twin`) on it."""
    store = open_store(url)
    a, b = store.twin(), store.twin()
    yield store, a, b
    a.close()
    b.close()
    store.close()


def test_a_workers_transaction_keeps_its_session_and_another_worker_opens_one_after_the_wait(
        url, workers, monkeypatch):
    monkeypatch.setitem(pg._WORKERS.caps, url, 1)
    monkeypatch.setattr(pg_sessions.SharedSessions, "STALL_S", 0.2)
    store, a, b = workers
    batch = store.create_batch(_plan(2).new_batch(), dry_run=False)
    first, second = (r.id for r in store.batch_requests(batch.id))
    with a._write_transaction():
        a.mark_submitted(first)
        pid = _pid(a)
        started = time.monotonic()
        # b's statements never land in a's transaction: past the cap of one session, it
        # waits STALL_S for a's, then opens one (a worker never waits forever)
        assert b.get_request(first).status == "planned"
        assert 0.2 <= time.monotonic() - started < 5
        assert _pid(b) != pid
    assert b.get_request(first).status == "submitted"
    assert b.mark_submitted(second) and a.get_request(second).status == "submitted"


def test_a_shared_sessions_rows_are_read_before_another_worker_gets_it(patient, workers):
    _, a, b = workers
    rows = a.db.execute("SELECT generate_series(1, 3)")
    assert _pid(b) == _pid(a)   # the same session
    assert b.db.execute("SELECT 42").fetchone() == (42,)
    assert rows.fetchall() == [(1,), (2,), (3,)]


def test_a_shared_session_the_server_ended_is_not_lent_again(url, patient):
    store = open_store(url)
    twin = store.twin()
    try:
        pid = _pid(twin)
        store.db.execute("SELECT pg_terminate_backend(?)", [pid])
        deadline = time.monotonic() + 5
        while session_count(url) > 1 and time.monotonic() < deadline:
            time.sleep(0.02)
        assert twin.list_batches() == []   # its next statement works, on a new session
        assert _pid(twin) != pid
    finally:
        twin.close()
        store.close()


def test_when_the_last_worker_store_closes_its_sessions_are_kept_for_the_next_store(url):
    store = open_store(url)
    twins = [store.twin() for _ in range(3)]
    pid = _pid(twins[0])
    for t in twins:
        t.close()
    assert url not in pg._WORKERS.sets
    store.close()
    assert session_count(url) == 2   # both kept, not closed
    again = open_store(url)
    try:
        assert _pid(again) in {pid, *_kept_pids(url)}
        assert session_count(url) == 2
    finally:
        again.close()


def _kept_pids(url: str) -> set[int]:
    with psycopg.connect(url, autocommit=True) as admin:
        return {r[0] for r in admin.execute(
            "SELECT pid FROM pg_stat_activity WHERE datname = current_database() AND pid <> pg_backend_pid()")}


def _plan(n: int):
    from core.batches import plans

    poses = ["Standing", "Walking", "Sitting", "Running", "Jumping", "Kneeling", "Crouching", "Arms crossed"]
    return plans.make_plan({"name": "share", "models": ["fal-ai/flux/schnell"],
                            "options": {"pose": poses[:n]}, "seeds": [1]})


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
