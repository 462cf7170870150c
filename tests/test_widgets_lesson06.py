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


def test_exact_noise_conditional_score_takes_one_level_per_row():
    score = lesson06.exact_noise_conditional_score(TARGET)
    x = torch.randn(6, 2) * 3
    sigma = torch.tensor([0.5, 2.0, 0.5, 5.0, 2.0, 0.5])
    expected = torch.stack([noised_distribution(TARGET, float(s)).score(x[i:i + 1])[0] for i, s in enumerate(sigma)])
    assert torch.allclose(score(x, sigma), expected, atol=1e-5)


def test_annealed_grid_with_one_sigma_max_is_annealed_samples():
    score = lesson06.exact_noise_conditional_score(TARGET)
    grid = lesson06.annealed_grid(score, levels_options=(3,), sigma_max_options=(5.0,), steps_options=(10,), n=50,
                                  progress=False)
    direct = lesson06.annealed_samples(score, n_levels=3, sigma_max=5.0, steps_per_level=10, n=50)
    assert list(grid) == [(3, 5.0, 10)]
    assert torch.allclose(grid[(3, 5.0, 10)], direct, atol=1e-4)


def _readout_weight(panel):
    return float(panel.children[1].value.split("mode 1: ")[1].split(" ")[0])


def test_annealed_panel_at_slider_min_and_max():
    score = lesson06.exact_noise_conditional_score(TARGET)
    panel = lesson06.annealed_panel(score, TARGET, levels_options=(1, 12), sigma_max_options=(0.5, 20.0),
                                    steps_options=(5, 100), progress=False)
    levels, sigma_max, steps = panel.children[0].children
    assert levels.options == (1, 12) and steps.options == (5, 100) and sigma_max.options == (0.5, 20.0)
    assert levels.continuous_update is False and sigma_max.continuous_update is False
    weights = []
    for index in (0, -1):
        for control in (levels, sigma_max, steps):
            control.index = len(control.options) - 1 if index else 0
        weights.append(_readout_weight(panel))
    # one level at sigma=0.5 for 5 steps barely moves the uniform start: weight near 1/2;
    # 12 levels from sigma=20 with 100 steps each recover the true 0.8
    assert abs(weights[0] - 0.5) < 0.1
    assert abs(weights[1] - 0.8) < 0.07


def test_annealed_panel_caps_the_options():
    score = lesson06.exact_noise_conditional_score(TARGET)
    panel = lesson06.annealed_panel(score, TARGET, max_levels=3, max_steps=10, sigma_max_options=(1.0, 5.0), n=30,
                                    progress=False)
    levels, _, steps = panel.children[0].children
    assert levels.options == (1, 2, 3) and steps.options == (5, 10)
    assert ">recovered weight of mode 1" in panel.children[1].value
