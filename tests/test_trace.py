"""Hutchinson's trace estimator: unbiased, and its variance matches the closed forms."""
import pytest
import torch

from csm_edu.trace import hutchinson_estimates, hutchinson_variance


def _sym(dim, seed=0):
    a = torch.randn(dim, dim, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    return a + a.T


def test_variance_closed_forms_by_brute_force():
    a = torch.tensor([[2.0, 1.0], [1.0, -3.0]], dtype=torch.float64)
    # Rademacher: enumerate the 4 sign vectors exactly.
    signs = torch.tensor([[1, 1], [1, -1], [-1, 1], [-1, -1]], dtype=torch.float64)
    q = torch.einsum("ti,ij,tj->t", signs, a, signs)
    assert q.mean().item() == pytest.approx(float(torch.trace(a)))
    assert q.var(unbiased=False).item() == pytest.approx(hutchinson_variance(a, n_projections=1, kind="rademacher"))
    assert hutchinson_variance(a, n_projections=1, kind="rademacher") == pytest.approx(2 * (2 * 1.0 ** 2))
    # Gaussian, symmetric A: 2 ||A||_F^2 = 2 (4 + 1 + 1 + 9); divided by M.
    assert hutchinson_variance(a, n_projections=1, kind="gaussian") == pytest.approx(30.0)
    assert hutchinson_variance(a, n_projections=5, kind="gaussian") == pytest.approx(6.0)


def test_only_the_symmetric_part_matters():
    a = torch.tensor([[1.0, 4.0], [0.0, 1.0]], dtype=torch.float64)
    b = 0.5 * (a + a.T)
    for kind in ("gaussian", "rademacher"):
        assert hutchinson_variance(a, n_projections=1, kind=kind) == pytest.approx(hutchinson_variance(b, n_projections=1, kind=kind))


@pytest.mark.parametrize("kind", ["gaussian", "rademacher"])
@pytest.mark.parametrize("m", [1, 8])
def test_measured_mean_and_variance_match_theory(kind, m):
    a = _sym(6)
    est = hutchinson_estimates(a, n_projections=m, kind=kind, n_trials=20000, generator=torch.Generator().manual_seed(1))
    var = hutchinson_variance(a, n_projections=m, kind=kind)
    assert est.shape == (20000,)
    assert abs(est.mean().item() - torch.trace(a).item()) < 5 * (var / 20000) ** 0.5
    assert est.var().item() == pytest.approx(var, rel=0.1)


def test_rademacher_is_exact_on_a_diagonal_matrix():
    a = torch.diag(torch.tensor([1.0, 2.0, 5.0], dtype=torch.float64))
    est = hutchinson_estimates(a, n_projections=1, kind="rademacher", n_trials=100)
    assert torch.allclose(est, torch.full_like(est, 8.0))
    assert hutchinson_variance(a, n_projections=1, kind="rademacher") == 0.0
    assert hutchinson_variance(a, n_projections=1, kind="gaussian") == pytest.approx(2 * 30.0)


def test_bad_input_is_explained():
    with pytest.raises(ValueError, match="square"):
        hutchinson_variance(torch.ones(2, 3))
    with pytest.raises(ValueError, match="kind"):
        hutchinson_estimates(torch.eye(2), kind="uniform")
    with pytest.raises(ValueError, match="n_projections"):
        hutchinson_variance(torch.eye(2), n_projections=0)
