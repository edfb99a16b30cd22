"""Review and Leaderboard pages with a sweep batch (five contenders: schnell, and the edit model
at 7 / 28 steps with and without a LoRA): votes are revealed with contender labels, and the
leaderboard shows strengths with intervals and what each swept setting buys."""
from __future__ import annotations

from core.evaluation import review
from tests.apptest_support import assert_ok, open_page, new_store, texts
from tests.review_support import completed_sweep_batch


def test_review_reveals_the_contenders_settings_after_a_vote():
    batch, groups, _ = completed_sweep_batch()
    at = open_page("review.py", user="ana")
    assert [p.proto.text for p in at.get("progress")] == ["0 of 20 reviewed by ana"], \
        "5 contenders: 10 pairs per group"
    at.button(key="rev_left").click().run()
    assert_ok(at)
    revealed = " ".join(texts(at.success))
    assert "Left was **" in revealed and ("steps" in revealed or "schnell" in revealed)
    (vote,) = new_store().list_votes(batch_id=batch.id)
    assert vote.left_contender != vote.right_contender


def test_leaderboard_shows_strengths_and_what_each_setting_buys():
    batch, groups, _ = completed_sweep_batch()
    store = new_store()
    for item in review.review_items(store, batch.id, "ana"):
        # more steps wins; otherwise a tie
        steps = [side.request.payload["num_inference_steps"] for side in (item.left, item.right)]
        verdict = "both_good" if steps[0] == steps[1] else ("left" if steps[0] > steps[1] else "right")
        review.record_item_vote(store, item, rater="ana", verdict=verdict)
    at = open_page("leaderboard.py")
    assert_ok(at)
    frames = {tuple(d.value.columns): d.value for d in at.dataframe}
    strengths = next(f for cols, f in frames.items() if "rank" in cols)
    assert len(strengths) == 5 and all("–" in v for v in strengths["95% interval"])
    assert strengths["contender"].iloc[0].startswith("FLUX.2 [dev] LoRA edit · 28 steps")
    assert "**7 vs 28 steps**" in texts(at.markdown)
    axes = next(f for cols, f in frames.items() if "setting" in cols)
    assert set(axes["setting"]) == {"7 vs 28 steps", "with vs without the LoRA (studio-style 0.8)"}
    row = axes[(axes["setting"] == "7 vs 28 steps") & (axes["value"] == "28 steps")].iloc[0]
    assert row["win rate"] == 1.0 and row["images"] == 4
    costs = next(f for cols, f in frames.items() if "per preferred image" in cols)
    assert len(costs) == 5 and "FLUX.2 [dev] LoRA edit · 7 steps · studio-style 0.8" in set(costs["model"])
