"""Fixtures for the real-browser widget test: a throwaway JupyterLab server and headless Chromium.

Everything lives in one temporary folder per test session (Jupyter config/data/runtime, IPython
and JupyterLab settings, the workspace the notebooks are copied into, the server log and the
screenshots), so the repository and the user's Jupyter set-up are never touched. The folder is
named in the test summary and in every assertion message.
"""
import contextlib
import importlib.util
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]
# Debian's Chromium by default; elsewhere point CSM_EDU_CHROMIUM at a Chromium or Chrome binary
# (macOS: "/Applications/Google Chrome.app/Contents/MacOS/Google Chrome"; Ubuntu's snap:
# /snap/bin/chromium).
CHROMIUM = Path(os.environ.get("CSM_EDU_CHROMIUM", "/usr/bin/chromium"))
CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
SERVER_START_TIMEOUT_S = 60.0
SERVER_STOP_TIMEOUT_S = 15.0

# The fixture notebook is driven in the browser, not collected by nbval.
collect_ignore_glob = ["fixtures/*"]

_artifact_folders = []  # filled by the browser_artifacts fixture, named in the terminal summary


def pytest_configure(config):
    config.addinivalue_line(
        "markers",
        "browser: drives JupyterLab in headless Chromium (needs /usr/bin/chromium and playwright)",
    )


def pytest_terminal_summary(terminalreporter):
    for folder in _artifact_folders:
        terminalreporter.write_line(f"browser test screenshots and server log: {folder}")


def browser_missing_reason():
    """Why the browser test cannot run here, or None when it can."""
    if not CHROMIUM.exists():
        return (f"{CHROMIUM} not found (install it: apt-get install -y chromium, or set CSM_EDU_CHROMIUM "
                f"to a Chromium binary)")
    if importlib.util.find_spec("playwright") is None:
        return "playwright is not importable (pip install playwright; never `playwright install`)"
    return None


@pytest.fixture(scope="session")
def browser_artifacts():
    """Session temp folder, kept after the run (screenshots, server log) and named in the summary."""
    folder = Path(tempfile.mkdtemp(prefix="csm_edu_browser_"))
    _artifact_folders.append(folder)
    print(f"browser test artifacts: {folder}")
    return folder


def _free_port():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _write_json(path, payload):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(payload))


def _request(url, method="GET"):
    with urllib.request.urlopen(urllib.request.Request(url, method=method), timeout=5) as reply:
        body = reply.read()
    return json.loads(body) if body else None


