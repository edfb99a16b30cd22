"""Which backend holds the image bytes: the one the settings name.

Supabase's client (and httpx) load only when Supabase is configured: a command or page that
never touches Supabase does not pay for them.
"""
from __future__ import annotations

from core.blobs.journal import JOURNAL_NAME, CleanupJournal
from core.blobs.local import LocalStorage
from core.blobs.storage import Storage
from core.config import Settings


def open_storage(settings: Settings) -> Storage:
    """Supabase when SUPABASE_URL and SUPABASE_KEY are set, else the local images folder; both
    keep their cleanup journal in the data directory."""
    journal = CleanupJournal(settings.data_dir / JOURNAL_NAME)
    if settings.storage_backend == "supabase":
        from core.blobs.supabase import SupabaseStorage

        assert settings.supabase_url and settings.supabase_key
        return SupabaseStorage(settings.supabase_url, settings.supabase_key, settings.supabase_bucket,
                               journal=journal)
    return LocalStorage(settings.images_dir, journal=journal)
