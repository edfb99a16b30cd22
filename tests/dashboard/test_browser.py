"""The main flow in a real browser: Debian's Chromium driven by Playwright against `streamlit run
dashboard/app.py`, with fal and Supabase Storage replaced by their local stand-ins (real HTTP on
loopback). Upload a reference, run a small live batch (1 variant x 1 seed x 2 models), find it in
History and Compare, download the CSV; a screenshot of each page goes to tests/artifacts/.

Skipped when `chromium` is not installed, unless CI is set: then it fails.
"""
from __future__ import annotations

import csv
import io
import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
from PIL import Image

from core.catalog import registry

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


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@pytest.fixture
def fal_url(tmp_path):
    """The fal stand-in, out of process as an operator would run it; its URL is its first line."""
    with open(tmp_path / "fal.log", "wb") as err:
        proc = subprocess.Popen([sys.executable, "-m", "tests.standins.fal_server", "--port", "0",
                                 "--latency", "0.2", "--key", FAL_KEY], cwd=ROOT, stdout=subprocess.PIPE, stderr=err,
                                text=True)
        try:
            url = proc.stdout.readline().strip()
            assert url.startswith("http://127.0.0.1:"), f"fal stand-in did not start: {url!r}"
            yield url
        finally:
            _stop(proc)
            proc.stdout.close()


@pytest.fixture
def dashboard(tmp_path, fal_url, supabase_standin):
    """`streamlit run dashboard/app.py` on a free port, live against the stand-ins."""
    port = _free_port()
    data_dir = tmp_path / "data"
    env = {**os.environ, "FAL_KEY": FAL_KEY, "FAL_QUEUE_URL": fal_url, "FAL_RUN_URL": fal_url,
           "SUPABASE_URL": supabase_standin.url, "SUPABASE_KEY": supabase_standin.key,
           "SUPABASE_BUCKET": "references", "DASHBOARD_DATA_DIR": str(data_dir),
           "DASHBOARD_SECRETS": str(tmp_path / "no-secrets.toml")}
    log = open(tmp_path / "streamlit.log", "wb")  # noqa: SIM115 (closed in finally)
    proc = subprocess.Popen(
        [sys.executable, "-m", "streamlit", "run", "dashboard/app.py", "--server.port", str(port),
         "--server.address", "127.0.0.1", "--server.headless", "true",
         "--browser.gatherUsageStats", "false"],
        cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                if httpx.get(f"{url}/_stcore/health", timeout=2).text == "ok":
                    break
            except httpx.TransportError:
                pass
            if proc.poll() is not None or time.monotonic() > deadline:
                raise AssertionError("streamlit did not start:\n" + (tmp_path / "streamlit.log").read_text())
            time.sleep(0.2)
        yield url, data_dir
    finally:
        _stop(proc)
        log.close()


@pytest.fixture
def page():
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        context = browser.new_context(viewport={"width": 1400, "height": 2000}, accept_downloads=True)
        pg = context.new_page()
        pg.set_default_timeout(WAIT_MS)
        try:
            yield pg
        finally:
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
    pg.wait_for_timeout(500)  # let the last rerun paint
    pg.screenshot(path=str(ARTIFACTS / f"{name}.png"))


def test_main_flow_upload_run_history_compare_csv(dashboard, page):
    """A new user uploads a photo, runs 1 variant x 1 seed x 2 models live (stand-in fal), sees
    progress and results, finds both requests in History with the exact payloads, compares them
    side by side, and downloads a CSV holding exactly those two requests."""
    url, _ = dashboard
    pg = page
    pg.goto(url)
    pg.get_by_text("Upload reference photos").wait_for()
    assert pg.get_by_text("fal: live").is_visible()
    pg.get_by_role("textbox", name="Your name").fill("Browser Tester")
    pg.keyboard.press("Enter")

    # Upload: the photo is stored in the (stand-in) Supabase bucket and appears in the gallery
    pg.locator('[data-testid="stFileUploader"] input[type=file]').set_input_files(
        [{"name": "face.jpg", "mimeType": "image/jpeg", "buffer": _photo()}])
    pg.get_by_role("button", name="Store photos").click()
    pg.get_by_text("face.jpg stored as face").wait_for()
    pg.get_by_text("by Browser Tester").first.wait_for()
    _images_loaded(pg, 1)
    _shot(pg, "upload")

    # Generate: pick the photo; defaults are schnell + flux-2/lora/edit, one random seed
    pg.get_by_role("link", name="Generate").click()
    pg.get_by_role("heading", name="Generate").wait_for()
    pg.get_by_role("combobox", name="Reference photos (for the edit models)").click()
    pg.get_by_role("option", name="face · face.jpg").first.click()
    pg.keyboard.press("Escape")
    pg.get_by_role("button", name="Send 2 requests to fal").wait_for()
    pg.get_by_text("Exact payloads (2)").click()
    pg.get_by_text('"image_urls"').first.wait_for()
    pg.get_by_role("button", name="Send 2 requests to fal").click()
    pg.get_by_text("2/2 done (completed 2)").wait_for()
    _images_loaded(pg, 3)  # the picked reference + one result per model
    pg.get_by_role("heading", name="Current batch").scroll_into_view_if_needed()
    _shot(pg, "generate")

    # History: both requests, the detail of one, and the CSV of the filter
    pg.get_by_role("link", name="History").click()
    pg.get_by_role("heading", name="History").wait_for()
    pg.get_by_text("2 requests", exact=True).wait_for()
    pg.get_by_role("combobox", name="Open request").click()
    pg.get_by_role("option").first.click()
    pg.get_by_text("Payload, exactly as stored and sent").first.wait_for()
    pg.get_by_role("button", name="Re-run this request").first.wait_for()
    _images_loaded(pg, 1)
    with pg.expect_download() as download:
        pg.get_by_role("button", name="Download CSV").click()
    text = Path(download.value.path()).read_text(encoding="utf-8-sig")
    rows = list(csv.DictReader(io.StringIO(text)))
    assert len(rows) == 2, text[:2000]
    assert {r["endpoint"] for r in rows} == set(registry.DEFAULT_MODELS)
    assert {r["status"] for r in rows} == {"completed"}
    assert all(r["image_storage_backend"] and r["image_idx"] == "0" for r in rows)
    assert "data:" not in text and FAL_KEY not in text
    _shot(pg, "history")

    # Compare: one group, the reference and both models' outputs side by side
    pg.get_by_role("link", name="Compare").click()
    pg.get_by_role("heading", name="Compare").wait_for()
    pg.get_by_text("1 of 1 groups").wait_for()
    pg.get_by_text("Reference", exact=True).wait_for()
    _images_loaded(pg, 3)
    _shot(pg, "compare")

    # Review: a blind vote, then the models are revealed
    pg.get_by_role("link", name="Review").click()
    pg.get_by_role("heading", name="Review").wait_for()
    _images_loaded(pg, 3)  # the reference and two unnamed outputs
    pg.get_by_role("button", name="Left better").click()
    pg.get_by_text("Left was").wait_for()
    _shot(pg, "review")

    # Leaderboard: the vote counts, with fidelity and cost sections
    pg.get_by_role("link", name="Leaderboard").click()
    pg.get_by_role("heading", name="Leaderboard").wait_for()
    pg.get_by_role("heading", name="Blind review").wait_for()
    pg.get_by_role("heading", name="Cost and latency").wait_for()
    pg.locator(".vega-embed canvas, .vega-embed svg").first.wait_for()   # the win-rate chart drew
    pg.wait_for_timeout(1000)
    _shot(pg, "leaderboard")
