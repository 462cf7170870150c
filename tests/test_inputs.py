"""Bad input gets a ValueError that names the argument and the fix."""
import pytest
import torch

from csm_edu import data, distributions, metrics, objectives, quadrature, sampling, train
from csm_edu.models import ARCSM, EnergyMLP, ScoreMLP

MODEL = ScoreMLP(2, 8)


@pytest.mark.parametrize("call, pattern", [
    (lambda: objectives.exact_score_matching(MODEL.score, torch.zeros(4)), "x must have shape \\(n, D\\)"),
    (lambda: objectives.exact_score_matching(MODEL.score, torch.zeros(4, 2, 2)), "reshape"),
    (lambda: objectives.sliced_score_matching(MODEL.score, torch.tensor([[0.0, float("nan")]])), "NaN or inf"),
    (lambda: objectives.denoising_score_matching(MODEL.score, torch.tensor([[0.0, float("inf")]]), 0.1), "NaN or inf"),
    (lambda: objectives.denoising_score_matching(MODEL.score, torch.zeros(3, 2), 0.0), "sigma must be > 0"),
    (lambda: objectives.denoising_score_matching(MODEL.score, torch.zeros(3, 2), -1.0), "sigma must be > 0"),
    (lambda: objectives.sliced_score_matching(MODEL.score, torch.zeros(3, 2), n_projections=0), "n_projections must be an integer >= 1"),
    (lambda: objectives.sliced_score_matching(MODEL.score, torch.zeros(3, 2), projection="uniform"), "unknown projection 'uniform'; valid choices: 'gaussian', 'rademacher'"),
    (lambda: objectives.exact_score_matching(lambda x: x[:, :1], torch.zeros(3, 2)), "score_fn must return"),
    (lambda: objectives.multiscale_dsm(lambda x, s: x, torch.zeros(3, 2), [1.0, 0.0]), "sigmas must be finite and > 0"),
    (lambda: objectives.geometric_sigmas(0.1, 1.0, 5), "swap"),
    (lambda: data.make_toy("blobs", 10), "unknown toy set name 'blobs'; valid choices: 'mixture'"),
    (lambda: data.make_toy("moons", 0), "n must be an integer >= 1"),
    (lambda: metrics.mmd(torch.zeros(5, 2), torch.zeros(5, 3)), "y must have 2 columns"),
    (lambda: metrics.auroc([0.1, float("nan")], [0.2]), "NaN or inf"),
    (lambda: metrics.grid_2d((1, 0, 0, 1)), "x range must have lo < hi"),
    (lambda: train.fit(EnergyMLP(2, 8), lambda m, b: m.energy(b).mean(), torch.tensor([[float("nan"), 0.0]]), steps=1), "data contains NaN"),
    (lambda: train.fit(EnergyMLP(2, 8), lambda m, b: m.energy(b).mean(), torch.zeros(4, 2), steps=1, lr=0), "lr must be > 0"),
    (lambda: sampling.langevin(MODEL.score, torch.zeros(3, 2), step_size=0.1, steps=-1), "steps must be an integer >= 0"),
])
def test_bad_input_raises_clear_value_error(call, pattern):
    with pytest.raises(ValueError, match=pattern):
        call()


def test_diverging_training_says_lower_lr():
    model = EnergyMLP(2, 8)
    with pytest.raises(FloatingPointError, match="lower lr"):
        train.fit(model, lambda m, b: m.energy(b).mean() * float("inf"), torch.zeros(8, 2), steps=2, progress=False)


# Silent wrong results, now clear errors (each returned NaN, a wrong shape or a wrong number before).
@pytest.mark.parametrize("call, error, pattern", [
    (lambda: distributions.GaussianMixture([[0.0, float("nan")]]), ValueError, "means contain NaN"),
    (lambda: distributions.GaussianMixture([[0.0], [1.0]], weights=[0.5, float("nan")]), ValueError, "finite non-negative"),
    (lambda: sampling.annealed_langevin(lambda x, s: -x, torch.zeros(3, 2), [0.1, 1.0]), ValueError, "largest noise level to the smallest"),
    (lambda: metrics.mmd(torch.zeros(5, 2), torch.zeros(5, 2)), ValueError, "pass bandwidth="),
    (lambda: metrics.summarise([]), ValueError, "values is empty"),
    (lambda: metrics.summarise([1.0, float("nan")]), ValueError, "NaN or inf"),
    (lambda: sampling.sir(torch.zeros(2, 3), torch.tensor([[0.0, 0.0, 0.0], [-float("inf")] * 3])), ValueError, "every log weight is -inf"),
    (lambda: objectives.exact_score_matching(lambda x: (-x).detach(), torch.zeros(3, 2)), TypeError, "does not depend on x"),
    (lambda: objectives.exact_score_matching(lambda x: (-x).detach().numpy(), torch.zeros(3, 2)), TypeError, "must return a torch.Tensor"),
    (lambda: sampling.autoregressive_inverse_cdf(None, 4, bounds=(2.0, -2.0)), ValueError, "swap them"),
    (lambda: quadrature.arcsm_log_prob(ARCSM(2, hidden=8, n_blocks=1, context_dim=2, head_hidden=4), torch.zeros(3, 2),
                                       bounds=(2.0, -2.0)), ValueError, "swap them"),
])
def test_silent_wrong_results_are_clear_errors(call, error, pattern):
    with pytest.raises(error, match=pattern):
        call()


def test_gaussian_mixture_weights_are_normalised_and_say_so():
    mix = distributions.GaussianMixture([[0.0], [3.0]], covs=1.0, weights=[2.0, 6.0])
    assert torch.allclose(mix.weights, torch.tensor([0.25, 0.75]))
    assert "normalised" in distributions.GaussianMixture.__doc__


def test_the_median_bandwidth_pools_both_samples():
    x = torch.zeros(3000, 1)                  # today's first 2000 pooled rows would all be x
    y = torch.full((3000, 1), 4.0)
    h = metrics.median_bandwidth(x, y)
    assert h == pytest.approx(4.0, rel=1e-6)  # half the pairs cross the two clouds
