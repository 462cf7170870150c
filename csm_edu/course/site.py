"""The rendered course: every lesson executed once and built into a static HTML site.

``python -m csm_edu.course.site --quick`` (or ``--full``) executes each lesson with nbclient,
in its own kernel and in parallel (``--jobs``), and builds the site with Sphinx, myst-nb and
sphinx-book-theme into ``build/site`` (open ``build/site/index.html``). The landing page is the
README's notebook map, its lesson names linked to the rendered lessons; figures, tables, printed
checks and the static state of the widgets (``store_widget_state``) are those of that execution.

Why Sphinx + myst-nb + sphinx-book-theme: it is the engine under Jupyter Book 1.x without its
extra layer (Jupyter Book 2 moved to the Node-based mystmd), maintained by the Executable Books
project, installs from PyPI alone, and renders stored outputs without re-executing
(``nb_execution_mode = "off"``), so the execution is ours: a per-cell timeout, and a retry of a
notebook whose kernel hung or died (``jupyter nbconvert --execute`` was seen to hang after a
widget cell with nbclient 0.11 / ipykernel 7.4), while an error in a cell fails at once.
"""
import argparse
import concurrent.futures
import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Optional, Sequence

from . import notebook_files

REPO_ROOT = Path(__file__).resolve().parents[2]
NOTEBOOKS = REPO_ROOT / "notebooks"
README = REPO_ROOT / "README.md"
DEFAULT_OUT = REPO_ROOT / "build" / "site"
REMOVE_TAG = "remove-cell"  # myst-nb drops cells with this tag from the page


class ExecutionFailed(RuntimeError):
    """A lesson raised an error, or timed out on every try."""


def execute_notebook(source: Path, target: Path, *, cell_timeout: float = 600.0, retries: int = 1,
                     kernel_name: str = "python3") -> dict:
    """Execute ``source`` in a fresh kernel (working folder: ``target``'s) and save it with outputs to ``target``.

    Each cell may run ``cell_timeout`` seconds; a notebook whose cell timed out or whose kernel
    died is run again from the start, up to ``retries`` more times. A cell that raises fails at
    once with :class:`ExecutionFailed`. Widget state is stored, so the page shows the widgets
    as they were left. Returns ``{"seconds": ..., "tries": ...}``.
    """
    import nbclient
    import nbformat
    from nbclient.exceptions import CellExecutionError, CellTimeoutError, DeadKernelError

    if cell_timeout <= 0 or retries < 0:
        raise ValueError(f"cell_timeout must be > 0 and retries >= 0, got {cell_timeout}, {retries}")
    target.parent.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    for attempt in range(retries + 1):
        nb = nbformat.read(source, as_version=4)
        client = nbclient.NotebookClient(nb, timeout=cell_timeout, kernel_name=kernel_name,
                                         store_widget_state=True, allow_errors=False,
                                         resources={"metadata": {"path": str(target.parent)}})
        _output_widgets_listen_only(client)
        try:
            client.execute()
            break
        except (CellTimeoutError, DeadKernelError, TimeoutError) as exc:
            if attempt == retries:
                raise ExecutionFailed(f"{source.name}: {type(exc).__name__} on all {retries + 1} tries "
                                      f"(cell timeout {cell_timeout:.0f} s): {exc}") from exc
            print(f"[site] {source.name}: {type(exc).__name__}, running it again", file=sys.stderr)
        except CellExecutionError as exc:
            raise ExecutionFailed(f"{source.name} raised an error:\n{exc}") from exc
    for cell in nb.cells:
        if cell.get("id") == notebook_files.INSTALL_CELL_ID:  # Colab's install cell: not for readers
            cell.metadata.setdefault("tags", []).append(REMOVE_TAG)
    nbformat.write(nb, target)
    return {"seconds": time.perf_counter() - start, "tries": attempt + 1}


