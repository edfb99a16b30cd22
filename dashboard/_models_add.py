"""Models page, adding: the three ways to a document (search fal, an endpoint id, a .json file),
its preview, and the Add button. Every rule is `core.models.service`'s; this module draws.

Invariants:
- This module owns its session keys (`CANDIDATE`, `NOTICE` and the `models_*` widget keys): the
  document being previewed is kept as bytes with where it came from, and nothing is stored
  before Add.
- A core error is one line of plain text (`error_line`); a search that cannot reach fal says
  that adding from a document file still works.
"""
from __future__ import annotations

import streamlit as st

from core.errors import DashboardError, FalError
from core.models import service
from dashboard import _format, _identity, _resources

CANDIDATE = "models_candidate"   # {"source": "fal"|"file", "name", "endpoint_id", "data", "fal_price"}
NOTICE = "models_notice"         # ("error"|"success", text), shown once after a rerun
FOUND = "models_found"           # (models of the search so far, next cursor or None)
SEARCH_ERROR = "models_search_error"
ANY_CATEGORY = "any image category"
CATEGORIES = (ANY_CATEGORY, "text-to-image", "image-to-image")


def error_line(err: DashboardError) -> str:
    """A core error as one line of plain text."""
    return _format.plain(" ".join(str(err).split()))


def notice(kind: str, text: str) -> None:
    st.session_state[NOTICE] = (kind, text)


def show_notice() -> None:
    kind, text = st.session_state.pop(NOTICE, (None, None))
    if kind == "error":
        st.error(text, icon=":material/error:")
    elif kind == "success":
        st.success(text, icon=":material/check_circle:")


def ways_in() -> None:
    """Search fal, paste an endpoint id, or upload the document: each ends in a candidate."""
    search_tab, id_tab, file_tab = st.tabs(["Search fal", "Endpoint id", "Document file"])
    with search_tab:
        _search()
    with id_tab:
        endpoint_id = st.text_input("fal endpoint id", key="models_endpoint_id", placeholder="fal-ai/flux-pro/kontext")
        if st.button("Fetch its document", key="models_fetch", icon=":material/download:") and endpoint_id.strip():
            _fetch(endpoint_id.strip())
    with file_tab:
        state = st.session_state
        state.setdefault("models_upload_generation", 0)
        f = st.file_uploader("fal's OpenAPI document of the endpoint (.json)", type=["json"],
                             key=f"models_upload_{state.models_upload_generation}",
                             help="Works offline: on fal.ai, the endpoint's API page links its OpenAPI schema.")
        if f is not None and state.get("models_upload_seen") != f.file_id:
            state.models_upload_seen = f.file_id
            _take(source="file", name=f.name, endpoint_id=None, data=f.getvalue())


def _search() -> None:
    state = st.session_state
    query_col, category_col = st.columns([3, 2], vertical_alignment="bottom")
    q = query_col.text_input("Search fal's models", key="models_q", placeholder="e.g. kontext, flux, lora")
    category = category_col.selectbox("Category", CATEGORIES, key="models_category")
    cursor = None
    if st.button("Search", key="models_search", icon=":material/search:"):
        state[FOUND] = ((), None)
    elif state.get(FOUND) and state[FOUND][1] and st.button("More results", key="models_more"):
        cursor = state[FOUND][1]
    else:
        return _results()
    try:
        page = service.search_fal(_resources.settings(), q=q.strip() or None,
                                  category=None if category == ANY_CATEGORY else category, cursor=cursor)
        state[FOUND] = (state[FOUND][0] + page.models, page.next_cursor if page.has_more else None)
        state[SEARCH_ERROR] = None
    except FalError as e:
        state[FOUND], state[SEARCH_ERROR] = None, (
            f"fal cannot be reached ({error_line(e)}); adding from a document file still works.")
    st.rerun()


def _results() -> None:
    state = st.session_state
    if state.get(SEARCH_ERROR):
        st.error(state[SEARCH_ERROR], icon=":material/cloud_off:")
    if not state.get(FOUND):
        return
    models = state[FOUND][0]
    if not models:
        st.info("fal lists no active model for that search.", icon=":material/search_off:")
    for m in models:
        text_col, pick_col = st.columns([5, 1], vertical_alignment="center")
        text_col.markdown(f"**{_format.plain(m.display_name)}** · {_format.plain(m.endpoint_id)}"
                          f" · {_format.plain(m.category or 'no category')}")
        if m.description:
            text_col.caption(_format.plain(" ".join(m.description.split())[:200]))
        if pick_col.button("Preview", key=f"models_pick_{m.endpoint_id}"):
            _fetch(m.endpoint_id)


