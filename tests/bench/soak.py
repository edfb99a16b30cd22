"""Soak: batches run by real `python -m core batch resume` processes that are killed (SIGKILL) or
stopped (SIGTERM) at random moments, again and again, while fal has outages, faults at every kind
of call, the database is locked by another process and (where a private mount is possible) the
disk fills up. Then one clean resume finishes everything, and the figures are counted:

    .venv/bin/python -m tests.bench.soak [--runs 30] [--outage-max 12] [--seed N] [--no-disk-full]

- requests lost: a job fal accepted (and bills) whose request did not end `completed`, or that no
  request row knows, when that request is not in doubt (`in_doubt`, or given up as
  `submit_unconfirmed`). Must be 0.
- duplicate submits: (endpoint, payload) pairs fal accepted more than once. Must be 0.
- unconfirmed submits: requests in doubt (the runner died inside the POST, so the request was
  not sent again: `in_doubt`). Counted apart; a SIGTERM never leaves one (`after SIGTERM`).
- the machine's load (1-minute load average) before and after.

Outages last 1..`--outage-max` seconds (12 by default so a run takes a few minutes; 120 for the
full soak). Faults are those that say nothing about the job (5xx, ingress pages, dropped or slow
answers, 429): each may hit any submit, poll, result or image download. Disk full needs a private
mount namespace (`unshare -rm`, root or user namespaces): the soak re-runs itself inside one with
its data directory on a small tmpfs, and fills it for a moment; without it, that fault is skipped
and the report says so.
"""
from __future__ import annotations

import argparse
import collections
import contextlib
import dataclasses
import json
import os
import random
import shutil
import signal
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from core.config import REPO_ROOT

SCHNELL = "fal-ai/flux/schnell"
MODELS = [SCHNELL, "fal-ai/flux-2"]
SUBMIT_FAULTS = ("502", "503", "504", "ingress", "429")
CALL_FAULTS = ("500", "502", "503", "504", "ingress", "drop", "slow")
_IN_NAMESPACE = "SOAK_IN_NAMESPACE"


@dataclasses.dataclass
class Config:
    runs: int = 30
    requests: int = 24            # per batch (models x poses)
    concurrency: int = 4
    latency: float = 0.4          # seconds per job at the stand-in
    kill_after: tuple[float, float] = (0.3, 4.0)
    outage_max: float = 12.0      # outages last 1..outage_max seconds
    outage_chance: float = 0.3    # per run
    fault_chance: float = 0.6     # per run: a burst of faults at fal calls
    lock_chance: float = 0.25     # per run: another process holds the write lock
    lock_max: float = 3.0
    disk_full: bool = True
    disk_full_chance: float = 0.2
    seed: int | None = None


@dataclasses.dataclass
class Report:
    runs: int
    sigkills: int
    sigterms: int
    finished_alone: int
    requests: int
    completed: int
    accepted: int
    lost: int
    duplicates: int
    unconfirmed: int
    unconfirmed_after_sigterm: int
    failed_other: int
    outages: int
    faults: int
    locks: int
    disk_fulls: int
    disk_full_available: bool
    seconds: float
    load_before: float
    load_after: float

    def lines(self) -> list[str]:
        return [
            f"runs: {self.runs} ({self.sigkills} SIGKILL, {self.sigterms} SIGTERM, "
            f"{self.finished_alone} ended by themselves) in {self.seconds:.0f} s",
            f"chaos: {self.outages} fal outages, {self.faults} fault bursts, {self.locks} database "
            f"locks, {self.disk_fulls} disk-full episodes"
            + ("" if self.disk_full_available else " (disk full unavailable: no private mount namespace)"),
            f"requests: {self.requests}, completed {self.completed}, fal accepted {self.accepted} jobs",
            f"requests lost: {self.lost}",
            f"duplicate submits: {self.duplicates}",
            f"unconfirmed submits: {self.unconfirmed} (after a SIGTERM: {self.unconfirmed_after_sigterm})",
            f"failed for another reason: {self.failed_other}",
            f"load average (1 min): {self.load_before:.2f} before, {self.load_after:.2f} after "
            f"({os.cpu_count()} cores)",
        ]


