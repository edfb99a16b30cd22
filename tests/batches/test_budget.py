"""Spending limits (core/batches/budget.py, issue 20 part 4): a live batch over the per-batch or
the per-day limit is refused before anything is written or sent, in one line naming the limit,
the estimate and what is left; a resumed or re-run batch counts what it already spent; no limit
is today's behaviour and a dry run is never refused. Real store file, the fal stand-in over HTTP,
real `python -m core` processes for the command line."""
from __future__ import annotations

import datetime as dt
import json
import os
import subprocess
import sys

import pytest

from core.batches import budget, schedule, service
from core.config import REPO_ROOT, load_settings
from core.errors import BudgetExceeded, ConfigError
from core.store import open_store

SCHNELL = "fal-ai/flux/schnell"   # $0.003 a request
FLUX2 = "fal-ai/flux-2"           # $0.012 a request


def _spec(seeds=(1, 2), models=(SCHNELL,)):
    return {"name": "budget", "models": list(models), "options": {"pose": ["Standing"]}, "seeds": list(seeds)}


@pytest.fixture
def live(fal_standin, monkeypatch):
    """A live store against the stand-in; `limits(**env)` sets limits and returns fresh settings."""
    def limits(**env):
        for name, value in env.items():
            monkeypatch.setenv(name, value)
        s = load_settings()
        s.ensure_dirs()
        return s

    settings = limits()
    store = open_store(settings)
    yield store, limits
    store.close()


def _plan(store, **kw):
    return service.plan_batch(_spec(**kw), store=store)


def _batches(store):
    return store.list_batches(limit=100)


# -- settings -------------------------------------------------------------------------------------

def test_limits_unset_mean_no_limit_and_confirmation_defaults_to_three_dollars(tmp_path):
    s = load_settings(env={}, secrets_path=tmp_path / "none")
    assert (s.budget_usd_per_batch, s.budget_usd_per_day, s.confirm_above_usd) == (None, None, 3.0)
    s = load_settings(env={"DASHBOARD_BUDGET_USD_PER_BATCH": "2.5", "DASHBOARD_BUDGET_USD_PER_DAY": "$10",
                           "DASHBOARD_CONFIRM_ABOVE_USD": "0"}, secrets_path=tmp_path / "none")
    assert (s.budget_usd_per_batch, s.budget_usd_per_day, s.confirm_above_usd) == (2.5, 10.0, 0.0)


@pytest.mark.parametrize("name, value", [
    ("DASHBOARD_BUDGET_USD_PER_BATCH", "lots"), ("DASHBOARD_BUDGET_USD_PER_BATCH", "0"),
    ("DASHBOARD_BUDGET_USD_PER_DAY", "-5"), ("DASHBOARD_BUDGET_USD_PER_DAY", "nan"),
    ("DASHBOARD_CONFIRM_ABOVE_USD", "-1"), ("DASHBOARD_CONFIRM_ABOVE_USD", "inf"),
])
def test_a_bad_amount_is_one_config_error_naming_the_setting(tmp_path, name, value):
    with pytest.raises(ConfigError) as info:
        load_settings(env={name: value}, secrets_path=tmp_path / "none")
    message = str(info.value)
    assert message.startswith(f"{name} must be an amount in USD") and repr(value) in message
    assert "\n" not in message


# -- the per-batch limit --------------------------------------------------------------------------

def test_no_limit_set_records_any_batch(live):
    store, limits = live
    settings = limits()
    batch = service.record(store, _plan(store, seeds=range(1, 41), models=(SCHNELL, FLUX2)), settings)
    assert batch.request_count == 80 and budget.left_today(store, settings, None) is None


def test_a_batch_over_the_per_batch_limit_is_refused_in_one_line_with_nothing_written(live):
    store, limits = live
    settings = limits(DASHBOARD_BUDGET_USD_PER_BATCH="0.02")
    plan = _plan(store, seeds=(1, 2), models=(SCHNELL, FLUX2))          # 2 x 0.003 + 2 x 0.012
    with pytest.raises(BudgetExceeded) as info:
        service.record(store, plan, settings, created_by="ana")
    assert str(info.value) == ("this batch is estimated at $0.030, over the per-batch limit of $0.020 "
                               "(DASHBOARD_BUDGET_USD_PER_BATCH): send fewer requests or raise the limit")
    with pytest.raises(BudgetExceeded):
        service.launch(store, plan, settings, created_by="ana")
    assert _batches(store) == []
    assert service.record(store, _plan(store, seeds=(1, 2)), settings).request_count == 2   # $0.006 fits


