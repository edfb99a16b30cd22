"""Vote statistics: which model wins, how sure we are, and whether raters agree.

A rater sees two outputs of one group side by side, blind, and answers one verdict: "left",
"right", "both_good" or "both_bad". After unblinding a verdict is a `Vote`: the winning model id,
or no winner and the kind of tie.

Invariants and definitions:
- Win rate = wins / decisive votes. `WinRate.n` counts decisive votes only (wins + losses); ties
  ("both_good" and "both_bad") are reported beside it in `ties` and do not move the rate. A model
  with no decisive vote has rate NaN and the uninformative interval (0, 1).
- Intervals are Wilson score intervals (95 % by default). They treat votes as independent; when
  several raters judge the same group the votes are correlated and the interval is too narrow.
- Bradley-Terry strengths are fitted with Hunter's MM algorithm, a tie counting as half a win for
  each side, and normalised to sum to 1: P(i beats j) = s_i / (s_i + s_j).
- Elo is order-dependent (votes are applied in the order given); Bradley-Terry is not.
- Nothing here reads the store or the clock: same votes in, same numbers out.
- A malformed `Vote` is a programming error and raises ValueError when constructed.
"""
from __future__ import annotations

import math
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from typing import Iterable, Mapping

import numpy as np

VERDICTS = ("left", "right", "both_good", "both_bad")
TIE_KINDS = ("both_good", "both_bad")
UNSET = "(unset)"
Z_95 = 1.959963984540054


@dataclass(frozen=True)
class Vote:
    """One rater's unblinded verdict on one group: `winner` is a model id, or None for a tie."""
    group_id: str
    rater: str
    model_a: str
    model_b: str
    winner: str | None
    tie_kind: str | None = None
    factors: Mapping[str, str] = field(default_factory=dict, hash=False)

    def __post_init__(self) -> None:
        if self.model_a == self.model_b:
            raise ValueError(f"a vote compares two different models, got {self.model_a!r} twice")
        if self.winner is None:
            if self.tie_kind not in TIE_KINDS:
                raise ValueError(f"a tie needs tie_kind in {TIE_KINDS}, got {self.tie_kind!r}")
        else:
            if self.winner not in (self.model_a, self.model_b):
                raise ValueError(f"winner {self.winner!r} is neither {self.model_a!r} nor {self.model_b!r}")
            if self.tie_kind is not None:
                raise ValueError("a vote with a winner has no tie_kind")
        object.__setattr__(self, "factors", dict(self.factors))

    @property
    def verdict(self) -> str:
        """The model id that won, or the tie kind: the category raters agree or disagree on."""
        return self.winner if self.winner is not None else self.tie_kind  # type: ignore[return-value]


@dataclass(frozen=True)
class WinRate:
    """`n` = decisive votes (wins + losses); `rate` = wins / n; [low, high] its Wilson interval."""
    model: str
    wins: int
    losses: int
    ties: int
    n: int
    rate: float
    low: float
    high: float


def vote_from_verdict(group_id: str, rater: str, left_model: str, right_model: str, verdict: str,
                      factors: Mapping[str, str] | None = None) -> Vote:
    """Unblind a side-by-side verdict into a `Vote`."""
    if verdict not in VERDICTS:
        raise ValueError(f"verdict must be one of {VERDICTS}, got {verdict!r}")
    winner = {"left": left_model, "right": right_model}.get(verdict)
    return Vote(group_id, rater, left_model, right_model, winner,
                None if winner is not None else verdict, dict(factors or {}))


def wilson_interval(successes: int, n: int, z: float = Z_95) -> tuple[float, float]:
    """Wilson score interval for `successes` of `n`; (0, 1) when n is 0."""
    if n < 0 or not 0 <= successes <= n:
        raise ValueError(f"need 0 <= successes <= n, got {successes} of {n}")
    if n == 0:
        return (0.0, 1.0)
    p = successes / n
    z2 = z * z
    denom = 1 + z2 / n
    centre = (p + z2 / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z2 / (4 * n * n)) / denom
    return (max(0.0, centre - half), min(1.0, centre + half))


