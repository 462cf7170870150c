"""Stability of CSM, SSM and composite DSM training the same AR-CSM on 8x8 digits (lesson 09).

3 seeds x 2 learning rates x each objective, a fixed budget of steps; the quality number is the
AR-CSM's exact test bits/dim by quadrature on dequantised digits (logit space, lambda = 0.05).
Writes benchmarks/results/stability_runs.csv (one row per run) and stability_curves.csv (the loss
every 10 steps, averaged over each window):

    python benchmarks/bench_stability.py [--steps 1500] [--threads 1]
"""
import argparse
import csv
import time

from csm_edu.experiments import scaling, stability, timing


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=1500)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--lrs", type=float, nargs="+", default=[1e-3, 3e-3])
    parser.add_argument("--out", default="benchmarks/results/stability")
    args = parser.parse_args()
    _, header = timing.prepare(args.threads, "cpu")
    print(f"{header} | steps {args.steps}")
    start = time.perf_counter()
    runs = stability.stability_study(seeds=args.seeds, lrs=args.lrs, n_steps=args.steps, progress=print)
    print()
    print(stability.stability_summary(runs))
    with open(f"{args.out}_runs.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["objective", "lr", "seed", "bits_per_dim", "seconds", "final_loss"])
        for r in runs:
            w.writerow([r["objective"], r["lr"], r["seed"], f"{r['bits_per_dim']:.5f}", f"{r['seconds']:.1f}",
                        f"{sum(r['loss'][-50:]) / max(len(r['loss'][-50:]), 1):.5f}"])
    with open(f"{args.out}_curves.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["objective", "lr", "seed", "step", "loss"])
        for r in runs:
            for i in range(0, len(r["loss"]), 10):
                window = r["loss"][i:i + 10]
                w.writerow([r["objective"], r["lr"], r["seed"], i + len(window), f"{sum(window) / len(window):.5f}"])
    print(f"wrote {args.out}_runs.csv and {args.out}_curves.csv in {time.perf_counter() - start:.0f} s")


if __name__ == "__main__":
    main()
