r"""One checker per "your turn" exercise of the lessons.

Each ``check_*(fn)`` calls the student's ``fn`` on cases with a known answer (closed forms for
Gaussian energies and conditionals, or the library's reference on the same random numbers),
over several shapes and seeds, and either prints ``passed: ...`` or raises
:class:`~csm_edu.exercises.ExerciseFailed` with one line naming the mistake (wrong sign, missing
1/2, trace summed over the batch, wrong shape, not differentiable, biased beyond k standard
errors, ...) and a hint. The wrong versions each checker names are written out in
``tests/test_exercises.py``.
"""
import math
from typing import Callable

import torch

from .. import objectives, sampling
from ..denoise import noised_distribution
from ..diffusion import VESDE, VPSDE, _reverse_em_step
from ..distributions import Gaussian, GaussianMixture
from ..metrics import grid_2d
from ..trace import hutchinson_variance
from ._core import (as_tensor_result, call, close, fail, fail_on_coefficient, fail_on_variant, fit_coefficients,
                    name_coefficient, passed)

F64 = torch.float64


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _precision(dim: int, seed: int) -> torch.Tensor:
    """A random symmetric positive-definite (dim, dim) matrix with positive off-diagonal entries."""
    g = _gen(seed)
    a = torch.rand(dim, dim, generator=g, dtype=F64)
    return a @ a.T / dim + torch.eye(dim, dtype=F64)


class _ScoreMLP(torch.nn.Module):
    """A small smooth score network s: R^D -> R^D (its Jacobian is not symmetric)."""

    def __init__(self, dim: int, seed: int):
        super().__init__()
        g = _gen(seed)
        self.w1 = torch.nn.Parameter(torch.randn(dim, 16, generator=g, dtype=F64) / math.sqrt(dim))
        self.b1 = torch.nn.Parameter(torch.randn(16, generator=g, dtype=F64))
        self.w2 = torch.nn.Parameter(torch.randn(16, dim, generator=g, dtype=F64) / 4)

    def forward(self, x):
        return torch.tanh(x @ self.w1 + self.b1) @ self.w2 - 0.5 * x


def _check_gradients(exercise: str, loss_of: Callable, reference_of: Callable, params, hint: str):
    """Fail unless loss_of() is differentiable and its gradient w.r.t. ``params`` equals the reference's."""
    loss = as_tensor_result(exercise, loss_of(), ())
    if not loss.requires_grad:
        fail(exercise, "the loss is not differentiable (it carries no graph back to the model)",
             "do not detach, call .item() or use torch.no_grad() inside the loss")
    grads = torch.autograd.grad(loss, params, allow_unused=True)
    if any(g is None for g in grads):
        fail(exercise, "the loss does not depend on every parameter of the model", hint)
    ref = torch.autograd.grad(reference_of(), params)
    if not all(close(g, r, 1e-4, 1e-6) for g, r in zip(grads, ref)):
        fail(exercise, "the loss has the right value but the wrong gradient with respect to the model's parameters", hint)


def _two_term_diagnosis(exercise: str, alpha: float, beta: float, n: int, dim: int, norm_name: str,
                        trace_name: str):
    """Name the mistake from the measured weights alpha (norm term) and beta (trace term); expected 1, 1."""
    alpha_names = {"ok": 1.0, "missing 1/2": 2.0, "sign": -1.0, "batch": float(n), "dims": 1.0 / dim}
    a = name_coefficient(alpha, alpha_names)
    if a == "missing 1/2":
        fail(exercise, f"the {norm_name} term is twice too large: missing 1/2", f"the loss has 1/2 {norm_name}")
    if a == "sign":
        fail(exercise, f"the {norm_name} term has the wrong sign", "both terms are added")
    if a == "batch" and n > 1:
        fail(exercise, f"the {norm_name} term is summed over the batch instead of averaged",
             "sum over dimensions, then take the mean over the n points")
    if a == "dims" and dim > 1:
        fail(exercise, f"the {norm_name} term is averaged over dimensions instead of summed",
             "|s|^2 is the sum over d of s_d^2")
    beta_names = {"ok": 1.0, "sign": -1.0, "batch": float(n), "missing": 0.0, "dims": 1.0 / dim}
    b = name_coefficient(beta, beta_names)
    if b == "sign":
        fail(exercise, f"the {trace_name} term has the wrong sign", "integration by parts turns -E[s . grad log p] into +E[tr grad s]")
    if b == "batch" and n > 1:
        fail(exercise, f"the {trace_name} term is summed over the batch instead of averaged",
             "compute one value per point, then take the mean over the n points")
    if b == "missing":
        fail(exercise, f"the {trace_name} term is missing (or does not change with the model)",
             "add the derivative term, computed with torch.autograd.grad(..., create_graph=True)")
    if b == "dims" and dim > 1:
        fail(exercise, f"the {trace_name} term is averaged over dimensions instead of summed", "the trace is a sum over d")
    if a != "ok" or b != "ok":
        fail(exercise, f"the loss weighs the {norm_name} term by {alpha:.3g} and the {trace_name} term by {beta:.3g}, "
             "expected 1 and 1", "compare your formula with the one above the exercise, term by term")


