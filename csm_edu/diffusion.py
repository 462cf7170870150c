r"""From score matching to diffusion: SDEs, continuous-time DSM, reverse samplers, probability flow.

Song et al. (2021), "Score-based generative modeling through stochastic differential equations".
A forward SDE on t in [0, T] (T = 1 here) turns data into noise,

.. math:: dx = f(x, t)\,dt + g(t)\,dw,

and, given the score of every marginal p_t, the reverse-time SDE and the probability-flow ODE

.. math:: dx = \bigl[f(x,t) - g(t)^2\,\nabla_x\log p_t(x)\bigr]dt + g(t)\,d\bar w, \qquad
          \frac{dx}{dt} = f(x,t) - \tfrac12 g(t)^2\,\nabla_x\log p_t(x)

run it backwards (from t = T to 0) with the same marginals. Both SDEs here are linear, so
p_t(x_t | x_0) = N(x_t; a(t) x_0, s(t)^2 I) is known in closed form; that is what makes training
(:func:`continuous_dsm`) and the exact noised scores of Gaussian mixtures
(:func:`marginal_distribution`) possible.

Score functions take ``(x, t)``: ``x`` of shape (n, D) and ``t`` a float or a tensor of shape (n,);
they return (n, D). :class:`TimeScoreNet` is one, ``marginal_score_fn(target, sde)`` another.
"""
import math
from typing import Callable, Optional, Union

import torch
from torch import nn

from . import checks
from .distributions import LOG_2PI, Gaussian, GaussianMixture
from .models.mlp import mlp
from .objectives import random_projections
from .sampling import _DivergenceWatch, _StepBar

TimeScoreFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]

ODE_METHODS = ("euler", "heun", "rk4")


def _times(t, x: torch.Tensor) -> torch.Tensor:
    """``t`` as a tensor of shape (n,) on x's device and dtype, checked to lie in [0, 1]."""
    t = torch.as_tensor(t, dtype=x.dtype, device=x.device)
    if t.dim() == 0:
        t = t.expand(x.shape[0])
    t = t.reshape(-1)
    if t.numel() != x.shape[0]:
        raise ValueError(f"t must be a float or have one entry per row of x ({x.shape[0]}), got {t.numel()}")
    if not torch.isfinite(t).all() or (t < 0).any() or (t > 1).any():
        raise ValueError("t must lie in [0, 1] (T = 1); clip or rescale the times")
    return t


def _as_float(t) -> torch.Tensor:
    """``t`` as a float tensor (float32 unless it already is a float64 tensor)."""
    t = torch.as_tensor(t)
    return t if t.dtype == torch.float64 else t.float()


class SDE:
    r"""A linear forward SDE dx = f(t) x dt + g(t) dw on t in [0, T], T = 1.

    Subclasses give ``mean_coef(t)`` = a(t) and ``std(t)`` = s(t) of the transition kernel
    p_t(x_t | x_0) = N(a(t) x_0, s(t)^2 I), ``drift`` and ``diffusion``, and the prior p_T.
    ``t`` is a float or a tensor; tensors of the same shape come back.
    """

    T: float = 1.0

    def mean_coef(self, t):
        raise NotImplementedError

    def std(self, t):
        raise NotImplementedError

    def drift(self, x: torch.Tensor, t) -> torch.Tensor:
        raise NotImplementedError

    def diffusion(self, t):
        raise NotImplementedError

    def prior_std(self) -> float:
        raise NotImplementedError

    def marginal(self, x0: torch.Tensor, t):
        """Mean a(t) x_0 (n, D) and standard deviation s(t) (n, 1) of p_t(x_t | x_0)."""
        x0 = checks.as_batch(x0, "x0")
        t = _times(t, x0)
        return self.mean_coef(t)[:, None] * x0, self.std(t)[:, None]

    def sample_marginal(self, x0: torch.Tensor, t, generator: Optional[torch.Generator] = None) -> torch.Tensor:
        """One draw x_t = a(t) x_0 + s(t) z, z ~ N(0, I), per row of x0."""
        mean, std = self.marginal(x0, t)
        z = torch.randn(mean.shape, generator=generator, dtype=mean.dtype).to(mean.device)
        return mean + std * z

    def prior_sample(self, n: int, dim: int, generator: Optional[torch.Generator] = None,
                     device=None) -> torch.Tensor:
        """n draws of the prior p_T = N(0, prior_std^2 I) in ``dim`` dimensions."""
        n = checks.positive_int(n, "n")
        dim = checks.positive_int(dim, "dim")
        return (self.prior_std() * torch.randn(n, dim, generator=generator)).to(device)

    def prior_log_prob(self, x: torch.Tensor) -> torch.Tensor:
        """log N(x; 0, prior_std^2 I), shape (n,)."""
        x = checks.as_batch(x, "x")
        var = self.prior_std() ** 2
        return -0.5 * ((x ** 2).sum(1) / var + x.shape[1] * (LOG_2PI + math.log(var)))


