"""The comparison that decides: leaderboard from blind votes, fidelity and cost/latency per model,
and the comparison CSV (one row per group).

Definitions (the pages and the CSV say the same):
- Votes are each rater's LATEST verdict per item (`review.stats_votes`); win rates, intervals,
  Bradley-Terry and agreement are `core.evaluation.stats` on those (win rate = wins / decisive votes; ties
  reported beside it).
- A model's output in a group is the one rule of Review (`store.pick_output`): its newest
  completed request whose first image (idx 0) is stored; in the CSV, else its newest request (so
  a failure shows).
- Cost is fal's price as ESTIMATED when planning (`requests.estimated_cost`); fal's bill is not
  read. `cost_per_image` = cost of completed requests / their images. An output is PREFERRED when
  its latest votes judged it good (won, or "both good") more often than not (lost, or "both
  bad"); `cost_per_preferred_image` = cost of the reviewed outputs / preferred outputs, i.e. what
  one image the team likes costs at the observed hit rate.
- Latency: median and p90 of queue time, inference time and total time of completed requests.
- CSV: spreadsheet-safe like the history export (`core.export.history`'s neutralising helper), UTF-8
  with BOM, CRLF; per model columns are prefixed with the endpoint id minus "fal-ai/", "/" -> "_"
  (e.g. `flux_schnell_face_distance`); a cell with no value is empty. Metrics still pending are
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
class Leaderboard:
    """Everything the blind votes say. `breakdowns[factor][value]` are the win rates of the votes
    on groups with that option value; only factors some voted group sets are present."""
    votes: int
    raters: int
    groups: int
    win_rates: tuple[stats.WinRate, ...]
    pairwise: Mapping[tuple[str, str], tuple[int, int, int]]
    strengths: Mapping[str, float]
    elo: Mapping[str, float]
    breakdowns: Mapping[str, Mapping[str, list[stats.WinRate]]]
    agreement: Mapping[str, Any]

    @property
    def ranking(self) -> list[str]:
        """Models strongest first (Bradley-Terry, which uses every pairwise comparison)."""
        return list(self.strengths)


def leaderboard(st: Store, *, batch_id: str | None = None) -> Leaderboard:
    votes = review.stats_votes(st, batch_id=batch_id)
    breakdowns = {}
    for factor in BREAKDOWN_FACTORS:
        if any(factor in v.factors for v in votes):
            breakdowns[factor] = stats.breakdown(votes, factor)
    return Leaderboard(
        votes=len(votes), raters=len({v.rater for v in votes}), groups=len({v.group_id for v in votes}),
        win_rates=tuple(stats.win_rates(votes)), pairwise=stats.pairwise_counts(votes),
        strengths=stats.bradley_terry(votes), elo=stats.elo(votes), breakdowns=breakdowns,
        agreement=stats.agreement(votes))


# ---------------------------------------------------------------------------- cost and latency


@dataclass(frozen=True)
class ModelCost:
    """Per model; the `*_s` mappings are `stats.summarise` results (n, median, p90, mean)."""
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


def data_version(st: Store, *, batch_id: str | None = None) -> tuple[Any, ...]:
    """A cheap stamp that changes whenever the figures of `model_costs`, `metrics_frame` or
    `fidelity_by_model` for this selection can change: pages cache those aggregates by it."""
    return st.data_version(batch_id=batch_id)


def _judgements(st: Store, batch_id: str | None) -> dict[str, list[int]]:
    """Per request id shown in a vote: [good, bad] counts over the latest votes."""
    out: dict[str, list[int]] = defaultdict(lambda: [0, 0])
    for v in review.latest_votes(st.list_votes(batch_id=batch_id)):
        for side, rid in (("left", v.left_request_id), ("right", v.right_request_id)):
            good = v.verdict == side or v.verdict == "both_good"
            out[rid][0 if good else 1] += 1
    return out


def model_costs(st: Store, *, batch_id: str | None = None) -> list[ModelCost]:
    """Cost and latency per model, in the order models first appear."""
    rows = st.request_costs(batch_id=batch_id)
    judged = _judgements(st, batch_id)
    by_model: dict[str, list[RequestCost]] = {}
    for row in rows:
        by_model.setdefault(row.endpoint, []).append(row)
    out = []
    for endpoint, reqs in by_model.items():
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
            cost_per_preferred_image=round(reviewed_cost / preferred, 6) if preferred else None))
    return out


# ---------------------------------------------------------------------------- fidelity per model


@dataclass(frozen=True)
class ModelFidelity:
    """Fidelity of a model's outputs to their reference; summaries are `stats.summarise` results."""
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

    @property
    def same_person_share(self) -> float | None:
        return self.same_person / self.faces_compared if self.faces_compared else None


def metrics_frame(st: Store, *, batch_id: str | None = None) -> pd.DataFrame:
    """One row per result image of completed requests: endpoint, ids and the stored metrics and
    checks (for charts). `same_person` is the store's rule (`is_same_person`)."""
    import pandas as pd

    rows = st.metric_rows(batch_id=batch_id)
    frame = pd.DataFrame(rows, columns=list(MetricRow._fields))
    frame["pending"] = frame["metrics_at"].isna()
    frame["same_person"] = [is_same_person(s, d) for s, d in zip(frame["face_status"], frame["face_distance"])]
    return frame


