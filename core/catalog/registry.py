"""The fal endpoints we compare, their request bodies, and the check every body passes before sending.

Invariants:
- Endpoints are data (core/catalog/endpoints.toml + the input JSON Schemas in core/catalog/schemas/), not if-chains;
  the file is checked against each schema when first loaded (a mismatch is a `ConfigError`).
- Nothing leaves without `validate_payload`: every schema error is reported at once (not just the
  first), each message names the field, what is allowed and the endpoint. `build_payload` validates
  the body it returns.
- A schema is checked (JSON Schema 2020-12) and compiled when jsonschema is first needed for its
  endpoint, not when the registry loads (tests/catalog checks every shipped schema).
- Bodies of one batch differ only in a few fields, so a body is judged field by field, each
  (field, value) judged once per process, whenever the schema's top level only types, requires and
  describes properties (`_DECOMPOSABLE`): then a body is valid exactly when every present field
  is valid against its own property schema, which is how JSON Schema's `properties` keyword
  judges it anyway. Anything else, or any doubt, goes through the whole-body check.
- A field is judged by `_verdict`, which knows the few keywords fal's schemas use (types, bounds,
  string enums, anyOf, local $ref, items, nested properties) with jsonschema's meaning, and
  answers None for anything else; then jsonschema judges. jsonschema (0.1 s to import) is thus
  loaded only to explain a refusal or for a keyword `_verdict` does not know; tests compare both
  on every field of every endpoint.
- A key the endpoint does not accept is refused, although fal would accept it: fal's apps silently
  drop unknown keys, which is how `strength: 0.65` reached flux-2/lora/edit for months doing nothing.
- References are strings: an http(s) URL, a `data:` URI, or a `reference://<id>` token (a stored
  payload's placeholder for a local photo, turned into a data: URI only at send time).
- Messages never carry a whole `data:` URI (`core.redact.abbreviate`).
- Every body of a comparison carries an `image_size` where the endpoint takes one (default square_hd,
  see core.catalog.prompts), so outputs share one shape instead of each endpoint's own default.
"""
from __future__ import annotations

import copy
import difflib
import functools
import json
import threading
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from core.errors import ConfigError, PayloadError
from core.catalog.payloads import REFERENCE_SCHEME
from core.redact import abbreviate
from core.catalog.prompts import image_size_for

if TYPE_CHECKING:
    from jsonschema import Draft202012Validator
    from jsonschema.exceptions import ValidationError

ENDPOINTS_PATH = Path(__file__).with_name("endpoints.toml")
SCHEMAS_DIR = Path(__file__).with_name("schemas")

MODES = ("text-to-image", "edit")
PRICE_BASES = ("output", "input_and_output")
IMAGE_KEYS = ("image_urls", "image_url")
MEGAPIXEL = 1024 * 1024  # fal's pricing megapixel: 1024x1024 = 1 MP

DEFAULT_MODELS = ("fal-ai/flux/schnell", "fal-ai/flux-2/lora/edit")

