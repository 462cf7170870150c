import re

import pytest
import torch

from csm_edu import distributions as D
from csm_edu import sampling
from csm_edu.denoise import noised_distribution


def _gaussian():
    return D.Gaussian([1.0, -0.5], [[1.0, 0.7], [0.7, 1.5]])


def test_langevin_reproduces_mean_and_covariance():
    target = _gaussian()
    g = torch.Generator().manual_seed(0)
    x = sampling.langevin(target.score, torch.zeros(4000, 2), step_size=0.02, steps=600, generator=g)
    assert torch.allclose(x.mean(0), target.mean, atol=0.08)
    # unadjusted Langevin has an O(step) bias in the covariance: 2% at this step
    assert torch.allclose(torch.cov(x.T), target.cov, atol=0.1)


def test_mala_is_exact_even_with_a_large_step():
    target = _gaussian()
    info = {}
    g = torch.Generator().manual_seed(1)
    x = sampling.langevin(target.score, torch.zeros(4000, 2), step_size=0.8, steps=400,
                          log_prob_fn=target.log_prob, generator=g, info=info)
    assert 0.2 < info["acceptance_rate"] < 0.95
    assert torch.allclose(x.mean(0), target.mean, atol=0.08)
    assert torch.allclose(torch.cov(x.T), target.cov, atol=0.1)
    ula = sampling.langevin(target.score, torch.zeros(4000, 2), step_size=0.8, steps=400, generator=g)
    assert (torch.cov(ula.T) - target.cov).abs().max() > 0.3  # the unadjusted chain is visibly biased


def test_record_every_returns_trajectory():
    target = _gaussian()
    x, traj = sampling.langevin(target.score, torch.zeros(10, 2), step_size=0.01, steps=20, record_every=5)
    assert traj.shape == (5, 10, 2) and torch.equal(traj[-1], x) and torch.equal(traj[0], torch.zeros(10, 2))


def _mixture_noised_score(mixture):
    """Exact noise-conditional score of a Gaussian mixture: covariances + sigma^2 I."""
    noised = {}                                   # one noised mixture per level, built once

    def score(x, sigma):
        out = torch.empty_like(x)
        for s in torch.unique(sigma).tolist():
            if s not in noised:
                noised[s] = noised_distribution(mixture, s)
            rows = sigma == s
            out[rows] = noised[s].score(x[rows])
        return out
    return score


def test_annealed_langevin_recovers_weights_where_plain_langevin_fails():
    target = D.two_modes(weights=(0.8, 0.2), separation=8.0, std=1.0)
    g = torch.Generator().manual_seed(0)
    x0 = torch.rand(3000, 2, generator=g) * 16 - 8
    plain = sampling.langevin(target.score, x0, step_size=0.05, steps=500, generator=g)
    sigmas = torch.logspace(1, -1, 10)
    annealed = sampling.annealed_langevin(_mixture_noised_score(target), x0, sigmas, steps_per_sigma=100,
                                          step_size=0.005, generator=g)
    first_weight = lambda x: (x.sum(1) < 0).float().mean().item()
    assert abs(first_weight(annealed) - 0.8) < 0.05
    assert abs(first_weight(plain) - 0.8) > 0.2  # stuck near the 50/50 split of the uniform start


def test_diverging_sampler_raises_clear_error():
    target = _gaussian()
    with pytest.raises(sampling.SamplerDivergedError, match="Lower step_size"):
        sampling.langevin(target.score, torch.zeros(10, 2), step_size=50.0, steps=200)


def _score_that_breaks_at(call, value):
    """-x, except at its ``call``-th evaluation (0 = the start state), where every entry is ``value``."""
    calls = [0]

    def score(x, *sigma):
        calls[0] += 1
        return torch.full_like(x, value) if calls[0] - 1 == call else -x
    return score


def _reported_step(err):
    return int(re.search(r"diverged by step (\d+)", str(err)).group(1))


