"""Batch plans: what a batch will send, its size and cost, before anything is written or sent.

A plan file (JSON; the README's "Batch plans" section says the same for users):

    {"name": "...", "references": ["photos/face.jpg", "<reference id>"],
     "options": {"subject": ["Woman"], "pose": ["Standing", "Walking"], ...},
     "models": ["fal-ai/flux/schnell", "fal-ai/flux-2/lora/edit"],
     "params": {"fal-ai/flux-2/lora/edit": {"num_inference_steps": 28}},
     "sweep": {"fal-ai/flux-2/lora/edit": {"num_inference_steps": [7, 28],
               "loras": [[], [{"path": "https://.../style.safetensors", "scale": 0.8}]]}},
     "seeds": [1, 2]}

Invariants:
- A batch is the product option values x seeds x CONTENDERS (`core.catalog.contenders`). A model
  without a `sweep` entry is one contender: its `params` on top of the team preset. A model with
  one is the product of the listed values of each swept parameter, each on top of its `params`; a
  value of a list parameter is the whole list (a LoRA sweep lists `loras` lists). A plan without
  `sweep` plans exactly what it planned before contenders existed.
- A GROUP is one (variant, seed): its requests share prompt, seed, `image_size` and references
  across contenders, so outputs compare like for like. Every planned request carries its contender.
- The request count (variants x seeds x contenders) and the estimated cost are computed from the
  counts alone and checked against `MAX_REQUESTS` before any combination is built, so an oversized
  plan is refused at once in bounded memory.
- Text-to-image models get no references; edit models get every reference of the plan (more than
  the endpoint uses is a PlanError, never a silent drop).
- Every contender is validated (`registry.build_payload`) before anything is written, each swept
  value on its own first so a refusal names the endpoint, the parameter and the value; every body
  is validated again as it is built. A bad plan raises PlanError naming the field, and no
  reference is uploaded, no row written.
- Plan input is refused with one PlanError line, never a traceback: a plan file must be a regular
  file of at most `MAX_PLAN_BYTES`, UTF-8, JSON nested at most `MAX_DEPTH` deep, without NaN or
  Infinity, lone surrogates, keys given twice or texts over `MAX_TEXT` characters; the same value
  checks apply to a spec given as a dict (the Generate page).
- Stored payloads name local references as `reference://<id>` (`references.payload_url`); the
  `data:` URI is built only at send time.
"""
from __future__ import annotations

import functools
import itertools
import json
import math
import os
import random
import re
import stat
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from core.catalog import contenders as contenders_mod
from core.catalog.contenders import Axis, Contender
from core.catalog.payloads import canonical_json, payload_hash
from core.redact import abbreviate
from core.errors import DashboardError, PayloadError, PlanError, PromptError, UploadRejected

if TYPE_CHECKING:
    from core.store import Store

PLAN_KEYS = ("name", "references", "options", "models", "params", "sweep", "seeds")
MAX_REQUESTS = 10_000
MAX_SEED = 2**32 - 1
MAX_PLAN_BYTES = 1024 * 1024          # a 10,000-request plan is a few KB; this bounds the read
MAX_DEPTH = 32                        # a plan is 5 levels deep; a LoRA sweep 6
MAX_TEXT = 4096                       # characters of one text value (a signed LoRA URL fits)
MAX_REFERENCE_BYTES = 20 * 1024 * 1024  # the upload limit's default; add_reference applies the setting
_PENDING = "reference://pending-"
_GROUP_PARAMS = contenders_mod.GROUP_FIELDS  # set by the plan for every contender of a group
_SURROGATE = re.compile("[\ud800-\udfff]")
_JSON_STRING = re.compile(r'"(?:[^"\\]|\\.)*"', re.S)
_NOT_BRACKET = re.compile(r"[^\[\]{}]+")


@dataclass(frozen=True)
class PlannedGroup:
    key: str
    variant_key: str
    options: Mapping[str, str]
    prompt: str
    seed: int
    image_size: str
    reference_ids: tuple[str, ...]


