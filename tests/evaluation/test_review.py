"""Blind review (core/evaluation/review.py): items per group and pair of models, stable hidden sides, votes
stored unblinded, a rater never shown an item twice unless they ask, statistics on latest votes."""
from __future__ import annotations

import pytest

from core.evaluation import review
from core.evaluation import stats
from core.config import load_settings
from core.store import open_store
from core.errors import StoreError
from core.blobs import open_storage
from tests.review_support import EDIT, SCHNELL, THIRD, complete, completed_batch


def test_each_group_of_two_models_is_one_item_with_both_outputs(st):
    batch, groups, by_group = completed_batch()
    items = review.review_items(st, batch.id, "ana")
    assert [i.group.id for i in items] == [g.id for g in groups]
    for item in items:
        assert {item.left.endpoint, item.right.endpoint} == {SCHNELL, EDIT}
        assert item.left.request_id == by_group[item.group.id][item.left.endpoint].id
        assert item.left.image.storage_path.split("/")[-1].startswith("0-")
    assert [i.position for i in items] == [1, 2]


def test_sides_are_stable_per_rater_and_group_and_differ_between_raters(st):
    """Coming back gives the same order; over many raters both orders occur (about half each)."""
    batch, groups, _ = completed_batch()
    first = [(i.left.endpoint, i.right.endpoint) for i in review.review_items(st, batch.id, "ana")]
    again = [(i.left.endpoint, i.right.endpoint) for i in review.review_items(st, batch.id, " Ana ")]
    assert first == again
    lefts = [review.review_items(st, batch.id, f"rater{n}")[0].left.endpoint for n in range(40)]
    assert 10 <= lefts.count(SCHNELL) <= 30


def test_three_models_give_every_pair(st):
    """k models -> k(k-1)/2 items per group, each pair once."""
    batch, groups, _ = completed_batch(models=(SCHNELL, EDIT, THIRD), options={"subject": ["Woman"]})
    items = review.review_items(st, batch.id, "ana")
    assert len(items) == 3
    assert {frozenset((i.left.endpoint, i.right.endpoint)) for i in items} == {
        frozenset((SCHNELL, EDIT)), frozenset((SCHNELL, THIRD)), frozenset((EDIT, THIRD))}


def test_a_model_without_a_result_leaves_no_item(st):
    batch, _, _ = completed_batch(skip=(EDIT,))
    assert review.review_items(st, batch.id, "ana") == []
    assert review.queue(st, batch.id, "ana").total == 0


def test_a_rerun_replaces_the_older_output(st, settings):
    batch, groups, by_group = completed_batch(options={"subject": ["Woman"]})
    old = by_group[groups[0].id][EDIT]
    new = st.rerun_request(old.id)
    complete(st, open_storage(settings), new, "black")
    item = review.review_items(st, batch.id, "ana")[0]
    assert new.id in (item.left.request_id, item.right.request_id)


def test_vote_is_stored_unblinded_and_the_item_is_not_shown_again(st):
    batch, groups, _ = completed_batch()
    q = review.queue(st, batch.id, "ana")
    assert (q.total, q.reviewed, len(q.items)) == (2, 0, 2)
    item = q.next
    vote = review.record_item_vote(st, item, rater="ana", verdict="left", note="  sharper face  ")
    assert vote.winner == item.left.endpoint
    assert (vote.left_request_id, vote.right_request_id) == (item.left.request_id, item.right.request_id)
    assert vote.note == "sharper face" and vote.rater == "ana"
    assert vote.describe() == f"left ({item.left.endpoint}) better"

    after = review.queue(st, batch.id, "ANA")
    assert (after.reviewed, [i.key for i in after.items]) == (1, [q.items[1].key])
    # another rater still gets both; asking to include reviewed items brings it back
    assert len(review.queue(st, batch.id, "bo").items) == 2
    assert [i.key for i in review.queue(st, batch.id, "ana", include_reviewed=True).items] == \
        [i.key for i in q.items]


def test_ties_have_no_winner_and_skips_store_nothing(st):
    batch, _, _ = completed_batch()
    q = review.queue(st, batch.id, "ana")
    tie = review.record_item_vote(st, q.items[0], rater="ana", verdict="both_bad")
    assert tie.winner is None and tie.describe() == "both bad"
    skipped = review.queue(st, batch.id, "ana", skip={q.items[1].key})
    assert skipped.items == () and skipped.skipped == 1
    assert len(st.list_votes(batch_id=batch.id)) == 1


@pytest.mark.parametrize("kwargs, message", [
    ({"rater": "  "}, "rater's name"),
    ({"verdict": "draw"}, "Unknown verdict"),
])
def test_bad_votes_are_refused_with_what_to_do(st, kwargs, message):
    batch, _, _ = completed_batch()
    item = review.queue(st, batch.id, "ana").next
    args = {"rater": "ana", "verdict": "left", **kwargs}
    with pytest.raises(StoreError, match=message):
        review.record_item_vote(st, item, **args)
    assert st.list_votes() == []


def test_requests_of_another_group_are_refused(st):
    batch, groups, by_group = completed_batch()
    a, b = groups
    with pytest.raises(StoreError, match="not in group"):
        review.record_vote(st, group_id=a.id, left_request_id=by_group[a.id][SCHNELL].id,
                           right_request_id=by_group[b.id][EDIT].id, rater="ana", verdict="left")
    with pytest.raises(StoreError, match="same contender"):
        review.record_vote(st, group_id=a.id, left_request_id=by_group[a.id][SCHNELL].id,
                           right_request_id=by_group[a.id][SCHNELL].id, rater="ana", verdict="left")


def test_stats_votes_use_the_latest_verdict_per_rater_and_carry_the_options(st):
    """A re-review replaces the rater's earlier verdict in the statistics (both stay stored)."""
    batch, groups, _ = completed_batch(options={"subject": ["Woman"], "pose": ["Standing", "Sitting"]})
    items = review.review_items(st, batch.id, "ana")
    review.record_item_vote(st, items[0], rater="ana", verdict="both_good")
    review.record_item_vote(st, items[0], rater="Ana", verdict="left")
    review.record_item_vote(st, items[1], rater="ana", verdict="right")
    assert len(st.list_votes(batch_id=batch.id)) == 3
    votes = review.stats_votes(st, batch_id=batch.id)
    assert [v.winner for v in votes] == [items[0].left.contender_id, items[1].right.contender_id]
    assert votes[0].factors["pose"] in ("Standing", "Sitting")
    assert {v.factors["pose"] for v in votes} == {"Standing", "Sitting"}
    rates = {r.model: r for r in stats.win_rates(votes)}     # per contender (here one per model)
    assert len(rates) == 2 and sum(r.wins for r in rates.values()) == 2


def test_votes_survive_a_new_connection(st, settings):
    batch, _, _ = completed_batch()
    review.record_item_vote(st, review.queue(st, batch.id, "ana").next, rater="ana", verdict="right")
    other = open_store(load_settings())
    assert review.queue(other, batch.id, "ana").reviewed == 1
    other.close()