class JupyterLab:
    """A JupyterLab server on 127.0.0.1 serving ``workspace``; see the ``jupyter_lab`` fixture."""

    def __init__(self, root: Path):
        self.root = root
        self.workspace = root / "workspace"
        self.log_path = root / "jupyterlab.log"
        self.port = _free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.process = None

    def start(self):
        settings = self.root / "lab-settings"
        # No news pop-up over the notebook; render every cell (no virtual scrolling) so the DOM
        # holds all prompts and outputs.
        _write_json(settings / "@jupyterlab/apputils-extension/notification.jupyterlab-settings",
                    {"fetchNews": "false", "checkForUpdates": False})
        _write_json(settings / "@jupyterlab/notebook-extension/tracker.jupyterlab-settings",
                    {"windowingMode": "none"})
        (self.workspace / "notebooks").mkdir(parents=True)
        if (REPO_ROOT / "data").is_dir():  # lessons may read ../data relative to notebooks/
            (self.workspace / "data").symlink_to(REPO_ROOT / "data")
        env = dict(
            os.environ,
            CSM_EDU_QUICK="1",
            JUPYTER_CONFIG_DIR=str(self.root / "jupyter-config"),
            JUPYTER_DATA_DIR=str(self.root / "jupyter-data"),  # venv kernelspec still found
            JUPYTER_RUNTIME_DIR=str(self.root / "jupyter-runtime"),
            IPYTHONDIR=str(self.root / "ipython"),
            JUPYTERLAB_SETTINGS_DIR=str(settings),
            JUPYTERLAB_WORKSPACES_DIR=str(self.root / "lab-workspaces"),
            PYDEVD_DISABLE_FILE_VALIDATION="1",
        )
        command = [
            sys.executable, "-m", "jupyterlab",
            "--no-browser",
            "--ip=127.0.0.1",
            f"--port={self.port}",
            "--ServerApp.port_retries=0",
            "--IdentityProvider.token=",
            "--ServerApp.password=",
            "--ServerApp.disable_check_xsrf=True",
            f"--ServerApp.root_dir={self.workspace}",
            "--LabApp.expose_app_in_browser=True",  # window.jupyterapp: open notebooks in one page
        ]
        if hasattr(os, "geteuid") and os.geteuid() == 0:
            command.append("--allow-root")
        with open(self.log_path, "wb") as log:
            # Own process group, so kernels die with the server even if it has to be killed.
            self.process = subprocess.Popen(command, env=env, stdout=log, stderr=subprocess.STDOUT,
                                            stdin=subprocess.DEVNULL, start_new_session=True)
        deadline = time.monotonic() + SERVER_START_TIMEOUT_S
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"JupyterLab exited with code {self.process.returncode}; "
                                   f"log:\n{self.log_tail()}")
            try:
                _request(f"{self.url}/api/status")
                return
            except (urllib.error.URLError, ConnectionError, OSError):
                time.sleep(0.25)
        raise RuntimeError(f"JupyterLab did not answer /api/status within "
                           f"{SERVER_START_TIMEOUT_S:.0f} s; log:\n{self.log_tail()}")

    def log_tail(self, n_chars=3000):
        try:
            return self.log_path.read_text(errors="replace")[-n_chars:]
        except OSError:
            return "(no log)"

    def add_notebook(self, source: Path) -> str:
        """Copy ``source`` into the workspace (autosave never touches the repo); return its URL."""
        target = self.workspace / "notebooks" / source.name
        shutil.copyfile(source, target)
        return f"{self.url}/lab/tree/notebooks/{source.name}?reset"

    def shutdown_kernels(self):
        """Stop every running kernel so the next notebook gets the CPU to itself."""
        try:
            for kernel in _request(f"{self.url}/api/kernels") or []:
                _request(f"{self.url}/api/kernels/{kernel['id']}", method="DELETE")
        except (urllib.error.URLError, OSError):
            pass

    def stop(self):
        if self.process is None or self.process.poll() is not None:
            return
        self.shutdown_kernels()
        self.process.terminate()
        try:
            self.process.wait(timeout=SERVER_STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(timeout=SERVER_STOP_TIMEOUT_S)
        try:  # leftover kernels in the server's own process group
            os.killpg(self.process.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass


# The server, the browser and the shared page are closed (last in, first out) right after the last
# test of tests/browser, not at the end of the whole session: the rest of the suite (nbval runs every
# lesson afterwards) must not share the CPU with an idle JupyterLab and Chromium.
_browser_stack = contextlib.ExitStack()


def _close_browser():
    _browser_stack.close()


@pytest.hookimpl(trylast=True)
def pytest_runtest_teardown(item, nextitem):
    here = Path(__file__).resolve().parent
    if nextitem is None or here not in Path(str(nextitem.fspath)).resolve().parents:
        _close_browser()


@pytest.fixture(scope="session")
def jupyter_lab(browser_artifacts):
    """A running JupyterLab (quick mode, no token) that is shut down even when a test fails."""
    reason = browser_missing_reason()
    if reason:
        pytest.skip(reason)
    server = JupyterLab(browser_artifacts)
    _browser_stack.callback(server.stop)
    try:
        server.start()
        yield server
    finally:
        _close_browser()


@pytest.fixture(scope="session")
def chromium_context(browser_artifacts):
    """A headless Chromium (Debian's, via playwright) with a fresh profile in the temp folder."""
    reason = browser_missing_reason()
    if reason:
        pytest.skip(reason)
    from playwright.sync_api import sync_playwright

    profile = browser_artifacts / "chromium-profile"  # the fresh --user-data-dir
    _browser_stack.callback(shutil.rmtree, profile, ignore_errors=True)
    playwright = _browser_stack.enter_context(sync_playwright())
    context = playwright.chromium.launch_persistent_context(
        str(profile),
        executable_path=str(CHROMIUM),
        headless=True,
        args=CHROMIUM_FLAGS,
        viewport={"width": 1280, "height": 900},
    )
    _browser_stack.callback(context.close)
    try:
        yield context
    finally:
        _close_browser()


JS_APP_READY = "() => !!(window.jupyterapp && window.jupyterapp.shell && document.querySelector('#jp-main-dock-panel'))"
# Close every document in the main area without the "save changes?" dialog (the workspace copy is
# throwaway), so the next test starts from an empty JupyterLab, as after a fresh page load.
JS_CLOSE_ALL = """async () => {
    const app = window.jupyterapp;
    for (const widget of [...app.shell.widgets('main')]) {
        if (widget.context) widget.context.model.dirty = false;
        widget.dispose();
    }
}"""


class LabPage:
    """One JupyterLab page in Chromium, shared by the browser tests: JupyterLab's front end loads once
    (most of a page load's CPU) and each test opens its notebook in it with the command a
    double-click in the file browser runs (``docmanager:open``), then closes it again."""

    def __init__(self, server, context):
        self.server = server
        self.page = context.new_page()
        self.page.set_default_timeout(30_000)
        self.page.goto(f"{server.url}/lab?reset")
        self.page.wait_for_function(JS_APP_READY, timeout=120_000)
        self.page.evaluate("() => window.jupyterapp.restored")

    def open(self, source: Path):
        """Copy ``source`` into the workspace and open it in the shared page; return the page."""
        self.server.add_notebook(source)
        self.page.evaluate("path => window.jupyterapp.commands.execute('docmanager:open', {path})",
                           f"notebooks/{source.name}")
        return self.page

    def close_all(self):
        """Close every open document and stop every kernel (the next test gets the CPU to itself)."""
        try:
            self.page.evaluate(JS_CLOSE_ALL)
        finally:
            self.server.shutdown_kernels()


@pytest.fixture(scope="session")
def lab_page(jupyter_lab, chromium_context):
    """The shared JupyterLab page (see :class:`LabPage`); a test opens one notebook and closes it."""
    lab = LabPage(jupyter_lab, chromium_context)
    _browser_stack.callback(lab.page.close)
    try:
        yield lab
    finally:
        _close_browser()
