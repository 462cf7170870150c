"""The parts of every lesson file that are the same in all of them: the Colab install cell, the
notebook metadata JupyterLab writes, and the repository address both are built from.

The repository address is written in ONE place, ``[project.urls] Repository`` of
``pyproject.toml``; the install cells, ``requirements-colab.txt`` and the README's "Open in
Colab" badges are derived from it (``tests/test_packaging.py`` checks that they agree), and
``python -m csm_edu.course.notebook_files notebooks/*.ipynb`` rewrites the lessons after it changes.
"""
import json
import re
import sys
from pathlib import Path
from typing import Optional

COURSE_PAGES = ("glossary.md",)  # pages of notebooks/ beside the lessons: the site and workspaces carry them

INSTALL_CELL_ID = "colab-install"
INSTALL_CELL_TAG = "colab-install"

# What JupyterLab 4 with ipykernel writes into a notebook it saves (kernelspec of the
# "Python 3 (ipykernel)" kernel; language_info from the kernel's kernel_info reply on Python 3.11):
# saved this way, opening a lesson there does not mark it modified.
KERNELSPEC = {"display_name": "Python 3 (ipykernel)", "language": "python", "name": "python3"}
LANGUAGE_INFO = {
    "codemirror_mode": {"name": "ipython", "version": 3},
    "file_extension": ".py",
    "mimetype": "text/x-python",
    "name": "python",
    "nbconvert_exporter": "python",
    "pygments_lexer": "ipython3",
    "version": "3.11.7",
}


def repository_url(pyproject: Optional[Path] = None) -> str:
    """``[project.urls] Repository`` of ``pyproject.toml`` (the checkout's), without a trailing ``.git``."""
    import tomllib

    path = Path(pyproject) if pyproject is not None else Path(__file__).resolve().parents[2] / "pyproject.toml"
    if not path.is_file():
        raise FileNotFoundError(f"pyproject.toml not found at {path}; pass pyproject= the checkout's file")
    urls = tomllib.loads(path.read_text()).get("project", {}).get("urls", {})
    if "Repository" not in urls:
        raise ValueError(f"{path} has no [project.urls] Repository entry; add the repository's https address")
    return urls["Repository"].rstrip("/").removesuffix(".git")


def install_spec(url: str) -> str:
    """The pip requirement that installs the kit from its repository: ``csm_edu @ git+URL.git``."""
    return f"csm_edu @ git+{url}.git"


def install_cell_source(url: str) -> str:
    """Source of a lesson's first cell: install the kit on Colab only, do nothing anywhere else."""
    return (
        "# Google Colab only: install the kit from its repository (Colab's own torch and ipywidgets are\n"
        "# kept). In JupyterLab, VS Code or any local install this cell does nothing.\n"
        "# Quick mode (smaller sizes, about a minute per lesson): run `config.set_quick(True)` after the imports.\n"
        "import sys\n"
        "if \"google.colab\" in sys.modules:\n"
        f"    %pip install -q \"{install_spec(url)}\"\n"
    )


def colab_url(url: str, notebook_name: str, branch: str = "main") -> str:
    """The "Open in Colab" address of ``notebooks/<notebook_name>`` in a GitHub repository ``url``."""
    match = re.fullmatch(r"https://github\.com/([^/]+)/([^/]+)", url)
    if not match:
        raise ValueError(f"url must be a https://github.com/OWNER/REPO address for Colab, got {url!r}")
    return f"https://colab.research.google.com/github/{match[1]}/{match[2]}/blob/{branch}/notebooks/{notebook_name}"


def colab_badge(url: str, notebook_name: str) -> str:
    """Markdown of the README map's badge for one lesson."""
    return (f"[![Open in Colab](https://colab.research.google.com/assets/colab-badge.svg)]"
            f"({colab_url(url, notebook_name)})")


def _lines(text: str) -> list:
    return text.splitlines(keepends=True)


def normalise(nb: dict, url: str) -> dict:
    """Put the install cell first (replacing an older one) and JupyterLab's metadata on ``nb``."""
    cells = [c for c in nb["cells"] if c.get("id") != INSTALL_CELL_ID]
    cell = {"cell_type": "code", "execution_count": None, "id": INSTALL_CELL_ID,
            "metadata": {"tags": [INSTALL_CELL_TAG]}, "outputs": [],
            "source": _lines(install_cell_source(url).rstrip("\n"))}
    nb["cells"] = [cell] + cells
    nb["metadata"] = {**nb.get("metadata", {}), "kernelspec": dict(KERNELSPEC),
                      "language_info": json.loads(json.dumps(LANGUAGE_INFO))}
    nb["nbformat"], nb["nbformat_minor"] = 4, 5
    return nb


def dumps(nb: dict) -> str:
    """A notebook as JupyterLab saves it: sorted keys, one-space indent, UTF-8, final newline."""
    return json.dumps(nb, indent=1, sort_keys=True, ensure_ascii=False) + "\n"


def main(argv=None) -> int:
    paths = [Path(p) for p in (sys.argv[1:] if argv is None else argv)]
    if not paths:
        print("usage: python -m csm_edu.course.notebook_files notebooks/*.ipynb", file=sys.stderr)
        return 2
    url = repository_url()
    for path in paths:
        nb = normalise(json.loads(path.read_text(encoding="utf-8")), url)
        path.write_text(dumps(nb), encoding="utf-8")
        print(f"updated {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
