"""Measured quality: Fisher divergence, grid-normalised 2-D densities, MMD, AUROC.

Every trained model in a lesson ends with an ``assert`` on one of these numbers.
"""
import math
from typing import Callable, Optional, Sequence, Tuple

import torch

from . import checks

DEFAULT_WINDOW = (-4.5, 4.5, -4.5, 4.5)


def fisher_divergence(score_fn: Callable, true_score, x: torch.Tensor, *, chunk_size: int = 4096) -> float:
    r"""Monte-Carlo Fisher divergence 1/2 E_x |s(x) - grad log p(x)|^2 over the points ``x``.

    ``true_score`` is a callable or an object with ``.score`` (e.g. a csm_edu distribution).
    ``x`` should be samples of p (the divergence is an expectation under p). The factor 1/2 matches
    the score-matching convention in :mod:`csm_edu.objectives`.
    """
    x = checks.as_batch(x, "x")
    true_fn = true_score.score if hasattr(true_score, "score") else true_score
    total = 0.0
    for chunk in torch.split(x, checks.positive_int(chunk_size, "chunk_size")):
        s = score_fn(chunk).detach()
        s_true = true_fn(chunk).detach().to(s)
        total += float(0.5 * ((s - s_true) ** 2).sum())
    return total / x.shape[0]


def grid_2d(window: Sequence[float] = DEFAULT_WINDOW, resolution: int = 200):
    """A regular r x r grid (r = ``resolution``) over the ``window`` (xmin, xmax, ymin, ymax).

    Returns (points (r*r, 2), X, Y, cell area).
    """
    n = checks.positive_int(resolution, "resolution", minimum=2)
    window = checks.window(window)
    xs = torch.linspace(window[0], window[1], n)
    ys = torch.linspace(window[2], window[3], n)
    X, Y = torch.meshgrid(xs, ys, indexing="xy")
    pts = torch.stack([X.reshape(-1), Y.reshape(-1)], 1)
    area = float((xs[1] - xs[0]) * (ys[1] - ys[0]))
    return pts, X, Y, area


def _eval(fn, pts, chunk_size=16384):
    with torch.no_grad():
        return torch.cat([fn(chunk).detach().flatten() for chunk in torch.split(pts, chunk_size)])


def grid_log_density(log_prob_unnormalised: Callable, *, window: Sequence[float] = DEFAULT_WINDOW,
                     resolution: int = 200):
    r"""Normalise an unnormalised 2-D log density on a grid.

    log Z is approximated by the Riemann sum log sum_ij exp(f(x_ij)) dA over the box (mass
    outside the box is ignored, so choose a window that holds the density). Returns
    ``(X, Y, log_density, log_Z)`` with log_density of shape (r, r) matching X and Y.
    """
    pts, X, Y, area = grid_2d(window, resolution)
    f = _eval(log_prob_unnormalised, pts)
    if not torch.isfinite(f).all():
        raise ValueError("log_prob_unnormalised returned NaN/inf on the grid; check the model or narrow the window")
    log_z = float(torch.logsumexp(f, 0) + math.log(area))
    return X, Y, (f - log_z).reshape(X.shape), log_z


def grid_log_likelihood(log_prob_unnormalised: Callable, x: torch.Tensor, *,
                        window: Sequence[float] = DEFAULT_WINDOW, resolution: int = 400) -> float:
    """Average test log-likelihood of 2-D points ``x`` under f(x) - log Z, log Z from the grid.

    The model is evaluated exactly at the test points; only the normaliser comes from the grid.
    """
    x = checks.as_batch(x, "x", dim=2)
    _, _, _, log_z = grid_log_density(log_prob_unnormalised, window=window, resolution=resolution)
    return float(_eval(log_prob_unnormalised, x).mean() - log_z)


