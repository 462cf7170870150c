"""Each checker passes the reference solution and names each typical mistake it claims to catch."""
import math

import pytest
import torch

from csm_edu import exercises
from csm_edu.exercises import ExerciseFailed


def expect_failure(check, fn, *words):
    with pytest.raises(ExerciseFailed) as info:
        check(fn)
    message = str(info.value)
    assert "\n" not in message and "Hint:" in message, message
    for w in words:
        assert w in message, message
    return message


# ---------------------------------------------------------------- 00


def gaussian_score(x, mu, var):
    return -(x - mu) / var


def test_gaussian_score(capsys):
    assert exercises.check_gaussian_score(gaussian_score)
    assert capsys.readouterr().out.startswith("passed: gaussian_score")
    expect_failure(exercises.check_gaussian_score, lambda x, mu, var: (x - mu) / var, "wrong sign")
    expect_failure(exercises.check_gaussian_score, lambda x, mu, var: -(x - mu), "variance is missing")
    expect_failure(exercises.check_gaussian_score, lambda x, mu, var: -(x - mu) / math.sqrt(var), "sigma")
    expect_failure(exercises.check_gaussian_score, lambda x, mu, var: -x / var, "mean is missing")
    expect_failure(exercises.check_gaussian_score, lambda x, mu, var: -(x - mu)[:3] / var, "shape")


def test_stub_error_passes_through():
    def stub(x, mu, var):
        raise NotImplementedError("Your turn: write gaussian_score, then run the check below")
    with pytest.raises(NotImplementedError, match="Your turn"):
        exercises.check_gaussian_score(stub)


def test_errors_in_student_code_become_one_line():
    expect_failure(exercises.check_gaussian_score, lambda x, mu, var: x.nosuch(), "raised AttributeError")


# ---------------------------------------------------------------- 01


def grid_log_normaliser(energy, window, resolution):
    xs = torch.linspace(window[0], window[1], resolution, dtype=torch.float64)
    ys = torch.linspace(window[2], window[3], resolution, dtype=torch.float64)
    X, Y = torch.meshgrid(xs, ys, indexing="xy")
    pts = torch.stack([X.reshape(-1), Y.reshape(-1)], 1)
    area = (xs[1] - xs[0]) * (ys[1] - ys[0])
    return torch.logsumexp(-energy(pts), 0) + torch.log(area)


def test_grid_log_normaliser():
    check = exercises.check_grid_log_normaliser
    assert check(grid_log_normaliser)

    def no_area(energy, window, resolution):
        xs = torch.linspace(window[0], window[1], resolution, dtype=torch.float64)
        ys = torch.linspace(window[2], window[3], resolution, dtype=torch.float64)
        X, Y = torch.meshgrid(xs, ys, indexing="xy")
        return torch.logsumexp(-energy(torch.stack([X.reshape(-1), Y.reshape(-1)], 1)), 0)

    def naive(energy, window, resolution):
        xs = torch.linspace(window[0], window[1], resolution, dtype=torch.float64)
        ys = torch.linspace(window[2], window[3], resolution, dtype=torch.float64)
        X, Y = torch.meshgrid(xs, ys, indexing="xy")
        area = (xs[1] - xs[0]) * (ys[1] - ys[0])
        return torch.log(torch.exp(-energy(torch.stack([X.reshape(-1), Y.reshape(-1)], 1))).sum() * area)

    expect_failure(check, no_area, "cell area")
    expect_failure(check, lambda e, w, r: grid_log_normaliser(lambda x: -e(x), w, r), "wrong sign")
    expect_failure(check, lambda e, w, r: grid_log_normaliser(e, w, r).exp(), "Z, not log Z")
    expect_failure(check, naive, "logsumexp")
    expect_failure(check, lambda e, w, r: grid_log_normaliser(e, w, r).reshape(1, 1).repeat(2, 1), "shape")


# ---------------------------------------------------------------- 02


def langevin_step(x, score_fn, step_size, noise):
    return x + 0.5 * step_size * score_fn(x) + step_size ** 0.5 * noise


