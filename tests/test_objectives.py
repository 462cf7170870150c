"""Objectives against closed forms on a Gaussian energy E(x) = 1/2 (x-mu)^T A (x-mu)."""
import math

import pytest
import torch

from csm_edu import distributions, models, objectives
from csm_edu.models import EnergyMLP, ScoreMLP


class QuadraticEnergy(torch.nn.Module):
    """E(x) = 1/2 (x - mu)^T A (x - mu); its score is -A (x - mu) and tr(grad s) = -tr(A)."""

    def __init__(self, mu, a):
        super().__init__()
        self.mu, self.a = mu, a

    def energy(self, x):
        d = x - self.mu
        return 0.5 * ((d @ self.a) * d).sum(1)

    def score(self, x):
        from csm_edu.models import score_from_energy
        return score_from_energy(self.energy, x)


def _quadratic(dim=3, seed=0):
    g = torch.Generator().manual_seed(seed)
    b = torch.randn(dim, dim, generator=g)
    a = b @ b.T / dim + 0.5 * torch.eye(dim)
    mu = torch.randn(dim, generator=g)
    x = torch.randn(256, dim, generator=g) * 1.5
    return QuadraticEnergy(mu, a), mu, a, x


def _closed_form(mu, a, x):
    return float((0.5 * (((x - mu) @ a) ** 2).sum(1)).mean() - torch.trace(a))


def test_exact_sm_equals_closed_form():
    model, mu, a, x = _quadratic()
    assert objectives.exact_score_matching(model.score, x).item() == pytest.approx(_closed_form(mu, a, x), rel=1e-5, abs=1e-5)


@pytest.mark.parametrize("projection", ["gaussian", "rademacher"])
@pytest.mark.parametrize("vr", [False, True])
def test_sliced_sm_agrees_within_standard_errors(projection, vr):
    model, mu, a, x = _quadratic()
    exact = _closed_form(mu, a, x)
    g = torch.Generator().manual_seed(1)
    estimates = torch.tensor([objectives.sliced_score_matching(model.score, x, n_projections=8, projection=projection,
                                                               variance_reduction=vr, generator=g).item() for _ in range(40)])
    se = estimates.std() / math.sqrt(len(estimates))
    assert abs(estimates.mean().item() - exact) < 4 * se + 1e-4
    assert se < 0.2  # the estimator is informative, not just noisy


def test_variance_reduction_lowers_variance():
    model, mu, a, x = _quadratic()
    g = torch.Generator().manual_seed(2)
    plain = torch.tensor([objectives.sliced_score_matching(model.score, x, generator=g).item() for _ in range(30)])
    vr = torch.tensor([objectives.sliced_score_matching(model.score, x, variance_reduction=True, generator=g).item() for _ in range(30)])
    assert vr.var() < plain.var()


def test_dsm_expectation_is_sm_loss_of_noised_data():
    """For data N(m, S), the noised score -P(x - m), P = (S + sigma^2 I)^-1, gives E[DSM] = -tr(P)/2."""
    target = distributions.correlated_gaussian(2, rho=0.6)
    sigma = 0.5
    p = torch.linalg.inv(target.cov + sigma ** 2 * torch.eye(2))
    x = target.sample(200_000, generator=torch.Generator().manual_seed(0))
    loss = objectives.denoising_score_matching(lambda y: -y @ p, x, sigma, generator=torch.Generator().manual_seed(1))
    assert loss.item() == pytest.approx(-0.5 * torch.trace(p).item(), abs=0.01)


def test_dsm_minimiser_is_noised_gaussian_score():
    """Fit a linear score s(x) = W x + b by minimising DSM: W -> -(Sigma + sigma^2 I)^-1, b -> 0."""
    target = distributions.Gaussian([1.0, -1.0], [[1.0, 0.5], [0.5, 2.0]])
    sigma = 0.7
    x = target.sample(50_000, generator=torch.Generator().manual_seed(0))
    lin = torch.nn.Linear(2, 2)
    opt = torch.optim.LBFGS(lin.parameters(), lr=1, max_iter=200, line_search_fn="strong_wolfe")

    def closure():
        opt.zero_grad()
        loss = objectives.denoising_score_matching(lin, x, sigma, generator=torch.Generator().manual_seed(3))
        loss.backward()
        return loss

    opt.step(closure)
    precision = torch.linalg.inv(target.cov + sigma ** 2 * torch.eye(2))
    assert torch.allclose(lin.weight.detach(), -precision, atol=0.03)
    assert torch.allclose(lin.bias.detach(), precision @ target.mean, atol=0.03)


