r"""Langevin samplers driven by a score function.

Unadjusted Langevin dynamics with step size epsilon:

.. math:: x_{t+1} = x_t + \tfrac{\epsilon}{2}\, s(x_t) + \sqrt{\epsilon}\, z_t,\qquad z_t\sim N(0, I).

As epsilon -> 0 and t -> infinity its samples follow p when s = grad log p. With an energy the
Metropolis-adjusted version (MALA) corrects the discretisation error exactly.
"""
from typing import Callable, Optional, Sequence

import torch

from . import checks


class SamplerDivergedError(RuntimeError):
    """Raised when a sampler's state becomes NaN, inf or absurdly large."""


CHECK_EVERY = 10   # steps between the divergence checks' host syncs


class _DivergenceWatch:
    """Cheap divergence check of a sampler's state: NaN, inf or |x| > limit.

    Each :meth:`update` costs one reduction, ``x.abs().amax()``, folded into a running maximum on
    the state's device (NaN and inf propagate through both); only every ``every`` steps, and at
    :meth:`close`, is that maximum read back to the host, one sync. A divergence is therefore
    reported at most ``every - 1`` steps after the step where it happened.
    """

    def __init__(self, where: str, step_size: Optional[float] = None, *, hint: Optional[str] = None,
                 every: int = CHECK_EVERY, limit: float = 1e6):
        if hint is None:
            hint = f"Lower step_size (now {step_size:g}), e.g. to {step_size / 10:g}, or check the score model."
        self.where, self.hint, self.every, self.limit = where, hint, every, limit
        self.peak, self.since = None, 0

    def update(self, x: torch.Tensor, step: int) -> None:
        largest = x.detach().abs().amax()
        self.peak = largest if self.peak is None else torch.maximum(self.peak, largest)
        self.since += 1
        if self.since >= self.every:
            self.check(step)

    def check(self, step: int) -> None:
        if self.peak is not None and not bool(self.peak <= self.limit):      # one host sync; NaN fails
            raise SamplerDivergedError(
                f"{self.where} diverged by step {step} (the state is checked every {self.every} steps): it became "
                f"NaN/inf or left |x| < {self.limit:g}. {self.hint}")
        self.peak, self.since = None, 0

    close = check


