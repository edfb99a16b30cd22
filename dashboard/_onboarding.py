"""Onboarding: the sidebar's first steps until the first vote, and the "Next:" link at the end of
each page, so a new teammate always sees where to go from here."""
from __future__ import annotations

import streamlit as st

from dashboard import _resources

FIRST_STEPS = (
    ("upload.py", "1. Upload a reference photo"),
    ("generate.py", "2. Generate a batch (a dry run is free)"),
    ("review.py", "3. Review pairs, blind"),
    ("leaderboard.py", "4. Read the Leaderboard"),
)


def first_steps() -> None:
    """Until the first vote: the four steps from an empty dashboard to a verdict, as links, with
    the ones already done ticked."""
    store = _resources.store()
    if store.newest_voted_batch() is not None:
        return
    done = (bool(store.list_references(limit=1)), bool(store.list_batches(limit=1)), False, False)
    st.markdown("**First steps**")
    for (page, label), ticked in zip(FIRST_STEPS, done):
        st.page_link(page, label=label + (" — done" if ticked else ""))


def next_step(page: str, label: str, why: str = "") -> None:
    """The natural next step at the end of a page, as a link."""
    st.divider()
    st.page_link(page, label=f"Next: {label}", icon=":material/arrow_forward:")
    if why:
        st.caption(why)
