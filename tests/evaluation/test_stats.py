"""Vote statistics against numbers worked out by hand (the arithmetic is written beside each).

Wilson interval, z = 1.96 (z^2 = 3.8415): centre = (p + z^2/2n) / (1 + z^2/n),
half width = z / (1 + z^2/n) * sqrt(p(1-p)/n + z^2/4n^2).
"""
from __future__ import annotations

import math

import pytest

from core.evaluation import stats
from core.evaluation.stats import Vote

FLUX2 = "fal-ai/flux-2/lora/edit"
SCHNELL = "fal-ai/flux/schnell"


def _votes(a: str, b: str, a_wins: int, b_wins: int, good: int = 0, bad: int = 0,
           factors: dict | None = None, group: str = "g") -> list[Vote]:
    out = []
    for i in range(a_wins):
        out.append(Vote(f"{group}-a{i}", "r", a, b, a, None, factors or {}))
    for i in range(b_wins):
        out.append(Vote(f"{group}-b{i}", "r", b, a, b, None, factors or {}))  # sides swapped: order is free
    for i in range(good):
        out.append(Vote(f"{group}-g{i}", "r", a, b, None, "both_good", factors or {}))
    for i in range(bad):
        out.append(Vote(f"{group}-x{i}", "r", a, b, None, "both_bad", factors or {}))
    return out


@pytest.mark.parametrize("successes, n, low, high", [
    (7, 10, 0.3968, 0.8922),   # p=.7: centre (.7+.19207)/1.38415=.64456, half 1.96*.17494/1.38415=.24772
    (3, 10, 0.1078, 0.6032),   # mirror image of 7/10
    (5, 10, 0.2366, 0.7634),   # centre .5, half 1.96*sqrt(.025+.009604)/1.38415=.26340
    (0, 10, 0.0, 0.2775),      # centre = half = .19207/1.38415=.13877 -> [0, .27754]
    (10, 10, 0.7225, 1.0),
    (1, 1, 0.2065, 1.0),       # centre (1+1.92075)/4.84150=.60327, half 1.96*.98/4.84150=.39673 -> .20655
])
def test_wilson_interval_matches_hand_computation(successes, n, low, high):
    got = stats.wilson_interval(successes, n)
    assert got == pytest.approx((low, high), abs=5e-5)


def test_wilson_interval_edges():
    assert stats.wilson_interval(0, 0) == (0.0, 1.0), "no data: the whole range, not a crash"
    narrower = stats.wilson_interval(7, 10, z=1.0)
    wider = stats.wilson_interval(7, 10)
    assert wider[0] < narrower[0] < narrower[1] < wider[1]
    for bad in ((11, 10), (-1, 10), (0, -1)):
        with pytest.raises(ValueError):
            stats.wilson_interval(*bad)


def test_win_rates_exclude_ties_from_n_and_report_them():
    """7 wins, 3 losses, 1 both_good, 1 both_bad: rate 7/10 (ties beside it), Wilson [.3968, .8922]."""
    rows = stats.win_rates(_votes(FLUX2, SCHNELL, 7, 3, good=1, bad=1))
    assert [r.model for r in rows] == [FLUX2, SCHNELL], "best rate first"
    best, worst = rows
    assert (best.wins, best.losses, best.ties, best.n) == (7, 3, 2, 10)
    assert best.rate == pytest.approx(0.7)
    assert (best.low, best.high) == pytest.approx((0.3968, 0.8922), abs=5e-5)
    assert (worst.wins, worst.losses, worst.ties, worst.n) == (3, 7, 2, 10)
    assert worst.rate == pytest.approx(0.3)
    assert (worst.low, worst.high) == pytest.approx((0.1078, 0.6032), abs=5e-5)


def test_model_with_only_ties_has_no_rate_and_the_full_interval():
    rows = stats.win_rates(_votes("a", "b", 0, 0, good=2))
    assert all(r.n == 0 and r.ties == 2 and math.isnan(r.rate) for r in rows)
    assert all((r.low, r.high) == (0.0, 1.0) for r in rows)
    assert stats.win_rates([]) == []


