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
from typing import Iterable, Mapping, Sequence

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
    strength = fit_counts(models, pairs, prior=prior, iterations=iterations, tol=tol)
    ranked = sorted(zip(models, strength), key=lambda t: (-t[1], t[0]))
    return {m: float(s) for m, s in ranked}


def fit_counts(models: Sequence[str], pairs: Mapping[tuple[str, str], tuple[float, float, float]], *,
               prior: float = 1.0, iterations: int = 10_000, tol: float = 1e-12,
               start: np.ndarray | None = None) -> np.ndarray:
    """Bradley-Terry strengths (sum 1) of `models`, in their order, from `pairwise_counts`-shaped
    counts {(a, b): (a_wins, b_wins, ties)}; models without a vote get the prior's pull only.
    `start` (strengths from a previous fit) only makes the iteration shorter, never the answer
    different. The building block of `bradley_terry` and of `core.evaluation.pairing`."""
    if prior < 0:
        raise ValueError("prior must be >= 0")
    index = {m: i for i, m in enumerate(models)}
    k = len(models)
    games = np.zeros((1, k, k))
    score = np.zeros((1, k))
    for (a, b), (a_wins, b_wins, ties) in pairs.items():
        i, j = index[a], index[b]
        games[0, i, j] += a_wins + b_wins + ties
        games[0, j, i] += a_wins + b_wins + ties
        score[0, i] += a_wins + 0.5 * ties
        score[0, j] += b_wins + 0.5 * ties
    begin = None if start is None else np.asarray(start, dtype=float).reshape(1, k)
    if prior > 0:
        fitted = _newton(games[0], score[0], prior, tol, begin)
        if fitted is not None:
            return fitted
    return _mm(games, score, prior, iterations, tol, begin)[0]


def _newton(games: np.ndarray, score: np.ndarray, prior: float, tol: float,
            start: np.ndarray | None, max_steps: int = 100) -> np.ndarray | None:
    """The same fit as `_mm` by Newton's method on log strengths: a handful of steps instead of
    hundreds (the review's pair choice refits after every vote). With a prior the likelihood is
    strictly concave, so the steps converge; a step is capped to stay in the region where the
    quadratic model holds. None if it did not converge (the caller falls back to MM)."""
    k = len(score)
    games = games + prior * (1.0 - np.eye(k))
    score = score + prior * 0.5 * (k - 1)
    theta = np.zeros(k) if start is None else np.log(np.clip(start.reshape(k), 1e-300, None))
    theta -= theta.mean()
    for _ in range(max_steps):
        p = 1.0 / (1.0 + np.exp(theta[None, :] - theta[:, None]))   # p[i, j] = P(i beats j)
        gradient = score - (games * p).sum(axis=1)
        weights = games * p * p.T
        hessian = np.diag(weights.sum(axis=1)) - weights               # the Fisher information
        # the strengths are fixed only up to a common factor: pin the mean log strength at 0
        try:
            step = np.linalg.solve(hessian + 1.0 / k, gradient)
        except np.linalg.LinAlgError:
            return None
        biggest = np.abs(step).max()
        if biggest > 1.0:
            step /= biggest
        theta += step
        theta -= theta.mean()
        if biggest < tol:
            strength = np.exp(theta)
            return strength / strength.sum()
    return None


def _mm(games: np.ndarray, score: np.ndarray, prior: float, iterations: int, tol: float,
        start: np.ndarray | None = None) -> np.ndarray:
    """Hunter's MM iteration on B problems at once: `games` (B, k, k) symmetric comparison counts,
    `score` (B, k) wins with ties as halves; `prior` virtual ties between every two models.
    Returns (B, k) strengths, each row summing to 1."""
    b, k = score.shape
    games = games + prior * (1.0 - np.eye(k))[None, :, :]
    score = score + prior * 0.5 * (k - 1)
    strength = np.full((b, k), 1.0 / k) if start is None else np.array(start, dtype=float)
    if prior > 0 and np.all(strength > 0):
        # every strength stays positive: no 0/0 can occur, so the lean loop is safe (and ~3x faster)
        for _ in range(iterations):
            new = score / (games / (strength[:, :, None] + strength[:, None, :])).sum(axis=2)
            new /= new.sum(axis=1, keepdims=True)
            done = np.abs(new - strength).max() < tol
            strength = new
            if done:
                break
        return strength
    zeros_g, zeros_s, even = np.zeros_like(games), np.zeros_like(score), np.full_like(score, 1.0 / k)
    for _ in range(iterations):
        sums = strength[:, :, None] + strength[:, None, :]
        terms = np.divide(games, sums, out=zeros_g.copy(), where=games > 0)
        denom = terms.sum(axis=2)
        new = np.divide(score, denom, out=zeros_s.copy(), where=denom > 0)
        total = new.sum(axis=1, keepdims=True)
        new = np.divide(new, total, out=even.copy(), where=total > 0)
        done = np.abs(new - strength).max() < tol
        strength = new
        if done:
            break
    return strength


@dataclass(frozen=True)
class Strength:
    """One model's Bradley-Terry strength: `strength` fitted on all votes (the strengths of a fit
    sum to 1), [`low`, `high`] its bootstrap percentile interval, `votes` the votes it was in,
    and [`rank_low`, `rank_high`] the best and worst rank (1 = strongest) it took in the middle
    `level` share of the resamples."""
    model: str
    strength: float
    low: float
    high: float
    votes: int
    rank_low: int
    rank_high: int


