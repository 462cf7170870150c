"""The CSM-cost benchmark (issue 20): its profile adds up, and the committed CSV meets the target."""
import csv
import importlib.util
import statistics
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
CSV = REPO / "benchmarks" / "results" / "csm_cost_cpu.csv"


def _bench():
    spec = importlib.util.spec_from_file_location("bench_csm_cost", REPO / "benchmarks" / "bench_csm_cost.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_profile_splits_the_plain_and_the_csm_step_into_pieces_that_add_up():
    times = {"backbone fwd": 10.0, "backbone step": 25.0, "plain fwd": 40.0, "plain": 100.0, "CSM fwd": 48.0,
             "CSM": 118.0}
    parts = _bench().profile(times)
    assert parts["head fwd"] + parts["backbone fwd"] + parts["plain bwd"] == pytest.approx(times["plain"])
    assert times["plain"] + parts["diagonal tangent"] + parts["extra bwd"] == pytest.approx(times["CSM"])


def test_committed_csv_shows_csm_within_1_15x_of_a_plain_step_for_the_default_head():
    rows = list(csv.DictReader(CSV.open()))
    configs = {r["config"] for r in rows}
    assert {"default", "scaling", "mnist MADE (cpu)"} <= configs
    for name in configs:
        ratios = [float(r["ratio"]) for r in rows if r["config"] == name and r["head"] == "local_mean"]
        assert ratios and statistics.median(ratios) <= 1.15, (name, ratios)