def median_bandwidth(x: torch.Tensor, y: torch.Tensor, max_points: int = 2000) -> float:
    """The median heuristic: the median pairwise Euclidean distance in the pooled sample.

    At most ``max_points`` points are used, taken evenly from both samples (the first
    ``max_points // 2`` rows of each, more of one when the other is smaller), so the bandwidth
    always sees both. Raises when every pairwise distance is zero (identical points: no scale).
    """
    max_points = checks.positive_int(max_points, "max_points", minimum=2)
    take_x = min(len(x), max(max_points // 2, max_points - len(y)))
    z = torch.cat([x[:take_x], y[:max_points - take_x]])
    d = torch.cdist(z, z)
    h = float(d[torch.triu(torch.ones_like(d, dtype=torch.bool), diagonal=1)].median())
    if not h > 0:
        raise ValueError("the median pairwise distance of x and y is 0 (most points coincide), so the median "
                         "heuristic gives no bandwidth; pass bandwidth= explicitly")
    return h


def mmd(x: torch.Tensor, y: torch.Tensor, bandwidth: Optional[float] = None) -> float:
    r"""Unbiased squared maximum mean discrepancy with a Gaussian kernel.

    .. math:: \mathrm{MMD}^2 = \mathbb E k(x,x') + \mathbb E k(y,y') - 2\,\mathbb E k(x,y),
              \qquad k(a,b) = \exp\bigl(-\|a-b\|^2 / (2h^2)\bigr),

    with diagonal terms left out of the within-sample means. ``bandwidth`` h defaults to the
    median heuristic on the pooled sample (:func:`median_bandwidth`). Near 0 (it can be slightly
    negative) when x and y come from the same distribution.
    """
    x = checks.as_batch(x, "x")
    y = checks.as_batch(y, "y", dim=x.shape[1])
    if len(x) < 2 or len(y) < 2:
        raise ValueError("x and y need at least 2 rows each for the unbiased MMD")
    h = median_bandwidth(x, y) if bandwidth is None else checks.positive(bandwidth, "bandwidth")

    def k(a, b):
        return torch.exp(-torch.cdist(a, b) ** 2 / (2 * h ** 2))

    m, n = len(x), len(y)
    kxx = (k(x, x).sum() - m) / (m * (m - 1))
    kyy = (k(y, y).sum() - n) / (n * (n - 1))
    kxy = k(x, y).mean()
    return float(kxx + kyy - 2 * kxy)


def auroc(scores_positive, scores_negative) -> float:
    """Area under the ROC curve: P(score of a positive > score of a negative), ties counting 1/2.

    Computed exactly by the Mann-Whitney U statistic with average ranks.
    """
    pos = torch.as_tensor(scores_positive, dtype=torch.float64).flatten()
    neg = torch.as_tensor(scores_negative, dtype=torch.float64).flatten()
    if pos.numel() == 0 or neg.numel() == 0:
        raise ValueError("auroc needs at least one positive and one negative score")
    if not (torch.isfinite(pos).all() and torch.isfinite(neg).all()):
        raise ValueError("auroc scores contain NaN or inf; drop or clip those entries first")
    allv = torch.cat([pos, neg])
    order = torch.argsort(allv)
    ranks = torch.empty_like(allv)
    _, inverse, counts = torch.unique(allv[order], return_inverse=True, return_counts=True)
    last_rank = torch.cumsum(counts, 0).to(torch.float64)
    ranks[order] = (last_rank - (counts - 1) / 2)[inverse]   # tied values share their average rank
    u = ranks[: len(pos)].sum() - len(pos) * (len(pos) + 1) / 2
    return float(u / (len(pos) * len(neg)))


def summarise(values: Sequence[float]) -> Tuple[float, float]:
    """Mean and standard error of a list of numbers (the standard error of one number is NaN: unknown)."""
    v = torch.as_tensor(list(values), dtype=torch.float64)
    if v.numel() == 0:
        raise ValueError("values is empty: the mean and standard error need at least one number")
    if not torch.isfinite(v).all():
        raise ValueError(f"values contain NaN or inf: {v.tolist()}; drop the failed runs first")
    if v.numel() < 2:
        return float(v.mean()), float("nan")
    return float(v.mean()), float(v.std() / math.sqrt(v.numel()))


def mode_weights(samples: torch.Tensor, mixture) -> torch.Tensor:
    r"""Fraction of ``samples`` claimed by each component of a Gaussian mixture: shape (K,).

    A sample belongs to the component of largest responsibility r_k(x) = w_k N(x; mu_k, Sigma_k) / p(x).
    For well-separated modes this is the empirical weight of each mode, to compare with w_k
    (lessons 02 and 06: Langevin keeps its start's proportions, annealed Langevin recovers w_k).
    """
    from .distributions import GaussianMixture
    if not isinstance(mixture, GaussianMixture):
        raise ValueError("mixture must be a csm_edu.distributions.GaussianMixture (e.g. distributions.two_modes())")
    samples = checks.as_batch(samples, "samples", dim=mixture.dim)
    labels = mixture.responsibilities(samples).argmax(1)
    return torch.bincount(labels, minlength=mixture.n_components).float() / samples.shape[0]
