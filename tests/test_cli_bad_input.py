"""Bad input on the command line: one clear line on stderr, exit 2, no traceback, nothing harmed.

Each case runs `python -m core` as a user does (a real process, a real data directory holding a
recorded dry-run batch) and checks afterwards that the store still opens with its history."""
from __future__ import annotations

import csv
import io
import json
import os
import shutil
import stat
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from core.batches import plans, schedule
from core.config import REPO_ROOT, load_settings
from core.store import open_store

SCHNELL = "fal-ai/flux/schnell"


def _cli(*args, timeout=120, **kw):
    return subprocess.run([sys.executable, "-m", "core", *map(str, args)], cwd=REPO_ROOT,
                          env=dict(os.environ), capture_output=True, text=True, timeout=timeout, **kw)


def _refused(proc, *words):
    """Exit 2 with exactly one `error:` line naming `words`, and no traceback."""
    assert proc.returncode == 2, (proc.stdout, proc.stderr)
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), proc.stderr
    assert "Traceback" not in proc.stderr + proc.stdout
    for word in words:
        assert word in lines[0], lines[0]
    return lines[0]


@pytest.fixture
def history(tmp_path):
    """A data directory with one recorded (dry-run) batch of 4 requests; returns a checker that
    the store still opens with exactly that history."""
    settings = load_settings()
    settings.ensure_dirs()
    spec = {"name": "kept", "models": [SCHNELL, "fal-ai/flux-2"], "options": {"pose": ["Standing", "Walking"]},
            "seeds": [3]}
    with open_store(settings) as d:
        batch = d.create_batch(plans.make_plan(spec).new_batch(), dry_run=True)
    assert schedule.run_batch(batch.id, settings=settings).finished

    def intact():
        with open_store(settings) as d:
            (batch,) = d.list_batches()
            assert batch.name == "kept" and d.batch_progress(batch.id).counts == {"dry_run": 4}

    intact()
    return settings, intact


def test_export_text_of_100_kb_is_refused_in_one_line(history):
    _, intact = history
    _refused(_cli("export", "--out", "x.csv", "--text", "a" * 100_000), "--text", "at most 1000")
    intact()


def test_export_to_a_directory_is_refused(history, tmp_path):
    _, intact = history
    _refused(_cli("export", "--out", tmp_path), "is a directory", "history.csv")
    intact()


def test_export_to_a_missing_directory_creates_it(history, tmp_path):
    _, intact = history
    out = tmp_path / "new" / "deeper" / "h.csv"
    done = _cli("export", "--out", out)
    assert done.returncode == 0, done.stderr
    assert len(list(csv.DictReader(io.StringIO(out.read_text(encoding="utf-8-sig"))))) == 4
    assert [p.name for p in out.parent.iterdir()] == ["h.csv"]     # no temporary file left
    intact()


def test_export_into_a_directory_that_cannot_be_created_names_it(history, tmp_path):
    _, intact = history
    (tmp_path / "file").write_text("x")
    _refused(_cli("export", "--out", tmp_path / "file" / "sub" / "h.csv"), "cannot create the directory",
             str(tmp_path / "file" / "sub"))
    intact()


@pytest.mark.parametrize("names", [("dashboard.db", "dashboard.db-wal"), ("dashboard.db-shm", "dashboard.db.lock"),
                                   ("images/x.csv", "recovery/batch-1.jsonl")])
def test_export_over_the_database_or_the_data_directorys_internals_is_refused(history, names):
    """Given as absolute and as relative paths (a relative one through `..`)."""
    settings, intact = history
    before = {p: p.read_bytes() for p in settings.data_dir.glob("dashboard.db*")}
    for name, relative in zip(names, (False, True)):
        target = settings.data_dir / name
        _refused(_cli("export", "--out", os.path.relpath(target, REPO_ROOT) if relative else target),
                 "write the CSV somewhere else")
    intact()
    assert {p: p.read_bytes() for p in settings.data_dir.glob("dashboard.db*")} == before


def test_export_to_a_device_is_refused_and_the_device_kept(history):
    _, intact = history
    _refused(_cli("export", "--out", "/dev/full"), "device or special file")
    assert stat.S_ISCHR(os.stat("/dev/full").st_mode)
    intact()


def test_export_to_a_symlink_is_refused_and_its_target_kept(history, tmp_path):
    _, intact = history
    target = tmp_path / "precious.txt"
    target.write_text("keep me")
    link = tmp_path / "link.csv"
    link.symlink_to(target)
    _refused(_cli("export", "--out", link), "symbolic link")
    assert link.is_symlink() and target.read_text() == "keep me"
    intact()


def test_two_exports_to_one_path_never_mix(history, tmp_path):
    """Different filters race to one file: each exits 0 and the file is exactly one of them."""
    _, intact = history
    out = tmp_path / "same.csv"
    expected = {}
    for status in ("dry_run", "failed"):
        alone = tmp_path / f"{status}.csv"
        assert _cli("export", "--out", alone, "--status", status).returncode == 0
        expected[status] = alone.read_bytes()
    assert expected["dry_run"] != expected["failed"]
    for _ in range(4):
        results = []
        threads = [threading.Thread(target=lambda s=s: results.append(_cli("export", "--out", out, "--status", s)))
                   for s in ("dry_run", "failed")]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert [r.returncode for r in results] == [0, 0], [r.stderr for r in results]
        assert out.read_bytes() in expected.values()
        assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []
    intact()


