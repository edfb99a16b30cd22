"""Upload page: drop several reference photos at once, give each a role, store them through
`core.photos.references` (checks, normalisation, dedupe), and browse / archive the stored ones.

What core refuses is shown per file with core's own message; a photo that was already stored is
not stored twice (the notice says when and by whom it was first uploaded).
"""
from __future__ import annotations

import streamlit as st

from core.photos import references
from core.values import REFERENCE_ROLES
from core.errors import DashboardError
from dashboard import _format, _identity, _onboarding, _resources

GALLERY_PAGE = 24
GALLERY_COLUMNS = 6

st.title("Upload reference photos")
st.caption("JPEG, PNG, WebP or HEIC. Photos are made upright, converted to sRGB, stripped of metadata "
           "and fitted to the size fal needs; the same photo is only ever stored once.")

state = st.session_state
state.setdefault("upload_generation", 0)
state.setdefault("upload_outcomes", [])

files = st.file_uploader(
    "Drag and drop photos here", accept_multiple_files=True,
    key=f"uploader_{state.upload_generation}",
    help="Several at once. Each gets a role below before it is stored.") if _identity.allowed("upload") else []

if files:
    with st.form("roles"):
        st.write(f"**{len(files)} file{'s' if len(files) != 1 else ''}** — choose each photo's role:")
        for f in files:
            name_col, size_col, role_col = st.columns([4, 1, 2], vertical_alignment="center")
            name_col.markdown(_format.plain(f.name))
            size_col.caption(_format.human_bytes(f.size))
            role_col.selectbox("Role", REFERENCE_ROLES, key=f"role_{f.file_id}",
                               label_visibility="collapsed")
        stored = st.form_submit_button("Store photos", type="primary", icon=":material/save:")
    if stored:
        outcomes = []
        _identity.person().require("upload")
        for f in files:
            try:
                ref = references.add_reference(
                    _resources.store(), _resources.storage(), f.getvalue(), role=state[f"role_{f.file_id}"],
                    filename=f.name, created_by=_identity.user(), settings=_resources.settings())
                outcomes.append((f.name, ref, None))
            except DashboardError as e:
                outcomes.append((f.name, None, str(e)))
        state.upload_outcomes = outcomes
        state.upload_generation += 1  # a fresh uploader: the stored files leave the drop zone
        st.rerun()

for name, ref, error in state.upload_outcomes:
    if error is not None:
        # core's message names the file already: bold it there instead of saying it twice
        text = (error.replace(name, f"**{_format.plain(name)}**", 1) if name in error
                else f"**{_format.plain(name)}**: {error}")
        st.error(f"{text} Nothing was stored.", icon=":material/block:")
    elif ref.existing:
        by = f" by {_format.plain(ref.created_by)}" if ref.created_by else ""
        st.info(f"**{_format.plain(name)}** was already there (uploaded {_format.short_time(ref.created_at)}{by}, "
                f"role {ref.role}): nothing new was stored." + _format.notes_text(ref.notes),
                icon=":material/content_copy:")
    else:
        st.success(f"**{_format.plain(name)}** stored as {ref.role}, {ref.width}x{ref.height}."
                   + _format.notes_text(ref.notes), icon=":material/check_circle:")

st.divider()
head, toggle = st.columns([3, 1], vertical_alignment="bottom")
head.subheader("Stored references")
show_archived = toggle.toggle("Show archived", key="show_archived")
state.setdefault("gallery_limit", GALLERY_PAGE)

refs = _resources.store().list_references(include_archived=show_archived,
                                  limit=state.gallery_limit + 1)
more = len(refs) > state.gallery_limit
refs = refs[: state.gallery_limit]
if not refs and not _resources.store().list_references(include_archived=True, limit=1) \
        and not _resources.store().list_batches(limit=1):
    st.info("**Start here.** The dashboard is empty. The way to a verdict, about ten minutes:  \n"
            "1. drop a photo of a face above and press *Store photos*;  \n"
            "2. on **Generate**, pick it and press the run button (without a key it is a free dry run);  \n"
            "3. on **Review**, judge the two outputs of each group without seeing the model names;  \n"
            "4. on **Leaderboard**, read who wins and how sure that is.", icon=":material/flag:")
elif not refs:
    st.info("No reference photos yet: drop some above.", icon=":material/photo_library:")

for start in range(0, len(refs), GALLERY_COLUMNS):
    for col, ref in zip(st.columns(GALLERY_COLUMNS), refs[start:start + GALLERY_COLUMNS]):
        with col.container(border=True):
            thumb = _resources.thumbnail(ref.storage_backend, ref.storage_path, ref.sha256)
            if thumb:
                st.image(thumb, width="stretch")
            else:
                st.caption(f"(image not readable from {ref.storage_backend} storage)")
            st.markdown(f"**{ref.role}** · {ref.width}x{ref.height} · {_format.human_bytes(ref.size_bytes)}")
            st.caption(f"{_format.plain(_format.short_name(ref.original_name) or ref.id[:8])}  \n"
                       f"{_format.short_time(ref.created_at)}"
                       + (f" by {_format.plain(ref.created_by)}" if ref.created_by else "")
                       + ("  \n**archived**" if ref.archived_at else ""))
            if ref.archived_at is None and _identity.may("archive") and st.button(
                    "Archive", key=f"archive_{ref.id}", icon=":material/archive:",
                    help="Hide from pickers; runs that used it keep it."):
                _resources.store().archive_reference(ref.id, by=_identity.user())
                st.rerun()

if more and st.button("Show more", icon=":material/expand_more:"):
    state.gallery_limit += GALLERY_PAGE
    st.rerun()

_onboarding.next_step("generate.py", "build a batch on Generate",
                  "Pick the photos there, choose options and models, and look at the exact payloads first.")
