r"""Lesson 11 panel: single-step denoising at a chosen noise level, conditional vs joint score.

The results are precomputed by :func:`csm_edu.experiments.images.denoising_experiment` at each sigma of a list
(one noise-conditional AR-CSM, trained on noisy images, covers them all). :func:`denoising_figure`
shows clean, noisy, conditional-score and joint-score Tweedie estimates for one sigma with the
PSNR of each; :func:`denoising_panel` wires a SelectionSlider over the precomputed sigmas.
"""
from typing import Dict

import matplotlib.pyplot as plt

from .. import viz
from .base import interactive_panel

ROWS = (("clean", "clean"), ("noisy", "noisy"), ("conditional", "conditional scores"), ("joint", "joint score"))


def denoising_figure(results: Dict[float, dict], sigma: float, n_show: int = 8, image_shape=(1, 8, 8)):
    """Four image rows for the precomputed ``results[sigma]``; readout: PSNR (dB) of each estimate."""
    sigma = min(results, key=lambda s: abs(s - float(sigma)))          # nearest precomputed level
    res = results[sigma]
    fig, axes = plt.subplots(len(ROWS), 1, figsize=(0.5 * n_show + 1.6, 4.6))
    for ax, (key, label) in zip(axes, ROWS):
        x = res[key][:n_show].reshape(-1, *image_shape)
        viz.image_grid(x.clamp(0, 1), nrow=n_show, ax=ax)
        psnr = f" ({res['psnr'][key]:.1f} dB)" if key in res["psnr"] else ""
        ax.set_title(label + psnr, fontsize=9)
    fig.tight_layout()
    text = (f"sigma = {sigma:g}: PSNR noisy {res['psnr']['noisy']:.2f} dB, conditional scores "
            f"{res['psnr']['conditional']:.2f} dB, joint score {res['psnr']['joint']:.2f} dB")
    return fig, text


def denoising_panel(results: Dict[float, dict], image_shape=(1, 8, 8)):
    """A SelectionSlider over the precomputed noise levels around :func:`denoising_figure`."""
    import ipywidgets as widgets
    levels = sorted(results)
    slider = widgets.SelectionSlider(options=levels, value=levels[len(levels) // 2], description="sigma",
                                     continuous_update=False)
    return interactive_panel(lambda sigma: denoising_figure(results, sigma, image_shape=image_shape), {"sigma": slider})
