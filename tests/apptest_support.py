"""Helpers for the dashboard's AppTest tests (tests/test_app_*.py): open a page of the real app,
make test photos, fill the store through core, wait for a detached runner."""
from __future__ import annotations

import io
import time
from pathlib import Path

import streamlit as st
from PIL import Image
from streamlit.testing.v1 import AppTest

from core.photos import references
from core.values import BatchProgress
from core.config import load_settings
from core.store import open_store, runner_alive
from core.blobs import open_storage

ROOT = Path(__file__).resolve().parent.parent
APP = ROOT / "dashboard" / "app.py"
PAGES = ("upload.py", "generate.py", "models.py", "compare.py", "history.py", "review.py", "leaderboard.py",
         "team.py")


def open_page(page: str | None = None, *, user: str | None = None, timeout: float = 60,
              query: dict[str, str] | None = None, clear_caches: bool = True) -> AppTest:
    """The whole app (navigation + sidebar) on `page`, run once, with no exception raised.
    `query` is the address's query parameters (as a reload of a bookmarked address brings them);
    `clear_caches=False` opens a new session of the same server process (a reload)."""
    # caches are process-wide: a previous test's resources must not leak into this one
    if clear_caches:
        st.cache_data.clear()
        st.cache_resource.clear()
    at = AppTest.from_file(str(APP), default_timeout=timeout)
    for k, v in (query or {}).items():
        at.query_params[k] = v
    if user is not None:
        at.session_state["user_name"] = user
    at.run()
    if page is not None:
        at.switch_page(page).run()
    assert_ok(at)
    return at


def assert_ok(at: AppTest) -> None:
    assert not at.exception, [e.value for e in at.exception]


def texts(elements) -> list[str]:
    return [e.value for e in elements]


def read(text: str) -> str:
    """What a person reads of a Markdown source: backslash escapes and the word joiners
    `_format.plain` adds taken out."""
    import re

    return re.sub(r"\\(.)", r"\1", text).replace("\u2060", "")


def shown(elements) -> list[str]:
    """The text of each element, as a person reads it (`read`)."""
    return [read(str(e.value)) for e in elements]


def all_text(at: AppTest) -> str:
    """Every text-bearing element of the page, joined (for "is it said somewhere" checks)."""
    parts: list[str] = []
    for kind in ("title", "header", "subheader", "markdown", "caption", "info", "warning", "error",
                 "success", "code", "text"):
        parts += [str(e.value) for e in getattr(at, kind)]
    return "\n".join(parts)


def photo(colour: str = "red", size: tuple[int, int] = (640, 480), fmt: str = "JPEG") -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", size, colour).save(buf, fmt)
    return buf.getvalue()


def new_store():
    """A new Store on this test's data directory (as a page of the session would see it)."""
    return open_store(load_settings())


def add_reference(colour: str = "red", role: str = "face", created_by: str | None = None):
    s = load_settings()
    s.ensure_dirs()
    return references.add_reference(new_store(), open_storage(s), photo(colour), role=role,
                                    filename=f"{colour}.jpg", created_by=created_by, settings=s)


def wait_finished(batch_id: str, timeout: float = 60.0) -> BatchProgress:
    """Poll the store until the batch's runner process has made every request final."""
    store = new_store()
    deadline = time.monotonic() + timeout
    while True:
        progress = store.batch_progress(batch_id)
        batch = store.get_batch(batch_id)
        if progress.is_finished and not runner_alive(batch):
            return progress
        if time.monotonic() > deadline:
            raise AssertionError(f"batch {batch_id} not finished after {timeout} s: {progress.summary()}")
        time.sleep(0.2)
