"""Cost of exact score matching against its peers, as ratios measured in turns in one process.

Model: an energy MLP D-128-128-1 (``EnergyMLP(D, 128, 2)``, score by autograd), batch 256. One
step is the loss plus its backward pass (the optimiser update is the same for every objective).
Objectives, timed in turns (``csm_edu.experiments.timing.ratios_in_turns``, several rounds, the
spread over rounds reported):

- ``exact SM``: csm_edu's default trace (``trace="auto"``: 8 Jacobian rows per batched backward
  pass, ``objectives.score_and_trace_batched``);
- ``exact SM forward``: the forward Laplacian of an EnergyMLP (``trace="forward"``, opt-in);
- ``exact SM loop``: the D-backward-pass loop of lesson 03 (``trace="loop"``);
- ``SSM``: sliced score matching, one projection;
- ``torchebm exact SM``: ``torchebm.losses.ScoreMatching(hessian_method="exact")`` (its trace is
  ``vmap(jacrev(...))``), only when torchebm is importable. torchebm is never a dependency of the
  kit: install it in a separate environment for this benchmark, e.g.

      python3 -m venv /tmp/bench-venv          # + a .pth file pointing at the kit's site-packages
      /tmp/bench-venv/bin/pip install --no-deps torchebm
      PYTHONPATH=$PWD /tmp/bench-venv/bin/python benchmarks/bench_objectives.py

Memory (every exact variant, torchebm's included, measured the same way, in this process): the
peak of the bytes held by live tensor storages during one step, counted by a
``TorchDispatchMode`` (:class:`TensorMemoryPeak`). Every ATen operation's outputs are seen as they
are made (forward, backward, and inside torch.func transforms, whose batched tensors are
ordinary tensors at that level); each new storage adds its size to a running total and a
``weakref.finalize`` on the storage subtracts it when the storage is freed, so the total is
what is alive at each moment: the autograd graph's saved tensors plus the temporaries. The peak
of that total over the step is deterministic (the same number every time: the benchmark
measures it twice and stops if the two differ) and independent of the allocator, unlike the
resident set size, whose high-water mark also counts freed memory that glibc keeps (it made the
vmap path look 2x the loop when its live tensors were 15% fewer). Scratch buffers that a kernel
allocates and frees inside one operation are not seen. As a cross-check the mode also samples
glibc's ``mallinfo2`` in-use bytes after every operation (``malloc peak MB``); from the second
step on it agrees with the tensor count to within a few percent.

Time: ``timing.ratios_in_turns``, whose clock (``timing.step_clock``) is the thread's CPU time on
a CPU with one thread (the step's cost on one core; other jobs on a shared machine barely move it)
and the wall time otherwise (several threads, a GPU). The objectives take
turns step by step, each ratio is taken within a round and the median and the spread over the
rounds are reported.

Writes the ratios (and the memory in MB) to a CSV whose first line names torch, the threads,
the machine and its load.
"""
import argparse
import ctypes
import time
import weakref

import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten

from csm_edu import objectives
from csm_edu.experiments import timing
from csm_edu.models import EnergyMLP

try:
    from torchebm.losses import ScoreMatching
except ImportError:   # the kit never needs it
    ScoreMatching = None

DIMS = (2, 16, 64, 128)
EXACT = ("exact SM", "exact SM forward", "exact SM loop", "torchebm exact SM")


def loss_fns(model):
    fns = {
        "exact SM": lambda m, x: objectives.exact_score_matching(m.score, x),
        "exact SM loop": lambda m, x: objectives.exact_score_matching(m.score, x, trace="loop"),
        "exact SM forward": lambda m, x: objectives.exact_score_matching(m.score, x, trace="forward"),
        "SSM": lambda m, x: objectives.sliced_score_matching(m.score, x),
    }
    if ScoreMatching is not None:
        peer = ScoreMatching(model=model, hessian_method="exact", device=next(model.parameters()).device)
        fns["torchebm exact SM"] = lambda m, x: peer(x)
    return fns


PAIRS = [("exact SM", "torchebm exact SM"), ("exact SM", "exact SM loop"), ("exact SM", "SSM"),
         ("exact SM forward", "torchebm exact SM"), ("exact SM loop", "torchebm exact SM")]


def build(dim, batch, hidden, device):
    from csm_edu import config
    with config.seeded(0):
        model = EnergyMLP(dim, hidden, 2).to(device)
    x = torch.randn(batch, dim, generator=torch.Generator().manual_seed(0)).to(device)
    return model, x


class _MallInfo2(ctypes.Structure):
    _fields_ = [(name, ctypes.c_size_t) for name in
                "arena ordblks smblks hblks hblkhd usmblks fsmblks uordblks fordblks keepcost".split()]


def _malloc_in_use():
    """glibc's bytes in use (heap + mmap), or None off glibc."""
    try:
        libc = ctypes.CDLL("libc.so.6")
        libc.mallinfo2.restype = _MallInfo2
    except (OSError, AttributeError):
        return None
    return lambda: (lambda m: m.uordblks + m.hblkhd)(libc.mallinfo2())