def test_multiscale_dsm_single_level_matches_scaled_dsm():
    target = distributions.correlated_gaussian(2, rho=0.3)
    x = target.sample(100_000, generator=torch.Generator().manual_seed(0))
    sigma = 0.8
    p = torch.linalg.inv(target.cov + sigma ** 2 * torch.eye(2))
    loss = objectives.multiscale_dsm(lambda y, s: -y @ p, x, [sigma], generator=torch.Generator().manual_seed(1))
    assert loss.item() == pytest.approx(-0.5 * sigma ** 2 * torch.trace(p).item(), abs=0.01)


def test_geometric_sigmas():
    s = objectives.geometric_sigmas(10.0, 0.1, 5)
    assert s[0].item() == pytest.approx(10.0) and s[-1].item() == pytest.approx(0.1)
    ratios = s[1:] / s[:-1]
    assert torch.allclose(ratios, ratios[0].expand_as(ratios), rtol=1e-4)


@pytest.mark.parametrize("make_model", [lambda: EnergyMLP(2, 32), lambda: ScoreMLP(2, 32)])
def test_same_call_works_for_energy_and_score_models(make_model):
    model = make_model()
    x = torch.randn(16, 2)
    for loss in (objectives.exact_score_matching(model.score, x),
                 objectives.sliced_score_matching(model.score, x, n_projections=2),
                 objectives.denoising_score_matching(model.score, x, 0.1)):
        loss.backward()
        first_layer = model.net[0].weight  # (the energy's output bias cannot affect its score)
        assert first_layer.grad is not None and first_layer.grad.abs().sum() > 0
        model.zero_grad()


def test_exact_sm_on_energy_mlp_matches_brute_force_jacobian():
    model = EnergyMLP(3, 16)
    x = torch.randn(5, 3)
    loss = objectives.exact_score_matching(model.score, x)
    brute = 0.0
    for xi in x:
        s = model.score(xi[None])[0]
        jac = torch.autograd.functional.jacobian(lambda y: model.score(y[None])[0], xi)
        brute += 0.5 * (s ** 2).sum().item() + torch.trace(jac).item()
    assert loss.item() == pytest.approx(brute / len(x), rel=1e-4, abs=1e-5)


@pytest.mark.parametrize("method", ["loop", "batched", "vmap", "auto"])
@pytest.mark.parametrize("dim,chunk_size", [(1, None), (3, None), (8, None), (8, 3), (8, 1), (5, 99)])
def test_trace_methods_equal_the_closed_form_of_a_gaussian_energy(method, dim, chunk_size):
    model, mu, a, x = _quadratic(dim)
    kwargs = {} if method == "loop" else dict(chunk_size=chunk_size)
    s, trace = objectives.score_and_trace(model.score, x, method=method, **kwargs)
    assert torch.allclose(s, -(x - mu) @ a, atol=1e-5)
    assert torch.allclose(trace, torch.full_like(trace, -torch.trace(a).item()), atol=1e-4)
    loss = objectives.exact_score_matching(model.score, x, trace=method, **kwargs)
    assert loss.item() == pytest.approx(_closed_form(mu, a, x), rel=1e-5, abs=1e-5)


@pytest.mark.parametrize("make_model", [lambda: EnergyMLP(5, 16), lambda: ScoreMLP(5, 16)])
def test_vectorised_traces_equal_the_loop_in_value_and_weight_gradient(make_model):
    torch.manual_seed(0)
    model = make_model()
    x = torch.randn(9, 5)
    variants = [("loop", None), ("vmap", None), ("vmap", 2), ("batched", None), ("batched", 2), ("batched", 3),
                ("auto", None)]                       # chunk sizes 2 and 3 do not divide D = 5
    grads = []
    for method, chunk_size in variants:
        loss = objectives.exact_score_matching(model.score, x, trace=method, chunk_size=chunk_size)
        loss.backward()
        grads.append([p.grad.clone() if p.grad is not None else torch.zeros_like(p) for p in model.parameters()])
        model.zero_grad(set_to_none=True)
        s, trace = objectives.score_and_trace(model.score, x, method=method, chunk_size=chunk_size)
        grads[-1] += [s.detach(), trace.detach()]
    assert any(g.abs().sum() > 0 for g in grads[0][:-2])
    for other in grads[1:]:
        for g_loop, g_other in zip(grads[0], other):
            assert torch.allclose(g_loop, g_other, atol=1e-6, rtol=1e-5)


