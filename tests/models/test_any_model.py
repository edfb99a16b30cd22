"""Any fal image model, added by the team from its document and sent beside the built-in ones
(issue 18's must-holds), through real processes: `python -m core model add` from a file, then
`python -m core batch run` against the fal stand-in, which validates every body against the
document it serves (refusing a field the schema lacks, as fal would silently drop it).

What must hold, for each of fal's four shared documents:
- the bodies validate against that endpoint's own schema (jsonschema, Draft 2020-12);
- the reference goes in that endpoint's own image field, the prompt's aspect ratio in its own
  size field (or nothing, where it cannot), the seed where it has one, and every model of a group
  gets the same prompt;
- no body carries a field the schema does not have.
A bad document (not JSON, not OpenAPI, no Input, a `$ref` out of the document, a circular
`$ref`, 20 MB, another endpoint's id, a video category, a duplicate add) is one line and exit 2,
and nothing is stored."""
from __future__ import annotations

import io
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from jsonschema import Draft202012Validator
from PIL import Image

from core.catalog import openapi
from core.catalog.registry import build_payload
from core.config import REPO_ROOT
from core.store import open_store

FIXTURES = REPO_ROOT / "tests" / "fixtures" / "openapi"
SCHNELL, LORA_EDIT = "fal-ai/flux/schnell", "fal-ai/flux-2/lora/edit"
KONTEXT, FLUX_LORA = "fal-ai/flux-pro/kontext", "fal-ai/flux-lora"
BUILT_IN_DOCUMENTS = ("fal-ai/flux-2", "fal-ai/flux-2/edit")   # ids the registry has built in


def _fixture(endpoint_id: str) -> Path:
    return FIXTURES / f"{endpoint_id.replace('/', '__')}.json"


def _run(*args: str, timeout: float = 180) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "core", *args], cwd=REPO_ROOT, env=dict(os.environ),
                          capture_output=True, text=True, timeout=timeout)


def _photo(path: Path, colour: str) -> Path:
    buf = io.BytesIO()
    Image.new("RGB", (640, 480), colour).save(buf, "PNG")
    path.write_bytes(buf.getvalue())
    return path


def _document(endpoint_id: str) -> openapi.EndpointDocument:
    return openapi.read_document(_fixture(endpoint_id).read_bytes(), endpoint_id=endpoint_id)


@pytest.fixture
def catalogue(fal_standin, monkeypatch):
    monkeypatch.setenv("FAL_OPENAPI_URL", f"{fal_standin.url}/api/openapi/queue/openapi.json")
    monkeypatch.setenv("FAL_API_URL", f"{fal_standin.url}/v1")
    return fal_standin


