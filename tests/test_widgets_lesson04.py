"""Lesson 04 panels: Hutchinson histograms and the variance-against-projections plot."""
import matplotlib
import pytest
import torch

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from csm_edu.trace import hutchinson_variance  # noqa: E402
from csm_edu.widgets import lesson04  # noqa: E402


def test_demo_matrix_has_the_requested_diagonal_share():
    for w in (0.0, 0.3, 1.0):
        a = lesson04.demo_matrix(w, dim=6)
        assert torch.allclose(a, a.T)
        assert float((a ** 2).sum()) == pytest.approx(1.0)
        assert float((torch.diagonal(a) ** 2).sum()) == pytest.approx(w)
    with pytest.raises(ValueError, match="diagonal_share"):
        lesson04.demo_matrix(1.5)


def _readout_numbers(readout):
    measured = float(readout.split("variance measured ")[1].split(",")[0])
    theory = float(readout.split("theory ")[1].split(";")[0])
    return measured, theory


@pytest.mark.parametrize("kind", ["gaussian", "rademacher"])
@pytest.mark.parametrize("n_projections", [1, 64])          # the slider's min and max
@pytest.mark.parametrize("diagonal_share", [0.0, 0.5])      # slider min and the default
def test_histogram_readout_matches_theory(kind, n_projections, diagonal_share):
    fig, readout = lesson04.hutchinson_figure(n_projections, kind=kind, diagonal_share=diagonal_share)
    (ax,) = fig.axes
    (bars,) = ax.patches                                    # the histogram, one step patch
    heights, edges = bars.get_data().values, bars.get_data().edges
    assert len(heights) == lesson04.N_BINS
    # nothing is clamped into the edge bins: the drawn area plus the share beyond the axis is 1
    outside = int(readout.split("; ")[1].split(" of ")[0]) if "beyond the axis" in readout else 0
    assert float((heights * (edges[1] - edges[0])).sum()) + outside / 4000 == pytest.approx(1.0)
    # tr A is the centre of the middle bin
    trace = float(torch.trace(lesson04.demo_matrix(diagonal_share)))
    middle = lesson04.N_BINS // 2
    assert 0.5 * (edges[middle] + edges[middle + 1]) == pytest.approx(trace)
    drawn = [line for line in ax.lines if len(line.get_xdata())]
    assert len(drawn) == 2                                  # the true-trace line, the theory curve
    measured, theory = _readout_numbers(readout)
    assert theory == pytest.approx(hutchinson_variance(lesson04.demo_matrix(diagonal_share), n_projections=n_projections, kind=kind),
                                   rel=1e-3)
    assert measured == pytest.approx(theory, rel=0.15)
    plt.close(fig)


def test_rademacher_on_diagonal_matrix_has_zero_variance():
    fig, readout = lesson04.hutchinson_figure(1, kind="rademacher", diagonal_share=1.0)   # diagonal share slider max
    measured, theory = _readout_numbers(readout)
    assert theory == 0.0 and measured == 0.0
    ax = fig.axes[0]
    assert not ax.patches and len(ax.lines) == 2             # one line for all estimates, one for tr A; no curve
    assert ax.lines[0].get_xdata()[0] == pytest.approx(float(torch.trace(lesson04.demo_matrix(1.0))))
    plt.close(fig)
    fig, readout = lesson04.hutchinson_figure(1, kind="gaussian", diagonal_share=1.0)
    measured, theory = _readout_numbers(readout)
    assert theory > 0 and measured == pytest.approx(theory, rel=0.15)
    plt.close(fig)


def test_variance_plot_has_points_and_lines_for_both_kinds():
    fig, table = lesson04.variance_against_projections_figure(lesson04.demo_matrix(0.5), projections=(1, 4, 16), n_trials=8000)
    ax = fig.axes[0]
    assert len(ax.lines) == 2 and len(ax.collections) == 2
    for kind in ("gaussian", "rademacher"):
        measured, theory = table[kind]
        assert theory[0] == pytest.approx(4 * theory[1]) and theory[1] == pytest.approx(4 * theory[2])
        for m, t in zip(measured, theory):
            assert m == pytest.approx(t, rel=0.15)
    assert table["rademacher"][1][0] < table["gaussian"][1][0]
    plt.close(fig)


def test_precomputed_trials_match_a_fresh_draw_in_distribution():
    trials = lesson04.hutchinson_trials(max_projections=16, n_trials=6000)
    for kind in ("gaussian", "rademacher"):
        for w in (0.0, 0.5, 0.9):
            fig, readout = lesson04.hutchinson_figure(16, kind=kind, diagonal_share=w, trials=trials)
            measured, theory = _readout_numbers(readout)
            assert measured == pytest.approx(theory, rel=0.15)
            assert f"tr A = {float(torch.trace(lesson04.demo_matrix(w))):.4f}" in readout
            plt.close(fig)
    with pytest.raises(ValueError, match="max_projections"):
        lesson04.hutchinson_figure(17, trials=trials)


def test_bad_settings_are_explained_and_panel_builds():
    with pytest.raises(ValueError, match="kind"):
        lesson04.hutchinson_figure(1, kind="uniform")
    with pytest.raises(ValueError, match="n_projections"):
        lesson04.hutchinson_figure(0)
    panel = lesson04.hutchinson_panel(max_projections=64)
    slider = panel.children[0].children[0]
    assert (slider.min, slider.max) == (1, 64)
    plt.close("all")
