r"""Lesson 08 (Autoregressive Energy Machines): the normaliser experiment, its panel, and the comparison.

**Why 1-D normalisation is tractable.** The target is a product of D bimodal 1-D densities,
p(x) = prod_d m(x_d), m = 1/2 N(-mu, s^2) + 1/2 N(mu, s^2) (so Z = 1, log Z = 0), and the
proposal a broad Gaussian q = N(0, tau^2 I). With the same budget of S x D proposal numbers:

- *joint* importance sampling, S draws of the D-dim vector:
  log Z_hat = logsumexp_s sum_d log(m(x_sd) / q(x_sd)) - log S;
- *autoregressive* (what an AEM does), one 1-D estimate per dimension, summed:
  log Z_hat = sum_d [logsumexp_s log(m(x_sd) / q(x_sd)) - log S].

The joint weights are products of D factors, so their variance grows like (1 + v)^D - 1
(v = Var_q of one factor): the log estimate's bias (Jensen) and spread grow about linearly in D
and soon the largest weight is all of the sum. The autoregressive estimate adds D independent
small errors: bias D b_1 and standard deviation sqrt(D) sigma_1, both with the 1-D values b_1,
sigma_1 ~ 1/S. :func:`normaliser_spread` measures both; :func:`csm_edu.widgets.lesson08.normaliser_spread_figure` draws them.
"""
import functools
import math
from typing import Dict, Optional, Sequence
import numpy as np
import torch
from .. import checks, config, objectives, resources, train
from ..models import AEM, AEMLoss, ARCSM, MixtureMADE
from ..distributions import LOG_2PI
from ..models.aem import importance_log_normaliser

MODE, MODE_STD, PROPOSAL_STD = 1.5, 0.5, 1.6      # m = 1/2 N(-1.5, 0.5^2) + 1/2 N(1.5, 0.5^2); q = N(0, 1.6^2)
DIMS = (1, 2, 4, 8, 16, 32, 64)
SAMPLE_SIZES = (1, 4, 16, 64, 256)



def _log_normal(x, mean, std):
    return -0.5 * ((x - mean) / std) ** 2 - math.log(std) - 0.5 * LOG_2PI


def log_weight(x):
    """log m(x) - log q(x), elementwise: the 1-D log importance weight (m normalised, so E_q[w] = 1)."""
    log_m = torch.logaddexp(_log_normal(x, -MODE, MODE_STD), _log_normal(x, MODE, MODE_STD)) - math.log(2.0)
    return log_m - _log_normal(x, 0.0, PROPOSAL_STD)


def normaliser_spread(dim: int, n_importance: int, *, n_repeats: int = 300, seed: int = 0) -> Dict[str, np.ndarray]:
    r"""Measured log Z_hat - log Z (log Z = 0) of the joint and the autoregressive estimator, ``n_repeats`` times.

    Returns {"joint": (R,), "autoregressive": (R,)} NumPy arrays; both estimators use the same
    S x D proposal draws in each repeat (see the module docstring).
    """
    dim = checks.positive_int(dim, "dim")
    n_importance = checks.positive_int(n_importance, "n_importance")
    n_repeats = checks.positive_int(n_repeats, "n_repeats", minimum=2)
    g = torch.Generator().manual_seed(seed)
    x = PROPOSAL_STD * torch.randn(n_repeats, n_importance, dim, generator=g)
    log_w = log_weight(x)                                                   # (R, S, D)
    zeros = torch.zeros(())
    joint = importance_log_normaliser(log_w.sum(-1), zeros.expand(n_repeats, n_importance))
    per_dim = importance_log_normaliser(log_w.transpose(1, 2), zeros.expand(n_repeats, dim, n_importance))
    return {"joint": joint.numpy(), "autoregressive": per_dim.sum(-1).numpy()}


@functools.lru_cache(maxsize=16)
def _cached_spread_rows(n_importance, dims, n_repeats, seed):
    return tuple(spread_against_dimension(n_importance, dims=dims, n_repeats=n_repeats, seed=seed))


def spread_against_dimension(n_importance: int, *, dims: Sequence[int] = DIMS, n_repeats: int = 300, seed: int = 0):
    """Bias (mean of log Z_hat - log Z) and standard deviation of both estimators for each D in ``dims``."""
    rows = []
    for d in dims:
        est = normaliser_spread(d, n_importance, n_repeats=n_repeats, seed=seed)
        rows.append({"dim": d, **{f"{k}_{stat}": float(getattr(np, stat)(v)) for k, v in est.items()
                                  for stat in ("mean", "std")}})
    return rows


HIDDEN, N_COMPONENTS = 64, 10     # the comparison's ResMADE width and mixture size (lesson 08, its checkpoint)


