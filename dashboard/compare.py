"""Compare page: per group (one prompt variant and seed), the reference photos and each contender's
output side by side, with the prompt and each one's parameters; filtered by batch and option values.
A contender's output is the one rule of Review and the comparison CSV (`core.store.pick_output`):
its newest completed request with a stored image, else its newest request, so a failure shows.
The Grid tab lays a batch's outputs out on two things that vary in it (core/evaluation/grid.py).

Structure: the batch and filter pickers sit above the tabs and produce the groups on view;
each tab is one entry of `TABS` (a title and a function `(batch, groups, requests) -> None`),
so later views (blind review, metrics) are added as entries without touching the others.
"""
from __future__ import annotations

import hashlib
from collections.abc import Callable

import streamlit as st

from core.catalog import contenders, registry
from core.evaluation import grid
from core.values import Batch, Group, RequestRecord, ResultImage
from core.values import RequestStatus
from core.errors import DashboardError
from core.catalog.prompts import OPTION_KEYS
from dashboard import _format, _metrics_views, _onboarding, _resources, _widgets

GROUPS_PER_PAGE = 8
# keys the builder sets per group: shown once in the row header, not repeated per model
_GROUP_KEYS = ("prompt", "seed", "image_size", "image_urls", "image_url")

state = st.session_state
store = _resources.store()

st.title("Compare")

batch_id = _widgets.batch_picker(store, key="cmp_batch", icon=":material/compare:",
                                 empty="Nothing to compare yet: run a batch on the Generate page.")
batch = store.get_batch(batch_id)
labels = contenders.labels(store.contenders_in(batch_id=batch_id))

groups = store.get_groups(batch_id)
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

# each contender's output in a group: the rule Review and the comparison CSV use (a failure
# shows), read for this page's groups only
outputs = store.group_outputs(batch_id, or_newest=True, by_contender=True,
                                group_ids=[g.id for g in page_groups])
requests: dict[str, list[RequestRecord]] = {
    g.id: [o.request for o in outputs.get(g.id, {}).values()] for g in page_groups}


# ---------------------------------------------------------------------------- tabs

def _reference_tile(reference_id: str) -> None:
    try:
        ref = store.get_reference(reference_id)
    except DashboardError:
        st.caption(f"(reference {reference_id[:8]} not found)")
        return
    thumb = _resources.thumbnail(ref.storage_backend, ref.storage_path, ref.sha256)
    if thumb:
        st.image(thumb, caption=f"{ref.role} · {ref.original_name or ref.id[:8]}", width="stretch")


def _model_cell(req: RequestRecord, images: list[ResultImage]) -> None:
    name = registry.endpoint_label(req.endpoint)
    st.markdown(f"**{_format.plain(labels.get(req.contender_id or '', name))}** {_widgets.status_badge(req.status)}"
                + (f" :gray-badge[re-run of {req.rerun_of[:8]}]" if req.rerun_of else ""))
    if images:
        for image in images:
            _widgets.image_tile(image)
    elif req.status == RequestStatus.DRY_RUN:
        st.caption("Dry run: nothing was sent, so there is no image.")
    elif req.status == RequestStatus.CANCELLED:
        st.caption("Cancelled before fal answered: there is no image.")
    elif req.error_message:
        st.error(_format.plain(req.error_message), icon=":material/error:")
    else:
        st.caption("No image yet.")
    params = {k: v for k, v in req.payload.items() if k not in _GROUP_KEYS}
    # a number is never markup; text (a LoRA path, a typed option) is shown as typed
    st.caption(" · ".join(f"{k} {_format.cell(v) if isinstance(v, (int, float)) else _format.plain(_format.cell(v))}"
                          for k, v in sorted(params.items()))
               + (f" · {req.inference_time_s:.1f} s" if req.inference_time_s else ""))


def side_by_side(batch: Batch, groups: list[Group],
                 requests: dict[str, list[RequestRecord]]) -> None:
    """Reference | each model, one row per group, with the prompt and each model's parameters."""
    images = store.result_images([r.id for rs in requests.values() for r in rs])
    for g in groups:
        with st.container(border=True):
            st.markdown(f"**{_format.plain(g.prompt)}**")
            st.caption(f"seed {g.seed} · {g.image_size}"
                       + "".join(f" · {k}: {_format.plain(v)}" for k, v in g.options.items()))
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


def _grid_png(batch_id: str, x: str, y: str | None, fixed: dict[str, str]) -> bytes:
    """The grid as one PNG with its legend (runs on click, outside the script thread)."""
    from core.store import open_store

    store = open_store(_resources.settings())
    try:
        shown = grid.build(grid.batch_outputs(store, batch_id), x, y, fixed)
        blobs = _resources.storage()

        def load(output: grid.GridOutput) -> bytes | None:
            image = output.image
            if image is None or not image.storage_path or image.storage_backend != blobs.backend:
                return None
            return blobs.get(image.storage_path)

        reference = None
        if shown.reference_ids:
            ref = store.get_reference(shown.reference_ids[0])
            if ref.storage_backend == blobs.backend:
                reference = blobs.get(ref.storage_path)
        return grid.render_png(shown, load, reference=reference)
    finally:
        store.close()


