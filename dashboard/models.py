"""Models page: the team adds any fal image endpoint from fal's own OpenAPI document, without a
developer (issue 18). Three ways in (search fal, an endpoint id, a .json file: `_models_add`),
a preview of how the dashboard's one request maps onto the endpoint's fields, then Add. Below,
the added endpoints, each with refresh (what changed, then Adopt) and archive (confirmed).

Every rule is `core.models.service`'s: what a document must be, the price (fal's, typed, or
unknown, never $0), what refresh stages and adopt makes current. A core error is one line.
"""
from __future__ import annotations

import streamlit as st

from core.errors import DashboardError
from core.models import service
from dashboard import _format, _identity, _models_add, _onboarding, _resources

CHANGES = "models_changes"      # {endpoint_id: lines of the last refresh}
CONFIRM = "models_confirm_archive"

st.title("Models")
st.caption("Add any fal image endpoint from its OpenAPI document: the dashboard reads its fields, maps "
           "its one request onto them and says what the model lacks. Generate offers it once added.")

state = st.session_state
state.setdefault(CHANGES, {})
store, settings = _resources.store(), _resources.settings()

_models_add.show_notice()
if _identity.allowed("models"):   # everyone sees the added models; admins add and change them
    _models_add.ways_in()
    _models_add.preview_and_add()

st.divider()
head, toggle = st.columns([3, 1], vertical_alignment="bottom")
head.subheader("Added models")
show_archived = toggle.toggle("Show archived", key="models_show_archived")
added = store.list_models(include_archived=show_archived)
if not added:
    st.info("No model added yet: search fal, paste an endpoint id or drop its document above.",
            icon=":material/deployed_code:")


def _refresh(endpoint_id: str) -> None:
    try:
        _identity.person().require("models")
        changes = service.refresh(store, settings, endpoint_id, by=_identity.user())
    except DashboardError as e:
        _models_add.notice("error", _models_add.error_line(e))
        return
    state[CHANGES][endpoint_id] = changes or ["The document fal serves now is the one in use: nothing to adopt."]


def _act(verb: str, endpoint_id: str) -> None:
    """Adopt or archive, then the registry follows (Generate's options change at once)."""
    try:
        _identity.person().require("models")
        model = (service.adopt(store, endpoint_id, by=_identity.user()) if verb == "adopt"
                 else service.archive(store, endpoint_id, by=_identity.user()))
    except DashboardError as e:
        _models_add.notice("error", _models_add.error_line(e))
        return
    service.install(store)
    state[CHANGES].pop(endpoint_id, None)
    state.pop(CONFIRM, None)
    said = ("adopted: new batches use fal's current document" if verb == "adopt"
            else "archived: no new batch may name it; batches that used it keep it")
    _models_add.notice("success", f"**{_format.plain(model.label)}** {said}.")


for m in added:
    with st.container(border=True):
        st.markdown(f"**{_format.plain(m.label)}** · {_format.plain(m.endpoint_id)} · {_format.plain(m.category)}")
        source = "fal" if m.source == "fal" else m.source.removeprefix("file:")
        st.caption(f"Price: {_format.plain(service.price_words(m))}  \n"
                   f"Added {_format.short_time(m.added_at)}"
                   + (f" by {_format.plain(m.added_by)}" if m.added_by else "")
                   + f" from {_format.plain(source)}"
                   + (f"  \n**archived** {_format.short_time(m.archived_at)}" if m.archived_at else ""))
        if m.archived_at or not _identity.may("models"):
            continue
        for line in state[CHANGES].get(m.endpoint_id, ()):
            st.markdown(f"- {_format.plain(line)}")
        refresh_col, adopt_col, archive_col = st.columns(3)
        if refresh_col.button("Refresh from fal", key=f"models_refresh_{m.endpoint_id}", icon=":material/refresh:",
                              help="Fetch fal's current document and say what changed; nothing changes until Adopt."):
            _refresh(m.endpoint_id)
            st.rerun()
        if m.pending_document is not None and adopt_col.button(
                "Adopt", key=f"models_adopt_{m.endpoint_id}", icon=":material/published_with_changes:",
                help="New batches use the refreshed document; old batches keep theirs."):
            _act("adopt", m.endpoint_id)
            st.rerun()
        if state.get(CONFIRM) != m.endpoint_id:
            if archive_col.button("Archive", key=f"models_archive_{m.endpoint_id}", icon=":material/archive:",
                                  help="Hide from Generate; batches that used it keep it."):
                state[CONFIRM] = m.endpoint_id
                st.rerun()
            continue
        st.warning(f"Archive **{_format.plain(m.label)}**? Generate stops offering it; batches that used it "
                   "keep it.", icon=":material/archive:")
        yes_col, no_col = st.columns(2)
        if yes_col.button("Yes, archive", key=f"models_archive_yes_{m.endpoint_id}", type="primary"):
            _act("archive", m.endpoint_id)
            st.rerun()
        if no_col.button("Cancel", key=f"models_archive_no_{m.endpoint_id}"):
            state.pop(CONFIRM, None)
            st.rerun()

_onboarding.next_step("generate.py", "run the added models on Generate",
                      "They are in its Models list beside the built-in ones.")
