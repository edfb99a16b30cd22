"""State that survives, in AppTest: the rater's name kept in the address (a reload is a new session
with the same address), the Generate form kept as a draft across page changes and reloads, the
current batch back after a reload, the Leaderboard opening on the voted batch, and batches left
orphaned by a restart getting a runner when the dashboard starts."""
from __future__ import annotations

import json
import time

import streamlit as st

from core.batches import plans
from core.catalog import registry
from core.evaluation import review
from core.store import runner_alive
from dashboard import _resources
from tests.apptest_support import add_reference, assert_ok, open_page, new_store, texts, wait_finished
from tests.review_support import EDIT, SCHNELL, completed_batch


def _reload(at, page: str | None = None, **kw):
    """A browser reload: a new session of the same server process, with the address it had."""
    return open_page(page, query=dict(at.query_params), clear_caches=False, **kw)


def test_the_name_is_put_in_the_address_and_comes_back_after_a_reload():
    at = open_page("history.py")
    assert "user" not in at.query_params
    at.sidebar.text_input(key="user_name").set_value("Ana").run()
    assert at.query_params["user"] == "Ana"
    again = _reload(at, "review.py")
    assert again.sidebar.text_input(key="user_name").value == "Ana"
    assert not any("Type your name" in t for t in texts(again.info))
    # clearing the name clears the address too: nothing is guessed afterwards
    again.sidebar.text_input(key="user_name").set_value("").run()
    assert "user" not in again.query_params
    assert _reload(again).sidebar.text_input(key="user_name").value == ""


def test_no_name_in_the_address_means_no_name():
    at = open_page("review.py", query={"draft": "0" * 32})
    assert at.sidebar.text_input(key="user_name").value == ""
    assert any("Type your name in the sidebar" in t for t in texts(at.info))


def _fill(at, ref_id):
    at.multiselect(key="gen_refs").set_value([ref_id])
    at.multiselect(key="opt_pose").set_value(["Standing", "Sitting"])
    at.multiselect(key="gen_models").set_value([EDIT])
    at.text_input(key="batch_name").set_value("kept").run()
    at.number_input(key=f"param::{EDIT}::num_inference_steps").set_value(9).run()
    at.radio(key="seed_mode").set_value("List").run()
    at.text_input(key="seed_list").set_value("4, 5").run()


def _assert_filled(at, ref_id):
    assert at.multiselect(key="gen_refs").value == [ref_id]
    assert at.multiselect(key="opt_pose").value == ["Standing", "Sitting"]
    assert at.multiselect(key="gen_models").value == [EDIT]
    assert at.text_input(key="batch_name").value == "kept"
    assert at.number_input(key=f"param::{EDIT}::num_inference_steps").value == 9
    assert at.text_input(key="seed_list").value == "4, 5"
    assert not texts(at.error), texts(at.error)
    assert at.button(key="run").label.startswith("Record dry run of 4 requests")


def test_the_generate_form_survives_a_page_change_and_a_reload():
    ref = add_reference("red")
    at = open_page("generate.py")
    _fill(at, ref.id)
    _assert_filled(at, ref.id)
    # to Upload (to add a photo, say) and back: the widgets were gone for a run, the values are not
    at.switch_page("upload.py").run()
    at.switch_page("generate.py").run()
    assert_ok(at)
    _assert_filled(at, ref.id)
    # a reload is a new session: the draft named in the address brings the form back
    assert "draft" in at.query_params
    again = _reload(at, "generate.py")
    _assert_filled(again, ref.id)
    # another browser (no draft in its address) starts from the defaults
    other = open_page("generate.py", clear_caches=False)
    assert other.multiselect(key="gen_models").value == list(registry.DEFAULT_MODELS)
    assert other.query_params["draft"] != at.query_params["draft"]


def _cut_short_at_first_call(monkeypatch, name: str) -> None:
    """The next call of `_resources.<name>` ends the run there, as a page link clicked at that moment
    does (Streamlit stops the run at its next element, keeping the session's state); later calls
    behave as before."""
    real = getattr(_resources, name)
    calls = []

    def stop_once(*args, **kwargs):
        if not calls:
            calls.append(name)
            st.stop()
        return real(*args, **kwargs)

    monkeypatch.setattr(_resources, name, stop_once)


def _page_link_click(at, page: str):
    """A click on the sidebar's link to `page`: Streamlit's navigation drops the address's
    parameters; the app writes back what the session holds."""
    for key in list(at.query_params):
        del at.query_params[key]
    return at.switch_page(page).run()