def bradley_terry_intervals(votes: Iterable[Vote], *, resamples: int = 200, seed: int = 0,
                            level: float = 0.95, prior: float = 1.0, by: str = "group",
                            tol: float = 1e-9, iterations: int = 5_000) -> tuple[Strength, ...]:
    """Bradley-Terry strengths with bootstrap intervals, strongest first.

    Each of `resamples` resamples draws, with replacement, as many units as there are: whole
    groups (`by="group"`, the default: the votes on one group share its images and are not
    independent, so they are kept together) or single votes (`by="vote"`). Each resample is
    fitted like `bradley_terry` (with `prior`); the interval is the percentile interval at
    `level`. Seeded: the same votes and seed give the same intervals. All resamples are fitted
    at once, so 200 resamples cost about one fit. The order of `votes` does not matter.
    """
    if resamples < 1:
        raise ValueError("resamples must be >= 1")
    if not 0 < level < 1:
        raise ValueError("level must be between 0 and 1")
    if by not in ("group", "vote"):
        raise ValueError('by must be "group" or "vote"')
    # a canonical order first: the same votes in any order draw the same resamples
    votes = sorted(votes, key=lambda v: (v.group_id, v.rater, *sorted((v.model_a, v.model_b)),
                                         v.verdict, v.model_a))
    if not votes:
        return ()
    models = sorted({m for v in votes for m in (v.model_a, v.model_b)})
    k = len(models)
    index = {m: i for i, m in enumerate(models)}
    # one cell per (first model, second model, outcome); a unit is a group or a vote
    cells: dict[tuple[int, int, int], int] = {}
    units: dict[str, int] = {}
    unit_of, cell_of = [], []
    for n, v in enumerate(votes):
        a, b = sorted((index[v.model_a], index[v.model_b]))
        outcome = 2 if v.winner is None else (0 if index[v.winner] == a else 1)
        cell_of.append(cells.setdefault((a, b, outcome), len(cells)))
        unit_of.append(units.setdefault(v.group_id if by == "group" else str(n), len(units)))
    per_unit = np.zeros((len(units), len(cells)))
    np.add.at(per_unit, (np.array(unit_of), np.array(cell_of)), 1.0)
    rng = np.random.default_rng(seed)
    weights = rng.multinomial(len(units), np.full(len(units), 1.0 / len(units)), size=resamples)
    counts = np.vstack([per_unit.sum(axis=0), weights @ per_unit])  # row 0: the votes as they are
    games = np.zeros((resamples + 1, k, k))
    score = np.zeros((resamples + 1, k))
    for (a, b, outcome), c in cells.items():
        games[:, a, b] += counts[:, c]
        games[:, b, a] += counts[:, c]
        score[:, a] += counts[:, c] * (1.0 if outcome == 0 else 0.5 if outcome == 2 else 0.0)
        score[:, b] += counts[:, c] * (1.0 if outcome == 1 else 0.5 if outcome == 2 else 0.0)
    fitted = _mm(games, score, prior, iterations, tol)
    point, boot = fitted[0], fitted[1:]
    tail = (1 - level) / 2
    low, high = np.quantile(boot, [tail, 1 - tail], axis=0)
    # rank 1 = strongest in each resample (ties broken by model name, as in `bradley_terry`)
    ranks = np.argsort(np.argsort(-boot, axis=1, kind="stable"), axis=1) + 1
    rank_low, rank_high = np.quantile(ranks, [tail, 1 - tail], axis=0, method="nearest")
    seen = Counter(m for v in votes for m in (v.model_a, v.model_b))
    rows = [Strength(m, float(point[i]), float(low[i]), float(high[i]), seen[m],
                     int(rank_low[i]), int(rank_high[i])) for i, m in enumerate(models)]
    rows.sort(key=lambda r: (-r.strength, r.model))
    return tuple(rows)


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


def axis_breakdown(votes: Iterable[Vote], settings: Mapping[str, Mapping[str, str]],
                   parameter: str) -> list[WinRate]:
    """What one swept setting buys, all else equal: win rates of the values of `parameter`
    ("7 steps" vs "28 steps") over the votes between two contenders whose settings differ in
    `parameter` and in nothing else. `settings` maps a contender id to its settings in words,
    model included (`core.catalog.contenders.settings`); a vote on a contender not in it, or
    between contenders that differ in more than `parameter`, does not count. Each row's `model`
    is a value of the parameter, best rate first."""
    kept: list[Vote] = []
    for v in votes:
        a, b = settings.get(v.model_a), settings.get(v.model_b)
        if a is None or b is None or parameter not in a or parameter not in b:
            continue
        if a[parameter] == b[parameter]:
            continue
        if {k: x for k, x in a.items() if k != parameter} != {k: x for k, x in b.items() if k != parameter}:
            continue
        winner = None if v.winner is None else (a if v.winner == v.model_a else b)[parameter]
        kept.append(Vote(v.group_id, v.rater, a[parameter], b[parameter], winner, v.tie_kind, v.factors))
    return _rates(kept)


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
    if isinstance(values, np.ndarray) and values.dtype == np.float64:  # the same values, without a loop
        kept = values[~np.isnan(values)]
    else:
        kept = [float(x) for x in values if x is not None and not math.isnan(x)]
    if not len(kept):
        return {"n": 0, "median": None, "p90": None, "mean": None}
    arr = np.asarray(kept)
    return {"n": len(kept), "median": float(np.median(arr)),
            "p90": float(np.percentile(arr, 90)), "mean": float(arr.mean())}
