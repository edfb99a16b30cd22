"""What a selection's requests, images and votes add up to, per contender: cost and latency,
fidelity to the reference, what each swept setting buys, and the Leaderboard's `Figures` of one
batch or of every batch.

Definitions (the pages and the comparison CSV say the same):
- A contender's output in a group is the one rule of Review (`Store.pick_output`): its newest
  completed request whose first image (idx 0) is stored.
- Cost is fal's price as ESTIMATED when planning (`requests.estimated_cost`); fal's bill is not
  read. `cost_per_image` = cost of completed requests / their images. An output is PREFERRED when
  its latest votes judged it good (won, or "both good") more often than not (lost, or "both
  bad"); `cost_per_preferred_image` = cost of the reviewed outputs / preferred outputs, i.e. what
  one image the team likes costs at the observed hit rate.
- Latency: median and p90 of queue time, inference time and total time of completed requests.
- A swept axis value is read in wins (core/evaluation/leaderboard.py), and in fidelity, cost and
  latency over every output of the contenders with that value.

Invariants:
- What no vote changes (`Outputs`: costs, fidelity, axis values, the metrics frame) is computed
  apart from what the votes say, so a page keeps a batch's `Outputs` by `outputs_version` and a
  vote recomputes only the win rates and the reviewed and preferred outputs.
- "All batches" (`every_batch`) is merged from each batch's stored part
  (core/evaluation/batch_parts.py) and equals, number for number, the same figures read from
  every row at once (tests/evaluation/_oracles.py holds that obvious version).
- Reads only, apart from the parts the all-batches cache keeps in the store.
"""
from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
import pandas as pd

from core.catalog import contenders as contenders_mod
from core.evaluation import batch_parts, review, stats
from core.evaluation.leaderboard import Contenders, Leaderboard, axis_title, leaderboard, selection_contenders
from core.store import Store
from core.rows import MetricRow, RequestCost
from core.values import RequestStatus, StoredVote, is_same_person


@dataclass(frozen=True)
class ModelCost:
    """Per contender; the `*_s` mappings are `stats.summarise` results (n, median, p90, mean)."""
    endpoint: str
    requests: int
    completed: int
    failed: int
    images: int
    queue_s: Mapping[str, Any]
    inference_s: Mapping[str, Any]
    total_s: Mapping[str, Any]
    cost: float
    cost_per_image: float | None
    reviewed_outputs: int
    preferred_outputs: int
    cost_per_preferred_image: float | None
    contender_id: str | None = None
    label: str = ""


def data_version(store: Store, *, batch_id: str | None = None) -> tuple[Any, ...]:
    """A cheap stamp that changes whenever the figures of this selection can change (a request,
    an image, a metric or a vote written): pages cache `figures` by it."""
    return store.data_version(batch_id=batch_id)


def _judgements(latest: Sequence[StoredVote]) -> dict[str, list[int]]:
    """Per request id shown in a vote: [good, bad] counts over the latest votes."""
    out: dict[str, list[int]] = defaultdict(lambda: [0, 0])
    for v in latest:
        for side, rid in (("left", v.left_request_id), ("right", v.right_request_id)):
            good = v.verdict == side or v.verdict == "both_good"
            out[rid][0 if good else 1] += 1
    return out


