"""Who is using the dashboard: the display name typed in the sidebar, kept in the address.

Invariants:
- The name lives in the session (`USER_KEY`) and in the address (`?user=…`), so a reload or a
  bookmark keeps it; the server never guesses it: no parameter, no name.
- A new session takes what its address carries before anything is drawn (`adopt_address`).
"""
from __future__ import annotations

import streamlit as st

from dashboard import _draft

USER_KEY = "user_name"
USER_PARAM = "user"      # the address's query parameter that keeps the name in the browser


def user() -> str | None:
    """The display name typed in the sidebar, or None when left empty."""
    name = (st.session_state.get(USER_KEY) or "").strip()
    return name or None


def adopt_address() -> None:
    """The first thing every run does, before anything is drawn: a new browser session (a reload, a
    restarted dashboard) takes the name and the draft id its address carries. Nothing is guessed:
    no parameter, no name.

    Not later, when the sidebar reaches the name box: a page change drops the address's parameters
    (Streamlit's navigation does), and a page link clicked while a session's first run is still
    drawing cuts that run short. Taken any later, a quick click after a reload or a restart lost
    the name and started the form afresh under a new draft id. Before the navigation is drawn, no
    click in this page can have come first."""
    if USER_KEY not in st.session_state and st.query_params.get(USER_PARAM):
        st.session_state[USER_KEY] = st.query_params[USER_PARAM][:100]
    _draft.adopt_address()


def remember_user() -> None:
    """After the name box: the address carries the name (or loses it when it was cleared) and
    this browser's draft id, on every page, so a reload keeps both."""
    name = user()
    if name and st.query_params.get(USER_PARAM) != name:
        st.query_params[USER_PARAM] = name
    elif not name and USER_PARAM in st.query_params:
        del st.query_params[USER_PARAM]
    _draft.remember_in_address()
