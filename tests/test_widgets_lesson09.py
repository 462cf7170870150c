"""Lesson 09 helpers, headless: the measurement progress bar and the panel's plain-text log ticks."""
import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from csm_edu.experiments import scaling  # noqa: E402
from csm_edu.widgets import lesson09  # noqa: E402


def test_measure_bar_counts_the_measurements(capsys):
    with lesson09.MeasureBar(4, desc="timing") as bar:
        rows = scaling.measure([2], names=("DSM", "CSM"), batch_size=8, hidden=8, repeats=1, progress=bar)
        assert bar.bar.n == len(rows) == 2
    assert "timing" in capsys.readouterr().err
    with lesson09.MeasureBar(2, disable=True) as bar:          # quick mode: silent
        bar("D=2 DSM 1.0 ms")
    assert capsys.readouterr().err == ""


def test_log_ticks_are_plain_text():
    assert lesson09._power_of_ten(1000.0) == "10\u00b3" and lesson09._power_of_ten(0.01) == "10\u207b\u00b2"
    assert lesson09._power_of_ten(20.0) == "20" and lesson09._power_of_ten(0.0) == ""
    rows = [dict(dim=d, objective=o, ms=float(d), saved_mb=1.0, peak_mb=float("nan"), how="measured")
            for d in (2, 8) for o in scaling.OBJECTIVE_NAMES]
    fig, readout = lesson09.scaling_view(rows)
    fig.canvas.draw()
    labels = [t.get_text() for t in fig.axes[0].get_yticklabels()]
    assert labels and not any("$" in t for t in labels) and "D = 8" in readout
    plt.close(fig)


def test_panel_builds_with_every_max_dim_drawn():
    rows = [dict(dim=d, objective=o, ms=float(d), saved_mb=1.0, peak_mb=float("nan"), how="measured")
            for d in (2, 8, 32) for o in scaling.OBJECTIVE_NAMES]
    panel = lesson09.scaling_panel(rows)
    assert panel is not None
    plt.close("all")
