r"""Maximum-likelihood baselines on the MADE backbone: autoregressive densities with exact conditionals.

By the chain rule log p(x) = sum_d log p(x_d | x_<d); a :class:`~csm_edu.models.made.ResMADE` emits,
for every d, the parameters of a 1-D density of x_d that depend on x_<d only. Log-likelihood,
conditional scores and ancestral sampling are exact. :class:`GaussianMADE` has Gaussian
conditionals (unimodal), :class:`MixtureMADE` mixtures of K Gaussians.
"""
from typing import Optional, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from .. import checks
from .. import distributions as dist
from .made import ResMADE


class _MADEDensity(nn.Module):
    """Shared part of the MLE baselines: a ResMADE emits per-dimension parameters of a 1-D density."""

    n_params: int

    def __init__(self, dim, hidden, n_blocks, order, *, cond_dim, min_log_std=-5.0):
        super().__init__()
        self.dim = checks.positive_int(dim, "dim")
        self.cond_dim = checks.positive_int(cond_dim, "cond_dim", minimum=0)
        self.min_log_std = float(min_log_std)
        self.backbone = ResMADE(dim, self.n_params, hidden=hidden, n_blocks=n_blocks, order=order, cond_dim=cond_dim)
        self.order = self.backbone.order

    def _log_std(self, raw):
        # smooth lower bound: log std >= min_log_std, so a component cannot collapse onto a point
        return self.min_log_std + F.softplus(raw - self.min_log_std)

    def _params(self, x, y):
        return self.backbone(x, y)

    def conditional_log_probs(self, x, y=None) -> torch.Tensor:
        """log p(x_d | x_<d) for every d: shape (n, D)."""
        x = checks.as_batch(x, "x", dim=self.dim)
        return self._log_prob_1d(self._params(x, y), x)

    def log_prob(self, x: torch.Tensor, y: Optional[torch.Tensor] = None) -> torch.Tensor:
        """Exact log p(x) = sum_d log p(x_d | x_<d): shape (n,)."""
        return self.conditional_log_probs(x, y).sum(1)

    def conditional_scores(self, x: torch.Tensor, y: Optional[torch.Tensor] = None) -> torch.Tensor:
        """Analytic d/dx_d log p(x_d | x_<d): shape (n, D) (comparable with ARCSM's)."""
        x = checks.as_batch(x, "x", dim=self.dim)
        return self._score_1d(self._params(x, y), x)

    def loss(self, x: torch.Tensor, y: Optional[torch.Tensor] = None) -> torch.Tensor:
        """Mean negative log-likelihood of the batch: the maximum-likelihood training objective."""
        return -self.log_prob(x, y).mean()

    @torch.no_grad()
    def sample(self, n: int, *, generator: Optional[torch.Generator] = None,
               y: Optional[torch.Tensor] = None) -> torch.Tensor:
        """Ancestral sampling in ``order``: D passes of the network, shape (n, D)."""
        n = checks.positive_int(n, "n")
        device = next(self.parameters()).device
        x = torch.zeros(n, self.dim, device=device)
        for d in self.order.tolist():
            params = self._params(x, y)[:, d]
            x[:, d] = self._sample_1d(params, generator).to(device)
        return x

    def forward(self, x, y=None):
        return self.log_prob(x, y)


_HALF_LOG_2PI = 0.5 * dist.LOG_2PI


class GaussianMADE(_MADEDensity):
    r"""MLE baseline: p(x_d | x_<d) = N(mu_d(x_<d), sigma_d(x_<d)^2) (a MADE with Gaussian conditionals).

    Exact log-likelihood and sampling, but each conditional is unimodal: it cannot fit a
    conditional with two separated modes.
    """

    n_params = 2

    def __init__(self, dim: int, *, hidden: int = 64, n_blocks: int = 2, order: Optional[Sequence[int]] = None,
                 cond_dim: int = 0):
        super().__init__(dim, hidden, n_blocks, order, cond_dim=cond_dim)

    def _split(self, p):
        return p[..., 0], self._log_std(p[..., 1])

    def _log_prob_1d(self, p, x):
        mean, log_std = self._split(p)
        return -0.5 * ((x - mean) / log_std.exp()) ** 2 - log_std - _HALF_LOG_2PI

    def _score_1d(self, p, x):
        mean, log_std = self._split(p)
        return -(x - mean) * torch.exp(-2 * log_std)

    def _sample_1d(self, p, generator):
        mean, log_std = self._split(p)
        z = torch.randn(mean.shape, generator=generator).to(mean)
        return mean + log_std.exp() * z


class MixtureMADE(_MADEDensity):
    r"""MLE baseline: p(x_d | x_<d) = sum_k pi_k N(mu_k, sigma_k^2), all functions of x_<d (K components).

    The conditional score is the responsibility-weighted average of component scores,
    d/dx_d log p = sum_k r_k (-(x_d - mu_k) / sigma_k^2).
    """

    def __init__(self, dim: int, *, n_components: int = 8, hidden: int = 64, n_blocks: int = 2,
                 order: Optional[Sequence[int]] = None, cond_dim: int = 0):
        self.n_components = checks.positive_int(n_components, "n_components")
        self.n_params = 3 * self.n_components
        super().__init__(dim, hidden, n_blocks, order, cond_dim=cond_dim)
        with torch.no_grad():  # spread the initial means over [-2, 2] to break the symmetry
            bias = self.backbone.output_layer.bias.view(self.dim, 3, self.n_components)
            bias[:, 1] = torch.linspace(-2.0, 2.0, self.n_components)

    def _split(self, p):
        k = self.n_components
        return torch.log_softmax(p[..., :k], -1), p[..., k:2 * k], self._log_std(p[..., 2 * k:])

    def _component_log_probs(self, p, x):
        log_w, mean, log_std = self._split(p)
        z = (x.unsqueeze(-1) - mean) / log_std.exp()
        return log_w - 0.5 * z ** 2 - log_std - _HALF_LOG_2PI, mean, log_std

    def _log_prob_1d(self, p, x):
        return torch.logsumexp(self._component_log_probs(p, x)[0], -1)

    def _score_1d(self, p, x):
        comp, mean, log_std = self._component_log_probs(p, x)
        resp = torch.softmax(comp, -1)
        return (resp * (-(x.unsqueeze(-1) - mean) * torch.exp(-2 * log_std))).sum(-1)

    def _sample_1d(self, p, generator):
        log_w, mean, log_std = self._split(p)
        k = torch.multinomial(log_w.exp().cpu(), 1, generator=generator).to(mean.device)
        z = torch.randn(mean.shape[0], generator=generator).to(mean)
        return mean.gather(-1, k).squeeze(-1) + log_std.gather(-1, k).squeeze(-1).exp() * z
