r"""AR-CSM on images (lessons 10-11): configurations by device, training, bits/dim, sampling,
denoising and anomaly detection, for digits, MNIST, CIFAR-10 and CelebA.

**One pixel space for every likelihood.** Every data set starts from integer pixels
k in {0, ..., L-1} (L = 17 for the 8x8 digits, 256 for MNIST, CIFAR-10, CelebA;
:func:`load_integers`). The continuous models (AR-CSM, GaussianMADE) see uniformly dequantised
pixels y = (k + u) / L in logit space z = logit(lam + (1 - 2 lam) y) with lam = 0.05
(``LOGIT_LAMBDA``, the convention of :mod:`csm_edu.experiments.scaling`); every such z lies in
|z| <= logit(0.975) = 2.94 < 3, so the AR-CSM density normalised by quadrature on the box
``BOUNDS`` = (-3, 3)^D is a proper density there. Their bits/dim,

.. math:: \mathrm{bpd} = -\frac{\log p_Z(z) + \log|\det dz/dy|}{D\log 2} + \log_2 L,

(:func:`csm_edu.data.image_data.bits_per_dim`) is that of the dequantised integers k + u, an upper
bound on a discrete model's. The PixelCNN++ baseline is a discrete model of the same integers k,
bpd = -log2 P(k) / D. All numbers are therefore bits per pixel integer, with the same L; a
uniform model scores log2 L (4.09 for digits, 8 for bytes).

**One model interface.** Every function here asks a model only for ``log_prob(x)`` and
``sample(n, generator=...)`` (DESIGN.md, Contracts), on the model's own data space: a discrete
model declares it by its ``levels`` (:class:`~csm_edu.models.PixelCNNPP`: x = k / (L - 1), log_prob a
log mass), every other model is a density on the logit rows z. :func:`integers_to_model` and
:func:`model_to_pixels` are the one place that maps integers to a model's space and back; the
AR-CSMs built here carry their quadrature box ``BOUNDS`` and ``n_nodes`` (:func:`make_arcsm`).

**Denoising space.** Denoising works in the centred space x = 2y - 1 in [-1, 1]
(``DENOISE_SCALE``), the rescaling in which we read the paper's sigma = 0.6; PSNR is measured on
[0, 1] pixels, PSNR = 10 log10(1 / MSE).
"""
import copy
import math
from typing import Callable, Dict, Optional, Sequence, Tuple

import torch

from .. import checks, config, objectives
from .timing import time_per_step
from ..data import image_data
from ..denoise import tweedie_denoise
from ..metrics import auroc
from ..models import ARCSM, GaussianMADE
from ..models.arcsm import AutoregressiveScoreModel
from ..models.pixelcnn import PixelCNNContext, PixelCNNPP
from ..quadrature import joint_score
from .stability import DIGITS_BOUNDS, DIGITS_LOGIT_LAMBDA
from ..train import History, fit

DATASETS = ("digits", "mnist", "cifar10", "celeba")
MODES = ("cpu_quick", "cpu_full", "gpu")
BACKBONES = ("made", "pixelcnn")
BASELINES = ("gaussian_made", "pixelcnn++")
LOGIT_LAMBDA = DIGITS_LOGIT_LAMBDA          # 0.05 for every data set: |z| <= 2.94
BOUNDS = DIGITS_BOUNDS                      # (-3, 3): holds every dequantised pixel in logit space
DENOISE_SCALE = "centered"
DENOISE_SIGMA = 0.6
DENOISE_BOUNDS = (-5.0, 5.0)                # [-1, 1] plus more than 6 sigma of noise at sigma <= 0.6

_IMAGE = {"digits": dict(image_shape=(1, 8, 8), levels=17), "mnist": dict(image_shape=(1, 28, 28), levels=256),
          "cifar10": dict(image_shape=(3, 32, 32), levels=256), "celeba": dict(image_shape=(3, 32, 32), levels=256)}

# Model sizes and schedules per data set and machine. made_* size the ResMADE backbone,
# pixelcnn_* the PixelCNNContext backbone (also used by the PixelCNN++ baseline); *_steps are Adam
# steps; n_nodes is the quadrature's nodes per side; langevin_* the autoregressive sampler
# (steps per level, last step size, and the levels of its step-size schedule: the AR-CSMs are not
# noise-conditional, so each "sigma" only scales the step, alpha_i = step * (sigma_i / sigma_last)^2).
# The GPU settings are sized for a lesson run of the order of an hour per data set on one
# modern GPU; they are NOT measured yet (no GPU was available when they were written):
# time them with benchmarks/bench_images.py --device cuda --mode gpu and adjust.
_SMALL = dict(context_dim=16, head_hidden=32, made_hidden=256, made_blocks=2, pixelcnn_channels=32, pixelcnn_blocks=2,
              first_kernel=5, n_mixtures=5, batch_size=128, lr=3e-3, n_nodes=64, n_test=359,
              langevin_steps=40, langevin_step_size=1e-3, langevin_sigmas=(10.0, 3.0, 1.0))
