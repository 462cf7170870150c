"""Fully connected energy and score networks for low-dimensional data.

All use smooth activations (SiLU), because score matching differentiates the network's output
with respect to its input, sometimes twice.
"""
from typing import Sequence

import torch
from torch import nn

from .. import checks


def check_sigma(sigma, x: torch.Tensor) -> torch.Tensor:
    """``sigma`` as a tensor of shape (n,) on x's dtype and device: a positive scalar, or a tensor of n positive entries."""
    sigma = torch.as_tensor(sigma, dtype=x.dtype, device=x.device)
    if sigma.dim() == 0:
        sigma = sigma.expand(x.shape[0])
    elif sigma.shape not in ((x.shape[0],), (x.shape[0], 1)):
        raise ValueError(f"sigma must be a number or have shape (n,) = ({x.shape[0]},) (one level per row of x), "
                         f"got shape {tuple(sigma.shape)}")
    sigma = sigma.reshape(-1)
    if not checks.inside_transform(sigma) and (not torch.isfinite(sigma).all() or (sigma <= 0).any()):
        raise ValueError("sigma must be finite and > 0 (a noise level), e.g. 0.1")
    return sigma


def mlp(sizes: Sequence[int], activation=nn.SiLU) -> nn.Sequential:
    """Linear layers of the given sizes with ``activation`` between them (none after the last)."""
    layers = []
    for i, (a, b) in enumerate(zip(sizes[:-1], sizes[1:])):
        layers.append(nn.Linear(a, b))
        if i < len(sizes) - 2:
            layers.append(activation())
    return nn.Sequential(*layers)


def score_from_energy(energy_fn, x: torch.Tensor) -> torch.Tensor:
    r"""s(x) = -\nabla_x E(x) by autograd.

    Under ``torch.no_grad()`` (sampling) the result is detached; with gradients enabled
    (training) it keeps the graph (``create_graph=True``) so that a loss of the score can be
    back-propagated into the energy's parameters, and differentiated again with respect to x.
    """
    outer_grad = torch.is_grad_enabled()
    with torch.enable_grad():
        if not x.requires_grad:
            x = x.detach().requires_grad_(True)
        energy = energy_fn(x)
        (grad,) = torch.autograd.grad(energy.sum(), x, create_graph=outer_grad)
    return -grad if outer_grad else -grad.detach()


class EnergyMLP(nn.Module):
    r"""An energy E_theta: R^D -> R, the unnormalised model p(x) = exp(-E(x)) / Z.

    ``energy(x)`` has shape (n,); ``score(x) = -grad_x E(x)`` has shape (n, D) and is
    differentiable, so every score-matching objective trains it directly.
    """

    def __init__(self, dim: int = 2, hidden: int = 128, depth: int = 2):
        super().__init__()
        self.dim = checks.positive_int(dim, "dim")
        hidden = checks.positive_int(hidden, "hidden")
        depth = checks.positive_int(depth, "depth")
        self.net = mlp([dim] + [hidden] * depth + [1])

    def energy(self, x: torch.Tensor) -> torch.Tensor:
        """E(x), shape (n,), for x of shape (n, D) (finite entries)."""
        return self.net(checks.as_batch(x, "x", dim=self.dim)).squeeze(-1)

    def log_prob_unnormalised(self, x: torch.Tensor) -> torch.Tensor:
        """-E(x): the log density up to the unknown constant log Z."""
        return -self.energy(x)

    def score(self, x: torch.Tensor) -> torch.Tensor:
        return score_from_energy(self.energy, x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.energy(x)


class ScoreMLP(nn.Module):
    """A network s_theta: R^D -> R^D that models the score directly (no energy behind it).

    Cheaper than an energy model (no backward pass to get the score), but its field need not be
    a gradient, and there is no density to evaluate.
    """

    def __init__(self, dim: int = 2, hidden: int = 128, depth: int = 2):
        super().__init__()
        self.dim = checks.positive_int(dim, "dim")
        self.net = mlp([dim] + [checks.positive_int(hidden, "hidden")] * checks.positive_int(depth, "depth") + [dim])

    def score(self, x: torch.Tensor) -> torch.Tensor:
        """s(x), shape (n, D), for x of shape (n, D) (finite entries)."""
        return self.net(checks.as_batch(x, "x", dim=self.dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.score(x)


class NoiseConditionalScoreNet(nn.Module):
    r"""s_theta(x, sigma) approximating the score of the data convolved with N(0, sigma^2 I).

    The network sees (x, log sigma) and its output is divided by sigma, following Song & Ermon
    (2019): the true noised score scales like 1/sigma, so the network's raw output stays O(1)
    at every noise level. ``sigma`` may be a positive number or a tensor of shape (n,) (one
    level per row); x must have shape (n, D) with finite entries.
    """

    def __init__(self, dim: int = 2, hidden: int = 128, depth: int = 3):
        super().__init__()
        self.dim = checks.positive_int(dim, "dim")
        self.net = mlp([dim + 1] + [checks.positive_int(hidden, "hidden")] * checks.positive_int(depth, "depth") + [dim])

    def forward(self, x: torch.Tensor, sigma) -> torch.Tensor:
        x = checks.as_batch(x, "x", dim=self.dim)
        sigma = check_sigma(sigma, x).reshape(-1, 1)
        return self.net(torch.cat([x, torch.log(sigma)], dim=1)) / sigma

    def score(self, x: torch.Tensor, sigma) -> torch.Tensor:
        return self(x, sigma)

    def at(self, sigma: float):
        """The score function x -> s(x, sigma) at one fixed noise level."""
        return lambda x: self(x, sigma)