def _read_only(path: Path) -> list[str] | None:
    """A command prefix that runs with `path` mounted read-only (a private mount namespace, so
    even root cannot write it), or None where that is impossible."""
    if os.geteuid() != 0:
        return []   # chmod is enough for a normal user (see the test)
    unshare = shutil.which("unshare")
    if not unshare:
        return None
    probe = subprocess.run([unshare, "-rm", "sh", "-c", f"mount --bind {path} {path} && "
                            f"mount -o remount,ro,bind {path} && ! touch {path}/.probe"],
                           capture_output=True, text=True)
    return [unshare, "-rm", "sh", "-c", f'mount --bind {path} {path} && mount -o remount,ro,bind {path} '
            '&& exec "$@"', "sh"] if probe.returncode == 0 else None


def test_a_read_only_data_directory_serves_read_only_commands_and_refuses_writes_in_one_line(history, tmp_path):
    settings, intact = history
    prefix = _read_only(settings.data_dir)
    if prefix is None:
        pytest.skip("cannot make a directory read-only for root here (no unshare/mount namespace)")
    if prefix == []:
        os.chmod(settings.data_dir, 0o555)
    (settings.data_dir / "dashboard.db.lock").unlink()     # nothing to open for writing
    plan = tmp_path / "plan.json"
    plan.write_text(json.dumps({"name": "new", "models": [SCHNELL], "seeds": [1]}))
    out = tmp_path / "ro.csv"

    def run(*args):
        return subprocess.run([*prefix, sys.executable, "-m", "core", *map(str, args)], cwd=REPO_ROOT,
                              env=dict(os.environ), capture_output=True, text=True, timeout=120)

    try:
        status = run("batch", "status")
        assert status.returncode == 0 and "'kept'" in status.stdout and status.stderr == "", status.stderr
        exported = run("export", "--out", out)
        assert exported.returncode == 0, exported.stderr
        assert len(out.read_text(encoding="utf-8-sig").splitlines()) == 5
        listed = run("reference", "list")
        assert listed.returncode == 0, listed.stderr
        _refused(run("batch", "run", plan), "is read-only", "Make it writable")
    finally:
        os.chmod(settings.data_dir, 0o755)
    intact()


@pytest.mark.parametrize("content", [
    b"this is a text file that somebody saved under the database's name\n" * 50,
    bytes(range(256)) * 64,
])
def test_a_file_that_is_not_a_database_is_named_with_what_to_do_and_never_written(tmp_path, content):
    settings = load_settings()
    settings.data_dir.mkdir(parents=True)
    settings.db_path.write_bytes(content)
    for args in (("batch", "status"), ("export", "--out", tmp_path / "x.csv"), ("reference", "list")):
        line = _refused(_cli(*args), "not a usable dashboard database", "mv ", "restore it from a backup")
        assert str(settings.db_path) in line
    assert settings.db_path.read_bytes() == content
    assert sorted(p.name for p in settings.data_dir.iterdir()) == ["dashboard.db", "dashboard.db.lock", "images"]


def test_a_damaged_database_is_one_line_and_left_unchanged(history):
    """Pages of the file overwritten (a disk fault): commands that hit them say what to do."""
    settings, _ = history
    raw = bytearray(settings.db_path.read_bytes())
    page = 4096
    for at in range(page, len(raw), page):   # every page after the header: the schema tree survives
        raw[at:at + page] = b"\xff" * min(page, len(raw) - at)
    settings.db_path.write_bytes(bytes(raw))
    line = _refused(_cli("batch", "status"))
    assert "dashboard" in line and ("backup" in line or "mv " in line)
    assert settings.db_path.read_bytes() == bytes(raw)


def test_another_programs_sqlite_file_is_never_migrated(tmp_path):
    import sqlite3

    settings = load_settings()
    settings.data_dir.mkdir(parents=True)
    conn = sqlite3.connect(settings.db_path)
    conn.execute("CREATE TABLE contacts (name TEXT)")
    conn.commit()
    conn.close()
    before = settings.db_path.read_bytes()
    _refused(_cli("batch", "status"), "another program", "contacts")
    assert settings.db_path.read_bytes() == before


@pytest.mark.parametrize("content, expected", [
    (b'{"name": "caf\xe9"}', "is not UTF-8 text"),
    ("[" * 200_000 + "]" * 200_000, "levels deep"),
    ('{"name": "\\ud800"}', "lone surrogate"),
    ('{"name": "x", "models": ["fal-ai/flux/schnell"], "params": {"fal-ai/flux/schnell": {"guidance_scale": NaN}}}',
     "NaN, not a number"),
])
def test_bad_plan_files_are_one_line_and_exit_2(history, tmp_path, content, expected):
    _, intact = history
    plan = tmp_path / "bad.json"
    plan.write_bytes(content if isinstance(content, bytes) else content.encode())
    for command in ("plan", "run"):
        _refused(_cli("batch", command, plan), expected)
    intact()
