"""The endpoint registry: endpoints as data, exact bodies, validation before anything is sent,
cost estimates that reproduce fal's documented examples."""
from __future__ import annotations

import dataclasses
import json

import pytest

from core.catalog import registry
from core.errors import ConfigError, PayloadError
from core.catalog.prompts import ASPECT_RATIO_SIZES, PromptOptions, build_prompt, image_size_for, load_catalogs
from core.catalog.registry import (
    DEFAULT_MODELS, TEAM_PRESET, Endpoint, PriceRule, build_payload, estimate_cost, get_endpoint,
    list_endpoints, output_size, preset_params, validate_payload,
)
from core.catalog.forms import parameter_fields

SCHNELL = "fal-ai/flux/schnell"
LORA_EDIT = "fal-ai/flux-2/lora/edit"
EDIT = "fal-ai/flux-2/edit"
DEV_I2I = "fal-ai/flux/dev/image-to-image"
URL = "https://example.com/ref.png"
BIG_DATA_URI = "data:image/png;base64," + "QUJD" * 5000


def _messages(endpoint_id, body) -> list[str]:
    with pytest.raises(PayloadError) as e:
        validate_payload(endpoint_id, body)
    assert e.value.endpoint == endpoint_id
    return e.value.messages


def _edit_body(**extra):
    return {"prompt": "a woman", "image_urls": [URL], **extra}


# --- the registry itself ---------------------------------------------------------------------

def test_registry_lists_the_endpoints_we_have_schemas_for():
    ids = [e.id for e in list_endpoints()]
    for eid in (SCHNELL, LORA_EDIT, EDIT, DEV_I2I, "fal-ai/flux-2", "fal-ai/flux-2/lora"):
        assert eid in ids
    assert DEFAULT_MODELS == (SCHNELL, LORA_EDIT)


@pytest.mark.parametrize("eid,mode,key,max_images,takes_size", [
    (SCHNELL, "text-to-image", None, 0, True),
    (LORA_EDIT, "edit", "image_urls", 4, True),
    (EDIT, "edit", "image_urls", 4, True),
    (DEV_I2I, "edit", "image_url", 1, False),
    ("fal-ai/flux-2", "text-to-image", None, 0, True),
    ("fal-ai/flux-2/lora", "text-to-image", None, 0, True),
])
def test_each_endpoint_is_described_by_its_facts(eid, mode, key, max_images, takes_size):
    endpoint = get_endpoint(eid)
    assert isinstance(endpoint, Endpoint)
    assert (endpoint.mode, endpoint.image_key, endpoint.max_images, endpoint.takes_image_size) == \
        (mode, key, max_images, takes_size)
    assert endpoint.label and endpoint.notes
    assert endpoint.schema["properties"]["prompt"]["type"] == "string"
    assert ("image_size" in endpoint.schema["properties"]) == takes_size


@pytest.mark.parametrize("eid,usd,basis", [
    (SCHNELL, 0.003, "output"), (LORA_EDIT, 0.021, "input_and_output"), (EDIT, 0.012, "input_and_output"),
    ("fal-ai/flux-2", 0.012, "output"), ("fal-ai/flux-2/lora", 0.021, "output"), (DEV_I2I, 0.03, "output"),
])
def test_price_rules_follow_the_pricing_table(eid, usd, basis):
    assert get_endpoint(eid).price == PriceRule(usd, basis)


def test_endpoints_are_frozen():
    with pytest.raises(dataclasses.FrozenInstanceError):
        get_endpoint(SCHNELL).label = "x"  # type: ignore[misc]


def test_unknown_endpoint_is_a_payload_error_listing_the_known_ids():
    with pytest.raises(PayloadError) as e:
        get_endpoint("fal-ai/flux-9")
    text = str(e.value)
    assert "fal-ai/flux-9" in text
    for endpoint in list_endpoints():
        assert endpoint.id in text
    with pytest.raises(PayloadError):
        validate_payload("fal-ai/flux-9", {"prompt": "x"})


