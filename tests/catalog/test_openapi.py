"""Reading fal's queue OpenAPI documents (core.catalog.openapi) on four real ones, byte for byte as
fal serves them: what describe finds in each, that a body built from it is one fal's own schema
accepts, and that every bad document is refused in one line, fast, with nothing returned."""
from __future__ import annotations

import copy
import json
import time
from pathlib import Path

import pytest
from jsonschema import Draft202012Validator

from core.catalog import openapi, prompts
from core.catalog.openapi import MAX_DOCUMENT_BYTES, describe, read_document
from core.errors import DashboardError, ModelDocumentError

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "openapi"
FLUX2, EDIT, LORA, KONTEXT = "fal-ai/flux-2", "fal-ai/flux-2/edit", "fal-ai/flux-lora", "fal-ai/flux-pro/kontext"
IDS = (FLUX2, EDIT, LORA, KONTEXT)
PRESETS = ("square_hd", "square", "portrait_4_3", "portrait_16_9", "landscape_4_3", "landscape_16_9")


def _raw(endpoint_id: str) -> bytes:
    return (FIXTURES / (endpoint_id.replace("/", "__") + ".json")).read_bytes()


def _json(endpoint_id: str) -> dict:
    return json.loads(_raw(endpoint_id))


def _refused(data: bytes, **kw) -> str:
    """The one-line message of the refusal, within the "a second or two" every bad input gets. The
    bound is there to catch a shape that grows the work (a 20,000-long $ref chain read by a
    quadratic walk takes minutes), not to time the machine: 0.5 s failed once on a shared machine
    running two suites at once (0.58 s)."""
    start = time.perf_counter()
    with pytest.raises(ModelDocumentError) as caught:
        read_document(data, **kw)
    assert time.perf_counter() - start < 2.0
    message = str(caught.value)
    assert "\n" not in message and len(message) < 300, message
    return message


def test_the_error_belongs_to_the_one_tree():
    assert issubclass(ModelDocumentError, DashboardError)


def test_the_team_ratios_are_the_prompts_ratios():
    """openapi may not import prompts; this test finds the drift if the team's ratios change."""
    assert set(openapi.TEAM_RATIOS) == set(prompts.ASPECT_RATIO_SIZES)


@pytest.mark.parametrize("endpoint_id", IDS)
def test_each_document_is_read_whole(endpoint_id):
    raw = _raw(endpoint_id)
    doc = read_document(raw, endpoint_id=endpoint_id)
    assert doc.endpoint_id == endpoint_id
    assert doc.raw == raw and len(doc.sha256) == 64
    assert doc.metadata["endpointId"] == endpoint_id and "playgroundUrl" in doc.metadata
    Draft202012Validator.check_schema(doc.input_schema)
    Draft202012Validator.check_schema(doc.output_schema)
    assert "#/components" not in json.dumps(doc.input_schema) + json.dumps(doc.output_schema)
    assert doc.field_order == tuple(
        _json(endpoint_id)["components"]["schemas"][_input_key(endpoint_id)]["x-fal-order-properties"])
    assert "raw" not in repr(doc) and "input_schema" not in repr(doc)


def _input_key(endpoint_id: str) -> str:
    ref = _json(endpoint_id)["paths"][f"/{endpoint_id}"]["post"]["requestBody"]["content"][
        "application/json"]["schema"]["$ref"]
    return ref.rsplit("/", 1)[1]


def test_input_and_output_come_from_the_paths_not_titles():
    """FluxLoraInput is titled TextToImageInput and its Output "Output": keyed off the $ref."""
    doc = read_document(_raw(LORA))
    assert doc.input_schema["title"] == "TextToImageInput"
    assert set(doc.input_schema["$defs"]) == {"ImageSize", "LoraWeight"}
    assert doc.output_schema["title"] == "Output" and set(doc.output_schema["$defs"]) == {"Image"}
    assert doc.category == "text-to-image"
    kontext = read_document(_raw(KONTEXT))
    assert set(kontext.output_schema["$defs"]) == {"fal__toolkit__image__image__Image"}
    assert "$defs" not in kontext.input_schema


