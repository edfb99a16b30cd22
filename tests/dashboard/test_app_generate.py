"""Generate page: plan a batch (references x option values x seeds x models), see its size, cost
and exact payloads before anything runs, validation as you type, then a detached dry run,
cancel, and resuming unfinished batches."""
from __future__ import annotations

import json
import time

from core.batches import plans, service
from core.catalog import registry
from core.store import runner_alive
from tests.apptest_support import add_reference, all_text, new_store, open_page, shown, texts, wait_finished



SCHNELL, EDIT = registry.DEFAULT_MODELS


def _metric(at, label):
    return next(m.value for m in at.metric if m.label == label)


def _plan(at, ref_id, subjects=("Woman", "Robot"), seeds="1, 2"):
    at.multiselect(key="gen_refs").set_value([ref_id])
    at.multiselect(key="opt_subject").set_value(list(subjects))
    at.radio(key="seed_mode").set_value("List").run()
    at.text_input(key="seed_list").set_value(seeds).run()


def test_generate_smoke_defaults_to_both_models_and_says_dry_run():
    """Opening Generate: schnell and flux-2/lora/edit are preselected, the dry run is announced,
    and an edit model without reference photos is explained as the next step, not as an error in
    command-line words."""
    at = open_page("generate.py")
    assert at.multiselect(key="gen_models").value == [SCHNELL, EDIT]
    assert "nothing to fal" in " ".join(texts(at.info))
    assert not texts(at.error), texts(at.error)
    assert any("pick at least one reference photo in step 1" in i and "FLUX.2 [dev] LoRA edit edits a photo" in i
               for i in texts(at.info)), texts(at.info)
    assert not [b for b in at.button if b.key == "run"]


def test_plan_shows_count_cost_and_exact_payloads_before_running():
    """2 typed/picked subjects x 2 seeds x 2 models = 8 requests; the cost is the plan's; the
    payloads shown are the exact bodies (local photo as reference://<id>, never a data: URI);
    a free value typed into an option is used as typed."""
    ref = add_reference("red")
    at = open_page("generate.py")
    _plan(at, ref.id, subjects=("Woman", "Robot made of chrome"))
    assert not texts(at.error), texts(at.error)
    expected = service.plan_batch({"name": "x", "references": [ref.id],
                                "options": {"subject": ["Woman", "Robot made of chrome"]},
                                "models": [SCHNELL, EDIT], "seeds": [1, 2]}, store=new_store())
    assert _metric(at, "Requests") == "8"
    assert _metric(at, "Groups (variant x seed)") == "4"
    assert _metric(at, "Estimated cost") == f"${expected.estimated_cost:.3f}"
    shown = [json.loads(c.value) for c in at.code]
    assert shown == [dict(r.payload) for r in expected.requests]
    edit_bodies = [b for b in shown if "image_urls" in b]
    assert edit_bodies and all(b["image_urls"] == [f"reference://{ref.id}"] for b in edit_bodies)
    assert "data:" not in " ".join(c.value for c in at.code)
    assert any("Robot made of chrome" in b["prompt"] for b in shown)
    assert "Record dry run of 8 requests" in at.button(key="run").label


def test_parameters_start_from_the_team_preset_and_edits_reach_the_payload():
    """The steps field starts at the preset (7); changing it changes only that model's payloads."""
    at = open_page("generate.py")
    at.multiselect(key="gen_models").set_value([SCHNELL]).run()
    steps = at.number_input(key=f"param::{SCHNELL}::num_inference_steps")
    assert steps.value == registry.preset_params(SCHNELL)["num_inference_steps"]
    steps.set_value(10).run()
    assert {json.loads(c.value)["num_inference_steps"] for c in at.code} == {10}


def test_invalid_parameters_are_reported_as_you_type_and_block_the_run():
    """`strength` on flux-2/lora/edit (silently ignored by fal) and broken JSON are refused with
    the registry's message before any plan or run button appears."""
    ref = add_reference("red")
    at = open_page("generate.py")
    _plan(at, ref.id, subjects=("Woman",), seeds="1")
    at.text_area(key=f"param::{EDIT}::__extra__").set_value('{"strength": 0.65}').run()
    errors = " ".join(texts(at.error))
    assert "strength" in errors and "fal-ai/flux/dev/image-to-image" in errors
    assert not [b for b in at.button if b.key == "run"]
    at.text_area(key=f"param::{EDIT}::__extra__").set_value('{"strength": ').run()
    assert any("not valid JSON" in e for e in texts(at.error))


