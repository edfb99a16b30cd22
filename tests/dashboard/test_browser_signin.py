"""Sign-in in a real browser (issue 20): Debian's Chromium through Playwright against `streamlit run
dashboard/app.py`, with fal replaced by its stand-in and the identity provider by an OpenID
Connect stand-in on 127.0.0.1 (tests/standins/oidc_server.py: discovery, authorization code with
PKCE, tokens, JWKS), which Streamlit's own `st.login` talks to as it would to Google or Okta.

- oidc: a person not signed in sees no page; a runner signs in, sees their name and role, sends a
  live batch recorded as theirs (and in the audit trail), signs out; a viewer sees the pages but
  no Send and no vote, each refusal naming the role; someone no role names gets in nowhere.
- header: with the proxy's e-mail header and its secret, the person is signed in; without the
  header, or with a spoofed one (no secret, a wrong secret), no identity and no page.
"""
from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from core.store import open_store
from tests.dashboard.test_browser import (  # noqa: F401 - fixtures are used by name
    CHROMIUM,
    CHROMIUM_ARGS,
    FAL_KEY,
    ROOT,
    WAIT_MS,
    _go_link,
    _photo,
    _settled,
    browser_page,
    fal_url,
)
from tests.serving import free_port, start_streamlit, stop
from tests.standins.fal_server import StandinControl
from tests.standins.oidc_server import OIDCStandin

pytestmark = pytest.mark.browser

RUNNER, VIEWER, STRANGER = "ada@example.com", "vic@example.com", "eve@elsewhere.org"
ROLES = {"DASHBOARD_ROLE_RUNNERS": RUNNER, "DASHBOARD_ROLE_VIEWERS": "@example.com"}
PROXY_SECRET = "proxy-secret-for-the-test-0123"


def _start(tmp_path: Path, port: int, env_extra: dict[str, str], args: list[str] = ()) -> subprocess.Popen:
    env = {**os.environ, "DASHBOARD_DATA_DIR": str(tmp_path / "data"),
           "DASHBOARD_SECRETS": str(tmp_path / "secrets.toml"), **env_extra}
    for name in ("FAL_KEY", "SUPABASE_URL", "SUPABASE_KEY"):
        env.pop(name, None)
    env.update(env_extra)
    return start_streamlit(
        [sys.executable, "-m", "streamlit", "run", "dashboard/app.py", "--server.port", str(port),
         "--server.address", "127.0.0.1", "--server.headless", "true", "--browser.gatherUsageStats", "false",
         *args], cwd=ROOT, env=env, port=port, log=tmp_path / "streamlit.log")


def _cli(tmp_path: Path, env_extra: dict[str, str], *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "DASHBOARD_DATA_DIR": str(tmp_path / "data"),
           "DASHBOARD_SECRETS": str(tmp_path / "secrets.toml"), **env_extra}
    return subprocess.run([sys.executable, "-m", "core", *args], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=60)


def _said(text: str):
    """`text` as the page shows it: typed text (an e-mail) carries an invisible word joiner before
    its "@" (`_format.plain`: so no bare address becomes a link)."""
    return re.compile(re.escape(text).replace("@", "\u2060?@"))


def _sign_in(pg, email: str) -> None:
    pg.get_by_role("button", name="Sign in").click()
    pg.locator("#email").fill(email)
    pg.get_by_role("button", name="Sign in").click()


@pytest.fixture
def oidc_dashboard(tmp_path, fal_url):
    port = free_port()
    redirect = f"http://127.0.0.1:{port}/oauth2callback"
    oidc = OIDCStandin(users={RUNNER: "Ada", VIEWER: "Vic", STRANGER: "Eve"}, redirect_uris=[redirect]).start()
    (tmp_path / "secrets.toml").write_text(
        f'[auth]\nredirect_uri = "{redirect}"\ncookie_secret = "a-long-random-cookie-secret-for-the-test"\n'
        f'client_id = "{oidc.client_id}"\nclient_secret = "{oidc.client_secret}"\n'
        f'server_metadata_url = "{oidc.metadata_url}"\n')
    env = {"DASHBOARD_AUTH": "oidc", **ROLES, "FAL_KEY": FAL_KEY, "FAL_QUEUE_URL": fal_url, "FAL_RUN_URL": fal_url}
    photo = tmp_path / "face.jpg"
    photo.write_bytes(_photo())
    # the command line acts as a named person, by the same rules: a viewer may not upload
    refused = _cli(tmp_path, env, "--as", VIEWER, "reference", "add", str(photo), "--role", "face")
    assert refused.returncode == 2 and refused.stderr.strip().splitlines() == [
        f"error: Uploading reference photos needs the runner role; you ({VIEWER}) are a viewer. An admin "
        "grants it in DASHBOARD_ROLE_RUNNERS (or a role above it)."], refused.stderr
    added = _cli(tmp_path, env, "--as", RUNNER, "reference", "add", str(photo), "--role", "face")
    assert added.returncode == 0, added.stderr
    proc = _start(tmp_path, port, env, ["--secrets.files", str(tmp_path / "secrets.toml")])
    try:
        yield f"http://127.0.0.1:{port}", oidc, tmp_path / "data"
    finally:
        stop(proc)
        oidc.stop()


