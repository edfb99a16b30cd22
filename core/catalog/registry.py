"""The fal endpoints we compare, the exact bodies built for them, their cost, and their parameters
for forms. Judging a body against its schema, and the words for what is wrong, are
core.catalog.validation's; this module knows the endpoints, so it picks the schema, refuses keys
the endpoint does not take (naming the endpoints that do) and builds the bodies.

Invariants:
- Endpoints are data, not if-chains: the built-in ones in core/catalog/endpoints.toml + the input
  JSON Schemas in core/catalog/schemas/ (the file is checked against each schema when first
  loaded; a mismatch is a `ConfigError`), and the ones a team added from fal's OpenAPI documents
  (`install_added`, from the store, by `core.models.service.install`). A built-in id wins.
- An added endpoint's body is the canonical request mapped onto its own fields
  (`core.catalog.added`); its schema is the document's Input, and nothing else is sent.
- Each endpoint has a `schema_version` (sha256 of the schema its bodies are judged by), which a
  request records.
- Nothing leaves without `validate_payload`: every problem is reported at once (not just the
  first), each message names the field, what is allowed and the endpoint. `build_payload` validates
  the body it returns.
- The schema enforced is fal's plus our limits (`_make_entry`): the documented reference count as
  a hard maxItems, at least one reference for an edit, the documented bounds of a custom size.
- A key the endpoint does not accept is refused, although fal would accept it: fal's apps silently
  drop unknown keys, which is how `strength: 0.65` reached flux-2/lora/edit for months doing nothing.
- Listing endpoints never imports jsonschema (core.catalog.validation does, on the first check).
- Every body of a comparison carries an `image_size` where the endpoint takes one (default square_hd,
  see core.catalog.prompts), so outputs share one shape instead of each endpoint's own default.
"""
from __future__ import annotations

import copy
import difflib
import functools
import hashlib
import json
import threading
import tomllib
from collections.abc import Iterable
from dataclasses import dataclass, field
from dataclasses import replace as dataclasses_replace
from pathlib import Path
from typing import Any

from core.catalog import added as added_mapping
from core.catalog.openapi import EndpointDocument, ModelFields, describe
from core.catalog.payloads import canonical_json
from core.catalog.prompts import image_size_for
from core.catalog.validation import BodySchema, json_type, resolve_ref
from core.errors import ConfigError, PayloadError

ENDPOINTS_PATH = Path(__file__).with_name("endpoints.toml")
SCHEMAS_DIR = Path(__file__).with_name("schemas")
CHECKED_FILE = Path(__file__).with_name("checked_schemas.json")

MODES = ("text-to-image", "edit")
PRICE_BASES = ("output", "input_and_output", "per_image")
IMAGE_KEYS = ("image_urls", "image_url")
MEGAPIXEL = 1024 * 1024  # fal's pricing megapixel: 1024x1024 = 1 MP
MAX_ADDED_IMAGES = 16    # an added endpoint whose image list states no maximum gets at most this many

DEFAULT_MODELS = ("fal-ai/flux/schnell", "fal-ai/flux-2/lora/edit")

# Fields the builder fills from its own arguments; the rest are the endpoint's "parameters".
BUILDER_FIELDS = ("prompt", "image_size", "image_url", "image_urls", "seed")
# fal's preset pixels (docs/fal.md), used when a schema does not list them itself
_PRESET_PIXELS = {
    "square_hd": (1024, 1024), "square": (512, 512), "portrait_4_3": (768, 1024),
    "portrait_16_9": (576, 1024), "landscape_4_3": (1024, 768), "landscape_16_9": (1024, 576),
}


@functools.cache
def _registry_file() -> dict[str, Any]:
    try:
        return tomllib.loads(ENDPOINTS_PATH.read_text(encoding="utf-8"))
    except OSError as e:
        raise ConfigError(f"cannot read the endpoint registry {ENDPOINTS_PATH}: {e.strerror or e}") from e
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"endpoint registry {ENDPOINTS_PATH} is not valid TOML: {e}") from e