@dataclass(frozen=True)
class PlannedRequest:
    group_key: str
    endpoint: str
    payload: Mapping[str, Any] = field(repr=False)
    payload_hash: str
    estimated_cost: float
    prompt: str
    options: Mapping[str, str]
    seed: int
    image_size: str
    reference_ids: tuple[str, ...]
    contender: Contender


@dataclass(frozen=True)
class ContenderLine:
    """One contender of a plan as the Generate page and the CLI list it before running."""

    contender: Contender
    label: str
    requests: int
    estimated_cost: float


@dataclass(frozen=True)
class Plan:
    """Everything a batch will send. `plan_json` is the plan as stored with the batch (paths
    replaced by reference ids, seeds made explicit). `final` is False for a preview whose new
    reference files were not uploaded yet (payloads carry `reference://pending-N`).
    `contenders` are in planning order (per model in `models` order, then the sweep product)."""

    name: str
    models: tuple[str, ...]
    seeds: tuple[int, ...]
    reference_ids: tuple[str, ...]
    groups: tuple[PlannedGroup, ...]
    requests: tuple[PlannedRequest, ...]
    estimated_cost: float
    plan_json: Mapping[str, Any] = field(repr=False)
    final: bool = True
    contenders: tuple[Contender, ...] = ()

    @property
    def request_count(self) -> int:
        return len(self.requests)

    @functools.cached_property
    def labels(self) -> Mapping[str, str]:
        """Contender id -> readable label, from what differs between this plan's contenders."""
        return contenders_mod.labels(self.contenders)

    @property
    def axes(self) -> tuple[Axis, ...]:
        """The swept parameters of this plan, per endpoint (empty without a sweep)."""
        return contenders_mod.swept_axes(self.contenders)

    @property
    def warnings(self) -> tuple[str, ...]:
        """What the user should know before sending (nothing here stops the plan)."""
        from core.catalog import registry

        out = []
        for m in self.models:
            if not registry.get_endpoint(m).takes_image_size:
                out.append(f"{m} takes no image_size: its output follows the reference photo's shape, "
                           "not the aspect ratio in the prompt, so it will not match the other "
                           "models' shape in a comparison.")
        return tuple(out)

    def cost_by_model(self) -> dict[str, float]:
        out: dict[str, float] = {m: 0.0 for m in self.models}
        for r in self.requests:
            out[r.endpoint] = round(out[r.endpoint] + r.estimated_cost, 6)
        return out

    def contender_lines(self) -> tuple[ContenderLine, ...]:
        """Per contender, in planning order: its label, its number of requests and their cost."""
        counts: dict[str, int] = {c.id: 0 for c in self.contenders}
        costs: dict[str, float] = {c.id: 0.0 for c in self.contenders}
        for r in self.requests:
            counts[r.contender.id] = counts.get(r.contender.id, 0) + 1
            costs[r.contender.id] = round(costs.get(r.contender.id, 0.0) + r.estimated_cost, 6)
        return tuple(ContenderLine(c, self.labels[c.id], counts[c.id], costs[c.id]) for c in self.contenders)

    def summary(self) -> str:
        """One line: "10 requests = 2 variants x 1 seed x 5 contenders; estimated $0.123"."""
        variants = len(self.groups) // len(self.seeds) if self.seeds else 0
        return (f"{self.request_count} requests = {variants} variant{'s' * (variants != 1)} x "
                f"{len(self.seeds)} seed{'s' * (len(self.seeds) != 1)} x {len(self.contenders)} "
                f"contender{'s' * (len(self.contenders) != 1)}; estimated ${self.estimated_cost:.3f}")


@dataclass(frozen=True)
class _Ref:
    """A reference of the plan: an existing id, or a file read from disk (not uploaded yet)."""

    field_name: str
    id: str | None
    data: bytes | None
    filename: str | None
    size: tuple[int, int] | None


# ---------------------------------------------------------------------------- reading input