def test_pairwise_counts_key_pairs_alphabetically_whatever_the_side():
    votes = _votes("b", "a", 2, 3, good=1) + _votes("a", "c", 4, 0, group="h")
    assert stats.pairwise_counts(votes) == {("a", "b"): (3, 2, 1), ("a", "c"): (4, 0, 0)}


def test_bradley_terry_two_models_equals_win_share_with_ties_as_halves():
    """Two models: s_a/(s_a+s_b) = (7 + 2*0.5) / 12 = .6667 (pure ML); prior 1 adds a tie: 8.5/13."""
    votes = _votes(FLUX2, SCHNELL, 7, 3, good=1, bad=1)
    plain = stats.bradley_terry(votes, prior=0)
    assert list(plain) == [FLUX2, SCHNELL]
    assert plain[FLUX2] == pytest.approx(8 / 12, abs=1e-9)
    assert plain[SCHNELL] == pytest.approx(4 / 12, abs=1e-9)
    shrunk = stats.bradley_terry(votes)
    assert shrunk[FLUX2] == pytest.approx(8.5 / 13, abs=1e-9)
    assert sum(shrunk.values()) == pytest.approx(1.0)


def test_bradley_terry_three_models_recovers_known_strengths():
    """Counts chosen so the ML fit is exactly 4:2:1 -> (4/7, 2/7, 1/7).

    Check of the score equations W_i = sum_j n_ij s_i/(s_i+s_j): A: 2+4 = 3*(4/6) + 5*(4/5) = 6;
    B: 1+2 = 3*(2/6) + 3*(2/3) = 3; C: 1+1 = 3*(1/3) + 5*(1/5) = 2.
    """
    votes = (_votes("A", "B", 2, 1, group="ab") + _votes("B", "C", 2, 1, group="bc")
             + _votes("A", "C", 4, 1, group="ac"))
    fit = stats.bradley_terry(votes, prior=0)
    assert list(fit) == ["A", "B", "C"]
    assert [fit[m] for m in "ABC"] == pytest.approx([4 / 7, 2 / 7, 1 / 7], abs=1e-8)


def test_bradley_terry_orders_a_clear_fixture_and_survives_a_sweep():
    """A beats everyone, B beats C; a 10-0 sweep stays finite with the default prior."""
    votes = (_votes("A", "B", 8, 2, group="ab") + _votes("B", "C", 8, 2, group="bc")
             + _votes("A", "C", 10, 0, group="ac"))
    fit = stats.bradley_terry(votes)
    assert list(fit) == ["A", "B", "C"]
    assert all(s > 0 for s in fit.values())
    assert fit["A"] > fit["B"] > fit["C"]
    assert stats.bradley_terry([]) == {}
    with pytest.raises(ValueError):
        stats.bradley_terry(votes, prior=-1)


def test_bradley_terry_does_not_depend_on_vote_order():
    votes = _votes("A", "B", 6, 4, good=2) + _votes("B", "C", 5, 1, group="bc")
    assert stats.bradley_terry(votes) == pytest.approx(stats.bradley_terry(list(reversed(votes))))


def test_elo_by_hand():
    """k=16: A beats B from 1000/1000 -> 1008/992; then B beats A: E_B = 1/(1+10^(16/400)) = .47699,
    B gains 16*(1-.47699) = 8.3682 -> B 1000.3682, A 999.6318."""
    votes = [Vote("g1", "r", "A", "B", "A"), Vote("g2", "r", "A", "B", "B")]
    first = stats.elo(votes[:1])
    assert first == {"A": 1008.0, "B": 992.0}
    both = stats.elo(votes)
    assert list(both) == ["B", "A"]
    assert both["B"] == pytest.approx(1000.3682, abs=1e-4)
    assert both["A"] == pytest.approx(999.6318, abs=1e-4)
    tie = stats.elo([Vote("g", "r", "A", "B", None, "both_bad")], base=1500)
    assert tie == {"A": 1500.0, "B": 1500.0}