def test_bad_seed_list_is_explained():
    at = open_page("generate.py")
    at.multiselect(key="gen_models").set_value([SCHNELL])
    at.radio(key="seed_mode").set_value("List").run()
    at.text_input(key="seed_list").set_value("1, two").run()
    assert any("whole numbers" in e for e in texts(at.error))


def test_random_seeds_stay_the_same_across_reruns_until_rerolled():
    """N random seeds are drawn once: the previewed payloads are the ones that will be sent."""
    at = open_page("generate.py")
    at.multiselect(key="gen_models").set_value([SCHNELL])
    at.number_input(key="seed_n").set_value(3).run()
    first = list(at.session_state["random_seeds"])
    assert len(set(first)) == 3
    at.text_input(key="batch_name").set_value("again").run()
    assert list(at.session_state["random_seeds"]) == first


def test_dry_run_is_recorded_by_the_detached_runner_and_labelled():
    """Run in dry run: a batch owned by the sidebar user is created, a separate runner process
    records every payload as dry_run, and the page says nothing was sent."""
    ref = add_reference("red")
    at = open_page("generate.py", user="Ana")
    _plan(at, ref.id, subjects=("Woman",), seeds="7")
    at.text_input(key="batch_name").set_value("first look").run()
    at.button(key="run").click().run()
    batch_id = at.session_state["active_batch"]
    batch = new_store().get_batch(batch_id)
    assert (batch.name, batch.created_by, batch.dry_run, batch.request_count) == ("first look", "Ana", True, 2)
    progress = wait_finished(batch_id)
    assert progress.counts == {"dry_run": 2}
    at.run()
    assert "Dry run: nothing was sent to fal" in all_text(at)
    assert at.progress[0].value == 100


def test_cancel_stops_a_batch_and_marks_unsent_requests_cancelled():
    """Cancel on the current batch sets cancel_requested; the runner started for it cancels what
    was not sent."""
    plan = plans.make_plan({"name": "to cancel", "models": [SCHNELL], "seeds": [1, 2, 3]})
    batch = new_store().create_batch(plan.new_batch(), dry_run=True)
    at = open_page("generate.py")
    at.session_state["active_batch"] = batch.id
    at.run()
    at.button(key=f"cancel_{batch.id}").click().run()
    assert new_store().get_batch(batch.id).cancel_requested
    assert wait_finished(batch.id).counts == {"cancelled": 3}


def test_unfinished_batch_after_restart_is_listed_and_resumed():
    """A batch left planned (the dashboard restarted before it ran) is listed as stopped; Resume
    starts a runner that finishes it."""
    plan = plans.make_plan({"name": "left over", "models": [SCHNELL], "seeds": [1]})
    batch = new_store().create_batch(plan.new_batch(), dry_run=True)
    at = open_page("generate.py")
    assert any("left over" in m and "stopped" in m for m in texts(at.markdown))
    at.button(key=f"resume_{batch.id}").click().run()
    assert at.session_state["active_batch"] == batch.id
    assert wait_finished(batch.id).counts == {"dry_run": 1}


def test_a_runner_that_stops_early_is_reported_with_its_reason_and_can_be_resumed():
    """A live batch resumed without FAL_KEY: the runner stops at once; the page stops polling and
    says why (from the runner's log) instead of showing a progress bar stuck forever."""
    plan = plans.make_plan({"name": "needs a key", "models": [SCHNELL], "seeds": [1]})
    batch = new_store().create_batch(plan.new_batch(), dry_run=False)
    at = open_page("generate.py")
    at.button(key=f"resume_{batch.id}").click().run()
    store = new_store()
    deadline = time.monotonic() + 60
    while store.get_batch(batch.id).started_at is None or runner_alive(store.get_batch(batch.id)):
        assert time.monotonic() < deadline, "runner never ran"
        time.sleep(0.2)
    at.session_state[f"spawned_{batch.id}"] = 0.0  # past the grace period given to a new runner
    at.run()
    warning = " ".join(texts(at.warning))
    assert "The runner stopped before the batch finished" in warning and "FAL_KEY is not set" in warning
    assert at.button(key=f"resume_current_{batch.id}")
    assert store.batch_progress(batch.id).counts == {"planned": 1}