# Fields the builder fills from its own arguments; the rest are the endpoint's "parameters".
_BUILDER_FIELDS = ("prompt", "image_size", "image_url", "image_urls", "seed")
_REFERENCE_PREFIXES = ("http://", "https://", "data:", REFERENCE_SCHEME)
# fal's preset pixels (docs/fal.md), used when a schema does not list them itself
_PRESET_PIXELS = {
    "square_hd": (1024, 1024), "square": (512, 512), "portrait_4_3": (768, 1024),
    "portrait_16_9": (576, 1024), "landscape_4_3": (1024, 768), "landscape_16_9": (1024, 576),
}
_JSON_TYPES = {
    "integer": "an integer", "number": "a number", "string": "a string", "boolean": "true or false",
    "array": "a list", "object": "an object", "null": "null",
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
    output megapixels plus each reference image counted as 1 MP."""

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
    price: PriceRule
    notes: tuple[str, ...] = ()
    size_range: tuple[int, int] | None = None   # documented bounds of a custom width/height
    preset: dict[str, Any] = field(default_factory=dict, compare=False, hash=False)  # endpoint additions to TEAM_PRESET

    @property
    def accepted_keys(self) -> tuple[str, ...]:
        return tuple(self.schema.get("properties", {}))


# Top-level keywords under which a body's validity is the conjunction of its fields' validity:
# `type: object` (a dict passes), `required` (checked by name), `properties` (each present field
# against its own subschema), and keywords without any assertion. No `additionalProperties`,
# `patternProperties`, `dependent*`, `if`, combinators or `unevaluated*`: those relate fields.
_DECOMPOSABLE = frozenset({"type", "required", "properties", "$defs", "$schema", "$id", "title",
                           "description", "examples", "default", "$comment"})
_FIELD_VERDICTS_MAX = 20_000   # remembered (field, value) verdicts per endpoint, then forgotten
# keywords that assert nothing (jsonschema also ignores unknown ones, e.g. fal's `x-...`)
# (`format` asserts nothing without a format checker, and the validator here has none; `$id`
# is not among them: it moves the base of `$ref`, so a schema with one is left to jsonschema)
_ANNOTATIONS = frozenset({"title", "description", "default", "examples", "$comment", "deprecated",
                          "readOnly", "writeOnly", "format", "$schema", "$defs"})
_JSON_TYPE_CHECKS = {
    "string": lambda v: isinstance(v, str),
    "boolean": lambda v: isinstance(v, bool),
    "null": lambda v: v is None,
    "array": lambda v: isinstance(v, list),
    "object": lambda v: isinstance(v, dict),
    "number": lambda v: isinstance(v, (int, float)) and not isinstance(v, bool),
    # JSON Schema's integer is a number with no fractional part: 2.0 is one, True is not
    "integer": lambda v: (isinstance(v, int) and not isinstance(v, bool))
    or (isinstance(v, float) and v.is_integer()),
}


def _verdict(schema: Any, value: Any, root: dict[str, Any]) -> bool | None:
    """Does `value` pass `schema` (2020-12)? None when the schema uses a keyword not known here."""
    if schema is True or schema is False:
        return schema
    if not isinstance(schema, dict):
        return None
    ok = True
    for keyword, arg in schema.items():
        if keyword in _ANNOTATIONS or keyword.startswith("x-"):
            continue
        if keyword == "type":
            names = arg if isinstance(arg, list) else [arg]
            if any(n not in _JSON_TYPE_CHECKS for n in names):
                return None
            ok = ok and any(_JSON_TYPE_CHECKS[n](value) for n in names)
        elif keyword in ("minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum"):
            if not _JSON_TYPE_CHECKS["number"](arg):
                return None
            if _JSON_TYPE_CHECKS["number"](value):
                ok = ok and {"minimum": value >= arg, "maximum": value <= arg,
                             "exclusiveMinimum": value > arg, "exclusiveMaximum": value < arg}[keyword]
        elif keyword == "enum":
            # strings compare as plain text; other enums (1 vs 1.0 vs true) are left to jsonschema
            if not isinstance(arg, list) or not all(isinstance(a, str) for a in arg):
                return None
            ok = ok and isinstance(value, str) and value in arg
        elif keyword in ("minItems", "maxItems"):
            if isinstance(value, list):
                ok = ok and (len(value) >= arg if keyword == "minItems" else len(value) <= arg)
        elif keyword == "items":
            if "prefixItems" in schema:
                return None
            if isinstance(value, list):
                for item in value:
                    v = _verdict(arg, item, root)
                    if v is None:
                        return None
                    ok = ok and v
        elif keyword == "anyOf":
            branches = [_verdict(b, value, root) for b in arg]
            if True in branches:
                continue
            if None in branches:
                return None
            ok = False
        elif keyword == "$ref":
            if not isinstance(arg, str) or not arg.startswith("#/$defs/") or "/" in arg[8:] or "~" in arg:
                return None
            target = root.get("$defs", {}).get(arg[8:])
            if target is None:
                return None
            v = _verdict(target, value, root)
            if v is None:
                return None
            ok = ok and v
        elif keyword == "properties":
            if isinstance(value, dict):
                for name, sub in arg.items():
                    if name in value:
                        v = _verdict(sub, value[name], root)
                        if v is None:
                            return None
                        ok = ok and v
        elif keyword == "required":
            if isinstance(value, dict):
                ok = ok and all(name in value for name in arg)
        else:
            return None
    return ok


class _Entry:
    """An endpoint and its validator, built (schema checked, then compiled) on first use."""

    def __init__(self, endpoint: Endpoint, checked: dict[str, Any], schema_path: Path) -> None:
        self.endpoint = endpoint
        self._checked = checked
        self._schema_path = schema_path
        self._validator: Draft202012Validator | None = None
        self._lock = threading.Lock()
        top = checked
        self._decomposable = (top.get("type") == "object" and set(top) <= _DECOMPOSABLE
                              and isinstance(top.get("required", []), list))
        self._verdicts: dict[tuple[str, str], bool] = {}

    @property
    def validator(self) -> Draft202012Validator:
        if self._validator is None:
            from jsonschema import Draft202012Validator
            from jsonschema.exceptions import SchemaError

            with self._lock:
                if self._validator is None:
                    try:
                        Draft202012Validator.check_schema(self.endpoint.schema)
                    except SchemaError as e:
                        raise _bad(self.endpoint.id, f"schema {self._schema_path} is not a valid JSON "
                                                     f"Schema: {e.message}") from e
                    self._validator = Draft202012Validator(self._checked)
        return self._validator

    def surely_valid(self, body: dict[str, Any]) -> bool:
        """True only when `body` passes the schema (then `iter_errors(body)` yields nothing);
        False means "judge the whole body" (it may still be valid)."""
        if not self._decomposable:
            return False
        if any(key not in body for key in self._checked.get("required", ())):
            return False
        props = self._checked["properties"]
        verdicts = self._verdicts
        for key, value in body.items():
            sub = props.get(key)
            if sub is None:
                continue   # the schema allows other keys; validate_payload refuses them itself
            try:
                # the JSON text tells 1, 1.0 and true apart, as JSON Schema's types do
                seen = (key, json.dumps(value, sort_keys=True, allow_nan=False))
            except (TypeError, ValueError):
                return False
            verdict = verdicts.get(seen)
            if verdict is None:
                verdict = self.field_valid(key, value)
                if len(verdicts) >= _FIELD_VERDICTS_MAX:
                    verdicts.clear()
                verdicts[seen] = verdict
            if not verdict:
                return False
        return True

    def field_valid(self, key: str, value: Any) -> bool:
        """Does `value` pass the schema of property `key` (as the whole-body check judges it)?"""
        sub = self._checked["properties"][key]
        verdict = _verdict(sub, value, self._checked)
        if verdict is None:
            verdict = next(self.validator.descend(value, sub, path=key, schema_path=key), None) is None
        return verdict


def _bad(endpoint_id: str, problem: str) -> ConfigError:
    return ConfigError(f"endpoint registry {ENDPOINTS_PATH.name}, {endpoint_id!r}: {problem}")


def _load_schema(endpoint_id: str, filename: str) -> dict[str, Any]:
    path = SCHEMAS_DIR / filename
    try:
        document = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise _bad(endpoint_id, f"cannot load schema {path}: {e}") from e
    schema = document.get("input") if isinstance(document, dict) else None
    if not isinstance(schema, dict) or not isinstance(schema.get("properties"), dict):
        raise _bad(endpoint_id, f"schema {path} has no `input` object schema")
    return schema   # checked as a JSON Schema when first used (_Entry.validator)


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
    return _Entry(endpoint, checked, SCHEMAS_DIR / raw["schema"])


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
        raise PayloadError(str(endpoint_id), [
            f"unknown endpoint {endpoint_id!r}; known endpoints: {', '.join(entries)}"]) from None


def list_endpoints() -> tuple[Endpoint, ...]:
    """All endpoints, in registry order."""
    return tuple(e.endpoint for e in _entries().values())


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
    return tuple((k, v) for k, v in wanted.items() if k in props and entry.field_valid(k, v))


def build_payload(endpoint_id: str, *, prompt: str, image_size: str | dict[str, int] | None = None,
                  image_urls: Any = (), seed: int | None = None,
                  params: dict[str, Any] | None = None) -> dict[str, Any]:
    """The exact JSON body for `endpoint_id`, validated (a `PayloadError` otherwise).

    `image_size` is sent where the endpoint takes it (None: core.catalog.prompts' default, square_hd) and
    left out where it does not. `image_urls` go under the endpoint's reference key. The team preset
    comes next, then `params`, which override anything; a `params` value of None removes that key
    (the endpoint's default applies)."""
    endpoint = get_endpoint(endpoint_id)
    refs = [image_urls] if isinstance(image_urls, str) else list(image_urls or ())
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
            f"a request body for {endpoint_id} must be a JSON object, got {_json_type(body)}"])
    messages = [_unknown_key_message(endpoint, key) for key in body if key not in endpoint.accepted_keys]
    if not entry.surely_valid(body):
        errors = sorted(entry.validator.iter_errors(body), key=lambda e: [str(p) for p in e.absolute_path])
        for error in errors:
            messages.extend(_describe_error(endpoint, entry.validator.schema, error))
    messages.extend(_reference_problems(endpoint, body))
    prompt = body.get("prompt")
    if isinstance(prompt, str) and not prompt.strip():
        messages.append(f"`prompt` for {endpoint_id} is empty: describe the image to make")
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


def _field_name(path: Any) -> str:
    name = ""
    for part in path:
        name += f"[{part}]" if isinstance(part, int) else (f".{part}" if name else str(part))
    return name or "(body)"


def _json_type(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int):
        return "integer"
    if isinstance(value, float):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, (list, tuple)):
        return "array"
    if isinstance(value, dict):
        return "object"
    return type(value).__name__


