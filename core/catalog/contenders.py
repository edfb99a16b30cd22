"""Contenders: what a comparison compares is a model AT its settings, not just a model.

A CONTENDER is an endpoint plus its parameter set: everything in a request body except what the
group fixes for every contender alike (`GROUP_FIELDS`: prompt, seed, image_size and the reference
images). "FLUX.2 [dev] LoRA edit at 28 steps with the studio LoRA" and the same model at 7 steps
are two contenders; a plain two-model batch has two contenders, one per model.

Invariants:
- A contender's parameters leave out every top-level value equal to the endpoint schema's declared
  default: sending the default and leaving the key out ask fal for the same thing, so both bodies
  are one contender (`"loras": []` and no `loras` at all are both "no LoRA"). `Contender.value`
  gives the effective value of any parameter, default included.
- The id is "c1:" + the first 16 hex of sha256 over the canonical JSON
  (`core.catalog.payloads.canonical_json`) of {"endpoint", "params"}: the same settings always give
  the same id, in any batch, whatever the key order; it is computed from the body alone, so an old
  request stored before contenders existed gets the same id as a new one with the same settings.
- A label is built from what DIFFERS between the contenders it is shown with (`labels`): the model's
  registry label, then the value of each parameter that varies among the contenders of that same
  endpoint. A model with one contender is its label alone, so a plain two-model batch reads as it
  always did. Labels within one call are unique (a short id is appended if two would read the same).
- Nothing here reads the store: contenders are derived from (endpoint, body) pairs.
"""
from __future__ import annotations

import functools
import hashlib
import json
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

from core.catalog.payloads import canonical_json
from core.errors import PayloadError

ID_VERSION = "c1"
# Fields every contender of a group shares: they belong to the group (prompt option variant,
# seed, size, reference photos), never to a contender.
GROUP_FIELDS = ("prompt", "seed", "image_size", "image_url", "image_urls")
_LORA_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth", ".ckpt")
# How a parameter's value reads in a label; others read "<name with spaces> <value>".
_FORMATS = {
    "num_inference_steps": "{} steps",
    "guidance_scale": "guidance {}",
    "num_images": "{} images",
    "strength": "strength {}",
}


@dataclass(frozen=True)
class Contender:
    """An endpoint at one parameter set. Equal (and hashed) by `id`; `params` holds only the
    values that differ from the endpoint's defaults: read it, never mutate it."""

    id: str
    endpoint: str = field(compare=False)
    params: Mapping[str, Any] = field(compare=False, repr=False)

    @property
    def params_json(self) -> str:
        """The parameters as canonical JSON (what the id hashes, with the endpoint)."""
        return canonical_json(dict(self.params))

    def value(self, name: str) -> Any:
        """The effective value of parameter `name`: the one set, else the endpoint's default
        (None when the schema declares none)."""
        if name in self.params:
            return self.params[name]
        return _defaults(self.endpoint).get(name)


def contender_id(endpoint: str, params: Mapping[str, Any]) -> str:
    text = canonical_json({"endpoint": endpoint, "params": dict(params)})
    return f"{ID_VERSION}:" + hashlib.sha256(text.encode("utf-8")).hexdigest()[:16]


def make(endpoint: str, params: Mapping[str, Any] | None = None) -> Contender:
    """The contender of `endpoint` at `params` (group fields and default values are dropped)."""
    defaults = _defaults(endpoint)
    group = group_fields(endpoint)
    kept: dict[str, Any] = {}
    for key, value in (params or {}).items():
        if key in group:
            continue
        if key in defaults and canonical_json(value) == canonical_json(defaults[key]):
            continue
        # a private copy through JSON: nothing the caller changes later moves the contender
        kept[key] = json.loads(canonical_json(value))
    return Contender(id=contender_id(endpoint, kept), endpoint=endpoint, params=kept)


def from_request(endpoint: str, payload: Mapping[str, Any] | str) -> Contender:
    """The contender of a stored request (its endpoint and the payload as stored, a mapping or
    its JSON text): requests recorded before contenders existed get theirs this way."""
    if isinstance(payload, str):
        payload = json.loads(payload)
    if not isinstance(payload, Mapping):
        raise ValueError(f"a request payload is a JSON object, got {type(payload).__name__}")
    return make(endpoint, payload)


