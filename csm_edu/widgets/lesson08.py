"""Lesson 08 (Autoregressive Energy Machines): the normaliser-spread figure and its panel.

The experiment (joint against autoregressive importance-sampled log Z of a product of bimodal 1-D
densities, why the joint estimate degrades with D) and the AEM comparison are
:mod:`csm_edu.experiments.aem_study`; this module only draws them.
"""
import math
from typing import Dict

import matplotlib.pyplot as plt
import numpy as np

from .base import interactive_panel
from ..experiments.aem_study import DIMS, SAMPLE_SIZES, _cached_spread_rows, normaliser_spread



def normaliser_spread_figure(dim: int = 8, n_importance: int = 64, *, n_repeats: int = 200, seed: int = 0):
    """Left: histograms of log Z_hat - log Z at (D, S). Right: |bias| and std against D at this S. Returns (fig, readout)."""
    est = normaliser_spread(dim, n_importance, n_repeats=n_repeats, seed=seed)
    rows = _cached_spread_rows(n_importance, DIMS, n_repeats, seed + 1)     # the right panel moves with S only
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(9.5, 3.6))
    lo = min(est["joint"].min(), est["autoregressive"].min(), -0.5)
    hi = max(est["joint"].max(), est["autoregressive"].max(), 0.5)
    bins = np.linspace(lo, hi, 40)
    ax1.hist(est["joint"], bins=bins, alpha=0.6, label="joint (one D-dim IS)", color="C3")
    ax1.hist(est["autoregressive"], bins=bins, alpha=0.6, label="autoregressive (D 1-D IS)", color="C0")
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
    ax2.set_xlabel("dimension D")
    ax2.set_title(f"error of log Z_hat against D (S = {n_importance})")
    ax2.legend(fontsize=7)
    fig.tight_layout()
    readout = (f"D={dim}, S={n_importance}: joint bias {est['joint'].mean():+.3f}, std {est['joint'].std():.3f}; "
               f"autoregressive bias {est['autoregressive'].mean():+.3f}, std {est['autoregressive'].std():.3f} (nats)")
    return fig, readout


def normaliser_spread_panel():
    """Sliders for D and S around :func:`normaliser_spread_figure`."""
    import ipywidgets as widgets
    controls = {
        "dim": widgets.SelectionSlider(options=list(DIMS), value=8, description="D"),
        "n_importance": widgets.SelectionSlider(options=list(SAMPLE_SIZES), value=64, description="S"),
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


