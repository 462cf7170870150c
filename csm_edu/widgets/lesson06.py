r"""Lesson 06 (noise scales and annealed Langevin): score-error maps, mode weights, the sampler panel.

- :func:`score_error_map` / :func:`plot_score_error`: the per-point squared error
  |s(x) - s_ref(x)|^2 on a grid, as a log-scale heat map under the density's contours: a score
  learned from data is accurate only where data are.
- mixture weights a sampler recovered: :func:`csm_edu.metrics.mode_weights`.
- :func:`annealed_grid` / :func:`annealed_panel`: the same sampler at every setting of a grid
  (number of levels, sigma_max, steps per level), sampled once when the panel is built; the
  panel's sliders pick among the stored samples.
"""
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

    ``sigma`` is a float or a tensor of per-row levels (rows with different levels are scored
    level by level, as :func:`annealed_grid` needs). Noised mixtures are cached per level.
    """
    cache = {}

    def at(level):
        if level not in cache:
            cache[level] = noised_distribution(mixture, level)
        return cache[level]

    def score(x, sigma):
        sigma = torch.as_tensor(sigma).flatten()
        if sigma.numel() == 1 or bool((sigma == sigma[0]).all()):
            return at(float(sigma[0])).score(x)
        out = torch.empty_like(x)
        for level in torch.unique(sigma).tolist():
            rows = sigma == level
            out[rows] = at(float(level)).score(x[rows])
        return out

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


def annealed_grid(model, *, levels_options: Sequence[int], sigma_max_options: Sequence[float],
                  steps_options: Sequence[int], sigma_min: float = 0.1, n: int = 300, step_ratio: float = 0.1,
                  seed: int = 0, window: Sequence[float] = WINDOW, progress: bool = True) -> Dict[tuple, torch.Tensor]:
    r"""Annealed Langevin samples for every (n_levels, sigma_max, steps_per_level) of a grid of settings.

    The same sampler as :func:`annealed_samples` (levels sigma_max > ... > sigma_min, step
    alpha_i = step_ratio * sigma_i^2, the same uniform start for every setting), with all values
    of sigma_max run side by side as one batch of rows, each row with its own level: one network
    call per step serves every sigma_max. ``model(x, sigma)`` must accept one level per row.
    Returns {(n_levels, sigma_max, steps_per_level): samples (n, 2)}. ``progress`` shows a tqdm bar.
    """
    from tqdm.auto import tqdm

    step_ratio = checks.positive(step_ratio, "step_ratio")
    n = checks.positive_int(n, "n")
    s_options = [float(v) for v in sigma_max_options]
    x0 = uniform_start(n, window=window, generator=torch.Generator().manual_seed(seed))
    # one row of levels per sigma_max: shape (S, L) for each L
    combos = [(L, T) for L in levels_options for T in steps_options]
    total = sum(L * T for L, T in combos)
    bar = tqdm(total=total, desc="annealed Langevin at every slider setting", unit="step", disable=not progress,
               mininterval=0.5)
    out = {}
    with torch.no_grad():
        for L, T in combos:
            sig = torch.stack([objectives.geometric_sigmas(s, min(sigma_min, s), L) for s in s_options])
            x = x0.repeat(len(s_options), 1)
            generator = torch.Generator().manual_seed(seed + 1)
            for i in range(L):
                sigma_row = sig[:, i].repeat_interleave(n)
                alpha = (step_ratio * sigma_row ** 2).unsqueeze(1)
                for _ in range(T):
                    z = torch.randn(x.shape, generator=generator, dtype=x.dtype)
                    x = x + 0.5 * alpha * model(x, sigma_row) + alpha.sqrt() * z
                bar.update(T)
            if not torch.isfinite(x).all():
                raise ValueError(f"annealed Langevin diverged at {L} levels, {T} steps/level; lower step_ratio")
            for j, s in enumerate(s_options):
                out[(int(L), s, int(T))] = x[j * n:(j + 1) * n].clone()
    bar.close()
    return out


class _FastSamplesView:
    """Draws precomputed samples over a precomputed density image, with the recovered weights.

    Built once: the density image and the weights of every setting; a redraw is one image, one
    scatter and four bars on a figure with fixed margins (no contouring, no layout pass, few tick
    labels: text layout is most of what a redraw costs).
    """

    def __init__(self, samples: Dict[tuple, torch.Tensor], mixture: GaussianMixture, *, sigma_min: float,
                 window: Sequence[float] = WINDOW, resolution: int = 200):
        self.samples, self.mixture, self.sigma_min, self.window = samples, mixture, sigma_min, window
        pts, _, _, _ = grid_2d(window, resolution)
        with torch.no_grad():
            logp = mixture.log_prob(pts).reshape(resolution, resolution)
        # log density, floored 9 nats under the peak: the modes and their tails are visible
        self.image = torch.clamp(logp - logp.max(), min=-9.0).numpy()
        self.weights = {key: mode_weights(x, mixture).numpy() for key, x in samples.items()}
        self.true = mixture.weights.numpy()

    def __call__(self, n_levels: int, sigma_max: float, steps_per_level: int):
        key = (int(n_levels), float(sigma_max), int(steps_per_level))
        x = self.samples[key].numpy()
        w = self.weights[key]
        sigmas = objectives.geometric_sigmas(sigma_max, min(self.sigma_min, sigma_max), n_levels).tolist()
        fig = plt.figure(figsize=(7.2, 3.5))
        ax = fig.add_axes([0.06, 0.11, 0.42, 0.78])
        ax.imshow(self.image, origin="lower", extent=list(self.window), cmap="Greys", vmin=-12.0, vmax=6.0,
                  interpolation="nearest", aspect="equal")
        ax.scatter(x[:, 0], x[:, 1], s=4, alpha=0.7, color="tab:red", linewidths=0)
        w_ = self.window
        ax.set_xlim(w_[0], w_[1])
        ax.set_ylim(w_[2], w_[3])
        ax.set_xticks([])       # tick labels are most of a redraw's cost; the frame is the window
        ax.set_yticks([])
        ax.set_title(f"{n_levels} level{'s' if n_levels > 1 else ''}, sigma {sigmas[0]:.3g} -> {sigmas[-1]:.3g}, {steps_per_level} steps/level",
                     fontsize=9)
        bars = fig.add_axes([0.58, 0.11, 0.40, 0.78])
        k = len(self.true)
        bars.bar(np.arange(k) - 0.2, self.true, 0.4, color="black")
        bars.bar(np.arange(k) + 0.2, w, 0.4, color="tab:red")
        bars.set_xticks(range(k), [f"mode {j + 1}" for j in range(k)])
        bars.set_ylim(0, 1.2)
        bars.set_yticks([0, 0.5, 1.0])
        bars.set_ylabel("weight: true (black), sampled (red)")   # one label instead of a legend
        bars.set_title("recovered mixture weights", fontsize=9)
        text = (f"recovered weight of mode 1: {float(w[0]):.3f} (true {float(self.true[0]):.2f}); "
                f"levels {', '.join(f'{s:.3g}' for s in sigmas)}; {n_levels * steps_per_level} steps per chain")
        return fig, text


LEVELS_OPTIONS = (1, 2, 3, 4, 6, 8, 10, 12)
SIGMA_MAX_OPTIONS = (0.5, 1.0, 2.0, 3.0, 5.0, 10.0, 20.0)
STEPS_OPTIONS = (5, 10, 20, 50, 100)


def annealed_panel(model, mixture: GaussianMixture, *, sigma_min: float = 0.1,
                   levels_options: Sequence[int] = LEVELS_OPTIONS, sigma_max_options: Sequence[float] = SIGMA_MAX_OPTIONS,
                   steps_options: Sequence[int] = STEPS_OPTIONS, max_levels: int = 12, max_steps: int = 100,
                   n: int = 300, progress: bool = True):
    """Selection sliders: number of levels, sigma_max, steps per level, over a grid of settings.

    Every combination is sampled once when the panel is built (:func:`annealed_grid`, with a
    progress bar; all sigma_max values share one batch), so a slider move only draws the stored
    samples and their recovered weights. ``max_levels`` / ``max_steps`` cap the option lists.
    """
    import ipywidgets as widgets
    levels = [int(v) for v in levels_options if v <= max_levels] or [1]
    steps = [int(v) for v in steps_options if v <= max_steps] or [int(min(steps_options))]
    sigmas = [float(v) for v in sigma_max_options]
    samples = annealed_grid(model, levels_options=levels, sigma_max_options=sigmas, steps_options=steps,
                            sigma_min=sigma_min, n=n, progress=progress)
    drawer = _FastSamplesView(samples, mixture, sigma_min=sigma_min)

    def view(n_levels, sigma_max, steps_per_level):
        return drawer(n_levels, sigma_max, steps_per_level)

    def pick(options, wanted):
        return min(options, key=lambda v: abs(v - wanted))

    controls = {
        "n_levels": widgets.SelectionSlider(options=levels, value=pick(levels, 10), description="levels",
                                            continuous_update=False),
        "sigma_max": widgets.SelectionSlider(options=sigmas, value=pick(sigmas, 10.0),
                                             description="sigma_max", continuous_update=False),
        "steps_per_level": widgets.SelectionSlider(options=steps, value=pick(steps, 50), description="steps/level",
                                                   continuous_update=False),
    }
    return interactive_panel(view, controls)