CONFIGS: Dict[str, Dict[str, dict]] = {
    "digits": {
        "cpu_quick": dict(_SMALL, csm_steps=300, pixelcnn_steps=100, mle_steps=300, n_test=200, langevin_step_size=3e-2),
        # longer CSM runs at lr 3e-3 were measured to wreck the test likelihood (3000 steps: 10-22 bits/dim)
        # Langevin steps 30x the _SMALL default, measured for the local-mean head (64 samples, MMD^2 to test images,
        # MADE / PixelCNN): 1e-3 -> 0.009 / 0.024, 3e-2 -> 0.005 / 0.011 (inverse CDF, the model itself: 0.003 / 0.005)
        "cpu_full": dict(_SMALL, csm_steps=1000, pixelcnn_steps=800, mle_steps=1500, langevin_step_size=3e-2),
        "gpu": dict(_SMALL, csm_steps=1500, pixelcnn_steps=1500, mle_steps=2000, lr=1e-3, n_nodes=128,
                    pixelcnn_channels=64, pixelcnn_blocks=4),
    },
    "mnist": {
        "cpu_quick": dict(_SMALL, n_train=1000, n_test=100, csm_steps=100, pixelcnn_steps=50, mle_steps=100,
                          made_hidden=512, langevin_steps=10),
        "cpu_full": dict(_SMALL, n_train=5000, n_test=500, csm_steps=1000, pixelcnn_steps=300, mle_steps=1000,
                         made_hidden=512, batch_size=64, langevin_steps=20),
        "gpu": dict(_SMALL, n_train=None, n_test=10000, csm_steps=20000, pixelcnn_steps=20000, mle_steps=20000,
                    made_hidden=1024, made_blocks=4, context_dim=32, head_hidden=64, pixelcnn_channels=128,
                    pixelcnn_blocks=8, first_kernel=7, batch_size=256, lr=1e-3, n_nodes=64, langevin_steps=20),
    },
    "cifar10": {
        "gpu": dict(_SMALL, n_train=None, n_test=10000, csm_steps=20000, pixelcnn_steps=20000, mle_steps=20000,
                    made_hidden=1024, made_blocks=4, context_dim=16, head_hidden=64, pixelcnn_channels=160,
                    pixelcnn_blocks=12, first_kernel=7, n_mixtures=10, batch_size=64, lr=5e-4, n_nodes=64,
                    langevin_steps=20),
    },
    "celeba": {
        "gpu": dict(_SMALL, n_train=None, n_test=10000, csm_steps=20000, pixelcnn_steps=20000, mle_steps=20000,
                    made_hidden=1024, made_blocks=4, context_dim=16, head_hidden=64, pixelcnn_channels=160,
                    pixelcnn_blocks=12, first_kernel=7, n_mixtures=10, batch_size=64, lr=5e-4, n_nodes=64,
                    langevin_steps=20),
    },
}


def default_mode(device: Optional[torch.device] = None) -> str:
    """``"gpu"`` on CUDA, else ``"cpu_quick"`` in quick mode (``CSM_EDU_QUICK=1``) and ``"cpu_full"`` otherwise."""
    device = torch.device(device) if device is not None else config.device()
    if device.type == "cuda":
        return "gpu"
    return "cpu_quick" if config.QUICK else "cpu_full"


def image_config(dataset: str, mode: Optional[str] = None) -> dict:
    """The configuration of ``dataset`` for ``mode`` (default :func:`default_mode`), with its image facts.

    Adds ``dataset``, ``mode``, ``image_shape``, ``levels``, ``dim``. CIFAR-10 and CelebA have a
    ``"gpu"`` configuration only (a CPU would take days); asking for another raises ValueError.
    """
    dataset = checks.one_of(dataset, "dataset", DATASETS)
    mode = default_mode() if mode is None else checks.one_of(mode, "mode", MODES)
    if mode not in CONFIGS[dataset]:
        raise ValueError(f"{dataset} has configurations {sorted(CONFIGS[dataset])} only, not {mode!r}; "
                         f"run it on a GPU (mode='gpu')")
    cfg = copy.deepcopy(CONFIGS[dataset][mode])
    cfg.update(_IMAGE[dataset], dataset=dataset, mode=mode, dim=math.prod(_IMAGE[dataset]["image_shape"]))
    return cfg


# ----------------------------------------------------------------------------- data

def dataset_available(dataset: str) -> Tuple[bool, str]:
    """(True, "") when ``dataset`` can be loaded offline, else (False, the loader's explanation)."""
    dataset = checks.one_of(dataset, "dataset", DATASETS)
    try:
        load_integers(dataset, "train", n=1)
    except (FileNotFoundError, ImportError) as err:
        return False, str(err)
    return True, ""


