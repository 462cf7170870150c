"""Milliseconds per training step of each score-matching objective on 2-D data.

Models: a 2-128-128-1 EnergyMLP (score by autograd) and a 2-128-128-2 ScoreMLP. One step is the
loss plus its backward pass (csm_edu.experiments.timing.time_per_step; the Adam update is the same for all
objectives and left out). Median of repeats after a warm-up. Run:

    python benchmarks/bench_objectives.py [--threads 1] [--batch 256] [--repeats 30] [--device cpu]
"""
import argparse

import torch

from csm_edu import objectives
from csm_edu.experiments import timing
from csm_edu.experiments.timing import time_per_step
from csm_edu.models import EnergyMLP, ScoreMLP

OBJECTIVES = {
    "exact SM": lambda m, x: objectives.exact_score_matching(m.score, x),
    "SSM (1 proj)": lambda m, x: objectives.sliced_score_matching(m.score, x),
    "SSM-VR (1 proj)": lambda m, x: objectives.sliced_score_matching(m.score, x, variance_reduction=True),
    "SSM (8 proj)": lambda m, x: objectives.sliced_score_matching(m.score, x, n_projections=8),
    "DSM": lambda m, x: objectives.denoising_score_matching(m.score, x, 0.1),
}


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--repeats", type=int, default=30)
    parser.add_argument("--device", default=None, help="cpu or cuda (default: config.device())")
    args = parser.parse_args()
    device, header = timing.prepare(args.threads, args.device)
    print(f"{header} | batch {args.batch} | repeats {args.repeats}")
    x = torch.randn(args.batch, 2, device=device)
    models = {"EnergyMLP 2-128-128-1": EnergyMLP(2, 128, 2), "ScoreMLP 2-128-128-2": ScoreMLP(2, 128, 2)}
    print("\n| objective | " + " | ".join(f"{name} (ms/step)" for name in models) + " |")
    print("|---|" + "---:|" * len(models))
    for obj_name, loss_fn in OBJECTIVES.items():
        row = []
        for model in models.values():
            model.to(device)
            row.append(f"{time_per_step(loss_fn, model, x, repeats=args.repeats, warmup=3):.2f}")
        print(f"| {obj_name} | " + " | ".join(row) + " |")


if __name__ == "__main__":
    main()
