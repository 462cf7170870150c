r"""Lesson 02 panels: Langevin dynamics driven by a score, and what its knobs do.

Unadjusted Langevin dynamics (see :func:`csm_edu.sampling.langevin`):

.. math:: x_{t+1} = x_t + \tfrac{\epsilon}{2}\,\nabla_x \log p(x_t) + \sqrt{\epsilon}\,z_t .

- :class:`LangevinExplorer` / :func:`langevin_panel`: step size (log slider), number of steps and
  noise on/off; the view shows the chains over the density and the MMD^2 to exact samples.
  The first control is the step-size slider. Chains are cached per (step size, noise) every
  :data:`RECORD_EVERY` steps, so moving the steps slider only looks up a recorded state; the panel
  precomputes the slider's step sizes when it is built.
- :func:`trajectory_frame_figure` / :func:`trajectory_animation`: a Play button stepping through
  recorded trajectories (the density image is computed once, not per frame).
Mixture weights that Langevin recovers are measured with :func:`csm_edu.metrics.mode_weights`.
"""
import math
from typing import Callable, Optional, Sequence

import matplotlib.pyplot as plt
import torch

from .. import checks, config, metrics, viz
from ..data import toy_distribution
from ..sampling import SamplerDivergedError, langevin
from .base import animation_panel, interactive_panel

STEP_SIZE_RANGE = (1e-3, 1.0)      # the log slider's ends: 1e-3 crawls, 1.0 diverges on the mixture
STEP_SIZE_SLIDER_STEP = 0.25       # the log slider's step in log10 units: 13 step sizes
RECORD_EVERY = 10                  # the explorer caches the chains' state every this many steps


def density_image(log_prob_fn: Callable, window: Sequence[float], resolution: int = 100):
    """The grid-normalised density of ``log_prob_fn`` as an (r, r) array, for :func:`draw_density`."""
    _, _, log_density, _ = metrics.grid_log_density(log_prob_fn, window=window, resolution=resolution)
    return log_density.exp().numpy()


def draw_density(ax, image, window: Sequence[float]):
    """Draw a :func:`density_image` on ``ax`` (imshow over the window: far cheaper to render than a mesh)."""
    ax.imshow(image, origin="lower", extent=tuple(window), cmap="viridis", interpolation="nearest", aspect="equal")


def slider_step_sizes(step_range: Sequence[float] = STEP_SIZE_RANGE, log_step: float = STEP_SIZE_SLIDER_STEP):
    """The step sizes the log slider can take: 10^(lo + k log_step), k = 0, 1, ... up to 10^hi."""
    lo, hi = (math.log10(v) for v in step_range)
    n = int(round((hi - lo) / log_step))
    return [float(10 ** (lo + k * log_step)) for k in range(n + 1)]


