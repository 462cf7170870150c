"""Analytic targets with exact ``log_prob(x)``, ``score(x)`` and ``sample(n)``.

Every target is batched: ``x`` has shape ``(n, D)``, ``log_prob`` returns ``(n,)`` and ``score``
returns ``(n, D)``. The score is the gradient of the log density,
``score(x) = grad_x log p(x)``, written in closed form (a unit test checks it against autograd).
"""
import math
from typing import Optional, Sequence

import torch

from . import checks

LOG_2PI = math.log(2 * math.pi)


class Distribution:
    """Base class: subclasses define ``dim``, ``log_prob``, ``score`` and ``sample``."""

    dim: int

    def log_prob(self, x: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def score(self, x: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def sample(self, n: int, generator: Optional[torch.Generator] = None) -> torch.Tensor:
        raise NotImplementedError

    def energy(self, x: torch.Tensor) -> torch.Tensor:
        """E(x) = -log p(x): the energy whose normaliser is exactly 1."""
        return -self.log_prob(x)

    def _check(self, x) -> torch.Tensor:
        return checks.as_batch(x, "x", dim=self.dim)


def _as_cov(cov, dim: int, name: str) -> torch.Tensor:
    cov = torch.as_tensor(cov, dtype=torch.float64)
    if cov.dim() == 0:
        cov = cov * torch.eye(dim, dtype=torch.float64)
    elif cov.dim() == 1:
        cov = torch.diag(cov)
    if cov.shape != (dim, dim):
        raise ValueError(f"{name} must be a scalar, a length-{dim} vector or a {dim}x{dim} matrix, "
                         f"got shape {tuple(cov.shape)}")
    if not torch.allclose(cov, cov.T, atol=1e-8):
        raise ValueError(f"{name} must be symmetric")
    try:
        torch.linalg.cholesky(cov)
    except RuntimeError as err:
        raise ValueError(f"{name} must be positive definite (all eigenvalues > 0)") from err
    return cov


class Gaussian(Distribution):
    r"""Multivariate normal N(mean, cov) with full covariance.

    .. math:: \log p(x) = -\tfrac12 (x-\mu)^\top \Sigma^{-1} (x-\mu) - \tfrac12\log|2\pi\Sigma|,
              \qquad \nabla_x \log p(x) = -\Sigma^{-1}(x-\mu).

    Its energy 1/2 (x-mu)^T A (x-mu) with precision A = Sigma^{-1} is the closed-form test case of
    score matching.
    """

    def __init__(self, mean: Sequence[float], cov=1.0):
        mean = torch.as_tensor(mean, dtype=torch.float64).flatten()
        self.dim = mean.numel()
        cov = _as_cov(cov, self.dim, "cov")
        self.mean = mean.float()
        self.cov = cov.float()
        self.precision = torch.linalg.inv(cov).float()
        self.chol = torch.linalg.cholesky(cov).float()
        self.log_det = float(2 * torch.log(torch.diagonal(torch.linalg.cholesky(cov))).sum())

    def log_prob(self, x):
        x = self._check(x)
        d = x - self.mean.to(x)
        maha = ((d @ self.precision.to(x)) * d).sum(1)
        return -0.5 * (maha + self.dim * LOG_2PI + self.log_det)

    def score(self, x):
        x = self._check(x)
        return -(x - self.mean.to(x)) @ self.precision.to(x)

    def sample(self, n, generator=None):
        n = checks.positive_int(n, "n")
        z = torch.randn(n, self.dim, generator=generator)
        return self.mean + z @ self.chol.T

    def __repr__(self):
        return f"Gaussian(dim={self.dim})"


class GaussianMixture(Distribution):
    r"""Mixture of K Gaussians with weights w_k, means mu_k and full covariances Sigma_k.

    .. math:: p(x) = \sum_k w_k\,N(x;\mu_k,\Sigma_k), \qquad
              \nabla_x \log p(x) = \sum_k r_k(x)\,\bigl(-\Sigma_k^{-1}(x-\mu_k)\bigr),

    where r_k(x) = w_k N(x; mu_k, Sigma_k) / p(x) are the responsibilities.
    ``weights`` need not sum to one: they are normalised (``self.weights`` sums to one); by
    default all components weigh 1/K. ``covs`` may be one scalar (shared isotropic), a list of scalars, or (K, D, D) matrices.
    """

    def __init__(self, means, covs=1.0, weights=None):
        means = torch.as_tensor(means, dtype=torch.float64)
        if means.dim() != 2:
            raise ValueError(f"means must have shape (K, D), got {tuple(means.shape)}")
        if not torch.isfinite(means).all():
            raise ValueError("means contain NaN or inf; give finite component means")
        k, self.dim = means.shape
        covs_t = torch.as_tensor(covs, dtype=torch.float64)
        if covs_t.dim() == 0 or (covs_t.dim() == 1 and covs_t.numel() == k and k != self.dim):
            covs_list = [covs_t if covs_t.dim() == 0 else covs_t[i] for i in range(k)]
        elif covs_t.dim() == 1 and covs_t.numel() == k:
            covs_list = [covs_t[i] for i in range(k)]
        elif covs_t.dim() == 3:
            covs_list = list(covs_t)
        else:
            raise ValueError(f"covs must be a scalar, K scalars or a (K, D, D) array, got shape {tuple(covs_t.shape)}")
        if len(covs_list) != k:
            raise ValueError(f"covs gives {len(covs_list)} covariances for {k} means")
        if weights is None:
            weights = torch.full((k,), 1.0 / k, dtype=torch.float64)
        weights = torch.as_tensor(weights, dtype=torch.float64).flatten()
        if weights.numel() != k or not torch.isfinite(weights).all() or (weights < 0).any() or weights.sum() <= 0:
            raise ValueError(f"weights must be {k} finite non-negative numbers with a positive sum, got {weights.tolist()}")
        self.weights = (weights / weights.sum()).float()
        self.components = [Gaussian(m, _as_cov(c, self.dim, "covs")) for m, c in zip(means, covs_list)]
        self.means = means.float()
        self.precisions = torch.stack([c.precision for c in self.components])
        self.chols = torch.stack([c.chol for c in self.components])
        self.log_dets = torch.tensor([c.log_det for c in self.components])

    @property
    def n_components(self) -> int:
        return len(self.components)

    def component_log_probs(self, x):
        """log(w_k N(x; mu_k, Sigma_k)) for every component: shape (n, K)."""
        x = self._check(x)
        d = x[:, None, :] - self.means.to(x)[None]                      # (n, K, D)
        pd = torch.einsum("nkd,kde->nke", d, self.precisions.to(x))     # Sigma_k^{-1} (x - mu_k)
        maha = (pd * d).sum(-1)
        log_norm = -0.5 * (self.dim * LOG_2PI + self.log_dets.to(x))
        return torch.log(self.weights.to(x)) + log_norm - 0.5 * maha

    def log_prob(self, x):
        return torch.logsumexp(self.component_log_probs(x), dim=1)

    def responsibilities(self, x):
        """Posterior probability of each component given x: shape (n, K)."""
        return torch.softmax(self.component_log_probs(x), dim=1)

    def score(self, x):
        x = self._check(x)
        d = x[:, None, :] - self.means.to(x)[None]
        comp_scores = -torch.einsum("nkd,kde->nke", d, self.precisions.to(x))
        return (self.responsibilities(x)[..., None] * comp_scores).sum(1)

    def sample(self, n, generator=None, return_labels: bool = False):
        n = checks.positive_int(n, "n")
        labels = torch.multinomial(self.weights, n, replacement=True, generator=generator)
        z = torch.randn(n, self.dim, generator=generator)
        x = self.means[labels] + torch.einsum("nij,nj->ni", self.chols[labels], z)
        return (x, labels) if return_labels else x

    def __repr__(self):
        return f"GaussianMixture(K={self.n_components}, dim={self.dim})"


def ring_of_gaussians(n_modes: int = 8, radius: float = 4.0, std: float = 0.5, weights=None) -> GaussianMixture:
    """K equal isotropic Gaussians on a circle of the given radius (the classic 2-D test target)."""
    n_modes = checks.positive_int(n_modes, "n_modes")
    std = checks.positive(std, "std")
    angles = torch.arange(n_modes, dtype=torch.float64) * 2 * math.pi / n_modes
    means = radius * torch.stack([torch.cos(angles), torch.sin(angles)], 1)
    return GaussianMixture(means, std ** 2, weights)


def grid_of_gaussians(n_per_side: int = 3, spacing: float = 3.0, std: float = 0.4) -> GaussianMixture:
    """n x n equal isotropic Gaussians on a square grid centred at 0."""
    n_per_side = checks.positive_int(n_per_side, "n_per_side")
    std = checks.positive(std, "std")
    c = (torch.arange(n_per_side, dtype=torch.float64) - (n_per_side - 1) / 2) * spacing
    means = torch.cartesian_prod(c, c)
    return GaussianMixture(means, std ** 2)


def two_modes(weights=(0.8, 0.2), separation: float = 8.0, std: float = 1.0) -> GaussianMixture:
    """Two well-separated 2-D Gaussians with unequal weights (plain Langevin gets the weights wrong)."""
    std = checks.positive(std, "std")
    means = [[-separation / 2, -separation / 2], [separation / 2, separation / 2]]
    return GaussianMixture(means, std ** 2, weights)


class Banana(Distribution):
    r"""A twisted Gaussian ('banana') in 2-D.

    x_1 ~ N(0, s^2) and x_2 | x_1 ~ N(b (x_1^2 - s^2), 1). The map is volume preserving, so

    .. math:: \log p(x) = \log N(x_1; 0, s^2) + \log N(x_2 - b(x_1^2 - s^2); 0, 1).
    """

    dim = 2

    def __init__(self, s: float = 2.0, b: float = 0.25):
        self.s = checks.positive(s, "s")
        self.b = float(b)

    def _shift(self, x1):
        return self.b * (x1 ** 2 - self.s ** 2)

    def log_prob(self, x):
        x = self._check(x)
        x1, x2 = x[:, 0], x[:, 1]
        u = x2 - self._shift(x1)
        return -0.5 * (x1 / self.s) ** 2 - math.log(self.s) - 0.5 * u ** 2 - LOG_2PI

    def score(self, x):
        x = self._check(x)
        x1, x2 = x[:, 0], x[:, 1]
        u = x2 - self._shift(x1)
        return torch.stack([-x1 / self.s ** 2 + u * 2 * self.b * x1, -u], 1)

    def sample(self, n, generator=None):
        n = checks.positive_int(n, "n")
        z = torch.randn(n, 2, generator=generator)
        x1 = self.s * z[:, 0]
        return torch.stack([x1, z[:, 1] + self._shift(x1)], 1)

    def __repr__(self):
        return f"Banana(s={self.s}, b={self.b})"


class Ring(Distribution):
    r"""A 2-D ring: radius r ~ Gaussian around R, angle uniform, with an exact normaliser.

    .. math:: p(x) = \frac{1}{Z}\exp\!\Bigl(-\frac{(|x| - R)^2}{2 w^2}\Bigr), \quad
              Z = 2\pi\Bigl[w^2 e^{-R^2/2w^2} + R\,w\sqrt{2\pi}\,\Phi(R/w)\Bigr].
    """

    dim = 2

    def __init__(self, radius: float = 3.0, width: float = 0.3):
        self.radius = checks.positive(radius, "radius")
        self.width = checks.positive(width, "width")
        r, w = self.radius, self.width
        phi = 0.5 * (1 + math.erf(r / (w * math.sqrt(2))))
        self.log_z = math.log(2 * math.pi * (w ** 2 * math.exp(-r ** 2 / (2 * w ** 2)) + r * w * math.sqrt(2 * math.pi) * phi))

    def log_prob(self, x):
        x = self._check(x)
        rad = x.norm(dim=1)
        return -0.5 * ((rad - self.radius) / self.width) ** 2 - self.log_z

    def score(self, x):
        x = self._check(x)
        rad = x.norm(dim=1, keepdim=True).clamp_min(1e-12)
        return -(rad - self.radius) / self.width ** 2 * x / rad

    def sample(self, n, generator=None):
        """Exact sampling of the radius by rejection from N(R, w^2) truncated to r >= 0, weighted by r."""
        n = checks.positive_int(n, "n")
        out = []
        total = 0
        bound = self.radius + 6 * self.width
        while total < n:
            r = self.radius + self.width * torch.randn(2 * n, generator=generator)
            u = torch.rand(2 * n, generator=generator)
            keep = (r > 0) & (u * bound < r)
            out.append(r[keep])
            total += int(keep.sum())
        r = torch.cat(out)[:n]
        theta = 2 * math.pi * torch.rand(n, generator=generator)
        return torch.stack([r * torch.cos(theta), r * torch.sin(theta)], 1)

    def __repr__(self):
        return f"Ring(radius={self.radius}, width={self.width})"


def correlated_gaussian(dim: int = 2, rho: float = 0.8, scale: float = 1.0) -> Gaussian:
    """N(0, Sigma) with unit variances times scale^2 and all correlations rho."""
    dim = checks.positive_int(dim, "dim")
    if not -1 / max(dim - 1, 1) < rho < 1:
        raise ValueError(f"rho must lie in (-1/(dim-1), 1) for a valid covariance, got {rho}")
    cov = (1 - rho) * torch.eye(dim, dtype=torch.float64) + rho * torch.ones(dim, dim, dtype=torch.float64)
    return Gaussian(torch.zeros(dim), scale ** 2 * cov)
