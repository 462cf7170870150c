"""The energy and score networks check their inputs: x of shape (n, D) with finite entries, sigma > 0 of shape () or (n,)."""
import pytest
import torch

from csm_edu.models import EnergyMLP, NoiseConditionalScoreNet, ScoreMLP

ENERGY, SCORE, NCSN = EnergyMLP(2, 8), ScoreMLP(2, 8), NoiseConditionalScoreNet(2, 8)
NAN = torch.tensor([[0.0, float("nan")]])


@pytest.mark.parametrize("call, pattern", [
    (lambda: ENERGY.energy(torch.zeros(3, 3)), "x must have 2 columns"),
    (lambda: ENERGY.score(torch.zeros(3)), "x must have shape \\(n, D\\)"),
    (lambda: ENERGY(NAN), "NaN or inf"),
    (lambda: SCORE.score(torch.zeros(3, 1)), "x must have 2 columns"),
    (lambda: SCORE(torch.tensor([[float("inf"), 0.0]])), "NaN or inf"),
    (lambda: NCSN(torch.zeros(3, 5), 0.1), "x must have 2 columns"),
    (lambda: NCSN(NAN, 0.1), "NaN or inf"),
    (lambda: NCSN(torch.zeros(3, 2), 0.0), "sigma must be finite and > 0"),
    (lambda: NCSN(torch.zeros(3, 2), torch.tensor([0.1, -0.1, 0.2])), "sigma must be finite and > 0"),
    (lambda: NCSN(torch.zeros(3, 2), float("nan")), "sigma must be finite and > 0"),
    (lambda: NCSN(torch.zeros(3, 2), torch.ones(2)), "sigma must be a number or have shape \\(n,\\) = \\(3,\\)"),
    (lambda: NCSN.at(0.5)(torch.zeros(3, 2, 1)), "x must have shape \\(n, D\\)"),
])
def test_bad_model_input_raises_value_error_naming_it(call, pattern):
    with pytest.raises(ValueError, match=pattern):
        call()


def test_good_inputs_pass_and_sigma_per_row_matches_the_scalar():
    x = torch.randn(4, 2)
    assert ENERGY(x).shape == (4,) and ENERGY.score(x).shape == (4, 2) and SCORE(x).shape == (4, 2)
    assert torch.allclose(NCSN(x, 0.3), NCSN(x, torch.full((4,), 0.3)))
    assert torch.allclose(NCSN(x, torch.full((4, 1), 0.3)), NCSN.score(x, 0.3))
