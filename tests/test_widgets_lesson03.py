"""Lesson 03 panel: checkpoints recorded during exact score matching, and their figure."""
import matplotlib
import pytest
import torch

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.quiver import Quiver  # noqa: E402

from csm_edu import data, metrics, models, objectives  # noqa: E402
from csm_edu.experiments import snapshots
from csm_edu.widgets import lesson03  # noqa: E402

BOUNDS = (-4.5, 4.5, -4.5, 4.5)


@pytest.fixture(scope="module")
def recorded():
    torch.manual_seed(0)
    true = data.toy_distribution("mixture")
    model = models.EnergyMLP(2, 32, 2)
    snaps, history = snapshots.train_with_snapshots(
        model, lambda m, x: objectives.exact_score_matching(m.score, x), data.make_toy("mixture", 1000, generator=torch.Generator().manual_seed(0)),
        true_score=true, x_eval=data.make_toy("mixture", 500, generator=torch.Generator().manual_seed(1)), steps=200, n_snapshots=4, batch_size=128, lr=1e-2,
        density_grid=40, quiver_grid=10)
    return snaps, history


def test_snapshots_are_recorded_and_training_lowers_the_fisher_divergence(recorded):
    snaps, history = recorded
    assert [s.step for s in snaps] == [0, 50, 100, 150, 200]
    assert history.steps == 200 and len(history.loss) == 200
    assert snaps[-1].fisher < 0.5 * snaps[0].fisher
    area = (9.0 / 39) ** 2                       # each grid density integrates to ~1
    for s in snaps:
        assert s.log_density.shape == (40, 40) and s.score.shape == (100, 2)
        assert float(s.log_density.exp().sum() * area) == pytest.approx(1.0, rel=1e-3)


@pytest.mark.parametrize("index", [0, 4])              # the slider's min and max
def test_progress_figure_at_slider_ends(recorded, index):
    snaps, _ = recorded
    fig, readout = lesson03.training_progress_figure(snaps, index, window=BOUNDS, true_fisher_zero=11.2)
    ax_field, ax_curve, ax_colourbar = fig.axes
    (image,) = ax_field.images
    assert image.norm.vmin == 0 and image.norm.vmax == pytest.approx(lesson03.default_density_max(snaps))
    assert any(isinstance(c, Quiver) for c in ax_field.collections)
    assert f"step {snaps[index].step}" in ax_field.get_title()
    assert f"Fisher divergence {snaps[index].fisher:.3f}" in readout
    assert len(ax_curve.lines) == 3                    # all points, points so far, s = 0 line
    plt.close(fig)


def test_progress_figure_with_modes_numbers_them_and_shows_their_mass(recorded):
    snaps, _ = recorded
    true = data.toy_distribution("mixture")
    fig, readout = lesson03.training_progress_figure(snaps, 4, modes=true.means, true_weights=true.weights,
                                                     density_max=0.5, mass_max=0.6)
    ax_field, ax_mass, ax_curve, ax_colourbar = fig.axes
    assert sorted(t.get_text() for t in ax_field.texts) == [str(k) for k in range(8)]
    assert [t.get_text() for t in ax_mass.get_xticklabels()] == snapshots.mode_labels(true.means)
    masses = snapshots.mode_masses(snaps[4].log_density, true.means)
    assert [p.get_height() for p in ax_mass.patches] == pytest.approx(masses.tolist())
    assert ax_mass.get_ylim()[1] == pytest.approx(0.63) and ax_field.images[0].norm.vmax == 0.5
    assert "mass per mode from" in readout
    plt.close(fig)


def test_mode_masses_and_labels():
    true = data.toy_distribution("mixture")
    assert snapshots.mode_labels(true.means)[:3] == ["0: 0°", "1: 45°", "2: 90°"]
    pts, _, _, area = metrics.grid_2d(BOUNDS, 120)
    log_density = true.log_prob(pts).reshape(120, 120)                 # the true density: 1/8 on each mode
    masses = snapshots.mode_masses(log_density, true.means, window=BOUNDS)
    assert masses.tolist() == pytest.approx([0.125] * 8, abs=2e-3)
    with pytest.raises(ValueError, match="log_density"):
        snapshots.mode_masses(log_density[:5], true.means)


def test_out_of_range_index_is_clipped_and_empty_input_explained(recorded):
    snaps, _ = recorded
    fig, readout = lesson03.training_progress_figure(snaps, 99)
    assert readout.startswith("checkpoint 4 of 4")
    plt.close(fig)
    with pytest.raises(ValueError, match="snapshots"):
        lesson03.training_progress_figure([], 0)
    with pytest.raises(ValueError, match="n_snapshots"):
        snapshots.train_with_snapshots(models.EnergyMLP(2, 8, 1), None, torch.zeros(4, 2), true_score=None,
                                      x_eval=torch.zeros(4, 2), steps=2, n_snapshots=5)


def test_panel_builds(recorded):
    snaps, _ = recorded
    true = data.toy_distribution("mixture")
    panel = lesson03.training_progress_panel(snaps, modes=true.means, true_weights=true.weights)
    play, inner = panel.children
    assert play.max == len(snaps) - 1
    slider, readout = inner.children[0].children[0], inner.children[1]
    slider.value = 0                                   # a prerendered frame and its readout
    assert readout.value.startswith("<code") and ">checkpoint 0 of 4" in readout.value
    plt.close("all")
