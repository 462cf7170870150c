r"""Denoising with a score: Tweedie's formula, and the exact noised versions of analytic targets.

Add Gaussian noise to data, x~ = x + sigma eps with eps ~ N(0, I). The noised data have density

.. math:: q_\sigma(\tilde x) = \int p(x)\, N(\tilde x; x, \sigma^2 I)\, dx,

and Tweedie's formula says that the posterior mean of the clean point is one score step away:

.. math:: \mathbb E[x \mid \tilde x] = \tilde x + \sigma^2\, \nabla_{\tilde x} \log q_\sigma(\tilde x).

(Proof: differentiate q_sigma under the integral, grad N(x~; x, sigma^2 I) = N (x - x~) / sigma^2,
so sigma^2 grad q_sigma(x~) = int (x - x~) p(x) N(x~; x, sigma^2 I) dx = q_sigma(x~)(E[x|x~] - x~).)
The posterior mean is the denoiser with the least mean squared error, so a score model trained by
denoising score matching at level sigma is, through this formula, an optimal one-step denoiser.

For a Gaussian or a Gaussian mixture the noised density is known in closed form: convolution
with N(0, sigma^2 I) adds sigma^2 I to every covariance (:func:`noised_distribution`).
"""
from typing import Callable

import torch

from . import checks
from .distributions import Gaussian, GaussianMixture


def tweedie_denoise(score_fn: Callable, x_noisy: torch.Tensor, sigma: float) -> torch.Tensor:
    r"""One-step Tweedie denoising: \hat x = x~ + sigma^2 s(x~).

    ``score_fn(x)`` must approximate the score of the *noised* data, grad log q_sigma, at the same
    ``sigma`` that corrupted ``x_noisy`` of shape (n, D); then \hat x approximates the posterior
    mean E[x | x~] (see the module docstring). For a noise-conditional network pass
    ``model.at(sigma)``. Returns a detached tensor of the input's shape.
    """
    x_noisy = checks.as_batch(x_noisy, "x_noisy")
    sigma = checks.positive(sigma, "sigma")
    with torch.no_grad():
        s = checks.score_output(score_fn(x_noisy), x_noisy)
    return (x_noisy + sigma ** 2 * s).detach()


def noised_distribution(target, sigma: float):
    r"""The exact density of x + sigma eps for a Gaussian or Gaussian-mixture ``target``.

    .. math:: \sum_k w_k N(\mu_k, \Sigma_k) * N(0, \sigma^2 I) = \sum_k w_k N(\mu_k, \Sigma_k + \sigma^2 I),

    because the sum of independent Gaussians is Gaussian with the covariances added. Its
    ``score`` is the minimiser of denoising score matching at level sigma.
    """
    sigma = checks.positive(sigma, "sigma")
    if isinstance(target, Gaussian):
        eye = torch.eye(target.dim, dtype=torch.float64)
        return Gaussian(target.mean.double(), target.cov.double() + sigma ** 2 * eye)
    if isinstance(target, GaussianMixture):
        eye = torch.eye(target.dim, dtype=torch.float64)
        covs = torch.stack([c.cov.double() + sigma ** 2 * eye for c in target.components])
        return GaussianMixture(target.means.double(), covs, target.weights.double())
    raise ValueError(f"target must be a csm_edu.distributions.Gaussian or GaussianMixture, got "
                     f"{type(target).__name__}; other shapes have no closed-form noised density")
