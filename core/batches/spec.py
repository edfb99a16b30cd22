"""The fields of a plan spec, each checked, before any reference is read or any body built.

A spec is a plan file's JSON object or the Generate form's dict (the README's "Batch plans"
section describes it for users). `plan_shape(spec)` reads every field into a `PlanShape`.

Invariants:
- The first problem is one PlanError naming the field (`models[1]`, `sweep.<endpoint>.<param>`),
  with what to do; nothing is read from disk and nothing is written.
- The request count (variants x seeds x contenders) is computed from the counts alone and
  checked against `MAX_REQUESTS` before any combination is built, so an oversized plan is
  refused at once in bounded memory.
- `params` and `sweep` never set what the plan itself sets for a whole group (prompt, seed,
  image size, references), and a swept parameter is not also fixed in `params`.
- Without `seeds`, one random seed is drawn and made explicit, so a re-run matches.
"""
from __future__ import annotations

import json
import math
import random
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from core.batches.plan_file import PLAN_KEYS, check_values
from core.catalog import contenders as contenders_mod
from core.catalog import prompts, registry
from core.catalog.payloads import canonical_json
from core.catalog.registry import Endpoint
from core.errors import PayloadError, PlanError, PromptError
from core.redact import abbreviate

MAX_REQUESTS = 10_000
MAX_SEED = 2**32 - 1


@dataclass(frozen=True)
class PlanShape:
    """A spec's fields, each checked, before any reference is read or any body built."""

    name: str
    models: tuple[str, ...]
    endpoints: Mapping[str, Endpoint]
    edit_models: tuple[str, ...]
    seeds: tuple[int, ...]
    params: dict[str, dict[str, Any]]
    sweep: dict[str, tuple[tuple[str, tuple[Any, ...]], ...]]
    option_axes: list[tuple[str, list[str]]]


def plan_shape(spec: Mapping[str, Any]) -> PlanShape:
    """Every field of `spec` checked, and the request count against `MAX_REQUESTS` from the
    counts alone (bounded memory): PlanError for the first problem, before references are read."""
    if not isinstance(spec, Mapping):
        raise PlanError("a plan must be a JSON object with keys " + ", ".join(PLAN_KEYS))
    check_values(spec)
    unknown = [k for k in spec if k not in PLAN_KEYS]
    if unknown:
        raise PlanError(f"unknown plan field{'s' if len(unknown) > 1 else ''} "
                        f"{', '.join(map(repr, unknown))}; a plan has {', '.join(PLAN_KEYS)}")
    name = spec.get("name")
    if not isinstance(name, str) or not name.strip():
        raise PlanError("`name` must be a non-empty text naming the batch")
    models = _models(spec.get("models"))
    seeds = _seeds(spec.get("seeds", None))
    params = _params(spec.get("params", {}), models)
    sweep = _sweep(spec.get("sweep"), models, params)
    option_axes = _option_axes(spec.get("options", {}))
    endpoints = {m: registry.get_endpoint(m) for m in models}
    edit_models = tuple(m for m in models if endpoints[m].mode == "edit")

    variant_count = math.prod(len(values) for _, values in option_axes)
    per_model = {m: math.prod(len(values) for _, values in sweep.get(m, ())) for m in models}
    contender_count = sum(per_model.values())
    count = variant_count * len(seeds) * contender_count
    if count > MAX_REQUESTS:
        raise PlanError(f"the plan makes {count:,} requests ({_n(variant_count, 'variant')} x "
                        f"{_n(len(seeds), 'seed')} x {_n(contender_count, 'contender')}), over the "
                        f"limit of {MAX_REQUESTS:,}: "
                        "use fewer option values, seeds, models or swept values, or split it")
    return PlanShape(name.strip(), models, endpoints, edit_models, seeds, params, sweep, option_axes)


def _models(value: Any) -> tuple[str, ...]:
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
        for k in contenders_mod.group_fields(endpoint):
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
            if param in contenders_mod.group_fields(endpoint):
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
                    raise PlanError(f"{where} lists {show(v)} twice")
                seen.add(text)
            parsed.append((param, tuple(values)))
        out[endpoint] = tuple(parsed)
    return out


def _option_axes(value: Any) -> list[tuple[str, list[str]]]:
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
                raise PlanError(f"`options.{key}[{i}]` must be text, got {show(v)}")
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


def _n(count: int, noun: str) -> str:
    return f"{count:,} {noun}{'s' if count != 1 else ''}"


def show(value: Any, limit: int = 80) -> str:
    """A value as short JSON for a message (`data:` URIs abbreviated)."""
    text = json.dumps(abbreviate(value), ensure_ascii=False, default=str)
    return text if len(text) <= limit else text[: limit - 1] + "…"
