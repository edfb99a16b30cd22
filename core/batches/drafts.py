"""Drafts of the Generate form: what a person has picked so far, kept on the server under an id the
browser holds (a query parameter), so the form survives a page change, a reload and a restart.

Invariants:
- A draft is a convenience, never a source of truth: one that is missing, unreadable or not a JSON
  object loads as empty; the page checks every restored value against what exists now.
- The id is 32 lowercase hex characters (a fresh `new_id()`); anything else is refused, so an id
  from a URL can never name a path outside `<data dir>/drafts/`.
- Writes are atomic (a temporary file renamed over the old one) and bounded (`MAX_DRAFT_BYTES`).
"""
from __future__ import annotations

import json
import os
import re
import tempfile
import uuid
from pathlib import Path
from typing import Any

from core.config import Settings
from core.errors import DashboardError

MAX_DRAFT_BYTES = 256 * 1024
_ID = re.compile(r"^[0-9a-f]{32}$")


class DraftError(DashboardError):
    """A draft that cannot be kept (a bad id, too large, not JSON, the disk refused it)."""


def new_id() -> str:
    return uuid.uuid4().hex


def valid_id(draft_id: str | None) -> bool:
    return bool(draft_id) and bool(_ID.match(draft_id))


def _path(settings: Settings, draft_id: str) -> Path:
    if not valid_id(draft_id):
        raise DraftError(f"{draft_id!r} is not a draft id (32 hex characters).")
    return Path(settings.data_dir) / "drafts" / f"{draft_id}.json"


def load(settings: Settings, draft_id: str) -> dict[str, Any]:
    """The saved values of a draft, or {} when there is none (or it cannot be read)."""
    try:
        text = _path(settings, draft_id).read_text(encoding="utf-8")
        values = json.loads(text)
    except (DraftError, OSError, ValueError):
        return {}
    return values if isinstance(values, dict) else {}


def save(settings: Settings, draft_id: str, values: dict[str, Any]) -> None:
    """Replace the draft with `values` (JSON-serialisable)."""
    path = _path(settings, draft_id)
    try:
        text = json.dumps(values, sort_keys=True, ensure_ascii=False)
    except (TypeError, ValueError) as e:
        raise DraftError(f"the form could not be kept as a draft: {e}") from None
    if len(text.encode("utf-8")) > MAX_DRAFT_BYTES:
        raise DraftError(f"the form is over {MAX_DRAFT_BYTES // 1024} KB and is not kept as a draft; "
                         "it still works until you leave the page.")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".draft-", suffix=".tmp")
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as f:
                f.write(text)
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
    except OSError as e:
        raise DraftError(f"the form could not be kept as a draft ({e.strerror or e}).") from None