def test_flux2_text_to_image():
    m = describe(read_document(_raw(FLUX2)), label="FLUX.2")
    assert (m.prompt_key, m.image_key, m.image_kind, m.max_images, m.image_required) == \
        ("prompt", None, None, 0, False)
    assert (m.size.kind, m.size.values, m.size.custom, m.size.min_px, m.size.max_px) == \
        ("image_size", PRESETS, True, 512, 2048)     # bounds from the description, tighter than 14142
    assert (m.seed_key, m.steps_key, m.guidance_key, m.num_images_key) == \
        ("seed", "num_inference_steps", "guidance_scale", "num_images")
    assert (m.steps_range.minimum, m.steps_range.maximum, m.steps_range.default) == (4, 50, 28)
    assert (m.guidance_range.minimum, m.guidance_range.maximum) == (0, 20)
    assert m.loras_key is None
    assert m.missing == ("FLUX.2 takes no reference photo: photos are not sent",
                         "FLUX.2 takes no LoRAs: they are not sent")
    assert m.aspect_ratio_value("9:16") == ("image_size", "portrait_16_9")
    assert m.aspect_ratio_value("1:1") == ("image_size", "square_hd")
    assert m.aspect_ratio_value("3:2") == ("image_size", {"width": 1248, "height": 832})  # custom, ~1 MP


def test_flux2_edit_takes_up_to_four_photos():
    m = describe(read_document(_raw(EDIT)), label="FLUX.2 edit")
    assert (m.image_key, m.image_kind, m.max_images, m.image_required) == ("image_urls", "list", 4, True)
    assert m.size.kind == "image_size" and m.size.custom
    assert "FLUX.2 edit takes up to 4 photos: only the first 4 are sent" in m.missing


def test_flux_lora():
    m = describe(read_document(_raw(LORA)))
    assert m.label == LORA
    assert (m.loras_key, m.max_loras) == ("loras", None)        # "any number of LoRAs"
    assert (m.steps_range.minimum, m.steps_range.maximum) == (1, 50)
    assert (m.guidance_range.maximum, m.guidance_range.default) == (35, 3.5)
    assert (m.size.min_px, m.size.max_px) == (1, 14142)       # exclusiveMinimum 0 of an integer
    assert m.missing == (f"{LORA} takes no reference photo: photos are not sent",)


def test_kontext_takes_one_photo_and_an_aspect_ratio():
    m = describe(read_document(_raw(KONTEXT)), label="Kontext")
    assert (m.image_key, m.image_kind, m.max_images, m.image_required) == ("image_url", "one", 1, True)
    assert m.size.kind == "aspect_ratio" and "9:21" in m.size.values and not m.size.custom
    assert m.steps_key is None and m.guidance_key == "guidance_scale"
    assert m.missing == ("Kontext takes one photo: only the first is sent",
                         "Kontext has no step count: its own is used",
                         "Kontext takes no LoRAs: they are not sent")
    assert m.aspect_ratio_value("9:16") == ("aspect_ratio", "9:16")
    assert m.aspect_ratio_value("5:4") is None
    assert m.aspect_ratio_problem("5:4").startswith("Kontext offers no 5:4 aspect ratio")


def _canonical_body(m: openapi.ModelFields, ratio: str) -> dict:
    body: dict = {m.prompt_key: "A woman, in Standing pose, photorealistic"}
    photo = "https://example.com/ref.png"
    if m.image_kind == "list":
        body[m.image_key] = [photo] * min(2, m.max_images or 2)
    elif m.image_kind == "one":
        body[m.image_key] = photo
    size = m.aspect_ratio_value(ratio)
    if size:
        body[size[0]] = size[1]
    if m.seed_key:
        body[m.seed_key] = 42
    for key, rng, wanted in ((m.steps_key, m.steps_range, 7), (m.guidance_key, m.guidance_range, 3.5)):
        if key:
            body[key] = max(rng.minimum, min(rng.maximum, wanted))
    if m.loras_key:
        body[m.loras_key] = [{"path": "https://example.com/l.safetensors", "scale": 0.8}]
    if m.num_images_key:
        body[m.num_images_key] = 1
    return body


