"""Autoregressive Energy Machine: importance-sampled normalisers, training, masks, SIR, bad input."""
import math

import pytest
import torch

from csm_edu import distributions as dist
from csm_edu import sampling, train
from csm_edu.models import AEM, AEMLoss
from csm_edu.models.aem import importance_log_normaliser, mixture_log_prob, mixture_sample, warmup_alpha

torch.set_num_threads(1)

# a correlated 2-D Gaussian and its exact autoregressive factorisation x0 ~ N(m0, s0^2),
# x1 | x0 ~ N(m1 + b (x0 - m0), s1^2)
MEAN = torch.tensor([0.5, -0.5])
COV = torch.tensor([[1.0, 0.8], [0.8, 1.0]])
B = 0.8
S0, S1 = 1.0, math.sqrt(1.0 - 0.8 ** 2)
LOG_Z = -0.7   # the exact model's unnormalised conditionals integrate to exp(LOG_Z)


def gaussian_log_pdf(x, mean, std):
    return -0.5 * ((x - mean) / std) ** 2 - torch.log(std) - 0.5 * math.log(2 * math.pi)


class ExactAEM(AEM):
    """An AEM whose proposal IS the target conditional and whose f is that conditional's log
    density plus LOG_Z: every importance weight equals exp(LOG_Z)."""

    def context(self, x):
        n = x.shape[0]
        means = torch.stack([MEAN[0].expand(n), MEAN[1] + B * (x[:, 0] - MEAN[0])], 1)
        stds = torch.tensor([S0, S1]).expand(n, 2)
        c = torch.stack([means, stds], -1)                     # the context carries (mean, std)
        return c, torch.zeros(n, 2, 1), means[..., None], stds[..., None]

    def log_unnormalised(self, context, x):
        return gaussian_log_pdf(x, context[..., 0], context[..., 1]) + LOG_Z


def small_aem(dim=2, **kw):
    torch.manual_seed(0)
    args = dict(n_components=4, context_dim=8, hidden=32, n_blocks=1, energy_hidden=32, n_importance=16)
    args.update(kw)
    return AEM(dim, **args)


def test_log_normaliser_is_exact_when_the_proposal_is_the_target_conditional():
    target = dist.Gaussian(MEAN, COV)
    x = target.sample(200)
    model = ExactAEM(2, n_components=1)
    for s in (1, 7):
        out = model(x, n_importance=s, generator=torch.Generator().manual_seed(s))
        assert torch.allclose(out.log_normaliser, torch.full_like(out.log_normaliser, LOG_Z), atol=1e-5)
        assert out.log_normaliser.std() < 1e-5                                   # zero variance
        assert torch.allclose(out.log_prob, target.log_prob(x).float(), atol=1e-4)
    # the generic estimator, the same way: f = log q + c gives c for any S
    xs = torch.randn(50, 9)
    log_q = gaussian_log_pdf(xs, torch.tensor(0.0), torch.tensor(1.0))
    assert torch.allclose(importance_log_normaliser(log_q + 0.3, log_q), torch.full((50,), 0.3), atol=1e-6)


