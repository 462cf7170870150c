r"""Lesson 02 panels: Langevin dynamics driven by a score, and what its knobs do.

Unadjusted Langevin dynamics (see :func:`csm_edu.sampling.langevin`):

.. math:: x_{t+1} = x_t + \tfrac{\epsilon}{2}\,\nabla_x \log p(x_t) + \sqrt{\epsilon}\,z_t .

- :class:`LangevinExplorer` / :func:`langevin_panel`: step size (log slider), number of steps and
  noise on/off; the view shows the chains over the density and the MMD^2 to exact samples.
  The first control is the step-size slider.
- :func:`trajectory_frame_figure` / :func:`trajectory_animation`: a Play button stepping through
  recorded trajectories.
Mixture weights that Langevin recovers are measured with :func:`csm_edu.metrics.mode_weights`.
"""
import math
from typing import Callable, Optional, Sequence

import matplotlib.pyplot as plt
import torch

from .. import checks, config, metrics, viz
from ..data import toy_distribution
from ..sampling import langevin
from .base import animation_panel, interactive_panel

STEP_SIZE_RANGE = (1e-3, 1.0)      # the log slider's ends: 1e-3 crawls, 1.0 diverges on the mixture


class LangevinExplorer:
    r"""Run Langevin dynamics on an analytic target and show the result (the plain view).

    Everything a slider does not change is fixed in the constructor: the target, the initial
    points x0 ~ N(0, init_std^2 I), exact reference samples for the MMD (Gaussian kernel of width
    ``mmd_bandwidth``, about one mode's width, so that it sees a wrong mode shape), and the seed, so
    the same settings always give the same picture. Call ``explorer(step_size, steps, noise)``
    to get ``(figure, readout)``; a step size that blows up raises
    :class:`csm_edu.sampling.SamplerDivergedError` (the panel shows it as a red readout).
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

    def run(self, step_size: float, steps: int, noise: bool = True) -> torch.Tensor:
        """The chains after ``steps`` Langevin steps from the fixed x0 (same seed every call)."""
        gen = torch.Generator().manual_seed(self.seed + 1)
        return langevin(self.target.score, self.x0, step_size=step_size, steps=int(steps), noise=bool(noise), generator=gen)

    def __call__(self, step_size: float, steps: int, noise: bool = True):
        x = self.run(step_size, steps, noise)
        mmd2 = metrics.mmd(x, self.reference, bandwidth=self.mmd_bandwidth)
        fig, ax = plt.subplots(figsize=(4.6, 4.2))
        viz.plot_density(self.target.log_prob, window=self.window, resolution=100, ax=ax)
        viz.plot_samples(x, ax=ax, window=self.window, color="white", s=4, alpha=0.7,
                         title=f"step {step_size:.3g}, {int(steps)} steps, noise {'on' if noise else 'off'}")
        readout = (f"step size {step_size:.4g}, {int(steps)} steps, noise {'on' if noise else 'off'}: "
                   f"MMD^2 to true samples = {mmd2:.4f}")
        return fig, readout


def langevin_panel(explorer: Optional[LangevinExplorer] = None, step_size: float = 0.01, steps: int = 200,
                   max_steps: Optional[int] = None):
    """Sliders for the step size (FloatLogSlider, first control), the number of steps and noise on/off."""
    import ipywidgets as widgets

    explorer = explorer if explorer is not None else LangevinExplorer()
    max_steps = checks.positive_int(max_steps if max_steps is not None else (500 if config.QUICK else 1000), "max_steps")
    lo, hi = STEP_SIZE_RANGE
    controls = {
        "step_size": widgets.FloatLogSlider(value=step_size, base=10, min=math.log10(lo), max=math.log10(hi),
                                            step=0.25, description="step size", readout_format=".3g"),
        "steps": widgets.IntSlider(value=steps, min=0, max=max_steps, step=10, description="steps"),
        "noise": widgets.Checkbox(value=True, description="noise"),
    }
    return interactive_panel(explorer, controls)


def trajectory_frame_figure(trajectory: torch.Tensor, frame: int, *, log_prob_fn: Optional[Callable] = None,
                            window: Sequence[float] = viz.DEFAULT_WINDOW, n_show: int = 30,
                            record_every: int = 1):
    """One animation frame: the first ``frame + 1`` recorded states of ``n_show`` chains over the density.

    ``trajectory`` has shape (T, n, 2) as returned by ``langevin(..., record_every=k)``;
    ``frame`` is clipped to [0, T-1]. Returns ``(figure, readout)``.
    """
    traj = torch.as_tensor(trajectory)
    if traj.dim() != 3 or traj.shape[2] != 2:
        raise ValueError(f"trajectory must have shape (T, n, 2), got {tuple(traj.shape)}")
    frame = max(0, min(int(frame), traj.shape[0] - 1))
    fig, ax = plt.subplots(figsize=(4.6, 4.2))
    if log_prob_fn is not None:
        viz.plot_density(log_prob_fn, window=window, resolution=100, ax=ax)
    viz.plot_trajectories(traj, ax=ax, n_show=n_show, window=window, upto=frame + 1,
                          color="tab:orange", title=f"Langevin step {frame * record_every}")
    return fig, f"frame {frame} of {traj.shape[0] - 1} (Langevin step {frame * record_every})"


def trajectory_animation(trajectory: torch.Tensor, *, log_prob_fn: Optional[Callable] = None,
                         window: Sequence[float] = viz.DEFAULT_WINDOW, n_show: int = 30,
                         record_every: int = 1, interval_ms: int = 400):
    """A Play button linked (jslink) to a frame slider over the recorded trajectory."""
    n_frames = torch.as_tensor(trajectory).shape[0]

    def view(frame):
        return trajectory_frame_figure(trajectory, frame, log_prob_fn=log_prob_fn, window=window, n_show=n_show, record_every=record_every)

    return animation_panel(view, n_frames, interval_ms=interval_ms)
