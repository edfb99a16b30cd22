"""The batches service (core/batches/service.py): the one answer to "what is this batch doing",
and the rules pages and the CLI share for launch, re-run, cancel and resume. Real store file,
real detached runner processes against the fal stand-in."""
from __future__ import annotations

import datetime as dt
import time

import pytest

from core.batches import service
from core.config import load_settings
from core.store import open_store


def _wait(predicate, timeout=60.0):
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.05)


@pytest.fixture
def live(fal_standin):
    settings = load_settings()
    settings.ensure_dirs()
    store = open_store(settings)
    spec = {"name": "svc", "models": ["fal-ai/flux/schnell"], "options": {"pose": ["Standing", "Walking"]},
            "seeds": [1]}
    plan = service.plan_batch(spec, store=store)
    yield settings, store, plan
    store.close()


def test_launch_records_then_runs_detached_and_state_follows_it(live, fal_standin):
    settings, store, plan = live
    batch = service.launch(store, plan, settings, created_by="ana")
    assert isinstance(service.state(store, batch.id, settings), (service.Starting, service.Running,
                                                                 service.Finished))
    _wait(lambda: isinstance(service.state(store, batch.id, settings), service.Finished))
    assert {r.status for r in store.batch_requests(batch.id)} == {"completed"}
    assert fal_standin.submissions == 2


def test_one_batch_per_intent_and_each_send_again_is_one_more(settings):
    store = open_store(settings)
    plan = service.plan_batch({"name": "intent", "models": ["fal-ai/flux/schnell"],
                            "options": {"pose": ["Standing"]}, "seeds": [1]}, store=store)
    first = service.launch(store, plan, settings, created_by="ana")
    assert service.launch(store, plan, settings, created_by="ana").id == first.id    # a second click
    made = [first.id]
    for _ in range(2):   # "send the same batch again", twice on purpose: two more batches
        latest = service.already_launched(store, plan, settings, created_by="ana")
        assert latest.id == made[-1]
        again = service.launch(store, plan, settings, created_by="ana", repeat_of=latest.id)
        assert again.id not in made
        made.append(again.id)
        # a double click on "send again" is still one batch
        assert service.launch(store, plan, settings, created_by="ana", repeat_of=latest.id).id == again.id
    assert len(store.list_batches()) == 3
    store.close()


def test_a_runner_that_died_without_a_reason_is_stopped_after_the_grace_and_resumable(live):
    settings, store, plan = live
    batch = service.record(store, plan, settings)
    store.mark_launched(batch.id)               # a runner was started ... and never claimed it
    assert isinstance(service.state(store, batch.id, settings), service.Starting)
    later = dt.datetime.now(dt.timezone.utc) + dt.timedelta(seconds=service.START_GRACE_S + 1)
    stopped = service.state(store, batch.id, settings, now=later)
    assert isinstance(stopped, service.Stopped) and "resume" in stopped.reason
    assert stopped.log_path.endswith(f"batch-{batch.id}.log")


def test_a_stored_stop_reason_is_what_the_state_says(live):
    settings, store, plan = live
    batch = service.record(store, plan, settings)
    store.set_stop_reason(batch.id, "fal refused the key: set FAL_KEY, then resume")
    state = service.state(store, batch.id, settings)
    assert isinstance(state, service.Stopped) and state.reason.startswith("fal refused the key")


def test_orphans_are_resumed_but_a_batch_stopped_for_a_reason_waits_for_a_person(live, fal_standin):
    settings, store, plan = live
    orphan = service.record(store, plan, settings)
    waiting = service.record(store, plan, settings)
    store.set_stop_reason(waiting.id, "key refused")
    assert service.resume_orphans(store, settings) == [orphan.id]
    _wait(lambda: isinstance(service.state(store, orphan.id, settings), service.Finished))
    assert isinstance(service.state(store, waiting.id, settings), service.Stopped)
    # no person chose it: the audit trail says it resumed by itself, as whom, at what estimate
    [line] = store.audit_entries(action="batch.resumed")
    assert (line.who, line.subject) == (None, orphan.id) and "(automatically" in line.detail


def test_cancel_without_a_live_runner_starts_one_that_cancels(live, fal_standin):
    settings, store, plan = live
    batch = service.record(store, plan, settings)
    service.cancel(store, batch.id, settings)
    _wait(lambda: isinstance(service.state(store, batch.id, settings), service.Cancelled))
    assert fal_standin.submissions == 0
