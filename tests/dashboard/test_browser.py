"""A new teammate's whole journey in a real browser at 1400 px: Debian's Chromium driven by
Playwright against `streamlit run dashboard/app.py`, with fal and Supabase Storage replaced by their
local stand-ins (real HTTP on loopback). First without a key: the first-run path, the name kept
across a reload, an upload, a dry run built on a Generate form that survives a page change. Then
the dashboard restarts live: the name, the form and the current batch are still there; a live
batch runs against the fal stand-in with a reload in the middle; History and the CSV; Compare;
Review with "Include groups I reviewed" on, moving group to group; the Leaderboard on the voted
batch, its numbers in sight. Every request the browser makes goes to the dashboard's host only.
A screenshot per step goes to tests/artifacts/.

Skipped when `chromium` is not installed, unless CI is set: then it fails.
"""
from __future__ import annotations

import csv
import io
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path
from urllib.parse import parse_qs, urlparse

import httpx
import pytest
from PIL import Image
from streamlit.proto.BackMsg_pb2 import BackMsg
from streamlit.proto.ForwardMsg_pb2 import ForwardMsg

from core.catalog import registry
from tests.serving import free_port, stop

pytestmark = pytest.mark.browser

ROOT = Path(__file__).resolve().parents[2]
ARTIFACTS = ROOT / "tests" / "artifacts"
CHROMIUM = shutil.which("chromium")
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]
WAIT_MS = 60_000
FAL_KEY = "browser-test-key:not-a-secret"

if CHROMIUM is None:
    if os.environ.get("CI"):
        pytest.fail("chromium is missing and CI is set: install Debian's chromium (scripts/test does)",
                    pytrace=False)
    pytest.skip("chromium is not installed (scripts/test installs it when run as root)",
                allow_module_level=True)


@pytest.fixture
def fal_url(tmp_path):
    """The fal stand-in, out of process as an operator would run it; its URL is its first line.
    Each job takes 2 s, so a reload lands in the middle of the live batch."""
    with open(tmp_path / "fal.log", "wb") as err:
        proc = subprocess.Popen([sys.executable, "-m", "tests.standins.fal_server", "--port", "0",
                                 "--latency", "2.0", "--key", FAL_KEY], cwd=ROOT, stdout=subprocess.PIPE,
                                stderr=err, text=True)
        try:
            url = proc.stdout.readline().strip()
            assert url.startswith("http://127.0.0.1:"), f"fal stand-in did not start: {url!r}"
            yield url
        finally:
            stop(proc)
            proc.stdout.close()


class Dashboard:
    """`streamlit run dashboard/app.py` on one port and one data directory, started and restarted
    by the test (dry run first, then live against the stand-ins)."""

    def __init__(self, tmp_path: Path, fal: str, supabase) -> None:
        self.tmp_path, self.fal, self.supabase = tmp_path, fal, supabase
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.data_dir = tmp_path / "data"
        self.proc: subprocess.Popen | None = None
        self.log = open(tmp_path / "streamlit.log", "ab")  # noqa: SIM115 (closed in close)

    def start(self, *, live: bool) -> None:
        env = {**os.environ, "FAL_QUEUE_URL": self.fal, "FAL_RUN_URL": self.fal,
               "SUPABASE_URL": self.supabase.url, "SUPABASE_KEY": self.supabase.key,
               "SUPABASE_BUCKET": "references", "DASHBOARD_DATA_DIR": str(self.data_dir),
               "DASHBOARD_SECRETS": str(self.tmp_path / "no-secrets.toml")}
        env.pop("FAL_KEY", None)
        if live:
            env["FAL_KEY"] = FAL_KEY
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "streamlit", "run", "dashboard/app.py", "--server.port", str(self.port),
             "--server.address", "127.0.0.1", "--server.headless", "true",
             "--browser.gatherUsageStats", "false"],
            cwd=ROOT, env=env, stdout=self.log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 60
        while True:
            try:
                if httpx.get(f"{self.url}/_stcore/health", timeout=2).text == "ok":
                    return
            except httpx.TransportError:
                pass
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise AssertionError("streamlit did not start:\n" + (self.tmp_path / "streamlit.log").read_text())
            time.sleep(0.2)

    def stop(self) -> None:
        if self.proc is not None:
            stop(self.proc)
            self.proc = None

    def close(self) -> None:
        self.stop()
        self.log.close()