def _unjudged_costs(store: Store, rows: Sequence[RequestCost]) -> list[ModelCost]:
    """Cost and latency per contender of these requests, in the order contenders first appear,
    before any vote is counted (no reviewed or preferred outputs)."""
    labels = _labels(store, rows)
    by_model: dict[str, list[RequestCost]] = {}
    for row in rows:
        by_model.setdefault(row.contender_id or row.endpoint, []).append(row)
    out = []
    for key, reqs in by_model.items():
        endpoint = reqs[0].endpoint
        done = [r for r in reqs if r.status == RequestStatus.COMPLETED]
        images = sum(r.images for r in done)
        cost = sum(r.estimated_cost or 0.0 for r in done)
        out.append(ModelCost(
            endpoint=endpoint, requests=len(reqs), completed=len(done),
            failed=sum(r.status == RequestStatus.FAILED for r in reqs), images=images,
            queue_s=stats.summarise(r.queue_time_s for r in done),
            inference_s=stats.summarise(r.inference_time_s for r in done),
            total_s=stats.summarise(r.total_time_s for r in done),
            cost=round(cost, 6), cost_per_image=round(cost / images, 6) if images else None,
            reviewed_outputs=0, preferred_outputs=0, cost_per_preferred_image=None,
            contender_id=reqs[0].contender_id, label=labels.get(key, contenders_mod.model_label(endpoint))))
    return out


def _judged_costs(costs: Sequence[ModelCost], rows: Sequence[RequestCost],
                  latest: Sequence[StoredVote]) -> list[ModelCost]:
    """`costs` with the outputs the latest votes reviewed and preferred counted. `rows`: at least
    every request shown in those votes, in planning order (the cost sums add in that order)."""
    judged = _judgements(latest)
    counts: dict[str, list[Any]] = {}   # contender key -> [reviewed, preferred, reviewed cost]
    for r in rows:
        if r.id in judged:
            c = counts.setdefault(r.contender_id or r.endpoint, [0, 0, 0])
            c[0] += 1
            c[1] += judged[r.id][0] > judged[r.id][1]
            c[2] += r.estimated_cost or 0.0
    out = []
    for cost in costs:
        reviewed, preferred, reviewed_cost = counts.get(cost.contender_id or cost.endpoint, (0, 0, 0))
        out.append(replace(cost, reviewed_outputs=reviewed, preferred_outputs=preferred,
                           cost_per_preferred_image=round(reviewed_cost / preferred, 6) if preferred else None))
    return out


def _labels(store: Store, rows: Sequence[Any]) -> dict[str, str]:
    """Contender id -> label over every contender these rows name (re-runs outside groups too)."""
    found = store.get_contenders(list(dict.fromkeys(r.contender_id for r in rows if r.contender_id)))
    return contenders_mod.labels(found.values())


@dataclass(frozen=True)
class ModelFidelity:
    """Fidelity of a contender's outputs to their reference; summaries are `stats.summarise` results."""
    endpoint: str
    images: int
    measured: int
    pending: int
    errors: int
    faces_compared: int
    same_person: int
    no_face_output: int
    face_distance: Mapping[str, Any]
    phash_distance: Mapping[str, Any]
    ciede2000: Mapping[str, Any]
    ssim: Mapping[str, Any]
    surprises: int
    contender_id: str | None = None
    label: str = ""

    @property
    def same_person_share(self) -> float | None:
        return self.same_person / self.faces_compared if self.faces_compared else None


def metrics_frame(store: Store, rows: Sequence[MetricRow]) -> pd.DataFrame:
    """One row per result image of these rows (of completed requests, `Store.metric_rows`): endpoint,
    ids, contender label and the stored metrics and checks, for charts. `same_person` is the
    store's rule (`is_same_person`)."""
    frame = pd.DataFrame(rows, columns=list(MetricRow._fields))
    labels = _labels(store, rows)
    frame["contender_id"] = frame["contender_id"].fillna(frame["endpoint"])
    frame["contender"] = [labels.get(c) or contenders_mod.model_label(e)
                          for c, e in zip(frame["contender_id"], frame["endpoint"])]
    frame["pending"] = frame["metrics_at"].isna()
    frame["same_person"] = [is_same_person(s, d) for s, d in zip(frame["face_status"], frame["face_distance"])]
    return frame


