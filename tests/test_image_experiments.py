"""csm_edu.experiments.images: configurations, bits/dim conventions, joint score, denoising, anomaly detection."""
import math

import pytest
import torch

from csm_edu import quadrature
from csm_edu.experiments import images
from csm_edu import distributions as dist
from csm_edu.data import image_data
from csm_edu.models import ARCSM, ExactConditionalScores, GaussianMADE
from csm_edu.models.pixelcnn import PixelCNNPP

TINY = dict(images.image_config("digits", "cpu_quick"), made_hidden=32, pixelcnn_channels=8, pixelcnn_blocks=1,
            context_dim=4, head_hidden=8, langevin_steps=2, langevin_sigmas=(3.0, 1.0))


def test_configs_cover_every_dataset_and_grow_with_the_machine():
    for dataset in images.DATASETS:
        gpu = images.image_config(dataset, "gpu")
        assert gpu["mode"] == "gpu" and gpu["dim"] == math.prod(gpu["image_shape"])
    for dataset in ("digits", "mnist"):
        quick, full, gpu = (images.image_config(dataset, m) for m in images.MODES)
        assert quick["csm_steps"] < full["csm_steps"] < gpu["csm_steps"]
    assert images.image_config("mnist", "gpu")["levels"] == 256 and images.image_config("digits", "gpu")["levels"] == 17
    assert images.default_mode(torch.device("cuda")) == "gpu"
    with pytest.raises(ValueError, match="GPU"):
        images.image_config("cifar10", "cpu_quick")
    with pytest.raises(ValueError, match="dataset"):
        images.image_config("svhn")


def test_every_logit_pixel_lies_inside_the_quadrature_box():
    k = torch.tensor([[0, 16]])
    z = images.to_logit_space(k, 17, seed=0)
    edge = image_data.to_model_space(torch.tensor([0.0, 1.0]), "logit", images.LOGIT_LAMBDA)
    assert images.BOUNDS[0] < float(edge[0]) and float(edge[1]) < images.BOUNDS[1]
    assert ((z > images.BOUNDS[0]) & (z < images.BOUNDS[1])).all()


def test_offline_availability_and_integer_loading():
    ok, _ = images.dataset_available("digits")
    assert ok
    k, labels = images.load_integers("digits", "test", n=5)
    assert k.shape == (5, 1, 8, 8) and k.dtype == torch.int64 and 0 <= int(k.min()) and int(k.max()) <= 16
    ok, message = images.dataset_available("cifar10")
    if not ok:
        assert "download" in message


def test_a_uniform_model_scores_log2_levels_bits_per_dim():
    """The table's uniform row is log2 L; a continuous model goes through bits_per_dim with the logit Jacobian."""
    k, _ = images.load_integers("digits", "test", n=4)
    table = images.bits_per_dim_table({}, k, 17)
    assert table["uniform"] == pytest.approx(math.log2(17))
    z = images.to_logit_space(k, 17, seed=1)
    log_p = dist.Gaussian(torch.zeros(64), 1.0).log_prob(z)
    expected = image_data.bits_per_dim(log_p, z, scale="logit", levels=17, logit_lambda=images.LOGIT_LAMBDA)

    class StandardNormal(torch.nn.Module):
        def log_prob(self, x):
            return dist.Gaussian(torch.zeros(64), 1.0).log_prob(x)
    assert torch.allclose(images.model_bits_per_dim(StandardNormal(), k, 17, seed=1), expected)


def test_joint_score_of_the_exact_conditionals_is_the_gaussian_score():
    """Differentiating the quadrature log-likelihood recovers grad log p, the conditional scores do not."""
    cov = torch.tensor([[1.0, 0.6, 0.2], [0.6, 1.0, 0.5], [0.2, 0.5, 1.0]])
    target = dist.Gaussian(torch.tensor([0.3, -0.2, 0.1]), cov)
    model = ExactConditionalScores(target)
    x = target.sample(6, generator=torch.Generator().manual_seed(0))
    joint = quadrature.joint_score(model, x, bounds=(-9.0, 9.0), n_nodes=256)
    assert torch.allclose(joint, target.score(x), atol=2e-3)
    assert (model.conditional_scores(x) - target.score(x)).abs().max() > 0.1


