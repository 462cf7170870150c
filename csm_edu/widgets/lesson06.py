r"""Lesson 06 (noise scales and annealed Langevin): score-error maps, mode weights, the sampler panel.

- :func:`score_error_map` / :func:`plot_score_error`: the per-point squared error
  |s(x) - s_ref(x)|^2 on a grid, as a log-scale heat map under the density's contours: a score
  learned from data is accurate only where data are.
- mixture weights a sampler recovered: :func:`csm_edu.metrics.mode_weights`.
- :func:`annealed_view` / :func:`annealed_panel`: annealed Langevin with a trained
  noise-conditional network at geometric levels sigma_max > ... > sigma_min, with sliders for the
  number of levels, sigma_max and the steps per level.
"""
import time
from typing import Callable, Dict, Optional, Sequence

import matplotlib.pyplot as plt
import numpy as np
import torch

from .. import checks, objectives, sampling
from ..denoise import noised_distribution
from ..distributions import GaussianMixture
from ..metrics import grid_2d, mode_weights
from .base import interactive_panel

WINDOW = (-8.0, 8.0, -8.0, 8.0)


def _score_callable(reference) -> Callable:
    return reference.score if hasattr(reference, "score") else reference


def score_error_map(score_fn: Callable, reference, *, window: Sequence[float] = WINDOW, resolution: int = 100):
    """Squared error e(x) = |s(x) - s_ref(x)|^2 on an r x r grid (r = ``resolution``): returns (X, Y, e), e of shape (r, r).

    ``reference`` is a distribution (its ``.score`` is used) or a score callable.
    """
    pts, X, Y, _ = grid_2d(window, resolution)
    with torch.no_grad():
        err = ((score_fn(pts) - _score_callable(reference)(pts)) ** 2).sum(1)
    return X, Y, err.reshape(X.shape)


def error_where_data_are(score_fn: Callable, reference, density, *, window: Sequence[float] = WINDOW,
                         resolution: int = 100, high: float = 1e-2, low: float = 1e-5) -> Dict[str, float]:
    """Mean squared score error over grid points where the density is high vs low.

    'high': points with p(x) > ``high`` * max p; 'low': points with p(x) < ``low`` * max p
    (inside ``window``). The ratio low/high measures how much worse the score is away from data.
    """
    X, Y, err = score_error_map(score_fn, reference, window=window, resolution=resolution)
    pts = torch.stack([X.reshape(-1), Y.reshape(-1)], 1)
    with torch.no_grad():
        p = density.log_prob(pts).exp()
    err = err.reshape(-1)
    return {"high": float(err[p > high * p.max()].mean()), "low": float(err[p < low * p.max()].mean())}


def plot_score_error(score_fn: Callable, reference, density=None, *, window: Sequence[float] = WINDOW,
                     resolution: int = 100, ax=None, title: Optional[str] = None, vmin: float = -3.0, vmax: float = 4.0):
    """Heat map of log10 |s - s_ref|^2 with the contours of ``density`` (default: ``reference``)."""
    if ax is None:
        fig, ax = plt.subplots(figsize=(4.4, 4.0))
    fig = ax.figure
    X, Y, err = score_error_map(score_fn, reference, window=window, resolution=resolution)
    image = ax.imshow(torch.log10(err + 1e-12).numpy(), origin="lower", extent=list(window), cmap="magma",
                      vmin=vmin, vmax=vmax, interpolation="nearest")
    density = density if density is not None else reference
    if hasattr(density, "log_prob"):
        with torch.no_grad():
            logp = density.log_prob(torch.stack([X.reshape(-1), Y.reshape(-1)], 1)).reshape(X.shape)
        levels = np.log(float(logp.exp().max())) + np.array([-9.0, -4.5, -1.0])
        ax.contour(X.numpy(), Y.numpy(), logp.numpy(), levels=levels, colors="white", linewidths=0.8,
                   linestyles="solid")
    fig.colorbar(image, ax=ax, fraction=0.046, label="log10 |s - s_ref|^2")
    ax.set_xlim(window[0], window[1])
    ax.set_ylim(window[2], window[3])
    ax.set_aspect("equal")
    if title:
        ax.set_title(title, fontsize=9)
    return fig


def exact_noise_conditional_score(mixture: GaussianMixture) -> Callable:
    """The exact s(x, sigma) = grad log q_sigma(x) of a mixture, for samplers that take (x, sigma).

    ``sigma`` is a float or a tensor of per-row levels that are all equal (as
    :func:`csm_edu.sampling.annealed_langevin` passes them). Noised mixtures are cached per level.
    """
    cache = {}

    def score(x, sigma):
        level = float(torch.as_tensor(sigma).flatten()[0])
        if level not in cache:
            cache[level] = noised_distribution(mixture, level)
        return cache[level].score(x)

    return score


def uniform_start(n: int, *, window: Sequence[float] = WINDOW, generator: Optional[torch.Generator] = None) -> torch.Tensor:
    """n starting points drawn uniformly from the box ``window`` (favours no mode)."""
    u = torch.rand(checks.positive_int(n, "n"), 2, generator=generator)
    lo = torch.tensor([window[0], window[2]])
    hi = torch.tensor([window[1], window[3]])
    return lo + u * (hi - lo)


