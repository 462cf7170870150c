"""Tests of csm_edu.diffusion against closed forms, brute force and simulation."""
import math

import pytest
import torch

from csm_edu import diffusion as D
from csm_edu import distributions as dist
from csm_edu import metrics

SDES = {"VE": lambda: D.VESDE(0.01, 8.0), "VP": lambda: D.VPSDE(0.1, 20.0)}
GAUSS = dist.Gaussian([1.0, -0.5], [[2.0, 0.6], [0.6, 0.5]])
RING = dist.ring_of_gaussians(8, 3.0, 0.3)


def gen(seed=0):
    return torch.Generator().manual_seed(seed)


# ----------------------------------------------------------------------------- forward SDE

@pytest.mark.parametrize("name", SDES)
def test_transition_kernel_solves_the_moment_odes(name):
    """For dx = f(t) x dt + g dw: da/dt = f a and d(s^2)/dt = 2 f s^2 + g^2 (finite differences)."""
    sde = SDES[name]()
    h = 1e-3
    for t in (0.05, 0.3, 0.7, 0.95):
        tt = torch.tensor([t], dtype=torch.float64)
        f = float(sde.drift(torch.ones(1, 1, dtype=torch.float64), tt))      # f(t) * 1
        a = lambda u: float(sde.mean_coef(torch.tensor(u, dtype=torch.float64)))
        s2 = lambda u: float(sde.std(torch.tensor(u, dtype=torch.float64))) ** 2
        g2 = float(sde.diffusion(torch.tensor(t, dtype=torch.float64))) ** 2
        assert (a(t + h) - a(t - h)) / (2 * h) == pytest.approx(f * a(t), rel=1e-3, abs=1e-6)
        assert (s2(t + h) - s2(t - h)) / (2 * h) == pytest.approx(2 * f * s2(t) + g2, rel=1e-3)
    assert float(sde.std(0.0)) == 0.0 and float(sde.mean_coef(0.0)) == 1.0


@pytest.mark.parametrize("name", SDES)
def test_forward_marginal_matches_euler_maruyama_simulation(name):
    """Simulate dx = f dt + g dw from N(mu, Sigma) with 400 small steps; compare mean and covariance
    with marginal_distribution = N(a mu, a^2 Sigma + s^2 I) within 5 standard errors."""
    sde, g = SDES[name](), gen(1)
    n, n_steps = 20000, 400
    x = GAUSS.sample(n, g)
    checkpoints = {100: None, 400: None}
    for i in range(n_steps):
        t = i / n_steps
        x = x + sde.drift(x, t) / n_steps + sde.diffusion(torch.tensor(t)) * math.sqrt(1 / n_steps) * torch.randn(x.shape, generator=g)
        if i + 1 in checkpoints:
            checkpoints[i + 1] = x.clone()
    for step, xt in checkpoints.items():
        exact = D.marginal_distribution(GAUSS, sde, step / n_steps)
        var = torch.diagonal(exact.cov)
        se_mean = torch.sqrt(var / n)
        assert ((xt.mean(0) - exact.mean).abs() < 5 * se_mean).all(), (step, xt.mean(0), exact.mean)
        emp_cov = torch.cov(xt.T)
        se_cov = torch.sqrt((var[:, None] * var[None, :] + exact.cov ** 2) / n)
        assert ((emp_cov - exact.cov).abs() < 5 * se_cov + 2e-3 * var.max()).all(), (step, emp_cov, exact.cov)


@pytest.mark.parametrize("name", SDES)
def test_sample_marginal_and_prior(name):
    sde, g = SDES[name](), gen(2)
    x0 = torch.tensor([[1.5, -2.0]]).repeat(20000, 1)
    mean, std = sde.marginal(x0, 0.4)
    xt = sde.sample_marginal(x0, 0.4, g)
    assert torch.allclose(xt.mean(0), mean[0], atol=5 * float(std[0]) / math.sqrt(20000))
    assert float(xt.std(0).mean()) == pytest.approx(float(std[0]), rel=0.03)
    z = sde.prior_sample(20000, 3, g)
    assert z.shape == (20000, 3)
    assert float(z.std()) == pytest.approx(sde.prior_std(), rel=0.02)
    ref = dist.Gaussian(torch.zeros(3), sde.prior_std() ** 2)
    assert torch.allclose(sde.prior_log_prob(z[:50]), ref.log_prob(z[:50]), atol=1e-4)


