"""The audit trail and the limits an admin set (tables `audit` and `limits`, migration m021).

Invariants:
- An audit line is only ever added: nothing updates or deletes one.
- A line is written by the service that did the thing, after it was done (a refused action
  writes none); `who` is the person's recorded name (None: sign-in off and no name typed).
- A limit row replaces the configured setting of that name; its `usd` None means "no limit"; no
  row means the setting applies (core.batches.budget.limits).
"""
from __future__ import annotations

from core.store._sql import _Base, build
from core.store.boundary import sqlite_boundary
from core.values import AuditEntry, new_id, now

# the limits an admin may set on the dashboard, by their setting's name
LIMIT_NAMES = ("DASHBOARD_BUDGET_USD_PER_BATCH", "DASHBOARD_BUDGET_USD_PER_DAY", "DASHBOARD_CONFIRM_ABOVE_USD")


class AuditMixin(_Base):
    """Rows of `audit` and `limits`."""

    @sqlite_boundary
    def add_audit(self, *, who: str | None, action: str, subject: str, detail: str = "",
                  usd: float | None = None) -> AuditEntry:
        entry = {"id": new_id(), "at": now(), "who": who, "action": action, "subject": subject,
                 "detail": detail, "usd": usd}
        with self._write_transaction():
            self._insert("audit", entry)
        return AuditEntry(**entry)

    @sqlite_boundary
    def audit_entries(self, *, limit: int | None = None, action: str | None = None,
                      who: str | None = None) -> list[AuditEntry]:
        """Newest first; `action` matches its start ("model." is every model action)."""
        clauses, params = [], []
        if action:
            clauses.append("action LIKE ? ESCAPE '\\'")
            params.append(action.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%")
        if who:
            clauses.append("who = ? COLLATE NOCASE")
            params.append(who)
        sql = "SELECT * FROM audit" + (" WHERE " + " AND ".join(clauses) if clauses else "") + " ORDER BY at DESC, id"
        if limit is not None:
            sql += f" LIMIT {int(limit)}"
        return [build(AuditEntry, row) for row in self._rows(sql, params)]

    @sqlite_boundary
    def set_limit(self, name: str, usd: float | None, *, by: str | None) -> None:
        """An admin's limit (`usd` None: no limit), recorded in the audit trail in the same write."""
        if name not in LIMIT_NAMES:
            raise ValueError(f"not a limit: {name}")
        with self._write_transaction():
            self.db.execute("INSERT INTO limits (name, usd, set_by, set_at) VALUES (?, ?, ?, ?) "
                            "ON CONFLICT (name) DO UPDATE SET usd = excluded.usd, set_by = excluded.set_by, "
                            "set_at = excluded.set_at", [name, usd, by, now()])
            self._insert("audit", {"id": new_id(), "at": now(), "who": by, "action": "limit.set", "subject": name,
                                   "detail": "no limit" if usd is None else f"${usd:,.2f}", "usd": None})

    @sqlite_boundary
    def clear_limit(self, name: str, *, by: str | None) -> None:
        """Back to the configured setting; recorded in the audit trail in the same write."""
        with self._write_transaction():
            gone = self.db.execute("DELETE FROM limits WHERE name = ?", [name]).rowcount
            if gone:
                self._insert("audit", {"id": new_id(), "at": now(), "who": by, "action": "limit.cleared",
                                       "subject": name, "detail": "back to the configured value", "usd": None})

    @sqlite_boundary
    def limits_set(self) -> dict[str, float | None]:
        """The limits an admin set, by name (absent: the setting applies)."""
        return {row["name"]: row["usd"] for row in self._rows("SELECT name, usd FROM limits")}
