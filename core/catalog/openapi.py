"""Any fal image endpoint, from fal's own queue OpenAPI document (issue 18): `read_document` checks
the bytes a caller passes in; `describe` says how one canonical request (prompt, reference photos,
aspect ratio, seed, steps, guidance, LoRAs, number of images) maps onto the endpoint's own fields.
Pure: no file, network or store here.

Invariants:
- Everything is checked before anything is returned; every refusal is a `ModelDocumentError` of one
  line saying what is wrong and what to do, and costs well under a second whatever the input: the
  size cap comes before parsing, schema walks are iterative, bounded by `MAX_DEPTH` and
  `MAX_SCHEMA_NODES`. Strict JSON: UTF-8, no key given twice, no NaN/Infinity.
- Input and Output are found only through the paths (`POST /<id>` request body, the 200 answer of
  `GET /<id>/requests/{request_id}`), never by a component's title (fal's titles differ from keys).
- Every `$ref` is `#/components/schemas/<key>` and resolves. Cycles are refused: none of fal's image
  documents seen has a recursive schema, and a form cannot be drawn for one.
- `input_schema` / `output_schema` are self-contained JSON Schema 2020-12 documents: the components
  they reach are copied into `$defs`, refs rewritten to `#/$defs/<key>`, and both pass
  `Draft202012Validator.check_schema` (fal's 3.1-style nullables and `examples` are 2020-12 already).
- Accepted categories: `text-to-image`, `image-to-image` (`IMAGE_CATEGORIES`). A category naming a
  video, audio, speech, 3D, text or LLM output is refused. Any other category is accepted only when
  its Output has an `images` array or an `image` field.
"""
from __future__ import annotations

import graphlib
import hashlib
import json
import math
import re
from dataclasses import dataclass, field, replace
from fractions import Fraction
from typing import Any

from core.errors import ModelDocumentError

MAX_DOCUMENT_BYTES = 2 * 1024 * 1024     # fal's documents are 8-18 KB
MAX_DEPTH = 64                           # nesting of one component's JSON; fal's go about 8 deep
MAX_SCHEMA_NODES = 4_000                 # JSON values reachable from Input + Output; fal's: about 200
IMAGE_CATEGORIES = frozenset({"text-to-image", "image-to-image"})
# A category with one of these words returns something other than images ("image-to-video", "text-to-3d").
_NON_IMAGE_WORDS = frozenset({"video", "audio", "speech", "voice", "music", "sound", "3d", "llm", "text", "json"})
# The team's aspect ratios (core.catalog.prompts.ASPECT_RATIO_SIZES; a test holds them equal).
TEAM_RATIOS = ("1:1", "9:16", "16:9", "4:3", "3:4")
_REF_PREFIX = "#/components/schemas/"
_DATA_KEYWORDS = frozenset({"examples", "example", "default", "const", "enum"})   # values, not schemas
_NAME_MAPS = frozenset({"properties", "patternProperties", "$defs", "definitions", "dependentSchemas"})
_IMAGE_NAMES = ("image_urls", "image_url", "input_image_urls", "input_image_url")
_BETWEEN = re.compile(r"between\s+(\d{2,5})\s*(?:px|pixels)?\s+and\s+(\d{2,5})", re.IGNORECASE)
_MAX_IMAGES_TEXT = re.compile(r"(?:maximum of|up to|at most)\s+(\d{1,3})\s+images", re.IGNORECASE)
_PRESET = re.compile(r"^(square|portrait|landscape)(_hd)?(?:_(\d+)_(\d+))?$")
_ENDPOINT_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*(?:/[A-Za-z0-9][A-Za-z0-9._-]*)+$")


@dataclass(frozen=True)
class EndpointDocument:
    """A checked fal queue OpenAPI document. The dicts are the module's own copies: read, never mutate."""

    endpoint_id: str
    category: str
    metadata: dict[str, Any] = field(compare=False)      # info["x-fal-metadata"], an open set of keys
    input_schema: dict[str, Any] = field(compare=False, repr=False)
    output_schema: dict[str, Any] = field(compare=False, repr=False)
    field_order: tuple[str, ...]
    sha256: str                                          # hex of the raw bytes
    raw: bytes = field(compare=False, repr=False)


