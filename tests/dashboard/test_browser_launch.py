"""One batch per intent, in a real browser (issue 21): two clicks of Send 150 ms apart make one
batch and the fal stand-in counts no duplicate submit; a second tab on the same draft offers "send
the same batch again" as an explicit, priced choice instead of the plain Send. Debian's Chromium through Playwright against
`streamlit run dashboard/app.py`, fal and Supabase Storage replaced by their stand-ins."""
from __future__ import annotations

import os
import subprocess
import sys
import time

import pytest

from core.store import open_store
from tests.dashboard.test_browser import (  # noqa: F401 - fixtures are used by name
    _RUNS,
    FAL_KEY,
    ROOT,
    _Runs,
    _go_link,
    _photo,
    _settled,
    browser_page,
    dashboard,
    fal_url,
)
from tests.standins.fal_server import StandinControl

pytestmark = pytest.mark.browser


def _add_reference(dashboard, tmp_path) -> None:
    photo = tmp_path / "face.jpg"
    photo.write_bytes(_photo())
    env = {**os.environ, "SUPABASE_URL": dashboard.supabase.url, "SUPABASE_KEY": dashboard.supabase.key,
           "SUPABASE_BUCKET": "references", "DASHBOARD_DATA_DIR": str(dashboard.data_dir),
           "DASHBOARD_SECRETS": str(tmp_path / "no-secrets.toml")}
    done = subprocess.run([sys.executable, "-m", "core", "reference", "add", str(photo), "--role", "face"],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr


def _to_send_button(pg, url):
    pg.goto(url)
    pg.get_by_text("fal: live").wait_for()
    _go_link(pg, "Generate")
    pg.get_by_role("combobox", name="Reference photos (for the edit models)").click()
    pg.get_by_role("option", name="face · face.jpg").first.click()
    pg.keyboard.press("Escape")
    _settled(pg)


def test_two_clicks_of_send_150_ms_apart_make_one_batch(dashboard, browser_page, tmp_path):
    pg, hosts = browser_page
    _add_reference(dashboard, tmp_path)
    dashboard.start(live=True)
    _to_send_button(pg, dashboard.url)
    send = pg.get_by_role("button", name="Send 2 requests to fal")
    send.wait_for()
    send.scroll_into_view_if_needed()
    box = send.bounding_box()
    x, y = box["x"] + box["width"] / 2, box["y"] + box["height"] / 2
    pg.mouse.click(x, y)
    pg.wait_for_timeout(150)
    pg.mouse.click(x, y)
    pg.get_by_text("2 of 2 answered by fal: 2 completed").wait_for(timeout=120_000)
    _settled(pg)
    with StandinControl(dashboard.fal) as fal:
        stats = fal.stats()
    with open_store(dashboard.data_dir / "dashboard.db") as st:
        batches = st.list_batches()
    assert len(batches) == 1, [b.name for b in batches]
    assert stats["submissions"] == 2          # one per request: no duplicate submit
    assert hosts == {"127.0.0.1"}

    # a second tab on the same address (the same draft, so the same seeds): it does not offer the
    # plain Send; sending the very same batch again is its own, explicit choice, priced
    second = pg.context.new_page()
    _RUNS[id(second)] = runs = _Runs()
    second.on("websocket", runs.watch)
    second.goto(pg.url)
    second.get_by_text("fal: live").wait_for()
    second.get_by_text("This exact batch was already sent").wait_for()
    _settled(second)
    assert second.get_by_role("button", name="Send 2 requests to fal").count() == 0
    second.get_by_role("button", name="Send the same batch again (about $0.045)").wait_for()
    with StandinControl(dashboard.fal) as fal:
        assert fal.stats()["submissions"] == 2
    with open_store(dashboard.data_dir / "dashboard.db") as st:
        assert len(st.list_batches()) == 1
    # and choosing it sends it, once: the click is run by the button it was drawn as (the draft
    # restoring this tab's current batch later in the run once turned it into the plain Send,
    # which found the first batch and sent nothing)
    second.get_by_role("button", name="Send the same batch again (about $0.045)").click()
    with open_store(dashboard.data_dir / "dashboard.db") as st:
        deadline = time.monotonic() + 120
        while not (len(st.list_batches()) == 2 and st.list_batches()[0].status == "finished"):
            assert time.monotonic() < deadline, [b.status for b in st.list_batches()]
            time.sleep(0.2)
    with StandinControl(dashboard.fal) as fal:
        assert fal.stats()["submissions"] == 4
    second.close()
    _RUNS.pop(id(second), None)
