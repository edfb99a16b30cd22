"""One team store, two dashboards, in a real browser (issue 19): two `streamlit run` processes
with separate data directories on one Postgres and one Supabase Storage stand-in, as two hosts
would be. A batch sent from the first is watched from the second, its results shown there,
reviewed there, and the vote is in the store both read; a second batch sent from the first is
cancelled from the second. The fal stand-in counts what was paid: once per request."""
from __future__ import annotations

import time

import pytest

from core.store import open_store
from tests.dashboard.test_browser import (  # noqa: F401 - fixtures are used by name
    _RUNS,
    Dashboard,
    _go_link,
    _images_loaded,
    _name_box,
    _page_ok,
    _Runs,
    _settled,
    browser_page,
    fal_url,
)
from tests.dashboard.test_browser_launch import _add_reference, _to_send_button
from tests.standins.fal_server import StandinControl

pytestmark = pytest.mark.browser


@pytest.fixture
def two_dashboards(tmp_path, fal_url, supabase_standin, pg_url, monkeypatch):
    monkeypatch.setenv("DATABASE_URL", pg_url)   # both processes inherit it
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    a, b = Dashboard(tmp_path / "a", fal_url, supabase_standin), Dashboard(tmp_path / "b", fal_url, supabase_standin)
    try:
        yield a, b, pg_url
    finally:
        a.close()
        b.close()


def _second_page(pg):
    other = pg.context.new_page()
    _RUNS[id(other)] = runs = _Runs()
    other.on("websocket", runs.watch)
    other.set_default_timeout(60_000)
    return other


def test_a_batch_sent_on_one_dashboard_is_watched_reviewed_and_cancelled_on_another(two_dashboards, browser_page,
                                                                                     tmp_path):
    a, b, url = two_dashboards
    pg, hosts = browser_page
    _add_reference(a, tmp_path)          # kept in the shared bucket, its row in the shared store
    a.start(live=True)
    b.start(live=True)
    fal = StandinControl(a.fal)
    fal.hold_submissions_after(0)        # fal holds the batch until the second dashboard watches it

    # on A: the batch is sent
    _to_send_button(pg, a.url)
    pg.get_by_role("button", name="Send 2 requests to fal").click()
    pg.get_by_text("of 2 answered by fal").first.wait_for()

    # on B: the same batch, running, watched; its results appear there once fal answers
    other = _second_page(pg)
    other.goto(b.url)
    _name_box(other).fill("Bea")
    _name_box(other).press("Enter")
    other.wait_for_function("() => location.search.includes('user=Bea')")
    _go_link(other, "Generate")
    other.get_by_text("Unfinished batches (1)").wait_for()
    other.get_by_role("button", name="Watch").click()
    other.get_by_text("of 2 answered by fal").first.wait_for()
    fal.release()
    other.get_by_text("2 of 2 answered by fal: 2 completed").wait_for(timeout=120_000)
    _images_loaded(other, 2)
    _page_ok(other, "generate on the second dashboard")

    # on B: reviewed; the vote is in the one store
    _go_link(other, "Review")
    other.get_by_text("Group 1 of 1").wait_for()
    _images_loaded(other, 2)
    other.get_by_role("button", name="Left better").click()
    other.get_by_text("Left was").wait_for()
    with open_store(url) as st:
        (vote,) = st.list_votes()
        assert vote.rater == "Bea"
        (first,) = st.list_batches()

    # on A, in a second tab on the same draft: the same batch again (an explicit, priced
    # choice), held by fal; cancelled on B
    fal.hold_submissions_after(0)
    again = _second_page(pg)
    again.goto(pg.url)
    again.get_by_text("fal: live").wait_for()
    again.get_by_text("This exact batch was already sent").wait_for()
    _settled(again)
    again.get_by_role("button", name="Send the same batch again (about $0.045)").click()
    with open_store(url) as st:
        deadline = time.monotonic() + 60
        while len(st.list_batches()) < 2:
            assert time.monotonic() < deadline, "the second batch was not written"
            time.sleep(0.1)
        second = next(x for x in st.list_batches() if x.id != first.id)
    other.goto(b.url + "/?user=Bea")
    _go_link(other, "Generate")
    other.get_by_text("Unfinished batches (1)").wait_for()
    other.get_by_role("button", name="Watch").click()
    other.get_by_role("button", name="Cancel batch").click()
    fal.release()
    with open_store(url) as st:
        deadline = time.monotonic() + 90
        while st.get_batch(second.id).status != "cancelled":
            assert time.monotonic() < deadline, st.get_batch(second.id)
            time.sleep(0.2)
        assert st.get_batch(first.id).status == "finished"
        assert {r.status for r in st.batch_requests(first.id)} == {"completed"}
    _settled(other)
    _page_ok(other, "generate after the cancel")
    stats = fal.stats()
    # each request of the first batch paid once; the second's, if fal took them before the
    # cancel, once each too (the runner cancels them at fal)
    assert 2 <= stats["submissions"] <= 4 and all(n <= 2 for n in stats["by_hash"].values())
    assert hosts <= {"127.0.0.1"}, hosts
    for page in (other, again):
        page.close()
        _RUNS.pop(id(page), None)
    fal.close()
