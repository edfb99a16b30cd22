"""An echoed key appears in no output, row, log or export.

Gateways in front of fal sometimes echo the request's Authorization header in their error bodies,
and Supabase's errors may repeat the Authorization and apikey headers. Here both stand-ins do it
at every step of a live batch run from the command line (submit, status, result, image upload),
and afterwards neither key, nor either half of the fal key, is in the database, the CSV export,
the recovery journal, the runner logs or anything the commands printed."""
from __future__ import annotations

import io
import os
import subprocess
import sys

from PIL import Image

from core.batches import service
from core.config import REPO_ROOT, load_settings
from core.store import open_store
from core.blobs import open_storage
from tests.standins.fal_fixtures import DEFAULT_KEY

SCHNELL = "fal-ai/flux/schnell"
EDIT = "fal-ai/flux-2/lora/edit"


def _cli(*args):
    return subprocess.run([sys.executable, "-m", "core", "-v", *map(str, args)], cwd=REPO_ROOT,
                          env=dict(os.environ), capture_output=True, text=True, timeout=240)


def test_keys_echoed_by_fal_and_supabase_are_found_nowhere(fal_standin, supabase_env, tmp_path):
    settings = load_settings()
    settings.ensure_dirs()
    buf = io.BytesIO()
    Image.new("RGB", (600, 800), (30, 90, 160)).save(buf, "JPEG")
    (tmp_path / "face.jpg").write_bytes(buf.getvalue())
    spec = {"name": "echo", "models": [SCHNELL, EDIT], "options": {"pose": ["Standing", "Walking", "Sitting"]},
            "seeds": [5], "references": ["face.jpg"]}
    with open_store(settings) as d:
        storage = open_storage(settings)
        batch = d.create_batch(service.plan_batch(spec, store=d, storage=storage, base_dir=tmp_path).new_batch(),
                               dry_run=False)
        storage.close()

    supabase_env.echo_credentials = True
    supabase_env.fail("upload", "500", times=2)                     # storing result images
    fal_standin.inject("submit", "echo_auth", times=1)                # refused before acceptance
    fal_standin.inject("submit", "echo_auth", times=1, status=500)
    fal_standin.inject("stream", "echo_auth", times=1)                # the status stream refuses: polls
    fal_standin.inject("status", "echo_auth", times=1)                # a job fal will not report on
    fal_standin.inject("result", "echo_auth", times=2, status=502)
    fal_standin.inject("file", "echo_auth", times=1, status=403)      # an image the CDN refuses
    outputs = [_cli("batch", "resume", batch.id, "--concurrency", "2")]
    outputs.append(_cli("batch", "status", batch.id))
    outputs.append(_cli("batch", "resume", batch.id))
    outputs.append(_cli("batch", "doubt", batch.id))                 # the 500 submit is in doubt
    out = tmp_path / "history.csv"
    outputs.append(_cli("export", "--out", out))
    outputs.append(_cli("export", "--out", tmp_path / "cmp.csv", "--comparison", "--batch", batch.id))
    assert outputs[-2].returncode == 0, outputs[-2].stderr

    with open_store(settings) as d:
        reqs = d.batch_requests(batch.id)
        dump = "\n".join(d.db.conn.iterdump())
    assert len(reqs) == 6 and all(r.is_final or r.status == "in_doubt" for r in reqs)
    assert sum(r.status == "in_doubt" for r in reqs) == 1          # fal answered 500: never resent
    assert not any(fal_standin._faults.values()), "every injected echo was answered"
    # the echoes really reached what we keep, masked
    assert "Authorization: Key ***" in dump
    assert sum("***" in (r.error_message or "") for r in reqs) >= 2   # the refused submits
    printed = "".join(p.stdout + p.stderr for p in outputs)
    assert "***" in printed and "Bearer ***" in printed
    texts = {"database": dump, "history CSV": out.read_text(encoding="utf-8-sig"),
             "comparison CSV": (tmp_path / "cmp.csv").read_text(encoding="utf-8-sig")}
    for i, proc in enumerate(outputs):
        texts[f"stdout of command {i}"] = proc.stdout
        texts[f"stderr of command {i}"] = proc.stderr
    for path in settings.data_dir.rglob("*"):
        if path.is_file() and path.suffix in (".log", ".jsonl", ".txt", ".json"):
            texts[str(path)] = path.read_text(errors="replace")
    key_id, key_secret = DEFAULT_KEY.split(":")
    for where, text in texts.items():
        for name, secret in (("fal key", DEFAULT_KEY), ("fal key id", key_id), ("fal key secret", key_secret),
                             ("Supabase key", supabase_env.key)):
            assert secret not in text, f"the {name} is in the {where}"
