"""The objectives compared in lesson 09 agree where theory says they must."""
import math

import pytest
import torch

from csm_edu import objectives
from csm_edu.experiments import scaling
from csm_edu.models import ARCSM


def _model_and_data(dim=6):
    torch.manual_seed(0)
    return ARCSM(dim, hidden=32, n_blocks=1, context_dim=8, head_hidden=16), torch.randn(64, dim)


def test_exact_sm_on_conditional_scores_equals_csm():
    """The Jacobian of the conditional scores is lower triangular: its trace is the CSM diagonal."""
    model, x = _model_and_data()
    exact = objectives.exact_score_matching(model.conditional_scores, x)
    csm = objectives.composite_score_matching(model, x)
    assert exact.item() == pytest.approx(csm.item(), rel=1e-5, abs=1e-6)


def test_sliced_sm_on_conditional_scores_is_unbiased_for_csm():
    model, x = _model_and_data()
    csm = objectives.composite_score_matching(model, x).item()
    g = torch.Generator().manual_seed(0)
    est = torch.tensor([objectives.sliced_score_matching(model.conditional_scores, x, n_projections=4, generator=g).item()
                        for _ in range(60)])
    assert abs(est.mean().item() - csm) < 4 * est.std().item() / math.sqrt(len(est)) + 1e-4


def test_composite_dsm_expectation_matches_csm_of_smoothed_conditionals_for_linear_head():
    """For a head linear in x_d, s_d = a_d x_d + b_d(x_<d), E[DSM] = E[1/2 s_d(x~)^2 + a_d] (Stein's lemma)."""
    model, x = _model_and_data(3)
    x = x.repeat(2000, 1)

    class Linear(torch.nn.Module):
        dim = 3

        def context(self, x, y=None):
            return torch.stack([torch.zeros(len(x)), x[:, 0], x[:, 0] + x[:, 1]], 1)[..., None]

        def head(self, c, x):
            return -1.5 * x + 0.5 * c[..., 0]

    lin = Linear()
    sigma = 0.4
    dsm = objectives.composite_denoising_score_matching(lin, x, sigma, generator=torch.Generator().manual_seed(0))
    eps = torch.randn(x.shape, generator=torch.Generator().manual_seed(0))
    s_noisy = lin.head(lin.context(x), x + sigma * eps)
    expected = (0.5 * s_noisy ** 2 - 1.5).sum(1).mean()
    assert dsm.item() == pytest.approx(expected.item(), abs=0.02)


def test_measure_small_dims_and_table():
    rows = scaling.measure([2, 4], batch_size=16, repeats=1, hidden=16, exact_limit_s=1e-6)
    by = {(r["dim"], r["objective"]): r for r in rows}
    assert by[(2, "exact SM")]["how"] == "measured"
    # the limit is tiny, so D=4's exact SM is extrapolated from D=2
    assert by[(4, "exact SM")]["how"] == "extrapolated" and by[(4, "exact SM")]["ms"] > 0
    assert all(r["ms"] > 0 for r in rows)
    table = scaling.markdown_table(rows)
    assert "| 4 |" in table and "*" in table


def test_bad_objective_name():
    with pytest.raises(ValueError, match="unknown objective"):
        scaling.measure([2], names=["MLE"])


def test_exact_against_composite_agrees_and_extrapolates_past_the_memory_cap():
    rows = scaling.exact_against_composite([2, 4, 16], batch_size=16, max_exact_mb=2.0, repeats=1)
    by = {(r["dim"], r["objective"]): r for r in rows}
    for d in (2, 4):
        assert by[(d, "exact SM")]["how"] == "measured"
        assert by[(d, "exact SM")]["value"] == pytest.approx(by[(d, "CSM")]["value"], rel=1e-4, abs=1e-5)
    exact16 = by[(16, "exact SM")]
    assert exact16["how"] == "extrapolated" and exact16["value"] is None
    assert exact16["saved_mb"] == pytest.approx(by[(4, "exact SM")]["saved_mb"] * 16, rel=1e-9)
    assert exact16["saved_mb"] > 2.0


def test_scaling_readout_and_table_say_when_exact_sm_is_extrapolated():
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from csm_edu.widgets import lesson09
    rows = [dict(dim=d, objective=o, ms=float(d) * (50 if o == "exact SM" else 1), saved_mb=1.0, peak_mb=float("nan"),
                 how="extrapolated" if (o == "exact SM" and d == 64) else "measured")
            for d in (8, 64) for o in ("exact SM", "DSM", "CSM")]
    fig, readout = lesson09.scaling_view(rows)
    assert "exact SM / CSM = 50x (exact SM extrapolated" in readout
    plt.close(fig)
    fig, readout = lesson09.scaling_view(rows, max_dim=8)
    assert "(measured)" in readout
    plt.close(fig)
    assert "| 50.0* |" in scaling.markdown_table(rows)
