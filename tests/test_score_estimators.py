"""Score estimators recover known scores: Fisher divergence 1/2 E|s_hat - grad log p|^2 vs the truth.

Tolerances (measured values in brackets, seed 0): the Fisher divergence of the estimate must be
below FRACTION of the Fisher information 1/2 E|grad log p|^2 (the divergence of the zero field).
"""
import pytest
import torch

from csm_edu import distributions as dist, metrics
from csm_edu import score_estimators as S
from csm_edu.models import ExactConditionalScores

GAUSSIAN = dist.Gaussian([0.5, -1.0], [[1.0, 0.8], [0.8, 1.5]])
MIXTURE = dist.GaussianMixture([[-2.0, 0.0], [2.0, 0.5]], [[[1.0, 0.5], [0.5, 1.0]], [[0.5, 0.0], [0.0, 1.0]]])
TARGETS = {"gaussian": GAUSSIAN, "mixture": MIXTURE}


def _information(target, x):
    return metrics.fisher_divergence(lambda z: torch.zeros_like(z), target, x)


@pytest.mark.parametrize("target_name", ["gaussian", "mixture"])
@pytest.mark.parametrize("estimator", [S.SteinGradientEstimator(eta=0.1), S.SpectralSteinGradientEstimator()],
                         ids=["stein", "ssge"])
def test_kernel_estimators_recover_the_score(target_name, estimator):
    # M = 400 samples: Fisher divergence / information ~ 0.05-0.07 (Gaussian), 0.15-0.3 (mixture)
    target = TARGETS[target_name]
    g = torch.Generator().manual_seed(0)
    z = target.sample(400, generator=g)
    z_test = target.sample(1000, generator=g)
    info = _information(target, z_test)
    s_in = estimator.fit_score(z)
    in_sample = metrics.fisher_divergence(lambda a: s_in, target, z)
    out_sample = metrics.fisher_divergence(estimator.score, target, z_test)
    assert in_sample < 0.35 * info and out_sample < 0.35 * info, (in_sample, out_sample, info)


def test_kernel_estimators_improve_with_more_samples_and_batch_over_sets():
    g = torch.Generator().manual_seed(1)
    sets = GAUSSIAN.sample(4 * 400, generator=g).reshape(4, 400, 2)
    for est in (S.SteinGradientEstimator(), S.SpectralSteinGradientEstimator()):
        err = {}
        for m in (25, 400):
            s = est.fit_score(sets[:, :m])
            assert s.shape == (4, m, 2)
            err[m] = metrics.fisher_divergence(lambda a: s.reshape(-1, 2), GAUSSIAN, sets[:, :m].reshape(-1, 2))
            # batched = one set at a time
            single = est.fit_score(sets[1, :m])
            assert torch.allclose(single, s[1], atol=1e-4)
        assert err[400] < 0.6 * err[25], err


def test_stein_out_of_sample_equals_refitting_with_the_point_added():
    # float64: the block-inverse formula is exact, so the two agree to rounding
    z = GAUSSIAN.sample(50, generator=torch.Generator().manual_seed(2)).double()
    new = torch.tensor([[0.3, -0.7], [2.0, 1.0]], dtype=torch.float64)
    est = S.SteinGradientEstimator(eta=0.05, bandwidth=0.8).fit(z)
    out = est.score(new)
    for i in range(len(new)):
        augmented = S.SteinGradientEstimator(eta=0.05, bandwidth=0.8).fit_score(torch.cat([z, new[i:i + 1]]))
        assert torch.allclose(out[i], augmented[-1], atol=1e-8), (out[i], augmented[-1])


@pytest.mark.parametrize("target_name", ["gaussian", "mixture"])
def test_joint_score_from_exact_conditional_scores_is_the_joint_score(target_name):
    # own term + cross terms by differentiating the quadrature through the context: exact to ~1e-8
    target = TARGETS[target_name]
    z = target.sample(150, generator=torch.Generator().manual_seed(3))
    model = ExactConditionalScores(target)
    full = S.joint_score_from_conditionals(model, z, n_nodes=64)
    assert metrics.fisher_divergence(lambda a: full, target, z) < 1e-4
    own_only = S.joint_score_from_conditionals(model, z, cross_terms=False)
    assert metrics.fisher_divergence(lambda a: own_only, target, z) > 0.05      # dropping cross terms is wrong


