"""Bad input gets a ValueError that names the argument and the fix."""
import pytest
import torch

from csm_edu import data, metrics, objectives, sampling, train
from csm_edu.models import EnergyMLP, ScoreMLP

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
