"""Lesson 06 helpers and panel, headless: score-error maps, mode weights, annealed Langevin view."""
import matplotlib
import pytest
import torch

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from csm_edu import distributions as dist  # noqa: E402
from csm_edu import metrics  # noqa: E402
from csm_edu.denoise import noised_distribution  # noqa: E402
from csm_edu.widgets import lesson06  # noqa: E402

TARGET = dist.two_modes(weights=(0.8, 0.2))


def test_score_error_map_is_the_squared_difference():
    shift = torch.tensor([0.3, -0.4])
    X, Y, err = lesson06.score_error_map(lambda x: TARGET.score(x) + shift, TARGET, resolution=12)
    assert err.shape == (12, 12) and X.shape == (12, 12)
    assert torch.allclose(err, torch.full((12, 12), 0.25), atol=1e-5)


def test_zero_field_is_worse_away_from_the_data():
    parts = lesson06.error_where_data_are(lambda x: torch.zeros_like(x), TARGET, TARGET, resolution=60)
    # away from the boundary between the modes |grad log p|^2 = |x - mu_k|^2 (std 1). The 'high' set
    # is two discs: p > 0.01 max p means r^2 < R^2 = 2 ln 100 around mode 1 and 2 ln 25 around
    # mode 2 (weight 0.2); the grid-mean of r^2 over a disc is R^2 / 2, weighted by disc areas.
    r1, r2 = 2 * torch.log(torch.tensor(100.0)), 2 * torch.log(torch.tensor(25.0))
    expected_high = float((r1 * r1 / 2 + r2 * r2 / 2) / (r1 + r2))
    assert parts["high"] == pytest.approx(expected_high, rel=0.05)
    assert parts["low"] > 5 * parts["high"]


def test_mode_weights_match_the_component_labels():
    x, labels = TARGET.sample(5000, generator=torch.Generator().manual_seed(0), return_labels=True)
    w = metrics.mode_weights(x, TARGET)
    assert w.shape == (2,) and float(w.sum()) == pytest.approx(1.0)
    assert float(w[0]) == pytest.approx(float((labels == 0).float().mean()), abs=0.005)
    assert float(w[0]) == pytest.approx(0.8, abs=0.03)


def test_exact_noise_conditional_score_matches_the_noised_mixture():
    score = lesson06.exact_noise_conditional_score(TARGET)
    x = torch.randn(20, 2) * 3
    expected = noised_distribution(TARGET, 2.0).score(x)
    assert torch.allclose(score(x, torch.full((20,), 2.0)), expected, atol=1e-5)
    assert torch.allclose(score(x, 2.0), expected, atol=1e-5)


def test_plot_score_error_draws_a_heat_map_with_contours():
    fig = lesson06.plot_score_error(lambda x: torch.zeros_like(x), TARGET, resolution=30, title="zero field")
    ax = fig.axes[0]
    assert len(ax.images) == 1 and len(ax.collections) >= 1
    plt.close(fig)


def test_annealed_panel_at_slider_min_and_max():
    score = lesson06.exact_noise_conditional_score(TARGET)
    panel = lesson06.annealed_panel(score, TARGET)
    levels, sigma_max, steps = panel.children[0].children
    assert (levels.min, levels.max) == (1, 12) and (steps.min, steps.max) == (5, 100)
    lowest = dict(n_levels=levels.min, sigma_max=sigma_max.base ** sigma_max.min, steps_per_level=steps.min)
    highest = dict(n_levels=levels.max, sigma_max=sigma_max.base ** sigma_max.max, steps_per_level=steps.max)
    weights = []
    for values in (lowest, highest):
        fig, text = lesson06.annealed_view(score, TARGET, n=300, **values)
        assert len(fig.axes) == 2 and len(fig.axes[1].patches) == 4      # true and recovered bars, 2 modes
        weights.append(float(text.split("mode 1: ")[1].split(" ")[0]))
        plt.close(fig)
    # one level at sigma=0.5 for 5 steps barely moves the uniform start: weight near 1/2;
    # 12 levels from sigma=20 with 100 steps each recover the true 0.8
    assert abs(weights[0] - 0.5) < 0.1
    assert abs(weights[1] - 0.8) < 0.07