class VESDE(SDE):
    r"""Variance-exploding SDE (the continuous limit of NCSN's noise levels).

    .. math:: dx = \sqrt{\frac{d\,\sigma(t)^2}{dt}}\,dw
              = \sigma(t)\sqrt{2\log(\sigma_{max}/\sigma_{min})}\,dw,
              \qquad \sigma(t) = \sigma_{min}\,(\sigma_{max}/\sigma_{min})^t.

    No drift, so a(t) = 1 and s(t)^2 = sigma(t)^2 - sigma_min^2 (exactly; Song et al. use the
    approximation s(t) ~ sigma(t)). The prior is N(0, s(1)^2 I): choose sigma_max about the
    largest distance between data points, so that p_1 forgets where the data were.
    """

    def __init__(self, sigma_min: float = 0.01, sigma_max: float = 10.0):
        self.sigma_min = checks.positive(sigma_min, "sigma_min")
        self.sigma_max = checks.positive(sigma_max, "sigma_max")
        if self.sigma_min >= self.sigma_max:
            raise ValueError(f"sigma_min ({sigma_min}) must be < sigma_max ({sigma_max}); swap them")
        self._log_ratio = math.log(self.sigma_max / self.sigma_min)

    def sigma(self, t):
        """sigma(t) = sigma_min (sigma_max / sigma_min)^t."""
        return self.sigma_min * torch.exp(_as_float(t) * self._log_ratio)

    def mean_coef(self, t):
        return torch.ones_like(_as_float(t))

    def std(self, t):
        t = _as_float(t)
        # sigma(t)^2 - sigma_min^2 = sigma_min^2 (exp(2 t log r) - 1), written with expm1 for small t
        return self.sigma_min * torch.sqrt(torch.expm1(2 * t * self._log_ratio))

    def drift(self, x, t):
        return torch.zeros_like(x)

    def diffusion(self, t):
        return self.sigma(t) * math.sqrt(2 * self._log_ratio)

    def prior_std(self) -> float:
        return float(self.std(1.0))

    def time_of_std(self, std):
        """The time t at which s(t) = std: t = log(sqrt(std^2 + sigma_min^2) / sigma_min) / log(r),
        clamped to [0, 1]. It turns the VE score net into NCSN's noise-conditional s(x, sigma)."""
        std = _as_float(std)
        t = torch.log(torch.sqrt(std ** 2 + self.sigma_min ** 2) / self.sigma_min) / self._log_ratio
        return t.clamp(0.0, 1.0)

    def __repr__(self):
        return f"VESDE(sigma_min={self.sigma_min:g}, sigma_max={self.sigma_max:g})"


class VPSDE(SDE):
    r"""Variance-preserving SDE (the continuous limit of DDPM).

    .. math:: dx = -\tfrac12\beta(t)\,x\,dt + \sqrt{\beta(t)}\,dw,
              \qquad \beta(t) = \beta_{min} + t(\beta_{max} - \beta_{min}).

    With B(t) = int_0^t beta = beta_min t + (beta_max - beta_min) t^2 / 2 the kernel has
    a(t) = exp(-B(t)/2) and s(t)^2 = 1 - exp(-B(t)); unit-variance data keep unit variance.
    The prior is N(0, I).
    """

    def __init__(self, beta_min: float = 0.1, beta_max: float = 20.0):
        self.beta_min = checks.positive(beta_min, "beta_min")
        self.beta_max = checks.positive(beta_max, "beta_max")
        if self.beta_min > self.beta_max:
            raise ValueError(f"beta_min ({beta_min}) must not exceed beta_max ({beta_max}); swap them")

    def beta(self, t):
        return self.beta_min + _as_float(t) * (self.beta_max - self.beta_min)

    def integrated_beta(self, t):
        t = _as_float(t)
        return self.beta_min * t + 0.5 * (self.beta_max - self.beta_min) * t ** 2

    def mean_coef(self, t):
        return torch.exp(-0.5 * self.integrated_beta(t))

    def std(self, t):
        return torch.sqrt(-torch.expm1(-self.integrated_beta(t)))

    def drift(self, x, t):
        t = _times(t, x)
        return -0.5 * self.beta(t).to(x)[:, None] * x

    def diffusion(self, t):
        return torch.sqrt(self.beta(t))

    def prior_std(self) -> float:
        return 1.0

    def __repr__(self):
        return f"VPSDE(beta_min={self.beta_min:g}, beta_max={self.beta_max:g})"