def test_breakdown_per_factor_value():
    """Win rates split by pose: flux-2 wins 3/4 standing, 1/4 sitting; votes without pose under UNSET."""
    votes = (_votes(FLUX2, SCHNELL, 3, 1, factors={"pose": "standing"}, group="s")
             + _votes(FLUX2, SCHNELL, 1, 3, factors={"pose": "sitting"}, group="t")
             + _votes(FLUX2, SCHNELL, 1, 0, group="u"))
    by_pose = stats.breakdown(votes, "pose")
    assert list(by_pose) == [stats.UNSET, "sitting", "standing"]
    standing = {r.model: r for r in by_pose["standing"]}
    sitting = {r.model: r for r in by_pose["sitting"]}
    assert (standing[FLUX2].wins, standing[FLUX2].n) == (3, 4)
    assert (sitting[FLUX2].wins, sitting[FLUX2].n) == (1, 4)
    assert by_pose[stats.UNSET][0].wins == 1


def test_agreement_fleiss_by_hand():
    """Three raters on three groups (a fourth group has one rater and is left out):
    g1 A,A,A  g2 A,B,A  g3 good,good,bad.
    P_i = (sum n_ij^2 - 3)/6: 1, 1/3, 1/3 -> mean 5/9. Marginals A 5/9, B 1/9, good 2/9, bad 1/9:
    P_e = 31/81. kappa = (45/81 - 31/81)/(50/81) = 0.28. Unanimous 1 of 3."""
    def v(group, rater, verdict):
        if verdict in ("both_good", "both_bad"):
            return Vote(group, rater, "A", "B", None, verdict)
        return Vote(group, rater, "B", "A", verdict)

    votes = [v("g1", "r1", "A"), v("g1", "r2", "A"), v("g1", "r3", "A"),
             v("g2", "r1", "A"), v("g2", "r2", "B"), v("g2", "r3", "A"),
             v("g3", "r1", "both_good"), v("g3", "r2", "both_good"), v("g3", "r3", "both_bad"),
             v("g4", "r1", "A")]
    result = stats.agreement(votes)
    assert result["groups"] == 3 and result["ratings"] == 9 and result["raters"] == 3
    assert result["unanimous"] == 1
    assert result["unanimous_share"] == pytest.approx(1 / 3)
    assert result["fleiss_kappa"] == pytest.approx(0.28)
    assert result["cohen_kappa"] is None, "three raters: no Cohen's kappa"


def test_agreement_two_raters_cohen_and_fleiss_by_hand():
    """r1, r2 on four groups: (A,A) (A,B) (B,B) (good,good). p_o = 3/4.
    Cohen: r1 A2 B1 good1, r2 A1 B2 good1 -> p_e = (2+2+1)/16 = 5/16, kappa = .4375/.6875 = .63636.
    Fleiss: P-bar = 3/4, marginals A 3/8 B 3/8 good 2/8 -> P_e = 22/64, kappa = .40625/.65625 = .61905.
    r1 changed their mind on g2 (B then A): the last vote counts."""
    def win(group, rater, winner):
        return Vote(group, rater, "A", "B", winner)

    votes = [win("g1", "r1", "A"), win("g1", "r2", "A"),
             win("g2", "r1", "B"), win("g2", "r1", "A"), win("g2", "r2", "B"),
             win("g3", "r1", "B"), win("g3", "r2", "B"),
             Vote("g4", "r1", "A", "B", None, "both_good"), Vote("g4", "r2", "B", "A", None, "both_good")]
    result = stats.agreement(votes)
    assert result["groups"] == 4 and result["ratings"] == 8
    assert result["unanimous_share"] == pytest.approx(0.75)
    assert result["cohen_kappa"] == pytest.approx(0.4375 / 0.6875)
    assert result["fleiss_kappa"] == pytest.approx(0.40625 / 0.65625)


def test_agreement_when_undefined():
    """No group with two raters -> nothing to compute; everyone always agreeing on one category
    makes kappa 0/0 -> None, while the unanimous share still says 1.0."""
    empty = stats.agreement([Vote("g", "r1", "A", "B", "A")])
    assert empty["groups"] == 0 and empty["fleiss_kappa"] is None and empty["unanimous_share"] is None
    same = stats.agreement([Vote(g, r, "A", "B", "A") for g in ("g1", "g2") for r in ("r1", "r2")])
    assert same["unanimous_share"] == 1.0
    assert same["fleiss_kappa"] is None and same["cohen_kappa"] is None


