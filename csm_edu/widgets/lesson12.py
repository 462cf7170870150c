"""Lesson 12 panels: score estimators side by side, and the implicit-encoder VAE table.

The fits and the VAE runs are :mod:`csm_edu.experiments.vae_study` (its docstring gives the
maths); :func:`estimator_field_figure` draws a fitted estimator's score field next to the true one,
:func:`estimator_panel` wires a dropdown and a sample-size slider, :func:`format_vae_table` and
:func:`training_curves_figure` show the VAE results.
"""
from typing import Dict, List, Optional, Sequence, Tuple

import matplotlib.pyplot as plt
import numpy as np

from .. import viz
from .. import vae as V
from .base import interactive_panel
from ..experiments.vae_study import ESTIMATOR_NAMES, implicit_target

BANANA_WINDOW = (-4.0, 4.0, -3.0, 5.0)


def estimator_field_figure(fitted: Dict, name: str, sample_size: int, *, target=None,
                           window: Sequence[float] = BANANA_WINDOW, n_arrows: int = 15):
    """True score field (left) and the estimated one (right, with the samples it saw), both over the
    true density; arrows show directions. Returns ``(figure, readout)`` with the Fisher divergence."""
    key = (name, int(sample_size))
    if key not in fitted:
        raise ValueError(f"no fitted estimator for {key}; available: {sorted(fitted)}")
    target = target or implicit_target()
    entry = fitted[key]
    fig, axes = plt.subplots(1, 2, figsize=(8.4, 4.0))
    viz.plot_score_field(target.score, window=window, resolution=n_arrows, ax=axes[0], log_prob_fn=target.log_prob,
                         title="true score")
    viz.plot_score_field(entry["estimator"].score, window=window, resolution=n_arrows, ax=axes[1], log_prob_fn=target.log_prob,
                         color="orange", title=f"{name}, {sample_size} samples")
    viz.plot_samples(entry["samples"][:400], ax=axes[1], window=window, s=3.0)
    fig.tight_layout()
    return fig, _field_readout(entry, name, sample_size)


def _field_readout(entry, name, sample_size) -> str:
    ratio = entry["fisher"] / entry["information"]
    return (f"{name} with {sample_size} samples: Fisher divergence {entry['fisher']:.3f} "
            f"({100 * ratio:.1f}% of the Fisher information {entry['information']:.2f}); fit {entry['seconds']:.2f} s")


def _tile(draw, *, size=(4.2, 4.0)):
    """``draw(ax)`` on a figure of fixed size and margins, drawn once; its RGBA pixels (the figure is closed)."""
    fig = plt.figure(figsize=size)
    ax = fig.add_axes((0.1, 0.08, 0.86, 0.84))          # fixed margins: no layout pass, tiles of one size line up
    draw(ax)
    fig.canvas.draw()
    pixels = np.asarray(fig.canvas.buffer_rgba()).copy()
    plt.close(fig)
    return pixels


class _FieldTiles:
    """:func:`estimator_field_figure` at every (estimator, sample size) of ``fitted``, drawn once as pixel tiles.

    The left tile (the true field) is the same for every setting and the right one (the fitted
    field with its samples) is one per setting: all drawn when the panel is built, so a redraw only
    puts two stored tiles side by side and shows them (:func:`csm_edu.viz.pixels_figure`).
    """

    def __init__(self, fitted: Dict, target=None, *, window: Sequence[float] = BANANA_WINDOW, n_arrows: int = 15,
                 progress: bool = True):
        from tqdm.auto import tqdm
        target = target or implicit_target()
        self.left = _tile(lambda ax: viz.plot_score_field(target.score, window=window, resolution=n_arrows, ax=ax,
                                                          log_prob_fn=target.log_prob, title="true score"))
        self.right, self.readouts = {}, {}
        for (name, size), entry in tqdm(fitted.items(), desc="drawing the panel's settings", leave=False,
                                        disable=not progress, mininterval=0.5):
            def draw(ax, entry=entry, name=name, size=size):
                viz.plot_score_field(entry["estimator"].score, window=window, resolution=n_arrows, ax=ax,
                                     log_prob_fn=target.log_prob, color="orange", title=f"{name}, {size} samples")
                viz.plot_samples(entry["samples"][:400], ax=ax, window=window, s=3.0)
            self.right[name, size] = _tile(draw)
            self.readouts[name, size] = _field_readout(entry, name, size)

    def __call__(self, name, sample_size):
        key = (name, int(sample_size))
        if key not in self.right:
            raise ValueError(f"no fitted estimator for {key}; available: {sorted(self.right)}")
        return viz.pixels_figure(np.concatenate([self.left, self.right[key]], axis=1)), self.readouts[key]


