"""Fixtures for the Supabase Storage stand-in (see supabase_server.py).

`supabase_standin` is a fresh server per test (starting one costs a few milliseconds);
`supabase_env` also points SUPABASE_URL/SUPABASE_KEY/SUPABASE_BUCKET at it, so
`load_settings()` and `open_storage()` pick the Supabase backend.
"""
from __future__ import annotations

import pytest

from tests.standins.supabase_server import SupabaseStandin

BUCKET = "references"


@pytest.fixture
def supabase_standin():
    standin = SupabaseStandin().start()
    try:
        yield standin
    finally:
        standin.stop()


@pytest.fixture
def supabase_env(supabase_standin, monkeypatch):
    monkeypatch.setenv("SUPABASE_URL", supabase_standin.url)
    monkeypatch.setenv("SUPABASE_KEY", supabase_standin.key)
    monkeypatch.setenv("SUPABASE_BUCKET", BUCKET)
    return supabase_standin


@pytest.fixture
def supabase_storage(supabase_standin):
    """A SupabaseStorage (real `supabase` client) talking to the stand-in, bucket "references"."""
    from core.store.blobs import SupabaseStorage

    storage = SupabaseStorage(supabase_standin.url, supabase_standin.key, BUCKET)
    try:
        yield storage
    finally:
        storage.close()