def test_langevin_step():
    check = exercises.check_langevin_step
    assert check(langevin_step)
    expect_failure(check, lambda x, s, e, z: x + e * s(x) + e ** 0.5 * z, "missing 1/2")
    expect_failure(check, lambda x, s, e, z: x + e * s(x) + (2 * e) ** 0.5 * z, "convention")
    expect_failure(check, lambda x, s, e, z: x - 0.5 * e * s(x) + e ** 0.5 * z, "wrong sign")
    expect_failure(check, lambda x, s, e, z: x + 0.5 * e * s(x) + e * z, "scaled by step_size")
    expect_failure(check, lambda x, s, e, z: x + 0.5 * e * s(x), "noise term is missing")
    expect_failure(check, lambda x, s, e, z: x + 0.5 * e * s(x + z) + e ** 0.5 * z, "not a combination")
    expect_failure(check, lambda x, s, e, z: x.add_(0.5 * e * s(x) + e ** 0.5 * z), "in place")
    expect_failure(check, lambda x, s, e, z: langevin_step(x, s, e, z)[0], "shape")


# ---------------------------------------------------------------- 03


def exact_sm_loss(score_fn, x):
    x = x.detach().requires_grad_(True)
    s = score_fn(x)
    trace = 0
    for d in range(x.shape[1]):
        (grad_d,) = torch.autograd.grad(s[:, d].sum(), x, create_graph=True)
        trace = trace + grad_d[:, d]
    return (0.5 * (s ** 2).sum(1) + trace).mean()


def _sm_variant(norm_weight=0.5, trace_sign=1.0, batch_sum_trace=False, all_entries=False, create_graph=True,
                detach=False, mean_dims=False):
    def loss(score_fn, x):
        x = x.detach().requires_grad_(True)
        s = score_fn(x)
        trace = torch.zeros(x.shape[0], dtype=x.dtype)
        for d in range(x.shape[1]):
            (grad_d,) = torch.autograd.grad(s[:, d].sum(), x, retain_graph=True, create_graph=create_graph)
            trace = trace + (grad_d.sum(1) if all_entries else grad_d[:, d])
        norm = norm_weight * ((s ** 2).mean(1) if mean_dims else (s ** 2).sum(1))
        t = trace.sum() if batch_sum_trace else trace.mean()
        value = norm.mean() + trace_sign * t
        return value.detach() if detach else value
    return loss


def test_exact_sm_loss():
    check = exercises.check_exact_sm_loss
    assert check(exact_sm_loss)
    assert check(_sm_variant())
    expect_failure(check, _sm_variant(norm_weight=1.0), "missing 1/2")
    expect_failure(check, _sm_variant(trace_sign=-1.0), "trace term has the wrong sign")
    expect_failure(check, _sm_variant(batch_sum_trace=True), "summed over the batch")
    expect_failure(check, _sm_variant(all_entries=True), "every entry of the Jacobian")
    expect_failure(check, _sm_variant(mean_dims=True), "averaged over dimensions")
    expect_failure(check, _sm_variant(create_graph=False), "gradient")
    expect_failure(check, _sm_variant(detach=True), "not differentiable")
    expect_failure(check, lambda s, x: (0.5 * (s(x) ** 2).sum(1)).mean(), "trace term is missing")

    def graph_freed(score_fn, x):
        x = x.detach().requires_grad_(True)
        s = score_fn(x)
        trace = sum(torch.autograd.grad(s[:, d].sum(), x)[0][:, d] for d in range(x.shape[1]))
        return (0.5 * (s ** 2).sum(1) + trace).mean()
    expect_failure(check, graph_freed, "retain_graph")

    def no_leaf(score_fn, x):
        s = score_fn(x)
        return (0.5 * (s ** 2).sum(1) + torch.autograd.grad(s[:, 0].sum(), x)[0][:, 0]).mean()
    expect_failure(check, no_leaf, "requires_grad_")


# ---------------------------------------------------------------- 04


def hutchinson_trace(A, n_projections, generator=None):
    v = torch.randn(n_projections, A.shape[0], generator=generator, dtype=A.dtype)
    return torch.einsum("mi,ij,mj->m", v, A, v).mean()


