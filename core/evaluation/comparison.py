"""The comparison that decides: leaderboard from blind votes, fidelity and cost/latency per
CONTENDER (an endpoint at one parameter set, core/catalog/contenders.py), what each swept setting
buys, and the comparison CSV (one row per group).

Definitions (the pages and the CSV say the same):
- Everything is per contender, named by `contenders.labels` over the contenders of the selection
  (`Store.contenders_in`): a plain two-model batch has one contender per model, labelled with the
  model's name alone, so it reads as it always did.
- Votes are each rater's LATEST verdict per item (`review.stats_votes`); win rates, intervals,
  Bradley-Terry and agreement are `core.evaluation.stats` on those (win rate = wins / decisive votes; ties
  reported beside it).
- Strengths: Bradley-Terry with bootstrap intervals over whole groups
  (`stats.bradley_terry_intervals`); win rates with Wilson intervals.
- A swept AXIS (`contenders.swept_axes`: "7 vs 28 steps", "with vs without the LoRA") is read in
  wins (`stats.axis_breakdown`: only votes between contenders that differ in that setting alone),
  fidelity, cost and latency (every output of the contenders with that value).
- A contender's output in a group is the one rule of Review (`store.pick_output`): its newest
  completed request whose first image (idx 0) is stored; in the CSV, else its newest request (so
  a failure shows).
- Cost is fal's price as ESTIMATED when planning (`requests.estimated_cost`); fal's bill is not
  read. `cost_per_image` = cost of completed requests / their images. An output is PREFERRED when
  its latest votes judged it good (won, or "both good") more often than not (lost, or "both
  bad"); `cost_per_preferred_image` = cost of the reviewed outputs / preferred outputs, i.e. what
  one image the team likes costs at the observed hit rate.
- Latency: median and p90 of queue time, inference time and total time of completed requests.
- CSV: spreadsheet-safe like the history export (`core.export.history`'s neutralising helper), UTF-8
  with BOM, CRLF; per contender columns are prefixed with the endpoint id minus "fal-ai/", "/" ->
  "_" (e.g. `flux_schnell_face_distance`), followed, when an endpoint has several contenders, by
  its swept settings in words (`flux-2_lora_edit_28_steps_no_LoRA_face_distance`); each
  contender's `_contender` and `_settings` columns say its label and every setting it sends; a
  cell with no value is empty. Metrics still pending are
  empty cells: `python -m core export --comparison` measures pending images first.
"""
from __future__ import annotations

import csv
import io
import math
from collections import defaultdict
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import re

from core.catalog import contenders as contenders_mod
from core.catalog.contenders import Axis, Contender
from core.evaluation import review
from core.evaluation import stats
from core.export.history import safe_cell as _neutralise  # the history export's rule, reused as is
from core.catalog.prompts import OPTION_KEYS
from core.values import MetricRow, RequestCost, RequestStatus, StoredVote, is_same_person

if TYPE_CHECKING:
    import pandas as pd
    from core.store import Store

BREAKDOWN_FACTORS = ("pose", "style", "lighting", "angle", "aspect_ratio")


# ---------------------------------------------------------------------------- leaderboard


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


def selection_contenders(st: Store, *, batch_id: str | None = None) -> Contenders:
    """The contenders of a batch (or of every batch), labelled from what differs between them."""
    items = tuple(st.contenders_in(batch_id=batch_id))
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


def leaderboard(st: Store, *, batch_id: str | None = None,
                selection: Contenders | None = None,
                votes: Sequence[stats.Vote] | None = None) -> Leaderboard:
    """`votes`: the selection's `review.stats_votes` when already read (`figures`)."""
    votes = review.stats_votes(st, batch_id=batch_id) if votes is None else list(votes)
    selection = selection or selection_contenders(st, batch_id=batch_id)
    breakdowns = {}
    for factor in BREAKDOWN_FACTORS:
        if any(factor in v.factors for v in votes):
            breakdowns[factor] = stats.breakdown(votes, factor)
    settings = contenders_mod.settings(selection.items)
    axes = {}
    for axis in selection.axes:
        rates = stats.axis_breakdown(votes, settings, axis.parameter)
        if rates:
            axes[_axis_title(axis, selection)] = rates
    return Leaderboard(
        votes=len(votes), raters=len({v.rater for v in votes}), groups=len({v.group_id for v in votes}),
        win_rates=tuple(stats.win_rates(votes)), pairwise=stats.pairwise_counts(votes),
        strengths=stats.bradley_terry(votes), elo=stats.elo(votes), breakdowns=breakdowns,
        agreement=stats.agreement(votes),
        intervals=stats.bradley_terry_intervals(votes) if votes else (), axes=axes)


