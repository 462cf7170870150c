"""Measured cost of training objectives: milliseconds per step, and how it grows with D.

One *training step* here is what :func:`csm_edu.train.fit` does per minibatch apart from the
optimiser update (whose cost does not depend on the objective): evaluate ``loss_fn(model, x)``,
zero the gradients and back-propagate into the parameters.

**Clock** (:func:`step_clock`). On a CPU with one torch thread, a step is timed in CPU seconds of
the calling thread (``time.thread_time``), where all of its work runs: other processes on a shared
machine then do not change the reading (wall-clock times of the same step grew 2-3x at a load of
6 on 2 cores, and ratios of two objectives moved by 15%). With several threads or on CUDA (after
synchronising) the clock is the wall clock, ``time.perf_counter``. The *median* over repeats is
reported by default because a shared machine still produces occasional slow outliers (cache and
memory-bandwidth contention); ``statistic="min"`` gives the least disturbed step, since
interference only ever adds time (the advice of Python's ``timeit``).
"""
import csv
import os
import platform
import statistics
import time
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import torch

from .. import checks, config, files

LossFn = Callable[[torch.nn.Module, torch.Tensor], torch.Tensor]
STATISTICS = {"median": statistics.median, "min": min}


def prepare(threads: int = 1, device=None):
    """Set up a benchmark process: thread count, :func:`csm_edu.config.keep_freed_memory`, device.

    Returns ``(device, header)``; ``device`` is ``config.device()`` when None, and ``header`` a line
    naming torch, the device, the thread count and the allocator setting, to print above the results.
    """
    torch.set_num_threads(checks.positive_int(threads, "threads"))
    kept = config.keep_freed_memory()
    device = torch.device(device) if device is not None else config.device()
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else (platform.processor() or platform.machine())
    header = (f"torch {torch.__version__} | device {device} ({name}) | threads {torch.get_num_threads()} | "
              f"freed memory kept {kept}")
    return device, header


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def step_clock(device: torch.device) -> Callable[[], float]:
    """The clock that times a step on ``device``: the calling thread's CPU time on a CPU with one torch
    thread (all the work runs in this thread), else the wall clock (module docstring)."""
    if torch.device(device).type == "cpu" and torch.get_num_threads() == 1:
        return time.thread_time
    return time.perf_counter


def _timed_step(loss_fn: LossFn, model: torch.nn.Module, x: torch.Tensor, params) -> float:
    """One step ``loss_fn(model, x).backward()`` in ms (:func:`step_clock`); the gradients are cleared afterwards."""
    clock = step_clock(x.device)
    _sync(x.device)
    start = clock()
    loss = loss_fn(model, x)
    if not isinstance(loss, torch.Tensor) or loss.dim() != 0:
        raise ValueError("loss_fn(model, x) must return a scalar tensor")
    loss.backward()
    _sync(x.device)
    elapsed = clock() - start
    for p in params:
        p.grad = None
    return 1000.0 * elapsed


def _trainable(model: torch.nn.Module) -> list:
    params = [p for p in model.parameters() if p.requires_grad]
    if not params:
        raise ValueError("model has no trainable parameters: there is nothing to back-propagate into")
    return params


def _check_batch(x) -> None:
    if not isinstance(x, torch.Tensor) or x.dim() < 2 or x.shape[0] == 0:
        raise ValueError("x must be a non-empty batch tensor of shape (n, D) or (n, C, H, W)")


