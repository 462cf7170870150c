"""Students meet the kit in JupyterLab, not in nbval: prove the sliders work there (issue 10).

For each notebook: open it in JupyterLab in headless Chromium (one JupyterLab page shared by the
browser tests, see ``lab_page`` in conftest.py), Run > Run All Cells, wait until
the kernel is idle and no prompt shows ``[*]``, take the first cell whose output holds an
ipywidgets slider and a plot, move the slider with the arrow keys, and check that the text
readout and the plot image under it change and that no output anywhere shows a traceback.
Screenshots go to the session's temp folder (named in the test summary and in failures).

Run it alone with ``python -m pytest tests/browser -q -s`` (``-s`` prints the timings); set
``CSM_EDU_BROWSER_RUN_TIMEOUT`` (seconds, default 240) for slow machines.
"""
import contextlib
import os
import re
import time
from pathlib import Path

import pytest

pytestmark = pytest.mark.browser

HERE = Path(__file__).resolve().parent
REPO_ROOT = HERE.parents[1]
NOTEBOOKS = [
    pytest.param(HERE / "fixtures" / "slider_demo.ipynb", id="fixture_slider_demo"),
    pytest.param(REPO_ROOT / "notebooks" / "02_scores_and_langevin.ipynb",
                 id="02_scores_and_langevin"),
    pytest.param(REPO_ROOT / "notebooks" / "05_denoising_score_matching.ipynb",
                 id="05_denoising_score_matching"),
]

KERNEL_READY_TIMEOUT_S = 90.0
RUN_ALL_TIMEOUT_S = float(os.environ.get("CSM_EDU_BROWSER_RUN_TIMEOUT", "240"))
WIDGET_UPDATE_TIMEOUT_S = 60.0
POLL_S = 0.5
N_KEY_PRESSES = 3

NOTEBOOK = ".jp-NotebookPanel:not(.lm-mod-hidden)"
KERNEL_INDICATOR = f"{NOTEBOOK} .jp-Notebook-ExecutionIndicator"
SLIDER = '[role="slider"]'  # the focusable noUiSlider handle of ipywidgets 8
# ipykernel tracebacks say "Traceback (most recent call last)"; syntax errors and interrupts
# only show "SyntaxError: ..." / "KeyboardInterrupt" at the start of a line.
TRACEBACK = re.compile(r"Traceback \(most recent call last\)|^\w*(Error|Exception|Interrupt)\b",
                       re.MULTILINE)

JS_KERNEL_READY = """([notebook, indicator]) => {
    const name = document.querySelector(notebook + ' .jp-KernelName')?.textContent.trim();
    return document.querySelector(indicator)?.dataset.status === 'idle'
        && !!name && name !== 'No Kernel' && !document.querySelector('.jp-Dialog');
}"""
JS_RUN_ALL_FINISHED = """([notebook, indicator]) => {
    const status = document.querySelector(indicator)?.dataset.status;
    const prompts = [...document.querySelectorAll(notebook + ' .jp-InputPrompt')]
        .map(p => p.textContent);
    return status === 'idle' && !prompts.some(p => p.includes('*'))
        && prompts.some(p => /\\d/.test(p));
}"""
JS_FIRST_SLIDER_CELL_WITH_PLOT = """([notebook, slider]) =>
    [...document.querySelectorAll(notebook + ' .jp-CodeCell')].findIndex(cell =>
        cell.querySelector('.jp-Cell-outputArea ' + slider)
        && cell.querySelector('.jp-Cell-outputArea img'))"""
# Text a callback shows: printed or displayed text, HTML and Label widgets (not the controls).
JS_READOUT = """area => [...area.querySelectorAll(
        '[data-mime-type="application/vnd.jupyter.stdout"], [data-mime-type^="text/"],'
        + ' .widget-html-content, .widget-label-basic')]
    .filter(e => !e.closest('.widget-checkbox'))
    .map(e => e.innerText.trim()).filter(Boolean).join('\\n')"""
JS_IMAGES = "area => [...area.querySelectorAll('img')].map(img => img.src)"
JS_STDERR = """notebook => [...document.querySelectorAll(
        notebook + ' [data-mime-type="application/vnd.jupyter.stderr"]')].map(e => e.innerText)"""


def tracebacks(page):
    """Texts of the stderr outputs (cells and Output widgets alike) that show an exception."""
    return [text for text in page.evaluate(JS_STDERR, NOTEBOOK) if TRACEBACK.search(text)]


def wait_for_kernel(page, timeout_s):
    """Wait until a kernel is attached and idle (twice in a row), choosing it if JupyterLab asks.

    Before a kernel is attached the indicator already reads "idle" next to "No Kernel", so the
    kernel name is checked too; clicking Run All Cells then would open the kernel chooser.
    """
    deadline = time.monotonic() + timeout_s
    ready_before = False
    while time.monotonic() < deadline:
        dialog = page.locator(".jp-Dialog")
        if dialog.count() and "Select Kernel" in dialog.first.inner_text():
            dialog.first.locator(".jp-mod-accept").click()  # notebook saved without kernelspec
        ready = page.evaluate(JS_KERNEL_READY, [NOTEBOOK, KERNEL_INDICATOR])
        if ready and ready_before:
            return True
        ready_before = ready
        time.sleep(POLL_S)
    return False


