"""Review and Leaderboard pages, and the Fidelity tab of Compare, in AppTest: the blind review flow
(vote -> stored -> revealed -> next group; never shown again to the same rater), skip, the name
requirement, and the leaderboard's numbers and download."""
from __future__ import annotations

from core.evaluation import fidelity
from core.evaluation import review
from core.config import load_settings
from core.blobs import open_storage
from tests.apptest_support import all_text, assert_ok, new_store, open_page, texts
from tests.review_support import EDIT, SCHNELL, completed_batch



LABELS = {SCHNELL: "FLUX.1 [schnell]", EDIT: "FLUX.2 [dev] LoRA edit"}


def _buttons(at) -> dict[str, object]:
    return {b.key: b for b in at.button}


def test_review_asks_for_a_name_before_anything():
    completed_batch()
    at = open_page("review.py")
    assert texts(at.title) == ["Review"]
    assert any("Type your name in the sidebar" in t for t in texts(at.info))
    assert not at.button


def test_review_without_batches_says_what_to_do():
    at = open_page("review.py", user="ana")
    assert any("Nothing to review yet" in t for t in texts(at.info))


def test_vote_is_stored_then_models_revealed_then_next_group_and_never_shown_again():
    batch, groups, by_group = completed_batch()
    at = open_page("review.py", user="ana")
    first = review.queue(new_store(), batch.id, "ana").next
    page = all_text(at)
    assert f"**{first.group.prompt}**" in texts(at.markdown)
    # blind: no model name anywhere before the vote; reference + two outputs shown
    assert LABELS[SCHNELL] not in page and LABELS[EDIT] not in page
    assert len(at.image) == 3
    assert "0 of 2 reviewed by ana" in at.get("progress")[0].proto.text

    at.text_input(key=f"rev_note_{first.key}").input("left has the face")
    _buttons(at)["rev_left"].click().run()
    assert_ok(at)
    votes = new_store().list_votes(batch_id=batch.id)
    assert len(votes) == 1
    vote = votes[0]
    assert (vote.rater, vote.verdict, vote.winner, vote.note) == ("ana", "left", first.left.endpoint,
                                                                  "left has the face")
    assert (vote.left_request_id, vote.right_request_id) == (first.left.request_id, first.right.request_id)
    revealed = " ".join(texts(at.success))
    assert f"Left was **{LABELS[first.left.endpoint]}**" in revealed
    assert f"right was **{LABELS[first.right.endpoint]}**" in revealed

    _buttons(at)["rev_next"].click().run()
    assert_ok(at)
    second = review.queue(new_store(), batch.id, "ana").next
    assert second.group.id != first.group.id
    assert f"**{second.group.prompt}**" in texts(at.markdown)
    assert "1 of 2 reviewed by ana" in at.get("progress")[0].proto.text

    _buttons(at)["rev_both_good"].click().run()
    _buttons(at)["rev_next"].click().run()
    assert any("Nothing left to review" in t for t in texts(at.success))
    # a fresh session of the same rater is not shown the groups again; another rater is
    again = open_page("review.py", user="Ana")
    assert any("Nothing left to review" in t for t in texts(again.success))
    other = open_page("review.py", user="bo")
    assert "0 of 2 reviewed by bo" in other.get("progress")[0].proto.text
    # unless asked to include reviewed groups
    again.toggle(key="rev_include").set_value(True).run()
    assert f"**{first.group.prompt}**" in texts(again.markdown)


def test_skip_moves_on_without_a_vote_and_skipped_groups_can_come_back():
    batch, _, _ = completed_batch()
    at = open_page("review.py", user="ana")
    first = review.queue(new_store(), batch.id, "ana").next
    _buttons(at)["rev_skip"].click().run()
    assert new_store().list_votes() == []
    assert f"**{first.group.prompt}**" not in texts(at.markdown)
    _buttons(at)["rev_skip"].click().run()
    assert any("Only skipped groups are left" in t for t in texts(at.success))
    _buttons(at)["rev_unskip"].click().run()
    assert f"**{first.group.prompt}**" in texts(at.markdown)


def test_verdict_buttons_have_keyboard_shortcuts():
    completed_batch()
    at = open_page("review.py", user="ana")
    shortcuts = {b.key: b.proto.shortcut for b in at.button}
    assert shortcuts == {"rev_left": "left", "rev_right": "right", "rev_both_good": "up",
                         "rev_both_bad": "down", "rev_skip": "s"}


def test_leaderboard_smoke_without_votes():
    completed_batch()
    at = open_page("leaderboard.py")
    assert texts(at.title) == ["Leaderboard"]
    assert any("No votes yet" in t for t in texts(at.info))
    assert [h for h in texts(at.header)] == ["Blind review", "Fidelity to the reference", "Cost and latency"]


