"""Lesson 09 (scaling and stability): cost against D from measured rows, and its panel."""
import math
from typing import List, Sequence

import matplotlib.pyplot as plt

from .. import viz
from ..experiments.scaling import OBJECTIVE_NAMES
from .base import interactive_panel

COLORS = {"exact SM": "tab:red", "SSM": "tab:orange", "SSM-VR": "tab:olive", "DSM": "tab:blue", "CSM": "tab:green"}


_SUPERSCRIPT = str.maketrans("-0123456789", "\u207b\u2070\u00b9\u00b2\u00b3\u2074\u2075\u2076\u2077\u2078\u2079")


def _power_of_ten(value, _pos=None) -> str:
    """A log-axis tick label such as 10\u00b3 in plain text (Unicode superscripts), not mathtext."""
    if value <= 0:
        return ""
    exponent = math.log10(value)
    if abs(exponent - round(exponent)) > 1e-6:
        return f"{value:g}"
    return "10" + str(int(round(exponent))).translate(_SUPERSCRIPT)


def scaling_view(rows: List[dict], *, objectives: Sequence[str] = OBJECTIVE_NAMES, max_dim: int = 784,
                 log_scale: bool = True, memory: bool = False):
    """Plot ms per step (or saved MB with ``memory=True``) against D for the chosen objectives.

    ``rows`` are those of :func:`csm_edu.experiments.scaling.measure` or :func:`csm_edu.experiments.scaling.read_csv`.
    Extrapolated points are drawn hollow with a dashed line (one "extrapolated" key entry). Returns (figure, readout), the
    readout giving the exact-SM / CSM and CSM / DSM ratios at the largest D shown, and whether the
    exact-SM time behind the first is measured or extrapolated.
    """
    if not objectives:
        raise ValueError("choose at least one objective")
    key = "saved_mb" if memory else "ms"
    fig, ax = plt.subplots(figsize=(5.5, 3.6))
    fig.subplots_adjust(left=0.15, right=0.98, bottom=0.15, top=0.97)   # fixed margins: no layout pass per redraw
    shown = [r for r in rows if r["dim"] <= max_dim]
    if not shown:
        raise ValueError(f"no measurement with D <= {max_dim}; raise max_dim")
    any_extrapolated = False
    for name in objectives:
        pts = sorted((r["dim"], r[key], r["how"]) for r in shown if r["objective"] == name and not math.isnan(r[key]))
        if not pts:
            continue
        measured = [(d, v) for d, v, how in pts if how == "measured"]
        extra = [(d, v) for d, v, how in pts if how != "measured"]
        c = COLORS.get(name)
        if measured:
            ax.plot(*zip(*measured), "o-", color=c, label=name, ms=4)
        if extra:
            link = measured[-1:] + extra
            ax.plot(*zip(*link), "--", color=c)
            ax.plot(*zip(*extra), "o", mfc="white", color=c, ms=5)
            any_extrapolated = True
    if log_scale:
        from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter, NullLocator
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        ax.yaxis.set_major_locator(LogLocator(base=10, numticks=8))
        ax.yaxis.set_minor_locator(NullLocator())        # fewer ticks to lay out: each redraw stays well under 0.5 s
        ax.yaxis.set_major_formatter(FuncFormatter(_power_of_ten))   # plain text: mathtext is most of a redraw
        ax.xaxis.set_minor_formatter(NullFormatter())
        dims = sorted({r["dim"] for r in shown})
        ax.set_xticks(dims, [str(d) for d in dims], fontsize=7)
    ax.set_xlabel("dimension D")
    ax.set_ylabel("MB saved for backward" if memory else "ms per training step")
    if any_extrapolated:                                   # one key entry for every hollow point
        ax.plot([], [], "o--", mfc="white", color="0.4", ms=5, label="extrapolated")
    ax.legend(fontsize=7)
    ax.grid(alpha=0.3)
    d = max(r["dim"] for r in shown)
    by = {r["objective"]: r["ms"] for r in shown if r["dim"] == d}
    parts = [f"D = {d}"]
    if "CSM" in by and "DSM" in by:
        parts.append(f"CSM / DSM = {by['CSM'] / by['DSM']:.2f}x")
    if "CSM" in by and "exact SM" in by:
        how = next(r["how"] for r in shown if r["dim"] == d and r["objective"] == "exact SM")
        parts.append(f"exact SM / CSM = {by['exact SM'] / by['CSM']:.0f}x"
                     + (" (exact SM extrapolated, not measured)" if how != "measured" else " (measured)"))
    return fig, ", ".join(parts)


