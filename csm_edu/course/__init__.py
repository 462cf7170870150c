"""Course tooling (teaching UI): the student workspace.

``python -m csm_edu.course workspace DIR`` writes the student copy of the lessons into DIR, with
every "your turn" solution replaced by a stub; ``--solutions`` writes the teacher version.
"""
from .workspace import (BEGIN_SOLUTION, END_SOLUTION, default_source, student_notebook, stub_solutions,
                        write_workspace)

__all__ = ["BEGIN_SOLUTION", "END_SOLUTION", "default_source", "student_notebook", "stub_solutions",
           "write_workspace"]
