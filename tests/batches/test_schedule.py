"""The batch runner (schedule, service) against the fal stand-in over real HTTP: every request is recorded before it is
sent and ends in a final recorded state (payload, response, stored images, timings), dry runs send
nothing, cancel also cancels what fal holds, and no fault ever makes a job run twice."""
from __future__ import annotations

import dataclasses
import hashlib
import io
import os
import threading
import time

import pytest
from PIL import Image

from core.store import open_store
from core.batches import plans
from core.batches import schedule, service
from core import processes
from core.config import load_settings
from core.errors import BatchBusy
from core.fal import FalClient, RetryPolicy
from core.catalog.payloads import payload_hash
from core.blobs import open_storage

SCHNELL = "fal-ai/flux/schnell"
EDIT = "fal-ai/flux-2/lora/edit"


def _jpeg() -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (600, 800), (30, 90, 160)).save(buf, "JPEG")
    return buf.getvalue()


@pytest.fixture
def live(fal_standin, tmp_path):
    """Settings pointing at the stand-in (FAL_KEY set), a store connection, and a batch maker."""
    settings = load_settings()
    settings.ensure_dirs()
    d = open_store(settings)
    (tmp_path / "face.jpg").write_bytes(_jpeg())

    def make_batch(models=(SCHNELL, EDIT), poses=("Standing", "Walking"), seeds=(1,), **extra):
        spec = {"name": "test", "models": list(models), "options": {"pose": list(poses)},
                "seeds": list(seeds), **extra}
        if any(m == EDIT for m in models):
            spec.setdefault("references", ["face.jpg"])
        plan = service.plan_batch(spec, store=d, storage=open_storage(settings), base_dir=tmp_path)
        return d.create_batch(plan.new_batch(), dry_run=settings.dry_run)

    yield settings, d, make_batch
    d.close()


@pytest.fixture
def quick_fal(live, fal_sleeps):
    """A client whose retry pauses are recorded, not slept (fault tests stay fast)."""
    client = FalClient(live[0], retry=RetryPolicy(sleep=fal_sleeps.append))
    yield client
    client.close()


def _run_in_background(d, batch_id, settings, *, concurrency, submitted):
    """Start run_batch in a thread; return (thread, [report]) once `submitted` jobs are at fal."""
    done: list = []
    t = threading.Thread(target=lambda: done.append(schedule.run_batch(batch_id, settings=settings,
                                                                       concurrency=concurrency)))
    t.start()
    deadline = time.monotonic() + 20
    while sum(r.fal_request_id is not None for r in d.batch_requests(batch_id)) < submitted:
        assert time.monotonic() < deadline, "the runner did not submit"
        time.sleep(0.02)
    return t, done


def _statuses(d, batch_id):
    return [r.status for r in d.batch_requests(batch_id)]


def test_happy_path_records_everything_and_keeps_the_images(live, fal_standin):
    settings, d, make_batch = live
    batch = make_batch()
    report = schedule.run_batch(batch.id, settings=settings, concurrency=3)
    assert report.finished and not report.dry_run and report.stopped is None
    reqs = d.batch_requests(batch.id)
    assert len(reqs) == 4 and {r.status for r in reqs} == {"completed"}
    images = d.result_images([r.id for r in reqs])
    storage = open_storage(settings)
    for r in reqs:
        assert r.fal_request_id and r.status_url and r.response_url and r.cancel_url
        assert r.http_status == 200 and r.error_type is None
        assert r.submitted_at <= r.queued_at <= r.completed_at
        assert r.total_time_s > 0 and r.inference_time_s is not None and r.queue_time_s is not None
        assert r.response["images"][0]["url"].startswith(fal_standin.url + "/files/")
        (img,) = images[r.id]
        data = storage.get(img.storage_path)
        assert img.storage_path.startswith(f"results/{r.id}/0-")
        assert img.sha256 == hashlib.sha256(data).hexdigest() and img.size_bytes == len(data)
        assert (img.width, img.height) == (1024, 1024) and img.nsfw is False
        assert img.fal_url == r.response["images"][0]["url"]
    # the stored edit payload names the reference by token; fal received the photo itself
    edit = next(r for r in reqs if r.endpoint == EDIT)
    assert edit.payload["image_urls"][0].startswith("reference://")
    received = [x["body"] for x in fal_standin.received if x["endpoint"] == EDIT]
    assert all(b["image_urls"][0].startswith("data:image/jpeg;base64,") for b in received)
    assert fal_standin.submissions == 4
    done = d.get_batch(batch.id)
    assert done.status == "finished" and done.runner_pid is None
    assert d.last_payload_sent().batch_id == batch.id


