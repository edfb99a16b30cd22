"""Compare page: per group (one prompt variant and seed), the reference photos and each model's
output side by side, with the prompt and each model's parameters; filtered by batch and option values.

Structure: the batch and filter pickers sit above the tabs and produce the groups on view;
each tab is one entry of `TABS` (a title and a function `(batch, groups, requests) -> None`),
so later views (blind review, metrics) are added as entries without touching the others.
"""
from __future__ import annotations

import hashlib
from collections.abc import Callable

import streamlit as st

from core.catalog import registry
from core import store
from core.store import RequestStatus
from core.errors import DashboardError
from core.catalog.prompts import OPTION_KEYS
from dashboard import _metrics_views, _shared, _widgets

GROUPS_PER_PAGE = 8
# keys the builder sets per group: shown once in the row header, not repeated per model
_GROUP_KEYS = ("prompt", "seed", "image_size", "image_urls", "image_url")

state = st.session_state
records = _shared.store()
endpoints = {e.id: e for e in registry.list_endpoints()}

st.title("Compare")

batch_id = _widgets.batch_picker(records, key="cmp_batch", icon=":material/compare:",
                                 empty="Nothing to compare yet: run a batch on the Generate page.")
batch = records.get_batch(batch_id)

groups = records.get_groups(batch_id)
values: dict[str, list[str]] = {}
for g in groups:
    for k, v in g.options.items():
        values.setdefault(k, [])
        if v not in values[k]:
            values[k].append(v)
varying = [k for k in OPTION_KEYS if len(values.get(k, ())) > 1]
chosen: dict[str, list[str]] = {}
if varying:
    cols = st.columns(len(varying))
    for col, k in zip(cols, varying):
        picked = col.multiselect(k.replace("_", " ").capitalize(), values[k], key=f"cmp_opt_{batch_id}_{k}",
                                 placeholder="all")
        if picked:
            chosen[k] = picked
shown = [g for g in groups if all(g.options.get(k) in v for k, v in chosen.items())]

pages = max(1, -(-len(shown) // GROUPS_PER_PAGE))
# one pager per batch and filter: a new filter starts on page 1
page_key = "cmp_page_" + hashlib.sha1(repr((batch_id, sorted(chosen.items()))).encode()).hexdigest()[:12]
page_no = min(state.get(page_key, 1), pages)
page_groups = shown[(page_no - 1) * GROUPS_PER_PAGE: page_no * GROUPS_PER_PAGE]
st.caption(f"{len(shown)} of {len(groups)} groups (variant x seed)"
           + (f" · page {page_no} of {pages}" if pages > 1 else ""))

requests: dict[str, list[store.RequestRecord]] = records.group_requests([g.id for g in page_groups])


# ---------------------------------------------------------------------------- tabs

def _reference_tile(reference_id: str) -> None:
    try:
        ref = records.get_reference(reference_id)
    except DashboardError:
        st.caption(f"(reference {reference_id[:8]} not found)")
        return
    thumb = _shared.thumbnail(ref.storage_backend, ref.storage_path, ref.sha256)
    if thumb:
        st.image(thumb, caption=f"{ref.role} · {ref.original_name or ref.id[:8]}", width="stretch")


def _model_cell(req: store.RequestRecord, images: list[store.ResultImage]) -> None:
    st.markdown(f"**{endpoints[req.endpoint].label if req.endpoint in endpoints else req.endpoint}** "
                f"{_widgets.status_badge(req.status)}")
    if images:
        for image in images:
            _widgets.image_tile(image)
    elif req.status == RequestStatus.DRY_RUN:
        st.caption("Dry run: nothing was sent, so there is no image.")
    elif req.error_message:
        st.error(req.error_message, icon=":material/error:")
    else:
        st.caption("No image yet.")
    params = {k: v for k, v in req.payload.items() if k not in _GROUP_KEYS}
    st.caption(" · ".join(f"{k} {_shared.cell(v)}" for k, v in sorted(params.items()))
               + (f" · {req.inference_time_s:.1f} s" if req.inference_time_s else ""))


def side_by_side(batch: store.Batch, groups: list[store.Group],
                 requests: dict[str, list[store.RequestRecord]]) -> None:
    """Reference | each model, one row per group, with the prompt and each model's parameters."""
    images = records.result_images([r.id for rs in requests.values() for r in rs])
    for g in groups:
        with st.container(border=True):
            st.markdown(f"**{g.prompt}**")
            st.caption(f"seed {g.seed} · {g.image_size}"
                       + "".join(f" · {k}: {v}" for k, v in g.options.items()))
            reqs = requests.get(g.id, [])
            refs = g.references
            cols = st.columns([1] * (1 if refs else 0) + [1] * max(1, len(reqs)))
            if refs:
                with cols[0]:
                    st.markdown("**Reference**")
                    for rid in refs:
                        _reference_tile(rid)
            for col, req in zip(cols[1 if refs else 0:], reqs):
                with col:
                    _model_cell(req, images[req.id])


TABS: dict[str, Callable[[store.Batch, list[store.Group], dict[str, list[store.RequestRecord]]], None]] = {
    "Side by side": side_by_side,
    "Fidelity": _metrics_views.metrics_tab,
}

for tab, render in zip(st.tabs(list(TABS), key="cmp_tab"), TABS.values()):
    with tab:
        render(batch, page_groups, requests)

if pages > 1:
    st.pagination(pages, key=page_key)