def test_oidc_sign_in_run_as_a_runner_be_refused_as_a_viewer_and_sign_out(oidc_dashboard, browser_page, fal_url):
    url, oidc, data_dir = oidc_dashboard
    pg, hosts = browser_page
    pg.goto(url)
    pg.get_by_role("button", name="Sign in").wait_for()
    _settled(pg)
    # not signed in: no page list, no page, no data
    assert pg.locator('[data-testid="stSidebarNav"]').count() == 0
    assert pg.get_by_text("face.jpg").count() == 0 and pg.get_by_text("Drag and drop").count() == 0

    _sign_in(pg, RUNNER)
    pg.get_by_text(_said(f"Signed in as {RUNNER} (runner)")).wait_for()
    assert pg.locator('a[href^="mailto:"]').count() == 0      # the e-mail is text, not a link
    assert oidc.pkce_used == [True]          # Streamlit used PKCE (S256) against the provider
    _go_link(pg, "Generate")
    pg.get_by_role("combobox", name="Reference photos (for the edit models)").click()
    pg.get_by_role("option", name="face · face.jpg").first.click()
    pg.keyboard.press("Escape")
    _settled(pg)
    pg.get_by_role("button", name="Send 2 requests to fal").click()
    pg.get_by_text("2 of 2 answered by fal: 2 completed").wait_for(timeout=120_000)
    with open_store(data_dir / "dashboard.db") as store:
        batches = store.list_batches()
        sent = store.audit_entries(action="batch.sent")
    assert [b.created_by for b in batches] == [RUNNER]
    assert [(e.who, e.subject) for e in sent] == [(RUNNER, batches[0].id)] and sent[0].usd > 0
    assert "Team" not in pg.locator('[data-testid="stSidebarNav"]').inner_text()   # admins only
    pg.get_by_role("button", name="Sign out").click()
    pg.get_by_role("button", name="Sign in").wait_for()

    _sign_in(pg, VIEWER)
    pg.get_by_text(_said(f"Signed in as {VIEWER} (viewer)")).wait_for()
    _go_link(pg, "Generate")
    pg.get_by_text(_said(f"Sending batches needs the runner role; you ({VIEWER}) are a viewer")).wait_for()
    assert pg.get_by_role("button", name="Send 2 requests to fal").count() == 0
    _go_link(pg, "Review")
    pg.get_by_text(_said(f"Voting needs the rater role; you ({VIEWER}) are a viewer")).wait_for()
    _go_link(pg, "Leaderboard")   # a viewer reads everything: the runner's batch is there
    pg.get_by_role("heading", name="Leaderboard").wait_for()
    assert pg.get_by_text("needs the").count() == 0
    pg.get_by_role("button", name="Sign out").click()
    pg.get_by_role("button", name="Sign in").wait_for()

    _sign_in(pg, STRANGER)
    pg.get_by_text(_said(f"You are signed in as {STRANGER}, but no role names you")).wait_for()
    assert pg.locator('[data-testid="stSidebarNav"]').count() == 0
    with StandinControl(fal_url) as fal:
        assert fal.stats()["submissions"] == 2          # only the runner's batch reached fal
    assert hosts == {"127.0.0.1"}


@pytest.fixture(scope="module")
def header_dashboard(tmp_path_factory):
    tmp_path = tmp_path_factory.mktemp("header")   # one dashboard for the four ways in
    port = free_port()
    env = {"DASHBOARD_AUTH": "header", "DASHBOARD_AUTH_PROXY_SECRET": PROXY_SECRET, **ROLES}
    (tmp_path / "secrets.toml").write_text("")
    proc = _start(tmp_path, port, env)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        stop(proc)


@pytest.mark.parametrize("headers, signed_in", [
    ({"X-Forwarded-Email": RUNNER, "X-Dashboard-Proxy-Secret": PROXY_SECRET}, True),   # through the proxy
    ({}, False),                                                                     # around it, no header
    ({"X-Forwarded-Email": RUNNER}, False),                                          # a spoofed header
    ({"X-Forwarded-Email": RUNNER, "X-Dashboard-Proxy-Secret": "guessed-" + PROXY_SECRET[8:]}, False),
], ids=["proxy", "no-header", "spoofed", "wrong-secret"])
def test_header_sign_in_believes_the_proxy_only(header_dashboard, headers, signed_in):
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            context = browser.new_context(viewport={"width": 1400, "height": 1000}, extra_http_headers=headers)
            pg = context.new_page()
            pg.set_default_timeout(WAIT_MS)
            pg.goto(header_dashboard)
            if signed_in:
                pg.get_by_text(_said(f"Signed in as {RUNNER} (runner)")).wait_for()
                pg.get_by_text("Drag and drop photos here").wait_for()
            else:
                pg.get_by_text("this request did not come through it").wait_for()
                assert pg.locator('[data-testid="stSidebarNav"]').count() == 0
                assert pg.get_by_text("Drag and drop photos here").count() == 0
        finally:
            browser.close()