def test_dry_run_sends_nothing(settings):
    """No FAL_KEY: payloads validated and recorded as dry_run; fal (port 9 here) never contacted."""
    d = open_store(settings)
    plan = plans.make_plan({"name": "dry", "models": [SCHNELL, "fal-ai/flux-2"], "seeds": [1, 2]})
    batch = d.create_batch(plan.new_batch(), dry_run=settings.dry_run)
    assert batch.dry_run
    report = schedule.run_batch(batch.id, settings=settings)
    assert report.dry_run and report.finished
    assert _statuses(d, batch.id) == ["dry_run"] * 4
    assert all(r.submitted_at is None and r.fal_request_id is None for r in d.batch_requests(batch.id))
    assert d.last_payload_sent() is None


def test_a_live_batch_without_key_stops_and_stays_resumable(live, monkeypatch):
    settings, d, make_batch = live
    batch = make_batch(models=(SCHNELL,))
    monkeypatch.delenv("FAL_KEY")
    report = schedule.run_batch(batch.id, settings=load_settings())
    assert not report.finished and "FAL_KEY" in report.stopped
    assert set(_statuses(d, batch.id)) == {"planned"}


def test_cancel_stops_sending_and_cancels_jobs_fal_holds(live, fal_standin):
    """With one fal worker and long jobs, most requests wait in fal's queue: cancelling the batch
    cancels them at fal (PUT cancel) and marks the never-sent ones cancelled."""
    settings, d, make_batch = live
    fal_standin.set_latency(30)
    fal_standin.set_capacity(1)
    batch = make_batch(models=(SCHNELL,), poses=("Standing", "Walking", "Sitting", "Running", "Kneeling"),
                       seeds=(1, 2))
    t, done = _run_in_background(d, batch.id, settings, concurrency=4, submitted=4)
    service.cancel(d, batch.id, settings)
    t.join(30)
    assert not t.is_alive()
    (report,) = done
    assert report.finished and report.cancelled
    reqs = d.batch_requests(batch.id)
    assert {r.status for r in reqs} == {"cancelled"}
    sent = [r for r in reqs if r.fal_request_id]
    assert len(sent) == 4 and fal_standin.submissions == 4
    assert all(fal_standin.job_state(r.fal_request_id) == "COMPLETED" for r in sent)   # cancelled at fal
    assert fal_standin.stats()["requests"].get("cancel", 0) >= 4
    assert all("before this request was sent" in r.error_message for r in reqs if not r.fal_request_id)
    assert d.get_batch(batch.id).status == "cancelled"


@pytest.mark.parametrize("where, fault, params, status, error_type", [
    ("job", "content_policy_violation", {}, "failed", "content_policy_violation"),
    ("job", "runner_disconnected", {}, "failed", "runner_disconnected"),
    ("submit", "422", {}, "failed", "validation"),
    ("submit", "500", {}, "in_doubt", "in_doubt"),
    ("submit", "drop", {}, "in_doubt", "in_doubt"),
    ("submit", "ingress", {}, "completed", None),        # proxy page, no request id: safe to resend
    ("submit", "429", {"retry_after": 0}, "completed", None),
    ("status", "503", {}, "completed", None),           # polls are retried
    ("file", "500", {"times": 10}, "completed", None),    # paid: downloads ride through the outage
    ("job", "image_404", {"index": 0}, "failed", "download_failed"),   # the CDN lost it: answer kept
    ("job", "list_body", {}, "failed", "bad_response"),      # an answer of the wrong shape: kept
    ("job", "missing_fields", {}, "failed", "bad_response"),
])
def test_each_fault_ends_in_a_final_recorded_state(live, fal_standin, quick_fal, where, fault, params,
                                                    status, error_type):
    settings, d, make_batch = live
    batch = make_batch(models=(SCHNELL,), poses=("Standing",))
    params = dict(params)
    fal_standin.inject(where, fault, params.pop("times", 1), **params)
    report = schedule.run_batch(batch.id, settings=settings, fal=quick_fal, stream=where != "status")
    assert report.finished or (status == "in_doubt" and report.progress.settled)
    (r,) = d.batch_requests(batch.id)
    assert (r.status, r.error_type) == (status, error_type)
    if status == "failed":
        assert r.error_message and r.completed_at
    # nothing ever ran twice: one accepted job at most for the one payload
    assert fal_standin.submissions <= 1
    if error_type == "download_failed":
        assert r.response["images"] and "re-run" in r.error_message    # response kept: fal billed it
    if error_type == "bad_response":
        assert r.http_status == 200 and r.response and "Re-run" in r.error_message
    if (where, fault) == ("job", "content_policy_violation"):
        assert r.http_status == 422 and r.response["detail"][0]["type"] == "content_policy_violation"