def test_joint_score_matches_finite_differences_of_arcsm_log_prob():
    from csm_edu.quadrature import arcsm_log_prob
    torch.manual_seed(0)
    model = ARCSM(4, hidden=16, context_dim=4, head_hidden=8).double()
    x = torch.randn(3, 4, dtype=torch.float64)
    grad = quadrature.joint_score(model, x, bounds=(-5.0, 5.0), n_nodes=64)
    eps = 1e-5
    for j in range(4):
        e = torch.zeros_like(x)
        e[:, j] = eps
        fd = (arcsm_log_prob(model, x + e, bounds=(-5, 5), n_nodes=64) - arcsm_log_prob(model, x - e, bounds=(-5, 5), n_nodes=64)) / (2 * eps)
        assert torch.allclose(grad[:, j], fd, atol=1e-5)


def test_psnr_closed_form_and_denoising_outputs():
    clean = torch.zeros(2, 4)
    assert images.psnr(clean, torch.full((2, 4), 0.1)) == pytest.approx(20.0)
    torch.manual_seed(0)
    model = ARCSM(4, hidden=8, context_dim=2, head_hidden=8, cond_dim=1)
    out = images.denoising_experiment(model, torch.rand(3, 4) * 2 - 1, 0.6, generator=torch.Generator().manual_seed(0),
                                      noise_conditional=True, n_nodes=16)
    assert set(out["psnr"]) == {"noisy", "conditional", "joint"} and out["joint"].shape == (3, 4)
    with pytest.raises(ValueError, match="sigma"):
        images.denoising_experiment(model, torch.zeros(3, 4), 0.0)


def test_training_on_noisy_digits_lowers_the_loss_and_sampling_records_one_state_per_pixel():
    k, _ = images.load_integers("digits", "train", n=256)
    z = images.to_logit_space(k, 17)
    model = images.make_arcsm("made", TINY)
    history = images.train_image_arcsm(model, z, steps=60, batch_size=64, lr=1e-2, noise_sigma=0.1, device="cpu")
    assert sum(history.loss[-10:]) / 10 < sum(history.loss[:10]) / 10
    x, states = images.sample_images(model, 2, TINY, generator=torch.Generator().manual_seed(0), record=True)
    assert states.shape == (65, 2, 64) and torch.equal(states[-1], x)
    changed = (states[1:] != states[:-1]).any(1)                       # (64 pixels, 64 dims)
    assert torch.equal(changed.nonzero()[:, 1], torch.arange(64))      # step t changes pixel t only
    with pytest.raises(ValueError, match="noise_sigma"):
        images.csm_loss(noise_sigma=-1.0)
    rebuilt = images.autoregressive_states(x, model.order)           # the same states, from the finished samples
    generated = torch.zeros(65, 64, dtype=torch.bool)
    for t in range(65):
        generated[t, model.order[:t]] = True
    assert rebuilt.shape == states.shape and torch.equal(rebuilt[-1], x)
    assert torch.equal(rebuilt[:, :, :][generated[:, None, :].expand_as(rebuilt)],
                       states[generated[:, None, :].expand_as(states)])
    assert torch.all(rebuilt[~generated[:, None, :].expand_as(rebuilt)] == 0)
    with pytest.raises(ValueError, match="order"):
        images.autoregressive_states(x, torch.zeros(64, dtype=torch.long))


