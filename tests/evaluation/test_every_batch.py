"""'All batches' on the Leaderboard (`tally.every_batch`): merged from each batch's figures,
kept in the store at the batch's write stamp, and exactly what the functions say over every
request, image and vote; a write to a batch's requests or images (a request completing, a metric
stored) makes that batch's figures be computed again, and only that batch's; a vote computes
only what votes say. The same split for one batch: `batch_outputs`, kept by `outputs_version`."""
from __future__ import annotations

import pytest

from core.config import load_settings
from core.evaluation import batch_parts, leaderboard, review, tally
from core.store import open_store
from core.values import ImageMetrics
from core.blobs import open_storage
from tests.evaluation import _oracles as oracles
from tests.review_support import EDIT, SCHNELL, complete, completed_batch, completed_sweep_batch

METRICS = ("face_distance", "phash_distance", "ciede2000", "ssim")


def _distribution(frame, metric):
    shown = frame[frame[metric].notna()]
    return sorted(zip(shown["contender"], shown[metric]))


def _exact(st) -> tally.Figures:
    """every_batch equals each function over every batch (the chart: the same values per contender)."""
    got = tally.every_batch(st)
    assert got.selection == leaderboard.selection_contenders(st)
    assert got.board == leaderboard.leaderboard(st)
    assert got.costs == oracles.model_costs(st)
    assert got.fidelity == oracles.fidelity_by_model(st)
    assert got.axes == oracles.axis_summary(st)
    whole = oracles.metrics_frame(st)
    for metric in METRICS:
        assert _distribution(got.metrics, metric) == _distribution(whole, metric), metric
    assert tally.figures(st).costs == got.costs     # the page's call for "all batches"
    return got


def _computed(monkeypatch) -> list[str]:
    """The batches whose figures are computed (not read from the store) from now on."""
    seen: list[str] = []
    real = batch_parts._batch_part

    def spy(st, batch_key):
        seen.append(batch_key)
        return real(st, batch_key)

    monkeypatch.setattr(batch_parts, "_batch_part", spy)
    return seen


def _measure(st, request_id: str, distance: float) -> None:
    (image,) = st.result_images([request_id])[request_id]
    st.save_image_metrics(ImageMetrics(image.id, request_id, face_status="ok", face_distance=distance,
                                       phash_distance=12, ciede2000=4.5, metrics_version="test",
                                       metrics_at="2026-01-01T00:00:00+00:00"))


def test_every_batch_is_exactly_the_figures_over_every_row(st):
    """Two plain batches, a sweep with votes, measured and pending images, unfinished requests and
    a request outside any batch: the same numbers as reading every row."""
    first, first_groups, first_by = completed_batch("first", options={"subject": ["Woman", "Man", "Child"]})
    completed_batch("half done", skip=(EDIT,))
    sweep, _, _ = completed_sweep_batch()
    for n, item in enumerate(review.review_items(st, sweep.id, "ana")):
        review.record_item_vote(st, item, rater="ana", verdict=review.VERDICTS[n % 4])
    for item in review.review_items(st, first.id, "bo"):
        review.record_item_vote(st, item, rater="bo", verdict="left")
    _measure(st, first_by[first_groups[0].id][SCHNELL].id, 0.41)
    _measure(st, first_by[first_groups[1].id][EDIT].id, 0.72)
    alone = st.record_request(endpoint=SCHNELL, payload={"prompt": "alone", "seed": 3}, estimated_cost=0.003)
    complete(st, open_storage(load_settings()), alone, "pink", inference_s=2.5)
    got = _exact(st)
    assert got.axes and got.board.votes > 0 and any(f.measured for f in got.fidelity)
    assert sum(c.requests for c in got.costs) == len(st.request_costs())


def test_stored_figures_are_reused_until_their_batch_is_written(st, monkeypatch):
    first, first_groups, first_by = completed_batch("first", options={"subject": ["Woman", "Man"]})
    second, _, second_by = completed_batch("second", skip=(EDIT,))
    _exact(st)
    assert set(st.stored_figures([first.id, second.id])) == {first.id, second.id}
    computed = _computed(monkeypatch)
    _exact(st)
    assert computed == [], "nothing was written: every batch's figures come from the store"

    item = review.review_items(st, first.id, "cy")[0]
    review.record_item_vote(st, item, rater="cy", verdict="both_good")        # a vote
    after_vote = _exact(st)
    assert computed == [] and after_vote.board.votes == 1, "a vote leaves the stored figures"
    assert sum(c.reviewed_outputs for c in after_vote.costs) == 2
    assert sum(c.preferred_outputs for c in after_vote.costs) == 2

    computed.clear()
    _measure(st, first_by[first_groups[0].id][EDIT].id, 0.33)                 # a metric stored
    measured = _exact(st)
    assert computed == [first.id] and sum(f.faces_compared for f in measured.fidelity) == 1

    computed.clear()
    late = next(r for g in second_by.values() for e, r in g.items() if e == EDIT)
    complete(st, open_storage(load_settings()), late, "teal")                  # a request completing
    done = _exact(st)
    assert computed == [second.id]
    assert sum(c.completed for c in done.costs) == sum(c.completed for c in after_vote.costs) + 1


