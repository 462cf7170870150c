"""Lesson 11 panel: denoising at each precomputed sigma, headless at the slider's ends."""
import matplotlib
import pytest
import torch

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from csm_edu.experiments import images  # noqa: E402
from csm_edu.models import ARCSM  # noqa: E402
from csm_edu.widgets import lesson11  # noqa: E402


@pytest.fixture(scope="module")
def results():
    torch.manual_seed(0)
    model = ARCSM(16, hidden=16, context_dim=4, head_hidden=8, cond_dim=1)
    clean = torch.rand(4, 16) * 2 - 1
    return {s: images.denoising_experiment(model, clean, s, generator=torch.Generator().manual_seed(0), noise_conditional=True, n_nodes=8)
            for s in (0.2, 0.6, 1.0)}


@pytest.mark.parametrize("sigma", [0.2, 0.6, 1.0, 0.55])
def test_figure_and_psnr_readout_at_every_level(results, sigma):
    fig, text = lesson11.denoising_figure(results, sigma, n_show=4, image_shape=(1, 4, 4))
    nearest = min(results, key=lambda s: abs(s - sigma))
    assert f"{results[nearest]['psnr']['joint']:.2f} dB" in text and len(fig.axes) == 4
    plt.close(fig)


def test_the_panel_builds(results):
    assert lesson11.denoising_panel(results, (1, 4, 4)).children
