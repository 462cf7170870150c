"""Image data sets: digits (offline), MNIST (committed subset or full), CIFAR-10 and CelebA.

Every loader returns ``(x, labels)``: ``x`` a float32 tensor ``(n, C, H, W)`` and ``labels`` an
int64 tensor ``(n,)``. The pixels go through one pipeline, :func:`preprocess`:

1. integers ``k in {0, ..., L-1}`` (``L = 17`` for digits, ``L = 256`` for 8-bit images);
2. unit interval ``y``:
   - ``dequantize=True``:  ``y = (k + u) / L`` with ``u ~ Uniform[0, 1)`` per pixel, so ``y in [0, 1)``
     and the density of ``y`` on ``[0, 1]^D`` gives an upper bound on bits per dimension of the
     discrete data (Theis et al., 2016);
   - ``dequantize=False``: ``y = k / (L - 1)``, exactly ``{0, 1/(L-1), ..., 1}`` (for plots and for
     discrete likelihoods such as :class:`csm_edu.models.pixelcnn.PixelCNNPP`);
3. model space ``z`` chosen by ``scale``:
   - ``"unit"``:     ``z = y`` in ``[0, 1]``;
   - ``"centered"``: ``z = 2 y - 1`` in ``[-1, 1]``;
   - ``"logit"``:    ``z = logit(lam + (1 - 2 lam) y)``, the RealNVP / MAF transform; ``lam = 1e-6``
     (MAF, MNIST) by default, ``0.05`` is RealNVP's choice for CIFAR-10. For ``y in [0, 1]``,
     ``|z| <= logit(1 - lam)`` (13.8 for 1e-6, 2.94 for 0.05).

:func:`bits_per_dim` turns a model's log density in ``z`` space into bits per dimension of the
pixel integers, adding the log-determinant of the Jacobian of ``y -> z``.

Where the files live: digits ship inside scikit-learn; a 5000/1000/1000 MNIST subset ships
as package data (``csm_edu/resources/mnist_subset.npz``, read with :mod:`importlib.resources`);
full sets are fetched by ``python -m csm_edu.data download NAME``
into :func:`cache_dir` (``$CSM_EDU_DATA`` or ``~/.cache/csm_edu``). No loader ever downloads.

Every file is checked as it is read (keys, shapes, dtypes, value ranges); a truncated, corrupt or
foreign file raises :class:`DataFileError` (a ``ValueError``) naming the file and the fix. Pickled
files (``mnist.pkl.gz``, the CIFAR-10 batches) are read with an unpickler that builds only NumPy
arrays and plain containers, so a foreign pickle cannot run code. Randomness (the digits split is
fixed; dequantisation noise is not) comes from a ``generator`` argument.
"""
import gzip
import math
import os
import pickle
import re
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch

from .. import checks, resources
from ..files import atomic_write

SCALES = ("unit", "centered", "logit")
DIGITS_LEVELS = 17  # scikit-learn digits hold integers 0..16
BYTE_LEVELS = 256
MNIST_SPLITS = ("train", "valid", "test")  # 50000 / 10000 / 10000 (the classic mnist.pkl.gz split)
CIFAR10_SPLITS = ("train", "test")
CELEBA_SPLITS = ("train", "valid", "test")
CELEBA_CROP = 140  # centre crop of the 178x218 aligned faces before resizing
DIGITS_SPLIT_SEED = 0  # the digits train/test split is one fixed permutation (NumPy seed 0)
SUBSET_NAME = "mnist_subset.npz"  # shipped in csm_edu.resources


def _shipped_path(name: str) -> Path:
    """The shipped file ``name`` (:func:`csm_edu.resources.path`), or where it belongs when this install lacks it."""
    try:
        return resources.path(name)
    except FileNotFoundError:
        return Path(resources.__file__).resolve().parent / name   # readers then say it is missing


SUBSET_PATH = _shipped_path(SUBSET_NAME)

_BELOW_ONE = 1.0 - 2.0 ** -24  # the largest float32 below 1
_announced = set()  # messages printed once per process


class DataFileError(ValueError):
    """A data file is truncated, corrupt or not in the expected format; ``path`` names it.

    The message reads ``"<path>: <what is wrong>; <how to fix it>"``.
    """

    def __init__(self, path, problem: str, fix: str):
        self.path = Path(path)
        super().__init__(f"{path}: {problem}; {fix}")


def download_fix(name: str) -> str:
    """The fix for a bad file of a downloadable set: delete it and fetch it again."""
    return f"delete it and run `python -m csm_edu.data download {name}`"


_SUBSET_FIX = ("restore it from the repository (git checkout -- csm_edu/resources/mnist_subset.npz) or reinstall csm_edu; "
               "or run `python -m csm_edu.data download mnist` for the full set")


def cache_dir() -> Path:
    """Folder of downloaded data sets: ``$CSM_EDU_DATA`` if set, else ``~/.cache/csm_edu``."""
    return Path(os.environ.get("CSM_EDU_DATA") or Path.home() / ".cache" / "csm_edu").expanduser()