def _axis_title(axis: Axis, selection: Contenders) -> str:
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


# ---------------------------------------------------------------------------- cost and latency


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


def data_version(st: Store, *, batch_id: str | None = None) -> tuple[Any, ...]:
    """A cheap stamp that changes whenever the figures of `model_costs`, `metrics_frame` or
    `fidelity_by_model` for this selection can change: pages cache those aggregates by it."""
    return st.data_version(batch_id=batch_id)


def _judgements(latest: Sequence[StoredVote]) -> dict[str, list[int]]:
    """Per request id shown in a vote: [good, bad] counts over the latest votes."""
    out: dict[str, list[int]] = defaultdict(lambda: [0, 0])
    for v in latest:
        for side, rid in (("left", v.left_request_id), ("right", v.right_request_id)):
            good = v.verdict == side or v.verdict == "both_good"
            out[rid][0 if good else 1] += 1
    return out


def model_costs(st: Store, *, batch_id: str | None = None) -> list[ModelCost]:
    """Cost and latency per contender, in the order contenders first appear."""
    return _model_costs(st, st.request_costs(batch_id=batch_id),
                        review.latest_votes(st.list_votes(batch_id=batch_id)))


def _model_costs(st: Store, rows: Sequence[RequestCost], latest: Sequence[StoredVote]) -> list[ModelCost]:
    return _judged_costs(_unjudged_costs(st, rows), rows, latest)


def _unjudged_costs(st: Store, rows: Sequence[RequestCost]) -> list[ModelCost]:
    """`model_costs` before any vote is counted (no reviewed or preferred outputs)."""
    labels = _labels(st, None, rows)
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


def _labels(st: Store, batch_id: str | None, rows: Sequence[Any]) -> dict[str, str]:
    """Contender id -> label over every contender these rows name (re-runs outside groups too)."""
    found = st.get_contenders(list(dict.fromkeys(r.contender_id for r in rows if r.contender_id)))
    return contenders_mod.labels(found.values())


# ---------------------------------------------------------------------------- fidelity per model


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


def metrics_frame(st: Store, *, batch_id: str | None = None) -> pd.DataFrame:
    """One row per result image of completed requests: endpoint, ids and the stored metrics and
    checks (for charts). `same_person` is the store's rule (`is_same_person`)."""
    return _metrics_frame(st, st.metric_rows(batch_id=batch_id))


def _metrics_frame(st: Store, rows: Sequence[MetricRow]) -> pd.DataFrame:
    import pandas as pd

    frame = pd.DataFrame(rows, columns=list(MetricRow._fields))
    labels = _labels(st, None, rows)
    frame["contender_id"] = frame["contender_id"].fillna(frame["endpoint"])
    frame["contender"] = [labels.get(c) or contenders_mod.model_label(e)
                          for c, e in zip(frame["contender_id"], frame["endpoint"])]
    frame["pending"] = frame["metrics_at"].isna()
    frame["same_person"] = [is_same_person(s, d) for s, d in zip(frame["face_status"], frame["face_distance"])]
    return frame


def fidelity_by_model(st: Store, *, batch_id: str | None = None) -> list[ModelFidelity]:
    return fidelity_from_frame(metrics_frame(st, batch_id=batch_id))


def fidelity_from_frame(frame: pd.DataFrame) -> list[ModelFidelity]:
    """`fidelity_by_model` of the selection whose `metrics_frame` this is."""
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


# ---------------------------------------------------------------------------- swept axes


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


