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
- The spec's fields are checked first (`core.batches.spec.plan_shape`).
- A batch is the product option values x seeds x CONTENDERS (`core.catalog.contenders`). A model
  without a `sweep` entry is one contender: its `params` on top of the team preset. A model with
  one is the product of the listed values of each swept parameter, each on top of its `params`; a
  value of a list parameter is the whole list (a LoRA sweep lists `loras` lists). A plan without
  `sweep` plans exactly what it planned before contenders existed.
- A GROUP is one (variant, seed): its requests share prompt, seed, `image_size` and references
  across contenders, so outputs compare like for like. Every planned request carries its contender.
- Text-to-image models get no references; edit models get every reference of the plan (more than
  the endpoint uses is a PlanError, never a silent drop).
- Every contender is validated (`registry.build_payload`) with placeholder references, each swept
  value on its own first so a refusal names the endpoint, the parameter and the value; every body
  is validated again as it is built. A bad plan raises PlanError naming the field, so the service
  uploads no reference and writes no row for it.
- Plan input passes the checks of `core.batches.plan_file` (one PlanError line, never a
  traceback), a spec given as a dict (the Generate page) as much as a plan file.
- Planning is pure: `make_plan` is a function of the spec and its references, already resolved
  by the batches service (`service.plan_batch`, which reads files and uploads them). Nothing here
  reads a file, writes a row or uploads a photo.
- Stored payloads name local references as `reference://<id>` (`references.payload_url`); the
  `data:` URI is built only at send time. A plan whose new reference files are not stored yet
  is a preview (`final` False) whose payloads carry `reference://pending-N`.
