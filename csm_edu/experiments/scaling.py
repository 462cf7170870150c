r"""Measured cost and stability of score-matching objectives on one AR-CSM network (lesson 09).

The AR-CSM paper's central claim: composite score matching costs about as much as denoising score
matching and far less than exact score matching, whose Jacobian trace takes D backward passes.
Here every objective trains the SAME network, an :class:`~csm_edu.models.ARCSM` whose vector of
conditional scores s = (s_1, ..., s_D) is also used as a score function. Its Jacobian is lower
triangular with diagonal ds_d/dx_d, so

- exact SM on s = 1/2|s|^2 + tr(grad s) is *exactly* the CSM loss, computed with D backward passes
  (``trace="loop"``: the D-pass cost this study shows, and the way the head's code runs anyway);
- sliced SM on s is an unbiased Hutchinson estimate of the CSM loss (1 backward pass per projection);
- composite DSM (:func:`csm_edu.objectives.composite_denoising_score_matching`) smooths each
  conditional along its own variable (biased by sigma, no derivative of the model);
- CSM gets the same diagonal in ONE extra pass through the small head (carried forward in :class:`ARCSM`).
"""
import math
from typing import Callable, Dict, List, Optional, Sequence

import torch

from .. import checks, config, objectives
from .timing import time_per_step
from ..models import ARCSM

OBJECTIVE_NAMES = ("exact SM", "SSM", "SSM-VR", "DSM", "CSM")


def objective_fns(sigma: float = 0.1) -> Dict[str, Callable]:
    """loss_fn(model, x) for each objective of the comparison, on an AR-CSM model."""
    return {
        "exact SM": lambda m, x: objectives.exact_score_matching(m.conditional_scores, x, trace="loop"),
        "SSM": lambda m, x: objectives.sliced_score_matching(m.conditional_scores, x),
        "SSM-VR": lambda m, x: objectives.sliced_score_matching(m.conditional_scores, x, variance_reduction=True),
        "DSM": lambda m, x: objectives.composite_denoising_score_matching(m, x, sigma),
        "CSM": lambda m, x: objectives.composite_score_matching(m, x),
    }


def saved_tensor_megabytes(loss_fn: Callable, model: torch.nn.Module, x: torch.Tensor) -> float:
    """Megabytes of tensors autograd saves for the backward pass of one step (distinct storages).

    A device-independent measure of a step's activation memory (the part that grows with the
    objective); on CUDA :func:`measure` also reports the true peak allocation.
    """
    return _step_value_and_megabytes(loss_fn, model, x)[1]


def make_model(dim: int, hidden: int = 256, context_dim: int = 16, seed: int = 0) -> ARCSM:
    """The fixed-width AR-CSM used at every D (ResMADE backbone with 2 residual blocks)."""
    with config.seeded(seed):
        return ARCSM(dim, hidden=hidden, n_blocks=2, context_dim=context_dim, head_hidden=32)


