r"""Lesson 01: the normaliser Z of an energy model, on a grid, and what it costs.

An energy model is p(x) = exp(-E(x)) / Z with Z = \int exp(-E(x)) dx. In 2-D, Z is a sum over a
grid (:func:`csm_edu.metrics.grid_log_density`); this module adds what the lesson needs beyond
that:

- :func:`grid_negative_log_likelihood`: maximum likelihood with log Z from a grid;
- :func:`measure_grid_cost` / :func:`format_cost_table`: measured time and memory of evaluating
  an energy on k^D grid points, extrapolated to larger D (the curse of dimensionality);
- :class:`TemperatureView` / :func:`temperature_panel`: the tempered density
  p_T(x) = exp(-E(x)/T) / Z(T) and its log Z(T), with precomputed energies so a slider is instant.
"""
import math
from typing import Callable, Dict, Optional, Sequence

import matplotlib.pyplot as plt
import numpy as np
import torch

from .. import checks, viz
from ..metrics import grid_2d
from .base import interactive_panel

TEMPERATURE_RANGE = (0.1, 10.0)     # the log slider's ends


def grid_negative_log_likelihood(energy_fn: Callable, x: torch.Tensor, grid_points: torch.Tensor,
                                 cell_area: float) -> torch.Tensor:
    r"""Average negative log-likelihood of ``x`` with the normaliser computed on a grid.

    .. math:: -\frac1n\sum_i \log p_\theta(x_i) = \frac1n\sum_i E_\theta(x_i) + \log Z_\theta,
              \qquad \log Z_\theta \approx \log \sum_j e^{-E_\theta(g_j)}\,\Delta A .

    Its gradient is E_data[grad_theta E] - E_{p_theta}[grad_theta E]: pull the energy down at the
    data, push it up where the model puts mass (the grid gives the second expectation exactly, up
    to the Riemann sum). ``grid_points`` (m, D) and ``cell_area`` come from
    :func:`csm_edu.metrics.grid_2d`.
    """
    x = checks.as_batch(x, "x")
    grid_points = checks.as_batch(grid_points, "grid_points", dim=x.shape[1])
    cell_area = checks.positive(cell_area, "cell_area")
    log_z = torch.logsumexp(-energy_fn(grid_points), 0) + math.log(cell_area)
    return energy_fn(x).mean() + log_z


def _human_seconds(s: float) -> str:
    for unit, size in (("years", 3.156e7), ("days", 86400.0), ("hours", 3600.0), ("min", 60.0)):
        if s >= size:
            return f"{s / size:.3g} {unit}"
    return f"{s:.3g} s"


