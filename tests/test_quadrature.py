"""Exact AR-CSM log-likelihood by 1-D quadrature, checked against closed-form conditionals."""
import pytest
import torch

from csm_edu import data
from csm_edu import distributions as dist
from csm_edu.models import ARCSM, ExactConditionalScores
from csm_edu.models.arcsm import target_conditional_log_probs
from csm_edu.quadrature import arcsm_log_prob, box_test

GAUSSIAN = dist.Gaussian([0.5, -1.0, 0.0], [[1.0, 0.6, 0.2], [0.6, 2.0, -0.5], [0.2, -0.5, 0.8]])


@pytest.mark.parametrize("order", [None, [2, 0, 1]])
def test_gaussian_conditionals_match_the_closed_form(order):
    model = ExactConditionalScores(GAUSSIAN, order)
    x = GAUSSIAN.sample(200, generator=torch.Generator().manual_seed(0)).double()
    value, error = arcsm_log_prob(model, x, bounds=(-9.0, 9.0), n_nodes=64, return_error=True)
    assert (value - GAUSSIAN.log_prob(x)).abs().max() < 1e-3
    per_dim = arcsm_log_prob(model, x, bounds=(-9.0, 9.0), n_nodes=64, per_dim=True)
    assert torch.allclose(per_dim, target_conditional_log_probs(GAUSSIAN, x, order), atol=1e-3)
    assert error.max() < 1e-2


def test_bimodal_conditionals_match_the_closed_form_and_the_error_estimate_is_honest():
    target = data.toy_distribution("mixture")            # p(x2 | x1) has two modes 14 std apart
    model = ExactConditionalScores(target)
    x = target.sample(100, generator=torch.Generator().manual_seed(1)).double()
    exact = target.log_prob(x)
    fine = arcsm_log_prob(model, x, bounds=(-6.0, 6.0), n_nodes=1024)
    assert (fine - exact).abs().max() < 1e-3
    coarse = arcsm_log_prob(model, x, bounds=(-6.0, 6.0), n_nodes=64)
    assert (coarse - exact).abs().max() > 1e-2            # too few nodes for the steep score between modes
    resolved, estimate = arcsm_log_prob(model, x, bounds=(-6.0, 6.0), n_nodes=256, return_error=True)
    assert torch.all((resolved - exact).abs() <= estimate + 1e-4)   # once resolved it bounds the error (1e-4: float32 floor)


def test_a_trained_shape_model_is_normalised_on_the_box():
    torch.manual_seed(0)
    model = ARCSM(2, hidden=16, context_dim=4, head_hidden=16)
    grid = torch.linspace(-3.0, 3.0, 121)
    pts = torch.cartesian_prod(grid, grid)
    log_q = arcsm_log_prob(model, pts, bounds=(-3.0, 3.0), n_nodes=64)
    w = torch.ones(121)
    w[0] = w[-1] = 0.5                                                   # 2-D trapezoid weights
    mass = float((w[:, None] * w[None, :]).flatten() @ log_q.exp()) * float(grid[1] - grid[0]) ** 2
    assert abs(mass - 1) < 2e-3


def test_bad_inputs_raise_value_error():
    model = ExactConditionalScores(GAUSSIAN)
    x = torch.zeros(3, 3)
    with pytest.raises(ValueError, match="outside bounds"):
        arcsm_log_prob(model, x + 10.0, bounds=(-5, 5))
    with pytest.raises(ValueError, match="bounds"):
        arcsm_log_prob(model, x, bounds=(5, -5))
    with pytest.raises(ValueError, match="even"):
        arcsm_log_prob(model, x, n_nodes=63)
    with pytest.raises(ValueError, match="columns"):
        arcsm_log_prob(model, torch.zeros(3, 2))


def test_a_box_too_narrow_for_the_mass_shows_in_the_error_estimate():
    model = ExactConditionalScores(GAUSSIAN)
    x = GAUSSIAN.sample(50, generator=torch.Generator().manual_seed(2)).double().clamp(-3.5, 3.5)
    exact = GAUSSIAN.log_prob(x)
    for half_width, nodes in [(3.5, 64), (5.0, 96), (9.0, 160), (15.0, 256)]:
        value, error = arcsm_log_prob(model, x, bounds=(-half_width, half_width), n_nodes=nodes, return_error=True)
        assert torch.all((value - exact).abs() <= error + 1e-4), half_width     # the estimate covers the cut mass
    narrow = arcsm_log_prob(model, x, bounds=(-3.5, 3.5), n_nodes=64, return_error=True)[1]
    assert narrow.mean() > 1e-2                                                  # and says the box is too narrow
    resolution = arcsm_log_prob(model, x, bounds=(-3.5, 3.5), n_nodes=64, return_error=True, tails=False)[1]
    assert resolution.mean() < 1e-3                                             # which resolution alone does not


