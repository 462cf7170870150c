"""Lesson 05 (denoising score matching): the views and panels of the sigma sweep.

The sweep itself (one DSM model per noise level, with every grid and Fisher divergence a slider
needs precomputed, and what each divergence measures) is :mod:`csm_edu.experiments.sweeps`;
:func:`sigma_sweep_view` and :func:`tweedie_view` only draw.
"""
import math
from typing import Optional, Sequence

import matplotlib.pyplot as plt
from matplotlib.colors import LogNorm
from matplotlib.ticker import FuncFormatter, NullLocator
import numpy as np
import torch

from .. import checks
from ..denoise import noised_distribution, tweedie_denoise
from .base import interactive_panel
from ..experiments.sweeps import SigmaSweep



def _square_axes(ax, window):
    """Fixed limits, equal aspect and three ticks per axis (tick layout dominates drawing time)."""
    ax.set_xlim(window[0], window[1])
    ax.set_ylim(window[2], window[3])
    ax.set_aspect("equal")
    ax.set_xticks([window[0], 0.5 * (window[0] + window[1]), window[1]])
    ax.set_yticks([window[2], 0.5 * (window[2] + window[3]), window[3]])


ERROR_DECADES = 4.0          # the error maps' colour scale spans this many powers of ten


def error_norm(sweep: SigmaSweep) -> LogNorm:
    """One logarithmic colour scale for the error maps of every level: the largest value over all
    levels down to 10^-ERROR_DECADES of it (smaller values take the darkest colour)."""
    top = max(float(h["integrand"].max()) for h in sweep.grids)
    return LogNorm(vmin=top * 10.0 ** -ERROR_DECADES, vmax=top, clip=True)


def _error_colourbar(fig, image, **kwargs):
    """A colourbar for :func:`draw_error_map` with one plain label per power of ten (no minor ticks,
    no mathtext: tick layout dominates a redraw's time)."""
    norm = image.norm
    decades = 10.0 ** np.arange(np.ceil(np.log10(norm.vmin)), np.floor(np.log10(norm.vmax)) + 1)
    bar = fig.colorbar(image, ticks=decades, **kwargs)
    bar.ax.yaxis.set_minor_locator(NullLocator())
    bar.ax.set_yticklabels([f"{v:.0e}".replace("e-0", "e-").replace("e+0", "e") for v in decades], fontsize=7)
    return bar


def draw_error_map(ax, sweep: SigmaSweep, k: int, norm: Optional[LogNorm] = None):
    """Heat map of p(x) 1/2 |s_theta(x) - grad log p(x)|^2 for level ``k`` on the sweep's common
    log colour scale (:func:`error_norm`); returns the image, for a colourbar."""
    norm = error_norm(sweep) if norm is None else norm
    return ax.imshow(np.maximum(sweep.grids[k]["integrand"], norm.vmin), origin="lower", extent=list(sweep.window),
                     cmap="magma", interpolation="nearest", norm=norm)


def error_maps_figure(sweep: SigmaSweep, levels: Sequence[int]):
    """The error maps of several levels side by side on one log colour scale, with one colourbar."""
    levels = list(levels)
    fig, axes = plt.subplots(1, len(levels), figsize=(3.9 * len(levels) + 1.0, 3.8), squeeze=False)
    norm = error_norm(sweep)
    for ax, k in zip(axes[0], levels):
        image = draw_error_map(ax, sweep, k, norm)
        _square_axes(ax, sweep.window)
        ax.set_title(f"sigma={sweep.sigmas[k]:.3g}: F(learned, true) = {sweep.fisher_to_true[k]:.3f}", fontsize=9)
    fig.subplots_adjust(left=0.04, right=0.88, bottom=0.08, top=0.9, wspace=0.15)
    cax = fig.add_axes([0.9, 0.12, 0.015, 0.74])
    _error_colourbar(fig, image, cax=cax, label="p |s_theta - grad log p|^2 / 2")
    return fig


def sigma_sweep_view(sweep: SigmaSweep, sigma: float):
    """Figure and readout for the trained level nearest to ``sigma``.

    Left: the exact noised density q_sigma with the learned score's directions. Middle: where the
    learned score misses the true data score, p(x) 1/2 |s_theta(x) - grad log p(x)|^2 (its
    integral is the Fisher divergence), on one log colour scale for all levels with a colourbar.
    Right: the three Fisher divergences against sigma.
    """
    k = sweep.nearest(sigma)
    s_k, g = sweep.sigmas[k], sweep.grids[k]
    fig, axes = plt.subplots(1, 3, figsize=(13.5, 3.9))
    ax = axes[0]
    extent = list(sweep.window)
    ax.imshow(g["noised_density"], origin="lower", extent=extent, cmap="viridis", interpolation="nearest")
    arrows = g["arrows"] / np.linalg.norm(g["arrows"], axis=1, keepdims=True).clip(1e-12)
    n = g["AX"].shape[0]
    ax.quiver(g["AX"], g["AY"], arrows[:, 0].reshape(n, n), arrows[:, 1].reshape(n, n), color="white",
              angles="xy", pivot="mid", scale=1.6 * n, width=0.004)
    ax.set_title(f"noised density and learned score, sigma={s_k:.3g}", fontsize=9)
    image = draw_error_map(axes[1], sweep, k)
    _error_colourbar(fig, image, ax=axes[1], fraction=0.046, pad=0.03)
    axes[1].set_title("error vs true score: p |s_theta - grad log p|^2 / 2\n(log scale, the same for every sigma)",
                      fontsize=8)
    for ax in axes[:2]:
        _square_axes(ax, sweep.window)
    ax = axes[2]
    ax.loglog(sweep.sigmas, sweep.fisher_to_true, "o-", label="learned vs TRUE data score")
    ax.loglog(sweep.sigmas, sweep.fisher_to_noised, "s-", label="learned vs noised score")
    ax.loglog(sweep.sigmas, sweep.bias, "^--", label="bias: noised vs true score")
    ax.axvline(s_k, color="black", lw=1)
    ax.set_xlabel("sigma")
    ax.set_ylabel("Fisher divergence")
    ax.legend(fontsize=7)
    ax.set_title("bias-variance trade-off", fontsize=9)
    ax.set_xticks(sweep.sigmas, [f"{v:.3g}" for v in sweep.sigmas], fontsize=7)
    ax.xaxis.set_minor_locator(NullLocator())
    ax.yaxis.set_minor_locator(NullLocator())
    ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))     # plain labels, no mathtext
    fig.subplots_adjust(left=0.04, right=0.98, bottom=0.13, top=0.88, wspace=0.42)
    return fig, _sweep_readout(sweep, sigma)