def test_batched_trace_handles_scores_torch_func_cannot_trace_and_auto_falls_back_to_the_loop():
    def score(x):                      # data-dependent control flow: fine for the batched backward
        return -x if float(x.detach().abs().max()) < 1e6 else x
    x = torch.randn(6, 5)
    _, trace = objectives.score_and_trace_batched(score, x, chunk_size=2)
    assert torch.allclose(trace, torch.full((6,), -5.0))

    class Halve(torch.autograd.Function):     # a backward that cannot be batched (.item())
        @staticmethod
        def forward(ctx, z):
            return 0.5 * z

        @staticmethod
        def backward(ctx, grad):
            return grad * (0.5 + 0.0 * grad.sum().item())

    with pytest.raises(RuntimeError):
        objectives.score_and_trace_batched(Halve.apply, x)
    _, trace = objectives.score_and_trace(Halve.apply, x)          # auto: the loop
    assert torch.allclose(trace, torch.full((6,), 2.5))
    with pytest.raises(ValueError, match="chunk_size"):
        objectives.score_and_trace(score, x, method="batched", chunk_size=0)
    with pytest.raises(TypeError, match="autograd"):
        objectives.score_and_trace_batched(lambda z: z.detach(), x)


def test_auto_handles_a_score_torch_func_cannot_trace():
    def score(x):                      # data-dependent control flow: vmap cannot batch it
        return -x if float(x.detach().abs().max()) < 1e6 else x
    x = torch.randn(6, 5)
    with pytest.raises(RuntimeError):
        objectives.score_and_trace_vmap(score, x)
    _, trace = objectives.score_and_trace(score, x)          # auto: batched backward passes, plain forward
    assert torch.allclose(trace, torch.full((6,), -5.0))
    with pytest.raises(ValueError, match="trace"):
        objectives.exact_score_matching(score, x, trace="jacobian")
    with pytest.raises(ValueError, match="score_fn must return"):
        objectives.score_and_trace_vmap(lambda z: z[:, :1], x)


@pytest.mark.parametrize("depth", [1, 2, 3])
def test_forward_laplacian_equals_the_loop_for_energy_mlps(depth):
    torch.manual_seed(0)
    model = EnergyMLP(4, 12, depth)
    x = torch.randn(7, 4)
    results = []
    for method in ("loop", "forward", "batched"):
        s, trace = objectives.score_and_trace(model.score, x, method=method)
        loss = objectives.exact_score_matching(model.score, x, trace=method)
        loss.backward()
        grads = [p.grad.clone() if p.grad is not None else torch.zeros_like(p) for p in model.parameters()]
        model.zero_grad(set_to_none=True)
        results.append([s.detach(), trace.detach(), loss.detach()] + grads)
    assert results[0][-len(grads)].abs().sum() > 0
    for other in results[1:]:
        for a, b in zip(results[0], other):
            assert torch.allclose(a, b, atol=1e-6, rtol=1e-5)


def test_forward_laplacian_refuses_scores_it_cannot_read():
    from torch import nn
    model = EnergyMLP(3, 8)
    x = torch.randn(4, 3)
    with pytest.raises(TypeError, match="EnergyMLP"):
        objectives.score_and_trace(lambda z: model.score(z), x, method="forward")
    model.net = models.mlp([3, 8, 8, 1], activation=nn.Tanh)                   # not SiLU: auto goes generic
    with pytest.raises(TypeError, match="EnergyMLP"):
        objectives.score_and_trace_forward(model, x)
    _, auto = objectives.score_and_trace(model.score, x)
    _, loop = objectives.score_and_trace(model.score, x, method="loop")
    assert torch.allclose(auto, loop, atol=1e-6)
    with pytest.raises(ValueError, match="x"):
        objectives.score_and_trace(EnergyMLP(3, 8).score, torch.randn(4, 2), method="forward")