def load_plan_file(path: str | Path) -> dict[str, Any]:
    """The JSON object of a plan file; PlanError (one line) if it cannot be read or used."""
    path = Path(path)
    data = _read_capped(path, MAX_PLAN_BYTES, f"plan file {path}")
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        raise PlanError(f"plan file {path} is not UTF-8 text (byte 0x{data[e.start]:02x} at offset "
                        f"{e.start}): save it as UTF-8") from None
    depth = _json_depth(text)
    if depth > MAX_DEPTH:
        raise PlanError(f"plan file {path} nests JSON {depth} levels deep; a plan needs at most "
                        f"{MAX_DEPTH}: check the file is the plan you meant")
    try:
        # NaN, Infinity and 1e999 parse as floats here; `_check_values` refuses them by field name
        spec = json.loads(text, object_pairs_hook=_unique_keys)
    except PlanError as e:
        raise PlanError(f"plan file {path}: {e}") from None
    except RecursionError:  # the depth check above should make this unreachable
        raise PlanError(f"plan file {path} nests JSON too deep") from None
    except ValueError as e:
        raise PlanError(f"plan file {path} is not valid JSON: {e}") from None
    if not isinstance(spec, dict):
        raise PlanError(f"plan file {path} must hold a JSON object with keys {', '.join(PLAN_KEYS)}")
    try:
        _check_values(spec)
    except PlanError as e:
        raise PlanError(f"plan file {path}: {e}") from None
    return spec


def _read_capped(path: Path, cap: int, what: str) -> bytes:
    """At most `cap` bytes of a regular file; anything else (a FIFO, a device, a directory, a
    larger file) is a PlanError before more than `cap` + 1 bytes are read."""
    try:
        # O_NONBLOCK: opening a FIFO for reading must not wait for a writer
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_CLOEXEC", 0))
    except OSError as e:
        raise PlanError(f"cannot read {what}: {e.strerror or e}") from None
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise PlanError(f"{what} is not a regular file (a directory, FIFO or device): "
                            "give the path of a file")
        if info.st_size > cap:
            raise PlanError(f"{what} is {_size(info.st_size)}, over the {_size(cap)} limit")
        chunks: list[bytes] = []
        left = cap + 1
        while left > 0:
            chunk = os.read(fd, min(left, 1 << 20))
            if not chunk:
                break
            chunks.append(chunk)
            left -= len(chunk)
        data = b"".join(chunks)
        if len(data) > cap:  # the file grew after fstat
            raise PlanError(f"{what} is over the {_size(cap)} limit")
        return data
    except OSError as e:
        raise PlanError(f"cannot read {what}: {e.strerror or e}") from None
    finally:
        os.close(fd)


def _size(n: int) -> str:
    for unit, factor in (("GB", 1 << 30), ("MB", 1 << 20), ("KB", 1 << 10)):
        if n >= factor:
            return f"{n / factor:.1f} {unit}"
    return f"{n} bytes"


def _json_depth(text: str) -> int:
    """The deepest nesting of arrays and objects in JSON text, without recursing (strings are
    skipped, so brackets quoted inside texts do not count)."""
    brackets = _NOT_BRACKET.sub("", _JSON_STRING.sub("", text))
    if not brackets:
        return 0
    steps = map({"[": 1, "{": 1, "]": -1, "}": -1}.__getitem__, brackets)
    return max(itertools.accumulate(steps))


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in pairs:
        if key in out:
            raise PlanError(f"the key {key!r} is given twice in one object: keep one")
        out[key] = value
    return out