def build_models(dim: int, *, hidden: int = HIDDEN, n_components: int = N_COMPONENTS, n_importance: int = 20,
                 max_variance: float = 1.0) -> dict:
    """Untrained AEM, AR-CSM and MixtureMADE of the comparison, as ``{name: constructor}`` (call it to build).

    The AR-CSM has :class:`~csm_edu.models.ARCSM`'s default local-mean head (Gaussian tails: a density on
    all of R) with its conditional variances capped at ``max_variance`` (:func:`train_comparison` passes
    the largest per-coordinate variance of the training data, as lesson 07 does)."""
    return {"AEM": lambda: AEM(dim, n_components=n_components, hidden=hidden, n_importance=n_importance),
            "AR-CSM": lambda: ARCSM(dim, hidden=hidden, head_hidden=hidden, max_variance=max_variance),
            "MixtureMADE": lambda: MixtureMADE(dim, n_components=n_components, hidden=hidden)}


def train_comparison(x: torch.Tensor, *, steps: int, batch_size: int = 256, lr: float = 3e-3, hidden: int = HIDDEN,
                     n_components: int = N_COMPONENTS, n_importance: int = 20, warmup_steps: Optional[int] = None,
                     background: float = 0.05, seed: int = 0, models: Sequence[str] = ("AEM", "AR-CSM", "MixtureMADE"),
                     progress: bool = True, label: str = ""):
    """Train the AEM (:class:`~csm_edu.models.AEMLoss`, alpha warmed up over ``warmup_steps``,
    default steps // 5), AR-CSM (composite score matching with ``background``, as in lesson 07)
    and MixtureMADE (maximum likelihood) with the same ResMADE size and Adam schedule.

    Returns ``(models, histories)``, dicts keyed by name; ``histories[name].ms_per_step`` is the
    measured training time per step. After the AEM, ``models`` holds its proposal q as a density model
    of its own (``"AEM proposal"``, :attr:`~csm_edu.models.AEM.proposal`; no history).
    ``progress``: a tqdm bar with the loss per model, the model's name (prefixed by ``label``) printed above it.
    """
    x = checks.as_batch(x, "x")
    dim = x.shape[1]
    steps = checks.positive_int(steps, "steps")
    warmup_steps = steps // 5 if warmup_steps is None else warmup_steps
    builders = build_models(dim, hidden=hidden, n_components=n_components, n_importance=n_importance,
                            max_variance=float(x.var(0).max()))
    losses = {"AEM": AEMLoss(warmup_steps),
              "AR-CSM": lambda m, b: objectives.composite_score_matching(m, b, background=background),
              "MixtureMADE": objectives.negative_log_likelihood}
    plan = {name: (builders[name], losses[name]) for name in builders}
    built, histories = {}, {}
    for name in models:
        checks.one_of(name, "model name", tuple(plan))
        build, loss = plan[name]
        with config.seeded(seed):
            built[name] = build()
        if progress:
            print(f"training {label}{name} ({steps} steps)", flush=True)
        histories[name] = train.fit(built[name], loss, x, steps=steps, batch_size=batch_size, lr=lr,
                                    generator=torch.Generator().manual_seed(seed), device="cpu", progress=progress)
        if name == "AEM":
            built["AEM proposal"] = built["AEM"].proposal
    return built, histories


def _evaluation(name: str, n_importance: int, bounds, n_nodes: int, seed: int):
    """(log_prob options, how) of the comparison's model ``name``: its plan in :func:`train_comparison`."""
    if name == "AEM":
        return (dict(n_importance=n_importance, generator=torch.Generator().manual_seed(seed)),
                f"importance sampling, S={n_importance}")
    if name == "AR-CSM":
        return dict(bounds=bounds, n_nodes=n_nodes), f"quadrature, {n_nodes} nodes"
    return {}, "exact"


def compare_log_likelihoods(models: Dict[str, torch.nn.Module], histories, x_test: torch.Tensor, target=None, *,
                            n_importance: int = 1000, bounds: Sequence[float] = (-6.0, 6.0), n_nodes: int = 256,
                            seed: int = 0):
    """One row per model of :func:`train_comparison`: test log-likelihood ``model.log_prob(x_test, ...)``,
    its standard error over test points, how it was computed, and ms per training step. AEM:
    importance sampling with ``n_importance`` samples per conditional (biased up, ~1/S; generator
    seeded by ``seed``); AR-CSM: 1-D quadrature on ``bounds`` with ``n_nodes`` nodes; MixtureMADE
    and the AEM's proposal: exact. A last row holds the true density when ``target`` is given."""
    x_test = checks.as_batch(x_test, "x_test")
    rows = []
    for name, model in models.items():
        options, how = _evaluation(name, n_importance, bounds, n_nodes, seed)
        with torch.no_grad():
            values = model.log_prob(x_test, **options).double()
        rows.append({"model": name, "log_lik": float(values.mean()),
                     "stderr": float(values.std() / math.sqrt(len(values))), "how": how,
                     "ms_per_step": histories[name].ms_per_step if name in histories else float("nan")})
    if target is not None:
        values = target.log_prob(x_test).double()
        rows.append({"model": "true density", "log_lik": float(values.mean()),
                     "stderr": float(values.std() / math.sqrt(len(values))), "how": "exact", "ms_per_step": float("nan")})
    return rows