@pytest.mark.parametrize("target_name", ["gaussian", "mixture"])
@pytest.mark.parametrize("kind", ["ssm", "csm"])
def test_network_estimators_learn_the_score(kind, target_name):
    # 300 Adam steps on 2000 samples: Fisher divergence / information 0.02-0.06 measured
    torch.manual_seed(0)
    target = TARGETS[target_name]
    g = torch.Generator().manual_seed(4)
    z, z_test = target.sample(2000, generator=g), target.sample(1000, generator=g)
    est = (S.SlicedScoreEstimator(2, hidden=32, lr=5e-3) if kind == "ssm"
           else S.CompositeScoreEstimator(2, hidden=32, context_dim=4, head_hidden=16, lr=5e-3))
    for step in range(300):
        est.fit(z[torch.randint(0, len(z), (128,), generator=g)])
    err = metrics.fisher_divergence(lambda a: est.score(a), target, z_test)
    assert err < 0.2 * _information(target, z_test), (err, _information(target, z_test))


def test_conditional_network_estimator_uses_y():
    # q(z | y) = N(y, 0.5^2 I): the SSM network conditioned on y learns -(z - y)/0.25
    torch.manual_seed(0)
    g = torch.Generator().manual_seed(5)
    est = S.SlicedScoreEstimator(2, cond_dim=2, hidden=32, lr=5e-3)
    for _ in range(300):
        y = 2 * torch.rand(128, 2, generator=g) - 1
        est.fit(y + 0.5 * torch.randn(128, 2, generator=g), y)
    y = 2 * torch.rand(500, 2, generator=g) - 1
    z = y + 0.5 * torch.randn(500, 2, generator=g)
    err = 0.5 * ((est.score(z, y) + (z - y) / 0.25) ** 2).sum(1).mean()
    assert err < 0.2 * 0.5 * 2 / 0.25, err                                         # information = D / (2 sigma^2) = 4


def test_bad_inputs_raise():
    with pytest.raises(ValueError, match="eta"):
        S.SteinGradientEstimator(eta=0)
    with pytest.raises(ValueError, match="threshold"):
        S.SpectralSteinGradientEstimator(threshold=1.5)
    with pytest.raises(ValueError, match="samples"):
        S.SteinGradientEstimator().fit(torch.zeros(1, 2))
    with pytest.raises(ValueError, match="fit"):
        S.SpectralSteinGradientEstimator().score(torch.zeros(3, 2))
    with pytest.raises(ValueError, match="cond_dim"):
        S.SlicedScoreEstimator(2, cond_dim=3).fit(torch.zeros(4, 2))
    with pytest.raises(ValueError, match="z must have shape"):
        S.SteinGradientEstimator().fit(torch.randn(10, 2)).score(torch.randn(3, 3))


def _entropy_gradient_per_log_sigma(score, sigma, eps):
    """-E[s_l (z_l - mu_l)] for z = mu + sigma eps: the surrogate's gradient w.r.t. log sigma_l (truth 1)."""
    return -(score * sigma * eps).mean((0, 1))