def xy_grid(batch: Batch, groups: list[Group],  # noqa: ARG001 - the tab signature
            requests: dict[str, list[RequestRecord]]) -> None:
    """Outputs on an X/Y grid: two things that vary in the batch on the axes, the rest held at one
    value each; the reference photo beside it; a PNG of the grid with its legend."""
    outputs = grid.batch_outputs(store, batch.id)
    dims = {d.key: d for d in grid.dimensions(outputs)}
    if not dims:
        st.info("Nothing varies between the outputs of this batch yet: a grid needs at least two "
                "contenders, prompt variants or seeds with results.", icon=":material/grid_on:")
        return
    keys = list(dims)
    # default: the first two swept parameters, else the first two dimensions
    params = [k for k in keys if k.startswith("param:")]
    default_x = (params or keys)[0]
    # Y: another swept parameter, else the model, a prompt option, the seed, the contender
    rest = [k for k in [*params[1:], "model", *(k for k in keys if k.startswith("option:")), "seed", "contender"]
            if k in dims and k != default_x]
    ax, ay = st.columns(2)
    x = ax.selectbox("X axis", keys, index=keys.index(default_x), format_func=lambda k: dims[k].title,
                     key=f"cmp_grid_x_{batch.id}")
    y_choices = ["", *(k for k in keys if k != x)]
    y_default = rest[0] if rest and rest[0] != x else ""
    y = ay.selectbox("Y axis", y_choices, index=y_choices.index(y_default) if y_default in y_choices else 0,
                     format_func=lambda k: dims[k].title if k else "(none)", key=f"cmp_grid_y_{batch.id}") or None
    holding = grid.held(x, y, list(dims.values()))
    fixed: dict[str, str] = {}
    if holding:
        proposal = grid.build(outputs, x, y).fixed
        cols = st.columns(min(4, len(holding)))
        for n, d in enumerate(holding):
            fixed[d.key] = cols[n % len(cols)].selectbox(
                d.title.capitalize(), list(d.values), index=list(d.values).index(proposal[d.key]),
                key=f"cmp_grid_fix_{batch.id}_{d.key}")
    shown = grid.build(outputs, x, y, fixed)
    refs = shown.reference_ids
    widths = ([1] if refs else []) + ([1] if shown.y else []) + [2] * len(shown.x.values)
    head = st.columns(widths)
    offset = (1 if refs else 0) + (1 if shown.y else 0)
    if refs:
        head[0].markdown("**Reference**")
    for col, value in zip(head[offset:], shown.x.values):
        col.markdown(f"**{_format.plain(value)}**")
    for r, row in enumerate(shown.rows):
        cols = st.columns(widths, vertical_alignment="center")
        if refs and r == 0:
            with cols[0]:
                _reference_tile(refs[0])
        if shown.y:
            cols[offset - 1].markdown(f"**{_format.plain(shown.y_values[r])}**")
        for col, c in zip(cols[offset:], row):
            with col:
                if c.output is None:
                    st.caption("no output")
                elif c.output.image is not None:
                    _widgets.image_tile(c.output.image, caption=c.output.label
                                        + (f" (+{c.more} more)" if c.more else ""))
                else:
                    st.caption(f"{_format.plain(c.output.label)}: {str(c.output.request.status).replace('_', ' ')}, no image")
    st.caption(f"X: {_format.plain(shown.x.title)}" + (f" · Y: {_format.plain(shown.y.title)}" if shown.y else "")
               + (f" · held: {_format.plain(shown.caption())}" if shown.fixed else ""))
    st.download_button("Download the grid as PNG", data=lambda: _grid_png(batch.id, x, y, dict(shown.fixed)),
                       file_name=f"grid-{batch.id[:8]}.png", mime="image/png", icon=":material/download:",
                       on_click="ignore", key=f"cmp_grid_png_{batch.id}")


TABS: dict[str, Callable[[Batch, list[Group], dict[str, list[RequestRecord]]], None]] = {
    "Side by side": side_by_side,
    "Fidelity": _metrics_views.metrics_tab,
    "Grid": xy_grid,
}

# the grid reads every output of the batch: it runs only while its tab is open
LAZY = {"Grid"}
for (title, render), tab in zip(TABS.items(), st.tabs(list(TABS), key="cmp_tab", on_change="rerun")):
    if title in LAZY and not tab.open:
        continue
    with tab:
        render(batch, page_groups, requests)

if pages > 1:
    st.pagination(pages, key=page_key)

_onboarding.next_step("review.py", "judge these outputs blind on Review",
                  "Model names are hidden until you vote; the Leaderboard counts the votes.")