@dataclass(frozen=True)
class Range:
    """A numeric field's bounds and default as the schema states them (None: not stated)."""

    minimum: float | None = None
    maximum: float | None = None
    default: Any = None


@dataclass(frozen=True)
class SizeField:
    """Where the output's shape is asked. kind "image_size": `values` are the presets and `custom`
    says whether {"width", "height"} is allowed, within `min_px`..`max_px` when stated.
    kind "aspect_ratio" / "resolution_mode": `values` is the enum."""

    kind: str
    key: str
    values: tuple[str, ...]
    custom: bool = False
    min_px: int | None = None
    max_px: int | None = None


@dataclass(frozen=True)
class ModelFields:
    """How one canonical request maps onto an endpoint's own fields (None: the endpoint has none).
    `max_images`: 0 without an image field, None for an unbounded list."""

    endpoint_id: str
    label: str
    prompt_key: str
    image_key: str | None
    image_kind: str | None                 # "list" | "one" | None
    max_images: int | None
    image_required: bool                   # an edit model: it needs a reference photo
    size: SizeField | None
    seed_key: str | None
    seed_range: Range | None
    steps_key: str | None
    steps_range: Range | None
    guidance_key: str | None
    guidance_range: Range | None
    loras_key: str | None
    max_loras: int | None
    num_images_key: str | None
    num_images_range: Range | None
    missing: tuple[str, ...]               # sentences for the team, naming the model by `label`

    def aspect_ratio_value(self, ratio: str) -> tuple[str, Any] | None:
        """The (field, value) that asks this model for `ratio` ("9:16"); None: `aspect_ratio_problem`."""
        return self._ratio(ratio)[0]

    def aspect_ratio_problem(self, ratio: str) -> str | None:
        """Why `aspect_ratio_value(ratio)` is None, in a sentence; None when there is a value."""
        return self._ratio(ratio)[1]

    def _ratio(self, ratio: str) -> tuple[tuple[str, Any] | None, str | None]:
        wanted = _parse_ratio(ratio)
        if wanted is None:
            return None, f"{ratio!r} is not an aspect ratio such as 9:16"
        size, label, text = self.size, self.label, ratio.replace(" ", "")
        if size is None:
            return None, f"{label} has no size field: its outputs follow " + (
                "the reference photo's shape" if self.image_key else "the model's own shape")
        if size.kind != "image_size":
            found = next(((size.key, v) for v in size.values if _parse_ratio(v) == wanted), None)
            offered = f"{size.kind.replace('_', ' ')} ({', '.join(size.values)})"
            return (found, None) if found else (None, f"{label} offers no {text} {offered}")
        presets = [p for p in size.values if _preset_ratio(p) == wanted]
        if presets:
            return (size.key, next((p for p in presets if "_hd" in p), presets[0])), None
        if not size.custom:
            return None, f"{label} has no {text} size preset ({', '.join(size.values)})"
        dims = _about_one_mp(wanted, size.min_px or 1, size.max_px)
        if dims is None:
            return None, f"{label}'s custom sizes ({size.min_px}-{size.max_px} px) cannot make {text}"
        return (size.key, {"width": dims[0], "height": dims[1]}), None


def _fail(message: str) -> ModelDocumentError:
    return ModelDocumentError(" ".join(message.split()))   # one line, whatever a value held


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _a(category: Any) -> str:
    text = _short(str(category))[1:-1]     # "an image-to-video", short and on one line
    return ("an " if text[:1].lower() in "aeiou" else "a ") + text


