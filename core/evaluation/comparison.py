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
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import re

from core.catalog import contenders as contenders_mod
from core.catalog.contenders import Axis, Contender
from core.evaluation import review
from core.evaluation import stats
from core.export.history import safe_cell as _neutralise  # the history export's rule, reused as is
from core.catalog.prompts import OPTION_KEYS
from core.store.values import MetricRow, RequestCost, RequestStatus, StoredVote, is_same_person

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
    judged = _judgements(latest)
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
        reviewed = [r for r in reqs if r.id in judged]
        preferred = sum(judged[r.id][0] > judged[r.id][1] for r in reviewed)
        reviewed_cost = sum(r.estimated_cost or 0.0 for r in reviewed)
        out.append(ModelCost(
            endpoint=endpoint, requests=len(reqs), completed=len(done),
            failed=sum(r.status == RequestStatus.FAILED for r in reqs), images=images,
            queue_s=stats.summarise(r.queue_time_s for r in done),
            inference_s=stats.summarise(r.inference_time_s for r in done),
            total_s=stats.summarise(r.total_time_s for r in done),
            cost=round(cost, 6), cost_per_image=round(cost / images, 6) if images else None,
            reviewed_outputs=len(reviewed), preferred_outputs=preferred,
            cost_per_preferred_image=round(reviewed_cost / preferred, 6) if preferred else None,
            contender_id=reqs[0].contender_id, label=labels.get(key, contenders_mod.model_label(endpoint))))
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
    if not selection.axes:
        return []
    settings = contenders_mod.settings(selection.items)
    out: list[AxisValue] = []
    for axis in selection.axes:
        title = _axis_title(axis, selection)
        rates = {r.model: r for r in stats.axis_breakdown(votes, settings, axis.parameter)}
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
                contenders=len(ids), win_rate=rates.get(value), requests=len(reqs), completed=len(done),
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


def figures(st: Store, *, batch_id: str | None = None) -> Figures:
    selection = selection_contenders(st, batch_id=batch_id)
    latest = review.latest_votes(st.list_votes(batch_id=batch_id))
    votes = review.stats_votes(st, batch_id=batch_id, latest=latest)
    costs = st.request_costs(batch_id=batch_id)
    metric_rows = st.metric_rows(batch_id=batch_id)
    frame = _metrics_frame(st, metric_rows)
    return Figures(
        selection=selection, board=leaderboard(st, batch_id=batch_id, selection=selection, votes=votes),
        axes=_axis_summary(selection, votes, costs, metric_rows), fidelity=fidelity_from_frame(frame),
        metrics=frame, costs=_model_costs(st, costs, latest))


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