def test_leaderboard_shows_win_rates_with_intervals_and_per_option_breakdown():
    batch, _, _ = completed_batch(options={"subject": ["Woman"], "pose": ["Standing", "Sitting"]})
    store = new_store()
    for item in review.review_items(store, batch.id, "ana"):
        verdict = "left" if item.left.endpoint == EDIT else "right"
        review.record_item_vote(store, item, rater="ana", verdict=verdict)
    at = open_page("leaderboard.py")
    metrics = {m.label: m.value for m in at.metric}
    assert metrics["Votes"] == "2" and metrics["Best (Bradley-Terry)"] == LABELS[EDIT]
    # 2 wins of 2: Wilson 95% [0.342, 1]; 0 of 2: [0, 0.658]
    table = [d.value for d in at.dataframe if "95% interval" in d.value.columns][0]
    assert list(table["model"]) == [LABELS[EDIT], LABELS[SCHNELL]]
    assert list(table["wins"]) == [2, 0]
    assert list(table["95% interval"]) == ["34%–100%", "0%–66%"]
    assert at.selectbox(key="lb_factor").value == "pose"
    assert len(at.get("vega_lite_chart")) >= 3, "win-rate charts are drawn"


def test_leaderboard_for_one_batch_and_fidelity_after_background_measuring():
    batch, _, _ = completed_batch()
    other, _, _ = completed_batch("other", models=(SCHNELL,), options={"subject": ["Robot"]})
    s = load_settings()
    fidelity.compute_pending(new_store(), open_storage(s))
    at = open_page("leaderboard.py")
    at.selectbox(key="lb_batch").set_value(other.id).run()
    assert_ok(at)
    fid = [d.value for d in at.dataframe if "measured" in d.value.columns][0]
    assert list(fid["model"]) == [LABELS[SCHNELL]] and list(fid["measured"]) == [1]
    assert batch.id != other.id


def test_leaderboard_of_a_batch_shows_a_new_vote_and_a_new_metric_on_the_next_run():
    """The page keeps what the batch's requests and images say apart from what the votes say:
    a vote shows at once in the win rates and the reviewed outputs, a metric stored at once in
    the fidelity table (neither is served stale from a cache)."""
    batch, _, _ = completed_batch()
    at = open_page("leaderboard.py")
    at.selectbox(key="lb_batch").set_value(batch.id).run()
    assert any("No votes yet" in t for t in texts(at.info))
    store = new_store()
    item = review.review_items(store, batch.id, "ana")[0]
    review.record_item_vote(store, item, rater="ana", verdict="left" if item.left.endpoint == EDIT else "right")
    at.toggle(key="lb_all_columns").set_value(True).run()
    assert_ok(at)
    assert {m.label: m.value for m in at.metric}["Votes"] == "1"
    costs = [d.value for d in at.dataframe if "preferred / reviewed" in d.value.columns][0]
    assert dict(zip(costs["model"], costs["preferred / reviewed"])) == {LABELS[SCHNELL]: "0 / 1",
                                                                       LABELS[EDIT]: "1 / 1"}
    fidelity.compute_pending(store, open_storage(load_settings()))
    at.run()
    assert_ok(at)
    fid = [d.value for d in at.dataframe if "measured" in d.value.columns][0]
    assert list(fid["measured"]) == [2, 2], "every image measured shows (two groups per model)"


def test_compare_has_a_fidelity_tab_with_each_images_metrics():
    batch, _, _ = completed_batch(options={"subject": ["Woman"]})
    fidelity.compute_pending(new_store(), open_storage(load_settings()))
    at = open_page("compare.py")
    assert [t.label for t in at.tabs] == ["Side by side", "Fidelity", "Grid"]
    table = [d.value for d in at.dataframe if "face distance" in d.value.columns][0]
    assert sorted(table["model"]) == sorted(LABELS.values())
    assert set(table["face"]) == {"no_face_reference"}
    assert table["phash"].notna().all()


def _page_links(at) -> list[str]:
    return [e.proto.label for e in at.get("page_link")]


# what a new teammate reads on this page

def test_include_reviewed_moves_on_after_each_vote_instead_of_offering_group_1_again():
    batch, _, _ = completed_batch(options={"subject": ["Woman", "Man", "Robot"]})
    store = new_store()
    for item in review.review_items(store, batch.id, "ana"):   # every group judged already
        review.record_item_vote(store, item, rater="ana", verdict="both_good")
    at = open_page("review.py", user="ana")
    at.toggle(key="rev_include").set_value(True).run()
    order = [i.group.prompt for i in review.review_items(store, batch.id, "ana")]
    shown = []
    for _ in order:
        shown.append(next(m for m in texts(at.markdown) if m.strip("*") in order).strip("*"))
        _buttons(at)["rev_left"].click().run()
        _buttons(at)["rev_next"].click().run()      # what N does
        assert_ok(at)
    assert shown == order, "each group once, in order, never group 1 again"
    assert any("Nothing left to review" in t for t in texts(at.success))
    assert any("Leaderboard" in link for link in _page_links(at))
    # the latest verdicts replaced the earlier ones
    latest = review.latest_votes(new_store().list_votes(batch_id=batch.id))
    assert {v.verdict for v in latest} == {"left"}


def test_the_key_hint_names_each_key_once_and_n():
    completed_batch()
    at = open_page("review.py", user="ana")
    hint = next(c for c in texts(at.caption) if "keys:" in c)
    for part in ("← left better", "→ right better", "↑ both good", "↓ both bad", "S skip", "N next group"):
        assert part in hint, hint