def _lesson_models():
    """The AR-CSM configuration of every lesson (07/08 toy models, 09 stability, 10 images, 11 VAE), as builders of ``head``."""
    from csm_edu.experiments import images
    digits = images.image_config("digits", "cpu_quick")
    return {
        "07 toy (hidden 64)": (lambda head: ARCSM(2, hidden=64, head_hidden=64, head=head), None),
        "08 aem study": (lambda head: ARCSM(4, hidden=32, head_hidden=32, head=head), None),
        "09 stability": (lambda head: ARCSM(64, hidden=32, n_blocks=2, context_dim=16, head_hidden=32, head=head), None),
        "10 images MADE": (lambda head: ARCSM(64, hidden=digits["made_hidden"], n_blocks=digits["made_blocks"],
                                              context_dim=digits["context_dim"], head_hidden=digits["head_hidden"],
                                              head=head), None),
        "10 images PixelCNN": (lambda head: ARCSM(64, context_dim=digits["context_dim"], head_hidden=digits["head_hidden"],
                                                  backbone=images.make_arcsm("pixelcnn", digits).backbone, head=head), None),
        "11 VAE encoder score": (lambda head: ARCSM(3, hidden=16, context_dim=8, head_hidden=32, cond_dim=2, head=head), 2),
    }


@pytest.mark.parametrize("name", list(_lesson_models()))
def test_the_likelihood_of_every_lesson_arcsm_does_not_depend_on_the_box(name):
    """The local-mean head is normalisable on R by construction: equal within the error estimates on boxes of growing
    width, for any weights."""
    build, cond_dim = _lesson_models()[name]
    torch.manual_seed(0)
    model = build(head="local_mean").double()
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():                                      # far from the initialisation: any weights must do
        for p in model.parameters():
            p.add_(0.05 * torch.randn(p.shape, generator=g, dtype=p.dtype))
    x = torch.randn(4, model.dim, generator=g, dtype=torch.float64)
    y = None if cond_dim is None else torch.randn(4, cond_dim, generator=g, dtype=torch.float64)
    results = [arcsm_log_prob(model, x, bounds=(-w, w), n_nodes=n, return_error=True, y=y)
               for w, n in [(6.0, 256), (12.0, 512), (24.0, 1024)]]
    for (v1, e1), (v2, e2) in zip(results, results[1:]):
        assert torch.all((v1 - v2).abs() <= e1 + e2 + 1e-6), name
    assert torch.all(results[-1][1] < 0.05 * model.dim)        # and the widest box holds the mass


class _OutwardTails(torch.nn.Module):
    """One-dimensional score model: a standard normal's score inside |x| < 4, pointing outward beyond it
    (the non-decaying tail of issue 17's background model)."""
    dim = 1

    def context(self, x, y=None):
        return torch.zeros(x.shape[0], 1, 1, dtype=x.dtype)

    def head(self, context, x, dims=None):
        x = torch.broadcast_to(x, torch.broadcast_shapes(context.shape[:-1], x.shape))
        return torch.where(x.abs() < 4, -x, x.sign() * 2.0)


def test_box_test_passes_a_density_on_r_and_fails_a_model_cut_to_the_box():
    x = torch.randn(64, 1, generator=torch.Generator().manual_seed(3), dtype=torch.float64).clamp(-3, 3)
    density = box_test(ExactConditionalScores(dist.Gaussian([0.0], [[1.0]])), x, bounds=(-6.0, 6.0), n_nodes=128)
    assert density["passed"] and density["difference"] < 1e-3
    cut = box_test(_OutwardTails(), x, bounds=(-6.0, 6.0), n_nodes=128)
    assert not cut["passed"] and cut["wide"] < cut["narrow"] - 1.0
    with pytest.raises(ValueError, match="widen"):
        box_test(_OutwardTails(), x, widen=1.0)