# ----------------------------------------------------------------------------- exact noised targets

def marginal_distribution(target: Union[Gaussian, GaussianMixture], sde: SDE, t: float):
    r"""The marginal p_t of the forward SDE started from a Gaussian or a Gaussian mixture.

    A linear SDE maps N(mu, Sigma) to N(a mu, a^2 Sigma + s^2 I), so a mixture stays a mixture
    with the same weights:

    .. math:: p_t(x) = \sum_k w_k\,N\bigl(x;\ a(t)\mu_k,\ a(t)^2\Sigma_k + s(t)^2 I\bigr).

    Returns an object of the same class as ``target`` (a :class:`Gaussian` or a
    :class:`GaussianMixture`) whose ``score`` is the exact noised score at time ``t``. For the
    VE-SDE (a = 1) this is :func:`csm_edu.denoise.noised_distribution` at sigma = s(t).
    """
    t = float(t)
    if not 0.0 <= t <= 1.0:
        raise ValueError(f"t must lie in [0, 1], got {t}")
    a = float(sde.mean_coef(t))
    s2 = float(sde.std(t)) ** 2
    eye = torch.eye(target.dim, dtype=torch.float64)
    if isinstance(target, GaussianMixture):
        covs = torch.stack([a ** 2 * c.cov.double() + s2 * eye for c in target.components])
        return GaussianMixture(a * target.means.double(), covs, target.weights.double())
    if isinstance(target, Gaussian):
        return Gaussian(a * target.mean.double(), a ** 2 * target.cov.double() + s2 * eye)
    raise ValueError(f"target must be a distributions.Gaussian or GaussianMixture, got {type(target).__name__}")


def marginal_score(target, sde: SDE, x: torch.Tensor, t) -> torch.Tensor:
    r"""Exact score grad_x log p_t(x) of a Gaussian (mixture) pushed through the forward SDE.

    ``t`` is a float or a tensor (n,); rows that share a time share one
    :func:`marginal_distribution` (so this is meant for a few distinct times, as in a sampler).
    Differentiable in x (used by :func:`ode_log_likelihood` with the true score).
    """
    x = checks.as_batch(x, "x", dim=target.dim)
    t = _times(t, x)
    times = torch.unique(t)
    if len(times) == 1:
        return marginal_distribution(target, sde, float(times[0])).score(x)
    out = torch.empty_like(x)
    for value in times.tolist():
        rows = t == value
        out[rows] = marginal_distribution(target, sde, value).score(x[rows])
    return out


def marginal_score_fn(target, sde: SDE) -> TimeScoreFn:
    """The exact time-dependent score ``(x, t) -> grad log p_t(x)`` of ``target`` under ``sde``."""
    return lambda x, t: marginal_score(target, sde, x, t)


# ----------------------------------------------------------------------------- the score network

