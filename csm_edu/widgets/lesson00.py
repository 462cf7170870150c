r"""Lesson 00 panels: the environment check and a first slider.

- :func:`environment_report`: versions, device, quick mode and threads, as a dict.
- :func:`gaussian_1d_figure` / :func:`gaussian_1d_panel`: the density and the score of a 1-D
  Gaussian N(0, sigma^2) as the variance slider moves,

.. math:: p(x) = \frac{1}{\sqrt{2\pi\sigma^2}}\,e^{-x^2/(2\sigma^2)}, \qquad
          s(x) = \frac{d}{dx}\log p(x) = -\frac{x}{\sigma^2}.
"""
import math
import platform

import matplotlib.pyplot as plt
import numpy as np
import torch

from .. import checks, config
from .base import interactive_panel

VARIANCE_RANGE = (0.1, 4.0)     # the slider's ends
X_RANGE = (-5.0, 5.0)           # the plotted interval


def environment_report() -> dict:
    """Versions of Python and the main packages, the device, quick mode and torch's threads."""
    import ipywidgets
    import matplotlib

    import csm_edu

    dev = config.device()
    report = {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "numpy": np.__version__,
        "matplotlib": matplotlib.__version__,
        "ipywidgets": ipywidgets.__version__,
        "csm_edu": csm_edu.__version__,
        "device": str(dev),
        "gpu": torch.cuda.get_device_name(dev) if dev.type == "cuda" else "none",
        "quick mode": config.QUICK,
        "torch threads": torch.get_num_threads(),
    }
    return report


def gaussian_1d(variance: float, x: np.ndarray):
    """Density and score of N(0, variance) at the points ``x``: returns ``(p(x), s(x))``."""
    variance = checks.positive(variance, "variance")
    density = np.exp(-x ** 2 / (2 * variance)) / math.sqrt(2 * math.pi * variance)
    return density, -x / variance


def gaussian_1d_figure(variance: float):
    """Two panels, the density p(x) and the score s(x) = -x / variance; returns ``(figure, readout)``.

    The axes are fixed over the slider's range, so a change of the variance shows as a change of
    shape: a narrow Gaussian has a tall density and a steep score.
    """
    variance = checks.positive(variance, "variance")
    x = np.linspace(*X_RANGE, 401)
    density, score = gaussian_1d(variance, x)
    fig, (ax_p, ax_s) = plt.subplots(1, 2, figsize=(8.5, 3.0))
    ax_p.plot(x, density, color="tab:blue")
    ax_p.fill_between(x, density, alpha=0.2, color="tab:blue")
    ax_p.set_ylim(0, 1 / math.sqrt(2 * math.pi * VARIANCE_RANGE[0]) * 1.05)
    ax_p.set_title(f"density p(x), variance {variance:.2f}")
    ax_s.plot(x, score, color="tab:red")
    ax_s.axhline(0, color="gray", lw=0.8)
    ax_s.set_ylim(-12, 12)
    ax_s.set_title("score s(x) = d/dx log p(x) = -x / variance")
    for ax in (ax_p, ax_s):
        ax.set_xlabel("x")
        ax.set_xlim(*X_RANGE)
    fig.subplots_adjust(left=0.07, right=0.98, bottom=0.17, top=0.88, wspace=0.25)  # fixed: no layout pass per redraw
    p0, s1 = gaussian_1d(variance, np.array([0.0, 1.0]))
    readout = (f"variance {variance:.2f} (std {math.sqrt(variance):.2f}): p(0) = {p0[0]:.3f}, "
               f"score at x = 1 is {s1[1]:.2f}")
    return fig, readout


def gaussian_1d_panel(variance: float = 1.0):
    """A variance slider wired to :func:`gaussian_1d_figure`, redrawn when the slider is released.

    One redraw takes about 0.3 s of CPU (figure and PNG), so drawing on every drag event would lag
    behind the mouse; ``continuous_update=False`` draws once where the student lets go.
    """
    import ipywidgets as widgets

    lo, hi = VARIANCE_RANGE
    slider = widgets.FloatSlider(value=variance, min=lo, max=hi, step=0.05, description="variance",
                                 continuous_update=False)
    return interactive_panel(gaussian_1d_figure, {"variance": slider})
