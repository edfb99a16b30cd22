"""Batch plans: the product options x seeds x models, groups that share prompt/seed/size across
models, exact validated payloads and cost before anything runs, and bad plans refused with the
field named and nothing written."""
from __future__ import annotations

import io
import json

import pytest
from PIL import Image

from core.store import open_store
from core.batches import plan_file, plans, service
from core.catalog import contenders, registry
from core.errors import PlanError
from core.blobs import open_storage
from core.catalog.payloads import canonical_json

SCHNELL = "fal-ai/flux/schnell"
EDIT = "fal-ai/flux-2/lora/edit"


def _jpeg(color=(200, 40, 40), size=(600, 800)) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", size, color).save(buf, "JPEG")
    return buf.getvalue()


@pytest.fixture
def env(settings, tmp_path):
    settings.ensure_dirs()
    d = open_store(settings)
    storage = open_storage(settings)
    (tmp_path / "face.jpg").write_bytes(_jpeg())
    yield d, storage, tmp_path
    d.close()


def _spec(**over):
    spec = {"name": "poses", "references": ["face.jpg"],
            "options": {"subject": ["Woman"], "pose": ["Standing", "Walking"],
                        "lighting": ["Studio", "Golden Hour"], "aspect_ratio": ["9:16"]},
            "models": [SCHNELL, EDIT], "params": {EDIT: {"num_inference_steps": 28}}, "seeds": [7, 8]}
    spec.update(over)
    return spec


def _nothing_written(d, storage_root):
    assert d.db["reference_photos"].count == 0
    assert d.db["batches"].count == 0 and d.db["requests"].count == 0
    assert not storage_root.exists() or not any(p.is_file() for p in storage_root.rglob("*"))


def test_plan_counts_groups_and_payloads(env, settings):
    d, storage, tmp = env
    plan = service.plan_batch(_spec(), store=d, storage=storage, base_dir=tmp)
    assert plan.final and plan.request_count == 2 * 2 * 2 * 2 and len(plan.groups) == 8
    (ref_id,) = plan.reference_ids
    by_group: dict[str, list] = {}
    for r in plan.requests:
        by_group.setdefault(r.group_key, []).append(r)
    assert len(by_group) == 8
    for g in plan.groups:
        pair = {r.endpoint: r for r in by_group[g.key]}
        assert set(pair) == {SCHNELL, EDIT}
        for r in pair.values():
            # one group = one prompt, seed and image size across models
            assert (r.payload["prompt"], r.payload["seed"], r.payload["image_size"]) == \
                (g.prompt, g.seed, "portrait_16_9")
            registry.validate_payload(r.endpoint, dict(r.payload))
        assert "image_urls" not in pair[SCHNELL].payload and pair[SCHNELL].reference_ids == ()
        assert pair[EDIT].payload["image_urls"] == [f"reference://{ref_id}"]
        assert pair[EDIT].payload["num_inference_steps"] == 28
    prompts_seen = {g.prompt for g in plan.groups}
    assert "A Woman model, in Walking pose, with Golden Hour lighting, in 9:16 aspect ratio, photorealistic" \
        in prompts_seen
    assert plan.plan_json["references"] == [ref_id] and plan.plan_json["seeds"] == [7, 8]


def test_cost_is_the_sum_of_registry_estimates(env):
    d, storage, tmp = env
    plan = service.plan_batch(_spec(), store=d, storage=storage, base_dir=tmp)
    expected = sum(registry.estimate_cost(r.endpoint, dict(r.payload),
                                          input_sizes=[(600, 800)] if r.endpoint == EDIT else None)
                   for r in plan.requests)
    assert plan.estimated_cost == pytest.approx(expected)
    by_model = plan.cost_by_model()
    # 576x1024 output: schnell 0.003/MP; the edit adds each reference as 1 MP at 0.021/MP
    # (each request's estimate is rounded to 6 decimals)
    assert by_model[SCHNELL] == pytest.approx(8 * 0.003 * 576 * 1024 / 2**20, abs=1e-5)
    assert by_model[EDIT] == pytest.approx(8 * 0.021 * (576 * 1024 / 2**20 + 1), abs=1e-5)


