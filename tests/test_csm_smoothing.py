"""composite_score_matching(smoothing=...) and smoothing_schedule (issue 17: annealed smoothing for mode weights)."""
import pytest
import torch

from csm_edu import distributions as dist
from csm_edu import objectives
from csm_edu.models import ARCSM
from csm_edu.models.arcsm import ExactConditionalScores


def _model(**kw):
    model = ARCSM(2, hidden=16, context_dim=4, head_hidden=8, **kw)
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.3 * torch.randn(p.shape, generator=g))
    return model


def test_default_is_unchanged_and_draws_nothing():
    model, x = _model(), torch.randn(12, 2)
    g = torch.Generator().manual_seed(3)
    state = g.get_state()
    plain = objectives.composite_score_matching(model, x, generator=g)
    assert torch.equal(g.get_state(), state)                      # smoothing=0: no noise drawn
    assert torch.equal(plain, objectives.composite_score_matching(model, x, smoothing=0.0, generator=g))
    with_bg = objectives.composite_score_matching(model, x, background=0.25, generator=torch.Generator().manual_seed(1))
    assert torch.equal(with_bg, objectives.composite_score_matching(model, x, background=0.25, smoothing=0.0,
                                                                    generator=torch.Generator().manual_seed(1)))


def test_smoothing_trains_on_noised_x_then_the_background_of_the_noised_batch_and_leaves_y_alone():
    x = torch.randn(10, 2) * torch.tensor([1.0, 3.0])
    model = _model()
    got = objectives.composite_score_matching(model, x, smoothing=0.7, generator=torch.Generator().manual_seed(5))
    noised = x + 0.7 * torch.randn(10, 2, generator=torch.Generator().manual_seed(5))
    assert torch.allclose(got, objectives.composite_score_matching(model, noised))
    # with a background: noise first, then the background's mean and width from the noised batch
    g = torch.Generator().manual_seed(6)
    got = objectives.composite_score_matching(model, x, background=0.3, smoothing=0.7, generator=g)
    g = torch.Generator().manual_seed(6)
    noised = x + 0.7 * torch.randn(10, 2, generator=g)
    assert torch.allclose(got, objectives.composite_score_matching(model, noised, background=0.3, generator=g))
    # a condition y is not noised
    cond = _model(cond_dim=3)
    y = torch.randn(10, 3)
    got = objectives.composite_score_matching(cond, x, y, smoothing=0.7, generator=torch.Generator().manual_seed(5))
    noised = x + 0.7 * torch.randn(10, 2, generator=torch.Generator().manual_seed(5))
    assert torch.allclose(got, objectives.composite_score_matching(cond, noised, y))
    for bad in (-0.1, float("nan"), float("inf")):
        with pytest.raises(ValueError, match="smoothing"):
            objectives.composite_score_matching(model, x, smoothing=bad)


def test_the_smoothed_objective_targets_the_smoothed_density():
    """On x + sigma eps the objective at the exact scores of p_sigma = p * N(0, sigma^2) is -1/2 sum_d 1/v_d
    with p_sigma's conditional variances, and p_sigma's scores beat p's own (the minimiser moved)."""
    cov = torch.tensor([[1.0, 0.8], [0.8, 2.0]])
    sigma = 0.8
    x = dist.Gaussian([0.5, -1.0], cov).sample(200_000, generator=torch.Generator().manual_seed(0))
    smoothed_cov = cov + sigma ** 2 * torch.eye(2)
    smoothed = ExactConditionalScores(dist.Gaussian([0.5, -1.0], smoothed_cov))
    original = ExactConditionalScores(dist.Gaussian([0.5, -1.0], cov))
    v = torch.stack([smoothed_cov[0, 0], smoothed_cov[1, 1] - smoothed_cov[0, 1] ** 2 / smoothed_cov[0, 0]])
    with torch.no_grad():
        at_smoothed = float(objectives.composite_score_matching(smoothed, x, smoothing=sigma,
                                                                generator=torch.Generator().manual_seed(1)))
        at_original = float(objectives.composite_score_matching(original, x, smoothing=sigma,
                                                                generator=torch.Generator().manual_seed(1)))
    assert abs(at_smoothed - float(-0.5 * (1 / v).sum())) < 0.01
    assert at_smoothed < at_original - 0.1


def test_smoothing_schedule_is_a_linear_anneal_then_zero():
    assert objectives.smoothing_schedule(0, 100, sigma0=1.0) == 1.0
    assert objectives.smoothing_schedule(40, 100, sigma0=1.0) == pytest.approx(0.5)      # fraction 0.8: 0 at 80
    assert objectives.smoothing_schedule(80, 100, sigma0=1.0) == 0.0
    assert objectives.smoothing_schedule(99, 100, sigma0=1.0) == 0.0
    assert objectives.smoothing_schedule(25, 100, sigma0=2.0, fraction=0.5) == pytest.approx(1.0)
    assert objectives.smoothing_schedule(0, 100, sigma0=1.0, fraction=0.0) == 0.0
    values = [objectives.smoothing_schedule(k, 50, sigma0=0.9) for k in range(50)]
    assert all(a >= b for a, b in zip(values, values[1:]))
    with pytest.raises(ValueError, match="fraction"):
        objectives.smoothing_schedule(0, 10, sigma0=1.0, fraction=1.5)
    with pytest.raises(ValueError, match="sigma0"):
        objectives.smoothing_schedule(0, 10, sigma0=-1.0)
    with pytest.raises(ValueError, match="step"):
        objectives.smoothing_schedule(-1, 10, sigma0=1.0)
