"""Shared machinery of the exercise checkers: one-line verdicts, safe calls, coefficient fits, reveal.

A checker calls the student's function on cases whose answer is known, and ends in exactly one of

- ``passed: <exercise>: <what was checked>`` printed (and ``True`` returned), or
- :class:`ExerciseFailed` (an ``AssertionError``, so ``nbval`` fails on a wrong solution) whose
  message is one line: what is wrong, then a hint that never spells out the solution.

A stub that still raises ``NotImplementedError`` ("Your turn: ...") is let through unchanged.
"""
import os
from typing import Callable, Dict, Optional, Sequence

import torch


class ExerciseFailed(AssertionError):
    """A check found a mistake; the message is one line: the problem and a hint."""


def fail(exercise: str, problem: str, hint: str) -> None:
    """Raise :class:`ExerciseFailed` with the one-line message ``exercise: problem. Hint: hint``."""
    line = f"{exercise}: {problem}. Hint: {hint}"
    raise ExerciseFailed(" ".join(line.split()))


def passed(exercise: str, what: str) -> bool:
    """Print the one-line pass message and return True."""
    print(f"passed: {exercise}: {what}")
    return True


_ERROR_HINTS = (
    ("does not require grad", "make x a leaf that tracks gradients first: x = x.detach().requires_grad_(True)"),
    ("Trying to backward through the graph a second time",
     "pass retain_graph=True (or create_graph=True) to torch.autograd.grad when you differentiate twice"),
    ("One of the differentiated Tensors appears to not have been used",
     "differentiate the score evaluated at the same tensor you pass to torch.autograd.grad"),
    ("must match the size", "check the shapes: data are (n, D), one row per point"),
    ("mat1 and mat2", "check the shapes: data are (n, D), one row per point"),
)


def call(exercise: str, fn: Callable, *args, **kwargs):
    """Call the student's ``fn``; turn any error but the "your turn" stub into a one-line failure."""
    if not callable(fn):
        fail(exercise, f"expected a function, got {type(fn).__name__}", "pass the function itself, without calling it")
    try:
        return fn(*args, **kwargs)
    except NotImplementedError:
        raise
    except ExerciseFailed:
        raise
    except Exception as err:  # noqa: BLE001 - reported as one line
        message = str(err).splitlines()[0] if str(err) else ""
        hint = next((h for key, h in _ERROR_HINTS if key in str(err)), "read the error and the exercise text again")
        fail(exercise, f"your function raised {type(err).__name__}: {message[:160]}", hint)


def as_tensor_result(exercise: str, value, shape: Optional[Sequence[int]] = None, what: str = "the result") -> torch.Tensor:
    """``value`` as a tensor of ``shape`` (``()`` for a scalar: one-element results accepted); fail otherwise."""
    if isinstance(value, (int, float)) and shape == ():
        value = torch.tensor(float(value))
    if not isinstance(value, torch.Tensor):
        fail(exercise, f"{what} is a {type(value).__name__}, not a torch tensor", "return a tensor built with torch operations")
    if shape == ():
        if value.numel() != 1:
            fail(exercise, f"{what} has shape {tuple(value.shape)}, expected a scalar",
                 "average over the batch (and sum over dimensions) to one number")
        return value.reshape(())
    if shape is not None and tuple(value.shape) != tuple(shape):
        fail(exercise, f"{what} has shape {tuple(value.shape)}, expected {tuple(shape)}",
             "keep one row per point and one column per dimension")
    return value


def close(a, b, rtol: float = 1e-4, atol: float = 1e-5) -> bool:
    """Whether two numbers or tensors agree (float64 comparison)."""
    a = torch.as_tensor(a, dtype=torch.float64)
    b = torch.as_tensor(b, dtype=torch.float64)
    return a.shape == b.shape and bool(torch.allclose(a, b, rtol=rtol, atol=atol))


def fail_on_variant(exercise: str, value, variants, *, rtol: float = 1e-4, atol: float = 1e-5) -> None:
    """Fail with the (problem, hint) of the first wrong version (expected value, problem, hint) that ``value`` equals."""
    for expected, problem, hint in variants:
        if close(value, expected, rtol, atol):
            fail(exercise, problem, hint)


def fit_coefficients(y: torch.Tensor, columns: Sequence[torch.Tensor]):
    """Least-squares coefficients c and the relative residual of y ~ sum_k c_k columns_k (all flattened)."""
    a = torch.stack([c.detach().double().flatten() for c in columns], 1)
    b = y.detach().double().flatten()[:, None]
    coef = torch.linalg.lstsq(a, b).solution[:, 0]
    residual = float((a @ coef[:, None] - b).norm() / b.norm().clamp_min(1e-12))
    return coef.tolist(), residual


def name_coefficient(value: float, candidates: Dict[str, float], rtol: float = 0.02) -> Optional[str]:
    """The key of ``candidates`` whose value ``value`` matches within ``rtol`` (relative), else None."""
    for name, c in candidates.items():
        if abs(value - c) <= rtol * max(abs(c), 1e-12) + 1e-9:
            return name
    return None


def fail_on_coefficient(exercise: str, value: float, wrong, rtol: float = 0.02) -> None:
    """Fail with the (problem, hint) of the first wrong coefficient (expected, problem, hint) that ``value`` matches."""
    for expected, problem, hint in wrong:
        if name_coefficient(value, {"match": expected}, rtol):
            fail(exercise, problem, hint)


_hidden_notice_cells = set()


def _cell_number():
    try:
        from IPython import get_ipython
    except ImportError:  # pragma: no cover - IPython ships with Jupyter
        return None
    shell = get_ipython()
    return getattr(shell, "execution_count", None) if shell is not None else None


def reveal(*values, show: Optional[bool] = None, sep: str = " ", end: str = "\n") -> bool:
    """Print an exercise's answer only when the student asks for it; return whether it printed.

    ``show=True`` prints, ``show=False`` does not; ``show=None`` (the default) prints only when the
    environment variable ``CSM_EDU_REVEAL`` is ``1`` (read at every call, so ``%env
    CSM_EDU_REVEAL=1`` in a running notebook works). Run All and the tests therefore execute the
    answer cells (their asserts still run) without showing the answers; a hidden answer prints one
    notice per cell instead.
    """
    if show is None:
        show = os.environ.get("CSM_EDU_REVEAL", "") == "1"
    if show:
        print(*values, sep=sep, end=end)
        return True
    cell = _cell_number()
    if cell is None or cell not in _hidden_notice_cells:
        if cell is not None:
            _hidden_notice_cells.add(cell)
        print("(answer hidden: run this cell after `%env CSM_EDU_REVEAL=1` to see it)")
    return False