def _defaults(endpoint: str) -> dict[str, Any]:
    """Top-level schema defaults of `endpoint` (a fresh copy); {} for an endpoint the registry no
    longer knows (its stored requests keep every value they sent)."""
    return json.loads(_defaults_json(endpoint, _schema_version(endpoint)))


def group_fields(endpoint: str) -> tuple[str, ...]:
    """The body fields of `endpoint` that belong to the group: `GROUP_FIELDS`, and for an endpoint
    added from its document its own prompt, image, size and seed fields (`aspect_ratio`...)."""
    return _group_fields(endpoint, _schema_version(endpoint))


def _schema_version(endpoint: str) -> str | None:
    """What the cached reads of an endpoint key on: its schema version, None when unknown (an
    endpoint added later in this process is then read afresh, never from a cached miss)."""
    from core.catalog import registry

    try:
        return registry.get_endpoint(endpoint).schema_version
    except PayloadError:
        return None


@functools.cache
def _group_fields(endpoint: str, version: str | None) -> tuple[str, ...]:
    from core.catalog import registry

    if version is None:
        return GROUP_FIELDS
    f = registry.get_endpoint(endpoint).fields
    if f is None:
        return GROUP_FIELDS
    own = (f.prompt_key, f.image_key, f.size.key if f.size else None, f.seed_key)
    return tuple(dict.fromkeys([*GROUP_FIELDS, *(k for k in own if k)]))


@functools.cache
def _defaults_json(endpoint: str, version: str | None) -> str:
    # schemas are fixed data: read each endpoint's defaults once per process (and schema version)
    from core.catalog import registry

    if version is None:
        return "{}"
    props = registry.get_endpoint(endpoint).schema.get("properties", {})
    group = _group_fields(endpoint, version)
    return json.dumps({k: p["default"] for k, p in props.items()
                       if isinstance(p, dict) and "default" in p and k not in group})


# ---------------------------------------------------------------------------- axes and labels


@dataclass(frozen=True)
class Axis:
    """One parameter that varies among the contenders of one endpoint in a batch.

    `values` are the distinct effective values as canonical JSON (numbers ascending, others in
    first-seen order); `labels` say each in words ("7 steps", "no LoRA"), in the same order."""

    endpoint: str
    parameter: str
    values: tuple[str, ...]
    labels: tuple[str, ...]

    def label_of(self, contender: Contender) -> str:
        """How `contender`'s value on this axis reads (e.g. "28 steps")."""
        return format_value(self.endpoint, self.parameter, contender.value(self.parameter))

    @property
    def title(self) -> str:
        """e.g. "7 vs 28 steps" style: the values joined by " vs "."""
        return " vs ".join(self.labels)


def swept_axes(contenders: Iterable[Contender]) -> tuple[Axis, ...]:
    """The parameters that vary among the contenders of each endpoint, endpoints in first-seen
    order; per endpoint scalar parameters first (in schema order), then list and object ones
    (the LoRA set)."""
    by_endpoint: dict[str, list[Contender]] = {}
    for c in _unique(contenders):
        by_endpoint.setdefault(c.endpoint, []).append(c)
    axes: list[Axis] = []
    for endpoint, group in by_endpoint.items():
        if len(group) < 2:
            continue
        names = _ordered_names(endpoint, {k for c in group for k in c.params})
        for name in names:
            seen: dict[str, Any] = {}
            for c in group:
                v = c.value(name)
                seen.setdefault(canonical_json(v), v)
            if len(seen) < 2:
                continue
            keys = list(seen)
            if all(_is_number(v) for v in seen.values()):
                keys.sort(key=lambda k: seen[k])
            axes.append(Axis(endpoint, name, tuple(keys),
                             tuple(format_value(endpoint, name, seen[k]) for k in keys)))
    return tuple(axes)


def labels(contenders: Iterable[Contender]) -> dict[str, str]:
    """id -> readable label, built from what differs between these contenders (see the module
    invariants), e.g. "FLUX.2 [dev] LoRA edit · 28 steps · studio-style 0.8"."""
    unique = _unique(contenders)
    axes = swept_axes(unique)
    out: dict[str, str] = {}
    for c in unique:
        parts = [model_label(c.endpoint)]
        parts += [a.label_of(c) for a in axes if a.endpoint == c.endpoint]
        out[c.id] = " · ".join(parts)
    counts: dict[str, int] = {}
    for text in out.values():
        counts[text] = counts.get(text, 0) + 1
    # two LoRA files with the same name in different folders would read alike: tell them apart
    return {cid: text if counts[text] == 1 else f"{text} ({cid})" for cid, text in out.items()}