# ---------------------------------------------------------------- lesson 00: the score of N(mu, var)

def check_gaussian_score(fn: Callable) -> bool:
    """Lesson 00: ``fn(x, mu, var)`` must return the score -(x - mu) / var of N(mu, var), elementwise."""
    ex = "gaussian_score"
    for mu, var in ((1.0, 2.0), (0.0, 1.0), (-2.0, 0.25)):
        x = torch.linspace(-3, 3, 13, dtype=F64)
        out = as_tensor_result(ex, call(ex, fn, x, mu, var), tuple(x.shape))
        expected = -(x - mu) / var
        if close(out, expected, 1e-6, 1e-8):
            continue
        fail_on_variant(ex, out, [
            ((x - mu) / var, "wrong sign", "the score points towards the mode mu"),
            (-(x - mu), "the variance is missing", "divide by the variance"),
            (-(x - mu) / math.sqrt(var), "divided by sigma instead of the variance sigma^2",
             "the derivative of -(x-mu)^2/(2 var) brings down 1/var"),
            (-x / var, "the mean is missing", "the score is zero at x = mu"),
            (-(x - mu) ** 2 / (2 * var), "that is log p (up to a constant), not its derivative", "differentiate with respect to x"),
        ], rtol=1e-6, atol=1e-8)
        fail(ex, f"wrong values for mu={mu}, var={var} (at x=0: got {float(out[6]):.4g}, expected {float(expected[6]):.4g})",
             "differentiate log p(x) = -(x - mu)^2 / (2 var) + const with respect to x")
    return passed(ex, "the score of N(mu, var) at 3 (mu, var) pairs")


# ---------------------------------------------------------------- lesson 01: the grid normaliser

def check_grid_log_normaliser(fn: Callable) -> bool:
    r"""Lesson 01: ``fn(energy, window, resolution)`` must return log Z = log \int exp(-E) over the window.

    Checked on Gaussian energies E(x) = 1/2 (x - m)^T P (x - m) + c, where log Z = log 2 pi - 1/2 log det P - c.
    """
    ex = "grid_log_normaliser"
    cases = [(torch.eye(2, dtype=F64), (0.0, 0.0), 0.0, (-8.0, 8.0, -8.0, 8.0), 200),
             (torch.diag(torch.tensor([2.0, 0.5], dtype=F64)), (1.0, -0.5), 0.0, (-7.0, 8.0, -8.0, 7.0), 240),
             (_precision(2, 3), (0.0, 0.5), 0.0, (-8.0, 8.0, -8.0, 8.0), 200),
             (torch.eye(2, dtype=F64), (0.0, 0.0), -1000.0, (-8.0, 8.0, -8.0, 8.0), 200)]
    for prec, mean, const, window, resolution in cases:
        m = torch.tensor(mean, dtype=F64)

        def energy(x, prec=prec, m=m, const=const):
            d = x.to(F64) - m
            return (0.5 * ((d @ prec) * d).sum(1) + const).to(x.dtype)

        expected = math.log(2 * math.pi) - 0.5 * float(torch.logdet(prec)) - const
        out = as_tensor_result(ex, call(ex, fn, energy, window, resolution), (), "log Z")
        value = float(out)
        if abs(value - expected) < 0.02:
            continue
        if not math.isfinite(value) and const:
            fail(ex, f"log Z is {value} for an energy shifted by {const:g}",
                 "exp(-E) overflows: compute log sum exp(-E) with torch.logsumexp")
        if not math.isfinite(value):
            fail(ex, f"log Z is {value}", "evaluate the energy on the grid points and take torch.logsumexp of -E")
        pts, _, _, area = grid_2d(window, resolution)
        e = energy(pts.to(F64))
        if abs(value - math.exp(min(expected, 50.0))) < 0.02 * math.exp(min(expected, 50.0)):
            fail(ex, "you returned Z, not log Z", "return the logarithm, without leaving log space")
        if abs(value - (expected - math.log(area))) < 0.05:
            fail(ex, "missing the cell area: your sum is off by log(dx dy)", "a Riemann sum multiplies each value by the cell area")
        if abs(value - float(torch.logsumexp(e, 0) + math.log(area))) < 0.05:
            fail(ex, "wrong sign: you summed exp(+E)", "p = exp(-E) / Z, so Z sums exp(-E)")
        fail(ex, f"log Z = {value:.4f} for a Gaussian energy on the window {window}, expected {expected:.4f}",
             "log Z = logsumexp(-E over the grid) + log(cell area); check the grid spacing of linspace")
    return passed(ex, "log Z of 3 Gaussian energies within 0.02, and of one shifted by -1000 (no overflow)")


# ---------------------------------------------------------------- lesson 02: one unadjusted Langevin step