def _fetch(endpoint_id: str) -> None:
    try:
        data = service.fetch_document(_resources.settings(), endpoint_id)
    except DashboardError as e:
        notice("error", error_line(e))
        st.session_state.pop(CANDIDATE, None)
        st.rerun()
    _take(source="fal", name=endpoint_id, endpoint_id=endpoint_id, data=data)


def _take(*, source: str, name: str, endpoint_id: str | None, data: bytes) -> None:
    """The document to preview: checked first (a refusal is one line), with fal's price when it has one."""
    state = st.session_state
    try:
        doc, _ = service.preview(data, endpoint_id=endpoint_id)
    except DashboardError as e:
        state.pop(CANDIDATE, None)
        notice("error", f"{_format.plain(name)}: {error_line(e)} Nothing was stored.")
        st.rerun()
    state[CANDIDATE] = {"source": source, "name": name, "endpoint_id": endpoint_id, "data": data,
                        "fal_price": service.fal_price(_resources.settings(), doc.endpoint_id)}
    st.rerun()


def preview_and_add() -> None:
    """The candidate's fields in fal's order, its mapping, what it lacks, its price, and Add."""
    candidate = st.session_state.get(CANDIDATE)
    if not candidate:
        return
    doc, fields = service.preview(candidate["data"], endpoint_id=candidate["endpoint_id"])
    with st.container(border=True):
        st.subheader(f"{_format.plain(fields.label)} · {_format.plain(doc.endpoint_id)}")
        st.caption(f"{_format.plain(doc.category)} · from "
                   + ("fal" if candidate["source"] == "fal" else f"the file {_format.plain(candidate['name'])}"))
        fields_col, mapping_col = st.columns(2)
        with fields_col:
            st.markdown("**Form fields, in fal's order**")
            st.markdown("\n".join(
                f"- **{_format.plain(name)}**{' (required)' if required else ''}"
                + (f": {_format.plain(description)}" if description else "")
                for name, required, description in service.fields_in_order(doc)))
        with mapping_col:
            st.markdown("**The dashboard's request goes to**")
            st.markdown("\n".join(f"- {_format.plain(line)}" for line in service.mapping_lines(fields)))
            st.markdown("**What it lacks**")
            st.markdown("\n".join(f"- {_format.plain(line)}" for line in fields.missing)
                        or "Nothing the dashboard sends.")
        price, unit = _price(candidate["fal_price"])
        if st.button("Add", key="models_add", type="primary", icon=":material/add:"):
            _add(candidate, price, unit)


def _price(fal_price: tuple[float, str] | None) -> tuple[float | None, str | None]:
    if fal_price is not None:
        st.markdown(f"**Price:** ${fal_price[0]:g} per {fal_price[1]} (fal's price)")
        return None, None
    price_col, unit_col = st.columns(2)
    price = price_col.number_input("Price, USD per unit", key="models_price", value=None, min_value=0.0,
                                   step=0.001, format="%.4f", help="Leave empty when unknown: never $0.")
    unit = unit_col.selectbox("Unit", service.UNITS, key="models_unit", help="What fal bills.")
    if price is None:
        st.caption("Price: unknown. Estimates will say unknown until one is typed.")
    return price, (unit if price is not None else None)


def _add(candidate: dict, price: float | None, unit: str | None) -> None:
    state, store = st.session_state, _resources.store()
    try:
        if candidate["source"] == "fal":
            model = service.add_from_fal(store, _resources.settings(), candidate["endpoint_id"],
                                         added_by=_identity.user(), price_usd=price, unit=unit)
        else:
            model = service.add_from_bytes(store, candidate["data"], candidate["name"], added_by=_identity.user(),
                                           price_usd=price, unit=unit, fal_price=candidate["fal_price"])
    except DashboardError as e:
        notice("error", error_line(e))
        st.rerun()
    service.install(store)
    notice("success", f"Added **{_format.plain(model.label)}** ({_format.plain(model.endpoint_id)}); "
                      f"price {_format.plain(service.price_words(model))}. Generate offers it now.")
    state.pop(CANDIDATE, None)
    state.pop("models_price", None)
    state.models_upload_generation = state.get("models_upload_generation", 0) + 1
    st.rerun()
