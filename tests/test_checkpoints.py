"""Every shipped checkpoint loads with ``weights_only=True`` into the model its lesson builds and
reproduces the number the lesson asserts (no training; a few seconds each on one core).

The checkpoints are the lessons' full-mode trainings, made by
``python -m csm_edu.experiments.aem_study --make-checkpoint`` (lesson 08) and
``python -m csm_edu.experiments.vae_study --make-checkpoint`` (lesson 12) and
``python -m csm_edu.experiments.denoising_study --make-checkpoint`` (lesson 11). The expected numbers
below are what the lessons print in full mode (and quote in their text); the evaluations are
seeded, so on one machine they repeat to the last digit; the tolerances allow for other BLAS/CPU
rounding.
"""
import fnmatch
import math
import tomllib
from pathlib import Path

import pytest
import torch

from csm_edu import resources
from csm_edu.data import toy_distribution
from csm_edu.experiments import aem_study, denoising_study, vae_study

torch.set_num_threads(1)
REPO = Path(__file__).resolve().parents[1]
CHECKPOINTS = (aem_study.CHECKPOINT, vae_study.CHECKPOINT, denoising_study.CHECKPOINT)
NO_VAE = (f"{vae_study.CHECKPOINT} not made yet (lesson 12 then trains its VAEs itself); make it with "
          f"`{vae_study.CHECKPOINT_COMMAND}`")


@pytest.mark.parametrize("name", CHECKPOINTS)
def test_checkpoint_is_shipped_small_and_tensors_only(name):
    if name == vae_study.CHECKPOINT and not vae_study.checkpoint_shipped():
        pytest.skip(NO_VAE)
    path = resources.path(name)
    assert path.stat().st_size < 5e6, f"{name}: {path.stat().st_size / 1e6:.1f} MB, keep shipped checkpoints small"
    state = torch.load(path, map_location="cpu", weights_only=True)         # raises on anything but data
    assert "--make-checkpoint" in state["command"]
    globs = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]["package-data"]["csm_edu.resources"]
    assert any(fnmatch.fnmatch(name, g) for g in globs), f"{name} is not matched by the package data {globs}"


@pytest.fixture(scope="module")
def aem_models():
    return aem_study.load_checkpoint()


def test_aem_checkpoint_reproduces_lesson_08_grid_number(aem_models):
    models, histories = aem_models
    assert set(models) == set(aem_study.SETS)
    assert set(models["grid"]) == {"AEM", "AR-CSM", "MixtureMADE", "AEM proposal"}
    assert len(histories["grid"]["AEM"].loss) == aem_study.FULL_SETTINGS["steps"]
    _, x_test = aem_study.comparison_data("grid", aem_study.FULL_SETTINGS["n_data"])
    x_test = x_test[:2000]                                                  # lesson 08's N_TEST and S_EVAL in full mode
    rows = aem_study.compare_log_likelihoods({k: models["grid"][k] for k in ("AEM", "AEM proposal", "MixtureMADE")},
                                            histories["grid"], x_test, toy_distribution("grid"), n_importance=500)
    by = {r["model"]: r["log_lik"] for r in rows}
    gap = by["true density"] - by["AEM"]
    assert abs(gap) < 0.15                                                  # the lesson's assert
    for model, expected in EXPECTED_AEM_GRID.items():                      # the lesson's table
        assert by[model] == pytest.approx(expected, abs=3e-3), (model, by)   # printed to 3 decimals


def test_aem_checkpoint_sir_samples_land_on_the_grid(aem_models):
    from csm_edu import metrics
    models, _ = aem_models
    _, x_test = aem_study.comparison_data("grid", aem_study.FULL_SETTINGS["n_data"])
    samples = models["grid"]["AEM"].sample(2000, n_proposals=100, generator=torch.Generator().manual_seed(0))
    assert metrics.mmd(samples, x_test[:2000], bandwidth=0.3) < 0.002      # the lesson's assert


