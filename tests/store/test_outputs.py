"""The one rule for "a model's output in a group" (`store.pick_output` over `Store.group_outputs`),
which Review, Compare, the Leaderboard's votes and the comparison CSV all use: the newest
COMPLETED request whose first image is stored; for the CSV and Compare, else the newest request
so a failure shows."""
from __future__ import annotations

import io

import pytest
from PIL import Image

from core.batches import plans
from core.values import RequestStatus
from core.blobs import open_storage
from tests.results import record_result

SCHNELL = "fal-ai/flux/schnell"
THIRD = "fal-ai/flux-2/edit"


def _png(colour: str) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (32, 32), colour).save(buf, "PNG")
    return buf.getvalue()


@pytest.fixture
def group(st, settings):
    """One group with one planned SCHNELL request: (batch, group id, that request, storage)."""
    settings.ensure_dirs()
    batch = st.create_batch(plans.make_plan({"name": "o", "models": [SCHNELL], "seeds": [1]}).new_batch(), dry_run=False)
    (rec,) = st.batch_requests(batch.id)
    return batch, rec.group_id, rec, open_storage(settings)


def _output(st, batch_id, group_id, **kw):
    return st.group_outputs(batch_id, **kw).get(group_id, {}).get(SCHNELL)


def test_a_completed_request_with_a_stored_image_is_the_output(st, group):
    batch, gid, rec, storage = group
    record_result(st, storage, rec.id, [_png("red"), _png("blue")])
    out = _output(st, batch.id, gid)
    assert out.request_id == rec.id and out.image.idx == 0 and out.image.stored
    assert out.image.metrics.pending            # the image carries its (not yet measured) metrics


def test_a_newer_completed_rerun_replaces_it_but_a_failed_rerun_does_not(st, group):
    batch, gid, rec, storage = group
    record_result(st, storage, rec.id, [_png("red")])
    failed = st.rerun_request(rec.id)
    st.mark_failed(failed.id, error_type="x", error_message="boom")
    assert _output(st, batch.id, gid).request_id == rec.id
    # ... the CSV and Compare still show the newest request when asked for it, only when no
    # request qualifies (here one does)
    assert _output(st, batch.id, gid, or_newest=True).request_id == rec.id
    newer = st.rerun_request(rec.id)
    record_result(st, storage, newer.id, [_png("green")])
    assert _output(st, batch.id, gid).request_id == newer.id


def test_without_a_stored_image_review_has_no_output_and_the_csv_shows_the_newest(st, group):
    batch, gid, rec, _ = group
    st.mark_submitted(rec.id)
    st.mark_completed(rec.id, response={"images": [{"url": "https://v3.fal.media/x.png"}]})
    st.add_result_image(rec.id, idx=0, fal_url="https://v3.fal.media/x.png", storage_backend=None,
                        storage_path=None, sha256=None, width=1, height=1, content_type="image/png",
                        size_bytes=1, nsfw=False)
    again = st.rerun_request(rec.id)
    st.mark_failed(again.id, error_type="x", error_message="boom")
    assert _output(st, batch.id, gid) is None
    shown = _output(st, batch.id, gid, or_newest=True)
    assert shown.request_id == again.id and shown.request.status == RequestStatus.FAILED
    assert shown.image is None


def test_review_and_the_comparison_csv_pick_the_same_output(st, settings):
    """The rule is shared: the request Review shows is the one the CSV row names."""
    from core.evaluation import review
    from core.export import comparison
    from tests.review_support import completed_batch

    batch, groups, by_group = completed_batch(models=(SCHNELL, THIRD), options={"subject": ["Woman"]})
    old = by_group[groups[0].id][SCHNELL]
    newer = st.rerun_request(old.id)
    record_result(st, open_storage(settings), newer.id, [_png("olive")])
    (item,) = review.review_items(st, batch.id, "ana")
    shown = {item.left.endpoint: item.left.request_id, item.right.endpoint: item.right.request_id}
    assert shown[SCHNELL] == newer.id
    csv_text = "".join(comparison.iter_csv(st, batch_id=batch.id))
    assert newer.id in csv_text and old.id not in csv_text
