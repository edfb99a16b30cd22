"""The Review page's read (`review.next_up`): the same next item and counts as the whole queue
(`review.queue`), built without reading every output of the batch."""
from __future__ import annotations

from core.evaluation import review
from tests.review_support import EDIT, SCHNELL, THIRD, completed_batch, completed_sweep_batch


def _agrees(st, batch_id: str, rater: str, **kw) -> review.ReviewNext:
    whole = review.queue(st, batch_id, rater, **kw)
    shown = review.next_up(st, batch_id, rater, **kw)
    assert (shown.total, shown.reviewed, shown.skipped, shown.remaining) == \
        (whole.total, whole.reviewed, whole.skipped, len(whole.items))
    assert shown.next == whole.next, "the item shown (group, sides, outputs, position) is the queue's first"
    return shown


def test_next_up_follows_the_queue_through_every_vote_of_five_contenders(st):
    """Ten pairs per group, the pair chosen by the votes so far: after each vote the page's read
    names the same next pair, position and counts as the whole queue, to the end."""
    batch, groups, _ = completed_sweep_batch()
    verdicts = iter(["left", "right", "both_good", "both_bad"] * 10)
    for _ in range(20):
        shown = _agrees(st, batch.id, "ana")
        review.record_item_vote(st, shown.next, rater="ana", verdict=next(verdicts))
    done = _agrees(st, batch.id, "ANA")
    assert (done.next, done.total, done.reviewed, done.remaining) == (None, 20, 20, 0)
    again = _agrees(st, batch.id, "ana", include_reviewed=True)
    assert again.remaining == 20 and again.next.group.id == groups[0].id


def test_next_up_agrees_with_skips_seen_items_and_reviewed_groups(st):
    batch, groups, _ = completed_batch(options={"subject": ["Woman", "Man", "Child"]}, seeds=(1, 2))
    first = _agrees(st, batch.id, "bo")
    assert first.total == 6 and first.next.group.id == groups[0].id
    review.record_item_vote(st, first.next, rater="bo", verdict="left")
    second = _agrees(st, batch.id, "bo", skip={first.next.key})      # a skip of a judged item does not count
    assert second.skipped == 0 and second.next.position == 2
    third = _agrees(st, batch.id, "bo", skip={second.next.key})
    assert third.skipped == 1 and third.next.position == 3
    walked = _agrees(st, batch.id, "bo", include_reviewed=True, seen={first.next.key})
    assert walked.next.position == 2
    _agrees(st, batch.id, "bo", include_reviewed=True, skip={first.next.key, second.next.key})
    assert _agrees(st, batch.id, "cy").reviewed == 0


def test_a_contender_without_an_output_makes_no_pair(st):
    """Three models, the third never completed: one pair per group, as the queue says."""
    batch, _, _ = completed_batch(models=(SCHNELL, EDIT, THIRD), skip=(THIRD,))
    shown = _agrees(st, batch.id, "ana")
    assert shown.total == 2
    assert {shown.next.left.endpoint, shown.next.right.endpoint} == {SCHNELL, EDIT}


def test_nothing_to_review_gives_no_item(st):
    batch, _, _ = completed_batch(skip=(EDIT,))
    shown = _agrees(st, batch.id, "ana")
    assert (shown.next, shown.total, shown.remaining) == (None, 0, 0)


def test_next_up_reads_the_outputs_of_the_group_shown_only(st):
    """The page's cost must not grow with the batch: outputs are read for one group, by id."""
    batch, groups, _ = completed_batch(options={"subject": ["Woman", "Man", "Child"]}, seeds=(1, 2))
    asked = []
    real = st.group_outputs

    def spy(batch_id, **kw):
        asked.append(kw.get("group_ids"))
        return real(batch_id, **kw)

    st.group_outputs = spy
    try:
        review.next_up(st, batch.id, "ana")
    finally:
        del st.group_outputs
    assert asked == [[groups[0].id]]
