"""What the Generate page's sweep inputs mean, as a plan's `params` and `sweep` (core/batches/plans.py).

Invariants:
- `parse_values` reads "7, 28" as the values of one parameter, typed by the endpoint's field
  (whole numbers for an integer field, numbers for a number field, one of the listed values for
  an enum); anything else is a PlanError naming the parameter and the value. Ranges are the
  schema's, checked by the plan (`plans.make_plan`) like every other value.
- `lora_plan` turns editor rows (path or URL, scale, set number) into either one fixed `loras`
  list (no sweep) or a sweep over whole `loras` lists: one per scale ("sweep scales": every row at
  that scale) or one per set number ("sweep sets"), optionally with "no LoRA" (`[]`) first. Rows
  without a path are ignored; a set holding more LoRAs than the endpoint takes is refused.
- Nothing here reads the store or Streamlit.
"""
from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from core.errors import PlanError

LORA_MODES = ("fixed", "scales", "sets")


def sweepable(field: Mapping[str, Any]) -> bool:
    """Whether a parameter field (`forms.parameter_fields`) takes several values: numbers,
    whole numbers and enums."""
    return bool(field.get("enum")) or field.get("type") in ("integer", "number")


def parse_values(field: Mapping[str, Any], text: str) -> list[Any]:
    """The values typed for one parameter ("7, 28"), typed by its field; PlanError otherwise."""
    name = field["name"]
    parts = [p.strip() for p in text.replace(";", ",").split(",")]
    parts = [p for p in parts if p]
    if not parts:
        raise PlanError(f"`{name}`: give one or more values separated by commas, e.g. 7, 28")
    out: list[Any] = []
    for part in parts:
        value = _typed(field, part)
        if value in out:
            raise PlanError(f"`{name}` lists {part} twice")
        out.append(value)
    return out


def _typed(field: Mapping[str, Any], part: str) -> Any:
    name = field["name"]
    if field.get("enum"):
        options = [str(o) for o in field["enum"]]
        if part not in options:
            raise PlanError(f"`{name}`: {part!r} is not one of {', '.join(options)}")
        return field["enum"][options.index(part)]
    if field.get("type") == "integer":
        try:
            return int(part)
        except ValueError:
            raise PlanError(f"`{name}` takes whole numbers: {part!r} is not one") from None
    if field.get("type") == "number":
        try:
            value = float(part)
        except ValueError:
            raise PlanError(f"`{name}` takes numbers: {part!r} is not one") from None
        if not math.isfinite(value):
            raise PlanError(f"`{name}`: {part!r} is not a finite number")
        return int(value) if value.is_integer() and "." not in part else value
    raise PlanError(f"`{name}` cannot be swept here (only numbers and lists of choices)")


@dataclass(frozen=True)
class LoraRow:
    """One row of the LoRA editor."""
    path: str
    scale: float = 1.0
    set: int = 1


@dataclass(frozen=True)
class LoraPlan:
    """`fixed` is the `loras` value to send to every contender (None: leave it out); `sweep` the
    `loras` lists to sweep over (None: no sweep)."""
    fixed: list[dict[str, Any]] | None
    sweep: list[list[dict[str, Any]]] | None


def lora_plan(rows: Iterable[LoraRow], *, mode: str = "fixed", scales: str = "",
              include_none: bool = False, max_items: int | None = None) -> LoraPlan:
    """The plan fields for the LoRA editor's rows (see the module invariants)."""
    if mode not in LORA_MODES:
        raise PlanError(f"LoRA mode must be one of {', '.join(LORA_MODES)}, got {mode!r}")
    kept = [r for r in rows if r.path and r.path.strip()]
    if mode == "fixed":
        chosen = [_lora(r.path, r.scale) for r in kept]
        _check_size(chosen, max_items, "the LoRA set")
        return LoraPlan(chosen or None, None)
    if not kept:
        raise PlanError("a LoRA sweep needs at least one LoRA row with a path or URL")
    if mode == "scales":
        values = parse_values({"name": "LoRA scales", "type": "number"}, scales)
        sets = [[_lora(r.path, s) for r in kept] for s in values]
    else:
        numbers = sorted({r.set for r in kept})
        sets = [[_lora(r.path, r.scale) for r in kept if r.set == n] for n in numbers]
        if len(sets) + include_none < 2:
            raise PlanError("a sweep over LoRA sets needs two sets (number the rows 1, 2, ...) "
                            "or one set and \"no LoRA\"")
    for n, chosen in enumerate(sets, 1):
        _check_size(chosen, max_items, f"LoRA set {n}")
    return LoraPlan(None, ([[]] if include_none else []) + sets)


def _lora(path: str, scale: Any) -> dict[str, Any]:
    try:
        value = float(scale)
    except (TypeError, ValueError):
        raise PlanError(f"the scale of LoRA {path.strip()!r} must be a number, got {scale!r}") from None
    if not math.isfinite(value):
        raise PlanError(f"the scale of LoRA {path.strip()!r} must be a finite number")
    return {"path": path.strip(), "scale": int(value) if value.is_integer() else value}


def _check_size(chosen: Sequence[Any], max_items: int | None, what: str) -> None:
    if max_items is not None and len(chosen) > max_items:
        raise PlanError(f"{what} has {len(chosen)} LoRAs; this model takes at most {max_items}")


def max_loras(schema: Mapping[str, Any]) -> int | None:
    """The endpoint's `loras.maxItems` (None when it has no `loras` or no limit)."""
    prop = schema.get("properties", {}).get("loras")
    return prop.get("maxItems") if isinstance(prop, Mapping) else None


__all__ = ("LORA_MODES", "LoraPlan", "LoraRow", "lora_plan", "max_loras", "parse_values", "sweepable")
