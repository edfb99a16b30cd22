"""Batch plans: what a batch will send, its size and cost, before anything is written or sent.

A plan file (JSON, see docs/batch.md):

    {"name": "...", "references": ["photos/face.jpg", "<reference id>"],
     "options": {"subject": ["Woman"], "pose": ["Standing", "Walking"], ...},
     "models": ["fal-ai/flux/schnell", "fal-ai/flux-2/lora/edit"],
     "params": {"fal-ai/flux-2/lora/edit": {"num_inference_steps": 28}},
     "seeds": [1, 2]}

Invariants:
- A batch is the product option values x seeds x models. A GROUP is one (variant, seed): its
  requests share prompt, seed and `image_size` across models, so outputs compare like for like.
- Text-to-image models get no references; edit models get every reference of the plan (more than
  the endpoint uses is a PlanError, never a silent drop).
- Every payload is built and validated (`registry.build_payload`) before anything is written: a
  bad plan raises PlanError naming the field, and no reference is uploaded, no row written.
- Stored payloads name local references as `reference://<id>` (`references.payload_url`); the
  `data:` URI is built only at send time.
"""
from __future__ import annotations

import itertools
import json
import random
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from core.errors import DashboardError, PayloadError, PlanError, PromptError, UploadRejected
from core.catalog.payloads import canonical_json, payload_hash

if TYPE_CHECKING:
    from core.store import Store

PLAN_KEYS = ("name", "references", "options", "models", "params", "seeds")
MAX_REQUESTS = 10_000
MAX_SEED = 2**32 - 1
_PENDING = "reference://pending-"


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


@dataclass(frozen=True)
class Plan:
    """Everything a batch will send. `plan_json` is the plan as stored with the batch (paths
    replaced by reference ids, seeds made explicit). `final` is False for a preview whose new
    reference files were not uploaded yet (payloads carry `reference://pending-N`)."""

    name: str
    models: tuple[str, ...]
    seeds: tuple[int, ...]
    reference_ids: tuple[str, ...]
    groups: tuple[PlannedGroup, ...]
    requests: tuple[PlannedRequest, ...]
    estimated_cost: float
    plan_json: Mapping[str, Any] = field(repr=False)
    final: bool = True

    @property
    def request_count(self) -> int:
        return len(self.requests)

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


@dataclass(frozen=True)
class _Ref:
    """A reference of the plan: an existing id, or a file read from disk (not uploaded yet)."""

    field_name: str
    id: str | None
    data: bytes | None
    filename: str | None
    size: tuple[int, int] | None