def read_document(data: bytes, *, endpoint_id: str | None = None,
                  max_bytes: int = MAX_DOCUMENT_BYTES) -> EndpointDocument:
    """The checked document in `data` (fal's queue OpenAPI JSON); `endpoint_id`, when given, must be
    the one it describes. Anything wrong is a `ModelDocumentError`."""
    raw = memoryview(data).tobytes()    # bytes-like only: a str (or an int) is a TypeError
    where = endpoint_id or "the model document"
    if len(raw) > max_bytes:
        raise _fail(f"{where}: the document is {len(raw):,} bytes, more than the {max_bytes:,} allowed: "
                    "give fal's queue OpenAPI document (openapi.json?endpoint_id=...), not another file")
    document = _parse_json(raw, where)
    if not isinstance(document, dict) or not str(document.get("openapi")).startswith("3.") \
            or not isinstance(document.get("openapi"), str) or not isinstance(document.get("info"), dict) \
            or not isinstance(document.get("paths"), dict):
        raise _fail(f"{where} is not an OpenAPI 3 document (an `openapi` \"3.x\" string, `info` and "
                    "`paths`): give fal's queue OpenAPI document (openapi.json?endpoint_id=...)")
    metadata = document["info"].get("x-fal-metadata")
    found_id = metadata.get("endpointId") if isinstance(metadata, dict) else None
    if not isinstance(found_id, str) or not _ENDPOINT_ID.match(found_id):
        raise _fail(f"{where} has no endpoint id (info.x-fal-metadata.endpointId): "
                    "give fal's queue OpenAPI document, which names its endpoint")
    if endpoint_id is not None and found_id != endpoint_id:
        raise _fail(f"the document describes {_short(found_id)}, not {endpoint_id}: "
                    f"fetch or choose the document of {endpoint_id}")
    eid = found_id
    category = metadata.get("category")
    if not isinstance(category, str) or not category.strip() or _non_image(category):
        raise _fail(f"{eid} is {_a(category)} endpoint: only endpoints that return images can be compared")
    components = document.get("components")
    schemas = components.get("schemas") if isinstance(components, dict) else None
    if not isinstance(schemas, dict):
        raise _fail(f"{eid}'s document has no components.schemas: give fal's full queue OpenAPI document")
    paths = document["paths"]
    input_key = _path_ref(eid, paths, f"/{eid}", "post", ("requestBody",), "Input")
    output_key = _path_ref(eid, paths, f"/{eid}/requests/{{request_id}}", "get", ("responses", "200"), "Output")
    budget = [MAX_SCHEMA_NODES]
    input_schema = _self_contained(eid, schemas, input_key, budget)
    output_schema = _self_contained(eid, schemas, output_key, budget)
    props = input_schema.get("properties")
    if not isinstance(props, dict) or not props or not all(isinstance(v, dict) for v in props.values()):
        raise _fail(f"{eid}'s Input {input_key!r} is not an object schema with properties: "
                    "the dashboard needs the endpoint's fields")
    made = output_schema.get("properties") if isinstance(output_schema.get("properties"), dict) else {}
    images = isinstance(made.get("images"), dict) and _typed(made["images"], output_schema.get("$defs", {}), "array")
    if category not in IMAGE_CATEGORIES and not (images or isinstance(made.get("image"), dict)):
        raise _fail(f"{eid} is {_a(category)} endpoint whose Output has no images: only endpoints "
                    "that return images can be compared")
    from jsonschema import Draft202012Validator
    from jsonschema.exceptions import SchemaError
    for what, schema in (("Input", input_schema), ("Output", output_schema)):
        try:
            Draft202012Validator.check_schema(schema)
        except SchemaError as e:
            raise _fail(f"{eid}'s {what} is not a valid JSON Schema 2020-12 ({_short(e.message)[1:-1]}): "
                        "the document is damaged; fetch it again from fal") from None
    order = input_schema.get("x-fal-order-properties", list(props))
    if not isinstance(order, list) or not all(isinstance(k, str) for k in order):
        raise _fail(f"{eid}'s x-fal-order-properties is not a list of field names: "
                    "the document is damaged; fetch it again from fal")
    named = [k for k in dict.fromkeys(order) if k in props]   # then any field the list forgot
    return EndpointDocument(
        endpoint_id=eid, category=category, metadata=dict(metadata), input_schema=input_schema,
        output_schema=output_schema, field_order=(*named, *(k for k in props if k not in named)),
        sha256=hashlib.sha256(raw).hexdigest(), raw=raw)


class _Twice(ValueError):
    """A key given twice in one JSON object: json.loads would keep the last silently."""


