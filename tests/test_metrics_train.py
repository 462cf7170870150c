import math

import pytest
import torch

from csm_edu import distributions, metrics, train
from csm_edu.models import EnergyMLP


def test_grid_log_likelihood_of_exact_gaussian_energy():
    target = distributions.Gaussian([0.3, -0.2], [[1.0, 0.4], [0.4, 0.8]])
    x = target.sample(500, generator=torch.Generator().manual_seed(0))
    shifted = lambda y: target.log_prob(y) + 7.0  # an unnormalised log density
    ll = metrics.grid_log_likelihood(shifted, x, window=(-6, 6, -6, 6), resolution=400)
    assert ll == pytest.approx(target.log_prob(x).mean().item(), abs=1e-3)


def test_fisher_divergence_closed_form():
    """For N(0, I) and s(x) = -x + c, the divergence is |c|^2 / 2 at every point."""
    target = distributions.Gaussian([0.0, 0.0], 1.0)
    c = torch.tensor([0.3, -0.4])
    x = target.sample(100)
    assert metrics.fisher_divergence(lambda y: -y + c, target, x) == pytest.approx(0.125, rel=1e-5)


def test_mmd_detects_a_shift_and_not_a_resample():
    g = torch.Generator().manual_seed(0)
    a, b = torch.randn(500, 2, generator=g), torch.randn(500, 2, generator=g)
    same = metrics.mmd(a, b)
    shifted = metrics.mmd(a, b + 0.5)
    assert abs(same) < 0.01 < shifted


def test_auroc_matches_brute_force_pair_count():
    g = torch.Generator().manual_seed(0)
    pos = torch.randint(0, 5, (40,), generator=g).float()
    neg = torch.randint(0, 5, (30,), generator=g).float() - 1
    pairs = (pos[:, None] > neg[None]).float() + 0.5 * (pos[:, None] == neg[None]).float()
    assert metrics.auroc(pos, neg) == pytest.approx(pairs.mean().item(), abs=1e-12)


def test_fit_is_seeded_and_checkpoints_round_trip(tmp_path):
    x = torch.randn(256, 2)
    losses = []
    for _ in range(2):
        torch.manual_seed(123)
        model = EnergyMLP(2, 16)
        h = train.fit(model, lambda m, b: (m.energy(b) ** 2).mean(), x, steps=20, batch_size=32,
                      generator=torch.Generator().manual_seed(5), progress=False, checkpoint=tmp_path / "m.pt",
                      device="cpu")
        losses.append(h.loss)
    assert losses[0] == losses[1] and h.steps == 20 and h.ms_per_step > 0
    fresh = EnergyMLP(2, 16)
    train.load_checkpoint(fresh, tmp_path / "m.pt")
    assert torch.equal(fresh.energy(x), model.energy(x))
    with pytest.raises(FileNotFoundError, match="does not exist"):
        train.load_checkpoint(fresh, tmp_path / "missing.pt")


def test_summarise_mean_and_standard_error():
    mean, se = metrics.summarise([1.0, 2.0, 3.0, 4.0])
    assert mean == 2.5 and se == pytest.approx(math.sqrt(5 / 3) / 2)


def test_setup_notebook_reports_its_settings_and_keeps_freed_memory_on_glibc():
    import platform
    from csm_edu import config
    info = config.setup_notebook(seed=3)
    assert info["seed"] == 3 and info["threads"] == torch.get_num_threads()
    on_glibc = platform.system() == "Linux" and platform.libc_ver()[0] == "glibc"
    assert info["freed_memory_kept"] is on_glibc
    assert config.keep_freed_memory() is on_glibc          # idempotent
    from tqdm import tqdm
    assert tqdm.monitor_interval == 0                       # no progress refresh from a second thread


def test_seeded_block_is_reproducible_and_restores_the_global_rng():
    from csm_edu import config
    torch.manual_seed(123)
    expected_next = torch.rand(3)
    torch.manual_seed(123)
    with config.seeded(7):
        a = torch.nn.Linear(4, 4).weight.detach().clone()
    with config.seeded(7):
        b = torch.nn.Linear(4, 4).weight.detach().clone()
    assert torch.equal(a, b)
    assert torch.equal(torch.rand(3), expected_next)  # the caller's stream is untouched
    with pytest.raises(ValueError, match="seed"):
        with config.seeded(-1):
            pass
