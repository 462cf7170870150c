"""Time and memory per training step of exact SM, SSM, SSM-VR, DSM and CSM against D (issue: lesson 09).

One AR-CSM (ResMADE backbone, hidden 256, 2 residual blocks, context 16, head 32) per D, batch 128.
Exact SM is measured until a step passes 10 s or its memory (growing like D^2) would pass 5 GB, and
extrapolated beyond (see csm_edu.experiments.scaling.measure).
Prints a Markdown table and writes a CSV; then measures, in turns in one process
(csm_edu.experiments.timing.ratios_in_turns, the spread over rounds reported), the ratios

- CSM / plain forward+backward of the same AR-CSM (``conditional_scores(x).pow(2).sum()``) and
  CSM / DSM at ``--ratio-dims`` (default 784), for the default ``ARCSM(D)`` and the lesson's model;
- exact SM (the D-pass loop) / SSM on the lesson's model at ``--exact-dims``,

and writes them to ``--ratios-csv`` (first line: torch, threads, machine):

    python benchmarks/bench_scaling.py                       # CPU, 1 thread, all D
    python benchmarks/bench_scaling.py --ratios-only         # only the ratios
    python benchmarks/bench_scaling.py --device cuda --csv benchmarks/results/scaling_cuda.csv
"""
import argparse
import csv
import time

import torch

from csm_edu import config
from csm_edu.experiments import scaling, timing
from csm_edu.models import ARCSM

DIMS = (2, 8, 32, 64, 128, 256, 512, 784)
CONFIGS = {"ARCSM(D) default": lambda dim: ARCSM(dim), "lesson 09 AR-CSM": scaling.make_model}


def measure_ratios(ratio_dims, exact_dims, batch, rounds, repeats, device):
    """Rows of timing.ratios_in_turns for every configuration and D (see the module docstring)."""
    fns = scaling.objective_fns()
    fns["plain fwd+bwd"] = lambda m, x: m.conditional_scores(x).pow(2).sum()
    rows = []
    jobs = [(name, dim, ["CSM", "DSM", "plain fwd+bwd"], [("CSM", "plain fwd+bwd"), ("CSM", "DSM")])
            for dim in ratio_dims for name in CONFIGS]
    jobs += [("lesson 09 AR-CSM", dim, ["exact SM", "SSM"], [("exact SM", "SSM")]) for dim in exact_dims]
    for name, dim, names, pairs in jobs:
        with config.seeded(0):
            model = CONFIGS[name](dim).to(device)
        x = torch.randn(batch, dim, generator=torch.Generator().manual_seed(0)).to(device)
        for r in timing.ratios_in_turns({n: fns[n] for n in names}, model, x, pairs, rounds=rounds, repeats=repeats):
            r.update(benchmark="bench_scaling", config=name, dim=dim)
            rows.append(r)
            print(f"| {name} | {dim} | {r['numerator']} / {r['denominator']} | {r['ratio']:.2f} | "
                  f"{r['ratio_lo']:.2f}-{r['ratio_hi']:.2f} | {r['numerator_ms']:.1f}, {r['denominator_ms']:.1f} |",
                  flush=True)
    return rows


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--dims", type=int, nargs="+", default=list(DIMS))
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--exact-limit", type=float, default=10.0, help="seconds per exact-SM step before extrapolating")
    parser.add_argument("--exact-limit-mb", type=float, default=5000.0,
                        help="predicted MB of an exact-SM step (grows like D^2) before extrapolating")
    parser.add_argument("--csv", default="benchmarks/results/scaling_cpu.csv")
    parser.add_argument("--ratios-only", action="store_true", help="skip the table against D, measure only the ratios")
    parser.add_argument("--ratio-dims", type=int, nargs="+", default=[784])
    parser.add_argument("--exact-dims", type=int, nargs="+", default=[2, 8, 32])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--ratios-csv", default="benchmarks/results/ratios_scaling_cpu.csv")
    args = parser.parse_args()
    device, header = timing.prepare(args.threads, args.device)
    print(f"{header} | batch {args.batch}")
    start = time.perf_counter()
    if not args.ratios_only:
        table(args, device)
    print(f"\n{timing.machine_line()}; {args.rounds} rounds x {args.repeats} steps in turns, batch {args.batch}")
    print("\n| configuration | D | numerator / denominator | ratio (median) | spread over rounds | ms (num, den) |")
    print("|---|---:|---|---:|---|---|")
    rows = measure_ratios(args.ratio_dims, args.exact_dims, args.batch, args.rounds, args.repeats, device)
    timing.write_ratio_csv(args.ratios_csv, rows, f"{header} | batch {args.batch} | {timing.machine_line()} | "
                                                  f"{args.rounds} rounds x {args.repeats} steps in turns")
    print(f"wrote {args.ratios_csv}; {time.perf_counter() - start:.0f} s in all")


def table(args, device):
    start = time.perf_counter()
    rows = scaling.measure(args.dims, batch_size=args.batch, repeats=args.repeats, exact_limit_s=args.exact_limit,
                           exact_limit_mb=args.exact_limit_mb,
                           device=device, progress=print)
    print()
    print(scaling.markdown_table(rows))
    by = {(r["dim"], r["objective"]): r["ms"] for r in rows}
    dmax = max(args.dims)
    print(f"\nCSM / DSM at D={dmax}: {by[(dmax, 'CSM')] / by[(dmax, 'DSM')]:.2f}x")
    measured = [r["dim"] for r in rows if r["objective"] == "exact SM" and r["how"] == "measured"]
    if measured:
        d = max(measured)
        print(f"exact SM / CSM at the largest measured D={d}: {by[(d, 'exact SM')] / by[(d, 'CSM')]:.1f}x")
    with open(args.csv, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=["dim", "objective", "ms", "saved_mb", "peak_mb", "how"])
        writer.writeheader()
        writer.writerows(rows)
    print(f"wrote {args.csv} in {time.perf_counter() - start:.0f} s")


if __name__ == "__main__":
    main()