def check_langevin_step(fn: Callable) -> bool:
    r"""Lesson 02: ``fn(x, score_fn, step_size, noise)`` must return x + step_size/2 s(x) + sqrt(step_size) noise."""
    ex = "langevin_step"
    for seed, (n, dim), step in ((0, (400, 2), 0.1), (1, (256, 3), 0.01), (2, (1, 1), 0.5)):
        g = _gen(seed)
        target = Gaussian(torch.randn(dim, generator=g, dtype=F64), torch.linalg.inv(_precision(dim, seed)))
        x = 2 * torch.randn(n, dim, generator=g, dtype=F64)
        z = torch.randn(n, dim, generator=g, dtype=F64)
        x_before, z_before = x.clone(), z.clone()
        out = as_tensor_result(ex, call(ex, fn, x, target.score, step, z), (n, dim), "the new state")
        if not (torch.equal(x, x_before) and torch.equal(z, z_before)):
            fail(ex, "your step changed its input x (or noise) in place", "build a new tensor (x_new = x + ...) instead of x += ...")
        expected = x + 0.5 * step * target.score(x) + math.sqrt(step) * z
        if close(out, expected, 1e-6, 1e-8):
            continue
        if n * dim < 8:
            fail(ex, f"wrong state for step_size={step}", "x_new = x + (step_size/2) s(x) + sqrt(step_size) noise")
        (a, b), residual = fit_coefficients(out - x, [target.score(x), z])
        if residual > 1e-3:
            fail(ex, "the move x_new - x is not a combination of s(x) and the noise",
                 "evaluate the score at the current x and add the given noise")
        if name_coefficient(a, {"full": step}) and name_coefficient(b, {"sqrt2": math.sqrt(2 * step)}):
            fail(ex, "you used the convention x + eps s + sqrt(2 eps) z",
                 "this course writes the step as x + eps/2 s + sqrt(eps) z (same chain with eps halved); use that one")
        fail_on_coefficient(ex, a, [
            (step, "the drift is step_size * s(x): missing 1/2", "the gradient step is step_size/2 times the score"),
            (-step / 2, "wrong sign: the step moves against the score", "the score points uphill in log p; follow it"),
            (0.0, "the score term is missing", "add (step_size/2) s(x)")])
        fail_on_coefficient(ex, b, [
            (step, "the noise is scaled by step_size", "noise of a Langevin step scales like sqrt(step_size)"),
            (0.0, "the noise term is missing: that is gradient ascent, not sampling", "add sqrt(step_size) times noise"),
            (math.sqrt(2 * step), "the noise is scaled by sqrt(2 step_size)",
             "with the drift step_size/2 s the noise is sqrt(step_size) z")])
        fail(ex, f"the step is x + {a:.3g} s(x) + {b:.3g} noise for step_size={step}",
             "x_new = x + (step_size/2) s(x) + sqrt(step_size) noise")
    return passed(ex, "3 shapes and step sizes, against x + eps/2 s(x) + sqrt(eps) z on Gaussian targets")


# ---------------------------------------------------------------- lesson 03: exact score matching

def _linear_score(prec: torch.Tensor, m: torch.Tensor):
    return lambda x: -(x - m) @ prec


def _norm_trace_weights(ex: str, loss_fn: Callable, n: int, dim: int, seed: int):
    """Weights (alpha, beta) of the student's loss on the terms 1/2|s|^2 and tr(grad s) for a linear score.

    For s(x) = -P (x - m), tr grad s = -tr P at every point; scaling x - m by 2 multiplies the norm
    term by 4 and leaves the trace term unchanged, so two calls separate the two weights.
    """
    g = _gen(seed)
    prec = _precision(dim, seed)
    m = torch.randn(dim, generator=g, dtype=F64)
    d = torch.randn(n, dim, generator=g, dtype=F64)
    score = _linear_score(prec, m)
    norm = float((0.5 * (score(m + d) ** 2).sum(1)).mean())
    trace = -float(torch.trace(prec))
    l1 = float(as_tensor_result(ex, loss_fn(score, m + d), ()).detach())
    l2 = float(as_tensor_result(ex, loss_fn(score, m + 2 * d), ()).detach())
    alpha = (l2 - l1) / (3 * norm)
    beta = (l1 - alpha * norm) / trace
    return alpha, beta, -float(prec.sum()) / trace


def check_exact_sm_loss(fn: Callable) -> bool:
    r"""Lesson 03: ``fn(score_fn, x)`` must return mean_i [1/2 |s(x_i)|^2 + tr grad_x s(x_i)], differentiably."""
    ex = "exact_sm_loss"
    for n, dim, seed in ((64, 3, 0), (1, 2, 1), (17, 1, 2)):
        model = _ScoreMLP(dim, seed)
        x = torch.randn(n, dim, generator=_gen(seed + 10), dtype=F64)
        out = as_tensor_result(ex, call(ex, fn, model, x), ())
        ref = objectives.exact_score_matching(model, x)
        if close(out, ref):
            continue
        alpha, beta, all_entries = _norm_trace_weights(ex, lambda s, z: call(ex, fn, s, z), 40, max(dim, 3), seed)
        if name_coefficient(alpha, {"ok": 1.0}) and name_coefficient(beta, {"all": all_entries}):
            fail(ex, "you summed every entry of the Jacobian, not its diagonal",
                 "the trace keeps only d s_d / d x_d: take column d of the gradient of s[:, d].sum()")
        _two_term_diagnosis(ex, alpha, beta, 40, max(dim, 3), "|s|^2", "trace")
        fail(ex, f"loss {float(out):.5g} for a small network (n={n}, D={dim}), expected {float(ref):.5g}",
             "loop over d: differentiate s[:, d].sum() with respect to x and keep column d")
    model = _ScoreMLP(3, 5)
    x = torch.randn(32, 3, generator=_gen(5), dtype=F64)
    _check_gradients(ex, lambda: call(ex, fn, model, x), lambda: objectives.exact_score_matching(model, x),
                     list(model.parameters()), "pass create_graph=True to torch.autograd.grad so the trace term trains the model")
    return passed(ex, "value on 3 shapes (D = 1, 2, 3; n = 1, 17, 64) and the parameter gradient match the exact reference")


