"""Generate and the spending limits (issue 20, part 4): what is left today is shown when a daily
limit is set; above the confirmation threshold Send first asks, repeating the request count and
the estimate, and only the second click sends; a batch over a limit gets the refusal, not a
button. Live mode against the fal stand-in."""
from __future__ import annotations

from core.batches import service
from core.catalog import registry
from core.config import load_settings
from tests.apptest_support import all_text, new_store, open_page, texts, wait_finished

SCHNELL = registry.DEFAULT_MODELS[0]   # $0.003 a request


def _plan(at, seeds="1, 2"):
    at.multiselect(key="gen_models").set_value([SCHNELL]).run()
    at.radio(key="seed_mode").set_value("List").run()
    at.text_input(key="seed_list").set_value(seeds).run()


def test_send_above_the_threshold_asks_first_with_the_count_and_estimate_and_the_second_click_sends(
        fal_standin, monkeypatch):
    """The first click only asks (nothing written, nothing sent); the question repeats the count
    and the estimate; Yes launches one batch, which the stand-in runs."""
    monkeypatch.setenv("DASHBOARD_CONFIRM_ABOVE_USD", "0")   # every live batch asks
    at = open_page("generate.py", user="Ana")
    _plan(at)
    assert "Send 2 requests to fal (about $0.006)" in at.button(key="run").label
    at.button(key="run").click().run()
    assert "Send 2 requests to fal, estimated at $0.006? fal bills every request it runs." in texts(at.warning)
    assert new_store().list_batches() == [] and fal_standin.submissions == 0
    assert not [b for b in at.button if b.key == "run"]
    at.button(key="run_confirm_yes").click().run()
    batch_id = at.session_state["active_batch"]
    assert new_store().get_batch(batch_id).created_by == "Ana"
    assert wait_finished(batch_id).counts == {"completed": 2}
    assert fal_standin.submissions == 2 and len(new_store().list_batches()) == 1


def test_not_now_takes_the_question_back_and_below_the_threshold_send_sends_at_once(fal_standin, monkeypatch):
    monkeypatch.setenv("DASHBOARD_CONFIRM_ABOVE_USD", "0")
    at = open_page("generate.py", user="Ana")
    _plan(at)
    at.button(key="run").click().run()
    at.button(key="run_confirm_no").click().run()
    assert at.button(key="run") and not [w for w in texts(at.warning) if "estimated at" in w]
    assert new_store().list_batches() == []
    monkeypatch.setenv("DASHBOARD_CONFIRM_ABOVE_USD", "3")   # the default: $0.006 does not ask
    at = open_page("generate.py", user="Ana")
    _plan(at)
    at.button(key="run").click().run()
    assert wait_finished(at.session_state["active_batch"]).counts == {"completed": 2}


def test_generate_shows_what_is_left_today_and_refuses_a_batch_over_it(fal_standin, monkeypatch):
    monkeypatch.setenv("DASHBOARD_BUDGET_USD_PER_DAY", "0.01")
    store, settings = new_store(), load_settings()
    earlier = service.record(store, service.plan_batch({"name": "earlier", "models": [SCHNELL], "seeds": [1, 2]},
                                                       store=store), settings, created_by="Ana")
    for r in store.batch_requests(earlier.id):
        store.mark_submitted(r.id)                                        # $0.006 sent today
    at = open_page("generate.py", user="Ana")
    assert ("Left today for Ana: $0.004 of $0.010 (DASHBOARD_BUDGET_USD_PER_DAY, since midnight UTC)."
            in texts(at.caption))
    _plan(at, seeds="1, 2")                                               # $0.006: over what is left
    assert "but Ana has $0.004 left of today's $0.010" in " ".join(texts(at.error))
    assert not [b for b in at.button if b.key == "run"]
    _plan(at, seeds="1")                                                  # $0.003 fits
    assert at.button(key="run")
    assert fal_standin.submissions == 0


def test_no_daily_limit_shows_nothing_about_it():
    at = open_page("generate.py")
    assert "Left today" not in all_text(at)
