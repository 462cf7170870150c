"""Every panel in csm_edu.widgets, built headless with tiny inputs, driven to each slider's min and max.

A panel's callback runs synchronously when a control's value changes, so setting the value is what
a student's drag does. A panel fails here if its callback raises, or shows the red error readout of
:func:`csm_edu.widgets.base.interactive_panel` anywhere in a slider's range, or draws nothing.
A new ``*_panel`` / ``*_animation`` / ``*_player`` function without a factory below fails
``test_every_panel_has_a_factory``.
"""
import importlib
import inspect
import pkgutil

import matplotlib

matplotlib.use("Agg")
import ipywidgets as widgets  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402
from IPython import display as ipy_display  # noqa: E402

import csm_edu.widgets as widget_pkg  # noqa: E402
from csm_edu import distributions, objectives  # noqa: E402
from csm_edu.models import EnergyMLP, NoiseConditionalScoreNet  # noqa: E402

SLIDERS = (widgets.IntSlider, widgets.FloatSlider, widgets.FloatLogSlider, widgets.SelectionSlider)


def _lesson(name):
    return importlib.import_module(f"csm_edu.widgets.{name}")


def _mixture():
    return distributions.ring_of_gaussians(4, 2.0, 0.4)


def _lesson03():
    m = _lesson("lesson03")
    target = _mixture()
    x = target.sample(256, generator=torch.Generator().manual_seed(0))
    from csm_edu.experiments import snapshots
    snaps, _ = snapshots.train_with_snapshots(EnergyMLP(2, 16), lambda mod, b: objectives.exact_score_matching(mod.score, b),
                                      x, true_score=target, x_eval=x[:64], steps=10, n_snapshots=3, density_grid=20, quiver_grid=6)
    return m.training_progress_panel(snaps)


def _lesson05(kind):
    m = _lesson("lesson05")
    from csm_edu.experiments import sweeps
    sweep = sweeps.train_sigma_sweep(sweeps.three_blobs(), [0.1, 0.8], n_data=300, n_steps=5, hidden=8, n_eval=100,
                                grid_n=16, quiver_n=5)
    return getattr(m, kind)(sweep)


def _arcsm():
    from csm_edu.models import ARCSM
    torch.manual_seed(0)
    return ARCSM(2, hidden=16, n_blocks=1, context_dim=4, head_hidden=8)


def _scaling_rows():
    return [dict(dim=d, objective=o, ms=float(d * (i + 1)), saved_mb=1.0, peak_mb=float("nan"), how="measured")
            for d in (2, 8) for i, o in enumerate(("exact SM", "SSM", "SSM-VR", "DSM", "CSM"))]


def _lesson13(kind):
    m = _lesson("lesson13")
    if kind == "forward_noising_panel":
        return m.forward_noising_panel()
    sde = m.default_sde("VE")
    target = _mixture()
    if kind == "score_comparison_panel":
        from csm_edu.diffusion import marginal_score_fn
        return m.score_comparison_panel(marginal_score_fn(target, sde), target, sde)
    return m.trajectory_player(torch.randn(4, 10, 2))


def _lesson10():
    from csm_edu.experiments import images
    from csm_edu.models import ARCSM
    torch.manual_seed(0)
    model = ARCSM(16, hidden=16, n_blocks=1, context_dim=4, head_hidden=8)
    cfg = dict(langevin_steps=2, langevin_step_size=1e-3, langevin_sigmas=(3.0, 1.0))
    _, states = images.sample_images(model, 2, cfg, generator=torch.Generator().manual_seed(0), record=True)
    return _lesson("lesson10").sampling_panel(model, states, (1, 4, 4))


def _lesson11():
    from csm_edu.experiments import images
    from csm_edu.models import ARCSM
    torch.manual_seed(0)
    model = ARCSM(16, hidden=16, n_blocks=1, context_dim=4, head_hidden=8, cond_dim=1)
    results = images.denoising_sweep(model, torch.rand(4, 16) * 2 - 1, (0.2, 0.8), n_nodes=8)
    return _lesson("lesson11").denoising_panel(results, (1, 4, 4))