def _check_values(spec: Any) -> None:
    """Refuse what JSON (or a dict from a form) can carry but a request must not: NaN and Infinity,
    lone surrogates, over-long texts, non-text keys, nesting deeper than MAX_DEPTH, non-JSON values.
    Walks with an explicit stack, never recursion."""
    stack: list[tuple[Any, str, int]] = [(spec, "", 0)]
    while stack:
        value, where, depth = stack.pop()
        name = f"`{where}`" if where else "the plan"
        if depth > MAX_DEPTH:
            raise PlanError(f"{name} nests deeper than {MAX_DEPTH} levels")
        if isinstance(value, str):
            _check_text(value, name)
        elif isinstance(value, bool) or value is None or isinstance(value, int):
            continue
        elif isinstance(value, float):
            if not math.isfinite(value):
                shown = "NaN" if math.isnan(value) else ("-" if value < 0 else "") + "Infinity"
                raise PlanError(f"{name} is {shown}, not a number a request can carry: give a finite number")
        elif isinstance(value, Mapping):
            for key, item in value.items():
                if not isinstance(key, str):
                    raise PlanError(f"{name} has a key {key!r} that is not text")
                _check_text(key, f"a key of {name}")
                stack.append((item, f"{where}.{key}" if where else key, depth + 1))
        elif isinstance(value, (list, tuple)):
            for i, item in enumerate(value):
                stack.append((item, f"{where}[{i}]", depth + 1))
        else:
            raise PlanError(f"{name} is a {type(value).__name__}, not a JSON value")


def _check_text(text: str, name: str) -> None:
    if len(text) > MAX_TEXT:
        raise PlanError(f"{name} is {len(text)} characters long, over the limit of {MAX_TEXT}")
    bad = _SURROGATE.search(text)
    if bad:
        raise PlanError(f"{name} holds a lone surrogate (\\u{ord(bad.group()):04x} at character "
                        f"{bad.start()}), which is not text: fix the escape sequence")


# ---------------------------------------------------------------------------- the plan


def make_plan(spec: Mapping[str, Any], *, store: Store | None = None, storage: Any = None,
              base_dir: str | Path | None = None, upload: bool = True,
              max_reference_bytes: int = MAX_REFERENCE_BYTES) -> Plan:
    """Validate a plan spec and build every payload; with `upload`, reference files are then
    uploaded through `references.add_reference` (deduplicated) and named by id.

    `base_dir` resolves relative reference paths (the plan file's folder). `store` is needed when the
    plan names references (ids are looked up, files uploaded); `storage` when files are uploaded.
    `max_reference_bytes` bounds the read of a reference file (pass the configured upload limit).
    """
    from core.catalog import prompts
    from core.catalog import registry

    if not isinstance(spec, Mapping):
        raise PlanError("a plan must be a JSON object with keys " + ", ".join(PLAN_KEYS))
    _check_values(spec)
    unknown = [k for k in spec if k not in PLAN_KEYS]
    if unknown:
        raise PlanError(f"unknown plan field{'s' if len(unknown) > 1 else ''} "
                        f"{', '.join(map(repr, unknown))}; a plan has {', '.join(PLAN_KEYS)}")
    name = spec.get("name")
    if not isinstance(name, str) or not name.strip():
        raise PlanError("`name` must be a non-empty text naming the batch")
    models = _models(spec.get("models"), registry)
    seeds = _seeds(spec.get("seeds", None))
    params = _params(spec.get("params", {}), models)
    sweep = _sweep(spec.get("sweep"), models, params)
    option_axes = _option_axes(spec.get("options", {}), prompts)
    endpoints = {m: registry.get_endpoint(m) for m in models}
    edit_models = [m for m in models if endpoints[m].mode == "edit"]

    # bounded: the size is known from the counts, before a reference is read or a body built
    variant_count = math.prod(len(values) for _, values in option_axes)
    per_model = {m: math.prod(len(values) for _, values in sweep.get(m, ())) for m in models}
    contender_count = sum(per_model.values())
    count = variant_count * len(seeds) * contender_count
    if count > MAX_REQUESTS:
        raise PlanError(f"the plan makes {count:,} requests ({_n(variant_count, 'variant')} x "
                        f"{_n(len(seeds), 'seed')} x {_n(contender_count, 'contender')}), over the "
                        f"limit of {MAX_REQUESTS:,}: "
                        "use fewer option values, seeds, models or swept values, or split it")

    refs = _references(spec.get("references", []), store=store, base_dir=base_dir,
                       needed=bool(edit_models), max_bytes=max_reference_bytes)
    for m in edit_models:
        if not refs:
            raise PlanError(f"`references`: {m} edits reference photos; give at least one "
                            "(a file path or a reference id)")
        if len(refs) > endpoints[m].max_images:
            raise PlanError(f"`references` has {len(refs)} photos but {m} uses at most "
                            f"{endpoints[m].max_images}; fal would silently drop the rest, "
                            "so remove some or split the batch")
    sizes = [r.size or (1024, 1024) for r in refs]
    placeholders = [f"{_PENDING}{i}" for i in range(len(refs))]
    # every contender validated (each swept value first) before any reference is uploaded
    image_sizes = _image_sizes(option_axes, prompts)
    settings = _contender_settings(models, params, sweep, endpoints, placeholders, image_sizes, registry)
    contenders = tuple(c for c, _ in settings)
    if len(set(contenders)) != len(contenders):
        twins = [contenders_mod.describe(c) for c in contenders if contenders.count(c) > 1]
        raise PlanError(f"`sweep` makes the same contender twice ({twins[0]}): a swept value equals "
                        "another once defaults apply; list each setting once")

    ref_ids: list[str] = []
    payload_refs: list[str] = []
    final = True
    for i, r in enumerate(refs):
        if r.id is not None:
            ref_ids.append(r.id)
            payload_refs.append(_payload_url(r.id, store))
        elif upload:
            rid = _upload(r, store, storage)
            ref_ids.append(rid)
            payload_refs.append(_payload_url(rid, store))
        else:
            final = False
            ref_ids.append(f"pending-{i}")
            payload_refs.append(f"{_PENDING}{i}")
    # two files can be the same photo once normalised: add_reference returned one id twice
    unique = {rid: (url, size) for rid, url, size in zip(ref_ids, payload_refs, sizes)}
    ref_ids = list(unique)
    payload_refs = [u for u, _ in unique.values()]
    sizes = [z for _, z in unique.values()]
    groups, requests, total = _build(settings, seeds, option_axes, endpoints, sizes,
                                     payload_refs, registry, prompts, ref_ids=tuple(ref_ids))
    stored: dict[str, Any] = {"name": name.strip(), "references": ref_ids,
                              "options": spec.get("options", {}), "models": list(models),
                              "params": params, "seeds": list(seeds)}
    if "sweep" in spec:
        stored["sweep"] = {m: {p: list(v) for p, v in axes} for m, axes in sweep.items()}
    return Plan(name=name.strip(), models=models, seeds=seeds, reference_ids=tuple(ref_ids),
                groups=groups, requests=requests, estimated_cost=total, plan_json=stored, final=final,
                contenders=contenders)