def axis_summary(st: Store, *, batch_id: str | None = None) -> list[AxisValue]:
    """Per swept axis of the selection, per value in the axis's order: wins, fidelity, cost and
    latency (see the module definitions). Empty for a selection without a sweep."""
    selection = selection_contenders(st, batch_id=batch_id)
    if not selection.axes:
        return []
    return _axis_summary(selection, review.stats_votes(st, batch_id=batch_id),
                         st.request_costs(batch_id=batch_id), st.metric_rows(batch_id=batch_id))


def _axis_summary(selection: Contenders, votes: Sequence[stats.Vote], costs: Sequence[RequestCost],
                  metrics: Sequence[MetricRow]) -> list[AxisValue]:
    return _axis_win_rates(_unvoted_axes(selection, costs, metrics), selection, votes)


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
    """`axis_summary` before any vote is counted (no win rates)."""
    out: list[AxisValue] = []
    for axis in selection.axes:
        title = _axis_title(axis, selection)
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


# ---------------------------------------------------------------------------- the page's figures


@dataclass(frozen=True)
class Figures:
    """Everything the Leaderboard shows of a selection, each exactly as its own function gives
    it (`selection_contenders`, `leaderboard`, `axis_summary`, `fidelity_by_model`,
    `metrics_frame`, `model_costs`), from one read of the votes, requests and metrics."""
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


def outputs_version(st: Store, *, batch_id: str) -> tuple[str, int | None]:
    """A stamp of the batch's requests and images (its write stamp: SQLite triggers bump it on
    every write to them; votes leave it)."""
    return batch_id, st.batch_stamps().get(batch_id)


def batch_outputs(st: Store, *, batch_id: str) -> Outputs:
    """The batch's `Outputs`, from one read of its requests and metrics."""
    selection = selection_contenders(st, batch_id=batch_id)
    costs = st.request_costs(batch_id=batch_id)
    metric_rows = st.metric_rows(batch_id=batch_id)
    frame = _metrics_frame(st, metric_rows)
    return Outputs(batch_id=batch_id, selection=selection, axes=_unvoted_axes(selection, costs, metric_rows),
                   fidelity=fidelity_from_frame(frame), metrics=frame, costs=_unjudged_costs(st, costs),
                   requests=tuple(costs))


def figures(st: Store, *, batch_id: str | None = None, outputs: Outputs | None = None) -> Figures:
    """The Leaderboard's figures of a batch, or of every batch (merged from each batch's stored
    figures: `every_batch`). `outputs`: the batch's `Outputs` when kept (then only the votes are
    read)."""
    if batch_id is None:
        return every_batch(st)
    if outputs is None:
        outputs = batch_outputs(st, batch_id=batch_id)
    elif outputs.batch_id != batch_id:
        raise ValueError(f"outputs of batch {outputs.batch_id!r} given for batch {batch_id!r}")
    selection = outputs.selection
    latest = review.latest_votes(st.list_votes(batch_id=batch_id))
    votes = review.stats_votes(st, batch_id=batch_id, latest=latest)
    return Figures(
        selection=selection, board=leaderboard(st, batch_id=batch_id, selection=selection, votes=votes),
        axes=_axis_win_rates(outputs.axes, selection, votes), fidelity=outputs.fidelity,
        metrics=outputs.metrics, costs=_judged_costs(outputs.costs, outputs.requests, latest))


# ---------------------------------------------------------------------------- every batch, merged
#
# "All batches" is the sum of the batches: a batch's share of the figures its requests and images
# give is computed from its own rows alone (`_batch_part`: per contender counts, sums and the
# values that medians and the distribution chart need) and kept in the store with the batch's
# write stamp. A visit recomputes only the batches written since (a request completing, a metric
# stored bump the stamp; a vote does not) and merges: counts add up, value lists are joined in
# planning order, contenders are ordered by where they first appear. What the votes say (win
# rates, strengths, reviewed outputs) is computed from the votes each visit: they are few.

_PHASES = ("queue_time_s", "inference_time_s", "total_time_s")
_METRICS = ("face_distance", "phash_distance", "ciede2000", "ssim")


def _value(x: Any) -> bool:
    return x is not None and not (isinstance(x, float) and math.isnan(x))


