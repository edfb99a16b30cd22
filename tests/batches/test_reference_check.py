"""Before a batch sends anything, every reference photo it would send is checked once: a photo
fal could not fetch (a bucket switched to private, a missing object) stops the batch with the
reason stored and not one request sent, so nothing is paid for jobs that cannot see the photo."""
from __future__ import annotations

import io

from PIL import Image

from core.batches import schedule, service
from core.config import load_settings
from core.store import open_store
from core.blobs import open_storage
from tests.standins.supabase_fixtures import BUCKET

SCHNELL = "fal-ai/flux/schnell"
EDIT = "fal-ai/flux-2/lora/edit"


def _jpeg(colour) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (600, 800), colour).save(buf, "JPEG")
    return buf.getvalue()


def _batch(tmp_path, d, settings, photos):
    for name, colour in photos:
        (tmp_path / name).write_bytes(_jpeg(colour))
    spec = {"name": "refs", "models": [SCHNELL, EDIT], "options": {"pose": ["Standing", "Walking"]},
            "seeds": [1], "references": [name for name, _ in photos]}
    storage = open_storage(settings)
    try:
        plan = service.plan_batch(spec, store=d, storage=storage, base_dir=tmp_path)
    finally:
        storage.close()
    return d.create_batch(plan.new_batch(), dry_run=settings.dry_run)


def test_a_bucket_switched_to_private_stops_the_batch_before_anything_is_sent(
        fal_standin, supabase_env, tmp_path):
    settings = load_settings()
    settings.ensure_dirs()
    d = open_store(settings)
    batch = _batch(tmp_path, d, settings, [("ana.jpg", (30, 90, 160)), ("bo.jpg", (160, 90, 30))])
    supabase_env.buckets[BUCKET].public = False
    before = len(supabase_env.requests)

    report = schedule.run_batch(batch.id, settings=settings)

    assert fal_standin.submissions == 0 and fal_standin.received == []
    assert not report.finished and "private or gone" in report.stopped
    assert "No request of the batch was sent" in report.stopped and f"batch resume {batch.id}" in report.stopped
    assert d.get_batch(batch.id).stop_reason == report.stopped        # what the pages and `status` show
    assert {r.status for r in d.batch_requests(batch.id)} == {"planned"}
    # the first refusal stops the check
    assert [r.op for r in supabase_env.requests[before:]] == ["public"]

    supabase_env.buckets[BUCKET].public = True                        # fixed: a resume sends it all
    before = len(supabase_env.requests)
    report = schedule.run_batch(batch.id, settings=settings)
    # each reference probed once, although both edit requests send both
    probes = [r.path for r in supabase_env.requests[before:] if r.op == "public"]
    assert len(probes) == 2 and len(set(probes)) == 2
    assert report.finished and report.stopped is None
    assert {r.status for r in d.batch_requests(batch.id)} == {"completed"} and fal_standin.submissions == 4
    d.close()


def test_a_missing_reference_object_stops_the_batch_and_accepted_jobs_are_still_followed(
        fal_standin, supabase_env, tmp_path):
    """A resume that finds a job fal already accepted follows it to its end even when a reference
    of the requests still to send has gone: the paid job is kept, the others wait."""
    settings = load_settings()
    settings.ensure_dirs()
    d = open_store(settings)
    batch = _batch(tmp_path, d, settings, [("ana.jpg", (30, 90, 160))])
    reqs = d.batch_requests(batch.id)
    # one schnell job accepted by fal before the runner died
    from core.fal import FalClient

    first = next(r for r in reqs if r.endpoint == SCHNELL)
    with FalClient(settings) as fal:
        d.mark_submitted(first.id)
        h = fal.submit(first.endpoint, first.payload)
    d.mark_queued(first.id, fal_request_id=h.request_id, status_url=h.status_url,
                  response_url=h.response_url, cancel_url=h.cancel_url)
    supabase_env.objects.clear()

    report = schedule.run_batch(batch.id, settings=settings)

    assert "stored file is missing" in report.stopped
    after = {r.id: r for r in d.batch_requests(batch.id)}
    assert after[first.id].status == "completed"
    assert sorted(r.status for r in after.values()) == ["completed", "planned", "planned", "planned"]
    assert fal_standin.submissions == 1
    d.close()
