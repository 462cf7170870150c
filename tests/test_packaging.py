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
                 "csm_edu/course/site.py"] + shipped:
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
    # 3. Lessons 00 and 09 from a temporary folder, quick mode, nothing of the checkout on the path.
    work = tmp_path / "student"
    work.mkdir()
    where = _run([str(python), "-c", "import csm_edu, csm_edu.resources as r; print(csm_edu.__file__); "
                  "print(r.path('results/scaling_cpu.csv'))"], cwd=work, env=env).stdout.split()
    assert all(Path(p).resolve().is_relative_to(venv.resolve()) for p in where), where
    for name in ("00_start_here.ipynb", "09_scaling_and_stability.ipynb"):
        (work / name).write_bytes((REPO / "notebooks" / name).read_bytes())
        _run([str(python), "-m", "csm_edu.course.site", "execute", str(work / name), str(work / f"run_{name}"),
              "--cell-timeout", "300", "--retries", "1"], cwd=work, env=env, timeout=600)
        nb = json.loads((work / f"run_{name}").read_text())
        errors = [o for c in nb["cells"] for o in c.get("outputs", []) if o.get("output_type") == "error"]
        assert not errors, f"{name} failed from the wheel: {errors[0]}"
        text = json.dumps(nb)
        assert str(REPO / "csm_edu") not in text, f"{name} imported csm_edu from the checkout"


def test_the_seaborn_theme_applies_to_every_later_plot():
    import subprocess
    import sys
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
    # a lesson gets the theme by importing the kit's plots (the library's core never imports them)
    probe = "import matplotlib; import csm_edu.viz; print(matplotlib.rcParams['axes.spines.top'])"
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=120)
    assert out.stdout.strip() == "False", out.stderr