def annealed_samples(model, *, n_levels: int, sigma_max: float, steps_per_level: int, sigma_min: float = 0.1,
                     n: int = 400, step_ratio: float = 0.1, seed: int = 0,
                     window: Sequence[float] = WINDOW) -> torch.Tensor:
    r"""Annealed Langevin from a uniform start with ``model(x, sigma)`` at geometric levels.

    The step at level sigma_i is alpha_i = step_ratio * sigma_i^2 (step_size = step_ratio *
    sigma_L^2 in :func:`csm_edu.sampling.annealed_langevin`), so every level moves by the same
    fraction of its own noise scale and no slider setting can make the sampler diverge.
    """
    sigmas = objectives.geometric_sigmas(sigma_max, min(sigma_min, sigma_max), n_levels)
    step_ratio = checks.positive(step_ratio, "step_ratio")
    x0 = uniform_start(n, window=window, generator=torch.Generator().manual_seed(seed))
    return sampling.annealed_langevin(model, x0, sigmas, steps_per_sigma=steps_per_level, step_size=step_ratio * float(sigmas[-1]) ** 2,
                                      generator=torch.Generator().manual_seed(seed + 1))


def plot_samples_and_weights(samples_by_name: Dict[str, torch.Tensor], mixture: GaussianMixture,
                             window: Sequence[float] = WINDOW):
    """One scatter per sampler over the mixture's contours, and a bar chart of recovered weights."""
    names = list(samples_by_name)
    fig, axes = plt.subplots(1, len(names) + 1, figsize=(3.6 * (len(names) + 1), 3.5))
    pts, X, Y, _ = grid_2d(window, 80)
    with torch.no_grad():
        logp = mixture.log_prob(pts).reshape(80, 80).numpy()
    for ax, name in zip(axes, names):
        x = samples_by_name[name].detach()
        ax.contour(X.numpy(), Y.numpy(), logp, levels=logp.max() + np.array([-6.0, -3.0, -1.0]), colors="gray",
                   linewidths=0.7, linestyles="solid")
        ax.scatter(x[:, 0].numpy(), x[:, 1].numpy(), s=3, alpha=0.5, color="tab:red", linewidths=0)
        ax.set_xlim(window[0], window[1])
        ax.set_ylim(window[2], window[3])
        ax.set_aspect("equal")
        ax.set_xticks([window[0], 0, window[1]])
        ax.set_yticks([window[2], 0, window[3]])
        ax.set_title(name, fontsize=9)
    ax = axes[-1]
    k = mixture.n_components
    width = 0.8 / (len(names) + 1)
    ax.bar(np.arange(k) - 0.4 + width / 2, mixture.weights.numpy(), width, color="black", label="true")
    for i, name in enumerate(names):
        ax.bar(np.arange(k) - 0.4 + width * (i + 1.5), mode_weights(samples_by_name[name], mixture).numpy(), width,
               label=name)
    ax.set_xticks(range(k), [f"mode {j + 1}" for j in range(k)])
    ax.set_ylim(0, 1.35)
    ax.set_yticks([0, 0.2, 0.4, 0.6, 0.8, 1.0])
    ax.set_ylabel("weight")
    ax.legend(fontsize=7)
    ax.set_title("recovered mixture weights", fontsize=9)
    fig.subplots_adjust(left=0.05, right=0.98, bottom=0.1, top=0.9, wspace=0.3)
    return fig


def annealed_view(model, mixture: GaussianMixture, n_levels: int, sigma_max: float, *, steps_per_level: int,
                  sigma_min: float = 0.1, n: int = 400, seed: int = 0):
    """Samples of annealed Langevin and their recovered weights; readout with the weight of mode 1."""
    start = time.perf_counter()
    x = annealed_samples(model, n_levels=n_levels, sigma_max=sigma_max, steps_per_level=steps_per_level,
                         sigma_min=sigma_min, n=n, seed=seed)
    seconds = time.perf_counter() - start
    sigmas = objectives.geometric_sigmas(sigma_max, min(sigma_min, sigma_max), n_levels).tolist()
    title = f"{n_levels} levels, sigma {sigmas[0]:.3g} -> {sigmas[-1]:.3g}, {steps_per_level} steps/level"
    fig = plot_samples_and_weights({title: x}, mixture)
    w = mode_weights(x, mixture)
    text = (f"recovered weight of mode 1: {float(w[0]):.3f} (true {float(mixture.weights[0]):.2f}); "
            f"levels {', '.join(f'{s:.3g}' for s in sigmas)}; {n_levels * steps_per_level} steps in {seconds:.2f} s")
    return fig, text


def annealed_panel(model, mixture: GaussianMixture, *, sigma_min: float = 0.1, sigma_max_range=(0.5, 20.0),
                   max_levels: int = 12, max_steps: int = 100, n: int = 300):
    """Sliders: number of levels, sigma_max (log scale), steps per level -> :func:`annealed_view`."""
    import ipywidgets as widgets
    lo, hi = (float(np.log10(v)) for v in sigma_max_range)
    controls = {
        "n_levels": widgets.IntSlider(value=10, min=1, max=max_levels, description="levels"),
        "sigma_max": widgets.FloatLogSlider(value=10.0, base=10, min=lo, max=hi, step=0.05, description="sigma_max",
                                            readout_format=".3g", continuous_update=False),
        "steps_per_level": widgets.IntSlider(value=50, min=5, max=max_steps, step=5, description="steps/level",
                                             continuous_update=False),
    }
    controls["n_levels"].continuous_update = False
    return interactive_panel(
        lambda n_levels, sigma_max, steps_per_level: annealed_view(
            model, mixture, n_levels=n_levels, sigma_max=sigma_max, steps_per_level=steps_per_level, sigma_min=sigma_min, n=n), controls)