def _rates(votes: Iterable[Vote]) -> list[WinRate]:
    tally: dict[str, list[int]] = defaultdict(lambda: [0, 0, 0])
    for v in votes:
        for model in (v.model_a, v.model_b):
            if v.winner is None:
                tally[model][2] += 1
            else:
                tally[model][0 if v.winner == model else 1] += 1
    out = []
    for model, (wins, losses, ties) in tally.items():
        n = wins + losses
        low, high = wilson_interval(wins, n)
        out.append(WinRate(model, wins, losses, ties, n, wins / n if n else math.nan, low, high))
    out.sort(key=lambda r: (math.isnan(r.rate), -r.rate if r.n else 0.0, r.model))
    return out


def win_rates(votes: Iterable[Vote]) -> list[WinRate]:
    """One row per model over all its votes, best rate first (models without decisive votes last)."""
    return _rates(votes)


def pairwise_counts(votes: Iterable[Vote]) -> dict[tuple[str, str], tuple[int, int, int]]:
    """(a_wins, b_wins, ties) per pair of models, keyed (a, b) with a < b alphabetically."""
    counts: dict[tuple[str, str], list[int]] = defaultdict(lambda: [0, 0, 0])
    for v in votes:
        a, b = sorted((v.model_a, v.model_b))
        slot = 2 if v.winner is None else (0 if v.winner == a else 1)
        counts[(a, b)][slot] += 1
    return {pair: tuple(c) for pair, c in sorted(counts.items())}  # type: ignore[misc]


def bradley_terry(votes: Iterable[Vote], *, iterations: int = 10_000, tol: float = 1e-12,
                  prior: float = 1.0) -> dict[str, float]:
    """Bradley-Terry strengths (sum 1), strongest first.

    `prior` adds that many virtual ties between every two models seen, so a model that never
    lost keeps a finite strength and models never compared directly stay comparable (pulled
    towards equal). `prior=0` is the plain maximum-likelihood fit, which has no finite solution
    when a model never loses; the MM iteration then stops at `iterations`.
    """
    if prior < 0:
        raise ValueError("prior must be >= 0")
    pairs = pairwise_counts(votes)
    models = sorted({m for pair in pairs for m in pair})
    if not models:
        return {}
    index = {m: i for i, m in enumerate(models)}
    k = len(models)
    games = np.full((k, k), float(prior))
    np.fill_diagonal(games, 0.0)
    score = np.full(k, prior * 0.5 * (k - 1))
    for (a, b), (a_wins, b_wins, ties) in pairs.items():
        i, j = index[a], index[b]
        games[i, j] += a_wins + b_wins + ties
        games[j, i] += a_wins + b_wins + ties
        score[i] += a_wins + 0.5 * ties
        score[j] += b_wins + 0.5 * ties
    strength = np.full(k, 1.0 / k)
    for _ in range(iterations):
        sums = strength[:, None] + strength[None, :]
        with np.errstate(divide="ignore", invalid="ignore"):
            terms = np.where(games > 0, games / sums, 0.0)
        denom = terms.sum(axis=1)
        new = np.divide(score, denom, out=np.zeros(k), where=denom > 0)
        new /= new.sum()
        done = np.max(np.abs(new - strength)) < tol
        strength = new
        if done:
            break
    ranked = sorted(zip(models, strength), key=lambda t: (-t[1], t[0]))
    return {m: float(s) for m, s in ranked}