def load_integers(dataset: str, split: str = "train", n: Optional[int] = None, seed: int = 0):
    """Integer pixels ``k`` (int64, ``(n, C, H, W)``, values 0..L-1) and labels of a data set split.

    digits: scikit-learn's 8x8 digits (split by ``seed``, 1438/359); mnist: the committed subset
    or the full set (:func:`csm_edu.data.image_data.load_mnist`); cifar10 / celeba: the downloaded
    files (FileNotFoundError with the download command when absent).
    """
    dataset = checks.one_of(dataset, "dataset", DATASETS)
    levels = _IMAGE[dataset]["levels"]
    if dataset == "digits":
        x, labels = image_data.load_digits(split, dequantize=False, scale="unit", n=n)
    elif dataset == "mnist":
        x, labels = image_data.load_mnist(split, n=n, dequantize=False, scale="unit")
    elif dataset == "cifar10":
        x, labels = image_data.load_cifar10(split=split, n=n, dequantize=False, scale="unit")
    else:
        x, labels = image_data.load_celeba(split=split, n=n, dequantize=False, scale="unit")
    return torch.round(x * (levels - 1)).long(), labels


def to_logit_space(k: torch.Tensor, levels: int, seed: int = 0) -> torch.Tensor:
    """Integers (n, ...) -> dequantised logit-space rows (n, D), lam = ``LOGIT_LAMBDA`` (module docstring)."""
    z = image_data.preprocess(k, levels, dequantize=True, scale="logit", generator=torch.Generator().manual_seed(seed),
                             logit_lambda=LOGIT_LAMBDA)
    return z.reshape(len(z), -1)


def to_denoise_space(k: torch.Tensor, levels: int, seed: int = 0) -> torch.Tensor:
    """Integers (n, ...) -> dequantised rows (n, D) in the centred space [-1, 1] of the denoising experiments."""
    x = image_data.preprocess(k, levels, dequantize=True, scale=DENOISE_SCALE, generator=torch.Generator().manual_seed(seed))
    return x.reshape(len(x), -1)


def to_pixels(z: torch.Tensor, image_shape: Sequence[int]) -> torch.Tensor:
    """Logit-space rows (n, D) -> images (n, C, H, W) in [0, 1] for plotting."""
    return image_data.to_unit(z, "logit", LOGIT_LAMBDA).reshape(len(z), *image_shape)


# ----------------------------------------------------------------------------- models and training

def make_arcsm(backbone: str, cfg: dict, cond_dim: int = 0) -> ARCSM:
    """AR-CSM sized by ``cfg`` (:func:`image_config`) with a ``"made"`` (flattened image) or ``"pixelcnn"`` backbone.

    Its density lives on the box ``BOUNDS`` with ``cfg["n_nodes"]`` quadrature nodes (:meth:`~csm_edu.models.ARCSM.set_support`).
    """
    backbone = checks.one_of(backbone, "backbone", BACKBONES)
    if backbone == "made":
        model = ARCSM(cfg["dim"], hidden=cfg["made_hidden"], n_blocks=cfg["made_blocks"], context_dim=cfg["context_dim"],
                      head_hidden=cfg["head_hidden"], cond_dim=cond_dim)
    else:
        net = PixelCNNContext(cfg["image_shape"], context_dim=cfg["context_dim"], hidden_channels=cfg["pixelcnn_channels"], n_blocks=cfg["pixelcnn_blocks"],
                              first_kernel=cfg["first_kernel"], cond_dim=cond_dim)
        model = ARCSM(cfg["dim"], context_dim=cfg["context_dim"], head_hidden=cfg["head_hidden"], cond_dim=cond_dim,
                      backbone=net)
    return model.set_support(bounds=BOUNDS, n_nodes=cfg["n_nodes"])


def make_baseline(name: str, cfg: dict):
    """MLE baseline sized like the AR-CSM of ``cfg``: ``"gaussian_made"`` (continuous) or ``"pixelcnn++"`` (discrete)."""
    name = checks.one_of(name, "name", BASELINES)
    if name == "gaussian_made":
        return GaussianMADE(cfg["dim"], hidden=cfg["made_hidden"], n_blocks=cfg["made_blocks"])
    return PixelCNNPP(cfg["image_shape"], n_mixtures=cfg["n_mixtures"], levels=cfg["levels"], hidden_channels=cfg["pixelcnn_channels"],
                      n_blocks=cfg["pixelcnn_blocks"], first_kernel=cfg["first_kernel"])


def csm_loss(noise_sigma: float = 0.0, noise_levels: Optional[Sequence[float]] = None) -> Callable:
    r"""loss_fn(model, x) for :func:`csm_edu.train.fit`: composite score matching on (noisy) data.

    ``noise_sigma > 0``: CSM on x~ = x + sigma eps, fresh eps each batch, so the model learns the
    conditional scores of the *noised* density q_sigma (for Tweedie denoising). ``noise_levels``:
    a noise-conditional model (``cond_dim=1``): each row draws sigma from the levels and the
    model sees y = sigma.
    """
    if noise_levels is not None:
        levels = torch.as_tensor([checks.positive(s, "noise_levels entry") for s in noise_levels])

        def loss(model, x):
            sigma = levels[torch.randint(len(levels), (len(x),))].to(x)[:, None]
            return objectives.composite_score_matching(model, x + sigma * torch.randn_like(x), y=sigma)
        return loss
    sigma = checks.positive(noise_sigma, "noise_sigma") if noise_sigma != 0 else 0.0
    return lambda model, x: objectives.composite_score_matching(model, x + sigma * torch.randn_like(x) if sigma else x)


