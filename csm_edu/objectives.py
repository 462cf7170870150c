r"""Score-matching objectives. Each returns a scalar loss averaged over the batch.

Convention (so that closed forms can be checked): a score-matching loss is the Hyvarinen form

.. math:: J(s) = \mathbb E_{p}\bigl[\tfrac12 \|s(x)\|^2 + \operatorname{tr} \nabla_x s(x)\bigr]
          = \tfrac12 \mathbb E_p\|s - \nabla\log p\|^2 - \tfrac12 \mathbb E_p \|\nabla \log p\|^2,

i.e. the Fisher divergence to the data score minus a constant that depends on the data only.
Every estimator below has this expectation (DSM: on the noised data), so their values are
comparable. ``score_fn`` is any callable ``x -> s(x)`` of shape (n, D): an energy model's
``model.score`` or a score network.
"""
from typing import Callable, Optional

import torch

from . import checks

ScoreFn = Callable[[torch.Tensor], torch.Tensor]


def _score_of(score_fn, x, name="score_fn"):
    return checks.score_output(score_fn(x), x, name)


TRACE_METHODS = ("auto", "forward", "batched", "vmap", "loop")
_AUTO_CHUNK = 8     # "auto": Jacobian rows per batched backward pass (measured, see score_and_trace)


def score_and_trace_loop(score_fn: ScoreFn, x: torch.Tensor):
    r"""s(x) and the exact Jacobian trace tr grad_x s(x) per row, one backward pass per dimension.

    Reverse-mode autograd gives one *row* of the Jacobian per pass: the gradient of
    \sum_i s_d(x_i) with respect to x is the row d of every point's Jacobian, whose entry d is
    ds_d/dx_d. D passes, with ``create_graph=True`` so that the loss can be differentiated again
    with respect to the model's weights. Works for any differentiable callable. Returns
    ``(s, trace)`` of shapes (n, D) and (n,).
    """
    x = checks.as_batch(x, "x").detach().requires_grad_(True)
    s = _score_of(score_fn, x)
    if not s.requires_grad:
        raise TypeError("score_fn's output does not depend on x through autograd (detached, computed without "
                        "gradients, or with NumPy), so its Jacobian trace cannot be taken; return a torch expression of x")
    trace = torch.zeros(x.shape[0], dtype=x.dtype, device=x.device)
    for d in range(x.shape[1]):
        (grad_d,) = torch.autograd.grad(s[:, d].sum(), x, create_graph=True)
        trace = trace + grad_d[:, d]
    return s, trace


def _chunk_size(chunk_size, dim):
    return dim if chunk_size is None else min(dim, checks.positive_int(chunk_size, "chunk_size"))


def score_and_trace_batched(score_fn: ScoreFn, x: torch.Tensor, *, chunk_size: Optional[int] = None):
    r"""The same ``(s, trace)`` as :func:`score_and_trace_loop`, ``chunk_size`` Jacobian rows per backward pass.

    One forward pass gives s for the whole batch; then, for each chunk of k = ``chunk_size``
    dimensions d, one call of ``torch.autograd.grad(s, x, V, is_grads_batched=True)`` pulls back the
    k unit vectors V[j] = e_d (the same direction at every point) at once: the result's slice j
    is row d of every point's Jacobian, as in the loop, and its entry d is ds_d/dx_d. The same D
    vector-Jacobian products on the same graph as the loop, in ceil(D/k) batched calls instead of
    D; memory stays that of the loop (the graph kept for the weight gradient is the same) plus one
    chunk's k x n x D rows. ``chunk_size=None``: all D rows in one call. The forward pass is plain
    autograd, so any differentiable score works (no per-row assumption, control flow allowed);
    raises RuntimeError where a backward formula cannot be batched.
    """
    x = checks.as_batch(x, "x").detach().requires_grad_(True)
    s = _score_of(score_fn, x)
    if not s.requires_grad:
        raise TypeError("score_fn's output does not depend on x through autograd (detached, computed without "
                        "gradients, or with NumPy), so its Jacobian trace cannot be taken; return a torch expression of x")
    n, dim = x.shape
    k = _chunk_size(chunk_size, dim)
    trace = torch.zeros(n, dtype=x.dtype, device=x.device)
    for start in range(0, dim, k):
        rows = torch.arange(min(k, dim - start), device=x.device)      # j = 0..k-1, dimension start + j
        directions = torch.zeros(len(rows), n, dim, dtype=x.dtype, device=x.device)
        directions[rows, :, start + rows] = 1.0
        (jacobian_rows,) = torch.autograd.grad(s, x, directions, is_grads_batched=True, create_graph=True)
        trace = trace + jacobian_rows[rows, :, start + rows].sum(0)    # (k, n) diagonal entries, summed
    return s, trace


