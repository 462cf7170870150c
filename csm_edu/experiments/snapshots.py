"""Training with snapshots: the model's density and score field recorded at chosen steps (lesson 03)."""
from dataclasses import dataclass
from typing import Callable, List, Optional, Sequence, Tuple, Union
import torch
from .. import checks, metrics, train, viz


@dataclass
class Snapshot:
    """The learned model at one point of training, evaluated on fixed grids (tensors, no model)."""

    step: int
    fisher: float              # 1/2 E_p |s_theta - grad log p|^2 on held-out samples of p
    log_density: torch.Tensor  # (n, n) grid-normalised log p_theta on the density grid
    score: torch.Tensor        # (m*m, 2) learned score on the quiver grid


def _snapshot(model, step: int, true_score, x_eval, window, density_grid: int, quiver_grid: int) -> Snapshot:
    dev = next(model.parameters()).device          # fit() may have moved the model to a GPU

    def log_prob(z):
        return model.log_prob_unnormalised(z.to(dev)).cpu()

    def score(z):
        return model.score(z.to(dev)).cpu()

    _, _, log_density, _ = metrics.grid_log_density(log_prob, window=window, resolution=density_grid)
    pts, _, _, _ = metrics.grid_2d(window, quiver_grid)
    with torch.no_grad():
        grid_score = score(pts).detach()
    return Snapshot(step, metrics.fisher_divergence(score, true_score, x_eval), log_density.detach(), grid_score)


def mode_masses(log_density: torch.Tensor, means: torch.Tensor, *,
                window: Sequence[float] = viz.DEFAULT_WINDOW) -> torch.Tensor:
    r"""Probability mass of a grid-normalised 2-D density on each mode: shape (K,).

    The (r, r) grid ``log_density`` over ``window`` (as in a :class:`Snapshot`) is split into the
    cells nearest to each of the K ``means`` (K, 2), and p dA is summed over each part, so the
    masses add up to the grid's total (1, up to the Riemann sum).
    """
    means = checks.as_batch(torch.as_tensor(means, dtype=torch.float32), "means", dim=2)
    log_density = torch.as_tensor(log_density)
    if log_density.dim() != 2 or log_density.shape[0] != log_density.shape[1]:
        raise ValueError(f"log_density must be an (r, r) grid, got shape {tuple(log_density.shape)}")
    pts, _, _, area = metrics.grid_2d(window, log_density.shape[0])
    nearest = torch.cdist(pts, means).argmin(1)
    return torch.zeros(len(means)).index_add_(0, nearest, log_density.flatten().float().exp() * area)


def mode_labels(means: torch.Tensor) -> List[str]:
    """Labels ``"k: angle°"`` for modes on a ring: k is the index, the angle that of the mode's centre."""
    means = torch.as_tensor(means, dtype=torch.float64)
    angles = torch.rad2deg(torch.atan2(means[:, 1], means[:, 0])).remainder(360.0)
    return [f"{k}: {round(float(a)) % 360}°" for k, a in enumerate(angles)]


def train_with_snapshots(model: torch.nn.Module, loss_fn: Callable, data: torch.Tensor, *, true_score,
                         x_eval: torch.Tensor, steps: int, n_snapshots: int = 10, batch_size: int = 128,
                         lr: float = 1e-2, generator: Optional[torch.Generator] = None,
                         window: Sequence[float] = viz.DEFAULT_WINDOW, density_grid: int = 80, quiver_grid: int = 18,
                         progress: bool = True, device: Union[str, torch.device] = "cpu") -> Tuple[List[Snapshot], train.History]:
    r"""Train a 2-D energy model with one :func:`csm_edu.train.fit` run and record ``n_snapshots`` checkpoints.

    ``model`` needs ``score`` and ``log_prob_unnormalised`` (an :class:`csm_edu.models.EnergyMLP`);
    ``true_score`` is a callable or a distribution with ``.score``; ``x_eval`` are held-out samples
    of p for the Fisher divergence. The learning rate follows fit's cosine from ``lr`` to 0.05 lr
    over all ``steps``; a callback records a snapshot after steps round(k steps / n_snapshots),
    k = 1..n_snapshots (evaluation time is not counted in the History). ``device`` defaults to
    the CPU: a 2-D toy model trains as fast there as on a GPU. Returns ``(snapshots, history)``
    with ``n_snapshots + 1`` snapshots, the first before any training.
    """
    steps = checks.positive_int(steps, "steps")
    n_snapshots = checks.positive_int(n_snapshots, "n_snapshots")
    if n_snapshots > steps:
        raise ValueError(f"n_snapshots ({n_snapshots}) cannot exceed steps ({steps}); lower n_snapshots")
    if getattr(model, "dim", 2) != 2 or not hasattr(model, "log_prob_unnormalised"):
        raise ValueError("model must be a 2-D energy model with log_prob_unnormalised, e.g. models.EnergyMLP(2)")
    x_eval = checks.as_batch(x_eval, "x_eval", dim=2)
    window = tuple(window)
    snapshots = [_snapshot(model.eval(), 0, true_score, x_eval, window, density_grid, quiver_grid)]
    at = {(steps * (k + 1)) // n_snapshots for k in range(n_snapshots)}

    def record(step, model, history):
        if step in at:
            snapshots.append(_snapshot(model, step, true_score, x_eval, window, density_grid, quiver_grid))

    history = train.fit(model, loss_fn, data, steps=steps, batch_size=batch_size, lr=lr, callbacks=[record],
                        generator=generator, progress=progress, device=device)
    return snapshots, history