def test_a_batch_exactly_at_the_limit_is_not_refused(live):
    """A float sum of prices must not refuse a batch that costs exactly its limit."""
    store, limits = live
    settings = limits(DASHBOARD_BUDGET_USD_PER_BATCH="0.3")
    assert service.record(store, _plan(store, seeds=range(1, 101)), settings).request_count == 100


def test_the_dry_run_is_never_refused(settings, st):
    """No FAL_KEY: nothing is sent, so no limit applies (the limits are set all the same)."""
    os.environ["DASHBOARD_BUDGET_USD_PER_BATCH"] = "0.001"
    try:
        dry = load_settings()
    finally:
        del os.environ["DASHBOARD_BUDGET_USD_PER_BATCH"]
    assert dry.dry_run and dry.budget_usd_per_batch == 0.001
    batch = service.record(st, service.plan_batch(_spec(seeds=range(1, 11)), store=st), dry)
    assert batch.dry_run and batch.request_count == 10
    budget.check(st, dry, estimate_usd=1000.0, person="ana")


# -- the per-day limit ----------------------------------------------------------------------------

def test_the_day_counts_what_a_person_sent_across_batches_and_not_others(live, fal_standin):
    store, limits = live
    settings = limits(DASHBOARD_BUDGET_USD_PER_DAY="0.031")
    first = service.record(store, _plan(store, seeds=(1, 2), models=(SCHNELL, FLUX2)), settings, created_by="ana")
    assert budget.left_today(store, settings, "ana") == pytest.approx(0.031)   # planned is not spent yet
    assert schedule.run_batch(first.id, settings=settings).finished
    assert fal_standin.submissions == 4
    assert budget.spent_today(store, "ana").usd == pytest.approx(0.030)
    assert budget.left_today(store, settings, "ana") == pytest.approx(0.001)
    assert budget.left_today(store, limits(DASHBOARD_BUDGET_USD_PER_DAY="0.01"), "ana") == 0.0   # never below 0
    with pytest.raises(BudgetExceeded) as info:
        service.record(store, _plan(store, seeds=(3,)), settings, created_by="ana")
    assert str(info.value) == ("this batch is estimated at $0.003, but ana has $0.001 left of today's $0.031 "
                               "(DASHBOARD_BUDGET_USD_PER_DAY, since midnight UTC): send fewer requests, "
                               "wait until tomorrow or raise the limit")
    # another person, and the shared no-name bucket, have their own day
    assert budget.left_today(store, settings, "bo") == pytest.approx(0.031)
    assert budget.left_today(store, settings, None) == pytest.approx(0.031)
    service.record(store, _plan(store, seeds=(3,)), settings, created_by="bo")
    # tomorrow (UTC) ana starts again
    tomorrow = dt.datetime.now(dt.timezone.utc) + dt.timedelta(days=1)
    assert budget.left_today(store, settings, "ana", now=tomorrow) == pytest.approx(0.031)
    budget.check(store, settings, estimate_usd=0.01, person="ana", now=tomorrow)


def test_cancelled_and_planned_requests_are_not_spent(live):
    store, limits = live
    settings = limits(DASHBOARD_BUDGET_USD_PER_DAY="1")
    batch = service.record(store, _plan(store, seeds=(1, 2, 3)), settings, created_by="ana")
    first, second, _ = store.batch_requests(batch.id)
    store.mark_submitted(first.id)                         # sent: counted, whatever comes of it
    store.mark_cancelled(second.id)                        # never sent
    assert budget.spent_today(store, "ana").usd == pytest.approx(0.003)


# -- resume and re-run count what was spent -------------------------------------------------------

