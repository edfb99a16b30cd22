"""The runner (core/batches/schedule.py) under faults, tested as they would happen: real runner
processes, real HTTP to the fal stand-in, a real SQLite file. The two long ones (a 60 s outage,
30 kill cycles) are marked `slow`: every run and CI include them; `-m "not slow"` skips them.

- A 60 s fal outage in the middle of a batch (every call answered by an ingress error page): the
  batch finishes by itself, every request completed, nothing submitted twice, and the progress
  line says "fal unreachable since HH:MM:SS, retrying".
- SIGTERM while submits are in flight: the drained runner records every accepted job's id.
- 30 random SIGKILL/SIGTERM + resume cycles: 0 duplicate submits, 0 lost (a POST cut by SIGKILL
  is counted apart as in doubt, never by SIGTERM).
- A write lock held past the busy timeout while fal accepts a job: fal's id is kept (journal,
  then the row) and the job completes, never becoming final as an error.
"""
from __future__ import annotations

import collections
import dataclasses
import functools
import json
import os
import re
import signal
import subprocess
import sqlite3
import sys
import threading
import time

import pytest

from core.batches import plans, record, schedule
from core.fal import FalClient, RetryPolicy
from core.catalog.payloads import payload_hash
from core.config import REPO_ROOT, load_settings
from core.store import db as store_db
from core.store import open_store

SCHNELL = "fal-ai/flux/schnell"
MODELS = [SCHNELL, "fal-ai/flux-2"]


def _plan_file(tmp_path, poses, name="must"):
    path = tmp_path / f"{name}.json"
    path.write_text(json.dumps({"name": name, "models": MODELS, "options": {"pose": list(poses)}, "seeds": [1]}))
    return path


def _accepted(standin) -> collections.Counter:
    return collections.Counter((x["endpoint"], payload_hash(x["body"])) for x in standin.received if x["accepted"])


def _wait(predicate, timeout=60.0, what="condition"):
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


def _catches(pid: int, sig: int) -> bool:
    """Whether process `pid` has a handler for `sig` (Linux: SigCgt in /proc/<pid>/status)."""
    with open(f"/proc/{pid}/status") as f:
        lines = f.read().splitlines()
    for line in lines:
        if line.startswith("SigCgt:"):
            return bool(int(line.split()[1], 16) >> (sig - 1) & 1)
    return False


def _queued_rows(d) -> int:
    return d.db.execute("SELECT count(*) FROM requests WHERE fal_request_id IS NOT NULL").fetchone()[0]