def fidelity_from_frame(frame: pd.DataFrame) -> list[ModelFidelity]:
    """Fidelity per contender of the selection whose `metrics_frame` this is, in the order
    contenders first appear."""
    out = []
    for key, part in frame.groupby("contender_id", sort=False):
        ok = part[part["face_status"] == "ok"]
        measured = part[~part["pending"]]
        out.append(ModelFidelity(
            endpoint=str(part["endpoint"].iloc[0]), contender_id=str(key),
            label=str(part["contender"].iloc[0]), images=len(part), measured=len(measured),
            pending=int(part["pending"].sum()), errors=int(part["metrics_error"].notna().sum()),
            faces_compared=len(ok), same_person=int((ok["same_person"] == True).sum()),  # noqa: E712
            no_face_output=int((part["face_status"] == "no_face_output").sum()),
            face_distance=stats.summarise(ok["face_distance"].tolist()),
            phash_distance=stats.summarise(measured["phash_distance"].tolist()),
            ciede2000=stats.summarise(measured["ciede2000"].tolist()),
            ssim=stats.summarise(measured["ssim"].tolist()),
            surprises=int((part["check_flags"] != "").sum())))
    return out


@dataclass(frozen=True)
class AxisValue:
    """What one value of a swept axis buys ("28 steps" on "7 vs 28 steps"): its win rate over
    the votes that differ in this setting alone (None without such votes), and over every output
    of the contenders with this value: fidelity, cost and latency."""
    axis: str
    parameter: str
    endpoint: str
    value: str
    contenders: int
    win_rate: stats.WinRate | None
    requests: int
    completed: int
    images: int
    same_person_share: float | None
    face_distance_median: float | None
    cost_per_image: float | None
    inference_median_s: float | None
    total_median_s: float | None


def _axis_win_rates(values: Sequence[AxisValue], selection: Contenders,
                    votes: Sequence[stats.Vote]) -> list[AxisValue]:
    """The axis values with their win rates over these votes."""
    if not values:
        return list(values)
    settings = contenders_mod.settings(selection.items)
    rates = {axis.parameter: {r.model: r for r in stats.axis_breakdown(votes, settings, axis.parameter)}
             for axis in selection.axes}
    return [replace(v, win_rate=rates[v.parameter].get(v.value)) for v in values]


def _unvoted_axes(selection: Contenders, costs: Sequence[RequestCost],
                  metrics: Sequence[MetricRow]) -> list[AxisValue]:
    """Per swept axis of the selection, per value in the axis's order: fidelity, cost and latency
    over every output of the contenders with that value, before any vote is counted (no win rates)."""
    out: list[AxisValue] = []
    for axis in selection.axes:
        title = axis_title(axis, selection)
        members = [c for c in selection.items if c.endpoint == axis.endpoint]
        for value in axis.labels:
            ids = {c.id for c in members if axis.label_of(c) == value}
            reqs = [r for r in costs if r.contender_id in ids]
            done = [r for r in reqs if r.status == RequestStatus.COMPLETED]
            images = sum(r.images for r in done)
            cost = sum(r.estimated_cost or 0.0 for r in done)
            shots = [m for m in metrics if m.contender_id in ids]
            faces = [m for m in shots if m.face_status == "ok" and m.face_distance is not None]
            same = sum(bool(is_same_person(m.face_status, m.face_distance)) for m in faces)
            out.append(AxisValue(
                axis=title, parameter=axis.parameter, endpoint=axis.endpoint, value=value,
                contenders=len(ids), win_rate=None, requests=len(reqs), completed=len(done),
                images=images, same_person_share=same / len(faces) if faces else None,
                face_distance_median=stats.summarise(m.face_distance for m in faces)["median"],
                cost_per_image=round(cost / images, 6) if images else None,
                inference_median_s=stats.summarise(r.inference_time_s for r in done)["median"],
                total_median_s=stats.summarise(r.total_time_s for r in done)["median"]))
    return out