def test_kernel_estimators_standardised_give_narrow_coordinates_their_entropy_gradient():
    # A VAE-like posterior: 4 narrow coordinates (sigma 0.1) and 4 wide ones (sigma 1), 64 sets of 16.
    # One median bandwidth is set by the wide ones: the narrow ones get ~2-6% of their entropy gradient
    # [0.06 Stein, 0.02 SSGE]; standardising each set gives all coordinates the same [0.65, 0.75].
    torch.manual_seed(0)
    sigma = torch.cat([0.1 * torch.ones(4), torch.ones(4)])
    eps = torch.randn(64, 16, 8)
    z = torch.randn(64, 1, 8) + sigma * eps
    for cls in (S.SteinGradientEstimator, S.SpectralSteinGradientEstimator):
        plain = _entropy_gradient_per_log_sigma(cls().fit_score(z), sigma, eps)
        std = _entropy_gradient_per_log_sigma(cls(standardize=True).fit_score(z), sigma, eps)
        assert plain[:4].mean() < 0.15, (cls.name, plain)
        assert (std > 0.5).all() and (std < 1.1).all(), (cls.name, std)
        assert (std[:4].mean() - std[4:].mean()).abs() < 0.1, (cls.name, std)


@pytest.mark.parametrize("cls", [S.SteinGradientEstimator, S.SpectralSteinGradientEstimator], ids=["stein", "ssge"])
def test_standardised_kernel_estimators_are_equivariant_to_coordinate_scaling(cls):
    # The true score obeys grad_z log q(m + c * u) = grad_u log q_u(u) / c; so must the standardised estimate,
    # in sample and out of sample.
    z = GAUSSIAN.sample(60, generator=torch.Generator().manual_seed(4)).double()
    new = torch.tensor([[0.3, -0.7], [1.0, 0.0]], dtype=torch.float64)
    c, m = torch.tensor([0.05, 3.0], dtype=torch.float64), torch.tensor([1.0, -2.0], dtype=torch.float64)
    est, est_scaled = cls(standardize=True), cls(standardize=True)
    assert torch.allclose(est_scaled.fit_score(m + c * z), est.fit_score(z) / c, rtol=1e-6, atol=1e-8)
    assert torch.allclose(est_scaled.score(m + c * new), est.score(new) / c, rtol=1e-6, atol=1e-8)


@pytest.mark.parametrize("cls", [S.SteinGradientEstimator, S.SpectralSteinGradientEstimator], ids=["stein", "ssge"])
def test_fully_standardised_kernel_estimators_are_affine_equivariant_and_see_rotated_collapse(cls):
    # "full" whitening: for z' = m + A z, A lower triangular, the estimate maps as s' = s A^{-1}, like the truth
    z = GAUSSIAN.sample(60, generator=torch.Generator().manual_seed(5)).double()
    new = torch.tensor([[0.3, -0.7], [1.0, 0.0]], dtype=torch.float64)
    A = torch.tensor([[0.2, 0.0], [1.5, 3.0]], dtype=torch.float64)
    m = torch.tensor([1.0, -2.0], dtype=torch.float64)
    est, est_mapped = cls(standardize="full"), cls(standardize="full")
    A_inv = torch.linalg.inv(A)
    assert torch.allclose(est_mapped.fit_score(m + z @ A.T), est.fit_score(z) @ A_inv, rtol=1e-4, atol=1e-6)
    assert torch.allclose(est_mapped.score(m + new @ A.T), est.score(new) @ A_inv, rtol=1e-4, atol=1e-6)
    # a set squeezed along the diagonal direction (sd 0.05) but with unit spread in each coordinate: the
    # entropy gradient along the squeezed direction, -E[s^T v (v^T (z - mu))] (truth 1), is lost by the
    # per-coordinate version [~0.1] and kept by the full one [~0.7]
    torch.manual_seed(6)
    v = torch.tensor([1.0, 1.0, 0.0, 0.0]) / 2 ** 0.5
    w = torch.tensor([1.0, -1.0, 0.0, 0.0]) / 2 ** 0.5
    eps = torch.randn(32, 64, 4)
    scales = torch.tensor([0.05, 1.4, 1.0, 1.0])
    basis = torch.stack([v, w, torch.eye(4)[2], torch.eye(4)[3]])     # rows: directions
    z = (eps * scales) @ basis
    along = {}
    for mode in ("diagonal", "full"):
        s = cls(standardize=mode).fit_score(z)
        along[mode] = float(-((s @ v) * (z @ v)).mean())
    assert along["diagonal"] < 0.3 and along["full"] > 0.5, along
