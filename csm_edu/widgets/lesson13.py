"""Lesson 13 panels: forward noising over time, learned against true scores at time t, and an
animation of reverse-time trajectories.

Each ``*_figure`` function is plain (knob values in, Figure and readout out) and is tested
headless; each ``*_panel`` wires it to ipywidgets with :func:`interactive_panel`.
"""
from typing import Callable, Optional, Sequence

import matplotlib.pyplot as plt
import torch

from .. import checks, diffusion, metrics, viz
from ..data import make_toy, toy_distribution
from .base import animation_panel, interactive_panel

SDE_KINDS = ("VE", "VP")


def default_sde(kind: str) -> diffusion.SDE:
    """The lesson's two SDEs for the 2-D toy sets: VE with sigma in [0.01, 8], VP with beta in [0.1, 20]."""
    checks.one_of(kind, "sde kind", SDE_KINDS)
    return diffusion.VESDE(0.01, 8.0) if kind == "VE" else diffusion.VPSDE(0.1, 20.0)


def window_at(sde: diffusion.SDE, t: float, data_radius: float = 4.5) -> tuple:
    """A square plotting window that holds p_t: half-width max(4.5, a(t) r + 3 s(t))."""
    half = max(4.5, float(sde.mean_coef(t)) * data_radius + 3 * float(sde.std(t)))
    return (-half, half, -half, half)


def forward_noising_figure(kind: str = "VE", *, t: float = 0.3, n: int = 600, toy: str = "mixture",
                           seed: int = 0):
    """Left: the exact density of p_t for the toy mixture; right: data pushed to time t.

    Returns ``(figure, readout)`` with a(t), s(t) and the window size (the window grows with the
    VE-SDE's spread, so watch the tick labels).
    """
    sde = default_sde(kind)
    t = float(t)
    if not 0.0 <= t <= 1.0:
        raise ValueError(f"t must lie in [0, 1], got {t}")
    target = toy_distribution(toy)
    if target is None:
        raise ValueError(f"toy set {toy!r} has no known density; use 'mixture' or 'grid'")
    x0 = make_toy(toy, n, generator=torch.Generator().manual_seed(seed))
    xt = sde.sample_marginal(x0, t, torch.Generator().manual_seed(seed))
    pt = diffusion.marginal_distribution(target, sde, t)
    window = window_at(sde, t)
    fig, axes = plt.subplots(1, 2, figsize=(8.4, 4.0))
    viz.plot_density(pt.log_prob, window=window, resolution=150, ax=axes[0], title=f"{kind}: density of p_t, t = {t:.2f}")
    viz.plot_samples(xt, ax=axes[1], window=window, s=4, alpha=0.6, title=f"x_t = a x_0 + s z  ({n} points)")
    fig.tight_layout()
    a, s = float(sde.mean_coef(t)), float(sde.std(t))
    return fig, f"a(t) = {a:.3f}   s(t) = {s:.3f}   window = +-{window[1]:.1f}"


def forward_noising_panel(toy: str = "mixture"):
    """Slider over t and a VE/VP toggle for :func:`forward_noising_figure`."""
    import ipywidgets as widgets
    controls = {
        "kind": widgets.ToggleButtons(options=list(SDE_KINDS), value="VE", description="SDE"),
        "t": widgets.FloatSlider(value=0.3, min=0.0, max=1.0, step=0.02, description="t", continuous_update=False),
    }
    return interactive_panel(lambda kind, t: forward_noising_figure(kind, t=t, toy=toy), controls)


def score_comparison_figure(score_fn: Callable, target, sde: diffusion.SDE, *, t: float = 0.3,
                            n_arrows: int = 17, n_eval: int = 2000, seed: int = 0):
    """True (white) and learned (red) score directions over the density of p_t, with the relative
    Fisher divergence E|s_theta - grad log p_t|^2 / E|grad log p_t|^2 under p_t as readout.

    ``score_fn(x, t)`` is the learned time-dependent score (e.g. a TimeScoreNet); ``target`` a
    Gaussian or GaussianMixture (the data distribution).
    """
    t = float(t)
    if not 0.0 < t <= 1.0:
        raise ValueError(f"t must lie in (0, 1] (the score is not defined at t = 0 for a model), got {t}")
    pt = diffusion.marginal_distribution(target, sde, t)
    x = pt.sample(n_eval, torch.Generator().manual_seed(seed))
    with torch.no_grad():
        fisher = metrics.fisher_divergence(lambda y: score_fn(y, t), pt, x)
    scale = 0.5 * float((pt.score(x) ** 2).sum(1).mean())
    window = window_at(sde, t)
    fig, ax = plt.subplots(figsize=(4.6, 4.4))
    with torch.no_grad():
        viz.plot_score_field(pt.score, window=window, resolution=n_arrows, ax=ax, log_prob_fn=pt.log_prob, color="white")
        viz.plot_score_field(lambda y: score_fn(y, t), window=window, resolution=n_arrows, ax=ax, color="tab:red",
                             title=f"t = {t:.2f}: true (white), learned (red)")
    return fig, f"s(t) = {float(sde.std(t)):.3f}   relative Fisher divergence = {fisher / scale:.3f}"


