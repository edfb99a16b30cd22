"""Leaderboard, cost/latency, fidelity per model and the comparison CSV (core/evaluation/leaderboard.py, tally.py; core/export/comparison.py), on a
stored batch with stored votes; the expected numbers are computed by hand in each docstring.

The fixture: 10 groups (pose Standing x seeds 1-5, pose Sitting x seeds 1-5), two models.
- ana votes on every group: Standing: edit wins 5; Sitting: edit wins 1, schnell wins 3, 1 both bad.
- bo votes on two groups: a Standing one where ana chose edit (bo: edit, agreeing) and a Sitting
  one where ana chose schnell (bo: both good, disagreeing).
"""
from __future__ import annotations

import csv
import io
import subprocess
import sys

import pytest

from core.evaluation import fidelity, leaderboard, review, tally
from core.export import comparison
from core.config import REPO_ROOT, load_settings
from core.store import open_store
from core.blobs import open_storage
from tests.evaluation import _oracles as oracles
from tests.review_support import EDIT, SCHNELL, THIRD, completed_batch


def _vote_for(item: review.ReviewItem, winner: str | None, tie: str | None = None) -> str:
    """The side verdict that makes `winner` win (or the tie) whatever side it was shown on."""
    if winner is None:
        return tie
    return "left" if item.left.endpoint == winner else "right"


def _contender_ids(st, batch) -> dict[str, str]:
    """endpoint -> its contender id in a batch with one contender per model."""
    return {c.endpoint: c.id for c in st.contenders_in(batch_id=batch.id)}


@pytest.fixture
def voted(settings):
    settings.ensure_dirs()
    batch, groups, by_group = completed_batch(
        "decide", options={"subject": ["Woman"], "pose": ["Standing", "Sitting"]}, seeds=(1, 2, 3, 4, 5),
        inference=lambda endpoint, n: float(n + 1) if endpoint == SCHNELL else 10.0 + n)
    st = open_store(settings)
    standing = [g for g in groups if g.options["pose"] == "Standing"]
    sitting = [g for g in groups if g.options["pose"] == "Sitting"]
    plan = {g.id: EDIT for g in standing}
    plan.update({sitting[0].id: EDIT, sitting[1].id: SCHNELL, sitting[2].id: SCHNELL,
                 sitting[3].id: SCHNELL, sitting[4].id: None})
    for rater in ("ana", "bo"):
        items = {i.group.id: i for i in review.review_items(st, batch.id, rater)}
        if rater == "ana":
            for gid, winner in plan.items():
                review.record_item_vote(st, items[gid], rater="ana", verdict=_vote_for(items[gid], winner, "both_bad"),
                                        note="=HYPERLINK(\"http://x\")" if gid == sitting[4].id else None)
        else:
            review.record_item_vote(st, items[standing[0].id], rater="bo", verdict=_vote_for(items[standing[0].id], EDIT))
            review.record_item_vote(st, items[sitting[1].id], rater="bo", verdict="both_good")
    yield st, batch, groups, by_group, standing, sitting
    st.close()


def test_win_rates_and_wilson_intervals_match_hand_computed_values(voted):
    """edit: 7 wins of 10 decisive -> 0.7, Wilson 95% [0.3968, 0.8922]; schnell: 3 of 10 ->
    [0.1078, 0.6032]; both report 2 ties (ana's both bad, bo's both good), not in n."""
    st, batch, *_ = voted
    ids = _contender_ids(st, batch)
    board = leaderboard.leaderboard(st, batch_id=batch.id)
    assert (board.votes, board.raters, board.groups) == (12, 2, 10)
    edit, schnell = board.win_rates
    assert (edit.model, edit.wins, edit.losses, edit.ties, edit.n) == (ids[EDIT], 7, 3, 2, 10)
    assert edit.rate == pytest.approx(0.7)
    assert (edit.low, edit.high) == (pytest.approx(0.3968, abs=1e-4), pytest.approx(0.8922, abs=1e-4))
    assert (schnell.model, schnell.wins, schnell.n) == (ids[SCHNELL], 3, 10)
    assert (schnell.low, schnell.high) == (pytest.approx(0.1078, abs=1e-4), pytest.approx(0.6032, abs=1e-4))
    a, b = sorted((ids[EDIT], ids[SCHNELL]))
    assert board.pairwise == {(a, b): (7, 3, 2) if a == ids[EDIT] else (3, 7, 2)}
    assert board.ranking == [ids[EDIT], ids[SCHNELL]]
    assert [s.model for s in board.intervals] == [ids[EDIT], ids[SCHNELL]]


