"""The student workspace: stubs where the solutions were, every other cell unchanged, solutions restore it."""
import json
from pathlib import Path

import pytest

from csm_edu.course import BEGIN_SOLUTION, END_SOLUTION, student_notebook, stub_solutions, write_workspace
from csm_edu.course.__main__ import main

NOTEBOOKS = Path(__file__).resolve().parent.parent / "notebooks"
LESSONS = sorted(NOTEBOOKS.glob("[0-9][0-9]_*.ipynb"))
WITH_EXERCISES = ["00", "01", "02", "03", "04", "05", "06", "07", "13"]


def load(path):
    return json.loads(Path(path).read_text(encoding="utf-8"))


def source(cell):
    return "".join(cell["source"])


def solution_cells(nb):
    return [i for i, c in enumerate(nb["cells"]) if c["cell_type"] == "code" and BEGIN_SOLUTION in source(c)]


def restore(student_source, teacher_source):
    """Put the teacher's solution blocks back in place of the student's stubs, in order."""
    blocks, block, inside = [], [], False
    for line in teacher_source.split("\n"):
        if line.strip() == BEGIN_SOLUTION:
            inside, block = True, [line]
        elif line.strip() == END_SOLUTION:
            inside = False
            blocks.append(block + [line])
        elif inside:
            block.append(line)
    out, lines, k = [], student_source.split("\n"), 0
    while k < len(lines):
        if lines[k].strip() == "# YOUR CODE HERE" and "Your turn" in lines[k + 1]:
            out.extend(blocks.pop(0))
            k += 2
        else:
            out.append(lines[k])
            k += 1
    assert not blocks
    return "\n".join(out)


@pytest.fixture(scope="module")
def student_copy(tmp_path_factory):
    folder = tmp_path_factory.mktemp("workspace")
    written = write_workspace(folder)
    return folder, written


def test_every_lesson_is_written(student_copy):
    folder, written = student_copy
    assert [p.name for p in written] == [p.name for p in LESSONS] + ["glossary.md"]
    for p in written[:-1]:
        load(p)
    assert (folder / "glossary.md").read_text(encoding="utf-8") == (NOTEBOOKS / "glossary.md").read_text(encoding="utf-8")


def test_glossary_is_linked_from_lesson_00_and_on_the_site_landing_page():
    """Lesson 00 links the course glossary (a relative link: it opens in JupyterLab and on the site)."""
    from csm_edu.course.site import README, landing_page

    start = load(LESSONS[0])
    assert any("](glossary.md)" in "".join(cell["source"]) for cell in start["cells"] if cell["cell_type"] == "markdown")
    page = landing_page(README, [p.stem for p in LESSONS], extra_pages=["glossary"])
    assert "[the glossary](glossary.md)" in page and page.rstrip().endswith("glossary.md\n```")


def test_lessons_with_exercises_have_solution_blocks():
    for lesson in LESSONS:
        n = len(solution_cells(load(lesson)))
        if lesson.name[:2] in WITH_EXERCISES:
            assert 1 <= n <= 3, (lesson.name, n)
        for c in load(lesson)["cells"]:
            if c["cell_type"] == "markdown":
                lines = [line.strip() for line in source(c).split("\n")]
                assert BEGIN_SOLUTION not in lines, f"{lesson.name}: solution blocks belong in code cells"


@pytest.mark.parametrize("lesson", LESSONS, ids=lambda p: p.name)
def test_student_copy_stubs_solutions_and_keeps_every_other_cell(student_copy, lesson):
    folder, _ = student_copy
    teacher, student = load(lesson), load(folder / lesson.name)
    assert student["metadata"] == teacher["metadata"] and len(student["cells"]) == len(teacher["cells"])
    stubbed = solution_cells(teacher)
    for i, (t, s) in enumerate(zip(teacher["cells"], student["cells"])):
        if i not in stubbed:
            assert s == t, f"{lesson.name}: cell {i} changed"
            continue
        assert BEGIN_SOLUTION not in source(s) and END_SOLUTION not in source(s)
        assert 'raise NotImplementedError("Your turn: write ' in source(s)
        assert {k: v for k, v in s.items() if k != "source"} == {k: v for k, v in t.items() if k != "source"}
        assert restore(source(s), source(t)) == source(t)
    restored = json.loads(json.dumps(student))
    for i in stubbed:
        restored["cells"][i]["source"] = teacher["cells"][i]["source"]
    assert restored == teacher, "the student copy with the solutions put back must equal the lesson"


