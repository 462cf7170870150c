"""Time and memory per training step of exact SM, SSM, SSM-VR, DSM and CSM against D (issue: lesson 09).

One AR-CSM (ResMADE backbone, hidden 256, 2 residual blocks, context 16, head 32) per D, batch 128.
Exact SM is measured until a step passes 10 s or its memory (growing like D^2) would pass 5 GB, and
extrapolated beyond (see csm_edu.experiments.scaling.measure).
Prints a Markdown table and writes a CSV:

    python benchmarks/bench_scaling.py                       # CPU, 1 thread, all D
    python benchmarks/bench_scaling.py --device cuda --csv benchmarks/results/scaling_cuda.csv
"""
import argparse
import csv
import time

import torch

from csm_edu.experiments import scaling, timing

DIMS = (2, 8, 32, 64, 128, 256, 512, 784)


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
    args = parser.parse_args()
    device, header = timing.prepare(args.threads, args.device)
    print(f"{header} | batch {args.batch}")
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
