"""Warm-up: once per server process, the heavy imports of the data pages and the model catalogue
are loaded in a background thread, so the first visitor after a start is not held up by them."""
from __future__ import annotations

import threading

import streamlit as st


def _warm() -> None:
    """Import what the data pages need and build the model catalogue: about a second of one core,
    paid otherwise by whoever first opens a page with a table (pandas) or naming models (the
    endpoint schemas) after a server start."""
    import pandas  # noqa: F401
    import pyarrow  # noqa: F401

    from core.catalog import registry

    registry.list_endpoints()


@st.cache_resource(show_spinner=False)
def _warming() -> threading.Thread:
    thread = threading.Thread(target=_warm, name="dashboard-warm-up", daemon=True)
    thread.start()
    return thread


def warm_up() -> None:
    """Once per server process, on its first page run: `_warm` in a background thread, so the
    first visitor's page is not held up by it and the next page finds everything loaded."""
    _warming()