def _show(value: Any, limit: int = 80) -> str:
    text = json.dumps(abbreviate(value), ensure_ascii=False, default=str)
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _range_text(schema: dict[str, Any]) -> str:
    low = schema.get("minimum")
    high = schema.get("maximum")
    ex_low = schema.get("exclusiveMinimum")
    ex_high = schema.get("exclusiveMaximum")
    if schema.get("type") == "integer":  # "more than 0" of an integer reads better as "1 to ..."
        if low is None and isinstance(ex_low, int):
            low, ex_low = ex_low + 1, None
        if high is None and isinstance(ex_high, int):
            high, ex_high = ex_high - 1, None
    if low is not None and high is not None:
        return f"{low} to {high}"
    parts = []
    if low is not None:
        parts.append(f"at least {low}")
    if ex_low is not None:
        parts.append(f"more than {ex_low}")
    if high is not None:
        parts.append(f"at most {high}")
    if ex_high is not None:
        parts.append(f"less than {ex_high}")
    return " and ".join(parts) or "any"


def _resolve(schema: dict[str, Any], root: dict[str, Any]) -> dict[str, Any]:
    ref = schema.get("$ref")
    if isinstance(ref, str) and ref.startswith("#/"):
        target: Any = root
        for part in ref[2:].split("/"):
            target = target.get(part, {}) if isinstance(target, dict) else {}
        return target if isinstance(target, dict) else {}
    return schema


