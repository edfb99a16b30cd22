"""Who may do what (issue 20, parts 1 and 3): the person a page or a command acts for, their role,
and the one rule that says which role each action needs.

Invariants:
- Roles are ordered: viewer (reads everything) < rater (+ votes) < runner (+ uploads, batches,
  cancel, resume, re-runs) < admin (+ models, archiving, deleting photos, limits, the audit trail).
  A role includes every role below it.
- With `DASHBOARD_AUTH=none` (one person on their own machine) everyone is an admin and the name
  is whatever they typed: there is nothing to check it against. With `oidc` or `header` the name
  is the signed-in e-mail, and the role comes from `DASHBOARD_ROLE_*` only (e-mails, `@domain`s,
  or `*` for anyone signed in); a signed-in person no role names is let in nowhere.
- A refusal is one line naming the action, the role it needs and the setting that grants it.
- The command line acts as `--as` / `DASHBOARD_USER` and follows the same rules (`command_person`).
"""
from __future__ import annotations

import enum
from dataclasses import dataclass

from core.config import ROLE_SETTING_OF, Settings
from core.errors import AccessDenied


class Role(enum.IntEnum):
    VIEWER = 1
    RATER = 2
    RUNNER = 3
    ADMIN = 4

    @property
    def word(self) -> str:
        return self.name.lower()


# the setting that names the people of each role (core.config reads them)
ROLE_SETTINGS = {role: ROLE_SETTING_OF[role.word] for role in Role}

# action -> (the least role that may do it, how a refusal names it)
ACTIONS: dict[str, tuple[Role, str]] = {
    "read": (Role.VIEWER, "Seeing the dashboard"),
    "vote": (Role.RATER, "Voting"),
    "upload": (Role.RUNNER, "Uploading reference photos"),
    "run": (Role.RUNNER, "Sending batches"),
    "cancel": (Role.RUNNER, "Cancelling a batch"),
    "resume": (Role.RUNNER, "Resuming a batch"),
    "models": (Role.ADMIN, "Adding, refreshing or archiving models"),
    "archive": (Role.ADMIN, "Archiving"),
    "budgets": (Role.ADMIN, "Changing spending limits"),
    "audit": (Role.ADMIN, "Reading the audit trail"),
    "store": (Role.ADMIN, "Copying the store"),
}


@dataclass(frozen=True)
class Person:
    """Who a page or a command acts for. `name` is what `created_by` records (None: nobody typed a
    name, sign-in off); `role` None means signed in (or named) but in no role; `signed_in` is True
    when the name was proven (oidc, header), False when typed or declared."""

    name: str | None
    role: Role | None
    signed_in: bool = False

    def may(self, action: str) -> bool:
        needed, _ = ACTIONS[action]
        return self.role is not None and self.role >= needed

    def require(self, action: str) -> None:
        """Raise AccessDenied (one line) unless this person may do `action`."""
        if not self.may(action):
            raise AccessDenied(refusal(self, action))


def refusal(person: Person, action: str) -> str:
    """The line a refused action shows: what, the role it needs, who you are, what grants it."""
    needed, what = ACTIONS[action]
    you = person.name or "nobody signed in"
    have = f"you ({you}) are a {person.role.word}" if person.role else f"you ({you}) have no role"
    return (f"{what} needs the {needed.word} role; {have}. An admin grants it in "
            f"{ROLE_SETTINGS[needed]} (or a role above it).")


def auth_on(settings: Settings) -> bool:
    return settings.auth != "none"


def role_of(settings: Settings, email: str | None) -> Role | None:
    """The highest role whose setting names `email` (case-insensitive), its domain or `*`."""
    if not email:
        return None
    email = email.strip().lower()
    domain = "@" + email.rsplit("@", 1)[-1] if "@" in email else None
    named = dict(settings.roles)
    for role in sorted(Role, reverse=True):
        names = named.get(role.word, ())
        if email in names or (domain and domain in names) or "*" in names:
            return role
    return None


def signed_in(settings: Settings, email: str) -> Person:
    """The person a sign-in (oidc, header) proved."""
    email = email.strip()
    return Person(email, role_of(settings, email), signed_in=True)


def typed(name: str | None) -> Person:
    """Sign-in off: the name typed in the sidebar, an admin (there is no one to check it against)."""
    return Person((name or "").strip()[:100] or None, Role.ADMIN)


def command_person(settings: Settings, name: str | None) -> Person:
    """The person a command acts as: `--as`, else DASHBOARD_USER. With sign-in off anyone may run
    anything (as today); with it on, the command needs a name that a role names."""
    name = (name or settings.user or "").strip() or None
    if not auth_on(settings):
        return typed(name)
    if name is None:
        raise AccessDenied(f"sign-in is on (DASHBOARD_AUTH={settings.auth}): say who runs this command "
                           "with --as EMAIL or DASHBOARD_USER.")
    return Person(name, role_of(settings, name))