def test_ve_time_of_std_inverts_std():
    sde = D.VESDE(0.01, 8.0)
    t = torch.tensor([0.01, 0.2, 0.5, 0.9, 1.0])
    assert torch.allclose(sde.time_of_std(sde.std(t)), t, atol=1e-5)
    assert sde.prior_std() == pytest.approx(math.sqrt(8.0 ** 2 - 0.01 ** 2))


def test_ve_marginal_is_the_noised_distribution_of_lesson_05():
    from csm_edu.denoise import noised_distribution
    sde, x = D.VESDE(0.01, 8.0), RING.sample(20, gen(0))
    for t in (0.3, 0.8):
        want = noised_distribution(RING, float(sde.std(t)))
        assert torch.allclose(D.marginal_distribution(RING, sde, t).log_prob(x), want.log_prob(x), atol=1e-5)


def test_vp_preserves_unit_variance():
    sde = D.VPSDE()
    t = torch.linspace(0, 1, 11)
    assert torch.allclose(sde.mean_coef(t) ** 2 + sde.std(t) ** 2, torch.ones(11), atol=1e-6)


@pytest.mark.parametrize("name", SDES)
def test_marginal_distribution_of_mixture_matches_brute_force(name):
    """p_t(x) = E_{x0 ~ p_0} N(x; a x0, s^2 I), estimated with 200k draws of x0, at a few points."""
    sde, g = SDES[name](), gen(3)
    mix = dist.ring_of_gaussians(4, radius=2.0, std=0.4)
    t = {"VE": 0.6, "VP": 0.35}[name]          # s(t) = 0.55 and 0.85: kernels wide enough for Monte Carlo
    exact = D.marginal_distribution(mix, sde, t)
    a, s = float(sde.mean_coef(t)), float(sde.std(t))
    x0 = mix.sample(200000, g)
    pts = exact.sample(5, g)
    log_kernel = (-((pts[:, None, :] - a * x0[None]) ** 2).sum(-1) / (2 * s ** 2)
                  - math.log(2 * math.pi * s ** 2))
    brute = torch.logsumexp(log_kernel, 1) - math.log(len(x0))
    assert torch.allclose(exact.log_prob(pts), brute, atol=0.02)


def test_marginal_score_with_per_row_times():
    sde, g = D.VPSDE(), gen(4)
    mix = dist.ring_of_gaussians(8, 3.0, 0.3)
    x = mix.sample(6, g)
    t = torch.tensor([0.1, 0.5, 0.1, 0.9, 0.5, 0.1])
    got = D.marginal_score(mix, sde, x, t)
    for i in range(6):
        want = D.marginal_distribution(mix, sde, float(t[i])).score(x[i:i + 1])
        assert torch.allclose(got[i:i + 1], want, atol=1e-5)
    # t = 0 of the VE-SDE is the data itself
    assert torch.allclose(D.marginal_score(mix, D.VESDE(), x, 0.0), mix.score(x), atol=1e-5)


# ----------------------------------------------------------------------------- objective and network

@pytest.mark.parametrize("name", SDES)
def test_continuous_dsm_matches_closed_form_for_gaussian_data(name):
    r"""Data N(0, c^2 I): with the exact score -x / (a^2 c^2 + s^2) the loss has expectation
    E_t[ -1/2 s^2 E|grad log p_t|^2 ] = -D/2 E_t[s^2 / (a^2 c^2 + s^2)]; a score off by a factor k
    pays an extra 1/2 E_t s^2 (k-1)^2 E|grad log p_t|^2 = D/2 (k-1)^2 E_t[s^2/(a^2c^2+s^2)]."""
    sde, g = SDES[name](), gen(5)
    c, dim, n = 1.5, 2, 400000
    x = c * torch.randn(n, dim, generator=g)

    def true_score(k=1.0):
        return lambda y, t: -k * y / (sde.mean_coef(t)[:, None] ** 2 * c ** 2 + sde.std(t)[:, None] ** 2)

    tq = torch.linspace(1e-5, 1, 20001)
    ratio = (sde.std(tq) ** 2 / (sde.mean_coef(tq) ** 2 * c ** 2 + sde.std(tq) ** 2)).mean()
    expected = -dim / 2 * float(ratio)
    assert float(D.continuous_dsm(true_score(), x, sde, generator=gen(6))) == pytest.approx(expected, abs=0.01)
    worse = float(D.continuous_dsm(true_score(1.5), x, sde, generator=gen(6)))
    assert worse == pytest.approx(expected + dim / 2 * 0.25 * float(ratio), abs=0.01)


