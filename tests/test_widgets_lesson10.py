"""Lesson 10 panel: pixel-by-pixel sampling, headless over the slider's whole range."""
import matplotlib
import pytest
import torch

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from csm_edu.experiments import images  # noqa: E402
from csm_edu.models import ARCSM  # noqa: E402
from csm_edu.widgets import lesson10  # noqa: E402

CFG = dict(langevin_steps=2, langevin_step_size=1e-3, langevin_sigmas=(3.0, 1.0))


@pytest.fixture(scope="module")
def sampled():
    torch.manual_seed(0)
    model = ARCSM(16, hidden=16, context_dim=4, head_hidden=8)
    _, states = images.sample_images(model, 3, CFG, generator=torch.Generator().manual_seed(0), record=True)
    return model, states


@pytest.mark.parametrize("step", [0, 7, 16])                       # the slider's ends and a middle
def test_step_figure_over_the_slider_range(sampled, step):
    model, states = sampled
    fig, text = lesson10.sampling_step_figure(model, states, step, image_shape=(1, 4, 4))
    assert ("done" in text) == (step == 16) and len(fig.axes) == 2
    plt.close(fig)


def test_partial_images_hide_exactly_the_pixels_not_yet_generated(sampled):
    model, states = sampled
    partial = lesson10.partial_images(states, 5, model.order, (1, 4, 4)).reshape(3, 16)
    assert torch.all(torch.isnan(partial[:, 5:]))
    assert torch.allclose(partial[:, :5], images.to_pixels(states[5], (1, 4, 4)).reshape(3, 16)[:, :5])
    with pytest.raises(ValueError, match="step"):
        lesson10.partial_images(states, 17, model.order, (1, 4, 4))


def test_the_density_of_the_next_pixel_integrates_to_one(sampled):
    model, states = sampled
    grid = torch.linspace(*images.BOUNDS, 401)
    q = images.conditional_density_on_grid(model, states[3, 0], 3, grid)
    assert float(torch.trapezoid(q, grid)) == pytest.approx(1.0, abs=1e-3)


def test_the_panel_builds(sampled):
    model, states = sampled
    panel = lesson10.sampling_panel(model, states, (1, 4, 4))
    assert panel.children