def describe(contender: Contender) -> str:
    """Every setting of one contender in words, defaults left out: "FLUX.2 [dev] LoRA edit ·
    7 steps · guidance 3.5" (for exports and tooltips, where no other contender is beside it)."""
    names = _ordered_names(contender.endpoint, set(contender.params))
    return " · ".join([model_label(contender.endpoint)]
                      + [format_value(contender.endpoint, n, contender.params[n]) for n in names])


def settings(contenders: Iterable[Contender]) -> dict[str, dict[str, str]]:
    """id -> {"model": its model label, then parameter: value in words on each swept axis of its
    endpoint}: what `core.evaluation.stats.axis_breakdown` compares ("7 vs 28 steps", all else
    equal) and what an export writes per swept parameter."""
    unique = _unique(contenders)
    axes = swept_axes(unique)
    return {c.id: {"model": model_label(c.endpoint),
                   **{a.parameter: a.label_of(c) for a in axes if a.endpoint == c.endpoint}}
            for c in unique}


def model_label(endpoint: str) -> str:
    from core.catalog import registry

    try:
        return registry.get_endpoint(endpoint).label
    except PayloadError:
        return endpoint


def format_value(endpoint: str, name: str, value: Any) -> str:
    """One parameter value in words: "28 steps", "guidance 3.5", "studio-style 0.8", "no LoRA"."""
    if name == "loras":
        return _format_loras(endpoint, value)
    text = _format_scalar(value)
    if name in _FORMATS:
        return _FORMATS[name].format(text)
    return f"{name.replace('_', ' ')} {text}"


def _format_scalar(value: Any) -> str:
    if value is None:
        return "default"
    if isinstance(value, bool):
        return "on" if value else "off"
    if isinstance(value, float) and math.isfinite(value):
        return f"{value:g}"
    if isinstance(value, (int, str)):
        return str(value)
    return canonical_json(value)


def _format_loras(endpoint: str, value: Any) -> str:
    if not value:
        return "no LoRA"
    if not isinstance(value, list):
        return f"loras {_format_scalar(value)}"
    default_scale = _lora_default_scale(endpoint)
    parts = []
    for item in value:
        if not isinstance(item, Mapping):
            parts.append(_format_scalar(item))
            continue
        scale = item.get("scale", default_scale)
        parts.append(f"{lora_name(str(item.get('path', '?')))} {_format_scalar(scale)}")
    return " + ".join(parts)


def lora_name(path: str) -> str:
    """The short name of a LoRA: its file stem ("…/studio-style.safetensors" -> "studio-style"),
    or the repository of a HuggingFace id ("owner/repo" -> "repo")."""
    raw = urlsplit(path).path if "://" in path else path
    stem = raw.rstrip("/").rsplit("/", 1)[-1] or path
    for suffix in _LORA_SUFFIXES:
        if stem.lower().endswith(suffix) and len(stem) > len(suffix):
            return stem[: -len(suffix)]
    return stem


def _lora_default_scale(endpoint: str) -> Any:
    from core.catalog import registry

    try:
        schema = registry.get_endpoint(endpoint).schema
    except PayloadError:
        return 1
    scale = schema.get("$defs", {}).get("LoRAInput", {}).get("properties", {}).get("scale", {})
    return scale.get("default", 1)


def _ordered_names(endpoint: str, names: set[str]) -> list[str]:
    """Scalars in schema order, then lists and objects (the LoRA set reads last), then names the
    schema does not know, alphabetically."""
    from core.catalog import registry

    try:
        order = list(registry.get_endpoint(endpoint).schema.get("properties", {}))
    except PayloadError:
        order = []
    defaults = _defaults(endpoint)
    known = [n for n in order if n in names]
    unknown = sorted(n for n in names if n not in order)

    def compound(n: str) -> bool:
        return isinstance(defaults.get(n), (list, dict)) or n == "loras"

    return [n for n in known if not compound(n)] + [n for n in known if compound(n)] + unknown


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _unique(contenders: Iterable[Contender]) -> list[Contender]:
    out: dict[str, Contender] = {}
    for c in contenders:
        out.setdefault(c.id, c)
    return list(out.values())


__all__: Sequence[str] = (
    "GROUP_FIELDS", "Axis", "Contender", "contender_id", "describe", "format_value", "from_request",
    "labels", "lora_name", "make", "model_label", "settings", "swept_axes",
)