def test_a_page_clicked_while_a_reload_is_still_drawing_keeps_the_name_and_the_draft(monkeypatch):
    """A reload (or a restarted dashboard) whose first run is cut short by a page link clicked as
    soon as the navigation shows, before the sidebar reaches the name box: the name and the draft
    the address carried are kept, in the session and in the address, not lost with the run."""
    ref = add_reference("red")
    at = open_page("generate.py", user="Ana")
    _fill(at, ref.id)
    address = dict(at.query_params)
    _cut_short_at_first_call(monkeypatch, "settings")  # the sidebar's first call, after the navigation
    again = _reload(at)
    assert not again.sidebar.text_input  # the run really stopped before the name box
    _page_link_click(again, "generate.py")
    assert_ok(again)
    assert again.sidebar.text_input(key="user_name").value == "Ana"
    assert again.query_params["user"] == "Ana"
    assert again.query_params["draft"] == address["draft"]
    _assert_filled(again, ref.id)


def test_a_batch_name_typed_just_before_leaving_generate_is_kept(monkeypatch):
    """A batch name typed, then another page clicked at once: the click cuts Generate's run short
    before it saves the draft. The run that leaves Generate keeps the name, for the way back and
    for a reload."""
    ref = add_reference("red")
    at = open_page("generate.py")
    _fill(at, ref.id)
    _cut_short_at_first_call(monkeypatch, "plan")  # building the plan comes after the batch name
    at.text_input(key="batch_name").set_value("typed last").run()
    assert "run" not in [b.key for b in at.button]  # the run really stopped before the end of the page
    _page_link_click(at, "upload.py")
    assert_ok(at)
    _page_link_click(at, "generate.py")
    assert_ok(at)
    assert at.text_input(key="batch_name").value == "typed last"
    assert at.multiselect(key="gen_refs").value == [ref.id]  # the rest of the form is kept too
    assert _reload(at, "generate.py").text_input(key="batch_name").value == "typed last"


def test_leaving_generate_keeps_nothing_for_a_session_that_never_showed_the_form():
    """Leaving Generate saves the form only when the session loaded its draft: a draft id from the
    address alone, in a session that never drew the form, never overwrites the draft."""
    ref = add_reference("red")
    at = open_page("generate.py")
    _fill(at, ref.id)
    again = _reload(at, "history.py")
    _page_link_click(again, "upload.py")
    assert _reload(again, "generate.py").text_input(key="batch_name").value == "kept"


def test_a_restored_draft_drops_what_no_longer_exists():
    ref = add_reference("red")
    at = open_page("generate.py")
    _fill(at, ref.id)
    new_store().archive_reference(ref.id)   # archived photos leave the picker
    again = _reload(at, "generate.py")
    assert_ok(again)
    assert again.multiselect(key="gen_refs").value == []
    assert again.text_input(key="batch_name").value == "kept"


def test_the_current_batch_is_back_after_a_reload():
    ref = add_reference("red")
    at = open_page("generate.py", user="Ana")
    _fill(at, ref.id)
    at.button(key="run").click().run()
    batch_id = at.session_state["active_batch"]
    wait_finished(batch_id)
    again = _reload(at, "generate.py")
    assert again.session_state["active_batch"] == batch_id
    assert any(h == "Current batch" for h in texts(again.subheader))
    assert "4 of 4 payloads recorded" in again.progress[0].proto.text
    # closing it is kept too
    again.button(key="close_batch").click().run()
    assert "active_batch" not in _reload(again, "generate.py").session_state


def test_leaderboard_opens_on_the_batch_with_the_newest_vote_not_the_newest_batch():
    voted, _, _ = completed_batch("voted")
    store = new_store()
    item = review.queue(store, voted.id, "ana").next
    review.record_item_vote(store, item, rater="ana", verdict="left")
    completed_batch("newer, not reviewed")
    at = open_page("leaderboard.py")
    assert at.selectbox(key="lb_batch").value == voted.id
    assert {m.label: m.value for m in at.metric}["Votes"] == "1"
    assert not any("No votes yet" in t for t in texts(at.info))


