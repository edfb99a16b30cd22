"""The README's sweep plan end to end, as a user runs it: `python -m core batch run` of the plan
(with a photo file on disk) against the fal stand-in over HTTP, then both exports. The stand-in
must receive exactly the planned bodies, and the comparison CSV must keep the five contenders
apart with their settings readable."""
from __future__ import annotations

import csv
import io
import json
import os
import subprocess
import sys

from PIL import Image

from core.config import REPO_ROOT, load_settings
from core.store import open_store
from tests.review_support import EDIT, LORA, SCHNELL, SWEEP_SPEC


def _run(*args, timeout=180):
    return subprocess.run([sys.executable, "-m", "core", *args], cwd=REPO_ROOT, env=dict(os.environ),
                          capture_output=True, text=True, timeout=timeout)


def _photo(path):
    """A 640x800 JPEG with a gradient and a shape (not a flat colour), as a phone would give."""
    img = Image.new("RGB", (640, 800))
    img.putdata([(x * 255 // 640, y * 255 // 800, 128) for y in range(800) for x in range(640)])
    img.paste((230, 190, 160), (220, 180, 420, 420))
    path.parent.mkdir(parents=True, exist_ok=True)
    img.save(path, "JPEG", quality=90)


def _read(path):
    raw = path.read_bytes()
    assert raw.startswith(b"\xef\xbb\xbf")
    return list(csv.DictReader(io.StringIO(raw.decode("utf-8-sig"), newline="")))


def test_example_sweep_plan_sends_exactly_the_planned_bodies_and_exports_five_contenders(fal_standin, tmp_path):
    _photo(tmp_path / "photos" / "ana.jpg")
    plan = tmp_path / "plan.json"
    plan.write_text(json.dumps({**SWEEP_SPEC, "references": ["photos/ana.jpg"]}))

    done = _run("batch", "run", str(plan), "--concurrency", "4")
    assert done.returncode == 0, done.stderr
    assert "10 requests = 2 variants x 1 seed x 5 contenders" in done.stdout
    assert "finished: 10/10 done (completed 10)" in done.stdout

    received = [r for r in fal_standin.received if r["accepted"]]
    assert len(received) == 10 and fal_standin.submissions == 10
    assert fal_standin.dropped_keys == [[]] * 10, "every body is valid and fully used by its endpoint"
    bodies = [(r["endpoint"], r["body"]) for r in received]
    schnell = [b for e, b in bodies if e == SCHNELL]
    edit = [b for e, b in bodies if e == EDIT]
    assert len(schnell) == 2 and all("loras" not in b for b in schnell)
    assert len(edit) == 8 and all(b["guidance_scale"] == 3.5 for b in edit)
    settings = sorted((b["num_inference_steps"], json.dumps(b.get("loras", []))) for b in edit)
    expected = sorted((steps, json.dumps(loras)) for steps in (7, 28) for loras in ([], [LORA])) * 1
    assert settings == sorted(expected * 2), "7 and 28 steps, each with and without the LoRA, per variant"
    assert {b["image_size"] for _, b in bodies} == {"portrait_4_3"}, "one image_size for all"
    assert {b["seed"] for _, b in bodies} == {11}
    assert all(b["image_urls"][0].startswith("data:image/") for b in edit), "the photo file is sent"

    st = open_store(load_settings())
    (batch,) = st.list_batches()
    st.close()
    out = tmp_path / "comparison.csv"
    exported = _run("export", "--comparison", "--batch", batch.id, "--out", str(out))
    assert exported.returncode == 0, exported.stderr
    assert f"wrote 2 groups x 5 contenders to {out}" in exported.stdout
    rows = _read(out)
    assert len(rows) == 2 and {r["pose"] for r in rows} == {"Standing", "Walking"}
    labels = {v for r in rows for k, v in r.items() if k.endswith("_contender") and v}
    assert labels == {
        "FLUX.1 [schnell]",
        "FLUX.2 [dev] LoRA edit · 7 steps · no LoRA",
        "FLUX.2 [dev] LoRA edit · 7 steps · studio-style 0.8",
        "FLUX.2 [dev] LoRA edit · 28 steps · no LoRA",
        "FLUX.2 [dev] LoRA edit · 28 steps · studio-style 0.8",
    }
    prefixes = [k.removesuffix("_contender_id") for k in rows[0] if k.endswith("_contender_id")]
    assert prefixes == ["flux_schnell", "flux-2_lora_edit_7_steps_no_LoRA",
                        "flux-2_lora_edit_7_steps_studio-style_0.8", "flux-2_lora_edit_28_steps_no_LoRA",
                        "flux-2_lora_edit_28_steps_studio-style_0.8"]
    for row in rows:
        hashes = [row[f"{p}_payload_hash"] for p in prefixes]
        assert len(set(hashes)) == 5 and all(h.startswith("v1:") for h in hashes)
        assert all(row[f"{p}_image_storage_path"].startswith("results/") for p in prefixes)
        assert "guidance 3.5" in row["flux-2_lora_edit_28_steps_studio-style_0.8_settings"]
        assert "28 steps" in row["flux-2_lora_edit_28_steps_studio-style_0.8_settings"]

    history = tmp_path / "history.csv"
    assert _run("export", "--batch", batch.id, "--out", str(history)).returncode == 0
    lines = _read(history)
    assert len(lines) == 10
    by_label = {r["contender"]: r for r in lines}
    assert len(by_label) == 5 and len({r["contender_id"] for r in lines}) == 5
    edit28 = by_label["FLUX.2 [dev] LoRA edit · 28 steps · studio-style 0.8"]
    assert edit28["param_num_inference_steps"] == "28"
    assert json.loads(edit28["param_loras"]) == [LORA]
    assert json.loads(by_label["FLUX.2 [dev] LoRA edit · 7 steps · no LoRA"]["param_loras"]) == []
    assert by_label["FLUX.1 [schnell]"]["param_loras"] == "", "schnell takes no LoRA"