def _describe_schema(schema: dict[str, Any], root: dict[str, Any]) -> str:
    """What a (sub)schema accepts, in words: "an integer, 4 to 50", "one of: jpeg, png"."""
    schema = _resolve(schema, root)
    for key in ("anyOf", "oneOf"):
        if key in schema:
            # enum branches first: "one of square_hd, ... or {"width": W, "height": H} ..."
            branches = sorted(schema[key], key=lambda s: "enum" not in _resolve(s, root))
            return " or ".join(_describe_schema(s, root) for s in branches)
    if "enum" in schema:
        return "one of " + ", ".join(str(v) for v in schema["enum"])
    kind = schema.get("type")
    if kind == "object" and "width" in schema.get("properties", {}) and "height" in schema["properties"]:
        width = schema["properties"]["width"]
        return f'{{"width": W, "height": H}} with integers {_range_text(width)}'
    words = _JSON_TYPES.get(kind, str(kind)) if isinstance(kind, str) else "a value"
    if any(k in schema for k in ("minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum")):
        words += f", {_range_text(schema)}"
    return words


def _describe_error(endpoint: Endpoint, root: dict[str, Any], error: ValidationError) -> list[str]:
    """Messages for one schema error; `root` is the schema checked (for $ref)."""
    eid = endpoint.id
    name = _field_name(error.absolute_path)
    keyword = error.validator
    schema = error.schema if isinstance(error.schema, dict) else {}
    value = error.instance
    if keyword == "required":
        missing = [k for k in error.validator_value if isinstance(value, dict) and k not in value]
        out = []
        for key in missing:
            full = f"{name}.{key}" if error.absolute_path else key
            if key == endpoint.image_key:
                what = (f"a list of 1 to {endpoint.max_images} reference images" if key == "image_urls"
                        else "one reference image")
                out.append(f"`{full}` is required by {eid}: it edits {what} (URL, data: URI or reference)")
            else:
                sub = schema.get("properties", {}).get(key, {})
                out.append(f"`{full}` is required by {eid} ({_describe_schema(sub, root)})")
        return out
    if keyword in ("minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum"):
        return [f"`{name}` = {_show(value)} is out of range for {eid}: allowed {_range_text(schema)}"]
    if keyword == "enum":
        return [f"`{name}` = {_show(value)} is not accepted by {eid}: allowed "
                + ", ".join(str(v) for v in error.validator_value)]
    if keyword == "type":
        return [f"`{name}` must be {_describe_schema(schema, root)} for {eid}, "
                f"got {_show(value)} ({_json_type(value)})"]
    if keyword == "maxItems":
        if name == endpoint.image_key:
            return [f"`{name}` has {len(value)} images but {eid} uses at most {endpoint.max_images} "
                    f"(fal would silently drop the rest)"]
        return [f"`{name}` has {len(value)} items, {eid} allows at most {error.validator_value}"]
    if keyword == "minItems":
        if name == endpoint.image_key:
            return [f"`{name}` is empty: {eid} edits reference images, give 1 to {endpoint.max_images}"]
        return [f"`{name}` has {len(value)} items, {eid} needs at least {error.validator_value}"]
    if keyword in ("anyOf", "oneOf"):
        return _describe_alternatives(endpoint, root, error, name)
    # keywords our schemas do not use today: still name field, rule and endpoint, never the raw value
    return [f"`{name}` = {_show(value)} breaks the `{keyword}` rule of {eid} "
            f"({_show(error.validator_value)})"]


