"""Who may do what (core/access.py, issue 20 parts 1, 3, 4 and 5): roles from the settings, one
refusal line naming the role and the setting that grants it; the command line acting as `--as` /
DASHBOARD_USER by the same rules (refused before anything is written or sent: the fal stand-in
counts 0 submits); the audit trail of sends, resumes, cancels, model, photo and limit changes,
with its spreadsheet-safe CSV; limits an admin set replacing the configured ones; and sending
in-doubt requests again checked against the limits. Real store files, real `python -m core`
processes, the fal stand-in over HTTP."""
from __future__ import annotations

import csv
import io
import json
import os
import subprocess
import sys

import pytest

from core import access
from core.batches import budget, service
from core.config import REPO_ROOT, load_settings
from core.errors import AccessDenied, BudgetExceeded, ConfigError
from core.export import audit
from core.store import open_store
from core.values import RequestStatus

SECRET = "a-proxy-secret-of-20-chars"
ROLES = {"DASHBOARD_ROLE_VIEWERS": "@team.org", "DASHBOARD_ROLE_RATERS": "rita@team.org",
         "DASHBOARD_ROLE_RUNNERS": "rune@team.org, RUTH@Team.org", "DASHBOARD_ROLE_ADMINS": "ada@team.org"}
ON = {"DASHBOARD_AUTH": "header", "DASHBOARD_AUTH_PROXY_SECRET": SECRET, **ROLES}


def _settings(tmp_path, **env):
    return load_settings(env={"DASHBOARD_DATA_DIR": str(tmp_path / "data"), **env}, secrets_path=tmp_path / "none")


# -- roles ------------------------------------------------------------------------------------------

@pytest.mark.parametrize("email, role", [
    ("ada@team.org", access.Role.ADMIN), ("rune@team.org", access.Role.RUNNER),
    ("ruth@TEAM.org", access.Role.RUNNER),                        # e-mails compare without case
    ("rita@team.org", access.Role.RATER), ("vic@team.org", access.Role.VIEWER),   # by its domain
    ("eve@elsewhere.org", None), ("team.org", None), ("", None),
])
def test_a_person_has_the_highest_role_that_names_them(tmp_path, email, role):
    assert access.role_of(_settings(tmp_path, **ON), email) == role


def test_star_names_anyone_signed_in(tmp_path):
    s = _settings(tmp_path, **{**ON, "DASHBOARD_ROLE_VIEWERS": "*"})
    assert access.role_of(s, "eve@elsewhere.org") == access.Role.VIEWER


def test_a_role_includes_every_role_below_it_and_a_refusal_names_the_role_and_its_setting():
    viewer, runner = access.Person("vic@team.org", access.Role.VIEWER), access.Person("r@t.org", access.Role.RUNNER)
    assert viewer.may("read") and not viewer.may("vote") and not viewer.may("run")
    assert runner.may("vote") and runner.may("run") and runner.may("cancel") and not runner.may("models")
    with pytest.raises(AccessDenied) as e:
        runner.require("budgets")
    assert str(e.value) == ("Changing spending limits needs the admin role; you (r@t.org) are a runner. An admin "
                            "grants it in DASHBOARD_ROLE_ADMINS (or a role above it).")
    assert "have no role" in access.refusal(access.Person("eve@x.org", None), "read")


def test_sign_in_off_is_everyone_an_admin_under_the_name_they_typed():
    person = access.typed("  Ana ")
    assert person == access.Person("Ana", access.Role.ADMIN) and person.may("budgets")
    assert access.typed("").name is None


