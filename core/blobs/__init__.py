"""Where image bytes live: reference photos and result images, in a local folder or in Supabase
Storage buckets (public for references, private for results), and the journal of objects that may still need deleting.

    storage    the `Storage` interface, object paths, the sweep of the clean-up journal
    journal    the clean-up journal (JSON lines in the data directory)
    local      `LocalStorage`: files under the data directory
    supabase   `SupabaseStorage`: a public (references) or private (results) bucket, through the
               official client; `TeamBuckets`: both, each path to its own
    results    result images: the private bucket with a local cache (`CachedResults`), `read_image`
    backend    `open_storage(settings)`: the backend the settings name
"""
from core._surface import lazy

_EXPORTS = {
    "storage": "", "journal": "", "local": "", "supabase": "", "backend": "", "results": "",
    "CACHE_CONTROL": "storage", "Storage": "storage", "StoredObject": "storage", "check_path": "storage",
    "sweep": "storage", "unique_path": "storage",
    "JOURNAL_NAME": "journal", "UNCONFIRMED_GRACE_S": "journal", "CleanupJournal": "journal",
    "JournalEntry": "journal", "SweepReport": "journal",
    "PARTIAL_GRACE_S": "local", "LocalStorage": "local", "remove_partial_writes": "local",
    "SupabaseStorage": "supabase", "TeamBuckets": "supabase",
    "CachedResults": "results", "ImageRead": "results", "is_result_path": "results",
    "read_image": "results", "result_path": "results",
    "open_storage": "backend",
}
__all__ = sorted(_EXPORTS)
__getattr__ = lazy(__name__, _EXPORTS)
