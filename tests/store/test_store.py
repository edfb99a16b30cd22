"""The store: one SQLite file, rows written before sending, a one-way status lifecycle, history
queries that page instead of loading the table, payload diffs, re-runs and batch ownership."""
from __future__ import annotations

import datetime as dt
import os
import subprocess
import sys

import pytest

from core import values
from core.processes import pid_alive
from core.store import HEARTBEAT_STALE_S
from core.batches import plans
from core.values import HistoryFilter
from core.errors import BatchBusy, StoreError
from core.catalog.payloads import canonical_json, payload_hash

SCHNELL = "fal-ai/flux/schnell"
EDIT = "fal-ai/flux-2/lora/edit"


@pytest.fixture
def d(st):
    return st


def _plan(**over):
    spec = {"name": "t", "options": {"pose": ["Standing", "Walking"]}, "models": [SCHNELL],
            "seeds": [1, 2]}
    spec.update(over)
    return plans.make_plan(spec)


def _request(d, prompt="A Woman model, photorealistic", endpoint=SCHNELL, **kw):
    payload = {"prompt": prompt, "image_size": "square_hd", "seed": 3}
    return d.record_request(endpoint=endpoint, payload=payload, **kw)


def _set(d, request_id, **cols):
    sets = ", ".join(f"{k} = ?" for k in cols)
    d.db.execute(f"UPDATE requests SET {sets} WHERE id = ?", [*cols.values(), request_id])


# ---------------------------------------------------------------------------- requests


def test_record_request_stores_canonical_payload_and_hash_before_sending(d):
    payload = {"seed": 3, "prompt": "x", "image_size": {"width": 512, "height": 768}}
    rec = d.record_request(endpoint=SCHNELL, payload=payload, seed=3)
    assert rec.status == "planned" and rec.submitted_at is None
    assert rec.payload_json == canonical_json(payload)
    assert rec.payload_hash == payload_hash(payload)
    assert rec.payload == payload and rec.prompt == "x"


def test_a_payload_with_a_data_uri_is_refused(d):
    """data: URIs never reach a row: local references must be stored as reference://<id>."""
    with pytest.raises(StoreError, match="reference://"):
        d.record_request(endpoint=EDIT, payload={"prompt": "x",
                                                        "image_urls": ["data:image/png;base64,AAAA"]})
    assert d.db["requests"].count == 0


def test_lifecycle_records_each_step_and_timings(d):
    rec = _request(d)
    assert d.mark_submitted(rec.id)
    assert d.mark_queued(rec.id, fal_request_id="fal-1", status_url="http://s", response_url="http://r",
                             cancel_url="http://c", queue_position=3)
    assert d.mark_running(rec.id, logs=[{"message": "step 1"}])
    response = {"images": [{"url": "https://x/1.jpg"}], "timings": {"inference": 0.8}}
    assert d.mark_completed(rec.id, response=response, inference_time_s=0.8)
    got = d.get_request(rec.id)
    assert got.status == "completed" and got.is_final
    assert got.fal_request_id == "fal-1" and got.queue_position == 3 and got.cancel_url == "http://c"
    assert got.submitted_at <= got.queued_at <= got.started_at <= got.completed_at
    assert got.inference_time_s == 0.8
    assert got.queue_time_s is not None and got.queue_time_s >= 0
    assert got.total_time_s >= got.queue_time_s
    assert got.response == response and got.http_status == 200 and got.attempts == 1


def test_a_runner_that_keeps_its_submit_time_records_the_same_queue_time(d):
    """The runner passes the submit time it wrote (`mark_submitted(at=)`) to `mark_running`
    instead of the store reading it back: the row holds that time, the queue time runs from it,
    and an unknown request is still refused."""
    rec = _request(d)
    at = "2026-12-07T10:00:00.250000+00:00"
    assert d.mark_submitted(rec.id, at=at)
    d.mark_queued(rec.id, fal_request_id="f", status_url=None, response_url=None, cancel_url=None)
    assert d.mark_running(rec.id, submitted_at=at)
    got = d.get_request(rec.id)
    assert got.submitted_at == at and got.status == "running"
    started = dt.datetime.fromisoformat(got.started_at)
    assert got.queue_time_s == round((started - dt.datetime.fromisoformat(at)).total_seconds(), 6)
    assert d.mark_running(rec.id, submitted_at=at) is False   # once only
    with pytest.raises(StoreError):
        d.mark_running("nope", submitted_at=at)


