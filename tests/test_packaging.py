"""Packaging (issue 19): what pyproject declares, the one repository address, and a wheel that runs
lessons from a fresh venv outside the checkout."""
import ast
import json
import os
import re
import subprocess
import sys
import sysconfig
import tomllib
import zipfile
from pathlib import Path

import pytest

from csm_edu import config, resources
from csm_edu.course import notebook_files

REPO = Path(__file__).resolve().parents[1]
PYPROJECT = tomllib.loads((REPO / "pyproject.toml").read_text())
NOTEBOOKS = sorted((REPO / "notebooks").glob("[0-9][0-9]_*.ipynb"))
IMPORT_TO_DIST = {"sklearn": "scikit-learn", "PIL": "pillow", "IPython": "ipython"}


def _dist_name(requirement: str) -> str:
    return re.split(r"[\s<>=!~;\[@]", requirement, maxsplit=1)[0].lower().replace("_", "-")


def _third_party_imports(folder: Path):
    found = set()
    for path in folder.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module]
            else:
                continue
            for name in names:
                top = name.split(".")[0]
                if top not in sys.stdlib_module_names and top != "csm_edu":
                    found.add(top)
    return found


def test_every_runtime_import_is_declared_and_nothing_else():
    """The library's imports are the dependencies; the course tooling (csm_edu/course) may add the [site] extra."""
    declared = {_dist_name(r) for r in PYPROJECT["project"]["dependencies"]}
    site_extra = {_dist_name(r) for r in PYPROJECT["project"]["optional-dependencies"]["site"]}
    course = {IMPORT_TO_DIST.get(n, n).lower() for n in _third_party_imports(REPO / "csm_edu" / "course")}
    library = {IMPORT_TO_DIST.get(n, n).lower() for n in _third_party_imports(REPO / "csm_edu")} - (course - declared)
    assert library - declared == set(), f"imported but not in pyproject dependencies: {library - declared}"
    assert declared - library == set(), f"declared but never imported: {declared - library}"
    assert course - declared - site_extra == set(), f"course tooling imports outside [site]: {course - declared - site_extra}"


def test_extras_and_requirement_files():
    extras = PYPROJECT["project"]["optional-dependencies"]
    assert {"pytest", "nbval"} <= {_dist_name(r) for r in extras["test"]}
    assert "playwright" in {_dist_name(r) for r in extras["browser"]}
    first = (REPO / "requirements.txt").read_text().splitlines()[0]
    assert first == "torch==2.13.0", "torch==2.13.0 must stay the first line of requirements.txt"
    colab = [l for l in (REPO / "requirements-colab.txt").read_text().splitlines() if l and not l.startswith("#")]
    assert not any(_dist_name(l) in ("torch", "ipywidgets") for l in colab), "Colab keeps its own torch and widgets"


def test_repository_address_is_written_once_and_derived_everywhere():
    url = notebook_files.repository_url()
    assert url == PYPROJECT["project"]["urls"]["Repository"].rstrip("/").removesuffix(".git")
    assert notebook_files.install_spec(url) in (REPO / "requirements-colab.txt").read_text()
    readme = (REPO / "README.md").read_text()
    for path in NOTEBOOKS:
        nb = json.loads(path.read_text())
        first = nb["cells"][0]
        assert first.get("id") == notebook_files.INSTALL_CELL_ID, f"{path.name}: the Colab install cell must come first"
        assert "".join(first["source"]) + "\n" == notebook_files.install_cell_source(url), (
            f"{path.name}: install cell out of date; run python -m csm_edu.course.notebook_files notebooks/*.ipynb")
        assert notebook_files.colab_badge(url, path.name) in readme, f"README map lacks the Colab badge of {path.name}"


def test_install_cell_does_nothing_outside_colab():
    from IPython.core.inputtransformer2 import TransformerManager

    source = TransformerManager().transform_cell(notebook_files.install_cell_source("https://github.com/o/r"))
    calls = []
    namespace = {"get_ipython": lambda: type("Shell", (), {"run_line_magic": lambda *a: calls.append(a)})()}
    sys.modules.pop("google.colab", None)
    exec(compile(source, "install_cell", "exec"), namespace)
    assert calls == []
    assert "google.colab" in source and "pip" in source and "git+https://github.com/o/r.git" in source


