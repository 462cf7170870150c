"""Checkers for the lessons' "your turn" exercises, and :func:`reveal` for answer cells (teaching UI).

A lesson's exercise cell defines a function between nbgrader's ``### BEGIN SOLUTION`` /
``### END SOLUTION`` markers; the next cell calls its checker, which prints ``passed: ...`` or
raises :class:`ExerciseFailed` (an ``AssertionError``) with one line: what is wrong and a hint.
``python -m csm_edu.course workspace DIR`` writes the student copy, where each solution is a
stub raising ``NotImplementedError("Your turn: ...")``.
"""
from ._core import ExerciseFailed, reveal
from .checkers import (check_annealed_langevin, check_conditional_log_prob, check_csm_loss, check_dsm_loss,
                       check_exact_sm_loss, check_gaussian_score, check_grid_log_normaliser, check_hutchinson_trace,
                       check_langevin_step, check_reverse_sde_step, check_ssm_loss, check_tweedie)

__all__ = ["ExerciseFailed", "reveal", "check_gaussian_score", "check_grid_log_normaliser", "check_langevin_step",
           "check_exact_sm_loss", "check_hutchinson_trace", "check_ssm_loss", "check_dsm_loss", "check_tweedie",
           "check_annealed_langevin", "check_csm_loss", "check_conditional_log_prob", "check_reverse_sde_step"]
