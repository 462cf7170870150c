"""Lesson 08 panels and helpers, headless: the normaliser experiment and the comparison table."""
import math

import matplotlib
import numpy as np
import pytest
import torch

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from csm_edu.data import make_toy, toy_distribution  # noqa: E402
from csm_edu.experiments import aem_study
from csm_edu.widgets import lesson08  # noqa: E402

torch.set_num_threads(1)


def test_log_weight_has_mean_one_under_the_proposal():
    # the 1-D target is normalised, so E_q[m / q] = 1 and log Z = 0 is the truth both estimators aim at
    x = aem_study.PROPOSAL_STD * torch.randn(400000, generator=torch.Generator().manual_seed(0))
    assert abs(float(aem_study.log_weight(x).exp().mean()) - 1.0) < 0.01


def test_autoregressive_normaliser_beats_the_joint_one_in_high_dimension():
    one = aem_study.normaliser_spread(1, 16, n_repeats=200)
    assert np.allclose(one["joint"], one["autoregressive"], atol=1e-5)        # D = 1: the same estimator
    est = aem_study.normaliser_spread(32, 64, n_repeats=200)
    assert est["joint"].mean() < 10 * est["autoregressive"].mean() < 0        # both biased down, joint far more
    assert est["joint"].std() > 3 * est["autoregressive"].std()


@pytest.mark.parametrize("dim,n_importance", [(1, 1), (64, 256), (8, 64)])
def test_spread_figure_over_the_slider_range(dim, n_importance):
    fig, text = lesson08.normaliser_spread_figure(dim, n_importance, n_repeats=50)
    assert f"D={dim}" in text and "nats" in text
    plt.close(fig)


def test_comparison_trains_and_tabulates_all_three():
    x = make_toy("grid", 400, generator=torch.Generator().manual_seed(0))
    models, histories = aem_study.train_comparison(x, steps=3, batch_size=64, hidden=16, n_components=3, n_importance=4)
    assert set(models) == {"AEM", "AEM proposal", "AR-CSM", "MixtureMADE"}
    rows = aem_study.compare_log_likelihoods(models, histories, x[:50], toy_distribution("grid"),
                                            n_importance=16, n_nodes=32)
    assert [r["model"] for r in rows] == ["AEM", "AEM proposal", "AR-CSM", "MixtureMADE", "true density"]
    assert all(math.isfinite(r["log_lik"]) and r["stderr"] > 0 for r in rows)
    assert all(rows[i]["ms_per_step"] > 0 for i in (0, 2, 3))
    table = lesson08.format_comparison({"grid": rows})
    assert "importance sampling, S=16" in table and "quadrature" in table
    sizes, bias, spread = aem_study.importance_bias_curve(models["AEM"], x[:50], sample_sizes=(1, 4), reference_samples=64, n_repeats=2)
    assert sizes == [1, 4] and len(bias) == len(spread) == 2
    with pytest.raises(ValueError, match="model name"):
        aem_study.train_comparison(x, steps=1, models=("PixelCNN",))


def test_bad_settings_raise_value_error():
    with pytest.raises(ValueError, match="dim"):
        aem_study.normaliser_spread(0, 4)
    with pytest.raises(ValueError, match="n_importance"):
        aem_study.normaliser_spread(2, 0)


def test_panel_builds_headless():
    panel = lesson08.normaliser_spread_panel()
    assert panel is not None
    plt.close("all")


def test_panel_tiles_show_the_figure_of_every_setting():
    tiles = lesson08._SpreadTiles(dims=(1, 4), sizes=(1, 16), n_repeats=20, progress=False)
    for d in (1, 4):
        for s in (1, 16):
            fig, text = tiles(d, s)
            assert text == lesson08.normaliser_spread_figure(d, s, n_repeats=20)[1]   # the same numbers
            (image,) = fig.axes[0].get_images()
            assert image.get_array().shape[1] == tiles.left[d, s].shape[1] + tiles.right[s].shape[1]
            plt.close("all")
    with pytest.raises(ValueError, match="no stored setting"):
        tiles(2, 16)