def test_shipped_files_are_found_through_importlib_resources():
    names = resources.names()
    assert {"mnist_subset.npz", "results/scaling_cpu.csv", "results/stability_runs.csv",
            "results/stability_curves.csv"} <= set(names)
    assert resources.path("results/scaling_cpu.csv").read_text().count("\n") > 3
    with pytest.raises(FileNotFoundError, match="mnist_subset.npz"):
        resources.path("nope.csv")


def test_set_quick_switches_the_mode_in_a_running_process(monkeypatch):
    monkeypatch.setattr(config, "QUICK", config.QUICK)
    monkeypatch.setenv("CSM_EDU_QUICK", os.environ.get("CSM_EDU_QUICK", "1"))
    assert config.set_quick(False) is False and config.QUICK is False and os.environ["CSM_EDU_QUICK"] == "0"
    assert config.set_quick(True) is True and config.QUICK is True
    with pytest.raises(TypeError, match="quick"):
        config.set_quick("yes")


def _run(command, **kwargs):
    done = subprocess.run(command, capture_output=True, text=True, **kwargs)
    assert done.returncode == 0, f"{command[:4]} failed ({done.returncode}):\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
    return done


# Lesson 09's cells that measure timings or train (and the cells that use their results) are left out of
# the run from the wheel: what the packaging test needs from 09 is every file it reads from the
# package (results/*.csv through csm_edu.resources), which those cells never touch. The nbval run of the
# whole lesson (quick mode, from the checkout) checks the rest.
COSTLY_CALLS = {"measure", "stability_study"}


def _code(cell) -> str:
    """A code cell's source without IPython magics (``%matplotlib inline``), for :mod:`ast`."""
    lines = "".join(cell["source"]).splitlines()
    return "\n".join(l[:len(l) - len(l.lstrip())] + "pass" if l.lstrip().startswith(("%", "!")) else l for l in lines)


def _resource_cells_only(nb: dict) -> dict:
    """``nb`` without its costly code cells (calling one of COSTLY_CALLS, or reading a name such a cell
    bound and the cell itself does not, transitively) and without markdown; asserts that every cell
    reading package files stays."""
    costly_names, kept = set(), []
    for cell in nb["cells"]:
        if cell["cell_type"] != "code":
            continue
        tree = ast.parse(_code(cell))
        calls = {n.func.attr if isinstance(n.func, ast.Attribute) else getattr(n.func, "id", None)
                 for n in ast.walk(tree) if isinstance(n, ast.Call)}
        loads = {n.id for n in ast.walk(tree) if isinstance(n, ast.Name) and isinstance(n.ctx, ast.Load)}
        stores = {n.id for n in ast.walk(tree) if isinstance(n, ast.Name) and isinstance(n.ctx, ast.Store)}
        if calls & COSTLY_CALLS or (loads - stores) & costly_names:   # names read before this cell binds them
            costly_names |= stores
            assert "resources." not in _code(cell), "a costly cell of lesson 09 reads package files: run it"
        else:
            kept.append(cell)
    return dict(nb, cells=kept)


def _resource_paths_in(nb: dict):
    return re.findall(r"resources\.path\((f?\"[^\"]+\")\)", "".join("".join(c["source"]) for c in nb["cells"]))


def test_lesson_09_from_the_wheel_keeps_every_resource_lookup():
    """The cut-down lesson 09 of the packaging test still reads each file the whole lesson reads."""
    nb = json.loads((REPO / "notebooks" / "09_scaling_and_stability.ipynb").read_text())
    cut = _resource_cells_only(nb)
    assert _resource_paths_in(nb) and _resource_paths_in(cut) == _resource_paths_in(nb)
    assert len(cut["cells"]) < sum(c["cell_type"] == "code" for c in nb["cells"])     # something costly went


