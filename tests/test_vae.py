"""VAE pieces against closed forms on a linear-Gaussian model, and the entropy-gradient surrogate."""
import math

import pytest
import torch

from csm_edu import score_estimators as S
from csm_edu.experiments import vae_study
from csm_edu import vae as V


def _linear_gaussian_vae(latent=2, data=3, sigma=0.5, seed=0):
    """Gaussian encoder + linear decoder x = W z + b + sigma * noise; marginal N(b, W W^T + sigma^2 I)."""
    torch.manual_seed(seed)
    decoder = V.Decoder(latent, data, hidden=(), likelihood="gaussian", log_std=math.log(sigma))
    encoder = V.GaussianEncoder(data, latent, hidden=(8,))
    return V.VAE(encoder, decoder)


def _exact_marginal(vae, x):
    lin = vae.decoder.net[0]
    cov = lin.weight @ lin.weight.T + vae.decoder.log_std.exp() ** 2 * torch.eye(lin.weight.shape[0])
    return torch.distributions.MultivariateNormal(lin.bias, cov).log_prob(x)


def test_gaussian_elbo_matches_the_closed_form():
    vae = _linear_gaussian_vae()
    x = torch.randn(4, 3)
    torch.manual_seed(1)
    with torch.no_grad():
        mc = V.gaussian_elbo(vae, x, n_samples=200000)
        mu, log_s = vae.encoder.params(x)
        lin, sigma = vae.decoder.net[0], float(vae.decoder.log_std.exp())
        W, b, s2 = lin.weight, lin.bias, (2 * log_s).exp()
        resid = x - mu @ W.T - b
        expected_sq = (resid ** 2).sum(1) + (s2 @ (W ** 2).T).sum(1)            # E|x - Wz - b|^2
        recon = -0.5 * expected_sq / sigma ** 2 - 3 * (math.log(sigma) + 0.5 * math.log(2 * math.pi))
        prior = -0.5 * ((mu ** 2).sum(1) + s2.sum(1)) - math.log(2 * math.pi)
        entropy = (log_s + 0.5 * (math.log(2 * math.pi) + 1)).sum(1)
        closed = recon + prior + entropy
    assert torch.allclose(mc, closed, atol=0.05), (mc, closed)                    # ~4 Monte-Carlo standard errors
    assert (closed <= _exact_marginal(vae, x) + 1e-5).all()                      # the ELBO is a lower bound


def test_importance_log_likelihood_is_a_lower_bound_that_tightens_with_k():
    vae = _linear_gaussian_vae()
    x = torch.randn(32, 3) * 1.5
    exact = _exact_marginal(vae, x).detach()
    torch.manual_seed(2)
    gaps = {}
    for proposal in ("fitted", "encoder", "prior"):
        for k in (1, 20000):
            est = V.importance_log_likelihood(vae, x, n_importance=k, proposal=proposal)
            gaps[proposal, k] = float((exact - est).mean())
    for proposal in ("fitted", "encoder", "prior"):
        assert gaps[proposal, 1] > 0.05, gaps                                   # K = 1: the ELBO-like gap
        assert -0.02 < gaps[proposal, 20000] < 0.05, gaps                        # K large: close to exact, from below
        assert gaps[proposal, 20000] < gaps[proposal, 1]


def test_entropy_surrogate_has_the_entropy_gradient_of_a_gaussian_implicit_encoder():
    # z = m + A eps, A lower triangular: H = sum log|A_ii| + const, dH/dA = diag(1/A_ii), dH/dm = 0.
    # The exact score is -(A A^T)^{-1} (z - m) = -A^{-T} eps; E[-d/dA s^T z] = E[A^{-T} eps eps^T] = A^{-T}.
    torch.manual_seed(3)
    m = torch.tensor([0.3, -1.0], requires_grad=True)
    A = torch.tensor([[1.5, 0.0], [0.7, 0.5]], requires_grad=True)
    eps = torch.randn(200000, 2)
    z = m + eps @ A.T
    with torch.no_grad():
        score = -torch.linalg.solve(A @ A.T, (z - m).T).T
    V.entropy_surrogate(z, score).backward()
    expected = torch.tensor([[1 / 1.5, 0.0], [0.0, 1 / 0.5]])
    assert torch.allclose(torch.tril(A.grad), expected, atol=0.02), A.grad
    assert m.grad.abs().max() < 0.02
    # a kernel estimate of the score gives nearly the same gradient (8 sets of 200 samples)
    A.grad, m.grad = None, None
    z = (m + torch.randn(8, 200, 2) @ A.T)
    V.entropy_surrogate(z, S.SpectralSteinGradientEstimator().fit_score(z.detach())).mean().backward()
    assert torch.allclose(torch.tril(A.grad), expected, atol=0.35), A.grad


def test_training_improves_the_is_log_likelihood_on_digits():
    torch.manual_seed(0)
    x = V.load_binary_images("digits", "train")[:400]
    baseline = V.independent_bernoulli_log_likelihood(x, x)
    for kind, est, m in (("gaussian", None, 1), ("implicit", S.SpectralSteinGradientEstimator(), 8)):
        vae = V.make_vae(kind, 64, 4, hidden=(64,))
        before = float(V.importance_log_likelihood(vae, x[:100], n_importance=50).mean())
        hist = V.train_vae(vae, x, est, steps=150, batch_size=64, n_samples=m, lr=3e-3, device="cpu")
        after = float(V.importance_log_likelihood(vae, x[:100], n_importance=50).mean())
        assert len(hist.loss) == 150 and after > before + 5, (kind, before, after)
        assert after > baseline - 5, (kind, after, baseline)
    assert vae.generate(6).shape == (6, 64)