# ---------------------------------------------------------------- lesson 04: Hutchinson and SSM

def check_hutchinson_trace(fn: Callable, n_trials: int = 2000, k: float = 4.0) -> bool:
    r"""Lesson 04: ``fn(A, n_projections, generator)`` must return one unbiased estimate (1/M) sum_m v_m^T A v_m.

    Over ``n_trials`` calls the mean must lie within ``k`` standard errors of tr A and the variance
    must match 2 |B|_F^2 / M (Gaussian v) or the Rademacher formula, B = (A + A^T)/2.
    """
    ex = "hutchinson_trace"
    g = _gen(0)
    a = torch.randn(5, 5, generator=g, dtype=F64) + 2 * torch.eye(5, dtype=F64)
    first = as_tensor_result(ex, call(ex, fn, a, 1, _gen(1)), (), "the estimate")
    again = as_tensor_result(ex, call(ex, fn, a, 1, _gen(1)), (), "the estimate")
    if not close(first, again, 1e-12, 1e-12):
        fail(ex, "two calls with equally seeded generators give different estimates",
             "draw the vectors with torch.randn(..., generator=generator)")
    trace = float(torch.trace(a))
    for m in (1, 4):
        gen = _gen(10 + m)
        values = torch.tensor([float(as_tensor_result(ex, call(ex, fn, a, m, gen), (), "the estimate"))
                               for _ in range(n_trials)], dtype=F64)
        mean, std = float(values.mean()), float(values.std())
        if not math.isfinite(mean):
            fail(ex, "the estimate is not finite", "v^T A v is a finite number for finite A and v")
        se = std / math.sqrt(n_trials)
        if abs(mean - trace) > k * max(se, 1e-9):
            hint = ("you summed the M projections instead of averaging them" if abs(mean - m * trace) < k * se and m > 1
                    else "the vectors need E[v v^T] = I: standard normal (torch.randn) or random signs")
            fail(ex, f"biased beyond {k:g} standard errors: mean {mean:.3f} over {n_trials} estimates with M={m}, "
                 f"tr A = {trace:.3f}", hint)
        var = std ** 2
        allowed = [hutchinson_variance(a, n_projections=m, kind="gaussian"), hutchinson_variance(a, n_projections=m, kind="rademacher")]
        if not any(abs(var - v) < 0.3 * v for v in allowed):
            if m > 1 and any(abs(var - m * v) < 0.3 * m * v for v in allowed):
                fail(ex, f"unbiased, but the variance does not shrink like 1/M (M={m}: {var:.2f}, expected {allowed[0]:.2f})",
                     "draw M independent vectors, not one vector M times")
            fail(ex, f"unbiased, but the variance {var:.2f} (M={m}) differs from Hutchinson's {allowed[0]:.2f}",
                 "use independent standard normal (or +-1) entries for every vector")
    return passed(ex, f"unbiased within {k:g} standard errors and variance 2|B|_F^2/M for M = 1, 4 ({n_trials} estimates each)")


def check_ssm_loss(fn: Callable) -> bool:
    r"""Lesson 04: ``fn(score_fn, x, v)`` must return mean_i [1/2 (v_i^T s(x_i))^2 + v_i^T grad_x(v_i^T s(x_i))].

    ``v`` holds one projection per row of x; the reference is
    :func:`csm_edu.objectives.sliced_score_matching` on the same projections.
    """
    ex = "ssm_loss"
    for n, dim, seed in ((64, 3, 0), (1, 2, 1), (17, 1, 2)):
        model = _ScoreMLP(dim, seed)
        x = torch.randn(n, dim, generator=_gen(seed + 10), dtype=F64)
        v = objectives.random_projections(x.shape, kind="gaussian", generator=_gen(seed + 20), dtype=F64)
        out = as_tensor_result(ex, call(ex, fn, model, x, v.clone()), ())
        ref = objectives.sliced_score_matching(model, x, generator=_gen(seed + 20))
        if close(out, ref):
            continue
        xr = x.detach().requires_grad_(True)
        s = model(xr)
        sv = (s * v).sum(1)
        (grad,) = torch.autograd.grad(sv.sum(), xr)
        trace = (grad * v).sum(1)
        if close(out, (0.5 * (s ** 2).sum(1) + trace).mean()):
            fail(ex, "you used 1/2 |s|^2 (that is SSM-VR), not the projected 1/2 (v^T s)^2",
                 "project the score on v before squaring")
        # weights of the two terms on a linear score with the same projections
        g = _gen(seed)
        d = max(dim, 3)
        prec = _precision(d, seed)
        mu = torch.randn(d, generator=g, dtype=F64)
        dx = torch.randn(40, d, generator=g, dtype=F64)
        vv = torch.randn(40, d, generator=g, dtype=F64)
        score = _linear_score(prec, mu)
        norm = float((0.5 * ((score(mu + dx) * vv).sum(1)) ** 2).mean())
        tr = -float(((vv @ prec) * vv).sum(1).mean())
        l1 = float(as_tensor_result(ex, call(ex, fn, score, mu + dx, vv.clone()), ()).detach())
        l2 = float(as_tensor_result(ex, call(ex, fn, score, mu + 2 * dx, vv.clone()), ()).detach())
        alpha = (l2 - l1) / (3 * norm)
        beta = (l1 - alpha * norm) / tr
        _two_term_diagnosis(ex, alpha, beta, 40, d, "(v^T s)^2", "v^T grad(v^T s)")
        fail(ex, f"loss {float(out):.5g} (n={n}, D={dim}), expected {float(ref):.5g}",
             "differentiate (v * s).sum() with respect to x and take the dot product with v, row by row")
    model = _ScoreMLP(3, 5)
    x = torch.randn(32, 3, generator=_gen(5), dtype=F64)
    v = objectives.random_projections(x.shape, kind="gaussian", generator=_gen(6), dtype=F64)
    _check_gradients(ex, lambda: call(ex, fn, model, x, v), lambda: objectives.sliced_score_matching(model, x, generator=_gen(6)),
                     list(model.parameters()), "pass create_graph=True to torch.autograd.grad so the trace term trains the model")
    return passed(ex, "value on 3 shapes and the parameter gradient match the library's SSM on the same projections")