def dequantizing(loss_fn: Callable, levels: int) -> Callable:
    r"""Wrap ``loss_fn(model, z)`` to take integer pixel rows k (as floats) and dequantise every batch afresh.

    z = logit(lam + (1 - 2 lam) (k + u) / L) with a new u ~ U[0, 1)^D per batch (lam = ``LOGIT_LAMBDA``). A
    fixed draw of u lets a flexible model put density spikes on the training set's own noise values
    (its test bits/dim then rise while the training loss keeps falling); fresh noise fits the
    dequantised density itself.
    """
    levels = checks.positive_int(levels, "levels", minimum=2)

    def loss(model, k):
        y = ((k + torch.rand_like(k)) / levels).clamp(max=1.0 - 2.0 ** -24)
        return loss_fn(model, image_data.to_model_space(y, "logit", LOGIT_LAMBDA))
    return loss


def train_image_arcsm(model: AutoregressiveScoreModel, x: torch.Tensor, *, steps: int, batch_size: int = 128,
                      lr: float = 3e-3, noise_sigma: float = 0.0, noise_levels: Optional[Sequence[float]] = None,
                      device=None, seed: int = 0, progress: bool = False, levels: Optional[int] = None) -> History:
    """Train an AR-CSM by composite score matching (:func:`csm_loss`); returns the History.

    ``x``: model-space rows (n, D); or, with ``levels``, integer pixels (n, ...) dequantised into
    logit space afresh at every batch (:func:`dequantizing`), the way to train for bits/dim.
    """
    loss_fn = csm_loss(noise_sigma, noise_levels)
    if levels is not None:
        loss_fn, x = dequantizing(loss_fn, levels), torch.as_tensor(x).reshape(len(x), -1).float()
    return fit(model, loss_fn, x, steps=steps, batch_size=batch_size, lr=lr,
               generator=torch.Generator().manual_seed(seed), device=device, progress=progress)


def mle_loss(model, x: torch.Tensor) -> torch.Tensor:
    """loss_fn(model, x) for an MLE baseline: the model's own maximum-likelihood ``loss(x)``
    (mean negative log-likelihood; PixelCNN++: mean bits/dim, the same objective rescaled)."""
    return model.loss(x)


def _is_discrete(model, levels: int) -> bool:
    """True for a discrete model of ``levels`` grey levels (it declares ``levels``), False for a density on logit z."""
    model_levels = getattr(model, "levels", None)      # the declared data space (module docstring), not a type test
    if model_levels is not None and model_levels != levels:
        raise ValueError(f"the model is discrete on {model_levels} levels but the data have levels={levels}")
    return model_levels is not None


def integers_to_model(model, k: torch.Tensor, levels: int, seed: int = 0) -> torch.Tensor:
    """Integer pixels k (n, ...) -> rows (n, D) in ``model``'s data space: k/(L-1) for a discrete model,
    else dequantised logit rows (:func:`to_logit_space`, noise seeded by ``seed``)."""
    if _is_discrete(model, levels):
        return torch.as_tensor(k).reshape(len(k), -1).float() / (levels - 1)
    return to_logit_space(k, levels, seed)


def model_to_pixels(model, x: torch.Tensor, levels: int, image_shape: Sequence[int]) -> torch.Tensor:
    """Rows (or images) in ``model``'s data space -> images (n, C, H, W) in [0, 1] (logit rows clamped to ``BOUNDS``)."""
    if _is_discrete(model, levels):
        return x.reshape(len(x), *image_shape)
    return to_pixels(x.clamp(*BOUNDS), image_shape)


def train_baseline(model, k: torch.Tensor, levels: int, *, steps: int, batch_size: int = 128, lr: float = 3e-3,
                   device=None, seed: int = 0, progress: bool = False) -> History:
    """Train an MLE baseline by maximum likelihood (:func:`mle_loss`) on integer pixels ``k``.

    A discrete model sees k/(L-1); a continuous one sees logit z, dequantised afresh each batch (:func:`dequantizing`).
    """
    rows = k.reshape(len(k), -1).float()
    if _is_discrete(model, levels):
        loss_fn, data = mle_loss, rows / (levels - 1)
    else:
        loss_fn, data = dequantizing(mle_loss, levels), rows
    return fit(model, loss_fn, data, steps=steps, batch_size=batch_size, lr=lr,
               generator=torch.Generator().manual_seed(seed), device=device, progress=progress)


def _device_of(model) -> torch.device:
    try:
        return next(model.parameters()).device
    except StopIteration:
        return torch.device("cpu")