@pytest.mark.parametrize("where", ["status", "result"])
def test_an_outage_while_following_is_ridden_through_and_nothing_is_sent_twice(
        live, fal_standin, quick_fal, where):
    """fal unreachable (after the client's retries) while polling or fetching an accepted job: the
    run waits for fal with capped backoff and finishes by itself; the job is never sent again."""
    settings, d, make_batch = live
    batch = make_batch(models=(SCHNELL,), poses=("Standing",))
    fal_standin.inject(where, "500", quick_fal.retry.max_attempts * 2)   # two calls' retries, all failing
    report = schedule.run_batch(batch.id, settings=settings, fal=quick_fal, stream=False)
    assert report.finished and report.stopped is None
    (r,) = d.batch_requests(batch.id)
    assert r.status == "completed" and fal_standin.submissions == 1


@pytest.mark.parametrize("where", ["status", "result"])
def test_an_outage_past_the_limit_leaves_the_job_resumable_and_resume_completes_it(
        live, fal_standin, quick_fal, where):
    """Past DASHBOARD_OUTAGE_LIMIT_S the run stops, with its reason stored on the batch; the paid job
    keeps fal's id and a resume completes it."""
    settings, d, make_batch = live
    settings = dataclasses.replace(settings, outage_limit_s=0.0)
    batch = make_batch(models=(SCHNELL,), poses=("Standing",))
    fal_standin.inject(where, "500", quick_fal.retry.max_attempts)   # one call's retries, all failing
    report = schedule.run_batch(batch.id, settings=settings, fal=quick_fal, stream=False)
    assert not report.finished and "resume" in report.stopped
    assert d.get_batch(batch.id).stop_reason == report.stopped
    (r,) = d.batch_requests(batch.id)
    assert r.status in ("queued", "running") and r.fal_request_id and r.error_type is None
    report = schedule.run_batch(batch.id, settings=settings, fal=quick_fal)
    assert report.finished and d.get_request(r.id).status == "completed"
    assert fal_standin.submissions == 1 and d.get_batch(batch.id).stop_reason is None


def test_a_refused_key_stops_the_batch_and_a_resume_finishes_it(live, fal_standin):
    settings, d, make_batch = live
    batch = make_batch(models=(SCHNELL,), poses=("Standing", "Walking", "Sitting"))
    fal_standin.set_key("another-key")
    report = schedule.run_batch(batch.id, settings=settings, concurrency=1)
    assert not report.finished and "FAL_KEY" in report.stopped
    assert set(_statuses(d, batch.id)) == {"planned"} and fal_standin.submissions == 0
    stopped = d.get_batch(batch.id)
    assert stopped.stop_reason == report.stopped and stopped.stopped_at   # what the page shows
    fal_standin.reset()
    assert schedule.run_batch(batch.id, settings=settings).finished
    assert d.get_batch(batch.id).stop_reason is None   # the resumed run took the batch again
    assert set(_statuses(d, batch.id)) == {"completed"} and fal_standin.submissions == 3


def test_resume_follows_jobs_at_fal_and_never_resends_an_unconfirmed_submit(live, fal_standin):
    """A request with a fal id is polled (not sent again); one left `submitted` without an id is
    in doubt (the POST may have reached fal), never sent again by itself; planned ones are sent."""
    settings, d, make_batch = live
    batch = make_batch(models=(SCHNELL,), poses=("Standing", "Walking", "Sitting"))
    at_fal, unconfirmed, planned = d.batch_requests(batch.id)
    with FalClient(settings) as fal:
        handle = fal.submit(SCHNELL, at_fal.payload)
    d.mark_submitted(at_fal.id)
    d.mark_queued(at_fal.id, fal_request_id=handle.request_id, status_url=handle.status_url,
                      response_url=handle.response_url, cancel_url=handle.cancel_url)
    d.mark_submitted(unconfirmed.id)
    report = schedule.run_batch(batch.id, settings=settings)
    assert not report.finished and report.progress.settled and report.progress.in_doubt == 1
    got = {r.id: r for r in d.batch_requests(batch.id)}
    assert got[at_fal.id].status == "completed" and got[at_fal.id].fal_request_id == handle.request_id
    assert got[unconfirmed.id].status == "in_doubt"
    assert "NOT sent again" in got[unconfirmed.id].error_message
    assert got[planned.id].status == "completed"
    by_hash = fal_standin.submissions_by_hash
    assert by_hash[payload_hash(at_fal.payload)] == 1 and by_hash[payload_hash(planned.payload)] == 1
    assert payload_hash(unconfirmed.payload) not in by_hash