@pytest.mark.parametrize("env, says", [
    ({"DASHBOARD_AUTH": "ldap"}, "DASHBOARD_AUTH must be one of none, oidc, header, got 'ldap'."),
    ({"DASHBOARD_AUTH": "header", "DASHBOARD_AUTH_PROXY_SECRET": SECRET}, "no DASHBOARD_ROLE_VIEWERS/RATERS"),
    ({"DASHBOARD_AUTH": "header", **ROLES}, "needs DASHBOARD_AUTH_PROXY_SECRET"),
    ({"DASHBOARD_AUTH": "header", "DASHBOARD_AUTH_PROXY_SECRET": "short", **ROLES}, "16 characters or more"),
    ({"DASHBOARD_AUTH": "oidc", **ROLES}, "needs an [auth] section in"),
    ({"DASHBOARD_ROLE_RATERS": "bob"}, "'bob' is none of them"),
    ({"DASHBOARD_ROLE_RATERS": "a@b.com, @nodot"}, "'@nodot' is none of them"),
    ({**ON, "DASHBOARD_AUTH_HEADER": "X Email"}, "DASHBOARD_AUTH_HEADER must be an HTTP header name"),
])
def test_a_bad_sign_in_setting_is_one_line(tmp_path, env, says):
    with pytest.raises(ConfigError) as e:
        _settings(tmp_path, **env)
    assert says in str(e.value) and "\n" not in str(e.value)


def test_oidc_needs_streamlits_auth_section_and_takes_it_from_the_secrets_file(tmp_path):
    secrets = tmp_path / "secrets.toml"
    secrets.write_text('[auth]\nredirect_uri = "http://127.0.0.1:8501/oauth2callback"\ncookie_secret = "x"\n')
    with pytest.raises(ConfigError, match="with client_id, client_secret, server_metadata_url"):
        load_settings(env={"DASHBOARD_AUTH": "oidc", **ROLES}, secrets_path=secrets)
    secrets.write_text(secrets.read_text() + 'client_id = "c"\nclient_secret = "s"\n'
                       'server_metadata_url = "https://id.example/.well-known/openid-configuration"\n')
    assert load_settings(env={"DASHBOARD_AUTH": "oidc", **ROLES}, secrets_path=secrets).auth == "oidc"


# -- the command line ---------------------------------------------------------------------------------

def _cli(*args, env=None):
    return subprocess.run([sys.executable, "-m", "core", *args], cwd=REPO_ROOT, env={**os.environ, **(env or {})},
                          capture_output=True, text=True, timeout=120)


def _plan_file(tmp_path, seeds=(1, 2)):
    path = tmp_path / "plan.json"
    path.write_text(json.dumps({"name": "=cmd|' /C calc'!A0", "models": ["fal-ai/flux/schnell"],
                                "options": {"pose": ["Standing"]}, "seeds": list(seeds)}))
    return path


def _store():
    return open_store(load_settings())


def test_with_sign_in_on_a_command_names_its_person_and_a_viewer_sends_nothing(fal_standin, tmp_path):
    plan = str(_plan_file(tmp_path))
    nobody = _cli("batch", "run", plan, env=ON)
    assert nobody.returncode == 2 and nobody.stderr.splitlines() == [
        "error: sign-in is on (DASHBOARD_AUTH=header): say who runs this command with --as EMAIL or DASHBOARD_USER."]
    viewer = _cli("--as", "vic@team.org", "batch", "run", plan, env=ON)
    assert viewer.returncode == 2 and viewer.stderr.splitlines() == [
        "error: Sending batches needs the runner role; you (vic@team.org) are a viewer. An admin grants it in "
        "DASHBOARD_ROLE_RUNNERS (or a role above it)."]
    stranger = _cli("batch", "status", env={**ON, "DASHBOARD_USER": "eve@elsewhere.org"})
    assert stranger.returncode == 2 and "you (eve@elsewhere.org) have no role" in stranger.stderr
    posing = _cli("--as", "rune@team.org", "batch", "run", plan, "--by", "ada@team.org", env=ON)
    assert posing.returncode == 2 and "--by cannot name someone else (ada@team.org)" in posing.stderr
    assert fal_standin.submissions == 0
    with _store() as store:
        assert store.list_batches() == [] and store.audit_entries() == []

    ran = _cli("batch", "run", plan, "--quiet", env={**ON, "DASHBOARD_USER": "Rune@team.org"})
    assert ran.returncode == 0, ran.stderr
    assert fal_standin.submissions == 2
    with _store() as store:
        [batch] = store.list_batches()
        [sent] = store.audit_entries()
    assert batch.created_by == "Rune@team.org"          # the person, as they named themselves
    assert (sent.who, sent.action, sent.subject, sent.usd) == ("Rune@team.org", "batch.sent", batch.id,
                                                              pytest.approx(0.006))
    # a viewer reads; an admin reads the audit trail, and only an admin
    assert _cli("--as", "vic@team.org", "batch", "status", env=ON).returncode == 0
    out = tmp_path / "audit.csv"
    assert _cli("--as", "rune@team.org", "export", "--audit", "--out", str(out), env=ON).returncode == 2
    done = _cli("--as", "ada@team.org", "export", "--audit", "--out", str(out), env=ON)
    assert done.returncode == 0, done.stderr
    rows = list(csv.reader(io.StringIO(out.read_text())))
    assert rows[0] == list(audit.COLUMNS) and rows[1][1:5] == [
        "Rune@team.org", "batch.sent", batch.id, "'=cmd|' /C calc'!A0: 2 requests"]   # never a formula


