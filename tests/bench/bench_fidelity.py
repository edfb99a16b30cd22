"""Benchmark: fidelity throughput (images per second, per core), before and after, and the
review/leaderboard reads on a large batch.

    .venv/bin/python -m tests.bench.bench_fidelity [--images 24] [--workers 1,2] [--rounds 1]
        [--baseline REV|none] [--no-reads] [--variants 240 --seeds 20]

1. `metrics.measure` of a 1024x1024 output against a 512x512 reference: cold (models load), warm,
   and warm against a `PreparedReference` (what a background pass does).
2. Throughput of a whole `python -m core metrics` process over `--images` stored 1024x1024 JPEG
   outputs (half edit, half text-to-image, one reference photo), each run on its own copy of one
   seeded data directory, all at the pool's niceness (fidelity.NICENESS) so no run is favoured:
   - "before": the code of `--baseline` (default: the commit before the pool and the prepared
     references), exported with `git archive` into a temporary folder;
   - "after": this code with `--workers N`, for each N.
   Per run: wall time, images per second (whole process, start-up and model loading included,
   and steady: between the first and the last image stored), CPU seconds of every process of the
   run and images per CPU-second (= per core: the figure that does not depend on what else the
   machine runs), the load average, whether every stored number equals the baseline's, and a
   probe: a fixed piece of pure-Python work at niceness 0 (what a page render is) timed over and
   over during the run, median and p90, against the same probe with nothing measuring.
3. A batch of variants x seeds x 2 models (default 9,600 requests, 4,800 groups), every request
   completed with one image row and half the groups voted by two raters: time of the reads a page
   rerun does (review queue, leaderboard, costs, fidelity per model) and of the comparison CSV.
"""
from __future__ import annotations

import argparse
import io
import os
import resource
import shutil
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageFilter
from skimage import data

ROOT = Path(__file__).resolve().parents[2]
# The last commit that measured one image at a time in one process, with no prepared references.
BASELINE = "f01457ed3e0f6e1d7c4a1a7251745a24b5489dd8"
_COMPARED = ("face_status", "face_distance", "faces_reference", "faces_output", "phash_distance",
             "ciede2000", "ssim", "metrics_error", "check_flags", "metrics_reference_id")


def _jpeg(img: Image.Image) -> bytes:
    buf = io.BytesIO()
    img.save(buf, "JPEG", quality=90)
    return buf.getvalue()


def _load() -> str:
    return "/".join(f"{x:.1f}" for x in os.getloadavg())


def _images() -> tuple[Image.Image, Image.Image]:
    reference = Image.fromarray(data.astronaut())
    output = reference.resize((1024, 1024), Image.Resampling.LANCZOS).filter(ImageFilter.GaussianBlur(1))
    return reference, output


def bench_measure() -> None:
    """One `measure()`: wall time and this process's CPU time (the second does not depend on what
    else the machine runs)."""
    from core.evaluation import metrics

    reference, output = _images()
    t, c = time.perf_counter(), time.process_time()
    metrics.measure(reference, output, same_framing=True)
    print(f"measure(), cold (models load): {time.perf_counter() - t:5.2f} s wall, "
          f"{time.process_time() - c:5.2f} s CPU")
    prepared = metrics.prepare_reference(reference)
    for label, ref in (("the photo", reference), ("a PreparedReference", prepared)):
        wall, cpu = [], []
        for i in range(5):
            out = output.rotate(i + 1)  # new pixels each time: no descriptor cache hit for the output
            t, c = time.perf_counter(), time.process_time()
            metrics.measure(ref, out, same_framing=True)
            wall.append(time.perf_counter() - t)
            cpu.append(time.process_time() - c)
        print(f"measure(), warm, 1024 px output against {label + ',':<20} median of 5: "
              f"{np.median(wall):5.2f} s wall, {np.median(cpu):5.2f} s CPU")


