"""Benchmark: history queries and a full CSV export over 100,000 stored requests.

    .venv/bin/python -m tests.bench.bench_history [--rows 100000]

Seeds a fresh store in a temp directory (realistic prompts, payloads, one result image per completed
request), then prints the time of each history page query and of the full export, with peak memory
(tracemalloc, Python allocations) of the export.
"""
from __future__ import annotations

import argparse
import datetime as dt
import itertools
import random
import resource
import tempfile
import time
import tracemalloc
from pathlib import Path

from core import values
from core.store import open_store
from core import export
from core.values import HistoryFilter
from core.catalog import contenders
from core.catalog.payloads import canonical_json, payload_hash

POSES = ["Standing", "Walking", "Sitting", "Mirror selfie using iPhone", "Leaning against a wall",
         "Over-the-shoulder look", "Hands in pockets", "Arms crossed"]
LIGHTS = ["Natural Daylight", "Studio", "Golden Hour", "Neon", "Softbox", "Backlit"]
SUBJECTS = ["Woman", "Man", "Young Woman", "Mature Man", "Athletic Woman"]
MODELS = ["fal-ai/flux/schnell", "fal-ai/flux-2/lora/edit"]
STATUSES = ["completed"] * 8 + ["failed", "cancelled"]


def seed(d, rows: int) -> None:
    rng = random.Random(7)
    start = dt.datetime(2026, 1, 1, tzinfo=dt.timezone.utc)
    batch_size = 200
    n = 0
    # every request names its contender, as create_batch / record_request write it
    known = {m: contenders.from_request(m, {"num_inference_steps": 7, "guidance_scale": 3.5}) for m in MODELS}
    contender_ids = {m: c.id for m, c in known.items()}
    for b in itertools.count():
        if n >= rows:
            break
        batch_id = values.new_id()
        d.db["batches"].insert({"id": batch_id, "name": f"bench {b}", "created_at": start.isoformat(),
                             "status": "finished", "dry_run": 0, "request_count": batch_size})
        reqs, imgs = [], []
        for i in range(min(batch_size, rows - n)):
            n += 1
            created = start + dt.timedelta(seconds=n * 30)
            opts = {"subject": rng.choice(SUBJECTS), "purpose": "Fashion", "pose": rng.choice(POSES),
                    "lighting": rng.choice(LIGHTS), "aspect_ratio": "9:16"}
            prompt = (f"A {opts['subject']} model, for Fashion, in {opts['pose']} pose, with "
                      f"{opts['lighting']} lighting, in 9:16 aspect ratio, photorealistic")
            model = MODELS[i % 2]
            payload = {"prompt": prompt, "image_size": "portrait_16_9", "seed": rng.randint(0, 2**31),
                       "num_inference_steps": 7, "guidance_scale": 3.5}
            if model.endswith("edit"):
                payload["image_urls"] = ["reference://" + "ab" * 16]
            status = rng.choice(STATUSES)
            rid = values.new_id()
            reqs.append({
                "id": rid, "batch_id": batch_id, "endpoint": model, "prompt": prompt,
                "options_json": canonical_json(opts), "seed": payload["seed"], "image_size": "portrait_16_9",
                "reference_ids": "[]", "payload_json": canonical_json(payload),
                "payload_hash": payload_hash(payload), "status": status, "dry_run": 0,
                "fal_request_id": values.new_id(), "created_at": created.isoformat(timespec="microseconds"),
                "submitted_at": created.isoformat(), "completed_at": created.isoformat(),
                "queue_time_s": 0.4, "inference_time_s": 1.2, "total_time_s": 1.9, "http_status": 200,
                "estimated_cost": 0.003 if model.endswith("schnell") else 0.042,
                "error_type": None if status == "completed" else status,
                "error_message": None if status == "completed" else "=HYPERLINK(\"x\") fal said no",
                "response_json": canonical_json({"images": [{"url": "https://v3.fal.media/x.jpg"}]}),
                "attempts": 1, "contender_id": contender_ids[model],
            })
            if status == "completed":
                imgs.append({"id": values.new_id(), "request_id": rid, "idx": 0,
                             "fal_url": "https://v3.fal.media/files/abc/x.jpg", "storage_backend": "local",
                             "storage_path": f"results/{rid}/0.jpg", "sha256": "0" * 64, "width": 576,
                             "height": 1024, "content_type": "image/jpeg", "size_bytes": 123456,
                             "nsfw": 0, "created_at": created.isoformat()})
        with d.db.atomic():
            d.save_contenders(known.values())
            d.db["requests"].insert_all(reqs)
            d.db["result_images"].insert_all(imgs)


def timed(label: str, fn, repeat: int = 5):
    best = float("inf")
    for _ in range(repeat):
        t = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - t)
    print(f"  {label:<48} {best * 1000:8.1f} ms")
    return out


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rows", type=int, default=100_000)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "bench.db"
        d = open_store(path)
        t = time.perf_counter()
        seed(d, args.rows)
        seeded = time.perf_counter() - t
        # the seed inserts rows directly; the store's write methods store each final request's
        # export lines as it becomes final: write them, as those methods would have (timed apart)
        t = time.perf_counter()
        d.refresh_export_lines()
        print(f"seeded {args.rows} requests in {seeded:.1f} s, their export lines stored in "
              f"{time.perf_counter() - t:.1f} s ({path.stat().st_size / 1e6:.0f} MB)")
        some_batch = d.db.execute("SELECT batch_id FROM requests LIMIT 1 OFFSET 5000").fetchone()[0]
        print("history page (50 rows + total), best of 5:")
        H = HistoryFilter
        timed("no filter, page 1", lambda: d.query_history(H()))
        timed("no filter, page 1000", lambda: d.query_history(H(page=1000)))
        timed("endpoint", lambda: d.query_history(H(endpoint=MODELS[1])))
        timed("status failed", lambda: d.query_history(H(status="failed")))
        timed("batch", lambda: d.query_history(H(batch_id=some_batch)))
        timed("date range (one week)", lambda: d.query_history(H(date_from="2026-01-10",
                                                                         date_to="2026-01-16")))
        timed("text 'golden hour'", lambda: d.query_history(H(text="golden hour")))
        timed("text 'nothing matches this'", lambda: d.query_history(H(text="nothing matches this")))
        timed("text + endpoint + status", lambda: d.query_history(H(text="mirror selfie", endpoint=MODELS[0], status="completed")))
        out = Path(tmp) / "all.csv"
        t = time.perf_counter()
        result = export.to_csv(d, out)
        elapsed = time.perf_counter() - t
        # a second export under tracemalloc for the peak (tracing slows it down, so not timed)
        tracemalloc.start()
        export.to_csv(d, Path(tmp) / "again.csv")
        _, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
        rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        print(f"full CSV export: {result.requests} requests, {result.rows} rows, "
              f"{out.stat().st_size / 1e6:.0f} MB in {elapsed:.1f} s; peak Python heap {peak / 1e6:.0f} MB "
              f"(process max RSS {rss:.0f} MB, pandas and the seeding included)")

if __name__ == "__main__":
    main()