def _output_widgets_listen_only(client) -> None:
    """Keep nbclient's Output-widget mimic from writing back to the kernel while a cell runs.

    nbclient plays the frontend for ``ipywidgets.Output``: it captures what a panel draws into the
    widget's saved state (the page shows it) and, for every captured output, sends that state back
    to the kernel on the shell channel. With ipykernel 7, cells with such panels sometimes never got
    their execute reply: the kernel idle and answering other clients, nbclient waiting until its
    cell timeout (lessons 03, 05, 12 and 13 in this kit). The outputs are still captured; nothing is
    sent back, as a static page needs nothing from the kernel.
    """
    open_widget = client.on_comm_open_jupyter_widget

    def listen_only(msg):
        widget = open_widget(msg)
        if widget is not None:
            widget.send = lambda *args, **kwargs: None
        return widget

    client.comm_open_handlers["jupyter.widget"] = listen_only


def landing_page(readme: Path, lessons: Sequence[str], *, extra_pages: Sequence[str] = ()) -> str:
    """The site's index: the README's "Notebook map" section, lesson names linked, and the toctree.

    ``extra_pages`` (e.g. ``["glossary"]``) are linked under the map and listed after the lessons.
    """
    text = readme.read_text(encoding="utf-8")
    match = re.search(r"^## Notebook map\n(.*?)(?=^## )", text, flags=re.S | re.M)
    if not match:
        raise ValueError(f"{readme} has no '## Notebook map' section to use as the landing page")
    body = match.group(1)
    for name in lessons:
        body = body.replace(f"`{name}`", f"[{name}]({name}.ipynb)")
    toctree = "\n".join([f"{name}.ipynb" for name in lessons] + [f"{name}.md" for name in extra_pages])
    for name in extra_pages:
        body += f"\nSymbols and terms of every lesson: [the {name}]({name}.md).\n"
    return (f"# csm_edu: energy-based models and score matching, hands on\n\n"
            f"Every lesson below is rendered with the outputs of one execution. Run them yourself "
            f"in JupyterLab, VS Code or Colab (see the README).\n\n## Notebook map\n{body}\n"
            f"```{{toctree}}\n:hidden:\n:maxdepth: 1\n\n{toctree}\n```\n")


def sphinx_conf(quick: bool) -> str:
    url = notebook_files.repository_url()
    mode = "quick mode" if quick else "full mode"
    return f'''# Written by python -m csm_edu.course.site; rebuilt on every run.
project = "csm_edu"
html_title = "csm_edu course ({mode} outputs)"
extensions = ["myst_nb"]
nb_execution_mode = "off"          # executed by csm_edu.course.site, with timeouts and retries
nb_merge_streams = True
myst_enable_extensions = ["dollarmath", "amsmath"]
exclude_patterns = ["_build", "**.ipynb_checkpoints"]
html_theme = "sphinx_book_theme"
html_theme_options = {{
    "repository_url": {url!r},
    "use_repository_button": True,
    "path_to_docs": "notebooks",
    "repository_branch": "main",
    "launch_buttons": {{"colab_url": "https://colab.research.google.com"}},
}}
suppress_warnings = ["mystnb.unknown_mime_type", "myst.header", "misc.highlighting_failure"]
'''


