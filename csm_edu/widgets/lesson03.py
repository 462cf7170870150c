r"""Lesson 03 panel: watch exact score matching learn, one checkpoint at a time.

Training minimises Hyvarinen's objective (see :func:`csm_edu.objectives.exact_score_matching`)

.. math:: J(\theta) = \mathbb E_p\bigl[\tfrac12\|s_\theta(x)\|^2 + \operatorname{tr}\nabla_x s_\theta(x)\bigr]
          = \tfrac12\mathbb E_p\|s_\theta - \nabla\log p\|^2 + \text{const},

- :func:`train_with_snapshots`: train with one :func:`csm_edu.train.fit` run whose callback records,
  at chosen steps, the learned density (normalised on a grid), the score field and the Fisher
  divergence to the true score. Everything a slider needs is computed here, once.
- :func:`training_progress_figure`: one recorded checkpoint next to the Fisher-divergence curve.
- :func:`training_progress_panel`: a checkpoint slider with a Play button (jslink).
"""
import math
from typing import Optional, Sequence

import matplotlib.pyplot as plt

from .. import metrics, viz
from .base import animation_panel
from ..experiments.snapshots import Snapshot


def training_progress_figure(snapshots: Sequence[Snapshot], index: int,
                             bounds: Sequence[float] = viz.DEFAULT_BOUNDS,
                             true_fisher_zero: Optional[float] = None):
    """Checkpoint ``index``: learned density + score arrows (left), Fisher divergence so far (right).

    ``index`` is clipped to the recorded range. ``true_fisher_zero`` (the divergence of s = 0,
    i.e. 1/2 E|grad log p|^2) is drawn as a reference line when given. Returns ``(figure, readout)``.
    """
    if not snapshots:
        raise ValueError("snapshots is empty: record them with train_with_snapshots first")
    index = max(0, min(int(index), len(snapshots) - 1))
    snap = snapshots[index]
    n = snap.log_density.shape[0]
    m = int(round(math.sqrt(snap.score.shape[0])))
    _, X, Y, _ = metrics.grid_2d(bounds, n)
    pts, QX, QY, _ = metrics.grid_2d(bounds, m)
    fig, (ax_field, ax_curve) = plt.subplots(1, 2, figsize=(9.0, 4.0))
    ax_field.pcolormesh(X.numpy(), Y.numpy(), snap.log_density.exp().numpy(), cmap="viridis", shading="auto")
    direction = snap.score / snap.score.norm(dim=1, keepdim=True).clamp_min(1e-12)
    ax_field.quiver(QX.numpy(), QY.numpy(), direction[:, 0].reshape(m, m).numpy(),
                    direction[:, 1].reshape(m, m).numpy(), color="white", angles="xy", pivot="mid",
                    scale=1.6 * m, width=0.004)
    ax_field.set_xlim(bounds[0], bounds[1])
    ax_field.set_ylim(bounds[2], bounds[3])
    ax_field.set_aspect("equal")
    ax_field.set_title(f"learned density and score, step {snap.step}")
    steps = [s.step for s in snapshots]
    fishers = [s.fisher for s in snapshots]
    ax_curve.plot(steps, fishers, color="0.7", marker="o", ms=3)
    ax_curve.plot(steps[: index + 1], fishers[: index + 1], color="tab:blue", marker="o", ms=3)
    ax_curve.scatter([snap.step], [snap.fisher], s=60, color="tab:red", zorder=3)
    if true_fisher_zero is not None:
        ax_curve.axhline(true_fisher_zero, color="k", ls=":", lw=1, label="s = 0")
        ax_curve.legend()
    ax_curve.set_yscale("log")
    ax_curve.set_xlabel("training step")
    ax_curve.set_ylabel("Fisher divergence")
    ax_curve.set_title("1/2 E|s_theta - grad log p|^2")
    fig.tight_layout()
    readout = f"checkpoint {index} of {len(snapshots) - 1}: step {snap.step}, Fisher divergence {snap.fisher:.3f}"
    return fig, readout


def training_progress_panel(snapshots: Sequence[Snapshot], bounds: Sequence[float] = viz.DEFAULT_BOUNDS,
                            true_fisher_zero: Optional[float] = None, interval_ms: int = 600):
    """A checkpoint slider (IntSlider) linked to a Play button over the recorded snapshots."""
    if not snapshots:
        raise ValueError("snapshots is empty: record them with train_with_snapshots first")

    def view(index):
        return training_progress_figure(snapshots, index, bounds, true_fisher_zero)

    return animation_panel(view, len(snapshots), name="index", value=len(snapshots) - 1,
                           interval_ms=interval_ms, description="checkpoint")