def test_time_score_net_scales_by_one_over_std():
    sde = D.VPSDE()
    torch.manual_seed(0)
    net = D.TimeScoreNet(sde, dim=3, hidden=16, depth=2, data_std=2.0)
    x = torch.randn(5, 3)
    t = torch.tensor([0.01, 0.2, 0.4, 0.8, 1.0])
    c_in = 1 / torch.sqrt(sde.mean_coef(t) ** 2 * 4.0 + sde.std(t) ** 2)
    raw = net.net(torch.cat([c_in[:, None] * x, net.embed(t)], 1))
    assert torch.allclose(net(x, t) * sde.std(t)[:, None], raw, atol=1e-5)
    assert net(x, 0.3).shape == (5, 3) and torch.allclose(net.at(0.3)(x), net(x, 0.3))


def test_time_score_net_learns_a_gaussian_score():
    """100 steps on N(mu, Sigma) bring the relative score error at t = 0.5 from ~1 to below 0.02."""
    from csm_edu.train import fit
    sde = D.VPSDE()
    data = GAUSS.sample(4000, gen(7))
    torch.manual_seed(0)
    net = D.TimeScoreNet(sde, hidden=32, depth=2)
    exact = D.marginal_distribution(GAUSS, sde, 0.5)
    xt = exact.sample(2000, gen(8))
    before = metrics.fisher_divergence(net.at(0.5), exact, xt)
    fit(net, lambda m, xb: D.continuous_dsm(m, xb, sde), data, steps=100, batch_size=128, lr=3e-3, progress=False)
    after = metrics.fisher_divergence(net.at(0.5), exact, xt)
    scale = 0.5 * float((exact.score(xt) ** 2).sum(1).mean())
    assert after < 0.02 * scale and before > 0.5 * scale      # measured: 0.004 and 0.99 of the scale


# ----------------------------------------------------------------------------- samplers

MMD_BANDWIDTH = 0.5   # about the mode width: sensitive to blurred or re-weighted modes
MMD_BOUND = 0.003     # two independent true samples of 1000 give |MMD^2| < 0.0015 (20 repeats)


