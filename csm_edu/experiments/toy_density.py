"""Density models trained and compared on 2-D toy data: AR-CSM against MLE baselines (lessons 07, 08)."""
from typing import Dict, List, Optional, Sequence
import torch
from .. import checks, metrics, objectives, train
from ..models import ARCSM, GaussianMADE, MixtureMADE
from ..models.arcsm import target_conditional_scores
from ..quadrature import arcsm_log_prob


def train_lesson_models(x: torch.Tensor, n_steps: int, batch_size: int = 256, lr: float = 3e-3,
                        background: float = 0.05, background_scale: float = 1.0, seed: int = 0, hidden: int = 64,
                        n_components: int = 8, order: Optional[Sequence[int]] = None, without_background: bool = False):
    """Train AR-CSM (CSM with ``background``, see :func:`csm_edu.objectives.composite_score_matching`),
    GaussianMADE and MixtureMADE (maximum likelihood) on ``x``.

    All three use the same ResMADE backbone size and the same Adam schedule
    (:func:`csm_edu.train.fit`), on the CPU (faster than a GPU for these small 2-D models).
    ``without_background=True`` adds an AR-CSM trained by plain CSM.
    Returns ``(models, histories)``, two dicts keyed by model name.
    """
    x = checks.as_batch(x, "x")
    dim = x.shape[1]
    csm = lambda eps: (lambda m, b: objectives.composite_score_matching(  # noqa: E731
        m, b, background=eps, background_scale=background_scale))
    plan = [("AR-CSM", lambda: ARCSM(dim, hidden=hidden, head_hidden=hidden, order=order), csm(background))]
    if without_background:
        plan.append(("AR-CSM, no background", lambda: ARCSM(dim, hidden=hidden, head_hidden=hidden, order=order), csm(0.0)))
    plan += [("GaussianMADE", lambda: GaussianMADE(dim, hidden=hidden, order=order), objectives.negative_log_likelihood),
             ("MixtureMADE", lambda: MixtureMADE(dim, n_components, hidden=hidden, order=order), objectives.negative_log_likelihood)]
    models, histories = {}, {}
    for name, build, loss in plan:
        torch.manual_seed(seed)
        models[name] = build()
        histories[name] = train.fit(models[name], loss, x, n_steps=n_steps, batch_size=batch_size, lr=lr,
                                    seed=seed, progress=False, device="cpu")
    return models, histories


def evaluate_models(models: Dict[str, object], x_test: torch.Tensor, target=None,
                    bounds: Sequence[float] = (-6.0, 6.0), n_nodes: int = 256) -> List[dict]:
    """One row per model: mean test log-likelihood (quadrature for score models, with the estimate of
    its resolution error, without the mass outside ``bounds``), and, when the ``target`` is known, the
    composite Fisher divergence 1/2 E_p sum_d (s_d - d/dx_d log p(x_d | x_<d))^2. A last row holds the
    true density."""
    x_test = checks.as_batch(x_test, "x_test")
    rows = []
    for name, model in models.items():
        if hasattr(model, "log_prob"):
            with torch.no_grad():
                ll, err = float(model.log_prob(x_test).mean()), 0.0
        else:
            values, errors = arcsm_log_prob(model, x_test, bounds=bounds, n_nodes=n_nodes, return_error=True,
                                            tails=False)
            ll, err = float(values.mean()), float(errors.mean())
        fisher = None
        if target is not None:
            order = model.order.tolist()
            fisher = metrics.fisher_divergence(lambda z: model.conditional_scores(z).detach(),
                                               lambda z: target_conditional_scores(target, z, order), x_test)
        rows.append({"model": name, "log_lik": ll, "quad_error": err, "fisher": fisher})
    if target is not None:
        rows.append({"model": "true density", "log_lik": float(target.log_prob(x_test).mean()), "quad_error": 0.0,
                     "fisher": 0.0})
    return rows
