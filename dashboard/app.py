"""Streamlit entry: navigation and the sidebar. Pages are thin: widgets and calls into core.

The sidebar says, without revealing a secret, whether fal is live or in dry run, which storage
backend is used, where the data lives and who can reach the dashboard. With sign-in off it asks
for a display name, recorded as `created_by` with whatever the person runs, uploads or rates, kept
in the browser (the `user` query parameter of the address) so it survives reloads and restarts;
with sign-in on (`DASHBOARD_AUTH`) it shows the signed-in person and their role instead, and a
person not signed in or in no role sees no page at all (`_identity.gate`). The Team page (limits,
the audit trail) is listed for admins only. Until someone has voted, the sidebar lists the first
steps.

Once per server process (not per page view) the heavy imports of the data pages are loaded in a
background thread (`_warmup.warm_up`), and batches a runner left unfinished without a stated
reason get a runner again (`core.batches.service.resume_orphans`), unless `auto_resume` is off.
The favicon is an emoji, not a Material Symbols icon: Streamlit fetches those from a Google font
host, and the dashboard contacts no host but itself.
"""
from __future__ import annotations

import sys
from pathlib import Path

# `streamlit run dashboard/app.py` puts dashboard/ on sys.path, not the repo root.
ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import streamlit as st  # noqa: E402

from core import access  # noqa: E402
from core.config import is_loopback  # noqa: E402
from core.errors import DashboardError  # noqa: E402
from dashboard import _draft, _format, _identity, _onboarding, _resources, _resume, _warmup  # noqa: E402

# the name and the draft id the address carries, taken before anything is drawn (see adopt_address)
_identity.adopt_address()
st.set_page_config(page_title="fal model comparison", page_icon="⚖️", layout="wide")

pages = [
    st.Page("upload.py", title="Upload", icon=":material/upload:", default=True),
    st.Page("generate.py", title="Generate", icon=":material/auto_awesome:"),
    st.Page("models.py", title="Models", icon=":material/deployed_code:"),
    st.Page("compare.py", title="Compare", icon=":material/compare:"),
    st.Page("history.py", title="History", icon=":material/history:"),
    st.Page("review.py", title="Review", icon=":material/rate_review:"),
    st.Page("leaderboard.py", title="Leaderboard", icon=":material/leaderboard:"),
]
try:
    # settings, then the store: a bad setting or a damaged or emptied database is one clear
    # message on every page (what to do included), never a traceback
    settings = _resources.settings()
    _resources.store()
    problem = None
except DashboardError as e:
    problem = e
# with sign-in on, a person not signed in (or in no role) sees no page list and no page
who = _identity.person() if problem is None else None
let_in = problem is not None or not access.auth_on(settings) or (who.name is not None and who.role is not None)
if who is not None and let_in and who.may("audit"):
    pages.append(st.Page("team.py", title="Team", icon=":material/admin_panel_settings:"))
page = st.navigation(pages, position="sidebar" if let_in else "hidden")
if problem is not None:
    _format.show_error(problem)
    st.stop()
_identity.gate(settings)

with st.sidebar:
    summary = settings.public_summary()
    if settings.dry_run:
        st.warning("**Dry run**: no FAL_KEY, nothing is sent to fal. Payloads are built, "
                   "validated and recorded.", icon=":material/science:")
    else:
        st.success("fal: **live** — runs are sent and billed.", icon=":material/cloud_done:")
    st.caption(f"Storage: {summary['storage']}")
    st.caption(f"Data: `{summary['data_dir']}`")
    if settings.database_url:   # the team store: host and database, never the user or password
        st.caption(f"Team store: `{summary['database']}`")
    # who can reach this server: the address in effect (scripts/run's flag, config.toml), not a guess
    if is_loopback(st.get_option("server.address")):
        st.caption("Reachable from this machine only.")
    elif access.auth_on(settings):
        st.caption(f"Open to the network; only the people a role names get in (sign-in: {settings.auth}).")
    else:
        st.warning(f"**Open to the network** (`DASHBOARD_LISTEN_ON_ALL_INTERFACES`): anyone who can "
                   f"reach port {st.get_option('server.port')} can use this dashboard"
                   + ("." if settings.dry_run else " and the team's fal key."), icon=":material/public:")
    if _resources.store().read_only:
        st.warning("**Read-only**: the data directory cannot be written. History, Compare and the "
                   "Leaderboard work; uploads, runs and votes are refused until it is writable.",
                   icon=":material/lock:")
    _identity.sidebar(settings)
    _warmup.warm_up()
    resumed = _resume.resume_orphans_once()
    if resumed:
        st.caption(resumed)
    _onboarding.first_steps()

# whether this run arrived on the page from another one (or is a new session's first): a page that
# restores a draft needs it, since Streamlit forgets or keeps stale widget values across pages
left = st.session_state.get("_on_page")
st.session_state[_draft.ARRIVED] = left != page.url_path
st.session_state["_on_page"] = page.url_path
if left == "generate" and page.url_path != "generate":
    _draft.keep_on_leaving()
page.run()