def test_status_never_moves_backwards_or_out_of_a_final_state(d):
    """A late poll result (running after completed) or a repeated update changes nothing."""
    rec = _request(d)
    d.mark_submitted(rec.id)
    d.mark_queued(rec.id, fal_request_id="f", status_url=None, response_url=None, cancel_url=None)
    d.mark_completed(rec.id, response={"images": []})
    assert d.mark_running(rec.id) is False
    assert d.mark_failed(rec.id, error_type="x", error_message="y") is False
    assert d.mark_cancelled(rec.id) is False
    assert d.mark_submitted(rec.id) is False
    assert d.get_request(rec.id).status == "completed"


def test_failed_and_cancelled_keep_error_and_unsent_goes_back_to_planned(d):
    a, b, c = _request(d), _request(d), _request(d)
    d.mark_submitted(a.id)
    d.mark_failed(a.id, error_type="validation", error_message="image_size: bad", http_status=422,
                      response={"detail": [{"loc": ["body", "image_size"]}]})
    got = d.get_request(a.id)
    assert (got.status, got.error_type, got.http_status) == ("failed", "validation", 422)
    assert got.response == {"detail": [{"loc": ["body", "image_size"]}]}
    d.mark_cancelled(b.id, reason="batch cancelled before this request was sent")
    assert d.get_request(b.id).error_message.startswith("batch cancelled")
    d.mark_submitted(c.id)
    assert d.mark_unsent(c.id)
    got = d.get_request(c.id)
    assert got.status == "planned" and got.submitted_at is None and got.attempts == 1


def test_unknown_ids_are_store_errors(d):
    with pytest.raises(StoreError, match="No request"):
        d.get_request("nope")
    with pytest.raises(StoreError, match="No request"):
        d.mark_submitted("nope")
    with pytest.raises(StoreError, match="No batch"):
        d.get_batch("nope")


def test_result_images_are_recorded_once_per_index(d):
    """A resumed download of the same image overwrites its row instead of adding a second one."""
    rec = _request(d)
    kw = dict(fal_url="https://v3.fal.media/a.jpg", storage_backend="local",
              storage_path=f"results/{rec.id}/0.jpg", width=512, height=512,
              content_type="image/jpeg", size_bytes=10, nsfw=False)
    d.add_result_image(rec.id, idx=0, sha256="a" * 64, **kw)
    d.add_result_image(rec.id, idx=0, sha256="b" * 64, **kw)
    d.add_result_image(rec.id, idx=1, sha256="c" * 64, **{**kw, "nsfw": True})
    images = d.result_images([rec.id, "other"])
    assert [(i.idx, i.sha256[0], i.nsfw) for i in images[rec.id]] == [(0, "b", False), (1, "c", True)]
    assert images["other"] == []


# ---------------------------------------------------------------------------- batches


def test_create_batch_writes_batch_groups_and_planned_requests(d):
    plan = _plan(models=[SCHNELL, "fal-ai/flux-2"])
    batch = d.create_batch(plan.new_batch(), dry_run=True, concurrency=4, created_by="ana")
    assert (batch.request_count, batch.dry_run, batch.status, batch.concurrency) == (8, True, "planned", 4)
    assert batch.estimated_cost == pytest.approx(plan.estimated_cost)
    assert batch.plan["seeds"] == [1, 2]
    groups = d.get_groups(batch.id)
    assert len(groups) == 4
    reqs = d.batch_requests(batch.id)
    assert len(reqs) == 8 and {r.status for r in reqs} == {"planned"}
    by_group: dict[str, list] = {}
    for r in reqs:
        by_group.setdefault(r.group_id, []).append(r)
    for g in groups:
        members = by_group[g.id]
        assert {r.endpoint for r in members} == {SCHNELL, "fal-ai/flux-2"}
        assert {(r.prompt, r.seed, r.image_size) for r in members} == {(g.prompt, g.seed, g.image_size)}
    progress = d.batch_progress(batch.id)
    assert progress.counts == {"planned": 8} and progress.done == 0 and not progress.is_finished
    assert progress.estimated_cost == pytest.approx(plan.estimated_cost)


