r"""Stability of CSM, SSM and composite DSM training the same AR-CSM on 8x8 digits (lesson 09).

Each objective trains :func:`csm_edu.experiments.scaling.make_model`'s kind of network over
several seeds and learning rates; test bits/dim come from the quadrature log-likelihood
(:func:`csm_edu.quadrature.arcsm_log_prob`) on the box ``DIGITS_BOUNDS`` that holds every
logit-space data point.
"""
import math
import statistics
import time
from typing import Callable, Dict, List, Optional, Sequence

import torch

from .. import checks, config, objectives
from ..models import ARCSM
from .scaling import objective_fns

DIGITS_LOGIT_LAMBDA = 0.05
DIGITS_BOUNDS = (-3.0, 3.0)  # holds logit(0.05 + 0.9 y) for every y in [0, 1): |z| <= 2.95


def digits_data(seed: int = 0):
    """8x8 digits as (train, test) of shape (n, 64), dequantised, in logit space (lambda = 0.05).

    The model's density on the box ``DIGITS_BOUNDS``, which holds every possible data point,
    is normalised there by quadrature, so its test log-likelihood is that of a proper density.
    """
    from ..data import load_digits
    train_x, _ = load_digits("train", scale="logit", logit_lambda=DIGITS_LOGIT_LAMBDA, generator=torch.Generator().manual_seed(seed))
    test_x, _ = load_digits("test", scale="logit", logit_lambda=DIGITS_LOGIT_LAMBDA, generator=torch.Generator().manual_seed(seed))
    return train_x.reshape(len(train_x), -1), test_x.reshape(len(test_x), -1)


def stability_objectives(sigmas: Sequence[float] = (0.05, 0.2)) -> Dict[str, Callable]:
    """CSM, SSM (Hutchinson estimate of the same loss) and composite DSM at each sigma."""
    fns = {"CSM": objective_fns()["CSM"], "SSM": objective_fns()["SSM"]}
    for s in sigmas:
        fns[f"DSM sigma={s:g}"] = (lambda sig: lambda m, x: objectives.composite_denoising_score_matching(m, x, sig))(s)
    return fns


def digits_bits_per_dim(model, x_test: torch.Tensor, n_nodes: int = 64) -> float:
    """Test bits/dim of an AR-CSM on logit-space digits, via its quadrature log-likelihood."""
    from ..data.image_data import DIGITS_LEVELS, bits_per_dim
    from ..quadrature import arcsm_log_prob
    log_q = arcsm_log_prob(model, x_test, bounds=DIGITS_BOUNDS, n_nodes=n_nodes)
    return float(bits_per_dim(log_q, x_test, scale="logit", levels=DIGITS_LEVELS, logit_lambda=DIGITS_LOGIT_LAMBDA).mean())


def stability_study(names: Optional[Sequence[str]] = None, *, seeds: Sequence[int] = (0, 1, 2),
                    lrs: Sequence[float] = (1e-3, 3e-3), n_steps: int = 1500, batch_size: int = 128,
                    hidden: int = 128, n_test: Optional[int] = None, progress: Optional[Callable[[str], None]] = None):
    """Train the same AR-CSM on 8x8 digits with each objective, seed and learning rate.

    Returns a list of runs: dict(objective, lr, seed, loss (list per step), bits_per_dim, seconds).
    A run that diverges (non-finite loss) is kept with bits_per_dim = nan and the loss so far.
    """
    from ..train import History, fit
    fns = stability_objectives()
    names = list(fns) if names is None else [checks.one_of(n, "objective", tuple(fns)) for n in names]
    train_x, test_x = digits_data()
    if n_test is not None:
        test_x = test_x[:n_test]
    runs = []
    for name in names:
        for lr in lrs:
            for seed in seeds:
                with config.seeded(seed):
                    # head="mlp": the shipped stability CSVs (lesson 09) were measured with it
                    model = ARCSM(train_x.shape[1], hidden=hidden, n_blocks=2, context_dim=16, head_hidden=32, head="mlp")
                    history = History()
                    start = time.perf_counter()
                    try:
                        fit(model, fns[name], train_x, steps=n_steps, batch_size=batch_size, lr=lr,
                            generator=torch.Generator().manual_seed(seed), device="cpu", history=history)
                        bpd = digits_bits_per_dim(model, test_x)
                    except (FloatingPointError, ValueError):
                        bpd = float("nan")
                    runs.append(dict(objective=name, lr=lr, seed=seed, loss=history.loss, bits_per_dim=bpd,
                                     seconds=time.perf_counter() - start))
                    if progress:
                        progress(f"{name:16s} lr={lr:g} seed={seed}: {bpd:.3f} bits/dim ({runs[-1]['seconds']:.0f} s)")
    return runs


def stability_summary(runs: List[dict]) -> str:
    """Markdown table: mean and spread (min..max) of test bits/dim over seeds, per objective and lr."""
    lines = ["| objective | lr | bits/dim mean | min..max over seeds | diverged |", "|---|---:|---:|---|---:|"]
    keys = []
    for r in runs:
        if (r["objective"], r["lr"]) not in keys:
            keys.append((r["objective"], r["lr"]))
    for name, lr in keys:
        vals = [r["bits_per_dim"] for r in runs if r["objective"] == name and r["lr"] == lr]
        ok = [v for v in vals if math.isfinite(v)]
        mean = statistics.mean(ok) if ok else float("nan")
        spread = f"{min(ok):.3f}..{max(ok):.3f}" if ok else "-"
        lines.append(f"| {name} | {lr:g} | {mean:.3f} | {spread} | {len(vals) - len(ok)} |")
    return "\n".join(lines)