@pytest.fixture
def registry_file(tmp_path, monkeypatch):
    """Point the registry at a temporary endpoints.toml (caches cleared before and after)."""
    path = tmp_path / "endpoints.toml"
    monkeypatch.setattr(registry, "ENDPOINTS_PATH", path)
    registry._registry_file.cache_clear()
    registry._entries.cache_clear()
    yield path
    registry._registry_file.cache_clear()
    registry._entries.cache_clear()


def _registry_text(**overrides) -> str:
    entry = {"label": '"x"', "mode": '"text-to-image"', "image_key": '""', "max_images": "0",
             "takes_image_size": "true", "schema": '"fal-ai__flux__schnell.json"',
             "price": '{ usd_per_mp = 0.003, basis = "output" }', **overrides}
    body = "\n".join(f"{k} = {v}" for k, v in entry.items())
    return f'[endpoints."{SCHNELL}"]\n{body}\n[endpoints."{LORA_EDIT}"]\n' + body.replace(
        "fal-ai__flux__schnell", "fal-ai__flux-2__lora__edit").replace(
        '"text-to-image"', '"edit"').replace('image_key = ""', 'image_key = "image_urls"').replace(
        "max_images = 0", "max_images = 4") + "\n"


def test_a_consistent_registry_file_loads(registry_file):
    registry_file.write_text(_registry_text(), encoding="utf-8")
    assert [e.id for e in list_endpoints()] == [SCHNELL, LORA_EDIT]


@pytest.mark.parametrize("override,expected", [
    ({"takes_image_size": "false"}, "takes_image_size"),
    ({"image_key": '"image_url"', "mode": '"edit"', "max_images": "1"}, "image_key"),
    ({"mode": '"img2img"'}, "mode"),
    ({"price": '{ usd_per_mp = 0.003, basis = "per image" }'}, "basis"),
    ({"schema": '"missing.json"'}, "cannot load schema"),
])
def test_a_registry_entry_that_disagrees_with_its_schema_is_a_config_error(registry_file, override, expected):
    registry_file.write_text(_registry_text(**override), encoding="utf-8")
    with pytest.raises(ConfigError, match=expected):
        list_endpoints()


def test_a_schema_that_is_not_json_schema_is_a_config_error_when_first_used(registry_file, monkeypatch):
    """The meta-schema check waits for the first body to validate (reading labels never imports
    jsonschema), and still refuses a broken schema file by name."""
    schemas = registry_file.parent / "schemas"
    schemas.mkdir()
    for name in ("fal-ai__flux__schnell.json", "fal-ai__flux-2__lora__edit.json"):
        (schemas / name).write_text((registry.SCHEMAS_DIR / name).read_text(encoding="utf-8"), encoding="utf-8")
    broken = json.loads((schemas / "fal-ai__flux__schnell.json").read_text(encoding="utf-8"))
    broken["input"]["properties"]["prompt"]["type"] = 5
    (schemas / "fal-ai__flux__schnell.json").write_text(json.dumps(broken), encoding="utf-8")
    monkeypatch.setattr(registry, "SCHEMAS_DIR", schemas)
    registry_file.write_text(_registry_text(), encoding="utf-8")
    assert get_endpoint(SCHNELL).label == "x"
    with pytest.raises(ConfigError, match="fal-ai__flux__schnell.json is not a valid JSON Schema"):
        validate_payload(SCHNELL, {"prompt": "a"})


def test_a_schema_file_that_is_not_a_json_schema_is_a_config_error_when_used(registry_file, tmp_path, monkeypatch):
    """A keyword with a wrong argument (`minimum: "one"`) is caught by the meta-schema check too."""
    shipped = registry.SCHEMAS_DIR
    bad = json.loads((shipped / "fal-ai__flux__schnell.json").read_text())
    bad["input"]["properties"]["num_images"]["minimum"] = "one"
    monkeypatch.setattr(registry, "SCHEMAS_DIR", tmp_path)
    (tmp_path / "fal-ai__flux__schnell.json").write_text(json.dumps(bad))
    (tmp_path / "fal-ai__flux-2__lora__edit.json").write_text((shipped / "fal-ai__flux-2__lora__edit.json").read_text())
    registry_file.write_text(_registry_text(), encoding="utf-8")
    assert [e.id for e in list_endpoints()] == [SCHNELL, LORA_EDIT]   # listing does not check it
    with pytest.raises(ConfigError, match="not a valid JSON Schema"):
        validate_payload(SCHNELL, {"prompt": "x", "num_images": 1})


