"""Where image bytes live: reference photos and result images, in a local folder or a public
Supabase Storage bucket, and the journal of objects that may still need deleting.

    storage    the `Storage` interface, object paths, the sweep of the clean-up journal
    journal    the clean-up journal (JSON lines in the data directory)
    local      `LocalStorage`: files under the data directory
    supabase   `SupabaseStorage`: a public bucket, through the official client
    backend    `open_storage(settings)`: the backend the settings name
"""
from core._surface import lazy

_EXPORTS = {
    "storage": "", "journal": "", "local": "", "supabase": "", "backend": "",
    "CACHE_CONTROL": "storage", "Storage": "storage", "StoredObject": "storage", "check_path": "storage",
    "sweep": "storage", "unique_path": "storage",
    "JOURNAL_NAME": "journal", "UNCONFIRMED_GRACE_S": "journal", "CleanupJournal": "journal",
    "JournalEntry": "journal", "SweepReport": "journal",
    "PARTIAL_GRACE_S": "local", "LocalStorage": "local", "remove_partial_writes": "local",
    "SupabaseStorage": "supabase",
    "open_storage": "backend",
}
__all__ = sorted(_EXPORTS)
__getattr__ = lazy(__name__, _EXPORTS)