# ---------------------------------------------------------------------------- fields


def _models(value: Any, registry: Any) -> tuple[str, ...]:
    if not isinstance(value, list) or not value:
        raise PlanError("`models` must be a non-empty list of fal endpoint ids, e.g. "
                        + json.dumps(list(registry.DEFAULT_MODELS)))
    out: list[str] = []
    for i, m in enumerate(value):
        if not isinstance(m, str):
            raise PlanError(f"`models[{i}]` must be an endpoint id (text), got {m!r}")
        try:
            registry.get_endpoint(m)
        except PayloadError as e:
            raise PlanError(f"`models[{i}]`: {'; '.join(e.messages)}") from None
        if m in out:
            raise PlanError(f"`models[{i}]`: {m} is listed twice")
        out.append(m)
    return tuple(out)


def _seeds(value: Any) -> tuple[int, ...]:
    if value is None:
        # no seeds given: one random seed, made explicit in the stored plan so a re-run matches
        return (random.randint(0, MAX_SEED),)
    if not isinstance(value, list) or not value:
        raise PlanError("`seeds` must be a non-empty list of whole numbers (one group per seed)")
    for i, s in enumerate(value):
        if not isinstance(s, int) or isinstance(s, bool) or not 0 <= s <= MAX_SEED:
            raise PlanError(f"`seeds[{i}]` must be a whole number from 0 to {MAX_SEED}, got {s!r}")
    if len(set(value)) != len(value):
        raise PlanError("`seeds` lists a seed twice: each seed makes one group, give each once")
    return tuple(value)


