"""Reusable widgets: image tiles, status badges and the batch picker of Compare and Review.
(Generate's parameter form is `_generate_models.parameter_form`: it is that step's seam.)"""
from __future__ import annotations

from typing import Any

import streamlit as st

from dashboard import _format, _resources


def image_tile(image, *, caption: str | None = None, size: int = _resources.THUMB_PX) -> None:
    """One result image (ResultImage): a small stored thumbnail (bytes the server read, never a
    bucket URL), else fal's URL, else a note; and why the kept copy is not shown, when it is not.
    `caption` is plain text (a label, a LoRA file name, an option a person typed): shown as typed."""
    caption = _format.plain(caption) if caption else None
    read = (_resources.image_thumbnail(image.storage_backend, image.storage_path, image.sha256 or image.id,
                                       size=size) if image.storage_path else None)
    if read is not None and read.data:
        st.image(read.data, caption=caption, width="stretch")
        return
    if image.fal_url and image.fal_url.startswith("http"):
        st.image(image.fal_url, caption=caption, width="stretch")
    else:
        st.caption(f"(image not available){' — ' + caption if caption else ''}")   # escaped above
    if read is not None:
        # why the kept copy is not shown: missing, or storage unreachable now (no key in it)
        st.caption(_format.plain(f"Kept copy not shown: {read.message}"))


def status_badge(status: str, dry_run: bool = False) -> str:
    """Markdown badge for a request status (display only)."""
    from core.values import RequestStatus as S

    colour = {S.COMPLETED: "green", S.FAILED: "red", S.CANCELLED: "gray", S.DRY_RUN: "violet",
              S.PLANNED: "blue", S.SUBMITTED: "orange", S.QUEUED: "orange", S.RUNNING: "orange"}
    label = "dry run — not sent" if status == S.DRY_RUN else status
    return f":{colour.get(status, 'gray')}-badge[{label}]"


def batch_picker(store: Any, *, key: str, empty: str, icon: str, container: Any = st,
                 with_count: bool = True) -> str:
    """The batch selectbox of Compare and Review (newest first, the newest preselected); stops
    the page with `empty` when there is no batch yet."""

    batches = store.list_batches(limit=200)
    if not batches:
        st.info(empty, icon=icon)
        st.stop()
    by_id = {b.id: b for b in batches}
    if st.session_state.get(key) not in by_id:
        st.session_state[key] = batches[0].id

    def label(batch_id: str) -> str:
        b = by_id[batch_id]
        return (f"{b.name} · {_format.short_time(b.created_at)}"
                + (f" · {b.request_count} requests" if with_count else "")
                + (" · dry run" if b.dry_run else ""))

    return container.selectbox("Batch", list(by_id), key=key, format_func=label)