def score_and_trace_vmap(score_fn: ScoreFn, x: torch.Tensor, *, chunk_size: Optional[int] = None):
    r"""The same ``(s, trace)`` as :func:`score_and_trace_loop`, vectorised with ``torch.func``.

    For each row x_i (``vmap`` over the batch), one ``vjp`` gives s(x_i) and its pullback
    u -> u^T grad s(x_i); ``vmap`` of the pullback over the D unit vectors e_d gives the D rows of
    the Jacobian, ``chunk_size`` of them at a time (``None``: all at once), and
    tr grad s(x_i) = \sum_d e_d^T grad s(x_i) e_d. The same D vector-Jacobian products as the loop,
    batched into a few large tensor operations; the score is evaluated once. Assumes that row i
    of s depends on x_i only (true of every score model of the kit). Raises RuntimeError where
    ``torch.func`` cannot trace ``score_fn`` (e.g. ``.item()`` or data-dependent control flow
    inside it).
    """
    x = checks.as_batch(x, "x").detach()
    n, dim = x.shape
    k = _chunk_size(chunk_size, dim)
    eye = torch.eye(dim, dtype=x.dtype, device=x.device)

    def one_row(z):
        out = score_fn(z[None])
        if out.shape != (1, dim):
            raise ValueError(f"score_fn must return an array of the input's shape {(n, dim)}, "
                             f"got {(n,) + tuple(out.shape[1:])}")
        return out[0]

    def score_and_trace_of_row(z):
        s, pullback = torch.func.vjp(one_row, z)
        (jacobian,) = torch.func.vmap(pullback, chunk_size=k)(eye)   # (D, D): row d = grad of s_d
        return s, jacobian.diagonal().sum()

    return torch.func.vmap(score_and_trace_of_row)(x)


def _silu_mlp_energy(score_fn):
    """The EnergyMLP whose plain ``score`` ``score_fn`` is, if its net is Linear (SiLU Linear)* -> 1; else None."""
    from torch import nn
    from .models.mlp import EnergyMLP
    owner = getattr(score_fn, "__self__", None)
    if not isinstance(owner, EnergyMLP) or getattr(score_fn, "__func__", None) is not EnergyMLP.score:
        return None
    layers = list(owner.net)
    kinds_ok = all(isinstance(layer, nn.Linear if i % 2 == 0 else nn.SiLU) for i, layer in enumerate(layers))
    if not kinds_ok or len(layers) % 2 == 0 or layers[-1].out_features != 1:
        return None
    return owner


