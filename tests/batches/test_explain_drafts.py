"""core.batches.explain (what a batch means in words) and core.batches.drafts (the Generate form
kept for a browser): the rules the pages draw, checked without a page."""
from __future__ import annotations

import pytest

from core.batches import drafts, explain
from core.values import BatchProgress


def _progress(counts, *, dry_run=False, est=1.8, done_cost=0.225, cancel=False):
    return BatchProgress(batch_id="b", total=sum(counts.values()), counts=counts, estimated_cost=est,
                         completed_cost=done_cost, dry_run=dry_run, cancel_requested=cancel)


def test_a_cancelled_batch_is_answered_not_done_and_costs_what_was_sent():
    p = _progress({"completed": 10, "cancelled": 70}, cancel=True)
    line = explain.progress_line(p)
    assert line == ("10 of 80 answered by fal: 10 completed, 70 cancelled (never sent) · about $0.225 spent "
                    "on completed requests (estimate for all 80: $1.800)")
    assert not explain.may_cancel(p)
    assert explain.outcome_notes(p) == [("info", "70 requests cancelled before fal answered: nothing more was "
                                                 "sent for them, and no cost is counted for them.")]


def test_once_a_cancel_is_asked_the_page_says_so_instead_of_offering_cancel_again():
    """One cancel rule: Cancel is offered while `may_cancel`; after a click, until every request is
    final, the words of `cancel_note` stand in its place; a settled batch shows neither."""
    asked = _progress({"completed": 3, "planned": 5}, cancel=True)
    assert not explain.may_cancel(asked)
    assert explain.cancel_note(asked).startswith("Cancel requested: nothing more is sent")
    running = _progress({"completed": 3, "planned": 5})
    assert explain.may_cancel(running) and explain.cancel_note(running) == ""
    settled = _progress({"completed": 3, "cancelled": 5}, cancel=True)
    assert not explain.may_cancel(settled) and explain.cancel_note(settled) == ""


def test_a_running_batch_shows_the_estimate_and_may_be_cancelled():
    p = _progress({"completed": 30, "failed": 9, "planned": 41})
    assert explain.progress_line(p).startswith("39 of 80 answered by fal: 30 completed, 9 failed, 41 waiting")
    assert explain.progress_line(p).endswith("estimate for all 80: $1.800")
    assert explain.may_cancel(p)
    assert explain.results_caption(12, 30, p) == ("The newest 12 of 30 completed results (39 of 80 requests "
                                                  "final) — every one is in History and Compare.")
    assert explain.results_caption(8, 8, p) == ""


def test_a_dry_run_spends_nothing():
    line = explain.progress_line(_progress({"dry_run": 4}, dry_run=True))
    assert line == "4 of 4 payloads recorded: 4 recorded as dry run · dry run: nothing sent, nothing spent"


def test_models_needing_references_and_varying_options():
    assert explain.models_needing_references(["fal-ai/flux/schnell", "fal-ai/flux-2/lora/edit"], []) == \
        ["fal-ai/flux-2/lora/edit"]
    assert explain.models_needing_references(["fal-ai/flux-2/lora/edit"], ["r1"]) == []
    assert explain.varying_options([{"pose": "A", "style": "x"}, {"pose": "B", "style": "x"}]) == ["pose"]


def test_a_draft_round_trips_and_is_replaced(settings):
    did = drafts.new_id()
    assert drafts.load(settings, did) == {}
    drafts.save(settings, did, {"gen_models": ["m"], "seed_n": 2})
    drafts.save(settings, did, {"gen_models": ["m", "n"]})
    assert drafts.load(settings, did) == {"gen_models": ["m", "n"]}
    assert [p.name for p in (settings.data_dir / "drafts").iterdir()] == [f"{did}.json"]


@pytest.mark.parametrize("bad", ["../../etc/passwd", "ABC", "", "0" * 31, "g" * 32])
def test_a_draft_id_from_an_address_never_names_another_path(settings, bad):
    assert drafts.load(settings, bad) == {}
    with pytest.raises(drafts.DraftError, match="not a draft id"):
        drafts.save(settings, bad, {})


def test_a_damaged_or_oversized_draft(settings):
    did = drafts.new_id()
    (settings.data_dir / "drafts").mkdir(parents=True)
    (settings.data_dir / "drafts" / f"{did}.json").write_text("[1, 2")
    assert drafts.load(settings, did) == {}
    with pytest.raises(drafts.DraftError, match="over 256 KB"):
        drafts.save(settings, did, {"x": "a" * (300 * 1024)})
    with pytest.raises(drafts.DraftError, match="could not be kept"):
        drafts.save(settings, did, {"x": object()})
