"""PixelCNN blocks: strict causality of the context network, the discretised logistic mixture, the MLE baseline."""
import itertools
import math

import pytest
import torch

from csm_edu.models.pixelcnn import (MaskedConv2d, PixelCNNContext, PixelCNNPP, channel_groups,
                                     discretized_logistic_mixture_log_prob, raster_order)


def raster_jacobian(model, shape):
    """J[t_out, t_in] = sum over context units of |d context / d x| in generation (raster) order, float64."""
    torch.manual_seed(1)
    x = torch.randn(1, math.prod(shape), dtype=torch.float64)
    model = model.double()
    jac = torch.autograd.functional.jacobian(lambda flat: model(flat)[0], x)  # (D, ctx, 1, D), variable-indexed
    jac = jac.abs().sum(dim=(1, 2))
    order = raster_order(shape)
    return jac[order][:, order]


@pytest.mark.parametrize("shape", [(1, 5, 5), (3, 4, 4)])
def test_context_is_strictly_causal(shape):
    torch.manual_seed(0)
    model = PixelCNNContext(shape, context_dim=3, hidden_channels=12, n_blocks=2)
    jac = raster_jacobian(model, shape)
    # the context of the t-th generated scalar may only read scalars generated before it:
    # the diagonal and everything above it is exactly zero
    assert torch.equal(torch.triu(jac), torch.zeros_like(jac))
    c, h, w = shape
    # ... and it does read its direct predecessors (so the check above is not vacuous)
    for i, j, ch in [(1, 2, 0), (2, 1, c - 1), (h - 1, w - 1, c - 1)]:
        t = (i * w + j) * c + ch
        assert jac[t, t - c] > 0  # same channel, pixel to the left
        assert jac[t, t - w * c] > 0  # same channel, pixel above
        if ch > 0:
            assert jac[t, t - 1] > 0  # earlier channel of the same pixel (R -> G -> B)
    assert jac[0].sum() == 0


def test_first_layer_of_type_b_would_leak():
    """The causality check can fail: a type-B first layer lets the context of x_d see x_d."""
    torch.manual_seed(0)
    model = PixelCNNContext((1, 4, 4), context_dim=2, hidden_channels=8, n_blocks=1)
    groups = torch.zeros(1, dtype=torch.long)
    leaky = MaskedConv2d(1, 8, 7, "B", in_groups=groups, out_groups=channel_groups(8, 1))
    with torch.no_grad():  # same weights, only the mask differs
        leaky.weight.copy_(model.input_conv.weight)
        leaky.bias.copy_(model.input_conv.bias)
    model.input_conv = leaky
    jac = raster_jacobian(model, (1, 4, 4))
    assert torch.diagonal(jac).min() > 0


def test_raster_order_and_flat_or_image_input():
    assert raster_order((3, 2, 2))[:5].tolist() == [0, 4, 8, 1, 5]  # (R, G, B) of pixel (0, 0), then pixel (0, 1)
    assert torch.equal(raster_order((1, 3, 3)), torch.arange(9))
    model = PixelCNNContext((3, 4, 4), context_dim=2, hidden_channels=6, n_blocks=1)
    x = torch.rand(2, 3, 4, 4)
    assert torch.equal(model(x), model(x.reshape(2, -1)))
    assert model(x).shape == (2, 48, 2)
    with pytest.raises(ValueError, match="shape"):
        model(torch.rand(2, 1, 4, 4))


def test_conditioning_on_y():
    model = PixelCNNContext((1, 4, 4), context_dim=2, hidden_channels=8, n_blocks=1, cond_dim=3)
    x = torch.rand(2, 1, 4, 4)
    one_hot = torch.eye(3)
    out0, out1 = model(x, one_hot[[0, 0]]), model(x, one_hot[[1, 1]])
    assert out0.shape == (2, 16, 2) and not torch.allclose(out0, out1)
    with pytest.raises(ValueError, match="cond_dim"):
        PixelCNNContext((1, 4, 4), hidden_channels=8)(x, one_hot[[0, 1]])


def test_plugs_into_arcsm_with_the_raster_order():
    from csm_edu.models.arcsm import ARCSM

    shape = (3, 3, 3)
    model = ARCSM(dim=27, context_dim=4, backbone=PixelCNNContext(shape, context_dim=4, hidden_channels=6, n_blocks=1))
    assert torch.equal(model.order, raster_order(shape))
    s, diag = model.scores_and_diagonal(torch.rand(5, 27))
    assert s.shape == diag.shape == (5, 27) and torch.isfinite(diag).all()


def naive_mixture_probs(levels, logit_weights, means, log_scales):
    """P(k) for every k by plain float64 sigmoid differences (the brute-force reference)."""
    centres = 2.0 * torch.arange(levels, dtype=torch.float64) / (levels - 1) - 1.0
    delta = 1.0 / (levels - 1)
    s = log_scales.exp()
    cdf_hi = torch.sigmoid((centres[:, None] + delta - means) / s)
    cdf_lo = torch.sigmoid((centres[:, None] - delta - means) / s)
    cdf_hi[-1] = 1.0
    cdf_lo[0] = 0.0
    return ((cdf_hi - cdf_lo) * torch.softmax(logit_weights, -1)).sum(-1)


