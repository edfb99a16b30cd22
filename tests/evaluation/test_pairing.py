"""Pair selection for blind review with many contenders: the least certain pair first, never a
pair a rater already judged in that group, the same answer for the same inputs, and, in a
simulation with known strengths, the right order of 5 contenders sooner than random pairs."""
from __future__ import annotations

import itertools

import pytest

from core.evaluation import pairing, stats
from core.evaluation.stats import Vote
from tests.bench import sim_pairs

FIVE = ("a", "b", "c", "d", "e")


def _wins(winner: str, loser: str, n: int, group: str = "g") -> list[Vote]:
    return [Vote(f"{group}{winner}{loser}{i}", "r", winner, loser, winner) for i in range(n)]


def test_without_votes_every_pair_is_equally_uncertain_and_the_seed_decides():
    first = pairing.choose_pair(FIVE, [], seed=1)
    assert first is not None and first.z == 0 and first.comparisons == 0 and first.p_a == pytest.approx(0.5)
    picks = {(c.a, c.b) for c in (pairing.choose_pair(FIVE, [], seed=s) for s in range(40)) if c}
    assert len(picks) >= 6  # different raters and groups start on different pairs


def test_close_strengths_come_before_a_settled_pair():
    """a beats everyone by far; b and c are even: b-c (or a fresh pair near it) comes before a-x."""
    votes = (_wins("a", "b", 10) + _wins("a", "c", 10) + _wins("b", "c", 3) + _wins("c", "b", 3))
    choice = pairing.choose_pair(("a", "b", "c"), votes)
    assert {choice.a, choice.b} == {"b", "c"} and choice.comparisons == 6
    assert choice.p_a == pytest.approx(0.5, abs=0.01)


def test_a_pair_never_compared_comes_before_one_compared_often_at_the_same_odds():
    votes = _wins("a", "b", 20) + _wins("b", "a", 20) + _wins("c", "d", 1) + _wins("d", "c", 1)
    choice = pairing.choose_pair(("a", "b", "c", "d"), votes)
    # a-b: even but measured 40 times; c-d even and measured twice; pairs across are not measured
    assert {choice.a, choice.b} != {"a", "b"}
    assert choice.comparisons < 40


def test_transitive_evidence_counts_best_against_worst_waits():
    """a > b and b > c clearly, a-c never compared: a-c is still the most certain order."""
    votes = _wins("a", "b", 15, "x") + _wins("b", "c", 15, "y") + _wins("b", "a", 3, "x") + _wins("c", "b", 3, "y")
    choice = pairing.choose_pair(("a", "b", "c"), votes)
    assert {choice.a, choice.b} != {"a", "c"}


def test_never_the_same_pair_twice_for_a_rater_in_a_group():
    pairs = set(itertools.combinations(FIVE, 2))
    judged: list[tuple[str, str]] = []
    votes: list[Vote] = []
    for _ in range(10):
        choice = pairing.choose_pair(FIVE, votes, judged, seed="rater/group")
        pair = (choice.a, choice.b)
        assert frozenset(pair) not in {frozenset(p) for p in judged}
        judged.append(pair if len(judged) % 2 else (pair[1], pair[0]))  # either side order counts
        votes.append(Vote("g", "r", choice.a, choice.b, choice.a))
    assert {frozenset(p) for p in judged} == {frozenset(p) for p in pairs}
    assert pairing.choose_pair(FIVE, votes, judged) is None
    assert pairing.choose_pair(("a",), []) is None


def test_deterministic_in_any_input_order():
    votes = _wins("a", "b", 3) + _wins("c", "d", 2) + _wins("e", "a", 1) + _wins("b", "c", 2)
    judged = [("a", "c"), ("d", "e")]
    one = pairing.choose_pair(FIVE, votes, judged, seed=7)
    again = pairing.choose_pair(tuple(reversed(FIVE)), list(reversed(votes)), [("e", "d"), ("c", "a")], seed=7)
    assert {one.a, one.b} == {again.a, again.b} and one.z == pytest.approx(again.z)
    assert pairing.choose_pair(FIVE, votes, judged, seed=7) == one


def test_precomputed_strengths_give_the_same_pair():
    votes = _wins("a", "b", 4) + _wins("b", "c", 2) + _wins("d", "e", 5)
    counts = stats.pairwise_counts(votes)
    models = sorted(FIVE)
    fitted = dict(zip(models, stats.fit_counts(models, counts)))
    assert pairing.choose_from_counts(FIVE, counts, strengths=fitted) == pairing.choose_pair(FIVE, votes)
    with pytest.raises(ValueError):
        pairing.choose_pair(("a", "a", "b"), [])


def test_active_selection_reaches_the_known_order_and_sooner_than_random_pairs():
    """The simulation of tests/bench/sim_pairs.py, small: 5 contenders with known strengths.
    Every active run settles on the true order within 250 votes, and at the median it needs
    fewer votes than random pairs."""
    horizon = 250
    active = [sim_pairs.simulate("active", seed, horizon=horizon) for seed in range(6)]
    random_ = [sim_pairs.simulate("random", seed, horizon=horizon) for seed in range(6)]
    assert all(r.votes_needed is not None for r in active), active
    active_median, _, _ = sim_pairs.quantiles(active, horizon)
    random_median, _, _ = sim_pairs.quantiles(random_, horizon)
    assert active_median < random_median
