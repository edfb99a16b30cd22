"""Judging bodies and fields by their endpoint's JSON Schema (core.catalog.validation): the
field-by-field shortcut gives jsonschema's own verdict, a schema that relates fields is always
judged whole, every shipped schema is a JSON Schema, and jsonschema is loaded only when something
is judged. The messages users read are pinned in test_registry (through `validate_payload`)."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from core.catalog import registry
from core.catalog.registry import (
    build_payload,
    get_endpoint,
    list_endpoints,
    validate_payload,
)
from core.catalog.validation import BodySchema
from core.errors import PayloadError

SCHNELL = "fal-ai/flux/schnell"

_PROBES = (None, True, False, 0, 1, 1.0, 2.0, 1.5, -0.5, -1, 4, 5, 7, 20, 21, 50, 51, 10**6, 1e308, "", "x",
           "square_hd", "Square_HD", "none", "regular", "jpeg", "png", [], {}, [1], [None], ["x"],
           ["http://a/b.png"], ["http://a/b.png"] * 9, {"width": 1024, "height": 1024},
           {"width": 1024.0, "height": 512}, {"width": 1, "height": 1}, {"width": 1024}, {"width": "1024", "height": 1},
           [{"path": "https://a/l.safetensors", "scale": 0.8}], [{"path": 1}], [{"scale": 0.5}],
           [{"path": "https://a/l.safetensors", "scale": "high"}])


def _schema_of(endpoint_id: str) -> BodySchema:
    return registry._entry(endpoint_id).schema


@pytest.mark.parametrize("endpoint", [e.id for e in list_endpoints()])
def test_each_field_is_judged_as_the_whole_schema_judges_it(endpoint):
    """`field_valid` (one validator per property) against the whole-schema validator descending
    into that property, on every property of every endpoint, for values of every JSON type in and
    out of range: the per-property validators resolve `$ref`s against the whole schema."""
    checked = _schema_of(endpoint)
    for key, sub in checked.schema["properties"].items():
        for value in _PROBES:
            mine = checked.field_valid(key, value)
            theirs = next(checked.validator.descend(value, sub, path=key, schema_path=key), None) is None
            assert mine == theirs, (key, value)


@pytest.mark.parametrize("endpoint", [e.id for e in list_endpoints()])
def test_a_body_judged_field_by_field_gets_the_whole_schemas_verdict(endpoint):
    """The per-field shortcut says "valid" exactly when the whole-body check finds no error, for
    every field of every endpoint set to values of every JSON type (in and out of range)."""
    checked = _schema_of(endpoint)
    base = build_payload(endpoint, prompt="a portrait", seed=1,
                         image_urls=["http://a/b.png"] if get_endpoint(endpoint).image_key else ())
    bodies = [base] + [{**base, key: value} for key in get_endpoint(endpoint).accepted_keys
                       for value in _PROBES]
    bodies += [{k: v for k, v in base.items() if k != key} for key in base]   # each field missing
    shortcuts = 0
    for body in bodies:
        whole = not list(checked.validator.iter_errors(body))
        assert checked.surely_valid(body) == whole, body
        shortcuts += whole
    assert shortcuts > len(_PROBES)   # the shortcut is taken, not just always declined


def test_a_schema_that_relates_fields_is_always_judged_whole(monkeypatch):
    entry = registry._entry(SCHNELL)
    related = {**entry.schema.schema, "additionalProperties": False}
    strict = BodySchema(related, endpoint_id=SCHNELL, image_key=None, max_images=0,
                        source=Path("strict.json"), where="test")
    assert not strict.surely_valid({"prompt": "x"})
    monkeypatch.setattr(registry, "_entry", lambda _id: registry._Entry(entry.endpoint, strict))
    with pytest.raises(PayloadError):
        validate_payload(SCHNELL, {"prompt": "x", "extra": 1})


@pytest.mark.parametrize("endpoint", [e.id for e in list_endpoints()])
def test_every_shipped_schema_is_a_valid_json_schema(endpoint):
    """Checked here for every endpoint; at run time when its endpoint first judges a body."""
    from jsonschema import Draft202012Validator

    Draft202012Validator.check_schema(get_endpoint(endpoint).schema)
    Draft202012Validator.check_schema(_schema_of(endpoint).schema)


def test_listing_endpoints_and_labels_never_loads_jsonschema():
    """Pages that only name models (History, Compare, labels of old rows) and commands that send
    stored bodies do not pay jsonschema's import (~0.07 s); the first body judged does."""
    code = ("import sys; from core.catalog import registry; registry.list_endpoints(); "
            "registry.endpoint_label('fal-ai/flux/schnell'); registry.get_endpoint('fal-ai/flux-2'); "
            "before = 'jsonschema' in sys.modules; "
            "registry.build_payload('fal-ai/flux/schnell', prompt='a portrait'); "
            "print(before, 'jsonschema' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["False", "True"], out.stderr


def test_openapi_style_schemas_are_judged_and_explained():
    """What fal's OpenAPI documents bring (issue 17's reason for jsonschema): a 3.1-style nullable
    (`anyOf [..., {"type": "null"}]`), `examples` arrays and `$ref`s to `#/components/schemas/...`
    are judged by their JSON Schema 2020-12 meaning, field by field as a whole, and a refusal is
    still one line naming the field, what is allowed and the endpoint."""
    document = {
        "type": "object", "required": ["prompt"],
        "properties": {
            "prompt": {"type": "string", "examples": ["a portrait"]},
            "num_images": {"anyOf": [{"type": "integer", "minimum": 1, "maximum": 4}, {"type": "null"}],
                           "examples": [1]},
            "image_size": {"$ref": "#/components/schemas/ImageSize"},
        },
        "components": {"schemas": {"ImageSize": {
            "type": "object", "properties": {"width": {"type": "integer", "exclusiveMinimum": 0},
                                             "height": {"type": "integer", "exclusiveMinimum": 0}}}}},
    }
    checked = BodySchema(document, endpoint_id="fal-ai/any", image_key=None, max_images=0,
                         source=Path("any.json"), where="test")
    assert checked.field_valid("num_images", None) and checked.field_valid("num_images", 4)
    assert not checked.field_valid("num_images", 5)
    assert checked.field_valid("image_size", {"width": 8, "height": 8})
    assert not checked.field_valid("image_size", {"width": 0, "height": 8})
    assert checked.problems({"prompt": "a", "num_images": None, "image_size": {"width": 8, "height": 8}}) == []
    assert checked.problems({"prompt": "a", "image_size": {"width": 0, "height": 8}}) == [
        "`image_size.width` = 0 is out of range for fal-ai/any: allowed at least 1"]
    assert checked.problems({"prompt": "a", "num_images": 9}) == [
        "`num_images` must be an integer, 1 to 4 or null for fal-ai/any, got 9 (integer)"]


LORA_EDIT_ENDPOINT = "fal-ai/flux-2/lora/edit"


@pytest.mark.parametrize("path", [
    "file:///etc/passwd", "gopher://example.com/x", "javascript:alert(1)", "http://127.0.0.1/x.safetensors",
    "https://127.0.0.1/x", "http://169.254.169.254/latest/meta-data", "https://169.254.169.254/x",
    "https://10.1.2.3/x", "https://[::1]/x", "https://localhost/x", "https://user:pw@example.com/x",
    "owner/repo\nx", "../../x", "owner/../x", "", "   ", "http://example.com/style.safetensors",
])
def test_a_lora_path_fal_could_not_fetch_is_refused_before_sending(path):
    """fal fetches whatever LoRA path it is given; a local file, another scheme, this machine, a
    private or metadata address, `..` or a newline would fail only after the team waited."""
    from core.catalog.registry import validate_payload
    from core.errors import PayloadError

    body = {"prompt": "p", "image_urls": ["https://example.test/a.png"], "loras": [{"path": path, "scale": 1.0}]}
    with pytest.raises(PayloadError) as e:
        validate_payload(LORA_EDIT_ENDPOINT, body)
    assert any(m.startswith("`loras[0].path`") and "https URL or a Hugging Face path" in m for m in e.value.messages)


@pytest.mark.parametrize("path", ["owner/repo", "owner/repo/style.safetensors",
                                  "https://huggingface.co/owner/repo/resolve/main/style.safetensors",
                                  "https://v3.fal.media/files/lora/abc.safetensors"])
def test_an_https_url_or_a_hugging_face_path_is_a_lora(path):
    from core.catalog.registry import validate_payload

    validate_payload(LORA_EDIT_ENDPOINT, {"prompt": "p", "image_urls": ["https://example.test/a.png"],
                                          "loras": [{"path": path, "scale": 1.0}]})


def test_the_checked_manifest_names_exactly_the_shipped_schemas_that_pass_the_meta_schema():
    """core/catalog/checked_schemas.json lets each process skip re-checking a shipped schema (15-20
    ms each). It must hold the version of every built-in endpoint's enforced schema, each of which
    passes JSON Schema's meta-schema here; after editing a schema, regenerate it with
    `python -c "import json; from core.catalog import registry as r; print(json.dumps({e.id: e.schema_version for e in r.list_endpoints() if not e.added}, indent=2, sort_keys=True))" > core/catalog/checked_schemas.json`
    (until then the edited schema is checked when first used, as any schema is)."""
    import json

    from jsonschema import Draft202012Validator

    from core.catalog import registry

    manifest = json.loads(registry.CHECKED_FILE.read_text(encoding="utf-8"))
    built_in = {e.id: e.schema_version for e in registry.list_endpoints() if not e.added}
    assert manifest == built_in
    for endpoint_id in built_in:
        Draft202012Validator.check_schema(registry._entry(endpoint_id).schema.schema)
