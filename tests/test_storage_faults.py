"""Storage faults (issue 21): an emptied or damaged database is refused in one line with what to
do, by every command and page; what a killed write left behind is removed; requests in
doubt are listed, sent again or given up, recorded with who decided."""
from __future__ import annotations

import json
import os
import time

import pytest

from core.batches import service
from core.config import REPO_ROOT, load_settings
from core.store import open_store
from tests.test_cli_bad_input import _cli, _refused

SCHNELL = "fal-ai/flux/schnell"
COMMANDS = (("batch", "status"), ("export", "--out", "{tmp}/x.csv"), ("reference", "list"),
            ("batch", "run", "{tmp}/plan.json"), ("batch", "resume"), ("metrics",))


def _plan_file(tmp_path, poses=("Standing",)):
    path = tmp_path / "plan.json"
    path.write_text(json.dumps({"name": "p", "models": [SCHNELL], "options": {"pose": list(poses)}, "seeds": [1]}))
    return path


def _args(args, tmp_path):
    return [a.format(tmp=tmp_path) for a in args]


def test_an_emptied_database_beside_kept_images_is_refused_by_every_command(tmp_path):
    settings = load_settings()
    settings.ensure_dirs()
    image = settings.images_dir / "results" / "r1" / "0-abc.png"
    image.parent.mkdir(parents=True)
    image.write_bytes(b"\x89PNG kept image")
    settings.db_path.write_bytes(b"")
    _plan_file(tmp_path)
    for args in COMMANDS:
        _refused(_cli(*_args(args, tmp_path)), "empty", "Restore it from a backup", "mv ")
    assert settings.db_path.stat().st_size == 0          # nothing was written to it
    # a data directory with nothing in it starts a new store as before
    image.unlink()
    assert _cli("batch", "status").returncode == 0


def test_a_database_with_damaged_middle_pages_is_refused_in_refused(tmp_path):
    settings = load_settings()
    settings.ensure_dirs()
    with open_store(settings) as st:
        poses = [f"pose {i}" for i in range(400)]
        st.create_batch(service.plan_batch({"name": "big", "models": [SCHNELL], "options": {"pose": poses},
                                         "seeds": [1]}, store=None, upload=False).new_batch(), dry_run=True)
        st.db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    size = settings.db_path.stat().st_size
    assert size > 200_000
    with open(settings.db_path, "r+b") as f:          # page 1 (the header) stays readable
        f.seek(8192)
        f.write(os.urandom(size - 16384))
    _plan_file(tmp_path)
    for args in (("export", "--out", "{tmp}/x.csv"), ("batch", "run", "{tmp}/plan.json")):
        proc = _cli(*_args(args, tmp_path))
        _refused(proc, "dashboard.db", "restore it from a backup")


@pytest.mark.parametrize("page", ["upload.py", "generate.py", "history.py", "leaderboard.py"])
def test_the_pages_refuse_an_emptied_database_in_one_message_without_a_traceback(tmp_path, page):
    import streamlit as st
    from streamlit.testing.v1 import AppTest

    st.cache_data.clear()        # process-wide: an earlier test's resources must not answer here
    st.cache_resource.clear()
    settings = load_settings()
    settings.ensure_dirs()
    (settings.images_dir / "kept.png").write_bytes(b"\x89PNG kept image")
    settings.db_path.write_bytes(b"")
    at = AppTest.from_file(str(REPO_ROOT / "dashboard" / "app.py"), default_timeout=60)
    at.switch_page(page).run()
    assert not at.exception, [e.value for e in at.exception]
    (error,) = at.error
    assert "empty" in error.value and "Restore it from a backup" in error.value
    assert settings.db_path.stat().st_size == 0


def test_the_files_a_killed_write_left_are_removed_by_the_next_cleanup(tmp_path):
    settings = load_settings()
    settings.ensure_dirs()
    folder = settings.images_dir / "results" / "r1"
    folder.mkdir(parents=True)
    stale, fresh = folder / ".0-abc.png.x1.part", folder / ".1-abc.png.x2.part"
    stale.write_bytes(b"half an image")
    fresh.write_bytes(b"being written now")
    old = time.time() - 3600
    os.utime(stale, (old, old))
    kept = folder / "0-abc.png"
    kept.write_bytes(b"a whole image")
    proc = _cli("reference", "cleanup")
    assert proc.returncode == 0, proc.stderr
    assert not stale.exists() and fresh.exists() and kept.exists()
    assert "killed" in proc.stdout


def test_an_export_killed_mid_write_leaves_nothing_after_the_next_export(tmp_path):
    out = tmp_path / "history.csv"
    left = tmp_path / ".history.csv.abc123.tmp"
    left.write_text("half a csv")
    old = time.time() - 3600
    os.utime(left, (old, old))
    proc = _cli("export", "--out", out)
    assert proc.returncode == 0, proc.stderr
    assert out.exists() and not left.exists()


def test_requests_in_doubt_are_listed_then_sent_again_or_given_up_with_who_decided(tmp_path):
    settings = load_settings()
    settings.ensure_dirs()
    with open_store(settings) as st:
        batch = st.create_batch(service.plan_batch({"name": "d", "models": [SCHNELL],
                                                 "options": {"pose": ["Standing", "Walking"]}, "seeds": [1]}, store=None, upload=False).new_batch(), dry_run=True)
        a, b = st.batch_requests(batch.id)
        for r in (a, b):
            st.mark_submitted(r.id)
            st.mark_in_doubt(r.id, reason="no answer")
    listed = _cli("batch", "doubt", batch.id)
    assert listed.returncode == 0 and a.id in listed.stdout and b.id in listed.stdout
    _refused(_cli("batch", "doubt", batch.id, "--give-up"), "--by")
    _refused(_cli("batch", "doubt", batch.id, "--give-up", "--by", "x", "--request", "nope"), "nope")
    gave = _cli("batch", "doubt", batch.id, "--give-up", "--by", "ana", "--request", a.id)
    assert gave.returncode == 0 and "1 request(s) given up by ana" in gave.stdout
    again = _cli("batch", "doubt", batch.id, "--send-again", "--by", "bo")
    assert again.returncode == 0 and "1 request(s) sent again by bo" in again.stdout
    with open_store(settings) as st:
        ra, rb = st.get_request(a.id), st.get_request(b.id)
    assert (ra.status, ra.resent_by) == ("failed", "ana")
    assert rb.resent_by == "bo" and rb.status in ("planned", "dry_run")   # its runner may be done already


@pytest.mark.parametrize("content", [b"", b"\x00" * 10])
def test_a_tiny_database_alone_is_not_a_lost_history(tmp_path, content):
    settings = load_settings()
    settings.data_dir.mkdir(parents=True)
    settings.db_path.write_bytes(content)
    proc = _cli("batch", "status")
    if content:
        _refused(proc, "not a usable dashboard database")
    else:
        assert proc.returncode == 0 and "no batch yet" in proc.stdout