def test_breakdown_by_pose_shows_where_each_model_wins(voted):
    """Standing: edit 6 of 6 (ana 5 + bo 1) -> Wilson [0.6097, 1.0]; Sitting: edit 1 of 4 decisive
    -> [0.0456, 0.6994], ties 2."""
    st, batch, *_ = voted
    edit_id = _contender_ids(st, batch)[EDIT]
    pose = leaderboard.leaderboard(st, batch_id=batch.id).breakdowns["pose"]
    assert set(pose) == {"Standing", "Sitting"}
    standing = {r.model: r for r in pose["Standing"]}[edit_id]
    assert (standing.wins, standing.losses, standing.ties) == (6, 0, 0)
    assert (standing.low, standing.high) == (pytest.approx(0.6097, abs=1e-4), 1.0)
    sitting = {r.model: r for r in pose["Sitting"]}[edit_id]
    assert (sitting.wins, sitting.losses, sitting.ties) == (1, 3, 2)
    assert (sitting.low, sitting.high) == (pytest.approx(0.0456, abs=1e-4), pytest.approx(0.6994, abs=1e-4))
    assert "style" not in leaderboard.leaderboard(st, batch_id=batch.id).breakdowns


def test_agreement_between_raters_by_hand(voted):
    """Two groups rated by both: one unanimous (share 0.5). Fleiss: P = (1 + 0)/2 = 0.5,
    categories edit 2/4, schnell 1/4, both good 1/4 -> Pe = 0.375, kappa = 0.125/0.625 = 0.2.
    Cohen: po 0.5, pe = 0.5 x 0.5 (edit for both) = 0.25 -> 1/3."""
    st, batch, *_ = voted
    agreement = leaderboard.leaderboard(st, batch_id=batch.id).agreement
    assert (agreement["groups"], agreement["unanimous"]) == (2, 1)
    assert agreement["unanimous_share"] == pytest.approx(0.5)
    assert agreement["fleiss_kappa"] == pytest.approx(0.2)
    assert agreement["cohen_kappa"] == pytest.approx(1 / 3)


def test_cost_and_latency_per_model_by_hand(voted):
    """schnell: 10 images at $0.003 (1 MP); inference 1..10 s -> median 5.5, p90 9.1. Preferred
    outputs (judged good more often than not): schnell 3 (its three wins; bo's both good adds to
    one of them) -> $0.03 / 3 = $0.01 each. edit: $0.042 each (1 MP out + 1 MP reference); preferred 6
    (5 Standing + 1 Sitting win; the group with one loss and one both good is a tie, not preferred)
    -> $0.42 / 6 = $0.07."""
    st, batch, *_ = voted
    costs = {c.endpoint: c for c in oracles.model_costs(st, batch_id=batch.id)}
    schnell, edit = costs[SCHNELL], costs[EDIT]
    assert (schnell.requests, schnell.completed, schnell.failed, schnell.images) == (10, 10, 0, 10)
    assert schnell.inference_s["median"] == pytest.approx(5.5)
    assert schnell.inference_s["p90"] == pytest.approx(9.1)
    assert edit.inference_s["median"] == pytest.approx(14.5)
    assert schnell.cost == pytest.approx(0.03) and schnell.cost_per_image == pytest.approx(0.003)
    assert (schnell.reviewed_outputs, schnell.preferred_outputs) == (10, 3)
    assert schnell.cost_per_preferred_image == pytest.approx(0.01)
    assert edit.cost_per_image == pytest.approx(0.042)
    assert (edit.reviewed_outputs, edit.preferred_outputs) == (10, 6)
    assert edit.cost_per_preferred_image == pytest.approx(0.07)
    assert schnell.total_s["n"] == 10 and schnell.queue_s["n"] == 10


def test_no_votes_no_ranking_and_unreviewed_costs_stay_open(settings):
    settings.ensure_dirs()
    batch, _, _ = completed_batch()
    st = open_store(settings)
    board = leaderboard.leaderboard(st, batch_id=batch.id)
    assert board.votes == 0 and board.win_rates == () and board.strengths == {}
    cost = oracles.model_costs(st, batch_id=batch.id)[0]
    assert cost.preferred_outputs == 0 and cost.cost_per_preferred_image is None


def test_three_models_are_ranked_by_bradley_terry(settings):
    """A beats B and C, B beats C in every group: ranking A, B, C."""
    settings.ensure_dirs()
    batch, groups, _ = completed_batch(models=(SCHNELL, EDIT, THIRD), options={"subject": ["Woman", "Man"]},
                                       seeds=(1, 2))
    st = open_store(settings)
    order = [THIRD, SCHNELL, EDIT]
    for item in review.review_items(st, batch.id, "ana"):
        best = min((item.left.endpoint, item.right.endpoint), key=order.index)
        review.record_item_vote(st, item, rater="ana", verdict=_vote_for(item, best))
    board = leaderboard.leaderboard(st, batch_id=batch.id)
    ids = _contender_ids(st, batch)
    assert board.votes == 12 and board.ranking == [ids[m] for m in order]
    assert [r.model for r in board.win_rates] == [ids[m] for m in order]
    assert len(board.pairwise) == 3


