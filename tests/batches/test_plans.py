"""Batch plans: the product options x seeds x models, groups that share prompt/seed/size across
models, exact validated payloads and cost before anything runs, and bad plans refused with the
field named and nothing written."""
from __future__ import annotations

import io
import json

import pytest
from PIL import Image

from core.store import open_store
from core.batches import plans
from core.catalog import registry
from core import store
from core.errors import PlanError
from core.store.blobs import open_storage

SCHNELL = "fal-ai/flux/schnell"
EDIT = "fal-ai/flux-2/lora/edit"


def _jpeg(color=(200, 40, 40), size=(600, 800)) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", size, color).save(buf, "JPEG")
    return buf.getvalue()


@pytest.fixture
def env(settings, tmp_path):
    settings.ensure_dirs()
    d = open_store(settings.db_path)
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
    plan = plans.make_plan(_spec(), st=d, storage=storage, base_dir=tmp)
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
    plan = plans.make_plan(_spec(), st=d, storage=storage, base_dir=tmp)
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
    plan = plans.make_plan(_spec(references=["face.jpg", "same.jpg"]), st=d, storage=storage, base_dir=tmp)
    assert len(plan.reference_ids) == 1 and d.db["reference_photos"].count == 1   # deduplicated
    again = plans.make_plan(_spec(references=[plan.reference_ids[0]]), st=d, storage=storage, base_dir=tmp)
    assert again.reference_ids == plan.reference_ids and d.db["reference_photos"].count == 1


def test_preview_uploads_nothing(env):
    d, storage, tmp = env
    plan = plans.make_plan(_spec(), st=d, storage=storage, base_dir=tmp, upload=False)
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
        plans.make_plan(_spec(**over), st=d, storage=storage, base_dir=tmp)
    assert field in str(e.value)
    _nothing_written(d, tmp / "data" / "images")


def test_a_bad_parameter_stops_the_plan_before_the_reference_is_uploaded(env, settings):
    """Every payload is validated before anything is written: the file reference stays on disk."""
    d, storage, tmp = env
    with pytest.raises(PlanError, match="num_inference_steps"):
        plans.make_plan(_spec(params={EDIT: {"num_inference_steps": 500}}), st=d, storage=storage,
                        base_dir=tmp)
    _nothing_written(d, settings.images_dir)


def test_plan_file_errors(tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(PlanError, match="not valid JSON"):
        plans.load_plan_file(bad)
    (tmp_path / "list.json").write_text("[]")
    with pytest.raises(PlanError, match="JSON object"):
        plans.load_plan_file(tmp_path / "list.json")
    with pytest.raises(PlanError, match="cannot read"):
        plans.load_plan_file(tmp_path / "absent.json")


def test_too_large_a_plan_is_refused():
    values = [f"v{i}" for i in range(101)]
    with pytest.raises(PlanError, match="over the limit"):
        plans.make_plan({"name": "huge", "models": [SCHNELL], "seeds": list(range(100)),
                         "options": {"pose": values}})


def test_recorded_batch_keeps_the_plan_with_ids(env):
    d, storage, tmp = env
    plan = plans.make_plan(_spec(), st=d, storage=storage, base_dir=tmp)
    batch = d.create_batch(plan, dry_run=True)
    assert batch.plan["references"] == list(plan.reference_ids)
    assert json.loads(batch.plan_json)["models"] == [SCHNELL, EDIT]
    stored = {r.payload_hash for r in d.batch_requests(batch.id)}
    assert stored == {r.payload_hash for r in plan.requests}


def test_a_model_without_image_size_is_flagged_before_sending(tmp_path):
    """fal-ai/flux/dev/image-to-image follows its input's shape: the prompt's aspect ratio would
    silently not apply (the old backend's mismatch), so the plan says so."""
    from core.store import open_store
    from core.config import load_settings
    from core.store.blobs import open_storage

    settings = load_settings()
    settings.ensure_dirs()
    d = open_store(settings.db_path)
    import io

    from PIL import Image
    buf = io.BytesIO()
    Image.new("RGB", (600, 800), (10, 20, 30)).save(buf, "JPEG")
    (tmp_path / "ref.jpg").write_bytes(buf.getvalue())
    spec = {"name": "w", "references": ["ref.jpg"], "options": {"aspect_ratio": ["9:16"]},
            "models": ["fal-ai/flux/schnell", "fal-ai/flux/dev/image-to-image"], "seeds": [1]}
    plan = plans.make_plan(spec, st=d, storage=open_storage(settings), base_dir=tmp_path)
    (warning,) = plan.warnings
    assert "fal-ai/flux/dev/image-to-image" in warning and "image_size" in warning
    spec["models"] = ["fal-ai/flux/schnell", "fal-ai/flux-2/lora/edit"]
    assert plans.make_plan(spec, st=d, storage=open_storage(settings), base_dir=tmp_path).warnings == ()
    d.close()