def test_a_preview_plan_cannot_be_recorded(d):
    plan = plans.Plan(name="p", models=(SCHNELL,), seeds=(1,), reference_ids=(), groups=(), requests=(),
                      estimated_cost=0.0, plan_json={}, final=False)
    with pytest.raises(StoreError, match="preview"):
        d.create_batch(plan.new_batch(), dry_run=True)


def test_progress_finish_and_unfinished_batches(d):
    batch = d.create_batch(_plan().new_batch(), dry_run=False)
    other = d.create_batch(_plan().new_batch(), dry_run=False)
    reqs = d.batch_requests(batch.id)
    for r in reqs[:3]:
        d.mark_cancelled(r.id)
    assert {b.id for b in d.unfinished_batches()} == {batch.id, other.id}
    d.claim_batch(batch.id)
    d.mark_failed(reqs[3].id, error_type="x", error_message="y")
    done = d.release_batch(batch.id)
    assert done.status == "finished" and done.runner_pid is None and done.finished_at
    assert [b.id for b in d.unfinished_batches()] == [other.id]
    assert d.batch_progress(batch.id).summary().startswith("4/4 done")


def test_claim_refuses_a_live_owner_and_takes_over_a_stale_or_dead_one(d):
    batch = d.create_batch(_plan().new_batch(), dry_run=False)
    d.claim_batch(batch.id)
    # our own pid is alive and the heartbeat fresh: a second runner is refused
    with pytest.raises(BatchBusy, match="batch cancel"):
        d.claim_batch(batch.id, pid=os.getpid() + 10_000_000)
    # a stale heartbeat can be taken over
    old = (dt.datetime.now(dt.timezone.utc) - dt.timedelta(seconds=120)).isoformat()
    d.db.execute("UPDATE batches SET heartbeat_at = ? WHERE id = ?", [old, batch.id])
    assert d.claim_batch(batch.id, pid=4242).runner_pid == 4242
    # a dead pid on this host can be taken over at once, even with a fresh heartbeat
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    d.db.execute("UPDATE batches SET runner_pid = ?, heartbeat_at = ? WHERE id = ?",
              [proc.pid, values.now(), batch.id])
    assert d.claim_batch(batch.id).runner_pid == os.getpid()


def test_a_killed_but_unreaped_runner_counts_as_dead(d):
    """A runner child killed while its parent never waited is a zombie: kill(0) succeeds on it,
    but it runs nothing, so the batch can be taken over."""
    batch = d.create_batch(_plan().new_batch(), dry_run=False)
    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        d.db.execute("UPDATE batches SET runner_pid = ?, runner_host = ?, heartbeat_at = ? WHERE id = ?",
                  [proc.pid, __import__("socket").gethostname(), values.now(), batch.id])
        with pytest.raises(BatchBusy):
            d.claim_batch(batch.id)
        proc.kill()
        for _ in range(200):  # the kernel marks it a zombie shortly after the signal
            if not pid_alive(proc.pid):
                break
            __import__("time").sleep(0.01)
        assert d.claim_batch(batch.id).runner_pid == os.getpid()
    finally:
        proc.kill()
        proc.wait()


def test_stop_reason_is_kept_until_a_runner_claims_the_batch_again(d):
    """The runner writes why it stopped; the next claim (a resume) starts clean; None clears it."""
    batch = d.create_batch(_plan().new_batch(), dry_run=False)
    assert d.get_batch(batch.id).stop_reason is None
    stopped = d.set_stop_reason(batch.id, "fal refused the key: check FAL_KEY, then resume")
    assert stopped.stop_reason.startswith("fal refused") and stopped.stopped_at
    assert d.set_stop_reason(batch.id, None).stopped_at is None
    d.set_stop_reason(batch.id, "fal unreachable")
    claimed = d.claim_batch(batch.id)
    assert (claimed.stop_reason, claimed.stopped_at) == (None, None)
    with pytest.raises(StoreError, match="No batch"):
        d.set_stop_reason("nope", "x")