def score_and_trace_forward(model, x: torch.Tensor):
    r"""``(s, trace)`` of an :class:`~csm_edu.models.EnergyMLP` with SiLU layers, in one forward pass.

    Forward Laplacian (Li et al. 2023, "Forward Laplacian"; Taylor-mode differentiation): along
    with each layer's value h, carry its Jacobian J = dh/dx (n, D, width) and its Laplacian
    L = sum_d d^2 h / dx_d^2 (n, width). A linear layer maps all three by its weight (J W^T, L W^T;
    the first layer's J is W^T itself, no product at all); an activation phi gives
    J' = phi'(h) J and L' = phi'(h) L + phi''(h) sum_d J_d^2. At the output (width 1) J is grad E
    and L is the Laplacian, so s = -J and tr grad s = -L. Exact, like the other methods; one
    (n, D, width) product per hidden layer instead of D vector-Jacobian products and their
    double backward, so the step and the memory are a fraction of theirs (see
    :func:`score_and_trace`). Differentiable in the weights (plain autograd on the result).
    """
    from torch import nn
    if _silu_mlp_energy(getattr(model, "score", None)) is None:
        raise TypeError("score_and_trace_forward needs an EnergyMLP whose net is Linear (SiLU Linear)* with one "
                        "output; use score_and_trace(..., method='batched') for other score functions")
    x = checks.as_batch(x, "x", dim=model.dim)
    layers = list(model.net)
    h = layers[0](x)
    jac = layers[0].weight.t().expand(x.shape[0], -1, -1)          # (n, D, width): d z_1 / dx
    lap = None                                                      # the first layer is linear: no curvature
    for layer in layers[1:]:
        if isinstance(layer, nn.Linear):
            h, jac, lap = layer(h), jac @ layer.weight.t(), lap @ layer.weight.t()
        else:                                                       # SiLU: h sigmoid(h)
            sig = torch.sigmoid(h)
            d1 = sig * (1 + h * (1 - sig))                          # silu'
            d2 = sig * (1 - sig) * (2 + h * (1 - 2 * sig))          # silu''
            curvature = d2 * (jac * jac).sum(1)
            lap = curvature if lap is None else d1 * lap + curvature
            jac = jac * d1[:, None, :]
            h = h * sig
    return -jac[..., 0], -lap[:, 0]


def score_and_trace(score_fn: ScoreFn, x: torch.Tensor, *, method: str = "auto", chunk_size: Optional[int] = None):
    r"""s(x) and tr grad_x s(x) per row, exactly: ``method`` 'batched' (:func:`score_and_trace_batched`),
    'forward', 'vmap' (:func:`score_and_trace_vmap`), 'loop' (:func:`score_and_trace_loop`), or 'auto'.

    'forward' (:func:`score_and_trace_forward`) is the forward Laplacian of an ``EnergyMLP``'s
    score (``model.score`` of a Linear/SiLU net), for that model only and opt-in. 'auto' is
    'batched' with ``chunk_size`` rows per pass (default 8), falling back to the loop where a
    backward formula cannot be batched: it keeps the cost of D vector-Jacobian products that
    lessons 03 and 04 measure and assert (with 'forward' as the default, lesson 04's check that
    one sliced projection is > 4x cheaper than exact SM at D = 64 fails). All are exact and agree
    to rounding. Measured by ``benchmarks/bench_objectives.py`` (committed CSV
    ``benchmarks/results/ratios_objectives_cpu.csv``): energy MLP D-128-128-1, batch 256, one CPU
    thread, loss + backward, CPU time in turns against torchebm's ``vmap(jacrev)`` exact SM
    (median of 11 rounds on a shared machine; the rounds spread by about +-0.05 for 'forward',
    +-0.1 for the others), and the peak live tensor memory of one step in MB:

    ====  ===========  =======  ======  ====================================
    D     batched k=8  forward  loop    peak MB: batched / forward / loop / peer
    ====  ===========  =======  ======  ====================================
    2     0.62         0.38     0.60    6.2 / 4.7 / 6.3 / 8.0
    16    0.78         0.39     1.13    31 / 13 / 35 / 35
    64    0.92         0.36     1.41    116 / 44 / 135 / 128
    128   0.94         0.34     1.37    236 / 84 / 275 / 261
    ====  ===========  =======  ======  ====================================

    The batched form (and 'vmap' k=16, 0.73-0.97 in other runs) does the same D vector-Jacobian
    products as torchebm and is near parity with it at D >= 64 (other runs at D = 128:
    0.89-1.02); the forward Laplacian does less work: one (n, D, width) product per hidden layer.
    """
    checks.one_of(method, "method", TRACE_METHODS)
    x = checks.as_batch(x, "x")
    if method == "loop":
        return score_and_trace_loop(score_fn, x)
    if method == "vmap":
        return score_and_trace_vmap(score_fn, x, chunk_size=chunk_size)
    if method == "batched":
        return score_and_trace_batched(score_fn, x, chunk_size=chunk_size)
    energy = _silu_mlp_energy(score_fn)
    if method == "forward":
        if energy is None:
            raise TypeError("method='forward' needs the score of an EnergyMLP with SiLU layers (model.score); "
                            "use 'batched' or 'auto' for other score functions")
        return score_and_trace_forward(energy, x)
    try:
        return score_and_trace_batched(score_fn, x, chunk_size=_AUTO_CHUNK if chunk_size is None else chunk_size)
    except RuntimeError:        # a backward formula without a batching rule: the loop works for any callable
        return score_and_trace_loop(score_fn, x)


