r"""Lesson 07 panel: pick the first variable and compare learned and true conditionals.

For a 2-D autoregressive model with order (a, b), :func:`conditional_figure` plots the learned
conditional density q(x_b | x_a) (``model.conditional_log_probs``: an ARCSM's, normalised by
1-D quadrature, or an MLE baseline's exact one) next to the true
p(x_b | x_a) of a Gaussian-mixture target, on a grid of x_b. The readout gives the mass each puts
on x_b > 0: composite score matching sees the *shape* of every mode but hardly their relative
*weights* when the modes are far apart, and this number shows it.
:func:`conditional_panel` wires a slider for x_a to it.
"""
from typing import Dict, List, Optional, Sequence

import matplotlib.pyplot as plt
import torch

from .. import checks
from ..models import ARCSM
from ..models.arcsm import AutoregressiveScoreModel, target_conditional_log_probs
from .base import interactive_panel


def conditional_log_density(model, first_value: float, grid: torch.Tensor, *, n_fine: int = 2048) -> torch.Tensor:
    """log q(x_b = grid | x_a = first_value) for a 2-D model with order (a, b), shape (len(grid),).

    MLE baselines: their exact ``conditional_log_probs``. Score models (AR-CSM): the one 1-D
    conditional q(x_b | x_a) on the model's support [lo, hi] (:meth:`~csm_edu.models.ARCSM.set_support`),
    normalised by the trapezoid rule on ``n_fine`` cells, u(t) = int_lo^t s_b, log q = u - log int e^u,
    and read off at ``grid`` by linear interpolation: one pass of the network over the fine grid, the
    context being the same for every point (:meth:`log_prob` would redo a full quadrature per point).
    """
    if getattr(model, "dim", None) != 2:
        raise ValueError("the conditional view needs a 2-D model (dim=2)")
    a, b = model.order.tolist()
    if isinstance(model, AutoregressiveScoreModel):
        lo, hi = model.bounds
        fine = torch.linspace(lo, hi, checks.positive_int(n_fine, "n_fine", minimum=2) + 1, dtype=torch.float64)
        x = torch.zeros(len(fine), 2)
        x[:, a] = float(first_value)
        x[:, b] = fine.float()
        with torch.no_grad():
            s = model.conditional_scores(x)[:, b].double()
        u = torch.cat([torch.zeros(1, dtype=s.dtype), torch.cumulative_trapezoid(s, fine)])
        log_z = u.max() + torch.log(torch.trapezoid(torch.exp(u - u.max()), fine))
        t = grid.double().clamp(lo, hi)
        pos = ((t - lo) / (hi - lo) * (len(fine) - 1)).clamp(0, len(fine) - 1 - 1e-9)
        i = pos.floor().long()
        w = pos - i
        log_q = (1 - w) * u[i] + w * u[i + 1] - log_z
        outside = (grid < lo) | (grid > hi)
        return torch.where(outside, torch.full_like(log_q, -float("inf")), log_q).to(grid.dtype)
    x = torch.zeros(len(grid), 2)
    x[:, a] = float(first_value)
    x[:, b] = grid
    with torch.no_grad():
        return model.conditional_log_probs(x)[:, b]


def conditional_figure(model, first_value: float, *, target=None, baselines: Optional[Dict[str, object]] = None,
                       bounds: Sequence[float] = (-6.0, 6.0), n_grid: int = 241, ax=None):
    """Plot q(x_b | x_a = first_value) of ``model`` (and ``baselines``, name -> model) and the target's.

    Returns ``(figure, readout)``; the readout lists the mass on x_b > 0 of every curve.
    """
    first_value = float(first_value)
    lo, hi = float(bounds[0]), float(bounds[1])
    if not lo <= first_value <= hi:
        raise ValueError(f"first_value must lie in bounds {tuple(bounds)}, got {first_value}")
    n_grid = checks.positive_int(n_grid, "n_grid", minimum=3)
    grid = torch.linspace(lo, hi, n_grid)
    step = float(grid[1] - grid[0])
    a, b = model.order.tolist()
    curves = {"AR-CSM (quadrature)": conditional_log_density(model, first_value, grid)}
    for name, other in (baselines or {}).items():
        curves[name] = conditional_log_density(other, first_value, grid)
    if target is not None:
        x = torch.zeros(n_grid, 2)
        x[:, a], x[:, b] = first_value, grid
        curves["true"] = target_conditional_log_probs(target, x, [a, b])[:, b]
    if ax is None:
        fig, ax = plt.subplots(figsize=(6, 3.2))
    fig = ax.figure
    readout = []
    for name, log_q in curves.items():
        density = log_q.exp()
        style = dict(color="black", ls="--", lw=1.5) if name == "true" else dict(lw=1.8)
        ax.plot(grid.numpy(), density.numpy(), label=name, **style)
        readout.append(f"{name}: P(x{b + 1}>0) = {float(density[grid > 0].sum() * step):.2f}")
    ax.set_xlabel(f"x{b + 1}")
    ax.set_ylabel(f"density of x{b + 1} given x{a + 1} = {first_value:.2f}")
    ax.set_xlim(lo, hi)
    ax.legend(fontsize=8, loc="upper right")
    return fig, " | ".join(readout)     # the panel's HTML readout collapses runs of spaces


