"""Comparing contenders (a model at its settings) through the real store: review pair choice with
five contenders, the leaderboard's strengths and swept-axis breakdown, and the X/Y grid with its
PNG (core/evaluation/review.py, leaderboard.py, grid.py, core/export/comparison.py)."""
from __future__ import annotations

import io

import pytest
from PIL import Image

from core.config import load_settings
from core.evaluation import grid, leaderboard, review
from core.export import comparison
from core.store import open_store
from core.blobs import open_storage
from tests.evaluation import _oracles as oracles
from tests.review_support import completed_batch, completed_sweep_batch


@pytest.fixture
def sweep(settings):
    settings.ensure_dirs()
    batch, groups, by_group = completed_sweep_batch()
    st = open_store(settings)
    yield st, batch, groups, by_group
    st.close()


def _labels(st, batch):
    return leaderboard.selection_contenders(st, batch_id=batch.id).labels


def _vote_for(item, better: str) -> str:
    return "left" if item.left.contender_id == better else "right"


def test_five_contenders_make_ten_blind_pairs_per_group_and_a_rater_never_gets_one_twice(sweep):
    st, batch, groups, by_group = sweep
    q = review.queue(st, batch.id, "ana")
    assert q.total == 2 * 10 and q.reviewed == 0
    seen = set()
    for n in range(10):
        item = review.queue(st, batch.id, "ana").next
        assert item.group.id == groups[0].id, "one group at a time, in planning order"
        pair = frozenset((item.left.contender_id, item.right.contender_id))
        assert pair not in seen, f"pair shown twice after {n} votes"
        seen.add(pair)
        review.record_item_vote(st, item, rater="ana", verdict="both_good")
    assert len(seen) == 10
    after = review.queue(st, batch.id, "ana")
    assert after.reviewed == 10 and after.next.group.id == groups[1].id
    assert len(review.queue(st, batch.id, "ana", include_reviewed=True).items) == 20


def test_the_next_pair_is_the_least_certain_one_given_every_vote_so_far(sweep):
    """bo rated every pair of the second group in one consistent order: the best against the
    worst is settled, so ana's first pair in the first group is two neighbours in that order."""
    st, batch, groups, by_group = sweep
    order = list(by_group[groups[1].id])  # contender ids in planning order: that is the true order
    for item in review.review_items(st, batch.id, "bo"):
        if item.group.id == groups[1].id:
            a, b = item.left.contender_id, item.right.contender_id
            review.record_item_vote(st, item, rater="bo", verdict=_vote_for(item, min((a, b), key=order.index)))
    first = review.queue(st, batch.id, "ana").next
    i, j = order.index(first.left.contender_id), order.index(first.right.contender_id)
    assert abs(i - j) == 1, f"{first.key}: positions {i} and {j} in the known order"
    # bo has judged group 2 entirely and group 1 not at all
    assert review.queue(st, batch.id, "bo").next.group.id == groups[0].id


def test_a_vote_between_two_settings_of_one_model_is_kept_apart_by_contender(sweep):
    st, batch, groups, by_group = sweep
    labels = _labels(st, batch)
    item = next(i for i in review.review_items(st, batch.id, "ana")
                if i.left.endpoint == i.right.endpoint)
    vote = review.record_item_vote(st, item, rater="ana", verdict="left")
    assert vote.winner_contender == item.left.contender_id != item.right.contender_id
    (stat,) = review.stats_votes(st, batch_id=batch.id)
    assert stat.winner == item.left.contender_id
    assert labels[stat.winner] != labels[stat.model_b]