# The settings the team used with the system it replaces (core/catalog/endpoints.toml [team_preset]).
TEAM_PRESET: dict[str, Any] = dict(_registry_file().get("team_preset", {}))


@dataclass(frozen=True)
class PriceRule:
    """USD per megapixel (1024x1024). basis "output": output megapixels only; "input_and_output":
    output megapixels plus each reference image counted as 1 MP; "per_image": USD per output image
    (`usd_per_mp` is then the price of one image)."""

    usd_per_mp: float
    basis: str


@dataclass(frozen=True)
class Endpoint:
    """One fal endpoint. `schema` is its input JSON Schema (2020-12): read it, never mutate it."""

    id: str
    label: str
    mode: str                      # "text-to-image" | "edit"
    image_key: str | None          # "image_urls" (array) | "image_url" (string) | None
    max_images: int                # references fal uses; 0 for text-to-image
    takes_image_size: bool
    schema: dict[str, Any] = field(repr=False, compare=False, hash=False)
    price: PriceRule | None          # None: unknown (an added endpoint without a price)
    notes: tuple[str, ...] = ()
    size_range: tuple[int, int] | None = None   # documented bounds of a custom width/height
    preset: dict[str, Any] = field(default_factory=dict, compare=False, hash=False)  # endpoint additions to TEAM_PRESET
    fields: ModelFields | None = field(default=None, repr=False, compare=False, hash=False)  # added endpoints
    schema_version: str = ""         # sha256 of the enforced schema's canonical JSON

    @property
    def added(self) -> bool:
        """Added by the team from fal's document (not in endpoints.toml)."""
        return self.fields is not None

    @property
    def accepted_keys(self) -> tuple[str, ...]:
        return tuple(self.schema.get("properties", {}))


@dataclass(frozen=True)
class _Entry:
    """An endpoint and the schema its bodies are judged by (compiled on first use)."""

    endpoint: Endpoint
    schema: BodySchema


def _where(endpoint_id: str) -> str:
    return f"endpoint registry {ENDPOINTS_PATH.name}, {endpoint_id!r}"


def _bad(endpoint_id: str, problem: str) -> ConfigError:
    return ConfigError(f"{_where(endpoint_id)}: {problem}")


def _load_schema(endpoint_id: str, filename: str) -> dict[str, Any]:
    path = SCHEMAS_DIR / filename
    try:
        document = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise _bad(endpoint_id, f"cannot load schema {path}: {e}") from e
    schema = document.get("input") if isinstance(document, dict) else None
    if not isinstance(schema, dict) or not isinstance(schema.get("properties"), dict):
        raise _bad(endpoint_id, f"schema {path} has no `input` object schema")
    return schema   # checked as a JSON Schema when first used (BodySchema.validator)