@pytest.fixture
def dashboard(tmp_path, fal_url, supabase_standin):
    d = Dashboard(tmp_path, fal_url, supabase_standin)
    try:
        yield d
    finally:
        d.close()


class _Runs:
    """The app's script runs as its websocket tells them: the browser asks for one (a
    `rerun_script` message), the server starts it (`new_session`) and finishes it
    (`script_finished`). Streamlit's own "running" icon shows only after half a second, so a
    shorter run, or one not started yet, looked settled. Fragment runs (Generate's progress
    polling) are left out: they never redraw the page around them.

    The websocket's events reach the test a little after the page sent or took in a frame: the
    page counts the frames it sent on its newest stream (COUNT_SENT), so a wait first lets this
    count catch up with that one."""

    COUNT_SENT = """(() => {
        const send = WebSocket.prototype.send;
        WebSocket.prototype.send = function (data) {
            if (typeof data !== 'string' && this.url.includes('/_stcore/stream')) {
                if (window.__stream !== this) { window.__stream = this; window.__streamSent = 0; }
                window.__streamSent += 1;
            }
            return send.call(this, data);
        };
    })()"""

    RAN_TO_THE_END = (ForwardMsg.FINISHED_SUCCESSFULLY, ForwardMsg.FINISHED_WITH_COMPILE_ERROR)

    def __init__(self) -> None:
        self.seq = 0
        self.asked = self.started = self.finished = -1  # the sequence number of the latest of each
        self.run_id = ""                                 # the latest started run
        self.stream = None                               # the newest stream and the frames sent on it
        self.sent = 0

    def watch(self, ws) -> None:
        if urlparse(ws.url).path.endswith("/_stcore/stream"):
            self.stream, self.sent = ws, 0
            ws.on("framesent", lambda payload: self._sent(ws, payload))
            ws.on("framereceived", self._received)

    def _tick(self) -> int:
        self.seq += 1
        return self.seq

    def _sent(self, ws, payload) -> None:
        if isinstance(payload, bytes):
            if ws is self.stream:
                self.sent += 1
            msg = BackMsg.FromString(payload)
            if msg.WhichOneof("type") == "rerun_script" and not msg.rerun_script.fragment_id:
                self.asked = self._tick()

    def _received(self, payload) -> None:
        if not isinstance(payload, bytes):
            return
        msg = ForwardMsg.FromString(payload)
        if msg.metadata.run.fragment_ids:
            return
        kind = msg.WhichOneof("type")
        if kind == "new_session":
            self.started, self.run_id = self._tick(), msg.metadata.run.script_run_id
        elif (kind == "script_finished" and msg.metadata.run.script_run_id == self.run_id
              and msg.script_finished in self.RAN_TO_THE_END):
            self.finished = self._tick()

    def settled(self) -> bool:
        """The last run asked for has started, and finished (not cut short by another)."""
        return self.asked < self.started < self.finished


_RUNS: dict[int, _Runs] = {}  # by id() of the page


@pytest.fixture
def browser_page():
    """A page at 1400 px wide, and the host of every request it makes (http, https, ws)."""
    from playwright.sync_api import expect, sync_playwright

    hosts: set[str] = set()
    runs = _Runs()
    expect.set_options(timeout=WAIT_MS)  # a first run after a restart, on a loaded machine, is slow
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        context = browser.new_context(viewport={"width": 1400, "height": 1000}, accept_downloads=True)
        context.on("request", lambda r: hosts.add(urlparse(r.url).hostname or "")
                   if urlparse(r.url).scheme in ("http", "https", "ws", "wss") else None)
        context.add_init_script(_Runs.COUNT_SENT)
        pg = context.new_page()
        pg.on("websocket", lambda ws: hosts.add(urlparse(ws.url).hostname or ""))
        pg.on("websocket", runs.watch)
        pg.set_default_timeout(WAIT_MS)
        _RUNS[id(pg)] = runs
        try:
            yield pg, hosts
        finally:
            _RUNS.pop(id(pg), None)
            expect.set_options(timeout=5_000)
            browser.close()