def exact_score_matching(score_fn: ScoreFn, x: torch.Tensor, *, trace: str = "auto",
                         chunk_size: Optional[int] = None) -> torch.Tensor:
    r"""Hyvarinen's objective with the exact Jacobian trace.

    .. math:: \frac1n\sum_i \Bigl[\tfrac12\|s(x_i)\|^2 + \sum_{d=1}^D \frac{\partial s_d}{\partial x_d}(x_i)\Bigr]

    The trace needs D vector-Jacobian products, one per dimension: the cost that sliced,
    denoising and composite score matching avoid. ``trace`` chooses how they run (see
    :func:`score_and_trace`): 'loop' is the D-backward-pass version of lesson 03, 'batched' runs
    ``chunk_size`` of them per backward pass, 'vmap' batches them with ``torch.func``, 'forward'
    carries the Jacobian and Laplacian forward through an ``EnergyMLP`` instead (fastest, opt-in);
    'auto' is 'batched' (8 per pass) with the loop as fallback.
    """
    s, tr = score_and_trace(score_fn, x, method=checks.one_of(trace, "trace", TRACE_METHODS), chunk_size=chunk_size)
    return (0.5 * (s ** 2).sum(1) + tr).mean()


def random_projections(shape, *, kind: str = "gaussian", generator: Optional[torch.Generator] = None,
                       device=None, dtype=torch.float32) -> torch.Tensor:
    """Random vectors v with E[v v^T] = I: standard normal ('gaussian') or +-1 ('rademacher')."""
    checks.one_of(kind, "projection", ("gaussian", "rademacher"))
    if kind == "gaussian":
        v = torch.randn(shape, generator=generator, dtype=dtype)
    else:
        v = torch.randint(0, 2, shape, generator=generator).to(dtype) * 2 - 1
    return v.to(device)


def sliced_score_matching(score_fn: ScoreFn, x: torch.Tensor, *, n_projections: int = 1,
                          projection: str = "gaussian", variance_reduction: bool = False,
                          generator: Optional[torch.Generator] = None) -> torch.Tensor:
    r"""Sliced score matching (Song et al. 2019) with Hutchinson's trace estimator.

    For random v with E[v v^T] = I, E[v^T (\nabla s) v] = tr(\nabla s) and E[(v^T s)^2] = |s|^2:

    .. math:: \frac1{nM}\sum_{i,m} \Bigl[\tfrac12 (v_{im}^\top s(x_i))^2 + v_{im}^\top \nabla_x\bigl(v_{im}^\top s(x_i)\bigr)\Bigr]

    Each projection costs one backward pass, whatever D is. ``variance_reduction=True`` (SSM-VR)
    replaces 1/2 (v^T s)^2 by its expectation 1/2 |s|^2. Both are unbiased for
    :func:`exact_score_matching`.
    """
    x = checks.as_batch(x, "x")
    n_projections = checks.positive_int(n_projections, "n_projections")
    checks.one_of(projection, "projection", ("gaussian", "rademacher"))
    n, dim = x.shape
    x_rep = x.detach().repeat(n_projections, 1).requires_grad_(True)   # (M n, D)
    v = random_projections(x_rep.shape, kind=projection, generator=generator, device=x.device, dtype=x.dtype)
    s = _score_of(score_fn, x_rep)
    sv = (s * v).sum(1)
    (grad_sv,) = torch.autograd.grad(sv.sum(), x_rep, create_graph=True)
    trace_estimate = (grad_sv * v).sum(1)
    norm_term = 0.5 * (s ** 2).sum(1) if variance_reduction else 0.5 * sv ** 2
    return (norm_term + trace_estimate).mean()