def test_hutchinson_trace():
    check = exercises.check_hutchinson_trace
    assert check(hutchinson_trace)

    def rademacher(A, m, generator=None):
        v = torch.randint(0, 2, (m, A.shape[0]), generator=generator).to(A.dtype) * 2 - 1
        return torch.einsum("mi,ij,mj->m", v, A, v).mean()
    assert check(rademacher)

    def uniform(A, m, generator=None):
        v = torch.rand(m, A.shape[0], generator=generator, dtype=A.dtype)
        return torch.einsum("mi,ij,mj->m", v, A, v).mean()

    def summed(A, m, generator=None):
        return hutchinson_trace(A, m, generator) * m

    def one_vector(A, m, generator=None):
        v = torch.randn(1, A.shape[0], generator=generator, dtype=A.dtype).repeat(m, 1)
        return torch.einsum("mi,ij,mj->m", v, A, v).mean()

    def no_generator(A, m, generator=None):
        return hutchinson_trace(A, m)

    def per_projection(A, m, generator=None):
        v = torch.randn(m, A.shape[0], generator=generator, dtype=A.dtype)
        return torch.einsum("mi,ij,mj->m", v, A, v)

    expect_failure(check, uniform, "biased beyond 4 standard errors")
    expect_failure(check, summed, "summed the M projections")
    expect_failure(check, one_vector, "1/M")
    expect_failure(check, no_generator, "generator")
    expect_failure(check, per_projection, "shape")


def ssm_loss(score_fn, x, v):
    x = x.detach().requires_grad_(True)
    s = score_fn(x)
    sv = (s * v).sum(1)
    (grad_sv,) = torch.autograd.grad(sv.sum(), x, create_graph=True)
    return (0.5 * sv ** 2 + (grad_sv * v).sum(1)).mean()


def _ssm_variant(norm="projected", trace_sign=1.0, batch_sum=False, create_graph=True):
    def loss(score_fn, x, v):
        x = x.detach().requires_grad_(True)
        s = score_fn(x)
        sv = (s * v).sum(1)
        (grad_sv,) = torch.autograd.grad(sv.sum(), x, retain_graph=True, create_graph=create_graph)
        n_term = {"projected": 0.5 * sv ** 2, "vr": 0.5 * (s ** 2).sum(1), "no half": sv ** 2}[norm]
        per_point = n_term + trace_sign * (grad_sv * v).sum(1)
        return per_point.sum() if batch_sum else per_point.mean()
    return loss


def test_ssm_loss():
    check = exercises.check_ssm_loss
    assert check(ssm_loss)
    expect_failure(check, _ssm_variant(norm="vr"), "SSM-VR")
    expect_failure(check, _ssm_variant(norm="no half"), "missing 1/2")
    expect_failure(check, _ssm_variant(trace_sign=-1.0), "wrong sign")
    expect_failure(check, _ssm_variant(batch_sum=True), "summed over the batch")
    expect_failure(check, _ssm_variant(create_graph=False), "gradient")


# ---------------------------------------------------------------- 05


def dsm_loss(score_fn, x, sigma, eps):
    s = score_fn(x + sigma * eps)
    return (0.5 * (s ** 2).sum(1) + (s * eps).sum(1) / sigma).mean()


def tweedie_denoise(score_fn, x_noisy, sigma):
    return x_noisy + sigma ** 2 * score_fn(x_noisy)


def test_dsm_loss():
    check = exercises.check_dsm_loss
    assert check(dsm_loss)
    expect_failure(check, lambda f, x, sg, e: (0.5 * ((f(x + sg * e) + e / sg) ** 2).sum(1)).mean(), "data constant")
    expect_failure(check, lambda f, x, sg, e: ((f(x + sg * e) ** 2).sum(1) + (f(x + sg * e) * e).sum(1) / sg).mean(),
                   "missing 1/2")
    expect_failure(check, lambda f, x, sg, e: (0.5 * (f(x + sg * e) ** 2).sum(1) - (f(x + sg * e) * e).sum(1) / sg).mean(),
                   "wrong sign")
    expect_failure(check, lambda f, x, sg, e: (0.5 * (f(x) ** 2).sum(1) + (f(x) * e).sum(1) / sg).mean(), "clean x")
    expect_failure(check, lambda f, x, sg, e: (0.5 * (f(x + sg * e) ** 2).sum(1) + (f(x + sg * e) * e).sum(1) / sg ** 2).mean(),
                   "sigma^2")
    expect_failure(check, lambda f, x, sg, e: (0.5 * (f(x + sg * e) ** 2).sum(1) + (f(x + sg * e) * e).sum(1) / sg).sum(),
                   "summed over the batch")
    expect_failure(check, lambda f, x, sg, e: dsm_loss(f, x, sg, e).detach(), "not differentiable")


