"""Fixtures shared by the evaluation tests."""
import pytest

from core.store import open_store


@pytest.fixture
def st(settings):
    """A real store file in the test's data directory."""
    settings.ensure_dirs()
    conn = open_store(settings.db_path)
    yield conn
    conn.close()