class TimeScoreNet(nn.Module):
    r"""A time-conditional score network s_theta(x, t) ~ grad_x log p_t(x).

    The time enters through a fixed sinusoidal embedding
    e(t) = [sin(2 pi f_k t), cos(2 pi f_k t)]_{k=1..K} with frequencies f_k geometric in
    [1/2, ``max_frequency``] (slow features: with frequencies up to 8 the same training on the
    8-mode ring converged much more slowly), concatenated with the scaled input x / sqrt(a(t)^2 d^2 + s(t)^2),
    d = ``data_std``, which has about unit variance at every t (the VE-SDE's x_t grows to
    sigma_max; Karras et al. 2022 call this c_in). As for the noise-conditional net (which divides
    by sigma), the output is divided by s(t), the standard deviation of p_t(x_t | x_0): the true
    score of the noised data scales like 1/s(t), so the network's raw output (an estimate of
    -z, the noise) stays O(1) at every t.
    """

    def __init__(self, sde: SDE, *, dim: int = 2, hidden: int = 128, depth: int = 3,
                 n_frequencies: int = 8, max_frequency: float = 1.0, data_std: float = 1.0):
        super().__init__()
        if not isinstance(sde, SDE):
            raise ValueError(f"sde must be a VESDE or VPSDE, got {type(sde).__name__}")
        self.sde = sde
        self.data_std = checks.positive(data_std, "data_std")
        self.dim = checks.positive_int(dim, "dim")
        n_frequencies = checks.positive_int(n_frequencies, "n_frequencies")
        max_frequency = checks.positive(max_frequency, "max_frequency")
        freqs = torch.logspace(math.log10(0.5), math.log10(max(max_frequency, 0.5)), n_frequencies)
        self.register_buffer("frequencies", 2 * math.pi * freqs)
        self.net = mlp([dim + 2 * n_frequencies] + [checks.positive_int(hidden, "hidden")]
                       * checks.positive_int(depth, "depth") + [dim])

    def embed(self, t: torch.Tensor) -> torch.Tensor:
        angles = t[:, None] * self.frequencies
        return torch.cat([torch.sin(angles), torch.cos(angles)], 1)

    def forward(self, x: torch.Tensor, t) -> torch.Tensor:
        t = _times(t, x)
        std = self.sde.std(t).to(x)[:, None]
        c_in = torch.rsqrt(self.sde.mean_coef(t).to(x)[:, None] ** 2 * self.data_std ** 2 + std ** 2)
        return self.net(torch.cat([c_in * x, self.embed(t)], 1)) / std

    def score(self, x: torch.Tensor, t) -> torch.Tensor:
        return self(x, t)

    def at(self, t: float):
        """The score function x -> s(x, t) at one fixed time."""
        return lambda x: self(x, t)


# ----------------------------------------------------------------------------- training objective

def continuous_dsm(score_fn: TimeScoreFn, x: torch.Tensor, sde: SDE, *, eps: float = 1e-5,
                   generator: Optional[torch.Generator] = None) -> torch.Tensor:
    r"""Continuous-time denoising score matching with lambda(t) = s(t)^2 and t ~ U(eps, 1).

    x_t = a(t) x_0 + s(t) z; the regression target grad log p_t(x_t | x_0) = -z / s(t). The
    textbook loss (1/2) s(t)^2 |s_theta(x_t, t) + z / s(t)|^2 loses the data constant |z|^2 / 2
    (mean D/2) exactly as :func:`csm_edu.objectives.multiscale_dsm` does:

    .. math:: \frac1n\sum_i \Bigl[\tfrac12\|s(t_i)\,s_\theta(x_{t_i}, t_i)\|^2
              + s(t_i)\,s_\theta(x_{t_i}, t_i)^\top z_i\Bigr].

    By Stein's lemma its expectation is E_t s(t)^2 [ (1/2) E_{p_t}|s_theta - grad log p_t|^2
    - (1/2) E_{p_t}|grad log p_t|^2 ]: the lambda-weighted Fisher divergence to the true noised
    scores minus a data constant, so its minimiser is the score of p_t at every t. ``eps`` > 0
    keeps t away from 0, where s(t) -> 0.
    """
    x = checks.as_batch(x, "x")
    eps = checks.positive(eps, "eps")
    if eps >= 1:
        raise ValueError(f"eps must be < 1 (the smallest training time), got {eps}")
    t = eps + (1 - eps) * torch.rand(x.shape[0], generator=generator, dtype=x.dtype).to(x.device)
    z = torch.randn(x.shape, generator=generator, dtype=x.dtype).to(x.device)
    std = sde.std(t).to(x)[:, None]
    x_t = sde.mean_coef(t).to(x)[:, None] * x + std * z
    s = checks.score_output(score_fn(x_t, t), x)
    scaled = std * s
    return (0.5 * (scaled ** 2).sum(1) + (scaled * z).sum(1)).mean()


# ----------------------------------------------------------------------------- samplers

def _watch(where: str, steps: int) -> _DivergenceWatch:
    """The samplers' divergence check (:class:`csm_edu.sampling._DivergenceWatch`) with the fix a reverse process needs."""
    return _DivergenceWatch(where, hint=f"Increase steps (now {steps}), e.g. to {2 * steps}, or check the score model.")


