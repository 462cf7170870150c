"""Cost of exact score matching against its peers, as ratios measured in turns in one process.

Model: an energy MLP D-128-128-1 (``EnergyMLP(D, 128, 2)``, score by autograd), batch 256. One
step is the loss plus its backward pass (the optimiser update is the same for every objective).
Objectives, timed in turns (``csm_edu.experiments.timing.ratios_in_turns``, several rounds, the
spread over rounds reported):

- ``exact SM``: csm_edu's default trace (``trace="auto"``: torch.func vmap of vector-Jacobian
  products, the loop at D < 4);
- ``exact SM loop``: the D-backward-pass loop of lesson 03 (``trace="loop"``);
- ``SSM``: sliced score matching, one projection;
- ``torchebm exact SM``: ``torchebm.losses.ScoreMatching(hessian_method="exact")`` (its trace is
  ``vmap(jacrev(...))``), only when torchebm is importable. torchebm is never a dependency of the
  kit: install it in a separate environment for this benchmark, e.g.

      python3 -m venv /tmp/bench-venv          # + a .pth file pointing at the kit's site-packages
      /tmp/bench-venv/bin/pip install --no-deps torchebm
      PYTHONPATH=$PWD /tmp/bench-venv/bin/python benchmarks/bench_objectives.py

``--memory`` also measures each exact variant's peak resident memory in a fresh process per
(D, variant). Writes the ratios to a CSV whose first line names torch, the threads and the machine.
"""
import argparse
import subprocess
import sys
import time

import torch

from csm_edu import objectives
from csm_edu.experiments import timing
from csm_edu.models import EnergyMLP

try:
    from torchebm.losses import ScoreMatching
except ImportError:   # the kit never needs it
    ScoreMatching = None

DIMS = (2, 16, 64, 128)


def loss_fns(model):
    fns = {
        "exact SM": lambda m, x: objectives.exact_score_matching(m.score, x),
        "exact SM loop": lambda m, x: objectives.exact_score_matching(m.score, x, trace="loop"),
        "SSM": lambda m, x: objectives.sliced_score_matching(m.score, x),
    }
    if ScoreMatching is not None:
        peer = ScoreMatching(model=model, hessian_method="exact", device=next(model.parameters()).device)
        fns["torchebm exact SM"] = lambda m, x: peer(x)
    return fns


PAIRS = [("exact SM", "SSM"), ("exact SM", "exact SM loop"), ("exact SM", "torchebm exact SM"),
         ("exact SM loop", "torchebm exact SM")]


def build(dim, batch, hidden, device):
    from csm_edu import config
    with config.seeded(0):
        model = EnergyMLP(dim, hidden, 2).to(device)
    x = torch.randn(batch, dim, generator=torch.Generator().manual_seed(0)).to(device)
    return model, x


def _high_water_kb():
    with open("/proc/self/status") as f:
        return int(next(line for line in f if line.startswith("VmHWM")).split()[1])


def child(variant, dim, batch, hidden):
    """Peak RSS growth (MB) of one step of ``variant``, in this fresh process (Linux: VmHWM).

    ``ru_maxrss`` would not do: Linux carries it over from the parent across fork + exec. Writing
    5 to /proc/self/clear_refs resets the high-water mark to the current RSS.
    """
    torch.set_num_threads(1)
    model, x = build(dim, batch, hidden, torch.device("cpu"))
    fn = loss_fns(model)[variant]
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")
    base = _high_water_kb()
    fn(model, x).backward()
    print((_high_water_kb() - base) / 1024)


def peak_mb(variant, dim, batch, hidden):
    out = subprocess.run([sys.executable, __file__, "--child", variant, str(dim), "--batch", str(batch),
                          "--hidden", str(hidden)], capture_output=True, text=True, check=True)
    return float(out.stdout.split()[-1])


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--dims", type=int, nargs="+", default=list(DIMS))
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--hidden", type=int, default=128)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--device", default=None, help="cpu or cuda (default: config.device())")
    parser.add_argument("--memory", action="store_true", help="peak RSS of each exact variant (CPU, fresh processes)")
    parser.add_argument("--memory-only", action="store_true",
                        help="only the memory rows, replacing those of an existing --csv (its ratios are kept)")
    parser.add_argument("--csv", default="benchmarks/results/ratios_objectives_cpu.csv")
    parser.add_argument("--child", nargs=2, metavar=("VARIANT", "DIM"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        return child(args.child[0], int(args.child[1]), args.batch, args.hidden)
    device, header = timing.prepare(args.threads, args.device)
    peer = "torchebm exact SM: torchebm installed" if ScoreMatching is not None else "torchebm not installed"
    header = (f"{header} | {timing.machine_line()} | EnergyMLP D-{args.hidden}-{args.hidden}-1, batch {args.batch}, "
              f"{args.rounds} rounds x {args.repeats} steps in turns | {peer}")
    print(header)
    start, rows = time.perf_counter(), []
    if args.memory_only:
        header, old = timing.read_ratio_csv(args.csv)
        rows = [r for r in old if r["benchmark"] != "bench_objectives memory"]
        args.memory, args.dims = True, sorted({r["dim"] for r in rows})
    else:
        measure_ratios(args, device, rows)
    if args.memory:
        memory(args, rows)
    timing.write_ratio_csv(args.csv, rows, header)
    print(f"\nwrote {args.csv} in {time.perf_counter() - start:.0f} s")


def measure_ratios(args, device, rows):
    print("\n| D | numerator / denominator | ratio (median) | spread over rounds | ms (num, den) |")
    print("|---:|---|---:|---|---|")
    for dim in args.dims:
        model, x = build(dim, args.batch, args.hidden, device)
        fns = loss_fns(model)
        pairs = [p for p in PAIRS if p[0] in fns and p[1] in fns]
        for r in timing.ratios_in_turns(fns, model, x, pairs, rounds=args.rounds, repeats=args.repeats, warmup=1):
            r.update(benchmark="bench_objectives", config=f"EnergyMLP {args.hidden}x2", dim=dim)
            rows.append(r)
            print(f"| {dim} | {r['numerator']} / {r['denominator']} | {r['ratio']:.2f} | "
                  f"{r['ratio_lo']:.2f}-{r['ratio_hi']:.2f} | {r['numerator_ms']:.1f}, {r['denominator_ms']:.1f} |",
                  flush=True)


def memory(args, rows):
    """Peak RSS growth of one step of each exact variant at each D, appended to rows as memory rows."""
    print("\n| D | " + " | ".join(f"{v} peak MB" for v in ("exact SM", "exact SM loop", "torchebm exact SM")) + " |")
    print("|---:|---:|---:|---:|")
    for dim in args.dims:
        cells = []
        for variant in ("exact SM", "exact SM loop", "torchebm exact SM"):
            if variant == "torchebm exact SM" and ScoreMatching is None:
                cells.append("-")
                continue
            mb = peak_mb(variant, dim, args.batch, args.hidden)
            cells.append(f"{mb:.0f}")
            rows.append(dict(benchmark="bench_objectives memory", config=f"EnergyMLP {args.hidden}x2", dim=dim,
                             numerator=variant, denominator="peak RSS MB", ratio=mb, ratio_lo=mb, ratio_hi=mb,
                             numerator_ms=float("nan"), denominator_ms=float("nan"), rounds=1))
        print(f"| {dim} | " + " | ".join(cells) + " |", flush=True)


if __name__ == "__main__":
    main()
