"""A sweep in a real browser (marker `browser`): Chromium through Playwright against `streamlit
run`, fal and Supabase Storage replaced by their stand-ins. Upload a photo, give the edit model
two step counts on Generate (three contenders, listed with their requests and cost), run it live,
then lay the outputs out on Compare's grid and download it as one PNG; screenshots of the
Generate plan and the grid go to tests/artifacts/.

Reuses the fixtures and helpers of tests/dashboard/test_browser.py (the main journey).
"""
from __future__ import annotations

import io
from pathlib import Path

import pytest
from PIL import Image

from tests.dashboard.test_browser import (  # noqa: F401 - fixtures are used by name
    _go_link, _images_loaded, _open_list, _photo, _settled, _shot, browser_page, dashboard, fal_url,
)

pytestmark = pytest.mark.browser


def test_sweep_batch_and_its_grid(dashboard, browser_page):
    pg, _ = browser_page
    dashboard.start(live=True)
    url = dashboard.url
    try:
        _journey(url, pg)
    except Exception:
        _shot(pg, "sweep-failure")  # what the page showed when a step timed out
        raise


def _journey(url, pg) -> None:
    pg.goto(url)
    pg.get_by_text("Upload reference photos").wait_for()
    pg.get_by_role("textbox", name="Your name").fill("Sweep Tester")
    pg.keyboard.press("Enter")
    pg.locator('[data-testid="stFileUploader"] input[type=file]').set_input_files(
        [{"name": "face.jpg", "mimeType": "image/jpeg", "buffer": _photo()}])
    pg.get_by_role("button", name="Store photos").click()
    pg.get_by_text("face.jpg stored as face").wait_for()

    # Generate: the edit model at 7 and 28 steps, beside schnell: three contenders
    _go_link(pg, "Generate")
    pg.get_by_role("heading", name="Generate").wait_for()
    pg.get_by_role("combobox", name="Reference photos (for the edit models)").click()
    pg.get_by_role("option", name="face · face.jpg").first.click()
    pg.keyboard.press("Escape")
    _images_loaded(pg, 1)  # the picked reference
    _settled(pg)  # the pick's run has finished: it no longer redraws (and closes) the lists below
    pg.locator("summary", has_text="fal-ai/flux-2/lora/edit").click()
    pg.get_by_text("fal silently drops it").wait_for()  # the edit model's expander is open
    # only the open expander's widgets are in the accessibility tree
    _open_list(pg, pg.get_by_role("combobox", name="Try several values of"))
    pg.get_by_role("option", name="Num Inference Steps").click()
    pg.keyboard.press("Escape")
    values = pg.get_by_role("textbox", name="Num Inference Steps: values, separated by commas")
    values.fill("7, 28")
    values.press("Enter")
    pg.get_by_text("3 contenders").wait_for()
    # the contenders table is a canvas grid: its cells are in the DOM for assistive tech, not visible
    pg.get_by_text("FLUX.2 [dev] LoRA edit · 28 steps").first.wait_for(state="attached")
    run = pg.get_by_role("button", name="Send 3 requests to fal")
    run.scroll_into_view_if_needed()
    _shot(pg, "generate-sweep")
    run.click()
    pg.get_by_text("3 of 3 answered by fal: 3 completed").wait_for(timeout=120_000)

    # Compare: the grid, steps on X and the model on Y, the reference beside it
    _go_link(pg, "Compare")
    pg.get_by_role("heading", name="Compare").wait_for()
    pg.get_by_role("tab", name="Grid").click()
    pg.get_by_text("X: num inference steps · Y: Model").wait_for()
    pg.get_by_text("28 steps", exact=True).first.wait_for()
    _images_loaded(pg, 4)  # the reference and three outputs
    with pg.expect_download() as download:
        pg.get_by_role("button", name="Download the grid as PNG").click()
    png = Image.open(io.BytesIO(Path(download.value.path()).read_bytes()))
    assert png.format == "PNG" and png.width > 3 * 320 and png.height > 2 * 320
    pg.get_by_role("tab", name="Grid").scroll_into_view_if_needed()
    _shot(pg, "compare-grid")