def _setup(sde, n, dim, steps, eps, record_every, x0, generator, device):
    if not isinstance(sde, SDE):
        raise ValueError(f"sde must be a VESDE or VPSDE, got {type(sde).__name__}")
    steps = checks.positive_int(steps, "steps")
    eps = checks.positive(eps, "eps")
    if eps >= 1:
        raise ValueError(f"eps must be < 1 (the final time of the reverse process), got {eps}")
    if record_every is not None:
        record_every = checks.positive_int(record_every, "record_every")
    if x0 is None:
        x = sde.prior_sample(n, dim, generator, device)
    else:
        x = checks.as_batch(x0, "x0").detach().clone()
    times = torch.linspace(sde.T, eps, steps + 1)
    return x, times, steps, record_every


def _noise(x, generator):
    return torch.randn(x.shape, generator=generator, dtype=x.dtype).to(x.device)


def _g(sde, t, x):
    return sde.diffusion(torch.full((x.shape[0],), float(t))).to(x)[:, None]


def _reverse_em_step(score_fn, sde, x, t, dt, generator):
    """One Euler-Maruyama step of the reverse SDE from t to t - dt (dt > 0). Returns (x, mean)."""
    tt = torch.full((x.shape[0],), float(t), dtype=x.dtype, device=x.device)
    g = _g(sde, t, x)
    mean = x - (sde.drift(x, tt) - g ** 2 * score_fn(x, tt)) * dt
    return mean + g * math.sqrt(dt) * _noise(x, generator), mean


def reverse_sde_sample(score_fn: TimeScoreFn, sde: SDE, *, n: int = 1000, dim: int = 2, steps: int = 500,
                       eps: float = 1e-3, generator: Optional[torch.Generator] = None,
                       record_every: Optional[int] = None, x0: Optional[torch.Tensor] = None,
                       device=None, progress: bool = False):
    r"""Sample by Euler-Maruyama on the reverse-time SDE, from t = 1 down to t = eps.

    On the grid t_0 = 1 > t_1 > ... > t_N = eps with dt = (1 - eps)/N,

    .. math:: x_{i+1} = x_i - \bigl[f(x_i,t_i) - g(t_i)^2 s(x_i,t_i)\bigr]\,dt + g(t_i)\sqrt{dt}\,z_i.

    The last step returns its mean (no fresh noise), as in Song et al. Starts from
    ``x0`` or from n prior draws. Returns samples (n, D), or ``(samples, trajectory)`` with
    ``record_every=k`` (trajectory (T, n, D): the start and every k-th state). ``progress=True``
    shows a tqdm bar over the time steps with the current time t (the samples do not change).
    """
    return _reverse_time_loop(score_fn, sde, n, dim, steps, eps, generator, record_every, x0, device,
                              snr=None, n_corrector=0, label="reverse SDE", progress=progress)


def predictor_corrector_sample(score_fn: TimeScoreFn, sde: SDE, *, n: int = 1000, dim: int = 2,
                               steps: int = 500, snr: float = 0.16, n_corrector: int = 1,
                               eps: float = 1e-3, generator: Optional[torch.Generator] = None,
                               record_every: Optional[int] = None, x0: Optional[torch.Tensor] = None,
                               device=None, progress: bool = False):
    r"""Predictor-corrector sampling (Song et al. 2021, Algorithms 2-3).

    At each t_i, ``n_corrector`` Langevin steps on p_{t_i} (the corrector) are followed by one
    reverse-SDE Euler-Maruyama step (the predictor, as in :func:`reverse_sde_sample`). The
    Langevin step size is set from the target signal-to-noise ratio r = ``snr``:

    .. math:: \epsilon_i = 2\,\bigl(r\,\|z\| / \|s(x, t_i)\|\bigr)^2, \qquad
              x \leftarrow x + \epsilon_i\,s(x, t_i) + \sqrt{2\epsilon_i}\,z,

    with the norms averaged over the batch. Returns like :func:`reverse_sde_sample`; ``progress``
    as there.
    """
    snr = checks.positive(snr, "snr")
    n_corrector = checks.positive_int(n_corrector, "n_corrector", minimum=0)
    return _reverse_time_loop(score_fn, sde, n, dim, steps, eps, generator, record_every, x0, device,
                              snr=snr, n_corrector=n_corrector, label="predictor-corrector", progress=progress)