def denoising_score_matching(score_fn: ScoreFn, x: torch.Tensor, sigma: float,
                             generator: Optional[torch.Generator] = None) -> torch.Tensor:
    r"""Denoising score matching (Vincent 2011) at noise level sigma.

    With x~ = x + sigma eps, the regression target is grad log q(x~|x) = -eps / sigma, and the
    textbook loss is 1/2 E|s(x~) + eps/sigma|^2. Expanding the square and dropping the data
    constant |eps|^2 / (2 sigma^2) gives the form computed here,

    .. math:: \frac1n\sum_i \Bigl[\tfrac12\|s(\tilde x_i)\|^2 + s(\tilde x_i)^\top \varepsilon_i/\sigma\Bigr],

    which has the same gradient, a lower variance, and (by Stein's lemma
    E[eps f(x + sigma eps)] = sigma E[grad f]) the same expectation as :func:`exact_score_matching`
    on the noised data q_sigma. Its minimiser is the score of q_sigma = p * N(0, sigma^2 I).
    """
    x = checks.as_batch(x, "x")
    sigma = checks.positive(sigma, "sigma")
    eps = torch.randn(x.shape, generator=generator, dtype=x.dtype).to(x.device)
    s = _score_of(score_fn, x + sigma * eps)
    return (0.5 * (s ** 2).sum(1) + (s * eps).sum(1) / sigma).mean()


def geometric_sigmas(sigma_max: float = 1.0, sigma_min: float = 0.01, n_levels: int = 10) -> torch.Tensor:
    """Noise levels sigma_max = sigma_1 > ... > sigma_L = sigma_min in geometric progression."""
    sigma_max = checks.positive(sigma_max, "sigma_max")
    sigma_min = checks.positive(sigma_min, "sigma_min")
    n_levels = checks.positive_int(n_levels, "n_levels")
    if sigma_min > sigma_max:
        raise ValueError(f"sigma_min ({sigma_min}) must not exceed sigma_max ({sigma_max}); swap them")
    if n_levels == 1:
        return torch.tensor([sigma_max], dtype=torch.float32)
    return torch.logspace(torch.log10(torch.tensor(sigma_max)), torch.log10(torch.tensor(sigma_min)), n_levels)


def multiscale_dsm(score_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor], x: torch.Tensor,
                   sigmas, generator: Optional[torch.Generator] = None) -> torch.Tensor:
    r"""Noise-conditional DSM over several levels with lambda(sigma) = sigma^2 (Song & Ermon 2019).

    Every point gets a level sigma_i drawn uniformly from ``sigmas``; ``score_fn(x_noisy, sigma)``
    takes the per-row levels, shape (n,). The loss is the mean over points of
    sigma^2 times the :func:`denoising_score_matching` term,

    .. math:: \tfrac12\|\sigma s(\tilde x,\sigma)\|^2 + \sigma s(\tilde x,\sigma)^\top\varepsilon,

    so every level contributes on the same scale.
    """
    x = checks.as_batch(x, "x")
    sigmas = checks.sigma_sequence(sigmas).to(x)
    idx = torch.randint(0, len(sigmas), (x.shape[0],), generator=generator).to(x.device)
    sigma = sigmas[idx]
    eps = torch.randn(x.shape, generator=generator, dtype=x.dtype).to(x.device)
    x_noisy = x + sigma[:, None] * eps
    s = checks.score_output(score_fn(x_noisy, sigma), x)
    scaled = sigma[:, None] * s
    return (0.5 * (scaled ** 2).sum(1) + (scaled * eps).sum(1)).mean()


