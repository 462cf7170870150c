r"""Lesson 04 panels: Hutchinson's trace estimator and what its variance depends on.

For random v with E[v v^T] = I, t = (1/M) sum_m v_m^T A v_m is unbiased for tr(A), with variance
2||B||_F^2 / M (Gaussian v) or 2(||B||_F^2 - sum_i B_ii^2) / M (Rademacher v), B = (A + A^T)/2
(see :mod:`csm_edu.trace`).

- :func:`demo_matrix`: a fixed symmetric test matrix whose diagonal share is a knob.
- :func:`hutchinson_figure` / :func:`hutchinson_panel`: number of projections, kind, diagonal
  share; the histogram of estimates and the measured variance against the closed form.
- :func:`variance_against_projections_figure`: measured variance against M for both kinds,
  with the theory lines (the lesson's log-log plot).
"""
from typing import Optional, Sequence

import matplotlib.pyplot as plt
import numpy as np
import torch

from .. import checks
from ..trace import hutchinson_estimates, hutchinson_variance
from .base import interactive_panel

KINDS = ("gaussian", "rademacher")


def demo_matrix(diagonal_share: float = 0.5, dim: int = 8, seed: int = 0) -> torch.Tensor:
    r"""Symmetric A = sqrt(w) D_0 + sqrt(1-w) O_0 with ||D_0||_F = ||O_0||_F = 1, so ||A||_F = 1.

    D_0 is diagonal (entries 1 + |N(0,1)|, normalised), O_0 symmetric with a zero diagonal, both
    fixed by ``seed``; ``diagonal_share`` w in [0, 1] is the fraction of ||A||_F^2 on the diagonal.
    At w = 1 the matrix is diagonal and Rademacher probes estimate its trace with zero variance.
    """
    w = float(diagonal_share)
    if not 0.0 <= w <= 1.0:
        raise ValueError(f"diagonal_share must lie in [0, 1], got {diagonal_share!r}")
    dim = checks.positive_int(dim, "dim", minimum=2)
    gen = torch.Generator().manual_seed(seed)
    diag = torch.diag(1.0 + torch.randn(dim, generator=gen, dtype=torch.float64).abs())
    off = torch.randn(dim, dim, generator=gen, dtype=torch.float64)
    off = torch.triu(off, diagonal=1)
    off = off + off.T
    return (w ** 0.5) * diag / diag.norm() + ((1.0 - w) ** 0.5) * off / off.norm()


def hutchinson_figure(n_projections: int, *, kind: str = "gaussian", diagonal_share: float = 0.5,
                      dim: int = 8, n_trials: int = 4000, seed: int = 0,
                      matrix: Optional[torch.Tensor] = None):
    """Histogram of ``n_trials`` Hutchinson estimates of tr(A); returns ``(figure, readout)``.

    A is :func:`demo_matrix` ``(diagonal_share, dim)`` unless ``matrix`` is given. The x-axis is
    fixed (tr A +- 4 standard deviations of a single Gaussian probe) so that the spread visibly
    shrinks as ``n_projections`` grows; a dashed normal curve with the closed-form variance is
    drawn for comparison (it fits well for large M, by the central limit theorem). The readout
    compares the measured variance with the closed form of
    :func:`csm_edu.trace.hutchinson_variance`.
    """
    checks.one_of(kind, "kind", KINDS)
    n_projections = checks.positive_int(n_projections, "n_projections")
    a = demo_matrix(diagonal_share, dim) if matrix is None else torch.as_tensor(matrix, dtype=torch.float64)
    gen = torch.Generator().manual_seed(seed)
    estimates = hutchinson_estimates(a, n_projections=n_projections, kind=kind, n_trials=n_trials, generator=gen)
    trace = float(torch.trace(a))
    theory = hutchinson_variance(a, n_projections=n_projections, kind=kind)
    measured = float(estimates.var())
    half_width = 4.0 * hutchinson_variance(a, n_projections=1, kind="gaussian") ** 0.5
    lo, hi = trace - half_width, trace + half_width
    fig, ax = plt.subplots(figsize=(6.0, 3.4))
    ax.hist(estimates.clamp(lo, hi).numpy(), bins=np.linspace(lo, hi, 61), density=True,
            color="tab:blue" if kind == "gaussian" else "tab:green", alpha=0.75, label=f"{kind}, M={n_projections}")
    ax.axvline(trace, color="k", lw=1.5, label=f"tr A = {trace:.3f}")
    if theory > 0:                        # the normal curve with the closed-form variance
        grid = np.linspace(lo, hi, 400)
        normal = np.exp(-0.5 * (grid - trace) ** 2 / theory) / np.sqrt(2 * np.pi * theory)
        ax.plot(grid, normal, color="k", ls="--", lw=1, label="normal, theory variance")
    ax.set_xlim(lo, hi)
    ax.set_xlabel("estimate of tr A")
    ax.set_ylabel("density")
    ax.set_title(f"{n_trials} Hutchinson estimates")
    ax.legend(loc="upper right")
    fig.tight_layout()
    readout = (f"{kind}, M = {n_projections}: mean {float(estimates.mean()):.4f} (tr A = {trace:.4f}), "
               f"variance measured {measured:.4g}, theory {theory:.4g}")
    return fig, readout


def hutchinson_panel(max_projections: int = 64, dim: int = 8, n_trials: int = 4000):
    """Sliders: number of projections M (1..max), kind (dropdown), diagonal share of A (0..1)."""
    import ipywidgets as widgets

    max_projections = checks.positive_int(max_projections, "max_projections")
    controls = {
        "n_projections": widgets.IntSlider(value=1, min=1, max=max_projections, step=1, description="projections M"),
        "kind": widgets.Dropdown(options=list(KINDS), value="gaussian", description="kind"),
        "diagonal_share": widgets.FloatSlider(value=0.5, min=0.0, max=1.0, step=0.05, description="diag share"),
    }

    def view(n_projections, kind, diagonal_share):
        return hutchinson_figure(n_projections, kind=kind, diagonal_share=diagonal_share, dim=dim, n_trials=n_trials)

    return interactive_panel(view, controls)


def variance_against_projections_figure(matrix, *, projections: Sequence[int] = (1, 2, 4, 8, 16, 32, 64),
                                        n_trials: int = 2000, seed: int = 0, ax=None):
    """Measured variance of the Hutchinson estimate against M (dots) and the closed forms (lines).

    Returns ``(figure, table)`` where ``table[kind] = (measured list, theory list)``.
    """
    projections = [checks.positive_int(m, "projections entry") for m in projections]
    if ax is None:
        fig, ax = plt.subplots(figsize=(5.0, 3.6))
    fig = ax.figure
    gen = torch.Generator().manual_seed(seed)
    table = {}
    for kind, color in zip(KINDS, ("tab:blue", "tab:green")):
        measured = [float(hutchinson_estimates(matrix, n_projections=m, kind=kind, n_trials=n_trials, generator=gen).var()) for m in projections]
        theory = [hutchinson_variance(matrix, n_projections=m, kind=kind) for m in projections]
        table[kind] = (measured, theory)
        ax.plot(projections, theory, color=color, lw=1.5, label=f"{kind}: theory")
        ax.scatter(projections, measured, color=color, s=25, zorder=3, label=f"{kind}: measured")
    ax.set_xscale("log", base=2)
    ax.set_yscale("log")
    ax.set_xlabel("number of projections M")
    ax.set_ylabel("variance of the trace estimate")
    ax.legend(fontsize=8)
    return fig, table