# --- preset ----------------------------------------------------------------------------------

def test_team_preset_is_the_old_systems_settings():
    assert TEAM_PRESET == {"num_inference_steps": 7, "guidance_scale": 3.5}


def test_preset_is_sent_where_the_schema_allows_it():
    assert preset_params(SCHNELL) == {"num_inference_steps": 7, "guidance_scale": 3.5}
    assert preset_params(LORA_EDIT) == {"num_inference_steps": 7, "guidance_scale": 3.5}


def test_preset_value_outside_an_endpoints_range_is_left_to_its_default():
    """flux/dev/image-to-image takes 10-50 steps: 7 would be refused, so fal's default (40) applies."""
    assert preset_params(DEV_I2I) == {"guidance_scale": 3.5}


# --- build_payload ---------------------------------------------------------------------------

def test_schnell_body_is_exact():
    body = build_payload(SCHNELL, prompt="a woman", image_size="portrait_16_9", seed=42)
    assert body == {"prompt": "a woman", "image_size": "portrait_16_9", "seed": 42,
                    "num_inference_steps": 7, "guidance_scale": 3.5}


def test_lora_edit_body_carries_references_as_an_image_urls_array():
    body = build_payload(LORA_EDIT, prompt="a woman", image_size="portrait_4_3",
                         image_urls=[URL, "reference://ref-1"])
    assert body == {"prompt": "a woman", "image_size": "portrait_4_3",
                    "image_urls": [URL, "reference://ref-1"],
                    "num_inference_steps": 7, "guidance_scale": 3.5}
    assert "strength" not in body


def test_without_image_size_every_model_gets_the_shared_default():
    for eid in (SCHNELL, LORA_EDIT, "fal-ai/flux-2"):
        refs = [URL] if get_endpoint(eid).mode == "edit" else []
        assert build_payload(eid, prompt="x", image_urls=refs)["image_size"] == "square_hd"


def test_dev_image_to_image_takes_one_image_url_and_no_image_size():
    body = build_payload(DEV_I2I, prompt="x", image_size="portrait_16_9", image_urls=[URL],
                         params={"strength": 0.65})
    assert body == {"prompt": "x", "image_url": URL, "guidance_scale": 3.5, "strength": 0.65}


def test_a_single_reference_string_is_one_reference_not_characters():
    assert build_payload(LORA_EDIT, prompt="x", image_urls=URL)["image_urls"] == [URL]


def test_params_override_the_preset_and_none_removes_a_key():
    body = build_payload(LORA_EDIT, prompt="x", image_urls=[URL],
                         params={"num_inference_steps": 28, "guidance_scale": None, "output_format": "jpeg"})
    assert body["num_inference_steps"] == 28
    assert "guidance_scale" not in body
    assert body["output_format"] == "jpeg"


def test_build_payload_validates_what_it_returns():
    with pytest.raises(PayloadError) as e:
        build_payload(SCHNELL, prompt="x", params={"num_inference_steps": 30})
    assert "num_inference_steps" in e.value.messages[0]


def test_references_for_a_text_to_image_endpoint_are_refused():
    with pytest.raises(PayloadError, match="text-to-image"):
        build_payload(SCHNELL, prompt="x", image_urls=[URL])


def test_two_references_for_image_url_are_refused():
    with pytest.raises(PayloadError, match="one reference"):
        build_payload(DEV_I2I, prompt="x", image_urls=[URL, URL])


def test_edit_without_reference_is_refused():
    with pytest.raises(PayloadError, match="image_urls"):
        build_payload(LORA_EDIT, prompt="x")
    with pytest.raises(PayloadError, match="image_url"):
        build_payload(DEV_I2I, prompt="x")


def _image_counts(endpoint):
    return range(1, endpoint.max_images + 1) if endpoint.mode == "edit" else [0]


