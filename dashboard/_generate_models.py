"""Generate, step 3: models and parameters, and each model's sweeps and LoRAs.

This module is the seam for how a model's inputs are asked for: `models_and_parameters` is the
whole step and returns its part of the spec (`ModelsPart`); the page knows nothing else of it. The
parameter form is drawn from `forms.parameter_fields`; a later issue draws it from any fal
endpoint's schema, in this module only.

Invariants:
- A parameter form starts from the team preset (or the endpoint default when the preset does not
  set the field) and returns only the fields the user CHANGED: the payload then carries the preset
  exactly as `registry.build_payload` makes it, plus the user's edits.
- Free JSON fields (arrays, and the "other parameters" box) that do not parse are reported as
  problems, never sent; every problem keeps the run button away.
- A swept parameter is set by its sweep, not by the form.
- Every widget key is `_draft`'s, so each value is kept in the draft.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

import pandas as pd
import streamlit as st

from core.batches import sweeps
from core.catalog import forms
from core.catalog import registry
from core.errors import PayloadError, PlanError
from dashboard import _draft, _format


@dataclass(frozen=True)
class ModelsPart:
    """Step 3's part of the spec, and what keeps it from running."""
    models: list[str]
    params: dict[str, dict[str, Any]] = field(default_factory=dict)
    sweep: dict[str, dict[str, list]] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)  # "<model label>: <problem>"


@dataclass(frozen=True)
class SweepPart:
    """One model's sweeps and LoRAs: the parameters given several values, a LoRA set used as a
    fixed parameter (or None), and what was typed wrong."""
    swept: dict[str, list]
    fixed_loras: list | None
    problems: list[str]


def models_and_parameters() -> ModelsPart:
    """The models to run and, per model, its parameters, sweeps and LoRAs."""
    state = st.session_state
    endpoints = {e.id: e for e in registry.list_endpoints()}
    _draft.restore(_draft.MODELS, lambda v: isinstance(v, list), default=list(registry.DEFAULT_MODELS))
    state[_draft.MODELS] = [m for m in state[_draft.MODELS] if m in endpoints]
    models = st.multiselect("Models", list(endpoints), key=_draft.MODELS,
                            format_func=lambda m: f"{endpoints[m].label} ({m})")
    _draft.restore_per_model()
    part = ModelsPart(models=list(models))
    for m in models:
        endpoint = endpoints[m]
        with st.expander(f"{_format.plain(endpoint.label)} — {_format.plain(m)} · {endpoint.mode}", icon=":material/tune:"):
            for note in endpoint.notes:
                st.caption(note)
            fields = forms.parameter_fields(m)
            changed, problems = parameter_form(m, [f for f in fields if f["name"] != "loras"])
            more = sweeps_and_loras(m, fields, sweeps.max_loras(endpoint.schema))
            problems += more.problems
            if more.fixed_loras is not None:
                changed["loras"] = more.fixed_loras
            for name in more.swept:
                changed.pop(name, None)
            if more.swept:
                part.sweep[m] = more.swept
            try:
                # the would-be body, checked as it will be before sending
                registry.build_payload(
                    m, prompt="preview", image_urls=["reference://preview"] if endpoint.mode == "edit" else (),
                    params=changed)
            except PayloadError as e:
                problems += e.messages
            for p in problems:
                st.error(_format.plain(p), icon=":material/error:")
            part.problems.extend(f"{endpoint.label}: {p}" for p in problems)
        if changed:
            part.params[m] = changed
    return part


# ------------------------------------------------------------------------------ parameters

def _initial(f: dict[str, Any]) -> Any:
    return f["preset"] if f["preset"] is not None else f["default"]