class TensorMemoryPeak(TorchDispatchMode):
    """Peak bytes of live tensor storages created while the mode is on (see the module docstring).

    ``peak``: the running total's maximum; ``malloc_peak``: the largest growth of glibc's in-use
    bytes, sampled after every operation (None off glibc).
    """

    def __enter__(self):
        self.current = self.peak = 0
        self._live = set()
        self._in_use = _malloc_in_use()
        self._base = self._in_use() if self._in_use else 0
        self.malloc_peak = 0 if self._in_use else None
        return super().__enter__()

    def _freed(self, key, nbytes):
        self.current -= nbytes
        self._live.discard(key)

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for t in tree_flatten(out)[0]:
            if not isinstance(t, torch.Tensor) or t.device.type == "meta":
                continue
            storage = t.untyped_storage()
            key, nbytes = storage.data_ptr(), storage.nbytes()
            if nbytes == 0 or key in self._live:       # a view, or an in-place result
                continue
            self._live.add(key)
            self.current += nbytes
            self.peak = max(self.peak, self.current)
            weakref.finalize(storage, self._freed, key, nbytes)
        if self._in_use:
            self.malloc_peak = max(self.malloc_peak, self._in_use() - self._base)
        return out


def step_memory_mb(fn, model, x):
    """(tensor peak MB, malloc peak MB) of one step, measured twice; the tensor peaks must agree."""
    results = []
    for _ in range(2):
        model.zero_grad(set_to_none=True)
        with TensorMemoryPeak() as mode:
            fn(model, x).backward()
        results.append((mode.peak / 2 ** 20, None if mode.malloc_peak is None else mode.malloc_peak / 2 ** 20))
    model.zero_grad(set_to_none=True)
    if results[0][0] != results[1][0]:
        raise RuntimeError(f"the tensor memory peak is not repeatable: {results[0][0]} then {results[1][0]} MB")
    return results[1]


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--dims", type=int, nargs="+", default=list(DIMS))
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--hidden", type=int, default=128)
    parser.add_argument("--rounds", type=int, default=9)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--device", default=None, help="cpu or cuda (default: config.device())")
    parser.add_argument("--no-memory", action="store_true", help="skip the memory measure")
    parser.add_argument("--csv", default="benchmarks/results/ratios_objectives_cpu.csv")
    args = parser.parse_args()
    device, header = timing.prepare(args.threads, args.device)
    measure = timing.ratios_in_turns
    clock = "cpu" if timing.step_clock(device) is not time.perf_counter else "wall"
    peer = "torchebm exact SM: torchebm installed" if ScoreMatching is not None else "torchebm not installed"
    start, rows = time.perf_counter(), []
    print(f"{header} | {timing.machine_line()} | ...")
    table = []
    for dim in args.dims:
        model, x = build(dim, args.batch, args.hidden, device)
        fns = loss_fns(model)
        pairs = [p for p in PAIRS if p[0] in fns and p[1] in fns]
        for r in measure(fns, model, x, pairs, rounds=args.rounds, repeats=args.repeats, warmup=1):
            r.update(benchmark="bench_objectives", config=f"EnergyMLP {args.hidden}x2", dim=dim)
            rows.append(r)
            table.append(f"| {dim} | time | {r['numerator']} / {r['denominator']} | {r['ratio']:.2f} | "
                         f"{r['ratio_lo']:.2f}-{r['ratio_hi']:.2f} | {r['numerator_ms']:.1f}, {r['denominator_ms']:.1f} ms |")
            print(table[-1], flush=True)
        if args.no_memory or device.type != "cpu":
            continue
        mb = {}
        for variant in (v for v in EXACT if v in fns):
            mb[variant], malloc_mb = step_memory_mb(fns[variant], model, x)
            rows.append(dict(benchmark="bench_objectives memory", config=f"EnergyMLP {args.hidden}x2", dim=dim,
                             numerator=variant, denominator="peak tensor MB", ratio=mb[variant], ratio_lo=mb[variant],
                             ratio_hi=mb[variant], numerator_ms=float("nan"), denominator_ms=float("nan"), rounds=2))
            table.append(f"| {dim} | memory | {variant} | {mb[variant]:.1f} MB | malloc {malloc_mb:.1f} MB | |")
            print(table[-1], flush=True)
        for num, den in (("exact SM", "exact SM loop"), ("exact SM", "torchebm exact SM"),
                         ("exact SM forward", "exact SM loop")):
            if num in mb and den in mb:
                ratio = mb[num] / mb[den]
                rows.append(dict(benchmark="bench_objectives memory ratio", config=f"EnergyMLP {args.hidden}x2",
                                 dim=dim, numerator=f"{num} memory", denominator=f"{den} memory", ratio=ratio, ratio_lo=ratio, ratio_hi=ratio,
                                 numerator_ms=float("nan"), denominator_ms=float("nan"), rounds=2))
                table.append(f"| {dim} | memory | {num} / {den} | {ratio:.2f} | | |")
                print(table[-1], flush=True)
    # the load is read at the end too: the header names what the machine carried while measuring
    header = (f"{header} | {timing.machine_line()} | EnergyMLP D-{args.hidden}-{args.hidden}-1, batch {args.batch}, "
              f"{args.rounds} rounds x {args.repeats} steps in turns, {clock} time, ratio = median over rounds, lo-hi = spread | "
              f"memory: peak live tensor storage of one step (TorchDispatchMode count, repeatable) | {peer}")
    print("\n" + header)
    print("| D | what | numerator / denominator | ratio (median) | spread over rounds | ms (num, den) |")
    print("|---:|---|---|---:|---|---|")
    print("\n".join(table))
    timing.write_ratio_csv(args.csv, rows, header)
    print(f"\nwrote {args.csv} in {time.perf_counter() - start:.0f} s")


if __name__ == "__main__":
    main()
