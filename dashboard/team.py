"""Team: who may do what, the spending limits in effect (admins change them here), and the audit
trail with its CSV. Listed for admins only (app.py); a direct visit by anyone else is refused."""
from __future__ import annotations

import streamlit as st

from core import access
from core.batches import budget
from core.errors import DashboardError
from core.export import audit
from core.store.audit import LIMIT_NAMES
from dashboard import _format, _identity, _onboarding, _resources

st.title("Team")
if not _identity.allowed("audit"):
    st.stop()
settings, store = _resources.settings(), _resources.store()
who = _identity.person()

st.subheader("Who may do what")
if not access.auth_on(settings):
    st.info("Sign-in is off (`DASHBOARD_AUTH=none`): whoever reaches this dashboard may do everything, "
            "and names are what people type. Turn sign-in on to give each person a role.",
            icon=":material/lock_open:")
else:
    st.caption(f"Sign-in: **{settings.auth}**. Roles come from the configuration; a role includes every "
               "role above it in this list.")
    named = dict(settings.roles)
    for role in access.Role:
        names = ", ".join(named.get(role.word, ())) or "nobody"
        st.markdown(f"**{role.word}** (`{access.ROLE_SETTINGS[role]}`): {_format.plain(names)}")

st.subheader("Spending limits")
in_effect = budget.limits(store, settings)
configured = {"DASHBOARD_BUDGET_USD_PER_BATCH": settings.budget_usd_per_batch,
              "DASHBOARD_BUDGET_USD_PER_DAY": settings.budget_usd_per_day,
              "DASHBOARD_CONFIRM_ABOVE_USD": settings.confirm_above_usd}
current = {"DASHBOARD_BUDGET_USD_PER_BATCH": in_effect.per_batch, "DASHBOARD_BUDGET_USD_PER_DAY": in_effect.per_day,
           "DASHBOARD_CONFIRM_ABOVE_USD": in_effect.confirm_above}
WORDS = {"DASHBOARD_BUDGET_USD_PER_BATCH": "Per batch", "DASHBOARD_BUDGET_USD_PER_DAY": "Per person per day",
         "DASHBOARD_CONFIRM_ABOVE_USD": "Send asks first above"}


def _usd(value: float | None) -> str:
    return "no limit" if value is None else f"${value:,.2f}"


for name in LIMIT_NAMES:
    where = "set on this page" if name in in_effect.set_on_dashboard else "from the configuration"
    st.markdown(f"**{WORDS[name]}**: {_usd(current[name])} ({where}; configured: {_usd(configured[name])})")

with st.form("limits"):
    st.caption("Leave a box empty for no limit. Every change is in the audit trail.")
    typed = {}
    for name in LIMIT_NAMES:
        value = current[name]
        typed[name] = st.text_input(WORDS[name] + " (USD)", value="" if value is None else f"{value:g}",
                                    key=f"team_limit_{name}")
    save, back = st.columns(2)
    saved = save.form_submit_button("Save limits", type="primary", icon=":material/save:")
    restored = back.form_submit_button("Back to the configured limits", icon=":material/undo:")
if saved or restored:
    try:
        who.require("budgets")
        for name in LIMIT_NAMES:
            if restored:
                store.clear_limit(name, by=who.name)
                continue
            amount = budget.parse_limit(name, typed[name])
            if name == "DASHBOARD_CONFIRM_ABOVE_USD" and amount is None:
                store.clear_limit(name, by=who.name)   # always some threshold: blank is the configured one
            elif amount != current[name]:
                store.set_limit(name, amount, by=who.name)
    except DashboardError as e:
        _format.show_error(e)
    else:
        st.rerun()

st.subheader("Audit trail")
actions = ["every action", "batch.", "request.", "model.", "photo.", "limit."]
pick, person_col = st.columns([1, 2])
action = pick.selectbox("Action", actions, key="team_audit_action")
person = person_col.text_input("Person", key="team_audit_who", placeholder="e-mail or name")
chosen = None if action == "every action" else action
entries = store.audit_entries(action=chosen, who=person.strip() or None, limit=500)
if not entries:
    st.info("Nothing recorded yet: sends, resumes, cancels, model and photo changes and limit changes "
            "appear here.", icon=":material/receipt_long:")
else:
    import pandas as pd

    frame = pd.DataFrame([{"at": _format.local_time(e.at), "who": e.who or "", "action": e.action,
                           "subject": e.subject, "detail": e.detail,
                           "estimate": "" if e.usd is None else f"${e.usd:,.3f}"} for e in entries])
    st.dataframe(_format.table(frame), hide_index=True, width="stretch")
    if len(entries) == 500:
        st.caption("The newest 500 shown; the CSV has every line.")
st.download_button("Download the audit trail (CSV)", data=audit.to_csv_bytes(store, action=chosen,
                                                                           who=person.strip() or None),
                   file_name="audit.csv", mime="text/csv", icon=":material/download:", key="team_audit_csv")

_onboarding.next_step("history.py", "open a batch in History", "Every request of a batch named here is in History.")
