"""AR-CSM: MADE masks, the one-backward-pass diagonal, composite score matching, baselines, sampler."""
import math

import pytest
import torch
from torch import nn

from csm_edu import distributions as dist
from csm_edu import objectives, sampling
from csm_edu.models import ARCSM, AutoregressiveScoreModel, GaussianMADE, MixtureMADE
from csm_edu.models.arcsm import marginal, target_conditional_log_probs, target_conditional_scores
from csm_edu.models.made import MaskedLinear, ResMADE, mask_from_degrees

ORDERS = {2: [1, 0], 5: [3, 0, 4, 2, 1], 10: None}


def _randomise(module, scale=0.3, seed=0):
    """Perturb every parameter (the zero-initialised residual outputs too), so that masks are really tested."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.add_(scale * torch.randn(p.shape, generator=g, dtype=p.dtype))
    return module


def _position(order, dim):
    order = list(range(dim)) if order is None else order
    pos = torch.empty(dim, dtype=torch.long)
    pos[torch.tensor(order)] = torch.arange(dim)
    return pos


@pytest.mark.parametrize("dim", [2, 5, 10])
def test_context_depends_only_on_earlier_variables(dim):
    order = ORDERS[dim]
    net = _randomise(ResMADE(dim, context_dim=3, hidden=32, n_blocks=2, order=order).double())
    x = torch.randn(dim, dtype=torch.float64)
    jac = torch.autograd.functional.jacobian(lambda v: net(v[None])[0], x)       # (D, C, D)
    pos = _position(order, dim)
    allowed = pos[None, :] < pos[:, None]                                        # [d, j]: j before d
    dependence = jac.abs().sum(1)
    assert torch.all(dependence[~allowed] == 0)
    assert torch.all(dependence[allowed] > 0)                                    # the masks are not all zero
    assert torch.equal(net.connectivity().bool(), allowed)


@pytest.mark.parametrize("head", ["mlp", "local_mean"])
@pytest.mark.parametrize("dim", [2, 5, 10])
def test_score_jacobian_is_lower_triangular_with_the_returned_diagonal(dim, head):
    order = ORDERS[dim]
    model = _randomise(ARCSM(dim, hidden=32, n_blocks=2, context_dim=4, head_hidden=16, order=order, head=head).double())
    x = torch.randn(3, dim, dtype=torch.float64)
    s, diag = model.scores_and_diagonal(x)
    pos = _position(order, dim)
    later = pos[None, :] > pos[:, None]                                          # [d, j]: j after d
    for i in range(len(x)):
        jac = torch.autograd.functional.jacobian(lambda v: model.conditional_scores(v[None])[0], x[i])
        assert torch.all(jac[later] == 0)
        assert torch.allclose(torch.diagonal(jac), diag[i], atol=1e-10)
        assert torch.allclose(model.conditional_scores(x[i:i + 1])[0], s[i])
        assert jac[~later].abs().sum() > 0


def test_composite_score_matching_equals_brute_force_and_trains_parameters():
    model = _randomise(ARCSM(3, hidden=16, context_dim=4, head_hidden=8).double())
    x = torch.randn(6, 3, dtype=torch.float64)
    loss = objectives.composite_score_matching(model, x)
    brute = 0.0
    for row in x:
        jac = torch.autograd.functional.jacobian(lambda v: model.conditional_scores(v[None])[0], row)
        s = model.conditional_scores(row[None])[0]
        brute += float((0.5 * s ** 2 + torch.diagonal(jac)).sum().detach()) / len(x)
    assert abs(float(loss.detach()) - brute) < 1e-10
    loss.backward()
    assert model.head_x.grad is not None and model.head_x.grad.abs().sum() > 0
    assert model.backbone.input_layer.weight.grad.abs().sum() > 0


def test_scores_and_diagonal_keeps_gradients_with_respect_to_x():
    model = _randomise(ARCSM(2, hidden=16, context_dim=4, head_hidden=8).double())
    x = torch.randn(4, 2, dtype=torch.float64, requires_grad=True)
    s, diag = model.scores_and_diagonal(x)
    (g_full,) = torch.autograd.grad(s.sum(), x)
    (g_ref,) = torch.autograd.grad(model.conditional_scores(x).sum(), x)
    assert torch.allclose(g_full, g_ref)
    with torch.no_grad():
        s2, d2 = model.scores_and_diagonal(x.detach())
    assert not s2.requires_grad and torch.allclose(d2, diag.detach())


class LinearGaussianScores(AutoregressiveScoreModel):
    r"""s_d = -(x_d - b_d - sum_{j<d} W_dj x_j) * lambda_d: the conditionals of a Gaussian (order 0..D-1)."""

    def __init__(self, dim):
        super().__init__()
        self.dim = dim
        self.register_buffer("order", torch.arange(dim))
        self.register_buffer("mask", torch.tril(torch.ones(dim, dim, dtype=torch.float64), -1))
        self.weight = nn.Parameter(torch.zeros(dim, dim, dtype=torch.float64))
        self.bias = nn.Parameter(torch.zeros(dim, dtype=torch.float64))
        self.log_precision = nn.Parameter(torch.zeros(dim, dtype=torch.float64))

    @classmethod
    def from_gaussian(cls, target):
        """The exact conditionals of N(mu, Sigma): regression of x_d on x_<d."""
        dim = target.dim
        model = cls(dim)
        cov, mu = target.cov.double(), target.mean.double()
        with torch.no_grad():
            for d in range(dim):
                coef = torch.linalg.solve(cov[:d, :d], cov[:d, d]) if d else torch.zeros(0, dtype=torch.float64)
                model.weight[d, :d] = coef
                model.bias[d] = mu[d] - coef @ mu[:d]
                model.log_precision[d] = -torch.log(cov[d, d] - cov[:d, d] @ coef)
        return model

    def context(self, x, y=None):
        return (x @ (self.weight * self.mask).T + self.bias).unsqueeze(-1)

    def head(self, context, x, dims=None):
        lp = self.log_precision if dims is None else self.log_precision[dims]
        return -(x - context[..., 0]) * lp.exp()


def test_csm_at_the_true_conditionals_equals_its_closed_form_and_is_minimal():
    target = dist.Gaussian([0.5, -1.0, 0.0], [[1.0, 0.6, 0.2], [0.6, 2.0, -0.5], [0.2, -0.5, 0.8]])
    x = target.sample(200_000, generator=torch.Generator().manual_seed(0)).double()
    model = LinearGaussianScores.from_gaussian(target)
    closed_form = -0.5 * float(model.log_precision.detach().exp().sum())                  # -1/2 sum_d 1/var_d
    with torch.no_grad():
        assert abs(float(objectives.composite_score_matching(model, x)) - closed_form) < 0.02
    with torch.no_grad():
        loss_true = float(objectives.composite_score_matching(model, x[:20000]))
        model.weight[2, 0] += 0.2
        model.log_precision[1] -= 0.2
        assert float(objectives.composite_score_matching(model, x[:20000])) > loss_true + 0.01


def test_csm_minimiser_is_the_regression_of_each_variable_on_the_earlier_ones():
    target = dist.Gaussian([1.0, -0.5, 2.0], [[1.0, 0.7, 0.3], [0.7, 1.5, -0.4], [0.3, -0.4, 0.6]])
    x = target.sample(2000, generator=torch.Generator().manual_seed(1)).double()
    model = LinearGaussianScores(3)
    opt = torch.optim.LBFGS(model.parameters(), lr=1.0, max_iter=200, tolerance_grad=1e-12,
                            tolerance_change=1e-14, line_search_fn="strong_wolfe")

    def closure():
        opt.zero_grad()
        loss = objectives.composite_score_matching(model, x)
        loss.backward()
        return loss

    opt.step(closure)
    # the CSM minimiser on a sample is ordinary least squares of x_d on (1, x_<d), precision = 1 / residual variance
    for d in range(3):
        design = torch.cat([torch.ones(len(x), 1, dtype=torch.float64), x[:, :d]], 1)
        coef = torch.linalg.lstsq(design, x[:, d:d + 1]).solution.flatten()
        resid_var = float(((x[:, d] - design @ coef) ** 2).mean())
        assert abs(float(model.bias[d].detach()) - float(coef[0])) < 1e-4
        assert torch.allclose(model.weight[d, :d].detach(), coef[1:], atol=1e-4)
        assert abs(float(model.log_precision[d].detach()) + math.log(resid_var)) < 1e-4
    truth = LinearGaussianScores.from_gaussian(target)          # and it is close to the population conditionals
    assert torch.allclose(model.weight * model.mask, truth.weight * truth.mask, atol=0.1)
    assert torch.allclose(model.log_precision, truth.log_precision, atol=0.1)


def test_autoregressive_langevin_reproduces_a_correlated_gaussian():
    target = dist.Gaussian([1.0, -1.0], [[1.0, 0.8], [0.8, 1.0]])
    model = LinearGaussianScores.from_gaussian(target).float()
    x = sampling.autoregressive_langevin(model, 4000, steps=300, step_size=0.02,
                                         generator=torch.Generator().manual_seed(0))
    assert torch.allclose(x.mean(0), target.mean, atol=0.06)
    assert torch.allclose(torch.cov(x.T), target.cov, atol=0.08)
    _, traj = sampling.autoregressive_langevin(model, 5, steps=3, step_size=0.02, sigmas=[1.0, 0.5], record_every=1)
    assert traj.shape == (1 + 2 * 2 * 3, 5, 2)


def test_reflect_folds_into_the_box():
    x = torch.tensor([0.5, -0.25, 2.5, 4.5, -3.0, 7.0])
    assert torch.allclose(sampling.reflect(x, 0.0, 2.0), torch.tensor([0.5, 0.25, 1.5, 0.5, 1.0, 1.0]))


def _standard_normal_mean_on(lo, hi):
    """Mean of N(0, 1) restricted to [lo, hi]: (phi(lo) - phi(hi)) / (Phi(hi) - Phi(lo))."""
    normal = torch.distributions.Normal(0.0, 1.0)
    lo, hi = torch.tensor(lo), torch.tensor(hi)
    return (normal.log_prob(lo).exp() - normal.log_prob(hi).exp()) / (normal.cdf(hi) - normal.cdf(lo))


def test_reflected_autoregressive_langevin_samples_the_truncated_target():
    """N(0, 1) conditionals restricted to [0, 2]: truncated-normal mean (phi(0) - phi(2)) / (Phi(2) - Phi(0))."""
    model = LinearGaussianScores.from_gaussian(dist.Gaussian([0.0, 0.0], 1.0)).float()
    x = sampling.autoregressive_langevin(model, 4000, steps=300, step_size=0.02, x0=3.0, bounds=(0.0, 2.0),
                                         generator=torch.Generator().manual_seed(0))
    mean = _standard_normal_mean_on(0.0, 2.0)
    assert x.min() >= 0.0 and x.max() <= 2.0
    assert torch.allclose(x.mean(0), mean.expand(2), atol=0.03)
    with pytest.raises(ValueError, match="bounds"):
        sampling.autoregressive_langevin(model, 3, bounds=(1.0, 1.0))


def test_autoregressive_langevin_raises_on_divergence_and_bad_input():
    target = dist.Gaussian([0.0, 0.0], 0.01)
    model = LinearGaussianScores.from_gaussian(target).float()
    with pytest.raises(sampling.SamplerDivergedError, match="step_size"):
        sampling.autoregressive_langevin(model, 10, steps=200, step_size=1.0)
    with pytest.raises(ValueError):
        sampling.autoregressive_langevin(model, 10, step_size=-1.0)
    with pytest.raises(ValueError):
        sampling.autoregressive_langevin(model, 0)
    with pytest.raises(ValueError):
        sampling.autoregressive_langevin(model, 3, x0=torch.zeros(4, 2))
    with pytest.raises(ValueError):
        sampling.autoregressive_langevin(lambda v: v, 3)


def test_conditioning_input_reaches_every_conditional_and_keeps_the_masks():
    model = _randomise(ARCSM(3, hidden=16, context_dim=4, head_hidden=8, cond_dim=2).double())
    x = torch.randn(1, 3, dtype=torch.float64)
    y = torch.randn(1, 2, dtype=torch.float64)
    jac_y = torch.autograd.functional.jacobian(lambda v: model.conditional_scores(x, v[None])[0], y[0])
    assert torch.all(jac_y.abs().sum(1) > 0)                       # every s_d, including the first, sees y
    jac_x = torch.autograd.functional.jacobian(lambda v: model.conditional_scores(v[None], y)[0], x[0])
    assert torch.all(torch.triu(jac_x, 1) == 0)
    with pytest.raises(ValueError, match="y"):
        model.conditional_scores(x)
    with pytest.raises(ValueError, match="cond_dim"):
        ARCSM(3).conditional_scores(x.float(), y.float())


def test_bad_inputs_raise_value_error():
    with pytest.raises(ValueError):
        ARCSM(0)
    with pytest.raises(ValueError, match="permutation"):
        ARCSM(3, order=[0, 0, 1])
    with pytest.raises(ValueError, match="columns"):
        ARCSM(3).conditional_scores(torch.zeros(4, 2))
    with pytest.raises(ValueError, match="NaN"):
        objectives.composite_score_matching(ARCSM(2), torch.tensor([[0.0, float("nan")]]))
    with pytest.raises(ValueError):
        MixtureMADE(2, n_components=0)
    with pytest.raises(ValueError, match="mask"):
        MaskedLinear(3, 2, torch.ones(3, 2))


def test_masks_follow_the_degrees():
    m = mask_from_degrees(torch.tensor([1, 2, 3]), torch.tensor([1, 2]), strict=True)
    assert torch.equal(m, torch.tensor([[0.0, 0, 0], [1, 0, 0]]))


@pytest.mark.parametrize("model_cls", [GaussianMADE, MixtureMADE])
def test_mle_baselines_are_normalised_with_analytic_conditional_scores(model_cls):
    torch.manual_seed(0)
    model = _randomise(model_cls(2, hidden=16), scale=0.1).double()
    grid = torch.linspace(-10, 10, 301, dtype=torch.float64)
    pts = torch.cartesian_prod(grid, grid)
    with torch.no_grad():
        mass = float(model.log_prob(pts).exp().sum()) * float(grid[1] - grid[0]) ** 2
    assert abs(mass - 1) < 1e-3
    x = torch.randn(5, 2, dtype=torch.float64, requires_grad=True)
    (g,) = torch.autograd.grad(model.conditional_log_probs(x)[:, 1].sum(), x)
    (g0,) = torch.autograd.grad(model.conditional_log_probs(x)[:, 0].sum(), x)
    scores = model.conditional_scores(x)
    assert torch.allclose(scores[:, 1], g[:, 1]) and torch.allclose(scores[:, 0], g0[:, 0])
    loss = objectives.negative_log_likelihood(model, x.detach())
    assert torch.allclose(loss, -model.log_prob(x.detach()).mean())


def test_mle_baseline_samples_follow_the_model():
    torch.manual_seed(0)
    model = _randomise(GaussianMADE(2, hidden=16), scale=0.1)
    x = model.sample(20000, generator=torch.Generator().manual_seed(0))
    # first variable: one Gaussian with the (constant) parameters of the first conditional
    with torch.no_grad():
        p = model.backbone(torch.zeros(1, 2))[0, 0]
        mean, log_std = model._split(p)
    assert abs(float(x[:, 0].mean() - mean)) < 0.05 and abs(float(x[:, 0].std() / log_std.exp()) - 1) < 0.03
    mix = MixtureMADE(2, n_components=3).sample(10)
    assert mix.shape == (10, 2) and torch.isfinite(mix).all()


def test_exact_conditionals_of_a_gaussian_mixture():
    target = dist.ring_of_gaussians(8, radius=3.0, std=0.3)
    x = target.sample(50, generator=torch.Generator().manual_seed(0)).double()
    for order in ([0, 1], [1, 0]):
        cond = target_conditional_log_probs(target, x, order)
        assert torch.allclose(cond.sum(1), target.log_prob(x), atol=1e-4)
    xg = x.clone().requires_grad_(True)
    (g,) = torch.autograd.grad(target_conditional_log_probs(target, xg)[:, 0].sum(), xg)
    scores = target_conditional_scores(target, x)
    assert torch.allclose(scores[:, 1], target.score(x)[:, 1], atol=1e-4)
    assert torch.allclose(scores[:, 0], g[:, 0], atol=1e-3)
    assert marginal(target, [1]).dim == 1


def test_background_replaces_a_fraction_of_the_batch_by_broad_gaussian_draws():
    model = _randomise(ARCSM(2, hidden=16, context_dim=4, head_hidden=8))
    x = torch.randn(10, 2) * torch.tensor([1.0, 3.0]) + 2.0
    got = objectives.composite_score_matching(model, x, background=0.3, background_scale=2.0,
                                              generator=torch.Generator().manual_seed(5))
    z = torch.randn(3, 2, generator=torch.Generator().manual_seed(5))
    mixed = torch.cat([x[3:], x.mean(0) + 2.0 * x.std(0).max() * z])       # isotropic: the widest std
    assert torch.allclose(got, objectives.composite_score_matching(model, mixed))
    assert not torch.allclose(got, objectives.composite_score_matching(model, x))
    with pytest.raises(ValueError, match="background"):
        objectives.composite_score_matching(model, x, background=1.0)


def test_a_plugged_in_backbone_brings_its_order_and_a_wrong_shape_is_caught():
    model = ARCSM(3, context_dim=4, backbone=ResMADE(3, 4, hidden=8, order=[2, 1, 0]))
    assert model.order.tolist() == [2, 1, 0]
    with pytest.raises(ValueError, match="order"):
        ARCSM(3, context_dim=4, backbone=ResMADE(3, 4, hidden=8, order=[2, 1, 0]), order=[0, 1, 2])
    with pytest.raises(ValueError, match="backbone must return"):
        ARCSM(3, context_dim=5, backbone=ResMADE(3, 4, hidden=8)).conditional_scores(torch.zeros(2, 3))


@pytest.mark.parametrize("head, block_rows", [("mlp", 4096), ("mlp", 7), ("local_mean", 4096), ("local_mean", 7)])
def test_closed_form_head_diagonal_matches_double_backward_in_values_and_gradients(head, block_rows, monkeypatch):
    """ARCSM.scores_and_diagonal (closed-form derivative + hand-written backward) == the generic autograd path."""
    from csm_edu.models.arcsm import _LocalMeanHeadWithDiagonal, _SiLUHeadWithDiagonal
    for fused in (_SiLUHeadWithDiagonal, _LocalMeanHeadWithDiagonal):      # 30 rows: one block, or 5 blocks
        monkeypatch.setattr(fused, "cpu_block_rows", block_rows)
    model = _randomise(ARCSM(6, hidden=16, context_dim=4, head_hidden=8, cond_dim=2, head=head).double())
    x = torch.randn(5, 6, dtype=torch.float64, requires_grad=True)
    y = torch.randn(5, 2, dtype=torch.float64)
    weights = torch.rand(2, 5, 6, dtype=torch.float64)   # a loss that weights s and diag differently
    results = []
    for path in (ARCSM.scores_and_diagonal, AutoregressiveScoreModel.scores_and_diagonal):
        s, diag = path(model, x, y)
        loss = (weights[0] * s ** 2 + weights[1] * diag).sum()
        grads = torch.autograd.grad(loss, [x, *model.parameters()])
        results.append((s, diag, grads))
    (s1, d1, g1), (s2, d2, g2) = results
    assert torch.allclose(s1, s2, atol=1e-12) and torch.allclose(d1, d2, atol=1e-12)
    for a, b in zip(g1, g2):
        assert torch.allclose(a, b, atol=1e-10)


def test_closed_form_mlp_head_passes_gradcheck():
    from csm_edu.models.arcsm import _SiLUHeadWithDiagonal
    gen = torch.Generator().manual_seed(0)
    args = [torch.randn(shape, dtype=torch.float64, generator=gen).requires_grad_(True)
            for shape in [(2, 3, 4), (4,), (4, 4), (4,), (4,), ()]]
    assert torch.autograd.gradcheck(_SiLUHeadWithDiagonal.apply, args)


def test_closed_form_local_mean_head_passes_gradcheck():
    from csm_edu.models.arcsm import _LocalMeanHeadWithDiagonal
    gen = torch.Generator().manual_seed(0)
    args = [torch.randn(shape, dtype=torch.float64, generator=gen).requires_grad_(True)
            for shape in [(2, 3, 4), (4,), (2, 3, 4), (2, 3), (2, 3), (2, 3)]]
    assert torch.autograd.gradcheck(lambda *a: _LocalMeanHeadWithDiagonal.apply(*a, 1.5), args)


def test_head_has_gaussian_tails_for_any_parameters():
    """Beyond hi = 1 the score is below -(t - c_hi) / v, before lo = -1 above -(t - c_lo) / v: normalisable on R."""
    model = _randomise(ARCSM(3, hidden=16, context_dim=4, head_hidden=8, head="local_mean"), scale=2.0).double()
    x = torch.randn(4, 3, dtype=torch.float64)
    context = model.context(x)
    lo, hi, var = (v.detach() for v in model.tail_bound(context, -1.0, 1.0))
    offsets = torch.tensor([0.0, 0.5, 3.0, 30.0, 300.0], dtype=torch.float64).view(-1, 1, 1)
    with torch.no_grad():
        t_above, t_below = torch.clamp(hi, min=1.0) + offsets, torch.clamp(lo, max=-1.0) - offsets   # (5, 4, 3)
        above = model.head(context.unsqueeze(0), t_above)
        below = model.head(context.unsqueeze(0), t_below)
    assert torch.all(above <= -(t_above - hi) / var + 1e-9) and torch.all(below >= -(t_below - lo) / var - 1e-9)
    assert torch.all(above[-1] < 0) and torch.all(below[-1] > 0)


def test_inverse_cdf_sampler_reproduces_a_correlated_gaussian_and_a_truncated_one():
    target = dist.Gaussian([1.0, -1.0], [[1.0, 0.8], [0.8, 1.0]])
    model = LinearGaussianScores.from_gaussian(target).float()
    x = sampling.autoregressive_inverse_cdf(model, 20000, bounds=(-7.0, 7.0), generator=torch.Generator().manual_seed(0))
    assert torch.allclose(x.mean(0), target.mean, atol=0.03)
    assert torch.allclose(torch.cov(x.T), target.cov, atol=0.04)
    # N(0, 1) conditionals restricted to [0, 2]: truncated-normal mean (phi(0) - phi(2)) / (Phi(2) - Phi(0))
    model = LinearGaussianScores.from_gaussian(dist.Gaussian([0.0, 0.0], 1.0)).float()
    x = sampling.autoregressive_inverse_cdf(model, 20000, bounds=(0.0, 2.0), generator=torch.Generator().manual_seed(1))
    mean = _standard_normal_mean_on(0.0, 2.0)
    assert x.min() >= 0.0 and x.max() <= 2.0
    assert torch.allclose(x.mean(0), mean.expand(2), atol=0.015)
    with pytest.raises(ValueError, match="bounds"):
        sampling.autoregressive_inverse_cdf(model, 3, bounds=(1.0, 1.0))
    with pytest.raises(ValueError, match="n_nodes"):
        sampling.autoregressive_inverse_cdf(model, 3, bounds=(0.0, 1.0), n_nodes=1)


def test_background_keeps_every_data_row_with_its_own_condition():
    """With y, the data rows that stay keep their own y; each background draw takes the y of the row it replaced."""
    model = _randomise(ARCSM(2, hidden=16, context_dim=4, head_hidden=8, cond_dim=3))
    x = torch.randn(10, 2)
    y = torch.randn(10, 3)
    got = objectives.composite_score_matching(model, x, y, background=0.3, generator=torch.Generator().manual_seed(2))
    z = torch.randn(3, 2, generator=torch.Generator().manual_seed(2))
    mixed = torch.cat([x[3:], x.mean(0) + x.std(0).max() * z])
    aligned = torch.cat([y[3:], y[:3]])
    assert torch.allclose(got, objectives.composite_score_matching(model, mixed, aligned))
    with pytest.raises(ValueError, match="rows"):
        objectives.composite_score_matching(model, x, y[:4], background=0.3)