@dataclass(frozen=True)
class Figures:
    """Everything the Leaderboard shows of a selection, each exactly as its own function gives
    it over the selection's rows (`selection_contenders`, `leaderboard`, the axis values, fidelity
    and cost per contender, `metrics_frame`), from one read of the votes, requests and metrics."""
    selection: Contenders
    board: Leaderboard
    axes: list[AxisValue]
    fidelity: list[ModelFidelity]
    metrics: pd.DataFrame
    costs: list[ModelCost]


@dataclass(frozen=True)
class Outputs:
    """A batch's figures that no vote changes: what its requests and images say (`figures`
    without the votes). Pages keep it by `outputs_version`, so a vote recomputes only what the
    votes say."""
    batch_id: str
    selection: Contenders
    axes: list[AxisValue]        # win rates None
    fidelity: list[ModelFidelity]
    metrics: pd.DataFrame
    costs: list[ModelCost]       # no reviewed or preferred outputs
    requests: tuple[RequestCost, ...]   # the requests, for the votes' judged outputs


def outputs_version(store: Store, *, batch_id: str) -> tuple[str, int | None]:
    """A stamp of the batch's requests and images (its write stamp: SQLite triggers bump it on
    every write to them; votes leave it)."""
    return batch_id, store.batch_stamps().get(batch_id)


def batch_outputs(store: Store, *, batch_id: str) -> Outputs:
    """The batch's `Outputs`, from one read of its requests and metrics."""
    selection = selection_contenders(store, batch_id=batch_id)
    costs = store.request_costs(batch_id=batch_id)
    metric_rows = store.metric_rows(batch_id=batch_id)
    frame = metrics_frame(store, metric_rows)
    return Outputs(batch_id=batch_id, selection=selection, axes=_unvoted_axes(selection, costs, metric_rows),
                   fidelity=fidelity_from_frame(frame), metrics=frame, costs=_unjudged_costs(store, costs),
                   requests=tuple(costs))


def figures(store: Store, *, batch_id: str | None = None, outputs: Outputs | None = None) -> Figures:
    """The Leaderboard's figures of a batch, or of every batch (merged from each batch's stored
    figures: `every_batch`). `outputs`: the batch's `Outputs` when kept (then only the votes are
    read)."""
    if batch_id is None:
        return every_batch(store)
    if outputs is None:
        outputs = batch_outputs(store, batch_id=batch_id)
    elif outputs.batch_id != batch_id:
        raise ValueError(f"outputs of batch {outputs.batch_id!r} given for batch {batch_id!r}")
    selection = outputs.selection
    latest = review.latest_votes(store.list_votes(batch_id=batch_id))
    votes = review.stats_votes(store, batch_id=batch_id, latest=latest)
    return Figures(
        selection=selection, board=leaderboard(store, batch_id=batch_id, selection=selection, votes=votes),
        axes=_axis_win_rates(outputs.axes, selection, votes), fidelity=outputs.fidelity,
        metrics=outputs.metrics, costs=_judged_costs(outputs.costs, outputs.requests, latest))

def _summarise(values: Any) -> dict:
    """`stats.summarise` of the values (already free of None and NaN), as a float array."""
    return stats.summarise(np.asarray(values, dtype=float))


