"""Density models trained and compared on 2-D toy data: AR-CSM against MLE baselines (lessons 07, 08)."""
import itertools
import math
from pathlib import Path
from typing import Dict, List, Optional, Sequence
import torch
from .. import checks, config, data, files, metrics, objectives, quadrature, train
from .. import distributions as dist
from ..models import ARCSM, GaussianMADE, MixtureMADE
from ..models.arcsm import target_conditional_scores


def train_lesson_models(x: torch.Tensor, *, steps: int, batch_size: int = 256, lr: float = 3e-3,
                        background: float = 0.05, background_scale: float = 1.0, seed: int = 0, hidden: int = 64,
                        n_components: int = 8, order: Optional[Sequence[int]] = None, without_background: bool = False,
                        bounds: Sequence[float] = (-6.0, 6.0), n_nodes: int = 256,
                        names: Optional[Sequence[str]] = None, progress: bool = True):
    """Train AR-CSM (CSM with ``background``, see :func:`csm_edu.objectives.composite_score_matching`),
    GaussianMADE and MixtureMADE (maximum likelihood) on ``x``.

    All three use the same ResMADE backbone size and the same Adam schedule; the AR-CSM's head
    (:class:`~csm_edu.models.ARCSM`'s default) caps its conditional variances at the largest variance
    of a coordinate of ``x``. All train (:func:`csm_edu.train.fit`) on the CPU (faster than a GPU for these small 2-D models).
    ``without_background=True`` adds an AR-CSM trained by plain CSM. The AR-CSMs' densities live on
    ``bounds`` with ``n_nodes`` quadrature nodes (:meth:`~csm_edu.models.ARCSM.set_support`), so every
    model answers ``log_prob(x)``. ``names`` trains only those of the models (e.g. ``["AR-CSM"]``);
    ``progress`` shows :func:`~csm_edu.train.fit`'s bar with the loss for each model.
    Returns ``(models, histories)``, two dicts keyed by model name.
    """
    x = checks.as_batch(x, "x")
    dim = x.shape[1]
    csm = lambda eps: (lambda m, b: objectives.composite_score_matching(  # noqa: E731
        m, b, background=eps, background_scale=background_scale))
    # no conditional is wider than the widest marginal: the head's variance cap (ARCSM's max_variance) is
    # the largest per-dimension data variance (on the moons the cap of 1 cost about 1 nat: the first
    # conditional there has variance 3)
    max_variance = float(x.var(0).max())
    arcsm = lambda: ARCSM(dim, hidden=hidden, head_hidden=hidden, order=order,  # noqa: E731
                          max_variance=max_variance).set_support(bounds=bounds, n_nodes=n_nodes)
    plan = [("AR-CSM", arcsm, csm(background))]
    if without_background:
        plan.append(("AR-CSM, no background", arcsm, csm(0.0)))
    plan += [("GaussianMADE", lambda: GaussianMADE(dim, hidden=hidden, order=order), objectives.negative_log_likelihood),
             ("MixtureMADE", lambda: MixtureMADE(dim, n_components=n_components, hidden=hidden, order=order), objectives.negative_log_likelihood)]
    if names is not None:
        known = [name for name, _, _ in plan]
        for name in names:
            checks.one_of(name, "names entry", known)
        plan = [p for p in plan if p[0] in names]
    models, histories = {}, {}
    for name, build, loss in plan:
        with config.seeded(seed):
            models[name] = build()
        histories[name] = train.fit(models[name], loss, x, steps=steps, batch_size=batch_size, lr=lr,
                                    generator=torch.Generator().manual_seed(seed), device="cpu",
                                    progress=progress)
    return models, histories


def evaluate_models(models: Dict[str, object], x_test: torch.Tensor, target=None) -> List[dict]:
    """One row per model: mean test log-likelihood ``model.log_prob(x_test)`` (AR-CSM: quadrature on
    its support, see :func:`train_lesson_models`; baselines: exact), and, when the ``target`` is
    known, the composite Fisher divergence 1/2 E_p sum_d (s_d - d/dx_d log p(x_d | x_<d))^2.
    A last row holds the true density."""
    x_test = checks.as_batch(x_test, "x_test")
    rows = []
    for name, model in models.items():
        with torch.no_grad():
            ll = float(model.log_prob(x_test).mean())
        fisher = None
        if target is not None:
            order = model.order.tolist()
            fisher = metrics.fisher_divergence(lambda z: model.conditional_scores(z).detach(),
                                               lambda z: target_conditional_scores(target, z, order), x_test)
        rows.append({"model": name, "log_lik": ll, "fisher": fisher})
    if target is not None:
        rows.append({"model": "true density", "log_lik": float(target.log_prob(x_test).mean()), "fisher": 0.0})
    return rows