def composite_score_matching(model, x: torch.Tensor, y: Optional[torch.Tensor] = None, *,
                             background: float = 0.0, background_scale: float = 1.0, smoothing: float = 0.0,
                             generator: Optional[torch.Generator] = None) -> torch.Tensor:
    r"""Composite score matching (Meng et al. 2020) for an autoregressive score model.

    With s_d = d/dx_d log q(x_d | x_<d) from ``model.scores_and_diagonal(x, y)`` (ONE extra pass
    through the head for all D derivatives, see :class:`csm_edu.models.ARCSM`),

    .. math:: \frac1n\sum_i \sum_{d=1}^D \Bigl[\tfrac12 s_d(x_i)^2 + \frac{\partial s_d}{\partial x_d}(x_i)\Bigr].

    It is the sum over d of 1-D Hyvarinen objectives, each equal (by integration by parts along
    x_d) to 1/2 E|s_d - d/dx_d log p(x_d | x_<d)|^2 minus a data constant, the same convention
    as :func:`exact_score_matching`. ``y`` is the optional condition of every conditional.

    ``background`` = epsilon > 0 replaces that fraction of the batch by draws of a broad isotropic
    Gaussian b = N(batch mean, tau^2 I), tau = background_scale * (largest per-dimension batch
    std), so the target becomes (1 - epsilon) p + epsilon b. With a condition ``y`` every kept data
    row keeps its own y and each background draw takes the y of the row it replaces, so the target
    is (1 - epsilon) p(x | y) + epsilon b for every y. Score matching cannot see the relative
    weights of modes that are separated by regions without data (the Fisher divergence is an
    expectation under p); the background puts a little data in every gap it reaches, which makes
    the weights identifiable, at a cost of at most about -log(1 - epsilon) nats of test
    log-likelihood. It constrains the score only where b has mass (about tau * 4 around the
    mean): beyond that the tails are the model's own (:class:`csm_edu.models.ARCSM` has a Gaussian
    base score that makes every conditional normalisable on all of R).

    ``smoothing`` = sigma > 0 trains on x + sigma eps, eps ~ N(0, I) (drawn with ``generator``, before
    the background, which then takes its mean and width from the smoothed batch): the target becomes
    the smoothed density p_sigma = p * N(0, sigma^2 I), whose conditionals have mass in the gaps
    between modes, so the objective sees their relative weights there. Annealed to 0 over the first
    part of training (:func:`smoothing_schedule`), it is a continuation method: the weights found
    while the modes overlap are hardly moved by the later, weight-blind steps on plain data, while
    the shapes sharpen to those of p. A fixed sigma > 0 learns p_sigma, not p.
    """
    x = checks.as_batch(x, "x")
    if not 0.0 <= float(background) < 1.0:
        raise ValueError(f"background must be a fraction in [0, 1), got {background}; e.g. 0.05")
    if float(smoothing) < 0.0 or not torch.isfinite(torch.tensor(float(smoothing))):
        raise ValueError(f"smoothing must be a finite noise std >= 0, got {smoothing}; e.g. 1.0, or 0 for none")
    if float(smoothing) > 0.0:
        x = x + float(smoothing) * torch.randn(x.shape, generator=generator, dtype=x.dtype).to(x.device)
    n_background = int(round(float(background) * x.shape[0]))
    if n_background:
        scale = checks.positive(background_scale, "background_scale")
        mean = x.mean(0).detach()
        tau = scale * (float(x.std(0).max().clamp_min(1e-3)) if x.shape[0] > 1 else 1.0)
        z = torch.randn(n_background, x.shape[1], generator=generator, dtype=x.dtype).to(x.device)
        if y is not None:
            if not isinstance(y, torch.Tensor) or y.dim() == 0 or y.shape[0] != x.shape[0]:
                raise ValueError(f"y must have one row per row of x ({x.shape[0]} rows), got "
                                 f"{tuple(y.shape) if isinstance(y, torch.Tensor) else type(y).__name__}")
            y = torch.cat([y[n_background:], y[:n_background]])      # every row keeps its condition
        x = torch.cat([x[n_background:], mean + tau * z])
    s, diag = model.scores_and_diagonal(x, y)
    return (0.5 * s ** 2 + diag).sum(1).mean()


