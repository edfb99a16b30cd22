"""The comparison CSV: one row per group, the contenders' outputs side by side with their fidelity
metrics, and the votes. It lives beside the history CSV (core/export/history.py) and follows its
rules for cells.

Invariants:
- Columns: the group's (`GROUP_COLUMNS`: ids, prompt, seed, size, references, every prompt
  option), then `MODEL_FIELDS` per contender, then the votes (`VOTE_COLUMNS`). A contender's
  columns are prefixed with its endpoint id minus "fal-ai/", "/" -> "_" (`flux_schnell_face_distance`),
  followed, when its endpoint has several contenders in the selection, by its swept settings in
  words (`flux-2_lora_edit_28_steps_no_LoRA_face_distance`); `_contender` and `_settings` say its
  label and every setting it sends.
- A contender's output in a group is Review's rule (`Store.group_outputs`), else its newest
  request, so a failure shows. Votes are each rater's latest (`review.latest_votes`).
- Cells are spreadsheet-safe by the history export's rule (`core.store.safe_cell`); a cell with no
  value (None, NaN) is empty, so are metrics still pending: `python -m core export --comparison`
  measures pending images first. UTF-8 with BOM, CRLF line ends.
- A file is written under a temporary name and renamed when complete: never half a file.
"""
from __future__ import annotations

import csv
import io
import math
import re
from collections import defaultdict
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from core.catalog import contenders as contenders_mod
from core.catalog.contenders import Contender
from core.catalog.prompts import OPTION_KEYS
from core.evaluation import review
from core.evaluation.leaderboard import Contenders, selection_contenders
from core.store import Store, safe_cell
from core.values import StoredVote

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


def _model_prefix(endpoint: str) -> str:
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
        prefix = _model_prefix(c.endpoint)
        if per_endpoint[c.endpoint] > 1:
            words = [v for k, v in settings[c.id].items() if k != "model"]
            prefix += "_" + "_".join(_SLUG.sub("_", w).strip("_") for w in words if w)
        if prefix in out.values():
            prefix += "_" + c.id.split(":")[-1][:8]
        out[c.id] = prefix
    return out


def columns(prefixes: Sequence[str]) -> list[str]:
    """The CSV header for contenders with these column prefixes (`contender_prefixes`)."""
    return [*GROUP_COLUMNS, *(f"{p}_{f}" for p in prefixes for f in MODEL_FIELDS), *VOTE_COLUMNS]


def _group_rows(store: Store, batch_id: str, batch_name: str, selection: Contenders,
                prefixes: Mapping[str, str]) -> Iterator[dict[str, Any]]:
    outputs = store.group_outputs(batch_id, or_newest=True, by_contender=True)
    votes_by_group: dict[str, list[StoredVote]] = defaultdict(list)
    for v in review.latest_votes(store.list_votes(batch_id=batch_id)):
        votes_by_group[v.group_id].append(v)

    for g in store.get_groups(batch_id):
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
    return safe_cell(value)


def iter_csv(store: Store, *, batch_id: str | None = None) -> Iterator[str]:
    """The comparison CSV as text chunks: BOM and header first, then one chunk per batch."""
    selection = selection_contenders(store, batch_id=batch_id)
    prefixes = contender_prefixes(selection)
    header = columns(list(prefixes.values()))
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\r\n")
    buf.write("\ufeff")
    writer.writerow(header)
    yield buf.getvalue()
    for bid, name in store.batch_names(batch_id):
        buf = io.StringIO()
        writer = csv.writer(buf, lineterminator="\r\n")
        for row in _group_rows(store, bid, name, selection, prefixes):
            writer.writerow([_cell(row.get(c)) for c in header])
        if buf.tell():
            yield buf.getvalue()


def to_csv(store: Store, out: str | Path, *, batch_id: str | None = None) -> ComparisonExport:
    """Write the comparison CSV to `out` (via a temporary name, renamed when complete)."""
    out = Path(out)
    tmp = out.with_name(out.name + ".part")
    try:
        with open(tmp, "w", encoding="utf-8", newline="") as fh:
            for text in iter_csv(store, batch_id=batch_id):
                fh.write(text)
        tmp.replace(out)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    selection = selection_contenders(store, batch_id=batch_id)
    return ComparisonExport(path=out, groups=store.count_groups(batch_id=batch_id),
                            models=tuple(store.comparison_models(batch_id=batch_id)),
                            contenders=tuple(selection.label(c.id) for c in selection.items))


def to_csv_bytes(store: Store, *, batch_id: str | None = None) -> bytes:
    """The whole comparison CSV in memory, for a page's download button."""
    return "".join(iter_csv(store, batch_id=batch_id)).encode("utf-8")
