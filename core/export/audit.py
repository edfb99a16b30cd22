"""The audit trail as CSV (Team page, `python -m core export --audit`): one row per line of the
trail, newest first, every text cell spreadsheet-safe (`safe_cell`: a name or a batch name that
starts like a formula is never run as one)."""
from __future__ import annotations

import csv
import io

from core.store import Store, safe_cell

COLUMNS = ("at", "who", "action", "subject", "detail", "estimated_usd")


def rows(store: Store, *, action: str | None = None, who: str | None = None) -> list[list[str]]:
    out = []
    for e in store.audit_entries(action=action, who=who):
        out.append([e.at, safe_cell(e.who or ""), e.action, safe_cell(e.subject), safe_cell(e.detail),
                    "" if e.usd is None else f"{e.usd:.4f}"])
    return out


def to_csv_bytes(store: Store, *, action: str | None = None, who: str | None = None) -> bytes:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\r\n")
    writer.writerow(COLUMNS)
    writer.writerows(rows(store, action=action, who=who))
    return buffer.getvalue().encode("utf-8")