def _human_bytes(b: float) -> str:
    for unit, size in (("EB", 1e18), ("PB", 1e15), ("TB", 1e12), ("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if b >= size:
            return f"{b / size:.3g} {unit}"
    return f"{b:.3g} B"


def format_cost_table(rows: Sequence[Dict]) -> str:
    """The rows of :func:`measure_grid_cost` as a text table (seconds, human units, memory)."""
    lines = [f"{'D':>4} {'grid points':>12} {'seconds':>11} {'(that is)':>16} {'memory':>10}  source",
             "-" * 68]
    for r in rows:
        lines.append(f"{r['dim']:>4} {r['points']:>12.3g} {r['seconds']:>11.3g} {_human_seconds(r['seconds']):>16} "
                     f"{_human_bytes(r['memory_bytes']):>10}  {'measured' if r['measured'] else 'extrapolated'}")
    return "\n".join(lines)


class TemperatureView:
    r"""The tempered density p_T(x) = exp(-E(x)/T) / Z(T) of a 2-D energy on a grid.

    E is evaluated once on the grid (constructor); each call only rescales it, so a slider
    responds at once. ``view(temperature)`` returns ``(figure, readout)``: the density heat map and
    the curve log Z(T) against T with the current T marked. Z(T) is the grid sum over the box
    ``window`` (mass outside the box is ignored, which matters at high T).

    The heat map has ONE colour scale for every T, logarithmic (densities span orders of
    magnitude across the slider), from ``density_floor`` times the largest density over the
    slider's range (at its lowest T) up to that largest density, with a colourbar: as T falls the
    peaks visibly brighten and narrow, as T rises the density visibly flattens and dims.
    Densities below the scale's floor are drawn in its darkest colour.
    """

    def __init__(self, energy_fn: Callable, *, window: Sequence[float] = viz.DEFAULT_WINDOW, resolution: int = 120,
                 temperature_range: Sequence[float] = TEMPERATURE_RANGE, density_floor: float = 1e-4):
        self.window = tuple(window)
        points, self.X, self.Y, area = grid_2d(window, resolution)
        with torch.no_grad():
            self.energy = energy_fn(points).detach().double().reshape(self.X.shape)
        if not torch.isfinite(self.energy).all():
            raise ValueError("energy_fn returned NaN/inf on the grid; check the model or narrow window")
        self.log_area = math.log(area)
        lo, hi = (checks.positive(t, "temperature_range") for t in temperature_range)
        self.curve_t = np.geomspace(lo, hi, 60)
        self.curve_log_z = np.array([self.log_z(t) for t in self.curve_t])
        self.density_floor = checks.positive(density_floor, "density_floor")
        peaks = [float((-self.energy.min() / t) - self.log_z(t)) for t in (lo, hi, 1.0)]
        self.density_max = math.exp(max(peaks))                  # the largest density over the slider

    def log_z(self, temperature: float) -> float:
        r"""log Z(T) = log \sum_j exp(-E(g_j)/T) dA on the grid."""
        temperature = checks.positive(temperature, "temperature")
        return float(torch.logsumexp((-self.energy / temperature).flatten(), 0)) + self.log_area

    def __call__(self, temperature: float):
        from matplotlib.colors import LogNorm
        from matplotlib.ticker import NullLocator

        temperature = checks.positive(temperature, "temperature")
        log_z = self.log_z(temperature)
        density = torch.exp(-self.energy / temperature - log_z)
        fig, (ax_p, ax_z) = plt.subplots(1, 2, figsize=(10, 3.9), gridspec_kw={"width_ratios": [1.15, 1]})
        norm = LogNorm(vmin=self.density_floor * self.density_max, vmax=self.density_max, clip=True)
        image = ax_p.imshow(density.clamp_min(1e-300).numpy(), origin="lower", extent=self.window, cmap="viridis",
                            norm=norm, interpolation="nearest", aspect="equal")
        bar = fig.colorbar(image, ax=ax_p, fraction=0.046, pad=0.03, extend="min")
        decades = range(math.ceil(math.log10(norm.vmin)), math.floor(math.log10(norm.vmax)) + 1)
        bar.set_ticks([10.0 ** d for d in decades], labels=[f"1e{d}" if d else "1" for d in decades])
        bar.ax.yaxis.set_minor_locator(NullLocator())
        bar.set_label("p_T(x): one log scale for every T", fontsize=9)
        ax_p.set_title(f"p_T(x) ∝ exp(-E(x)/T), T = {temperature:.3g}", fontsize=11)
        ax_z.semilogx(self.curve_t, self.curve_log_z, color="tab:blue")
        ax_z.plot([temperature], [log_z], "o", color="tab:red")
        ax_z.set_xlabel("temperature T")
        ax_z.set_ylabel("log Z(T) on the grid")
        ax_z.set_title("the normaliser changes with T", fontsize=11)
        fig.subplots_adjust(left=0.06, right=0.98, bottom=0.14, top=0.9, wspace=0.5)
        peak = float(density.max())
        return fig, f"T = {temperature:.3g}: log Z(T) = {log_z:.3f} (grid), highest density {peak:.3g}"


def temperature_panel(energy_fn: Callable, *, window: Sequence[float] = viz.DEFAULT_WINDOW, resolution: int = 120,
                      temperature: float = 1.0, view: Optional[TemperatureView] = None):
    """A temperature slider (FloatLogSlider over :data:`TEMPERATURE_RANGE`) wired to :class:`TemperatureView`.

    Each temperature's figure is drawn once and kept (:func:`csm_edu.viz.figure_pixels`), so
    going back to a temperature already seen costs almost nothing; the slider's two ends and the
    default are drawn when the panel is built. The slider redraws on release
    (``continuous_update=False``): a new temperature takes one figure draw.
    """
    import ipywidgets as widgets

    view = view if view is not None else TemperatureView(energy_fn, window=window, resolution=resolution)
    lo, hi = TEMPERATURE_RANGE
    frames = {}

    def show(temperature):
        key = round(math.log10(checks.positive(temperature, "temperature")), 6)
        if key not in frames:
            fig, readout = view(temperature)
            frames[key] = (viz.figure_pixels(fig), readout)
        pixels, readout = frames[key]
        return viz.pixels_figure(pixels), readout

    for t in (lo, hi, temperature):
        plt.close(show(t)[0])
    slider = widgets.FloatLogSlider(value=temperature, base=10, min=math.log10(lo), max=math.log10(hi),
                                    step=0.05, description="temperature", readout_format=".3g",
                                    continuous_update=False)
    return interactive_panel(show, {"temperature": slider})