@pytest.mark.packaging
def test_wheel_installed_outside_the_checkout_runs_lessons_00_and_09(tmp_path):
    # 1. The wheel, from the repository (setuptools of this environment, no download).
    wheels = tmp_path / "wheels"
    _run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(wheels), str(REPO)],
         timeout=300)
    wheel = next(wheels.glob("csm_edu-*.whl"))
    members = set(zipfile.ZipFile(wheel).namelist())
    shipped = [f"csm_edu/resources/{p.relative_to(REPO / 'csm_edu' / 'resources').as_posix()}"
               for p in (REPO / "csm_edu" / "resources" / "checkpoints").glob("*.pt")]
    assert shipped, "no checkpoint under csm_edu/resources/checkpoints (lesson 08 loads one)"
    for name in ["csm_edu/resources/mnist_subset.npz", "csm_edu/resources/results/scaling_cpu.csv",
                 "csm_edu/course/site.py"] + shipped + [f"csm_edu/resources/{n}" for n in resources.names()]:
        assert name in members, f"{name} is not in the wheel"
    # 2. A fresh venv that reuses this environment's installed dependencies (a .pth line adds its
    #    site-packages after the venv's own, and .pth files found there are not run, so this
    #    environment's editable csm_edu stays invisible), and the wheel installed into it.
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    env.update(CSM_EDU_QUICK="1", PYTHONNOUSERSITE="1")
    venv = tmp_path / "venv"
    _run([sys.executable, "-m", "venv", "--without-pip", str(venv)], timeout=120)
    python = venv / ("Scripts/python.exe" if os.name == "nt" else "bin/python")
    purelib = Path(_run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                        env=env).stdout.strip())
    shared = {sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"]}
    _run([sys.executable, "-m", "pip", "--python", str(python), "install", "--no-deps", "-q", str(wheel)],
         env=env, timeout=300)
    (purelib / "_csm_edu_test_deps.pth").write_text("\n".join(sorted(shared)) + "\n")  # after: pip sees no csm_edu
    # 3. From a temporary folder, nothing of the checkout on the path: every shipped file is found
    #    through importlib.resources inside the venv, then lesson 00 and lesson 09's cells that read
    #    package files (see _resource_cells_only) run as a notebook, in quick mode.
    work = tmp_path / "student"
    work.mkdir()
    probe = ("import json, csm_edu, csm_edu.resources as r; "
             "print(json.dumps([csm_edu.__file__] + [str(r.path(n)) for n in r.names()]))")
    where = json.loads(_run([str(python), "-c", probe], cwd=work, env=env).stdout)
    assert len(where) == len(resources.names()) + 1
    assert all(Path(p).resolve().is_relative_to(venv.resolve()) for p in where), where
    #    One notebook, one kernel: lesson 00 whole, then lesson 09's cells that read package files.
    lesson00 = json.loads((REPO / "notebooks" / "00_start_here.ipynb").read_text())
    lesson09 = _resource_cells_only(json.loads((REPO / "notebooks" / "09_scaling_and_stability.ipynb").read_text()))
    name = "00_and_09.ipynb"
    (work / name).write_text(json.dumps(dict(lesson00, cells=lesson00["cells"] + lesson09["cells"])))
    _run([str(python), "-m", "csm_edu.course.site", "execute", str(work / name), str(work / f"run_{name}"),
          "--cell-timeout", "300", "--retries", "1"], cwd=work, env=env, timeout=600)
    nb = json.loads((work / f"run_{name}").read_text())
    assert len(nb["cells"]) == len(lesson00["cells"]) + len(lesson09["cells"])
    errors = [o for c in nb["cells"] for o in c.get("outputs", []) if o.get("output_type") == "error"]
    assert not errors, f"lessons 00 and 09 failed from the wheel: {errors[0]}"
    text = json.dumps(nb)
    assert str(REPO / "csm_edu") not in text, "lessons 00 and 09 imported csm_edu from the checkout"


def test_the_seaborn_theme_applies_to_every_later_plot():
    import matplotlib
    import matplotlib.pyplot as plt
    from csm_edu import viz

    with matplotlib.rc_context():
        matplotlib.rcParams["axes.spines.top"] = True
        matplotlib.rcParams["axes.prop_cycle"] = matplotlib.cycler(color=["k"])
        viz.use_theme()
        assert matplotlib.rcParams["axes.spines.top"] is False
        import seaborn as sns
        expected = [matplotlib.colors.to_hex(c) for c in sns.color_palette(viz.THEME["palette"])]
        fig, ax = plt.subplots()
        line, = ax.plot([0, 1], [0, 1])
        assert matplotlib.colors.to_hex(line.get_color()) == expected[0]
        plt.close(fig)
    # a lesson gets the theme by importing the kit's plots (the library's core never imports them):
    # running the module's code again (as a fresh import does) sets it over matplotlib's defaults
    import importlib

    with matplotlib.rc_context():
        matplotlib.rcParams.update(matplotlib.rcParamsDefault)
        assert matplotlib.rcParams["axes.spines.top"] is True
        importlib.reload(viz)
        assert matplotlib.rcParams["axes.spines.top"] is False
        assert matplotlib.colors.to_hex(matplotlib.rcParams["axes.prop_cycle"].by_key()["color"][0]) == expected[0]