def _exercise_pairs(nb):
    """(exercise cell, check cell) sources: each solution cell is followed by the cell calling its checker."""
    pairs = []
    for i in solution_cells(nb):
        check = source(nb["cells"][i + 1])
        assert "csm_edu.exercises import check_" in check, "a check cell must follow every exercise"
        pairs.append((i, check))
    return pairs


@pytest.mark.parametrize("lesson", [p for p in LESSONS if p.name[:2] in WITH_EXERCISES], ids=lambda p: p.name)
def test_stubs_raise_your_turn_and_solutions_pass_their_checks(student_copy, lesson, capsys):
    folder, _ = student_copy
    teacher, student = load(lesson), load(folder / lesson.name)
    for i, check in _exercise_pairs(teacher):
        stub_ns = {}
        exec(source(student["cells"][i]), stub_ns)
        with pytest.raises(NotImplementedError, match="Your turn: write"):
            exec(check, stub_ns)
        solution_ns = {}
        exec(source(teacher["cells"][i]), solution_ns)
        exec(check, solution_ns)
        assert "passed: " in capsys.readouterr().out


def test_stub_keeps_indentation_and_names_the_function():
    text = "def f(x):\n    \"\"\"doc\"\"\"\n    ### BEGIN SOLUTION\n    return x\n    ### END SOLUTION\ny = 1"
    stubbed, blocks = stub_solutions(text)
    assert blocks == 1
    assert stubbed == ("def f(x):\n    \"\"\"doc\"\"\"\n    # YOUR CODE HERE\n"
                       "    raise NotImplementedError(\"Your turn: write f, then run the check below\")\ny = 1")


@pytest.mark.parametrize("text", ["### BEGIN SOLUTION\nx = 1", "x = 1\n### END SOLUTION",
                                  "### BEGIN SOLUTION\n### BEGIN SOLUTION\n### END SOLUTION"])
def test_unbalanced_markers_are_refused(text):
    with pytest.raises(ValueError, match="SOLUTION"):
        stub_solutions(text, "lesson.ipynb, cell 3")


def test_student_notebook_leaves_markdown_alone():
    nb = {"cells": [{"cell_type": "markdown", "metadata": {}, "source": ["<details>### BEGIN SOLUTION</details>"]}],
          "metadata": {}}
    student, n = student_notebook(nb)
    assert n == 0 and student == nb


def test_refuses_a_non_empty_folder_unless_forced(tmp_path):
    (tmp_path / "notes.txt").write_text("mine")
    with pytest.raises(ValueError, match="not empty.*--force"):
        write_workspace(tmp_path)
    written = write_workspace(tmp_path, force=True)
    assert len(written) == len(LESSONS) + 1 and (tmp_path / "notes.txt").read_text() == "mine"
    assert not list(tmp_path.glob(".*.tmp")), "atomic writes leave no temporary files"


def test_solutions_version_is_the_lessons(tmp_path):
    write_workspace(tmp_path / "teacher", solutions=True)
    for lesson in LESSONS:
        assert load(tmp_path / "teacher" / lesson.name) == load(lesson)
    with pytest.raises(FileNotFoundError, match="--source"):
        write_workspace(tmp_path / "x", source=tmp_path / "nowhere")


def test_command_line(tmp_path, capsys):
    assert main(["workspace", str(tmp_path / "ws")]) == 0
    assert "student copy of" in capsys.readouterr().out
    assert main(["workspace", str(tmp_path / "ws")]) == 2
    assert "--force" in capsys.readouterr().err
    assert main(["workspace", str(tmp_path / "ws"), "--force", "--solutions"]) == 0
    assert load(tmp_path / "ws" / LESSONS[0].name) == load(LESSONS[0])