def importance_bias_curve(model: AEM, x: torch.Tensor, *, sample_sizes: Sequence[int] = (1, 4, 16, 64, 256),
                          reference_samples: int = 4096, n_repeats: int = 5, seed: int = 0):
    r"""Mean AEM log-likelihood on ``x`` for each S in ``sample_sizes`` minus that at ``reference_samples``.

    The difference is the Jensen bias of the importance-sampled normaliser (positive: log p_hat
    is too high). Returns ``(sizes, bias, spread)``, spread the std over ``n_repeats`` seeds.
    """
    x = checks.as_batch(x, "x", dim=model.dim)
    reference = model.log_likelihood(x, reference_samples, generator=torch.Generator().manual_seed(seed))[0]
    bias, spread = [], []
    for s in sample_sizes:
        vals = [model.log_likelihood(x, s, generator=torch.Generator().manual_seed(seed + 1 + r))[0]
                for r in range(n_repeats)]
        bias.append(float(np.mean(vals)) - reference)
        spread.append(float(np.std(vals)))
    return list(sample_sizes), bias, spread


# ---- the shipped checkpoint of lesson 08's full-mode comparison ----

SETS = ("grid", "spirals", "checkerboard")
FULL_SETTINGS = dict(steps=4000, batch_size=256, lr=3e-3, n_importance=20, n_data=20000, seed=0)
CHECKPOINT = "checkpoints/aem_comparison.pt"
CHECKPOINT_COMMAND = "python -m csm_edu.experiments.aem_study --make-checkpoint"


def comparison_data(name: str, n_data: int, *, seed: int = 0):
    """``(x_train, x_test)`` of lesson 08: ``n_data`` points of ``make_toy(name)``, 20 % held out (seed ``seed``)."""
    from ..data import make_toy, train_test_split
    x = make_toy(name, n_data, generator=torch.Generator().manual_seed(seed))
    return train_test_split(x, test_fraction=0.2, generator=torch.Generator().manual_seed(seed))


def make_checkpoint(path=None, *, sets: Sequence[str] = SETS, progress: bool = True):
    """Train lesson 08's full-mode comparison (:data:`FULL_SETTINGS`, each set as in the lesson) and write
    the state_dicts, loss curves and ms per step to ``path`` (default: the package's :data:`CHECKPOINT`).

    Deterministic: data, initialisation and training noise all come from ``FULL_SETTINGS["seed"]``
    (the ms per step are measured, so they differ between runs). Returns the path written.
    """
    st = FULL_SETTINGS
    models, loss, ms = {}, {}, {}
    for name in sets:
        x_train, _ = comparison_data(name, st["n_data"], seed=st["seed"])
        built, histories = train_comparison(x_train, steps=st["steps"], batch_size=st["batch_size"], lr=st["lr"],
                                            n_importance=st["n_importance"], seed=st["seed"], progress=progress,
                                            label=f"{name}: ")
        models[name] = {k: {p: v.detach().cpu().clone() for p, v in m.state_dict().items()}
                        for k, m in built.items() if k in histories}
        loss[name] = {k: torch.tensor(h.loss, dtype=torch.float32) for k, h in histories.items()}
        ms[name] = {k: float(h.ms_per_step) for k, h in histories.items()}
    state = {"settings": dict(st), "sets": list(sets), "command": CHECKPOINT_COMMAND,
             "models": models, "loss": loss, "ms_per_step": ms}
    return resources.save_checkpoint(state, CHECKPOINT, target=path)


def load_checkpoint(path=None):
    """The shipped comparison: ``(models, histories)``, dicts keyed by set name, each as
    :func:`train_comparison` returns them (``"AEM proposal"`` included), read with ``weights_only=True``."""
    state = resources.load_checkpoint(CHECKPOINT, source=path)
    st = state["settings"]
    models, histories = {}, {}
    for name in state["sets"]:
        x_train, _ = comparison_data(name, st["n_data"], seed=st["seed"])
        dim = x_train.shape[1]
        built = {k: build() for k, build in build_models(dim, n_importance=st["n_importance"],
                                                          max_variance=float(x_train.var(0).max())).items()}
        for k, m in built.items():
            m.load_state_dict(state["models"][name][k])
            m.eval()
        models[name] = {"AEM": built["AEM"], "AEM proposal": built["AEM"].proposal,       # train_comparison's order
                        "AR-CSM": built["AR-CSM"], "MixtureMADE": built["MixtureMADE"]}
        histories[name] = {k: train.History(loss=v.tolist(), seconds=state["ms_per_step"][name][k] * st["steps"] / 1000,
                                            steps=st["steps"], batch_size=st["batch_size"])
                           for k, v in state["loss"][name].items()}
    return models, histories


if __name__ == "__main__":
    import sys
    sys.exit(resources.checkpoint_command(make_checkpoint, CHECKPOINT_COMMAND))
