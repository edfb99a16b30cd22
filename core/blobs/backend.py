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
    keep their cleanup journal in the data directory.

    With Supabase, reference photos go to the public SUPABASE_BUCKET and result images to the
    private SUPABASE_RESULTS_BUCKET, cached in the local images folder (`core.blobs.results`)."""
    journal = CleanupJournal(settings.data_dir / JOURNAL_NAME)
    if settings.storage_backend == "supabase":
        from core.blobs.results import CachedResults
        from core.blobs.supabase import SupabaseStorage, TeamBuckets

        url, key = settings.supabase_url, settings.supabase_key
        assert url and key
        private = SupabaseStorage(url, key, settings.supabase_results_bucket, journal=journal, public=False,
                                  setting="SUPABASE_RESULTS_BUCKET")
        # results kept before they had a bucket of their own are in the references bucket
        legacy = SupabaseStorage(url, key, settings.supabase_bucket, create_bucket=False)
        results = CachedResults(private, LocalStorage(settings.images_dir), legacy=legacy)
        return TeamBuckets(url, key, settings.supabase_bucket, journal=journal, results=results)
    return LocalStorage(settings.images_dir, journal=journal)
