"""Plots used by the lessons. Every function takes ``ax=None`` (a new figure is made) and
returns the matplotlib Figure, so a notebook cell can end with ``;`` or ``plt.show()``.

Every lesson's figures share one seaborn theme, set by :func:`use_theme` (which
``config.setup_notebook`` calls once at the top of each lesson).
"""
import math
from typing import Callable, Optional, Sequence

import matplotlib.pyplot as plt
import numpy as np
import torch

from . import checks
from .metrics import DEFAULT_WINDOW, grid_2d, grid_log_density

THEME = dict(context="notebook", style="ticks", palette="colorblind",
             rc={"axes.spines.top": False, "axes.spines.right": False, "figure.dpi": 100,
                 "savefig.dpi": 100, "image.cmap": "viridis", "legend.frameon": False})


def use_theme() -> dict:
    """Apply the kit's seaborn theme to matplotlib's rcParams (all later figures); return it.

    ``seaborn.set_theme`` with :data:`THEME`: notebook font sizes, light ticks without a grid (so
    heat maps and image grids are not crossed by grid lines), top and right spines off, and the
    colour-blind-safe palette for lines and sample clouds. Calling it again changes nothing.
    """
    import seaborn as sns

    sns.set_theme(**THEME)
    return dict(THEME)


def _fig_ax(ax, figsize=(4.2, 4.0)):
    if ax is None:
        fig, ax = plt.subplots(figsize=figsize)
    return ax.figure, ax


def _finish_2d(ax, window, title):
    ax.set_xlim(window[0], window[1])
    ax.set_ylim(window[2], window[3])
    ax.set_aspect("equal")
    if title:
        ax.set_title(title)


def figure_pixels(fig, *, pad: int = 6) -> np.ndarray:
    """Draw ``fig`` once and return its RGBA pixels cropped to what is drawn; ``fig`` is closed.

    With :func:`pixels_figure`, a panel draws a frame once and shows it again at almost no cost.
    """
    fig.canvas.draw()
    pixels = np.asarray(fig.canvas.buffer_rgba())
    plt.close(fig)
    ink = (pixels[..., :3] < 250).any(2)
    cols, rows = np.flatnonzero(ink.any(0)), np.flatnonzero(ink.any(1))
    if len(cols) == 0:
        return pixels.copy()
    return pixels[max(0, rows[0] - pad):rows[-1] + pad + 1, max(0, cols[0] - pad):cols[-1] + pad + 1].copy()


def pixels_figure(pixels: np.ndarray):
    """A figure that only shows ``pixels`` (from :func:`figure_pixels`) at their own size: cheap to draw."""
    dpi = plt.rcParams["figure.dpi"]
    fig = plt.figure(figsize=(pixels.shape[1] / dpi, pixels.shape[0] / dpi), dpi=dpi)
    ax = fig.add_axes((0, 0, 1, 1))
    ax.imshow(pixels, interpolation="none")
    ax.set_axis_off()
    return fig


def plot_density(log_prob_fn: Callable, *, window: Sequence[float] = DEFAULT_WINDOW, resolution: int = 200,
                 ax=None, normalise: bool = True, log: bool = False, cmap: str = "viridis",
                 title: Optional[str] = None, colorbar: bool = False, vmax: Optional[float] = None):
    """Heat map of a 2-D density given its (possibly unnormalised) log density.

    With ``normalise=True`` the density is normalised on the grid (see
    :func:`csm_edu.metrics.grid_log_density`); ``log=True`` shows log p instead of p. ``vmax``
    fixes the top of the colour scale (give two heat maps the same one to compare them).
    """
    fig, ax = _fig_ax(ax)
    if normalise:
        X, Y, logp, _ = grid_log_density(log_prob_fn, window=window, resolution=resolution)
    else:
        pts, X, Y, _ = grid_2d(window, resolution)
        with torch.no_grad():
            logp = log_prob_fn(pts).detach().reshape(resolution, resolution)
    values = logp if log else torch.exp(logp)
    if not torch.isfinite(values).all():
        raise ValueError("the density has NaN/inf values on the grid; check the model")
    mesh = ax.pcolormesh(X.numpy(), Y.numpy(), values.numpy(), cmap=cmap, shading="auto", vmax=vmax)
    if colorbar:
        fig.colorbar(mesh, ax=ax, fraction=0.046)
    _finish_2d(ax, window, title)
    return fig


def plot_score_field(score_fn: Callable, *, window: Sequence[float] = DEFAULT_WINDOW, resolution: int = 20,
                     ax=None, log_prob_fn: Optional[Callable] = None, color: str = "white",
                     normalise_arrows: bool = True, title: Optional[str] = None):
    """Quiver plot of a 2-D score field, optionally over the density of ``log_prob_fn``.

    With ``normalise_arrows`` every arrow has the same length (direction only) and the colour
    intensity is not used, which keeps fields with 1/sigma magnitudes readable.
    """
    fig, ax = _fig_ax(ax)
    if log_prob_fn is not None:
        plot_density(log_prob_fn, window=window, ax=ax)
        arrow_color = color
    else:
        arrow_color = "black" if color == "white" else color
    pts, X, Y, _ = grid_2d(window, resolution)
    with torch.no_grad():
        s = score_fn(pts).detach()
    if not torch.isfinite(s).all():
        raise ValueError("score_fn returned NaN/inf on the grid; check the model")
    if normalise_arrows:
        s = s / s.norm(dim=1, keepdim=True).clamp_min(1e-12)
    U, V = s[:, 0].reshape(resolution, resolution).numpy(), s[:, 1].reshape(resolution, resolution).numpy()
    ax.quiver(X.numpy(), Y.numpy(), U, V, color=arrow_color, angles="xy", pivot="mid",
              scale=1.6 * resolution if normalise_arrows else None, width=0.004)
    _finish_2d(ax, window, title)
    return fig