@pytest.mark.slow
def test_a_60_s_fal_outage_mid_batch_is_ridden_through_by_the_command_line(store_engine, fal_standin, tmp_path):
    settings = load_settings()
    settings.ensure_dirs()
    fal_standin.set_latency(0.5)
    poses = [f"pose {k}" for k in range(6)]                      # 12 requests
    proc = subprocess.Popen([sys.executable, "-m", "core", "batch", "run", str(_plan_file(tmp_path, poses)),
                             "--concurrency", "3"], cwd=REPO_ROOT, env=dict(os.environ),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    d = open_store(settings)
    try:
        _wait(lambda: d.db["requests"].count and _queued_rows(d) >= 3, what="3 jobs accepted")
        outage_at = time.monotonic()
        fal_standin.outage(60)
        out, err = proc.communicate(timeout=240)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    took = time.monotonic() - outage_at
    assert proc.returncode == 0, err
    assert took >= 60                                            # it waited for fal, it did not stop
    assert fal_standin.stats()["outage_answers"] > 0
    assert re.search(r"fal unreachable since \d\d:\d\d:\d\d, retrying", out), out
    (batch,) = d.list_batches()
    assert {r.status for r in d.batch_requests(batch.id)} == {"completed"}
    assert d.get_batch(batch.id).stop_reason is None
    accepted = _accepted(fal_standin)
    assert len(accepted) == 12 and set(accepted.values()) == {1}   # nothing submitted twice
    d.close()


def test_a_short_outage_takes_the_same_path_in_process(live_settings, fal_standin):
    """The same ride-through with the client's retries shortened: the progress callback sees the
    outage and its end, and the run finishes by itself."""
    settings, d, batch = live_settings
    seen = []
    client = FalClient(settings, retry=RetryPolicy(max_attempts=2, base=0.05, cap=0.1))
    fal_standin.set_latency(0.3)

    def on_progress(progress, outage):
        seen.append(outage.describe())
        if progress.counts.get("completed", 0) >= 2 and not fal_standin.stats()["outage_answers"]:
            fal_standin.outage(4)

    try:
        report = schedule.run_batch(batch.id, settings=settings, fal=client, on_progress=on_progress,
                                    progress_every=0.1, concurrency=1)
    finally:
        client.close()
    assert report.finished and report.stopped is None
    assert any(re.fullmatch(r"fal unreachable since \d\d:\d\d:\d\d, retrying", s) for s in seen), seen
    assert {r.status for r in d.batch_requests(batch.id)} == {"completed"}
    assert set(_accepted(fal_standin).values()) == {1} and fal_standin.submissions == len(d.batch_requests(batch.id))


def test_sigterm_during_submits_records_every_accepted_jobs_id(store_engine, fal_standin, tmp_path):
    settings = load_settings()
    settings.ensure_dirs()
    fal_standin.set_latency(2.0)
    fal_standin.hold_submissions_after(2)
    proc = subprocess.Popen([sys.executable, "-m", "core", "-v", "batch", "run",
                             str(_plan_file(tmp_path, [f"pose {k}" for k in range(5)])), "--concurrency", "4",
                             "--quiet"], cwd=REPO_ROOT, env=dict(os.environ),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert fal_standin.wait_for_held(2, timeout=60), "two submits held inside their POST"
        d = open_store(settings)
        in_post = "SELECT count(*) FROM requests WHERE status = 'submitted' AND fal_request_id IS NULL"
        _wait(lambda: d.db.execute(in_post).fetchone()[0] == 2 and _queued_rows(d) == 2,
              what="the runner's two POSTs held at fal")
        d.close()
        assert _catches(proc.pid, signal.SIGTERM), "the runner handles SIGTERM while it sends"
        proc.send_signal(signal.SIGTERM)
        time.sleep(0.5)                  # the signal arrives while both POSTs are in flight
        assert proc.poll() is None, "the runner waits for its submits in flight"
        fal_standin.release()            # fal accepts them now
        out, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 1 and "stopped by SIGTERM" in err and "nothing was lost" in err, (out, err)
    d = open_store(settings)
    (batch,) = d.list_batches()
    rows = d.batch_requests(batch.id)
    accepted_ids = {x["request_id"] for x in fal_standin.received if x["accepted"]}
    assert len(accepted_ids) == 4
    assert {r.fal_request_id for r in rows if r.fal_request_id} == accepted_ids
    assert not [r for r in rows if r.status == "submitted"] and not [r for r in rows if r.status == "failed"]
    # and a resume finishes the batch, paying each request once
    assert schedule.run_batch(batch.id, settings=settings).finished
    assert {r.status for r in d.batch_requests(batch.id)} == {"completed"}
    assert set(_accepted(fal_standin).values()) == {1} and fal_standin.submissions == 10
    d.close()


@pytest.mark.slow
def test_30_random_kill_and_resume_cycles_lose_nothing_and_pay_nothing_twice(tmp_path):
    from tests.bench import soak

    # kills within 0.2-1.5 s of a start: a runner now starts and sends 16 requests in well under
    # 3 s on a quiet machine, so later kill times let a third of the runs end by themselves
    cfg = soak.Config(runs=30, requests=16, outage_max=3.0, lock_max=2.0, kill_after=(0.2, 1.5), seed=11)
    lines = []
    data_dir = tmp_path / "soak-data"
    data_dir.mkdir()
    report = soak.run_soak(cfg, data_dir, out=lines.append)
    summary = "\n".join(report.lines())
    assert report.sigkills + report.sigterms >= 20, summary
    assert report.lost == 0 and report.duplicates == 0, summary
    assert report.unconfirmed_after_sigterm == 0 and report.failed_other == 0, summary
    # a SIGKILL can catch up to `concurrency` POSTs in flight; a SIGTERM drains them all
    assert report.unconfirmed <= report.sigkills * 4, summary
    assert report.completed + report.unconfirmed == report.requests, summary


def test_a_lock_held_past_the_busy_timeout_while_fal_accepts_keeps_fals_id(live_settings, fal_standin,
                                                                           monkeypatch):
    settings, d, batch = live_settings
    monkeypatch.setattr(store_db, "BUSY_TIMEOUT_S", 0.2)
    monkeypatch.setattr(record, "write_retrying", functools.partial(record.write_retrying, first_wait=0.02, cap=0.05))
    fal_standin.hold_submissions_after(0)          # the first POST waits inside fal
    journal = record.Journal(settings.data_dir, batch.id)
    outcome: list = []
    runner = threading.Thread(target=lambda: outcome.append(
        schedule.run_batch(batch.id, settings=settings, concurrency=1)))
    runner.start()
    assert fal_standin.wait_for_held(1, timeout=30)
    locker = sqlite3.connect(settings.db_path, isolation_level=None)
    locker.execute("BEGIN IMMEDIATE")              # another process holds the write lock...
    fal_standin.release()                          # ...while fal accepts the job
    try:
        _wait(lambda: any(journal.entries()), timeout=30, what="fal's id in the recovery journal")
        (entry,) = list(journal.entries())
        assert entry["fal_request_id"] in {x["request_id"] for x in fal_standin.received if x["accepted"]}
    finally:
        locker.execute("ROLLBACK")
        locker.close()
    runner.join(120)
    (report,) = outcome
    assert report.finished, report.stopped
    rows = d.batch_requests(batch.id)
    assert {r.status for r in rows} == {"completed"}
    held = d.get_request(entry["request_id"])
    assert held.fal_request_id == entry["fal_request_id"]       # the row carries fal's id after all
    assert set(_accepted(fal_standin).values()) == {1} and fal_standin.submissions == len(rows)


# -- fixtures ---------------------------------------------------------------------------------------



@pytest.fixture
def live_settings(fal_standin):
    """Settings on the stand-in, a store, and a recorded 6-request text-to-image batch."""
    settings = load_settings()
    settings.ensure_dirs()
    d = open_store(settings)
    spec = {"name": "must", "models": MODELS, "options": {"pose": ["Standing", "Walking", "Sitting"]}, "seeds": [2]}
    batch = d.create_batch(plans.make_plan(spec).new_batch(), dry_run=False)
    yield dataclasses.replace(settings), d, batch
    d.close()
