"""Every lesson is saved clean and has the parts a lesson needs."""
import json
from pathlib import Path

import pytest

NOTEBOOKS = sorted((Path(__file__).parent.parent / "notebooks").glob("*.ipynb"))


def test_there_are_lessons():
    assert len(NOTEBOOKS) >= 1


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_notebook_is_saved_without_outputs(path):
    nb = json.loads(path.read_text())
    dirty = [i for i, c in enumerate(nb["cells"]) if c["cell_type"] == "code" and (c.get("outputs") or c.get("execution_count"))]
    assert not dirty, f"{path.name}: cells {dirty} have outputs; clear them (Edit > Clear Outputs of All Cells) before saving"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_notebook_is_a_lesson(path):
    nb = json.loads(path.read_text())
    text = "\n".join("".join(c["source"]) for c in nb["cells"]).lower()
    code = "\n".join("".join(c["source"]) for c in nb["cells"] if c["cell_type"] == "code")
    assert path.name[:2].isdigit() and path.name[2] == "_", "lessons are named NN_topic.ipynb"
    for part in ("learning goals", "prerequisites", "exercise", "recap"):
        assert part in text, f"{path.name} has no '{part}' section"
    assert "setup_notebook" in code, f"{path.name} must seed once at the top with config.setup_notebook()"
    assert "assert " in code, f"{path.name} must check a measured quality with an assert"
    widget_cells = [c for c in nb["cells"] if c["cell_type"] == "code" and "panel(" in "".join(c["source"])]
    for c in widget_cells:
        assert "nbval-ignore-output" in c.get("metadata", {}).get("tags", []), f"{path.name}: widget cell needs the nbval-ignore-output tag"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_notebook_has_the_metadata_jupyterlab_writes(path):
    """Saved as JupyterLab 4 saves it, so opening the lesson there does not mark it modified."""
    from csm_edu.course import notebook_files

    nb = json.loads(path.read_text())
    fix = "run python -m csm_edu.course.notebook_files " + path.as_posix().split("/")[-2] + "/" + path.name
    assert (nb["nbformat"], nb["nbformat_minor"]) == (4, 5), f"{path.name}: nbformat 4.5 expected; {fix}"
    assert nb["metadata"].get("kernelspec") == notebook_files.KERNELSPEC, f"{path.name}: kernelspec; {fix}"
    assert nb["metadata"].get("language_info") == notebook_files.LANGUAGE_INFO, f"{path.name}: language_info; {fix}"
    assert all(c.get("id") for c in nb["cells"]), f"{path.name}: every cell needs an id (nbformat 4.5)"
    first = nb["cells"][0]
    assert first["cell_type"] == "code" and first.get("id") == notebook_files.INSTALL_CELL_ID, (
        f"{path.name}: the first cell must be the Colab install cell; {fix}")