def measure(dims: Sequence[int], *, names: Sequence[str] = OBJECTIVE_NAMES, batch_size: int = 128,
            repeats: int = 5, exact_limit_s: float = 10.0, exact_limit_mb: float = 4000.0,
            device: Optional[torch.device] = None, hidden: int = 256,
            progress: Optional[Callable[[str], None]] = None) -> List[dict]:
    r"""Time (median ms per step, loss + backward) and memory of each objective at each D.

    Exact SM is measured while a step takes less than ``exact_limit_s`` and its memory, predicted
    to grow like D^2 (D graphs, each O(D)), stays under ``exact_limit_mb``; beyond, its time is
    extrapolated as t(D) = t(D0) * (D / D0) * t_DSM(D) / t_DSM(D0) from the last measured D0
    (D backward passes, each as costly as one DSM step), and the row says ``extrapolated``.
    Returns one dict per (D, objective): dim, objective, ms, saved_mb, peak_mb (CUDA only), how.
    """
    names = [checks.one_of(n, "objective", OBJECTIVE_NAMES) for n in names]
    device = torch.device(device) if device is not None else torch.device("cpu")
    fns = objective_fns()
    rows, last_exact = [], None
    for dim in dims:
        dim = checks.positive_int(dim, "dims entry")
        model = make_model(dim, hidden).to(device)
        x = torch.randn(batch_size, dim, generator=torch.Generator().manual_seed(0)).to(device)
        measured = {}
        for name in names:
            if name == "exact SM" and last_exact is not None and (
                    last_exact["ms"] > 1000 * exact_limit_s
                    or last_exact["mb"] * (dim / last_exact["dim"]) ** 2 > exact_limit_mb):
                continue
            if device.type == "cuda":
                torch.cuda.reset_peak_memory_stats(device)
            reps = 1 if name == "exact SM" and dim >= 256 else repeats
            ms = time_per_step(fns[name], model, x, repeats=reps, warmup=1)
            peak = torch.cuda.max_memory_allocated(device) / 2 ** 20 if device.type == "cuda" else float("nan")
            mb = saved_tensor_megabytes(fns[name], model, x)
            measured[name] = ms
            rows.append(dict(dim=dim, objective=name, ms=ms, saved_mb=mb, peak_mb=peak, how="measured"))
            if progress:
                progress(f"D={dim:4d} {name:8s} {ms:10.1f} ms  {mb:8.1f} MB")
            if name == "exact SM":
                last_exact = dict(dim=dim, ms=ms, mb=mb, dsm=None)
        if "exact SM" in names and "DSM" in measured:
            if "exact SM" in measured:
                last_exact["dsm"] = measured["DSM"]
            elif last_exact is not None and last_exact["dsm"]:
                ms = last_exact["ms"] * dim / last_exact["dim"] * measured["DSM"] / last_exact["dsm"]
                rows.append(dict(dim=dim, objective="exact SM", ms=ms, saved_mb=float("nan"), peak_mb=float("nan"),
                                 how="extrapolated"))
    return rows


def markdown_table(rows: List[dict]) -> str:
    """Rows of :func:`measure` as a Markdown table: ms per step (memory in MB), one column per objective."""
    names = [n for n in OBJECTIVE_NAMES if any(r["objective"] == n for r in rows)]
    dims = sorted({r["dim"] for r in rows})
    lines = ["| D | " + " | ".join(f"{n} ms (MB)" for n in names) + " | exact SM / CSM |",
             "|---:|" + "---:|" * (len(names) + 1)]
    for d in dims:
        cells, by_name = [], {r["objective"]: r for r in rows if r["dim"] == d}
        for n in names:
            r = by_name.get(n)
            if r is None:
                cells.append("-")
            else:
                mem = "" if math.isnan(r["saved_mb"]) else f" ({r['saved_mb']:.0f})"
                star = "*" if r["how"] == "extrapolated" else ""
                cells.append(f"{r['ms']:.1f}{star}{mem}")
        ratio = (by_name["exact SM"]["ms"] / by_name["CSM"]["ms"]) if "exact SM" in by_name and "CSM" in by_name else float("nan")
        star = "*" if "exact SM" in by_name and by_name["exact SM"]["how"] == "extrapolated" else ""
        lines.append(f"| {d} | " + " | ".join(cells) + f" | {ratio:.1f}{star} |")
    return "\n".join(lines) + "\n\n(*) extrapolated; MB = tensors saved for backward."


def read_csv(path) -> List[dict]:
    """Load a CSV written by benchmarks/bench_scaling.py (numbers parsed)."""
    import csv
    with open(path) as f:
        rows = list(csv.DictReader(f))
    for r in rows:
        r["dim"] = int(r["dim"])
        for k in ("ms", "saved_mb", "peak_mb"):
            r[k] = float(r[k]) if r[k] not in ("", "nan") else float("nan")
    return rows