def mnist_full_path() -> Path:
    """Where ``download mnist`` stores the full set (uint8 arrays in a compressed ``.npz``)."""
    return cache_dir() / "mnist" / "mnist.npz"


def _announce(message: str) -> None:
    if message not in _announced:
        _announced.add(message)
        print(message)


def _as_path(value, name: str) -> Path:
    try:
        return Path(value)
    except TypeError as err:
        raise TypeError(f"{name} must be a folder path (str or pathlib.Path), got {type(value).__name__}") from err


def _generator(generator) -> Optional[torch.Generator]:
    """``None`` (PyTorch's global RNG) or a CPU ``torch.Generator``; anything else is a TypeError."""
    if generator is None:
        return None
    if not isinstance(generator, torch.Generator):
        raise TypeError(f"generator must be a torch.Generator or None, got {type(generator).__name__}; "
                        f"build one with torch.Generator().manual_seed(0)")
    if generator.device.type != "cpu":
        raise ValueError(f"generator must live on the CPU (data are drawn there), got one on {generator.device}; "
                         f"use torch.Generator().manual_seed(...)")
    return generator


def _fraction(value, name: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float, np.floating, np.integer)):
        raise TypeError(f"{name} must be a number in (0, 1), got {value!r}")
    if not 0 < value < 1:  # also rejects NaN
        raise ValueError(f"{name} must lie in (0, 1), got {value!r}; e.g. 0.2 for a fifth")
    return float(value)


# ----------------------------------------------------------------------------- safe unpickling

_PICKLE_GLOBALS = {("numpy._core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "scalar"),
                   ("numpy", "ndarray"), ("numpy", "dtype"), ("_codecs", "encode")}


class _ArrayUnpickler(pickle.Unpickler):
    """Builds NumPy arrays, numbers, strings and containers only: a foreign pickle cannot run code."""

    def find_class(self, module, name):
        if module.startswith("numpy.core"):  # pickles written by NumPy 1.x
            module = "numpy._core" + module[len("numpy.core"):]
        if (module, name) in _PICKLE_GLOBALS:
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"it refers to {module}.{name}, which a data file never needs")


def _unpickle(path: Path, fix: str, *, compressed: bool = False, encoding: str = "bytes"):
    try:
        with (gzip.open(path, "rb") if compressed else open(path, "rb")) as f:
            return _ArrayUnpickler(f, encoding=encoding).load()
    except FileNotFoundError:
        raise
    except Exception as err:  # noqa: BLE001 - truncated or foreign: one message naming the file
        raise DataFileError(path, f"is truncated or not a {'gzipped ' if compressed else ''}pickle of arrays "
                                  f"({type(err).__name__}: {err})", fix) from err


# ----------------------------------------------------------------------------- pixel pipeline

def _check_lambda(logit_lambda) -> float:
    lam = checks.positive(logit_lambda, "logit_lambda")
    if lam >= 0.5:
        raise ValueError(f"logit_lambda must lie in (0, 0.5), got {logit_lambda!r}; use 1e-6 (MAF) or 0.05 (RealNVP)")
    return lam


def _as_tensor(x, name: str) -> torch.Tensor:
    if isinstance(x, torch.Tensor):
        return x
    try:
        return torch.as_tensor(np.asarray(x, dtype=np.float32))
    except (TypeError, ValueError) as err:
        raise TypeError(f"{name} must be a tensor or array of numbers, got {type(x).__name__}") from err


def _pixel_integers(k, levels: int, name: str = "k") -> torch.Tensor:
    """``k`` as an int64 tensor, checked to hold integers ``0..levels-1`` (floats only if integral)."""
    if isinstance(k, torch.Tensor):
        k = k.detach().cpu()
    else:
        k = np.asarray(k)
        if k.dtype.kind not in "biuf":
            raise TypeError(f"{name} must hold pixel integers 0..{levels - 1}, got an array of dtype {k.dtype}")
        k = torch.as_tensor(k)
    if k.is_complex():
        raise TypeError(f"{name} must hold pixel integers 0..{levels - 1}, got complex values")
    if k.is_floating_point() and k.numel():
        if not torch.isfinite(k).all() or not torch.equal(k, k.round()):
            lo, hi = float(k.nan_to_num().min()), float(k.nan_to_num().max())
            raise ValueError(f"{name} must hold pixel integers 0..{levels - 1}, got non-integer floats (range "
                             f"{lo:g}..{hi:g}); truncating them would change the image (pixels in [0, 1] would "
                             f"become 0). Pass the integers, e.g. round(y * {levels - 1}) for y in [0, 1], or "
                             f"call to_model_space(y, scale) on unit-interval pixels")
    k = k.to(torch.int64)
    if k.numel() and (k.min() < 0 or k.max() >= levels):
        raise ValueError(f"pixel integers must lie in 0..{levels - 1}, got range {int(k.min())}..{int(k.max())}")
    return k