class LangevinExplorer:
    r"""Run Langevin dynamics on an analytic target and show the result (the plain view).

    Everything a slider does not change is fixed in the constructor: the target, the initial
    points x0 ~ N(0, init_std^2 I), exact reference samples for the MMD (Gaussian kernel of width
    ``mmd_bandwidth``, about one mode's width, so that it sees a wrong mode shape), and the seed, so
    the same settings always give the same picture. Call ``explorer(step_size, steps, noise)``
    to get ``(figure, readout)``; a step size that blows up raises
    :class:`csm_edu.sampling.SamplerDivergedError` (the panel shows it as a red readout).

    :meth:`run` continues a cached chain: for each (step size, noise) the state is kept every
    :data:`RECORD_EVERY` steps, with the generator's state, so ``run(eps, 1000)`` after
    ``run(eps, 200)`` only runs the 800 new steps, and ``run(eps, 100)`` afterwards runs none.
    The result is the same as one ``langevin`` call of ``steps`` steps from x0 with a generator
    seeded ``seed + 1`` (the chain draws nothing but its noise from the generator).
    """

    def __init__(self, target=None, *, n_chains: Optional[int] = None, init_std: float = 3.0,
                 window: Sequence[float] = viz.DEFAULT_WINDOW, mmd_bandwidth: float = 0.5, seed: int = 0):
        self.target = target if target is not None else toy_distribution("mixture")
        if not hasattr(self.target, "score") or not hasattr(self.target, "sample"):
            raise ValueError("target must have .score, .log_prob and .sample (a csm_edu.distributions object)")
        n_chains = checks.positive_int(n_chains if n_chains is not None else (300 if config.QUICK else 500),
                                       "n_chains", minimum=2)
        init_std = checks.positive(init_std, "init_std")
        self.mmd_bandwidth = checks.positive(mmd_bandwidth, "mmd_bandwidth")
        self.window = tuple(window)
        self.seed = seed
        gen = torch.Generator().manual_seed(seed)
        self.x0 = init_std * torch.randn(n_chains, self.target.dim, generator=gen)
        self.reference = self.target.sample(n_chains, generator=gen)
        self._chains = {}           # (step size, noise) -> recorded states, generator states, divergence
        self._image = None          # the density image, made at the first figure

    def _chain(self, step_size: float, noise: bool) -> dict:
        key = (float(step_size), bool(noise))
        if key not in self._chains:
            gen = torch.Generator().manual_seed(self.seed + 1)
            self._chains[key] = {"states": [self.x0], "gen_states": [gen.get_state()], "gen": gen,
                                 "diverged": None}
        return self._chains[key]

    def _advance(self, step_size: float, noise: bool, steps: int, start: int, x, gen):
        try:
            return langevin(self.target.score, x, step_size=step_size, steps=steps, noise=noise, generator=gen)
        except SamplerDivergedError:
            raise SamplerDivergedError(
                f"Langevin diverged by step {start + steps} (the state became NaN/inf or left |x| < 1e6). "
                f"Lower step_size (now {step_size:g}), e.g. to {step_size / 10:g}, or check the score model.") from None

    def run(self, step_size: float, steps: int, noise: bool = True) -> torch.Tensor:
        """The chains after ``steps`` Langevin steps from the fixed x0 (same seed every call; cached)."""
        step_size = checks.positive(step_size, "step_size")
        steps = checks.positive_int(int(steps), "steps", minimum=0)
        noise = bool(noise)
        chain = self._chain(step_size, noise)
        blocks, rest = divmod(steps, RECORD_EVERY)
        if chain["diverged"] is not None and chain["diverged"][0] <= blocks:
            raise SamplerDivergedError(chain["diverged"][1])
        while len(chain["states"]) <= blocks:                    # extend the recorded chain
            start = (len(chain["states"]) - 1) * RECORD_EVERY
            try:
                x = self._advance(step_size, noise, RECORD_EVERY, start, chain["states"][-1], chain["gen"])
            except SamplerDivergedError as err:
                chain["diverged"] = (len(chain["states"]), str(err))
                raise
            chain["states"].append(x)
            chain["gen_states"].append(chain["gen"].get_state())
        x = chain["states"][blocks]
        if rest:                                                 # a few steps past the last record
            gen = torch.Generator().manual_seed(self.seed + 1)
            gen.set_state(chain["gen_states"][blocks])
            x = self._advance(step_size, noise, rest, blocks * RECORD_EVERY, x, gen)
        return x.clone()

    def precompute(self, step_sizes: Sequence[float], steps: int, *, noise: Sequence[bool] = (True,),
                   progress: bool = True) -> None:
        """Run (and cache) the chains of every step size and noise setting up to ``steps`` steps.

        Step sizes that diverge are cached as diverged. ``progress`` shows a tqdm bar.
        """
        from tqdm.auto import tqdm

        settings = [(float(eps), bool(flag)) for flag in noise for eps in step_sizes]
        for eps, flag in tqdm(settings, desc="Langevin chains for the panel", leave=False, disable=not progress):
            try:
                self.run(eps, steps, flag)
            except SamplerDivergedError:
                pass

    def __call__(self, step_size: float, steps: int, noise: bool = True):
        x = self.run(step_size, steps, noise)
        mmd2 = metrics.mmd(x, self.reference, bandwidth=self.mmd_bandwidth)
        if self._image is None:
            self._image = density_image(self.target.log_prob, self.window)
        fig, ax = plt.subplots(figsize=(4.6, 4.2))
        draw_density(ax, self._image, self.window)
        viz.plot_samples(x, ax=ax, window=self.window, color="white", s=4, alpha=0.7,
                         title=f"step {step_size:.3g}, {int(steps)} steps, noise {'on' if noise else 'off'}")
        readout = (f"step size {step_size:.4g}, {int(steps)} steps, noise {'on' if noise else 'off'}: "
                   f"MMD^2 to true samples = {mmd2:.4f}")
        return fig, readout


