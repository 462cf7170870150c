"""widgets.base: the panel helper shows errors as a readout; Play never outruns the kernel's drawing."""
import time

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import pytest  # noqa: E402

from csm_edu.widgets import base  # noqa: E402


def _slow_view(seconds):
    def view(frame):
        time.sleep(seconds)
        fig, ax = plt.subplots()
        ax.plot([0, frame])
        return fig
    return view


def _play(box):
    return box.children[0]


def test_play_interval_is_the_requested_one_when_frames_draw_fast():
    assert _play(base.animation_panel(_slow_view(0.0), 3, interval_ms=400)).interval == 400


def test_play_interval_grows_to_the_measured_frame_time():
    play = _play(base.animation_panel(_slow_view(0.4), 3, interval_ms=200))
    assert play.interval >= int(1000 * base.PLAY_MARGIN * 0.4) + 100


@pytest.mark.parametrize("seconds, asked, expected", [(0.0, 400, 400), (0.2, 400, 400), (0.5, 400, 850)])
def test_play_interval_ms(seconds, asked, expected):
    assert base.play_interval_ms(seconds, asked) == expected


def test_bad_setting_is_a_red_readout_not_a_crash():
    import ipywidgets as widgets

    def view(value):
        raise ValueError("value must be positive")

    box = base.interactive_panel(view, {"value": widgets.FloatSlider(value=1.0)})
    readout = box.children[-2]
    assert "value must be positive" in readout.value and "#b00" in readout.value
