"""Where image bytes live: reference photos and result images, in a local folder or a public
Supabase Storage bucket, and the journal of objects that may still need deleting.

    storage    the `Storage` interface, object paths, the sweep of the clean-up journal
    journal    the clean-up journal (JSON lines in the data directory)
    local      `LocalStorage`: files under the data directory
    supabase   `SupabaseStorage`: a public bucket, through the official client

`open_storage(settings)` picks the backend the settings name.
"""
from __future__ import annotations

from core.blobs.journal import JOURNAL_NAME, UNCONFIRMED_GRACE_S, CleanupJournal, JournalEntry, SweepReport
from core.blobs.local import PARTIAL_GRACE_S, LocalStorage, remove_partial_writes
from core.blobs.storage import CACHE_CONTROL, Storage, StoredObject, check_path, sweep, unique_path
from core.blobs.supabase import SupabaseStorage
from core.config import Settings

__all__ = [
    "CACHE_CONTROL",
    "CleanupJournal",
    "JOURNAL_NAME",
    "JournalEntry",
    "LocalStorage",
    "PARTIAL_GRACE_S",
    "Storage",
    "StoredObject",
    "SupabaseStorage",
    "SweepReport",
    "UNCONFIRMED_GRACE_S",
    "check_path",
    "open_storage",
    "remove_partial_writes",
    "sweep",
    "unique_path",
]


def open_storage(settings: Settings) -> Storage:
    """Supabase when SUPABASE_URL and SUPABASE_KEY are set, else the local images folder; both
    keep their cleanup journal in the data directory."""
    journal = CleanupJournal(settings.data_dir / JOURNAL_NAME)
    if settings.storage_backend == "supabase":
        assert settings.supabase_url and settings.supabase_key
        return SupabaseStorage(settings.supabase_url, settings.supabase_key, settings.supabase_bucket,
                               journal=journal)
    return LocalStorage(settings.images_dir, journal=journal)
