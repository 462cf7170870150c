r"""Lesson 03 panel: watch exact score matching learn, one checkpoint at a time.

Training minimises Hyvarinen's objective (see :func:`csm_edu.objectives.exact_score_matching`)

.. math:: J(\theta) = \mathbb E_p\bigl[\tfrac12\|s_\theta(x)\|^2 + \operatorname{tr}\nabla_x s_\theta(x)\bigr]
          = \tfrac12\mathbb E_p\|s_\theta - \nabla\log p\|^2 + \text{const},

and :func:`csm_edu.experiments.snapshots.train_with_snapshots` records the learned density, score
field and Fisher divergence at a few checkpoints. This module only draws them:

- :func:`training_progress_figure`: one recorded checkpoint (density on one colour scale for all
  checkpoints, with a colourbar and the modes numbered; the mass on each mode; the
  Fisher-divergence curve).
- :func:`training_progress_panel`: a checkpoint slider with a Play button (jslink). Every frame
  is rendered once when the panel is built, so moving the slider or playing only shows a
  finished image.
"""
import math
from typing import Optional, Sequence

import matplotlib.pyplot as plt
import torch

from .. import viz
from .base import animation_panel
from ..experiments.snapshots import Snapshot, mode_labels, mode_masses


def _checked(snapshots):
    if not snapshots:
        raise ValueError("snapshots is empty: record them with train_with_snapshots first")
    return snapshots


