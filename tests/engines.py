"""Both engines for a directory of tests: its conftest.py imports these fixtures, and every test
there that takes `settings` (or `st`, which opens `settings`) runs twice, with `engine` "sqlite"
(the file in its data directory) and "postgres" (a fresh database on this run's cluster,
DATABASE_URL set). A test of one engine's own behaviour (the SQLite file's recovery, a Postgres
server's outage) asks for `sqlite_only` or `postgres_only`. Used by tests/store and tests/export."""
from __future__ import annotations

import pytest

from core.config import load_settings

__all__ = ["engine", "postgres_only", "settings", "sqlite_only"]


@pytest.fixture(params=["sqlite", "postgres"])
def engine(request):
    return request.param


@pytest.fixture
def settings(isolated_env, engine, request, monkeypatch):
    if engine == "postgres":
        monkeypatch.setenv("DATABASE_URL", request.getfixturevalue("pg_url"))
    return load_settings()


@pytest.fixture
def sqlite_only(engine):
    if engine != "sqlite":
        pytest.skip("SQLite's own behaviour (the file)")


@pytest.fixture
def postgres_only(engine):
    if engine != "postgres":
        pytest.skip("Postgres's own behaviour (the server)")