def _dequantize(k: torch.Tensor, levels: int, generator) -> torch.Tensor:
    u = torch.rand(k.shape, generator=generator, dtype=torch.float64)
    y = ((k.double() + u) / levels).float()
    return y.clamp_(max=_BELOW_ONE)  # float32 rounding could otherwise turn (L - 1 + u) / L into 1.0


def uniform_dequantize(k, levels: int, generator: Optional[torch.Generator] = None) -> torch.Tensor:
    """Uniform dequantisation ``y = (k + u) / L``, ``u ~ Uniform[0, 1)``: integers ``0..L-1`` -> ``[0, 1)``.

    Call it again each epoch (on the integers) to redraw the noise.
    """
    levels = checks.positive_int(levels, "levels", minimum=2)
    return _dequantize(_pixel_integers(k, levels), levels, _generator(generator))


def to_model_space(y, scale: str = "unit", logit_lambda: float = 1e-6) -> torch.Tensor:
    """Map unit-interval pixels ``y in [0, 1]`` to the model space ``z`` (see the module docstring).

    For ``scale="logit"``, ``y`` outside ``[0, 1]`` (where the logit is undefined) is an error.
    """
    checks.one_of(scale, "scale", SCALES)
    y = _as_tensor(y, "y")
    if scale == "unit":
        return y
    if scale == "centered":
        return 2.0 * y - 1.0
    lam = _check_lambda(logit_lambda)
    if y.numel():
        with torch.no_grad():
            lo, hi = float(y.min()), float(y.max())
        if not (0.0 <= lo and hi <= 1.0):  # NaN fails too
            raise ValueError(f"y must lie in [0, 1] for scale='logit' (the logit of values outside is NaN), got "
                             f"range {lo:g}..{hi:g}; clamp y or map it to [0, 1] first")
    p = lam + (1.0 - 2.0 * lam) * y
    return torch.log(p) - torch.log1p(-p)


def to_unit(z, scale: str = "unit", logit_lambda: float = 1e-6) -> torch.Tensor:
    """Inverse of :func:`to_model_space`: model-space values back to ``[0, 1]`` (clamped), for plots."""
    checks.one_of(scale, "scale", SCALES)
    z = _as_tensor(z, "z")
    if scale == "unit":
        y = z
    elif scale == "centered":
        y = (z + 1.0) / 2.0
    else:
        lam = _check_lambda(logit_lambda)
        y = (torch.sigmoid(z) - lam) / (1.0 - 2.0 * lam)
    return y.clamp(0.0, 1.0)


def _images(z, name: str = "z") -> torch.Tensor:
    z = _as_tensor(z, name)
    if z.dim() < 2 or len(z) == 0:
        raise ValueError(f"{name} must hold a batch of images, shape (n, ...) with n >= 1, got shape {tuple(z.shape)}; "
                         f"use {name}[None] for a single image")
    return z


def log_det_jacobian(z, scale: str = "unit", logit_lambda: float = 1e-6) -> torch.Tensor:
    """``sum_d log |dz_d / dy_d|`` per image, as a tensor ``(n,)``, for ``z`` in model space ``(n, ...)``.

    unit: 0.  centered: ``D log 2``.  logit: with ``p = sigmoid(z)``, ``dz/dy = (1 - 2 lam) / (p (1 - p))``,
    so ``log|dz/dy| = log(1 - 2 lam) + softplus(z) + softplus(-z)`` (using ``-log sigmoid(z) =
    softplus(-z)``).
    """
    checks.one_of(scale, "scale", SCALES)
    z = _images(z)
    flat = z.reshape(len(z), -1)
    if scale == "unit":
        return torch.zeros(len(z), dtype=flat.dtype, device=flat.device)
    if scale == "centered":
        return torch.full((len(z),), flat.shape[1] * math.log(2.0), dtype=flat.dtype, device=flat.device)
    lam = _check_lambda(logit_lambda)
    per_dim = math.log1p(-2.0 * lam) + torch.nn.functional.softplus(flat) + torch.nn.functional.softplus(-flat)
    return per_dim.sum(1)


