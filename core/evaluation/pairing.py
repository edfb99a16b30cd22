"""Which two contenders a rater judges next in a group, when a group has more pairs than anyone
will rate (5 contenders make 10 pairs per group).

Rule: among the pairs of the group's contenders that this rater has not judged in this group,
choose the pair whose order is least certain. Certainty of a pair (a, b) is
z = |log s_a - log s_b| / se, where s are Bradley-Terry strengths fitted on every vote so far
(all raters, all groups; `stats.fit_counts` with its prior) and se is the standard error of
log s_a - log s_b from the fit's Fisher information. So strengths close together come first, and
so do pairs with few comparisons, direct or through other contenders (a pair the others already
order, such as the best against the worst, waits). Before any vote every pair has z = 0.

Invariants:
- Never the same pair of a group twice for one rater: `judged` pairs are never returned; when
  the rater has judged every pair of the group the answer is None.
- Deterministic: the same contenders, counts, judged pairs and seed give the same pair, in any
  input order; equal certainties are broken by a hash of (seed, pair), so different seeds (e.g.
  one per rater and group) spread equal pairs over raters.
- Pure: nothing here reads the store or the clock; the caller passes the votes.
"""
from __future__ import annotations

import hashlib
import math
from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from core.evaluation import stats

Counts = Mapping[tuple[str, str], tuple[float, float, float]]


@dataclass(frozen=True)
class PairChoice:
    """The pair to show next: `a` and `b` in the order of the group's contenders, `p_a` the
    estimated chance that a beats b, `comparisons` the votes on this pair so far (all raters,
    all groups), `z` the certainty of its order (smaller = less sure)."""
    a: str
    b: str
    p_a: float
    comparisons: int
    z: float


def choose_pair(contenders: Sequence[str], votes: Iterable[stats.Vote],
                judged: Collection[Collection[str]] = (), *, seed: int | str = 0,
                prior: float = 1.0) -> PairChoice | None:
    """The next pair for a rater in a group (see the module rule). `contenders` are the group's
    contenders that have an output to show; `votes` every vote so far (each rater's latest per
    item); `judged` the pairs this rater already judged in this group (2-tuples or sets)."""
    return choose_from_counts(contenders, stats.pairwise_counts(votes), judged, seed=seed, prior=prior)


def choose_from_counts(contenders: Sequence[str], counts: Counts,
                       judged: Collection[Collection[str]] = (), *, seed: int | str = 0,
                       prior: float = 1.0, strengths: Mapping[str, float] | None = None,
                       ) -> PairChoice | None:
    """`choose_pair` from `stats.pairwise_counts`-shaped counts. `strengths` (a fit of these
    counts with this prior, as `stats.fit_counts` gives) saves refitting when the caller has it."""
    order = list(contenders)
    if len(set(order)) != len(order):
        raise ValueError(f"contenders must be distinct, got {order}")
    done = {frozenset(p) for p in judged}
    candidates = [(a, b) for i, a in enumerate(order) for b in order[i + 1:] if frozenset((a, b)) not in done]
    if not candidates:
        return None
    models = sorted(set(order) | {m for pair in counts for m in pair})
    index = {m: i for i, m in enumerate(models)}
    if strengths is None:
        fitted = stats.fit_counts(models, counts, prior=prior)
    else:
        fitted = np.array([strengths[m] for m in models], dtype=float)
    log_s = np.log(np.clip(fitted, 1e-300, None))
    cov = _covariance(models, counts, fitted, prior)
    scored = []
    for a, b in candidates:
        i, j = index[a], index[b]
        var = max(cov[i, i] + cov[j, j] - 2 * cov[i, j], 1e-300)
        z = abs(log_s[i] - log_s[j]) / math.sqrt(var)
        first, second = sorted((a, b))
        tie_break = hashlib.sha256(f"{seed}\x00{first}\x00{second}".encode()).hexdigest()
        scored.append((round(z, 9), tie_break, a, b, i, j))
    z, _, a, b, i, j = min(scored)
    n = sum(counts.get(tuple(sorted((a, b))), (0, 0, 0)))  # type: ignore[arg-type]
    return PairChoice(a, b, float(fitted[i] / (fitted[i] + fitted[j])), int(n), float(z))


def _covariance(models: Sequence[str], counts: Counts, strengths: np.ndarray, prior: float) -> np.ndarray:
    """Approximate covariance of the log strengths: the pseudo-inverse of the Bradley-Terry
    Fisher information, a graph Laplacian with weight (games + prior) p (1 - p) per pair."""
    k = len(models)
    index = {m: i for i, m in enumerate(models)}
    games = np.full((k, k), float(prior))
    np.fill_diagonal(games, 0.0)
    for (a, b), cell in counts.items():
        n = float(sum(cell))
        games[index[a], index[b]] += n
        games[index[b], index[a]] += n
    s = strengths
    p = s[:, None] / (s[:, None] + s[None, :])
    weights = games * p * (1 - p)
    laplacian = np.diag(weights.sum(axis=1)) - weights
    return np.linalg.pinv(laplacian)