def test_file_references_are_uploaded_once_and_ids_accepted(env):
    d, storage, tmp = env
    (tmp / "same.jpg").write_bytes(_jpeg())
    plan = service.plan_batch(_spec(references=["face.jpg", "same.jpg"]), store=d, storage=storage, base_dir=tmp)
    assert len(plan.reference_ids) == 1 and d.db["reference_photos"].count == 1   # deduplicated
    again = service.plan_batch(_spec(references=[plan.reference_ids[0]]), store=d, storage=storage, base_dir=tmp)
    assert again.reference_ids == plan.reference_ids and d.db["reference_photos"].count == 1


def test_preview_uploads_nothing(env):
    d, storage, tmp = env
    plan = service.plan_batch(_spec(), store=d, storage=storage, base_dir=tmp, upload=False)
    assert not plan.final and plan.request_count == 16
    assert any(r.payload.get("image_urls") == ["reference://pending-0"] for r in plan.requests)
    _nothing_written(d, tmp / "data" / "images")


def test_text_to_image_only_plan_needs_no_store():
    plan = plans.make_plan({"name": "t2i", "models": [SCHNELL], "seeds": [1]})
    assert plan.request_count == 1 and plan.groups[0].image_size == "square_hd"
    assert plan.requests[0].payload["prompt"] == "A model, photorealistic"


def test_missing_seeds_become_one_explicit_seed():
    plan = plans.make_plan({"name": "t2i", "models": [SCHNELL]})
    (seed,) = plan.seeds
    assert plan.plan_json["seeds"] == [seed] and plan.requests[0].payload["seed"] == seed


@pytest.mark.parametrize("over, field", [
    ({"name": ""}, "`name`"),
    ({"colour": 1}, "unknown plan field 'colour'"),
    ({"models": []}, "`models`"),
    ({"models": [SCHNELL, "fal-ai/nope"]}, "`models[1]`"),
    ({"models": [SCHNELL, SCHNELL], "references": []}, "`models[1]`"),
    ({"seeds": [1, "2"]}, "`seeds[1]`"),
    ({"seeds": [1, 1]}, "`seeds`"),
    ({"seeds": [-1]}, "`seeds[0]`"),
    ({"options": {"mood": ["happy"]}}, "`options.mood`"),
    ({"options": {"pose": []}}, "`options.pose`"),
    ({"options": {"pose": ["Standing", 3]}}, "`options.pose[1]`"),
    ({"options": {"aspect_ratio": ["2:1"]}}, "`options.aspect_ratio[0]`"),
    ({"params": {"fal-ai/flux-2": {"x": 1}}}, "`params.fal-ai/flux-2`"),
    ({"params": {EDIT: {"guidance_scale": 99}}}, f"`params.{EDIT}`"),
    ({"params": {EDIT: {"strength": 0.65}}}, "strength"),
    ({"params": {EDIT: {"seed": 3}}}, f"`params.{EDIT}.seed`"),
    ({"references": ["missing.jpg"]}, "`references[0]`"),
    ({"references": []}, "`references`"),
    ({"references": ["face.jpg"] * 5}, "at most 4"),
    ({"models": [SCHNELL], "params": {}}, "no model in `models` edits images"),
    ({"references": ["notes.txt"]}, "`references[0]`"),
])
def test_bad_plans_name_the_field_and_write_nothing(env, over, field):
    d, storage, tmp = env
    (tmp / "notes.txt").write_text("not an image")
    with pytest.raises(PlanError) as e:
        service.plan_batch(_spec(**over), store=d, storage=storage, base_dir=tmp)
    assert field in str(e.value)
    _nothing_written(d, tmp / "data" / "images")


def test_a_bad_parameter_stops_the_plan_before_the_reference_is_uploaded(env, settings):
    """Every payload is validated before anything is written: the file reference stays on disk."""
    d, storage, tmp = env
    with pytest.raises(PlanError, match="num_inference_steps"):
        service.plan_batch(_spec(params={EDIT: {"num_inference_steps": 500}}), store=d, storage=storage, base_dir=tmp)
    _nothing_written(d, settings.images_dir)