def _widget_value(f: dict[str, Any], value: Any) -> Any:
    """`value` (restored from a draft, or the initial value) as the field's widget holds it, or the
    initial value's when it does not fit (an option that no longer exists, a text in a number)."""
    kind, initial = f["type"], _initial(f)
    if f["enum"]:
        return value if value in f["enum"] else (initial if initial in f["enum"] else f["enum"][0])
    if kind == "boolean":
        return bool(value)
    if kind in ("integer", "number"):
        if value is None or isinstance(value, bool) or not isinstance(value, (int, float)):
            value = initial if isinstance(initial, (int, float)) and not isinstance(initial, bool) else None
        if value is None:
            return None
        return int(value) if kind == "integer" else float(value)
    if kind == "string":
        return value if isinstance(value, str) else (initial or "")
    return value if isinstance(value, str) else json.dumps(initial)  # JSON text


def parameter_form(endpoint_id: str, fields: list[dict[str, Any]]) -> tuple[dict[str, Any], list[str]]:
    """Widgets for each field; returns (changed params, problems with what was typed).

    Each widget's value lives in session state under `_draft.param_key` (set here from the initial
    value when absent, so the draft may be restored into it first). Number boxes have no min/max:
    an out-of-range value stays visible and the registry's check names the limit, where a bounded
    box would silently keep the old value."""
    params: dict[str, Any] = {}
    problems: list[str] = []
    cols = st.columns(3)
    for i, f in enumerate(fields):
        name, kind, initial = f["name"], f["type"], _initial(f)
        key = _draft.param_key(endpoint_id, name)
        st.session_state[key] = _widget_value(f, st.session_state.get(key, initial))
        label = f["title"] + (" (team preset)" if f["preset"] is not None else "")
        limits = [f"min {f['min']}" if f["min"] is not None else "",
                  f"max {f['max']}" if f["max"] is not None else ""]
        help_ = " ".join(filter(None, [f["description"] or "",
                                       f"({', '.join(x for x in limits if x)})" if any(limits) else ""])) or None
        with cols[i % 3]:
            if f["enum"]:
                value = st.selectbox(label, list(f["enum"]), key=key, help=help_)
            elif kind == "boolean":
                value = st.checkbox(label, key=key, help=help_)
            elif kind == "integer":
                value = st.number_input(label, step=1, key=key, help=help_)
            elif kind == "number":
                value = st.number_input(label, step=0.1, format="%.2f", key=key, help=help_)
            elif kind == "string":
                value = st.text_input(label, key=key, help=help_) or None
            else:  # arrays and objects: JSON text
                text = st.text_area(label, key=key, help=help_, height=68)
                try:
                    value = json.loads(text) if text.strip() else None
                except ValueError as e:
                    problems.append(f"`{name}` is not valid JSON ({e.msg} at column {e.colno})")
                    continue
        if value != initial:
            params[name] = value
    extra = st.text_area(
        "Other parameters (JSON object)", key=_draft.param_key(endpoint_id, "__extra__"), height=68,
        placeholder='{"some_field": 1}',
        help="Any other body field, checked against the endpoint's schema like the rest.")
    if extra.strip():
        try:
            more = json.loads(extra)
        except ValueError as e:
            problems.append(f"other parameters are not valid JSON ({e.msg} at column {e.colno})")
        else:
            if isinstance(more, dict):
                params.update(more)
            else:
                problems.append("other parameters must be a JSON object, e.g. {\"field\": 1}")
    return params, problems


# ------------------------------------------------------------------------------ sweeps and LoRAs

def sweeps_and_loras(m: str, fields: list[dict], max_items: int | None) -> SweepPart:
    """A model's sweeps (several values of a parameter, one contender per combination) and, when
    the model takes LoRAs, its LoRA table (one set, or swept)."""
    swept, problems = _sweep_inputs(m, fields)
    fixed = None
    if any(f["name"] == "loras" for f in fields):
        lora_plan, lora_problems = _lora_inputs(m, max_items)
        problems += lora_problems
        if lora_plan is not None and lora_plan.fixed is not None:
            fixed = lora_plan.fixed
        if lora_plan is not None and lora_plan.sweep is not None:
            swept["loras"] = lora_plan.sweep
    return SweepPart(swept, fixed, problems)


