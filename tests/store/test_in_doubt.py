"""Requests in doubt and launches by intent, on a real SQLite file (issue 21).

- `in_doubt` is its own state: not done, not failed; a batch holding one is not finished, and is
  not work for a runner (nothing resumes it by itself).
- Only a person moves it on: sent again (who and when are kept) or given up (final).
- A journaled fal id settles a doubt.
- The same launch key makes one batch, however often it is asked for, even from two threads.
"""
from __future__ import annotations

import threading

import pytest

from core.batches import service
from core.errors import StoreError
from core.store import open_store
from core.values import RequestStatus

SCHNELL = "fal-ai/flux/schnell"


def _plan(name="doubt", poses=("Standing", "Walking")):
    return service.plan_batch({"name": name, "models": [SCHNELL], "options": {"pose": list(poses)}, "seeds": [1]}, store=None, upload=False)


def _batch_in_doubt(st):
    batch = st.create_batch(_plan().new_batch(), dry_run=False)
    first, second = st.batch_requests(batch.id)
    st.mark_submitted(first.id)
    assert st.mark_in_doubt(first.id, reason="the connection dropped after sending")
    st.mark_submitted(second.id)
    st.mark_queued(second.id, fal_request_id="f2", status_url=None, response_url=None, cancel_url=None)
    st.mark_completed(second.id, response={"images": []})
    return batch, first, second


def test_in_doubt_is_neither_done_nor_failed_and_is_no_runner_work(st):
    batch, first, _ = _batch_in_doubt(st)
    progress = st.batch_progress(batch.id)
    assert progress.in_doubt == 1 and progress.done == 1
    assert not progress.is_finished and progress.settled
    assert "in_doubt 1" in progress.summary()
    assert st.unfinished_batches() == []          # no runner is started for it
    rec = st.get_request(first.id)
    assert rec.status == RequestStatus.IN_DOUBT and not rec.is_final
    assert st.release_batch(batch.id).status != "finished"


def test_sending_again_records_who_chose_it_and_plans_it(st):
    batch, first, _ = _batch_in_doubt(st)
    with pytest.raises(StoreError, match="who"):
        st.send_again(first.id, by="  ")
    assert st.send_again(first.id, by="ana")
    rec = st.get_request(first.id)
    assert rec.status == "planned" and rec.resent_by == "ana" and rec.resent_at and rec.submitted_at is None
    assert not st.send_again(first.id, by="ana")   # only from in doubt
    assert [b.id for b in st.unfinished_batches()] == [batch.id]


def test_giving_up_makes_it_final_and_the_batch_finished(st):
    batch, first, _ = _batch_in_doubt(st)
    assert st.give_up(first.id, by="bo")
    rec = st.get_request(first.id)
    assert (rec.status, rec.error_type, rec.resent_by) == ("failed", "submit_unconfirmed", "bo")
    assert "given up by bo" in rec.error_message
    assert st.release_batch(batch.id).status == "finished"


def test_a_journaled_fal_id_settles_a_doubt(st):
    batch, first, _ = _batch_in_doubt(st)
    assert st.mark_queued(first.id, fal_request_id="f1", status_url=None, response_url=None, cancel_url=None)
    rec = st.get_request(first.id)
    assert rec.status == "queued" and rec.fal_request_id == "f1" and rec.error_type is None


def test_a_huge_answer_is_stored_as_a_summary(st):
    batch, first, _ = _batch_in_doubt(st)
    st.mark_queued(first.id, fal_request_id="f1", status_url=None, response_url=None, cancel_url=None)
    st.mark_completed(first.id, response={"images": [], "pad": "x" * 3_000_000})
    kept = st.get_request(first.id)
    assert len(kept.response_json) < 10_000
    assert kept.response["truncated"] is True and kept.response["chars"] > 3_000_000
    assert len(kept.response["sha256"]) == 64


def test_one_launch_key_makes_one_batch_even_from_two_threads(settings):
    plan = _plan("twice")
    got, errors = [], []

    def launch():
        try:
            with open_store(settings) as st:
                got.append(st.create_batch(plan.new_batch(), dry_run=True, launch_key="k1").id)
        except Exception as e:  # noqa: BLE001 - reported below
            errors.append(e)

    with open_store(settings):
        pass
    threads = [threading.Thread(target=launch) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors and len(set(got)) == 1
    with open_store(settings) as st:
        assert len(st.list_batches()) == 1 and st.batch_by_launch_key("k1").id == got[0]
        other = st.create_batch(plan.new_batch(), dry_run=True, launch_key="k2")
        assert other.id != got[0] and len(st.list_batches()) == 2