def test_heartbeat_fails_once_another_runner_took_over(d):
    batch = d.create_batch(_plan().new_batch(), dry_run=False)
    d.claim_batch(batch.id)
    d.heartbeat(batch.id)
    d.db.execute("UPDATE batches SET runner_pid = 1 WHERE id = ?", [batch.id])
    with pytest.raises(BatchBusy, match="took it over"):
        d.heartbeat(batch.id)


def test_a_lease_held_on_another_host_is_honoured_until_it_lapses(d):
    """Several hosts on one database: a runner on another host cannot be asked whether its pid
    lives, so its fresh heartbeat is its lease: refused until it lapses, then taken over. A pid
    that happens to be ours on that other host neither renews nor releases our lease."""
    batch = d.create_batch(_plan().new_batch(), dry_run=False)
    d.db.execute("UPDATE batches SET runner_pid = ?, runner_host = ?, heartbeat_at = ? WHERE id = ?",
                 [os.getpid(), "host-b.example", values.now(), batch.id])
    with pytest.raises(BatchBusy, match="host-b.example"):
        d.claim_batch(batch.id)
    with pytest.raises(BatchBusy, match="took it over"):
        d.heartbeat(batch.id)                  # same pid, other host: not ours to renew
    d.release_batch(batch.id)                  # nor to release
    assert d.get_batch(batch.id).runner_host == "host-b.example"
    lapsed = (dt.datetime.now(dt.timezone.utc) - dt.timedelta(seconds=HEARTBEAT_STALE_S + 5)).isoformat()
    d.db.execute("UPDATE batches SET heartbeat_at = ? WHERE id = ?", [lapsed, batch.id])
    taken = d.claim_batch(batch.id)
    assert (taken.runner_pid, taken.runner_host) == (os.getpid(), __import__("socket").gethostname())
    assert d.heartbeat(batch.id).runner_pid == os.getpid()


def test_request_cancel_sets_the_flag(d):
    batch = d.create_batch(_plan().new_batch(), dry_run=False)
    assert d.request_cancel(batch.id).cancel_requested
    assert d.batch_progress(batch.id).cancel_requested


# ---------------------------------------------------------------------------- history


@pytest.fixture
def history(d):
    """12 requests over 3 days, 2 endpoints, mixed statuses; created_at set explicitly."""
    batch = d.create_batch(_plan(seeds=[1]).new_batch(), dry_run=False)  # 2 requests
    ids = [r.id for r in d.batch_requests(batch.id)]
    for i in range(10):
        endpoint = SCHNELL if i % 2 else EDIT
        rec = _request(d, prompt=f"A {'Golden Hour' if i < 4 else 'Studio'} shot 100%_{i}", endpoint=endpoint)
        ids.append(rec.id)
    base = dt.datetime(2026, 3, 1, 10, tzinfo=dt.timezone.utc)
    for n, rid in enumerate(ids):
        created = base + dt.timedelta(hours=6 * n)
        _set(d, rid, created_at=created.isoformat(timespec="microseconds"),
             status=["completed", "failed", "planned"][n % 3])
    return batch, ids


def test_history_pages_newest_first_with_total(d, history):
    _, ids = history
    first = d.query_history(HistoryFilter(page_size=5))
    assert first.total == 12 and first.pages == 3
    assert [r.id for r in first.rows] == ids[::-1][:5]
    last = d.query_history(HistoryFilter(page=3, page_size=5))
    assert [r.id for r in last.rows] == ids[::-1][10:]
    with pytest.raises(StoreError, match="page_size"):
        d.query_history(HistoryFilter(page_size=10_000))