def test_with_sign_in_off_commands_run_as_before_and_record_by_or_dashboard_user(fal_standin, tmp_path):
    plan = str(_plan_file(tmp_path))
    assert _cli("batch", "run", plan, "--quiet", "--by", "ana").returncode == 0
    assert _cli("batch", "run", str(_plan_file(tmp_path, seeds=(3,))), "--quiet",
                env={"DASHBOARD_USER": "bo"}).returncode == 0
    with _store() as store:
        assert sorted(b.created_by for b in store.list_batches()) == ["ana", "bo"]


# -- the audit trail --------------------------------------------------------------------------------

def test_the_audit_trail_records_who_did_what_and_a_refused_action_records_nothing(fal_standin, tmp_path,
                                                                                  monkeypatch):
    settings = load_settings()
    settings.ensure_dirs()
    with open_store(settings) as store:
        plan = service.plan_batch({"name": "b", "models": ["fal-ai/flux/schnell"], "options": {},
                                   "seeds": [1, 2, 3]}, store=store)
        batch = service.record(store, plan, settings, created_by="ana")
        service.cancel(store, batch.id, settings, by="bo")
        store.set_limit("DASHBOARD_BUDGET_USD_PER_DAY", 5.0, by="ada")
        store.set_limit("DASHBOARD_BUDGET_USD_PER_BATCH", None, by="ada")
        store.clear_limit("DASHBOARD_BUDGET_USD_PER_DAY", by="ada")
        store.clear_limit("DASHBOARD_BUDGET_USD_PER_DAY", by="ada")     # nothing to clear: no line
        monkeypatch.setenv("DASHBOARD_BUDGET_USD_PER_DAY", "0.001")   # the admin cleared theirs: this applies
        with pytest.raises(BudgetExceeded):
            service.record(store, plan, load_settings(), created_by="ana")
        entries = store.audit_entries()
        assert [(e.who, e.action, e.subject, e.detail) for e in reversed(entries)] == [
            ("ana", "batch.sent", batch.id, "b: 3 requests"),
            ("bo", "batch.cancelled", batch.id, "b"),
            ("ada", "limit.set", "DASHBOARD_BUDGET_USD_PER_DAY", "$5.00"),
            ("ada", "limit.set", "DASHBOARD_BUDGET_USD_PER_BATCH", "no limit"),
            ("ada", "limit.cleared", "DASHBOARD_BUDGET_USD_PER_DAY", "back to the configured value"),
        ]
        assert [e.action for e in store.audit_entries(action="limit.")] == ["limit.cleared", "limit.set", "limit.set"]
        assert [e.action for e in store.audit_entries(who="BO")] == ["batch.cancelled"]
        assert store.audit_entries(action="%") == []          # a filter is a prefix, not a pattern