def test_several_values_of_a_parameter_make_contenders_listed_with_requests_and_cost():
    """Typing "7, 28" for the edit model's steps makes two contenders of it: the plan lists three
    (schnell, and the edit model at 7 and at 28 steps) with their requests and cost, and each
    payload shown carries its own steps."""
    ref = add_reference("red")
    at = open_page("generate.py")
    _plan(at, ref.id, subjects=("Woman",), seeds="1")
    at.multiselect(key=f"gen_sweep::{EDIT}").set_value(["num_inference_steps"]).run()
    at.text_input(key=f"gen_sweep::{EDIT}::num_inference_steps").set_value("7, 28").run()
    assert not at.exception
    assert _metric(at, "Requests") == "3"
    table = next(d.value for d in at.dataframe if "contender" in d.value.columns)
    assert list(table["contender"]) == ["FLUX.1 [schnell]", "FLUX.2 [dev] LoRA edit · 7 steps",
                                        "FLUX.2 [dev] LoRA edit · 28 steps"]
    assert list(table["requests"]) == [1, 1, 1]
    bodies = [json.loads(c.value) for c in at.code]
    assert sorted(b["num_inference_steps"] for b in bodies if "image_urls" in b) == [7, 28]


def test_a_sweep_value_out_of_range_is_refused_with_the_parameter_and_value():
    ref = add_reference("red")
    at = open_page("generate.py")
    _plan(at, ref.id, subjects=("Woman",), seeds="1")
    at.multiselect(key=f"gen_sweep::{EDIT}").set_value(["num_inference_steps"]).run()
    at.text_input(key=f"gen_sweep::{EDIT}::num_inference_steps").set_value("7, seven").run()
    assert any("num_inference_steps" in e and "'seven'" in e for e in shown(at.error))
    at.text_input(key=f"gen_sweep::{EDIT}::num_inference_steps").set_value("7, 99").run()
    errors = " ".join(shown(at.error))
    assert "num_inference_steps" in errors and "99" in errors
    assert not [b for b in at.button if b.key == "run"]


# what a new teammate reads on this page

def test_an_out_of_range_number_stays_visible_and_is_refused_where_the_run_button_was():
    ref = add_reference("red")
    at = open_page("generate.py")
    at.multiselect(key="gen_refs").set_value([ref.id]).run()
    at.number_input(key=f"param::{EDIT}::num_inference_steps").set_value(999).run()
    assert at.number_input(key=f"param::{EDIT}::num_inference_steps").value == 999, "not silently reset"
    errors = shown(at.error)
    assert any("num_inference_steps" in e for e in errors), errors
    blocked = next(e for e in errors if e.startswith("Nothing can run until these are fixed"))
    assert "FLUX.2 [dev] LoRA edit" in blocked and "num_inference_steps" in blocked
    assert not [b for b in at.button if b.key == "run"]
    assert not at.metric, "no count or cost of payloads that would not be sent"


def test_a_cancelled_batch_is_not_called_done_and_its_unsent_requests_cost_nothing():
    plan = plans.make_plan({"name": "to cancel", "models": [SCHNELL], "seeds": [1, 2, 3]})
    store = new_store()
    batch = store.create_batch(plan.new_batch(), dry_run=False)
    first, *rest = store.batch_requests(batch.id)
    store.mark_submitted(first.id)
    store.mark_queued(first.id, fal_request_id="f1", status_url="s", response_url="r", cancel_url="c")
    store.mark_completed(first.id, response={"images": []}, inference_time_s=1.0)
    for r in rest:
        store.mark_cancelled(r.id)
    store.request_cancel(batch.id)
    at = open_page("generate.py")
    at.session_state["active_batch"] = batch.id
    at.run()
    line = at.progress[0].proto.text
    assert "done" not in line and "1 of 3 answered by fal" in line and "2 cancelled (never sent)" in line
    assert f"${first.estimated_cost:.3f} spent" in line and f"estimate for all 3: ${plan.estimated_cost:.3f}" in line
    assert not any("see History for the errors" in w for w in texts(at.warning))
    assert any("2 requests cancelled before fal answered" in i for i in texts(at.info))
    assert not [b for b in at.button if b.key == f"cancel_{batch.id}"], "a finished batch offers no Cancel"

    hist = open_page("history.py")
    hist.toggle(key="hist_all_columns").set_value(True).run()
    table = hist.dataframe[0].value.set_index("id")
    assert table.loc[rest[0].id, "status"] == "cancelled — not sent"
    cost = table.loc[rest[0].id, "cost $"]
    assert cost == "" or cost != cost, "no cost (blank or NaN) for unsent"
    hist.selectbox(key="hist_detail").set_value(rest[0].id).run()
    assert not texts(hist.error), texts(hist.error)
    assert any("never sent" in i for i in texts(hist.info))
    assert any("never sent" in m for m in texts(hist.markdown))
    assert not any("exactly as stored and sent" in m for m in texts(hist.markdown))