def _photo() -> bytes:
    buf = io.BytesIO()
    im = Image.new("RGB", (768, 1024), (214, 170, 140))
    for y in range(300, 700):  # something that is not a flat colour
        for x in range(250, 520):
            im.putpixel((x, y), (90, 60, 50))
    im.save(buf, "JPEG", quality=90)
    return buf.getvalue()


def _images_loaded(pg, at_least: int) -> None:
    pg.wait_for_function(
        """n => { const imgs = [...document.querySelectorAll('[data-testid="stImage"] img')];
                  return imgs.length >= n && imgs.every(i => i.complete && i.naturalWidth > 0); }""",
        arg=at_least, timeout=WAIT_MS)


def _shot(pg, name: str) -> None:
    ARTIFACTS.mkdir(exist_ok=True)
    _settled(pg)
    pg.screenshot(path=str(ARTIFACTS / f"{name}.png"), full_page=True)


def _settled(pg) -> None:
    """The app finished the last run the page asked for, the page took it in, and painted."""
    runs = _RUNS[id(pg)]
    sent = pg.evaluate("""() => new Promise(done => requestAnimationFrame(() => requestAnimationFrame(
                             () => setTimeout(() => done(window.__streamSent || 0)))))""")
    deadline = time.monotonic() + WAIT_MS / 1000
    while runs.sent < sent or not runs.settled():  # the websocket's events reach us while Playwright waits
        assert time.monotonic() < deadline, (
            f"no finished run in {WAIT_MS} ms after the last one asked for (asked {runs.asked}, started "
            f"{runs.started}, finished {runs.finished}, frames sent {sent}, seen {runs.sent})")
        pg.wait_for_timeout(50)
    pg.wait_for_function("""() => document.querySelector('[data-testid="stApp"]')
                                  ?.getAttribute('data-test-script-state') === 'notRunning'""")
    pg.evaluate("() => new Promise(done => requestAnimationFrame(() => requestAnimationFrame(done)))")


def _page_ok(pg, name: str) -> None:
    """No exception, no literal "None" in any text, and no table that needs sideways scrolling."""
    _settled(pg)
    assert pg.locator('[data-testid="stException"]').count() == 0, name
    text = pg.locator('[data-testid="stMain"]').inner_text()
    assert "None" not in text.replace("None of", ""), (name, text[:3000])
    wide = pg.evaluate("""() => [...document.querySelectorAll('[data-testid="stDataFrame"] .dvn-scroller')]
                                .filter(s => s.scrollWidth > s.clientWidth + 2).length""")
    assert wide == 0, f"{name}: a table needs sideways scrolling at 1400 px"


def _open_list(pg, box) -> None:
    """Open a select box's list. Near the bottom of the page a click may leave the list closed
    (no room below it): the box goes to the middle of the window first, at once (a wheel scroll
    still moving under the click made it miss now and then), and the list is opened from the
    keyboard if the click did not open it."""
    from playwright.sync_api import TimeoutError as PlaywrightTimeout

    box.evaluate("e => e.scrollIntoView({block: 'center', behavior: 'instant'})")
    box.click()
    try:
        pg.get_by_role("option").first.wait_for(timeout=5_000)
    except PlaywrightTimeout:
        box.press("ArrowDown")
        pg.get_by_role("option").first.wait_for()


def _name_box(pg):
    return pg.get_by_role("textbox", name="Your name")


