"""Resuming orphaned batches: once per server process, batches a runner left unfinished without a
stated reason (the machine restarted) get a runner again, unless `auto_resume` is off.

The rule of what to resume is `core.batches.service.resume_orphans`; this module only makes it run
once per process (a process-wide cache) and words the outcome for the sidebar.
"""
from __future__ import annotations

import streamlit as st

from core.config import Settings
from core.errors import DashboardError
from dashboard import _resources


@st.cache_resource(show_spinner=False)
def _resume_orphans(db_path: str, _settings: Settings) -> str:
    from core.batches import service
    from core.store import open_store

    if not _settings.auto_resume:
        return ""
    store = open_store(db_path)
    try:
        started = service.resume_orphans(store, _settings)
    except (DashboardError, OSError) as e:
        return f"Unfinished batches were not resumed at start ({e}); resume them on Generate."
    finally:
        store.close()
    if not started:
        return ""
    return (f"At start, {len(started)} unfinished batch{'es' if len(started) != 1 else ''} "
            "got a runner again: see *Unfinished batches* on Generate.")


def resume_orphans_once() -> str:
    """Once per server process: batches left unfinished without a stated reason (the machine
    restarted) get a runner again, unless `auto_resume` is off. Returns what to tell, or ""."""
    s = _resources.settings()
    return _resume_orphans(_resources.store_location(s), s)