def conditional_panel(model, target=None, baselines: Optional[Dict[str, object]] = None,
                      bounds: Sequence[float] = (-6.0, 6.0)):
    """A slider for the first variable's value (from -4 to 4) around :func:`conditional_figure`."""
    import ipywidgets as widgets

    slider = widgets.FloatSlider(value=0.0, min=-4.0, max=4.0, step=0.1, description="first x",
                                 continuous_update=False)
    return interactive_panel(
        lambda first_value: conditional_figure(model, first_value, target=target, baselines=baselines, bounds=bounds),
        {"first_value": slider})


# ---- helpers for the lesson: training, evaluation table, mask picture ----


def format_table(results: Dict[str, List[dict]]) -> str:
    """A plain-text table of :func:`evaluate_models` rows for several data sets (name -> rows)."""
    lines = [f"{'data':10s} {'model':24s} {'test log-lik':>13s} {'Fisher div.':>12s}"]
    for data_name, rows in results.items():
        for r in rows:
            fisher = "n/a" if r["fisher"] is None else f"{r['fisher']:.3f}"
            lines.append(f"{data_name:10s} {r['model']:24s} {r['log_lik']:13.3f} {fisher:>12s}")
    return "\n".join(lines)


def mask_figure(model: ARCSM, seed: int = 0):
    """Masks of an ARCSM's ResMADE and the sparsity they give, variables sorted into ``order``.

    Panels: the input-layer mask (hidden unit x input), one residual-block mask (hidden x hidden),
    the output mask (context unit x hidden), which inputs each context may read, and |ds_d/dx_j|
    of the model at a random point (by autograd): lower triangular, with a full diagonal.
    """
    net = model.backbone
    order = model.order
    deg_in = torch.empty_like(order)
    deg_in[order] = torch.arange(1, model.dim + 1)
    hidden_sort = torch.argsort(net.input_layer.mask[:, : model.dim].sum(1), stable=True)
    out_sort = torch.argsort(deg_in.repeat_interleave(net.context_dim), stable=True)
    x = torch.randn(1, model.dim, generator=torch.Generator().manual_seed(seed))
    jac = torch.autograd.functional.jacobian(lambda v: model.conditional_scores(v[None])[0], x[0]).abs()
    panels = [("input mask", net.input_layer.mask[hidden_sort][:, order]),
              ("hidden mask", net.blocks[0].linear1.mask[hidden_sort][:, hidden_sort] if len(net.blocks) else None),
              ("output mask", net.output_layer.mask[out_sort][:, hidden_sort]),
              ("context of d reads x_j", net.connectivity()[order][:, order]),
              ("|d s_d / d x_j|", (jac[order][:, order] > 1e-12).float() * (1 + jac[order][:, order]).log())]
    panels = [p for p in panels if p[1] is not None]
    axis_labels = {"input mask": ("input x_j (by degree)", "hidden unit (by degree)"),
                   "hidden mask": ("hidden unit read (by degree)", "hidden unit (by degree)"),
                   "output mask": ("hidden unit (by degree)", "context unit of x_d (by degree)"),
                   "context of d reads x_j": ("input x_j", "context of x_d"),
                   "|d s_d / d x_j|": ("input x_j", "score s_d")}
    fig, axes = plt.subplots(1, len(panels), figsize=(3.0 * len(panels), 3.4))
    for ax, (title, mat) in zip(axes, panels):
        image = ax.imshow(mat.detach().numpy(), cmap="Greys", aspect="auto", interpolation="nearest",
                          vmin=0.0, vmax=None if title.startswith("|") else 1.0)
        ax.set_title(title, fontsize=9)
        ax.set_xticks([])
        ax.set_yticks([])
        ax.set_xlabel(axis_labels[title][0], fontsize=8)
        ax.set_ylabel(axis_labels[title][1], fontsize=8)
    for ax in axes[-2:]:
        labels = [f"x{int(d) + 1}" for d in order]
        ax.set_xticks(range(model.dim), labels, fontsize=7)
        ax.set_yticks(range(model.dim), labels, fontsize=7)
    bar = fig.colorbar(image, ax=axes[-1], fraction=0.08, pad=0.03)
    bar.set_label("log(1 + |d s_d / d x_j|)", fontsize=7)
    bar.ax.tick_params(labelsize=7)
    fig.text(0.5, 0.005, "masks and connectivity: black = connection kept (1), white = cut (0); "
             "rows and columns in the order's degrees, so the staircases show", ha="center", fontsize=8)
    fig.tight_layout(rect=(0, 0.05, 1, 1))
    return fig


