"""Headless tests of the lesson-13 panels: every figure function at its sliders' extremes."""
import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402

from csm_edu import diffusion as D  # noqa: E402
from csm_edu.data import toy_distribution  # noqa: E402
from csm_edu.widgets import lesson13 as L  # noqa: E402


@pytest.mark.parametrize("kind", L.SDE_KINDS)
@pytest.mark.parametrize("t", [0.0, 0.5, 1.0])
def test_forward_noising_figure_over_the_slider_range(kind, t):
    fig, text = L.forward_noising_figure(kind, t=t, n=200)
    assert len(fig.axes) >= 2 and "s(t)" in text
    plt.close(fig)


def test_forward_noising_window_grows_with_ve_noise():
    sde = L.default_sde("VE")
    assert L.window_at(sde, 0.0)[1] == pytest.approx(4.5)
    assert L.window_at(sde, 1.0)[1] > 20
    with pytest.raises(ValueError, match="t must lie"):
        L.forward_noising_figure("VE", t=1.5)
    with pytest.raises(ValueError, match="sde kind"):
        L.forward_noising_figure("sub-VP", t=0.5)


@pytest.mark.parametrize("t", [0.02, 1.0])
def test_score_comparison_figure_reads_out_zero_for_the_true_score(t):
    target = toy_distribution("mixture")
    sde = L.default_sde("VP")
    fig, text = L.score_comparison_figure(D.marginal_score_fn(target, sde), target, sde, t=t, n_arrows=8, n_eval=300)
    assert text.endswith("= 0.000")
    plt.close(fig)
    wrong = lambda x, tt: torch.zeros_like(x)                               # noqa: E731
    fig, text = L.score_comparison_figure(wrong, target, sde, t=t, n_arrows=8, n_eval=300)
    assert text.endswith("= 1.000")                                         # zero field: relative error 1
    plt.close(fig)


@pytest.mark.parametrize("frame", [0, 3, 99])
def test_trajectory_frame_figure_clamps_frames(frame):
    traj = torch.randn(5, 40, 2).cumsum(0)
    fig = L.trajectory_frame_figure(traj, frame, times=torch.linspace(1, 0, 5), reference=torch.randn(50, 2))
    assert "step" in fig.axes[0].get_title()
    plt.close(fig)
    with pytest.raises(ValueError, match="trajectory"):
        L.trajectory_frame_figure(torch.randn(5, 40), 0)


def test_panels_build():
    pytest.importorskip("ipywidgets")
    target = toy_distribution("mixture")
    sde = L.default_sde("VE")
    assert L.forward_noising_panel() is not None
    assert L.score_comparison_panel(D.marginal_score_fn(target, sde), target, sde) is not None
    assert L.trajectory_player(torch.randn(4, 10, 2)) is not None
    plt.close("all")