def fidelity_by_model(st: Store, *, batch_id: str | None = None) -> list[ModelFidelity]:
    frame = metrics_frame(st, batch_id=batch_id)
    out = []
    for endpoint, part in frame.groupby("endpoint", sort=False):
        ok = part[part["face_status"] == "ok"]
        measured = part[~part["pending"]]
        out.append(ModelFidelity(
            endpoint=str(endpoint), images=len(part), measured=len(measured),
            pending=int(part["pending"].sum()), errors=int(part["metrics_error"].notna().sum()),
            faces_compared=len(ok), same_person=int((ok["same_person"] == True).sum()),  # noqa: E712
            no_face_output=int((part["face_status"] == "no_face_output").sum()),
            face_distance=stats.summarise(ok["face_distance"].tolist()),
            phash_distance=stats.summarise(measured["phash_distance"].tolist()),
            ciede2000=stats.summarise(measured["ciede2000"].tolist()),
            ssim=stats.summarise(measured["ssim"].tolist()),
            surprises=int((part["check_flags"] != "").sum())))
    return out


# ---------------------------------------------------------------------------- comparison CSV


MODEL_FIELDS = (
    "endpoint", "request_id", "status", "payload_hash", "image_url", "image_storage_path", "image_width",
    "image_height", "face_status", "face_distance", "same_person", "phash_distance", "ciede2000", "ssim",
    "check_flags", "metrics_error", "queue_time_s", "inference_time_s", "estimated_cost", "wins", "losses",
)
GROUP_COLUMNS = ("group_id", "batch_id", "batch_name", "prompt", "seed", "image_size", "reference_ids",
                 *OPTION_KEYS)
VOTE_COLUMNS = ("votes", "raters", "both_good", "both_bad", "vote_detail")


@dataclass(frozen=True)
class ComparisonExport:
    path: Path
    groups: int
    models: tuple[str, ...]


def model_prefix(endpoint: str) -> str:
    return endpoint.removeprefix("fal-ai/").replace("/", "_")


def comparison_columns(models: Sequence[str]) -> list[str]:
    return [*GROUP_COLUMNS, *(f"{model_prefix(m)}_{f}" for m in models for f in MODEL_FIELDS), *VOTE_COLUMNS]


def comparison_models(st: Store, *, batch_id: str | None = None) -> list[str]:
    """The endpoints compared, in the order they first appear."""
    return st.comparison_models(batch_id=batch_id)


def _group_rows(st: Store, batch_id: str, batch_name: str,
                models: Sequence[str]) -> Iterator[dict[str, Any]]:
    outputs = st.group_outputs(batch_id, or_newest=True)
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
        for m in models:
            p = model_prefix(m)
            out = outputs.get(g.id, {}).get(m)
            if out is None:
                continue
            req, img = out.request, out.image
            metrics = img.metrics if img is not None else None
            row.update({
                f"{p}_endpoint": m, f"{p}_request_id": req.id, f"{p}_status": req.status,
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
                f"{p}_wins": sum(v.winner == m for v in votes),
                f"{p}_losses": sum(v.winner is not None and v.winner != m
                                   and m in (v.left_endpoint, v.right_endpoint) for v in votes),
            })
        row.update({
            "votes": len(votes), "raters": len({v.rater.casefold() for v in votes}),
            "both_good": sum(v.verdict == "both_good" for v in votes),
            "both_bad": sum(v.verdict == "both_bad" for v in votes),
            "vote_detail": "; ".join(
                f"{v.rater}: {v.winner or v.verdict.replace('_', ' ')}" + (f" ({v.note})" if v.note else "")
                for v in votes) or None,
        })
        yield row


def _cell(value: Any) -> Any:
    if value is None:
        return ""
    if isinstance(value, float) and math.isnan(value):
        return ""
    return _neutralise(value)


def iter_comparison_csv(st: Store, *, batch_id: str | None = None) -> Iterator[str]:
    """The comparison CSV as text chunks: BOM and header first, then one chunk per batch."""
    models = comparison_models(st, batch_id=batch_id)
    columns = comparison_columns(models)
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\r\n")
    buf.write("\ufeff")
    writer.writerow(columns)
    yield buf.getvalue()
    for bid, name in st.batch_names(batch_id):
        buf = io.StringIO()
        writer = csv.writer(buf, lineterminator="\r\n")
        for row in _group_rows(st, bid, name, models):
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
    return ComparisonExport(path=out, groups=st.count_groups(batch_id=batch_id), models=tuple(comparison_models(st, batch_id=batch_id)))


def comparison_csv_bytes(st: Store, *, batch_id: str | None = None) -> bytes:
    """The whole comparison CSV in memory, for a page's download button."""
    return "".join(iter_comparison_csv(st, batch_id=batch_id)).encode("utf-8")