def test_leaderboard_reads_what_each_swept_setting_buys(sweep):
    """28 steps beats 7 steps in every vote that differs in steps alone, the LoRA loses every vote
    that differs in the LoRA alone; votes that differ in both count for neither axis."""
    st, batch, groups, by_group = sweep
    labels = _labels(st, batch)
    for item in review.review_items(st, batch.id, "ana"):
        a, b = (labels[item.left.contender_id], labels[item.right.contender_id])
        score = {x: ("28 steps" in x) * 2 - ("studio-style" in x) - ("schnell" in x) * 5 for x in (a, b)}
        if score[a] == score[b]:
            verdict = "both_good"
        else:
            verdict = "left" if score[a] > score[b] else "right"
        review.record_item_vote(st, item, rater="ana", verdict=verdict)
    board = leaderboard.leaderboard(st, batch_id=batch.id)
    assert set(board.axes) == {"7 vs 28 steps", "with vs without the LoRA (studio-style 0.8)"}
    steps = {r.model: r for r in board.axes["7 vs 28 steps"]}
    # per group: 2 pairs differ in steps alone (with and without the LoRA) -> 4 votes
    assert (steps["28 steps"].wins, steps["28 steps"].losses) == (4, 0)
    lora = {r.model: r for r in board.axes["with vs without the LoRA (studio-style 0.8)"]}
    assert (lora["no LoRA"].wins, lora["studio-style 0.8"].wins) == (4, 0)
    best = labels[board.intervals[0].model]
    assert best == "FLUX.2 [dev] LoRA edit · 28 steps · no LoRA"
    assert all(s.low <= s.strength <= s.high for s in board.intervals)
    assert labels[board.ranking[-1]] == "FLUX.1 [schnell]"

    summary = {(a.axis, a.value): a for a in oracles.axis_summary(st, batch_id=batch.id)}
    assert set(summary) == {("7 vs 28 steps", "7 steps"), ("7 vs 28 steps", "28 steps"),
                            ("with vs without the LoRA (studio-style 0.8)", "no LoRA"),
                            ("with vs without the LoRA (studio-style 0.8)", "studio-style 0.8")}
    seven = summary[("7 vs 28 steps", "7 steps")]
    assert (seven.contenders, seven.requests, seven.completed, seven.images) == (2, 4, 4, 4)
    assert seven.cost_per_image is not None and seven.inference_median_s is not None
    assert summary[("7 vs 28 steps", "28 steps")].win_rate.rate == 1.0


def test_a_plain_two_model_batch_reads_as_before(settings):
    settings.ensure_dirs()
    batch, _, _ = completed_batch()
    st = open_store(settings)
    selection = leaderboard.selection_contenders(st, batch_id=batch.id)
    assert list(selection.labels.values()) == ["FLUX.1 [schnell]", "FLUX.2 [dev] LoRA edit"]
    assert selection.axes == () and oracles.axis_summary(st, batch_id=batch.id) == []
    assert [c.label for c in oracles.model_costs(st, batch_id=batch.id)] == list(selection.labels.values())
    assert comparison.contender_prefixes(selection) == {
        c.id: p for c, p in zip(selection.items, ("flux_schnell", "flux-2_lora_edit"))}
    st.close()


def test_grid_puts_steps_against_the_lora_set_and_holds_the_rest(sweep):
    st, batch, groups, by_group = sweep
    outputs = grid.batch_outputs(st, batch.id)
    assert len(outputs) == 10
    dims = {d.key: d for d in grid.dimensions(outputs)}
    assert list(dims) == ["contender", "model", "param:num_inference_steps", "param:loras", "option:pose"]
    assert dims["param:num_inference_steps"].values == ("7 steps", "28 steps")
    shown = grid.build(outputs, "param:num_inference_steps", "param:loras")
    assert shown.fixed == {"model": "FLUX.2 [dev] LoRA edit", "option:pose": "Standing"}
    assert shown.y.values == ("no LoRA", "studio-style 0.8")
    cells = [[c.output.label for c in row] for row in shown.rows]
    assert cells == [["FLUX.2 [dev] LoRA edit · 7 steps · no LoRA", "FLUX.2 [dev] LoRA edit · 28 steps · no LoRA"],
                     ["FLUX.2 [dev] LoRA edit · 7 steps · studio-style 0.8",
                      "FLUX.2 [dev] LoRA edit · 28 steps · studio-style 0.8"]]
    assert all(c.output.group.id == groups[0].id for row in shown.rows for c in row)
    walking = grid.build(outputs, "contender", None, {"option:pose": "Walking"})
    assert len(walking.rows[0]) == 5 and {c.output.group.id for c in walking.rows[0]} == {groups[1].id}
    with pytest.raises(ValueError, match="does not vary"):
        grid.build(outputs, "seed")


def test_grid_png_has_one_cell_per_output_its_legend_and_the_reference(sweep):
    st, batch, *_ = sweep
    storage = open_storage(load_settings())
    shown = grid.build(grid.batch_outputs(st, batch.id), "param:num_inference_steps", "param:loras")
    reference = storage.get(st.get_reference(shown.reference_ids[0]).storage_path)
    data = grid.render_png(shown, lambda o: storage.get(o.image.storage_path), reference=reference, cell=100)
    img = Image.open(io.BytesIO(data))
    assert img.format == "PNG"
    # reference column + Y legend + 2 columns of 100 px; title and X legend above 2 rows
    assert img.width > 3 * 100 and img.height == 62 + 2 * 108 + 8
    x_legend = img.crop((img.width - 2 * 108, 34, img.width, 60)).convert("L")
    assert x_legend.getextrema()[0] < 100, "the X legend is drawn in"
    cell = img.getpixel((img.width - 108 - 8 + 50 - 108, 62 + 50))
    assert cell != (255, 255, 255) and cell != (244, 244, 244), "an output fills its cell"
    assert img.getpixel((8 + 50, 62 + 50))[0] > 200, "the red reference is beside the grid"
