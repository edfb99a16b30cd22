"""Fixtures for the Supabase Storage stand-in (see supabase_server.py).

`supabase_standin` is a fresh server per test (starting one costs a few milliseconds);
`supabase_env` also points SUPABASE_URL/SUPABASE_KEY/SUPABASE_BUCKET at it, so
`load_settings()` and `open_storage()` pick the Supabase backend. `supabase_storage` uses the
service-role key; `insert_only_storage` a key that may insert objects and nothing else (no
update, no delete, no bucket access), the setup where upserts and deletes silently fail.
Both keep their cleanup journal in the test's data directory, as `open_storage` does.
"""
from __future__ import annotations

import pytest

from tests.standins.supabase_server import INSERT_ONLY, SupabaseStandin

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
def cleanup_journal(isolated_env):
    """The journal `open_storage` would use for this test's data directory."""
    from core.blobs import JOURNAL_NAME, CleanupJournal

    return CleanupJournal(isolated_env / JOURNAL_NAME)


@pytest.fixture
def supabase_storage(supabase_standin, cleanup_journal):
    """A SupabaseStorage (real `supabase` client, service-role key) on the stand-in, bucket "references"."""
    from core.blobs import SupabaseStorage

    storage = SupabaseStorage(supabase_standin.url, supabase_standin.key, BUCKET, journal=cleanup_journal)
    try:
        yield storage
    finally:
        storage.close()


@pytest.fixture
def insert_only_key(supabase_standin):
    """An `authenticated` key whose only storage policy is INSERT on objects."""
    supabase_standin.grant("authenticated", *INSERT_ONLY)
    return supabase_standin.make_key("authenticated")


@pytest.fixture
def insert_only_storage(supabase_standin, insert_only_key, cleanup_journal):
    """A SupabaseStorage with the insert-only key on an existing public bucket "references"."""
    from core.blobs import SupabaseStorage

    supabase_standin.add_bucket(BUCKET, public=True)
    storage = SupabaseStorage(supabase_standin.url, insert_only_key, BUCKET, journal=cleanup_journal)
    try:
        yield storage
    finally:
        storage.close()