def test_added_models_run_beside_the_built_in_ones_each_asked_in_its_own_fields(catalogue, tmp_path, settings):
    for eid, extra in ((KONTEXT, ["--price", "0.04", "--unit", "image"]), (FLUX_LORA, [])):
        done = _run("model", "add", str(_fixture(eid)), *extra, "--by", "ana")
        assert done.returncode == 0, done.stderr
        assert f"added {eid}" in done.stdout
    plan = {"name": "any model", "models": [SCHNELL, LORA_EDIT, KONTEXT, FLUX_LORA],
            "references": [str(_photo(tmp_path / "face.png", "olive")), str(_photo(tmp_path / "room.png", "navy"))],
            "options": {"subject": ["Woman"], "aspect_ratio": ["9:16", "1:1"]}, "seeds": [7]}
    # references go to edit models only; flux-lora is text-to-image: it has a plan of its own
    path = tmp_path / "plan.json"
    path.write_text(json.dumps({**plan, "models": [SCHNELL, LORA_EDIT, KONTEXT]}))
    shown = _run("batch", "plan", str(path))
    assert shown.returncode == 0, shown.stderr
    assert "takes one photo: only the first is sent" in shown.stdout     # said before anything is sent
    done = _run("batch", "run", str(path), "--concurrency", "4")
    assert done.returncode == 0, done.stderr + done.stdout
    assert "finished: 6/6 done (completed 6)" in done.stdout
    text_only = tmp_path / "t2i.json"
    text_only.write_text(json.dumps({**plan, "references": [], "models": [SCHNELL, FLUX_LORA],
                                     "params": {FLUX_LORA: {"num_inference_steps": 7}}}))
    done = _run("batch", "run", str(text_only), "--concurrency", "4")
    assert done.returncode == 0, done.stderr + done.stdout
    assert "finished: 4/4 done (completed 4)" in done.stdout

    store = open_store(settings)
    requests = [r for b in store.list_batches() for r in store.batch_requests(b.id)]
    assert len(requests) == 10 and all(r.status == "completed" for r in requests)
    prompts_by_group: dict[str, set[str]] = {}
    for r in requests:
        prompts_by_group.setdefault(r.group_id, set()).add(r.payload["prompt"])
        assert r.schema_version, "each request records the schema it was validated against"
        if r.endpoint not in (KONTEXT, FLUX_LORA):
            continue
        doc = _document(r.endpoint)
        body = r.payload
        Draft202012Validator(doc.input_schema).validate(body)
        assert set(body) <= set(doc.input_schema["properties"]), "a field the schema lacks"
        ratio = r.options["aspect_ratio"]
        if r.endpoint == KONTEXT:
            assert body["aspect_ratio"] == ratio and "image_size" not in body
            assert isinstance(body["image_url"], str) and body["image_url"].startswith("reference://")
            assert "image_urls" not in body and "num_inference_steps" not in body
        else:
            assert body["image_size"] == {"9:16": "portrait_16_9", "1:1": "square_hd"}[ratio]
            assert body["num_inference_steps"] == 7
        assert body["seed"] == 7
    assert all(len(p) == 1 for p in prompts_by_group.values()), "a group's models get one prompt"
    assert catalogue.submissions == 10
    edit_batch = next(b for b in store.list_batches() if b.request_count == 6)
    store.close()

    # both CSVs carry the added model as they carry a built-in one (its label, its contender)
    history, comparison = tmp_path / "history.csv", tmp_path / "comparison.csv"
    assert _run("export", "--out", str(history)).returncode == 0
    assert _run("export", "--out", str(comparison), "--comparison", "--batch", edit_batch.id).returncode == 0
    rows = history.read_text(encoding="utf-8")
    assert rows.count(KONTEXT) >= 2 and rows.count(FLUX_LORA) >= 2
    assert "flux-pro/kontext" in comparison.read_text(encoding="utf-8")


@pytest.mark.parametrize("endpoint_id", [KONTEXT, FLUX_LORA, *BUILT_IN_DOCUMENTS])
@pytest.mark.parametrize("ratio", ["9:16", "1:1", "16:9", "4:3", "3:4"])
def test_every_shared_documents_bodies_validate_against_its_own_schema(endpoint_id, ratio, monkeypatch):
    """The body the dashboard builds for each of fal's shared documents, for every ratio the team
    uses, is what that document's Input allows, with nothing it lacks. For flux-2 and flux-2/edit,
    which are built in, the built-in mapping must agree with fal's own document."""
    from core.catalog import registry

    doc = _document(endpoint_id)
    if endpoint_id not in BUILT_IN_DOCUMENTS:
        registry.install_added([registry.AddedEndpoint(doc, endpoint_id.split("/", 1)[1])])
    endpoint = registry.get_endpoint(endpoint_id)
    refs = ["https://example.test/a.png", "https://example.test/b.png"] if endpoint.mode == "edit" else []
    try:
        from core.catalog.prompts import image_size_for

        body = build_payload(endpoint_id, prompt="A Woman model, photorealistic", image_size=image_size_for(ratio),
                             aspect_ratio=ratio, image_urls=refs, seed=11)
    finally:
        registry.install_added([])
    Draft202012Validator(doc.input_schema).validate(body)
    assert set(body) <= set(doc.input_schema["properties"])
    assert body["prompt"] == "A Woman model, photorealistic" and body["seed"] == 11


BAD = {
    "not JSON": b"{not json",
    "not OpenAPI": json.dumps({"hello": "world"}).encode(),
    "20 MB": b" " * (20 * 1024 * 1024),
}


def _variant(change) -> bytes:
    doc = json.loads(_fixture(KONTEXT).read_bytes())
    change(doc)
    return json.dumps(doc).encode()


def _no_input(doc):
    doc["paths"].pop(f"/{KONTEXT}")


def _outside_ref(doc):
    schemas = doc["components"]["schemas"]
    key = next(k for k in schemas if k.endswith("Input"))
    schemas[key]["properties"]["prompt"] = {"$ref": "https://evil.example/schema.json#/Prompt"}


def _circular_ref(doc):
    schemas = doc["components"]["schemas"]
    key = next(k for k in schemas if k.endswith("Input"))
    schemas["Loop"] = {"type": "object", "properties": {"again": {"$ref": "#/components/schemas/Loop"}}}
    schemas[key]["properties"]["loop"] = {"$ref": "#/components/schemas/Loop"}