# ---------------------------------------------------------------- lesson 05: DSM and Tweedie

def check_dsm_loss(fn: Callable) -> bool:
    r"""Lesson 05: ``fn(score_fn, x, sigma, eps)`` must return mean_i [1/2 |s(x~_i)|^2 + s(x~_i)^T eps_i / sigma],
    x~ = x + sigma eps: :func:`csm_edu.objectives.denoising_score_matching` on the same noise."""
    ex = "dsm_loss"
    target = GaussianMixture([[-1.0, 0.0], [1.5, 0.5]], [0.3, 0.6])
    for n, sigma, seed in ((128, 0.5, 0), (1, 0.1, 1), (33, 2.0, 2)):
        x = target.sample(n, generator=_gen(seed)).to(F64)
        eps = torch.randn(x.shape, generator=_gen(seed + 10), dtype=F64)
        score = noised_distribution(target, sigma).score
        out = as_tensor_result(ex, call(ex, fn, score, x, sigma, eps.clone()), ())
        ref = objectives.denoising_score_matching(score, x, sigma, generator=_gen(seed + 10))
        if close(out, ref):
            continue
        s, s_clean = score(x + sigma * eps), score(x)
        sq, cross = 0.5 * (s ** 2).sum(1), (s * eps).sum(1)
        fail_on_variant(ex, out, [
            ((0.5 * ((s + eps / sigma) ** 2).sum(1)).mean(),
             "you wrote 1/2|s + eps/sigma|^2, which adds the data constant |eps|^2 / (2 sigma^2)",
             "expand the square and drop the term without s, so the loss compares with exact SM"),
            ((2 * sq + cross / sigma).mean(), "the norm term is twice too large: missing 1/2", "the loss has 1/2 |s|^2"),
            ((sq - cross / sigma).mean(), "the cross term has the wrong sign", "the regression target of s is -eps / sigma"),
            ((0.5 * (s_clean ** 2).sum(1) + (s_clean * eps).sum(1) / sigma).mean(),
             "the score is evaluated at the clean x", "evaluate it at the noised x~ = x + sigma eps"),
            ((sq + cross / sigma ** 2).mean(), "the cross term is divided by sigma^2", "the target -eps/sigma has one power of sigma"),
        ] + ([((sq + cross / sigma).sum(), "the loss is summed over the batch instead of averaged",
               "take the mean over the n points")] if n > 1 else []))
        fail(ex, f"loss {float(out):.5g} at sigma={sigma} (n={n}), expected {float(ref):.5g}",
             "compare your formula with the one above the exercise, term by term")
    model = _ScoreMLP(2, 5)
    x = target.sample(32, generator=_gen(5)).to(F64)
    eps = torch.randn(x.shape, generator=_gen(6), dtype=F64)
    _check_gradients(ex, lambda: call(ex, fn, model, x, 0.3, eps),
                     lambda: objectives.denoising_score_matching(model, x, 0.3, generator=_gen(6)),
                     list(model.parameters()), "keep the graph: no .detach() or torch.no_grad() around the score")
    return passed(ex, "value at 3 noise levels and shapes, and the parameter gradient, match the library's DSM")