def test_fidelity_per_model_counts_measured_and_pending(voted, settings):
    st, batch, *_ = voted
    before = {f.endpoint: f for f in oracles.fidelity_by_model(st, batch_id=batch.id)}
    assert before[SCHNELL].pending == 10 and before[SCHNELL].measured == 0
    fidelity.compute_pending(st, open_storage(settings), batch_id=batch.id)
    after = {f.endpoint: f for f in oracles.fidelity_by_model(st, batch_id=batch.id)}
    assert after[EDIT].measured == 10 and after[EDIT].pending == 0 and after[EDIT].errors == 0
    # the reference is a plain red square: no face to compare, recorded as such
    assert after[EDIT].faces_compared == 0
    assert after[EDIT].phash_distance["n"] == 10 and after[EDIT].ssim["n"] == 10
    assert after[SCHNELL].ssim["n"] == 0, "SSIM only for edit outputs (same framing)"
    frame = oracles.metrics_frame(st, batch_id=batch.id)
    assert len(frame) == 20 and set(frame["face_status"]) == {"no_face_reference"}


def _read(text: str) -> list[dict[str, str]]:
    assert text.startswith("\ufeff")
    return list(csv.DictReader(io.StringIO(text[1:])))


def test_comparison_csv_has_one_row_per_group_with_each_models_hash_image_metrics_and_votes(voted, settings):
    st, batch, groups, by_group, standing, sitting = voted
    fidelity.compute_pending(st, open_storage(settings), batch_id=batch.id)
    text = comparison.to_csv_bytes(st, batch_id=batch.id).decode("utf-8")
    rows = _read(text)
    header = next(csv.reader(io.StringIO(text[1:])))
    assert header == comparison.columns(["flux_schnell", "flux-2_lora_edit"])
    assert header[:8] == ["group_id", "batch_id", "batch_name", "prompt", "seed", "image_size",
                          "reference_ids", "subject"]
    assert {"flux_schnell_payload_hash", "flux-2_lora_edit_face_distance", "flux-2_lora_edit_ssim",
            "flux_schnell_image_url", "vote_detail"} <= set(header)
    assert [r["group_id"] for r in rows] == [g.id for g in groups]

    row = next(r for r in rows if r["group_id"] == standing[0].id)
    assert row["pose"] == "Standing" and row["batch_name"] == "decide"
    assert row["flux_schnell_payload_hash"] == by_group[standing[0].id][SCHNELL].payload_hash
    assert row["flux-2_lora_edit_request_id"] == by_group[standing[0].id][EDIT].id
    assert row["flux_schnell_image_url"].startswith("https://v3.fal.media/files/")
    assert row["flux-2_lora_edit_face_status"] == "no_face_reference"
    assert row["flux-2_lora_edit_ssim"] != "" and row["flux_schnell_ssim"] == ""
    assert row["flux_schnell_phash_distance"].isdigit()
    assert (row["votes"], row["raters"], row["flux-2_lora_edit_wins"], row["flux_schnell_losses"]) == ("2", "2", "2", "2")
    assert row["vote_detail"] == f"ana: {EDIT}; bo: {EDIT}"

    tie = next(r for r in rows if r["group_id"] == sitting[4].id)
    assert (tie["both_bad"], tie["flux_schnell_wins"], tie["flux-2_lora_edit_wins"]) == ("1", "0", "0")
    assert tie["vote_detail"] == "ana: both bad (=HYPERLINK(\"http://x\"))"


def test_comparison_csv_is_spreadsheet_safe(settings):
    """Text a spreadsheet would run as a formula (batch name, rater) starts with ' as in the
    history export; numbers, including negative ones, stay numbers."""
    settings.ensure_dirs()
    batch, _, _ = completed_batch("=2+3", options={"subject": ["Woman"]})
    st = open_store(settings)
    item = review.review_items(st, batch.id, "@evil")[0]
    review.record_item_vote(st, item, rater="@evil", verdict="both_good")
    row = _read(comparison.to_csv_bytes(st, batch_id=batch.id).decode("utf-8"))[0]
    assert row["batch_name"] == "'=2+3"
    assert row["vote_detail"] == "'@evil: both good"
    assert comparison._cell(-0.5) == -0.5 and comparison._cell(None) == ""


