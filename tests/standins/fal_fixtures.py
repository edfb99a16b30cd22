"""Fixtures for the fal stand-in: one server per test session, reset before each test.

`fal_standin` points FAL_KEY / FAL_QUEUE_URL at the stand-in (via monkeypatch), so
`load_settings()` and `FalClient()` talk to it; `fal_sleeps` + `standin_fal_client` give a client
whose retry pauses are recorded instead of slept.
"""
from __future__ import annotations

import pytest

from core.config import load_settings
from core.fal import FalClient, RetryPolicy
from tests.standins.fal_server import DEFAULT_KEY, FalStandin


@pytest.fixture(scope="session")
def _fal_standin_server():
    server = FalStandin().start()
    yield server
    server.stop()


@pytest.fixture
def fal_standin(_fal_standin_server, monkeypatch):
    """The running stand-in (fresh state: no jobs, counts, faults, holds or outage; small
    latency). Its test API (`inject`, `outage`/`end_outage`, `set_latency`, ...) acts at once."""
    server = _fal_standin_server
    server.reset()
    monkeypatch.setenv("FAL_KEY", DEFAULT_KEY)
    monkeypatch.setenv("FAL_QUEUE_URL", server.url)
    yield server
    server.release()


@pytest.fixture
def fal_sleeps() -> list[float]:
    """Delays the client asked to sleep (retry backoff, Retry-After), in order."""
    return []


@pytest.fixture
def standin_fal_client(fal_standin, fal_sleeps):
    """A FalClient on the stand-in whose retries record their pauses instead of sleeping."""
    client = FalClient(load_settings(), retry=RetryPolicy(sleep=fal_sleeps.append))
    yield client
    client.close()
