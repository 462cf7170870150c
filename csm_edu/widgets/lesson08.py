"""Lesson 08 (Autoregressive Energy Machines): the normaliser-spread figure and its panel.

The experiment (joint against autoregressive importance-sampled log Z of a product of bimodal 1-D
densities, why the joint estimate degrades with D) and the AEM comparison are
:mod:`csm_edu.experiments.aem_study`; this module only draws them.
"""
import functools
import math
from typing import Dict

import matplotlib.pyplot as plt
from matplotlib import ticker
import numpy as np

from .. import viz
from .base import interactive_panel
from ..experiments.aem_study import DIMS, SAMPLE_SIZES, _cached_spread_rows, normaliser_spread



@functools.lru_cache(maxsize=64)
def _cached_spread(dim, n_importance, n_repeats, seed):
    return normaliser_spread(dim, n_importance, n_repeats=n_repeats, seed=seed)


def _histogram_axes(ax, est, dim, n_importance, n_repeats):
    """Left panel: histograms of log Z_hat - log Z of both estimators at (D, S)."""
    lo = min(est["joint"].min(), est["autoregressive"].min(), -0.5)
    hi = max(est["joint"].max(), est["autoregressive"].max(), 0.5)
    bins = np.linspace(lo, hi, 40)
    ax.hist(est["joint"], bins=bins, alpha=0.6, label="joint (one D-dim IS)", color="C3", histtype="stepfilled")
    ax.hist(est["autoregressive"], bins=bins, alpha=0.6, label="autoregressive (D 1-D IS)", color="C0",
            histtype="stepfilled")                            # one polygon per histogram, not 40 bars: faster redraw
    ax.axvline(0.0, color="k", lw=1)
    ax.set_xlabel(r"$\log \hat Z - \log Z$")
    ax.set_title(f"D = {dim}, S = {n_importance}, {n_repeats} repeats")
    ax.legend(fontsize=8)


def _against_dimension_axes(ax, rows, n_importance):
    """Right panel: |bias| and std of both estimators against D at this S."""
    d = [r["dim"] for r in rows]
    for key, color, label in (("joint", "C3", "joint"), ("autoregressive", "C0", "autoregressive")):
        ax.plot(d, [abs(r[f"{key}_mean"]) for r in rows], "o-", color=color, label=f"|bias|, {label}")
        ax.plot(d, [r[f"{key}_std"] for r in rows], "s--", color=color, label=f"std, {label}")
    ax.set_xscale("log", base=2)
    ax.set_yscale("log")
    # plain-text tick labels (the default log labels are mathtext, whose layout is most of a redraw)
    ax.xaxis.set_major_locator(ticker.FixedLocator(d))
    ax.xaxis.set_major_formatter(ticker.FixedFormatter([str(v) for v in d]))
    ax.xaxis.set_minor_locator(ticker.NullLocator())
    ax.yaxis.set_major_formatter(ticker.LogFormatter())
    ax.yaxis.set_minor_locator(ticker.NullLocator())
    ax.set_xlabel("dimension D")
    ax.set_title(f"error of log Z_hat against D (S = {n_importance})")
    ax.legend(fontsize=7)


def _readout(est, dim, n_importance):
    return (f"D={dim}, S={n_importance}: joint bias {est['joint'].mean():+.3f}, std {est['joint'].std():.3f}; "
            f"autoregressive bias {est['autoregressive'].mean():+.3f}, std {est['autoregressive'].std():.3f} (nats)")


def normaliser_spread_figure(dim: int = 8, n_importance: int = 64, *, n_repeats: int = 200, seed: int = 0):
    """Left: histograms of log Z_hat - log Z at (D, S). Right: |bias| and std against D at this S. Returns (fig, readout)."""
    est = _cached_spread(int(dim), int(n_importance), int(n_repeats), int(seed))
    rows = _cached_spread_rows(n_importance, DIMS, n_repeats, seed + 1)     # the right panel moves with S only
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(9.5, 3.6))
    fig.subplots_adjust(left=0.07, right=0.98, bottom=0.15, top=0.9, wspace=0.25)   # fixed: tight_layout costs ~0.2 s
    _histogram_axes(ax1, est, dim, n_importance, n_repeats)
    _against_dimension_axes(ax2, rows, n_importance)
    return fig, _readout(est, dim, n_importance)