def _sweep_readout(sweep: SigmaSweep, sigma: float) -> str:
    k = sweep.nearest(sigma)
    return (f"sigma = {float(sigma):.4g} (nearest trained level {sweep.sigmas[k]:.3g}): Fisher divergence of the "
            f"learned score to the TRUE data score {sweep.fisher_to_true[k]:.4f}, to the noised score "
            f"{sweep.fisher_to_noised[k]:.4f}; bias of the noised score itself {sweep.bias[k]:.4f}")


def sigma_sweep_panel(sweep: SigmaSweep):
    """A FloatLogSlider over the trained levels (one arrow-key step = one level) -> :func:`sigma_sweep_view`.

    The figure of every level is drawn once when the panel is built; the slider only picks one.
    """
    import ipywidgets as widgets
    lo, hi = math.log10(sweep.sigmas[0]), math.log10(sweep.sigmas[-1])
    step = (hi - lo) / max(len(sweep.sigmas) - 1, 1)
    start = sweep.sigmas[len(sweep.sigmas) // 2]
    slider = widgets.FloatLogSlider(value=start, base=10, min=lo, max=hi, step=step, description="sigma",
                                    readout_format=".3g", continuous_update=False)
    # one figure per trained level, built now: a slider move only shows the level's figure again
    figures = []
    for s_k in sweep.sigmas:
        fig, _ = sigma_sweep_view(sweep, s_k)
        plt.close(fig)                   # kept, but not shown at the end of the cell
        figures.append(fig)
    return interactive_panel(lambda sigma: (figures[sweep.nearest(sigma)], _sweep_readout(sweep, sigma)),
                             {"sigma": slider})


def tweedie_view(sweep: SigmaSweep, sigma: float, *, n: int = 400, seed: int = 0):
    """Noise fresh points of p at the trained level nearest ``sigma`` and denoise them in one step.

    Left: clean points, noisy points, and arrows from each noisy point to its Tweedie estimate
    x~ + sigma^2 s_theta(x~). Readout: the mean squared error per point before and after, with
    the learned score and with the exact noised score (the best one-step denoiser, E[x|x~]).
    """
    k = sweep.nearest(sigma)
    s_k = sweep.sigmas[k]
    n = checks.positive_int(n, "n")
    gen = torch.Generator().manual_seed(seed)
    x = sweep.target.sample(n, generator=gen)
    x_noisy = x + s_k * torch.randn(x.shape, generator=gen)
    learned = tweedie_denoise(sweep.models[k], x_noisy, s_k)
    exact = tweedie_denoise(noised_distribution(sweep.target, s_k).score, x_noisy, s_k)
    mse = {name: float(((v - x) ** 2).sum(1).mean()) for name, v in
           (("noisy", x_noisy), ("learned", learned), ("exact", exact))}
    fig, ax = plt.subplots(figsize=(4.6, 4.4))
    ax.scatter(x[:, 0], x[:, 1], s=4, color="tab:blue", alpha=0.5, label="clean x")
    ax.scatter(x_noisy[:, 0], x_noisy[:, 1], s=4, color="tab:gray", alpha=0.5, label="noisy x~")
    d = (learned - x_noisy).numpy()
    ax.quiver(x_noisy[:, 0].numpy(), x_noisy[:, 1].numpy(), d[:, 0], d[:, 1], angles="xy", scale_units="xy",
              scale=1, width=0.003, color="tab:red", alpha=0.7, label="Tweedie step")
    _square_axes(ax, sweep.window)
    ax.legend(fontsize=7, loc="upper right")
    ax.set_title(f"Tweedie denoising at sigma={s_k:.3g}", fontsize=9)
    text = (f"sigma = {float(sigma):.4g} (level {s_k:.3g}): MSE noisy {mse['noisy']:.4f} -> "
            f"Tweedie with learned score {mse['learned']:.4f}, with exact noised score {mse['exact']:.4f}")
    return fig, text


def tweedie_panel(sweep: SigmaSweep):
    """A FloatLogSlider over the trained levels -> :func:`tweedie_view`."""
    import ipywidgets as widgets
    lo, hi = math.log10(sweep.sigmas[0]), math.log10(sweep.sigmas[-1])
    step = (hi - lo) / max(len(sweep.sigmas) - 1, 1)
    slider = widgets.FloatLogSlider(value=sweep.sigmas[-2], base=10, min=lo, max=hi, step=step, description="sigma",
                                    readout_format=".3g", continuous_update=False)
    return interactive_panel(lambda sigma: tweedie_view(sweep, sigma), {"sigma": slider})
