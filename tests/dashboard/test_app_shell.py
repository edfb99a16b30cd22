"""The app shell: every page opens through the navigation, and the sidebar tells the mode, the
storage and where data lives without ever showing a secret."""
from __future__ import annotations

import pytest

from tests.apptest_support import PAGES, all_text, open_page, texts


from core.evaluation import review
from tests.apptest_support import (assert_ok, new_store)
from tests.review_support import SCHNELL, completed_batch


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
    assert "supabase (bucket refs, results in results)" in sidebar
    page_text = all_text(at) + sidebar
    assert "fal-secret-key" not in page_text and "supabase-secret-key" not in page_text


def test_on_the_team_store_the_sidebar_names_its_server_but_never_its_password(pg_url, monkeypatch):
    """On Postgres the sidebar says which store this is (every host on it shows the same
    history); the password DATABASE_URL carries appears nowhere on the page."""
    user, rest = pg_url.split("://", 1)[1].split("@", 1)
    with_password = f"postgresql://{user}:hunter2-not-shown@{rest}"
    monkeypatch.setenv("DATABASE_URL", with_password)
    at = open_page("history.py")
    sidebar = "\n".join(texts(at.sidebar.caption))
    assert f"Team store: postgresql://{rest.split('/')[0]}/" in sidebar.replace("`", "")
    assert "hunter2" not in all_text(at) + sidebar


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


def _page_links(at) -> list[str]:
    return [e.proto.label for e in at.get("page_link")]


# what a new teammate reads on this page

def test_every_page_ends_with_its_next_step_and_no_table_shows_none():
    """With a dry run recorded and a vote cast, each page renders, links to the next step, and no
    table cell or text reads "None"."""
    batch, _, _ = completed_batch(options={"subject": ["Woman", "Man"]})
    new_store().record_request(endpoint=SCHNELL, payload={"prompt": "p", "seed": 1}, prompt="p", seed=1,
                             estimated_cost=None)    # no cost, no time, no author: empty cells
    store = new_store()
    item = review.queue(store, batch.id, "ana").next
    review.record_item_vote(store, item, rater="ana", verdict="left")
    nexts = {"upload.py": "Generate", "generate.py": "History", "models.py": "Generate", "compare.py": "Review",
             "history.py": "Compare", "review.py": "Leaderboard", "leaderboard.py": "Generate",
             "team.py": "History"}
    for page in (*PAGES, "review.py", "leaderboard.py"):
        at = open_page(page, user="bo")
        for toggle in ("hist_all_columns", "lb_all_columns", "cmp_metrics_all"):
            if any(t.key == toggle for t in at.toggle):
                at.toggle(key=toggle).set_value(True).run()
        assert_ok(at)
        links = _page_links(at)
        assert any(link.startswith("Next:") and nexts[page].lower() in link.lower() for link in links), \
            (page, links)
        for frame in at.dataframe:
            values = frame.value.astype(str).to_numpy().ravel().tolist()
            assert "None" not in values, (page, frame.value.columns.tolist())
        assert "None" not in all_text(at).replace("None of", ""), page
