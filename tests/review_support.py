"""Batches with completed, stored results for the review, comparison and leaderboard tests,
recorded through the store in the runner's order (`tests/results.record_result`; no fal needed)."""
from __future__ import annotations

import io

from PIL import Image

from core.batches import service
from core.photos import references
from core.catalog import registry
from core.values import RequestRecord
from core.config import load_settings
from core.store import open_store
from core.blobs import open_storage
from tests.results import record_result

SCHNELL, EDIT = registry.DEFAULT_MODELS
THIRD = "fal-ai/flux-2/edit"
COLOURS = ["blue", "green", "yellow", "purple", "orange", "teal", "pink", "brown"]


def png(colour: str, size=(64, 64)) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", size, colour).save(buf, "PNG")
    return buf.getvalue()


def complete(st, storage, rec: RequestRecord, colour: str = "blue", *, inference_s: float = 1.0) -> None:
    """Mark `rec` completed with one stored 64x64 PNG result."""
    record_result(st, storage, rec.id, [png(colour)], inference_s=inference_s)


def completed_batch(name: str = "review", *, models=(SCHNELL, EDIT), options=None, seeds=(1,),
                    skip: tuple[str, ...] = (), inference=None):
    """A batch whose requests all completed with one stored image each (except endpoints in
    `skip`, left planned); `inference(endpoint, n)` gives the n-th (0-based) inference time of a
    model. Returns (batch, groups in order, {group_id: {endpoint: request}})."""
    s = load_settings()
    s.ensure_dirs()
    st = open_store(s)
    storage = open_storage(s)
    spec = {"name": name, "models": list(models), "seeds": list(seeds),
            "options": options or {"subject": ["Woman", "Man"]}}
    if any(registry.get_endpoint(m).mode == "edit" for m in models):
        ref = references.add_reference(st, storage, png("red", (320, 320)), role="face",
                                       filename="face.png", settings=s)
        spec["references"] = [ref.id]
    batch = st.create_batch(service.plan_batch(spec, store=st).new_batch(), dry_run=False)
    by_group: dict[str, dict[str, RequestRecord]] = {}
    seen: dict[str, int] = {}
    for i, rec in enumerate(st.batch_requests(batch.id)):
        by_group.setdefault(rec.group_id, {})[rec.endpoint] = rec
        n = seen[rec.endpoint] = seen.get(rec.endpoint, -1) + 1
        if rec.endpoint not in skip:
            complete(st, storage, rec, COLOURS[i % len(COLOURS)],
                     inference_s=inference(rec.endpoint, n) if inference else 1.0)
    groups = st.get_groups(batch.id)
    st.close()
    return batch, groups, by_group


LORA = {"path": "https://example.com/loras/studio-style.safetensors", "scale": 0.8}
# the README's example plan: schnell, and the edit model at 7 / 28 steps with and without a LoRA
SWEEP_SPEC = {
    "name": "steps and LoRA",
    "options": {"subject": ["Woman model"], "pose": ["Standing", "Walking"], "aspect_ratio": ["3:4"]},
    "models": [SCHNELL, EDIT],
    "params": {EDIT: {"guidance_scale": 3.5}},
    "sweep": {EDIT: {"num_inference_steps": [7, 28], "loras": [[], [LORA]]}},
    "seeds": [11],
}


def completed_sweep_batch(name: str = "steps and LoRA"):
    """The example sweep plan (2 variants x 1 seed x 5 contenders) with every request completed
    and one stored image each. Returns (batch, groups in order, {group_id: {contender_id: request}})."""
    s = load_settings()
    s.ensure_dirs()
    st = open_store(s)
    storage = open_storage(s)
    ref = references.add_reference(st, storage, png("red", (320, 320)), role="face",
                                   filename="face.png", settings=s)
    spec = {**SWEEP_SPEC, "name": name, "references": [ref.id]}
    batch = st.create_batch(service.plan_batch(spec, store=st).new_batch(), dry_run=False)
    by_group: dict[str, dict[str, RequestRecord]] = {}
    for i, rec in enumerate(st.batch_requests(batch.id)):
        by_group.setdefault(rec.group_id, {})[rec.contender_id] = rec
        complete(st, storage, rec, COLOURS[i % len(COLOURS)], inference_s=1.0 + i)
    groups = st.get_groups(batch.id)
    st.close()
    return batch, groups, by_group