def check_tweedie(fn: Callable) -> bool:
    r"""Lesson 05: ``fn(score_fn, x_noisy, sigma)`` must return Tweedie's x~ + sigma^2 s(x~).

    Closed form: for p = N(m, c I) and the score of q_sigma = N(m, (c + sigma^2) I) this is the
    posterior mean E[x | x~] = m + c / (c + sigma^2) (x~ - m).
    """
    ex = "tweedie_denoise"
    for n, dim, sigma, seed in ((200, 2, 0.5, 0), (1, 3, 0.1, 1), (50, 1, 2.0, 2)):
        g = _gen(seed)
        m, c = torch.randn(dim, generator=g, dtype=F64), 0.7
        q = noised_distribution(Gaussian(m, c), sigma)
        x_noisy = m + math.sqrt(c + sigma ** 2) * torch.randn(n, dim, generator=g, dtype=F64)
        before = x_noisy.clone()
        out = as_tensor_result(ex, call(ex, fn, q.score, x_noisy, sigma), (n, dim), "the denoised points")
        if not torch.equal(x_noisy, before):
            fail(ex, "your function changed x_noisy in place", "return a new tensor")
        posterior_mean = m + c / (c + sigma ** 2) * (x_noisy - m)
        if close(out, posterior_mean, 1e-5, 1e-7):
            continue
        (a,), residual = fit_coefficients(out - x_noisy, [q.score(x_noisy)])
        if residual < 1e-4:
            fail_on_coefficient(ex, a, [
                (sigma, "the step is sigma s(x~), not sigma^2 s(x~)", "the noise variance sigma^2 sets the step"),
                (-sigma ** 2, "wrong sign: the step moves away from the data", "follow the score, towards higher density"),
                (1.0, "the step has no sigma^2 factor", "multiply the score by the noise variance"),
                (2 * sigma ** 2, "the step is twice too large", "one factor sigma^2, no 2")])
        fail(ex, f"the denoised points differ from the posterior mean E[x | x~] (n={n}, D={dim}, sigma={sigma})",
             "one step along the noised score, scaled by the noise variance")
    return passed(ex, "equals the exact posterior mean of a Gaussian at 3 noise levels and shapes")


# ---------------------------------------------------------------- lesson 06: annealed Langevin

def _noise_conditional_gaussian_score(m: torch.Tensor, c: float):
    """The exact score of N(m, c I) * N(0, sigma^2 I); sigma a float or one level per row."""
    def score(x, sigma):
        sigma = torch.as_tensor(sigma, dtype=x.dtype)
        if sigma.dim() == 1:
            sigma = sigma[:, None]
        return -(x - m) / (c + sigma ** 2)
    return score


def _annealed_variant(score_fn, x0, sigmas, steps_per_sigma, step_size, generator, *, scaled=True, half=True,
                      noise_sqrt=True, largest_first=True):
    """Annealed Langevin with one detail changed, to name a student's mistake (the reference is the library's)."""
    levels = [float(s) for s in sigmas]
    last = levels[-1]
    order = levels if largest_first else levels[::-1]
    x = x0.clone()
    for sigma in order:
        alpha = step_size * (sigma / last) ** 2 if scaled else step_size
        sigma_vec = torch.full((x.shape[0],), sigma, dtype=x.dtype)
        for _ in range(steps_per_sigma):
            z = torch.randn(x.shape, generator=generator, dtype=x.dtype)
            x = x + (0.5 if half else 1.0) * alpha * score_fn(x, sigma_vec) + (alpha ** 0.5 if noise_sqrt else alpha) * z
    return x


def check_annealed_langevin(fn: Callable) -> bool:
    r"""Lesson 06: ``fn(score_fn, x0, sigmas, steps_per_sigma, step_size, generator)`` must run annealed Langevin:
    for sigma_i from largest to smallest, ``steps_per_sigma`` steps x + alpha_i/2 s(x, sigma_i) + sqrt(alpha_i) z
    with alpha_i = step_size sigma_i^2 / sigma_L^2 and z = torch.randn(x.shape, generator=generator, dtype=x.dtype).

    Compared with :func:`csm_edu.sampling.annealed_langevin` on the same generator, for the exact
    noise-conditional score of a Gaussian.
    """
    ex = "annealed_langevin"
    for n, dim, seed in ((200, 2, 0), (1, 1, 1), (30, 3, 2)):
        g = _gen(seed)
        m = torch.randn(dim, generator=g, dtype=F64)
        score = _noise_conditional_gaussian_score(m, 0.5)
        sigmas = objectives.geometric_sigmas(3.0, 0.1, 4)
        x0 = 3 * torch.randn(n, dim, generator=g, dtype=F64)
        before = x0.clone()
        args = (score, x0, sigmas, 5, 0.01)
        out = as_tensor_result(ex, call(ex, fn, *args, _gen(seed + 10)), (n, dim), "the samples")
        if not torch.equal(x0, before):
            fail(ex, "your sampler changed x0 in place", "start from x = x0.clone()")
        ref = sampling.annealed_langevin(score, x0, sigmas, steps_per_sigma=5, step_size=0.01, generator=_gen(seed + 10))
        if close(out, ref, 1e-4, 1e-6):
            continue
        variants = {
            "constant": dict(scaled=False), "half": dict(half=False), "noise": dict(noise_sqrt=False),
            "order": dict(largest_first=False)}
        messages = {
            "constant": ("every level uses the same step size", "scale the step with the level: alpha_i = step_size sigma_i^2 / sigma_L^2"),
            "half": ("the drift is alpha s: missing 1/2", "each step is x + alpha/2 s(x, sigma) + sqrt(alpha) z"),
            "noise": ("the noise is scaled by alpha", "the noise of a Langevin step scales like sqrt(alpha)"),
            "order": ("the levels run from the smallest to the largest", "anneal: start at the largest sigma"),
        }
        for name, change in variants.items():
            if close(out, _annealed_variant(*args, _gen(seed + 10), **change), 1e-4, 1e-6):
                fail(ex, *messages[name])
        fail(ex, f"the samples differ from the reference run on the same generator (n={n}, D={dim})",
             "draw z = torch.randn(x.shape, generator=generator, dtype=x.dtype) once per step and pass "
             "score_fn one noise level per row")
    return passed(ex, "reproduces the library's annealed Langevin on the same random numbers for 3 shapes")