def bits_per_dim(log_prob, z, *, scale: str = "unit", levels: int = BYTE_LEVELS,
                 logit_lambda: float = 1e-6) -> torch.Tensor:
    """Bits per dimension of the pixel integers from a log density in model space, per image ``(n,)``.

    A density ``p_Z`` in model space gives the unit-interval density
    ``log p_Y(y) = log p_Z(z) + sum_d log|dz_d/dy_d|`` (:func:`log_det_jacobian`). With pixels
    dequantised as ``y = (k + u) / L`` the density of ``k + u`` on ``[0, L)^D`` is ``p_Y(y) / L^D``, so

        bits/dim = -(log p_Y(y) - D log L) / (D log 2) = -log p_Y(y) / (D log 2) + log2 L,

    the number reported in the literature (``L = 256``: 8 bits/dim for a uniform model). Its
    average over ``u`` upper-bounds the discrete model's bits/dim. ``log_prob`` is in nats, one
    value per image; ``z`` the model-space images ``(n, ...)`` it was evaluated at. A NaN in
    ``log_prob`` is an error (``-inf``, a zero density, gives ``+inf`` bits).
    """
    levels = checks.positive_int(levels, "levels", minimum=2)
    z = _images(z)
    log_prob = _as_tensor(log_prob, "log_prob").to(z.dtype if z.is_floating_point() else torch.float32)
    if log_prob.shape != (len(z),):
        raise ValueError(f"log_prob must hold one value per image, shape ({len(z)},), got {tuple(log_prob.shape)}")
    if torch.isnan(log_prob).any():
        raise ValueError(f"log_prob contains NaN for {int(torch.isnan(log_prob).sum())} image(s); "
                         f"the model's log density is undefined there, check the model and its input")
    n_dims = z[0].numel()
    log_p_unit = log_prob + log_det_jacobian(z, scale, logit_lambda)
    return -log_p_unit / (n_dims * math.log(2.0)) + math.log2(levels)


def preprocess(k, levels: int, *, dequantize: bool = True, scale: str = "unit",
               generator: Optional[torch.Generator] = None, logit_lambda: float = 1e-6) -> torch.Tensor:
    """Integer pixels ``k in {0..L-1}`` (any int array) -> float32 model-space tensor (module docstring).

    ``generator`` draws the dequantisation noise. To redraw it each epoch keep the integers, e.g.
    ``k = (load_mnist(dequantize=False)[0] * 255).round()``, and call this again. Floats are
    accepted only when they are whole numbers: unit-interval pixels would otherwise be truncated.
    """
    checks.one_of(scale, "scale", SCALES)
    levels = checks.positive_int(levels, "levels", minimum=2)
    generator = _generator(generator)
    if not isinstance(dequantize, (bool, np.bool_)):
        raise TypeError(f"dequantize must be True or False, got {dequantize!r}")
    k = _pixel_integers(k, levels)
    y = _dequantize(k, levels, generator) if dequantize else k.float() / (levels - 1)
    return to_model_space(y, scale, logit_lambda).float()


def _take(n, available: int, what: str, hint: str = "") -> int:
    if n is None:
        return available
    n = checks.positive_int(n, "n")
    if n > available:
        raise ValueError(f"n={n} but {what} has only {available} images; ask for n <= {available}{hint}")
    return n


# ----------------------------------------------------------------------------- digits

def load_digits(split: str = "train", *, n: Optional[int] = None, dequantize: bool = True, scale: str = "unit",
                generator: Optional[torch.Generator] = None, test_fraction: float = 0.2,
                logit_lambda: float = 1e-6) -> Tuple[torch.Tensor, torch.Tensor]:
    """scikit-learn's 8x8 handwritten digits (UCI), offline: ``(x, labels)``, ``x`` float32 ``(n, 1, 8, 8)``.

    1797 images with integer pixels 0..16 (``L = 17`` levels). The split is fixed: one permutation
    (NumPy seed ``DIGITS_SPLIT_SEED``) cut into ``split="train"`` (``1 - test_fraction``, 1438 by
    default) and ``"test"`` (359), or ``"all"``; so train and test never overlap, whatever
    ``generator``. Values: see :func:`preprocess`; ``generator`` draws the dequantisation noise and
    with ``dequantize=True, scale="unit"`` the values lie in ``[0, 1)`` as ``(k + u) / 17``.
    Use ``levels=DIGITS_LEVELS`` in :func:`bits_per_dim`.
    """
    from sklearn.datasets import load_digits as sk_load_digits

    checks.one_of(split, "split", ("train", "test", "all"))
    test_fraction = _fraction(test_fraction, "test_fraction")
    bunch = sk_load_digits()
    k = bunch.images.astype(np.int64)[:, None]  # (1797, 1, 8, 8)
    labels = bunch.target.astype(np.int64)
    if split != "all":
        n_test = int(round(len(k) * test_fraction))
        if not 1 <= n_test <= len(k) - 1:
            raise ValueError(f"test_fraction={test_fraction!r} leaves {n_test} of {len(k)} digits for the test split; "
                             f"both splits need at least one image, choose it in [{1 / len(k):.4f}, {1 - 1 / len(k):.4f}]")
        perm = np.random.default_rng(DIGITS_SPLIT_SEED).permutation(len(k))
        keep = perm[:n_test] if split == "test" else perm[n_test:]
        k, labels = k[keep], labels[keep]
    m = _take(n, len(k), f"the digits {split} split")
    x = preprocess(k[:m], DIGITS_LEVELS, dequantize=dequantize, scale=scale, generator=generator,
                   logit_lambda=logit_lambda)
    return x, torch.as_tensor(labels[:m])


# ----------------------------------------------------------------------------- MNIST