def _time_bar(progress: bool, steps: int, label: str, times: torch.Tensor, step: list) -> _StepBar:
    """The samplers' optional tqdm bar (:class:`csm_edu.sampling._StepBar`) over the time steps, showing the current t.

    ``step`` is a one-element list holding the index of the step just done (read when the bar redraws).
    """
    return _StepBar(progress, steps, label, postfix=lambda: f"t {float(times[step[0]]):.3f}")


def _reverse_time_loop(score_fn, sde, n, dim, steps, eps, generator, record_every, x0, device,
                       snr, n_corrector, label, progress=False):
    """From t = 1 to eps: ``n_corrector`` Langevin corrector steps then one reverse Euler-Maruyama step per t_i.

    The last step returns the mean of its transition (no noise), as in Song et al. (2021).
    """
    x, times, steps, record_every = _setup(sde, n, dim, steps, eps, record_every, x0, generator, device)
    trajectory = [x.clone()] if record_every else None
    watch = _watch(label, steps)
    done = [0]
    with torch.no_grad(), _time_bar(progress, steps, label, times, done) as bar:
        for i in range(steps):
            tt = torch.full((x.shape[0],), float(times[i]), dtype=x.dtype, device=x.device)
            for _ in range(n_corrector):
                grad = score_fn(x, tt)
                z = _noise(x, generator)
                grad_norm = grad.norm(dim=1).mean().clamp_min(1e-12)
                step = 2 * (snr * z.norm(dim=1).mean() / grad_norm) ** 2
                x = x + step * grad + torch.sqrt(2 * step) * z
            dt = float(times[i] - times[i + 1])
            x, mean = _reverse_em_step(score_fn, sde, x, times[i], dt, generator)
            if i == steps - 1:
                x = mean
            watch.update(x, i + 1)
            done[0] = i + 1
            bar.update()
            if record_every and (i + 1) % record_every == 0:
                trajectory.append(x.clone())
        watch.close(steps)
    return (x, torch.stack(trajectory)) if record_every else x


def probability_flow_velocity(score_fn: TimeScoreFn, sde: SDE, x: torch.Tensor, t) -> torch.Tensor:
    r"""The probability-flow ODE's velocity v(x, t) = f(x, t) - (1/2) g(t)^2 s(x, t)."""
    t = _times(t, x)
    g = sde.diffusion(t).to(x)[:, None]
    return sde.drift(x, t) - 0.5 * g ** 2 * score_fn(x, t)


def _ode_step(velocity, x, t, dt, method):
    """One step of dx/dt = velocity(x, t) from t to t + dt (dt may be negative)."""
    if method == "euler":
        return x + dt * velocity(x, t)
    if method == "heun":
        k1 = velocity(x, t)
        k2 = velocity(x + dt * k1, t + dt)
        return x + 0.5 * dt * (k1 + k2)
    k1 = velocity(x, t)
    k2 = velocity(x + 0.5 * dt * k1, t + 0.5 * dt)
    k3 = velocity(x + 0.5 * dt * k2, t + 0.5 * dt)
    k4 = velocity(x + dt * k3, t + dt)
    return x + dt / 6 * (k1 + 2 * k2 + 2 * k3 + k4)


def probability_flow_sample(score_fn: TimeScoreFn, sde: SDE, *, n: int = 1000, dim: int = 2, steps: int = 100,
                            method: str = "heun", eps: float = 1e-3, generator: Optional[torch.Generator] = None,
                            record_every: Optional[int] = None, x0: Optional[torch.Tensor] = None,
                            device=None, progress: bool = False):
    r"""Sample by integrating the probability-flow ODE dx/dt = f - (1/2) g^2 s from t = 1 to eps.

    Deterministic given the prior draw (the only randomness), so the same x0 always lands on
    the same sample: the ODE is an invertible map from noise to data. ``method`` is 'euler'
    (1 score evaluation a step), 'heun' (2, second order) or 'rk4' (4, fourth order).
    Returns like :func:`reverse_sde_sample`; ``progress`` as there.
    """
    checks.one_of(method, "method", ODE_METHODS)
    x, times, steps, record_every = _setup(sde, n, dim, steps, eps, record_every, x0, generator, device)
    trajectory = [x.clone()] if record_every else None

    def velocity(y, t):
        return probability_flow_velocity(score_fn, sde, y, float(t))

    watch = _watch("probability-flow ODE", steps)
    done = [0]
    with torch.no_grad(), _time_bar(progress, steps, "probability-flow ODE", times, done) as bar:
        for i in range(steps):
            x = _ode_step(velocity, x, float(times[i]), float(times[i + 1] - times[i]), method)
            watch.update(x, i + 1)
            done[0] = i + 1
            bar.update()
            if record_every and (i + 1) % record_every == 0:
                trajectory.append(x.clone())
        watch.close(steps)
    return (x, torch.stack(trajectory)) if record_every else x