def build(out: Path = DEFAULT_OUT, *, quick: bool = True, lessons: Optional[Sequence[str]] = None,
          jobs: Optional[int] = None, cell_timeout: float = 600.0, retries: int = 1,
          notebooks: Path = NOTEBOOKS, readme: Path = README) -> Path:
    """Execute the lessons (all, or those whose names start with ``lessons``) and build the site in ``out``.

    The executed notebooks and the Sphinx sources go to ``out`` + ``-src``; returns ``out / "index.html"``.
    """
    sources = sorted(notebooks.glob("[0-9][0-9]_*.ipynb"))
    if lessons:
        sources = [p for p in sources if any(p.name.startswith(l) for l in lessons)]
    if not sources:
        raise FileNotFoundError(f"no lessons matching {list(lessons or [])} in {notebooks}")
    out = Path(out)
    src = out.with_name(out.name + "-src")
    shutil.rmtree(src, ignore_errors=True)
    src.mkdir(parents=True)
    jobs = jobs or max(1, min(len(sources), os.cpu_count() or 1))
    env = dict(os.environ, CSM_EDU_QUICK="1" if quick else "0")
    print(f"[site] executing {len(sources)} lessons ({'quick' if quick else 'full'} mode, {jobs} at a time)")
    start = time.perf_counter()

    def run(path: Path):
        # One process per lesson: its own kernel, and a wall limit on top of the per-cell timeouts.
        command = [sys.executable, "-m", "csm_edu.course.site", "execute", str(path), str(src / path.name),
                   "--cell-timeout", str(cell_timeout), "--retries", str(retries)]
        limit = cell_timeout * (retries + 1) * 20
        t0 = time.perf_counter()
        done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=limit)
        return path.name, done, time.perf_counter() - t0

    failures = []
    with concurrent.futures.ThreadPoolExecutor(max_workers=jobs) as pool:
        for name, done, seconds in pool.map(run, sources):
            print(f"[site] {name}: {'ok' if done.returncode == 0 else 'FAILED'} in {seconds:.0f} s")
            if done.returncode != 0:
                failures.append(f"{name}:\n{done.stderr[-4000:]}")
    if failures:
        raise ExecutionFailed("lessons failed:\n" + "\n".join(failures))
    print(f"[site] executed in {time.perf_counter() - start:.0f} s")
    extra_pages = [Path(page).stem for page in notebook_files.COURSE_PAGES if (notebooks / page).is_file()]
    for page in extra_pages:
        shutil.copyfile(notebooks / f"{page}.md", src / f"{page}.md")
    (src / "index.md").write_text(landing_page(readme, [p.stem for p in sources], extra_pages=extra_pages),
                                  encoding="utf-8")
    (src / "conf.py").write_text(sphinx_conf(quick), encoding="utf-8")
    shutil.rmtree(out, ignore_errors=True)
    t0 = time.perf_counter()
    subprocess.run([sys.executable, "-m", "sphinx", "-b", "html", "-q", str(src), str(out)], check=True)
    print(f"[site] built {out / 'index.html'} in {time.perf_counter() - t0:.0f} s")
    return out / "index.html"


def main(argv=None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--cell-timeout", type=float, default=600.0, help="seconds per cell (default 600)")
    common.add_argument("--retries", type=int, default=1, help="reruns of a lesson that hung or died (default 1)")
    try:
        if argv[:1] == ["execute"]:  # one lesson, in its own process (used by the build)
            parser = argparse.ArgumentParser(prog="python -m csm_edu.course.site execute", parents=[common])
            parser.add_argument("source", type=Path)
            parser.add_argument("target", type=Path)
            args = parser.parse_args(argv[1:])
            info = execute_notebook(args.source, args.target, cell_timeout=args.cell_timeout, retries=args.retries)
            print(json.dumps(info))
            return 0
        parser = argparse.ArgumentParser(prog="python -m csm_edu.course.site", parents=[common],
                                         description="Execute the lessons and build the static course site.")
        mode = parser.add_mutually_exclusive_group()
        mode.add_argument("--quick", dest="quick", action="store_true", default=True, help="quick-mode outputs (default)")
        mode.add_argument("--full", dest="quick", action="store_false", help="full-mode outputs (the real lessons)")
        parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="site folder (default build/site)")
        parser.add_argument("--jobs", type=int, default=None, help="lessons executed at a time (default: CPU count)")
        parser.add_argument("lessons", nargs="*", help="lesson prefixes, e.g. 00 09 (default: all)")
        args = parser.parse_args(argv)
        build(args.out, quick=args.quick, lessons=args.lessons, jobs=args.jobs,
              cell_timeout=args.cell_timeout, retries=args.retries)
    except ExecutionFailed as exc:
        print(f"[site] {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
