"""Who is using the dashboard, and what they may do (core.access decides; this module asks).

Invariants:
- `DASHBOARD_AUTH=none`: the display name typed in the sidebar, kept in the address (`?user=…`)
  so a reload or a bookmark keeps it; the server never guesses it: no parameter, no name. Everyone
  is an admin (one person on their own machine).
- `oidc`: the e-mail Streamlit's own `st.login` proved (`st.user`); `header`: the e-mail the
  authenticating proxy put in DASHBOARD_AUTH_HEADER, believed only beside the proxy's secret.
  Either way the name cannot be typed or changed from the page, the address's `?user=` is ignored,
  and `gate` stops every run before any page draws data for a person not signed in or in no role.
- A new session takes what its address carries before anything is drawn (`adopt_address`).
"""
from __future__ import annotations

import hmac

import streamlit as st

from core import access
from core.config import PROXY_SECRET_HEADER, Settings
from dashboard import _draft, _format

USER_KEY = "user_name"
USER_PARAM = "user"      # the address's query parameter that keeps the name in the browser


def person() -> access.Person:
    """The person this run acts for."""
    from dashboard import _resources

    settings = _resources.settings()
    if settings.auth == "oidc":
        return access.signed_in(settings, _oidc_email()) if st.user.is_logged_in else access.Person(None, None)
    if settings.auth == "header":
        email = _proxy_email(settings)
        return access.signed_in(settings, email) if email else access.Person(None, None)
    return access.typed(st.session_state.get(USER_KEY))


def user() -> str | None:
    """The name recorded as `created_by` (the signed-in e-mail with sign-in on)."""
    return person().name


def may(action: str) -> bool:
    return person().may(action)


def allowed(action: str) -> bool:
    """Whether this person may `action`; if not, the refusal is shown (one line) and False."""
    who = person()
    if who.may(action):
        return True
    st.info(_format.plain(access.refusal(who, action)), icon=":material/lock:")
    return False


def _oidc_email() -> str:
    """The signed-in person's e-mail from the ID token's `email` claim, unless the provider says
    it is not verified (`email_verified` false: anyone could have typed it, and a domain role
    would let them in). Without a usable one, the provider's subject, which no role names: the
    person is let in nowhere and told so. (`preferred_username` is not used: several providers let
    a person choose it. With Microsoft Entra, add the optional `email` claim.)"""
    email = str(st.user.get("email") or "").strip()
    if "@" in email and st.user.get("email_verified") is not False:
        return email[:200]
    why = "an unverified e-mail" if email else "no e-mail"
    return f"{st.user.get('sub') or 'unknown'} ({why} from the provider)"[:200]


def _proxy_email(settings: Settings) -> str | None:
    """The proxy's e-mail header, only when the request also carries the proxy's secret: a request
    that reached the port without the proxy cannot claim an identity."""
    headers = st.context.headers
    secrets, emails = headers.get_all(PROXY_SECRET_HEADER), headers.get_all(settings.auth_header)
    # each exactly once: a proxy that appended its value to the client's would otherwise let the
    # client's come first
    if len(secrets) != 1 or len(emails) != 1 or not settings.auth_proxy_secret:
        return None
    if not hmac.compare_digest(secrets[0].encode(), settings.auth_proxy_secret.encode()):
        return None
    return emails[0].strip()[:200] or None


def gate(settings: Settings) -> None:
    """With sign-in on: sign in (oidc), or say the proxy was bypassed (header), or say there is no
    role; then stop the run, so no page draws anything. With it off: nothing."""
    if not access.auth_on(settings):
        return
    who = person()
    if who.name is None:
        st.title("fal model comparison")
        if settings.auth == "oidc":
            st.write("This dashboard is for the team only. Sign in with your work account.")
            st.button("Sign in", type="primary", icon=":material/login:", on_click=st.login, key="sign_in")
        else:
            st.error("This dashboard is reached through the team's sign-in proxy only: this request did "
                     "not come through it (no identity, or no proxy secret).", icon=":material/lock:")
        st.stop()
    if who.role is None:
        st.title("fal model comparison")
        st.error(f"You are signed in as {_format.plain(who.name)}, but no role names you. An admin adds "
                 "you to DASHBOARD_ROLE_VIEWERS (or RATERS, RUNNERS, ADMINS).", icon=":material/lock:")
        sign_out_button(settings)
        st.stop()


def sign_out_button(settings: Settings) -> None:
    if settings.auth == "oidc":
        st.button("Sign out", icon=":material/logout:", on_click=st.logout, key="sign_out")


def sidebar(settings: Settings) -> None:
    """The name box (sign-in off), or who is signed in, their role and Sign out."""
    if not access.auth_on(settings):
        st.text_input("Your name", key=USER_KEY, placeholder="e.g. Ana",
                      help="Recorded with what you upload, run and rate. Kept in this page's address "
                           "(?user=…), so a reload or a bookmark keeps it.")
        remember_user()
        return
    who = person()
    st.caption(f"Signed in as **{_format.plain(who.name)}** ({who.role.word if who.role else 'no role'})")
    sign_out_button(settings)
    _draft.remember_in_address()


def adopt_address() -> None:
    """The first thing every run does, before anything is drawn: a new browser session (a reload, a
    restarted dashboard) takes the name and the draft id its address carries. Nothing is guessed:
    no parameter, no name. (With sign-in on the name is not read from the address: `person`.)

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
    name = (st.session_state.get(USER_KEY) or "").strip() or None
    if name and st.query_params.get(USER_PARAM) != name:
        st.query_params[USER_PARAM] = name
    elif not name and USER_PARAM in st.query_params:
        del st.query_params[USER_PARAM]
    _draft.remember_in_address()