def test_every_body_the_builders_make_over_the_catalogs_is_valid():
    """Every catalog value of each option x every aspect ratio x every endpoint x with/without extra
    x 1..max references: the builder's output passes its endpoint's schema (build_payload validates;
    the explicit validate_payload states the point)."""
    catalogs = load_catalogs()
    base = {"subject": "Woman", "purpose": "Fashion", "pose": "Standing", "style": "Cinematic",
            "lighting": "Natural Daylight", "angle": "Eye-Level"}
    variants = [(key, value) for key, values in catalogs.items() if key != "aspect_ratio" for value in values]
    built = 0
    for ratio in [*catalogs["aspect_ratio"], None]:
        for key, value in variants:
            for extra in (None, "wearing a red coat"):
                options = PromptOptions(**{**base, key: value}, aspect_ratio=ratio, extra=extra)
                prompt, size = build_prompt(options), image_size_for(options.aspect_ratio)
                for endpoint in list_endpoints():
                    for count in _image_counts(endpoint):
                        refs = [f"reference://ref-{i}" for i in range(count)]
                        body = build_payload(endpoint.id, prompt=prompt, image_size=size, image_urls=refs)
                        validate_payload(endpoint.id, body)
                        if endpoint.takes_image_size:
                            assert body["image_size"] == (ASPECT_RATIO_SIZES[ratio] if ratio else "square_hd")
                        built += 1
    assert built > 5000


# --- validation: the silent bugs of the old system --------------------------------------------

def test_old_systems_body_is_refused_for_strength_pointing_at_the_endpoint_with_strength():
    messages = _messages(LORA_EDIT, _edit_body(num_inference_steps=7, guidance_scale=3.5, strength=0.65))
    assert len(messages) == 1
    assert "`strength`" in messages[0] and LORA_EDIT in messages[0]
    assert "silently ignore" in messages[0]
    assert DEV_I2I in messages[0]


def test_old_systems_body_without_strength_is_valid():
    validate_payload(LORA_EDIT, _edit_body(num_inference_steps=7, guidance_scale=3.5))


@pytest.mark.parametrize("eid", [LORA_EDIT, EDIT, "fal-ai/flux-2", "fal-ai/flux-2/lora"])
def test_strength_is_refused_on_every_flux2_endpoint(eid):
    body = {"prompt": "x", "strength": 0.65}
    if get_endpoint(eid).mode == "edit":
        body["image_urls"] = [URL]
    assert any("`strength`" in m and DEV_I2I in m for m in _messages(eid, body))


def test_strength_is_accepted_where_it_exists():
    validate_payload(DEV_I2I, {"prompt": "x", "image_url": URL, "strength": 0.65})


def test_image_url_where_image_urls_is_expected_names_the_right_key():
    messages = _messages(LORA_EDIT, {"prompt": "x", "image_url": URL})
    assert any("`image_url` is not a field" in m and "`image_urls`" in m for m in messages)


def test_image_urls_where_image_url_is_expected_names_the_right_key():
    messages = _messages(DEV_I2I, {"prompt": "x", "image_urls": [URL]})
    assert any("`image_urls` is not a field" in m and "`image_url`" in m for m in messages)


def test_references_sent_to_text_to_image_are_refused():
    messages = _messages(SCHNELL, {"prompt": "x", "image_urls": [URL]})
    assert "text-to-image" in messages[0] and LORA_EDIT in messages[0]


def test_other_unknown_keys_are_refused_listing_the_accepted_keys():
    message = _messages(SCHNELL, {"prompt": "x", "guidance": 3})[0]
    assert "`guidance`" in message and SCHNELL in message
    assert "guidance_scale" in message and "num_inference_steps" in message


def test_image_size_on_an_endpoint_without_it_is_refused():
    message = _messages(DEV_I2I, {"prompt": "x", "image_url": URL, "image_size": "square_hd"})[0]
    assert "`image_size`" in message and "follows" in message


# --- validation: schema errors name field, allowed values and endpoint -----------------------

def test_out_of_range_names_field_range_and_endpoint():
    message = _messages(SCHNELL, {"prompt": "x", "num_inference_steps": 28})[0]
    assert "`num_inference_steps`" in message and "28" in message
    assert "1 to 12" in message and SCHNELL in message


def test_wrong_type_names_the_expected_type():
    message = _messages(LORA_EDIT, _edit_body(guidance_scale="high"))[0]
    assert "`guidance_scale`" in message and "a number" in message and '"high"' in message
    assert LORA_EDIT in message


