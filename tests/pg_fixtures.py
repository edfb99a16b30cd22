"""Postgres for the tests: one throwaway cluster per test run (tests/pg_cluster.py, started on
first use), and a fresh database per test, cloned from a migrated template so a test starts on
the latest schema in a few milliseconds instead of replaying every migration.

Without Postgres's server binaries a test that needs them is skipped, except under CI=true
(.ci/run), where it fails: CI installs Debian's `postgresql` (scripts/test) and must run them."""
from __future__ import annotations

import itertools
import os

import pytest

from tests.pg_cluster import pg_bin, pg_cluster

# a test cluster trades durability for speed: nothing in it outlives the run
FAST = {"fsync": "off", "synchronous_commit": "off", "full_page_writes": "off", "max_connections": "200"}
_NAMES = itertools.count()


@pytest.fixture(scope="session")
def pg_server():
    """The base URL (database `postgres`) of this run's cluster, with a migrated template."""
    try:
        pg_bin()
    except RuntimeError as e:
        if os.environ.get("CI") == "true":
            pytest.fail(f"CI needs PostgreSQL: {e}")
        pytest.skip(str(e))
    with pg_cluster("store_template", settings=FAST) as dsn:
        from core.store import open_store

        from core.store.pg import close_idle

        with open_store(dsn):   # migrated once: every test's database is a copy
            pass
        close_idle(dsn)   # a template must have no session open
        yield dsn.rsplit("/", 1)[0]


def fresh_database(server: str, template: str = "store_template") -> str:
    """The URL of a new database on `server`, a copy of `template` (the migrated store)."""
    import psycopg

    name = f"t{os.getpid()}_{next(_NAMES)}"
    with psycopg.connect(f"{server}/postgres", autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}" TEMPLATE "{template}"')
    return f"{server}/{name}"


def session_count(url: str) -> int:
    """How many sessions the server has on the database at `url` (kept idle ones included)."""
    import psycopg

    name = url.rsplit("/", 1)[1]
    with psycopg.connect(url.rsplit("/", 1)[0] + "/postgres", autocommit=True) as conn:
        return conn.execute("SELECT count(*) FROM pg_stat_activity WHERE datname = %s", [name]).fetchone()[0]


def drop_database(url: str) -> None:
    import psycopg

    from core.store.pg import close_idle

    close_idle(url)   # this process's kept sessions on it (DROP ... FORCE would end them unseen)
    server, name = url.rsplit("/", 1)
    with psycopg.connect(f"{server}/postgres", autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture
def pg_url(pg_server):
    """A fresh, migrated store database for this test, dropped afterwards."""
    url = fresh_database(pg_server)
    yield url
    drop_database(url)


@pytest.fixture(params=["sqlite", "postgres"])
def store_engine(request, monkeypatch):
    """For a must-hold test of the runner on both engines: "postgres" points DATABASE_URL (in
    the environment, so the runner processes the test starts inherit it) at a fresh database."""
    if request.param == "postgres":
        monkeypatch.setenv("DATABASE_URL", request.getfixturevalue("pg_url"))
    return request.param