def test_comparison_command_measures_pending_first_so_the_file_is_complete(voted, tmp_path):
    st, batch, *_ = voted
    out = tmp_path / "cmp.csv"
    done = subprocess.run([sys.executable, "-m", "core", "export", "--comparison", "--batch", batch.id,
                           "--out", str(out)], cwd=REPO_ROOT, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert "measuring 20 image(s) first" in done.stdout
    assert f"wrote 10 groups x 2 contenders to {out}" in done.stdout
    rows = _read(out.read_text(encoding="utf-8"))
    assert len(rows) == 10
    assert all(r["flux_schnell_face_status"] and r["flux-2_lora_edit_phash_distance"] for r in rows)
    assert open_store(load_settings()).pending_count(batch_id=batch.id) == 0

    mixed = subprocess.run([sys.executable, "-m", "core", "export", "--comparison", "--status", "failed",
                            "--out", str(out)], cwd=REPO_ROOT, capture_output=True, text=True, timeout=120)
    assert mixed.returncode == 2 and "only --batch applies" in mixed.stderr


def test_export_of_every_batch_unions_the_models(settings):
    settings.ensure_dirs()
    completed_batch("one", models=(SCHNELL,), options={"subject": ["Woman"]})
    completed_batch("two", models=(SCHNELL, EDIT), options={"subject": ["Man"]})
    st = open_store(settings)
    rows = _read(comparison.to_csv_bytes(st).decode("utf-8"))
    assert [r["batch_name"] for r in rows] == ["one", "two"]
    assert rows[0]["flux-2_lora_edit_request_id"] == "" and rows[1]["flux-2_lora_edit_request_id"]
    assert st.get_groups(rows[0]["batch_id"])[0].id == rows[0]["group_id"]


def test_data_version_changes_with_votes_and_metrics_so_cached_pages_refresh(voted):
    """The Leaderboard caches its aggregates by this stamp: a new vote or a measured image must
    change it, or the page would show stale figures."""
    st, batch, groups, _by_group, _standing, _sitting = voted
    before = tally.data_version(st, batch_id=batch.id)
    assert tally.data_version(st, batch_id=batch.id) == before
    item = review.review_items(st, batch.id, "cy")[0]
    review.record_item_vote(st, item, rater="cy", verdict="left")
    after_vote = tally.data_version(st, batch_id=batch.id)
    assert after_vote != before
    st.db.execute("UPDATE result_images SET metrics_at = '2999-01-01T00:00:00+00:00' WHERE rowid = "
               "(SELECT min(rowid) FROM result_images)")
    assert tally.data_version(st, batch_id=batch.id) != after_vote


def _same_figures(st, batch_id):
    got = tally.figures(st, batch_id=batch_id)
    assert got.selection == leaderboard.selection_contenders(st, batch_id=batch_id)
    assert got.board == leaderboard.leaderboard(st, batch_id=batch_id)
    assert got.axes == oracles.axis_summary(st, batch_id=batch_id)
    assert got.fidelity == oracles.fidelity_by_model(st, batch_id=batch_id)
    assert got.costs == oracles.model_costs(st, batch_id=batch_id)
    if batch_id is not None:  # over every batch: the distributions alone (tests/evaluation/test_every_batch.py)
        assert got.metrics.equals(oracles.metrics_frame(st, batch_id=batch_id))
    return got


def test_the_pages_figures_read_once_are_each_functions_own(voted):
    """The Leaderboard shows `figures` (votes, requests and metrics read once): every part must be
    what its own function says, for the batch and for every batch, and follow a new vote."""
    st, batch, groups, _by_group, _standing, _sitting = voted
    completed_batch("another", seeds=(7,))
    first = _same_figures(st, batch.id)
    _same_figures(st, None)
    item = review.review_items(st, batch.id, "cy")[0]
    review.record_item_vote(st, item, rater="cy", verdict="both_good")
    after = _same_figures(st, batch.id)
    assert after.board.votes == first.board.votes + 1
    assert sum(c.reviewed_outputs for c in after.costs) >= sum(c.reviewed_outputs for c in first.costs)


def test_a_sweeps_figures_read_once_are_each_functions_own(settings):
    from tests.review_support import completed_sweep_batch

    batch, _groups, _ = completed_sweep_batch()
    st = open_store(settings)
    try:
        for n, item in enumerate(review.review_items(st, batch.id, "ana")):
            review.record_item_vote(st, item, rater="ana", verdict=review.VERDICTS[n % 4])
        got = _same_figures(st, batch.id)
        assert got.axes and got.board.intervals
    finally:
        st.close()
