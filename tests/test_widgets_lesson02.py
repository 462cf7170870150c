"""Lesson 02 panels, called headless at each slider's min and max."""
import re

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402

from csm_edu import distributions, metrics, sampling  # noqa: E402
from csm_edu.widgets import lesson02  # noqa: E402


@pytest.fixture(scope="module")
def explorer():
    return lesson02.LangevinExplorer(n_chains=200)


def _mmd_in(readout):
    return float(re.search(r"MMD\^2 to true samples = (-?[0-9.]+)", readout).group(1))


def test_view_at_slider_ends(explorer):
    lo, hi = lesson02.STEP_SIZE_RANGE
    fig, text = explorer(lo, 0, True)                 # step min, steps min: the initial points
    assert "step size 0.001" in text and "0 steps" in text
    ax = fig.axes[0]
    assert len(ax.images) == 1 and len(ax.collections) == 1      # the density image and the scatter of the chains
    assert len(ax.collections[-1].get_offsets()) == 200
    start_mmd = _mmd_in(text)
    plt.close(fig)
    fig, text = explorer(0.01, 500, True)             # steps max: converged
    assert _mmd_in(text) < start_mmd / 5
    plt.close(fig)
    fig, text = explorer(0.01, 500, False)            # noise off: gradient ascent collapses onto the modes
    assert "noise off" in text
    plt.close(fig)
    x = explorer.run(0.01, 500, False)
    distance_to_nearest_mode = torch.cdist(x, explorer.target.means).min(1).values
    assert distance_to_nearest_mode.median() < 0.01
    with pytest.raises(sampling.SamplerDivergedError, match="Lower step_size"):
        explorer(hi, 500, True)                       # step max diverges with a clear message


def test_cached_chains_equal_one_langevin_run(explorer):
    """run() continues cached chains; the states equal one sampler call of the same length and seed."""
    for steps in (30, 200, 37, 0):
        expected = sampling.langevin(explorer.target.score, explorer.x0, step_size=0.02, steps=steps,
                                     generator=torch.Generator().manual_seed(explorer.seed + 1))
        assert torch.equal(explorer.run(0.02, steps), expected)
    with pytest.raises(sampling.SamplerDivergedError, match="Lower step_size"):
        explorer.run(1.0, 100)
    with pytest.raises(sampling.SamplerDivergedError, match="Lower step_size"):
        explorer.run(1.0, 200)                        # remembered as diverged
    assert lesson02.slider_step_sizes()[0] == pytest.approx(1e-3) and lesson02.slider_step_sizes()[-1] == pytest.approx(1.0)
    assert len(lesson02.slider_step_sizes()) == 13


def test_readout_number_is_the_mmd(explorer):
    fig, text = explorer(0.03, 100, True)
    plt.close(fig)
    expected = metrics.mmd(explorer.run(0.03, 100, True), explorer.reference, bandwidth=0.5)
    assert _mmd_in(text) == pytest.approx(expected, abs=1e-4)


def test_panel_shows_divergence_as_red_readout(explorer):
    panel = lesson02.langevin_panel(explorer)
    step_slider = panel.children[0].children[0]
    assert type(step_slider).__name__ == "FloatLogSlider"
    assert step_slider.continuous_update is False
    readout = panel.children[1]
    assert "MMD^2" in readout.value
    step_slider.value = step_slider.base ** step_slider.max    # a log slider's min/max are exponents
    assert step_slider.value == pytest.approx(lesson02.STEP_SIZE_RANGE[1])
    assert "diverged" in readout.value and "#b00" in readout.value
    plt.close("all")


def test_mode_fractions_counts_points_per_mode():
    two = distributions.two_modes(weights=(0.8, 0.2))
    x = torch.tensor([[-4.0, -4.0]] * 3 + [[4.0, 4.0]])
    assert metrics.mode_weights(x, two).tolist() == [0.75, 0.25]
    exact = two.sample(4000, generator=torch.Generator().manual_seed(0))
    assert metrics.mode_weights(exact, two)[0].item() == pytest.approx(0.8, abs=0.03)
    with pytest.raises(ValueError, match="GaussianMixture"):
        metrics.mode_weights(x, distributions.Banana())


def test_trajectory_frames_at_ends():
    traj = torch.randn(6, 10, 2)
    fig, text = lesson02.trajectory_frame_figure(traj, 0, record_every=5)
    assert "frame 0 of 5" in text
    plt.close(fig)
    fig, text = lesson02.trajectory_frame_figure(traj, 5, record_every=5)
    assert "Langevin step 25" in text
    assert len(fig.axes[0].lines) == 10               # one path per chain
    labels = [t.get_text() for t in fig.axes[0].get_legend().get_texts()]
    assert labels == ["start (step 0)", "now (step 25)"]
    plt.close(fig)
    with pytest.raises(ValueError, match="shape"):
        lesson02.trajectory_frame_figure(torch.randn(6, 10), 0)
    box = lesson02.trajectory_animation(traj)
    play = box.children[0]
    assert type(play).__name__ == "Play" and play.max == 5
    plt.close("all")
