r"""Lesson 11's denoiser: one noise-conditional AR-CSM trained by CSM on noisy images, and its shipped checkpoint.

The model sees x~ = x + sigma eps in the centred space [-1, 1] (:func:`csm_edu.experiments.images.to_denoise_space`)
with sigma drawn per image from ``sigmas``, and the noise level itself as its extra input (``cond_dim=1``,
the models' ``y=`` argument), so one model serves every noise level of the lesson. :func:`build_denoiser`
builds it from a settings dict with **every** ARCSM constructor option written out (a later change of a
default, e.g. of the head, must not change the shipped checkpoint's architecture).

Full mode (MNIST, the committed 5000-image subset) loads the checkpoint made by
``python -m csm_edu.experiments.denoising_study --make-checkpoint`` (:data:`FULL_SETTINGS`, deterministic
from the seed); quick mode (:data:`QUICK_SETTINGS`, the 8x8 digits) trains in the lesson.
The checkpoint stores the masked MADE weights as float16 values of their unmasked entries only (the
masks follow from the architecture), so the file stays at a few MB.
"""
from typing import Optional

import torch

from .. import config, resources
from ..models import ARCSM
from ..train import History
from . import images

SIGMAS = (0.2, 0.4, 0.6, 0.8)
# hidden / context_dim sized so that a laptop core trains the full model in about three minutes and the
# checkpoint stays small; head="local_mean" etc. written out on purpose (see the module docstring)
FULL_SETTINGS = dict(dataset="mnist", n_train=5000, hidden=256, n_blocks=2, context_dim=8, head_hidden=32, head="local_mean",
                     mean_range=6.0, max_variance=1.0, steps=1000, batch_size=64, lr=3e-3, sigmas=SIGMAS, seed=0)
QUICK_SETTINGS = dict(dataset="digits", n_train=None, hidden=256, n_blocks=2, context_dim=16, head_hidden=32, head="local_mean",
                      mean_range=6.0, max_variance=1.0, steps=150, batch_size=64, lr=3e-3, sigmas=SIGMAS, seed=0)
CHECKPOINT = "checkpoints/denoiser_mnist.pt"
CHECKPOINT_COMMAND = "python -m csm_edu.experiments.denoising_study --make-checkpoint"


def settings(quick: Optional[bool] = None) -> dict:
    """:data:`QUICK_SETTINGS` in quick mode (default: ``config.QUICK``), else :data:`FULL_SETTINGS` (a copy)."""
    return dict(QUICK_SETTINGS if (config.QUICK if quick is None else quick) else FULL_SETTINGS)


def image_config(st: dict) -> dict:
    """The :func:`csm_edu.experiments.images.image_config` of the settings' data set (image shape, levels)."""
    return images.image_config(st["dataset"], "cpu_quick" if st["dataset"] == "digits" else "cpu_full")


def build_denoiser(st: dict):
    """The untrained noise-conditional AR-CSM of ``st``, initialised from ``st["seed"]``; every option explicit."""
    cfg = image_config(st)
    dim = cfg["dim"]
    with config.seeded(st["seed"]):
        model = ARCSM(dim, hidden=st["hidden"], n_blocks=st["n_blocks"], context_dim=st["context_dim"],
                      order=list(range(dim)), cond_dim=1, head_hidden=st["head_hidden"], backbone=None,
                      head=st["head"], mean_range=st["mean_range"], max_variance=st["max_variance"])
    return model.set_support(bounds=images.BOUNDS, n_nodes=cfg["n_nodes"])


def load_data(st: dict, *, n_test: int = 64):
    """``(x_train, x_test)`` rows in the centred space: the settings' training images and the first ``n_test`` test images."""
    cfg = image_config(st)
    k_train, _ = images.load_integers(st["dataset"], "train", n=st["n_train"])
    k_test, _ = images.load_integers(st["dataset"], "test", n=n_test)
    return images.to_denoise_space(k_train, cfg["levels"]), images.to_denoise_space(k_test, cfg["levels"], seed=1)


def train_denoiser(st: dict, x_train: torch.Tensor, *, progress: bool = True):
    """Build (:func:`build_denoiser`) and train the denoiser of ``st`` by CSM on noisy ``x_train``:
    ``(model, history)``, the model on the CPU. The training noise is drawn from ``st["seed"]`` too."""
    model = build_denoiser(st)
    with config.seeded(st["seed"]):
        history = images.train_image_arcsm(model, x_train, steps=st["steps"], batch_size=st["batch_size"], lr=st["lr"],
                                           noise_levels=st["sigmas"], seed=st["seed"], progress=progress)
    return model.cpu().eval(), history


def _masks(model) -> dict:
    return {name[: -len("mask")] + "weight": m.bool() for name, m in model.named_buffers() if name.endswith(".mask")}


def make_checkpoint(path=None, *, progress: bool = True):
    """Train the full-mode denoiser (:data:`FULL_SETTINGS`) and write it to ``path`` (default: the package's
    :data:`CHECKPOINT`): float16 parameters (a masked weight as its unmasked entries only), the loss curve
    and the training time. Returns the path written."""
    st = FULL_SETTINGS
    x_train, _ = load_data(st)
    model, history = train_denoiser(st, x_train, progress=progress)
    masks = _masks(model)
    weights = {}
    for name, p in model.named_parameters():
        value = p.detach()[masks[name]] if name in masks else p.detach()
        weights[name] = value.to(torch.float16).clone()
    state = {"settings": {k: (list(v) if isinstance(v, tuple) else v) for k, v in st.items()},
             "command": CHECKPOINT_COMMAND, "weights": weights,
             "loss": torch.tensor(history.loss, dtype=torch.float32), "seconds": float(history.seconds)}
    return resources.save_checkpoint(state, CHECKPOINT, target=path)


def checkpoint_shipped() -> bool:
    """Whether the package holds :data:`CHECKPOINT`."""
    return resources.shipped(CHECKPOINT)


def load_checkpoint(path=None):
    """The shipped denoiser: ``(model, history)`` as :func:`train_denoiser` returns them, read with
    ``weights_only=True`` (float16 weights cast to float32, masked entries zero)."""
    state = resources.load_checkpoint(CHECKPOINT, source=path)
    saved = {k: v for k, v in state["settings"].items() if k in FULL_SETTINGS}   # options of older ARCSMs dropped
    st = dict(FULL_SETTINGS, **saved)
    st["sigmas"] = tuple(st["sigmas"])
    model = build_denoiser(st)
    masks = _masks(model)
    with torch.no_grad():
        for name, p in model.named_parameters():
            value = state["weights"][name].float()
            if name in masks:
                p.zero_()
                p[masks[name]] = value
            else:
                p.copy_(value)
    history = History(loss=state["loss"].tolist(), seconds=state["seconds"], steps=st["steps"],
                      batch_size=st["batch_size"])
    return model.eval(), history


if __name__ == "__main__":
    import sys
    sys.exit(resources.checkpoint_command(make_checkpoint, CHECKPOINT_COMMAND))