class _Chaos:
    """Random trouble for one run, each kind in its own thread; `stop()` ends it all."""

    def __init__(self, rng: random.Random, cfg: Config, standin, db_path: Path, data_dir: Path,
                 disk_full: bool, counts: collections.Counter):
        self.rng, self.cfg, self.standin = rng, cfg, standin
        self.db_path, self.data_dir, self.disk_full = db_path, data_dir, disk_full
        self.counts = counts
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []

    def start(self, horizon: float) -> None:
        rng, cfg = self.rng, self.cfg
        if rng.random() < cfg.outage_chance:
            self._later(rng.uniform(0, horizon), self._outage)
        if rng.random() < cfg.fault_chance:
            self._later(rng.uniform(0, horizon), self._faults)
        if rng.random() < cfg.lock_chance:
            self._later(rng.uniform(0, horizon), self._lock)
        if self.disk_full and rng.random() < cfg.disk_full_chance:
            self._later(rng.uniform(0, horizon), self._fill_disk)

    def stop(self) -> None:
        self._stop.set()
        for t in self._threads:
            t.join()
        self.standin.end_outage()
        with self.standin._lock:          # faults not consumed by this run do not leak into the next
            for queue in self.standin._faults.values():
                queue.clear()

    def _later(self, delay: float, fn) -> None:
        def run():
            if not self._stop.wait(delay):
                fn()
        t = threading.Thread(target=run, daemon=True)
        t.start()
        self._threads.append(t)

    def _outage(self) -> None:
        self.counts["outages"] += 1
        self.standin.outage(self.rng.uniform(1.0, max(1.0, self.cfg.outage_max)))

    def _faults(self) -> None:
        self.counts["faults"] += 1
        for _ in range(self.rng.randint(1, 6)):
            where = self.rng.choice(("submit", "status", "result", "file", "stream"))
            fault = self.rng.choice(SUBMIT_FAULTS if where == "submit" else CALL_FAULTS)
            params = {"seconds": 0.5} if fault == "slow" else {}
            if fault == "429":
                params = {"retry_after": 0.2}
            self.standin.inject(where, fault, times=self.rng.randint(1, 4), **params)

    def _lock(self) -> None:
        self.counts["locks"] += 1
        with contextlib.suppress(sqlite3.Error):
            conn = sqlite3.connect(self.db_path, timeout=30, isolation_level=None)
            try:
                conn.execute("BEGIN IMMEDIATE")
                self._stop.wait(self.rng.uniform(0.5, self.cfg.lock_max))
                conn.execute("ROLLBACK")
            finally:
                conn.close()

    def _fill_disk(self) -> None:
        """Fill the data directory's tmpfs to the last byte for a moment."""
        self.counts["disk_fulls"] += 1
        ballast = self.data_dir / "ballast"
        try:
            with open(ballast, "wb") as f:
                chunk = bytes(1 << 20)
                with contextlib.suppress(OSError):
                    while True:
                        f.write(chunk)
                        f.flush()
            self._stop.wait(self.rng.uniform(0.5, 3.0))
        except OSError:
            pass
        finally:
            ballast.unlink(missing_ok=True)