def time_per_step(loss_fn: LossFn, model: torch.nn.Module, x: torch.Tensor, *, repeats: int = 5,
                  warmup: int = 1, statistic: str = "median") -> float:
    """Median (or ``statistic="min"``) time in ms (:func:`step_clock`) of one step ``loss_fn(model, x).backward()``.

    ``warmup`` untimed steps come first (allocations, lazy initialisation), then ``repeats``
    timed ones. ``loss_fn(model, batch)`` must return a scalar tensor, the same signature as in
    :func:`csm_edu.train.fit`, e.g. ``lambda m, x: objectives.exact_score_matching(m.score, x)``.
    The model's gradients are cleared after every step; its weights are not changed.
    """
    repeats = checks.positive_int(repeats, "repeats")
    warmup = checks.positive_int(warmup, "warmup", minimum=0)
    summary = STATISTICS[checks.one_of(statistic, "statistic", tuple(STATISTICS))]
    _check_batch(x)
    params = _trainable(model)
    for _ in range(warmup):
        _timed_step(loss_fn, model, x, params)
    return summary([_timed_step(loss_fn, model, x, params) for _ in range(repeats)])


def cost_against_dim(loss_fns: Dict[str, LossFn], dims: Sequence[int], make_model: Callable[[int], torch.nn.Module],
                     *, batch_size: int = 128, repeats: int = 5, warmup: int = 1, seed: int = 0,
                     device: Optional[torch.device] = None,
                     make_data: Optional[Callable[[int, int], torch.Tensor]] = None,
                     statistic: str = "median") -> Dict[str, list]:
    """Time per step (ms, median or min over ``repeats``) of each objective for each D in ``dims``.

    For every D a fresh ``make_model(D)`` is built (seeded with ``seed``) and every objective is
    timed on the same batch ``make_data(batch_size, D)`` (standard normal by default). After
    ``warmup`` untimed steps of each objective, the timed steps take turns (objective 1, 2, ...,
    1, 2, ...), so that a burst of load from other processes hits all objectives alike. Returns
    ``{"dim": list(dims), name: [ms for each D], ...}`` -- ready for a plot or a table.
    """
    if not loss_fns:
        raise ValueError("loss_fns is empty: give a dict name -> loss_fn(model, x)")
    dims = [checks.positive_int(d, "dims entry") for d in dims]
    if not dims:
        raise ValueError("dims is empty: give the dimensions to time, e.g. [2, 8, 32]")
    batch_size = checks.positive_int(batch_size, "batch_size")
    device = torch.device(device) if device is not None else torch.device("cpu")
    result: Dict[str, list] = {"dim": list(dims)}
    result.update({name: [] for name in loss_fns})
    for dim in dims:
        with config.seeded(seed):
            model = make_model(dim).to(device)
        if make_data is None:
            x = torch.randn(batch_size, dim, generator=torch.Generator().manual_seed(seed))
        else:
            x = make_data(batch_size, dim)
        x = x.to(device)
        for name, ms in time_interleaved(loss_fns, model, x, repeats=repeats, warmup=warmup, statistic=statistic).items():
            result[name].append(ms)
    return result


def time_interleaved(loss_fns: Dict[str, LossFn], model: torch.nn.Module, x: torch.Tensor, *, repeats: int = 5,
                     warmup: int = 1, statistic: str = "median") -> Dict[str, float]:
    """:func:`time_per_step` of several objectives on one model and batch, their timed steps taking turns.

    After ``warmup`` untimed steps of each, the timed steps go objective 1, 2, ..., 1, 2, ..., so a
    burst of load from other processes, or a drift of the machine, hits all of them alike and
    their *ratios* stay trustworthy. Returns ``{name: ms}`` (median or ``statistic="min"``).
    """
    if not loss_fns:
        raise ValueError("loss_fns is empty: give a dict name -> loss_fn(model, x)")
    repeats = checks.positive_int(repeats, "repeats")
    warmup = checks.positive_int(warmup, "warmup", minimum=0)
    summary = STATISTICS[checks.one_of(statistic, "statistic", tuple(STATISTICS))]
    _check_batch(x)
    params = _trainable(model)
    for loss_fn in loss_fns.values():
        for _ in range(warmup):
            _timed_step(loss_fn, model, x, params)
    times: Dict[str, list] = {name: [] for name in loss_fns}
    for _ in range(repeats):
        for name, loss_fn in loss_fns.items():
            times[name].append(_timed_step(loss_fn, model, x, params))
    return {name: summary(t) for name, t in times.items()}