def _describe_alternatives(endpoint: Endpoint, root: dict[str, Any], error: ValidationError,
                           name: str) -> list[str]:
    """anyOf: when exactly one branch has the value's type and fails deeper inside (a {"width",
    "height"} object for image_size), its own errors are the useful ones; otherwise list the
    alternatives (presets AND the custom size for an unknown image_size string)."""
    by_branch: dict[Any, list[ValidationError]] = {}
    for sub in error.context or ():
        by_branch.setdefault(sub.relative_schema_path[0], []).append(sub)
    right_type = [errs for errs in by_branch.values()
                  if not any(s.validator == "type" and len(s.relative_path) == 0 for s in errs)]
    if len(right_type) == 1 and all(len(s.relative_path) > 0 for s in right_type[0]):
        return [m for sub in right_type[0] for m in _describe_error(endpoint, root, sub)]
    allowed = _describe_schema(error.schema if isinstance(error.schema, dict) else {}, root)
    return [f"`{name}` must be {allowed} for {endpoint.id}, got {_show(error.instance)} "
            f"({_json_type(error.instance)})"]


def _reference_problems(endpoint: Endpoint, body: dict[str, Any]) -> list[str]:
    key = endpoint.image_key
    if key is None or key not in body:
        return []
    value = body[key]
    items = [(key, value)] if key == "image_url" else (
        [(f"{key}[{i}]", v) for i, v in enumerate(value)] if isinstance(value, list) else [])
    problems = []
    for name, ref in items:
        if not isinstance(ref, str):
            continue  # the schema's type error already names it
        if not ref.startswith(_REFERENCE_PREFIXES) or ref in _REFERENCE_PREFIXES:
            problems.append(f"`{name}` = {_show(ref)} is not a usable reference for {endpoint.id}: "
                            f"give an http(s) URL, a data: URI or a reference://<id> token")
    return problems