@pytest.mark.parametrize("levels", [256, 17])
def test_discretized_logistic_mixture_sums_to_one_and_matches_brute_force(levels):
    torch.manual_seed(0)
    for mean_scale, log_scale in itertools.product([0.0, 0.9, -3.0], [-6.0, -2.0, 1.5]):
        logit_weights = torch.randn(4, dtype=torch.float64)
        means = mean_scale + 0.3 * torch.randn(4, dtype=torch.float64)
        log_scales = log_scale + 0.2 * torch.randn(4, dtype=torch.float64)
        k = torch.arange(levels)
        expand = lambda t: t.expand(levels, 4)  # noqa: E731
        log_p = discretized_logistic_mixture_log_prob(k, expand(logit_weights), expand(means), expand(log_scales),
                                                      levels=levels)
        assert torch.isfinite(log_p).all()
        assert abs(log_p.exp().sum().item() - 1.0) < 1e-9
        ref = naive_mixture_probs(levels, logit_weights, means, log_scales)
        big = ref > 1e-6  # below that the naive difference of CDFs loses digits
        assert torch.allclose(log_p[big], ref[big].log(), atol=1e-8, rtol=0)


def test_discretized_logistic_is_stable_in_far_tails_float32():
    k = torch.tensor([128, 128, 3])
    params = lambda *v: torch.tensor(v, dtype=torch.float32)[:, None]  # noqa: E731
    log_p = discretized_logistic_mixture_log_prob(k, params(0.0, 0.0, 0.0), params(-0.9, 0.95, 0.9),
                                                  params(-7.0, -7.0, -5.0))
    assert torch.isfinite(log_p).all() and (log_p < -50).all()


@pytest.mark.parametrize("shape,levels", [((1, 2, 2), 3), ((3, 1, 1), 4), ((2, 1, 2), 3), ((2, 2, 1), 3)])
def test_pixelcnnpp_probabilities_of_all_images_sum_to_one(shape, levels):
    """Brute force over every image: the product of causal conditionals is a normalised distribution."""
    torch.manual_seed(0)
    model = PixelCNNPP(shape, n_mixtures=2, levels=levels, hidden_channels=6, n_blocks=1, first_kernel=3).double()
    n_dims = math.prod(shape)
    all_k = torch.tensor(list(itertools.product(range(levels), repeat=n_dims)), dtype=torch.float64)
    images = (all_k / (levels - 1)).reshape(-1, *shape)
    total = model.log_prob(images).exp().sum().item()
    assert abs(total - 1.0) < 1e-9


@pytest.mark.parametrize("shape,levels", [((1, 1, 2), 3), ((2, 1, 2), 2)])
def test_pixelcnnpp_sampling_matches_its_probabilities(shape, levels):
    """Empirical frequencies of all images against exp(log_prob); (2, 1, 2) is generated in order 0, 2, 1, 3."""
    torch.manual_seed(0)
    model = PixelCNNPP(shape, n_mixtures=2, levels=levels, hidden_channels=6, n_blocks=1, first_kernel=3)
    with torch.no_grad():  # strong dependencies between the scalars
        for p in model.parameters():
            p.mul_(4.0)
    n_dims, n_samples = math.prod(shape), 8000
    all_k = torch.tensor(list(itertools.product(range(levels), repeat=n_dims)), dtype=torch.float32)
    probs = model.log_prob(all_k / (levels - 1)).exp()  # flat (n, D) input works too
    assert abs(probs.sum().item() - 1) < 1e-4
    samples = model.sample(n_samples, generator=torch.Generator().manual_seed(0))
    assert samples.shape == (n_samples, *shape)
    k = (samples.reshape(n_samples, -1) * (levels - 1)).round().long()
    index = (k * levels ** torch.arange(n_dims - 1, -1, -1)).sum(1)  # row of all_k
    freq = torch.bincount(index, minlength=levels ** n_dims).float() / n_samples
    assert (freq - probs).abs().max() < 4 * (probs * (1 - probs) / n_samples).sqrt().max() + 1e-3, (freq, probs)


def test_pixelcnnpp_learns_digits_and_checks_inputs():
    from csm_edu.data import load_digits

    torch.manual_seed(0)
    x, _ = load_digits(dequantize=False, n=128)
    model = PixelCNNPP((1, 8, 8), n_mixtures=3, levels=17, hidden_channels=16, n_blocks=2, first_kernel=5)
    optimiser = torch.optim.Adam(model.parameters(), lr=1e-2)
    before = model.bits_per_dim(x).mean().item()
    for _ in range(25):
        optimiser.zero_grad()
        loss = model.loss(x)
        loss.backward()
        optimiser.step()
    after = model.bits_per_dim(x).mean().item()
    assert after < before - 0.5 and after < math.log2(17), (before, after)
    with pytest.raises(ValueError, match="dequantize=False"):
        model.log_prob(x + 0.01)
