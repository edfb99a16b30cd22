"""Shared fixtures. Every test runs with its own data directory and no real credentials, and
any fal/Supabase URL left unset points at a closed loopback port: a test can never touch real
data, spend money, or send traffic off this machine."""
from __future__ import annotations

import os

import pytest

from core.config import SETTINGS, load_settings
from core.store import open_store

# Stand-in servers and their fixtures live in tests/standins/.
pytest_plugins: list[str] = ["tests.standins.supabase_fixtures", "tests.standins.fal_fixtures", "tests.pg_fixtures"]


@pytest.fixture(autouse=True)
def isolated_env(tmp_path, monkeypatch, request):
    # every setting from a clean slate (config.SETTINGS, the one list): a developer's own
    # environment (a key, a budget, an open address) never leaks into a test
    for name in SETTINGS:
        monkeypatch.delenv(name, raising=False)
    # no detached dlib worker outlives a test, and no page start resumes batches behind a test's
    # back; the tests of those features switch them on
    monkeypatch.setenv("DASHBOARD_METRICS_WORKER", "off")
    monkeypatch.setenv("DASHBOARD_AUTO_RESUME", "off")
    data_dir = tmp_path / "data"
    monkeypatch.setenv("DASHBOARD_DATA_DIR", str(data_dir))
    monkeypatch.setenv("DASHBOARD_SECRETS", str(tmp_path / "no-secrets.toml"))
    # port 9 (discard) on loopback: refused, never off-machine
    monkeypatch.setenv("FAL_RUN_URL", "http://127.0.0.1:9")
    monkeypatch.setenv("FAL_QUEUE_URL", "http://127.0.0.1:9")
    monkeypatch.setenv("FAL_OPENAPI_URL", "http://127.0.0.1:9/api/openapi/queue/openapi.json")
    monkeypatch.setenv("FAL_API_URL", "http://127.0.0.1:9/v1")
    # DASHBOARD_TEST_ENGINE=postgres: every test's store on Postgres (a fresh database), to find
    # what the suites that run on both engines (tests/engines.py) do not reach; SQLite's own tests
    # fail there by design
    if os.environ.get("DASHBOARD_TEST_ENGINE") == "postgres":
        monkeypatch.setenv("DATABASE_URL", request.getfixturevalue("pg_url"))
    return data_dir


@pytest.fixture
def settings(isolated_env):
    """Settings for this test (dry run, local storage, a temp data dir)."""
    return load_settings()


@pytest.fixture
def st(settings):
    """A connection to this test's store (migrated), closed afterwards."""
    conn = open_store(settings)
    yield conn
    conn.close()