def test_vae_checkpoint_reproduces_lesson_12_table():
    if not vae_study.checkpoint_shipped():
        pytest.skip(NO_VAE)
    from csm_edu import vae as V
    rows, histories, models = vae_study.load_checkpoint()
    st = vae_study.FULL_SETTINGS
    assert set(models) == {(latent, m) for latent in st["latent_dims"] for m in vae_study.VAE_METHODS}
    x_train, x_test = V.load_binary_images("digits", "train"), V.load_binary_images("digits", "test")
    baseline = V.independent_bernoulli_log_likelihood(x_train, x_test)
    stored = {(r["latent"], r["method"]): r["log_lik"] for r in rows}
    # re-measure the two the lesson's asserts hinge on (L = 8: Gaussian reference, best implicit); K as in the lesson
    keys = [(8, "Gaussian encoder"), (8, "implicit + Stein")]
    measured = vae_study.evaluate({k: models[k] for k in keys}, x_test, n_importance=st["n_importance"], seed=st["seed"])
    for k in keys:
        assert measured[k] == pytest.approx(stored[k], abs=0.02), (k, measured[k], stored[k])
    for latent in st["latent_dims"]:                                       # the lesson's asserts, on the stored table
        gauss = stored[latent, "Gaussian encoder"]
        assert gauss > baseline + 1.0
        for m in vae_study.VAE_METHODS[1:]:
            assert math.isfinite(stored[latent, m]) and stored[latent, m] > gauss - 1.0, (latent, m, stored)


def test_denoiser_checkpoint_reproduces_lesson_11_psnr():
    from csm_edu.experiments import images
    model, history = denoising_study.load_checkpoint()
    st = denoising_study.FULL_SETTINGS
    assert len(history.loss) == st["steps"] and model.dim == 784 and model.cond_dim == 1
    assert model.head_kind == "local_mean"                                 # written out, whatever the default
    _, x_test = denoising_study.load_data(st, n_test=64)                  # the lesson's 64 test images
    r = images.denoising_experiment(model, x_test, 0.6, generator=torch.Generator().manual_seed(0),
                                    noise_conditional=True, n_nodes=32)   # = the lesson's results[0.6]
    for name, expected in EXPECTED_DENOISING_PSNR.items():                # printed to 2 decimals
        assert r["psnr"][name] == pytest.approx(expected, abs=0.01), (name, r["psnr"])
    assert r["psnr"]["joint"] > r["psnr"]["noisy"] + 2.0                  # the lesson's asserts
    assert r["psnr"]["conditional"] > r["psnr"]["noisy"]


def test_denoiser_checkpoint_is_a_density_on_r():
    """The box test on the shipped denoiser (lesson 11 asserts it too): the log-likelihood of noisy test images on
    the joint score's box [-5, 5]^D and on [-10, 10]^D agree within the error estimates."""
    from csm_edu import quadrature
    from csm_edu.experiments import images
    model, _ = denoising_study.load_checkpoint()
    _, x_test = denoising_study.load_data(denoising_study.FULL_SETTINGS, n_test=4)
    for sigma in (0.2, 0.6):
        noisy = images.add_noise(x_test, sigma, torch.Generator().manual_seed(2)).clamp(*images.DENOISE_BOUNDS)
        box = quadrature.box_test(model, noisy, bounds=images.DENOISE_BOUNDS, n_nodes=64, y=torch.full((4, 1), sigma))
        assert box["passed"] and box["difference"] < 0.05, (sigma, box)


def test_denoiser_builder_writes_out_every_arcsm_option():
    # a later change of an ARCSM default (e.g. the head) must not change the checkpoint's architecture
    import inspect
    from csm_edu.models import ARCSM
    options = [p for p in inspect.signature(ARCSM.__init__).parameters if p not in ("self", "dim")]
    source = inspect.getsource(denoising_study.build_denoiser)
    assert all(f"{p}=" in source for p in options), [p for p in options if f"{p}=" not in source]


# the lesson-11 full-mode PSNR (dB) at sigma = 0.6 on MNIST, printed by the lesson
EXPECTED_DENOISING_PSNR = {"noisy": 13.365, "conditional": 17.605, "joint": 17.268}


# the lesson-08 full-mode table on 'grid' (test log-likelihood, nats), printed by the lesson
EXPECTED_AEM_GRID = {"AEM": -2.604, "AEM proposal": -2.606, "MixtureMADE": -2.609, "true density": -2.604}


def test_checkpoint_helpers_round_trip_and_the_command_line(tmp_path, capsys):
    from csm_edu import resources

    target = resources.save_checkpoint({"w": torch.arange(3.0), "note": "x"}, "checkpoints/none.pt",
                                       target=tmp_path / "c.pt")
    assert torch.equal(resources.load_checkpoint("checkpoints/none.pt", source=target)["w"], torch.arange(3.0))
    assert not list(tmp_path.glob("*.tmp"))
    assert resources.checkpoint_command(lambda p: p, "python -m x --make-checkpoint", ["--make-checkpoint", "P"]) == 0
    assert "wrote P" in capsys.readouterr().out
    assert resources.checkpoint_command(lambda p: p, "python -m x --make-checkpoint", ["--oops"]) == 2
    assert "usage: python -m x --make-checkpoint" in capsys.readouterr().err
