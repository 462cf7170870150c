"""Lesson 05 panels, headless: the sigma sweep and Tweedie views at each slider's min and max."""
import math

import matplotlib
import pytest
import torch

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.colors import LogNorm  # noqa: E402

from csm_edu import metrics  # noqa: E402
from csm_edu.denoise import noised_distribution  # noqa: E402
from csm_edu.experiments import sweeps
from csm_edu.widgets import lesson05  # noqa: E402


@pytest.fixture(scope="module")
def sweep():
    return sweeps.train_sigma_sweep(sweeps.three_blobs(), [0.1, 0.4, 1.6], n_data=500, n_steps=40,
                                      hidden=16, n_eval=300, grid_n=20, quiver_n=6)


def slider_of(panel):
    return panel.children[0].children[0]


def test_sweep_measures_the_three_fisher_divergences(sweep):
    assert sweep.sigmas == pytest.approx([0.1, 0.4, 1.6])
    # the bias of the exact noised score grows with sigma (closed-form scores, no training involved)
    assert sweep.bias[0] < sweep.bias[1] < sweep.bias[2]
    # at sigma = 1.6 the noised score is nearly the zero field on this scale, so even a briefly
    # trained model is closer to it than to the true data score
    assert sweep.fisher_to_noised[2] < sweep.fisher_to_true[2]
    # the stored number is the Fisher divergence recomputed independently
    target = sweep.target
    x = target.sample(4000, generator=torch.Generator().manual_seed(3))
    direct = metrics.fisher_divergence(noised_distribution(target, 1.6).score, target, x)
    assert sweep.bias[2] == pytest.approx(direct, rel=0.15)


def test_nearest_level_snaps_on_a_log_scale(sweep):
    assert sweep.nearest(0.01) == 0
    assert sweep.nearest(0.19) == 0      # the geometric midpoint of 0.1 and 0.4 is 0.2
    assert sweep.nearest(0.21) == 1
    assert sweep.nearest(100.0) == 2
    with pytest.raises(ValueError, match="sigma"):
        sweep.nearest(0.0)


def test_sigma_panel_slider_spans_the_levels_and_view_works_at_min_and_max(sweep):
    panel = lesson05.sigma_sweep_panel(sweep)
    slider = slider_of(panel)
    assert type(slider).__name__ == "FloatLogSlider" and slider.description == "sigma"
    lo, hi = slider.base ** slider.min, slider.base ** slider.max
    assert lo == pytest.approx(0.1) and hi == pytest.approx(1.6)
    # one arrow-key step moves to the next trained level
    assert slider.base ** (slider.min + slider.step) == pytest.approx(0.4)
    texts = []
    for sigma, k in ((lo, 0), (hi, 2)):
        fig, text = lesson05.sigma_sweep_view(sweep, sigma)
        assert len(fig.axes) == 4                         # three panels and the error map's colourbar
        assert len(fig.axes[0].images) == 1 and len(fig.axes[1].images) == 1
        # the error map: one log colour scale for every level, spanning ERROR_DECADES powers of ten
        norm = fig.axes[1].images[0].norm
        assert isinstance(norm, LogNorm)
        top = max(float(g["integrand"].max()) for g in sweep.grids)
        assert norm.vmax == pytest.approx(top) and norm.vmin == pytest.approx(top * 10 ** -lesson05.ERROR_DECADES)
        assert len(fig.axes[2].lines) == 4               # three curves + the marker line
        assert fig.axes[2].lines[3].get_xdata()[0] == pytest.approx(sweep.sigmas[k])
        assert f"{sweep.fisher_to_true[k]:.4f}" in text and f"{sweep.bias[k]:.4f}" in text
        texts.append(text)
        plt.close(fig)
    assert texts[0] != texts[1]


def test_tweedie_view_lowers_the_error_at_large_sigma(sweep):
    panel = lesson05.tweedie_panel(sweep)
    slider = slider_of(panel)
    for sigma in (slider.base ** slider.min, slider.base ** slider.max):
        fig, text = lesson05.tweedie_view(sweep, sigma, n=200)
        assert "MSE noisy" in text
        plt.close(fig)
    numbers = [float(v) for v in text.replace(",", " ").split() if v.replace(".", "", 1).isdigit()]
    mse_noisy, mse_learned, mse_exact = numbers[-3:]
    assert mse_noisy == pytest.approx(2 * 1.6 ** 2, rel=0.2)   # E|sigma eps|^2 = D sigma^2
    assert mse_exact < 0.6 * mse_noisy


def test_default_sigmas_double():
    s = sweeps.default_sigmas()
    assert len(s) == 7 and all(math.isclose(b / a, 2.0) for a, b in zip(s, s[1:]))


def test_error_maps_share_one_log_scale_and_one_colourbar(sweep):
    fig = lesson05.error_maps_figure(sweep, [0, 2])
    maps = [ax for ax in fig.axes if ax.images]
    assert len(maps) == 2 and len(fig.axes) == 3          # two maps and one colourbar
    norms = [ax.images[0].norm for ax in maps]
    assert all(isinstance(n, LogNorm) for n in norms)
    assert norms[0].vmin == norms[1].vmin and norms[0].vmax == norms[1].vmax
    assert f"{sweep.fisher_to_true[2]:.3f}" in maps[1].get_title()
    plt.close(fig)


def test_sweep_sliders_redraw_on_release(sweep):
    for panel in (lesson05.sigma_sweep_panel(sweep), lesson05.tweedie_panel(sweep)):
        assert slider_of(panel).continuous_update is False
