"""How many blind votes does a correct order of 5 contenders need: pairs chosen where the outcome
is most uncertain (core.evaluation.pairing) against pairs shown at random.

    .venv/bin/python -m tests.bench.sim_pairs [--seeds 200] [--horizon 1000] [--gap 0.5] [--ties 0.2]

The world: 5 contenders with known Bradley-Terry strengths, log-strengths `gap` apart (adjacent
contenders: the better one wins with p = 1 / (1 + e^-gap), 0.62 at gap 0.5). A share `ties` of
the votes are ties ("both good" / "both bad"). Three raters take turns; each vote goes to the next
group (40 groups, one prompt variant and seed each), and a rater never judges the same pair of a
group twice, under both strategies. After every vote Bradley-Terry (prior 1, as the Leaderboard)
is fitted on all votes so far.

Votes needed = the first vote count from which the fitted order equals the true order and stays
equal up to the horizon; a run that is not settled by then counts as "more than the horizon".
Prints median and p90 of votes needed per strategy over the seeds. Measured with the defaults
(200 seeds, horizon 1000; 9 minutes on a busy shared 2-core machine): active median 115, p90 235
votes; random pairs median 200, p90 464; no run unsettled.
"""
from __future__ import annotations

import argparse
import math
import random
import statistics
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from core.evaluation import pairing, stats

CONTENDERS = ("c1", "c2", "c3", "c4", "c5")
RATERS = 3
GROUPS = 40
STRATEGIES = ("active", "random")


@dataclass(frozen=True)
class Result:
    strategy: str
    seed: int
    votes_needed: int | None  # None: not settled by the horizon


def true_strengths(gap: float, contenders: Sequence[str] = CONTENDERS) -> dict[str, float]:
    """Strongest last: c5 beats c4 beats ... c1."""
    return {c: math.exp(gap * i) for i, c in enumerate(contenders)}


def simulate(strategy: str, seed: int, *, gap: float = 0.5, ties: float = 0.2, horizon: int = 1000,
             contenders: Sequence[str] = CONTENDERS) -> Result:
    """One run: `horizon` votes chosen by `strategy`; when the fitted order became right for good."""
    if strategy not in STRATEGIES:
        raise ValueError(f"strategy must be one of {STRATEGIES}")
    truth = true_strengths(gap, contenders)
    true_order = sorted(contenders, key=lambda c: -truth[c])
    models = sorted(contenders)
    rng = random.Random(f"{strategy}-{seed}")
    counts: dict[tuple[str, str], list[float]] = {}
    judged: dict[tuple[int, int], set[frozenset[str]]] = {}
    fitted: np.ndarray | None = None
    settled_at: int | None = None
    for n in range(horizon):
        rater, group = n % RATERS, (n // RATERS) % GROUPS
        done = judged.setdefault((rater, group), set())
        if strategy == "active":
            frozen = {k: tuple(v) for k, v in counts.items()}
            strengths = None if fitted is None else dict(zip(models, fitted))
            choice = pairing.choose_from_counts(contenders, frozen, done, seed=f"{rater}/{group}",
                                                strengths=strengths)
            if choice is None:
                raise RuntimeError("a rater ran out of pairs: raise GROUPS")
            a, b = choice.a, choice.b
        else:
            open_pairs = [(x, y) for i, x in enumerate(contenders) for y in contenders[i + 1:]
                          if frozenset((x, y)) not in done]
            a, b = rng.choice(open_pairs)
        done.add(frozenset((a, b)))
        first, second = sorted((a, b))
        cell = counts.setdefault((first, second), [0.0, 0.0, 0.0])
        if rng.random() < ties:
            cell[2] += 1
        elif rng.random() < truth[first] / (truth[first] + truth[second]):
            cell[0] += 1
        else:
            cell[1] += 1
        fitted = stats.fit_counts(models, {k: tuple(v) for k, v in counts.items()}, tol=1e-10,
                                  start=fitted)
        order = [m for _, m in sorted(zip(-fitted, models))]
        if order == true_order:
            if settled_at is None:
                settled_at = n + 1
        else:
            settled_at = None
    return Result(strategy, seed, settled_at)


def run(seeds: int, *, gap: float = 0.5, ties: float = 0.2, horizon: int = 1000) -> dict[str, list[Result]]:
    return {s: [simulate(s, seed, gap=gap, ties=ties, horizon=horizon) for seed in range(seeds)]
            for s in STRATEGIES}


def quantiles(results: Sequence[Result], horizon: int) -> tuple[float, float, int]:
    """(median, p90, unsettled runs); an unsettled run counts as horizon + 1 (so a quantile above
    the horizon reads "more than the horizon")."""
    needed = [r.votes_needed if r.votes_needed is not None else horizon + 1 for r in results]
    p90 = float(np.percentile(needed, 90, method="higher"))
    return float(statistics.median(needed)), p90, sum(r.votes_needed is None for r in results)


def _show(value: float, horizon: int) -> str:
    return f">{horizon}" if value > horizon else f"{value:.0f}"


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", type=int, default=200)
    parser.add_argument("--horizon", type=int, default=1000)
    parser.add_argument("--gap", type=float, default=0.5, help="log-strength gap between neighbours")
    parser.add_argument("--ties", type=float, default=0.2, help="share of tie verdicts")
    args = parser.parse_args(argv)
    start = time.perf_counter()
    results = run(args.seeds, gap=args.gap, ties=args.ties, horizon=args.horizon)
    p_adjacent = 1 / (1 + math.exp(-args.gap))
    print(f"5 contenders, neighbours win {p_adjacent:.2f}, {args.ties:.0%} ties, {RATERS} raters, "
          f"{GROUPS} groups; {args.seeds} seeds, horizon {args.horizon} votes")
    print(f"{'strategy':<8} {'median':>7} {'p90':>7} {'unsettled':>10}")
    for strategy in STRATEGIES:
        median, p90, unsettled = quantiles(results[strategy], args.horizon)
        print(f"{strategy:<8} {_show(median, args.horizon):>7} {_show(p90, args.horizon):>7} "
              f"{unsettled:>10}")
    print(f"({time.perf_counter() - start:.1f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