def test_pixelcnn_backbone_and_baselines_train_and_score():
    k, _ = images.load_integers("digits", "train", n=64)
    models = {"AR-CSM (PixelCNN)": images.make_arcsm("pixelcnn", TINY),
              "GaussianMADE": images.make_baseline("gaussian_made", TINY),
              "PixelCNN++": images.make_baseline("pixelcnn++", TINY)}
    assert isinstance(models["PixelCNN++"], PixelCNNPP) and isinstance(models["GaussianMADE"], GaussianMADE)
    images.train_image_arcsm(models["AR-CSM (PixelCNN)"], images.to_logit_space(k, 17), steps=3, device="cpu")
    for name in ("GaussianMADE", "PixelCNN++"):
        images.train_baseline(models[name], k, 17, steps=3, device="cpu")
    models["AR-CSM (PixelCNN)"].set_support(n_nodes=8)
    table = images.bits_per_dim_table(models, k[:8], 17)
    assert all(math.isfinite(v) and v > 0 for v in table.values())
    assert "| PixelCNN++ |" in images.markdown_table(table)
    rate = images.images_per_second(models["AR-CSM (PixelCNN)"], images.csm_loss(), images.to_logit_space(k, 17), repeats=1)
    assert rate > 0


def test_outlier_sets_and_auroc_table():
    k, labels = images.load_integers("digits", "test", n=40)
    sets = images.outlier_sets(k, 17, k_held_out=k[:5])
    assert set(sets) == {"held-out classes", "flipped", "inverted", "uniform noise"}
    assert torch.equal(sets["inverted"], 16 - k) and int(sets["uniform noise"].max()) <= 16

    class Brightness(torch.nn.Module):
        """log p = -sum z: darker (more negative z) is 'likelier'; inverted digits are bright, so flagged."""
        def log_prob(self, z):
            return -z.sum(1)
    table = images.anomaly_auroc({"brightness": Brightness()}, k, {"inverted": sets["inverted"]}, 17)
    assert table["inverted"]["brightness"] > 0.95
    assert "| inverted |" in images.auroc_markdown(table)


def test_dequantizing_draws_fresh_noise_inside_each_pixel_bin():
    seen = []
    loss = images.dequantizing(lambda model, z: seen.append(z) or z.sum(), levels=17)
    k = torch.tensor([[0.0, 16.0, 8.0]])
    loss(None, k)
    loss(None, k)
    y = [image_data.to_unit(z, "logit", images.LOGIT_LAMBDA) * 17 for z in seen]
    for v in y:
        assert torch.all(v >= k - 1e-4) and torch.all(v < k + 1 + 1e-4)   # y in [k/L, (k+1)/L)
    assert not torch.equal(seen[0], seen[1])
    assert ((seen[0] > images.BOUNDS[0]) & (seen[0] < images.BOUNDS[1])).all()


def test_denoising_progress_bars_are_off_by_default_and_change_nothing(capsys):
    import inspect
    for fn in (images.denoising_experiment, images.denoising_sweep):
        param = inspect.signature(fn).parameters["progress"]
        assert param.kind is inspect.Parameter.KEYWORD_ONLY and param.default is False, fn.__name__
    torch.manual_seed(0)
    model = ARCSM(4, hidden=8, context_dim=2, head_hidden=8, cond_dim=1)
    x = torch.rand(5, 4, generator=torch.Generator().manual_seed(1)) * 2 - 1
    kw = dict(n_nodes=8, chunk_size=2)
    quiet = images.denoising_sweep(model, x, (0.2, 0.6), **kw)
    one = images.denoising_experiment(model, x, 0.6, generator=torch.Generator().manual_seed(0),
                                      noise_conditional=True, **kw)
    assert capsys.readouterr().err == ""                                   # silent by default
    shown = images.denoising_sweep(model, x, (0.2, 0.6), progress=True, **kw)
    err = capsys.readouterr().err
    assert "denoising sweep" in err and "/6" in err                        # 2 sigmas x 3 chunks of <= 2 images
    one_shown = images.denoising_experiment(model, x, 0.6, generator=torch.Generator().manual_seed(0),
                                            noise_conditional=True, progress=True, **kw)
    err = capsys.readouterr().err
    assert "joint score" in err and "/3" in err
    for a, b in [(quiet[0.2], shown[0.2]), (quiet[0.6], shown[0.6]), (one, one_shown), (quiet[0.6], one)]:
        assert a["psnr"] == b["psnr"]
        for name in ("noisy", "conditional", "joint"):
            assert torch.equal(a[name], b[name])
