r"""Hutchinson's trace estimator on an explicit matrix, and its variance in closed form.

For random v with E[v v^T] = I,

.. math:: \mathbb E[v^\top A v] = \mathbb E[\operatorname{tr}(A v v^\top)] = \operatorname{tr} A .

Averaging M independent draws divides the variance by M. Only the symmetric part
B = (A + A^T)/2 matters (v^T A v = v^T B v), and

.. math:: \operatorname{Var}_{\text{gaussian}} = \frac{2\|B\|_F^2}{M}, \qquad
          \operatorname{Var}_{\text{rademacher}} = \frac{2\bigl(\|B\|_F^2 - \sum_i B_{ii}^2\bigr)}{M}.

Rademacher vectors (entries +-1) have v_i^2 = 1, so the diagonal of B contributes no noise.
:func:`csm_edu.objectives.sliced_score_matching` applies the same estimator to the Jacobian of
the score without ever forming it.
"""
from typing import Optional

import torch

from . import checks
from .objectives import random_projections


def _square_matrix(matrix, name: str = "matrix") -> torch.Tensor:
    a = torch.as_tensor(matrix, dtype=torch.float64)
    if a.dim() != 2 or a.shape[0] != a.shape[1] or a.shape[0] == 0:
        raise ValueError(f"{name} must be a square (D, D) matrix, got shape {tuple(a.shape)}")
    if not torch.isfinite(a).all():
        raise ValueError(f"{name} contains NaN or inf")
    return a


def hutchinson_estimates(matrix, *, n_projections: int = 1, kind: str = "gaussian", n_trials: int = 1000,
                         generator: Optional[torch.Generator] = None) -> torch.Tensor:
    r"""``n_trials`` independent Hutchinson estimates of tr(A), each averaging ``n_projections`` draws.

    Estimate t = (1/M) sum_m v_m^T A v_m with v_m ~ 'gaussian' N(0, I) or 'rademacher' (+-1).
    Returns a float64 tensor of shape (n_trials,); its mean is close to tr(A) and its variance
    to :func:`hutchinson_variance`.
    """
    a = _square_matrix(matrix)
    n_projections = checks.positive_int(n_projections, "n_projections")
    n_trials = checks.positive_int(n_trials, "n_trials")
    checks.one_of(kind, "kind", ("gaussian", "rademacher"))
    v = random_projections((n_trials, n_projections, a.shape[0]), kind=kind, generator=generator, dtype=torch.float64)
    quad = torch.einsum("tmi,ij,tmj->tm", v, a, v)
    return quad.mean(1)


def hutchinson_variance(matrix, *, n_projections: int = 1, kind: str = "gaussian") -> float:
    r"""Exact variance of the M-projection Hutchinson estimate of tr(A) (formulas in the module doc)."""
    a = _square_matrix(matrix)
    n_projections = checks.positive_int(n_projections, "n_projections")
    checks.one_of(kind, "kind", ("gaussian", "rademacher"))
    b = 0.5 * (a + a.T)
    frob2 = float((b ** 2).sum())
    if kind == "rademacher":
        frob2 -= float((torch.diagonal(b) ** 2).sum())
    return 2.0 * frob2 / n_projections