def _canvas_pixels(fig) -> np.ndarray:
    """Draw ``fig`` once and return all its RGBA pixels (uncropped: tiles of one size line up); ``fig`` is closed."""
    fig.canvas.draw()
    pixels = np.asarray(fig.canvas.buffer_rgba()).copy()
    plt.close(fig)
    return pixels


class _SpreadTiles:
    """:func:`normaliser_spread_figure` at every (D, S) of the panel, drawn once as two pixel tiles.

    The left tile (histograms) depends on (D, S), the right one (error against D) on S only: 7 x 5
    + 5 small figures drawn when the panel is built; a slider move only puts two stored tiles side
    by side and shows them (:func:`csm_edu.viz.pixels_figure`), a tenth of a second on one core.
    """

    SIZE = (4.75, 3.6)      # each half of normaliser_spread_figure's 9.5 x 3.6 inches

    def __init__(self, dims=DIMS, sizes=SAMPLE_SIZES, *, n_repeats: int = 200, seed: int = 0, progress: bool = True):
        from tqdm.auto import tqdm
        self.left, self.right, self.readouts = {}, {}, {}
        bar = tqdm(total=len(dims) * len(sizes) + len(sizes), desc="drawing the panel's settings", leave=False,
                   disable=not progress, mininterval=0.5)
        for s in sizes:
            fig, ax = self._figure(left=0.14, right=0.97)
            _against_dimension_axes(ax, _cached_spread_rows(s, DIMS, n_repeats, seed + 1), s)
            self.right[s] = _canvas_pixels(fig)
            bar.update()
            for d in dims:
                est = _cached_spread(int(d), int(s), int(n_repeats), int(seed))
                fig, ax = self._figure(left=0.14, right=0.97)
                _histogram_axes(ax, est, d, s, n_repeats)
                self.left[d, s] = _canvas_pixels(fig)
                self.readouts[d, s] = _readout(est, d, s)
                bar.update()
        bar.close()

    def _figure(self, *, left, right):
        fig = plt.figure(figsize=self.SIZE)
        ax = fig.add_axes((left, 0.17, right - left, 0.73))          # fixed margins, no layout pass
        return fig, ax

    def __call__(self, dim, n_importance):
        key = (int(dim), int(n_importance))
        if key not in self.left:
            raise ValueError(f"no stored setting D={dim}, S={n_importance}")
        pixels = np.concatenate([self.left[key], self.right[key[1]]], axis=1)
        return viz.pixels_figure(pixels), self.readouts[key]


def normaliser_spread_panel(*, progress: bool = True):
    """Sliders for D and S around :func:`normaliser_spread_figure`.

    Every setting is drawn when the panel is built (:class:`_SpreadTiles`, a few seconds with a
    progress bar), so a slider move only shows stored pixels.
    """
    import ipywidgets as widgets
    tiles = _SpreadTiles(progress=progress)
    controls = {
        "dim": widgets.SelectionSlider(options=list(DIMS), value=8, description="D", continuous_update=False),
        "n_importance": widgets.SelectionSlider(options=list(SAMPLE_SIZES), value=64, description="S",
                                                continuous_update=False),
    }
    return interactive_panel(lambda dim, n_importance: tiles(dim, n_importance), controls)


# ---- the comparison: AEM, AR-CSM and MixtureMADE on the same data, same backbone size ----


def format_comparison(results: Dict[str, list]) -> str:
    """Plain-text table of :func:`compare_log_likelihoods` rows for several data sets (name -> rows)."""
    lines = [f"{'data':13s} {'model':14s} {'test log-lik':>13s} {'+- s.e.':>8s} {'ms/step':>8s}  how"]
    for data_name, rows in results.items():
        for r in rows:
            ms = "" if math.isnan(r["ms_per_step"]) else f"{r['ms_per_step']:.1f}"
            lines.append(f"{data_name:13s} {r['model']:14s} {r['log_lik']:13.3f} {r['stderr']:8.3f} {ms:>8s}  {r['how']}")
    return "\n".join(lines)


