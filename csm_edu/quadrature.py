r"""Exact log-likelihood of an autoregressive conditional score model by 1-D quadrature.

An AR-CSM gives every conditional score s_d(t) = d/dt log q(t | x_<d), never a density. Each
conditional is univariate, so its normaliser is a 1-D integral that quadrature computes well.
Taking the data point itself as the reference point of the integral of the score,

.. math:: \log q(x_d \mid x_{<d}) = -\log \int_{lo}^{hi} \exp\Bigl(\int_{x_d}^{t} s_d(\tau)\,d\tau\Bigr) dt ,

and log q(x) = sum_d log q(x_d | x_<d). The value is that of the model restricted (and normalised)
to the box [lo, hi]^D; the error estimate includes what the restriction costs, log(1 + T / Z) per
conditional, with T the mass outside [lo, hi] and Z the mass inside (``_log_tail``: a bound for
models with a Gaussian envelope such as :class:`csm_edu.models.ARCSM` with its default ``head="local_mean"``, else an exponential
extrapolation of the score at the ends, infinite where the score does not point back into the
box). So the estimate says when ``bounds`` are too narrow for the model, and the value agrees,
within the estimates, on every box that holds the mass.

Numerics, per conditional: the two pieces [x_d, hi] and [lo, x_d] each get M + 1 equally spaced
nodes (M = ``n_nodes``). The inner integral u(t_j) = int_{x_d}^{t_j} s is the cumulative
trapezoid rule and the outer integral of exp(u) is the trapezoid rule, evaluated as a logsumexp
(no overflow). Both errors expand in even powers of the spacing h, so the same computation on
every second node (spacing 2h) gives one Richardson step, L = (4 L_h - L_{2h}) / 3 (Romberg;
for a single integral this is Simpson's rule), and the error estimate |L_h - L_{2h}| / 3 (the
estimated error of L_h: a conservative bound for the extrapolated L when the score is resolved),
plus the tail term above.
The context c_d does not depend on x_d, so the backbone runs once per row and only the head is
evaluated at the 2(M + 1) nodes of each of the D conditionals, in chunks of rows.
"""
import math
from typing import Optional, Sequence

import torch

from . import checks


def _trapezoid_log_normaliser(s: torch.Tensor, h: torch.Tensor):
    """log int exp(u) over one piece, u(t_j) = cumulative trapezoid of s (…, J, D) with spacing h (…, D),
    and u at the piece's far end (…, D)."""
    u = torch.cumsum(0.5 * h.unsqueeze(-2) * (s[..., 1:, :] + s[..., :-1, :]), dim=-2)
    u = torch.cat([torch.zeros_like(s[..., :1, :]), u], dim=-2)           # u(x_d) = 0
    log_w = torch.zeros(s.shape[-2], dtype=s.dtype, device=s.device)
    log_w[0] = log_w[-1] = math.log(0.5)
    return torch.logsumexp(u + log_w[:, None], dim=-2) + torch.log(h.abs()), u[..., -1, :]


def _log_tail(model, context, end, u_end, s_end, side):
    r"""log of the mass beyond ``end`` (relative to the reference point), one side (``side`` +1: above
    hi, -1: below lo): (m, D).

    With the model's Gaussian envelope (``model.tail_bound(context, lo, hi)``, e.g. ARCSM's local-mean head:
    s(t) <= -(t - c) / v for every t beyond ``end`` on the upper side), a bound: e^{u(end)} \int_{end}^\infty e^{-((t-c)^2 - (end-c)^2)/(2v)} dt
    = e^{u(end)} \sqrt{\pi v / 2}\,\mathrm{erfcx}(z / \sqrt 2), z = (end - c)/\sqrt v. Otherwise an
    exponential extrapolation of the end's score, e^{u(end)} / |s(end)| (an upper bound when the
    score keeps decreasing beyond the box, i.e. log-concave tails), and +inf where the score at
    the end does not point back into the box.
    """
    envelope = model.tail_bound(context, end, end) if hasattr(model, "tail_bound") else None
    if envelope is not None:
        c_lo, c_hi, var = envelope
        z = (end - c_hi if side > 0 else c_lo - end) / var.sqrt()
        return u_end + 0.5 * torch.log(0.5 * math.pi * var) + torch.log(torch.special.erfcx(z / math.sqrt(2.0)))
    decay = -side * s_end
    return torch.where(decay > 0, u_end - torch.log(decay.clamp_min(1e-30)), torch.full_like(u_end, math.inf))