def _batch_part(st: Store, batch_key: str) -> dict[str, Any]:
    """One batch's share of the figures over every batch that no vote changes (JSON-ready);
    `NO_BATCH` for requests recorded without a batch."""
    from core.store.figures import NO_BATCH

    kw: dict[str, Any] = {"unbatched": True} if batch_key == NO_BATCH else {"batch_id": batch_key}
    first_request, first_image = st.first_appearances(**kw)
    costs: dict[str, dict[str, Any]] = {}
    for r in st.request_costs(**kw):
        key = r.contender_id or r.endpoint
        c = costs.get(key)
        if c is None:
            c = costs[key] = {"endpoint": r.endpoint, "contender_id": r.contender_id, "first": first_request[key],
                              "requests": 0, "completed": 0, "failed": 0, "images": 0, "cost": 0.0,
                              **{p: [] for p in _PHASES}}
        c["requests"] += 1
        if r.status == RequestStatus.COMPLETED:
            c["completed"] += 1
            c["images"] += r.images
            c["cost"] += r.estimated_cost or 0.0
            for phase in _PHASES:
                if _value(getattr(r, phase)):
                    c[phase].append(getattr(r, phase))
        elif r.status == RequestStatus.FAILED:
            c["failed"] += 1
    fid: dict[str, dict[str, Any]] = {}
    for m in st.metric_rows(**kw):
        key = m.contender_id if m.contender_id is not None else m.endpoint
        f = fid.get(key)
        if f is None:
            f = fid[key] = {"endpoint": m.endpoint, "first": first_image[key], "images": 0, "measured": 0,
                            "pending": 0, "errors": 0, "faces_compared": 0, "same_person": 0,
                            "no_face_output": 0, "surprises": 0, "faces": [],
                            **{f"measured_{k}": [] for k in _METRICS[1:]}, **{f"all_{k}": [] for k in _METRICS}}
        f["images"] += 1
        pending = m.metrics_at is None
        f["pending" if pending else "measured"] += 1
        f["errors"] += m.metrics_error is not None
        f["no_face_output"] += m.face_status == "no_face_output"
        f["surprises"] += m.check_flags != ""
        if m.face_status == "ok":
            f["faces_compared"] += 1
            f["same_person"] += is_same_person(m.face_status, m.face_distance) is True
            if _value(m.face_distance):
                f["faces"].append(m.face_distance)
        for k in _METRICS:
            v = getattr(m, k)
            if _value(v):
                f[f"all_{k}"].append(v)
                if not pending and k != "face_distance":
                    f[f"measured_{k}"].append(v)
    return {"costs": costs, "fidelity": fid}


def _encode(part: dict[str, Any]) -> str:
    """A part as JSON text, each value list as base64 float64 bytes (exact, and read back without
    parsing a number: 80,000 values decode in milliseconds)."""
    import base64
    import json

    import numpy as np

    def pack(item: dict[str, Any]) -> dict[str, Any]:
        return {k: {"f8": base64.b64encode(np.asarray(v, dtype="<f8").tobytes()).decode("ascii")}
                if isinstance(v, list) and k != "first" else v for k, v in item.items()}

    return json.dumps({section: {key: pack(item) for key, item in part[section].items()}
                       for section in ("costs", "fidelity")}, separators=(",", ":"))


def _decode(text: str) -> dict[str, Any]:
    """`_encode`'s text back, value lists as float64 arrays."""
    import base64
    import json

    import numpy as np

    def unpack(item: dict[str, Any]) -> dict[str, Any]:
        return {k: np.frombuffer(base64.b64decode(v["f8"]), dtype="<f8") if isinstance(v, dict) else v
                for k, v in item.items()}

    raw = json.loads(text)
    return {section: {key: unpack(item) for key, item in raw[section].items()} for section in raw}


def _batch_parts(st: Store) -> list[dict[str, Any]]:
    """Every batch's part: stored ones at their batch's current stamp, the others computed and
    stored (not in a read-only data directory: then computed each time)."""
    from core.errors import StoreUnavailable

    stamps = st.batch_stamps()
    stored = st.stored_figures(list(stamps))
    parts, fresh = [], []
    for batch_key, stamp in stamps.items():
        kept = stored.get(batch_key)
        if kept is not None and kept[0] == stamp:
            parts.append(_decode(kept[1]))
            continue
        text = _encode(_batch_part(st, batch_key))
        parts.append(_decode(text))
        fresh.append((batch_key, stamp, text))
    if fresh and not st.read_only:
        try:
            st.save_figures(fresh)
        except StoreUnavailable:  # locked for long by a writer: the next visit stores them
            pass
    return parts


