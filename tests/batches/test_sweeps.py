"""The Generate page's sweep inputs as plan fields (core/batches/sweeps.py): typed values per
parameter, and the LoRA editor's rows as one fixed set or a sweep over scales or whole sets."""
from __future__ import annotations

import pytest

from core.batches import service, sweeps
from core.catalog import forms
from core.catalog import registry
from core.errors import PlanError
from tests.review_support import EDIT

FIELDS = {f["name"]: f for f in forms.parameter_fields(EDIT)}
A = "https://example.com/loras/a.safetensors"
B = "owner/b-lora"


def test_values_are_typed_by_the_field():
    assert sweeps.parse_values(FIELDS["num_inference_steps"], "7, 28") == [7, 28]
    assert sweeps.parse_values(FIELDS["guidance_scale"], "2.5; 3.5,4") == [2.5, 3.5, 4]
    assert sweeps.parse_values(FIELDS["output_format"], "png, jpeg") == ["png", "jpeg"]
    assert sweeps.sweepable(FIELDS["num_inference_steps"]) and sweeps.sweepable(FIELDS["acceleration"])
    assert not sweeps.sweepable(FIELDS["loras"]) and not sweeps.sweepable(FIELDS["sync_mode"])


@pytest.mark.parametrize("field, text, message", [
    ("num_inference_steps", "7, 7.5", "`num_inference_steps` takes whole numbers: '7.5' is not one"),
    ("num_inference_steps", " , ", "give one or more values"),
    ("num_inference_steps", "7, 7", "lists 7 twice"),
    ("guidance_scale", "nan", "not a finite number"),
    ("output_format", "gif", "'gif' is not one of jpeg, png, webp"),
])
def test_bad_values_name_the_parameter_and_the_value(field, text, message):
    with pytest.raises(PlanError, match=message.replace("(", r"\(").replace(")", r"\)")):
        sweeps.parse_values(FIELDS[field], text)


def test_lora_rows_as_one_fixed_set():
    rows = [sweeps.LoraRow(A, 0.8), sweeps.LoraRow("  ", 1.0), sweeps.LoraRow(B, 1.0)]
    plan = sweeps.lora_plan(rows, mode="fixed", max_items=3)
    assert plan.fixed == [{"path": A, "scale": 0.8}, {"path": B, "scale": 1}] and plan.sweep is None
    assert sweeps.lora_plan([], mode="fixed").fixed is None


def test_lora_sweep_over_scales_and_over_sets_with_no_lora_first():
    rows = [sweeps.LoraRow(A, 0.8, 1), sweeps.LoraRow(B, 0.5, 2)]
    scales = sweeps.lora_plan(rows[:1], mode="scales", scales="0.4, 1.2", include_none=True)
    assert scales.sweep == [[], [{"path": A, "scale": 0.4}], [{"path": A, "scale": 1.2}]]
    sets = sweeps.lora_plan(rows, mode="sets")
    assert sets.sweep == [[{"path": A, "scale": 0.8}], [{"path": B, "scale": 0.5}]] and sets.fixed is None


def test_lora_sets_over_the_endpoint_limit_or_without_rows_are_refused():
    four = [sweeps.LoraRow(f"https://example.com/{n}.safetensors") for n in range(4)]
    limit = sweeps.max_loras(registry.get_endpoint(EDIT).schema)
    assert limit == 3
    with pytest.raises(PlanError, match="the LoRA set has 4 LoRAs; this model takes at most 3"):
        sweeps.lora_plan(four, mode="fixed", max_items=limit)
    with pytest.raises(PlanError, match="needs at least one LoRA row"):
        sweeps.lora_plan([], mode="scales", scales="1")
    with pytest.raises(PlanError, match="needs two sets"):
        sweeps.lora_plan(four[:1], mode="sets")


def test_a_lora_sweep_from_the_editor_plans_one_contender_per_set(tmp_path):
    """What the page builds is a plan like any other: the scales sweep makes one contender per
    scale, validated against the schema (a scale over 4 is refused naming the value)."""
    from tests.apptest_support import photo

    (tmp_path / "face.jpg").write_bytes(photo("red"))
    rows = [sweeps.LoraRow(A, 1.0)]
    spec = {"name": "scales", "models": [EDIT], "references": ["face.jpg"], "seeds": [1],
            "sweep": {EDIT: {"loras": sweeps.lora_plan(rows, mode="scales", scales="0.5, 1").sweep}}}
    plan = service.plan_batch(spec, store=None, base_dir=tmp_path, upload=False)
    assert [line.label for line in plan.contender_lines()] == ["FLUX.2 [dev] LoRA edit · a 0.5",
                                                               "FLUX.2 [dev] LoRA edit · a 1"]
    bad = {**spec, "sweep": {EDIT: {"loras": sweeps.lora_plan(rows, mode="scales", scales="0.5, 9").sweep}}}
    with pytest.raises(PlanError, match=r"`sweep\.fal-ai/flux-2/lora/edit\.loras\[1\]` = .*9"):
        service.plan_batch(bad, store=None, base_dir=tmp_path, upload=False)