def test_an_orphaned_batch_gets_a_runner_when_the_dashboard_starts(monkeypatch):
    """A dry-run batch left planned with no runner (the machine restarted) is resumed once, at the
    first page view of the server process, when auto_resume is on."""
    plan = plans.make_plan({"name": "orphan", "models": [SCHNELL], "seeds": [1, 2]})
    store = new_store()
    batch = store.create_batch(plan.new_batch(), dry_run=True)
    assert runner_alive(store.get_batch(batch.id)) is False
    monkeypatch.setenv("DASHBOARD_AUTO_RESUME", "on")
    at = open_page("history.py")
    assert any("got a runner again" in c for c in texts(at.sidebar.caption))
    assert wait_finished(batch.id).counts == {"dry_run": 2}


def test_with_auto_resume_off_an_orphan_waits_for_a_person():
    plan = plans.make_plan({"name": "orphan", "models": [SCHNELL], "seeds": [1]})
    batch = new_store().create_batch(plan.new_batch(), dry_run=True)
    open_page("history.py")
    time.sleep(1.0)
    assert new_store().batch_progress(batch.id).counts == {"planned": 1}
    assert new_store().get_batch(batch.id).runner_pid is None


LORA_URL = "https://example.com/loras/watercolour.safetensors"


def _sweep_and_lora(at):
    """Two step counts for the edit model, and one LoRA row used as a set: 2 contenders of it."""
    at.multiselect(key=f"gen_sweep::{EDIT}").set_value(["num_inference_steps"]).run()
    at.text_input(key=f"gen_sweep::{EDIT}::num_inference_steps").set_value("7, 28").run()
    # AppTest has no data editor: the edit arrives in the widget's state, as the browser sends it
    at.session_state[f"gen_loras::{EDIT}"] = {
        "edited_rows": {}, "deleted_rows": [], "added_rows": [{"path": LORA_URL, "scale": 0.8, "set": 1}]}
    at.run()


def _assert_sweep_and_lora(at):
    assert_ok(at)
    assert at.multiselect(key=f"gen_sweep::{EDIT}").value == ["num_inference_steps"]
    assert at.text_input(key=f"gen_sweep::{EDIT}::num_inference_steps").value == "7, 28"
    assert not texts(at.error), texts(at.error)
    # 2 poses x 2 seeds x 2 step counts of the edit model, every one of them with the LoRA
    assert at.button(key="run").label.startswith("Record dry run of 8 requests")
    bodies = [json.loads(c.value) for c in at.code]
    assert sorted({b["num_inference_steps"] for b in bodies}) == [7, 28]
    assert all(b["loras"] == [{"path": LORA_URL, "scale": 0.8}] for b in bodies), bodies


def test_a_sweep_and_a_lora_set_survive_a_page_change_and_a_reload():
    """The sweep's parameters and values and the LoRA table are form values like any other: a
    page change and a reload (a new session, the draft named in the address) bring them back,
    and the plan is the same."""
    ref = add_reference("red")
    at = open_page("generate.py")
    _fill(at, ref.id)
    _sweep_and_lora(at)
    _assert_sweep_and_lora(at)
    at.switch_page("upload.py").run()
    at.switch_page("generate.py").run()
    _assert_sweep_and_lora(at)
    again = _reload(at, "generate.py")
    _assert_sweep_and_lora(again)
    # and a further edit on the restored table still applies once (no row doubled)
    again.run()
    _assert_sweep_and_lora(again)


def test_every_value_widget_of_generate_is_kept_in_the_draft():
    """The drift a person misses (sweeps and LoRAs were once left out): every widget of the Generate
    form that holds a value, with a sweep, a LoRA set swept by scale and "also without" shown, has
    a key `_draft` keeps. Buttons hold no value; the LoRA editor is kept as its rows."""
    from dashboard import _draft

    ref = add_reference("red")
    at = open_page("generate.py")
    _fill(at, ref.id)
    _sweep_and_lora(at)
    at.radio(key=f"gen_lora_mode::{EDIT}").set_value("scales").run()
    at.text_input(key=f"gen_lora_scales::{EDIT}").set_value("0.4, 0.8").run()
    assert_ok(at)
    kinds = ("multiselect", "text_input", "text_area", "number_input", "radio", "checkbox", "selectbox")
    drawn = [w.key for kind in kinds for w in getattr(at.main, kind)]
    assert f"gen_lora_none::{EDIT}" in drawn and f"param::{EDIT}::num_inference_steps" in drawn
    assert [k for k in drawn if not _draft.kept(k)] == []
    assert at.session_state[f"gen_lora_rows::{EDIT}"] == [[LORA_URL, 0.8, 1]]