def model_bits_per_dim(model, k: torch.Tensor, levels: int, *, seed: int = 1, chunk_size: int = 500) -> torch.Tensor:
    r"""Bits/dim per image ``(n,)`` of integer pixels ``k`` under ``model`` (module docstring), from ``model.log_prob``.

    Discrete model (declares ``levels``): bpd = -log P(k) / (D log 2) with x = k/(L-1). Density on
    logit z (AR-CSM by quadrature on its support, GaussianMADE exactly, ...): the dequantised
    bits/dim of :func:`csm_edu.data.image_data.bits_per_dim`, noise seeded by ``seed``. Rows go
    through in chunks of ``chunk_size`` (chunk i dequantised with seed + i).
    """
    levels = checks.positive_int(levels, "levels", minimum=2)
    device = _device_of(model)
    out = []
    for i, rows in enumerate(torch.split(torch.as_tensor(k), checks.positive_int(chunk_size, "chunk_size"))):
        x = integers_to_model(model, rows, levels, seed + i)
        with torch.no_grad():
            log_p = model.log_prob(x.to(device)).cpu()
        if _is_discrete(model, levels):
            out.append(-log_p / (x.shape[1] * math.log(2.0)))
        else:
            out.append(image_data.bits_per_dim(log_p, x, scale="logit", levels=levels, logit_lambda=LOGIT_LAMBDA))
    return torch.cat(out)


def quadrature_error_bits(model: AutoregressiveScoreModel, k: torch.Tensor, levels: int, *,
                          n_nodes: Optional[int] = None, seed: int = 1) -> float:
    """Mean estimated quadrature error of an AR-CSM's log-likelihood on ``BOUNDS``, in bits/dim (error / (D log 2)).

    The image models' density lives on the box ``BOUNDS``, which holds every possible data point
    (module docstring), so the error is the quadrature's resolution error on it (``tails=False``):
    mass the unnormalised model would put outside is not part of that density.
    ``n_nodes`` defaults to the model's own (:meth:`~csm_edu.models.ARCSM.set_support`).
    """
    z = to_logit_space(k, levels, seed).to(_device_of(model))
    _, error = model.log_prob(z, bounds=BOUNDS, n_nodes=n_nodes, return_error=True, tails=False)
    return float(error.mean()) / (z.shape[1] * math.log(2.0))


def bits_per_dim_table(models: Dict[str, object], k: torch.Tensor, levels: int) -> Dict[str, float]:
    """Mean test bits/dim of each model (name -> model), plus ``"uniform"`` = log2 L, as name -> float."""
    table = {"uniform": math.log2(levels)}
    for name, model in models.items():
        table[name] = float(model_bits_per_dim(model, k, levels).mean())
    return table


def markdown_table(table: Dict[str, float], value: str = "test bits/dim") -> str:
    """A {name: number} dict as a two-column Markdown table."""
    return "\n".join([f"| model | {value} |", "|---|---:|"] + [f"| {k} | {v:.3f} |" for k, v in table.items()])


def images_per_second(model, loss_fn: Callable, x: torch.Tensor, *, repeats: int = 3) -> float:
    """Training throughput: batch size / median time of one loss + backward step (:func:`csm_edu.experiments.timing.time_per_step`)."""
    ms = time_per_step(loss_fn, model, x, repeats=repeats, warmup=1)
    return len(x) / (ms / 1000.0)


# ----------------------------------------------------------------------------- sampling

def langevin_options(n: int, dim: int, cfg: dict) -> dict:
    """``sample`` options of an AR-CSM for reflected autoregressive Langevin with ``cfg``'s settings, n chains from z = 0."""
    return dict(method="langevin", bounds=BOUNDS, x0=torch.zeros(n, dim), steps=cfg["langevin_steps"],
                step_size=cfg["langevin_step_size"], sigmas=cfg["langevin_sigmas"])


def sample_images(model: AutoregressiveScoreModel, n: int, cfg: dict, *, generator: Optional[torch.Generator] = None,
                  record: bool = False):
    r"""Autoregressive Langevin with a step-size schedule (:func:`csm_edu.sampling.autoregressive_langevin`).

    Starts every pixel at z = 0 (mid-grey), runs ``cfg["langevin_steps"]`` steps at each level of
    ``cfg["langevin_sigmas"]`` with step alpha_i = step * (sigma_i / sigma_last)^2 (the model is not
    noise-conditional: every step targets q(x_d | x_<d), the levels only scale the step), reflected at the
    walls of ``BOUNDS`` (the box the quadrature density lives on; ``bounds`` of the sampler), so
    the head is never read outside it. Returns logit rows (n, D); with
    ``record=True`` also ``states`` (D + 1, n, D): the image before any pixel and after each pixel
    in generation order (``model.order``), for the pixel-by-pixel widget (digits-sized D only).
    """
    n = checks.positive_int(n, "n")
    per_pixel = cfg["langevin_steps"] * len(cfg["langevin_sigmas"])          # sampler steps per pixel
    return model.sample(n, generator=generator, record_every=per_pixel if record else None,
                        **langevin_options(n, model.dim, cfg))