def _check_byte_images(path: Path, key: str, x: np.ndarray, shape: Tuple[int, ...], fix: str, reshape_hint: str):
    if reshape_hint and x.ndim == 2 and x.shape[1] == int(np.prod(shape)):
        raise DataFileError(path, f"{key} holds flat rows of shape {x.shape}, expected images (n, {', '.join(map(str, shape))}); "
                                  f"({reshape_hint} before saving)", fix)
    if x.ndim != 1 + len(shape) or x.shape[1:] != shape:
        raise DataFileError(path, f"{key} has shape {x.shape}, expected (n, {', '.join(map(str, shape))})", fix)
    if x.dtype.kind not in "iu":
        lo, hi = (float(x.min()), float(x.max())) if x.size and x.dtype.kind == "f" else (math.nan, math.nan)
        raise DataFileError(path, f"{key} holds {x.dtype} values (range {lo:g}..{hi:g}), expected the pixel integers "
                                  f"0..255 as uint8 (convert pixels y in [0, 1] with np.round(y * 255).astype(np.uint8))", fix)
    if x.size and (x.min() < 0 or x.max() > 255):
        raise DataFileError(path, f"{key} holds values {x.min()}..{x.max()}, expected pixel integers 0..255", fix)
    return x.astype(np.uint8, copy=False)


def _check_labels(path: Path, key: str, y, n: int, classes: int, fix: str) -> np.ndarray:
    y = np.asarray(y)
    if y.shape != (n,) or y.dtype.kind not in "iu":
        raise DataFileError(path, f"{key} has shape {y.shape} and dtype {y.dtype}, expected {n} integer labels "
                                  f"(one per image)", fix)
    if n and (y.min() < 0 or y.max() >= classes):
        raise DataFileError(path, f"{key} holds labels {y.min()}..{y.max()}, expected 0..{classes - 1}", fix)
    return y


def read_mnist_npz(path, splits: Sequence[str] = MNIST_SPLITS, *, fix: Optional[str] = None) -> Dict[str, np.ndarray]:
    """Read and check an MNIST ``.npz``: ``{"x_<split>": uint8 (n, 28, 28), "y_<split>": (n,)}`` for ``splits``.

    Raises :class:`DataFileError` naming the file when it is truncated, is not an ``.npz``, lacks
    a split, or holds arrays of another shape or dtype (flat rows, float pixels, labels not 0..9).
    """
    path = _as_path(path, "path")
    fix = fix or download_fix("mnist")
    if not path.exists():
        raise FileNotFoundError(f"MNIST file {path} not found; run `python -m csm_edu.data download mnist`")
    for split in splits:
        checks.one_of(split, "split", MNIST_SPLITS)
    arrays = {}
    try:
        with np.load(path, allow_pickle=False) as f:
            if not hasattr(f, "files"):
                raise DataFileError(path, "holds a single array, expected an .npz archive of x_train, y_train, ...", fix)
            for split in splits:
                if f"x_{split}" not in f.files or f"y_{split}" not in f.files:
                    raise DataFileError(path, f"has no {split!r} split (keys x_{split}, y_{split}); available: "
                                              f"{sorted(k[2:] for k in f.files if k.startswith('x_'))}", fix)
                x = _check_byte_images(path, f"x_{split}", f[f"x_{split}"], (28, 28), fix,
                                       "reshape each split with x.reshape(-1, 28, 28)")
                arrays[f"x_{split}"] = x
                arrays[f"y_{split}"] = _check_labels(path, f"y_{split}", f[f"y_{split}"], len(x), 10, fix)
    except DataFileError:
        raise
    except Exception as err:  # noqa: BLE001 - zip, zlib, header or pickle errors: one message naming the file
        raise DataFileError(path, f"is truncated or not an .npz archive ({type(err).__name__}: {err})", fix) from err
    return arrays