def _step_value_and_megabytes(loss_fn: Callable, model: torch.nn.Module, x: torch.Tensor):
    """One step ``loss_fn(model, x).backward()``: (loss value, MB of tensors saved for backward)."""
    seen = {}

    def pack(t):
        try:
            key = t.untyped_storage().data_ptr()
            seen[key] = max(seen.get(key, 0), t.untyped_storage().nbytes())
        except (RuntimeError, NotImplementedError):
            pass
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        loss = loss_fn(model, x)
    loss.backward()
    model.zero_grad(set_to_none=True)
    return float(loss.detach()), sum(seen.values()) / 2 ** 20


def exact_against_composite(dims: Sequence[int], *, batch_size: int = 128, max_exact_mb: float = 1000.0,
                            repeats: int = 3, progress: Optional[Callable[[str], None]] = None) -> List[dict]:
    r"""Exact SM (D backward passes) against CSM (one pass) on an untrained AR-CSM of width 2D + 32 (lesson 07).

    At each D one model, ``ARCSM(D, hidden=2D+32, context_dim=8, head_hidden=32)``, gets both losses
    on the same standard-normal batch: their values (equal, the Jacobian of the conditional scores
    being triangular), the median ms of a loss + backward step over ``repeats`` (one for exact SM from
    D = 32 on, whose steps are long enough to time once), and the MB autograd
    saves for the backward pass. Exact SM keeps D graphs, so its memory grows like D^2: before each
    D it is *predicted* from the last measured D0 as mb(D0) (D / D0)^2, and where the prediction
    exceeds ``max_exact_mb`` exact SM is not run; its time is extrapolated as
    t(D) = t(D0) (D / D0) t_CSM(D) / t_CSM(D0) (D passes, each about as dear as one CSM step), and its
    memory as the prediction. Returns one dict per (D, objective): dim, objective ("exact SM" or
    "CSM"), ms, saved_mb, value (None where not run), how ("measured" or "extrapolated").
    """
    from .timing import time_per_step
    max_exact_mb = checks.positive(max_exact_mb, "max_exact_mb")
    fns = {"exact SM": lambda m, b: objectives.exact_score_matching(m.conditional_scores, b),
           "CSM": lambda m, b: objectives.composite_score_matching(m, b)}
    rows, last = [], None
    for dim in dims:
        dim = checks.positive_int(dim, "dims entry")
        with config.seeded(0):
            model = ARCSM(dim, hidden=2 * dim + 32, context_dim=8, head_hidden=32)
        x = torch.randn(batch_size, dim, generator=torch.Generator().manual_seed(0))
        value, mb = _step_value_and_megabytes(fns["CSM"], model, x)
        csm_ms = time_per_step(fns["CSM"], model, x, repeats=repeats, warmup=0)
        csm = dict(dim=dim, objective="CSM", ms=csm_ms, saved_mb=mb, value=value, how="measured")
        predicted = None if last is None else last["saved_mb"] * (dim / last["dim"]) ** 2
        if predicted is None or predicted <= max_exact_mb:
            value, mb = _step_value_and_megabytes(fns["exact SM"], model, x)
            ms = time_per_step(fns["exact SM"], model, x, repeats=1 if dim >= 32 else repeats, warmup=0)
            exact = dict(dim=dim, objective="exact SM", ms=ms, saved_mb=mb, value=value, how="measured")
            last = dict(exact, csm_ms=csm_ms)
        else:
            ms = last["ms"] * dim / last["dim"] * csm_ms / last["csm_ms"]
            exact = dict(dim=dim, objective="exact SM", ms=ms, saved_mb=predicted, value=None, how="extrapolated")
        rows += [exact, csm]
        if progress:
            progress(f"D={dim:4d}: exact SM {exact['ms']:9.1f} ms ({exact['how']}), CSM {csm_ms:6.1f} ms")
    return rows
