"""Contenders: an endpoint at one parameter set, with an id that survives key order, defaults and
time, and labels that say what differs between the contenders shown together."""
from __future__ import annotations

import dataclasses
import json

import pytest

from core.catalog import contenders as C
from core.catalog.payloads import canonical_json

SCHNELL = "fal-ai/flux/schnell"
EDIT = "fal-ai/flux-2/lora/edit"
STUDIO = {"path": "https://example.com/loras/studio-style.safetensors", "scale": 0.8}


def _example() -> list[C.Contender]:
    """The issue's example: schnell, and the edit model at 7/28 steps with and without the LoRA."""
    out = [C.make(SCHNELL, {"num_inference_steps": 7, "guidance_scale": 3.5})]
    for steps in (7, 28):
        for loras in ([], [STUDIO]):
            out.append(C.make(EDIT, {"guidance_scale": 3.5, "num_inference_steps": steps, "loras": loras}))
    return out


def test_id_is_stable_versioned_and_independent_of_key_order():
    a = C.make(EDIT, {"num_inference_steps": 28, "guidance_scale": 3.5, "loras": [STUDIO]})
    b = C.make(EDIT, {"loras": [{"scale": 0.8, "path": STUDIO["path"]}], "guidance_scale": 3.5,
                      "num_inference_steps": 28})
    assert a == b and hash(a) == hash(b) and a.id == b.id
    assert a.id.startswith("c1:") and len(a.id) == 3 + 16
    # pinned: an id stored today must be the id computed for the same settings next year
    assert a.id == C.contender_id(EDIT, {"guidance_scale": 3.5, "loras": [STUDIO]})
    assert C.make(EDIT, {"num_inference_steps": 7}).id != C.make(EDIT, {"num_inference_steps": 8}).id
    assert C.make(SCHNELL, {"guidance_scale": 5}).id != C.make("fal-ai/flux-2", {"guidance_scale": 5}).id


def test_group_fields_and_default_values_are_not_settings():
    """prompt, seed, size and references belong to the group; sending the schema default is the
    same request to fal as leaving it out (`loras: []` is "no LoRA" either way)."""
    body = {"prompt": "p", "seed": 3, "image_size": "square_hd", "image_urls": ["reference://x"],
            "num_inference_steps": 7, "guidance_scale": 3.5, "loras": []}
    c = C.from_request(EDIT, body)
    assert dict(c.params) == {"num_inference_steps": 7, "guidance_scale": 3.5}
    assert c == C.make(EDIT, {"num_inference_steps": 7, "guidance_scale": 3.5})
    assert c.value("loras") == [] and c.value("num_inference_steps") == 7
    assert C.make(EDIT, {"num_inference_steps": 28}).value("num_inference_steps") == 28  # the default
    assert c.params_json == canonical_json({"guidance_scale": 3.5, "num_inference_steps": 7})


def test_an_old_stored_request_gets_the_contender_a_new_plan_would_give():
    stored = json.dumps({"prompt": "A model, photorealistic", "image_size": "square_hd", "seed": 1,
                         "num_inference_steps": 7, "guidance_scale": 3.5})
    assert C.from_request(SCHNELL, stored) == C.make(SCHNELL, {"guidance_scale": 3.5, "num_inference_steps": 7})
    with pytest.raises(ValueError):
        C.from_request(SCHNELL, "[1, 2]")


def test_a_contender_cannot_be_changed_through_what_made_it():
    params = {"loras": [dict(STUDIO)]}
    c = C.make(EDIT, params)
    params["loras"][0]["scale"] = 2.0
    assert c.params["loras"][0]["scale"] == 0.8 and c.id == C.make(EDIT, {"loras": [STUDIO]}).id
    with pytest.raises(dataclasses.FrozenInstanceError):
        c.endpoint = SCHNELL  # type: ignore[misc]


def test_labels_of_the_example_say_what_differs():
    labels = C.labels(_example())
    assert list(labels.values()) == [
        "FLUX.1 [schnell]",
        "FLUX.2 [dev] LoRA edit · 7 steps · no LoRA",
        "FLUX.2 [dev] LoRA edit · 7 steps · studio-style 0.8",
        "FLUX.2 [dev] LoRA edit · 28 steps · no LoRA",
        "FLUX.2 [dev] LoRA edit · 28 steps · studio-style 0.8",
    ]


def test_a_plain_two_model_batch_reads_as_before():
    pair = [C.make(SCHNELL, {"num_inference_steps": 7, "guidance_scale": 3.5}),
            C.make(EDIT, {"num_inference_steps": 7, "guidance_scale": 3.5})]
    assert list(C.labels(pair).values()) == ["FLUX.1 [schnell]", "FLUX.2 [dev] LoRA edit"]
    assert C.swept_axes(pair) == ()


def test_swept_axes_per_endpoint_numbers_ascending_lora_last():
    axes = C.swept_axes(list(reversed(_example())))
    assert [(a.endpoint, a.parameter) for a in axes] == [(EDIT, "num_inference_steps"), (EDIT, "loras")]
    steps, loras = axes
    assert steps.values == ("7", "28") and steps.labels == ("7 steps", "28 steps")
    assert steps.title == "7 steps vs 28 steps"
    assert loras.labels == ("studio-style 0.8", "no LoRA")  # first seen (the list was reversed)
    assert steps.label_of(_example()[3]) == "28 steps"


def test_settings_hold_the_model_and_each_swept_value():
    example = _example()
    settings = C.settings(example)
    assert settings[example[0].id] == {"model": "FLUX.1 [schnell]"}
    assert settings[example[4].id] == {"model": "FLUX.2 [dev] LoRA edit", "num_inference_steps": "28 steps",
                                       "loras": "studio-style 0.8"}


@pytest.mark.parametrize("loras, text", [
    ([], "no LoRA"),
    ([{"path": "https://h.test/a/b/studio-style.safetensors?sig=1", "scale": 0.8}], "studio-style 0.8"),
    ([{"path": "owner/repo"}], "repo 1"),                      # HuggingFace id, the schema's default scale
    ([{"path": "x.safetensors", "scale": 1.0}, {"path": "y.bin", "scale": 2}], "x 1 + y 2"),
])
def test_lora_sets_read_by_file_stem_and_scale(loras, text):
    assert C.format_value(EDIT, "loras", loras) == text


def test_other_values_read_in_words():
    assert C.format_value(EDIT, "guidance_scale", 3.5) == "guidance 3.5"
    assert C.format_value(EDIT, "enable_prompt_expansion", True) == "enable prompt expansion on"
    assert C.format_value(EDIT, "acceleration", "high") == "acceleration high"


def test_two_lora_files_with_one_name_still_get_distinct_labels():
    a = C.make(EDIT, {"loras": [{"path": "https://a.test/one/style.safetensors"}]})
    b = C.make(EDIT, {"loras": [{"path": "https://a.test/two/style.safetensors"}]})
    labels = C.labels([a, b])
    assert len(set(labels.values())) == 2 and all("style 1" in t for t in labels.values())
    assert labels[a.id].endswith(f"({a.id})")


def test_describe_lists_every_non_default_setting():
    assert C.describe(_example()[2]) == "FLUX.2 [dev] LoRA edit · guidance 3.5 · 7 steps · studio-style 0.8"


def test_an_endpoint_the_registry_no_longer_knows_keeps_every_value():
    c = C.from_request("fal-ai/retired", {"prompt": "p", "steps": 4, "loras": []})
    assert dict(c.params) == {"steps": 4, "loras": []}
    assert C.labels([c]) == {c.id: "fal-ai/retired"}