# ---- the seeds-and-dimensions study behind lesson 07's section 8 (issue 17) ----

PRODUCT_MEANS = ((-1.5, -1.0), (1.5, -1.0), (0.0, 1.5))   # one 2-D block of the product targets
PRODUCT_WEIGHTS = (0.6, 0.3, 0.1)                          # the third mode is the small one
PRODUCT_STD = 0.4
STUDY_SETS = ("mixture", "grid", "moons", "product-4d")     # "product-6d" too: exercise 6 of lesson 07
STUDY_SEEDS = (0, 1, 2)
STUDY_CSV = "results/arcsm_seeds.csv"
STUDY_COMMAND = "python -m csm_edu.experiments.toy_density --study"
# the lesson's full-mode budget (notebooks/07: N_TRAIN, N_TEST, N_STEPS, BATCH, BACKGROUND, BACKGROUND_SCALE)
STUDY_SETTINGS = dict(n_train=20000, n_test=4000, steps=1500, batch_size=1024, background=0.05,
                      background_scale=1.5, bounds=(-6.0, 6.0), n_nodes=256)


def product_target(n_blocks: int) -> dist.GaussianMixture:
    r"""A 2 ``n_blocks``-dimensional target: the product of ``n_blocks`` independent copies of one 2-D
    mixture of three Gaussians (means :data:`PRODUCT_MEANS`, std :data:`PRODUCT_STD`, weights
    :data:`PRODUCT_WEIGHTS`), i.e. a mixture of 3^n_blocks Gaussians with known log-density, conditionals
    and mode weights; the third mode of every block has weight 0.1."""
    n_blocks = checks.positive_int(n_blocks, "n_blocks")
    means, weights = [], []
    for combo in itertools.product(range(3), repeat=n_blocks):
        means.append([c for k in combo for c in PRODUCT_MEANS[k]])
        weights.append(math.prod(PRODUCT_WEIGHTS[k] for k in combo))
    return dist.GaussianMixture(torch.tensor(means), PRODUCT_STD ** 2, weights=torch.tensor(weights))


def small_mode_weight(x: torch.Tensor) -> float:
    """The fraction of the 2-D blocks of the rows of ``x`` (product-target layout) nearest to the small
    mode (the third of :data:`PRODUCT_MEANS`): 0.1 for samples of :func:`product_target`."""
    x = checks.as_batch(x, "x")
    blocks = x.reshape(-1, 2)
    nearest = torch.cdist(blocks, torch.tensor(PRODUCT_MEANS, dtype=x.dtype)).argmin(1)
    return float((nearest == 2).double().mean())


