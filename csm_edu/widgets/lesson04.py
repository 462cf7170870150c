r"""Lesson 04 panels: Hutchinson's trace estimator and what its variance depends on.

For random v with E[v v^T] = I, t = (1/M) sum_m v_m^T A v_m is unbiased for tr(A), with variance
2||B||_F^2 / M (Gaussian v) or 2(||B||_F^2 - sum_i B_ii^2) / M (Rademacher v), B = (A + A^T)/2
(see :mod:`csm_edu.trace`).

- :func:`demo_matrix`: a fixed symmetric test matrix whose diagonal share is a knob.
- :func:`hutchinson_trials`: probes drawn once, so that the panel answers every slider at once.
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
from ..objectives import random_projections
from ..trace import hutchinson_estimates, hutchinson_variance
from .base import interactive_panel

KINDS = ("gaussian", "rademacher")


def _demo_parts(dim: int, seed: int):
    """The two fixed pieces of :func:`demo_matrix`: D_0 diagonal and O_0 off-diagonal, each of unit norm."""
    gen = torch.Generator().manual_seed(seed)
    diag = torch.diag(1.0 + torch.randn(dim, generator=gen, dtype=torch.float64).abs())
    off = torch.randn(dim, dim, generator=gen, dtype=torch.float64)
    off = torch.triu(off, diagonal=1)
    off = off + off.T
    return diag / diag.norm(), off / off.norm()


def _diagonal_share(diagonal_share) -> float:
    w = float(diagonal_share)
    if not 0.0 <= w <= 1.0:
        raise ValueError(f"diagonal_share must lie in [0, 1], got {diagonal_share!r}")
    return w


def demo_matrix(diagonal_share: float = 0.5, dim: int = 8, seed: int = 0) -> torch.Tensor:
    r"""Symmetric A = sqrt(w) D_0 + sqrt(1-w) O_0 with ||D_0||_F = ||O_0||_F = 1, so ||A||_F = 1.

    D_0 is diagonal (entries 1 + |N(0,1)|, normalised), O_0 symmetric with a zero diagonal, both
    fixed by ``seed``; ``diagonal_share`` w in [0, 1] is the fraction of ||A||_F^2 on the diagonal.
    At w = 1 the matrix is diagonal and Rademacher probes estimate its trace with zero variance.
    """
    w = _diagonal_share(diagonal_share)
    dim = checks.positive_int(dim, "dim", minimum=2)
    diag, off = _demo_parts(dim, seed)
    return (w ** 0.5) * diag + ((1.0 - w) ** 0.5) * off


def hutchinson_trials(*, max_projections: int = 64, dim: int = 8, n_trials: int = 4000, seed: int = 0,
                      chunk_size: int = 2000) -> dict:
    r"""Precomputed probes for :func:`hutchinson_figure`: every (M, kind, diagonal share) without redrawing.

    Since v^T A v = sqrt(w) v^T D_0 v + sqrt(1-w) v^T O_0 v for A = :func:`demo_matrix` (w), one
    set of ``n_trials`` x ``max_projections`` probes per kind, stored as prefix sums over m of the
    two quadratic forms, gives the ``n_trials`` M-projection estimates of tr A for any M and w
    by one weighted sum. Returns ``{"dim", "seed", "max_projections", "n_trials", kind: (cum_d, cum_o)}``
    with float64 arrays of shape (n_trials, max_projections).
    """
    max_projections = checks.positive_int(max_projections, "max_projections")
    n_trials = checks.positive_int(n_trials, "n_trials", minimum=2)
    dim = checks.positive_int(dim, "dim", minimum=2)
    chunk_size = checks.positive_int(chunk_size, "chunk_size")
    diag, off = _demo_parts(dim, seed)
    table = {"dim": dim, "seed": seed, "max_projections": max_projections, "n_trials": n_trials}
    for i, kind in enumerate(KINDS):
        gen = torch.Generator().manual_seed(seed + 1000 * (i + 1))
        parts_d, parts_o = [], []
        for lo in range(0, n_trials, chunk_size):
            rows = min(chunk_size, n_trials - lo)
            v = random_projections((rows, max_projections, dim), kind=kind, generator=gen, dtype=torch.float64)
            parts_d.append(torch.einsum("tmi,ij,tmj->tm", v, diag, v).cumsum(1))
            parts_o.append(torch.einsum("tmi,ij,tmj->tm", v, off, v).cumsum(1))
        table[kind] = (torch.cat(parts_d).numpy(), torch.cat(parts_o).numpy())
    return table


def _estimates_from_table(table: dict, n_projections: int, kind: str, w: float) -> np.ndarray:
    if n_projections > table["max_projections"]:
        raise ValueError(f"n_projections={n_projections} exceeds the precomputed max_projections="
                         f"{table['max_projections']}; build hutchinson_trials with a larger max_projections")
    cum_d, cum_o = table[kind]
    m = n_projections - 1
    return (w ** 0.5 * cum_d[:, m] + (1.0 - w) ** 0.5 * cum_o[:, m]) / n_projections


N_BINS = 61                                # odd: tr A sits at the centre of the middle bin


def hutchinson_figure(n_projections: int, *, kind: str = "gaussian", diagonal_share: float = 0.5,
                      dim: int = 8, n_trials: int = 4000, seed: int = 0,
                      matrix: Optional[torch.Tensor] = None, trials: Optional[dict] = None):
    """Histogram of ``n_trials`` Hutchinson estimates of tr(A); returns ``(figure, readout)``.

    A is :func:`demo_matrix` ``(diagonal_share, dim)`` unless ``matrix`` is given; ``trials``
    (from :func:`hutchinson_trials`) reuses precomputed probes instead of drawing new ones (the
    panel's way to answer a slider move at once). The x-axis is fixed (tr A +- 4 standard
    deviations of a single Gaussian probe) so that the spread visibly shrinks as
    ``n_projections`` grows; nothing is clamped into the edge bins: estimates beyond the axis are
    counted in the legend and the readout, and the histogram's area is the fraction of estimates
    inside the axis. ``N_BINS`` is odd, so tr A is the centre of the middle bin. When every
    estimate equals tr A (Rademacher probes on a diagonal matrix), a single line at tr A shows it.
    A dashed normal curve with the closed-form variance is drawn for comparison (it fits well for
    large M, by the central limit theorem). The readout compares the measured variance with the
    closed form of :func:`csm_edu.trace.hutchinson_variance`.
    """
    checks.one_of(kind, "kind", KINDS)
    n_projections = checks.positive_int(n_projections, "n_projections")
    w = _diagonal_share(diagonal_share)
    if matrix is not None:
        a = torch.as_tensor(matrix, dtype=torch.float64)
    elif trials is not None:
        a = demo_matrix(w, trials["dim"], seed=trials["seed"])
    else:
        a = demo_matrix(w, dim, seed=seed)
    if trials is not None and matrix is None:
        estimates = _estimates_from_table(trials, n_projections, kind, w)
    else:
        gen = torch.Generator().manual_seed(seed)
        estimates = hutchinson_estimates(a, n_projections=n_projections, kind=kind, n_trials=n_trials,
                                         generator=gen).numpy()
    n_trials = len(estimates)
    trace = float(torch.trace(a))
    theory = hutchinson_variance(a, n_projections=n_projections, kind=kind)
    measured = float(estimates.var(ddof=1))
    exact = float(np.abs(estimates - trace).max()) <= 1e-9 * max(1.0, abs(trace))
    if exact:
        measured = 0.0                           # equal to tr A up to float rounding
    half_width = 4.0 * hutchinson_variance(a, n_projections=1, kind="gaussian") ** 0.5
    lo, hi = trace - half_width, trace + half_width
    width = (hi - lo) / N_BINS
    color = "tab:blue" if kind == "gaussian" else "tab:green"
    fig, ax = plt.subplots(figsize=(8.2, 3.4))
    outside = int(((estimates < lo) | (estimates > hi)).sum())
    if exact:
        ax.axvline(trace, color=color, lw=6, alpha=0.75,
                   label=f"{kind}, M={n_projections}:\nall {n_trials} estimates")
    else:
        counts, edges = np.histogram(estimates, bins=lo + width * np.arange(N_BINS + 1))
        ax.stairs(counts / (n_trials * width), edges, fill=True, color=color, alpha=0.75,
                  label=f"{kind}, M={n_projections}")
    ax.axvline(trace, color="k", lw=1.5, label=f"tr A = {trace:.3f}")
    if theory > 0:                        # the normal curve with the closed-form variance
        grid = np.linspace(lo, hi, 400)
        normal = np.exp(-0.5 * (grid - trace) ** 2 / theory) / np.sqrt(2 * np.pi * theory)
        ax.plot(grid, normal, color="k", ls="--", lw=1, label="normal, theory variance")
    else:
        ax.set_ylim(0, 1)
        ax.set_yticks([])
        ax.text(0.02, 0.95, "variance 0:\nevery estimate\nis exactly tr A", transform=ax.transAxes, va="top", fontsize=8)
    if outside:
        ax.plot([], [], " ", label=f"{outside} of {n_trials} beyond the axis (not drawn)")
    ax.set_xlim(lo, hi)
    ax.set_xlabel("estimate of tr A")
    ax.set_ylabel("density")
    ax.set_title(f"{n_trials} Hutchinson estimates")
    ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=8, frameon=False)
    fig.subplots_adjust(left=0.08, right=0.66, bottom=0.15, top=0.9)
    readout = (f"{kind}, M = {n_projections}: mean {float(estimates.mean()):.4f} (tr A = {trace:.4f}), "
               f"variance measured {measured:.4g}, theory {theory:.4g}"
               + (f"; {outside} of {n_trials} estimates beyond the axis" if outside else ""))
    return fig, readout


def hutchinson_panel(max_projections: int = 64, dim: int = 8, n_trials: int = 4000):
    """Sliders: number of projections M (1..max), kind (dropdown), diagonal share of A (0..1).

    The probes are drawn once (:func:`hutchinson_trials`); a slider move only reweights and draws.
    """
    import ipywidgets as widgets

    max_projections = checks.positive_int(max_projections, "max_projections")
    trials = hutchinson_trials(max_projections=max_projections, dim=dim, n_trials=n_trials)
    controls = {
        "n_projections": widgets.IntSlider(value=1, min=1, max=max_projections, step=1, description="projections M",
                                            continuous_update=False),
        "kind": widgets.Dropdown(options=list(KINDS), value="gaussian", description="kind"),
        "diagonal_share": widgets.FloatSlider(value=0.5, min=0.0, max=1.0, step=0.05, description="diag share",
                                              continuous_update=False),
    }

    def view(n_projections, kind, diagonal_share):
        return hutchinson_figure(n_projections, kind=kind, diagonal_share=diagonal_share, trials=trials)

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