class _StepBar:
    """The samplers' optional progress bar (``progress=True``): a tqdm.auto bar over the steps.

    tqdm.auto renders in JupyterLab, VS Code and Colab, and as text in a terminal. Off by default
    (library calls stay silent); when on, the bar is advanced in blocks of :data:`CHECK_EVERY`
    steps, so it costs next to nothing per step, and it is closed (removed) when the run ends or
    raises. ``postfix`` (a callable giving a short string) is shown next to the count, e.g. MALA's
    acceptance rate so far.
    """

    def __init__(self, progress: bool, total: int, desc: str, *, unit: str = "step",
                 postfix: Optional[Callable[[], str]] = None):
        self.bar = None
        if progress:
            from tqdm.auto import tqdm
            self.bar = tqdm(total=total, desc=desc, unit=unit, leave=False, mininterval=0.5)
        self.postfix, self.pending = postfix, 0

    def update(self, n: int = 1) -> None:
        if self.bar is None:
            return
        self.pending += n
        if self.pending >= CHECK_EVERY:
            self.flush()

    def flush(self) -> None:
        if self.bar is not None and self.pending:
            if self.postfix is not None:
                self.bar.set_postfix_str(self.postfix(), refresh=False)
            self.bar.update(self.pending)
            self.pending = 0

    def close(self) -> None:
        if self.bar is not None:
            self.flush()
            self.bar.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def langevin(score_fn: Callable, x0: torch.Tensor, *, step_size: float, steps: int,
             record_every: Optional[int] = None, noise: bool = True,
             log_prob_fn: Optional[Callable] = None, generator: Optional[torch.Generator] = None,
             info: Optional[dict] = None, progress: bool = False):
    r"""Run (unadjusted or Metropolis-adjusted) Langevin dynamics from ``x0`` of shape (n, D).

    Returns the final samples; with ``record_every=k`` returns ``(samples, trajectory)`` where
    trajectory has shape (T, n, D) and holds x0 and every k-th state. ``noise=False`` gives
    plain gradient ascent on log p (no sampling). If ``log_prob_fn`` (an unnormalised log density,
    e.g. ``lambda x: -model.energy(x)``) is given, each move is accepted with the MALA probability

    .. math:: \min\Bigl(1, \frac{p(x')\,q(x\mid x')}{p(x)\,q(x'\mid x)}\Bigr),\quad
              q(x'\mid x) = N\bigl(x';\, x + \tfrac{\epsilon}{2}s(x),\, \epsilon I\bigr),

    and ``info['acceptance_rate']`` is filled in when a dict is passed as ``info``.
    ``progress=True`` shows a tqdm bar over the steps (MALA's: with the acceptance rate so far).
    """
    x = checks.as_batch(x0, "x0").detach().clone()
    step_size = checks.positive(step_size, "step_size")
    steps = checks.positive_int(steps, "steps", minimum=0)
    if record_every is not None:
        record_every = checks.positive_int(record_every, "record_every")
    if log_prob_fn is not None and not noise:
        raise ValueError("noise=False cannot be combined with log_prob_fn (MALA needs the noise)")
    trajectory = [x.clone()] if record_every else None
    accepted = 0.0
    sqrt_eps = step_size ** 0.5
    where = "Langevin" if log_prob_fn is None else "MALA"
    watch = _DivergenceWatch(where, step_size)
    rate = (lambda: f"accepted {accepted / max(bar.bar.n + bar.pending, 1):.2f}") if log_prob_fn is not None else None
    with torch.no_grad(), _StepBar(progress, steps, where, postfix=rate) as bar:
        s = score_fn(x)
        logp = log_prob_fn(x) if log_prob_fn is not None else None
        for t in range(1, steps + 1):
            z = torch.randn(x.shape, generator=generator, dtype=x.dtype).to(x.device) if noise else 0.0
            proposal = x + 0.5 * step_size * s + sqrt_eps * z
            if log_prob_fn is None:
                x = proposal
                watch.update(x, t)
                s = score_fn(x)
            else:
                watch.update(proposal, t)
                s_prop = score_fn(proposal)
                logp_prop = log_prob_fn(proposal)
                log_q_forward = -((proposal - x - 0.5 * step_size * s) ** 2).sum(1) / (2 * step_size)
                log_q_backward = -((x - proposal - 0.5 * step_size * s_prop) ** 2).sum(1) / (2 * step_size)
                log_alpha = logp_prop - logp + log_q_backward - log_q_forward
                u = torch.rand(x.shape[0], generator=generator).to(x.device)
                accept = torch.log(u) < log_alpha
                accepted += float(accept.float().mean())
                x = torch.where(accept[:, None], proposal, x)
                s = torch.where(accept[:, None], s_prop, s)
                logp = torch.where(accept, logp_prop, logp)
            if record_every and t % record_every == 0:
                trajectory.append(x.clone())
            bar.update()
        watch.close(steps)
    if info is not None:
        info["steps"] = steps
        if log_prob_fn is not None:
            info["acceptance_rate"] = accepted / max(steps, 1)
    return (x, torch.stack(trajectory)) if record_every else x