def test_a_batch_with_a_live_runner_is_busy(live):
    settings, d, make_batch = live
    batch = make_batch(models=(SCHNELL,))
    d.claim_batch(batch.id, pid=os.getpid())
    d.db.execute("UPDATE batches SET runner_pid = ? WHERE id = ?", [os.getppid(), batch.id])
    with pytest.raises(BatchBusy):
        schedule.run_batch(batch.id, settings=settings)
    assert set(_statuses(d, batch.id)) == {"planned"}


def test_a_rerun_is_sent_by_the_next_run(live, fal_standin):
    settings, d, make_batch = live
    batch = make_batch(models=(SCHNELL,), poses=("Standing",))
    schedule.run_batch(batch.id, settings=settings)
    (first,) = d.batch_requests(batch.id)
    again = d.rerun_request(first.id)
    assert schedule.run_batch(batch.id, settings=settings).finished
    assert d.get_request(again.id).status == "completed"
    assert fal_standin.submissions_by_hash[first.payload_hash] == 2     # asked for twice, on purpose


def test_start_batch_process_runs_detached_and_reports_through_the_store(live, fal_standin):
    settings, d, make_batch = live
    batch = make_batch(models=(SCHNELL,), poses=("Standing", "Walking"))
    pid = service.start_runner(d, settings, batch.id)
    assert pid != os.getpid()
    deadline = time.monotonic() + 60
    while not d.batch_progress(batch.id).is_finished:
        assert time.monotonic() < deadline, processes.log_path(settings, f"batch-{batch.id}").read_text()
        time.sleep(0.05)
    assert set(_statuses(d, batch.id)) == {"completed"}
    assert processes.log_path(settings, f"batch-{batch.id}").exists()


def test_cancel_without_a_live_runner_cancels_in_the_background(live, fal_standin):
    settings, d, make_batch = live
    batch = make_batch(models=(SCHNELL,), poses=("Standing", "Walking"))
    service.cancel(d, batch.id, settings)
    deadline = time.monotonic() + 60
    while not d.batch_progress(batch.id).is_finished:
        assert time.monotonic() < deadline, processes.log_path(settings, f"batch-{batch.id}").read_text()
        time.sleep(0.05)
    assert set(_statuses(d, batch.id)) == {"cancelled"} and fal_standin.submissions == 0


def test_a_rerun_added_while_its_batch_runs_is_sent_by_the_live_runner(live, fal_standin):
    """History's re-run lands in the batch whose runner may still be alive (a second runner is
    refused as BatchBusy): the live runner picks it up before it exits."""
    settings, d, make_batch = live
    fal_standin.set_latency(0.6)
    batch = make_batch(models=(SCHNELL,), poses=("Standing", "Walking"))
    done = []
    t = threading.Thread(target=lambda: done.append(schedule.run_batch(batch.id, settings=settings,
                                                                     concurrency=1)))
    t.start()
    deadline = time.monotonic() + 20
    while not any(r.fal_request_id for r in d.batch_requests(batch.id)):
        assert time.monotonic() < deadline
        time.sleep(0.02)
    first = next(r for r in d.batch_requests(batch.id) if r.fal_request_id)
    again = d.rerun_request(first.id, created_by="ana", dry_run=False)
    t.join(60)
    assert done and done[0].finished
    rerun = d.get_request(again.id)
    assert rerun.batch_id == batch.id and rerun.rerun_of == first.id
    assert rerun.status == "completed" and fal_standin.submissions == 3


def test_rerun_of_a_dry_run_request_once_a_key_is_set_goes_to_a_new_live_batch(live):
    settings, d, make_batch = live
    batch = make_batch(models=(SCHNELL,), poses=("Standing",))
    d.db.execute("UPDATE batches SET dry_run = 1 WHERE id = ?", [batch.id])
    (old,) = d.batch_requests(batch.id)
    same_mode = d.rerun_request(old.id, dry_run=True)
    assert same_mode.batch_id == batch.id and same_mode.dry_run
    live_run = d.rerun_request(old.id, dry_run=False)
    assert live_run.batch_id != batch.id and not live_run.dry_run
    assert not d.get_batch(live_run.batch_id).dry_run