- `Plan.new_batch()` is what the store records (`core.store.inputs.NewBatch`).
"""
from __future__ import annotations

import functools
import itertools
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from core.batches.plan_file import PLAN_KEYS
from core.batches.spec import plan_shape, show
from core.catalog import added as added_mapping
from core.catalog import contenders as contenders_mod
from core.catalog import prompts, registry
from core.catalog.contenders import Axis, Contender
from core.catalog.payloads import canonical_json, payload_hash
from core.catalog.registry import Endpoint
from core.errors import PayloadError, PlanError
from core.store.inputs import NewBatch, NewGroup, NewRequest

_PENDING = "reference://pending-"


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
    groups: tuple[NewGroup, ...]
    requests: tuple[NewRequest, ...]
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
        """What the user should know before sending (nothing here stops the plan), per model: for
        an added one, what it lacks, photos it will not get and ratios it cannot be asked for."""
        out: list[str] = []
        ratios = list(dict.fromkeys(g.options.get("aspect_ratio") for g in self.groups))
        for m in self.models:
            endpoint = registry.get_endpoint(m)
            if endpoint.fields is not None:
                refs = len(self.reference_ids) if endpoint.image_key else 0
                out.extend(added_mapping.notes_for(endpoint.fields, ratios=ratios, references=refs))
                if endpoint.price is None:
                    out.append(f"{endpoint.label} has no known price: its requests are not in the estimate.")
                continue
            if not endpoint.takes_image_size:
                out.append(f"{m} takes no image_size: its output follows the reference photo's shape, "
                           "not the aspect ratio in the prompt, so it will not match the other "
                           "models' shape in a comparison.")
        return tuple(dict.fromkeys(out))

    def new_batch(self) -> NewBatch:
        """What the store records for this plan (`Store.create_batch`)."""
        return NewBatch(name=self.name, plan_json=self.plan_json, groups=self.groups,
                        requests=self.requests, estimated_cost=self.estimated_cost, final=self.final)

    def cost_by_model(self) -> dict[str, float]:
        out: dict[str, float] = {m: 0.0 for m in self.models}
        for r in self.requests:
            out[r.endpoint] = round(out[r.endpoint] + (r.estimated_cost or 0.0), 6)
        return out

    def contender_lines(self) -> tuple[ContenderLine, ...]:
        """Per contender, in planning order: its label, its number of requests and their cost."""
        counts: dict[str, int] = {c.id: 0 for c in self.contenders}
        costs: dict[str, float] = {c.id: 0.0 for c in self.contenders}
        for r in self.requests:
            counts[r.contender.id] = counts.get(r.contender.id, 0) + 1
            costs[r.contender.id] = round(costs.get(r.contender.id, 0.0) + (r.estimated_cost or 0.0), 6)
        return tuple(ContenderLine(c, self.labels[c.id], counts[c.id], costs[c.id]) for c in self.contenders)

    def summary(self) -> str:
        """One line: "10 requests = 2 variants x 1 seed x 5 contenders; estimated $0.123"."""
        variants = len(self.groups) // len(self.seeds) if self.seeds else 0
        return (f"{self.request_count} requests = {variants} variant{'s' * (variants != 1)} x "
                f"{len(self.seeds)} seed{'s' * (len(self.seeds) != 1)} x {len(self.contenders)} "
                f"contender{'s' * (len(self.contenders) != 1)}; estimated ${self.estimated_cost:.3f}"
                + (f" + unknown for {len(self.unpriced)} request{'s' * (len(self.unpriced) != 1)}"
                   if self.unpriced else ""))

    @property
    def unpriced(self) -> tuple[NewRequest, ...]:
        """Requests whose endpoint has no known price (not in `estimated_cost`, never $0)."""
        return tuple(r for r in self.requests if r.estimated_cost is None)


@dataclass(frozen=True)
class PlanReference:
    """One entry of a plan's `references`, resolved by the batches service before planning: a
    stored reference (`id` and the `payload_url` its payloads name), or a file read from disk and
    not stored yet (`id` None: the plan is then a preview, with `reference://pending-N`)."""

    field_name: str
    size: tuple[int, int]
    id: str | None = None
    payload_url: str | None = None
    data: bytes | None = field(default=None, repr=False)
    filename: str | None = None


# ---------------------------------------------------------------------------- the plan


def make_plan(spec: Mapping[str, Any], *, references: Sequence[PlanReference] = ()) -> Plan:
    """Validate a plan spec and build every payload: a pure function of the spec and its
    references, already resolved (`core.batches.service.plan_batch` looks ids up, reads files and
    uploads them). A reference not stored yet makes the plan a preview (`final` False).

    Raises PlanError (one line naming the field) for anything the plan cannot send."""
    if not isinstance(spec, Mapping):
        raise PlanError("a plan must be a JSON object with keys " + ", ".join(PLAN_KEYS))
    shape = plan_shape(spec)
    models, endpoints = shape.models, shape.endpoints
    if references and not shape.edit_models:
        # text-to-image only: references would be unused; say so rather than upload for nothing
        raise PlanError("`references` are given but no model in `models` edits images; "
                        "add an edit model or remove the references")
    refs = list(references)
    for m in shape.edit_models:
        if not refs:
            raise PlanError(f"`references`: {m} edits reference photos; give at least one "
                            "(a file path or a reference id)")
        if len(refs) > endpoints[m].max_images and not endpoints[m].added:
            raise PlanError(f"`references` has {len(refs)} photos but {m} uses at most "
                            f"{endpoints[m].max_images}; fal would silently drop the rest, "
                            "so remove some or split the batch")
    placeholders = [f"{_PENDING}{i}" for i in range(len(refs))]
    # every contender validated (each swept value first) before any reference is uploaded
    image_sizes = _image_sizes(shape.option_axes)
    settings = _contender_settings(models, shape.params, shape.sweep, endpoints, placeholders, image_sizes)
    contenders = tuple(c for c, _ in settings)
    if len(set(contenders)) != len(contenders):
        twins = [contenders_mod.describe(c) for c in contenders if contenders.count(c) > 1]
        raise PlanError(f"`sweep` makes the same contender twice ({twins[0]}): a swept value equals "
                        "another once defaults apply; list each setting once")

    final = all(r.id is not None for r in refs)
    # two files can be the same photo once normalised (the upload returned one id twice)
    unique: dict[str, tuple[str, tuple[int, int]]] = {}
    for i, r in enumerate(refs):
        if r.id is not None:
            unique.setdefault(r.id, (r.payload_url or f"reference://{r.id}", r.size))
        else:
            unique[f"pending-{i}"] = (f"{_PENDING}{i}", r.size)
    ref_ids = tuple(unique)
    payload_refs = [u for u, _ in unique.values()]
    sizes = [z for _, z in unique.values()]
    groups, requests, total = _build(settings, shape.seeds, shape.option_axes, endpoints, sizes,
                                     payload_refs, ref_ids=ref_ids)
    stored: dict[str, Any] = {"name": shape.name, "references": list(ref_ids),
                              "options": spec.get("options", {}), "models": list(models),
                              "params": shape.params, "seeds": list(shape.seeds)}
    if "sweep" in spec:
        stored["sweep"] = {m: {p: list(v) for p, v in axes} for m, axes in shape.sweep.items()}
    return Plan(name=shape.name, models=models, seeds=shape.seeds, reference_ids=ref_ids,
                groups=groups, requests=requests, estimated_cost=total, plan_json=stored, final=final,
                contenders=contenders)


# ---------------------------------------------------------------------------- fields


def _variants(option_axes: Sequence[tuple[str, list[str]]]) -> Iterator[dict[str, str]]:
    """Every combination of option values, lazily; no options -> one empty variant."""
    keys = [k for k, _ in option_axes]
    for combo in itertools.product(*[v for _, v in option_axes]):
        yield dict(zip(keys, combo))


def _image_sizes(option_axes: Sequence[tuple[str, list[str]]]) -> list[str]:
    ratios = dict(option_axes).get("aspect_ratio", [None])
    return list(dict.fromkeys(prompts.image_size_for(r) for r in ratios))


# ---------------------------------------------------------------------------- contenders


def _contender_settings(models: Sequence[str], params: Mapping[str, Mapping[str, Any]],
                        sweep: Mapping[str, Sequence[tuple[str, Sequence[Any]]]],
                        endpoints: Mapping[str, Endpoint], placeholders: Sequence[str],
                        image_sizes: Sequence[str]) -> list[tuple[Contender, dict[str, Any]]]:
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
                    raise PlanError(f"`sweep.{m}.{param}[{i}]` = {show(v)} is refused for {m}: "
                                    + "; ".join(e.messages)) from None
        for combo in itertools.product(*[values for _, values in axes]):
            chosen = dict(zip([p for p, _ in axes], combo))
            sent = {**base, **chosen}
            try:
                body = check(m, sent)
            except PayloadError as e:
                raise PlanError(f"`sweep.{m}`: the combination {show(chosen)} is refused: "
                                + "; ".join(e.messages)) from None
            out.append((contenders_mod.from_request(m, body), sent))
    return out


# ---------------------------------------------------------------------------- building


def _variant_key(options: Mapping[str, str]) -> str:
    return canonical_json(dict(options))


def _build(settings: Sequence[tuple[Contender, Mapping[str, Any]]], seeds: Sequence[int],
           option_axes: Sequence[tuple[str, list[str]]], endpoints: Mapping[str, Endpoint],
           sizes: Sequence[tuple[int, int]], payload_refs: Sequence[str],
           ref_ids: tuple[str, ...] = ()) -> tuple[tuple[NewGroup, ...], tuple[NewRequest, ...], float]:
    groups: list[NewGroup] = []
    requests: list[NewRequest] = []
    total = 0.0
    for options in _variants(option_axes):
        prompt = prompts.build_prompt(options)
        image_size = prompts.image_size_for(options.get("aspect_ratio"))
        vkey = _variant_key(options)
        for seed in seeds:
            gkey = f"{vkey}#{seed}"
            groups.append(NewGroup(key=gkey, variant_key=vkey, options=options, prompt=prompt,
                                       seed=seed, image_size=image_size, reference_ids=ref_ids))
            for contender, sent in settings:
                m = contender.endpoint
                edit = endpoints[m].mode == "edit"
                try:
                    body = registry.build_payload(
                        m, prompt=prompt, image_size=image_size, aspect_ratio=options.get("aspect_ratio"),
                        image_urls=list(payload_refs) if edit else (), seed=seed, params=dict(sent))
                except PayloadError as e:
                    raise PlanError(f"`models ({m})`, group {gkey}: " + "; ".join(e.messages)) from None
                cost = registry.estimate_cost(m, body, input_sizes=list(sizes) if edit else None)
                total += cost or 0.0
                requests.append(NewRequest(
                    group_key=gkey, endpoint=m, payload=body, payload_hash=payload_hash(body),
                    estimated_cost=cost, prompt=prompt, options=options, seed=seed,
                    schema_version=endpoints[m].schema_version,
                    image_size=image_size, reference_ids=ref_ids if edit else (), contender=contender))
    return tuple(groups), tuple(requests), round(total, 6)
