"""`python -m core batch ...` and `python -m core export` as a user runs them: real processes,
real store, the fal stand-in over HTTP."""
from __future__ import annotations

import csv
import io
import json
import os
import subprocess
import sys

from core.store import open_store
from core.config import REPO_ROOT, load_settings
from core.catalog.payloads import canonical_json

SCHNELL = "fal-ai/flux/schnell"


def _run(*args, timeout=120):
    return subprocess.run([sys.executable, "-m", "core", *args], cwd=REPO_ROOT, env=dict(os.environ),
                          capture_output=True, text=True, timeout=timeout)


def _plan(tmp_path, **over):
    spec = {"name": "cli", "models": [SCHNELL, "fal-ai/flux-2"],
            "options": {"pose": ["Standing", "Walking"], "lighting": ["=cmd|' /C calc'!A0"]},
            "seeds": [11]}
    spec.update(over)
    path = tmp_path / "plan.json"
    path.write_text(json.dumps(spec))
    return path


def test_batch_run_then_export(fal_standin, tmp_path):
    plan = _plan(tmp_path)
    done = _run("batch", "run", str(plan), "--concurrency", "2")
    assert done.returncode == 0, done.stderr
    assert "4 requests = 2 variants x 1 seed x 2 contenders" in done.stdout
    assert "finished: 4/4 done (completed 4)" in done.stdout and "DRY RUN" not in done.stdout
    assert fal_standin.submissions == 4
    d = open_store(load_settings())
    (batch,) = d.list_batches()

    out = tmp_path / "history.csv"
    exported = _run("export", "--out", str(out), "--batch", batch.id, "--endpoint", SCHNELL)
    assert exported.returncode == 0, exported.stderr
    assert f"wrote 2 requests (2 rows) to {out}" in exported.stdout
    raw = out.read_bytes()
    assert raw.startswith(b"\xef\xbb\xbf")
    rows = list(csv.DictReader(io.StringIO(raw.decode("utf-8-sig"), newline="")))
    assert {r["endpoint"] for r in rows} == {SCHNELL} and {r["status"] for r in rows} == {"completed"}
    assert {r["pose"] for r in rows} == {"Standing", "Walking"}
    assert {r["lighting"] for r in rows} == {"'=cmd|' /C calc'!A0"}       # neutralised
    assert all(r["image_storage_path"].startswith("results/") and r["image_sha256"] for r in rows)

    status = _run("batch", "status", batch.id)
    assert status.returncode == 0 and "finished" in status.stdout
    assert json.loads(status.stdout.splitlines()[-1])["counts"] == {"completed": 4}
    assert _run("batch", "resume").stdout.strip() == "no unfinished batch"
    d.close()


def test_batch_run_without_key_is_a_labelled_dry_run(tmp_path):
    done = _run("batch", "run", str(_plan(tmp_path)))
    assert done.returncode == 0, done.stderr
    assert "DRY RUN: nothing sent" in done.stdout and "DRY RUN finished: 4/4 done (dry_run 4)" in done.stdout
    listing = _run("batch", "status")
    assert "[DRY RUN]" in listing.stdout


def test_plan_shows_payloads_and_writes_nothing(tmp_path):
    shown = _run("batch", "plan", str(_plan(tmp_path)), "--payloads")
    assert shown.returncode == 0, shown.stderr
    lines = shown.stdout.splitlines()
    assert lines[0].startswith("plan 'cli': 4 requests")
    assert lines[1:3] == ["  FLUX.1 [schnell]: 2 requests, $0.006", "  FLUX.2 [dev]: 2 requests, $0.024"], lines
    payloads = [json.loads(x) for x in lines[3:]]
    assert len(payloads) == 4 and {p["endpoint"] for p in payloads} == {SCHNELL, "fal-ai/flux-2"}
    assert all(p["payload"]["seed"] == 11 for p in payloads)
    d = open_store(load_settings())
    assert d.db["batches"].count == 0 and d.db["requests"].count == 0


def test_a_bad_plan_is_exit_2_with_the_field_named(tmp_path):
    bad = _run("batch", "run", str(_plan(tmp_path, seeds=["x"])))
    assert bad.returncode == 2 and "error: `seeds[0]`" in bad.stderr
    missing = _run("batch", "run", str(tmp_path / "absent.json"))
    assert missing.returncode == 2 and "cannot read plan file" in missing.stderr
    d = open_store(load_settings())
    assert d.db["batches"].count == 0


def test_failed_requests_still_exit_0_with_a_summary(fal_standin, tmp_path):
    """Every request reached a final state: exit 0, and the failures are pointed at."""
    fal_standin.inject("job", "content_policy_violation")
    done = _run("batch", "run", str(_plan(tmp_path, models=[SCHNELL])), "--concurrency", "1")
    assert done.returncode == 0, done.stderr
    assert "failed 1" in done.stdout and "--status failed" in done.stdout


def test_an_unfinished_batch_exits_1_and_says_how_to_resume(fal_standin, tmp_path):
    fal_standin.set_key("not-the-key")
    done = _run("batch", "run", str(_plan(tmp_path, models=[SCHNELL])))
    assert done.returncode == 1
    assert "NOT finished" in done.stderr and "FAL_KEY" in done.stderr and "batch resume" in done.stderr
    fal_standin.reset()
    resumed = _run("batch", "resume")
    assert resumed.returncode == 0, resumed.stderr
    assert "finished: 2/2 done (completed 2)" in resumed.stdout


def test_cancel_of_a_batch_nobody_runs_cancels_it_here(tmp_path):
    d = open_store(load_settings())
    from core.batches import plans

    batch = d.create_batch(plans.make_plan(json.loads(_plan(tmp_path).read_text())).new_batch(), dry_run=False)
    done = _run("batch", "cancel", batch.id)
    assert done.returncode == 0, done.stderr
    assert "cancelled: 4/4 done (cancelled 4)" in done.stdout
    assert _run("batch", "cancel", batch.id).stdout.startswith(f"batch {batch.id} has already finished")
    unknown = _run("batch", "cancel", "nope")
    assert unknown.returncode == 2 and "No batch with id 'nope'" in unknown.stderr


def test_batch_path_does_not_import_heavy_modules(tmp_path):
    """Start-up stays lean: the batch commands never load pandas, streamlit, supabase or skimage."""
    code = ("import sys, runpy; sys.argv = ['core', 'batch', 'status'];\n"
            "try:\n    runpy.run_module('core', run_name='__main__')\nexcept SystemExit:\n    pass\n"
            "print(sorted(m for m in ('pandas', 'numpy', 'streamlit', 'supabase', 'skimage', 'PIL') "
            "if m in sys.modules))")
    done = subprocess.run([sys.executable, "-c", code], cwd=REPO_ROOT, env=dict(os.environ),
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip().splitlines()[-1] == "[]"
    assert canonical_json([]) == "[]"