def test_an_outage_of_every_fal_call_mid_batch_is_ridden_through_by_the_stream_follower(live, fal_standin):
    """Every call (stream, status, result, downloads, submits) answered by a gateway page for a few
    seconds while jobs are at fal: the run waits, finishes by itself, and nothing is sent twice."""
    settings, d, make_batch = live
    fal_standin.set_latency(1.0)
    batch = make_batch(models=(SCHNELL,), poses=("Standing", "Walking", "Sitting"), seeds=(1, 2))
    t, done = _run_in_background(d, batch.id, settings, concurrency=2, submitted=2)
    fal_standin.outage(4)
    t.join(90)
    assert not t.is_alive()
    (report,) = done
    assert report.finished and report.stopped is None
    assert {r.status for r in d.batch_requests(batch.id)} == {"completed"}
    assert fal_standin.submissions == 6


def test_on_sending_is_called_once_after_fal_accepted_the_first_job(live, fal_standin):
    """`batch run` starts the metrics worker from this hook: never before a job exists at fal,
    never twice."""
    settings, d, make_batch = live
    batch = make_batch(models=(SCHNELL,), poses=("Standing", "Walking", "Sitting"))
    fal_standin.set_latency(0.3)
    seen = []

    def on_sending():
        seen.append(d.db.execute("SELECT count(*) FROM requests WHERE batch_id = ? AND fal_request_id IS NOT NULL",
                                 [batch.id]).fetchone()[0])

    report = schedule.run_batch(batch.id, settings=settings, concurrency=1, on_sending=on_sending)
    assert report.finished
    assert len(seen) == 1 and seen[0] >= 1


def test_on_sending_is_not_called_when_nothing_is_accepted(live, fal_standin):
    settings, d, make_batch = live
    batch = make_batch(models=(SCHNELL,))
    fal_standin.set_key("another-key")   # every submit refused: nothing exists at fal
    seen = []
    report = schedule.run_batch(batch.id, settings=settings, on_sending=lambda: seen.append(1))
    assert report.stopped and seen == []


def test_on_sending_is_called_even_when_the_run_ends_before_the_supervisor_looks(live, fal_standin):
    settings, d, make_batch = live
    batch = make_batch(models=(SCHNELL,), poses=("Standing",))
    fal_standin.set_latency(0.0)
    seen = []
    assert schedule.run_batch(batch.id, settings=settings, on_sending=lambda: seen.append(1)).finished
    assert seen == [1]


def test_on_postgres_the_finishers_sessions_open_while_the_first_jobs_run(pg_url, fal_standin, monkeypatch):
    """A finisher's session is opened in the background once fal accepted the run's first job,
    not when the first result arrives, together with the next submits: before any job of a
    2-slot run is done, its store, its 2 senders and its 2 finishers each hold a session. The
    run asks for them once (the supervisor looks every 0.25 s)."""
    from core.store import pg
    from tests.pg_fixtures import session_count

    monkeypatch.setenv("DATABASE_URL", pg_url)
    settings = load_settings()
    settings.ensure_dirs()
    plan = plans.make_plan({"name": "warm", "models": [SCHNELL], "options": {"pose": ["Standing", "Walking"]},
                            "seeds": [1]})
    store = open_store(settings)
    batch = store.create_batch(plan.new_batch(), dry_run=False)
    warmed: list[int] = []
    warm = store.warm
    store.warm = lambda n: (warmed.append(n), warm(n))
    pg.close_idle(pg_url)
    fal_standin.set_latency(3.0)
    done: list = []
    runner = threading.Thread(target=lambda: done.append(schedule.run_batch(batch.id, settings=settings,
                                                                            concurrency=2, store=store)))
    runner.start()
    try:
        deadline = time.monotonic() + 2.5   # the first job is done 3 s after its submit
        while session_count(pg_url) < 5:
            assert time.monotonic() < deadline, f"{session_count(pg_url)} sessions before the first result"
            time.sleep(0.05)
        with store.twin() as reader:
            assert not any(r.status == "completed" for r in reader.batch_requests(batch.id))
    finally:
        runner.join(30)
        store.close()
    assert done and done[0].finished
    assert warmed == [2, 2]   # the senders' sessions, then the finishers': once each
