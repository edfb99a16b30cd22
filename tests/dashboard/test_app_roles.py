"""Roles on every page (issue 20, part 3), through AppTest: with sign-in on, a person not signed
in sees no page; a viewer reads every page but finds no control that uploads, sends, votes,
archives or changes a model, each page that has one saying which role it needs; an admin has the
Team page, sets a limit there (audited, and in effect at once). The e-mail is what the proxy's
header would carry (`_identity._proxy_email`, which the browser test drives through real headers)."""
from __future__ import annotations

import pytest

from core.batches import budget
from core.config import load_settings
from dashboard import _identity
from tests.apptest_support import PAGES, add_reference, all_text, new_store, open_page, read
from tests.review_support import SCHNELL, complete, png  # noqa: F401

SECRET = "a-proxy-secret-of-20-chars"
ROLES = {"DASHBOARD_ROLE_VIEWERS": "@team.org", "DASHBOARD_ROLE_ADMINS": "ada@team.org"}
# controls that change something, by their label's start
ACTING = ("Store photos", "Archive", "Send ", "Record dry run", "Yes, send", "Resume", "Cancel batch",
          "Re-run", "Send again", "Give it up", "Add", "Refresh from fal", "Adopt", "Left better",
          "Right better", "Both good", "Both bad", "Save limits", "Measure the")


@pytest.fixture
def signed_in_as(monkeypatch):
    for name, value in {"DASHBOARD_AUTH": "header", "DASHBOARD_AUTH_PROXY_SECRET": SECRET, **ROLES}.items():
        monkeypatch.setenv(name, value)

    def as_(email):
        monkeypatch.setattr(_identity, "_proxy_email", lambda settings: email)
    return as_


@pytest.mark.parametrize("page", [p for p in PAGES if p != "team.py"])   # Team: not even registered
def test_nobody_signed_in_sees_no_page(signed_in_as, page):
    add_reference("red", created_by="ana")
    signed_in_as(None)
    at = open_page()
    at.switch_page(page).run()   # a page's address typed in: the same refusal, nothing of the page
    assert [e.value for e in at.error][-1].startswith("This dashboard is reached through the team's sign-in proxy only")
    assert "red.jpg" not in all_text(at) and not at.title[1:] and not at.dataframe


@pytest.mark.parametrize("page", [p for p in PAGES if p != "team.py"])
def test_a_viewer_reads_every_page_and_finds_nothing_that_acts(signed_in_as, page):
    add_reference("red", created_by="ana")
    signed_in_as("vic@team.org")
    at = open_page(page)
    acting = [b.label for b in at.button if b.label.startswith(ACTING)]
    assert not acting, acting
    assert not at.text_input or "Your name" not in [t.label for t in at.text_input]   # no name to type
    assert "Signed in as vic@team.org (viewer)" in read(all_text(at)).replace("**", "")
    needs = {"upload.py": "Uploading reference photos needs the runner role",
             "generate.py": "Sending batches needs the runner role",
             "models.py": "Adding, refreshing or archiving models needs the admin role",
             "review.py": "Voting needs the rater role"}
    if page in needs:
        assert any(needs[page] in str(i.value) for i in at.info), [i.value for i in at.info]


def test_the_team_page_is_for_admins_and_an_admins_limit_is_audited_and_in_effect(signed_in_as):
    signed_in_as("vic@team.org")
    at = open_page()
    with pytest.raises(ValueError, match="Could not find a navigation page"):   # not even registered
        at.switch_page("team.py")

    signed_in_as("ada@team.org")
    at = open_page("team.py")
    at.text_input(key="team_limit_DASHBOARD_BUDGET_USD_PER_DAY").set_value("2.5")
    [save] = [b for b in at.button if b.label == "Save limits"]
    save.click().run()
    assert not at.exception
    with new_store() as store:
        assert budget.limits(store, load_settings()).per_day == 2.5
        [line] = store.audit_entries()
    assert (line.who, line.action, line.subject, line.detail) == (
        "ada@team.org", "limit.set", "DASHBOARD_BUDGET_USD_PER_DAY", "$2.50")
    assert "Per person per day: $2.50 (set on this page" in read(all_text(at)).replace("**", "")

    at.text_input(key="team_limit_DASHBOARD_BUDGET_USD_PER_DAY").set_value("lots")
    [save] = [b for b in at.button if b.label == "Save limits"]
    save.click().run()
    assert any("must be an amount in USD" in str(e.value) for e in at.error)
    with new_store() as store:
        assert budget.limits(store, load_settings()).per_day == 2.5 and len(store.audit_entries()) == 1


class _User(dict):
    is_logged_in = True


@pytest.mark.parametrize("claims, email", [
    ({"email": "ada@team.org", "email_verified": True}, "ada@team.org"),
    ({"email": "ada@team.org"}, "ada@team.org"),                        # not said: taken
    ({"email": "ada@team.org", "email_verified": False, "sub": "s1"}, "s1 (an unverified e-mail from the provider)"),
    ({"preferred_username": "ada@team.org", "sub": "s2"}, "s2 (no e-mail from the provider)"),   # chosen by a person
])
def test_oidc_takes_only_a_verified_email_claim_else_no_role(monkeypatch, claims, email):
    import types

    monkeypatch.setattr(_identity, "st", types.SimpleNamespace(user=_User(claims)))
    assert _identity._oidc_email() == email
    settings = load_settings(env={"DASHBOARD_AUTH": "header", "DASHBOARD_AUTH_PROXY_SECRET": SECRET, **ROLES})
    from core import access

    assert (access.role_of(settings, _identity._oidc_email()) is None) == ("@" not in email)


@pytest.mark.parametrize("headers, email", [
    ([("X-Forwarded-Email", "ada@team.org"), ("X-Dashboard-Proxy-Secret", SECRET)], "ada@team.org"),
    ([("x-forwarded-email", "ada@team.org"), ("x-dashboard-proxy-secret", SECRET)], "ada@team.org"),  # any case
    ([("X-Forwarded-Email", "ada@team.org")], None),                                            # spoofed
    ([("X-Forwarded-Email", "ada@team.org"), ("X-Dashboard-Proxy-Secret", SECRET + "x")], None),
    ([("X-Forwarded-Email", "eve@team.org"), ("X-Forwarded-Email", "ada@team.org"),              # the client's
      ("X-Dashboard-Proxy-Secret", SECRET)], None),                                            # first, appended
    ([("X-Forwarded-Email", "ada@team.org"), ("X-Dashboard-Proxy-Secret", "guess"),
      ("X-Dashboard-Proxy-Secret", SECRET)], None),
    ([("X-Forwarded-Email", " "), ("X-Dashboard-Proxy-Secret", SECRET)], None),
])
def test_the_proxys_email_is_believed_once_beside_its_secret(monkeypatch, headers, email):
    import types

    from streamlit.runtime.context import StreamlitHeaders

    monkeypatch.setattr(_identity, "st", types.SimpleNamespace(context=types.SimpleNamespace(
        headers=StreamlitHeaders(headers))))
    settings = load_settings(env={"DASHBOARD_AUTH": "header", "DASHBOARD_AUTH_PROXY_SECRET": SECRET, **ROLES})
    assert _identity._proxy_email(settings) == email