def test_a_resume_is_checked_on_what_is_left_plus_what_the_batch_spent(live):
    store, limits = live
    settings = limits(DASHBOARD_BUDGET_USD_PER_BATCH="0.02")
    batch = service.record(store, _plan(store, seeds=range(1, 7)), settings, created_by="ana")   # $0.018
    for r in store.batch_requests(batch.id)[:4]:
        store.mark_submitted(r.id)
    assert budget.spent_in_batch(store, batch.id).usd == pytest.approx(0.012)
    assert budget.left_in_batch(store, batch.id).usd == pytest.approx(0.006)
    service.check_resume(store, settings, batch.id)       # 0.012 + 0.006 fits in 0.02
    tighter = limits(DASHBOARD_BUDGET_USD_PER_BATCH="0.015")
    with pytest.raises(BudgetExceeded) as info:
        service.resume(store, batch.id, tighter)
    assert str(info.value).startswith("what is left of this batch is estimated at $0.006 and it already spent "
                                      "$0.012 ($0.018 in all), over the per-batch limit of $0.015")
    assert store.get_batch(batch.id).launched_at is None   # no runner was started
    store.request_cancel(batch.id)
    service.check_resume(store, tighter, batch.id)         # a batch being cancelled sends nothing more


def test_a_rerun_counts_its_batch_and_writes_nothing_when_refused(live):
    store, limits = live
    settings = limits(DASHBOARD_BUDGET_USD_PER_BATCH="0.006")
    batch = service.record(store, _plan(store, seeds=(1, 2)), settings, created_by="ana")   # $0.006
    for r in store.batch_requests(batch.id):
        store.mark_submitted(r.id)
    with pytest.raises(BudgetExceeded, match="already spent \\$0.006"):
        service.rerun(store, store.batch_requests(batch.id)[0].id, settings, created_by="ana")
    assert len(store.batch_requests(batch.id)) == 2


def test_unknown_prices_count_as_zero_and_are_named_in_a_refusal(live):
    store, limits = live
    settings = limits(DASHBOARD_BUDGET_USD_PER_BATCH="0.01")
    with pytest.raises(BudgetExceeded) as info:
        budget.check(store, settings, estimate_usd=0.02, unpriced=3, person=None)
    assert str(info.value).endswith("(3 requests with no known price are counted as $0)")
    budget.check(store, settings, estimate_usd=0.01, unpriced=3, person=None)


def test_send_asks_first_above_the_threshold_and_repeats_count_and_estimate(live):
    store, limits = live
    assert not budget.needs_confirmation(limits(), 3.0) and budget.needs_confirmation(limits(), 3.01)
    always = limits(DASHBOARD_CONFIRM_ABOVE_USD="0")
    assert budget.needs_confirmation(always, 0.003)
    assert budget.confirmation(12, budget.Estimate(4.2, 1)) == (
        "Send 12 requests to fal, estimated at $4.20 plus 1 request at an unknown price? "
        "fal bills every request it runs.")


def test_a_dry_run_never_asks(settings):
    assert not budget.needs_confirmation(settings, 1000.0)


# -- the command line -----------------------------------------------------------------------------

def _cli(*args):
    return subprocess.run([sys.executable, "-m", "core", *args], cwd=REPO_ROOT, env=dict(os.environ),
                          capture_output=True, text=True, timeout=120)


def _plan_file(tmp_path, **kw):
    path = tmp_path / "plan.json"
    path.write_text(json.dumps(_spec(**kw)))
    return path


def test_cli_run_over_the_limit_sends_nothing_and_exits_2_in_one_line(fal_standin, tmp_path, monkeypatch):
    monkeypatch.setenv("DASHBOARD_BUDGET_USD_PER_BATCH", "0.02")
    done = _cli("batch", "run", str(_plan_file(tmp_path, seeds=(1, 2), models=(SCHNELL, FLUX2))), "--by", "ana")
    assert done.returncode == 2, done.stdout + done.stderr
    assert fal_standin.submissions == 0
    assert done.stderr.splitlines() == [
        "error: this batch is estimated at $0.030, over the per-batch limit of $0.020 "
        "(DASHBOARD_BUDGET_USD_PER_BATCH): send fewer requests or raise the limit"]
    assert done.stdout == ""
    store = open_store(load_settings())
    assert store.list_batches() == []
    store.close()

    under = _cli("batch", "run", str(_plan_file(tmp_path, seeds=(1, 2))), "--by", "ana")
    assert under.returncode == 0, under.stderr
    assert fal_standin.submissions == 2