# ---------------------------------------------------------------- lesson 07: CSM and the 1-D quadrature

class _GaussianConditionals:
    r"""Exact autoregressive conditionals of N(m, L L^T): s_d = -z_d / L_dd, diag_d = -1 / L_dd^2, x = m + L z."""

    def __init__(self, dim: int, seed: int):
        g = _gen(seed)
        self.m = torch.randn(dim, generator=g, dtype=F64)
        self.chol = torch.linalg.cholesky(torch.linalg.inv(_precision(dim, seed)))

    def scores_and_diagonal(self, x, y=None):
        z = torch.linalg.solve_triangular(self.chol, (x - self.m).T, upper=False).T
        d = torch.diagonal(self.chol)
        return -z / d, (-1.0 / d ** 2).expand_as(x)


def check_csm_loss(fn: Callable) -> bool:
    r"""Lesson 07: ``fn(s, diag)`` (both (n, D)) must return mean_i sum_d [1/2 s_id^2 + diag_id], differentiably.

    Checked against :func:`csm_edu.objectives.composite_score_matching` on the exact conditionals
    of correlated Gaussians.
    """
    ex = "csm_loss"
    for n, dim, seed in ((64, 3, 0), (1, 4, 1), (20, 1, 2)):
        model = _GaussianConditionals(dim, seed)
        x = model.m + torch.randn(n, dim, generator=_gen(seed + 10), dtype=F64) @ model.chol.T
        s, diag = model.scores_and_diagonal(x)
        s, diag = s.clone().requires_grad_(True), diag.clone().requires_grad_(True)
        out = as_tensor_result(ex, call(ex, fn, s, diag), ())
        ref = objectives.composite_score_matching(model, x)
        if close(out, ref):
            if not out.requires_grad:
                fail(ex, "the loss is not differentiable", "do not detach or call .item()")
            grads = torch.autograd.grad(out, (s, diag), allow_unused=True)
            if any(gr is None for gr in grads) or not (close(grads[0], s.detach() / n) and close(grads[1], torch.full_like(diag, 1.0 / n))):
                fail(ex, "right value, wrong gradient", "build the loss from s and diag with torch operations only")
            continue
        sd, dd = s.detach(), diag.detach()
        wrong = [(((sd ** 2 + dd).sum(1)).mean(), "the s^2 term is twice too large: missing 1/2",
                  "each 1-D objective is 1/2 s_d^2 + ds_d/dx_d"),
                 (((0.5 * sd ** 2 - dd).sum(1)).mean(), "the diagonal term has the wrong sign",
                  "integration by parts along x_d gives + ds_d/dx_d"),
                 ((0.5 * sd ** 2).sum(1).mean(), "the diagonal term is missing", "add diag, the derivatives ds_d/dx_d")]
        if dim > 1:
            wrong.append(((0.5 * sd ** 2 + dd).mean(), "averaged over the D dimensions instead of summed",
                          "sum over d, then mean over the n points"))
        if n > 1:
            wrong.append(((0.5 * sd ** 2 + dd).sum(), "summed over the batch instead of averaged",
                          "sum over d, then mean over the n points"))
        fail_on_variant(ex, out, wrong)
        fail(ex, f"loss {float(out):.5g} (n={n}, D={dim}), expected {float(ref):.5g}",
             "sum 1/2 s^2 + diag over dimensions, then average over points")
    return passed(ex, "value and gradient on the exact conditionals of 3 Gaussians (D = 1, 3, 4)")