@pytest.mark.parametrize("value", [float("nan"), float("inf"), 1e9])
def test_divergence_is_caught_within_check_every_steps(value):
    """The score breaks at its 23rd call (after step 23), so the state is bad from step 24 on."""
    with pytest.raises(sampling.SamplerDivergedError, match="Lower step_size") as err:
        sampling.langevin(_score_that_breaks_at(23, value), torch.zeros(5, 2), step_size=0.1, steps=200,
                          generator=torch.Generator().manual_seed(0))
    assert 24 <= _reported_step(err.value) < 24 + sampling.CHECK_EVERY


def test_mala_checks_its_proposals():
    """MALA rejects a bad proposal from a good state; a bad score at the start makes every proposal bad."""
    log_prob = lambda x: -0.5 * (x ** 2).sum(1)
    x = sampling.langevin(_score_that_breaks_at(23, float("nan")), torch.zeros(5, 2), step_size=0.1, steps=50,
                          log_prob_fn=log_prob, generator=torch.Generator().manual_seed(0))
    assert torch.isfinite(x).all()
    with pytest.raises(sampling.SamplerDivergedError, match="MALA diverged by step") as err:
        sampling.langevin(_score_that_breaks_at(0, float("nan")), torch.zeros(5, 2), step_size=0.1, steps=50,
                          log_prob_fn=log_prob, generator=torch.Generator().manual_seed(0))
    assert 1 <= _reported_step(err.value) < 1 + sampling.CHECK_EVERY


def test_divergence_in_the_last_steps_is_caught_at_the_end():
    with pytest.raises(sampling.SamplerDivergedError) as err:
        sampling.langevin(_score_that_breaks_at(41, float("nan")), torch.zeros(5, 2), step_size=0.1, steps=43,
                          noise=False)
    assert _reported_step(err.value) == 43


def test_annealed_langevin_divergence_is_caught():
    with pytest.raises(sampling.SamplerDivergedError, match="Annealed Langevin diverged by step") as err:
        sampling.annealed_langevin(_score_that_breaks_at(7, float("inf")), torch.zeros(5, 2), [1.0, 0.5],
                                   steps_per_sigma=20, generator=torch.Generator().manual_seed(0))
    assert 8 <= _reported_step(err.value) < 8 + sampling.CHECK_EVERY


def test_bad_arguments():
    target = _gaussian()
    with pytest.raises(ValueError, match="step_size must be > 0"):
        sampling.langevin(target.score, torch.zeros(3, 2), step_size=0.0, steps=5)
    with pytest.raises(ValueError, match="x0 must have shape"):
        sampling.langevin(target.score, torch.zeros(3), step_size=0.1, steps=5)
    with pytest.raises(ValueError, match="sigmas"):
        sampling.annealed_langevin(lambda x, s: x, torch.zeros(3, 2), [1.0, -0.1])


@pytest.mark.parametrize("mala", [False, True])
def test_langevin_progress_bar_shows_the_steps_and_changes_nothing(capsys, mala):
    target = _gaussian()
    kw = dict(step_size=0.1, steps=300, log_prob_fn=target.log_prob if mala else None)
    quiet = sampling.langevin(target.score, torch.zeros(50, 2), generator=torch.Generator().manual_seed(3), **kw)
    assert capsys.readouterr().err == ""                                   # off by default: silent
    shown = sampling.langevin(target.score, torch.zeros(50, 2), generator=torch.Generator().manual_seed(3),
                              progress=True, **kw)
    err = capsys.readouterr().err
    assert ("MALA" if mala else "Langevin") in err and "/300" in err       # a tqdm bar over the 300 steps
    assert torch.equal(quiet, shown)                                       # same draws, same samples


def test_every_sampler_takes_a_keyword_only_progress_option(capsys):
    import inspect
    for fn in (sampling.langevin, sampling.annealed_langevin, sampling.autoregressive_langevin,
               sampling.autoregressive_inverse_cdf):
        param = inspect.signature(fn).parameters["progress"]
        assert param.kind is inspect.Parameter.KEYWORD_ONLY and param.default is False, fn.__name__
    score = _mixture_noised_score(D.two_modes(weights=(0.5, 0.5), separation=4.0, std=1.0))
    sampling.annealed_langevin(score, torch.zeros(20, 2), [2.0, 1.0], steps_per_sigma=15, progress=True,
                               generator=torch.Generator().manual_seed(0))
    assert "/30" in capsys.readouterr().err                                 # 2 levels x 15 steps