def run_all_cells(page):
    """Run > Run All Cells from the menu bar, as a student would."""
    page.locator("#jp-MainMenu .lm-MenuBar-item", has_text="Run").first.click()
    page.locator(".lm-Menu .lm-Menu-item", has_text="Run All Cells").first.click()


def widget_state(page, output_area):
    """(readout text, image sources, kernel idle) of one cell's output area."""
    idle = page.locator(f'{KERNEL_INDICATOR}[data-status="idle"]').count() > 0
    return output_area.evaluate(JS_READOUT), output_area.evaluate(JS_IMAGES), idle


@pytest.mark.parametrize("notebook_path", NOTEBOOKS)
def test_slider_changes_readout_and_plot(notebook_path, request):
    if not notebook_path.exists():
        pytest.skip(f"notebook not found: {notebook_path.relative_to(REPO_ROOT)}")
    lab = request.getfixturevalue("lab_page")
    server = lab.server
    shots = request.getfixturevalue("browser_artifacts") / "screenshots"
    shots.mkdir(exist_ok=True)
    name = request.node.callspec.id
    where = f"(screenshots: {shots}/{name}-*.png, server log: {server.log_path})"

    page = lab.page
    try:
        started = time.perf_counter()
        lab.open(notebook_path)
        page.wait_for_selector(f"{NOTEBOOK} .jp-Cell", timeout=60_000)
        assert wait_for_kernel(page, KERNEL_READY_TIMEOUT_S), \
            f"kernel not idle within {KERNEL_READY_TIMEOUT_S:.0f} s {where}"

        run_all_cells(page)
        deadline = time.monotonic() + RUN_ALL_TIMEOUT_S
        while not page.evaluate(JS_RUN_ALL_FINISHED, [NOTEBOOK, KERNEL_INDICATOR]):
            assert time.monotonic() < deadline, (
                f"cells still running {RUN_ALL_TIMEOUT_S:.0f} s after Run All Cells, prompts "
                f"{page.locator(f'{NOTEBOOK} .jp-InputPrompt').all_inner_texts()} {where}")
            time.sleep(POLL_S)
        ran_s = time.perf_counter() - started
        print(f"{name}: opened and ran all cells in {ran_s:.1f} s")
        page.screenshot(path=shots / f"{name}-1-after-run-all.png")
        errors = tracebacks(page)
        assert not errors, f"traceback after Run All Cells {where}:\n{errors[0][-2000:]}"

        cell_index = page.evaluate(JS_FIRST_SLIDER_CELL_WITH_PLOT, [NOTEBOOK, SLIDER])
        assert cell_index >= 0, f"no cell shows an ipywidgets slider above a plot {where}"
        cell = page.locator(f"{NOTEBOOK} .jp-CodeCell").nth(cell_index)
        output_area = cell.locator(".jp-Cell-outputArea")
        handle = output_area.locator(SLIDER).first
        cell.scroll_into_view_if_needed()
        output_area.screenshot(path=shots / f"{name}-2-widget-before.png")
        readout_before, images_before, _ = widget_state(page, output_area)
        assert readout_before, f"the slider cell prints no readout {where}"

        value_before = handle.get_attribute("aria-valuenow")
        at_max = float(value_before) >= float(handle.get_attribute("aria-valuemax"))
        handle.focus()
        for _ in range(N_KEY_PRESSES):
            handle.press("ArrowLeft" if at_max else "ArrowRight")
        value_after = handle.get_attribute("aria-valuenow")
        assert value_after != value_before, \
            f"arrow keys did not move the slider (value {value_before}) {where}"

        # Wait until the callback has answered (something changed, or a traceback) and the
        # output has settled: kernel idle and two equal polls in a row.
        deadline = time.monotonic() + WIDGET_UPDATE_TIMEOUT_S
        previous = None
        while time.monotonic() < deadline:
            state = widget_state(page, output_area)
            readout, images, idle = state
            answered = readout != readout_before or images != images_before or tracebacks(page)
            if idle and answered and state == previous:
                break
            previous = state
            time.sleep(POLL_S)
        readout_after, images_after, _ = widget_state(page, output_area)
        output_area.screenshot(path=shots / f"{name}-3-widget-after.png")
        page.screenshot(path=shots / f"{name}-4-page-after.png")
        print(f"{name}: slider {value_before} -> {value_after}; readout "
              f"{readout_before!r} -> {readout_after!r}; total {time.perf_counter() - started:.1f} s")

        errors = tracebacks(page)
        assert not errors, f"traceback after moving the slider {where}:\n{errors[0][-2000:]}"
        assert readout_after != readout_before, \
            f"readout unchanged after moving the slider: {readout_before!r} {where}"
        assert images_after, f"the plot disappeared after moving the slider {where}"
        assert images_after != images_before, f"plot unchanged after moving the slider {where}"
    except Exception:
        with contextlib.suppress(Exception):  # never hide the real failure
            page.screenshot(path=shots / f"{name}-failure.png")
        raise
    finally:
        lab.close_all()
