"""Student and teacher copies of the course from one source.

The lessons keep each "your turn" solution between nbgrader's markers::

    def langevin_step(x, score_fn, step_size, noise):
        ### BEGIN SOLUTION
        return ...
        ### END SOLUTION

The student copy replaces every such block (markers included) by a stub at the block's
indentation::

        # YOUR CODE HERE
        raise NotImplementedError("Your turn: write langevin_step, then run the check below")

and leaves every other cell exactly as it is (folded markdown solutions and the hidden answer
cells included, which print only through :func:`csm_edu.exercises.reveal`). The teacher copy is
the lessons unchanged, markers included, so nbgrader itself can be run on it. Nothing but the
notebooks is written: data, checkpoints and benchmark results stay where the package finds them.
"""
import copy
import json
import re
from pathlib import Path
from typing import List, Optional, Tuple, Union

from ..files import atomic_write
from .notebook_files import COURSE_PAGES

BEGIN_SOLUTION = "### BEGIN SOLUTION"
END_SOLUTION = "### END SOLUTION"
_DEF = re.compile(r"^\s*def\s+([A-Za-z_]\w*)\s*\(")


def _stub(indent: str, name: Optional[str]) -> List[str]:
    what = f"write {name}" if name else "write the missing code"
    return [f"{indent}# YOUR CODE HERE",
            f'{indent}raise NotImplementedError("Your turn: {what}, then run the check below")']


def stub_solutions(source: str, where: str = "cell") -> Tuple[str, int]:
    """``source`` with every solution block replaced by a "your turn" stub, and the number of blocks.

    The stub names the nearest function defined above the block. Raises ``ValueError`` naming
    ``where`` for unbalanced or nested markers.
    """
    out: List[str] = []
    name = None
    inside = False
    blocks = 0
    for number, line in enumerate(source.split("\n"), 1):
        stripped = line.strip()
        if stripped == BEGIN_SOLUTION:
            if inside:
                raise ValueError(f"{where}, line {number}: {BEGIN_SOLUTION} inside another solution block; "
                                 f"close the first with {END_SOLUTION}")
            inside = True
            blocks += 1
            out.extend(_stub(line[: len(line) - len(line.lstrip())], name))
            continue
        if stripped == END_SOLUTION:
            if not inside:
                raise ValueError(f"{where}, line {number}: {END_SOLUTION} without {BEGIN_SOLUTION}")
            inside = False
            continue
        if inside:
            continue
        match = _DEF.match(line)
        if match:
            name = match.group(1)
        out.append(line)
    if inside:
        raise ValueError(f"{where}: {BEGIN_SOLUTION} is never closed; add {END_SOLUTION} after the solution")
    return "\n".join(out), blocks


def _source_lines(text: str) -> List[str]:
    parts = text.split("\n")
    return [p + "\n" for p in parts[:-1]] + ([parts[-1]] if parts[-1] else [])


def student_notebook(nb: dict, name: str = "notebook") -> Tuple[dict, int]:
    """A deep copy of notebook ``nb`` with the solutions of its code cells stubbed, and the number of stubs.

    Only code cells that hold a solution block change (their source); every other cell, the cell
    metadata and the notebook metadata are copied as they are.
    """
    student = copy.deepcopy(nb)
    total = 0
    for index, cell in enumerate(student.get("cells", [])):
        if cell.get("cell_type") != "code":
            continue
        source = "".join(cell.get("source", ""))
        if BEGIN_SOLUTION not in source and END_SOLUTION not in source:
            continue
        stubbed, blocks = stub_solutions(source, f"{name}, cell {index}")
        cell["source"] = _source_lines(stubbed)
        total += blocks
    return student, total


def default_source() -> Path:
    """The repository's ``notebooks/`` folder next to the installed (editable) package."""
    return Path(__file__).resolve().parents[2] / "notebooks"


def write_workspace(folder: Union[str, Path], *, solutions: bool = False, force: bool = False,
                    source: Optional[Union[str, Path]] = None) -> List[Path]:
    """Write the student copy (``solutions=False``) or the teacher copy of every lesson into ``folder``.

    Refuses a folder that exists and is not empty unless ``force=True`` (then lessons of the same
    name are overwritten; other files are left alone). Every notebook is written atomically; the
    course pages beside the lessons (the glossary) are copied. Returns the written paths.
    """
    source = Path(source) if source is not None else default_source()
    lessons = sorted(source.glob("[0-9][0-9]_*.ipynb")) if source.is_dir() else []
    if not lessons:
        raise FileNotFoundError(f"source {str(source)!r} holds no lessons (NN_topic.ipynb); pass the "
                                "repository's notebooks folder with --source")
    folder = Path(folder)
    if folder.exists() and not folder.is_dir():
        raise ValueError(f"folder {str(folder)!r} is a file; give a folder for the workspace")
    if folder.is_dir() and any(folder.iterdir()) and not force:
        raise ValueError(f"folder {str(folder)!r} is not empty; choose a new folder, or pass --force "
                         "(force=True) to overwrite its lessons")
    folder.mkdir(parents=True, exist_ok=True)
    written = []
    for lesson in lessons:
        nb = json.loads(lesson.read_text(encoding="utf-8"))
        if not solutions:
            nb, _ = student_notebook(nb, lesson.name)
        target = folder / lesson.name
        with atomic_write(target, mode="w") as f:
            f.write(json.dumps(nb, indent=1, ensure_ascii=False, sort_keys=True) + "\n")
        written.append(target)
    for page in COURSE_PAGES:  # the glossary the lessons link to
        if (source / page).is_file():
            with atomic_write(folder / page, mode="w") as f:
                f.write((source / page).read_text(encoding="utf-8"))
            written.append(folder / page)
    return written