def cost_figure(rows: List[dict], ax=None):
    """ms per loss + backward against D for the rows of
    :func:`csm_edu.experiments.scaling.exact_against_composite`: measured points filled on a solid
    line, extrapolated ones hollow on a dashed line; log-log axes with one labelled tick per D."""
    from matplotlib.ticker import NullFormatter
    if ax is None:
        _, ax = plt.subplots(figsize=(5.5, 3.4))
    dims = sorted({r["dim"] for r in rows})
    for name, color in (("exact SM", "tab:red"), ("CSM", "tab:green")):
        pts = sorted((r["dim"], r["ms"], r["how"]) for r in rows if r["objective"] == name)
        measured = [(d, v) for d, v, how in pts if how == "measured"]
        extra = [(d, v) for d, v, how in pts if how != "measured"]
        label = "exact SM (D backward passes)" if name == "exact SM" else "CSM (one pass)"
        ax.plot(*zip(*measured), "o-", color=color, label=f"{label}, measured")
        if extra:
            ax.plot(*zip(*(measured[-1:] + extra)), "--", color=color)
            ax.plot(*zip(*extra), "o", mfc="white", color=color, label=f"{label}, extrapolated")
    ax.set_xscale("log", base=2)
    ax.set_yscale("log")
    ax.set_xticks(dims, [str(d) for d in dims])
    ax.xaxis.set_minor_formatter(NullFormatter())
    ax.set_xlabel("dimension D")
    ax.set_ylabel("ms per loss + backward")
    ax.grid(alpha=0.3, which="major")
    ax.legend(fontsize=7)
    ax.set_title("the trace costs D passes; CSM costs one", fontsize=9)
    return ax.figure


def grid_log_density(model, *, n_fine: int = 1024):
    """``f(z) = log q(z)`` of a 2-D AR-CSM for density plots, with one 1-D quadrature per distinct first value.

    log q(z) = log q(z_a) + log q(z_b | z_a): the first conditional is one 1-D density, each second
    one is computed once for every distinct value of z_a in ``z`` (a plotting grid has ``resolution``
    of them) on ``n_fine`` trapezoid cells of the model's support, as in :func:`conditional_log_density`.
    The same numbers as ``model.log_prob`` up to the trapezoid error and without its estimate of the mass
    outside the support, at a fraction of the cost (``log_prob`` runs a quadrature for every point).
    Models that are not score models (the MLE baselines) are returned as ``model.log_prob``.
    """
    if not isinstance(model, AutoregressiveScoreModel):
        return model.log_prob
    if getattr(model, "dim", None) != 2:
        raise ValueError("grid_log_density needs a 2-D model (dim=2)")
    a, b = model.order.tolist()
    lo, hi = model.bounds

    def first_log_density(values):
        x = torch.zeros(len(values), 2)
        x[:, a] = values
        with torch.no_grad():
            return model.conditional_log_probs(x)[:, a]

    def log_density(z):
        z = checks.as_batch(z, "z", dim=2)
        firsts, inverse = torch.unique(z[:, a], return_inverse=True)
        out = first_log_density(firsts)[inverse].double()
        for i, value in enumerate(firsts.tolist()):
            rows = inverse == i
            out[rows] += conditional_log_density(model, value, z[rows, b], n_fine=n_fine).double()
        inside = ((z >= lo) & (z <= hi)).all(1)
        return torch.where(inside, out, torch.full_like(out, -float("inf"))).to(z.dtype)

    return log_density


def format_study(summary: List[dict]) -> str:
    """A plain-text table of :func:`csm_edu.experiments.toy_density.study_summary` rows: per set and
    model the mean test log-likelihood over seeds with its range, the mean gap to the true density
    (with its range), the box test's largest difference and the small mode's weight (product targets)."""
    lines = [f"{'data':11s} {'D':>2s} {'model':13s} {'log-lik (min..max)':>26s} {'gap to truth (min..max)':>26s}"
             f" {'box diff':>9s} {'small mode':>10s}"]
    for r in summary:
        ll = f"{r['log_lik']:7.3f} ({r['log_lik_min']:.3f}..{r['log_lik_max']:.3f})"
        gap = "n/a" if r["gap"] is None else f"{r['gap']:6.3f} ({r['gap_min']:.3f}..{r['gap_max']:.3f})"
        box = "" if r["box_diff"] is None else f"{r['box_diff']:.4f}"
        small = "" if r["small_mode"] is None else f"{r['small_mode']:.3f}"
        lines.append(f"{r['set']:11s} {r['dim']:2d} {r['model']:13s} {ll:>26s} {gap:>26s} {box:>9s} {small:>10s}")
    return "\n".join(lines)
