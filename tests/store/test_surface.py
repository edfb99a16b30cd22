"""The store's declared surface (as httpx's test_exported_members): what `core.store` exports and
which methods a Store has. Renaming or dropping one breaks callers, so it must be deliberate."""
from __future__ import annotations

import core.store
from core.store import Store

EXPORTED = {
    "HEARTBEAT_STALE_S", "HISTORY_CELLS", "MAX_PAGE_SIZE", "ImageToMeasure", "Store", "open_store",
    "runner_alive", "safe_cell",
}

METHODS = {
    # batches and groups
    "create_batch", "batch_by_launch_key", "get_batch", "list_batches", "get_groups", "batch_requests", "batch_progress",
    "unfinished_batches", "request_cancel", "claim_batch", "heartbeat", "release_batch",
    "set_stop_reason", "mark_launched", "set_unreachable", "contenders_in", "group_requests",
    "get_contenders", "save_contenders", "newest_voted_batch", "read_only",
    # requests
    "record_request", "get_request", "mark_submitted", "mark_unsent", "mark_in_doubt", "send_again", "give_up", "mark_queued", "mark_running",
    "update_queue_position", "mark_completed", "mark_failed", "mark_cancelled", "mark_dry_run",
    "rerun_request", "last_payload_sent", "diff_payloads",
    # result images and their metrics
    "add_result_image", "result_images", "image_to_measure", "save_image_metrics", "image_metrics",
    "pending_image_ids", "pending_count", "reset_metrics",
    # history
    "count_history", "query_history", "iter_history_csv", "history_contender_ids", "refresh_export_lines",
    # votes
    "add_vote", "get_vote", "list_votes", "voted_pairs", "groups_by_id",
    # reference photos
    "insert_reference", "get_reference", "reference_by_sha", "list_references", "update_reference",
    "reference_path_named",
    "archive_reference",
    # the comparison's reads
    "group_outputs", "output_contenders", "data_version", "request_costs", "metric_rows", "comparison_models",
    "batch_names", "count_groups", "first_appearances",
    # each batch's Leaderboard figures, for "all batches"
    "batch_stamps", "stored_figures", "save_figures",
    "close",
}


def test_core_store_exports_exactly_its_declared_names():
    assert set(core.store.__all__) == EXPORTED
    assert all(hasattr(core.store, name) for name in EXPORTED)


def test_a_store_has_exactly_the_declared_methods():
    assert {n for n in dir(Store) if not n.startswith("_")} == METHODS


def test_sqlite_errors_stay_behind_the_store_as_store_unavailable(settings):
    """A database locked past the busy timeout (or full, or read-only) reaches a caller as
    StoreUnavailable, which the runner retries: never a raw sqlite3 error."""
    import sqlite3

    import pytest

    from core.errors import StoreUnavailable
    from core.store import open_store

    store = open_store(settings.db_path)
    store.db.execute("PRAGMA busy_timeout = 50")
    other = sqlite3.connect(settings.db_path, isolation_level=None)
    other.execute("BEGIN EXCLUSIVE")
    try:
        with pytest.raises(StoreUnavailable, match="database is locked"):
            store.record_request(endpoint="fal-ai/flux/schnell", payload={"prompt": "p"})
    finally:
        other.execute("ROLLBACK")
        other.close()
    assert store.record_request(endpoint="fal-ai/flux/schnell", payload={"prompt": "p"}).status == "planned"
    store.close()
