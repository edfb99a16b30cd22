"""Reusable widgets: a model's parameter form (from `registry.parameter_fields`) and image tiles.

Invariants:
- A parameter form starts from the team preset (or the endpoint default when the preset does not
  set the field) and returns only the fields the user CHANGED: the payload then carries the preset
  exactly as `registry.build_payload` makes it, plus the user's edits.
- Free JSON fields (arrays such as `loras`, and the "other parameters" box) that do not parse are
  reported as messages, never sent.
"""
from __future__ import annotations

import json
from typing import Any

import streamlit as st

from dashboard import _shared


def _initial(field: dict[str, Any]) -> Any:
    return field["preset"] if field["preset"] is not None else field["default"]


def _widget_value(field: dict[str, Any], value: Any) -> Any:
    """`value` (restored from a draft, or the initial value) as the field's widget holds it, or the
    initial value's when it does not fit (an option that no longer exists, a text in a number)."""
    kind, initial = field["type"], _initial(field)
    if field["enum"]:
        return value if value in field["enum"] else (initial if initial in field["enum"] else field["enum"][0])
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

    Each widget's value lives in session state under `param::<endpoint>::<field>` (set here from
    the initial value when absent, so a page may restore a draft into it first). Number boxes
    have no min/max: an out-of-range value stays visible and the registry's check names the limit,
    where a bounded box would silently keep the old value."""
    params: dict[str, Any] = {}
    problems: list[str] = []
    cols = st.columns(3)
    for i, field in enumerate(fields):
        name, kind, initial = field["name"], field["type"], _initial(field)
        key = f"param::{endpoint_id}::{name}"
        st.session_state[key] = _widget_value(field, st.session_state.get(key, initial))
        label = field["title"] + (" (team preset)" if field["preset"] is not None else "")
        limits = [f"min {field['min']}" if field["min"] is not None else "",
                  f"max {field['max']}" if field["max"] is not None else ""]
        help_ = " ".join(filter(None, [field["description"] or "",
                                       f"({', '.join(x for x in limits if x)})" if any(limits) else ""])) or None
        with cols[i % 3]:
            if field["enum"]:
                value = st.selectbox(label, list(field["enum"]), key=key, help=help_)
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
        "Other parameters (JSON object)", key=f"param::{endpoint_id}::__extra__", height=68,
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


def image_tile(image, *, caption: str | None = None, size: int = _shared.THUMB_PX) -> None:
    """One result image (ResultImage): a small stored thumbnail, else fal's URL, else a note."""
    thumb = _shared.thumbnail(image.storage_backend, image.storage_path, image.sha256 or image.id, size=size)
    if thumb:
        st.image(thumb, caption=caption, width="stretch")
    elif image.fal_url and image.fal_url.startswith("http"):
        st.image(image.fal_url, caption=caption, width="stretch")
    else:
        st.caption(f"(image not available){' — ' + caption if caption else ''}")


def status_badge(status: str, dry_run: bool = False) -> str:
    """Markdown badge for a request status (display only)."""
    from core.values import RequestStatus as S

    colour = {S.COMPLETED: "green", S.FAILED: "red", S.CANCELLED: "gray", S.DRY_RUN: "violet",
              S.PLANNED: "blue", S.SUBMITTED: "orange", S.QUEUED: "orange", S.RUNNING: "orange"}
    label = "dry run — not sent" if status == S.DRY_RUN else status
    return f":{colour.get(status, 'gray')}-badge[{label}]"


def batch_picker(records: Any, *, key: str, empty: str, icon: str, container: Any = st,
                 with_count: bool = True) -> str:
    """The batch selectbox of Compare and Review (newest first, the newest preselected); stops
    the page with `empty` when there is no batch yet."""

    batches = records.list_batches(limit=200)
    if not batches:
        st.info(empty, icon=icon)
        st.stop()
    by_id = {b.id: b for b in batches}
    if st.session_state.get(key) not in by_id:
        st.session_state[key] = batches[0].id

    def label(batch_id: str) -> str:
        b = by_id[batch_id]
        return (f"{b.name} · {_shared.short_time(b.created_at)}"
                + (f" · {b.request_count} requests" if with_count else "")
                + (" · dry run" if b.dry_run else ""))

    return container.selectbox("Batch", list(by_id), key=key, format_func=label)