def langevin_panel(explorer: Optional[LangevinExplorer] = None, step_size: float = 0.01, steps: int = 200,
                   max_steps: Optional[int] = None, *, precompute: Optional[bool] = None):
    """Sliders for the step size (FloatLogSlider, first control), the number of steps and noise on/off.

    With ``precompute`` (default: in full mode) the chains of every step size the slider can take
    (noise on) and of the default step size (noise off) are run up to ``max_steps`` when the panel
    is built (a progress bar; about 10 s on one core), so every move of a slider is a look-up and a
    redraw; otherwise only the default step size is. The step-size slider redraws on release
    (``continuous_update=False``): a step size not precomputed runs its chain first.
    """
    import ipywidgets as widgets

    explorer = explorer if explorer is not None else LangevinExplorer()
    max_steps = checks.positive_int(max_steps if max_steps is not None else (500 if config.QUICK else 1000), "max_steps")
    precompute = (not config.QUICK) if precompute is None else bool(precompute)
    lo, hi = STEP_SIZE_RANGE
    explorer.precompute(slider_step_sizes() if precompute else [step_size], max_steps)
    explorer.precompute([step_size], max_steps, noise=(False,), progress=False)
    controls = {
        "step_size": widgets.FloatLogSlider(value=step_size, base=10, min=math.log10(lo), max=math.log10(hi),
                                            step=STEP_SIZE_SLIDER_STEP, description="step size", readout_format=".3g",
                                            continuous_update=False),
        "steps": widgets.IntSlider(value=steps, min=0, max=max_steps, step=RECORD_EVERY, description="steps",
                                   continuous_update=False),
        "noise": widgets.Checkbox(value=True, description="noise"),
    }
    return interactive_panel(explorer, controls)


def trajectory_frame_figure(trajectory: torch.Tensor, frame: int, *, log_prob_fn: Optional[Callable] = None,
                            window: Sequence[float] = viz.DEFAULT_WINDOW, n_show: int = 30,
                            record_every: int = 1, image=None):
    """One animation frame: the first ``frame + 1`` recorded states of ``n_show`` chains over the density.

    ``trajectory`` has shape (T, n, 2) as returned by ``langevin(..., record_every=k)``;
    ``frame`` is clipped to [0, T-1]. The density comes from ``image`` (a :func:`density_image`
    over ``window``, precomputed by the animation) or else from ``log_prob_fn``. A legend tells the
    start points from the current ones. Returns ``(figure, readout)``.
    """
    traj = torch.as_tensor(trajectory)
    if traj.dim() != 3 or traj.shape[2] != 2:
        raise ValueError(f"trajectory must have shape (T, n, 2), got {tuple(traj.shape)}")
    frame = max(0, min(int(frame), traj.shape[0] - 1))
    fig, ax = plt.subplots(figsize=(4.6, 4.2))
    if image is None and log_prob_fn is not None:
        image = density_image(log_prob_fn, window)
    if image is not None:
        draw_density(ax, image, window)
    step = frame * record_every
    viz.plot_trajectories(traj, ax=ax, n_show=n_show, window=window, upto=frame + 1,
                          color="tab:orange", title=f"Langevin step {step}")
    handles, _ = ax.get_legend_handles_labels()
    ax.legend(handles, ["start (step 0)", f"now (step {step})"], loc="upper right", fontsize=8,
              frameon=True, framealpha=0.85)
    return fig, f"frame {frame} of {traj.shape[0] - 1} (Langevin step {step})"


def trajectory_animation(trajectory: torch.Tensor, *, log_prob_fn: Optional[Callable] = None,
                         window: Sequence[float] = viz.DEFAULT_WINDOW, n_show: int = 30,
                         record_every: int = 1, interval_ms: int = 600):
    """A Play button linked (jslink) to a frame slider over the recorded trajectory.

    The density image is computed once here; a frame then renders in about 0.15 s on one core,
    well inside ``interval_ms``.
    """
    n_frames = torch.as_tensor(trajectory).shape[0]
    image = density_image(log_prob_fn, window) if log_prob_fn is not None else None

    def view(frame):
        return trajectory_frame_figure(trajectory, frame, window=window, n_show=n_show, record_every=record_every,
                                       image=image)

    return animation_panel(view, n_frames, interval_ms=interval_ms)