def test_plan_file_errors(tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(PlanError, match="not valid JSON"):
        plan_file.load_plan_file(bad)
    (tmp_path / "list.json").write_text("[]")
    with pytest.raises(PlanError, match="JSON object"):
        plan_file.load_plan_file(tmp_path / "list.json")
    with pytest.raises(PlanError, match="cannot read"):
        plan_file.load_plan_file(tmp_path / "absent.json")


def test_too_large_a_plan_is_refused():
    values = [f"v{i}" for i in range(101)]
    with pytest.raises(PlanError, match="over the limit"):
        plans.make_plan({"name": "huge", "models": [SCHNELL], "seeds": list(range(100)),
                         "options": {"pose": values}})


def test_recorded_batch_keeps_the_plan_with_ids(env):
    d, storage, tmp = env
    plan = service.plan_batch(_spec(), store=d, storage=storage, base_dir=tmp)
    batch = d.create_batch(plan.new_batch(), dry_run=True)
    assert batch.plan["references"] == list(plan.reference_ids)
    assert json.loads(batch.plan_json)["models"] == [SCHNELL, EDIT]
    stored = {r.payload_hash for r in d.batch_requests(batch.id)}
    assert stored == {r.payload_hash for r in plan.requests}


def test_a_model_without_image_size_is_flagged_before_sending(tmp_path):
    """fal-ai/flux/dev/image-to-image follows its input's shape: the prompt's aspect ratio would
    silently not apply (the old backend's mismatch), so the plan says so."""
    from core.store import open_store
    from core.config import load_settings
    from core.blobs import open_storage

    settings = load_settings()
    settings.ensure_dirs()
    d = open_store(settings)
    import io

    from PIL import Image
    buf = io.BytesIO()
    Image.new("RGB", (600, 800), (10, 20, 30)).save(buf, "JPEG")
    (tmp_path / "ref.jpg").write_bytes(buf.getvalue())
    spec = {"name": "w", "references": ["ref.jpg"], "options": {"aspect_ratio": ["9:16"]},
            "models": ["fal-ai/flux/schnell", "fal-ai/flux/dev/image-to-image"], "seeds": [1]}
    plan = service.plan_batch(spec, store=d, storage=open_storage(settings), base_dir=tmp_path)
    (warning,) = plan.warnings
    assert "fal-ai/flux/dev/image-to-image" in warning and "image_size" in warning
    spec["models"] = ["fal-ai/flux/schnell", "fal-ai/flux-2/lora/edit"]
    assert service.plan_batch(spec, store=d, storage=open_storage(settings), base_dir=tmp_path).warnings == ()
    d.close()


# ---------------------------------------------------------------------------- sweeps

STUDIO = {"path": "https://example.com/loras/studio-style.safetensors", "scale": 0.8}


def _example(**over):
    """The README's example plan."""
    spec = {"name": "steps and LoRA", "references": ["face.jpg"],
            "options": {"subject": ["Woman model"], "pose": ["Standing", "Walking"], "aspect_ratio": ["3:4"]},
            "models": [SCHNELL, EDIT],
            "params": {EDIT: {"guidance_scale": 3.5}},
            "sweep": {EDIT: {"num_inference_steps": [7, 28], "loras": [[], [STUDIO]]}},
            "seeds": [11]}
    spec.update(over)
    return spec


def test_the_readme_sweep_makes_ten_requests_in_two_groups_of_five_contenders(env):
    d, storage, tmp = env
    plan = service.plan_batch(_example(), store=d, storage=storage, base_dir=tmp)
    assert plan.request_count == 10 and len(plan.groups) == 2 and len(plan.contenders) == 5
    assert plan.summary().startswith("10 requests = 2 variants x 1 seed x 5 contenders")
    assert [line.label for line in plan.contender_lines()] == [
        "FLUX.1 [schnell]",
        "FLUX.2 [dev] LoRA edit · 7 steps · no LoRA",
        "FLUX.2 [dev] LoRA edit · 7 steps · studio-style 0.8",
        "FLUX.2 [dev] LoRA edit · 28 steps · no LoRA",
        "FLUX.2 [dev] LoRA edit · 28 steps · studio-style 0.8",
    ]
    assert all(line.requests == 2 for line in plan.contender_lines())
    assert sum(line.estimated_cost for line in plan.contender_lines()) == pytest.approx(plan.estimated_cost)
    edit = [dict(r.payload) for r in plan.requests if r.endpoint == EDIT]
    settings = sorted((b["num_inference_steps"], json.dumps(b["loras"])) for b in edit)
    assert settings == sorted([(7, "[]"), (7, json.dumps([STUDIO])), (28, "[]"), (28, json.dumps([STUDIO]))] * 2)
    assert all(b["guidance_scale"] == 3.5 for b in edit)
    schnell = [dict(r.payload) for r in plan.requests if r.endpoint == SCHNELL]
    assert len(schnell) == 2 and all("loras" not in b for b in schnell)
    assert {r.payload["image_size"] for r in plan.requests} == {"portrait_4_3"}  # one size for all
    for r in plan.requests:
        registry.validate_payload(r.endpoint, dict(r.payload))
        # the planned request carries its contender, the one its stored body gives back
        assert r.contender == contenders.from_request(r.endpoint, dict(r.payload))
    for g in plan.groups:
        assert sorted(r.contender.id for r in plan.requests if r.group_key == g.key) == \
            sorted(c.id for c in plan.contenders)
    assert plan.plan_json["sweep"] == {EDIT: {"num_inference_steps": [7, 28], "loras": [[], [STUDIO]]}}
    assert [(a.parameter, a.labels) for a in plan.axes] == [
        ("num_inference_steps", ("7 steps", "28 steps")), ("loras", ("no LoRA", "studio-style 0.8"))]


def test_a_plan_without_sweep_stores_and_sends_what_it_did_before(env):
    d, storage, tmp = env
    plan = service.plan_batch(_spec(), store=d, storage=storage, base_dir=tmp)
    assert "sweep" not in plan.plan_json and len(plan.contenders) == 2
    assert [line.label for line in plan.contender_lines()] == ["FLUX.1 [schnell]", "FLUX.2 [dev] LoRA edit"]
    assert plan.axes == ()


def test_sweep_recorded_batch_keeps_every_planned_body(env):
    d, storage, tmp = env
    plan = service.plan_batch(_example(), store=d, storage=storage, base_dir=tmp)
    batch = d.create_batch(plan.new_batch(), dry_run=True)
    assert json.loads(batch.plan_json)["sweep"] == plan.plan_json["sweep"]
    stored = sorted(r.payload_hash for r in d.batch_requests(batch.id))
    assert stored == sorted(r.payload_hash for r in plan.requests) and len(set(stored)) == 10


@pytest.mark.parametrize("sweep, expected", [
    # a parameter the endpoint lacks: named with the endpoint and the value
    ({EDIT: {"strength": [0.6, 0.7]}}, f"`sweep.{EDIT}.strength[0]` = 0.6 is refused for {EDIT}"),
    ({EDIT: {"num_inference_steps": [7, 500]}}, f"`sweep.{EDIT}.num_inference_steps[1]` = 500"),
    ({EDIT: {"num_inference_steps": [7, 500]}}, "out of range"),
    ({EDIT: {"loras": [[], [STUDIO] * 4]}}, f"`sweep.{EDIT}.loras[1]`"),
    ({EDIT: {"loras": [[{"path": "a", "scale": 9}]]}}, "`loras[0].scale` = 9 is out of range"),
    ({EDIT: {"num_inference_steps": [7, 7]}}, "lists 7 twice"),
    ({EDIT: {"num_inference_steps": []}}, "non-empty list"),
    ({EDIT: {"num_inference_steps": 7}}, "non-empty list"),
    ({EDIT: {}}, f"`sweep.{EDIT}` must be a non-empty object"),
    ({EDIT: {"seed": [1, 2]}}, "set by the plan itself"),
    ({EDIT: {"image_size": ["square"]}}, "set by the plan itself"),
    ({EDIT: {"guidance_scale": [2.5, 3.5]}}, f"also fixed in `params.{EDIT}`"),
    ({"fal-ai/flux-2": {"num_inference_steps": [7]}}, "`sweep.fal-ai/flux-2`: fal-ai/flux-2 is not in `models`"),
    ([1], "`sweep` must be an object"),
    # 28 is the default: null (the default) and 28 make one contender twice
    ({EDIT: {"num_inference_steps": [None, 28]}}, "same contender twice"),
])
def test_bad_sweeps_are_refused_naming_endpoint_parameter_and_value(env, sweep, expected):
    d, storage, tmp = env
    with pytest.raises(PlanError) as e:
        service.plan_batch(_example(sweep=sweep), store=d, storage=storage, base_dir=tmp)
    assert expected in str(e.value)
    _nothing_written(d, tmp / "data" / "images")


def test_a_swept_parameter_of_another_endpoint_is_checked_against_that_endpoint(env):
    """fal-ai/flux/dev/image-to-image has `strength`; the same sweep on FLUX.2 is refused above."""
    d, storage, tmp = env
    i2i = "fal-ai/flux/dev/image-to-image"
    plan = service.plan_batch(_example(models=[i2i], params={}, sweep={i2i: {"strength": [0.6, 0.7]}}), store=d, storage=storage, base_dir=tmp, upload=False)
    assert [line.label for line in plan.contender_lines()] == [
        "FLUX.1 [dev] image-to-image · strength 0.6", "FLUX.1 [dev] image-to-image · strength 0.7"]


def test_sweep_sizes_are_checked_before_any_combination_is_built():
    """4 options x 64 values = 16.7M variants: refused at once, from the counts alone."""
    import time
    import tracemalloc

    options = {k: [f"{k} {i}" for i in range(64)] for k in ("subject", "pose", "style", "lighting")}
    tracemalloc.start()
    started = time.perf_counter()
    with pytest.raises(PlanError, match=r"16,777,216 requests \(16,777,216 variants x 1 seed x 1 contender\)"):
        plans.make_plan({"name": "huge", "models": [SCHNELL], "seeds": [1], "options": options})
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert time.perf_counter() - started < 1.0 and peak < 5 * 2**20
    sweep = {SCHNELL: {"num_inference_steps": list(range(1, 13)), "guidance_scale": list(range(1, 21)),
                       "num_images": [1, 2, 3, 4], "output_format": ["jpeg", "png"],
                       "acceleration": ["none", "regular", "high"], "enable_safety_checker": [True, False]}}
    with pytest.raises(PlanError, match=r"11,520 contenders\), over the limit"):
        plans.make_plan({"name": "wide", "models": [SCHNELL], "seeds": [1], "sweep": sweep})


def test_sweeps_multiply_with_seeds_and_variants():
    plan = plans.make_plan({"name": "t2i", "models": [SCHNELL, "fal-ai/flux-2"], "seeds": [1, 2, 3],
                            "options": {"pose": ["Standing", "Walking"]},
                            "sweep": {SCHNELL: {"num_inference_steps": [2, 4, 8]}}})
    assert len(plan.contenders) == 4 and plan.request_count == 2 * 3 * 4 and len(plan.groups) == 6
    assert sorted({r.payload.get("num_inference_steps") for r in plan.requests if r.endpoint == SCHNELL}) == [2, 4, 8]


# ---------------------------------------------------------------------------- plan input


def _load(tmp_path, content: bytes | str):
    path = tmp_path / "plan.json"
    path.write_bytes(content if isinstance(content, bytes) else content.encode("utf-8"))
    return plan_file.load_plan_file(path)


def _one_line(e: pytest.ExceptionInfo) -> str:
    text = str(e.value)
    assert "\n" not in text and "Traceback" not in text
    return text


@pytest.mark.parametrize("content, expected", [
    (b'{"name": "caf\xe9"}', "is not UTF-8 text (byte 0xe9 at offset"),
    ("[" * 200_000 + "]" * 200_000, "nests JSON 200000 levels deep"),
    ('{"name": "x", "params": ' + '{"a": ' * 40 + "1" + "}" * 40 + "}", "levels deep"),
    ('{"name": "\\ud800"}', "`name` holds a lone surrogate (\\ud800"),
    ('{"name": "x", "options": {"extra": ["' + "a" * 5000 + '"]}}', "`options.extra[0]` is 5000 characters long"),
    ('{"name": "x", "params": {"e": {"guidance_scale": NaN}}}', "`params.e.guidance_scale` is NaN, not a number"),
    ('{"name": "x", "seeds": [Infinity]}', "`seeds[0]` is Infinity, not a number"),
    ('{"name": "x", "seeds": [-Infinity]}', "`seeds[0]` is -Infinity"),
    ('{"name": "x", "params": {"e": {"guidance_scale": 1e999}}}', "`params.e.guidance_scale` is Infinity"),
    ('{"name": "a", "name": "b"}', "the key 'name' is given twice"),
    ("{not json", "is not valid JSON"),
    ("[]", "must hold a JSON object"),
])
def test_bad_plan_files_get_one_clear_line(tmp_path, content, expected):
    with pytest.raises(PlanError) as e:
        _load(tmp_path, content)
    assert expected in _one_line(e)


def test_brackets_inside_texts_do_not_count_as_nesting(tmp_path):
    spec = _load(tmp_path, json.dumps({"name": "[[[[" * 100 + '"\\"{{', "models": [SCHNELL]}))
    assert spec["name"].startswith("[[[[")
    assert _load(tmp_path, b'\xef\xbb\xbf{"name": "bom"}') == {"name": "bom"}  # a BOM is fine


def test_plan_files_that_are_not_regular_files_or_too_large_are_refused(tmp_path):
    import os

    with pytest.raises(PlanError, match="not a regular file") as e:
        plan_file.load_plan_file(tmp_path)
    _one_line(e)
    fifo = tmp_path / "fifo.json"
    os.mkfifo(fifo)
    with pytest.raises(PlanError, match="not a regular file"):  # returns at once, no writer needed
        plan_file.load_plan_file(fifo)
    with pytest.raises(PlanError, match="not a regular file"):
        plan_file.load_plan_file("/dev/zero")
    big = tmp_path / "big.json"
    with big.open("wb") as f:  # sparse: 6 GB on paper, nothing on disk
        f.truncate(6 * 2**30)
    with pytest.raises(PlanError, match=r"is 6\.0 GB, over the 1\.0 MB limit"):
        plan_file.load_plan_file(big)


def test_nan_and_friends_in_a_spec_dict_are_refused_before_anything_is_built():
    """The Generate page hands make_plan a dict: float('nan') never reaches a stored body."""
    base = {"name": "x", "models": [SCHNELL], "seeds": [1]}
    cases = [
        ({"params": {SCHNELL: {"guidance_scale": float("nan")}}}, f"`params.{SCHNELL}.guidance_scale` is NaN"),
        ({"sweep": {SCHNELL: {"guidance_scale": [3.5, float("inf")]}}}, "guidance_scale[1]` is Infinity"),
        ({"name": "\udcff"}, "`name` holds a lone surrogate"),
        ({"options": {"extra": "x" * 5000}}, "`options.extra` is 5000 characters long"),
        ({"params": {SCHNELL: {1: 2}}}, "has a key 1 that is not text"),
        ({"params": {SCHNELL: {"guidance_scale": object()}}}, "is a object, not a JSON value"),
    ]
    for over, expected in cases:
        with pytest.raises(PlanError) as e:
            plans.make_plan({**base, **over})
        assert expected in _one_line(e), over


def test_a_reference_that_is_a_device_or_too_large_is_refused_without_reading_it(env, tmp_path):
    d, storage, tmp = env
    with pytest.raises(PlanError, match=r"`references\[0\]` \(/dev/zero\) is not a regular file"):
        service.plan_batch(_spec(references=["/dev/zero"]), store=d, storage=storage, base_dir=tmp)
    big = tmp / "huge.jpg"
    with big.open("wb") as f:
        f.truncate(6 * 2**30)
    with pytest.raises(PlanError, match=r"is 6\.0 GB, over the 20\.0 MB limit"):
        service.plan_batch(_spec(references=["huge.jpg"]), store=d, storage=storage, base_dir=tmp)
    _nothing_written(d, tmp / "data" / "images")


def test_the_fal_standin_receives_exactly_the_planned_sweep_bodies(fal_standin, tmp_path):
    """The README example, recorded and run by the real runner over HTTP: fal gets 10 bodies,
    the planned ones (the reference token replaced by the photo), none with a key fal ignores."""
    from core.batches import schedule
    from core.store import open_store
    from core.config import load_settings

    settings = load_settings()
    settings.ensure_dirs()
    d = open_store(settings)
    (tmp_path / "face.jpg").write_bytes(_jpeg())
    try:
        plan = service.plan_batch(_example(), store=d, storage=open_storage(settings), base_dir=tmp_path)
        batch = d.create_batch(plan.new_batch(), dry_run=settings.dry_run)
        report = schedule.run_batch(batch.id, settings=settings, concurrency=4)
        assert report.finished and {r.status for r in d.batch_requests(batch.id)} == {"completed"}
    finally:
        d.close()
    received = list(fal_standin.received)
    assert len(received) == 10 and fal_standin.submissions == 10
    assert all(not r["dropped_keys"] for r in received)

    def comparable(endpoint, body):
        body = dict(body)
        if "image_urls" in body:
            assert all(u.startswith(("reference://", "data:image/")) for u in body["image_urls"])
            body["image_urls"] = len(body["image_urls"])
        return endpoint, canonical_json(body)

    sent = sorted(comparable(r["endpoint"], r["body"]) for r in received)
    planned = sorted(comparable(r.endpoint, r.payload) for r in plan.requests)
    assert sent == planned
    for r in received:
        registry.validate_payload(r["endpoint"], r["body"])