@pytest.mark.parametrize("endpoint_id", IDS)
@pytest.mark.parametrize("ratio", openapi.TEAM_RATIOS)
def test_a_body_built_from_describe_passes_the_endpoints_own_schema(endpoint_id, ratio):
    doc = read_document(_raw(endpoint_id))
    body = _canonical_body(describe(doc), ratio)
    errors = [e.message for e in Draft202012Validator(doc.input_schema).iter_errors(body)]
    assert not errors
    assert set(body) <= set(doc.field_order)


def test_custom_sizes_stay_within_stated_bounds():
    doc = read_document(_raw(FLUX2))
    schema = copy.deepcopy(_json(FLUX2))
    prop = schema["components"]["schemas"]["Flux2Input"]["properties"]["image_size"]
    prop["anyOf"] = prop["anyOf"][:1]            # only {width, height}
    prop["description"] = "The width and height must be between 1024 and 4096 pixels."
    m = describe(read_document(json.dumps(schema).encode()), label="Big")
    assert m.size.values == () and (m.size.min_px, m.size.max_px) == (1024, 4096)
    assert "Big's custom sizes start at 1024 px" in m.missing
    key, value = m.aspect_ratio_value("9:16")
    assert key == "image_size" and value["width"] >= 1024 and value["height"] <= 4096
    assert abs(value["height"] / value["width"] - 16 / 9) < 0.02
    assert not list(Draft202012Validator(doc.input_schema).iter_errors({"prompt": "x", key: value}))


def test_no_size_field_follows_the_photo():
    schema = _json(KONTEXT)
    del schema["components"]["schemas"]["FluxProKontextInput"]["properties"]["aspect_ratio"]
    m = describe(read_document(json.dumps(schema).encode()), label="K")
    assert m.size is None and m.aspect_ratio_value("1:1") is None
    assert "K has no size field: its outputs follow the reference photo's shape" in m.missing


def test_an_image_field_is_found_by_its_ui_marker_and_a_seedless_model_is_named():
    schema = _json(KONTEXT)
    props = schema["components"]["schemas"]["FluxProKontextInput"]["properties"]
    props["reference"] = {**props.pop("image_url"), "_fal_ui_field": "image", "description": "A photo."}
    del props["seed"]
    m = describe(read_document(json.dumps(schema).encode()), label="K")
    assert (m.image_key, m.image_kind, m.image_required) == ("reference", "one", False)
    assert "K has no seed: its outputs cannot be reproduced" in m.missing


def test_no_prompt_field_is_refused():
    schema = _json(FLUX2)
    del schema["components"]["schemas"]["Flux2Input"]["properties"]["prompt"]
    doc = read_document(json.dumps(schema).encode())
    with pytest.raises(ModelDocumentError, match="has no prompt field"):
        describe(doc)


def _changed(endpoint_id: str, change) -> bytes:
    document = _json(endpoint_id)
    change(document)
    return json.dumps(document).encode()


def _input(document: dict) -> dict:
    return document["components"]["schemas"]["Flux2Input"]