def _divergence(velocity, x, t, projection: Optional[torch.Tensor]):
    """velocity(x, t) and its divergence: exact (D backward passes) or Hutchinson v^T (dv/dx) v."""
    with torch.enable_grad():
        x = x.detach().requires_grad_(True)
        v = velocity(x, t)
        if projection is None:
            div = torch.zeros(x.shape[0], dtype=x.dtype, device=x.device)
            for d in range(x.shape[1]):
                (grad_d,) = torch.autograd.grad(v[:, d].sum(), x, retain_graph=d < x.shape[1] - 1)
                div = div + grad_d[:, d]
        else:
            (grad_vp,) = torch.autograd.grad((v * projection).sum(), x)
            div = (grad_vp * projection).sum(1)
    return v.detach(), div.detach()


def ode_log_likelihood(score_fn: TimeScoreFn, sde: SDE, x: torch.Tensor, *, steps: int = 100,
                       method: str = "heun", exact_divergence: bool = True, projection: str = "gaussian",
                       eps: float = 1e-5, generator: Optional[torch.Generator] = None,
                       progress: bool = False) -> torch.Tensor:
    r"""Per-point log-likelihood log p_eps(x) (~ log p_0(x)) by the probability-flow ODE.

    The ODE dx/dt = v(x, t) is a continuous normalising flow, so by the instantaneous change of
    variables (Chen et al. 2018) d/dt log p_t(x(t)) = -div v(x(t), t). Integrating x forward from
    t = eps to 1,

    .. math:: \log p_{\epsilon}(x) = \log p_T(x(1)) + \int_{\epsilon}^1 \nabla\!\cdot v(x(t), t)\,dt,

    with p_T the prior. ``exact_divergence=True`` computes the trace of dv/dx with D backward
    passes (fine in 2-D); ``False`` uses Hutchinson's estimator v^T (dv/dx) v with one
    ``projection`` ('gaussian' or 'rademacher') drawn per point and kept along the path (FFJORD):
    unbiased for the integral, with a variance that averaging several calls reduces. Errors come
    from the ODE solver (``steps``, ``method``), from the prior p_T differing from the true p_1,
    and from the score model. Returns a tensor of shape (n,) in nats. ``progress=True`` shows a tqdm
    bar over the time steps with the current t, as the samplers' ``progress`` does.
    """
    x = checks.as_batch(x, "x").detach().clone()
    steps = checks.positive_int(steps, "steps")
    checks.one_of(method, "method", ODE_METHODS)
    eps = checks.positive(eps, "eps")
    if eps >= 1:
        raise ValueError(f"eps must be < 1, got {eps}")
    proj = None if exact_divergence else random_projections(x.shape, kind=projection, generator=generator, device=x.device, dtype=x.dtype)

    def augmented(state, t):
        y = state[:, :-1]
        v, div = _divergence(lambda z, s: probability_flow_velocity(score_fn, sde, z, s), y, t, proj)
        return torch.cat([v, div[:, None]], 1)

    state = torch.cat([x, torch.zeros(x.shape[0], 1, dtype=x.dtype, device=x.device)], 1)
    times = torch.linspace(eps, sde.T, steps + 1)
    watch = _watch("ODE log-likelihood", steps)
    done = [0]
    with _time_bar(progress, steps, "ODE log-likelihood", times, done) as bar:
        for i in range(steps):
            state = _ode_step(augmented, state, float(times[i]), float(times[i + 1] - times[i]), method)
            watch.update(state[:, :-1], i + 1)
            done[0] = i + 1
            bar.update()
    watch.close(steps)
    return sde.prior_log_prob(state[:, :-1]) + state[:, -1]