def test_enum_lists_the_allowed_values():
    message = _messages(SCHNELL, {"prompt": "x", "output_format": "webp"})[0]
    assert "`output_format`" in message and "jpeg, png" in message and SCHNELL in message


def test_missing_required_field_is_named():
    messages = _messages(LORA_EDIT, {"image_urls": [URL]})
    assert messages == [f"`prompt` is required by {LORA_EDIT} (a string)"]


def test_too_many_images_is_refused_with_the_limit():
    message = _messages(LORA_EDIT, _edit_body(image_urls=[URL] * 5))[0]
    assert "`image_urls`" in message and "5 images" in message and "at most 4" in message
    assert LORA_EDIT in message


def test_empty_image_urls_is_refused():
    assert "empty" in _messages(EDIT, _edit_body(image_urls=[]))[0]


def test_all_problems_are_reported_at_once_not_just_the_first():
    body = {"image_urls": [URL, 3], "num_inference_steps": 99, "output_format": "gif",
            "strength": 0.5, "seed": "abc"}
    messages = _messages(LORA_EDIT, body)
    for field in ("`strength`", "`prompt`", "`image_urls[1]`", "`num_inference_steps`",
                  "`output_format`", "`seed`"):
        assert any(field in m for m in messages), (field, messages)
    assert len(messages) == 6


def test_nested_fields_are_named_by_their_path():
    messages = _messages(LORA_EDIT, _edit_body(loras=[{"path": "a/b", "scale": 9}, {"scale": 1}]))
    assert any("`loras[0].scale`" in m and "0 to 4" in m for m in messages)
    assert any("`loras[1].path` is required" in m for m in messages)


def test_image_size_accepts_presets_and_custom_sizes():
    validate_payload(SCHNELL, {"prompt": "x", "image_size": "landscape_16_9"})
    validate_payload(SCHNELL, {"prompt": "x", "image_size": {"width": 800, "height": 1200}})


def test_unknown_image_size_preset_lists_presets_and_the_custom_form():
    message = _messages(SCHNELL, {"prompt": "x", "image_size": "portrait"})[0]
    assert "`image_size`" in message and "portrait_16_9" in message and '"width"' in message


def test_bad_custom_size_names_the_side_and_range():
    messages = _messages(SCHNELL, {"prompt": "x", "image_size": {"width": 0, "height": 20000}})
    assert any("`image_size.width`" in m and "1 to 14142" in m for m in messages)
    assert any("`image_size.height`" in m for m in messages)


def test_flux2_custom_size_must_be_within_its_documented_512_to_2048():
    message = _messages(LORA_EDIT, _edit_body(image_size={"width": 256, "height": 1024}))[0]
    assert "`image_size.width`" in message and "512 to 2048" in message
    validate_payload(SCHNELL, {"prompt": "x", "image_size": {"width": 256, "height": 1024}})


@pytest.mark.parametrize("ref", [URL, "http://127.0.0.1:8000/a.jpg", "data:image/jpeg;base64,/9j/AA==",
                                 "reference://0192abc"])
def test_reference_may_be_a_url_a_data_uri_or_our_token(ref):
    validate_payload(LORA_EDIT, _edit_body(image_urls=[ref]))
    validate_payload(DEV_I2I, {"prompt": "x", "image_url": ref})


@pytest.mark.parametrize("ref", ["ref.png", "/tmp/ref.png", "reference://", "ftp://host/a.png"])
def test_reference_that_fal_cannot_fetch_is_refused(ref):
    message = _messages(LORA_EDIT, _edit_body(image_urls=[ref]))[0]
    assert "`image_urls[0]`" in message and "reference://" in message


def test_messages_never_carry_a_whole_data_uri():
    messages = _messages(SCHNELL, {"prompt": "x", "seed": BIG_DATA_URI, "image_url": BIG_DATA_URI,
                                   "image_size": BIG_DATA_URI})
    messages += _messages(LORA_EDIT, _edit_body(image_urls=[BIG_DATA_URI] * 5, num_images=BIG_DATA_URI))
    assert messages
    for message in messages:
        assert "QUJDQUJD" not in message
        assert len(message) < 600