def test_a_write_stamps_its_own_batch_only(st):
    first, first_groups, first_by = completed_batch("first")
    second, _, _ = completed_batch("second")
    before = st.batch_stamps()
    assert set(before) == {first.id, second.id}
    review.record_item_vote(st, review.review_items(st, first.id, "ana")[0], rater="ana", verdict="left")
    after_vote = st.batch_stamps()
    assert after_vote == before, "votes are not in the stored figures: they leave the stamps"
    _measure(st, first_by[first_groups[0].id][SCHNELL].id, 0.5)
    assert st.batch_stamps()[first.id] > after_vote[first.id]
    assert st.batch_stamps()[second.id] == before[second.id]


def test_a_store_that_refuses_writes_still_shows_every_batch(settings, sqlite_only):
    """A data directory that cannot be written (or a database locked for long): the figures are
    computed each time and nothing is kept."""
    first, _, _ = completed_batch("first")
    ro = open_store(settings)
    ro.db.execute("PRAGMA query_only = 1")
    try:
        figures = tally.every_batch(ro)
        assert figures.costs == oracles.model_costs(ro) and figures.costs
        assert ro.stored_figures([first.id]) == {}
    finally:
        ro.close()


def _batch_exact(st, batch_id: str, kept: tally.Outputs) -> tally.Figures:
    """`figures` of a batch from kept outputs equals each function over the batch."""
    got = tally.figures(st, batch_id=batch_id, outputs=kept)
    assert got.selection == leaderboard.selection_contenders(st, batch_id=batch_id)
    assert got.board == leaderboard.leaderboard(st, batch_id=batch_id)
    assert got.costs == oracles.model_costs(st, batch_id=batch_id)
    assert got.fidelity == oracles.fidelity_by_model(st, batch_id=batch_id)
    assert got.axes == oracles.axis_summary(st, batch_id=batch_id)
    assert got.metrics.equals(oracles.metrics_frame(st, batch_id=batch_id))
    return got


def test_a_vote_leaves_a_batchs_outputs_and_a_metric_renews_them(st):
    """The Leaderboard keeps a batch's `Outputs` by `outputs_version`: a vote leaves that version
    (the kept outputs give exactly the figures after the vote: win rates, reviewed outputs), a
    metric stored or a request completing changes it (outputs computed again)."""
    sweep, groups, by = completed_sweep_batch()
    other, _, _ = completed_batch("other")
    version = tally.outputs_version(st, batch_id=sweep.id)
    kept = tally.batch_outputs(st, batch_id=sweep.id)
    before = _batch_exact(st, sweep.id, kept)
    assert before.board.votes == 0 and all(a.win_rate is None for a in before.axes)

    for n, item in enumerate(review.review_items(st, sweep.id, "ana")):
        review.record_item_vote(st, item, rater="ana", verdict=review.VERDICTS[n % 4])
    assert tally.outputs_version(st, batch_id=sweep.id) == version
    assert tally.batch_outputs(st, batch_id=sweep.id).costs == kept.costs
    voted = _batch_exact(st, sweep.id, kept)
    assert voted.board.votes > 0 and any(a.win_rate is not None for a in voted.axes)
    assert sum(c.reviewed_outputs for c in voted.costs) > 0

    request_id = next(r.id for g in by.values() for r in g.values())
    _measure(st, request_id, 0.4)                                              # a metric stored
    assert tally.outputs_version(st, batch_id=sweep.id) != version
    assert tally.outputs_version(st, batch_id=other.id)[1] is not None
    renewed = tally.batch_outputs(st, batch_id=sweep.id)
    measured = _batch_exact(st, sweep.id, renewed)
    assert sum(f.faces_compared for f in measured.fidelity) == sum(f.faces_compared for f in voted.fidelity) + 1
    assert measured.fidelity != tally.figures(st, batch_id=sweep.id, outputs=kept).fidelity, \
        "the outputs kept before the metric no longer hold"


def test_outputs_of_another_batch_are_refused(st):
    first, _, _ = completed_batch("first")
    second, _, _ = completed_batch("second")
    with pytest.raises(ValueError, match="outputs of batch"):
        tally.figures(st, batch_id=second.id, outputs=tally.batch_outputs(st, batch_id=first.id))