def test_bad_inputs_raise():
    with pytest.raises(ValueError, match="likelihood"):
        V.Decoder(2, 3, likelihood="poisson")
    vae = V.make_vae("implicit", 4, 2, hidden=(8,))
    with pytest.raises(ValueError, match="estimator"):
        V.train_vae(vae, torch.zeros(10, 4), None, steps=1, device="cpu")
    with pytest.raises(ValueError, match="Gaussian encoder"):
        V.importance_log_likelihood(vae, torch.zeros(3, 4), n_importance=5, proposal="encoder")
    with pytest.raises(ValueError, match="score must have the shape"):
        V.entropy_surrogate(torch.zeros(2, 3, 2), torch.zeros(2, 3, 1))
    with pytest.raises(ValueError, match="columns"):
        V.importance_log_likelihood(vae, torch.zeros(3, 5), n_importance=5)


def test_implicit_encoder_starts_with_a_full_rank_spread():
    # noise_skip (default): q(z|x) at initialisation spreads in every direction (smallest sd of the
    # per-image covariance ~0.6-0.8); the plain MLP([x, eps]) starts near a point and rank-deficient (~0.01)
    torch.manual_seed(0)
    x = V.load_binary_images("digits", "test")[:8]
    smallest = {}
    for skip in (True, False):
        enc = V.ImplicitEncoder(64, 16, hidden=(64, 64), noise_skip=skip)
        with torch.no_grad():
            z = enc.sample(x, 400)
        c = z - z.mean(1, keepdim=True)
        smallest[skip] = float(torch.linalg.eigvalsh(c.transpose(1, 2) @ c / 399)[:, 0].clamp_min(0).sqrt().mean())
    assert smallest[True] > 0.4 and smallest[False] < 0.1, smallest
    assert V.make_vae("implicit", 64, 4, noise_skip=False).encoder.skip is None


def test_ssm_trained_implicit_encoder_stays_collapsed_without_the_noise_skip():
    # The mechanism behind the L = 32 gap of SSM / CSM: the plain MLP([x, eps]) starts near a point,
    # the score network cannot follow its ~1/sd score, the entropy gradient is too weak and q(z|x)
    # keeps several directions at sd ~ 0.03; with the noise skip (unit-spread start) it keeps them ~0.8.
    from csm_edu.widgets import lesson12

    x = V.load_binary_images("digits", "train")
    third_smallest = {}
    for skip in (False, True):
        torch.manual_seed(0)
        model = V.make_vae("implicit", 64, 16, hidden=(64, 64), noise_skip=skip)
        est = vae_study.make_estimator("SSM", dim=16, cond_dim=64, hidden=64, lr=1e-3, steps_per_fit=5)
        V.train_vae(model, x, est, steps=200, n_samples=4, lr=1e-3, device="cpu")
        with torch.no_grad():
            z = model.encoder.sample(x[:16], 200)
        c = z - z.mean(1, keepdim=True)
        sd = torch.linalg.eigvalsh(c.transpose(1, 2) @ c / 199).clamp_min(0).sqrt()
        third_smallest[skip] = float(sd[:, 2].median())
    assert third_smallest[False] < 0.1 and third_smallest[True] > 0.4, third_smallest


def test_vae_experiment_gives_the_noise_skip_to_the_network_estimators_only():
    from csm_edu.widgets import lesson12

    torch.manual_seed(0)
    x = V.load_binary_images("digits", "train")[:100]
    kwargs = dict(latent_dims=(2,), n_steps=2, hidden=(8,), kernel_samples=4, network_samples=2, n_importance=5)
    _, _, models = vae_study.run_vae_experiment(x, x[:10], **kwargs)   # default noise_skip="networks"
    has_skip = {method: m.encoder.skip is not None for (_, method), m in models.items() if method != "Gaussian encoder"}
    assert has_skip == {"implicit + SSM": True, "implicit + Stein": False, "implicit + SSGE": False,
                        "implicit + CSM": True}, has_skip
    _, _, models = vae_study.run_vae_experiment(x, x[:10], methods=("implicit + SSM", "implicit + Stein"),
                                               noise_skip=False, **kwargs)
    assert all(m.encoder.skip is None for m in models.values())
    with pytest.raises(ValueError, match="noise_skip"):
        vae_study.run_vae_experiment(x, x[:10], noise_skip="kernels", **kwargs)


def test_fit_estimators_progress_bar_is_off_by_default_and_changes_nothing(capsys):
    import inspect
    param = inspect.signature(vae_study.fit_estimators).parameters["progress"]
    assert param.kind is inspect.Parameter.KEYWORD_ONLY and param.default is False
    kw = dict(sample_sizes=(20, 40), names=("Stein", "SSM"), n_steps=30, n_test=100)
    quiet = vae_study.fit_estimators(**kw)
    assert capsys.readouterr().err == ""                                   # silent by default
    shown = vae_study.fit_estimators(progress=True, **kw)
    err = capsys.readouterr().err
    assert "score estimators" in err and "/4" in err                       # a bar over the 2 x 2 fits
    assert list(quiet) == list(shown)                                      # same fits, same order
    for key in quiet:
        assert quiet[key]["fisher"] == shown[key]["fisher"], key           # same draws, same numbers