def _merged(parts: Sequence[dict[str, Any]], section: str) -> dict[str, dict[str, Any]]:
    """Per contender key, its parts over the batches, in the order contenders first appear."""
    import numpy as np

    found: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for part in parts:
        for key, item in part[section].items():
            found[key].append(item)
    for items in found.values():
        items.sort(key=lambda i: tuple(i["first"]))
    order = sorted(found, key=lambda k: tuple(found[k][0]["first"]))
    out: dict[str, dict[str, Any]] = {}
    for key in order:
        items = found[key]
        merged = dict(items[0])
        for name, value in items[0].items():
            if name in ("endpoint", "contender_id", "first"):
                continue
            if isinstance(value, np.ndarray):
                merged[name] = np.concatenate([item[name] for item in items])
            else:
                for item in items[1:]:   # in planning order, as the rows are summed
                    value += item[name]
                merged[name] = value
        out[key] = merged
    return out


def _summarise(values: Any) -> dict:
    """`stats.summarise` of the values (already free of None and NaN), as a float array."""
    import numpy as np

    return stats.summarise(np.asarray(values, dtype=float))


def every_batch(st: Store) -> Figures:
    """`figures` over every batch, each part exactly as its own function gives it over every
    batch (`metrics` holds only the contender and metric columns, one value per row: the
    distributions the page charts), merged from the batches' stored parts."""
    import numpy as np
    import pandas as pd

    selection = selection_contenders(st)
    latest = review.latest_votes(st.list_votes())
    votes = review.stats_votes(st, latest=latest)
    parts = _batch_parts(st)
    costs, fid = _merged(parts, "costs"), _merged(parts, "fidelity")
    # labelled as each function labels its rows: over the contenders those rows name
    cost_labels = contenders_mod.labels(st.get_contenders([k for k, c in costs.items() if c["contender_id"]]).values())
    labels = contenders_mod.labels(st.get_contenders(list(fid)).values())

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
    model_costs_ = _judged_costs(model_costs_, st.request_costs(request_ids=judged_ids), latest)
    fidelity = [ModelFidelity(
        endpoint=f["endpoint"], contender_id=key, label=label(key, f["endpoint"]), images=f["images"],
        measured=f["measured"], pending=f["pending"], errors=f["errors"], faces_compared=f["faces_compared"],
        same_person=f["same_person"], no_face_output=f["no_face_output"],
        face_distance=_summarise(f["faces"]), phash_distance=_summarise(f["measured_phash_distance"]),
        ciede2000=_summarise(f["measured_ciede2000"]), ssim=_summarise(f["measured_ssim"]),
        surprises=f["surprises"]) for key, f in fid.items()]
    columns: dict[str, list[Any]] = {"contender": [], **{k: [] for k in _METRICS}}
    for key, f in fid.items():
        for k in _METRICS:
            n = len(f[f"all_{k}"])
            columns["contender"].append(np.full(n, label(key, f["endpoint"]), dtype=object))
            columns[k].append(np.asarray(f[f"all_{k}"], dtype=float))
            for other in _METRICS:
                if other != k:
                    columns[other].append(np.full(n, np.nan))
    distribution = pd.DataFrame({k: np.concatenate(v) if v else np.array([], dtype=object if k == "contender" else float)
                                 for k, v in columns.items()})
    axes = []
    if selection.axes:
        for axis in selection.axes:
            title = _axis_title(axis, selection)
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
    return Figures(selection=selection, board=leaderboard(st, selection=selection, votes=votes),
                   axes=_axis_win_rates(axes, selection, votes), fidelity=fidelity, metrics=distribution,
                   costs=model_costs_)


# ---------------------------------------------------------------------------- comparison CSV


