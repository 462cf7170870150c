"""The rendered course in a real browser (issue 19): landing page -> two lessons, figures load, no traceback.

The site is the one ``python -m csm_edu.course.site --quick`` built (the README's test line
runs it before pytest); ``CSM_EDU_SITE_DIR`` names another build. It is served from 127.0.0.1
by a throwaway HTTP server and opened in headless Chromium: from ``index.html`` (the notebook
map) the test follows the links to two lessons, waits for every output figure to load (each
``<img>`` under a cell output must have a natural width), and checks that no cell output shows
a traceback. Without a built site the test is skipped locally and fails in CI (``CI`` set).
"""
import functools
import http.server
import os
import re
import threading
from pathlib import Path

import pytest

pytestmark = pytest.mark.browser

REPO_ROOT = Path(__file__).resolve().parents[2]
SITE = Path(os.environ.get("CSM_EDU_SITE_DIR", REPO_ROOT / "build" / "site"))
LESSONS = ("02_scores_and_langevin", "09_scaling_and_stability")
TRACEBACK = re.compile(r"Traceback \(most recent call last\)|^\w*(Error|Exception)\b:", re.MULTILINE)
JS_FIGURES = """() => [...document.querySelectorAll('.cell_output img')].map(img => (
    {src: img.getAttribute('src'), complete: img.complete, width: img.naturalWidth}))"""


@pytest.fixture(scope="module")
def site_url():
    if not (SITE / "index.html").is_file():
        message = (f"no built site at {SITE}: run `python -m csm_edu.course.site --quick` first "
                   f"(or set CSM_EDU_SITE_DIR)")
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(SITE))
    handler.log_message = lambda *args: None
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/"
    finally:
        server.shutdown()
        server.server_close()


@pytest.mark.parametrize("lesson", LESSONS)
def test_map_leads_to_lesson_with_figures_and_no_traceback(site_url, chromium_context, browser_artifacts, lesson):
    page = chromium_context.new_page()
    failed = []
    page.on("requestfailed", lambda r: failed.append(r.url) if r.url.startswith(site_url) else None)
    try:
        page.goto(site_url + "index.html", wait_until="load")
        link = page.locator(f'article a[href="{lesson}.html"]').first
        assert link.count() == 1, f"the notebook map on index.html has no link to {lesson}.html"
        link.click()
        page.wait_for_url(f"**/{lesson}.html", wait_until="load")
        page.wait_for_function("() => [...document.querySelectorAll('.cell_output img')].every(i => i.complete)",
                               timeout=30_000)
        page.screenshot(path=str(browser_artifacts / f"site_{lesson}.png"), full_page=False)
        figures = page.evaluate(JS_FIGURES)
        assert figures, f"{lesson}.html shows no figure in its cell outputs (was the site built with outputs?)"
        broken = [f["src"] for f in figures if not f["complete"] or f["width"] == 0]
        assert not broken, f"{lesson}.html: figures that did not load: {broken}"
        outputs = page.locator(".cell_output").all_inner_texts()
        bad = [text[:300] for text in outputs if TRACEBACK.search(text)]
        assert not bad, f"{lesson}.html: a cell output shows an error: {bad[0]}"
        assert page.locator(".cell_output .traceback, .output.traceback").count() == 0
        assert not failed, f"{lesson}.html: requests to the site failed: {failed[:5]}"
    finally:
        page.close()