def _sweep_inputs(m: str, fields: list[dict]) -> tuple[dict[str, list], list[str]]:
    """Parameters given several values (one contender per combination), and problems typed."""
    candidates = {f["name"]: f for f in fields if sweeps.sweepable(f)}
    key = _draft.sweep_key(m)
    if isinstance(st.session_state.get(key), list):
        st.session_state[key] = [n for n in st.session_state[key] if n in candidates]
    names = st.multiselect(
        "Try several values of", list(candidates), key=key,
        format_func=lambda n: candidates[n]["title"], placeholder="no sweep: one parameter set",
        help="Each value (and each combination of values) is its own contender, e.g. 7 and 28 steps.")
    swept: dict[str, list] = {}
    problems: list[str] = []
    for name in names:
        f = candidates[name]
        hint = ", ".join(map(str, f["enum"])) if f["enum"] else "e.g. 7, 28"
        text = st.text_input(f"{f['title']}: values, separated by commas", key=_draft.sweep_values_key(m, name),
                             placeholder=hint)
        try:
            swept[name] = sweeps.parse_values(f, text)
        except PlanError as e:
            problems.append(str(e))
    return swept, problems


_LORA_MODES = {"fixed": "Use these LoRAs", "scales": "Sweep their scale", "sets": "Sweep over the sets"}


def _lora_inputs(m: str, max_items: int | None) -> tuple[sweeps.LoraPlan | None, list[str]]:
    """The LoRA editor: rows of path or URL, scale and set; used as one set or swept."""
    st.markdown("**LoRAs**" + (f" (up to {max_items} per set)" if max_items else ""))
    base = _draft.lora_table(m)
    frame = pd.DataFrame({"path": pd.Series([r[0] for r in base], dtype="str"),
                          "scale": pd.Series([r[1] for r in base], dtype="float"),
                          "set": pd.Series([r[2] for r in base], dtype="int")})
    table = st.data_editor(frame, num_rows="dynamic", key=_draft.lora_editor_key(m), width="stretch", column_config={
        "path": st.column_config.TextColumn("Path or URL", help="a .safetensors URL, a HuggingFace repo id "
                                            "or a path fal can read", required=True),
        "scale": st.column_config.NumberColumn("Scale", min_value=0.0, max_value=4.0, step=0.1, default=1.0),
        "set": st.column_config.NumberColumn("Set", min_value=1, step=1, default=1,
                                             help="rows with the same number form one LoRA set")})
    rows = [sweeps.LoraRow(str(r["path"]), 1.0 if pd.isna(r["scale"]) else float(r["scale"]),
                           1 if pd.isna(r["set"]) else int(r["set"]))
            for _, r in table.iterrows() if isinstance(r["path"], str) and r["path"].strip()]
    st.session_state[_draft.lora_rows_key(m)] = [[r.path, r.scale, r.set] for r in rows]
    if not rows:
        return None, []
    mode_key = _draft.lora_mode_key(m)
    if st.session_state.get(mode_key, "fixed") not in _LORA_MODES:
        del st.session_state[mode_key]
    mode = st.radio("LoRA sweep", list(_LORA_MODES), format_func=_LORA_MODES.get, horizontal=True, key=mode_key,
                    label_visibility="collapsed")
    scales = ""
    if mode == "scales":
        scales = st.text_input("Scales to try, separated by commas", key=_draft.lora_scales_key(m),
                               placeholder="e.g. 0.4, 0.8, 1.2")
    include_none = mode != "fixed" and st.checkbox("Also without any LoRA", key=_draft.lora_none_key(m))
    try:
        return sweeps.lora_plan(rows, mode=mode, scales=scales, include_none=include_none,
                                max_items=max_items), []
    except PlanError as e:
        return None, [str(e)]