def autoregressive_states(x: torch.Tensor, order: torch.Tensor, *, blank: float = 0.0) -> torch.Tensor:
    r"""The states (D + 1, n, D) of an autoregressive sampler that produced the rows ``x`` (n, D) in ``order``.

    State t holds the first t pixels of the order as drawn and ``blank`` elsewhere: what
    :func:`sample_images` records with ``record=True``, rebuilt from finished samples of any sampler
    (e.g. :func:`csm_edu.sampling.autoregressive_inverse_cdf`). The context of pixel order[t] reads
    only the pixels before it, so the blank value never enters a conditional.
    """
    x = checks.as_batch(x, "x").detach().cpu()
    order = torch.as_tensor(order).cpu()
    if sorted(order.tolist()) != list(range(x.shape[1])):
        raise ValueError(f"order must be a permutation of 0..{x.shape[1] - 1}, got {order.tolist()[:8]}...")
    states = torch.full((x.shape[1] + 1, *x.shape), float(blank))
    for t, d in enumerate(order.tolist()):
        states[t + 1:, :, d] = x[:, d]
    return states


def conditional_density_on_grid(model: AutoregressiveScoreModel, x: torch.Tensor, d: int, grid: torch.Tensor,
                                *, y: Optional[torch.Tensor] = None) -> torch.Tensor:
    r"""q(x_d = grid | x_<d) for one row ``x`` (D,): exp of the trapezoid integral of s_d on ``grid``, normalised there."""
    device = _device_of(model)
    grid = grid.cpu()
    with torch.no_grad():
        context = model.context(x[None].to(device), y)[:, d:d + 1]           # (1, 1, C)
        s = model.head(context, grid[:, None].to(device), torch.tensor([d], device=device))[:, 0].cpu()  # (G,)
    h = grid[1:] - grid[:-1]
    u = torch.cat([torch.zeros(1), torch.cumulative_trapezoid(s, grid)])
    w = torch.cat([h[:1] / 2, (h[1:] + h[:-1]) / 2, h[-1:] / 2])
    log_q = u - torch.logsumexp(u + torch.log(w), 0)
    return log_q.exp()


# ----------------------------------------------------------------------------- denoising

def add_noise(x: torch.Tensor, sigma: float, generator: Optional[torch.Generator] = None) -> torch.Tensor:
    """x + sigma * eps, eps ~ N(0, I) (drawn on the CPU from ``generator``)."""
    sigma = checks.positive(sigma, "sigma")
    return x + sigma * torch.randn(x.shape, generator=generator).to(x)


def psnr(clean: torch.Tensor, estimate: torch.Tensor) -> float:
    """Peak signal-to-noise ratio in dB of [0, 1] images: 10 log10(1 / MSE), MSE over all pixels (estimate clipped)."""
    mse = float(((estimate.clamp(0, 1) - clean) ** 2).mean())
    return 10.0 * math.log10(1.0 / max(mse, 1e-12))


def denoising_experiment(model: AutoregressiveScoreModel, x_clean: torch.Tensor, sigma: float, *,
                         generator: Optional[torch.Generator] = None, noise_conditional: bool = False,
                         n_nodes: int = 32, chunk_size: int = 8, progress: bool = False) -> dict:
    r"""Tweedie single-step denoising x^ = x~ + sigma^2 s(x~) with two scores of an AR-CSM trained on noisy data.

    ``x_clean`` (n, D) in the centred space [-1, 1]. ``s`` is either the vector of conditional
    scores (``"conditional"``: not a gradient field, misses the later conditionals) or the joint
    score (``"joint"``, :func:`joint_score`). ``noise_conditional``: the model takes y = sigma.
    Returns images in [0, 1] (``clean``, ``noisy``, ``conditional``, ``joint``) and their
    ``mse`` and ``psnr`` (dicts keyed by ``noisy``, ``conditional``, ``joint``; every image, the
    noisy input included, is clipped to [0, 1] before its error is measured).
    The joint score is computed ``chunk_size`` images at a time: its quadrature holds 2 (n_nodes + 1) head
    evaluations per pixel of every image in the chunk, with their autograd graph (64 MNIST images at once
    peak at several GB; each image's score depends on that image only, so chunks change no number).
    ``progress=True`` shows a tqdm.auto bar over those chunks (the results do not change).
    """
    sigma = checks.positive(sigma, "sigma")
    chunk_size = checks.positive_int(chunk_size, "chunk_size")
    with _ChunkBar(progress, _n_chunks(len(x_clean), chunk_size), "joint score") as bar:
        return _denoise(model, x_clean, sigma, generator, noise_conditional, n_nodes, chunk_size, bar)


