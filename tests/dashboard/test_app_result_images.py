"""Pages show result images kept in the private Supabase results bucket: the server reads the
bytes with the key and hands the page a JPEG; a page never gets a bucket URL (nor the key), and
a bucket that cannot be reached is said in a sentence under the image, not a traceback."""
from __future__ import annotations

import shutil

import pytest

from core.batches import service
from core.blobs import open_storage
from core.catalog import registry
from core.config import load_settings
from core.photos import references
from tests.apptest_support import new_store, open_page, photo, texts
from tests.results import record_result

SCHNELL, EDIT = registry.DEFAULT_MODELS


@pytest.fixture(autouse=True)
def _close_the_pages_storage(supabase_env):
    """The page's storage is a process-wide cached resource with open HTTP connections: close it
    after each test (a socket left to the garbage collector is a warning, so an error)."""
    yield
    from dashboard import _resources

    _resources.storage().close()


def _completed_batch():
    store = new_store()
    settings = load_settings()
    settings.ensure_dirs()
    storage = open_storage(settings)
    try:
        ref = references.add_reference(store, storage, photo("red"), role="face", filename="red.jpg",
                                       settings=settings)
    finally:
        storage.close()
    plan = service.plan_batch({"name": "look", "references": [ref.id], "options": {"subject": ["Woman"]},
                               "models": [SCHNELL, EDIT], "seeds": [1]}, store=store)
    batch = store.create_batch(plan.new_batch(), dry_run=False)
    storage = open_storage(load_settings())
    try:
        for i, r in enumerate(store.batch_requests(batch.id)):
            record_result(store, storage, r.id, [photo(["blue", "green"][i % 2], size=(256, 256), fmt="PNG")])
    finally:
        storage.close()
    return batch


def _forget_local_copies():
    """As on a host that never saw these results: no copy in its images folder."""
    shutil.rmtree(load_settings().images_dir / "results")


def test_compare_shows_results_read_from_the_private_bucket_without_giving_the_page_a_url(supabase_env):
    standin = supabase_env
    _completed_batch()
    assert len(standin.paths("results")) == 2 and standin.buckets["results"].public is False
    _forget_local_copies()

    at = open_page("compare.py")
    assert len(at.image) == 3                                   # the reference and both results
    shown = " ".join(str(img.proto) for img in at.image)
    assert standin.url not in shown and "/storage/v1/" not in shown and standin.key not in shown
    assert not any("Kept copy not shown" in c for c in texts(at.caption))
    # the server fetched them (with its key) and kept copies for the next page
    assert len([r for r in standin.requests if r.op == "download" and "/results/" in r.path]) == 2
    assert len(list((load_settings().images_dir / "results").rglob("*.png"))) == 2


def test_compare_says_when_the_results_bucket_cannot_be_reached_and_shows_them_once_it_answers(supabase_env):
    standin = supabase_env
    _completed_batch()
    _forget_local_copies()
    standin.fail("download", "500", times=20)

    at = open_page("compare.py")
    notes = [c for c in texts(at.caption) if "Kept copy not shown" in c]
    assert len(notes) == 2 and all("cannot be read now" in n for n in notes)
    assert not any(standin.key in c for c in texts(at.caption))

    standin._faults.clear()
    at = open_page("compare.py", clear_caches=False)   # a failure was not cached: a reload shows them
    assert not any("Kept copy not shown" in c for c in texts(at.caption))
    assert len(list((load_settings().images_dir / "results").rglob("*.png"))) == 2
