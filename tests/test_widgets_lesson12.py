"""Lesson 12 panel: estimator score fields headless at every dropdown entry and the slider's ends."""

import matplotlib
import pytest
import torch

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from csm_edu import vae as V  # noqa: E402
from csm_edu.experiments import vae_study
from csm_edu.widgets import lesson12  # noqa: E402

SIZES = (30, 300)


@pytest.fixture(scope="module")
def fitted():
    return vae_study.fit_estimators(sample_sizes=SIZES, n_steps=60, n_test=300)


@pytest.mark.parametrize("name", vae_study.ESTIMATOR_NAMES)
@pytest.mark.parametrize("n_samples", SIZES)                    # the slider's min and max
def test_field_figure_at_every_setting(fitted, name, n_samples):
    fig, text = lesson12.estimator_field_figure(fitted, name, n_samples)
    assert len(fig.axes) == 2 and "Fisher divergence" in text and name in text
    plt.close(fig)


def test_kernel_estimators_get_better_with_more_samples(fitted):
    for name in ("Stein", "SSGE"):
        assert fitted[name, 300]["fisher"] < fitted[name, 30]["fisher"], lesson12.fisher_table(fitted)
    assert "M=300" in lesson12.fisher_table(fitted)


def test_bad_values_raise_and_the_panel_builds(fitted):
    with pytest.raises(ValueError, match="no fitted estimator"):
        lesson12.estimator_field_figure(fitted, "Stein", 7)
    with pytest.raises(ValueError, match="name"):
        vae_study.make_estimator("KDE")
    assert lesson12.estimator_panel(fitted) is not None
    plt.close("all")


def test_vae_experiment_runs_and_tabulates():
    torch.manual_seed(0)
    x = V.load_binary_images("digits", "train")[:200]
    rows, hists, models = vae_study.run_vae_experiment(x, x[:40], latent_dims=(2,), n_steps=6, hidden=(16,),
                                                      kernel_samples=4, network_samples=2, n_importance=10,
                                                      eval_every=3, n_valid=20)
    assert [r["method"] for r in rows] == list(vae_study.VAE_METHODS)
    assert all(torch.isfinite(torch.tensor(r["log_lik"])) for r in rows)
    assert "independent pixels" in lesson12.format_vae_table(rows, -30.0)
    fig = lesson12.training_curves_figure(hists)
    assert len(fig.axes[0].lines) == len(rows)
    plt.close(fig)


def test_panel_tiles_hold_every_setting(fitted):
    tiles = lesson12._FieldTiles(fitted, progress=False)
    assert set(tiles.right) == set(fitted)
    fig, text = tiles("SSM", SIZES[0])
    assert text == lesson12.estimator_field_figure(fitted, "SSM", SIZES[0])[1]
    (image,) = fig.axes[0].get_images()
    assert image.get_array().shape[1] == 2 * tiles.left.shape[1]          # true field | fitted field
    plt.close("all")
    with pytest.raises(ValueError, match="no fitted estimator"):
        tiles("Stein", 7)
