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

from .base import interactive_panel
from ..experiments.aem_study import DIMS, SAMPLE_SIZES, _cached_spread_rows, normaliser_spread



@functools.lru_cache(maxsize=64)
def _cached_spread(dim, n_importance, n_repeats, seed):
    return normaliser_spread(dim, n_importance, n_repeats=n_repeats, seed=seed)


def normaliser_spread_figure(dim: int = 8, n_importance: int = 64, *, n_repeats: int = 200, seed: int = 0):
    """Left: histograms of log Z_hat - log Z at (D, S). Right: |bias| and std against D at this S. Returns (fig, readout)."""
    est = _cached_spread(int(dim), int(n_importance), int(n_repeats), int(seed))
    rows = _cached_spread_rows(n_importance, DIMS, n_repeats, seed + 1)     # the right panel moves with S only
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(9.5, 3.6))
    fig.subplots_adjust(left=0.07, right=0.98, bottom=0.15, top=0.9, wspace=0.25)   # fixed: tight_layout costs ~0.2 s
    lo = min(est["joint"].min(), est["autoregressive"].min(), -0.5)
    hi = max(est["joint"].max(), est["autoregressive"].max(), 0.5)
    bins = np.linspace(lo, hi, 40)
    ax1.hist(est["joint"], bins=bins, alpha=0.6, label="joint (one D-dim IS)", color="C3", histtype="stepfilled")
    ax1.hist(est["autoregressive"], bins=bins, alpha=0.6, label="autoregressive (D 1-D IS)", color="C0",
             histtype="stepfilled")                           # one polygon per histogram, not 40 bars: faster redraw
    ax1.axvline(0.0, color="k", lw=1)
    ax1.set_xlabel(r"$\log \hat Z - \log Z$")
    ax1.set_title(f"D = {dim}, S = {n_importance}, {n_repeats} repeats")
    ax1.legend(fontsize=8)
    d = [r["dim"] for r in rows]
    for key, color, label in (("joint", "C3", "joint"), ("autoregressive", "C0", "autoregressive")):
        ax2.plot(d, [abs(r[f"{key}_mean"]) for r in rows], "o-", color=color, label=f"|bias|, {label}")
        ax2.plot(d, [r[f"{key}_std"] for r in rows], "s--", color=color, label=f"std, {label}")
    ax2.set_xscale("log", base=2)
    ax2.set_yscale("log")
    # plain-text tick labels (the default log labels are mathtext, whose layout is most of a redraw)
    ax2.xaxis.set_major_locator(ticker.FixedLocator(d))
    ax2.xaxis.set_major_formatter(ticker.FixedFormatter([str(v) for v in d]))
    ax2.xaxis.set_minor_locator(ticker.NullLocator())
    ax2.yaxis.set_major_formatter(ticker.LogFormatter())
    ax2.yaxis.set_minor_locator(ticker.NullLocator())
    ax2.set_xlabel("dimension D")
    ax2.set_title(f"error of log Z_hat against D (S = {n_importance})")
    ax2.legend(fontsize=7)
    readout = (f"D={dim}, S={n_importance}: joint bias {est['joint'].mean():+.3f}, std {est['joint'].std():.3f}; "
               f"autoregressive bias {est['autoregressive'].mean():+.3f}, std {est['autoregressive'].std():.3f} (nats)")
    return fig, readout


def normaliser_spread_panel():
    """Sliders for D and S around :func:`normaliser_spread_figure`."""
    import ipywidgets as widgets
    controls = {
        "dim": widgets.SelectionSlider(options=list(DIMS), value=8, description="D", continuous_update=False),
        "n_importance": widgets.SelectionSlider(options=list(SAMPLE_SIZES), value=64, description="S",
                                                continuous_update=False),
    }
    return interactive_panel(lambda dim, n_importance: normaliser_spread_figure(dim, n_importance), controls)


# ---- the comparison: AEM, AR-CSM and MixtureMADE on the same data, same backbone size ----


def format_comparison(results: Dict[str, list]) -> str:
    """Plain-text table of :func:`compare_log_likelihoods` rows for several data sets (name -> rows)."""
    lines = [f"{'data':13s} {'model':14s} {'test log-lik':>13s} {'+- s.e.':>8s} {'ms/step':>8s}  how"]
    for data_name, rows in results.items():
        for r in rows:
            ms = "" if math.isnan(r["ms_per_step"]) else f"{r['ms_per_step']:.1f}"
            lines.append(f"{data_name:13s} {r['model']:14s} {r['log_lik']:13.3f} {r['stderr']:8.3f} {ms:>8s}  {r['how']}")
    return "\n".join(lines)