def _make_entry(endpoint_id: str, raw: dict[str, Any]) -> _Entry:
    try:
        schema = _load_schema(endpoint_id, raw["schema"])
        price = PriceRule(float(raw["price"]["usd_per_mp"]), str(raw["price"]["basis"]))
        size_range = tuple(raw["size_range"]) if "size_range" in raw else None
        endpoint = Endpoint(
            id=endpoint_id, label=str(raw["label"]), mode=str(raw["mode"]),
            image_key=raw["image_key"] or None, max_images=int(raw["max_images"]),
            takes_image_size=bool(raw["takes_image_size"]), schema=schema, price=price,
            notes=tuple(raw.get("notes", ())), size_range=size_range,  # type: ignore[arg-type]
            preset=dict(raw.get("preset", {})))
    except (KeyError, TypeError, ValueError) as e:
        raise _bad(endpoint_id, f"missing or malformed entry ({e!r})") from e
    props = schema["properties"]
    if endpoint.mode not in MODES:
        raise _bad(endpoint_id, f"mode must be one of {MODES}")
    if price.basis not in PRICE_BASES:
        raise _bad(endpoint_id, f"price basis must be one of {PRICE_BASES}")
    if endpoint.image_key not in (None, *IMAGE_KEYS):
        raise _bad(endpoint_id, f"image_key must be one of {IMAGE_KEYS} or empty")
    if (endpoint.mode == "edit") != (endpoint.image_key is not None) or \
            (endpoint.image_key is None) != (endpoint.max_images == 0):
        raise _bad(endpoint_id, "an edit endpoint has an image_key and max_images >= 1, "
                                "a text-to-image endpoint neither")
    if endpoint.image_key == "image_url" and endpoint.max_images != 1:
        raise _bad(endpoint_id, "image_url carries exactly one reference: max_images must be 1")
    for key in IMAGE_KEYS:
        if (key in props) != (key == endpoint.image_key):
            raise _bad(endpoint_id, f"image_key {endpoint.image_key!r} disagrees with the schema ({key!r})")
    if endpoint.takes_image_size != ("image_size" in props):
        raise _bad(endpoint_id, "takes_image_size disagrees with the schema")
    unknown_preset = [k for k in endpoint.preset if k not in props]
    if unknown_preset:
        raise _bad(endpoint_id, f"preset names fields the schema does not have: {unknown_preset}")
    if size_range is not None and (len(size_range) != 2 or not size_range[0] <= size_range[1]):
        raise _bad(endpoint_id, "size_range must be [min, max]")

    # Our limits on top of fal's schema: the documented reference count becomes a hard maxItems
    # (fal silently uses only the first N) and an edit needs at least one reference.
    # The documented FLUX.2 bounds of a custom width/height ("must be between 512 and 2048") too.
    checked = copy.deepcopy(schema)
    if endpoint.image_key == "image_urls":
        checked["properties"]["image_urls"].update(minItems=1, maxItems=endpoint.max_images)
    if size_range is not None:
        image_size_def = checked.get("$defs", {}).get("ImageSize", {}).get("properties", {})
        if not {"width", "height"} <= set(image_size_def):
            raise _bad(endpoint_id, "size_range given but the schema has no $defs.ImageSize width/height")
        for side in ("width", "height"):
            image_size_def[side].pop("exclusiveMinimum", None)
            image_size_def[side].update(minimum=size_range[0], maximum=size_range[1])
    version = _version(checked)
    endpoint = dataclasses_replace(endpoint, schema_version=version)
    return _Entry(endpoint, BodySchema(
        checked, endpoint_id=endpoint_id, image_key=endpoint.image_key, max_images=endpoint.max_images,
        source=SCHEMAS_DIR / raw["schema"], where=_where(endpoint_id),
        checked=_checked_versions().get(endpoint_id) == version))


