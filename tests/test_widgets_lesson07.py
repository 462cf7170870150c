"""Lesson 07 panel: learned vs true conditional p(x2 | x1), headless at the slider's ends."""
import matplotlib
import pytest
import torch

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from csm_edu import data  # noqa: E402
from csm_edu.models import ARCSM, ExactConditionalScores, GaussianMADE  # noqa: E402
from csm_edu.experiments import toy_density
from csm_edu.widgets import lesson07  # noqa: E402

TARGET = data.toy_distribution("mixture")


@pytest.mark.parametrize("first_value", [-4.0, 4.0])          # the slider's min and max
@pytest.mark.parametrize("order", [[0, 1], [1, 0]])
def test_conditional_figure_at_the_slider_ends(first_value, order):
    torch.manual_seed(0)
    model = ARCSM(2, hidden=16, context_dim=4, head_hidden=16, order=order)
    fig, text = lesson07.conditional_figure(model, first_value, target=TARGET, baselines={"GaussianMADE": GaussianMADE(2, hidden=16, order=order)},
                                            n_grid=101)
    assert len(fig.axes[0].lines) == 3 and "true" in text and "GaussianMADE" in text
    plt.close(fig)


def test_the_quadrature_curve_of_the_exact_model_is_the_true_conditional():
    grid = torch.linspace(-6, 6, 201)
    learned = lesson07.conditional_log_density(ExactConditionalScores(TARGET).set_support(n_nodes=1024), 0.5, grid)
    x = torch.stack([torch.full_like(grid, 0.5), grid], 1)
    from csm_edu.models.arcsm import target_conditional_log_probs
    assert torch.allclose(learned, target_conditional_log_probs(TARGET, x)[:, 1], atol=1e-3)
    fig, text = lesson07.conditional_figure(ExactConditionalScores(TARGET), 0.5, target=TARGET)
    masses = [float(part.split("= ")[1]) for part in text.split(" | ")]
    assert masses[0] == pytest.approx(masses[1], abs=0.01)
    plt.close(fig)


def test_bad_values_raise_and_the_panel_builds():
    model = ARCSM(2, hidden=8, context_dim=2, head_hidden=8)
    with pytest.raises(ValueError, match="bounds"):
        lesson07.conditional_figure(model, 9.0)
    with pytest.raises(ValueError, match="2-D"):
        lesson07.conditional_log_density(ARCSM(3), 0.0, torch.zeros(3))
    panel = lesson07.conditional_panel(model, TARGET)
    assert panel is not None
    plt.close("all")


def test_lesson_helpers_train_evaluate_and_draw():
    x = data.make_toy("mixture", 200, generator=torch.Generator().manual_seed(0))
    models, histories = toy_density.train_lesson_models(x, steps=3, batch_size=64, hidden=8, n_components=2,
                                                     without_background=True, n_nodes=16)
    assert list(models) == ["AR-CSM", "AR-CSM, no background", "GaussianMADE", "MixtureMADE"]
    assert all(h.steps == 3 for h in histories.values())
    rows = toy_density.evaluate_models(models, x[:20], TARGET)
    assert [r["model"] for r in rows][-1] == "true density" and all(r["fisher"] >= 0 for r in rows)
    exact = toy_density.evaluate_models({"exact": ExactConditionalScores(TARGET).set_support(n_nodes=512)}, x[:20], None)
    assert exact[0]["log_lik"] == pytest.approx(float(TARGET.log_prob(x[:20]).mean()), abs=1e-3)
    assert "AR-CSM" in lesson07.format_table({"mixture": rows})
    torch.manual_seed(0)
    fig = lesson07.mask_figure(ARCSM(4, hidden=12, n_blocks=1, context_dim=2, head_hidden=8, order=[1, 3, 0, 2]))
    assert len(fig.axes) == 6                                    # five panels and the Jacobian's colourbar
    assert all(ax.get_xlabel() and ax.get_ylabel() for ax in fig.axes[:5])
    plt.close("all")


def test_train_lesson_models_can_train_one_model():
    x = data.make_toy("mixture", 200, generator=torch.Generator().manual_seed(0))
    models, histories = toy_density.train_lesson_models(x, steps=2, batch_size=32, hidden=8, names=["AR-CSM"], progress=False)
    assert list(models) == ["AR-CSM"] and list(histories) == ["AR-CSM"]
    with pytest.raises(ValueError, match="names"):
        toy_density.train_lesson_models(x, steps=2, names=["AR-CSM, no background"], progress=False)


def test_readout_entries_are_separated_and_the_cost_figure_labels_every_dim():
    fig, text = lesson07.conditional_figure(ExactConditionalScores(TARGET), 0.0, target=TARGET, n_grid=61)
    assert text.count(" | ") == 1 and "  " not in text
    plt.close(fig)
    rows = [dict(dim=d, objective=o, ms=float(d * (10 if o == "exact SM" else 1)), how=how)
            for d, how in [(2, "measured"), (8, "measured"), (32, "extrapolated")] for o in ("exact SM", "CSM")]
    rows = [r for r in rows if not (r["objective"] == "CSM" and r["how"] == "extrapolated")] + [
        dict(dim=32, objective="CSM", ms=32.0, how="measured")]
    fig = lesson07.cost_figure(rows)
    ax = fig.axes[0]
    assert [t.get_text() for t in ax.get_xticklabels()] == ["2", "8", "32"]
    assert all(not t.get_text() for t in ax.xaxis.get_minorticklabels())
    assert any("extrapolated" in t.get_text() for t in ax.get_legend().get_texts())
    plt.close(fig)


def test_grid_log_density_matches_the_per_point_quadrature():
    model = ExactConditionalScores(TARGET).set_support(n_nodes=512)
    g = torch.linspace(-4.0, 4.0, 9)
    z = torch.stack(torch.meshgrid(g, g, indexing="xy"), -1).reshape(-1, 2)
    fast = lesson07.grid_log_density(model)(z)
    assert torch.allclose(fast, TARGET.log_prob(z).float(), atol=2e-3, rtol=1e-3)
    baseline = GaussianMADE(2, hidden=8)
    assert lesson07.grid_log_density(baseline) == baseline.log_prob
