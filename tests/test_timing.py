"""Cost measurement helpers: sane numbers, the model left untouched, exact SM growing with D."""
import pytest
import torch

from csm_edu import models, objectives
from csm_edu.experiments import timing


def _exact(m, x):
    return objectives.exact_score_matching(m.score, x)


def test_time_per_step_is_positive_and_leaves_weights_and_grads_clean():
    torch.manual_seed(0)
    model = models.EnergyMLP(3, 16, 1)
    before = [p.detach().clone() for p in model.parameters()]
    x = torch.randn(32, 3)
    ms = timing.time_per_step(_exact, model, x, repeats=3)
    best = timing.time_per_step(_exact, model, x, repeats=3, statistic="min")
    assert 0 < ms < 5000 and 0 < best < 5000
    assert all(torch.equal(a, b) for a, b in zip(before, model.parameters()))
    assert all(p.grad is None for p in model.parameters())


def test_cost_against_dim_shape_and_exact_sm_grows_faster_than_sliced():
    loop = lambda m, x: objectives.exact_score_matching(m.score, x, trace="loop")
    res = timing.cost_against_dim(
        {"exact": loop, "sliced": lambda m, x: objectives.sliced_score_matching(m.score, x)},
        dims=[2, 48], make_model=lambda d: models.EnergyMLP(d, 32, 1), batch_size=64, repeats=3, statistic="min")
    assert res["dim"] == [2, 48] and len(res["exact"]) == 2 and len(res["sliced"]) == 2
    # D = 48 needs 48 backward passes for the exact trace, one for the sliced estimate: measured 12-16x the
    # sliced growth; 2x leaves room for a shared machine and still fails for a trace that costs one pass (1x)
    assert res["exact"][1] / res["exact"][0] > 2 * res["sliced"][1] / res["sliced"][0]


def test_growth_exponent():
    assert timing.growth_exponent([1, 2, 4, 8], [3, 6, 12, 24]) == pytest.approx(1.0)
    assert timing.growth_exponent([1, 10], [5, 5]) == pytest.approx(0.0)


def test_bad_input_is_explained():
    model = models.EnergyMLP(2, 8, 1)
    with pytest.raises(ValueError, match="repeats"):
        timing.time_per_step(_exact, model, torch.randn(4, 2), repeats=0)
    with pytest.raises(ValueError, match="scalar"):
        timing.time_per_step(lambda m, x: m.energy(x), model, torch.randn(4, 2))
    with pytest.raises(ValueError, match="statistic"):
        timing.time_per_step(_exact, model, torch.randn(4, 2), statistic="mean")
    with pytest.raises(ValueError, match="loss_fns"):
        timing.cost_against_dim({}, [2], lambda d: models.EnergyMLP(d))


def test_prepare_sets_threads_and_names_the_setup():
    import torch
    from csm_edu.experiments import timing
    before = torch.get_num_threads()
    try:
        device, header = timing.prepare(threads=1, device="cpu")
        assert device == torch.device("cpu") and torch.get_num_threads() == 1
        assert "threads 1" in header and "device cpu" in header and "freed memory kept" in header
    finally:
        torch.set_num_threads(before)


def test_time_interleaved_times_every_objective_and_checks_its_input():
    torch.manual_seed(0)
    model = models.EnergyMLP(3, 16, 1)
    x = torch.randn(32, 3)
    fns = {"exact": _exact, "sliced": lambda m, x: objectives.sliced_score_matching(m.score, x)}
    ms = timing.time_interleaved(fns, model, x, repeats=3, statistic="min")
    assert set(ms) == {"exact", "sliced"} and all(0 < v < 5000 for v in ms.values())
    assert all(p.grad is None for p in model.parameters())
    with pytest.raises(ValueError, match="loss_fns"):
        timing.time_interleaved({}, model, x)
    with pytest.raises(ValueError, match="repeats"):
        timing.time_interleaved(fns, model, x, repeats=0)


def test_ratios_in_turns_and_their_csv(tmp_path):
    torch.manual_seed(0)
    model = models.EnergyMLP(3, 16, 1)
    x = torch.randn(32, 3)
    fns = {"exact": _exact, "sliced": lambda m, x: objectives.sliced_score_matching(m.score, x)}
    rows = timing.ratios_in_turns(fns, model, x, [("exact", "sliced"), ("sliced", "sliced")], rounds=2, repeats=2)
    assert [(r["numerator"], r["denominator"]) for r in rows] == [("exact", "sliced"), ("sliced", "sliced")]
    assert rows[1]["ratio"] == rows[1]["ratio_lo"] == rows[1]["ratio_hi"] == 1.0
    r = rows[0]
    assert r["ratio_lo"] <= r["ratio"] <= r["ratio_hi"] and r["rounds"] == 2 and r["numerator_ms"] > 0
    with pytest.raises(ValueError, match="pairs"):
        timing.ratios_in_turns(fns, model, x, [("exact", "DSM")])
    for row in rows:
        row.update(benchmark="test", config="EnergyMLP", dim=3)
    line = timing.machine_line()
    assert "cores" in line and "SHARED" in line
    path = tmp_path / "ratios.csv"
    timing.write_ratio_csv(path, rows, "threads 1 | " + line)
    assert path.read_text().startswith("# threads 1 | machine")
    header, back = timing.read_ratio_csv(path)
    assert header == "threads 1 | " + line and len(back) == 2
    assert back[0]["dim"] == 3 and back[0]["ratio"] == pytest.approx(r["ratio"])