def test_history_filters_combine(d, history):
    batch, ids = history
    H = HistoryFilter

    def got(**kw):
        return {r.id for r in d.query_history(H(page_size=100, **kw)).rows}

    assert got(batch_id=batch.id) == set(ids[:2])
    assert got(status="failed") == {ids[i] for i in range(12) if i % 3 == 1}
    assert got(endpoint=EDIT) == {r.id for r in d.query_history(H(page_size=100)).rows
                                  if r.endpoint == EDIT}
    # a bare date covers its whole day (UTC); 6-hour steps from 2026-03-01 10:00
    assert got(date_from="2026-03-02", date_to="2026-03-02") == set(ids[3:7])
    assert got(date_from=dt.date(2026, 3, 3)) == set(ids[7:])
    assert got(text="golden HOUR") == set(ids[2:6])             # case-insensitive substring
    assert got(text="100%_3") == {ids[5]}                        # % and _ are literal
    assert got(text="golden", status="completed") == {ids[3]}
    with pytest.raises(StoreError, match="Unknown status"):
        got(status="done")
    with pytest.raises(StoreError, match="not a date"):
        got(date_from="yesterday")


def test_iter_history_csv_chunks_cover_every_row_once(d, history):
    _, ids = history
    chunks = list(d.iter_history_csv(HistoryFilter(), chunk_size=5))
    assert [len(c) for c in chunks[:-1]] == [5] * (len(chunks) - 1)
    assert [request_id for chunk in chunks for request_id, _ in chunk] == ids[::-1]
    assert all(line.startswith(request_id.encode() + b",") for chunk in chunks for request_id, line in chunk)


def test_last_payload_sent_is_the_newest_sent_abbreviated(d):
    assert d.last_payload_sent() is None
    a, b, never = _request(d, prompt="first"), _request(d, prompt="second"), _request(d, prompt="never")
    d.mark_submitted(a.id)
    d.mark_submitted(b.id)
    # a raw data: URI slipped into a row by hand is still shown abbreviated
    _set(d, b.id, payload_json=canonical_json({"prompt": "second", "image_urls": ["data:image/png;base64,QUJD"]}))
    last = d.last_payload_sent()
    assert last.id == b.id and never.id != last.id
    assert last.payload["image_urls"][0].startswith("data:image/png;base64,…(3 bytes")


def test_diff_payloads_reports_nested_added_removed_changed(d):
    a = d.record_request(endpoint=EDIT, payload={
        "prompt": "x", "image_size": {"width": 512, "height": 768}, "loras": [{"path": "a", "scale": 1}],
        "seed": 1, "strength": 0.65})
    b = d.record_request(endpoint=SCHNELL, payload={
        "prompt": "x", "image_size": {"width": 512, "height": 1024},
        "loras": [{"path": "a", "scale": 2}, {"path": "b", "scale": 1}], "seed": 1, "num_images": 2})
    diff = d.diff_payloads(a.id, b.id)
    assert not diff.same
    assert {(e.path, e.old, e.new) for e in diff.changed} == {
        ("(endpoint)", EDIT, SCHNELL), ("image_size.height", 768, 1024), ("loras[0].scale", 1, 2)}
    assert sorted((e.path, e.new) for e in diff.added) == [("loras[1]", {"path": "b", "scale": 1}),
                                                          ("num_images", 2)]
    assert [(e.path, e.old) for e in diff.removed] == [("strength", 0.65)]
    assert d.diff_payloads(a.id, a.id).same


def test_rerun_makes_a_new_planned_row_linked_to_the_old_one(d):
    batch = d.create_batch(_plan(seeds=[1]).new_batch(), dry_run=False)
    old = d.batch_requests(batch.id)[0]
    d.mark_failed(old.id, error_type="x", error_message="y")
    d.request_cancel(batch.id)
    new = d.rerun_request(old.id, created_by="bo")
    assert new.id != old.id and new.rerun_of == old.id and new.status == "planned"
    assert (new.payload_json, new.payload_hash, new.endpoint) == (old.payload_json, old.payload_hash, old.endpoint)
    assert (new.batch_id, new.group_id, new.seed) == (old.batch_id, old.group_id, old.seed)
    after = d.get_batch(batch.id)
    assert after.request_count == 3 and not after.cancel_requested
    assert batch.id in {b.id for b in d.unfinished_batches()}


def test_rerun_of_a_request_without_batch_gets_its_own_batch(d):
    old = _request(d)
    new = d.rerun_request(old.id)
    assert new.batch_id and d.get_batch(new.batch_id).request_count == 1
