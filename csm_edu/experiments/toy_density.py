"""Density models trained and compared on 2-D toy data: AR-CSM against MLE baselines (lessons 07, 08)."""
from typing import Dict, List, Optional, Sequence
import torch
from .. import checks, config, metrics, objectives, train
from ..models import ARCSM, GaussianMADE, MixtureMADE
from ..models.arcsm import target_conditional_scores


def train_lesson_models(x: torch.Tensor, *, steps: int, batch_size: int = 256, lr: float = 3e-3,
                        background: float = 0.05, background_scale: float = 1.0, seed: int = 0, hidden: int = 64,
                        n_components: int = 8, order: Optional[Sequence[int]] = None, without_background: bool = False,
                        bounds: Sequence[float] = (-6.0, 6.0), n_nodes: int = 256,
                        names: Optional[Sequence[str]] = None, progress: bool = True):
    """Train AR-CSM (CSM with ``background``, see :func:`csm_edu.objectives.composite_score_matching`),
    GaussianMADE and MixtureMADE (maximum likelihood) on ``x``.

    All three use the same ResMADE backbone size and the same Adam schedule
    (:func:`csm_edu.train.fit`), on the CPU (faster than a GPU for these small 2-D models).
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
    arcsm = lambda: ARCSM(dim, hidden=hidden, head_hidden=hidden, order=order).set_support(  # noqa: E731
        bounds=bounds, n_nodes=n_nodes)
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
