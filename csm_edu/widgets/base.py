"""The helpers that turn a plain figure function into an ipywidgets panel or a Play animation."""
import html
import time
from typing import Callable, Dict

import matplotlib.pyplot as plt

from ..sampling import SamplerDivergedError


def interactive_panel(view: Callable, controls: Dict[str, "object"], columns: int = 3):
    """Wire ipywidgets ``controls`` (name -> widget) to ``view(**values)`` and return a VBox.

    ``view`` returns a Figure, or a tuple ``(figure, readout_text)``. The figure is shown inline
    in an Output under the controls and closed afterwards (no figure leaks). The library's own
    clear errors (``ValueError`` for a bad setting, ``SamplerDivergedError`` for a step size that
    blows up) are shown as a red readout: they are part of the lesson, not a crash.
    """
    import ipywidgets as widgets
    from IPython.display import display

    out = widgets.Output()
    readout = widgets.HTML()

    def render(**values):
        with out:
            out.clear_output(wait=True)
            try:
                result = view(**values)
            except (ValueError, SamplerDivergedError) as err:
                readout.value = f"<span style='color:#b00'>{html.escape(str(err))}</span>"
                return
            fig, text = (result if isinstance(result, tuple) else (result, ""))
            readout.value = f"<code style='white-space:pre-wrap'>{html.escape(text)}</code>" if text else ""  # keep spaces
            display(fig)
            plt.close(fig)

    widgets.interactive_output(render, controls)
    boxes = list(controls.values())
    rows = [widgets.HBox(boxes[i:i + columns]) for i in range(0, len(boxes), columns)]
    return widgets.VBox(rows + [readout, out])


def animation_panel(view: Callable, n_frames: int, *, name: str = "frame", value: int = 0,
                    interval_ms: int = 400, description: str = "frame"):
    """A Play button linked (jslink) to an IntSlider over ``n_frames`` frames, drawing ``view(**{name: i})``.

    The animation of the lessons (Langevin trajectories, training checkpoints, reverse diffusion):
    the slider works on its own, and Play steps it in the browser. Play never outruns the kernel:
    its interval is at least :data:`PLAY_MARGIN` times the time the first frame took to draw (plus
    100 ms for the browser to show it), whatever ``interval_ms`` asks, so frames are not dropped
    or queued up behind each other on a slow machine.
    """
    import ipywidgets as widgets

    if n_frames < 1:
        raise ValueError(f"n_frames must be >= 1, got {n_frames}; record at least one frame")
    last = n_frames - 1
    slider = widgets.IntSlider(value=value, min=0, max=last, step=1, description=description)
    start = time.perf_counter()
    panel = interactive_panel(view, {name: slider})        # draws the first frame now
    interval = play_interval_ms(time.perf_counter() - start, interval_ms)
    play = widgets.Play(value=value, min=0, max=last, step=1, interval=interval, description="play")
    widgets.jslink((play, "value"), (slider, "value"))
    return widgets.VBox([play, panel])


PLAY_MARGIN = 1.5


def play_interval_ms(frame_seconds: float, interval_ms: int) -> int:
    """The Play interval (ms): ``interval_ms``, or more where one frame takes longer to draw."""
    return max(int(interval_ms), int(1000 * PLAY_MARGIN * frame_seconds) + 100)