BAD = {
    "not JSON": (b"<html>Not Found</html>", "is not JSON"),
    "not OpenAPI": (b'{"swagger": "2.0", "info": {}, "paths": {}}', "is not an OpenAPI 3 document"),
    "no POST path": (_changed(FLUX2, lambda d: d["paths"].pop("/fal-ai/flux-2")), "has no Input component"),
    "external $ref": (_changed(FLUX2, lambda d: _input(d)["properties"]["image_size"]["anyOf"][0].update(
        {"$ref": "https://evil.example/schemas.json#/ImageSize"})), "has a $ref outside itself"),
    "other file $ref": (_changed(FLUX2, lambda d: _input(d)["properties"]["image_size"]["anyOf"][0].update(
        {"$ref": "other.json#/components/schemas/ImageSize"})), "has a $ref outside itself"),
    "circular $ref": (_changed(FLUX2, lambda d: d["components"]["schemas"]["ImageSize"]["properties"].update(
        {"inner": {"$ref": "#/components/schemas/ImageSize"}})), "has a circular $ref (ImageSize -> ImageSize)"),
    "undefined $ref": (_changed(FLUX2, lambda d: d["components"]["schemas"].pop("ImageSize")),
                       "names the component 'ImageSize' but does not define it"),
    "video category": (_changed(FLUX2, lambda d: d["info"]["x-fal-metadata"].update(category="image-to-video")),
                       "fal-ai/flux-2 is an image-to-video endpoint: only endpoints that return images"),
    "unknown category, no images": (_changed(FLUX2, lambda d: (
        d["info"]["x-fal-metadata"].update(category="vision"),
        d["components"]["schemas"]["Flux2Output"]["properties"].pop("images"))), "whose Output has no images"),
    "duplicate keys": (_raw(FLUX2).replace(b'"openapi": "3.0.4"', b'"openapi": "3.0.4", "openapi": "3.1.0"', 1)
                       if b'"openapi": "3.0.4"' in _raw(FLUX2) else b'{"openapi": "3.0.4", "openapi": "3.1"}',
                       "gives the key 'openapi' twice"),
    "NaN": (b'{"openapi": NaN}', "is not JSON"),
    "not UTF-8": (b'\xff\xfe{}', "is not UTF-8"),
    "invalid schema": (_changed(FLUX2, lambda d: _input(d)["properties"]["seed"].update(type="integer-ish")),
                       "Input is not a valid JSON Schema 2020-12"),
    "too deep": (b"[" * 200_000 + b"]" * 200_000, "nests too deeply"),
    "deep schema": (_changed(FLUX2, lambda d: _input(d)["properties"].update(
        deep=json.loads('{"items":' * 100 + "{}" + "}" * 100))), "schemas nest deeper than 64 levels"),
}


@pytest.mark.parametrize("case", BAD)
def test_a_bad_document_is_refused_in_one_line(case):
    data, words = BAD[case]
    assert words in _refused(data)


def test_a_document_for_another_endpoint_is_refused():
    message = _refused(_raw(FLUX2), endpoint_id=KONTEXT)
    assert message.startswith(f"the document describes 'fal-ai/flux-2', not {KONTEXT}")


def test_twenty_megabytes_are_refused_before_parsing():
    data = b"{" * (20 * 1024 * 1024)       # would be a RecursionError, or slow, if it were parsed
    start = time.perf_counter()
    message = _refused(data)
    assert time.perf_counter() - start < 0.05
    assert f"more than the {MAX_DOCUMENT_BYTES:,} allowed" in message


def test_a_long_ref_chain_is_refused_fast():
    """Many components in a line, in a loop, and a wide field: refused by the cycle check or the
    node budget, in time that does not grow with their shape."""
    document = _json(FLUX2)
    schemas = document["components"]["schemas"]
    for i in range(1000):
        schemas[f"C{i}"] = {"items": {"$ref": f"#/components/schemas/C{i + 1}"}}
    schemas["C1000"] = {"items": {"$ref": "#/components/schemas/C0"}}
    schemas["Flux2Input"]["properties"]["chain"] = {"$ref": "#/components/schemas/C0"}
    assert "circular $ref (C0 -> C1 -> C2" in _refused(json.dumps(document).encode())
    for i in range(1000, 20_000):
        schemas[f"C{i}"] = {"items": {"$ref": f"#/components/schemas/C{i + 1}"}}
    schemas["C20000"] = {"type": "string"}
    assert "larger than 4,000 values" in _refused(json.dumps(document).encode())
    schemas["Flux2Input"]["properties"]["chain"] = {"enum": list(range(100_000))}
    assert "larger than 4,000 values" in _refused(json.dumps(document).encode())