def _params(value: Any, models: Sequence[str]) -> dict[str, dict[str, Any]]:
    if not isinstance(value, Mapping):
        raise PlanError("`params` must be an object {endpoint id: {parameter: value}}")
    out: dict[str, dict[str, Any]] = {}
    for endpoint, p in value.items():
        if endpoint not in models:
            raise PlanError(f"`params.{endpoint}`: {endpoint} is not in `models` "
                            f"({', '.join(models)})")
        if not isinstance(p, Mapping):
            raise PlanError(f"`params.{endpoint}` must be an object {{parameter: value}}")
        for k in _GROUP_PARAMS:
            if k in p:
                raise PlanError(f"`params.{endpoint}.{k}` is set by the plan itself "
                                "(options, seeds, references), not by params")
        out[endpoint] = dict(p)
    return out


def _sweep(value: Any, models: Sequence[str],
           params: Mapping[str, Mapping[str, Any]]) -> dict[str, tuple[tuple[str, tuple[Any, ...]], ...]]:
    """{endpoint: ((parameter, values), ...)} in the order given; shapes checked here, values
    against the endpoint's schema in `_contender_settings`."""
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise PlanError('`sweep` must be an object {endpoint id: {parameter: [values]}}, e.g. '
                        '{"fal-ai/flux-2/lora/edit": {"num_inference_steps": [7, 28]}}')
    out: dict[str, tuple[tuple[str, tuple[Any, ...]], ...]] = {}
    for endpoint, axes in value.items():
        if endpoint not in models:
            raise PlanError(f"`sweep.{endpoint}`: {endpoint} is not in `models` ({', '.join(models)})")
        if not isinstance(axes, Mapping) or not axes:
            raise PlanError(f"`sweep.{endpoint}` must be a non-empty object {{parameter: [values]}}")
        parsed: list[tuple[str, tuple[Any, ...]]] = []
        for param, values in axes.items():
            where = f"`sweep.{endpoint}.{param}`"
            if param in _GROUP_PARAMS:
                raise PlanError(f"{where}: {param} is set by the plan itself (options, seeds, "
                                "references) and is the same for every contender of a group")
            if param in params.get(endpoint, {}):
                raise PlanError(f"{where}: {param} is also fixed in `params.{endpoint}`; "
                                "give it in one place")
            if not isinstance(values, list) or not values:
                raise PlanError(f"{where} must be a non-empty list of values (a value of a list "
                                "parameter such as `loras` is itself a list)")
            seen: set[str] = set()
            for i, v in enumerate(values):
                text = canonical_json(v)
                if text in seen:
                    raise PlanError(f"{where} lists {_show(v)} twice")
                seen.add(text)
            parsed.append((param, tuple(values)))
        out[endpoint] = tuple(parsed)
    return out


def _option_axes(value: Any, prompts: Any) -> list[tuple[str, list[str]]]:
    """Each option's normalised values, in OPTION_KEYS order (the variants are their product)."""
    if not isinstance(value, Mapping):
        raise PlanError("`options` must be an object {option: [values]}, e.g. "
                        '{"pose": ["Standing", "Walking"]}')
    axes: list[tuple[str, list[str]]] = []
    for key in value:
        if key not in prompts.OPTION_KEYS:
            raise PlanError(f"`options.{key}` is not a prompt option; options: "
                            f"{', '.join(prompts.OPTION_KEYS)}")
    for key in prompts.OPTION_KEYS:
        if key not in value:
            continue
        raw = value[key]
        values = [raw] if isinstance(raw, str) else raw
        if not isinstance(values, list) or not values:
            raise PlanError(f"`options.{key}` must be a non-empty list of values (or one value)")
        clean: list[str] = []
        seen: set[str] = set()
        for i, v in enumerate(values):
            if not isinstance(v, str):
                raise PlanError(f"`options.{key}[{i}]` must be text, got {_show(v)}")
            try:
                norm = prompts.PromptOptions.from_mapping({key: v}).as_dict().get(key)
            except PromptError as e:
                raise PlanError(f"`options.{key}[{i}]`: {e}") from None
            if norm is None:
                raise PlanError(f"`options.{key}[{i}]` is empty")
            if norm in seen:
                raise PlanError(f"`options.{key}` lists {norm!r} twice")
            seen.add(norm)
            clean.append(norm)
        axes.append((key, clean))
    return axes