def annealed_langevin(score_fn: Callable, x0: torch.Tensor, sigmas, *, steps_per_sigma: int = 100,
                      step_size: float = 2e-5, record_every: Optional[int] = None,
                      denoise_last: bool = False, generator: Optional[torch.Generator] = None,
                      progress: bool = False):
    r"""Annealed Langevin dynamics (Song & Ermon 2019, Algorithm 1).

    For each level sigma_i (largest first) run ``steps_per_sigma`` Langevin steps on the
    noise-conditional score ``score_fn(x, sigma_i)`` with step
    alpha_i = step_size * sigma_i^2 / sigma_L^2, so the signal-to-noise ratio of every step is the
    same at every level. ``denoise_last=True`` finishes with one Tweedie step
    x + sigma_L^2 s(x, sigma_L). Returns samples, or ``(samples, trajectory)`` with
    ``record_every``. ``progress=True`` shows a tqdm bar over all steps (levels x steps_per_sigma).
    """
    x = checks.as_batch(x0, "x0").detach().clone()
    sigmas = checks.sigma_sequence(sigmas, decreasing=True)
    steps_per_sigma = checks.positive_int(steps_per_sigma, "steps_per_sigma")
    step_size = checks.positive(step_size, "step_size")
    if record_every is not None:
        record_every = checks.positive_int(record_every, "record_every")
    trajectory = [x.clone()] if record_every else None
    sigma_last = float(sigmas[-1])
    t = 0
    watch = _DivergenceWatch("Annealed Langevin", step_size)
    with torch.no_grad(), _StepBar(progress, len(sigmas) * steps_per_sigma, "Annealed Langevin") as bar:
        for sigma in sigmas.tolist():
            alpha = step_size * (sigma / sigma_last) ** 2
            sigma_vec = torch.full((x.shape[0],), sigma, dtype=x.dtype, device=x.device)
            for _ in range(steps_per_sigma):
                t += 1
                z = torch.randn(x.shape, generator=generator, dtype=x.dtype).to(x.device)
                x = x + 0.5 * alpha * score_fn(x, sigma_vec) + alpha ** 0.5 * z
                watch.update(x, t)
                if record_every and t % record_every == 0:
                    trajectory.append(x.clone())
                bar.update()
        watch.close(t)
        if denoise_last:
            x = x + sigma_last ** 2 * score_fn(x, torch.full((x.shape[0],), sigma_last, dtype=x.dtype, device=x.device))
    return (x, torch.stack(trajectory)) if record_every else x


def autoregressive_langevin(model, n: int, *, steps: int = 200, step_size: float = 0.01, sigmas=None,
                            x0=None, y: Optional[torch.Tensor] = None, bounds: Optional[Sequence[float]] = None,
                            generator: Optional[torch.Generator] = None, record_every: Optional[int] = None,
                            progress: bool = False):
    r"""Sample an autoregressive score model one variable at a time, by 1-D Langevin on each conditional.

    For d in ``model.order``: the context c_d of x_<d (already sampled) is computed once, then
    ``steps`` Langevin steps run on x_d alone with the conditional score s_d = head(c_d, x_d),

    .. math:: x_d \leftarrow x_d + \tfrac{\alpha}{2} s_d(x_d) + \sqrt{\alpha}\,z,

    batched over the n samples; only the (cheap) head runs in the inner loop. ``sigmas`` (a
    decreasing sequence) anneals the step: ``steps`` steps at each level with
    alpha_i = step_size * (sigma_i / sigma_last)^2, as in :func:`annealed_langevin`; the target
    stays q(x_d | x_<d) (the model is not noise-conditional), so early large steps only help
    chains spread between the modes of a conditional, and the last level sets the accuracy.
    ``x0``: None (x ~ N(0, I)), a float scale (N(0, x0^2 I)) or an (n, D) tensor of starting
    values. ``y``: the condition, shape (n, cond_dim). ``bounds=(lo, hi)`` samples the conditionals
    restricted to [lo, hi] (e.g. the box an image model was trained and normalised on) by
    *reflected* Langevin: a step that leaves the box is mirrored back at the wall it crossed
    (:func:`reflect`), so the head is only ever read inside the box and a large step cannot run
    into an untrained region. Returns (n, D) samples, or
    ``(samples, trajectory)`` with ``record_every=k``, trajectory (T, n, D) holding the start and the
    state after every k-th step (steps counted over all variables and levels). ``progress=True``
    shows a tqdm bar over those steps (D x levels x steps).
    """
    n = checks.positive_int(n, "n")
    steps = checks.positive_int(steps, "steps")
    step_size = checks.positive(step_size, "step_size")
    dim, device, _ = _check_autoregressive(model)
    levels = [1.0] if sigmas is None else checks.sigma_sequence(sigmas, decreasing=True).tolist()
    alphas = [step_size * (sigma / levels[-1]) ** 2 for sigma in levels]
    if bounds is not None:
        lo, hi = checks.bounds(bounds)
    if record_every is not None:
        record_every = checks.positive_int(record_every, "record_every")
    if x0 is None or isinstance(x0, (int, float)):
        scale = 1.0 if x0 is None else checks.positive(x0, "x0")
        x = scale * torch.randn(n, dim, generator=generator)
    else:
        x = checks.as_batch(x0, "x0", dim=dim).detach().clone()
        if x.shape[0] != n:
            raise ValueError(f"x0 must have n={n} rows, got {x.shape[0]}")
    if bounds is not None:
        x = reflect(x, lo, hi)
    x = x.to(device)
    trajectory = [x.clone()] if record_every else None
    t = 0
    watch = _DivergenceWatch("Autoregressive Langevin", step_size)
    with torch.no_grad(), _StepBar(progress, dim * len(alphas) * steps, "Autoregressive Langevin") as bar:
        for d in model.order.tolist():
            dims = torch.tensor([d], device=device)
            context_d = model.context(x, y)[:, d:d + 1]                 # (n, 1, C): fixed while x_d moves
            x_d = x[:, d:d + 1].clone()
            for alpha in alphas:
                for _ in range(steps):
                    t += 1
                    z = torch.randn(x_d.shape, generator=generator).to(x_d)
                    x_d = x_d + 0.5 * alpha * model.head(context_d, x_d, dims) + alpha ** 0.5 * z
                    watch.update(x_d, t)
                    if bounds is not None:
                        x_d = reflect(x_d, lo, hi)
                    if record_every and t % record_every == 0:
                        x[:, d:d + 1] = x_d
                        trajectory.append(x.clone())
                    bar.update()
            x[:, d:d + 1] = x_d
        watch.close(t)
    return (x, torch.stack(trajectory)) if record_every else x