def load_mnist(split: str = "train", *, n: Optional[int] = None, dequantize: bool = True, scale: str = "unit",
               source: str = "auto", root=None, generator: Optional[torch.Generator] = None,
               logit_lambda: float = 1e-6) -> Tuple[torch.Tensor, torch.Tensor]:
    """MNIST 28x28 digits: ``(x, labels)``, ``x`` float32 ``(n, 1, 28, 28)`` (first ``n`` of the split).

    Pixels are 8-bit integers 0..255 (``L = 256``) processed by :func:`preprocess`
    (``dequantize=True, scale="unit"``: ``(k + u) / 256`` in ``[0, 1)``, ``u`` drawn with
    ``generator``). Splits are those of the classic ``mnist.pkl.gz``: ``train`` 50000, ``valid``
    10000, ``test`` 10000 (the official 60000 training images = train + valid).

    ``source``: ``"full"`` reads ``<root>/mnist/mnist.npz`` (``root`` defaults to :func:`cache_dir`) written by
    ``python -m csm_edu.data download mnist``; ``"subset"`` reads the shipped
    package data ``mnist_subset.npz`` (the first 5000 / 1000 / 1000 images of each split); ``"auto"`` takes
    the full set if present, else the subset, and prints once which one it uses.
    """
    checks.one_of(split, "split", MNIST_SPLITS)
    checks.one_of(source, "source", ("auto", "subset", "full"))
    if root is not None and source == "subset":
        raise ValueError("root applies to the full set only; drop root= or use source='full' / 'auto'")
    full = (_as_path(root, "root") / "mnist" / "mnist.npz") if root is not None else mnist_full_path()
    hint = "; the full set comes with `python -m csm_edu.data download mnist`"
    if source == "full" or (source == "auto" and full.exists()):
        if not full.exists():
            raise FileNotFoundError(f"full MNIST not found at {full}; fetch it with "
                                    f"`python -m csm_edu.data download mnist` (or use source='subset')")
        if source == "auto":
            _announce(f"[csm_edu] MNIST: full set from {full}")
        arrays = read_mnist_npz(full, (split,))
        hint = ""
    else:
        if source == "auto":
            _announce("[csm_edu] MNIST: committed subset (package data csm_edu/resources/mnist_subset.npz, 5000 train / 1000 valid / "
                      "1000 test images); run `python -m csm_edu.data download mnist` for the full 50000/10000/10000")
        arrays = read_mnist_npz(SUBSET_PATH, (split,), fix=_SUBSET_FIX)
    k, labels = arrays[f"x_{split}"], arrays[f"y_{split}"]
    m = _take(n, len(k), f"the MNIST {split} split ({'full' if not hint else 'subset'})", hint)
    x = preprocess(k[:m, None], BYTE_LEVELS, dequantize=dequantize, scale=scale, generator=generator,
                   logit_lambda=logit_lambda)
    return x, torch.as_tensor(labels[:m].astype(np.int64))


def mnist_pickle_to_arrays(pkl_gz_path) -> dict:
    """Read the classic ``mnist.pkl.gz`` (floats ``k/256``) into uint8 arrays ``x_*`` (n, 28, 28), ``y_*``.

    The file is unpickled with a loader that builds only arrays (no code runs); a truncated or
    foreign file raises :class:`DataFileError` naming it.
    """
    path = _as_path(pkl_gz_path, "pkl_gz_path")
    fix = download_fix("mnist")
    splits = _unpickle(path, fix, compressed=True, encoding="latin1")
    if not isinstance(splits, (tuple, list)) or len(splits) != 3 or not all(
            isinstance(s, (tuple, list)) and len(s) == 2 for s in splits):
        raise DataFileError(path, "does not hold the three (images, labels) pairs train, valid, test", fix)
    arrays = {}
    for name, (x, y) in zip(MNIST_SPLITS, splits):
        x = np.asarray(x)
        if x.ndim != 2 or x.shape[1] != 784 or x.dtype.kind != "f":
            raise DataFileError(path, f"{name} images have shape {x.shape} and dtype {x.dtype}, expected floats (n, 784)", fix)
        k = x.astype(np.float64) * 256.0
        k_int = np.round(k)
        if len(k) and (np.abs(k - k_int).max() > 1e-3 or k_int.min() < 0 or k_int.max() > 255):
            raise DataFileError(path, f"{name} pixels are not multiples of 1/256 in [0, 1)", fix)
        arrays[f"x_{name}"] = k_int.astype(np.uint8).reshape(-1, 28, 28)
        arrays[f"y_{name}"] = _check_labels(path, f"{name} labels", y, len(k), 10, fix).astype(np.uint8)
    return arrays


# ----------------------------------------------------------------------------- CIFAR-10

def _cifar_dir(root) -> Path:
    root = _as_path(root, "root") if root is not None else cache_dir() / "cifar10"
    return root if root.name == "cifar-10-batches-py" else root / "cifar-10-batches-py"


def read_cifar_batch(path) -> Tuple[np.ndarray, np.ndarray]:
    """Read and check one CIFAR-10 batch: ``(k, labels)``, uint8 ``(N, 3, 32, 32)`` and int64 ``(N,)``.

    The file is a pickle of ``{b"data": uint8 (N, 3072) channel-first row-major, b"labels": [...]}``,
    read with a loader that builds only arrays. A truncated or foreign file, missing keys, data
    that cannot be reshaped to ``(N, 3, 32, 32)`` or non-integer pixels raise :class:`DataFileError`.
    """
    path = _as_path(path, "path")
    fix = download_fix("cifar10")
    batch = _unpickle(path, fix, encoding="bytes")
    if not isinstance(batch, dict):
        raise DataFileError(path, f"holds a {type(batch).__name__}, expected a CIFAR-10 batch dict", fix)
    batch = {key.decode("latin1") if isinstance(key, bytes) else key: value for key, value in batch.items()}
    missing = [key for key in ("data", "labels") if key not in batch]
    if missing:
        raise DataFileError(path, f"lacks the key(s) {missing} of a CIFAR-10 batch (has {sorted(map(str, batch))})", fix)
    try:
        data = np.asarray(batch["data"])
    except Exception as err:  # noqa: BLE001
        raise DataFileError(path, f"its data is not an array ({err})", fix) from err
    if data.ndim == 2 and data.shape[1] == 3072:
        data = data.reshape(-1, 3, 32, 32)
    elif not (data.ndim == 4 and data.shape[1:] == (3, 32, 32)):
        raise DataFileError(path, f"its data has shape {data.shape}, which cannot be reshaped to (N, 3, 32, 32) "
                                  f"(3072 values per image)", fix)
    k = _check_byte_images(path, "data", data, (3, 32, 32), fix, "")
    return k, _check_labels(path, "labels", batch["labels"], len(k), 10, fix).astype(np.int64)