def seed(data_dir: Path, images: int) -> None:
    """A store with `images` stored result images, all pending, in `data_dir`."""
    from core.batches import service
    from core.config import load_settings
    from core.photos import references
    from core.store import open_store
    from core.blobs import open_storage

    os.environ["DASHBOARD_DATA_DIR"] = str(data_dir)
    settings = load_settings()
    settings.ensure_dirs()
    st = open_store(settings)
    storage = open_storage(settings)
    reference, output = _images()
    ref = references.add_reference(st, storage, _jpeg(reference), role="face", filename="a.jpg",
                                   settings=settings)
    plan = service.plan_batch({"name": "bench", "references": [ref.id],
                            "models": ["fal-ai/flux/schnell", "fal-ai/flux-2/lora/edit"],
                            "seeds": list(range(1, images // 2 + 1))}, store=st)
    batch = st.create_batch(plan.new_batch(), dry_run=False)
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
    storage.close()
    st.close()


def _export(rev: str, into: Path) -> Path:
    """The `core` package as it was at `rev`, in a folder of its own."""
    into.mkdir(parents=True)
    archive = subprocess.run(["git", "-C", str(ROOT), "archive", rev, "core"], capture_output=True, check=True)
    subprocess.run(["tar", "-x", "-C", str(into)], input=archive.stdout, check=True)
    return into


def _probe_once() -> float:
    """A fixed piece of pure-Python work, about what a small page render costs; seconds."""
    t = time.perf_counter()
    total = 0
    for i in range(200_000):
        total += i % 7
    return time.perf_counter() - t


class _Probe:
    """Times `_probe_once` every 200 ms in this (niceness 0) process until stopped."""

    def __init__(self) -> None:
        self.samples: list[float] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.wait(0.2):
            self.samples.append(_probe_once())

    def __enter__(self) -> _Probe:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def summary(self) -> str:
        if not self.samples:
            return "no samples"
        ms = sorted(x * 1000 for x in self.samples)
        return f"{statistics.median(ms):5.0f} / {ms[int(0.9 * (len(ms) - 1))]:5.0f} ms"


@dataclass
class Run:
    label: str
    wall: float
    steady: float | None
    cpu: float
    steady_cpu: float | None
    images: int
    load_start: str
    load_end: str
    probe: str
    rows: dict


_TICK = os.sysconf("SC_CLK_TCK")


def _tree_cpu(pid: int) -> float:
    """CPU seconds so far of process `pid` and its live descendants (from /proc)."""
    parents: dict[int, int] = {}
    cpu: dict[int, float] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", "rb") as f:
                fields = f.read().rsplit(b")", 1)[1].split()
        except OSError:
            continue
        parents[int(entry)] = int(fields[1])
        cpu[int(entry)] = (int(fields[11]) + int(fields[12])) / _TICK
    total, todo = 0.0, [pid]
    while todo:
        p = todo.pop()
        total += cpu.get(p, 0.0)
        todo.extend(c for c, parent in parents.items() if parent == p)
    return total


def _rusage_cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


def run_pass(label: str, code: Path, data_dir: Path, args: list[str], niceness: int) -> Run:
    """One whole `python -m core metrics` process of the code in `code` over `data_dir`."""
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "FAL_KEY")}
    env.update(DASHBOARD_DATA_DIR=str(data_dir), DASHBOARD_METRICS_WORKER="off",
               DASHBOARD_SECRETS=str(data_dir / "no-secrets.toml"))
    load_start, cpu0 = _load(), _rusage_cpu()
    stamps: list[float] = []
    tree_cpu: list[float] = []
    with tempfile.TemporaryFile() as err, _Probe() as probe:
        t0 = time.perf_counter()
        proc = subprocess.Popen([sys.executable, "-m", "core", "metrics", *args], cwd=code, env=env,
                                stdout=subprocess.PIPE, stderr=err, text=True,
                                preexec_fn=lambda: os.nice(niceness))
        assert proc.stdout is not None
        for line in proc.stdout:
            if line.startswith("["):
                stamps.append(time.perf_counter())
                tree_cpu.append(_tree_cpu(proc.pid))
        proc.wait()
        wall = time.perf_counter() - t0
        if proc.returncode != 0:
            err.seek(0)
            raise SystemExit(f"{label}: exit {proc.returncode}\n{err.read().decode()[-3000:]}")
    cpu = _rusage_cpu() - cpu0
    steady = (len(stamps) - 1) / (stamps[-1] - stamps[0]) if len(stamps) > 2 else None
    steady_cpu = (len(stamps) - 1) / (tree_cpu[-1] - tree_cpu[0]) if len(stamps) > 2 else None
    with sqlite3.connect(data_dir / "dashboard.db") as conn:
        rows = {r[0]: r[1:] for r in conn.execute(
            f"SELECT id, {', '.join(_COMPARED)} FROM result_images WHERE metrics_at IS NOT NULL")}
    return Run(label, wall, steady, cpu, steady_cpu, len(stamps), load_start, _load(), probe.summary(), rows)


def bench_throughput(images: int, workers: list[int], rounds: int, baseline: str | None,
                     niceness: int) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        seeded = Path(tmp) / "seeded"
        seed(seeded, images)
        code = {"after": ROOT}
        if baseline:
            code["before"] = _export(baseline, Path(tmp) / "baseline")
        with _Probe() as idle:
            time.sleep(3)
        print(f"\n{images} stored 1024 px JPEG outputs, one reference; every run at niceness {niceness}; "
              f"{os.cpu_count()} cores; probe at niceness 0 with nothing measuring: {idle.summary()} "
              f"(median / p90)")
        print(f"{'':<22} {'whole process':^32} {'steady':^16}")
        print(f"{'run':<22} {'wall s':>7} {'img/s':>6} {'CPU s':>7} {'img/CPU-s':>9} {'img/s':>6} "
              f"{'img/CPU-s':>9} {'probe med / p90':>17}  {'load avg start -> end':<27} same numbers")
        reference_rows = None
        plan = ([("before", [])] if baseline else []) + [
            (f"after, {n} worker{'s' if n > 1 else ''}", ["--workers", str(n)]) for n in workers]
        for r in range(rounds):
            for i, (label, args) in enumerate(plan):
                data_dir = Path(tmp) / f"run-{r}-{i}"
                shutil.copytree(seeded, data_dir)
                run = run_pass(label, code["before" if label == "before" else "after"], data_dir,
                               args, niceness)
                if reference_rows is None:
                    reference_rows = run.rows
                same = ("baseline" if run.rows is reference_rows else
                        "yes" if run.rows == reference_rows else
                        f"NO ({sum(run.rows.get(k) != v for k, v in reference_rows.items())} differ)")
                steady = (f"{run.steady:6.2f} {run.steady_cpu:9.2f}" if run.steady and run.steady_cpu
                          else f"{'-':>6} {'-':>9}")
                print(f"{label:<22} {run.wall:7.1f} {run.images / run.wall:6.2f} {run.cpu:7.1f} "
                      f"{run.images / run.cpu:9.2f} {steady} {run.probe:>17}  "
                      f"{run.load_start + ' -> ' + run.load_end:<27} {same}", flush=True)
                shutil.rmtree(data_dir)


def bench_reads(variants: int, seeds: int) -> None:
    from core.evaluation import leaderboard
    from core.export import comparison
    from tests.evaluation import _oracles as oracles
    from core.batches import plans
    from core.evaluation import review
    from core.config import load_settings
    from core import values
    from core.store import open_store

    settings = load_settings()
    st = open_store(settings)
    subjects = ["Woman", "Man", "Young Woman", "Mature Man", "Athletic Woman"]
    poses = ["Standing", "Walking", "Sitting", "Leaning against a wall", "Hands in pockets", "Arms crossed",
             "Over-the-shoulder look", "Mirror selfie using iPhone"]
    lights = ["Natural Daylight", "Studio", "Golden Hour", "Neon", "Softbox", "Backlit"]
    per = max(1, variants // (len(poses) * len(lights)))
    plan = plans.make_plan({"name": "big", "models": ["fal-ai/flux/schnell", "fal-ai/flux-2"], "seeds": list(range(1, seeds + 1)),
                            "options": {"subject": subjects[:per], "pose": poses, "lighting": lights}})
    t = time.perf_counter()
    batch = st.create_batch(plan.new_batch(), dry_run=False)
    now = values.now()
    with st.db.atomic():
        st.db.execute("UPDATE requests SET status = 'completed', inference_time_s = 1.5, queue_time_s = 0.3, "
                   "total_time_s = 2.0 WHERE batch_id = ?", [batch.id])
        st.db["result_images"].insert_all(
            {"id": values.new_id(), "request_id": rid, "idx": 0, "fal_url": "https://v3.fal.media/x.jpg",
             "storage_backend": "local", "storage_path": f"results/{rid}/0.jpg", "width": 1024,
             "height": 1024, "created_at": now, "face_status": "no_reference", "phash_distance": 30,
             "ciede2000": 12.0, "metrics_at": now, "metrics_version": "1", "check_flags": ""}
            for (rid,) in st.db.execute("SELECT id FROM requests WHERE batch_id = ?", [batch.id]).fetchall())
    items = review.review_items(st, batch.id, "ana")
    with st.db.atomic():
        for rater in ("ana", "bo"):
            for item in items[: len(items) // 2]:
                st.db["votes"].insert({"id": values.new_id(), "group_id": item.group.id, "rater": rater,
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
    timed("comparison.leaderboard", lambda: leaderboard.leaderboard(st, batch_id=batch.id))
    timed("comparison.model_costs", lambda: oracles.model_costs(st, batch_id=batch.id))
    timed("comparison.fidelity_by_model", lambda: oracles.fidelity_by_model(st, batch_id=batch.id))
    timed("fidelity.pending_count (whole table)", lambda: st.pending_count())
    timed("comparison CSV (bytes)", lambda: comparison.to_csv_bytes(st, batch_id=batch.id), repeat=1)
    st.close()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--images", type=int, default=24)
    parser.add_argument("--workers", default="1,2", help="pool sizes to run, comma-separated")
    parser.add_argument("--rounds", type=int, default=1, help="repeat every run this many times")
    parser.add_argument("--baseline", default=BASELINE, help="git revision of the 'before' code, or none")
    parser.add_argument("--niceness", type=int, default=None,
                        help="of every run (default fidelity.NICENESS, the background worker's)")
    parser.add_argument("--no-reads", action="store_true", help="skip the large-batch reads")
    parser.add_argument("--variants", type=int, default=240)
    parser.add_argument("--seeds", type=int, default=20)
    args = parser.parse_args()
    os.environ.pop("FAL_KEY", None)
    print(f"load average at start: {_load()} on {os.cpu_count()} cores")
    with tempfile.TemporaryDirectory() as tmp:
        os.environ["DASHBOARD_DATA_DIR"] = str(Path(tmp) / "data")
        bench_measure()
        from core.evaluation.pool import NICENESS

        bench_throughput(args.images, [int(n) for n in args.workers.split(",")], args.rounds,
                         None if args.baseline == "none" else args.baseline,
                         NICENESS if args.niceness is None else args.niceness)
        if not args.no_reads:
            os.environ["DASHBOARD_DATA_DIR"] = str(Path(tmp) / "reads")
            bench_reads(args.variants, args.seeds)


if __name__ == "__main__":
    main()