def load_plan_file(path: str | Path) -> dict[str, Any]:
    """The JSON object of a plan file; PlanError if it cannot be read or is not an object."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as e:
        raise PlanError(f"cannot read plan file {path}: {e.strerror or e}") from None
    try:
        spec = json.loads(text)
    except ValueError as e:
        raise PlanError(f"plan file {path} is not valid JSON: {e}") from None
    if not isinstance(spec, dict):
        raise PlanError(f"plan file {path} must hold a JSON object with keys {', '.join(PLAN_KEYS)}")
    return spec


def make_plan(spec: Mapping[str, Any], *, st: Store | None = None, storage: Any = None,
              base_dir: str | Path | None = None, upload: bool = True) -> Plan:
    """Validate a plan spec and build every payload; with `upload`, reference files are then
    uploaded through `references.add_reference` (deduplicated) and named by id.

    `base_dir` resolves relative reference paths (the plan file's folder). `st` is needed when the
    plan names references (ids are looked up, files uploaded); `storage` when files are uploaded.
    """
    from core.catalog import prompts
    from core.catalog import registry

    if not isinstance(spec, Mapping):
        raise PlanError("a plan must be a JSON object with keys " + ", ".join(PLAN_KEYS))
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
    variants = _variants(spec.get("options", {}), prompts)
    endpoints = {m: registry.get_endpoint(m) for m in models}
    edit_models = [m for m in models if endpoints[m].mode == "edit"]
    refs = _references(spec.get("references", []), st=st, base_dir=base_dir,
                       needed=bool(edit_models))
    for m in edit_models:
        if not refs:
            raise PlanError(f"`references`: {m} edits reference photos; give at least one "
                            "(a file path or a reference id)")
        if len(refs) > endpoints[m].max_images:
            raise PlanError(f"`references` has {len(refs)} photos but {m} uses at most "
                            f"{endpoints[m].max_images}; fal would silently drop the rest, "
                            "so remove some or split the batch")
    count = len(variants) * len(seeds) * len(models)
    if count > MAX_REQUESTS:
        raise PlanError(f"the plan makes {count} requests, over the limit of {MAX_REQUESTS}: "
                        "use fewer option values, seeds or models, or split it")

    sizes = [r.size or (1024, 1024) for r in refs]
    if upload and any(r.id is None for r in refs):
        # files will be uploaded: validate every payload with placeholders first, so a bad plan
        # uploads nothing
        _build(models, seeds, params, variants, endpoints, sizes,
               [f"{_PENDING}{i}" for i in range(len(refs))], registry, prompts)
    ref_ids: list[str] = []
    payload_refs: list[str] = []
    final = True
    for i, r in enumerate(refs):
        if r.id is not None:
            ref_ids.append(r.id)
            payload_refs.append(_payload_url(r.id, st, storage))
        elif upload:
            rid = _upload(r, st, storage)
            ref_ids.append(rid)
            payload_refs.append(_payload_url(rid, st, storage))
        else:
            final = False
            ref_ids.append(f"pending-{i}")
            payload_refs.append(f"{_PENDING}{i}")
    # two files can be the same photo once normalised: add_reference returned one id twice
    unique = {rid: (url, size) for rid, url, size in zip(ref_ids, payload_refs, sizes)}
    ref_ids = list(unique)
    payload_refs = [u for u, _ in unique.values()]
    sizes = [z for _, z in unique.values()]
    groups, requests, total = _build(models, seeds, params, variants, endpoints, sizes,
                                     payload_refs, registry, prompts, ref_ids=tuple(ref_ids))
    stored = {"name": name.strip(), "references": ref_ids, "options": spec.get("options", {}),
              "models": list(models), "params": params, "seeds": list(seeds)}
    return Plan(name=name.strip(), models=models, seeds=seeds, reference_ids=tuple(ref_ids),
                groups=groups, requests=requests, estimated_cost=total, plan_json=stored, final=final)


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
        for k in ("prompt", "seed", "image_size", "image_urls", "image_url"):
            if k in p:
                raise PlanError(f"`params.{endpoint}.{k}` is set by the plan itself "
                                "(options, seeds, references), not by params")
        out[endpoint] = dict(p)
    return out


def _variants(value: Any, prompts: Any) -> list[dict[str, str]]:
    """Every combination of option values, in OPTION_KEYS order; no options -> one empty variant."""
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
        for i, v in enumerate(values):
            if not isinstance(v, str):
                raise PlanError(f"`options.{key}[{i}]` must be text, got {v!r}")
            try:
                norm = prompts.PromptOptions.from_mapping({key: v}).as_dict().get(key)
            except PromptError as e:
                raise PlanError(f"`options.{key}[{i}]`: {e}") from None
            if norm is None:
                raise PlanError(f"`options.{key}[{i}]` is empty")
            if norm in clean:
                raise PlanError(f"`options.{key}` lists {norm!r} twice")
            clean.append(norm)
        axes.append((key, clean))
    return [dict(zip([k for k, _ in axes], combo)) for combo in itertools.product(*[v for _, v in axes])]


def _references(value: Any, *, st: Any, base_dir: str | Path | None, needed: bool) -> list[_Ref]:
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
            raise PlanError(f"`{name}` must be a file path or a reference id, got {item!r}")
        path = Path(item).expanduser()
        if not path.is_absolute() and base_dir is not None:
            path = Path(base_dir) / path
        if path.is_file():
            try:
                data = path.read_bytes()
            except OSError as e:
                raise PlanError(f"`{name}`: cannot read {path}: {e.strerror or e}") from None
            from core.photos.images import image_info

            try:
                _, w, h = image_info(data)
            except UploadRejected as e:
                raise PlanError(f"`{name}`: {path} is not a usable image: {e}") from None
            refs.append(_Ref(name, None, data, path.name, (w, h)))
            continue
        if st is None:
            raise PlanError(f"`{name}`: no file {path} (and no store to look up a reference id)")
        ref = _get_reference(st, item.strip())
        if ref is None:
            raise PlanError(f"`{name}`: {item!r} is neither an existing file nor a reference id")
        refs.append(_Ref(name, ref.id, None, None, (ref.width, ref.height)))
    ids = [r.id for r in refs if r.id]
    if len(set(ids)) != len(ids):
        raise PlanError("`references` names the same reference twice")
    return refs


def _get_reference(st: Any, reference_id: str) -> Any:
    from core.photos import references

    try:
        return st.get_reference(reference_id)
    except DashboardError:
        return None


def _upload(ref: _Ref, st: Any, storage: Any) -> str:
    from core.photos import references

    if st is None or storage is None:
        raise PlanError(f"`{ref.field_name}`: uploading {ref.filename} needs the store and storage")
    try:
        stored = references.add_reference(st, storage, ref.data, role="other", filename=ref.filename)
    except UploadRejected as e:
        raise PlanError(f"`{ref.field_name}`: {ref.filename} was refused: {e}") from None
    return stored.id


def _payload_url(reference_id: str, st: Any, storage: Any) -> str:
    from core.photos import references

    return references.payload_url(st.get_reference(reference_id))


# ---------------------------------------------------------------------------- building


def _variant_key(options: Mapping[str, str]) -> str:
    return canonical_json(dict(options))


def _build(models: Sequence[str], seeds: Sequence[int], params: Mapping[str, Any],
           variants: list[dict[str, str]], endpoints: Mapping[str, Any],
           sizes: Sequence[tuple[int, int]],
           payload_refs: Sequence[str], registry: Any, prompts: Any,
           ref_ids: tuple[str, ...] = ()) -> tuple[tuple[PlannedGroup, ...], tuple[PlannedRequest, ...], float]:
    groups: list[PlannedGroup] = []
    requests: list[PlannedRequest] = []
    total = 0.0
    for options in variants:
        prompt = prompts.build_prompt(options)
        image_size = prompts.image_size_for(options.get("aspect_ratio"))
        vkey = _variant_key(options)
        for seed in seeds:
            gkey = f"{vkey}#{seed}"
            groups.append(PlannedGroup(key=gkey, variant_key=vkey, options=options, prompt=prompt,
                                       seed=seed, image_size=image_size, reference_ids=ref_ids))
            for m in models:
                edit = endpoints[m].mode == "edit"
                try:
                    body = registry.build_payload(
                        m, prompt=prompt, image_size=image_size,
                        image_urls=list(payload_refs) if edit else (), seed=seed,
                        params=params.get(m))
                except PayloadError as e:
                    field_name = f"params.{m}" if params.get(m) else f"models ({m})"
                    raise PlanError(f"`{field_name}`: " + "; ".join(e.messages)) from None
                cost = registry.estimate_cost(m, body, input_sizes=list(sizes) if edit else None)
                total += cost
                requests.append(PlannedRequest(
                    group_key=gkey, endpoint=m, payload=body, payload_hash=payload_hash(body),
                    estimated_cost=cost, prompt=prompt, options=options, seed=seed,
                    image_size=image_size, reference_ids=ref_ids if edit else ()))
    return tuple(groups), tuple(requests), round(total, 6)
