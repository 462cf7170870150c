"""Cost of a composite score matching step against a plain forward + backward of the same AR-CSM (issue 20).

For every configuration (the default ``ARCSM(784)``, the scaling study's model, the image
lessons' MADE and PixelCNN models of MNIST) and head (``head="local_mean"``, the default, and
``head="mlp"``, the earlier one) at D = 784, batch 128, all timed in turns in one process
(:func:`csm_edu.experiments.timing.time_interleaved`, so load from other processes hits every
measurement alike):

- ``plain``: ``model.conditional_scores(x).pow(2).sum().backward()``;
- ``CSM``: ``objectives.composite_score_matching(model, x).backward()``;
- the profile: ``backbone fwd`` (``model.context(x)``), ``plain fwd`` (backbone + head),
  ``CSM fwd`` (backbone + head + its derivative along x_d, ``scores_and_diagonal``) and
  ``backbone step`` (``model.context(x).pow(2).sum().backward()``). A forward-only piece is timed
  as a step whose loss is detached (its backward costs nothing), so the table splits a step into
  backbone fwd/bwd, head fwd, the diagonal's forward tangent and the extra backward it causes.

Ratios, not absolute times, are the result (the machine may be shared): run it several times and
report the spread. Prints a table and writes a CSV (one row per configuration and run)::

    python benchmarks/bench_csm_cost.py                       # CPU, 1 thread, all configurations, 3 runs
    python benchmarks/bench_csm_cost.py --configs default --runs 1
    python benchmarks/bench_csm_cost.py --configs "mnist PixelCNN (gpu)" --heads local_mean --ratio-only

``--ratio-only`` times only ``plain`` and ``CSM`` (a third of the time; the profile columns stay empty),
for configurations whose CPU steps take many seconds.
"""
import argparse
import csv
import statistics
import time

import torch

from csm_edu import config, objectives
from csm_edu.experiments import images, timing
from csm_edu.models import ARCSM

DIM = 784


def _mnist(mode, backbone):
    """images.make_arcsm's model for MNIST in ``mode``, with the head of the caller's choice."""
    def build(head):
        cfg = images.image_config("mnist", mode)
        net = images.make_arcsm(backbone, cfg).backbone
        return ARCSM(DIM, context_dim=cfg["context_dim"], head_hidden=cfg["head_hidden"], backbone=net, head=head)
    return build


CONFIGS = {   # builders of head ("local_mean" or "mlp"), each the configuration named
    "default": lambda head: ARCSM(DIM, head=head),
    "scaling": lambda head: ARCSM(DIM, hidden=256, n_blocks=2, context_dim=16, head_hidden=32, head=head),  # scaling.make_model
    "mnist MADE (cpu)": _mnist("cpu_full", "made"),
    "mnist MADE (gpu)": _mnist("gpu", "made"),
    "mnist PixelCNN (cpu)": _mnist("cpu_full", "pixelcnn"),
    "mnist PixelCNN (gpu)": _mnist("gpu", "pixelcnn"),
}


def _detached(fn):
    """A forward-only piece as a 'step': the loss is cut from the graph, so its backward costs nothing."""
    return lambda m, x: fn(m, x).detach().requires_grad_(True)


PIECES = {
    "plain": lambda m, x: m.conditional_scores(x).pow(2).sum(),
    "CSM": lambda m, x: objectives.composite_score_matching(m, x),
    "backbone step": lambda m, x: m.context(x).pow(2).sum(),
    "backbone fwd": _detached(lambda m, x: m.context(x).pow(2).sum()),
    "plain fwd": _detached(lambda m, x: m.conditional_scores(x).pow(2).sum()),
    "CSM fwd": _detached(lambda m, x: objectives.composite_score_matching(m, x)),
}


def profile(times: dict) -> dict:
    """Split the step times (ms) into the pieces named in the module docstring."""
    return {
        "backbone fwd": times["backbone fwd"],
        "backbone bwd": times["backbone step"] - times["backbone fwd"],
        "head fwd": times["plain fwd"] - times["backbone fwd"],
        "plain bwd": times["plain"] - times["plain fwd"],
        "diagonal tangent": times["CSM fwd"] - times["plain fwd"],
        "extra bwd": (times["CSM"] - times["CSM fwd"]) - (times["plain"] - times["plain fwd"]),
    }


def _write(path, rows):
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--configs", nargs="+", default=list(CONFIGS), choices=list(CONFIGS))
    parser.add_argument("--heads", nargs="+", default=["local_mean", "mlp"], choices=["local_mean", "mlp"])
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--runs", type=int, default=3, help="independent timings per configuration (for the spread)")
    parser.add_argument("--statistic", default="median", choices=list(timing.STATISTICS))
    parser.add_argument("--csv", default="benchmarks/results/csm_cost_cpu.csv")
    parser.add_argument("--ratio-only", action="store_true", help="time only plain and CSM, no profile")
    args = parser.parse_args()
    pieces = {k: PIECES[k] for k in ("plain", "CSM")} if args.ratio_only else PIECES
    device, header = timing.prepare(args.threads, args.device)
    print(f"{header} | D {DIM} | batch {args.batch} | {args.repeats} repeats, {args.statistic}")
    x = torch.randn(args.batch, DIM, generator=torch.Generator().manual_seed(0)).to(device)
    rows, start = [], time.perf_counter()
    for name, head in [(n, h) for n in args.configs for h in args.heads]:
        with config.seeded(0):
            model = CONFIGS[name](head).to(device)
        n_params = sum(p.numel() for p in model.parameters())
        for run in range(args.runs):
            times = timing.time_interleaved(pieces, model, x, repeats=args.repeats, statistic=args.statistic)
            parts = dict.fromkeys(profile(dict.fromkeys(PIECES, 0.0)), float("nan")) if args.ratio_only else profile(times)
            row = {"config": name, "head": head, "run": run, "params": n_params, "plain_ms": round(times["plain"], 2),
                   "csm_ms": round(times["CSM"], 2), "ratio": round(times["CSM"] / times["plain"], 3)}
            row.update({k.replace(" ", "_") + "_ms": round(v, 2) for k, v in parts.items()})
            rows.append(row)
            _write(args.csv, rows)   # after every run, so that an interrupted benchmark keeps what it measured
            print(f"{name:22s} {head:10s} run {run}: plain {times['plain']:8.1f} ms  CSM {times['CSM']:8.1f} ms  "
                  f"ratio {row['ratio']:.3f} | " + "  ".join(f"{k} {v:.1f}" for k, v in parts.items()), flush=True)
    print(f"\n{'configuration':22s} {'head':5s} {'CSM / plain (median, min-max over runs)':>42s}")
    for name, head in [(n, h) for n in args.configs for h in args.heads]:
        ratios = [r["ratio"] for r in rows if r["config"] == name and r["head"] == head]
        print(f"{name:22s} {head:10s} {statistics.median(ratios):18.3f} ({min(ratios):.3f}-{max(ratios):.3f})")
    print(f"wrote {args.csv} in {time.perf_counter() - start:.0f} s ({header})")


if __name__ == "__main__":
    main()