def elo(votes: Iterable[Vote], k: float = 16, base: float = 1000) -> dict[str, float]:
    """Elo ratings after applying the votes in order (a tie scores 0.5), highest first."""
    rating: dict[str, float] = {}
    for v in votes:
        ra, rb = rating.setdefault(v.model_a, base), rating.setdefault(v.model_b, base)
        expected_a = 1 / (1 + 10 ** ((rb - ra) / 400))
        score_a = 0.5 if v.winner is None else float(v.winner == v.model_a)
        delta = k * (score_a - expected_a)
        rating[v.model_a], rating[v.model_b] = ra + delta, rb - delta
    return dict(sorted(rating.items(), key=lambda t: (-t[1], t[0])))


def breakdown(votes: Iterable[Vote], factor: str) -> dict[str, list[WinRate]]:
    """Win rates per value of one prompt factor (pose, style, ...); votes without it go under UNSET."""
    by_value: dict[str, list[Vote]] = defaultdict(list)
    for v in votes:
        by_value[v.factors.get(factor, UNSET)].append(v)
    return {value: _rates(by_value[value]) for value in sorted(by_value)}


def agreement(votes: Iterable[Vote]) -> dict:
    """How far raters agree on groups that more than one rater judged.

    The category of a vote is its winner model or its tie kind (so left/right swaps between
    raters do not matter). A rater who voted twice on a group counts once, with the last vote.
    Keys: groups (judged by >= 2 raters), ratings, raters, unanimous, unanimous_share,
    fleiss_kappa (Fleiss' formula allowing a varying number of raters per group), cohen_kappa
    (only when exactly two raters judged every such group). Kappas and the share are None when
    undefined (no such group, or every vote in one category).
    """
    per_group: dict[str, dict[str, str]] = defaultdict(dict)
    for v in votes:
        per_group[v.group_id][v.rater] = v.verdict
    shared = {g: r for g, r in per_group.items() if len(r) >= 2}
    result: dict = {"groups": len(shared), "ratings": sum(len(r) for r in shared.values()),
                    "raters": len({rater for r in shared.values() for rater in r}),
                    "unanimous": sum(len(set(r.values())) == 1 for r in shared.values()),
                    "unanimous_share": None, "fleiss_kappa": None, "cohen_kappa": None}
    if not shared:
        return result
    result["unanimous_share"] = result["unanimous"] / len(shared)
    result["fleiss_kappa"] = _fleiss_kappa([list(r.values()) for r in shared.values()])
    raters = sorted({rater for r in shared.values() for rater in r})
    if len(raters) == 2 and all(len(r) == 2 for r in shared.values()):
        first, second = raters
        result["cohen_kappa"] = _cohen_kappa([(r[first], r[second]) for r in shared.values()])
    return result


def _fleiss_kappa(groups: list[list[str]]) -> float | None:
    observed = []
    totals: Counter[str] = Counter()
    for labels in groups:
        counts = Counter(labels)
        m = len(labels)
        observed.append((sum(c * c for c in counts.values()) - m) / (m * (m - 1)))
        totals.update(counts)
    all_ratings = sum(totals.values())
    expected = sum((c / all_ratings) ** 2 for c in totals.values())
    if expected == 1:
        return None
    return (sum(observed) / len(observed) - expected) / (1 - expected)


def _cohen_kappa(pairs: list[tuple[str, str]]) -> float | None:
    n = len(pairs)
    observed = sum(a == b for a, b in pairs) / n
    first, second = Counter(a for a, _ in pairs), Counter(b for _, b in pairs)
    expected = sum(first[c] * second[c] for c in first) / (n * n)
    if expected == 1:
        return None
    return (observed - expected) / (1 - expected)


def summarise(values: Iterable[float | int | None]) -> dict:
    """median, p90 (linear interpolation), mean and n of the values; None and NaN are skipped.

    With no values left, n is 0 and the others are None.
    """
    kept = [float(x) for x in values if x is not None and not math.isnan(x)]
    if not kept:
        return {"n": 0, "median": None, "p90": None, "mean": None}
    arr = np.asarray(kept)
    return {"n": len(kept), "median": float(np.median(arr)),
            "p90": float(np.percentile(arr, 90)), "mean": float(arr.mean())}
