"""The demo page driven in a real headless Chromium (Playwright, the system browser): what a clinician would do.

Skips with the reason when playwright, gradio or a system Chromium is missing (.ci/run installs all three).
"""

from __future__ import annotations

import re
from urllib.parse import urlparse

import pytest
from demo_helpers import MODELS, find_chromium, require_gradio

from lightseg_edge.demo import DISCLAIMER
from lightseg_edge.demo.analysis import dice

TIMEOUT_MS = 45_000
LOCAL_HOSTS = ("127.0.0.1", "localhost")


@pytest.fixture(scope="module")
def browser():
    require_gradio()
    sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is not installed (pip install playwright)")
    path = find_chromium()
    if path is None:
        pytest.skip("no system Chromium: apt-get install chromium-headless-shell (or chromium), or set LIGHTSEG_CHROMIUM")
    with sync_api.sync_playwright() as pw:
        b = pw.chromium.launch(executable_path=path, headless=True)
        try:
            yield b
        finally:
            b.close()


@pytest.fixture
def page(browser):
    """A page that may only talk to this machine: any other request is recorded and aborted (nothing leaves)."""
    context = browser.new_context(viewport={"width": 1400, "height": 1100})
    outside = []

    def gate(route):
        host = urlparse(route.request.url).hostname
        if route.request.url.startswith(("data:", "blob:")) or host in LOCAL_HOSTS:
            route.continue_()
        else:
            outside.append(route.request.url)
            route.abort()

    context.route("**/*", gate)
    pg = context.new_page()
    pg.set_default_timeout(TIMEOUT_MS)
    pg.outside_requests = outside
    try:
        yield pg
    finally:
        context.close()


def _pixels(text: str) -> int:
    m = re.search(r"Lesion area: ([\d,]+) px", text)
    assert m, f"no lesion area on the page: {text!r}"
    return int(m.group(1).replace(",", ""))


def test_upload_shows_overlay_and_exact_area(page, demo_server, sample_image, reference_masks, tmp_path):
    page.goto(demo_server.url)
    assert DISCLAIMER in " ".join(page.locator("#disclaimer").inner_text().split())

    page.locator("#input-image input[type=file]").set_input_files(str(sample_image))
    summary = page.locator("#summary")
    summary.filter(has_text="Lesion area").wait_for()
    text = summary.inner_text()
    expected = int(reference_masks[MODELS[0]].sum())
    assert _pixels(text) == expected, f"page says {text!r}; load_predictor gives {expected} px"
    pct = 100.0 * expected / reference_masks[MODELS[0]].size
    assert f"{pct:.2f} %" in text
    assert re.search(r"pre-processing [\d.]+ ms \+ inference [\d.]+ ms \+ post-processing [\d.]+ ms", text), text

    overlay = page.locator("#overlay img")
    overlay.wait_for(state="visible")
    page.locator("#proba img").wait_for(state="visible")
    assert page.evaluate("img => img.complete && img.naturalWidth", overlay.element_handle()) == 192
    shot = tmp_path / "demo_single.png"
    page.screenshot(path=str(shot), full_page=True)
    assert shot.stat().st_size > 10_000

    # Side by side: the two shipped models on the same image, with their agreement Dice.
    page.get_by_role("tab", name="Side by side").click()
    page.locator("#compare-image input[type=file]").set_input_files(str(sample_image))
    page.locator("#compare").click()
    c_summary = page.locator("#compare-summary")
    c_summary.filter(has_text="Agreement Dice").wait_for()
    c_text = c_summary.inner_text()
    m = re.search(r"Agreement Dice \(A vs B\): ([\d.]+)", c_text)
    assert m, c_text
    want = dice(reference_masks[MODELS[0]], reference_masks[MODELS[1]])
    assert float(m.group(1)) == pytest.approx(want, abs=5e-5)
    page.locator("#agreement img").wait_for(state="visible")
    page.screenshot(path=str(tmp_path / "demo_compare.png"), full_page=True)
    assert page.outside_requests == [], f"the page tried to reach other hosts: {page.outside_requests}"


def test_non_image_upload_is_refused_with_a_message(page, demo_server, tmp_path):
    fake = tmp_path / "notes.png"
    fake.write_text("not an image at all\n")
    page.goto(demo_server.url)
    page.locator("#input-image input[type=file]").set_input_files(str(fake))
    toast = page.get_by_text(re.compile("image refused: notes.png: not a readable image"))
    toast.first.wait_for()
    assert "/tmp" not in toast.first.inner_text()  # the user's file name, not the server's temporary path
    assert page.outside_requests == []