def ratios_in_turns(loss_fns: Dict[str, LossFn], model: torch.nn.Module, x: torch.Tensor,
                    pairs: Sequence[Tuple[str, str]], *, rounds: int = 3, repeats: int = 5, warmup: int = 1,
                    statistic: str = "median") -> List[dict]:
    """Cost ratios t(numerator) / t(denominator) of objectives timed in turns, with their spread.

    Each of ``rounds`` rounds is one :func:`time_interleaved` of all ``loss_fns`` (``repeats``
    timed steps each, in turns); every pair's ratio is taken within a round, so that both sides
    saw the same load. Returns one dict per pair: numerator, denominator, ratio (median over the
    rounds), ratio_lo and ratio_hi (their smallest and largest), numerator_ms and denominator_ms
    (medians over the rounds), rounds.
    """
    rounds = checks.positive_int(rounds, "rounds")
    for pair in pairs:
        for name in pair:
            if name not in loss_fns:
                raise ValueError(f"pairs name {name!r}, which is not in loss_fns ({', '.join(loss_fns)})")
    per_round = [time_interleaved(loss_fns, model, x, repeats=repeats, warmup=warmup if r == 0 else 0, statistic=statistic)
                 for r in range(rounds)]
    rows = []
    for num, den in pairs:
        ratios = [ms[num] / ms[den] for ms in per_round]
        rows.append(dict(numerator=num, denominator=den, ratio=statistics.median(ratios), ratio_lo=min(ratios),
                         ratio_hi=max(ratios), numerator_ms=statistics.median(ms[num] for ms in per_round),
                         denominator_ms=statistics.median(ms[den] for ms in per_round), rounds=rounds))
    return rows


def machine_line(shared: bool = True) -> str:
    """The processor, core count and load average, and whether other jobs shared the machine."""
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    note = "SHARED with other jobs while measuring" if shared else "quiet"
    return (f"machine {platform.processor() or platform.machine()} ({os.cpu_count()} cores, "
            f"load average {load:.1f}), {note}")


RATIO_FIELDS = ("benchmark", "config", "dim", "numerator", "denominator", "ratio", "ratio_lo", "ratio_hi",
                "numerator_ms", "denominator_ms", "rounds")


def write_ratio_csv(path, rows: List[dict], header: str) -> None:
    """Write ratio rows (those of :func:`ratios_in_turns` plus benchmark, config, dim) as CSV.

    The first line is ``# header``: how and where the ratios were measured.
    """
    with files.atomic_write(path, mode="w") as f:
        f.write("# " + header.replace("\n", " ") + "\n")
        writer = csv.DictWriter(f, fieldnames=RATIO_FIELDS, extrasaction="ignore", lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)


def read_ratio_csv(path) -> Tuple[str, List[dict]]:
    """``(header, rows)`` of a CSV written by :func:`write_ratio_csv`, numbers parsed."""
    with open(path) as f:
        lines = f.read().splitlines()
    header = lines[0][2:] if lines and lines[0].startswith("# ") else ""
    rows = list(csv.DictReader([line for line in lines if not line.startswith("#")]))
    for r in rows:
        r["dim"], r["rounds"] = int(r["dim"]), int(r["rounds"])
        for k in ("ratio", "ratio_lo", "ratio_hi", "numerator_ms", "denominator_ms"):
            r[k] = float(r[k])
    return header, rows


def growth_exponent(dims: Sequence[float], ms: Sequence[float]) -> float:
    """Least-squares slope of log(ms) against log(D): cost ~ D^slope (1 = linear, 0 = flat)."""
    if len(dims) != len(ms) or len(dims) < 2:
        raise ValueError("dims and ms must have the same length, at least 2")
    ld = torch.log(torch.as_tensor(dims, dtype=torch.float64))
    lm = torch.log(torch.as_tensor(ms, dtype=torch.float64))
    ld_c = ld - ld.mean()
    return float((ld_c * (lm - lm.mean())).sum() / (ld_c ** 2).sum())