def output_size(endpoint_id: str, body: dict[str, Any]) -> tuple[int, int] | None:
    """(width, height) in pixels that `body` asks for; None when the output follows the input image
    (no image_size on the endpoint, or none in the body and no schema default)."""
    endpoint = get_endpoint(endpoint_id)
    if not endpoint.takes_image_size:
        return None
    prop = endpoint.schema["properties"]["image_size"]
    size = body.get("image_size", prop.get("default"))
    if isinstance(size, str):
        pixels = prop.get("x-fal-preset-pixels", {}).get(size) or _PRESET_PIXELS.get(size)
        return (int(pixels[0]), int(pixels[1])) if pixels else None
    if isinstance(size, dict):
        defaults = _resolve({"$ref": "#/$defs/ImageSize"}, endpoint.schema).get("properties", {})
        width = size.get("width", defaults.get("width", {}).get("default", 512))
        height = size.get("height", defaults.get("height", {}).get("default", 512))
        return int(width), int(height)
    return None


def estimate_cost(endpoint_id: str, body: dict[str, Any], *,
                  input_sizes: list[tuple[int, int]] | None = None) -> float:
    """Estimated USD for one request.

    Output: megapixels (w*h / 1024^2, not rounded) x num_images. When the output follows the input
    (no image_size), the first input's size is used, or 1 MP when unknown.
    Inputs (basis "input_and_output"): fal's pages say inputs are "resized to 1 MP" and give the
    example 1024x1024 out + one 512x512 in = $0.042 at $0.021/MP, i.e. 2 MP: a 512x512 (0.25 MP)
    input is billed as a full 1 MP. So each reference counts 1 MP whatever its size; `input_sizes`
    only tells how many there are (default: the references in the body, at most max_images).
    """
    endpoint = get_endpoint(endpoint_id)
    count = body.get("num_images", 1)
    count = count if isinstance(count, int) and not isinstance(count, bool) and count > 0 else 1
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


def parameter_fields(endpoint_id: str) -> list[dict[str, Any]]:
    """The tunable parameters of an endpoint for forms, in schema order (prompt, references, seed and
    image_size excluded: the builder sets those). Keys: name, title, type, default, min, max, enum,
    description, preset (the team preset value sent for it, or None)."""
    endpoint = get_endpoint(endpoint_id)
    preset = preset_params(endpoint_id)
    fields_: list[dict[str, Any]] = []
    for name, prop in endpoint.schema["properties"].items():
        if name in _BUILDER_FIELDS:
            continue
        branches = [_resolve(s, endpoint.schema) for s in prop.get("anyOf", [prop])]
        main = next((b for b in branches if b.get("type") != "null"), prop)
        fields_.append({
            "name": name,
            "title": prop.get("title", name),
            "type": main.get("type"),
            "default": prop.get("default"),
            "min": main.get("minimum", main.get("exclusiveMinimum")),
            "max": main.get("maximum", main.get("exclusiveMaximum")),
            "enum": list(main["enum"]) if "enum" in main else None,
            "description": prop.get("description", ""),
            "preset": preset.get(name),
        })
    return fields_
