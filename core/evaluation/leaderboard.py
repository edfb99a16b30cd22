"""The leaderboard: what the blind votes say about the contenders of a selection (a batch, or
every batch).

Invariants:
- Everything is per CONTENDER (an endpoint at one parameter set, core/catalog/contenders.py),
  named by `contenders.labels` over the contenders of the selection (`Store.contenders_in`): a
  plain two-model batch has one contender per model, labelled with the model's name alone.
- Votes are each rater's LATEST verdict per item (`review.stats_votes`); win rates (wins /
  decisive votes, ties beside them, Wilson intervals), Bradley-Terry strengths (bootstrap
  intervals over whole groups), Elo and agreement are `core.evaluation.stats` on those votes.
- A swept AXIS (`contenders.swept_axes`) is read in wins by `stats.axis_breakdown`: only votes
  between contenders that differ in that setting alone. `axis_title` names it the same way for
  the leaderboard, the per-axis figures (core/evaluation/tally.py) and every page.
- Reads only: nothing here writes to the store.
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from core.catalog import contenders as contenders_mod
from core.catalog.contenders import Axis, Contender
from core.evaluation import review, stats
from core.store import Store

BREAKDOWN_FACTORS = ("pose", "style", "lighting", "angle", "aspect_ratio")


@dataclass(frozen=True)
class Contenders:
    """The contenders of a selection in the order they first appear, their labels and swept axes."""
    items: tuple[Contender, ...]
    labels: Mapping[str, str]
    axes: tuple[Axis, ...]

    def label(self, contender_id: str | None, fallback: str = "") -> str:
        return self.labels.get(contender_id or "", fallback or contender_id or "")

    def get(self, contender_id: str | None) -> Contender | None:
        return next((c for c in self.items if c.id == contender_id), None)


def selection_contenders(store: Store, *, batch_id: str | None = None) -> Contenders:
    """The contenders of a batch (or of every batch), labelled from what differs between them."""
    items = tuple(store.contenders_in(batch_id=batch_id))
    return Contenders(items, contenders_mod.labels(items), contenders_mod.swept_axes(items))


@dataclass(frozen=True)
class Leaderboard:
    """Everything the blind votes say, per contender id. `breakdowns[factor][value]` are the win
    rates of the votes on groups with that option value; only factors some voted group sets are
    present. `intervals` are bootstrap Bradley-Terry strengths (strongest first); `axes` the win
    rates of each swept axis's values (all else equal), keyed by the axis title."""
    votes: int
    raters: int
    groups: int
    win_rates: tuple[stats.WinRate, ...]
    pairwise: Mapping[tuple[str, str], tuple[int, int, int]]
    strengths: Mapping[str, float]
    elo: Mapping[str, float]
    breakdowns: Mapping[str, Mapping[str, list[stats.WinRate]]]
    agreement: Mapping[str, Any]
    intervals: tuple[stats.Strength, ...] = ()
    axes: Mapping[str, list[stats.WinRate]] = None  # type: ignore[assignment]

    @property
    def ranking(self) -> list[str]:
        """Contenders strongest first (Bradley-Terry, which uses every pairwise comparison)."""
        return list(self.strengths)


def leaderboard(store: Store, *, batch_id: str | None = None,
                selection: Contenders | None = None,
                votes: Sequence[stats.Vote] | None = None) -> Leaderboard:
    """`votes`: the selection's `review.stats_votes` when already read (`figures`)."""
    votes = review.stats_votes(store, batch_id=batch_id) if votes is None else list(votes)
    selection = selection or selection_contenders(store, batch_id=batch_id)
    breakdowns = {}
    for factor in BREAKDOWN_FACTORS:
        if any(factor in v.factors for v in votes):
            breakdowns[factor] = stats.breakdown(votes, factor)
    settings = contenders_mod.settings(selection.items)
    axes = {}
    for axis in selection.axes:
        rates = stats.axis_breakdown(votes, settings, axis.parameter)
        if rates:
            axes[axis_title(axis, selection)] = rates
    return Leaderboard(
        votes=len(votes), raters=len({v.rater for v in votes}), groups=len({v.group_id for v in votes}),
        win_rates=tuple(stats.win_rates(votes)), pairwise=stats.pairwise_counts(votes),
        strengths=stats.bradley_terry(votes), elo=stats.elo(votes), breakdowns=breakdowns,
        agreement=stats.agreement(votes),
        intervals=stats.bradley_terry_intervals(votes) if votes else (), axes=axes)


def axis_title(axis: Axis, selection: Contenders) -> str:
    """ "7 vs 28 steps" style; the model is named when several endpoints of the selection sweep."""
    title = _vs(axis)
    if len({a.endpoint for a in selection.axes}) > 1:
        title = f"{contenders_mod.model_label(axis.endpoint)}: {title}"
    return title


def _vs(axis: Axis) -> str:
    """ "7 vs 28 steps" when every value shares a unit word, "with vs without the LoRA" for a
    LoRA set with and without, else the values joined by " vs "."""
    if axis.parameter == "loras" and len(axis.labels) == 2 and "no LoRA" in axis.labels:
        other = next(label for label in axis.labels if label != "no LoRA")
        return f"with vs without the LoRA ({other})"
    words = [label.rsplit(" ", 1) for label in axis.labels]
    if all(len(w) == 2 for w in words) and len({w[1] for w in words}) == 1:
        return " vs ".join(w[0] for w in words) + " " + words[0][1]
    heads = [label.split(" ", 1) for label in axis.labels]
    if all(len(h) == 2 for h in heads) and len({h[0] for h in heads}) == 1:
        return heads[0][0] + " " + " vs ".join(h[1] for h in heads)
    return axis.title
