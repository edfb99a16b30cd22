"""The figures of a selection read the obvious way, each by its own function over every row at
once: the reference the Leaderboard's `Figures` are checked against (tally.figures of a batch,
and `every_batch`, which merges the batches' stored parts instead of reading every row).

Production keeps one way to compute each figure; these compose its per-batch pieces over a whole
selection (any batch, or every batch) the way the former public functions `model_costs`,
`fidelity_by_model`, `axis_summary` and `metrics_frame` of core/evaluation/comparison.py did."""
from __future__ import annotations

import pandas as pd

from core.evaluation import review, tally
from core.evaluation.leaderboard import selection_contenders
from core.store import Store


def model_costs(store: Store, *, batch_id: str | None = None) -> list[tally.ModelCost]:
    """Cost and latency per contender, in the order contenders first appear."""
    rows = store.request_costs(batch_id=batch_id)
    latest = review.latest_votes(store.list_votes(batch_id=batch_id))
    return tally._judged_costs(tally._unjudged_costs(store, rows), rows, latest)


def metrics_frame(store: Store, *, batch_id: str | None = None) -> pd.DataFrame:
    """One row per result image of completed requests, with the stored metrics and checks."""
    return tally.metrics_frame(store, store.metric_rows(batch_id=batch_id))


def fidelity_by_model(store: Store, *, batch_id: str | None = None) -> list[tally.ModelFidelity]:
    return tally.fidelity_from_frame(metrics_frame(store, batch_id=batch_id))


def axis_summary(store: Store, *, batch_id: str | None = None) -> list[tally.AxisValue]:
    """Per swept axis of the selection, per value in the axis's order: wins, fidelity, cost and
    latency. Empty for a selection without a sweep."""
    selection = selection_contenders(store, batch_id=batch_id)
    if not selection.axes:
        return []
    unvoted = tally._unvoted_axes(selection, store.request_costs(batch_id=batch_id),
                                  store.metric_rows(batch_id=batch_id))
    return tally._axis_win_rates(unvoted, selection, review.stats_votes(store, batch_id=batch_id))