def load_cifar10(split: str = "train", *, n: Optional[int] = None, root=None, dequantize: bool = True,
                 scale: str = "unit", generator: Optional[torch.Generator] = None,
                 logit_lambda: float = 1e-6) -> Tuple[torch.Tensor, torch.Tensor]:
    """CIFAR-10 (python version): ``(x, labels)``, ``x`` float32 ``(n, 3, 32, 32)``, first ``n`` images.

    ``root`` holds ``cifar-10-batches-py/`` (or is it); default ``cache_dir()/"cifar10"``, where
    ``python -m csm_edu.data download cifar10`` puts it. ``train``: ``data_batch_1..5`` (50000),
    ``test``: ``test_batch`` (10000); each read by :func:`read_cifar_batch`. Pixels 0..255 go
    through :func:`preprocess` (noise from ``generator``).
    """
    checks.one_of(split, "split", CIFAR10_SPLITS)
    folder = _cifar_dir(root)
    names = [f"data_batch_{i}" for i in range(1, 6)] if split == "train" else ["test_batch"]
    missing = [name for name in names if not (folder / name).exists()]
    if missing:
        raise FileNotFoundError(f"CIFAR-10 files {missing} not found in {folder}; fetch them with "
                                f"`python -m csm_edu.data download cifar10` (needs internet) or pass root=")
    want = None if n is None else checks.positive_int(n, "n")
    images, labels = [], []
    for name in names:
        k_batch, y_batch = read_cifar_batch(folder / name)
        images.append(k_batch)
        labels.append(y_batch)
        if want is not None and sum(map(len, images)) >= want:
            break
    k, y = np.concatenate(images), np.concatenate(labels)
    m = _take(n, len(k), f"the CIFAR-10 {split} split")
    x = preprocess(k[:m], BYTE_LEVELS, dequantize=dequantize, scale=scale, generator=generator,
                   logit_lambda=logit_lambda)
    return x, torch.as_tensor(y[:m])


# ----------------------------------------------------------------------------- CelebA

_CELEBA_NAME = re.compile(r"^(\d+)\.jpg$")


def _celeba_dir(root) -> Path:
    return _as_path(root, "root") if root is not None else cache_dir() / "celeba"


def read_celeba_partition(path) -> List[Tuple[str, int]]:
    """Parse ``list_eval_partition.txt``: ``[(file name, split code)]`` from lines ``"000001.jpg 0"``.

    Codes: 0 train, 1 valid, 2 test. Blank lines are skipped; any other line that is not
    ``<digits>.jpg <0|1|2>`` raises :class:`DataFileError` naming the file and the line number.
    """
    path = _as_path(path, "path")
    fix = ("restore the official list_eval_partition.txt (`python -m csm_edu.data download celeba` says where "
           "to get it)")
    try:
        text = path.read_text(encoding="ascii")
    except UnicodeDecodeError as err:
        raise DataFileError(path, f"is not a text file of ASCII lines ({err})", fix) from err
    entries = []
    for number, line in enumerate(text.splitlines(), 1):
        parts = line.split()
        if not parts:
            continue
        if len(parts) != 2 or not _CELEBA_NAME.match(parts[0]) or parts[1] not in ("0", "1", "2"):
            raise DataFileError(path, f"line {number} reads {line.strip()[:60]!r}, expected '<digits>.jpg <0|1|2>' "
                                      f"such as '000001.jpg 0'", fix)
        entries.append((parts[0], int(parts[1])))
    return entries


def celeba_crop_resize(image, size: int = 32, crop: int = CELEBA_CROP) -> np.ndarray:
    """Centre-crop a PIL image to ``crop x crop`` and resize to ``size x size`` (bicubic): uint8 (3, size, size).

    For the 178x218 aligned faces the 140x140 box is ``(19, 39, 159, 179)``.
    """
    from PIL import Image

    if not isinstance(image, Image.Image):
        raise TypeError(f"image must be a PIL image (PIL.Image.open(path)), got {type(image).__name__}")
    size = checks.positive_int(size, "size")
    crop = checks.positive_int(crop, "crop")
    width, height = image.size
    if width < crop or height < crop:
        raise ValueError(f"image of size {image.size} is smaller than the {crop}x{crop} crop")
    left, top = (width - crop) // 2, (height - crop) // 2
    face = image.convert("RGB").crop((left, top, left + crop, top + crop))
    if size != crop:
        face = face.resize((size, size), Image.Resampling.BICUBIC)
    return np.asarray(face, dtype=np.uint8).transpose(2, 0, 1)