def smoothing_schedule(step: int, steps: int, *, sigma0: float, fraction: float = 0.8) -> float:
    r"""The noise std of step ``step`` (0-based) of ``steps`` for :func:`composite_score_matching`'s
    ``smoothing``: sigma0 (1 - step / (fraction steps)) for step < fraction steps, then 0, i.e. a linear
    anneal from ``sigma0`` to 0 over the first ``fraction`` of training and plain data afterwards. Use
    it with a step counter in the loss given to :func:`csm_edu.train.fit`, e.g.
    ``count = itertools.count(); loss = lambda m, x: composite_score_matching(m, x, background=0.05,
    smoothing=smoothing_schedule(next(count), steps, sigma0=1.0))``.
    """
    step = checks.positive_int(step, "step", minimum=0)
    steps = checks.positive_int(steps, "steps")
    sigma0 = float(sigma0)
    if sigma0 < 0.0:
        raise ValueError(f"sigma0 must be a noise std >= 0, got {sigma0}")
    fraction = float(fraction)
    if not 0.0 <= fraction <= 1.0:
        raise ValueError(f"fraction must lie in [0, 1], got {fraction}; e.g. 0.8")
    if fraction == 0.0 or step >= fraction * steps:
        return 0.0
    return sigma0 * (1.0 - step / (fraction * steps))


def negative_log_likelihood(model, x: torch.Tensor, y: Optional[torch.Tensor] = None) -> torch.Tensor:
    """Batch mean of -log p(x) for a model with an exact ``log_prob(x)`` (MLE baselines, e.g. GaussianMADE)."""
    x = checks.as_batch(x, "x")
    log_p = model.log_prob(x) if y is None else model.log_prob(x, y)
    return -log_p.mean()


def composite_denoising_score_matching(model, x: torch.Tensor, sigma: float, *, y: Optional[torch.Tensor] = None,
                                       generator: Optional[torch.Generator] = None) -> torch.Tensor:
    r"""Denoising version of composite score matching for an autoregressive score model.

    Every conditional p(x_d | x_<d) is smoothed along its own variable only: the context sees the
    clean x_<d, the head sees x~_d = x_d + sigma eps_d. As in :func:`denoising_score_matching`
    (same no-data-constant convention),

    .. math:: \frac1n\sum_i\sum_d \Bigl[\tfrac12 s_d^2 + s_d\,\varepsilon_d/\sigma\Bigr],
              \qquad s_d = f\bigl(c_d(x_{<d}),\ \tilde x_d\bigr),

    whose minimiser is d/dx~_d log (p(. | x_<d) * N(0, sigma^2))(x~_d): biased by sigma, but with
    no derivative of the model at all (one forward and one backward pass).
    """
    x = checks.as_batch(x, "x", dim=model.dim)
    sigma = checks.positive(sigma, "sigma")
    eps = torch.randn(x.shape, generator=generator, dtype=x.dtype).to(x.device)
    s = model.head(model.context(x, y), x + sigma * eps)
    return (0.5 * s ** 2 + s * eps / sigma).sum(1).mean()