def test_cli_per_day_limit_counts_the_earlier_batch(fal_standin, tmp_path, monkeypatch):
    monkeypatch.setenv("DASHBOARD_BUDGET_USD_PER_DAY", "0.01")
    assert _cli("batch", "run", str(_plan_file(tmp_path, seeds=(1, 2))), "--by", "ana").returncode == 0
    again = _cli("batch", "run", str(_plan_file(tmp_path, seeds=(3, 4))), "--by", "ana")
    assert again.returncode == 2 and fal_standin.submissions == 2
    assert again.stderr.splitlines() == [
        "error: this batch is estimated at $0.006, but ana has $0.004 left of today's $0.010 "
        "(DASHBOARD_BUDGET_USD_PER_DAY, since midnight UTC): send fewer requests, wait until tomorrow or "
        "raise the limit"]


def test_cli_resume_over_the_limit_sends_nothing_and_exits_2(fal_standin, monkeypatch):
    settings = load_settings()
    settings.ensure_dirs()
    store = open_store(settings)
    batch = service.record(store, service.plan_batch(_spec(seeds=range(1, 5)), store=store), settings,
                           created_by="ana")                                   # $0.012, planned
    store.close()
    monkeypatch.setenv("DASHBOARD_BUDGET_USD_PER_BATCH", "0.01")
    done = _cli("batch", "resume", batch.id)
    assert done.returncode == 2 and fal_standin.submissions == 0
    assert len(done.stderr.splitlines()) == 1 and "DASHBOARD_BUDGET_USD_PER_BATCH" in done.stderr
    every = _cli("batch", "resume")                                            # every unfinished batch
    assert every.returncode == 2 and fal_standin.submissions == 0
    assert every.stderr.startswith(f"skipped {batch.id}: this batch is estimated at $0.012")
    monkeypatch.delenv("DASHBOARD_BUDGET_USD_PER_BATCH")
    assert _cli("batch", "resume", batch.id).returncode == 0 and fal_standin.submissions == 4


# -- what fal billed ------------------------------------------------------------------------------

def test_what_fal_billed_replaces_the_estimate_once_fal_says_it(live, fal_standin):
    """fal's `x-fal-billable-units` on a result, at the endpoint's price per unit, is what a sent
    request cost: here fal bills 10 units a job where the plan estimated 1 MP ($0.003), and the
    day's limit counts the $0.06 fal billed, not the $0.006 estimated."""
    store, limits = live
    settings = limits(DASHBOARD_BUDGET_USD_PER_DAY="0.05")
    fal_standin.billable_units = 10
    first = service.record(store, _plan(store, seeds=(1, 2)), settings, created_by="ana")
    assert schedule.run_batch(first.id, settings=settings).finished
    billed = [(r.billable_units, r.billed_cost) for r in store.batch_requests(first.id)]
    assert billed == [(10.0, pytest.approx(0.03))] * 2
    assert budget.spent_today(store, "ana").usd == pytest.approx(0.06)
    assert budget.spent_in_batch(store, first.id).usd == pytest.approx(0.06)
    with pytest.raises(BudgetExceeded, match=r"but ana has \$0.00 left of today's \$0.05"):
        service.record(store, _plan(store, seeds=(3,)), settings, created_by="ana")


@pytest.mark.parametrize("header", [None, "lots", "-1", "inf", "nan"])
def test_no_or_an_odd_billable_header_leaves_the_estimate(live, fal_standin, header):
    store, limits = live
    settings = limits()
    fal_standin.billable_units = header
    batch = service.record(store, _plan(store, seeds=(1,)), settings, created_by="ana")
    assert schedule.run_batch(batch.id, settings=settings).finished
    [request] = store.batch_requests(batch.id)
    assert (request.billable_units, request.billed_cost) == (None, None)
    assert budget.spent_today(store, "ana").usd == pytest.approx(0.003)      # the estimate


def test_the_stand_in_bills_the_output_megapixels_and_the_store_keeps_them(live, fal_standin):
    store, limits = live
    settings = limits()
    batch = service.record(store, _plan(store, seeds=(1,)), settings, created_by="ana")
    assert schedule.run_batch(batch.id, settings=settings).finished
    [request] = store.batch_requests(batch.id)
    [image] = store.result_images([request.id])[request.id]
    assert request.billable_units == pytest.approx(image.width * image.height / 1024 ** 2, abs=1e-4)
    assert request.billed_cost == pytest.approx(request.billable_units * 0.003)