def run_soak(cfg: Config, data_dir: Path, *, disk_full: bool = False, out=print) -> Report:
    """Run the soak with its store in `data_dir` (which must be empty) and return the figures."""
    from core.batches import plans
    from core.store import open_store
    from tests.standins.fal_server import DEFAULT_KEY, FalStandin

    rng = random.Random(cfg.seed)
    load_before = os.getloadavg()[0]
    started = time.monotonic()
    standin = FalStandin(latency=cfg.latency).start()
    db_path = data_dir / "dashboard.db"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("FAL_", "SUPABASE_", "DASHBOARD_"))}
    env.update(FAL_KEY=DEFAULT_KEY, FAL_QUEUE_URL=standin.url, FAL_RUN_URL="http://127.0.0.1:9",
               DASHBOARD_DATA_DIR=str(data_dir), DASHBOARD_METRICS_WORKER="off",
               DASHBOARD_AUTO_RESUME="off", DASHBOARD_OUTAGE_LIMIT_S="600",
               DASHBOARD_SECRETS=str(data_dir / "no-secrets.toml"))
    counts: collections.Counter = collections.Counter()
    store = open_store(db_path)
    batches: list[str] = []

    def new_batch() -> str:
        n = len(batches)
        poses = [f"soak pose {n}-{k}" for k in range(max(1, cfg.requests // len(MODELS)))]
        plan = plans.make_plan({"name": f"soak {n}", "models": MODELS, "options": {"pose": poses},
                                "seeds": [n + 1]})
        batch = store.create_batch(plan.new_batch(), dry_run=False, concurrency=cfg.concurrency)
        batches.append(batch.id)
        return batch.id

    def in_post() -> set[str]:
        """Requests marked `submitted` whose POST never got fal's answer."""
        return {r.id for b in batches for r in store.batch_requests(b, statuses=("submitted",))
                if not r.fal_request_id}

    def unfinished() -> list[str]:
        """Batches with work left for a runner (requests in doubt wait for a person)."""
        return [b for b in batches if not store.batch_progress(b).settled]

    logs = data_dir.parent / "runner-logs"
    logs.mkdir(exist_ok=True)

    def runner(batch_id: str) -> subprocess.Popen:
        with open(logs / f"run-{len(list(logs.iterdir())):03d}.log", "wb") as log:
            return subprocess.Popen([sys.executable, "-m", "core", "batch", "resume", batch_id, "--quiet"],
                                    cwd=REPO_ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)

    try:
        for i in range(cfg.runs):
            todo = unfinished() or [new_batch()]
            before = in_post()
            proc = runner(todo[0])
            chaos = _Chaos(rng, cfg, standin, db_path, data_dir, disk_full, counts)
            kill_at = rng.uniform(*cfg.kill_after)
            chaos.start(kill_at)
            sig = rng.choice((signal.SIGKILL, signal.SIGTERM))
            try:
                proc.wait(kill_at)
                counts["alone"] += 1
                sig = None
            except subprocess.TimeoutExpired:
                proc.send_signal(sig)
                try:
                    proc.wait(120)       # a drained runner lets its POSTs finish first
                except subprocess.TimeoutExpired:
                    counts["hung"] += 1
                    proc.kill()
                    proc.wait()
            chaos.stop()
            if sig is signal.SIGKILL:
                counts["sigkill"] += 1
            elif sig is signal.SIGTERM:
                counts["sigterm"] += 1
                # a drained runner never leaves a POST of its own unconfirmed (rows a SIGKILLed
                # runner left are failed by the next runner that gets that far)
                counts["term_unconfirmed"] += len(in_post() - before)
            out(f"run {i + 1}/{cfg.runs}: {sig.name if sig else 'ended by itself'} after "
                f"{kill_at:.1f} s; fal accepted {standin.submissions} so far")
        # the end: no more trouble, every batch finished by a clean resume
        standin.end_outage()
        for _ in range(3):
            todo = unfinished()
            if not todo:
                break
            for b in todo:
                runner(b).wait(600)
        return _count(store, batches, standin, counts, cfg, load_before, started, disk_full)
    finally:
        store.close()
        standin.stop()


def _count(store, batches, standin, counts, cfg, load_before, started, disk_full) -> Report:
    rows = [r for b in batches for r in store.batch_requests(b)]
    by_fal_id = {r.fal_request_id: r for r in rows if r.fal_request_id}
    doubtful = [r for r in rows if r.status == "in_doubt" or r.error_type == "submit_unconfirmed"]
    unconfirmed = {(r.endpoint, r.payload_hash) for r in doubtful}
    from core.catalog.payloads import payload_hash

    accepted = [x for x in standin.received if x["accepted"]]
    lost = 0
    for job in accepted:
        row = by_fal_id.get(job["request_id"])
        if row is not None and row.status == "completed":
            continue
        if row is None and (job["endpoint"], payload_hash(job["body"])) in unconfirmed:
            continue     # the runner died inside this POST: counted as unconfirmed
        lost += 1
    lost += sum(1 for r in rows if not r.is_final and r.status != "in_doubt")
    per_payload = collections.Counter((x["endpoint"], payload_hash(x["body"])) for x in accepted)
    return Report(
        runs=cfg.runs, sigkills=counts["sigkill"], sigterms=counts["sigterm"],
        finished_alone=counts["alone"], requests=len(rows),
        completed=sum(r.status == "completed" for r in rows), accepted=len(accepted), lost=lost,
        duplicates=sum(n - 1 for n in per_payload.values() if n > 1),
        unconfirmed=len(doubtful),
        unconfirmed_after_sigterm=counts["term_unconfirmed"],
        failed_other=sum(r.status == "failed" and r.error_type != "submit_unconfirmed" for r in rows),
        outages=counts["outages"], faults=counts["faults"], locks=counts["locks"],
        disk_fulls=counts["disk_fulls"], disk_full_available=disk_full,
        seconds=time.monotonic() - started, load_before=load_before, load_after=os.getloadavg()[0])


def _reexec_in_namespace(argv: list[str]) -> int | None:
    """Run this soak again inside a private mount namespace (for disk full), or None."""
    unshare = shutil.which("unshare")
    if not unshare or os.environ.get(_IN_NAMESPACE):
        return None
    probe = subprocess.run([unshare, "-rm", "true"], capture_output=True)
    if probe.returncode != 0:
        return None
    env = dict(os.environ, **{_IN_NAMESPACE: "1"})
    return subprocess.run([unshare, "-rm", sys.executable, "-m", "tests.bench.soak", *argv],
                          cwd=REPO_ROOT, env=env).returncode


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    parser = argparse.ArgumentParser(prog="python -m tests.bench.soak", description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=Config.runs)
    parser.add_argument("--requests", type=int, default=Config.requests, help="per batch")
    parser.add_argument("--outage-max", type=float, default=Config.outage_max, help="seconds (120 for the full soak)")
    parser.add_argument("--seed", type=int, default=None)
    parser.add_argument("--no-disk-full", action="store_true")
    args = parser.parse_args(argv)
    if not args.no_disk_full and not os.environ.get(_IN_NAMESPACE):
        code = _reexec_in_namespace(argv)
        if code is not None:
            return code
    cfg = Config(runs=args.runs, requests=args.requests, outage_max=args.outage_max, seed=args.seed)
    with tempfile.TemporaryDirectory(prefix="soak-") as tmp:
        data_dir = Path(tmp) / "data"
        data_dir.mkdir()
        disk_full = False
        if not args.no_disk_full and os.environ.get(_IN_NAMESPACE):
            mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=96m", "tmpfs", str(data_dir)],
                                     capture_output=True)
            disk_full = mounted.returncode == 0
        try:
            report = run_soak(cfg, data_dir, disk_full=disk_full)
        finally:
            if disk_full:
                subprocess.run(["umount", str(data_dir)], capture_output=True)
        if report.lost or report.duplicates:
            for log in sorted((Path(tmp) / "runner-logs").iterdir()):
                print(f"--- {log.name}\n{log.read_text(errors='replace')[-3000:]}")
    print("\n".join(report.lines()))
    print(json.dumps(dataclasses.asdict(report)))
    return 0 if report.lost == 0 and report.duplicates == 0 and report.unconfirmed_after_sigterm == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