def test_log_normaliser_bias_is_negative_and_shrinks_like_one_over_s():
    """Bimodal 1-D target (Z = e^-1), broad Gaussian proposal: E[log Z_hat] - log Z for S = 1..64.

    Jensen: the bias is negative; the delta method predicts -Var_q(p/q) / (2S) for large S.
    """
    g = torch.Generator().manual_seed(0)
    log_z = -1.0
    tl, tm, ts = torch.zeros(2), torch.tensor([-2.0, 2.0]), torch.tensor([0.5, 0.5])
    ql, qm, qs = torch.zeros(1), torch.zeros(1), torch.tensor([2.0])
    grid = torch.linspace(-15, 15, 20001, dtype=torch.float64)
    p = mixture_log_prob(tl.double(), tm.double(), ts.double(), grid).exp()
    q = mixture_log_prob(ql.double(), qm.double(), qs.double(), grid).exp()
    var_w = float(torch.trapezoid(p ** 2 / q, grid) - 1.0)                 # Var_q(p/q), about 1.41
    repeats = 4000
    biases, errors = [], []
    for s in (1, 4, 16, 64):
        xs = mixture_sample(ql.expand(repeats, 1), qm.expand(repeats, 1), qs.expand(repeats, 1), s, generator=g)
        est = importance_log_normaliser(mixture_log_prob(tl, tm, ts, xs) + log_z, mixture_log_prob(ql, qm, qs, xs))
        biases.append(float(est.mean()) - log_z)
        errors.append(float(est.std()) / math.sqrt(repeats))
    assert all(b < -2 * e for b, e in zip(biases, errors)), biases                # biased down
    assert all(abs(a) > 2.5 * abs(b) for a, b in zip(biases, biases[1:])), biases  # shrinks ~ 1/S
    predicted = -var_w / (2 * 64)
    assert abs(biases[-1] - predicted) < 4 * errors[-1] + 0.2 * abs(predicted), (biases[-1], predicted)


def test_trained_aem_log_likelihood_matches_the_true_gaussian():
    target = dist.Gaussian(MEAN, COV)
    torch.manual_seed(1)
    x_train, x_test = target.sample(3000).float(), target.sample(600).float()
    model = small_aem()
    loss_fn = AEMLoss(warmup_steps=50)
    train.fit(model, loss_fn, x_train, steps=200, batch_size=128, lr=5e-3, progress=False, device="cpu")
    assert loss_fn.alphas[0] == 0.0 and loss_fn.alphas[-1] == 1.0
    mean, stderr = model.log_likelihood(x_test, n_importance=300, generator=torch.Generator().manual_seed(0))
    truth = float(target.log_prob(x_test).mean())                                # about -2.37
    assert 0 < stderr < 0.1
    assert abs(mean - truth) < 0.05, (mean, truth)
    # per point, too (not only on average)
    gap = model.log_prob(x_test[:200], n_importance=300) - target.log_prob(x_test[:200]).float()
    assert gap.abs().mean() < 0.1, float(gap.abs().mean())


@pytest.mark.parametrize("order", [None, [2, 0, 1]])
def test_masks_are_autoregressive(order):
    model = small_aem(dim=3, order=order)
    with torch.no_grad():  # make every weight non-zero, so that a leak would show
        for p in model.parameters():
            p.add_(0.1 * torch.randn_like(p))
    rank = torch.empty(3, dtype=torch.long)
    rank[model.order] = torch.arange(3)                      # position of each variable in the order
    x = torch.randn(1, 3)

    def per_dim_outputs(x):
        c, logits, means, scales = model.context(x)
        f = model.log_unnormalised(c, x)
        return torch.cat([c, logits, means, scales, f.unsqueeze(-1)], -1)[0]    # (D, outputs)

    jac = torch.autograd.functional.jacobian(per_dim_outputs, x)[:, :, 0, :]    # (D, outputs, D inputs)
    for d in range(3):
        for j in range(3):
            size = float(jac[d, :-1, j].abs().max())              # context and proposal of d w.r.t. x_j
            if rank[j] >= rank[d]:
                assert size == 0.0, (d, j)
            else:
                assert size > 0.0, (d, j)                          # earlier variables do matter
        assert float(jac[d, -1, d].abs()) > 0                       # f_d reads x_d itself
        later = [j for j in range(3) if rank[j] > rank[d]]
        assert all(float(jac[d, -1, j].abs()) == 0.0 for j in later)