def check_conditional_log_prob(fn: Callable, tol: float = 2e-3) -> bool:
    r"""Lesson 07: ``fn(score_fn, x, bounds, n_nodes)`` must return log q(x) for the 1-D density with score s:

    q(x) = exp(u(x)) / \int_lo^hi exp(u), u(x) = \int_lo^x s(t) dt, by quadrature with ``n_nodes`` nodes;
    ``score_fn`` maps a 1-D tensor of points to a tensor of the same shape. Checked within ``tol``
    on known conditionals: two Gaussians and a two-component mixture.
    """
    ex = "conditional_log_prob"
    cases = ((Gaussian([0.5], 0.8 ** 2), (-6.0, 6.0)), (Gaussian([1.2], 0.36), (-5.0, 7.0)),
             (GaussianMixture([[-2.0], [1.5]], [0.25, 1.0], [0.3, 0.7]), (-8.0, 8.0)))
    for k, (dist, bounds) in enumerate(cases):
        x = dist.sample(40, generator=_gen(k)).to(F64)[:, 0].clamp(bounds[0] + 0.5, bounds[1] - 0.5)

        def score_fn(t, dist=dist):
            if t.dim() != 1:
                fail(ex, f"score_fn was called with shape {tuple(t.shape)}", "pass a 1-D tensor of points")
            return dist.score(t.to(F64)[:, None])[:, 0].to(t.dtype)

        out = as_tensor_result(ex, call(ex, fn, score_fn, x.clone(), bounds, 256), tuple(x.shape), "log q(x)")
        exact = dist.log_prob(x[:, None])
        err = (out.double() - exact).abs()
        if float(err.max()) < tol:
            continue
        diff = out.double() - exact
        if float(diff.std()) < tol:
            fail(ex, f"log q is off by the constant {float(diff.mean()):.4f}",
                 "subtract log Z = log of the integral of exp(u) over the bounds, spacing included")
        if float((out.double() + exact).std()) < float(diff.std()) / 10:
            fail(ex, "wrong sign: log q decreases where the density grows", "u(x) integrates +s from lo to x")
        worst = int(err.argmax())
        fail(ex, f"log q({float(x[worst]):.3f}) = {float(out[worst]):.4f}, exact {float(exact[worst]):.4f} "
             f"(case {k + 1} of 3)", "u(x) = integral of s from lo to x (trapezoid rule); log q = u - log Z")
    return passed(ex, f"log q within {tol:g} of the exact log density on 3 known conditionals")


# ---------------------------------------------------------------- lesson 13: one reverse-SDE step

def _time_score(seed: int, dim: int):
    w = torch.randn(dim, dim, generator=_gen(seed), dtype=F64)

    def score(x, t):
        t = torch.as_tensor(t, dtype=x.dtype)
        return torch.tanh(x @ w + (t[:, None] if t.dim() == 1 else t)) - x
    return score


def check_reverse_sde_step(fn: Callable) -> bool:
    r"""Lesson 13: ``fn(score_fn, sde, x, t, dt, z)`` must return one Euler-Maruyama step of the reverse SDE,
    x - [f(x, t) - g(t)^2 s(x, t)] dt + g(t) sqrt(dt) z, as in :func:`csm_edu.diffusion.reverse_sde_sample`."""
    ex = "reverse_sde_step"
    for sde, (n, dim), t, dt, seed in ((VPSDE(), (300, 2), 0.6, 0.01, 0), (VESDE(), (1, 3), 0.3, 0.002, 1),
                                       (VPSDE(), (100, 1), 0.9, 0.05, 2)):
        score = _time_score(seed, dim)
        x = torch.randn(n, dim, generator=_gen(seed + 10), dtype=F64)
        z = torch.randn(x.shape, generator=_gen(seed + 20), dtype=F64)
        before = x.clone()
        out = as_tensor_result(ex, call(ex, fn, score, sde, x, t, dt, z.clone()), (n, dim), "the new state")
        if not torch.equal(x, before):
            fail(ex, "your step changed x in place", "build a new tensor")
        ref, _ = _reverse_em_step(score, sde, x, t, dt, _gen(seed + 20))
        if close(out, ref, 1e-5, 1e-7):
            continue
        if n * dim < 20:
            fail(ex, f"wrong state ({sde!r}, t={t}, dt={dt})", "x - [f(x,t) - g(t)^2 s(x,t)] dt + g(t) sqrt(dt) z")
        tt = torch.full((n,), t, dtype=F64)
        g = float(sde.diffusion(torch.tensor(t, dtype=F64)))
        (a, b, c), residual = fit_coefficients(out - x, [sde.drift(x, tt), score(x, tt), z])
        if residual > 1e-3:
            fail(ex, "the move is not a combination of the drift f(x, t), the score s(x, t) and the noise",
                 "evaluate f and s at the current x and t")
        fail_on_coefficient(ex, b, [
            (g * dt, "the score term uses g(t), not g(t)^2", "the reverse drift is f - g^2 s"),
            (-g ** 2 * dt, "the score term has the wrong sign",
             "in reverse time the score pulls towards the data: - (f - g^2 s) dt"),
            (0.0, "the score term is missing", "the reverse drift is f - g^2 s")])
        fail_on_coefficient(ex, a, [
            (dt, "the drift f has the wrong sign", "time runs backwards: x - f dt"),
            (0.0, "the forward drift f is missing", "the reverse drift is f - g^2 s")])
        fail_on_coefficient(ex, c, [
            (g * dt, "the noise is scaled by dt", "Brownian increments scale like sqrt(dt)"),
            (g ** 2 * math.sqrt(dt), "the noise is scaled by g^2", "the noise is g(t) sqrt(dt) z"),
            (0.0, "the noise is missing (that is the mean of the step)", "add g(t) sqrt(dt) z")])
        fail(ex, f"the step is x + {a:.3g} f + {b:.3g} s + {c:.3g} z; expected {-dt:.3g}, {g * g * dt:.3g}, "
             f"{g * math.sqrt(dt):.3g}", "x - [f(x,t) - g(t)^2 s(x,t)] dt + g(t) sqrt(dt) z")
    return passed(ex, "VP and VE SDEs, 3 shapes and times, against the library's reverse Euler-Maruyama step")
