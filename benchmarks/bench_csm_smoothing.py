"""Issue 17, deliverable 2: does a smoothing schedule (or an annealed background) fix AR-CSM's mode weights?

Same data, model, budget and evaluation as ``csm_edu.experiments.toy_density.seed_study`` (lesson 07's
full-mode budget, :data:`~csm_edu.experiments.toy_density.STUDY_SETTINGS`); only the CSM loss changes:

- ``sigma0 > 0``: each step trains on x + sigma_t * eps, eps ~ N(0, I), with sigma_t annealed from
  ``sigma0`` to 0 over the first ``anneal`` fraction of the steps (``shape``: linear or cosine), plain
  data afterwards;
- ``background``: the background fraction epsilon (``objectives.composite_score_matching``); with
  ``bg_anneal`` it is annealed linearly from ``background`` to ``bg_end`` over the same fraction.

Reports, per (set, seed, variant): test log-lik gap to the truth (nats, quadrature on BOUNDS), the box
test's difference, the ring's P(x2 > 0 | x1 = 0) (truth 0.5) or the product's small-mode weight (0.1),
and the training CPU seconds. One thread.

    PYTHONPATH=$PWD python benchmarks/bench_csm_smoothing.py --sets mixture --seeds 0 \
        --variant base --variant s0.5 ... --out /tmp/h17-anneal/rows.jsonl
"""
import argparse
import json
import math
import time

import torch

from csm_edu import config, objectives, train
from csm_edu.experiments import toy_density
from csm_edu.models import ARCSM
from csm_edu.widgets import lesson07

ST = toy_density.STUDY_SETTINGS
SAVE_DIR = None          # --save DIR: keep each trained model's state_dict there

# name -> (sigma0, anneal fraction, shape, background start, background end)
VARIANTS = {
    "base": (0.0, 0.0, "linear", ST["background"], None),
    "nobg": (0.0, 0.0, "linear", 0.0, None),
}
for s in (0.25, 0.5, 0.75, 1.0, 1.5, 2.0):
    for frac in (0.3, 0.5, 0.8):
        VARIANTS[f"s{s}-f{frac}"] = (s, frac, "linear", ST["background"], None)
        VARIANTS[f"s{s}-f{frac}-nobg"] = (s, frac, "linear", 0.0, None)
        VARIANTS[f"s{s}-f{frac}-cos"] = (s, frac, "cosine", ST["background"], None)
for b0 in (0.2, 0.3, 0.5):
    for frac in (0.5, 0.8):
        VARIANTS[f"bg{b0}-f{frac}"] = (0.0, frac, "linear", b0, ST["background"])
        VARIANTS[f"bg{b0}-f{frac}-to0"] = (0.0, frac, "linear", b0, 0.0)


def schedule(t: float, frac: float, shape: str) -> float:
    """1 at t = 0, 0 from t = frac on (t = step / steps)."""
    if frac <= 0 or t >= frac:
        return 0.0
    u = t / frac
    return 1 - u if shape == "linear" else 0.5 * (1 + math.cos(math.pi * u))


def make_loss(steps, sigma0, frac, shape, bg0, bg1):
    state = {"step": 0}

    def loss(model, x):
        t = state["step"] / steps
        state["step"] += 1
        w = schedule(t, frac, shape)
        if sigma0 > 0 and w > 0:
            x = x + sigma0 * w * torch.randn_like(x)
        bg = bg0 if bg1 is None else bg1 + (bg0 - bg1) * w
        return objectives.composite_score_matching(model, x, background=bg, background_scale=ST["background_scale"])
    return loss


def ring_weight(model) -> float:
    grid = torch.linspace(-6, 6, 2401)
    q = lesson07.conditional_log_density(model, 0.0, grid, n_fine=4096).exp()
    step = float(grid[1] - grid[0])
    return float(q[grid > 0].sum() * step / (q.sum() * step))


def ring_mode_tv(model, seed, n=8000) -> float:
    """Total variation between the model's mass per ring mode (samples, nearest mode) and the true 1/8 each."""
    z = model.sample(n, generator=torch.Generator().manual_seed(seed))
    angles = torch.arange(8) * 2 * math.pi / 8
    centres = 3.0 * torch.stack([angles.cos(), angles.sin()], 1)
    w = torch.bincount(torch.cdist(z, centres).argmin(1), minlength=8).double() / n
    return float(0.5 * (w - 1 / 8).abs().sum())


def run(set_name, seed, variant):
    x_train, x_test, target = toy_density.study_data(set_name, seed, ST["n_train"], ST["n_test"])
    dim = x_train.shape[1]
    sigma0, frac, shape, bg0, bg1 = VARIANTS[variant]
    with config.seeded(seed):
        model = ARCSM(dim, hidden=64, head_hidden=64, max_variance=float(x_train.var(0).max())).set_support(
            bounds=ST["bounds"], n_nodes=ST["n_nodes"])
    c0 = time.thread_time()
    train.fit(model, make_loss(ST["steps"], sigma0, frac, shape, bg0, bg1), x_train, steps=ST["steps"],
              batch_size=ST["batch_size"], lr=3e-3, generator=torch.Generator().manual_seed(seed), device="cpu",
              progress=False)
    cpu = time.thread_time() - c0
    if SAVE_DIR:
        torch.save(model.state_dict(), f"{SAVE_DIR}/{set_name}-{seed}-{variant}.pt")
    lo, hi = ST["bounds"]
    with torch.no_grad():
        value, error = model.log_prob(x_test, return_error=True)
        wide = model.log_prob(x_test, bounds=(2 * lo, 2 * hi), n_nodes=2 * ST["n_nodes"])
        row = {"set": set_name, "seed": seed, "variant": variant, "cpu": round(cpu, 1),
               "gap": float(target.log_prob(x_test).mean()) - float(value.mean()),
               "box": float(wide.mean()) - float(value.mean()), "error": float(error.mean())}
        if set_name == "mixture":
            row["p_upper"] = ring_weight(model)
            row["mode_tv"] = ring_mode_tv(model, seed)
        else:
            row["small_mode"] = toy_density.small_mode_weight(
                model.sample(ST["n_test"], generator=torch.Generator().manual_seed(seed)))
    return row


def main(argv=None):
    p = argparse.ArgumentParser()
    p.add_argument("--sets", nargs="+", default=["mixture"])
    p.add_argument("--seeds", nargs="+", type=int, default=[0])
    p.add_argument("--variant", action="append", required=True)
    p.add_argument("--out", required=True)
    p.add_argument("--save", default=None)
    a = p.parse_args(argv)
    global SAVE_DIR
    SAVE_DIR = a.save
    torch.set_num_threads(1)
    for set_name in a.sets:
        for seed in a.seeds:
            for v in a.variant:
                row = run(set_name, seed, v)
                print(json.dumps(row), flush=True)
                with open(a.out, "a") as f:
                    f.write(json.dumps(row) + "\n")


if __name__ == "__main__":
    main()