def autoregressive_inverse_cdf(model, n: int, *, bounds: Sequence[float], n_nodes: int = 256,
                               y: Optional[torch.Tensor] = None, generator: Optional[torch.Generator] = None,
                               progress: bool = False):
    r"""Sample an autoregressive score model one variable at a time, *exactly* up to a grid, by inverse CDF.

    The conditional score fixes each 1-D conditional on [lo, hi] up to its normaliser,
    q(x_d | x_<d) \propto \exp u_d(x_d) with u_d(t) = \int_{lo}^t s_d (the quadrature of
    :func:`csm_edu.quadrature.arcsm_log_prob`). On a grid t_0 = lo < ... < t_G = hi of spacing
    h = (hi - lo) / G the trapezoid rule gives u_d(t_j) and the mass of cell j,
    m_j = h (e^{u_j} + e^{u_{j+1}}) / 2; a cell is drawn with probability m_j / \sum m and x_d
    uniformly inside it (a piecewise-constant density: error O(h)). For d in ``model.order``:
    one context pass, one head evaluation at the G + 1 nodes for all n samples, no Markov chain,
    so nothing to tune and nothing to mix: the samples follow the model's own conditionals, which
    tells a weak *sampler* (:func:`autoregressive_langevin`) from a weak *model*.
    ``model`` needs ``dim``, ``order``, ``context(x, y)`` and a broadcasting ``head(context, x, dims)``.
    Returns (n, D) samples inside [lo, hi]. ``progress=True`` shows a tqdm bar over the D variables.
    """
    n = checks.positive_int(n, "n")
    n_nodes = checks.positive_int(n_nodes, "n_nodes", minimum=2)
    lo, hi = checks.bounds(bounds)
    dim, device, dtype = _check_autoregressive(model)
    h = (hi - lo) / n_nodes
    nodes = torch.linspace(lo, hi, n_nodes + 1, dtype=dtype, device=device).view(1, -1, 1)   # (1, G + 1, 1)
    x = torch.full((n, dim), 0.5 * (lo + hi), dtype=dtype, device=device)
    with torch.no_grad(), _StepBar(progress, dim, "Inverse-CDF sampling", unit="variable") as bar:
        for d in model.order.tolist():
            context_d = model.context(x, y)[:, d:d + 1].unsqueeze(1)                          # (n, 1, 1, C)
            s = model.head(context_d, nodes, torch.tensor([d], device=device))[..., 0]       # (n, G + 1)
            u = torch.cumulative_trapezoid(s, dx=h, dim=1)
            u = torch.cat([torch.zeros_like(u[:, :1]), u], 1)
            if not torch.isfinite(u).all():
                raise SamplerDivergedError(f"the conditional score of variable {d} is not finite on the grid "
                                           f"[{lo}, {hi}]; check the model and the bounds")
            log_mass = torch.logaddexp(u[:, 1:], u[:, :-1])                                   # + log(h / 2), common
            cell = torch.multinomial(torch.softmax(log_mass, 1).cpu(), 1, generator=generator)[:, 0].to(device)
            offset = torch.rand(n, generator=generator, dtype=dtype).to(device)
            x[:, d] = lo + h * (cell.to(dtype) + offset)
            bar.update()
    return x