FACTORIES = {
    "lesson00.gaussian_1d_panel": lambda: _lesson("lesson00").gaussian_1d_panel(),
    "lesson01.temperature_panel": lambda: _lesson("lesson01").temperature_panel(_mixture().energy, resolution=30),
    "lesson02.langevin_panel": lambda: _lesson("lesson02").langevin_panel(
        _lesson("lesson02").LangevinExplorer(n_chains=30), max_steps=50),
    "lesson02.trajectory_animation": lambda: _lesson("lesson02").trajectory_animation(torch.randn(5, 8, 2)),
    "lesson03.training_progress_panel": _lesson03,
    "lesson04.hutchinson_panel": lambda: _lesson("lesson04").hutchinson_panel(max_projections=8, dim=4, n_trials=200),
    "lesson05.sigma_sweep_panel": lambda: _lesson05("sigma_sweep_panel"),
    "lesson05.tweedie_panel": lambda: _lesson05("tweedie_panel"),
    "lesson06.annealed_panel": lambda: _lesson("lesson06").annealed_panel(
        NoiseConditionalScoreNet(2, 16, 2), distributions.two_modes(), max_levels=3, max_steps=5, n=30),
    "lesson07.conditional_panel": lambda: _lesson("lesson07").conditional_panel(_arcsm(), _mixture()),
    "lesson08.normaliser_spread_panel": lambda: _lesson("lesson08").normaliser_spread_panel(),
    "lesson09.scaling_panel": lambda: _lesson("lesson09").scaling_panel(_scaling_rows()),
    "lesson10.sampling_panel": _lesson10,
    "lesson11.denoising_panel": _lesson11,
    "lesson12.estimator_panel": lambda: _lesson("lesson12").estimator_panel(
        importlib.import_module("csm_edu.experiments.vae_study").fit_estimators(sample_sizes=(20, 60), n_steps=5, n_test=50)),
    "lesson13.forward_noising_panel": lambda: _lesson13("forward_noising_panel"),
    "lesson13.score_comparison_panel": lambda: _lesson13("score_comparison_panel"),
    "lesson13.trajectory_player": lambda: _lesson13("trajectory_player"),
}


# Panels whose slider range deliberately reaches a step size that diverges: the lesson shows the
# sampler's clear "Lower step_size" message in the readout there (and nowhere else).
SHOWS_DIVERGENCE = {"lesson02.langevin_panel"}


def _panel_functions():
    names = []
    for info in pkgutil.iter_modules(widget_pkg.__path__):
        if not info.name.startswith("lesson"):
            continue
        module = _lesson(info.name)
        for fname, fn in inspect.getmembers(module, inspect.isfunction):
            if fn.__module__ == module.__name__ and fname.endswith(("_panel", "_animation", "_player")):
                names.append(f"{info.name}.{fname}")
    return sorted(names)


def test_every_panel_has_a_factory():
    missing = [n for n in _panel_functions() if n not in FACTORIES]
    assert not missing, f"add a tiny factory for these panels to FACTORIES: {missing}"


def _walk(widget):
    yield widget
    for child in getattr(widget, "children", ()):
        yield from _walk(child)


@pytest.mark.parametrize("name", sorted(FACTORIES))
def test_panel_at_each_slider_min_and_max(name, monkeypatch):
    if name not in _panel_functions():
        pytest.skip(f"{name} is not in csm_edu.widgets")
    shown = []
    monkeypatch.setattr(ipy_display, "display", lambda *objs, **kw: shown.extend(objs))
    panel = FACTORIES[name]()
    parts = list(_walk(panel))
    sliders = [w for w in parts if isinstance(w, SLIDERS)]
    readouts = [w for w in parts if isinstance(w, widgets.HTML)]
    assert sliders, f"{name} has no slider"
    assert shown, f"{name} drew nothing when built"
    for slider in sliders:
        if isinstance(slider, widgets.SelectionSlider):
            ends = (slider.options[0], slider.options[-1])
        elif isinstance(slider, widgets.FloatLogSlider):  # min and max are exponents of base
            ends = (slider.base ** slider.min, slider.base ** slider.max)
        else:
            ends = (slider.min, slider.max)
        for value in ends:
            before, changed = len(shown), slider.value != value
            slider.value = value
            assert slider.value == pytest.approx(value, rel=1e-6) if isinstance(value, float) else slider.value == value
            messages = [r.value for r in readouts if "color:#b00" in r.value]
            diverged = name in SHOWS_DIVERGENCE and any("Lower step_size" in m for m in messages)
            assert diverged or not messages, f"{name}: {slider.description}={value} shows an error: {messages}"
            assert len(shown) > before or not changed or diverged, f"{name}: {slider.description}={value} drew nothing"
    matplotlib.pyplot.close("all")