def study_data(name: str, seed: int, n_train: int, n_test: int):
    """``(train, test, target)`` of one study set: a toy set (``data.make_toy``) or ``"product-<D>d"``."""
    train_gen, test_gen = torch.Generator().manual_seed(2 * seed), torch.Generator().manual_seed(2 * seed + 1)
    if name.startswith("product-"):
        target = product_target(int(name[len("product-"):-1]) // 2)
        return target.sample(n_train, generator=train_gen), target.sample(n_test, generator=test_gen), target
    return (data.make_toy(name, n_train, generator=train_gen), data.make_toy(name, n_test, generator=test_gen),
            data.toy_distribution(name))


def seed_study(sets: Sequence[str] = STUDY_SETS, seeds: Sequence[int] = STUDY_SEEDS, *, progress: bool = True,
               **settings) -> List[dict]:
    r"""Every model of :func:`train_lesson_models` on every set and seed (the seed draws the data and
    initialises the models), at :data:`STUDY_SETTINGS` unless ``settings`` override them. One row per
    (set, seed, model): ``log_lik`` (test, nats; AR-CSM by quadrature on ``bounds``), ``error`` (AR-CSM:
    the quadrature's error estimate including the mass outside the box), ``log_lik_wide`` (AR-CSM on a
    box twice as wide, twice the nodes: the box test), ``true`` (the target's test log-likelihood, when
    known) and ``small_mode`` (product targets: the weight the model's samples give the small mode,
    truth 0.1)."""
    st = dict(STUDY_SETTINGS, **settings)
    rows = []
    for name in sets:
        for seed in seeds:
            x_train, x_test, target = study_data(name, seed, st["n_train"], st["n_test"])
            models, _ = train_lesson_models(x_train, steps=st["steps"], batch_size=st["batch_size"],
                                            background=st["background"], background_scale=st["background_scale"],
                                            seed=seed, bounds=st["bounds"], n_nodes=st["n_nodes"], progress=progress)
            true = None if target is None else float(target.log_prob(x_test).mean())
            for model_name, model in models.items():
                row = {"set": name, "dim": x_train.shape[1], "seed": seed, "model": model_name, "true": true,
                       "error": None, "log_lik_wide": None, "small_mode": None}
                with torch.no_grad():
                    if model_name.startswith("AR-CSM"):
                        box = quadrature.box_test(model, x_test, bounds=st["bounds"], n_nodes=st["n_nodes"])
                        row.update(log_lik=box["narrow"], error=box["narrow_error"], log_lik_wide=box["wide"])
                    else:
                        row["log_lik"] = float(model.log_prob(x_test).mean())
                    if name.startswith("product-"):
                        row["small_mode"] = small_mode_weight(model.sample(st["n_test"], generator=torch.Generator().manual_seed(seed)))
                rows.append(row)
    return rows


def write_study(rows: List[dict], path) -> None:
    """Write :func:`seed_study` rows as a CSV (atomically)."""
    columns = ["set", "dim", "seed", "model", "log_lik", "error", "log_lik_wide", "true", "small_mode"]
    lines = [",".join(columns)]
    for r in rows:
        lines.append(",".join("" if r[c] is None else (f"{r[c]:.5f}" if isinstance(r[c], float) else str(r[c])) for c in columns))
    with files.atomic_write(path, mode="w") as f:
        f.write("\n".join(lines) + "\n")


def read_study(path=None) -> List[dict]:
    """The rows of a study CSV (default: the shipped one, ``csm_edu/resources/`` :data:`STUDY_CSV`)."""
    import csv
    from .. import resources
    source = resources.path(STUDY_CSV) if path is None else path
    with open(source, newline="") as f:
        rows = list(csv.DictReader(f))
    for r in rows:
        for key in ("log_lik", "error", "log_lik_wide", "true", "small_mode"):
            r[key] = float(r[key]) if r[key] != "" else None
        r["dim"], r["seed"] = int(r["dim"]), int(r["seed"])
    return rows


def study_summary(rows: List[dict]) -> List[dict]:
    """Per (set, model): mean, min and max over seeds of the gap to the truth (true - log_lik, nats),
    the largest box-test difference |log_lik_wide - log_lik| and the mean small-mode weight."""
    out = []
    keys = list(dict.fromkeys((r["set"], r["model"]) for r in rows))
    for set_name, model in keys:
        group = [r for r in rows if r["set"] == set_name and r["model"] == model]
        gaps = [r["true"] - r["log_lik"] for r in group if r["true"] is not None]
        lls = [r["log_lik"] for r in group]
        box = [abs(r["log_lik_wide"] - r["log_lik"]) for r in group if r["log_lik_wide"] is not None]
        small = [r["small_mode"] for r in group if r["small_mode"] is not None]
        out.append({"set": set_name, "dim": group[0]["dim"], "model": model, "seeds": len(group),
                    "log_lik": sum(lls) / len(lls), "log_lik_min": min(lls), "log_lik_max": max(lls),
                    "gap": sum(gaps) / len(gaps) if gaps else None, "gap_min": min(gaps) if gaps else None,
                    "gap_max": max(gaps) if gaps else None, "box_diff": max(box) if box else None,
                    "small_mode": sum(small) / len(small) if small else None})
    return out


def _main(argv=None) -> int:
    import argparse
    from .. import resources
    parser = argparse.ArgumentParser(description="Lesson 07's seeds-and-dimensions study (writes a CSV).")
    parser.add_argument("--study", action="store_true", help="run the study at the lesson's full-mode budget")
    parser.add_argument("--sets", nargs="+", default=list(STUDY_SETS))
    parser.add_argument("--seeds", nargs="+", type=int, default=list(STUDY_SEEDS))
    parser.add_argument("--out", default=None, help=f"CSV path (default: the package's {STUDY_CSV})")
    args = parser.parse_args(argv)
    if not args.study:
        parser.print_help()
        return 2
    torch.set_num_threads(1)
    rows = seed_study(args.sets, args.seeds)
    out = args.out or Path(resources.__file__).parent / STUDY_CSV
    write_study(rows, out)
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(_main())