def _log_conditionals(model, context, x, lo, hi, n_nodes, tails=False):
    """Fine (spacing h) and coarse (2h) trapezoid values of log q(x_d | x_<d): two (m, D) tensors; with
    ``tails`` also log(1 + outside mass / mass in the box), the error of restricting to the box."""
    tau = torch.linspace(0.0, 1.0, n_nodes + 1, dtype=x.dtype, device=x.device)[:, None]   # (J, 1)
    ctx = context.unsqueeze(1)                                                         # (m, 1, D, C)
    fine, coarse, log_tails = [], [], []
    for end, side in ((hi, 1.0), (lo, -1.0)):
        span = end - x                                                                 # (m, D), signed
        nodes = x.unsqueeze(1) + tau * span.unsqueeze(1)                               # (m, J, D)
        s = model.head(ctx, nodes)
        h = span / n_nodes
        value, u_end = _trapezoid_log_normaliser(s, h)
        fine.append(value)
        coarse.append(_trapezoid_log_normaliser(s[:, ::2], 2 * h)[0])
        if tails:
            log_tails.append(_log_tail(model, context, torch.as_tensor(end).to(x), u_end, s[:, -1], side))
    log_box = torch.logaddexp(*fine)
    if not tails:
        return -log_box, -torch.logaddexp(*coarse)
    tail_error = torch.nn.functional.softplus(torch.logaddexp(*log_tails) - log_box)    # log(1 + T / Z)
    return -log_box, -torch.logaddexp(*coarse), tail_error