def _variants(option_axes: Sequence[tuple[str, list[str]]]) -> Iterator[dict[str, str]]:
    """Every combination of option values, lazily; no options -> one empty variant."""
    keys = [k for k, _ in option_axes]
    for combo in itertools.product(*[v for _, v in option_axes]):
        yield dict(zip(keys, combo))


def _image_sizes(option_axes: Sequence[tuple[str, list[str]]], prompts: Any) -> list[str]:
    ratios = dict(option_axes).get("aspect_ratio", [None])
    return list(dict.fromkeys(prompts.image_size_for(r) for r in ratios))


def _references(value: Any, *, store: Any, base_dir: str | Path | None, needed: bool,
                max_bytes: int) -> list[_Ref]:
    if not isinstance(value, list):
        raise PlanError("`references` must be a list of image file paths or reference ids")
    if not value:
        return []
    if not needed:
        # text-to-image only: references would be unused; say so rather than upload for nothing
        raise PlanError("`references` are given but no model in `models` edits images; "
                        "add an edit model or remove the references")
    refs: list[_Ref] = []
    for i, item in enumerate(value):
        name = f"references[{i}]"
        if not isinstance(item, str) or not item.strip():
            raise PlanError(f"`{name}` must be a file path or a reference id, got {_show(item)}")
        path = Path(item).expanduser()
        if not path.is_absolute() and base_dir is not None:
            path = Path(base_dir) / path
        if os.path.lexists(path):
            # a path that exists is read as a file (capped, regular files only), never as an id
            data = _read_capped(path, max_bytes, f"`{name}` ({path})")
            from core.photos.images import image_info

            try:
                _, w, h = image_info(data)
            except UploadRejected as e:
                raise PlanError(f"`{name}`: {path} is not a usable image: {e}") from None
            refs.append(_Ref(name, None, data, path.name, (w, h)))
            continue
        if store is None:
            raise PlanError(f"`{name}`: no file {path} (and no store to look up a reference id)")
        ref = _get_reference(store, item.strip())
        if ref is None:
            raise PlanError(f"`{name}`: {item!r} is neither an existing file nor a reference id")
        refs.append(_Ref(name, ref.id, None, None, (ref.width, ref.height)))
    ids = [r.id for r in refs if r.id]
    if len(set(ids)) != len(ids):
        raise PlanError("`references` names the same reference twice")
    return refs


def _get_reference(store: Any, reference_id: str) -> Any:
    try:
        return store.get_reference(reference_id)
    except DashboardError:
        return None


def _upload(ref: _Ref, store: Any, storage: Any) -> str:
    from core.photos import references

    if store is None or storage is None:
        raise PlanError(f"`{ref.field_name}`: uploading {ref.filename} needs the store and storage")
    try:
        stored = references.add_reference(store, storage, ref.data, role="other", filename=ref.filename)
    except UploadRejected as e:
        raise PlanError(f"`{ref.field_name}`: {ref.filename} was refused: {e}") from None
    return stored.id


def _payload_url(reference_id: str, store: Any) -> str:
    from core.photos import references

    return references.payload_url(store.get_reference(reference_id))


def _n(count: int, noun: str) -> str:
    return f"{count:,} {noun}{'s' if count != 1 else ''}"


def _show(value: Any, limit: int = 80) -> str:
    text = json.dumps(abbreviate(value), ensure_ascii=False, default=str)
    return text if len(text) <= limit else text[: limit - 1] + "…"


# ---------------------------------------------------------------------------- contenders