def _video(doc):
    doc["info"]["x-fal-metadata"]["category"] = "image-to-video"


@pytest.mark.parametrize("case", ["not JSON", "not OpenAPI", "no Input", "outside $ref", "circular $ref",
                                  "20 MB", "video", "duplicate"])
def test_a_bad_document_is_one_line_exit_2_and_nothing_stored(case, tmp_path, settings):
    path = tmp_path / "doc.json"
    if case in BAD:
        path.write_bytes(BAD[case])
    elif case == "duplicate":
        path = _fixture(KONTEXT)
        assert _run("model", "add", str(path)).returncode == 0
    else:
        change = {"no Input": _no_input, "outside $ref": _outside_ref, "circular $ref": _circular_ref,
                  "video": _video}[case]
        path.write_bytes(_variant(change))
    done = _run("model", "add", str(path), timeout=30)
    assert done.returncode == 2, done.stdout + done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and "Traceback" not in done.stderr, done.stderr
    if case == "video":
        assert "image-to-video" in lines[0]
    store = open_store(settings)
    assert len(store.list_models(include_archived=True)) == (1 if case == "duplicate" else 0)
    store.close()


def test_an_id_that_does_not_match_the_fetched_document_is_refused(catalogue, settings):
    """Fetched by id: the stand-in answers another endpoint's document; nothing is stored."""
    catalogue.catalogue.register("fal-ai/not-kontext", _fixture(KONTEXT).read_bytes())
    done = _run("model", "add", "fal-ai/not-kontext", timeout=30)
    assert done.returncode == 2 and "fal-ai/flux-pro/kontext" in done.stderr, done.stderr
    store = open_store(settings)
    assert store.list_models() == []
    store.close()


def test_fetched_by_id_with_fals_price_then_refreshed_and_adopted(catalogue, settings):
    done = _run("model", "add", KONTEXT, "--by", "ben", timeout=60)
    assert done.returncode == 0, done.stderr
    assert "fal's price" in done.stdout
    unchanged = _run("model", "refresh", KONTEXT, timeout=60)
    assert unchanged.returncode == 0 and "nothing to adopt" in unchanged.stdout, unchanged.stdout
    doc = json.loads(_fixture(KONTEXT).read_bytes())
    key = next(k for k in doc["components"]["schemas"] if k.endswith("Input"))
    doc["components"]["schemas"][key]["properties"]["guidance_scale"]["maximum"] = 30
    catalogue.catalogue.register(KONTEXT, json.dumps(doc).encode())
    changed = _run("model", "refresh", KONTEXT, timeout=60)
    assert changed.returncode == 0, changed.stderr
    assert "guidance_scale: maximum 20 -> 30" in changed.stdout and "--adopt" in changed.stdout
    store = open_store(settings)
    before = store.get_model(KONTEXT)
    assert before.pending_sha256 and before.pending_sha256 != before.sha256   # staged, not used yet
    assert _run("model", "refresh", KONTEXT, "--adopt", timeout=60).returncode == 0
    after = store.get_model(KONTEXT)
    assert after.sha256 == before.pending_sha256 and after.pending_document is None
    store.close()


def test_archive_removes_a_model_from_new_plans(tmp_path, settings):
    assert _run("model", "add", str(_fixture(FLUX_LORA))).returncode == 0
    assert _run("model", "archive", FLUX_LORA).returncode == 0
    path = tmp_path / "plan.json"
    path.write_text(json.dumps({"name": "x", "models": [FLUX_LORA], "seeds": [1]}))
    done = _run("batch", "plan", str(path))
    assert done.returncode == 2 and f"unknown endpoint '{FLUX_LORA}'" in done.stderr, done.stderr
    listed = [json.loads(line) for line in _run("model", "list", "--all").stdout.splitlines()]
    assert [m["archived"] for m in listed if m["endpoint_id"] == FLUX_LORA] == [True]


def test_an_unknown_price_is_never_counted_as_zero(tmp_path, settings):
    assert _run("model", "add", str(_fixture(FLUX_LORA))).returncode == 0
    path = tmp_path / "plan.json"
    path.write_text(json.dumps({"name": "x", "models": [SCHNELL, FLUX_LORA], "seeds": [1, 2]}))
    done = _run("batch", "plan", str(path))
    assert done.returncode == 0, done.stderr
    assert "+ unknown for 2 requests" in done.stdout
    assert "has no known price" in done.stdout
