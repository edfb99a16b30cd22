"""Benchmark: fidelity metrics per image, and the review/leaderboard reads on a large batch.

    .venv/bin/python -m tests.bench.bench_fidelity [--images 12] [--variants 240 --seeds 20]

1. `metrics.measure` of a 1024x1024 output against a 512x512 reference (cold: models load; warm),
   and a background pass (`fidelity.compute_pending`) over stored 1024x1024 JPEG outputs.
2. A batch of variants x seeds x 2 models (default 9,600 requests, 4,800 groups), every request
   completed with one image row and half the groups voted by two raters: time of the reads a page
   rerun does (review queue, leaderboard, costs, fidelity per model) and of the comparison CSV.
"""
from __future__ import annotations

import argparse
import io
import os
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image, ImageFilter
from skimage import data


def _jpeg(img: Image.Image) -> bytes:
    buf = io.BytesIO()
    img.save(buf, "JPEG", quality=90)
    return buf.getvalue()


def bench_measure(images: int) -> None:
    from core.evaluation import fidelity
    from core.evaluation import metrics
    from core.batches import plans
    from core.photos import references
    from core import store
    from core.config import load_settings
    from core.store import open_store
    from core.store.blobs import open_storage

    reference = Image.fromarray(data.astronaut())
    output = reference.resize((1024, 1024), Image.Resampling.LANCZOS).filter(ImageFilter.GaussianBlur(1))
    t = time.perf_counter()
    metrics.measure(reference, output, same_framing=True)
    print(f"measure(), cold (models load):             {time.perf_counter() - t:6.2f} s")
    times = []
    for i in range(5):
        out = output.rotate(i)  # new pixels each time: no descriptor cache hit for the output
        t = time.perf_counter()
        metrics.measure(reference, out, same_framing=True)
        times.append(time.perf_counter() - t)
    print(f"measure(), warm, 1024px output, median of 5: {np.median(times):6.2f} s")

    settings = load_settings()
    settings.ensure_dirs()
    st = open_store(settings.db_path)
    storage = open_storage(settings)
    ref = references.add_reference(st, storage, _jpeg(reference), role="face", filename="a.jpg",
                                   settings=settings)
    plan = plans.make_plan({"name": "bench", "references": [ref.id],
                            "models": ["fal-ai/flux/schnell", "fal-ai/flux-2/lora/edit"],
                            "seeds": list(range(1, images // 2 + 1))}, store=st)
    batch = st.create_batch(plan, dry_run=False)
    for i, rec in enumerate(st.batch_requests(batch.id)):
        body = _jpeg(output.rotate(i))
        path = f"results/{rec.id}/0.jpg"
        storage.put(path, body, "image/jpeg")
        st.mark_submitted(rec.id)
        st.add_result_image(rec.id, idx=0, fal_url="https://v3.fal.media/x.jpg", storage_backend="local",
                               storage_path=path, sha256=None, width=1024, height=1024,
                               content_type="image/jpeg", size_bytes=len(body), nsfw=False)
        st.mark_completed(rec.id, response={"images": [{"url": "x", "width": 1024, "height": 1024}],
                                                   "seed": rec.seed})
    t = time.perf_counter()
    report = fidelity.compute_pending(st, storage)
    elapsed = time.perf_counter() - t
    print(f"background pass: {report.measured} stored images in {elapsed:.1f} s "
          f"= {elapsed / max(1, report.measured):.2f} s per image (checks + metrics + row update)")
    st.close()


def bench_reads(variants: int, seeds: int) -> None:
    from core.evaluation import comparison
    from core.evaluation import fidelity
    from core.batches import plans
    from core.evaluation import review
    from core import store
    from core.store import db as dbmod
    from core.config import load_settings
    from core.store import open_store

    settings = load_settings()
    st = open_store(settings.db_path)
    subjects = ["Woman", "Man", "Young Woman", "Mature Man", "Athletic Woman"]
    poses = ["Standing", "Walking", "Sitting", "Leaning against a wall", "Hands in pockets", "Arms crossed",
             "Over-the-shoulder look", "Mirror selfie using iPhone"]
    lights = ["Natural Daylight", "Studio", "Golden Hour", "Neon", "Softbox", "Backlit"]
    per = max(1, variants // (len(poses) * len(lights)))
    plan = plans.make_plan({"name": "big", "models": ["fal-ai/flux/schnell", "fal-ai/flux-2"], "seeds": list(range(1, seeds + 1)),
                            "options": {"subject": subjects[:per], "pose": poses, "lighting": lights}})
    t = time.perf_counter()
    batch = st.create_batch(plan, dry_run=False)
    now = dbmod.now()
    with st.db.atomic():
        st.db.execute("UPDATE requests SET status = 'completed', inference_time_s = 1.5, queue_time_s = 0.3, "
                   "total_time_s = 2.0 WHERE batch_id = ?", [batch.id])
        st.db["result_images"].insert_all(
            {"id": dbmod.new_id(), "request_id": rid, "idx": 0, "fal_url": "https://v3.fal.media/x.jpg",
             "storage_backend": "local", "storage_path": f"results/{rid}/0.jpg", "width": 1024,
             "height": 1024, "created_at": now, "face_status": "no_reference", "phash_distance": 30,
             "ciede2000": 12.0, "metrics_at": now, "metrics_version": "1", "check_flags": ""}
            for (rid,) in st.db.execute("SELECT id FROM requests WHERE batch_id = ?", [batch.id]).fetchall())
    items = review.review_items(st, batch.id, "ana")
    with st.db.atomic():
        for rater in ("ana", "bo"):
            for item in items[: len(items) // 2]:
                st.db["votes"].insert({"id": dbmod.new_id(), "group_id": item.group.id, "rater": rater,
                                    "left_request_id": item.left.request_id,
                                    "right_request_id": item.right.request_id,
                                    "verdict": "left", "winner": item.left.endpoint, "created_at": now})
    print(f"seeded {plan.request_count} requests, {len(items)} groups, {len(items)} votes "
          f"in {time.perf_counter() - t:.1f} s")

    def timed(label, fn, repeat=3):
        best = float("inf")
        for _ in range(repeat):
            t = time.perf_counter()
            fn()
            best = min(best, time.perf_counter() - t)
        print(f"  {label:<44} {best * 1000:8.0f} ms")

    timed("review.queue (Review page, every rerun)", lambda: review.queue(st, batch.id, "ana"))
    timed("comparison.leaderboard", lambda: comparison.leaderboard(st, batch_id=batch.id))
    timed("comparison.model_costs", lambda: comparison.model_costs(st, batch_id=batch.id))
    timed("comparison.fidelity_by_model", lambda: comparison.fidelity_by_model(st, batch_id=batch.id))
    timed("fidelity.pending_count (whole table)", lambda: st.pending_count())
    timed("comparison CSV (bytes)", lambda: comparison.comparison_csv_bytes(st, batch_id=batch.id), repeat=1)
    st.close()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--images", type=int, default=12)
    parser.add_argument("--variants", type=int, default=240)
    parser.add_argument("--seeds", type=int, default=20)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        os.environ["DASHBOARD_DATA_DIR"] = str(Path(tmp) / "data")
        os.environ.pop("FAL_KEY", None)
        bench_measure(args.images)
        bench_reads(args.variants, args.seeds)


if __name__ == "__main__":
    main()
