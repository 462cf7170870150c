"""Data sets: 2-D toy sets generated on the fly and image sets loaded offline.

``make_toy(name, n, generator=...)`` returns an ``(n, 2)`` float32 tensor. Names: see ``TOY_NAMES``.
The sets are scaled to lie roughly in [-4, 4]^2 so one plotting window fits them all.
Image loaders live in :mod:`csm_edu.data.image_data` and are re-exported here when present.
"""
from typing import Callable, Dict, Optional, Tuple

import numpy as np
import torch

from .. import checks
from .. import distributions as dist
from .image_data import _fraction, _generator


def _mixture(n, rng):
    target = dist.ring_of_gaussians(8, radius=3.0, std=0.3)
    return target.sample(n, generator=torch.Generator().manual_seed(int(rng.integers(2 ** 31)))).numpy()


def _grid(n, rng):
    target = dist.grid_of_gaussians(3, spacing=2.5, std=0.3)
    return target.sample(n, generator=torch.Generator().manual_seed(int(rng.integers(2 ** 31)))).numpy()


def _rings(n, rng):
    radii = np.array([1.0, 2.0, 3.0])
    which = rng.choice(3, size=n, p=radii / radii.sum())
    theta = rng.uniform(0, 2 * np.pi, n)
    r = radii[which] + 0.08 * rng.standard_normal(n)
    return np.stack([r * np.cos(theta), r * np.sin(theta)], 1)


def _moons(n, rng):
    n1 = n // 2
    t = rng.uniform(0, np.pi, n)
    upper = np.stack([np.cos(t), np.sin(t)], 1)
    lower = np.stack([1 - np.cos(t), 0.5 - np.sin(t)], 1)
    x = np.where((np.arange(n) < n1)[:, None], upper, lower)
    x = x + 0.08 * rng.standard_normal((n, 2))
    return 2.0 * (x - np.array([0.5, 0.25]))


def _checkerboard(n, rng):
    x1 = rng.uniform(-4, 4, n)
    x2 = rng.uniform(-4, 4, n)
    # keep the squares whose integer-cell parity is even: the classic 4x4 checkerboard
    cell = np.floor(x1 / 2) + np.floor(x2 / 2)
    x2 = np.where(cell % 2 == 0, x2, -x2)  # flip to the matching square; stays uniform
    return np.stack([x1, x2], 1)


def _spirals(n, rng):
    t = np.sqrt(rng.uniform(0, 1, n)) * 3 * np.pi
    arm = rng.integers(0, 2, n)
    sign = np.where(arm == 0, 1.0, -1.0)
    x = np.stack([-np.cos(t) * t, np.sin(t) * t], 1) * sign[:, None]
    return x / 3.0 + 0.1 * rng.standard_normal((n, 2))


def _pinwheel(n, rng, n_arms=5, radial_std=0.3, tangential_std=0.1, rate=0.25):
    arm = rng.integers(0, n_arms, n)
    feats = rng.standard_normal((n, 2)) * np.array([radial_std, tangential_std])
    feats[:, 0] += 1.0
    angles = 2 * np.pi * arm / n_arms + rate * np.exp(feats[:, 0])
    c, s = np.cos(angles), np.sin(angles)
    rot = np.stack([np.stack([c, -s], -1), np.stack([s, c], -1)], -2)
    return 2.0 * np.einsum("ti,tij->tj", feats, rot)


def _swissroll(n, rng):
    t = 1.5 * np.pi * (1 + 2 * rng.uniform(0, 1, n))
    x = np.stack([t * np.cos(t), t * np.sin(t)], 1) / 3.5
    return x + 0.1 * rng.standard_normal((n, 2))


def _circles(n, rng):
    which = rng.integers(0, 2, n)
    r = np.where(which == 0, 1.5, 3.0) + 0.1 * rng.standard_normal(n)
    theta = rng.uniform(0, 2 * np.pi, n)
    return np.stack([r * np.cos(theta), r * np.sin(theta)], 1)


def _banana(n, rng):
    target = dist.Banana()
    return target.sample(n, generator=torch.Generator().manual_seed(int(rng.integers(2 ** 31)))).numpy() * np.array([1.0, 0.7])


TOY_SETS: Dict[str, Callable] = {
    "mixture": _mixture,
    "grid": _grid,
    "rings": _rings,
    "circles": _circles,
    "moons": _moons,
    "checkerboard": _checkerboard,
    "spirals": _spirals,
    "pinwheel": _pinwheel,
    "swissroll": _swissroll,
    "banana": _banana,
}
TOY_NAMES = tuple(TOY_SETS)


def make_toy(name: str, n: int = 2000, *, generator: Optional[torch.Generator] = None) -> torch.Tensor:
    """Draw ``n`` points of the 2-D toy set ``name`` as an ``(n, 2)`` float32 tensor.

    ``generator`` (a CPU ``torch.Generator``; ``None`` draws from PyTorch's global RNG) seeds the
    draw: one 63-bit integer is taken from it to seed NumPy's generator, so the same generator
    state gives the same points and successive calls with one generator give fresh ones.
    ``mixture`` and ``grid`` are exact samples of :func:`csm_edu.distributions.ring_of_gaussians`
    (8 modes, radius 3, std 0.3) and ``grid_of_gaussians`` (3x3, spacing 2.5, std 0.3), so their
    true log density is known: see :func:`toy_distribution`.
    """
    _toy_name(name)
    n = checks.positive_int(n, "n")
    seed = int(torch.randint(0, 2 ** 63 - 1, (), generator=_generator(generator)))
    return torch.as_tensor(TOY_SETS[name](n, np.random.default_rng(seed)), dtype=torch.float32)


def _toy_name(name) -> str:
    if not isinstance(name, str):
        raise TypeError(f"toy set name must be a string such as 'mixture', got {type(name).__name__}; "
                        f"valid names: {', '.join(map(repr, TOY_NAMES))}")
    return checks.one_of(name, "toy set name", TOY_NAMES)


def toy_distribution(name: str):
    """The exact distribution behind a toy set, where one is known (else ``None``)."""
    _toy_name(name)
    if name == "mixture":
        return dist.ring_of_gaussians(8, radius=3.0, std=0.3)
    if name == "grid":
        return dist.grid_of_gaussians(3, spacing=2.5, std=0.3)
    return None


def train_test_split(x: torch.Tensor, test_fraction: float = 0.2, *,
                     generator: Optional[torch.Generator] = None) -> Tuple[torch.Tensor, torch.Tensor]:
    """Shuffle the rows of ``x`` (a permutation drawn with ``generator``) and split them into (train, test).

    The test part has ``round(len(x) * test_fraction)`` rows; both parts need at least one row.
    """
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"x must be a torch.Tensor with one row per point, got {type(x).__name__}; "
                        f"convert it with torch.as_tensor(x)")
    if x.dim() == 0:
        raise ValueError("x must have one row per point, got a 0-dimensional tensor")
    test_fraction = _fraction(test_fraction, "test_fraction")
    n_test = int(round(len(x) * test_fraction))
    if not 1 <= n_test <= len(x) - 1:
        raise ValueError(f"test_fraction={test_fraction!r} of {len(x)} rows leaves {n_test} for the test part and "
                         f"{len(x) - n_test} for training; both need at least one row (give x at least 2 rows "
                         f"and a test_fraction between 1/len(x) and 1 - 1/len(x))")
    perm = torch.randperm(len(x), generator=_generator(generator))
    return x[perm[n_test:]], x[perm[:n_test]]


from .image_data import DataFileError, load_celeba, load_cifar10, load_digits, load_mnist  # noqa: E402,F401