def _n_chunks(n: int, chunk_size: int) -> int:
    return -(-n // chunk_size)


class _ChunkBar:
    """The denoising functions' optional tqdm.auto bar over the joint score's chunks (``progress=True``)."""

    def __init__(self, progress: bool, total: int, desc: str):
        self.bar = None
        if progress:
            from tqdm.auto import tqdm
            self.bar = tqdm(total=total, desc=desc, unit="chunk", leave=False)

    def update(self, postfix: str) -> None:
        if self.bar is not None:
            self.bar.set_postfix_str(postfix, refresh=False)
            self.bar.update()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        if self.bar is not None:
            self.bar.close()


def _denoise(model, x_clean, sigma, generator, noise_conditional, n_nodes, chunk_size, bar):
    """:func:`denoising_experiment`'s body; ``bar`` (a :class:`_ChunkBar`) advances once per chunk."""
    noisy = add_noise(x_clean, sigma, generator).clamp(*DENOISE_BOUNDS)
    y = torch.full((len(noisy), 1), sigma) if noise_conditional else None

    def chunk(v, i):
        s = joint_score(model, v[i:i + chunk_size], bounds=DENOISE_BOUNDS, n_nodes=n_nodes,
                        y=None if y is None else y[i:i + chunk_size])
        bar.update(f"sigma {sigma:g}, images {min(i + chunk_size, len(v))}/{len(v)}")
        return s

    def joint(v):
        return torch.cat([chunk(v, i) for i in range(0, len(v), chunk_size)])

    conditional = tweedie_denoise(lambda v: model.conditional_scores(v, y), noisy, sigma)
    joint = tweedie_denoise(joint, noisy, sigma)
    unit = {name: image_data.to_unit(v, DENOISE_SCALE) for name, v in
            dict(noisy=noisy, conditional=conditional, joint=joint).items()}
    clean = image_data.to_unit(x_clean, DENOISE_SCALE)
    unit["noisy"] = ((noisy + 1) / 2)                                   # unclipped: the real input
    out = dict(sigma=sigma, clean=clean, **unit)
    out["mse"] = {name: float(((unit[name].clamp(0, 1) - clean) ** 2).mean()) for name in unit}
    out["psnr"] = {name: psnr(clean, unit[name]) for name in unit}
    return out


def denoising_sweep(model: AutoregressiveScoreModel, x_clean: torch.Tensor, sigmas: Sequence[float], *, seed: int = 0,
                    noise_conditional: bool = True, n_nodes: int = 32, chunk_size: int = 8,
                    progress: bool = False) -> Dict[float, dict]:
    """:func:`denoising_experiment` at every sigma (noise seeded by ``seed``): {sigma: result}, for the lesson's slider.

    ``progress=True`` shows one tqdm.auto bar over all sigmas' chunks (the results do not change).
    """
    chunk_size = checks.positive_int(chunk_size, "chunk_size")
    sigmas = [checks.positive(s, "sigma") for s in sigmas]
    with _ChunkBar(progress, len(sigmas) * _n_chunks(len(x_clean), chunk_size), "denoising sweep") as bar:
        return {float(s): _denoise(model, x_clean, s, torch.Generator().manual_seed(seed), noise_conditional,
                                   n_nodes, chunk_size, bar)
                for s in sigmas}


# ----------------------------------------------------------------------------- anomaly detection

def outlier_sets(k_in: torch.Tensor, levels: int, *, k_held_out: Optional[torch.Tensor] = None,
                 seed: int = 0) -> Dict[str, torch.Tensor]:
    """Out-of-distribution integer images built offline from in-distribution ones ``k_in`` (n, C, H, W).

    ``"flipped"`` (upside down), ``"inverted"`` (k -> L-1-k), ``"uniform noise"`` (every pixel
    uniform on 0..L-1), and ``"held-out classes"`` when ``k_held_out`` is given.
    """
    k_in = torch.as_tensor(k_in)
    gen = torch.Generator().manual_seed(seed)
    sets = {}
    if k_held_out is not None:
        sets["held-out classes"] = torch.as_tensor(k_held_out)
    sets["flipped"] = torch.flip(k_in, dims=(-2,))
    sets["inverted"] = levels - 1 - k_in
    sets["uniform noise"] = torch.randint(0, levels, k_in.shape, generator=gen)
    return sets


def anomaly_auroc(models: Dict[str, object], k_in: torch.Tensor, outliers: Dict[str, torch.Tensor],
                  levels: int) -> Dict[str, Dict[str, float]]:
    """AUROC of the statistic "test bits/dim" (higher = more anomalous) for every outlier set and model.

    Returns {outlier set: {model: AUROC}}, AUROC = P(bpd of an outlier > bpd of an inlier)
    (:func:`csm_edu.metrics.auroc`); 0.5 is chance, 1 a perfect detector.
    """
    inlier = {name: model_bits_per_dim(m, k_in, levels) for name, m in models.items()}
    table = {}
    for set_name, k_out in outliers.items():
        table[set_name] = {name: auroc(model_bits_per_dim(m, k_out, levels), inlier[name])
                           for name, m in models.items()}
    return table


def auroc_markdown(table: Dict[str, Dict[str, float]]) -> str:
    """{outlier set: {model: AUROC}} as a Markdown table, one column per model."""
    names = list(next(iter(table.values())))
    lines = ["| outliers | " + " | ".join(names) + " |", "|---|" + "---:|" * len(names)]
    lines += [f"| {s} | " + " | ".join(f"{row[n]:.3f}" for n in names) + " |" for s, row in table.items()]
    return "\n".join(lines)


# ----------------------------------------------------------------------------- one experiment

MODEL_NAMES = ("AR-CSM (MADE)", "AR-CSM (PixelCNN)", "GaussianMADE", "PixelCNN++")
# how the experiment trains and samples each of its models: (steps key of cfg, trained by CSM?);
# CSM models are sampled by Langevin with cfg's settings, the MLE baselines by their exact sampler
_PLAN = {"AR-CSM (MADE)": ("csm_steps", True), "AR-CSM (PixelCNN)": ("pixelcnn_steps", True),
         "GaussianMADE": ("mle_steps", False), "PixelCNN++": ("pixelcnn_steps", False)}


def build_model(name: str, cfg: dict):
    """A model of :data:`MODEL_NAMES` sized by ``cfg``."""
    name = checks.one_of(name, "name", MODEL_NAMES)
    return {"AR-CSM (MADE)": lambda: make_arcsm("made", cfg), "AR-CSM (PixelCNN)": lambda: make_arcsm("pixelcnn", cfg),
            "GaussianMADE": lambda: make_baseline("gaussian_made", cfg),
            "PixelCNN++": lambda: make_baseline("pixelcnn++", cfg)}[name]()


def sample_model(model, n: int, cfg: dict, *, generator: Optional[torch.Generator] = None, **options) -> torch.Tensor:
    """n images (n, C, H, W) in [0, 1]: ``model.sample(n, generator=generator, **options)`` mapped back to pixels
    (:func:`model_to_pixels`)."""
    x = model.sample(n, generator=generator, **options)
    return model_to_pixels(model, x.cpu(), cfg["levels"], cfg["image_shape"])


def run_image_experiment(dataset: str, cfg: Optional[dict] = None, *, names: Sequence[str] = MODEL_NAMES, device=None,
                         n: int = 16, seed: int = 0, progress: bool = False,
                         report: Optional[Callable[[str], None]] = None, classes: Optional[Sequence[int]] = None) -> dict:
    r"""Train every model of ``names`` on ``dataset`` with ``cfg`` (default :func:`image_config`), then evaluate.

    AR-CSMs train by CSM on logit z (``csm_steps`` for MADE, ``pixelcnn_steps`` for PixelCNN),
    GaussianMADE by maximum likelihood on the same z (both dequantised afresh each batch),
    PixelCNN++ on the integers. Returns a dict:
    ``cfg``, ``models``, ``seconds`` (training wall time), ``images_per_second`` (steps * batch /
    seconds), ``bits_per_dim`` (:func:`bits_per_dim_table` on ``cfg["n_test"]`` test images),
    ``samples`` (name -> n images (n, C, H, W) in [0, 1]; none when ``n=0``), ``k_test``.
    ``classes``: keep only the images of these labels, in training and test (anomaly detection).
    """
    import time
    cfg = image_config(dataset) if cfg is None else cfg
    device = torch.device(device) if device is not None else config.device()
    k_train, train_labels = load_integers(cfg["dataset"], "train", n=cfg.get("n_train"), seed=seed)
    k_test, test_labels = load_integers(cfg["dataset"], "test", seed=seed)
    if classes is not None:
        k_train, k_test = k_train[_in_classes(train_labels, classes)], k_test[_in_classes(test_labels, classes)]
    k_test = k_test[:cfg.get("n_test")]
    out = dict(cfg=cfg, models={}, seconds={}, images_per_second={}, samples={}, k_test=k_test)
    for name in names:
        with config.seeded(seed):
            model = build_model(name, cfg)
        steps_key, score_matching = _PLAN[name]
        steps = cfg[steps_key]
        start = time.perf_counter()
        if score_matching:
            train_image_arcsm(model, k_train, steps=steps, batch_size=cfg["batch_size"], lr=cfg["lr"], device=device, seed=seed,
                              progress=progress, levels=cfg["levels"])
        else:
            train_baseline(model, k_train, cfg["levels"], steps=steps, batch_size=cfg["batch_size"], lr=cfg["lr"], device=device, seed=seed,
                           progress=progress)
        seconds = time.perf_counter() - start
        out["models"][name], out["seconds"][name] = model, seconds
        out["images_per_second"][name] = steps * cfg["batch_size"] / seconds
        if report:
            report(f"{name}: {steps} steps in {seconds:.1f} s ({out['images_per_second'][name]:.0f} images/s)")
    out["bits_per_dim"] = bits_per_dim_table(out["models"], k_test, cfg["levels"])
    gen = torch.Generator().manual_seed(seed)
    if checks.positive_int(n, "n", minimum=0):
        out["samples"] = {name: sample_model(m, n, cfg, generator=gen, **_sampler_options(name, n, cfg))
                          for name, m in out["models"].items()}
    return out


def _sampler_options(name: str, n: int, cfg: dict) -> dict:
    """Sampler options of the experiment's model ``name``: Langevin from mid-grey for the CSM models, none otherwise."""
    return langevin_options(n, cfg["dim"], cfg) if _PLAN[name][1] else {}


def _in_classes(labels: torch.Tensor, classes: Sequence[int]) -> torch.Tensor:
    keep = torch.isin(labels, torch.as_tensor(list(classes)))
    if not keep.any():
        raise ValueError(f"no image has a label in classes={list(classes)}")
    return keep