def score_comparison_panel(score_fn: Callable, target, sde: diffusion.SDE):
    """A t slider for :func:`score_comparison_figure`."""
    import ipywidgets as widgets
    controls = {"t": widgets.FloatSlider(value=0.3, min=0.02, max=1.0, step=0.02, description="t",
                                         continuous_update=False)}
    return interactive_panel(lambda t: score_comparison_figure(score_fn, target, sde, t=t), controls)


def trajectory_frame_figure(trajectory: torch.Tensor, frame: int, *, times: Optional[Sequence[float]] = None,
                            n_show: int = 30, window: Optional[Sequence[float]] = None,
                            reference: Optional[torch.Tensor] = None):
    """One animation frame of reverse trajectories, in two views of the same state.

    Left, the whole journey: a fixed window that holds every recorded point of the ``n_show``
    chains whose paths are drawn (a VE prior starts them far outside the data) and their paths so
    far, the data region dotted. Right, the data region ``window`` (default: 1.5 times the
    ``reference`` extent, or +-4.5): all points at ``frame``, the data in grey (``reference``), and
    the same paths clipped to the box. ``trajectory`` has shape (T, n, 2) as recorded by the
    samplers' ``record_every``; ``times`` (length T) labels each frame with its diffusion time.
    """
    traj = torch.as_tensor(trajectory).detach().cpu()
    if traj.dim() != 3 or traj.shape[2] != 2:
        raise ValueError(f"trajectory must have shape (T, n, 2), got {tuple(traj.shape)}")
    frame = min(max(int(frame), 0), traj.shape[0] - 1)
    if window is None:
        half = 4.5 if reference is None else max(4.5, 1.5 * float(torch.as_tensor(reference).abs().max()))
        window = (-half, half, -half, half)
    outer = 1.05 * float(traj[:, :n_show].abs().max().clamp(min=max(abs(w) for w in window)))
    fig, (ax_all, ax_zoom) = plt.subplots(1, 2, figsize=(8.6, 4.3))
    label = f"step {frame}/{traj.shape[0] - 1}" + (f", t = {float(times[frame]):.3f}" if times is not None else "")
    viz.plot_trajectories(traj, ax=ax_all, n_show=n_show, window=(-outer, outer, -outer, outer), upto=frame + 1,
                          title=f"{n_show} whole paths ({label})")
    if reference is not None:
        viz.plot_samples(reference, ax=ax_zoom, window=window, s=3, alpha=0.25, color="grey")
    viz.plot_samples(traj[frame], ax=ax_zoom, window=window, s=3, alpha=0.5, color="tab:blue")
    viz.plot_trajectories(traj, ax=ax_zoom, n_show=n_show, window=window, upto=frame + 1,
                          title="data region: all points (blue), paths clipped")
    ax_all.plot([window[0], window[1], window[1], window[0], window[0]],
                [window[2], window[2], window[3], window[3], window[2]], color="black", lw=0.8, ls=":")
    ax_zoom.legend(loc="upper right", fontsize=7)
    fig.subplots_adjust(left=0.07, right=0.98, wspace=0.22)
    return fig


def trajectory_player(trajectory: torch.Tensor, *, times: Optional[Sequence[float]] = None,
                      reference: Optional[torch.Tensor] = None, window: Optional[Sequence[float]] = None,
                      interval_ms: int = 1000):
    """Play button and frame slider (linked) over :func:`trajectory_frame_figure`; ``interval_ms`` (default
    1000) must exceed one frame's render time (about 0.3-0.4 s CPU with 2000 points)."""
    return animation_panel(
        lambda frame: trajectory_frame_figure(trajectory, frame, times=times, window=window, reference=reference),
        int(torch.as_tensor(trajectory).shape[0]), interval_ms=interval_ms)