@functools.cache
def _checked_versions() -> dict[str, str]:
    """The enforced schema versions the test suite checked against JSON Schema's meta-schema
    (core/catalog/checked_schemas.json, held to the files by tests/catalog/test_validation.py):
    such a schema is not checked again in every process (15-20 ms each); an edited one is."""
    try:
        data = json.loads(CHECKED_FILE.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def _version(schema: dict[str, Any]) -> str:
    return hashlib.sha256(canonical_json(schema).encode("utf-8")).hexdigest()


@dataclass(frozen=True)
class AddedEndpoint:
    """An endpoint the team added: its checked document, the label to show, its price if known
    (`unit` "image" or "megapixels"), as the store keeps them."""

    document: EndpointDocument
    label: str
    usd: float | None = None
    unit: str | None = None


_ADDED: dict[str, _Entry] = {}
_ADDED_LOCK = threading.Lock()


def install_added(models: Iterable[AddedEndpoint]) -> None:
    """Make these added endpoints (and no other) known to this process, beside the built-ins."""
    models = list(models)
    entries = {m.document.endpoint_id: _added_entry(m) for m in models
               if m.document.endpoint_id not in _entries()}
    keys = [(m.document.endpoint_id, m.document.sha256, m.label, m.usd, m.unit) for m in models
            if m.document.endpoint_id in entries]
    with _ADDED_LOCK:
        _ADDED.clear()
        _ADDED.update(entries)
        _ADDED_KEYS[:] = keys
    _preset_params.cache_clear()


def added_key() -> tuple[tuple[str, str, str, float | None, str | None], ...]:
    """What is installed: (id, document sha256, label, price, unit) per added endpoint, in order."""
    with _ADDED_LOCK:
        return tuple(_ADDED_KEYS)


_ADDED_KEYS: list[tuple[str, str, str, float | None, str | None]] = []


def _added_entry(model: AddedEndpoint) -> _Entry:
    doc = model.document
    fields_ = describe(doc, label=model.label)
    edit = fields_.image_key is not None and fields_.image_required
    max_images = (fields_.max_images or MAX_ADDED_IMAGES) if edit else 0
    price = None
    if model.usd is not None:
        price = PriceRule(float(model.usd), "per_image" if (model.unit or "image").startswith("image")
                          else "output")
    schema = doc.input_schema
    size = fields_.size
    endpoint = Endpoint(
        id=doc.endpoint_id, label=model.label, mode="edit" if edit else "text-to-image",
        image_key=fields_.image_key if edit else None, max_images=max_images,
        takes_image_size=size is not None and size.key == "image_size", schema=schema, price=price,
        notes=fields_.missing, fields=fields_, schema_version=doc.sha256)
    return _Entry(endpoint, BodySchema(schema, endpoint_id=doc.endpoint_id, image_key=endpoint.image_key,
                                       max_images=max_images or 1, source=Path(f"<document of {doc.endpoint_id}>"),
                                       where=f"added endpoint {doc.endpoint_id!r}", checked=True))


def _one_at_a_time(fn):
    """A cached loader that two threads calling at once run once, not twice: the dashboard warms
    the catalogue in a background thread while a page may already ask for it (checking the
    schemas costs 0.3-0.6 s of one core). `cache_clear` stays reachable."""
    lock = threading.Lock()

    @functools.wraps(fn)
    def call():
        with lock:
            return fn()

    call.cache_clear = fn.cache_clear
    return call


@_one_at_a_time
@functools.cache
def _entries() -> dict[str, _Entry]:
    raw = _registry_file().get("endpoints")
    if not isinstance(raw, dict) or not raw:
        raise ConfigError(f"endpoint registry {ENDPOINTS_PATH} lists no [endpoints.\"...\"]")
    entries = {eid: _make_entry(eid, spec) for eid, spec in raw.items()}
    for eid in DEFAULT_MODELS:
        if eid not in entries:
            raise _bad(eid, "is a default model but not in the registry")
    return entries


def _entry(endpoint_id: str) -> _Entry:
    entries = _entries()
    try:
        return entries[endpoint_id]
    except (KeyError, TypeError):
        pass
    try:
        return _ADDED[endpoint_id]
    except (KeyError, TypeError):
        known = [*entries, *_ADDED]
        raise PayloadError(str(endpoint_id), [
            f"unknown endpoint {endpoint_id!r}; known endpoints: {', '.join(known)} (add one with "
            "`python -m core model add`)"]) from None


def list_endpoints() -> tuple[Endpoint, ...]:
    """All endpoints: the built-in ones in registry order, then the added ones in the order added."""
    return tuple(e.endpoint for e in (*_entries().values(), *_ADDED.values()))


def get_endpoint(endpoint_id: str) -> Endpoint:
    """The endpoint; an unknown id is a `PayloadError` listing the known ones."""
    return _entry(endpoint_id).endpoint


def endpoint_label(endpoint_id: str) -> str:
    """The endpoint's readable label; an endpoint no longer in the registry (an old batch's)
    shows as its id, so a page never fails on old rows."""
    entry = _entries().get(endpoint_id)
    return entry.endpoint.label if entry else endpoint_id


def preset_params(endpoint_id: str) -> dict[str, Any]:
    """The team preset for this endpoint: each value its schema allows; a value it does not allow
    (e.g. 7 steps on flux/dev/image-to-image, range 10-50) is left out so the endpoint's default applies."""
    return copy.deepcopy(dict(_preset_params(endpoint_id)))


@functools.cache
def _preset_params(endpoint_id: str) -> tuple[tuple[str, Any], ...]:
    # the preset and the schemas are fixed data: judge each value once per process
    entry = _entry(endpoint_id)
    wanted = {**TEAM_PRESET, **entry.endpoint.preset}
    props = entry.endpoint.schema["properties"]
    return tuple((k, v) for k, v in wanted.items() if k in props and entry.schema.field_valid(k, v))


def build_payload(endpoint_id: str, *, prompt: str, image_size: str | dict[str, int] | None = None,
                  image_urls: Any = (), seed: int | None = None,
                  params: dict[str, Any] | None = None, aspect_ratio: str | None = None) -> dict[str, Any]:
    """The exact JSON body for `endpoint_id`, validated (a `PayloadError` otherwise).

    `image_size` is sent where the endpoint takes it (None: core.catalog.prompts' default, square_hd) and
    left out where it does not. `image_urls` go under the endpoint's reference key. The team preset
    comes next, then `params`, which override anything; a `params` value of None removes that key
    (the endpoint's default applies). An added endpoint gets the same request mapped onto its own
    fields (`core.catalog.added`), the ratio from `aspect_ratio` (else the one `image_size` stands for)."""
    endpoint = get_endpoint(endpoint_id)
    refs = [image_urls] if isinstance(image_urls, str) else list(image_urls or ())
    if endpoint.fields is not None:
        body = added_mapping.canonical_body(
            endpoint.fields, prompt=prompt, ratio=added_mapping.ratio_of(aspect_ratio, image_size),
            refs=refs if endpoint.image_key else (), seed=seed)
        return _finish(endpoint_id, body, params)
    body: dict[str, Any] = {"prompt": prompt}
    if endpoint.takes_image_size:
        body["image_size"] = image_size if image_size is not None else image_size_for(None)
    if refs and endpoint.image_key is None:
        raise PayloadError(endpoint_id, [
            f"{endpoint_id} is text-to-image and takes no reference image ({len(refs)} given); "
            f"edit endpoints: {', '.join(e.id for e in list_endpoints() if e.mode == 'edit')}"])
    if endpoint.image_key == "image_urls":
        body["image_urls"] = refs
    elif endpoint.image_key == "image_url":
        if len(refs) > 1:
            raise PayloadError(endpoint_id, [
                f"`image_url` of {endpoint_id} takes one reference image, {len(refs)} given"])
        if refs:
            body["image_url"] = refs[0]
    if seed is not None:
        body["seed"] = seed
    return _finish(endpoint_id, body, params)


def _finish(endpoint_id: str, body: dict[str, Any], params: dict[str, Any] | None) -> dict[str, Any]:
    """The team preset, then `params` (None removes a key), then the check."""
    body.update(preset_params(endpoint_id))
    for key, value in (params or {}).items():
        if value is None:
            body.pop(key, None)
        else:
            body[key] = value
    validate_payload(endpoint_id, body)
    return body


def validate_payload(endpoint_id: str, body: Any) -> None:
    """Raise `PayloadError(endpoint, messages)` listing every problem of `body`; return if it may be sent."""
    entry = _entry(endpoint_id)
    endpoint = entry.endpoint
    if not isinstance(body, dict):
        raise PayloadError(endpoint_id, [
            f"a request body for {endpoint_id} must be a JSON object, got {json_type(body)}"])
    messages = [_unknown_key_message(endpoint, key) for key in body if key not in endpoint.accepted_keys]
    messages.extend(entry.schema.problems(body))
    if messages:
        raise PayloadError(endpoint_id, list(dict.fromkeys(messages)))


def _unknown_key_message(endpoint: Endpoint, key: str) -> str:
    eid = endpoint.id
    if key == "strength":
        with_strength = [e.id for e in list_endpoints() if "strength" in e.accepted_keys]
        return (f"`strength` is not a parameter of {eid}: fal would silently ignore it. "
                f"Strength-controlled image-to-image is {' or '.join(with_strength) or 'not in the registry'}"
                " (the endpoint with `strength`)")
    if key in IMAGE_KEYS and endpoint.image_key is None:
        edits = ", ".join(e.id for e in list_endpoints() if e.mode == "edit")
        return (f"`{key}` is not a field of {eid}: it is text-to-image and takes no reference image; "
                f"edit endpoints: {edits}")
    if key in IMAGE_KEYS:
        shape = (f"a list of 1 to {endpoint.max_images} strings" if endpoint.image_key == "image_urls"
                 else "one string")
        return f"`{key}` is not a field of {eid}: references go in `{endpoint.image_key}` ({shape})"
    if key == "image_size":
        return f"`image_size` is not a field of {eid}: its output follows the size of the reference image"
    close = difflib.get_close_matches(key, endpoint.accepted_keys, n=1)
    hint = f" (did you mean `{close[0]}`?)" if close else ""
    return (f"`{key}` is not a field of {eid}{hint}; fal would silently ignore it. "
            f"Accepted: {', '.join(endpoint.accepted_keys)}")


def output_size(endpoint_id: str, body: dict[str, Any]) -> tuple[int, int] | None:
    """(width, height) in pixels that `body` asks for; None when the output follows the input image
    (no image_size on the endpoint, or none in the body and no schema default)."""
    endpoint = get_endpoint(endpoint_id)
    if not endpoint.takes_image_size:
        return None
    prop = endpoint.schema["properties"]["image_size"]
    if "anyOf" in prop and "default" not in prop:
        prop = {**prop, "default": None}
    size = body.get("image_size", prop.get("default"))
    if isinstance(size, str):
        pixels = prop.get("x-fal-preset-pixels", {}).get(size) or _PRESET_PIXELS.get(size)
        return (int(pixels[0]), int(pixels[1])) if pixels else None
    if isinstance(size, dict):
        defaults = resolve_ref({"$ref": "#/$defs/ImageSize"}, endpoint.schema).get("properties", {})
        width = size.get("width", defaults.get("width", {}).get("default", 512))
        height = size.get("height", defaults.get("height", {}).get("default", 512))
        return int(width), int(height)
    return None


def estimate_cost(endpoint_id: str, body: dict[str, Any], *,
                  input_sizes: list[tuple[int, int]] | None = None) -> float | None:
    """Estimated USD for one request; None when the endpoint's price is unknown (never $0).

    Output: megapixels (w*h / 1024^2, not rounded) x num_images. When the output follows the input
    (no image_size), the first input's size is used, or 1 MP when unknown.
    Inputs (basis "input_and_output"): fal's pages say inputs are "resized to 1 MP" and give the
    example 1024x1024 out + one 512x512 in = $0.042 at $0.021/MP, i.e. 2 MP: a 512x512 (0.25 MP)
    input is billed as a full 1 MP. So each reference counts 1 MP whatever its size; `input_sizes`
    only tells how many there are (default: the references in the body, at most max_images).
    """
    endpoint = get_endpoint(endpoint_id)
    if endpoint.price is None:
        return None
    count_key = endpoint.fields.num_images_key if endpoint.fields is not None else "num_images"
    count = body.get(count_key or "num_images", 1)
    count = count if isinstance(count, int) and not isinstance(count, bool) and count > 0 else 1
    if endpoint.price.basis == "per_image":
        return round(endpoint.price.usd_per_mp * count, 9)
    size = output_size(endpoint_id, body)
    if size is None:
        size = tuple(input_sizes[0]) if input_sizes else (1024, 1024)  # type: ignore[assignment]
    megapixels = size[0] * size[1] / MEGAPIXEL * count
    if endpoint.price.basis == "input_and_output":
        if input_sizes is not None:
            inputs = len(input_sizes)
        else:
            refs = body.get(endpoint.image_key or "", [])
            inputs = 1 if isinstance(refs, str) else len(refs) if isinstance(refs, list) else 0
        megapixels += min(inputs, endpoint.max_images) * 1.0
    return round(endpoint.price.usd_per_mp * megapixels, 9)  # drops float noise, keeps fractions of a cent
