"""Lesson 01: grid maximum likelihood, the grid-cost table and the temperature slider at its ends."""
import math

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402

from csm_edu import distributions, metrics  # noqa: E402
from csm_edu.experiments import grid_cost
from csm_edu.widgets import lesson01  # noqa: E402


def quadratic_energy(x):
    return 0.5 * (x ** 2).sum(1)


def test_grid_nll_matches_the_exact_gaussian_nll():
    """E = |x|^2/2 has Z = 2 pi, so the loss must equal the exact N(0, I) negative log-likelihood."""
    points, _, _, area = metrics.grid_2d((-7, 7, -7, 7), 120)
    x = torch.randn(50, 2, generator=torch.Generator().manual_seed(0))
    loss = lesson01.grid_negative_log_likelihood(quadratic_energy, x, points, area)
    exact = -float(distributions.Gaussian([0.0, 0.0]).log_prob(x).mean())
    assert float(loss) == pytest.approx(exact, abs=1e-4)


def test_grid_nll_gradient_is_data_minus_model_expectation():
    """E_theta(x) = theta |x|^2 / 2: the gradient is mean |x|^2/2 - E_{N(0, I/theta)} |x|^2/2 = mean |x|^2/2 - 1/theta."""
    theta = torch.tensor(2.0, requires_grad=True)
    points, _, _, area = metrics.grid_2d((-7, 7, -7, 7), 160)
    x = torch.randn(64, 2, generator=torch.Generator().manual_seed(1))
    loss = lesson01.grid_negative_log_likelihood(lambda z: theta * quadratic_energy(z), x, points, area)
    (grad,) = torch.autograd.grad(loss, theta)
    expected = float(quadratic_energy(x).mean()) - 1 / 2.0
    assert float(grad) == pytest.approx(expected, abs=1e-4)


def test_grid_nll_rejects_bad_input():
    points, _, _, area = metrics.grid_2d(resolution=10)
    with pytest.raises(ValueError, match="cell_area"):
        lesson01.grid_negative_log_likelihood(quadratic_energy, torch.zeros(3, 2), points, 0.0)
    with pytest.raises(ValueError, match="grid_points"):
        lesson01.grid_negative_log_likelihood(quadratic_energy, torch.zeros(3, 3), points, area)


def test_cost_table_counts_points_and_extrapolates():
    rows = grid_cost.measure_grid_cost((1, 2, 3), k=6, extrapolate_to=(3, 5, 10))
    assert [r["dim"] for r in rows] == [1, 2, 3, 5, 10]               # D=3 is measured, not repeated
    assert [r["points"] for r in rows] == [6, 36, 216, 6 ** 5, 6.0 ** 10]
    assert rows[3]["memory_bytes"] == 4 * 6 * 6 ** 5
    per_point = rows[2]["seconds"] / rows[2]["points"]
    assert rows[4]["seconds"] == pytest.approx(per_point * 6.0 ** 10)
    assert all(r["measured"] for r in rows[:3]) and not any(r["measured"] for r in rows[3:])
    table = lesson01.format_cost_table(rows)
    assert "extrapolated" in table and len(table.splitlines()) == 2 + len(rows)
    with pytest.raises(ValueError, match="overflows"):
        grid_cost.measure_grid_cost((1,), k=20, extrapolate_to=(784,))


@pytest.fixture(scope="module")
def quadratic_view():
    return lesson01.TemperatureView(quadratic_energy, window=(-12, 12, -12, 12), resolution=240)


@pytest.mark.parametrize("temperature", lesson01.TEMPERATURE_RANGE)
def test_temperature_view_at_slider_ends(quadratic_view, temperature):
    """p_T of E = |x|^2/2 is N(0, T I): log Z(T) = log(2 pi T) (the box holds the mass up to T = 10)."""
    fig, text = quadratic_view(temperature)
    expected = math.log(2 * math.pi * temperature)
    assert quadratic_view.log_z(temperature) == pytest.approx(expected, abs=2e-3)
    assert f"log Z(T) = {quadratic_view.log_z(temperature):.3f}" in text
    ax_p, ax_z, ax_bar = fig.axes                                      # density, log Z curve, colourbar
    (image,) = ax_p.images                                             # the density heat map
    assert image.norm.vmax == pytest.approx(quadratic_view.density_max)          # one scale for every T
    assert image.norm.vmin == pytest.approx(quadratic_view.density_floor * quadratic_view.density_max)
    assert quadratic_view.density_max == pytest.approx(1 / (2 * math.pi * 0.1), rel=0.05)  # N(0, T I) at T = 0.1, on the grid
    marker_x, marker_y = ax_z.lines[1].get_data()                      # the red dot on the log Z curve
    assert marker_x[0] == pytest.approx(temperature) and marker_y[0] == pytest.approx(expected, abs=2e-3)
    plt.close(fig)


def test_temperature_panel_moves_the_readout():
    panel = lesson01.temperature_panel(quadratic_energy, window=(-6, 6, -6, 6), resolution=60)
    slider, readout = panel.children[0].children[0], panel.children[1]
    assert slider.continuous_update is False
    slider.value = slider.base ** slider.max
    assert "T = 10" in readout.value
    slider.value = slider.base ** slider.min
    assert "T = 0.1" in readout.value
    slider.value = 2.0                                                 # a temperature not drawn before
    assert "T = 2:" in readout.value
    with pytest.raises(ValueError, match="temperature"):
        lesson01.TemperatureView(quadratic_energy, resolution=20).log_z(0.0)
    plt.close("all")