def default_density_max(snapshots: Sequence[Snapshot]) -> float:
    """The colour scale's top: 1.5 times the median over checkpoints of the largest density.

    One scale for all checkpoints; a single very peaked checkpoint saturates (the colourbar's
    arrow) instead of darkening all the others.
    """
    peaks = sorted(float(s.log_density.max().exp()) for s in _checked(snapshots))
    return 1.5 * peaks[len(peaks) // 2]


def _label_modes(ax, modes: torch.Tensor) -> None:
    """Write each mode's index next to it, outwards from the modes' centre."""
    centre = modes.mean(0)
    for k, mu in enumerate(modes):
        out = mu - centre
        out = out / out.norm().clamp_min(1e-12)
        x, y = (mu + 0.75 * out).tolist()
        ax.text(x, y, str(k), color="white", fontsize=9, fontweight="bold", ha="center", va="center")


def training_progress_figure(snapshots: Sequence[Snapshot], index: int,
                             window: Sequence[float] = viz.DEFAULT_WINDOW,
                             true_fisher_zero: Optional[float] = None, *, modes=None, true_weights=None,
                             density_max: Optional[float] = None, mass_max: Optional[float] = None):
    """Checkpoint ``index``: learned density + score arrows, mass per mode, Fisher divergence so far.

    ``index`` is clipped to the recorded range. The density is drawn on one linear colour scale,
    0 to ``density_max`` (default: :func:`default_density_max`), with a colourbar, so that the
    checkpoints can be compared. With ``modes`` (K, 2), the mode centres, the modes are
    numbered on the density and a middle panel shows the mass of each mode
    (:func:`csm_edu.experiments.snapshots.mode_masses`) on a fixed axis up to ``mass_max``, next to
    ``true_weights`` when given. ``true_fisher_zero`` (the divergence of s = 0, i.e.
    1/2 E|grad log p|^2) is drawn as a reference line when given. Returns ``(figure, readout)``.
    """
    snapshots = _checked(snapshots)
    index = max(0, min(int(index), len(snapshots) - 1))
    snap = snapshots[index]
    if density_max is None:
        density_max = default_density_max(snapshots)
    m = int(round(math.sqrt(snap.score.shape[0])))
    with_modes = modes is not None
    if with_modes:
        modes = torch.as_tensor(modes, dtype=torch.float32)
        fig, (ax_field, ax_mass, ax_curve) = plt.subplots(1, 3, figsize=(14.0, 4.2),
                                                          gridspec_kw={"width_ratios": [1.15, 1, 1]})
    else:
        fig, (ax_field, ax_curve) = plt.subplots(1, 2, figsize=(9.5, 4.2))
    image = ax_field.imshow(snap.log_density.exp().numpy(), origin="lower", extent=tuple(window), cmap="viridis",
                            vmin=0.0, vmax=density_max, interpolation="nearest", aspect="equal")
    fig.colorbar(image, ax=ax_field, fraction=0.046, pad=0.03, extend="max").set_label("density (one scale for all steps)", fontsize=9)
    xs = torch.linspace(window[0], window[1], m)
    ys = torch.linspace(window[2], window[3], m)
    QX, QY = torch.meshgrid(xs, ys, indexing="xy")
    direction = snap.score / snap.score.norm(dim=1, keepdim=True).clamp_min(1e-12)
    ax_field.quiver(QX.numpy(), QY.numpy(), direction[:, 0].reshape(m, m).numpy(),
                    direction[:, 1].reshape(m, m).numpy(), color="white", angles="xy", pivot="mid",
                    scale=1.6 * m, width=0.004)
    ax_field.set_xlim(window[0], window[1])
    ax_field.set_ylim(window[2], window[3])
    ax_field.set_title(f"learned density and score, step {snap.step}", fontsize=11)
    readout = f"checkpoint {index} of {len(snapshots) - 1}: step {snap.step}, Fisher divergence {snap.fisher:.3f}"
    if with_modes:
        _label_modes(ax_field, modes)
        masses = mode_masses(snap.log_density, modes, window=window)
        if mass_max is None:
            mass_max = max(float(mode_masses(s.log_density, modes, window=window).max()) for s in snapshots)
        k = torch.arange(len(modes)).numpy()
        ax_mass.bar(k, masses.numpy(), color="tab:orange", width=0.7, label="learned")
        if true_weights is not None:
            ax_mass.step(list(k - 0.5) + [k[-1] + 0.5], list(torch.as_tensor(true_weights).tolist()) +
                         [float(true_weights[-1])], where="post", color="k", ls="--", lw=1, label="true")
            ax_mass.legend(fontsize=8, loc="upper right", frameon=True, framealpha=0.9)
        ax_mass.set_ylim(0, 1.05 * mass_max)
        ax_mass.set_xticks(k)
        ax_mass.set_xticklabels(mode_labels(modes), rotation=45, fontsize=8)
        ax_mass.set_xlabel("mode: its number on the density, its angle on the ring", fontsize=9)
        ax_mass.set_ylabel("probability mass")
        ax_mass.set_title(f"mass on each mode, step {snap.step}", fontsize=11)
        heavy, light = int(masses.argmax()), int(masses.argmin())
        readout += (f"; mass per mode from {float(masses[light]):.2f} (mode {light}) "
                    f"to {float(masses[heavy]):.2f} (mode {heavy})")
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
    ax_curve.set_title("1/2 E|s_theta - grad log p|^2", fontsize=11)
    fig.subplots_adjust(left=0.04, right=0.98, bottom=0.22, top=0.9, wspace=0.35)
    return fig, readout


def training_progress_panel(snapshots: Sequence[Snapshot], window: Sequence[float] = viz.DEFAULT_WINDOW,
                            true_fisher_zero: Optional[float] = None, interval_ms: int = 600, *,
                            modes=None, true_weights=None, progress: bool = True):
    """A checkpoint slider (IntSlider) linked to a Play button over the recorded snapshots.

    The colour scale and the mass axis are fixed once, from all checkpoints, so that the frames
    can be compared; ``modes`` and ``true_weights`` as in :func:`training_progress_figure`.
    Every frame is drawn here, once (``progress``: a tqdm bar; about 0.5 s a frame on one core),
    and the slider then shows the finished image (a few hundredths of a second).
    """
    from tqdm.auto import tqdm

    snapshots = _checked(snapshots)
    density_max = default_density_max(snapshots)
    mass_max = None
    if modes is not None:
        mass_max = max(float(mode_masses(s.log_density, modes, window=window).max()) for s in snapshots)
    frames = []
    for index in tqdm(range(len(snapshots)), desc="drawing the checkpoints", leave=False, disable=not progress):
        fig, readout = training_progress_figure(snapshots, index, window=window, true_fisher_zero=true_fisher_zero,
                                                modes=modes, true_weights=true_weights, density_max=density_max,
                                                mass_max=mass_max)
        frames.append((viz.figure_pixels(fig), readout))

    def view(index):
        pixels, readout = frames[max(0, min(int(index), len(frames) - 1))]
        return viz.pixels_figure(pixels), readout

    return animation_panel(view, len(snapshots), name="index", value=len(snapshots) - 1,
                           interval_ms=interval_ms, description="checkpoint")