def test_limits_an_admin_set_replace_the_configured_ones(fal_standin, tmp_path, monkeypatch):
    monkeypatch.setenv("DASHBOARD_BUDGET_USD_PER_BATCH", "100")
    settings = load_settings()
    settings.ensure_dirs()
    with open_store(settings) as store:
        plan = service.plan_batch({"name": "b", "models": ["fal-ai/flux/schnell"], "options": {},
                                   "seeds": [1, 2, 3]}, store=store)                      # $0.009
        store.set_limit("DASHBOARD_BUDGET_USD_PER_BATCH", 0.005, by="ada")
        assert budget.limits(store, settings).per_batch == 0.005
        with pytest.raises(BudgetExceeded, match="over the per-batch limit of \\$0.005"):
            service.record(store, plan, settings, created_by="ana")
        store.set_limit("DASHBOARD_BUDGET_USD_PER_BATCH", None, by="ada")   # an admin lifted it
        assert budget.limits(store, settings).per_batch is None
        store.set_limit("DASHBOARD_CONFIRM_ABOVE_USD", 0.0, by="ada")
        assert budget.needs_confirmation(settings, 0.001, store) and not budget.needs_confirmation(settings, 0.001)
        store.clear_limit("DASHBOARD_BUDGET_USD_PER_BATCH", by="ada")
        assert budget.limits(store, settings).per_batch == 100.0
        service.record(store, plan, settings, created_by="ana")
    assert fal_standin.submissions == 0           # recording sends nothing; the checks read only


def test_an_admins_typed_limit_is_checked_like_the_setting():
    assert budget.parse_limit("DASHBOARD_BUDGET_USD_PER_DAY", " $12.5 ") == 12.5
    assert budget.parse_limit("DASHBOARD_BUDGET_USD_PER_DAY", "") is None
    assert budget.parse_limit("DASHBOARD_CONFIRM_ABOVE_USD", "0") == 0.0
    for bad in ("0", "-1", "12,50", "lots", "1e9"):
        with pytest.raises(ConfigError):
            budget.parse_limit("DASHBOARD_BUDGET_USD_PER_DAY", bad)


def test_sending_in_doubt_requests_again_is_checked_against_the_limits(fal_standin, tmp_path, monkeypatch):
    settings = load_settings()
    settings.ensure_dirs()
    with open_store(settings) as store:
        plan = service.plan_batch({"name": "b", "models": ["fal-ai/flux/schnell"], "options": {},
                                   "seeds": [1, 2, 3, 4]}, store=store)                   # $0.012
        batch = service.record(store, plan, settings, created_by="ana")
        ids = [r.id for r in store.batch_requests(batch.id)]
        for rid in ids:   # every submit left and was never answered: all four in doubt, each spent
            store.db.execute("UPDATE requests SET status = ?, submitted_at = created_at WHERE id = ?",
                             [RequestStatus.IN_DOUBT.value, rid])
        monkeypatch.setenv("DASHBOARD_BUDGET_USD_PER_BATCH", "0.02")
        limited = load_settings()
        with pytest.raises(BudgetExceeded, match="already spent \\$0.012 \\(\\$0.024 in all\\)"):
            service.send_again(store, batch.id, limited, by="ana")      # all four again: $0.012 more
        assert [r.status for r in store.batch_requests(batch.id)] == [RequestStatus.IN_DOUBT] * 4
        assert store.audit_entries(action="batch.sent_again") == []
        assert fal_standin.submissions == 0
        moved = service.send_again(store, batch.id, limited, by="ana", request_ids=ids[:2])   # $0.006 more
        assert moved == ids[:2]
        [again] = store.audit_entries(action="batch.sent_again")
        assert (again.who, again.usd) == ("ana", pytest.approx(0.006))