def _read_face(path: Path, size: int, partition: Path) -> np.ndarray:
    from PIL import Image, UnidentifiedImageError

    if not path.exists():
        raise FileNotFoundError(f"{path} is listed in {partition} but missing; re-extract img_align_celeba.zip "
                                f"(`python -m csm_edu.data download celeba --from FOLDER`)")
    fix = "re-extract it from img_align_celeba.zip (`python -m csm_edu.data download celeba --from FOLDER`)"
    try:
        with Image.open(path) as image:
            image.load()
            return celeba_crop_resize(image, size)
    except (OSError, UnidentifiedImageError, SyntaxError) as err:  # truncated or not an image
        raise DataFileError(path, f"is truncated or not an image ({err})", fix) from err
    except ValueError as err:  # smaller than the crop
        raise DataFileError(path, str(err), "it is not an aligned CelebA face (178x218); " + fix) from err


def load_celeba(split: str = "train", *, n: Optional[int] = None, root=None, size: int = 32,
                dequantize: bool = True, scale: str = "unit", generator: Optional[torch.Generator] = None,
                logit_lambda: float = 1e-6) -> Tuple[torch.Tensor, torch.Tensor]:
    """CelebA aligned faces: ``(x, ids)``, ``x`` float32 ``(n, 3, size, size)``, first ``n`` of the split.

    ``root`` (default ``cache_dir()/"celeba"``) holds ``img_align_celeba/NNNNNN.jpg`` (178x218) and
    ``list_eval_partition.txt`` (lines ``"000001.jpg 0"``; 0 train 162770, 1 valid 19867, 2 test
    19962). Each face is centre-cropped to 140x140 and resized to ``size`` (bicubic), see
    :func:`celeba_crop_resize`; pixels 0..255 go through :func:`preprocess` (noise from
    ``generator``). CelebA has no class labels here: the second item holds the image numbers
    (``000001.jpg`` -> 1). When ``n`` is None the processed split is cached (written atomically)
    as ``celeba_{split}_{size}.npz`` in ``root`` if it is writable; a cache that does not match
    the partition file is an error naming it.
    """
    checks.one_of(split, "split", CELEBA_SPLITS)
    size = checks.positive_int(size, "size", minimum=2)
    if size > CELEBA_CROP:
        raise ValueError(f"size must be <= {CELEBA_CROP} (the crop), got {size}")
    folder = _celeba_dir(root)
    partition, images_dir = folder / "list_eval_partition.txt", folder / "img_align_celeba"
    if not partition.exists() or not images_dir.is_dir():
        raise FileNotFoundError(f"CelebA not found in {folder} (needs img_align_celeba/ and list_eval_partition.txt); "
                                f"run `python -m csm_edu.data download celeba` for where to get it")
    code = CELEBA_SPLITS.index(split)
    files = [name for name, c in read_celeba_partition(partition) if c == code]
    m = _take(n, len(files), f"the CelebA {split} split")
    ids = np.array([int(Path(name).stem) for name in files[:m]], dtype=np.int64)
    cached = folder / f"celeba_{split}_{size}.npz"
    if n is None and cached.exists():
        k = _read_celeba_cache(cached, ids, size)
    else:
        k = np.empty((m, 3, size, size), dtype=np.uint8)
        for i, name in enumerate(files[:m]):
            k[i] = _read_face(images_dir / name, size, partition)
        if n is None:
            try:
                with atomic_write(cached) as f:
                    np.savez_compressed(f, x=k, ids=ids)
            except OSError:  # a read-only folder: no cache
                pass
    x = preprocess(k, BYTE_LEVELS, dequantize=dequantize, scale=scale, generator=generator,
                   logit_lambda=logit_lambda)
    return x, torch.as_tensor(ids)


def _read_celeba_cache(path: Path, ids: np.ndarray, size: int) -> np.ndarray:
    fix = "delete it; the next call rebuilds it from the JPEG files"
    try:
        with np.load(path, allow_pickle=False) as f:
            if not hasattr(f, "files") or "x" not in f.files or "ids" not in f.files:
                raise DataFileError(path, "is not a CelebA cache (an .npz with keys x and ids)", fix)
            k, cached_ids = f["x"], f["ids"]
    except DataFileError:
        raise
    except Exception as err:  # noqa: BLE001 - truncated zip, bad header
        raise DataFileError(path, f"is truncated or not an .npz archive ({type(err).__name__}: {err})", fix) from err
    if k.shape != (len(ids), 3, size, size) or k.dtype != np.uint8:
        raise DataFileError(path, f"holds x of shape {k.shape} and dtype {k.dtype}, expected uint8 "
                                  f"({len(ids)}, 3, {size}, {size}) for this split", fix)
    if not np.array_equal(cached_ids, ids):
        raise DataFileError(path, "lists other images than list_eval_partition.txt (a stale cache)", fix)
    return k
