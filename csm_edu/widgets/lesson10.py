r"""Lesson 10 panel: step through autoregressive sampling of an image, pixel by pixel.

:func:`csm_edu.experiments.images.sample_images` with ``record=True`` keeps the image after every pixel
(``states``, shape (D + 1, n, D), logit space); so does
:func:`csm_edu.experiments.images.autoregressive_states` for finished samples (the lesson passes the
inverse-CDF samples, which follow the model's own conditionals). :func:`sampling_step_figure` shows,
at step t, the pixels generated so far (the others in a colour no grey level has, ``MISSING_COLOR``)
and, for the first image, the conditional density q(x_d | x_<d) of the pixel d = order[t] that is
generated next, obtained by integrating the conditional score s_d along x_d
(:func:`csm_edu.experiments.images.conditional_density_on_grid`), with the value the sampler drew
for it. :func:`sampling_panel` wires an IntSlider over t.
"""
import matplotlib.pyplot as plt
import torch

from .. import checks, viz
from ..experiments import images
from .base import interactive_panel

MISSING_COLOR = "#4f8fd6"           # pixels not generated yet: blue, a colour no grey level has


def partial_images(states: torch.Tensor, step: int, order: torch.Tensor, image_shape) -> torch.Tensor:
    """Images (n, C, H, W) after ``step`` pixels: generated pixels as drawn (in [0, 1]), the others NaN (drawn as
    ``MISSING_COLOR``)."""
    n_steps = states.shape[0] - 1
    step = checks.positive_int(step, "step", minimum=0)
    if step > n_steps:
        raise ValueError(f"step must lie in 0..{n_steps}, got {step}")
    pixels = images.to_pixels(states[step].cpu(), image_shape).reshape(states.shape[1], -1).clone()
    pixels[:, order[step:]] = float("nan")
    return pixels.reshape(-1, *image_shape)


def sampling_step_figure(model, states: torch.Tensor, step: int, *, image_shape=(1, 8, 8), n_grid: int = 201):
    """Figure (partial images | density of the next pixel of image 0) and a readout; ``step`` in 0..D."""
    order = model.order.cpu()
    partial = partial_images(states, step, order, image_shape)
    fig, (ax_img, ax_density) = plt.subplots(1, 2, figsize=(8.5, 3.2), gridspec_kw=dict(width_ratios=[1, 1.3]))
    viz.image_grid(partial, ax=ax_img, title=f"after {step} of {len(order)} pixels\n(blue: not generated yet)")
    shown = ax_img.images[-1]
    shown.set_cmap(shown.get_cmap().with_extremes(bad=MISSING_COLOR))     # NaN pixels: not generated yet
    if step == len(order):
        ax_density.text(0.5, 0.5, "all pixels generated", ha="center", va="center")
        ax_density.axis("off")
        return fig, f"done: {len(order)} pixels, {states.shape[0] - 1} conditionals sampled"
    d = int(order[step])
    grid = torch.linspace(*images.BOUNDS, checks.positive_int(n_grid, "n_grid", minimum=3))
    density = images.conditional_density_on_grid(model, states[step, 0], d, grid)
    drawn = float(states[step + 1, 0, d])
    ax_density.plot(grid.numpy(), density.numpy(), lw=1.8)
    ax_density.axvline(drawn, color="C3", ls="--", label="value drawn")
    ax_density.set_xlabel(f"pixel {d} (logit space)")
    ax_density.set_ylabel("q(x_d | x_<d), image 1")
    ax_density.legend(fontsize=8)
    fig.tight_layout()
    row, col = divmod(d % (image_shape[1] * image_shape[2]), image_shape[2])
    drawn_pixel = float(images.to_pixels(torch.tensor([[drawn]]), (1, 1, 1)).flatten()[0])
    return fig, f"next pixel {d} (row {row}, column {col}): image 1 draws {drawn_pixel:.2f} on [0, 1]"


def sampling_panel(model, states: torch.Tensor, image_shape=(1, 8, 8)):
    """An IntSlider over the number of generated pixels (0..D) around :func:`sampling_step_figure`."""
    import ipywidgets as widgets
    slider = widgets.IntSlider(value=0, min=0, max=states.shape[0] - 1, step=1, description="pixels",
                               continuous_update=False)
    return interactive_panel(lambda step: sampling_step_figure(model, states, step, image_shape=image_shape), {"step": slider})
