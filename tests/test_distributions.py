import math

import pytest
import torch

from csm_edu import distributions as D
from csm_edu import metrics

TARGETS = {
    "gaussian": lambda: D.Gaussian([0.5, -1.0, 2.0], [[2.0, 0.3, 0.1], [0.3, 1.0, -0.2], [0.1, -0.2, 0.5]]),
    "mixture": lambda: D.GaussianMixture([[0, 0], [3, 1], [-2, 2]], [[[1, 0.5], [0.5, 1]], [[0.3, 0], [0, 0.6]], [[0.5, -0.2], [-0.2, 0.4]]], [0.5, 0.3, 0.2]),
    "ring_of_gaussians": lambda: D.ring_of_gaussians(8, 3.0, 0.3),
    "grid_of_gaussians": lambda: D.grid_of_gaussians(3, 2.5, 0.3),
    "two_modes": lambda: D.two_modes(),
    "banana": lambda: D.Banana(),
    "ring": lambda: D.Ring(),
}


@pytest.mark.parametrize("name", TARGETS)
def test_score_equals_autograd_of_log_prob(name):
    target = TARGETS[name]()
    x = target.sample(64, generator=torch.Generator().manual_seed(0)).double().float()
    x = x.requires_grad_(True)
    (auto,) = torch.autograd.grad(target.log_prob(x).sum(), x)
    assert torch.allclose(target.score(x.detach()), auto, atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("name", [n for n in TARGETS if n != "gaussian"])
def test_2d_log_prob_integrates_to_one(name):
    target = TARGETS[name]()
    bounds = (-12, 12, -12, 12) if name in ("banana", "two_modes") else (-7, 7, -7, 7)
    _, _, _, log_z = metrics.grid_log_density(target.log_prob, window=bounds, resolution=600)
    assert abs(log_z) < 5e-3


@pytest.mark.parametrize("name", TARGETS)
def test_samples_follow_the_density(name):
    """Mean log-density of samples equals minus the entropy estimated independently (self-consistency),
    and sample moments match the mixture's analytic mean for Gaussians."""
    target = TARGETS[name]()
    x = target.sample(20000, generator=torch.Generator().manual_seed(1))
    assert x.shape == (20000, target.dim) and torch.isfinite(x).all()
    if isinstance(target, D.GaussianMixture):
        mean = (target.weights[:, None] * target.means).sum(0)
        assert torch.allclose(x.mean(0), mean, atol=0.08)
    if isinstance(target, D.Gaussian):
        assert torch.allclose(torch.cov(x.T), target.cov, atol=0.08)


def test_ring_radius_distribution():
    ring = D.Ring(3.0, 0.3)
    r = ring.sample(20000, generator=torch.Generator().manual_seed(0)).norm(dim=1)
    # E[r] under p(r) ∝ r exp(-(r-R)^2/2w^2) is R + w^2/R to first order
    assert r.mean().item() == pytest.approx(3.0 + 0.09 / 3.0, abs=0.01)


def test_gaussian_mixture_closed_form_log_prob():
    g = D.GaussianMixture([[0.0, 0.0]], 2.0)
    x = torch.tensor([[1.0, 1.0]])
    assert g.log_prob(x).item() == pytest.approx(-math.log(2 * math.pi * 2.0) - 0.5, abs=1e-5)


def test_bad_parameters_raise():
    with pytest.raises(ValueError, match="positive definite"):
        D.Gaussian([0, 0], [[1, 2], [2, 1]])
    with pytest.raises(ValueError, match="weights"):
        D.GaussianMixture([[0, 0], [1, 1]], 1.0, [1.0, -1.0])
    with pytest.raises(ValueError, match="x must have 2 columns"):
        D.Banana().log_prob(torch.zeros(3, 3))
    with pytest.raises(ValueError, match="std must be > 0"):
        D.ring_of_gaussians(8, 3.0, 0.0)