def test_gradients_stop_at_the_proposal_samples():
    """log Z_hat must not push the proposal: the output-layer biases that only feed the proposal
    (logits, means, scales) get zero gradient from log Z_hat, but non-zero from log q(x)."""
    model = small_aem()
    x = torch.randn(64, 2)
    proposal_bias = model.backbone.output_layer.bias.view(2, -1)[:, model.context_dim:]
    out = model(x, generator=torch.Generator().manual_seed(0))
    (grad_z,) = torch.autograd.grad(out.log_normaliser.sum(), model.backbone.output_layer.bias, retain_graph=True)
    assert grad_z.view(2, -1)[:, model.context_dim:].abs().max() == 0.0
    assert grad_z.view(2, -1)[:, :model.context_dim].abs().max() > 0.0          # it does train the energy
    (grad_q,) = torch.autograd.grad(out.log_proposal.sum(), model.backbone.output_layer.bias)
    assert grad_q.view(2, -1)[:, model.context_dim:].abs().max() > 0.0
    assert proposal_bias.shape == (2, 3 * model.n_components)


def test_warmup_schedule_and_alpha_zero_leaves_the_energy_untrained():
    assert [warmup_alpha(t, 4) for t in range(6)] == [0.0, 0.25, 0.5, 0.75, 1.0, 1.0]
    assert warmup_alpha(0, 0) == 1.0
    model = small_aem()
    model.loss(torch.randn(32, 2), alpha=0.0).backward()
    assert all(p.grad is None or p.grad.abs().max() == 0 for p in model.energy_net.parameters())


def test_sir_resamples_a_broad_proposal_into_the_target():
    g = torch.Generator().manual_seed(0)
    candidates = 2.0 * torch.randn(4000, 100, generator=g)
    log_w = gaussian_log_pdf(candidates, torch.tensor(1.0), torch.tensor(0.5)) - \
        gaussian_log_pdf(candidates, torch.tensor(0.0), torch.tensor(2.0))
    kept = sampling.sir(candidates, log_w, generator=g)
    assert kept.shape == (4000,)
    assert abs(float(kept.mean()) - 1.0) < 0.04 and abs(float(kept.std()) - 0.5) < 0.04
    # the AEM sampler with an exact proposal reproduces the target's mean and covariance
    x = ExactAEM(2, n_components=1).sample(4000, n_proposals=8, generator=g)
    assert torch.allclose(x.mean(0), MEAN, atol=0.08)
    assert torch.allclose(torch.cov(x.T), COV, atol=0.1)
    # a trained-shape model: samples are finite and of the right shape
    y = small_aem().sample(50, n_proposals=10, generator=g)
    assert y.shape == (50, 2) and torch.isfinite(y).all()


def test_energy_is_bounded():
    model = small_aem()
    c, *_ = model.context(torch.randn(10, 2))
    f = model.log_unnormalised(c.unsqueeze(-2), 10 * torch.randn(10, 2, 30))
    assert (f <= 0).all() and torch.allclose(model.energy(c, torch.zeros(10, 2)), -model.log_unnormalised(c, torch.zeros(10, 2)))


def test_bad_inputs_raise_value_error():
    model = small_aem()
    with pytest.raises(ValueError, match="x"):
        model.log_prob(torch.randn(5, 3))
    with pytest.raises(ValueError, match="NaN"):
        model(torch.tensor([[float("nan"), 0.0]]))
    with pytest.raises(ValueError, match="n_importance"):
        model.log_prob(torch.randn(5, 2), n_importance=0)
    with pytest.raises(ValueError, match="alpha"):
        model.loss(torch.randn(5, 2), alpha=2.0)
    with pytest.raises(ValueError, match="dim"):
        AEM(0)
    with pytest.raises(ValueError, match="n_components"):
        AEM(2, n_components=0)
    with pytest.raises(ValueError, match="warmup_steps"):
        AEMLoss(warmup_steps=-1)
    with pytest.raises(ValueError, match="n_proposals"):
        model.sample(5, n_proposals=0)
    with pytest.raises(ValueError, match="shape"):
        sampling.sir(torch.randn(4, 3), torch.randn(4, 2))
    with pytest.raises(ValueError, match="NaN"):
        sampling.sir(torch.randn(2, 2), torch.tensor([[0.0, float("nan")], [0.0, 0.0]]))
    with pytest.raises(ValueError, match="shape"):
        importance_log_normaliser(torch.randn(3, 4), torch.randn(3, 5))