def arcsm_log_prob(model, x: torch.Tensor, *, bounds: Sequence[float] = (-6.0, 6.0), n_nodes: int = 256,
                   return_error: bool = False, y: Optional[torch.Tensor] = None, per_dim: bool = False,
                   chunk_size: Optional[int] = None, tails: bool = True):
    r"""log q(x) of an autoregressive score model (e.g. :class:`csm_edu.models.ARCSM`) by quadrature.

    ``model`` needs ``dim``, ``context(x, y)`` and a broadcasting ``head(context, x)`` (see
    :class:`csm_edu.models.arcsm.AutoregressiveScoreModel`). Every entry of ``x`` must lie in
    ``bounds`` = (lo, hi). ``n_nodes`` M (even, >= 4) nodes per side of each data coordinate.
    Returns per-row log q(x), shape (n,) (``per_dim=True``: the (n, D) log conditionals); with
    ``return_error=True`` also the error estimate of the same shape (see the module docstring).
    ``chunk_size`` rows are processed at once (default: about 2^16 head evaluations per chunk).
    ``tails=False`` leaves the mass outside ``bounds`` out of the error estimate (resolution only).
    """
    dim = checks.positive_int(getattr(model, "dim", 0), "model.dim")
    x = checks.as_batch(x, "x", dim=dim)
    lo, hi = checks.bounds(bounds)
    n_nodes = checks.positive_int(n_nodes, "n_nodes", minimum=4)
    if n_nodes % 2:
        raise ValueError(f"n_nodes must be even (the error estimate halves it), got {n_nodes}; use {n_nodes + 1}")
    outside = (x < lo) | (x > hi)
    if outside.any():
        raise ValueError(f"{int(outside.any(1).sum())} row(s) of x lie outside bounds {(lo, hi)}: "
                         f"widen bounds (e.g. to ({float(x.min()) - 1:.1f}, {float(x.max()) + 1:.1f}))")
    if chunk_size is None:
        chunk_size = max(1, 2 ** 16 // ((n_nodes + 1) * dim))
    chunk_size = checks.positive_int(chunk_size, "chunk_size")
    values, errors = [], []
    with torch.no_grad():
        context = model.context(x, y)
        for rows in torch.split(torch.arange(x.shape[0], device=x.device), chunk_size):
            fine, coarse, *tail = _log_conditionals(model, context[rows], x[rows], lo, hi, n_nodes, tails=tails)
            values.append((4 * fine - coarse) / 3)
            errors.append((fine - coarse).abs() / 3 + (tail[0] if tails else 0.0))
    value, error = torch.cat(values), torch.cat(errors)
    if not per_dim:
        value, error = value.sum(1), error.sum(1)
    if not torch.isfinite(value).all():
        raise ValueError("the quadrature gave NaN/inf: the model's score overflows inside bounds; "
                         "narrow bounds or check the model")
    return (value, error) if return_error else value


def box_test(model, x: torch.Tensor, *, bounds: Sequence[float] = (-6.0, 6.0), n_nodes: int = 256, widen: float = 2.0,
             y: Optional[torch.Tensor] = None) -> dict:
    r"""The box test: is ``model`` a density on all of R^D, or only once cut to the box?

    The mean test log-likelihood (:func:`arcsm_log_prob`, ``tails=True``) on ``bounds`` and on the box
    ``widen`` times as wide about the same centre, with ``widen`` times the nodes (the same spacing). For
    a model normalisable on R whose mass lies in ``bounds`` the two agree within the sum of their error
    estimates (resolution plus the mass outside each box); a model whose scores point outward beyond the
    data (a non-decaying tail) loses mass to the wider box and scores far lower there.

    Returns a dict with ``narrow``, ``narrow_error``, ``wide``, ``wide_error`` (means over the rows of
    ``x``, nats), ``difference`` = |narrow - wide| and ``passed``: both error estimates finite (an infinite
    one means a score that does not point back into the box at its ends) and difference <= narrow_error +
    wide_error + 1e-4 (the float32 floor).
    """
    lo, hi = checks.bounds(bounds)
    widen = float(widen)
    if not widen > 1.0:
        raise ValueError(f"widen must be > 1 (how many times wider the second box is), got {widen}; e.g. widen=2.0")
    centre, half = (lo + hi) / 2, (hi - lo) / 2
    wide_bounds = (centre - widen * half, centre + widen * half)
    wide_nodes = 2 * math.ceil(widen * n_nodes / 2)
    narrow, narrow_error = arcsm_log_prob(model, x, bounds=(lo, hi), n_nodes=n_nodes, return_error=True, y=y)
    wide, wide_error = arcsm_log_prob(model, x, bounds=wide_bounds, n_nodes=wide_nodes, return_error=True, y=y)
    result = {"narrow": float(narrow.mean()), "narrow_error": float(narrow_error.mean()),
              "wide": float(wide.mean()), "wide_error": float(wide_error.mean())}
    result["difference"] = abs(result["narrow"] - result["wide"])
    bound = result["narrow_error"] + result["wide_error"]
    result["passed"] = math.isfinite(bound) and result["difference"] <= bound + 1e-4
    return result


def joint_score(model, x: torch.Tensor, *, bounds: Sequence = (-6.0, 6.0), n_nodes: int = 32,
                y: Optional[torch.Tensor] = None) -> torch.Tensor:
    r"""The joint score grad_x log q(x) of an autoregressive score model, shape (n, D), detached.

    With log q(x) = sum_d log q(x_d | x_<d), each conditional normalised by the quadrature of
    :func:`arcsm_log_prob` (Richardson-extrapolated trapezoid on ``bounds``),

    .. math:: \partial_j \log q(x) = s_j(x) + \sum_{d > j} \partial_j \log q(x_d \mid x_{<d}).

    The own term s_j comes exactly from the head; the cross terms (how x_j moves every *later*
    conditional through its context, which :meth:`conditional_scores` alone misses) come from one
    backward pass of the quadrature log-likelihood through the context. ``bounds`` is (lo, hi),
    as floats or as per-dimension tensors; every entry of x must lie inside.
    """
    dim = checks.positive_int(getattr(model, "dim", 0), "model.dim")
    x = checks.as_batch(x, "x", dim=dim).detach()
    if len(bounds) != 2:
        raise ValueError(f"bounds must be (lo, hi), got {bounds!r}")
    lo, hi = (torch.as_tensor(b, dtype=x.dtype, device=x.device) for b in bounds)
    if (x < lo).any() or (x > hi).any():
        raise ValueError("x must lie inside bounds: widen bounds or clamp x")
    n_nodes = checks.positive_int(n_nodes, "n_nodes", minimum=4)
    if n_nodes % 2:
        raise ValueError(f"n_nodes must be even (the error estimate halves it), got {n_nodes}; use {n_nodes + 1}")
    with torch.enable_grad():
        x_context = x.clone().requires_grad_(True)
        context = model.context(x_context, y)
        own = model.head(context, x)
        fine, coarse = _log_conditionals(model, context, x, lo, hi, n_nodes)
        (cross,) = torch.autograd.grad(((4 * fine - coarse) / 3).sum(), x_context)
    return (own + cross).detach()