def test_a_new_teammate_goes_from_an_empty_dashboard_to_a_verdict(dashboard, browser_page):
    from playwright.sync_api import expect

    pg, hosts = browser_page
    dashboard.start(live=False)
    url = dashboard.url

    # 1. first run: the empty dashboard says what to do first; the name survives a reload
    pg.goto(url)
    pg.get_by_text("Upload reference photos").wait_for()
    pg.get_by_text("Start here").wait_for()
    pg.get_by_text("First steps").wait_for()
    assert pg.get_by_text("Dry run").first.is_visible()
    _name_box(pg).fill("Browser Tester")
    _name_box(pg).press("Enter")
    pg.wait_for_function("() => location.search.includes('user=Browser')")
    pg.reload()
    pg.get_by_text("Upload reference photos").wait_for()
    _settled(pg)
    expect(_name_box(pg)).to_have_value("Browser Tester")
    _page_ok(pg, "upload (empty)")
    _shot(pg, "01-first-run")

    # 2. upload: stored in the (stand-in) Supabase bucket, said in one sentence each
    pg.locator('[data-testid="stFileUploader"] input[type=file]').set_input_files(
        [{"name": "face.jpg", "mimeType": "image/jpeg", "buffer": _photo()}])
    pg.get_by_role("button", name="Store photos").click()
    pg.get_by_text("face.jpg stored as face").wait_for()
    pg.get_by_text("by Browser Tester").first.wait_for()
    assert pg.get_by_text(". —").count() == 0
    _images_loaded(pg, 1)
    _page_ok(pg, "upload")
    _shot(pg, "02-upload")

    # 3. Generate, untouched: the next step in words, no red error; an out-of-range number is
    # refused where the run button would be; the form survives a trip to Upload
    _go_link(pg, "Generate")
    assert pg.locator('[data-testid="stAlertContentError"]').count() == 0
    pg.get_by_text("pick at least one reference photo in step 1").wait_for()
    pg.get_by_role("combobox", name="Reference photos (for the edit models)").click()
    pg.get_by_role("option", name="face · face.jpg").first.click()
    pg.keyboard.press("Escape")
    pg.get_by_role("button", name="Record dry run of 2 requests").wait_for()
    _settled(pg)  # the pick's run has finished: it no longer redraws the widgets below
    pg.get_by_text("FLUX.2 [dev] LoRA edit — fal-ai/flux-2/lora/edit").click()
    steps = pg.get_by_role("spinbutton", name="Num Inference Steps").last
    steps.fill("999")
    steps.press("Enter")
    pg.get_by_text("Nothing can run until these are fixed").wait_for()
    _settled(pg)
    expect(pg.get_by_role("button", name="Record dry run of 2 requests")).to_have_count(0)
    assert steps.input_value() == "999", "the out-of-range value stays in sight"
    steps.fill("7")
    steps.press("Enter")
    pg.get_by_role("button", name="Record dry run of 2 requests").wait_for()
    pg.get_by_role("textbox", name="Batch name").fill("first look")
    pg.get_by_role("textbox", name="Batch name").press("Enter")
    _settled(pg)
    _go_link(pg, "Upload")
    _go_link(pg, "Generate")
    pg.get_by_role("button", name="Record dry run of 2 requests").wait_for()
    expect(pg.get_by_role("textbox", name="Batch name")).to_have_value("first look")
    _shot(pg, "03-generate-form")

    # 4. a dry run: recorded, labelled, never called sent or done
    pg.get_by_role("button", name="Record dry run of 2 requests").click()
    pg.get_by_text("2 of 2 payloads recorded").wait_for()
    pg.get_by_text("Dry run: nothing was sent to fal").wait_for()
    _page_ok(pg, "generate (dry run)")
    _shot(pg, "04-dry-run")
    _go_link(pg, "History")
    pg.get_by_text("2 requests", exact=True).wait_for()
    pg.get_by_text("cost nothing").first.wait_for()
    _page_ok(pg, "history (dry run)")
    for title in ("Compare", "Review", "Leaderboard"):
        _go_link(pg, title)
        _page_ok(pg, f"{title} (dry run)")

    # 5. the dashboard restarts live: a reload keeps the name, the form and the current batch
    dashboard.stop()
    dashboard.start(live=True)
    pg.goto(pg.url)                           # a teammate reopens the tab of the restarted server
    pg.get_by_text("fal: live").wait_for()
    _go_link(pg, "Generate")                  # at once: the session's first run may still be drawing
    pg.wait_for_function("() => location.search.includes('user=') && location.search.includes('draft=')")
    pg.reload()
    pg.get_by_text("fal: live").wait_for()
    _settled(pg)
    expect(_name_box(pg)).to_have_value("Browser Tester")
    pg.get_by_role("heading", name="Current batch").wait_for()
    pg.get_by_text("2 of 2 payloads recorded").wait_for()
    expect(pg.get_by_role("textbox", name="Batch name")).to_have_value("first look")
    _shot(pg, "05-after-restart")

    # 6. a live batch, 3 seeds x 2 models, with a reload in the middle
    pg.get_by_role("spinbutton", name="How many random seeds").fill("3")
    pg.get_by_role("spinbutton", name="How many random seeds").press("Enter")
    pg.get_by_role("textbox", name="Batch name").fill("live look")
    pg.get_by_role("textbox", name="Batch name").press("Enter")
    send = pg.get_by_role("button", name="Send 6 requests to fal")
    send.wait_for()
    send.click()
    pg.get_by_text("of 6 answered by fal").first.wait_for()
    pg.reload()
    pg.get_by_role("heading", name="Current batch").wait_for()
    pg.get_by_text("live look").first.wait_for()
    pg.get_by_text("6 of 6 answered by fal: 6 completed").first.wait_for(timeout=120_000)
    _settled(pg)
    expect(pg.get_by_role("button", name="Cancel batch")).to_have_count(0)  # a finished batch offers none
    _images_loaded(pg, 7)  # the picked reference + six results, one per request
    _page_ok(pg, "generate (live)")
    pg.get_by_role("heading", name="Current batch").scroll_into_view_if_needed()
    _shot(pg, "06-live-batch")

    # 7. History: the live requests, a detail, the CSV of the filter
    _go_link(pg, "History")
    pg.get_by_text("8 requests", exact=True).wait_for()
    pg.get_by_role("combobox", name="Batch").click()
    pg.get_by_role("option", name="live look").first.click()
    pg.get_by_text("6 requests", exact=True).wait_for()
    _settled(pg)
    _open_list(pg, pg.get_by_role("combobox", name="Open request"))
    pg.get_by_role("option").first.click()
    pg.get_by_text("Payload, exactly as stored and sent").first.wait_for()
    with pg.expect_download() as download:
        pg.get_by_role("button", name="Download CSV").click()
    text = Path(download.value.path()).read_text(encoding="utf-8-sig")
    rows = list(csv.DictReader(io.StringIO(text)))
    assert len(rows) == 6, text[:2000]
    assert {r["endpoint"] for r in rows} == set(registry.DEFAULT_MODELS)
    assert {r["status"] for r in rows} == {"completed"}
    assert "data:" not in text and FAL_KEY not in text
    _page_ok(pg, "history")
    _shot(pg, "07-history")

    # 8. Compare
    _go_link(pg, "Compare")
    pg.get_by_text("3 of 3 groups").wait_for()
    _images_loaded(pg, 3)
    _page_ok(pg, "compare")
    _shot(pg, "08-compare")

    # 9. Review with "Include groups I reviewed" on: each vote moves on, never group 1 again
    _go_link(pg, "Review")
    pg.get_by_text("Include groups I reviewed").click()
    seen = []
    for n in (1, 2, 3):
        pg.get_by_text(f"Group {n} of 3").wait_for()
        _images_loaded(pg, 3)
        seen.append(n)
        pg.get_by_role("button", name="Left better").click()
        pg.get_by_text("Left was").wait_for()
        pg.keyboard.press("n")
    pg.get_by_text("Nothing left to review in this batch").wait_for()
    assert seen == [1, 2, 3]
    _page_ok(pg, "review")
    _shot(pg, "09-review")

    # 10. the Leaderboard opens on the voted batch, its numbers in sight
    pg.get_by_role("link", name="Next: see who wins on the Leaderboard").first.click()
    pg.get_by_role("heading", name="Blind review").wait_for()
    pg.locator(".vega-embed canvas, .vega-embed svg").first.wait_for()
    _settled(pg)
    votes = pg.locator('[data-testid="stMetric"]', has_text="Votes")
    assert votes.locator('[data-testid="stMetricValue"]').inner_text() == "3"
    best = pg.locator('[data-testid="stMetric"]', has_text="Best (Bradley-Terry)")
    assert best.locator('[data-testid="stMetricValue"]').evaluate(
        "e => e.scrollWidth <= e.clientWidth + 1"), "the best model's name is not cut"
    _page_ok(pg, "leaderboard")
    _shot(pg, "10-leaderboard")

    # offline: nothing but the dashboard itself was contacted
    assert hosts <= {"127.0.0.1"}, hosts
    assert parse_qs(urlparse(pg.url).query).get("user") == ["Browser Tester"]


def _go_link(pg, title: str) -> None:
    """Open a page from the sidebar navigation and wait for it to settle."""
    pg.locator('[data-testid="stSidebarNav"]').get_by_role("link", name=title, exact=True).click()
    _settled(pg)