def test_tweedie():
    check = exercises.check_tweedie
    assert check(tweedie_denoise)
    expect_failure(check, lambda f, x, sg: x + sg * f(x), "sigma s")
    expect_failure(check, lambda f, x, sg: x - sg ** 2 * f(x), "wrong sign")
    expect_failure(check, lambda f, x, sg: x + f(x), "no sigma^2")
    expect_failure(check, lambda f, x, sg: x.add_(sg ** 2 * f(x)), "in place")


# ---------------------------------------------------------------- 06


def annealed_langevin(score_fn, x0, sigmas, steps_per_sigma, step_size, generator=None):
    x = x0.clone()
    sigma_last = float(sigmas[-1])
    for sigma in sigmas.tolist():
        alpha = step_size * (sigma / sigma_last) ** 2
        sigma_vec = torch.full((x.shape[0],), sigma, dtype=x.dtype)
        for _ in range(steps_per_sigma):
            z = torch.randn(x.shape, generator=generator, dtype=x.dtype)
            x = x + 0.5 * alpha * score_fn(x, sigma_vec) + alpha ** 0.5 * z
    return x


def _annealed_variant(scaled=True, half=0.5, noise_power=0.5, reverse=False, generator_used=True, inplace=False):
    def run(score_fn, x0, sigmas, steps_per_sigma, step_size, generator=None):
        x = x0 if inplace else x0.clone()
        levels = sigmas.tolist()[::-1] if reverse else sigmas.tolist()
        for sigma in levels:
            alpha = step_size * (sigma / float(sigmas[-1])) ** 2 if scaled else step_size
            for _ in range(steps_per_sigma):
                z = torch.randn(x.shape, generator=generator if generator_used else None, dtype=x.dtype)
                step = half * alpha * score_fn(x, torch.full((x.shape[0],), sigma, dtype=x.dtype)) + alpha ** noise_power * z
                if inplace:
                    x += step
                else:
                    x = x + step
        return x
    return run


def test_annealed_langevin():
    check = exercises.check_annealed_langevin
    assert check(annealed_langevin)
    expect_failure(check, _annealed_variant(scaled=False), "same step size")
    expect_failure(check, _annealed_variant(half=1.0), "missing 1/2")
    expect_failure(check, _annealed_variant(noise_power=1.0), "noise is scaled by alpha")
    expect_failure(check, _annealed_variant(reverse=True), "smallest to the largest")
    expect_failure(check, _annealed_variant(generator_used=False), "generator")
    expect_failure(check, _annealed_variant(inplace=True), "in place")


# ---------------------------------------------------------------- 07


def csm_loss(s, diag):
    return (0.5 * s ** 2 + diag).sum(1).mean()


def conditional_log_prob(score_fn, x, bounds, n_nodes=256):
    lo, hi = bounds
    t = torch.linspace(lo, hi, n_nodes + 1, dtype=torch.float64)
    u = torch.cat([torch.zeros(1, dtype=t.dtype), torch.cumulative_trapezoid(score_fn(t), t)])
    log_z = u.max() + torch.log(torch.trapezoid(torch.exp(u - u.max()), t))
    nodes = lo + (x.double()[:, None] - lo) * torch.linspace(0, 1, n_nodes + 1, dtype=torch.float64)
    u_x = torch.trapezoid(score_fn(nodes.reshape(-1)).reshape(nodes.shape), nodes, dim=1)
    return u_x - log_z