def _contender_settings(models: Sequence[str], params: Mapping[str, Mapping[str, Any]],
                        sweep: Mapping[str, Sequence[tuple[str, Sequence[Any]]]],
                        endpoints: Mapping[str, Any], placeholders: Sequence[str],
                        image_sizes: Sequence[str], registry: Any,
                        ) -> list[tuple[Contender, dict[str, Any]]]:
    """(contender, the params to send) per contender, in planning order. Each is validated with a
    stand-in group (every image size of the plan, placeholder references) so a refusal comes
    before anything is uploaded: the model's params first, then each swept value on its own
    (naming endpoint, parameter and value), then each combination."""

    def check(m: str, p: Mapping[str, Any]) -> dict[str, Any]:
        body: dict[str, Any] = {}
        for size in image_sizes:
            body = registry.build_payload(
                m, prompt="plan check", image_size=size, seed=0,
                image_urls=list(placeholders) if endpoints[m].mode == "edit" else (), params=dict(p))
        return body

    out: list[tuple[Contender, dict[str, Any]]] = []
    for m in models:
        base = params.get(m, {})
        try:
            check(m, base)
        except PayloadError as e:
            where = f"params.{m}" if base else f"models ({m})"
            raise PlanError(f"`{where}`: " + "; ".join(e.messages)) from None
        axes = sweep.get(m, ())
        for param, values in axes:
            for i, v in enumerate(values):
                try:
                    check(m, {**base, param: v})
                except PayloadError as e:
                    raise PlanError(f"`sweep.{m}.{param}[{i}]` = {_show(v)} is refused for {m}: "
                                    + "; ".join(e.messages)) from None
        for combo in itertools.product(*[values for _, values in axes]):
            chosen = dict(zip([p for p, _ in axes], combo))
            sent = {**base, **chosen}
            try:
                body = check(m, sent)
            except PayloadError as e:
                raise PlanError(f"`sweep.{m}`: the combination {_show(chosen)} is refused: "
                                + "; ".join(e.messages)) from None
            out.append((contenders_mod.from_request(m, body), sent))
    return out


# ---------------------------------------------------------------------------- building


def _variant_key(options: Mapping[str, str]) -> str:
    return canonical_json(dict(options))


def _build(settings: Sequence[tuple[Contender, Mapping[str, Any]]], seeds: Sequence[int],
           option_axes: Sequence[tuple[str, list[str]]], endpoints: Mapping[str, Any],
           sizes: Sequence[tuple[int, int]], payload_refs: Sequence[str], registry: Any, prompts: Any,
           ref_ids: tuple[str, ...] = ()) -> tuple[tuple[PlannedGroup, ...], tuple[PlannedRequest, ...], float]:
    groups: list[PlannedGroup] = []
    requests: list[PlannedRequest] = []
    total = 0.0
    for options in _variants(option_axes):
        prompt = prompts.build_prompt(options)
        image_size = prompts.image_size_for(options.get("aspect_ratio"))
        vkey = _variant_key(options)
        for seed in seeds:
            gkey = f"{vkey}#{seed}"
            groups.append(PlannedGroup(key=gkey, variant_key=vkey, options=options, prompt=prompt,
                                       seed=seed, image_size=image_size, reference_ids=ref_ids))
            for contender, sent in settings:
                m = contender.endpoint
                edit = endpoints[m].mode == "edit"
                try:
                    body = registry.build_payload(
                        m, prompt=prompt, image_size=image_size,
                        image_urls=list(payload_refs) if edit else (), seed=seed, params=dict(sent))
                except PayloadError as e:
                    raise PlanError(f"`models ({m})`, group {gkey}: " + "; ".join(e.messages)) from None
                cost = registry.estimate_cost(m, body, input_sizes=list(sizes) if edit else None)
                total += cost
                requests.append(PlannedRequest(
                    group_key=gkey, endpoint=m, payload=body, payload_hash=payload_hash(body),
                    estimated_cost=cost, prompt=prompt, options=options, seed=seed,
                    image_size=image_size, reference_ids=ref_ids if edit else (), contender=contender))
    return tuple(groups), tuple(requests), round(total, 6)
