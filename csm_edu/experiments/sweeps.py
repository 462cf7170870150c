r"""Lesson 05 (denoising score matching): a sweep of DSM models over noise levels, and its panels.

:func:`train_sigma_sweep` trains one small :class:`~csm_edu.models.ScoreMLP` per noise level
with :func:`~csm_edu.objectives.denoising_score_matching` and precomputes everything a slider
needs (grids, Fisher divergences), so that :func:`csm_edu.widgets.lesson05.sigma_sweep_view` only draws. Three Fisher
divergences are measured per level sigma, with q_sigma = p * N(0, sigma^2 I) exact
(:func:`csm_edu.denoise.noised_distribution`):

- to the noised score, 1/2 E_{q_sigma}|s_theta - grad log q_sigma|^2: how well DSM hit its own
  optimum (estimation error, large at small sigma where the target -eps/sigma is very noisy);
- bias, 1/2 E_p|grad log q_sigma - grad log p|^2: what even a perfect DSM model gets wrong
  about the data (large at large sigma);
- to the true data score, 1/2 E_p|s_theta - grad log p|^2: the sum of both effects, smallest
  at a moderate sigma (the bias-variance trade-off).
"""
import math
from dataclasses import dataclass, field
from typing import List, Sequence
import numpy as np
import torch
from tqdm.auto import tqdm

from .. import checks, config, objectives, train
from ..denoise import noised_distribution
from ..distributions import GaussianMixture
from ..metrics import fisher_divergence, grid_2d
from ..models import ScoreMLP

WINDOW = (-4.0, 4.0, -4.0, 4.0)



def three_blobs() -> GaussianMixture:
    """The lesson's target: three correlated Gaussian blobs with weights 0.3, 0.3, 0.4."""
    means = [[-2.0, -1.5], [2.0, -1.5], [0.0, 2.0]]
    covs = [[[0.3, 0.15], [0.15, 0.2]], [[0.3, -0.15], [-0.15, 0.2]], [[0.5, 0.0], [0.0, 0.1]]]
    return GaussianMixture(means, covs, weights=[0.3, 0.3, 0.4])


def default_sigmas() -> List[float]:
    """Seven noise levels, each twice the last: 0.025, 0.05, 0.1, 0.2, 0.4, 0.8, 1.6."""
    return [0.025 * 2 ** k for k in range(7)]


@dataclass
class SigmaSweep:
    """DSM models trained at each noise level, with the measurements and grids the panels draw."""

    target: GaussianMixture
    sigmas: List[float]
    models: List[ScoreMLP]
    fisher_to_true: List[float]
    fisher_to_noised: List[float]
    bias: List[float]
    seconds: float
    window: Sequence[float] = WINDOW
    grids: List[dict] = field(default_factory=list)

    def nearest(self, sigma: float) -> int:
        """Index of the trained level closest to ``sigma`` on a log scale."""
        sigma = checks.positive(sigma, "sigma")
        return int(np.argmin([abs(math.log(sigma / s)) for s in self.sigmas]))


def train_sigma_sweep(target: GaussianMixture, sigmas: Sequence[float], *, n_data: int = 4000,
                      n_steps: int = 1000, hidden: int = 64, lr: float = 5e-3, batch_size: int = 256,
                      n_eval: int = 2000, grid_n: int = 80, quiver_n: int = 17, seed: int = 0,
                      progress: bool = True) -> SigmaSweep:
    """Train one ScoreMLP by DSM per level in ``sigmas`` on ``n_data`` samples of ``target``.

    Fisher divergences are Monte-Carlo estimates on ``n_eval`` fresh samples of p (and of
    q_sigma for the divergence to the noised score). Grids of ``grid_n``^2 points (heat maps) and
    ``quiver_n``^2 points (arrows) over :data:`WINDOW` are evaluated once here. ``progress``
    shows one bar over the levels (with the current sigma) and each level's training bar (with
    its current loss).
    """
    sigmas = sorted(checks.sigma_sequence(sigmas).tolist())
    n_eval = checks.positive_int(n_eval, "n_eval", minimum=2)
    gen = torch.Generator().manual_seed(seed)
    x_train = target.sample(checks.positive_int(n_data, "n_data"), generator=gen)
    x_eval = target.sample(n_eval, generator=gen)
    eps_eval = torch.randn(x_eval.shape, generator=gen)
    heat_pts, _, _, _ = grid_2d(WINDOW, grid_n)
    arrow_pts, ax_, ay_, _ = grid_2d(WINDOW, quiver_n)
    with torch.no_grad():
        p_grid = target.log_prob(heat_pts).exp()
        true_grid = target.score(heat_pts)
    models, f_true, f_noised, bias, grids = [], [], [], [], []
    seconds = 0.0
    levels = tqdm(total=len(sigmas), desc="DSM noise levels", disable=not progress, mininterval=0.5)
    for i, sigma in enumerate(sigmas):
        levels.set_postfix(sigma=f"{sigma:.3g}")
        with config.seeded(seed + i):
            model = ScoreMLP(target.dim, hidden, 2)
            history = train.fit(model, lambda m, x, s=sigma: objectives.denoising_score_matching(m, x, s),
                                x_train, steps=n_steps, batch_size=batch_size, lr=lr,
                                generator=torch.Generator().manual_seed(seed + i), device="cpu", progress=progress)
            seconds += history.seconds
            noised = noised_distribution(target, sigma)
            x_noised_eval = x_eval + sigma * eps_eval
            with torch.no_grad():
                f_true.append(fisher_divergence(model, target, x_eval))
                f_noised.append(fisher_divergence(model, noised, x_noised_eval))
                bias.append(fisher_divergence(noised.score, target, x_eval))
                learned_grid = model(heat_pts)
                grids.append({
                    "noised_density": noised.log_prob(heat_pts).exp().reshape(grid_n, grid_n).numpy(),
                    "integrand": (p_grid * 0.5 * ((learned_grid - true_grid) ** 2).sum(1)).reshape(grid_n, grid_n).numpy(),
                    "AX": ax_.numpy(), "AY": ay_.numpy(),
                    "arrows": model(arrow_pts).numpy(),
                })
            models.append(model)
        levels.update(1)
    levels.close()
    return SigmaSweep(target, sigmas, models, f_true, f_noised, bias, seconds, WINDOW, grids)