def test_blank_prompt_is_refused():
    assert "`prompt`" in _messages(SCHNELL, {"prompt": "   "})[0]


def test_body_that_is_not_an_object_is_refused():
    assert "JSON object" in _messages(SCHNELL, ["prompt"])[0]


# --- output size and cost --------------------------------------------------------------------

@pytest.mark.parametrize("preset,pixels", [
    ("square_hd", (1024, 1024)), ("portrait_16_9", (576, 1024)), ("portrait_4_3", (768, 1024)),
    ("landscape_4_3", (1024, 768)), ("landscape_16_9", (1024, 576)), ("square", (512, 512)),
])
def test_output_size_of_presets(preset, pixels):
    assert output_size(SCHNELL, {"prompt": "x", "image_size": preset}) == pixels


def test_output_size_defaults_and_follow_the_input():
    assert output_size(SCHNELL, {"prompt": "x"}) == (1024, 768)  # schnell's own default, landscape_4_3
    assert output_size(LORA_EDIT, _edit_body()) is None           # no default: follows the input
    assert output_size(DEV_I2I, {"prompt": "x", "image_url": URL}) is None
    assert output_size(SCHNELL, {"prompt": "x", "image_size": {"width": 800, "height": 600}}) == (800, 600)


def test_cost_schnell_one_megapixel_is_0_003():
    assert estimate_cost(SCHNELL, {"prompt": "x", "image_size": "square_hd"}) == pytest.approx(0.003)


def test_cost_lora_edit_reproduces_fals_example_0_042():
    """1024x1024 out + one 512x512 in = $0.042 at $0.021/MP: the input is billed as a full 1 MP."""
    body = _edit_body(image_size="square_hd")
    assert estimate_cost(LORA_EDIT, body, input_sizes=[(512, 512)]) == pytest.approx(0.042)
    assert estimate_cost(LORA_EDIT, body) == pytest.approx(0.042)  # reference count from the body


def test_cost_flux2_edit_reproduces_fals_example_0_024():
    body = _edit_body(image_size="square_hd")
    assert estimate_cost(EDIT, body, input_sizes=[(512, 512)]) == pytest.approx(0.024)


def test_cost_counts_each_reference_and_each_output_image():
    body = _edit_body(image_size="square_hd", image_urls=[URL, URL], num_images=2)
    assert estimate_cost(LORA_EDIT, body) == pytest.approx(0.021 * (2 + 2))


def test_cost_scales_with_output_megapixels():
    assert estimate_cost(SCHNELL, {"prompt": "x", "image_size": "portrait_16_9"}) == \
        pytest.approx(0.003 * 576 * 1024 / 2**20)


def test_cost_of_output_that_follows_the_input_uses_the_input_size():
    body = {"prompt": "x", "image_url": URL}
    assert estimate_cost(DEV_I2I, body, input_sizes=[(2048, 2048)]) == pytest.approx(0.03 * 4)
    assert estimate_cost(DEV_I2I, body) == pytest.approx(0.03)  # unknown input: assume 1 MP


# --- parameter fields for the UI -------------------------------------------------------------

def test_parameter_fields_leave_out_what_the_builder_sets():
    for endpoint in list_endpoints():
        names = [f["name"] for f in parameter_fields(endpoint.id)]
        assert not {"prompt", "image_url", "image_urls", "seed", "image_size"} & set(names)
        assert "num_inference_steps" in names


def test_parameter_fields_describe_range_default_enum_and_preset():
    fields = {f["name"]: f for f in parameter_fields(LORA_EDIT)}
    steps = fields["num_inference_steps"]
    assert (steps["type"], steps["default"], steps["min"], steps["max"], steps["preset"]) == \
        ("integer", 28, 4, 50, 7)
    assert fields["output_format"]["enum"] == ["jpeg", "png", "webp"]
    assert "strength" not in fields
    dev = {f["name"]: f for f in parameter_fields(DEV_I2I)}
    assert (dev["strength"]["min"], dev["strength"]["max"], dev["strength"]["default"]) == (0.01, 1, 0.95)
    assert dev["num_inference_steps"]["preset"] is None
    json.dumps(parameter_fields(SCHNELL))  # plain data for pages and exports