def test_vote_from_verdict_unblinds_left_and_right():
    left = stats.vote_from_verdict("g", "ann", SCHNELL, FLUX2, "left", {"pose": "sitting"})
    right = stats.vote_from_verdict("g", "ann", SCHNELL, FLUX2, "right")
    tie = stats.vote_from_verdict("g", "ann", SCHNELL, FLUX2, "both_bad")
    assert (left.winner, left.tie_kind, left.factors) == (SCHNELL, None, {"pose": "sitting"})
    assert (right.winner, right.verdict) == (FLUX2, FLUX2)
    assert (tie.winner, tie.tie_kind, tie.verdict) == (None, "both_bad", "both_bad")
    with pytest.raises(ValueError, match="verdict"):
        stats.vote_from_verdict("g", "ann", SCHNELL, FLUX2, "middle")


@pytest.mark.parametrize("kwargs", [
    dict(model_a="A", model_b="A", winner="A"),
    dict(model_a="A", model_b="B", winner="C"),
    dict(model_a="A", model_b="B", winner=None),
    dict(model_a="A", model_b="B", winner=None, tie_kind="meh"),
    dict(model_a="A", model_b="B", winner="A", tie_kind="both_good"),
])
def test_malformed_votes_are_refused(kwargs):
    with pytest.raises(ValueError):
        Vote("g", "r", **kwargs)


def test_votes_are_hashable_and_keep_their_own_factors():
    factors = {"pose": "standing"}
    vote = Vote("g", "r", "A", "B", "A", None, factors)
    factors["pose"] = "sitting"
    assert vote.factors == {"pose": "standing"}
    assert len({vote, Vote("g", "r", "A", "B", "A", None, {"pose": "standing"})}) == 1


def test_summarise_by_hand():
    """[1, 2, 3, 4, 10]: median 3, mean 4, p90 at position 3.6 -> 4 + .6*(10-4) = 7.6; None/NaN skipped."""
    assert stats.summarise([10, None, 2, 3, float("nan"), 1, 4]) == {
        "n": 5, "median": 3.0, "p90": pytest.approx(7.6), "mean": 4.0}
    assert stats.summarise([]) == {"n": 0, "median": None, "p90": None, "mean": None}
    assert stats.summarise([2.5]) == {"n": 1, "median": 2.5, "p90": 2.5, "mean": 2.5}


# ---------------------------------------------------------------------------- strengths with intervals


def _world(n: int, seed: int = 1, strengths=(1.0, 2.0, 4.0)) -> list[Vote]:
    """`n` votes drawn from known Bradley-Terry strengths, one vote per group."""
    import random

    rng = random.Random(seed)
    names = [f"m{i}" for i in range(len(strengths))]
    out = []
    for g in range(n):
        i, j = rng.sample(range(len(names)), 2)
        p = strengths[i] / (strengths[i] + strengths[j])
        out.append(Vote(f"g{g}", "r", names[i], names[j], names[i] if rng.random() < p else names[j]))
    return out


def test_strength_intervals_cover_the_truth_about_as_often_as_they_claim():
    """Over 40 simulated worlds of 300 votes the 95 % intervals hold the true strength in at least
    85 % of them, for every model, and they shrink as votes accumulate."""
    truth = {"m0": 1 / 7, "m1": 2 / 7, "m2": 4 / 7}
    covered = {m: 0 for m in truth}
    for world in range(40):
        for s in stats.bradley_terry_intervals(_world(300, seed=world), resamples=100, seed=world):
            covered[s.model] += s.low <= truth[s.model] <= s.high
            assert s.low <= s.strength <= s.high
    assert all(c >= 34 for c in covered.values()), covered
    few = {s.model: s for s in stats.bradley_terry_intervals(_world(60))}
    many = {s.model: s for s in stats.bradley_terry_intervals(_world(3000))}
    assert list(many) == ["m2", "m1", "m0"]
    for m in truth:
        assert (many[m].high - many[m].low) < (few[m].high - few[m].low) / 3
    # with thousands of votes the order is settled in every resample; with 60 it is not
    assert [(many[m].rank_low, many[m].rank_high) for m in ("m2", "m1", "m0")] == [(1, 1), (2, 2), (3, 3)]
    assert few["m1"].rank_high - few["m1"].rank_low >= 1
    assert many["m2"].votes == sum(1 for v in _world(3000) if "m2" in (v.model_a, v.model_b))


