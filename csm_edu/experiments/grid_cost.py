"""Normalising an energy on a grid (lesson 01): log Z in float64, and its cost measured for small D and extrapolated."""
import math
import time
from typing import Callable, Dict, List, Sequence
import torch
from .. import checks, config
from ..models import EnergyMLP


def grid_log_z(energy_fn: Callable, *, window: Sequence[float], resolution: int,
               dtype: torch.dtype = torch.float64) -> float:
    r"""log Z = log \sum_{ij} exp(-E(g_{ij})) dA on a resolution x resolution grid over ``window``, in ``dtype``.

    The same Riemann sum as :func:`csm_edu.metrics.grid_log_density`, but in float64 by default,
    so that a convergence study sees the sum's own error down to about 1e-15 instead of float32
    rounding (about 1e-7 times the size of the terms, piling up over the r^2 terms).
    """
    n = checks.positive_int(resolution, "resolution", minimum=2)
    window = checks.window(window)
    xs = torch.linspace(window[0], window[1], n, dtype=dtype)
    ys = torch.linspace(window[2], window[3], n, dtype=dtype)
    X, Y = torch.meshgrid(xs, ys, indexing="xy")
    points = torch.stack([X.reshape(-1), Y.reshape(-1)], 1)
    with torch.no_grad():
        energy = energy_fn(points)
    return float(torch.logsumexp(-energy.to(dtype), 0) + torch.log((xs[1] - xs[0]) * (ys[1] - ys[0])))


def _time_energy_on_grid(energy_fn: Callable, dim: int, k: int, chunk: int) -> float:
    """Seconds to evaluate ``energy_fn`` at all k^dim points of a regular grid on [-4, 4]^dim."""
    axis = torch.linspace(-4.0, 4.0, k)
    n_points = k ** dim
    start = time.perf_counter()
    with torch.no_grad():
        for first in range(0, n_points, chunk):
            index = torch.arange(first, min(first + chunk, n_points))
            digits = torch.stack([(index // k ** d) % k for d in range(dim)], 1)   # base-k digits
            energy_fn(axis[digits])
    return time.perf_counter() - start


def measure_grid_cost(measured_dims: Sequence[int] = (1, 2, 3, 4), *, k: int = 20,
                      extrapolate_to: Sequence[int] = (6, 10, 20, 50, 100), hidden: int = 64,
                      chunk: int = 65536, seed: int = 0) -> List[Dict]:
    r"""Time the evaluation of an energy MLP on a grid of k^D points, then extrapolate in D.

    For each D in ``measured_dims`` an ``EnergyMLP(D, hidden)`` is evaluated at every point of a
    k^D grid (in chunks, so memory stays bounded) and timed. For larger D the time is
    extrapolated as k^D times the seconds per point measured at the largest measured D (a lower
    bound: a wider input costs a little more per point). Memory is what holding the grid points
    and their energies at once would take, k^D (D + 1) float32 numbers. Returns one dict per D
    with keys ``dim``, ``points``, ``seconds``, ``memory_bytes``, ``measured``.
    """
    k = checks.positive_int(k, "k", minimum=2)
    chunk = checks.positive_int(chunk, "chunk")
    measured_dims = [checks.positive_int(d, "measured_dims") for d in measured_dims]
    if not measured_dims:
        raise ValueError("measured_dims is empty: give at least one dimension to time, e.g. (1, 2, 3)")
    with config.seeded(seed):
        rows = []
        for dim in measured_dims:
            model = EnergyMLP(dim, hidden=hidden)
            _time_energy_on_grid(model.energy, dim, min(k, 4), chunk)       # warm-up
            seconds = _time_energy_on_grid(model.energy, dim, k, chunk)
            rows.append({"dim": dim, "points": k ** dim, "seconds": seconds,
                         "memory_bytes": 4 * (dim + 1) * k ** dim, "measured": True})
        per_point = rows[-1]["seconds"] / rows[-1]["points"]
        for dim in extrapolate_to:
            dim = checks.positive_int(dim, "extrapolate_to")
            if dim in measured_dims:
                continue
            if dim * math.log10(k) > 300:
                raise ValueError(f"extrapolate_to={dim}: k^D = {k}^{dim} overflows a float; "
                                 f"use D <= {int(300 / math.log10(k))}")
            points = float(k) ** dim
            rows.append({"dim": dim, "points": points, "seconds": per_point * points,
                         "memory_bytes": 4 * (dim + 1) * points, "measured": False})
        return rows