def every_batch(store: Store) -> Figures:
    """`figures` over every batch, each part exactly as its own function gives it over every
    batch (`metrics` holds only the contender and metric columns, one value per row: the
    distributions the page charts), merged from the batches' stored parts."""
    selection = selection_contenders(store)
    latest = review.latest_votes(store.list_votes())
    votes = review.stats_votes(store, latest=latest)
    parts = batch_parts.batch_parts(store)
    costs, fid = batch_parts.merged(parts, "costs"), batch_parts.merged(parts, "fidelity")
    # labelled as each function labels its rows: over the contenders those rows name
    cost_labels = contenders_mod.labels(store.get_contenders([k for k, c in costs.items() if c["contender_id"]]).values())
    labels = contenders_mod.labels(store.get_contenders(list(fid)).values())

    def label(key: str, endpoint: str) -> str:
        return labels.get(key) or contenders_mod.model_label(endpoint)

    model_costs_ = [ModelCost(
        endpoint=c["endpoint"], requests=c["requests"], completed=c["completed"], failed=c["failed"],
        images=c["images"], queue_s=_summarise(c["queue_time_s"]),
        inference_s=_summarise(c["inference_time_s"]), total_s=_summarise(c["total_time_s"]),
        cost=round(c["cost"], 6), cost_per_image=round(c["cost"] / c["images"], 6) if c["images"] else None,
        reviewed_outputs=0, preferred_outputs=0, cost_per_preferred_image=None,
        contender_id=c["contender_id"], label=cost_labels.get(key, contenders_mod.model_label(c["endpoint"])))
        for key, c in costs.items()]
    # what the votes say is read from them, not kept: only the requests they show are read
    judged_ids = sorted({rid for v in latest for rid in (v.left_request_id, v.right_request_id)})
    model_costs_ = _judged_costs(model_costs_, store.request_costs(request_ids=judged_ids), latest)
    fidelity = [ModelFidelity(
        endpoint=f["endpoint"], contender_id=key, label=label(key, f["endpoint"]), images=f["images"],
        measured=f["measured"], pending=f["pending"], errors=f["errors"], faces_compared=f["faces_compared"],
        same_person=f["same_person"], no_face_output=f["no_face_output"],
        face_distance=_summarise(f["faces"]), phash_distance=_summarise(f["measured_phash_distance"]),
        ciede2000=_summarise(f["measured_ciede2000"]), ssim=_summarise(f["measured_ssim"]),
        surprises=f["surprises"]) for key, f in fid.items()]
    columns: dict[str, list[Any]] = {"contender": [], **{k: [] for k in batch_parts.METRICS}}
    for key, f in fid.items():
        for k in batch_parts.METRICS:
            n = len(f[f"all_{k}"])
            columns["contender"].append(np.full(n, label(key, f["endpoint"]), dtype=object))
            columns[k].append(np.asarray(f[f"all_{k}"], dtype=float))
            for other in batch_parts.METRICS:
                if other != k:
                    columns[other].append(np.full(n, np.nan))
    distribution = pd.DataFrame({k: np.concatenate(v) if v else np.array([], dtype=object if k == "contender" else float)
                                 for k, v in columns.items()})
    axes = []
    if selection.axes:
        for axis in selection.axes:
            title = axis_title(axis, selection)
            members = [c for c in selection.items if c.endpoint == axis.endpoint]
            for value in axis.labels:
                ids = {c.id for c in members if axis.label_of(c) == value}
                cs = [c for k, c in costs.items() if k in ids]
                fs = [f for k, f in fid.items() if k in ids]
                images = sum(c["images"] for c in cs)
                cost = sum(c["cost"] for c in cs)
                faces = np.concatenate([f["faces"] for f in fs]) if fs else np.array([])
                same = sum(f["same_person"] for f in fs)
                axes.append(AxisValue(
                    axis=title, parameter=axis.parameter, endpoint=axis.endpoint, value=value,
                    contenders=len(ids), win_rate=None, requests=sum(c["requests"] for c in cs),
                    completed=sum(c["completed"] for c in cs), images=images,
                    same_person_share=same / len(faces) if len(faces) else None,
                    face_distance_median=_summarise(faces)["median"],
                    cost_per_image=round(cost / images, 6) if images else None,
                    inference_median_s=_summarise(
                        np.concatenate([c["inference_time_s"] for c in cs]) if cs else np.array([]))["median"],
                    total_median_s=_summarise(
                        np.concatenate([c["total_time_s"] for c in cs]) if cs else np.array([]))["median"]))
    return Figures(selection=selection, board=leaderboard(store, selection=selection, votes=votes),
                   axes=_axis_win_rates(axes, selection, votes), fidelity=fidelity, metrics=distribution,
                   costs=model_costs_)