def test_strength_point_estimate_is_the_plain_fit_and_intervals_are_seeded():
    votes = _votes("A", "B", 6, 4, good=2) + _votes("B", "C", 5, 1, group="bc")
    rows = stats.bradley_terry_intervals(votes, resamples=50, seed=3)
    assert {r.model: r.strength for r in rows} == pytest.approx(stats.bradley_terry(votes), abs=1e-7)
    assert rows == stats.bradley_terry_intervals(list(reversed(votes)), resamples=50, seed=3)
    assert rows != stats.bradley_terry_intervals(votes, resamples=50, seed=4)
    assert stats.bradley_terry_intervals([]) == ()
    for bad in ({"resamples": 0}, {"level": 1.0}, {"by": "rater"}):
        with pytest.raises(ValueError):
            stats.bradley_terry_intervals(votes, **bad)


def test_group_bootstrap_keeps_a_groups_votes_together():
    """Ten raters who agree on each of 4 groups are 4 observations, not 40: resampling groups
    gives a wider interval than resampling single votes."""
    votes = []
    for g, winner in enumerate("AABA"):
        for r in range(10):
            votes.append(Vote(f"g{g}", f"r{r}", "A", "B", winner))
    by_group = {s.model: s for s in stats.bradley_terry_intervals(votes, by="group")}
    by_vote = {s.model: s for s in stats.bradley_terry_intervals(votes, by="vote")}
    assert by_group["A"].high - by_group["A"].low > 2 * (by_vote["A"].high - by_vote["A"].low)


def test_fit_counts_warm_start_changes_nothing_but_time():
    counts = stats.pairwise_counts(_world(300))
    models = ["m0", "m1", "m2"]
    cold = stats.fit_counts(models, counts)
    warm = stats.fit_counts(models, counts, start=[0.2, 0.3, 0.5])
    assert warm == pytest.approx(cold, abs=1e-9)
    assert dict(zip(models, cold)) == pytest.approx(stats.bradley_terry(_world(300)), abs=1e-9)
    # a model with no vote at all only feels the prior: strength pulled to the middle
    alone = stats.fit_counts(models + ["new"], counts)
    assert alone[1] < alone[3] < alone[2] or alone[0] < alone[3] < alone[2]


def test_axis_breakdown_counts_only_votes_that_differ_in_that_setting():
    """7 vs 28 steps, all else equal: a vote between 7-steps-no-LoRA and 28-steps-with-LoRA
    differs in two settings and tells nothing about steps alone; schnell is another model."""
    settings = {
        "s7": {"model": "E", "steps": "7 steps", "lora": "no LoRA"},
        "s28": {"model": "E", "steps": "28 steps", "lora": "no LoRA"},
        "s7L": {"model": "E", "steps": "7 steps", "lora": "style 0.8"},
        "s28L": {"model": "E", "steps": "28 steps", "lora": "style 0.8"},
        "schnell": {"model": "S"},
    }
    votes = (_votes("s28", "s7", 3, 1) + _votes("s28L", "s7L", 2, 0, good=1, group="l")
             + _votes("s28L", "s7", 0, 5, group="x") + _votes("schnell", "s7", 4, 0, group="s"))
    steps = {r.model: r for r in stats.axis_breakdown(votes, settings, "steps")}
    assert (steps["28 steps"].wins, steps["28 steps"].losses, steps["28 steps"].ties) == (5, 1, 1)
    assert (steps["7 steps"].wins, steps["7 steps"].losses) == (1, 5)
    lora = {r.model: r for r in stats.axis_breakdown(votes, settings, "lora")}
    assert lora == {}  # no vote differs in the LoRA alone
    assert stats.axis_breakdown(votes, settings, "model") == []  # schnell's settings differ in more
