"""The all-batches cache: each batch's part of the figures "all batches" shows, kept in the store.

"All batches" is the sum of the batches. A batch's part is what its own requests and images give
(`_batch_part`: per contender counts, sums, and the values that medians and the distribution chart
need), with no vote in it. `batch_parts` keeps each part in the store (`Store.save_figures`) at
the batch's write stamp and recomputes only the batches written since: a request completing or a
metric stored bumps the stamp, a vote does not. `merged` adds the parts up for
core/evaluation/tally.py, which reads what the votes say from the votes on each visit.

Invariants:
- A stored part is used only at the stamp it was computed at (`Store.batch_stamps`).
- Parts are JSON text with every value list as base64 little-endian float64 bytes: exact, and read
  back without parsing a number (80,000 values decode in milliseconds). Decoded, a list is a
  float64 array; None and NaN are never in one.
- Merging is order-exact: counts add up, value lists are joined and sums added in planning order,
  and contenders are ordered by where they first appear, so the merged figures equal the figures
  read from every row at once.
- A read-only data directory, or a database locked for long, only costs time: the parts are
  computed on each visit and not kept.
"""
from __future__ import annotations

import base64
import json
import math
from collections import defaultdict
from collections.abc import Sequence
from typing import Any

import numpy as np

from core.errors import StoreUnavailable
from core.store import Store
from core.store.figures import NO_BATCH
from core.values import RequestStatus, is_same_person

# the value lists of a part: latency phases per request, metrics per image
PHASES = ("queue_time_s", "inference_time_s", "total_time_s")
METRICS = ("face_distance", "phash_distance", "ciede2000", "ssim")


def _value(x: Any) -> bool:
    return x is not None and not (isinstance(x, float) and math.isnan(x))


def _batch_part(store: Store, batch_key: str) -> dict[str, Any]:
    """One batch's share of the figures over every batch that no vote changes (JSON-ready);
    `NO_BATCH` for requests recorded without a batch."""
    kw: dict[str, Any] = {"unbatched": True} if batch_key == NO_BATCH else {"batch_id": batch_key}
    first_request, first_image = store.first_appearances(**kw)
    costs: dict[str, dict[str, Any]] = {}
    for r in store.request_costs(**kw):
        key = r.contender_id or r.endpoint
        c = costs.get(key)
        if c is None:
            c = costs[key] = {"endpoint": r.endpoint, "contender_id": r.contender_id, "first": first_request[key],
                              "requests": 0, "completed": 0, "failed": 0, "images": 0, "cost": 0.0,
                              **{p: [] for p in PHASES}}
        c["requests"] += 1
        if r.status == RequestStatus.COMPLETED:
            c["completed"] += 1
            c["images"] += r.images
            c["cost"] += r.estimated_cost or 0.0
            for phase in PHASES:
                if _value(getattr(r, phase)):
                    c[phase].append(getattr(r, phase))
        elif r.status == RequestStatus.FAILED:
            c["failed"] += 1
    fid: dict[str, dict[str, Any]] = {}
    for m in store.metric_rows(**kw):
        key = m.contender_id if m.contender_id is not None else m.endpoint
        f = fid.get(key)
        if f is None:
            f = fid[key] = {"endpoint": m.endpoint, "first": first_image[key], "images": 0, "measured": 0,
                            "pending": 0, "errors": 0, "faces_compared": 0, "same_person": 0,
                            "no_face_output": 0, "surprises": 0, "faces": [],
                            **{f"measured_{k}": [] for k in METRICS[1:]}, **{f"all_{k}": [] for k in METRICS}}
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
        for k in METRICS:
            v = getattr(m, k)
            if _value(v):
                f[f"all_{k}"].append(v)
                if not pending and k != "face_distance":
                    f[f"measured_{k}"].append(v)
    return {"costs": costs, "fidelity": fid}


def _encode(part: dict[str, Any]) -> str:
    """A part as JSON text, each value list as base64 float64 bytes (exact, and read back without
    parsing a number: 80,000 values decode in milliseconds)."""

    def pack(item: dict[str, Any]) -> dict[str, Any]:
        return {k: {"f8": base64.b64encode(np.asarray(v, dtype="<f8").tobytes()).decode("ascii")}
                if isinstance(v, list) and k != "first" else v for k, v in item.items()}

    return json.dumps({section: {key: pack(item) for key, item in part[section].items()}
                       for section in ("costs", "fidelity")}, separators=(",", ":"))


def _decode(text: str) -> dict[str, Any]:
    """`_encode`'s text back, value lists as float64 arrays."""

    def unpack(item: dict[str, Any]) -> dict[str, Any]:
        return {k: np.frombuffer(base64.b64decode(v["f8"]), dtype="<f8") if isinstance(v, dict) else v
                for k, v in item.items()}

    raw = json.loads(text)
    return {section: {key: unpack(item) for key, item in raw[section].items()} for section in raw}


def batch_parts(store: Store) -> list[dict[str, Any]]:
    """Every batch's part: stored ones at their batch's current stamp, the others computed and
    stored (not in a read-only data directory: then computed each time)."""
    stamps = store.batch_stamps()
    stored = store.stored_figures(list(stamps))
    parts, fresh = [], []
    for batch_key, stamp in stamps.items():
        kept = stored.get(batch_key)
        if kept is not None and kept[0] == stamp:
            parts.append(_decode(kept[1]))
            continue
        text = _encode(_batch_part(store, batch_key))
        parts.append(_decode(text))
        fresh.append((batch_key, stamp, text))
    if fresh and not store.read_only:
        try:
            store.save_figures(fresh)
        except StoreUnavailable:  # locked for long by a writer: the next visit stores them
            pass
    return parts


def merged(parts: Sequence[dict[str, Any]], section: str) -> dict[str, dict[str, Any]]:
    """Per contender key, its parts over the batches, in the order contenders first appear."""
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
        total = dict(items[0])
        for name, value in items[0].items():
            if name in ("endpoint", "contender_id", "first"):
                continue
            if isinstance(value, np.ndarray):
                total[name] = np.concatenate([item[name] for item in items])
            else:
                for item in items[1:]:   # in planning order, as the rows are summed
                    value += item[name]
                total[name] = value
        out[key] = total
    return out