def _parse_json(raw: bytes, where: str) -> Any:
    def no_twice(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
        out = dict(pairs)
        if len(out) != len(pairs):
            seen: set[str] = set()
            raise _Twice(next(k for k, _ in pairs if k in seen or seen.add(k)))   # type: ignore[func-returns-value]
        return out
    def no_constant(name: str) -> Any:
        raise ValueError(f"{name} is not JSON")
    try:
        return json.loads(raw.decode("utf-8"), object_pairs_hook=no_twice, parse_constant=no_constant)
    except UnicodeDecodeError:
        raise _fail(f"{where} is not UTF-8 text: give fal's queue OpenAPI document (JSON)") from None
    except _Twice as e:
        raise _fail(f"{where} gives the key {_short(e.args[0])} twice in one object: the document is "
                    "damaged or hand-edited; fetch it again from fal") from None
    except RecursionError:
        raise _fail(f"{where} nests too deeply to be a fal OpenAPI document: fetch it again from fal") from None
    except ValueError as e:   # json.JSONDecodeError included
        raise _fail(f"{where} is not JSON ({_short(str(e))[1:-1]}): give fal's queue OpenAPI "
                    "document (openapi.json?endpoint_id=...)") from None


def _non_image(category: str) -> bool:
    """Judged on what it makes: the part after "-to-" ("text-to-image" makes images)."""
    made = category.lower().rpartition("-to-")[2]
    return bool(set(re.split(r"[^a-z0-9]+", made)) & _NON_IMAGE_WORDS)


def _path_ref(eid: str, paths: dict[str, Any], path: str, method: str, at: tuple[str, ...], what: str) -> str:
    """The component key that `paths[path][method]...content.application/json.schema.$ref` names."""
    node: Any = paths.get(path, {}).get(method) if isinstance(paths.get(path), dict) else None
    for key in (*at, "content", "application/json", "schema", "$ref"):
        node = node.get(key) if isinstance(node, dict) else None
    if not isinstance(node, str):
        raise _fail(f"{eid}'s document has no {what} component ({method.upper()} {path} with a JSON schema $ref): "
                    "give fal's queue OpenAPI document of this endpoint")
    return _ref_key(eid, node)


def _ref_key(eid: str, ref: str) -> str:
    if not ref.startswith(_REF_PREFIX) or "/" in ref[len(_REF_PREFIX):] or ref == _REF_PREFIX:
        raise _fail(f"{eid}'s document has a $ref outside itself ({_short(ref)}): only "
                    f"'{_REF_PREFIX}<name>' is read; give fal's own self-contained document")
    return ref[len(_REF_PREFIX):].replace("~1", "/").replace("~0", "~")


def _copy(eid: str, component: dict[str, Any], budget: list[int]) -> tuple[dict[str, Any], list[str]]:
    """A copy of `component` with `#/components/schemas/X` refs as `#/$defs/X`, and the Xs it names.
    Iterative, so no recursion limit blows whatever the nesting; bounded by MAX_DEPTH and `budget`.
    Values under `examples`, `default`, `enum`... are data, not schemas: a `$ref` there is no ref."""
    named: list[str] = []
    top: list[Any] = [None]
    stack: list[tuple[Any, Any, Any, int, bool, bool]] = [(component, top, 0, 0, False, False)]
    while stack:
        value, parent, slot, depth, data, names = stack.pop()   # names: a `properties` map of fields
        budget[0] -= 1
        if budget[0] < 0 or depth > MAX_DEPTH:
            problem = f"are larger than {MAX_SCHEMA_NODES:,} values" if budget[0] < 0 else \
                f"nest deeper than {MAX_DEPTH} levels"
            raise _fail(f"{eid}'s schemas {problem}: that is not one of fal's image endpoints")
        if isinstance(value, dict):
            is_ref = not data and not names and isinstance(value.get("$ref"), str)
            if is_ref:
                named.append(_ref_key(eid, value["$ref"]))
            out = parent[slot] = dict(value)
            for k, v in value.items():
                v = "#/$defs/" + v[len(_REF_PREFIX):] if is_ref and k == "$ref" else v
                stack.append((v, out, k, depth + 1, data or (not names and k in _DATA_KEYWORDS),
                              not data and not names and k in _NAME_MAPS))
        elif isinstance(value, list):
            out = parent[slot] = list(value)
            stack.extend((v, out, i, depth + 1, data, False) for i, v in enumerate(value))
        else:
            parent[slot] = value
    return top[0], list(dict.fromkeys(named))


def _self_contained(eid: str, schemas: dict[str, Any], root: str, budget: list[int]) -> dict[str, Any]:
    """Component `root` as a JSON Schema 2020-12 document, the components it reaches in `$defs`."""
    copies: dict[str, dict[str, Any]] = {}
    refs: dict[str, list[str]] = {}      # component -> the components it names
    todo = [root]
    while todo:
        key = todo.pop()
        if key not in refs:
            if not isinstance(schemas.get(key), dict):
                raise _fail(f"{eid}'s document names the component {_short(key)} but does not define it: "
                            "fetch the whole document again from fal")
            copies[key], refs[key] = _copy(eid, schemas[key], budget)
            todo.extend(refs[key])
    try:   # graphlib's sort is iterative and linear, and names the cycle
        graphlib.TopologicalSorter(refs).prepare()
    except graphlib.CycleError as e:
        loop = " -> ".join(reversed(e.args[1]))
        raise _fail(f"{eid}'s document has a circular $ref ({_short(loop)[1:-1]}): a recursive schema "
                    "cannot be shown as a form; this endpoint cannot be added") from None
    defs = {key: copy for key, copy in copies.items() if key != root}
    return {"$schema": "https://json-schema.org/draft/2020-12/schema", **copies[root],
            **({"$defs": defs} if defs else {})}


def _resolve(schema: Any, defs: dict[str, Any]) -> dict[str, Any]:
    for _ in range(len(defs) + 1):    # no cycles (refused), so this ends
        if not isinstance(schema, dict) or not isinstance(schema.get("$ref"), str):
            break
        schema = defs.get(schema["$ref"].removeprefix("#/$defs/").replace("~1", "/").replace("~0", "~"))
    return schema if isinstance(schema, dict) else {}


def _branches(prop: dict[str, Any], defs: dict[str, Any]) -> list[dict[str, Any]]:
    """The non-null alternatives of a field (3.1-style `anyOf [..., {"type": "null"}]` nullables)."""
    prop = _resolve(prop, defs)
    resolved = [_resolve(b, defs) for b in prop.get("anyOf") or prop.get("oneOf") or [prop] if isinstance(b, dict)]
    return [b for b in resolved if b.get("type") != "null"]


def _typed(prop: dict[str, Any], defs: dict[str, Any], kind: str) -> dict[str, Any] | None:
    return next((b for b in _branches(prop, defs) if b.get("type") == kind
                 or (kind == "string" and "type" not in b and "enum" in b)), None)


def _range(prop: dict[str, Any], defs: dict[str, Any]) -> Range:
    main = _typed(prop, defs, "integer") or _typed(prop, defs, "number") or {}
    step = 1 if main.get("type") == "integer" else 0     # exclusive bounds of an integer, made inclusive

    def bound(inclusive: str, exclusive: str, sign: int) -> float | None:
        return next((main[k] + shift for k, shift in ((inclusive, 0), (exclusive, sign * step))
                     if isinstance(main.get(k), (int, float)) and not isinstance(main.get(k), bool)), None)
    return Range(bound("minimum", "exclusiveMinimum", 1), bound("maximum", "exclusiveMaximum", -1),
                 prop.get("default", main.get("default")))


def _parse_ratio(text: str) -> Fraction | None:
    match = re.fullmatch(r"\s*([1-9]\d{0,3})\s*:\s*([1-9]\d{0,3})\s*", text) if isinstance(text, str) else None
    return Fraction(int(match[1]), int(match[2])) if match else None


def _preset_ratio(preset: str) -> Fraction | None:
    """fal's preset names: square(_hd), portrait_A_B (A:B tall), landscape_A_B (A:B wide)."""
    match = _PRESET.match(preset)
    if not match or (match[1] == "square") != (match[3] is None):
        return None
    wide = _parse_ratio(f"{match[3]}:{match[4]}") if match[3] else Fraction(1)
    return wide if match[1] != "portrait" or wide is None else 1 / wide


def _about_one_mp(ratio: Fraction, low: int, high: int | None) -> tuple[int, int] | None:
    """Width and height near 1 MP at `ratio`, multiples of 16, scaled into [low, high]."""
    top = high if high is not None else 1 << 30
    width = math.sqrt(1024 * 1024 * ratio)
    scale = min(max(1.0, low / min(width, width / ratio)), top / max(width, width / ratio))
    sides = (width * scale, width / ratio * scale)
    if min(sides) < low - 0.5 or max(sides) > top + 0.5:
        return None
    return tuple(min(top, max(low, round(side / 16) * 16)) for side in sides)  # type: ignore[return-value]


def _image_field(props: dict[str, Any], order: tuple[str, ...], defs: dict[str, Any],
                 required: set[str]) -> tuple[str, str] | None:
    """(key, "list" | "one") of the reference-photo field: by name, then `_fal_ui_field: "image"`,
    then a string field whose description says it is an image URL. A mask is not a reference."""
    def kind(name: str) -> str | None:
        if _typed(props[name], defs, "string") is not None:
            return "one"
        items = _resolve((_typed(props[name], defs, "array") or {}).get("items"), defs)
        return "list" if items.get("type") == "string" else None
    def ui(name: str) -> bool:
        nodes = [props[name], *_branches(props[name], defs)]
        nodes += [_resolve(n.get("items"), defs) for n in nodes if isinstance(n.get("items"), dict)]
        return any(n.get("_fal_ui_field") == "image" for n in nodes)
    def says(name: str) -> bool:
        text = str(props[name].get("description", "")) + " " + str(props[name].get("title", ""))
        return bool(re.search(r"\bimages?\b", text, re.IGNORECASE) and re.search(r"\bur[li]s?\b", text, re.IGNORECASE))

    candidates = [k for k in order if kind(k) and "mask" not in k.lower()]
    found = next((f for f in ([k for k in candidates if test(k)] for test in (_IMAGE_NAMES.__contains__, ui, says))
                  if f), [])
    best = next((k for k in found if k in required), found[0] if found else None)
    return (best, kind(best)) if best else None  # type: ignore[return-value]


def _size_field(props: dict[str, Any], defs: dict[str, Any]) -> SizeField | None:
    for kind in ("aspect_ratio", "resolution_mode"):
        if kind in props and "image_size" not in props:
            enum = (_typed(props[kind], defs, "string") or {}).get("enum", ())
            return SizeField(kind, kind, tuple(str(v) for v in enum))
    if "image_size" not in props:
        return None
    prop = props["image_size"]
    custom = _typed(prop, defs, "object") or {}
    sides = {k: _resolve(v, defs) for k, v in custom.get("properties", {}).items() if k in ("width", "height")}
    values = tuple(v for v in (_typed(prop, defs, "string") or {}).get("enum", ()) if isinstance(v, str))
    if len(sides) < 2:
        return SizeField("image_size", "image_size", values)
    stated = [_range(side, defs) for side in sides.values()]
    lows, highs = [r.minimum for r in stated], [r.maximum for r in stated]
    for text in (prop.get("description"), custom.get("description"), *(v.get("description") for v in sides.values())):
        for match in _BETWEEN.finditer(text if isinstance(text, str) else ""):   # bounds fal states in words
            lows.append(int(match[1]))
            highs.append(int(match[2]))
    low = max((int(v) for v in lows if v is not None), default=None)
    return SizeField("image_size", "image_size", values, True, low,
                     min((int(v) for v in highs if v is not None), default=None))


def _max_items(array: dict[str, Any] | None, otherwise: int | None) -> int | None:
    value = (array or {}).get("maxItems")
    return value if isinstance(value, int) and not isinstance(value, bool) else otherwise


def describe(doc: EndpointDocument, *, label: str | None = None) -> ModelFields:
    """How the canonical request maps onto `doc`'s endpoint. `label` names the model in `missing`
    (default: a display name in the metadata, else the endpoint id). No prompt field is a
    `ModelDocumentError`: the dashboard sends every model a prompt."""
    schema, eid = doc.input_schema, doc.endpoint_id
    defs, props, order = schema.get("$defs", {}), schema["properties"], doc.field_order
    required = set(schema.get("required", ())) if isinstance(schema.get("required"), list) else set()
    name = label or next((doc.metadata[k] for k in ("displayName", "display_name", "title")
                          if isinstance(doc.metadata.get(k), str) and doc.metadata[k].strip()), eid)
    strings = [k for k in order if _typed(props[k], defs, "string") is not None]
    prompt_key = "prompt" if "prompt" in strings else next(
        (k for k in strings if "prompt" in k.lower() and "negative" not in k.lower()), None)
    if prompt_key is None:
        raise _fail(f"{eid} has no prompt field: the dashboard sends every model a prompt, "
                    "so this endpoint cannot be compared")
    def numeric(names: tuple[str, ...]) -> tuple[str | None, Range | None]:
        key = next((k for k in names if k in props and (_typed(props[k], defs, "integer")
                                                        or _typed(props[k], defs, "number"))), None)
        return key, _range(props[key], defs) if key else None
    image = _image_field(props, order, defs, required)
    image_key, image_kind = image if image else (None, None)
    max_images: int | None = {None: 0, "one": 1}.get(image_kind)
    if image_kind == "list":   # maxItems, else the count fal states in words ("A maximum of 4 images")
        stated = _MAX_IMAGES_TEXT.search(str(props[image_key].get("description", "")))  # type: ignore[index]
        max_images = _max_items(_typed(props[image_key], defs, "array"), int(stated[1]) if stated else None)
    seed_key, seed_range = numeric(("seed",))
    steps_key, steps_range = numeric(("num_inference_steps", "steps", "num_steps"))
    guidance_key, guidance_range = numeric(("guidance_scale", "guidance", "cfg_scale"))
    num_images_key, num_images_range = numeric(("num_images",))
    loras = _typed(props["loras"], defs, "array") if "loras" in props else None
    lora_item = _resolve((loras or {}).get("items"), defs).get("properties", {})
    loras_key = "loras" if loras and {"path", "scale"} <= set(lora_item) else None
    size = _size_field(props, defs)
    fields = ModelFields(
        endpoint_id=eid, label=name, prompt_key=prompt_key, image_key=image_key, image_kind=image_kind,
        max_images=max_images, image_required=image_key in required, size=size,
        seed_key=seed_key, seed_range=seed_range, steps_key=steps_key, steps_range=steps_range,
        guidance_key=guidance_key, guidance_range=guidance_range, loras_key=loras_key,
        max_loras=_max_items(loras, None) if loras_key else None, num_images_key=num_images_key,
        num_images_range=num_images_range, missing=())
    cannot = [r for r in TEAM_RATIOS if size is not None and fields.aspect_ratio_value(r) is None]
    first_n = f"only the first {max_images} are sent"
    missing = (
        (image_key is None, f"{name} takes no reference photo: photos are not sent"),
        (max_images == 1, f"{name} takes one photo: only the first is sent"),
        (bool(max_images and max_images > 1), f"{name} takes up to {max_images} photos: {first_n}"),
        (size is None, fields.aspect_ratio_problem("1:1")),
        # the dashboard's ~1 MP sizes have a short side of 768 px (4:3 is 1024x768)
        (bool(size and size.custom and (size.min_px or 0) > 768),
         f"{name}'s custom sizes start at {size and size.min_px} px"),
        (bool(cannot), f"{name} cannot make {', '.join(cannot)}: those outputs keep its own shape"),
        (seed_key is None, f"{name} has no seed: its outputs cannot be reproduced"),
        (steps_key is None, f"{name} has no step count: its own is used"),
        (guidance_key is None, f"{name} has no guidance scale: its own is used"),
        (loras_key is None, f"{name} takes no LoRAs: they are not sent"),
        (num_images_key is None, f"{name} has no number of images: each request makes its own count"),
    )
    return replace(fields, missing=tuple(str(text) for wanted, text in missing if wanted))