def test_csm_loss():
    check = exercises.check_csm_loss
    assert check(csm_loss)
    expect_failure(check, lambda s, d: (s ** 2 + d).sum(1).mean(), "missing 1/2")
    expect_failure(check, lambda s, d: (0.5 * s ** 2 - d).sum(1).mean(), "wrong sign")
    expect_failure(check, lambda s, d: (0.5 * s ** 2 + d).mean(), "averaged over the D dimensions")
    expect_failure(check, lambda s, d: (0.5 * s ** 2 + d).sum(), "summed over the batch")
    expect_failure(check, lambda s, d: (0.5 * s ** 2).sum(1).mean(), "diagonal term is missing")
    expect_failure(check, lambda s, d: torch.tensor(csm_loss(s, d).item()), "not differentiable")
    expect_failure(check, lambda s, d: (0.5 * s ** 2 + d).sum(1), "shape")


def test_conditional_log_prob():
    check = exercises.check_conditional_log_prob
    assert check(conditional_log_prob)

    def unnormalised(score_fn, x, bounds, n_nodes=256):
        lo = bounds[0]
        nodes = lo + (x.double()[:, None] - lo) * torch.linspace(0, 1, n_nodes + 1, dtype=torch.float64)
        return torch.trapezoid(score_fn(nodes.reshape(-1)).reshape(nodes.shape), nodes, dim=1)

    def no_spacing(score_fn, x, bounds, n_nodes=256):
        lo, hi = bounds
        t = torch.linspace(lo, hi, n_nodes + 1, dtype=torch.float64)
        u = torch.cat([torch.zeros(1, dtype=t.dtype), torch.cumulative_trapezoid(score_fn(t), t)])
        return unnormalised(score_fn, x, bounds, n_nodes) - torch.logsumexp(u, 0)

    def flipped(score_fn, x, bounds, n_nodes=256):
        return conditional_log_prob(lambda t: -score_fn(t), x, bounds, n_nodes)

    expect_failure(check, unnormalised, "off by the constant")
    expect_failure(check, no_spacing, "off by the constant")
    expect_failure(check, flipped, "wrong sign")
    expect_failure(check, lambda f, x, b, n=256: conditional_log_prob(f, x, b, n)[None], "shape")


# ---------------------------------------------------------------- 13


def reverse_sde_step(score_fn, sde, x, t, dt, z):
    tt = torch.full((x.shape[0],), float(t), dtype=x.dtype)
    g = sde.diffusion(tt)[:, None].to(x)
    return x - (sde.drift(x, tt) - g ** 2 * score_fn(x, tt)) * dt + g * dt ** 0.5 * z


def _rev_variant(drift_sign=1.0, score_power=2, score_sign=1.0, noise="sqrt"):
    def step(score_fn, sde, x, t, dt, z):
        tt = torch.full((x.shape[0],), float(t), dtype=x.dtype)
        g = sde.diffusion(tt)[:, None].to(x)
        noise_scale = {"sqrt": g * dt ** 0.5, "dt": g * dt, "none": 0.0}[noise]
        return x - (drift_sign * sde.drift(x, tt) - score_sign * g ** score_power * score_fn(x, tt)) * dt + noise_scale * z
    return step


def test_reverse_sde_step():
    check = exercises.check_reverse_sde_step
    assert check(reverse_sde_step)
    expect_failure(check, _rev_variant(score_power=1), "g(t), not g(t)^2")
    expect_failure(check, _rev_variant(score_sign=-1.0), "score term has the wrong sign")
    expect_failure(check, _rev_variant(drift_sign=-1.0), "drift f has the wrong sign")
    expect_failure(check, _rev_variant(noise="dt"), "scaled by dt")
    expect_failure(check, _rev_variant(noise="none"), "noise is missing")


# ---------------------------------------------------------------- reveal


def test_reveal_prints_only_when_asked(capsys, monkeypatch):
    monkeypatch.delenv("CSM_EDU_REVEAL", raising=False)
    assert not exercises.reveal("the answer is 42")
    out = capsys.readouterr().out
    assert "42" not in out and "answer hidden" in out
    assert exercises.reveal("the answer is", 42, show=True)
    assert capsys.readouterr().out == "the answer is 42\n"
    monkeypatch.setenv("CSM_EDU_REVEAL", "1")
    assert exercises.reveal("a", "b", sep="\n")
    assert capsys.readouterr().out == "a\nb\n"
    assert not exercises.reveal("hidden", show=False)