MODEL_FIELDS = (
    "endpoint", "contender", "contender_id", "settings", "request_id", "status", "payload_hash", "image_url",
    "image_storage_path", "image_width", "image_height", "face_status", "face_distance", "same_person",
    "phash_distance", "ciede2000", "ssim", "check_flags", "metrics_error", "queue_time_s", "inference_time_s",
    "estimated_cost", "wins", "losses",
)
GROUP_COLUMNS = ("group_id", "batch_id", "batch_name", "prompt", "seed", "image_size", "reference_ids",
                 *OPTION_KEYS)
VOTE_COLUMNS = ("votes", "raters", "both_good", "both_bad", "vote_detail")
_SLUG = re.compile(r"[^A-Za-z0-9.+-]+")


@dataclass(frozen=True)
class ComparisonExport:
    path: Path
    groups: int
    models: tuple[str, ...]
    contenders: tuple[str, ...] = ()


def model_prefix(endpoint: str) -> str:
    return endpoint.removeprefix("fal-ai/").replace("/", "_")


def contender_prefixes(selection: Contenders) -> dict[str, str]:
    """Contender id -> its CSV column prefix: the model's prefix alone when the endpoint has one
    contender in the selection, else followed by its swept settings in words."""
    per_endpoint: dict[str, int] = defaultdict(int)
    for c in selection.items:
        per_endpoint[c.endpoint] += 1
    settings = contenders_mod.settings(selection.items)
    out: dict[str, str] = {}
    for c in selection.items:
        prefix = model_prefix(c.endpoint)
        if per_endpoint[c.endpoint] > 1:
            words = [v for k, v in settings[c.id].items() if k != "model"]
            prefix += "_" + "_".join(_SLUG.sub("_", w).strip("_") for w in words if w)
        if prefix in out.values():
            prefix += "_" + c.id.split(":")[-1][:8]
        out[c.id] = prefix
    return out


def comparison_columns(prefixes: Sequence[str]) -> list[str]:
    """The CSV header for contenders with these column prefixes (`contender_prefixes`)."""
    return [*GROUP_COLUMNS, *(f"{p}_{f}" for p in prefixes for f in MODEL_FIELDS), *VOTE_COLUMNS]


def comparison_models(st: Store, *, batch_id: str | None = None) -> list[str]:
    """The endpoints compared, in the order they first appear."""
    return st.comparison_models(batch_id=batch_id)


def _group_rows(st: Store, batch_id: str, batch_name: str, selection: Contenders,
                prefixes: Mapping[str, str]) -> Iterator[dict[str, Any]]:
    outputs = st.group_outputs(batch_id, or_newest=True, by_contender=True)
    votes_by_group: dict[str, list[StoredVote]] = defaultdict(list)
    for v in review.latest_votes(st.list_votes(batch_id=batch_id)):
        votes_by_group[v.group_id].append(v)

    for g in st.get_groups(batch_id):
        options = g.options
        row: dict[str, Any] = {
            "group_id": g.id, "batch_id": batch_id, "batch_name": batch_name, "prompt": g.prompt,
            "seed": g.seed, "image_size": g.image_size, "reference_ids": " ".join(g.references) or None,
            **{k: options.get(k) for k in OPTION_KEYS},
        }
        votes = votes_by_group.get(g.id, [])
        for cid, out in outputs.get(g.id, {}).items():
            p = prefixes.get(cid)
            if p is None:
                continue
            contender = selection.get(cid)
            req, img = out.request, out.image
            metrics = img.metrics if img is not None else None
            row.update({
                f"{p}_endpoint": req.endpoint, f"{p}_contender": selection.label(cid),
                f"{p}_contender_id": cid,
                f"{p}_settings": _settings_text(contender, selection) if contender else None,
                f"{p}_request_id": req.id, f"{p}_status": req.status,
                f"{p}_payload_hash": req.payload_hash,
                f"{p}_image_url": img.fal_url if img else None,
                f"{p}_image_storage_path": img.storage_path if img else None,
                f"{p}_image_width": img.width if img else None,
                f"{p}_image_height": img.height if img else None,
                f"{p}_face_status": metrics.face_status if metrics else None,
                f"{p}_face_distance": metrics.face_distance if metrics else None,
                f"{p}_same_person": metrics.same_person if metrics else None,
                f"{p}_phash_distance": metrics.phash_distance if metrics else None,
                f"{p}_ciede2000": metrics.ciede2000 if metrics else None,
                f"{p}_ssim": metrics.ssim if metrics else None,
                f"{p}_check_flags": " ".join(metrics.check_flags) if metrics else None,
                f"{p}_metrics_error": metrics.metrics_error if metrics else None,
                f"{p}_queue_time_s": req.queue_time_s, f"{p}_inference_time_s": req.inference_time_s,
                f"{p}_estimated_cost": req.estimated_cost,
                f"{p}_wins": sum(review.vote_winner(v) == cid for v in votes),
                f"{p}_losses": sum(review.vote_winner(v) not in (None, cid) and cid in review.vote_sides(v)
                                   for v in votes),
            })
        row.update({
            "votes": len(votes), "raters": len({v.rater.casefold() for v in votes}),
            "both_good": sum(v.verdict == "both_good" for v in votes),
            "both_bad": sum(v.verdict == "both_bad" for v in votes),
            "vote_detail": "; ".join(
                f"{v.rater}: " + (_winner_name(v, selection) if v.winner else v.verdict.replace("_", " "))
                + (f" ({v.note})" if v.note else "")
                for v in votes) or None,
        })
        yield row