def ratio_view(rows: List[dict], title: str = "", ax=None):
    """Measured cost ratios (rows of :func:`csm_edu.experiments.timing.read_ratio_csv`) as a dot plot.

    One line per (configuration, D, numerator / denominator): the median ratio over rounds as a
    dot, the smallest and largest round as a bar, a dotted line at 1 (equal cost). Rows that are
    not ratios (memory rows) are left out. Returns the figure.
    """
    shown = [r for r in rows if not r["benchmark"].endswith("memory")]
    if not shown:
        raise ValueError("no ratio rows to plot")
    if ax is None:
        _, ax = plt.subplots(figsize=(6.0, 0.32 * len(shown) + 1.0))
    labels = [f"{r['config']}, D={r['dim']}: {r['numerator']} / {r['denominator']}" for r in shown]
    ys = list(range(len(shown)))[::-1]
    ratios = [r["ratio"] for r in shown]
    lo = [r["ratio"] - r["ratio_lo"] for r in shown]
    hi = [r["ratio_hi"] - r["ratio"] for r in shown]
    ax.errorbar(ratios, ys, xerr=[lo, hi], fmt="o", color="k", ms=4, capsize=2)
    ax.axvline(1.0, color="0.5", ls=":")
    ax.set_yticks(ys)
    ax.set_yticklabels(labels, fontsize=7)
    ax.set_xscale("log")
    ax.set_xlabel("cost ratio (median over rounds; bar: smallest to largest round)")
    if title:
        ax.set_title(title, fontsize=8)
    ax.grid(alpha=0.3, axis="x")
    return ax.figure


def scaling_panel(rows: List[dict]):
    """Checkboxes for the objectives, a slider over the measured D values, log/linear and time/memory toggles.

    Each redraw is one :func:`scaling_view` figure, drawn once and shown as its pixels
    (:func:`csm_edu.viz.figure_pixels`): a few tenths of a second on one core.
    """
    import ipywidgets as widgets

    dims = sorted({r["dim"] for r in rows})
    max_dim = widgets.SelectionSlider(options=dims, value=dims[-1], description="max D", continuous_update=False)
    objectives = widgets.SelectMultiple(options=list(OBJECTIVE_NAMES), value=list(OBJECTIVE_NAMES),
                                        description="objectives", rows=5)
    log_scale = widgets.Checkbox(value=True, description="log axes")
    memory = widgets.Checkbox(value=False, description="memory instead of time")

    def view(max_dim, objectives, log_scale, memory):
        fig, readout = scaling_view(rows, objectives=list(objectives), max_dim=max_dim, log_scale=log_scale,
                                    memory=memory)
        # drawn once here and shown as an image: the notebook's display (bbox "tight") would draw it twice
        return viz.pixels_figure(viz.figure_pixels(fig)), readout

    return interactive_panel(view, {"max_dim": max_dim, "objectives": objectives, "log_scale": log_scale,
                                    "memory": memory}, columns=2)


class MeasureBar:
    """A tqdm.auto bar for :func:`csm_edu.experiments.scaling.measure`'s ``progress`` callable.

    Each call (one objective measured at one D) advances the bar and shows the line as its postfix;
    use it as a context manager so the bar is closed (exact SM's skipped sizes leave it short of
    ``total``). ``disable=True``: silent.
    """

    def __init__(self, total: int, *, desc: str = "timing the objectives", disable: bool = False):
        from tqdm.auto import tqdm
        self.bar = tqdm(total=total, desc=desc, unit="run", leave=False, disable=disable)

    def __call__(self, line: str) -> None:
        self.bar.set_postfix_str(" ".join(line.split()), refresh=False)
        self.bar.update()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.bar.close()


def stability_view(curves: List[dict], runs: List[dict], lr: float, smooth: int = 5):
    """Loss curves of every objective and seed at one learning rate, and the bits/dim spread.

    ``curves``: rows (objective, lr, seed, step, loss); ``runs``: rows (objective, lr, seed, bits_per_dim).
    Each objective has its own panel (the losses are on different scales).
    """
    names = list(dict.fromkeys(r["objective"] for r in curves))
    fig, axes = plt.subplots(1, len(names) + 1, figsize=(3.0 * (len(names) + 1), 2.8))
    for ax, name in zip(axes, names):
        for seed in sorted({r["seed"] for r in curves}):
            pts = [(r["step"], r["loss"]) for r in curves if r["objective"] == name and r["lr"] == lr and r["seed"] == seed]
            if pts:
                steps, losses = zip(*pts)
                ax.plot(steps, losses, lw=1, label=f"seed {seed}")
        ax.set_title(name, fontsize=9)
        ax.set_xlabel("step")
    axes[0].set_ylabel("training loss")
    ax = axes[-1]
    for i, name in enumerate(names):
        vals = [r["bits_per_dim"] for r in runs if r["objective"] == name and r["lr"] == lr and math.isfinite(r["bits_per_dim"])]
        ax.plot([i] * len(vals), vals, "o", color="k", ms=4)
    ax.set_xticks(range(len(names)))
    ax.set_xticklabels(names, rotation=45, ha="right", fontsize=7)
    ax.set_title("test bits/dim (lower is better)", fontsize=9)
    fig.tight_layout()
    return fig