def estimator_panel(fitted: Dict, target=None, *, progress: bool = True):
    """Dropdown (estimator) and slider (number of samples, the sizes in ``fitted``) around
    :func:`estimator_field_figure`.

    Every setting is drawn when the panel is built (:class:`_FieldTiles`, a progress bar), so a
    change of estimator or sample size only shows stored pixels.
    """
    import ipywidgets as widgets

    names = sorted({k[0] for k in fitted}, key=lambda n: ESTIMATOR_NAMES.index(n) if n in ESTIMATOR_NAMES else 99)
    sizes = sorted({k[1] for k in fitted})
    tiles = _FieldTiles(fitted, target, progress=progress)
    controls = {"name": widgets.Dropdown(options=names, value=names[0], description="estimator"),
                "sample_size": widgets.SelectionSlider(options=sizes, value=sizes[-1], description="samples",
                                                     continuous_update=False)}
    return interactive_panel(lambda name, sample_size: tiles(name, sample_size), controls)


def fisher_table(fitted: Dict) -> str:
    """Plain-text table: Fisher divergence / information of every (estimator, sample size)."""
    names = sorted({k[0] for k in fitted}, key=lambda n: ESTIMATOR_NAMES.index(n) if n in ESTIMATOR_NAMES else 99)
    sizes = sorted({k[1] for k in fitted})
    lines = [f"{'estimator':10s}" + "".join(f"{f'M={n}':>12s}" for n in sizes) + "   (Fisher divergence / information)"]
    for name in names:
        lines.append(f"{name:10s}" + "".join(f"{fitted[name, n]['fisher'] / fitted[name, n]['information']:12.3f}"
                                           for n in sizes))
    return "\n".join(lines)


# ----------------------------------------------------------------------------- part 2: the VAE



def format_vae_table(rows: List[dict], baseline: Optional[float] = None) -> str:
    """Plain-text table of :func:`run_vae_experiment` rows (and the independent-Bernoulli baseline)."""
    lines = [f"{'latent':>6s}  {'method':18s} {'test log p(x) [nats]':>21s} {'train s':>8s} {'ms/step':>8s}"]
    for r in rows:
        lines.append(f"{r['latent']:6d}  {r['method']:18s} {r['log_lik']:21.2f} {r['seconds']:8.1f} {r['ms_per_step']:8.1f}")
    if baseline is not None:
        lines.append(f"{'-':>6s}  {'independent pixels':18s} {baseline:21.2f}")
    return "\n".join(lines)


def training_curves_figure(histories: Dict[Tuple[int, str], V.VAEHistory]):
    """Validation IS log-likelihood against the step, one panel per latent size."""
    latents = sorted({k[0] for k in histories})
    fig, axes = plt.subplots(1, len(latents), figsize=(5.0 * len(latents), 3.4), squeeze=False)
    for ax, latent in zip(axes[0], latents):
        for (lat, method), h in histories.items():
            if lat == latent and h.eval_steps:
                ax.plot(h.eval_steps, h.eval_log_lik, "o-", ms=3, label=method)
        ax.set_xlabel("step")
        ax.set_ylabel("validation log p(x) (IS, K=100)")
        ax.set_title(f"latent size {latent}")
        ax.legend(fontsize=7)
    fig.tight_layout()
    return fig