def plot_samples(x, *, ax=None, window: Optional[Sequence[float]] = DEFAULT_WINDOW, s: float = 2.0,
                 alpha: float = 0.5, color: Optional[str] = None, label: Optional[str] = None,
                 title: Optional[str] = None):
    """Scatter plot of 2-D points of shape (n, 2)."""
    x = checks.as_batch(torch.as_tensor(x).detach().cpu(), "x", dim=2, allow_nonfinite=True)
    fig, ax = _fig_ax(ax)
    ax.scatter(x[:, 0].numpy(), x[:, 1].numpy(), s=s, alpha=alpha, color=color, label=label, linewidths=0)
    if window is not None:
        _finish_2d(ax, window, title)
    elif title:
        ax.set_title(title)
    return fig


def plot_trajectories(trajectory, *, ax=None, n_show: int = 20, window: Optional[Sequence[float]] = DEFAULT_WINDOW,
                      color: str = "tab:red", title: Optional[str] = None, upto: Optional[int] = None):
    """Paths of the first ``n_show`` chains of a (T, n, 2) trajectory; dots mark the end points.

    ``upto`` draws only the first ``upto`` recorded states (for an animation frame).
    """
    traj = torch.as_tensor(trajectory).detach().cpu()
    if traj.dim() != 3 or traj.shape[2] != 2:
        raise ValueError(f"trajectory must have shape (T, n, 2), got {tuple(traj.shape)}")
    fig, ax = _fig_ax(ax)
    end = traj.shape[0] if upto is None else max(1, min(int(upto), traj.shape[0]))
    part = traj[:end, :n_show].numpy()
    for i in range(part.shape[1]):
        ax.plot(part[:, i, 0], part[:, i, 1], color=color, lw=0.7, alpha=0.6)
    ax.scatter(part[0, :, 0], part[0, :, 1], s=8, color="black", zorder=3, label="start")
    ax.scatter(part[-1, :, 0], part[-1, :, 1], s=12, color=color, zorder=3, label="now")
    if window is not None:
        _finish_2d(ax, window, title)
    return fig


def plot_loss(history, *, ax=None, smooth: int = 50, label: Optional[str] = None, title: str = "training loss",
              log_x: bool = False):
    """Loss curve from a :class:`csm_edu.train.History` or a list of numbers (raw, faint, and smoothed)."""
    values = list(history.loss if hasattr(history, "loss") else history)
    fig, ax = _fig_ax(ax, figsize=(5, 3))
    steps = np.arange(1, len(values) + 1)
    line, = ax.plot(steps, values, alpha=0.25)
    if smooth and len(values) > 1:
        window = max(1, min(smooth, len(values) // 5 or 1))
        kernel = np.ones(window) / window
        smoothed = np.convolve(values, kernel, mode="valid")
        ax.plot(steps[window - 1:], smoothed, color=line.get_color(), label=label)
    ax.set_xlabel("step")
    ax.set_ylabel("loss")
    if log_x:
        ax.set_xscale("log")
    if title:
        ax.set_title(title)
    if label:
        ax.legend()
    return fig


def image_grid(images, *, nrow: Optional[int] = None, ax=None, title: Optional[str] = None,
               value_range: Sequence[float] = (0.0, 1.0), cmap: str = "gray"):
    """Tile a batch of images (n, C, H, W) (C = 1 or 3) into one picture; values are clipped to ``value_range``."""
    x = torch.as_tensor(images).detach().cpu().float()
    if x.dim() == 3:
        x = x[:, None]
    if x.dim() != 4 or x.shape[1] not in (1, 3):
        raise ValueError(f"images must have shape (n, C, H, W) with C in (1, 3), got {tuple(x.shape)}")
    n, c, h, w = x.shape
    nrow = nrow or int(math.ceil(math.sqrt(n)))
    ncol = int(math.ceil(n / nrow))
    lo, hi = value_range
    x = ((x - lo) / (hi - lo)).clamp(0, 1)
    canvas = torch.ones(c, ncol * (h + 1) + 1, nrow * (w + 1) + 1)
    for i in range(n):
        r, col = divmod(i, nrow)
        canvas[:, 1 + r * (h + 1): 1 + r * (h + 1) + h, 1 + col * (w + 1): 1 + col * (w + 1) + w] = x[i]
    fig, ax = _fig_ax(ax, figsize=(0.45 * nrow + 0.6, 0.45 * ncol + 0.6))
    img = canvas[0].numpy() if c == 1 else canvas.permute(1, 2, 0).numpy()
    ax.imshow(img, cmap=cmap if c == 1 else None, vmin=0, vmax=1, interpolation="nearest")
    ax.axis("off")
    if title:
        ax.set_title(title)
    return fig


use_theme()   # importing the kit's plots (every lesson does) gives every later figure its theme
