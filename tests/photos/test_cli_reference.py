"""`python -m core reference ...`: stores with the configured backend, prints JSON, refuses with
exit 2 and the reason on stderr.

The command line is driven through `core.cli.main` with only the `reference` command registered,
so these tests do not depend on the other commands; a few run it as a real process.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys

import httpx
import pytest

from core import cli
from core.store import open_store
from tests.corpus import build
from tests.standins.supabase_fixtures import BUCKET

BOOT = "import sys, core.cli as c; c.COMMANDS = ('reference',); raise SystemExit(c.main())"


@pytest.fixture
def run(monkeypatch, capsys):
    monkeypatch.setattr(cli, "COMMANDS", ("reference",))

    def _run(*argv: str) -> tuple[int, str, str]:
        code = cli.main(list(argv))
        out, err = capsys.readouterr()
        return code, out, err

    return _run


@pytest.fixture
def photo(tmp_path):
    path = tmp_path / "IMG_0001.JPG"
    path.write_bytes(build("exif_selfie_gps"))
    return path


def _rows(settings) -> list[dict]:
    st = open_store(settings)
    try:
        return list(st.db.query("select * from reference_photos"))
    finally:
        st.db.conn.close()


def _files(settings) -> list[str]:
    root = settings.images_dir
    return sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file()) if root.exists() else []


def test_add_local_prints_reference_with_abbreviated_data_uri(run, photo, settings):
    code, out, err = run("reference", "add", str(photo), "--role", "face", "--owner", "Ana")
    assert (code, err) == (0, "")
    ref = json.loads(out)
    assert ref["role"] == "face" and ref["owner"] == "Ana" and ref["existing"] is False
    assert (ref["width"], ref["height"], ref["content_type"]) == (900, 1200, "image/jpeg")
    assert ref["storage_path"] == f"ana/{ref['id']}.jpg"
    assert ref["fal_url"] == f"data:image/jpeg;base64,…({ref['size_bytes']} bytes, sha256 {ref['sha256'][:12]})"
    assert "rotated per EXIF orientation 6" in ref["notes"]
    assert _files(settings) == [ref["storage_path"]]
    assert [r["id"] for r in _rows(settings)] == [ref["id"]]


def test_add_twice_reports_the_existing_reference(run, photo, settings):
    first = json.loads(run("reference", "add", str(photo))[1])
    code, out, _ = run("reference", "add", str(photo))
    again = json.loads(out)
    assert code == 0 and again["existing"] is True and again["id"] == first["id"]
    assert len(_rows(settings)) == 1 and len(_files(settings)) == 1


@pytest.mark.parametrize("name, filename, reason", [
    ("text_named_jpg", "notes.jpg", "notes.jpg is not an image we can read: it looks like a text file"),
    ("animated_gif", "wave.gif", "wave.gif is animated (3 frames)"),
    ("short_side_255", "edge.png", "edge.png is 255x400 px"),
])
def test_refused_file_exits_2_with_reason_and_leaves_nothing(run, tmp_path, settings, name, filename, reason):
    path = tmp_path / filename
    path.write_bytes(build(name))
    code, out, err = run("reference", "add", str(path))
    assert code == 2 and out == ""
    assert err.startswith("error: ") and reason in err
    assert _rows(settings) == [] and _files(settings) == []


def test_missing_file_exits_2(run, tmp_path):
    code, _, err = run("reference", "add", str(tmp_path / "nope.jpg"))
    assert code == 2 and "cannot read" in err and "nope.jpg" in err


def test_fifo_is_refused_at_once_with_one_line(run, tmp_path, settings):
    fifo = tmp_path / "photo.jpg"
    os.mkfifo(fifo)
    code, out, err = run("reference", "add", str(fifo))
    assert (code, out) == (2, "")
    assert err == f"error: {fifo} is a named pipe (FIFO), not a regular file: give the path of one image file.\n"
    assert _rows(settings) == []


@pytest.mark.parametrize("target", ["/dev/zero", "directory"])
def test_device_or_directory_is_refused(run, tmp_path, target):
    path = str(tmp_path) if target == "directory" else target
    code, _, err = run("reference", "add", path)
    assert code == 2 and err.startswith(f"error: {path} is a ") and "not a regular file" in err
    assert len(err.strip().splitlines()) == 1


def test_huge_sparse_file_is_refused_from_its_size(run, tmp_path, monkeypatch):
    """6 GB of nothing on disk: refused from its size, never read (no MemoryError)."""
    huge = tmp_path / "huge.jpg"
    with open(huge, "wb") as f:
        f.truncate(6 * 1024 ** 3)
    monkeypatch.setenv("DASHBOARD_MAX_UPLOAD_BYTES", str(5 * 1024 * 1024))
    code, _, err = run("reference", "add", str(huge))
    assert code == 2 and "over the 5.0 MB upload limit (DASHBOARD_MAX_UPLOAD_BYTES)" in err


def test_cleanup_reports_and_removes_objects_left_without_a_row(run, photo, settings):
    from core.blobs import open_storage

    storage = open_storage(settings)
    storage.put("team/orphan.jpg", b"\xff\xd8\xff", "image/jpeg")
    storage.journal.add(storage.location, "team/orphan.jpg", "unconfirmed", tag="reference")
    kept = json.loads(run("reference", "add", str(photo))[1])
    code, out, _ = run("reference", "cleanup")   # too recent: its upload may still be running
    assert code == 0 and out.splitlines()[0].startswith("waiting team/orphan.jpg: written ")
    assert out.splitlines()[-1] == "0 deleted, 0 confirmed, 1 left"
    code, out, _ = run("reference", "cleanup", "--grace", "0")
    assert code == 0 and out.splitlines() == ["deleted team/orphan.jpg", "1 deleted, 0 confirmed, 0 left"]
    assert _files(settings) == [kept["storage_path"]]
    from core.store import open_store

    with open_store(settings) as store:   # the deletion is in the audit trail, once
        assert [(e.action, e.subject, e.detail) for e in store.audit_entries()] == [
            ("photo.cleanup", "1 object(s)", "deleted what failed or killed uploads left: team/orphan.jpg")]


def test_cleanup_says_when_the_key_may_not_delete(run, monkeypatch, insert_only_key, supabase_standin):
    supabase_standin.add_bucket(BUCKET, public=True)
    monkeypatch.setenv("SUPABASE_URL", supabase_standin.url)
    monkeypatch.setenv("SUPABASE_KEY", insert_only_key)
    from core.config import load_settings
    from core.blobs import open_storage

    storage = open_storage(load_settings())
    storage.put("team/x.jpg", b"\xff\xd8\xff", "image/jpeg")
    storage.journal.add(storage.location, "team/x.jpg", "delete", reason="test: lost answer")
    storage.close()
    code, out, _ = run("reference", "cleanup")
    assert code == 0 and out.splitlines() == [
        "left team/x.jpg: test: lost answer",
        "0 deleted, 0 confirmed, 1 left (deletes this key may not do: run again with the service-role key)"]
    assert supabase_standin.paths(BUCKET) == ["team/x.jpg"]


def test_unknown_role_is_a_usage_error(run, photo):
    with pytest.raises(SystemExit) as info:
        run("reference", "add", str(photo), "--role", "hero")
    assert info.value.code == 2


def test_list_and_archive(run, photo, tmp_path):
    other = tmp_path / "product.webp"
    other.write_bytes(build("webp"))
    a = json.loads(run("reference", "add", str(photo), "--role", "face")[1])
    b = json.loads(run("reference", "add", str(other), "--role", "product")[1])
    code, out, _ = run("reference", "list")
    lines = [json.loads(line) for line in out.splitlines()]
    assert code == 0 and [r["id"] for r in lines] == [b["id"], a["id"]]
    assert lines[1]["payload_url"] == f"reference://{a['id']}"
    assert all("data:" not in line for line in out.splitlines())
    assert run("reference", "archive", a["id"])[0] == 0
    assert [json.loads(x)["id"] for x in run("reference", "list")[1].splitlines()] == [b["id"]]
    assert len(run("reference", "list", "--all")[1].splitlines()) == 2
    code, _, err = run("reference", "archive", "nope")
    assert code == 2 and "no reference photo with id 'nope'" in err


# -- as a real process ---------------------------------------------------------------------------

def _process(*argv: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", BOOT, *argv], capture_output=True, text=True, timeout=120)


def test_process_add_with_supabase_prints_public_url_that_serves_the_photo(supabase_env, photo, settings):
    """With SUPABASE_URL/KEY set the photo goes to the bucket and fal_url is its public URL."""
    done = _process("reference", "add", str(photo), "--role", "face")
    assert done.returncode == 0, done.stderr
    ref = json.loads(done.stdout)
    assert ref["storage_backend"] == "supabase"
    assert supabase_env.paths(BUCKET) == [ref["storage_path"]]
    response = httpx.get(ref["fal_url"])
    assert response.status_code == 200 and response.headers["content-type"] == "image/jpeg"
    assert len(response.content) == ref["size_bytes"]
    assert supabase_env.key not in done.stdout + done.stderr


def test_process_refusal_and_storage_failure_exit_2(supabase_env, tmp_path, settings):
    bad = tmp_path / "scan.jpg"
    bad.write_bytes(build("pdf"))
    done = _process("reference", "add", str(bad))
    assert done.returncode == 2 and "scan.jpg is not an image we can read: it looks like a PDF" in done.stderr
    assert "Traceback" not in done.stderr
    supabase_env.add_bucket(BUCKET, public=True, allowed_mime_types=["image/png"])
    good = tmp_path / "photo.jpg"
    good.write_bytes(build("webp"))
    done = _process("reference", "add", str(good))
    assert done.returncode == 2 and "does not accept image/jpeg" in done.stderr
    assert "Traceback" not in done.stderr
    assert supabase_env.paths(BUCKET) == [] and _rows(settings) == []
