"""Opening a lesson in JupyterLab does not mark it modified (issue 19).

JupyterLab rewrites a notebook's kernelspec and language_info when its kernel connects; a lesson
saved with other metadata then shows the "modified" dot at once, and autosave writes it back.
This opens two lessons in a real JupyterLab (the shared page of tests/browser/conftest.py), waits for the
kernel, gives JupyterLab a few seconds, and checks that the tab is not dirty.
"""
import time

import pytest

from test_widgets_in_browser import KERNEL_READY_TIMEOUT_S, NOTEBOOK, REPO_ROOT, wait_for_kernel

pytestmark = pytest.mark.browser

LESSONS = ["00_start_here.ipynb", "09_scaling_and_stability.ipynb"]
SETTLE_S = 3.0


@pytest.mark.parametrize("name", LESSONS)
def test_opening_a_lesson_does_not_mark_it_modified(name, lab_page, browser_artifacts):
    try:
        page = lab_page.open(REPO_ROOT / "notebooks" / name)
        page.wait_for_selector(f"{NOTEBOOK} .jp-Cell", timeout=60_000)
        assert wait_for_kernel(page, KERNEL_READY_TIMEOUT_S), f"kernel not idle within {KERNEL_READY_TIMEOUT_S:.0f} s"
        time.sleep(SETTLE_S)
        page.screenshot(path=str(browser_artifacts / f"open_clean_{name}.png"))
        dirty = page.locator(".lm-DockPanel-tabBar .lm-TabBar-tab.jp-mod-dirty").count()
        assert dirty == 0, f"JupyterLab marked {name} modified on opening (metadata differs from what it writes)"
    finally:
        lab_page.close_all()  # and stop the kernel: the next browser test gets the CPU to itself