def _settings_text(contender: Contender, selection: Contenders) -> str:
    """Every setting the contender sends apart from defaults (`contenders.describe`), plus its
    value on each swept axis even when that value is the default ("28 steps")."""
    parts = contenders_mod.describe(contender).split(" · ")
    for axis in selection.axes:
        if axis.endpoint == contender.endpoint:
            word = axis.label_of(contender)
            if word not in parts:
                parts.append(word)
    return " · ".join(parts)


def _winner_name(vote: StoredVote, selection: Contenders) -> str:
    """The winner as the vote detail names it: its endpoint when that endpoint is one contender
    in the selection (as before contenders existed), else its contender label."""
    winner = review.vote_winner(vote)
    endpoint = vote.winner or ""
    if sum(c.endpoint == endpoint for c in selection.items) <= 1:
        return endpoint
    return selection.label(winner, endpoint)


def _cell(value: Any) -> Any:
    if value is None:
        return ""
    if isinstance(value, float) and math.isnan(value):
        return ""
    return _neutralise(value)


def iter_comparison_csv(st: Store, *, batch_id: str | None = None) -> Iterator[str]:
    """The comparison CSV as text chunks: BOM and header first, then one chunk per batch."""
    selection = selection_contenders(st, batch_id=batch_id)
    prefixes = contender_prefixes(selection)
    columns = comparison_columns(list(prefixes.values()))
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\r\n")
    buf.write("\ufeff")
    writer.writerow(columns)
    yield buf.getvalue()
    for bid, name in st.batch_names(batch_id):
        buf = io.StringIO()
        writer = csv.writer(buf, lineterminator="\r\n")
        for row in _group_rows(st, bid, name, selection, prefixes):
            writer.writerow([_cell(row.get(c)) for c in columns])
        if buf.tell():
            yield buf.getvalue()


def comparison_to_csv(st: Store, out: str | Path, *,
                      batch_id: str | None = None) -> ComparisonExport:
    """Write the comparison CSV to `out` (via a temporary name, renamed when complete)."""
    out = Path(out)
    tmp = out.with_name(out.name + ".part")
    try:
        with open(tmp, "w", encoding="utf-8", newline="") as fh:
            for text in iter_comparison_csv(st, batch_id=batch_id):
                fh.write(text)
        tmp.replace(out)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    selection = selection_contenders(st, batch_id=batch_id)
    return ComparisonExport(path=out, groups=st.count_groups(batch_id=batch_id),
                            models=tuple(comparison_models(st, batch_id=batch_id)),
                            contenders=tuple(selection.label(c.id) for c in selection.items))


def comparison_csv_bytes(st: Store, *, batch_id: str | None = None) -> bytes:
    """The whole comparison CSV in memory, for a page's download button."""
    return "".join(iter_comparison_csv(st, batch_id=batch_id)).encode("utf-8")
