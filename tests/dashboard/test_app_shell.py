"""The app shell: every page opens through the navigation, and the sidebar tells the mode, the
storage and where data lives without ever showing a secret."""
from __future__ import annotations

import pytest

from tests.apptest_support import PAGES, all_text, open_page, texts


@pytest.mark.parametrize("page", PAGES)
def test_every_page_renders_without_exception_and_with_its_title(page):
    """A new user can open each page on an empty store: no traceback, the page's title shows."""
    at = open_page(page)
    assert texts(at.title), f"{page} shows no title"


def test_sidebar_says_dry_run_storage_and_data_dir_without_key(isolated_env):
    """With no FAL_KEY the sidebar says plainly that nothing is sent, and where data lives."""
    at = open_page()
    sidebar = "\n".join(texts(at.sidebar.warning) + texts(at.sidebar.caption))
    assert "Dry run" in sidebar and "nothing is sent" in sidebar
    assert "Storage: local" in sidebar
    assert str(isolated_env) in sidebar


def test_sidebar_shows_live_mode_and_supabase_but_never_the_secrets(monkeypatch):
    """With keys set the sidebar says live / supabase; neither key appears anywhere on the page."""
    monkeypatch.setenv("FAL_KEY", "fal-secret-key-0123456789")
    monkeypatch.setenv("SUPABASE_URL", "http://127.0.0.1:9")
    monkeypatch.setenv("SUPABASE_KEY", "supabase-secret-key-abcdef")
    monkeypatch.setenv("SUPABASE_BUCKET", "refs")
    at = open_page("history.py")
    sidebar = "\n".join(texts(at.sidebar.success) + texts(at.sidebar.caption))
    assert "live" in sidebar
    assert "supabase (bucket refs)" in sidebar
    page_text = all_text(at) + sidebar
    assert "fal-secret-key" not in page_text and "supabase-secret-key" not in page_text


def test_display_name_is_remembered_across_pages():
    """The name typed once in the sidebar stays for the session while moving between pages."""
    at = open_page()
    at.sidebar.text_input(key="user_name").set_value("Ana").run()
    at.switch_page("history.py").run()
    assert at.sidebar.text_input(key="user_name").value == "Ana"
    assert at.session_state["user_name"] == "Ana"


def test_a_read_only_data_directory_is_said_in_the_sidebar(monkeypatch):
    """The store opens read-only when the data directory cannot be written (tests/test_cli_bad_input.py
    makes one for real); every page then says so instead of failing on the first write."""
    from core.store import Store

    monkeypatch.setattr(Store, "read_only", property(lambda self: True))
    at = open_page("history.py")
    assert not at.exception
    assert any("Read-only" in w.value for w in at.sidebar.warning)