def _sample(kind, sde, n_steps, g):
    score = D.marginal_score_fn(RING, sde)
    if kind == "reverse_sde":
        return D.reverse_sde_sample(score, sde, n=1000, dim=2, steps=n_steps, generator=g)
    if kind == "predictor_corrector":
        return D.predictor_corrector_sample(score, sde, n=1000, dim=2, steps=n_steps // 2, generator=g)
    return D.probability_flow_sample(score, sde, n=1000, dim=2, steps=n_steps // 4, generator=g)


@pytest.mark.parametrize("kind", ["reverse_sde", "predictor_corrector", "probability_flow"])
@pytest.mark.parametrize("name", SDES)
def test_samplers_with_true_score_reproduce_the_mixture(kind, name):
    g = gen(9)
    sde = SDES[name]()
    samples = _sample(kind, sde, 100, g)
    reference = RING.sample(1000, g)
    baseline = metrics.mmd(RING.sample(1000, g), reference, MMD_BANDWIDTH)
    value = metrics.mmd(samples, reference, MMD_BANDWIDTH)
    assert abs(baseline) < MMD_BOUND
    assert value < MMD_BOUND, (value, baseline)


@pytest.mark.parametrize("name", SDES)
def test_too_coarse_reverse_sde_fails_the_same_bound(name):
    """The bound can fail: 5 Euler-Maruyama steps leave the modes blurred."""
    g = gen(10)
    samples = _sample("reverse_sde", SDES[name](), 5, g)
    assert metrics.mmd(samples, RING.sample(1000, g), MMD_BANDWIDTH) > 3 * MMD_BOUND


def test_annealed_langevin_on_the_ve_score_via_time_of_std():
    """NCSN view of a VE score: s(x, sigma) = s(x, t(sigma)). With the true score, annealed Langevin
    from the VE prior reproduces the ring."""
    from csm_edu.objectives import geometric_sigmas
    from csm_edu.sampling import annealed_langevin
    g, sde = gen(18), D.VESDE(0.01, 8.0)
    score = D.marginal_score_fn(RING, sde)
    sigmas = geometric_sigmas(8.0, 0.01, 20)
    x = annealed_langevin(lambda y, sigma: score(y, sde.time_of_std(sigma)), sde.prior_sample(1000, 2, g), sigmas,
                          steps_per_sigma=20, step_size=0.1 * 0.01 ** 2, generator=g)
    assert metrics.mmd(x, RING.sample(1000, g), MMD_BANDWIDTH) < MMD_BOUND


def test_trajectories_and_determinism():
    sde = D.VPSDE()
    score = D.marginal_score_fn(RING, sde)
    x, traj = D.reverse_sde_sample(score, sde, n=7, dim=2, steps=20, generator=gen(0), record_every=5)
    assert x.shape == (7, 2) and traj.shape == (5, 7, 2)
    x, traj = D.predictor_corrector_sample(score, sde, n=7, dim=2, steps=10, generator=gen(0), record_every=10)
    assert traj.shape == (2, 7, 2)
    z = sde.prior_sample(7, 2, gen(1))
    a = D.probability_flow_sample(score, sde, steps=10, x0=z)
    b, traj = D.probability_flow_sample(score, sde, steps=10, x0=z, record_every=1, method="rk4")
    assert torch.allclose(a, D.probability_flow_sample(score, sde, steps=10, x0=z))
    assert traj.shape == (11, 7, 2) and torch.allclose(traj[0], z)


def test_exploding_score_raises_sampler_diverged():
    from csm_edu.sampling import SamplerDivergedError
    sde = D.VESDE()
    blow_up = lambda x, t: 1e4 * x                                   # noqa: E731
    with pytest.raises(SamplerDivergedError, match="Increase steps"):
        D.reverse_sde_sample(blow_up, sde, n=10, dim=2, steps=20, generator=gen(0))
    with pytest.raises(SamplerDivergedError):
        D.probability_flow_sample(blow_up, sde, n=10, dim=2, steps=20, generator=gen(0))


# ----------------------------------------------------------------------------- ODE log-likelihood

@pytest.mark.parametrize("method,n_steps", [("heun", 50), ("rk4", 25)])
def test_ode_log_likelihood_of_gaussian_exact_divergence(method, n_steps):
    """A centred correlated Gaussian driven by its exact noised score under the VP-SDE: every point
    within 1e-2 nats of the closed form (the prior N(0, I) vs the true p_1 costs ~1e-4 here)."""
    target = dist.Gaussian([0.0, 0.0], [[2.0, 0.6], [0.6, 0.5]])
    sde = D.VPSDE()
    x = target.sample(300, gen(11))
    ll = D.ode_log_likelihood(D.marginal_score_fn(target, sde), sde, x, steps=n_steps, method=method)
    assert (ll - target.log_prob(x)).abs().max() < 1e-2


@pytest.mark.parametrize("name,sde,method", [("VP", D.VPSDE(), "heun"), ("VE", D.VESDE(0.01, 50.0), "rk4")])
def test_ode_log_likelihood_of_offset_gaussian_on_average(name, sde, method):
    """With a mean away from 0 the prior mismatch grows (|x_1| |a(1) mu| / s(1)^2 per point) but
    averages out: the mean error stays below 1e-2 nats. The VE flow spans sigma from 0.01 to 50
    and needs RK4 for that (Heun with 50 steps is 0.03 nats off)."""
    x = GAUSS.sample(300, gen(12))
    ll = D.ode_log_likelihood(D.marginal_score_fn(GAUSS, sde), sde, x, steps=50, method=method)
    assert abs(float((ll - GAUSS.log_prob(x)).mean())) < 1e-2


def test_ode_log_likelihood_of_mixture_exact_divergence():
    sde = D.VPSDE()
    x = RING.sample(200, gen(13))
    ll = D.ode_log_likelihood(D.marginal_score_fn(RING, sde), sde, x, steps=50)
    assert abs(float((ll - RING.log_prob(x)).mean())) < 0.02


@pytest.mark.parametrize("projection", ["gaussian", "rademacher"])
def test_ode_log_likelihood_hutchinson_is_unbiased_on_average(projection):
    """Hutchinson's divergence: single points are noisy, the mean over 300 points x 8 calls is
    within 0.06 nats of the closed form (its standard error is about 0.015)."""
    sde = D.VPSDE()
    score = D.marginal_score_fn(GAUSS, sde)
    x = GAUSS.sample(300, gen(14))
    g = gen(15)
    errors = [float((D.ode_log_likelihood(score, sde, x, steps=25, exact_divergence=False,
                                          projection=projection, generator=g) - GAUSS.log_prob(x)).mean())
              for _ in range(8)]
    assert abs(sum(errors) / len(errors)) < 0.06


def test_ode_log_likelihood_in_higher_dimension_with_hutchinson():
    target = dist.correlated_gaussian(dim=10, rho=0.5)
    sde = D.VPSDE()
    x = target.sample(200, gen(16))
    score = D.marginal_score_fn(target, sde)
    exact = D.ode_log_likelihood(score, sde, x, steps=25)
    assert abs(float((exact - target.log_prob(x)).mean())) < 1e-2
    hutch = D.ode_log_likelihood(score, sde, x, steps=25, exact_divergence=False, projection="rademacher",
                                 generator=gen(17))
    assert abs(float((hutch - target.log_prob(x)).mean())) < 0.3


# ----------------------------------------------------------------------------- bad input

def test_bad_input_raises_clear_value_errors():
    with pytest.raises(ValueError, match="sigma_min"):
        D.VESDE(1.0, 0.5)
    with pytest.raises(ValueError, match="beta_min"):
        D.VPSDE(5.0, 1.0)
    sde = D.VPSDE()
    with pytest.raises(ValueError, match=r"t must lie in \[0, 1\]"):
        sde.marginal(torch.zeros(3, 2), 1.5)
    with pytest.raises(ValueError, match="t must lie"):
        D.marginal_distribution(RING, sde, -0.1)
    with pytest.raises(ValueError, match="method"):
        D.probability_flow_sample(lambda x, t: x, sde, n=5, dim=2, steps=3, method="midpoint")
    with pytest.raises(ValueError, match="sde must be"):
        D.reverse_sde_sample(lambda x, t: x, "vp", n=5, dim=2, steps=3)
    with pytest.raises(ValueError, match="sde must be"):
        D.TimeScoreNet("vp")
    with pytest.raises(ValueError, match="projection"):
        D.ode_log_likelihood(lambda x, t: x, sde, torch.zeros(3, 2), exact_divergence=False, projection="sphere")
    with pytest.raises(ValueError, match="target must be"):
        D.marginal_distribution(dist.Banana(), sde, 0.5)
    with pytest.raises(ValueError, match="eps"):
        D.continuous_dsm(lambda x, t: x, torch.zeros(3, 2), sde, eps=1.5)


# ----------------------------------------------------------------------------- progress bars

def _progress_runs():
    sde = SDES["VE"]()
    score = D.marginal_score_fn(GAUSS, sde)
    x = GAUSS.sample(20, generator=gen(9))
    return {
        "reverse SDE": lambda **kw: D.reverse_sde_sample(score, sde, n=50, steps=40, generator=gen(1), record_every=10, **kw),
        "predictor-corrector": lambda **kw: D.predictor_corrector_sample(score, sde, n=50, steps=40, generator=gen(1), **kw),
        "probability-flow ODE": lambda **kw: D.probability_flow_sample(score, sde, n=50, steps=40, generator=gen(1), **kw),
        "ODE log-likelihood": lambda **kw: D.ode_log_likelihood(score, sde, x, steps=40, exact_divergence=False,
                                                                generator=gen(1), **kw),
    }


@pytest.mark.parametrize("label", ["reverse SDE", "predictor-corrector", "probability-flow ODE", "ODE log-likelihood"])
def test_progress_bar_over_the_time_steps_changes_nothing(capsys, label):
    run = _progress_runs()[label]
    quiet = run()
    assert capsys.readouterr().err == ""                                   # off by default: silent
    shown = run(progress=True)
    err = capsys.readouterr().err
    assert label in err and "/40" in err                                   # a tqdm bar over the 40 steps
    for a, b in zip(quiet if isinstance(quiet, tuple) else (quiet,), shown if isinstance(shown, tuple) else (shown,)):
        assert torch.equal(a, b)                                           # same draws, same samples


def test_every_sampler_takes_a_keyword_only_progress_option():
    import inspect
    for fn in (D.reverse_sde_sample, D.predictor_corrector_sample, D.probability_flow_sample, D.ode_log_likelihood):
        param = inspect.signature(fn).parameters["progress"]
        assert param.kind is inspect.Parameter.KEYWORD_ONLY and param.default is False, fn.__name__