def _check_autoregressive(model):
    """(D, device, dtype) of an autoregressive score model; a clear error for anything else."""
    dim = checks.positive_int(getattr(model, "dim", 0), "model.dim")
    if not hasattr(model, "head") or not hasattr(model, "context"):
        raise ValueError("model must be an autoregressive score model with context(x, y) and head(c, x, dims), e.g. ARCSM")
    try:
        param = next(model.parameters())
        return dim, param.device, param.dtype
    except (AttributeError, StopIteration):
        return dim, torch.device("cpu"), torch.get_default_dtype()




def reflect(x: torch.Tensor, lo: float, hi: float) -> torch.Tensor:
    r"""Fold x into [lo, hi] by mirroring at the walls, as often as needed (period 2(hi - lo)):

    .. math:: y = (x - lo) mod 2w,\qquad x' = lo + \min(y,\; 2w - y),\qquad w = hi - lo.

    The reflection step of reflected Langevin dynamics, whose stationary law is the target
    restricted to the box.
    """
    width = hi - lo
    y = torch.remainder(x - lo, 2 * width)
    return lo + torch.minimum(y, 2 * width - y)


def sir(candidates: torch.Tensor, log_weights: torch.Tensor, generator: Optional[torch.Generator] = None) -> torch.Tensor:
    r"""Sampling-importance-resampling: from each row of S candidates keep one, with probability
    softmax(log_weights) over the row.

    ``candidates`` and ``log_weights`` have shape (n, S); for candidates x_s ~ q and
    log_weights = log f(x_s) - log q(x_s) (f an unnormalised density) the kept value is
    approximately a draw of f / Z, exactly so as S -> infinity. Returns shape (n,). The 1-D
    step of the Autoregressive Energy Machine's sampler (:meth:`csm_edu.models.AEM.sample`).
    """
    if candidates.dim() != 2 or candidates.shape != log_weights.shape:
        raise ValueError(f"candidates and log_weights must both have shape (n, S), got "
                         f"{tuple(candidates.shape)} and {tuple(log_weights.shape)}")
    if torch.isnan(log_weights).any() or (log_weights == float("inf")).any():
        raise ValueError("log_weights contain NaN or +inf; check the energy and the proposal")
    dead = torch.isneginf(log_weights).all(dim=1)
    if dead.any():
        raise ValueError(f"every log weight is -inf in {int(dead.sum())} row(s) (e.g. row {int(dead.nonzero()[0])}): "
                         "no candidate has positive weight there; draw more candidates or widen the proposal")
    probs = torch.softmax(log_weights.detach().double(), dim=1).cpu()
    keep = torch.multinomial(probs, 1, generator=generator).to(candidates.device)
    return candidates.gather(1, keep).squeeze(1)
