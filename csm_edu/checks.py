"""Input checks used at the library's boundary.

Each raises ``ValueError`` naming the argument and saying how to fix it, so that a student sees
a clear message instead of a silent NaN plot.
"""
import math
from typing import Optional, Sequence, Tuple

import torch


def as_batch(x, name: str = "x", dim: Optional[int] = None, allow_nonfinite: bool = False) -> torch.Tensor:
    """Return ``x`` as a float tensor of shape ``(n, D)``; raise on wrong rank, width or NaN/inf.

    A NumPy array or list is converted (to float32 unless it is already a float tensor).
    """
    if not isinstance(x, torch.Tensor):
        try:
            x = torch.as_tensor(x, dtype=torch.float32)
        except Exception as err:  # noqa: BLE001 - re-raised with a clear message
            raise ValueError(f"{name} must be a tensor or array of shape (n, D); got {type(x).__name__}") from err
    if not x.is_floating_point():
        x = x.float()
    if x.dim() != 2:
        raise ValueError(
            f"{name} must have shape (n, D) (one row per point), got shape {tuple(x.shape)}; "
            f"use {name}.reshape(len({name}), -1) for images or {name}[None] for a single point")
    if dim is not None and x.shape[1] != dim:
        raise ValueError(f"{name} must have {dim} columns (D={dim}), got shape {tuple(x.shape)}")
    if x.shape[0] == 0:
        raise ValueError(f"{name} is empty: it needs at least one row")
    if not allow_nonfinite and not inside_transform(x) and not torch.isfinite(x).all():
        bad = int((~torch.isfinite(x)).any(dim=1).sum())
        raise ValueError(f"{name} contains NaN or inf in {bad} row(s); clean or drop those rows first")
    return x


def inside_transform(x: torch.Tensor) -> bool:
    """True while ``x`` is traced by a ``torch.func`` transform (vmap, grad, jacrev): there a value-dependent
    check cannot run, and the caller outside the transform has checked the values already."""
    try:
        from torch._C._functorch import is_functorch_wrapped_tensor
    except ImportError:                                   # an older PyTorch: no transforms to respect
        return False
    return bool(is_functorch_wrapped_tensor(x))


def positive(value, name: str) -> float:
    """Return ``value`` as a float, raising unless it is finite and > 0."""
    try:
        v = float(value)
    except (TypeError, ValueError) as err:
        raise ValueError(f"{name} must be a positive number, got {value!r}") from err
    if not math.isfinite(v) or v <= 0:
        raise ValueError(f"{name} must be > 0, got {value!r}; choose a positive value such as 0.1")
    return v


def positive_int(value, name: str, minimum: int = 1) -> int:
    """Return ``value`` as an int, raising unless it is an integer >= ``minimum``."""
    if isinstance(value, bool) or not isinstance(value, (int,)) and not (hasattr(value, "__index__")):
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")
    v = int(value)
    if v < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")
    return v


def sigma_sequence(sigmas, name: str = "sigmas", *, decreasing: bool = False) -> torch.Tensor:
    """Return noise levels as a 1-D float tensor, raising unless all are finite and > 0.

    ``decreasing=True`` (annealed samplers, which go from the largest level to the smallest) also
    raises unless the levels do not increase.
    """
    s = torch.as_tensor(sigmas, dtype=torch.float32).flatten()
    if s.numel() == 0:
        raise ValueError(f"{name} is empty: give at least one noise level, e.g. geometric_sigmas(1.0, 0.01, 10)")
    if not torch.isfinite(s).all() or (s <= 0).any():
        raise ValueError(f"every entry of {name} must be finite and > 0, got {s.tolist()}")
    if decreasing and (s[1:] > s[:-1]).any():
        raise ValueError(f"{name} must go from the largest noise level to the smallest, got {s.tolist()}; "
                         f"reverse it, e.g. sorted({name}, reverse=True)")
    return s


def one_of(value: str, name: str, choices: Sequence[str]) -> str:
    """Return ``value`` if it is one of ``choices``, else raise listing the valid ones."""
    if value not in choices:
        raise ValueError(f"unknown {name} {value!r}; valid choices: {', '.join(map(repr, choices))}")
    return value


def bounds(value, name: str = "bounds") -> Tuple[float, float]:
    """Return a 1-D interval (lo, hi) as floats, raising unless both are finite and lo < hi."""
    try:
        lo, hi = (float(b) for b in value)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be a pair (lo, hi) of numbers, got {value!r}") from None
    if not (math.isfinite(lo) and math.isfinite(hi)):
        raise ValueError(f"{name} must be finite, got ({lo}, {hi})")
    if lo >= hi:
        raise ValueError(f"{name} must have lo < hi, got ({lo}, {hi}); swap them if they are reversed")
    return lo, hi


def window(value, name: str = "window") -> Tuple[float, float, float, float]:
    """Return a 2-D plot box (xmin, xmax, ymin, ymax) as floats, raising unless it is a proper box."""
    try:
        values = tuple(float(b) for b in value)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be (xmin, xmax, ymin, ymax), got {value!r}") from None
    if len(values) != 4:
        raise ValueError(f"{name} must have 4 numbers (xmin, xmax, ymin, ymax), got {value!r}")
    xlo, xhi = bounds(values[:2], f"{name}'s x range")
    ylo, yhi = bounds(values[2:], f"{name}'s y range")
    return xlo, xhi, ylo, yhi


def score_output(s, x: torch.Tensor, name: str = "score_fn") -> torch.Tensor:
    """Check what a score function returned for ``x``: a tensor of ``x``'s shape."""
    if not isinstance(s, torch.Tensor):
        raise TypeError(f"{name} must return a torch.Tensor, got {type(s).__name__}; "
                        f"use torch operations (not NumPy) inside {name}")
    if s.shape != x.shape:
        raise ValueError(f"{name} must return an array of the input's shape {tuple(x.shape)}, got {tuple(s.shape)}")
    return s
