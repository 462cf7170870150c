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
"""
import gzip
import math
import os
import pickle
from pathlib import Path
from typing import Optional, Tuple

import numpy as np
import torch

from .. import checks, resources

SCALES = ("unit", "centered", "logit")
DIGITS_LEVELS = 17  # scikit-learn digits hold integers 0..16
BYTE_LEVELS = 256
MNIST_SPLITS = ("train", "valid", "test")  # 50000 / 10000 / 10000 (the classic mnist.pkl.gz split)
CIFAR10_SPLITS = ("train", "test")
CELEBA_SPLITS = ("train", "valid", "test")
CELEBA_CROP = 140  # centre crop of the 178x218 aligned faces before resizing
SUBSET_NAME = "mnist_subset.npz"  # shipped in csm_edu.resources

_BELOW_ONE = 1.0 - 2.0 ** -24  # the largest float32 below 1
_announced = set()  # messages printed once per process


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


# ----------------------------------------------------------------------------- pixel pipeline

def _check_lambda(logit_lambda) -> float:
    lam = checks.positive(logit_lambda, "logit_lambda")
    if lam >= 0.5:
        raise ValueError(f"logit_lambda must lie in (0, 0.5), got {logit_lambda!r}; use 1e-6 (MAF) or 0.05 (RealNVP)")
    return lam


def uniform_dequantize(k: torch.Tensor, levels: int, generator: Optional[torch.Generator] = None) -> torch.Tensor:
    """Uniform dequantisation ``y = (k + u) / L``, ``u ~ Uniform[0, 1)``: integers -> ``[0, 1)``.

    Call it again each epoch (on the integers) to redraw the noise.
    """
    levels = checks.positive_int(levels, "levels", minimum=2)
    k = torch.as_tensor(k)
    u = torch.rand(k.shape, generator=generator, dtype=torch.float64)
    y = ((k.double() + u) / levels).float()
    return y.clamp_(max=_BELOW_ONE)  # float32 rounding could otherwise turn (L - 1 + u) / L into 1.0


def to_model_space(y: torch.Tensor, scale: str = "unit", logit_lambda: float = 1e-6) -> torch.Tensor:
    """Map unit-interval pixels ``y in [0, 1]`` to the model space ``z`` (see the module docstring)."""
    checks.one_of(scale, "scale", SCALES)
    if scale == "unit":
        return y
    if scale == "centered":
        return 2.0 * y - 1.0
    lam = _check_lambda(logit_lambda)
    p = lam + (1.0 - 2.0 * lam) * y
    return torch.log(p) - torch.log1p(-p)


def to_unit(z: torch.Tensor, scale: str = "unit", logit_lambda: float = 1e-6) -> torch.Tensor:
    """Inverse of :func:`to_model_space`: model-space values back to ``[0, 1]`` (clamped), for plots."""
    checks.one_of(scale, "scale", SCALES)
    if scale == "unit":
        y = z
    elif scale == "centered":
        y = (z + 1.0) / 2.0
    else:
        lam = _check_lambda(logit_lambda)
        y = (torch.sigmoid(z) - lam) / (1.0 - 2.0 * lam)
    return y.clamp(0.0, 1.0)


def log_det_jacobian(z: torch.Tensor, scale: str = "unit", logit_lambda: float = 1e-6) -> torch.Tensor:
    """``sum_d log |dz_d / dy_d|`` per image, as a tensor ``(n,)``, for ``z`` in model space.

    unit: 0.  centered: ``D log 2``.  logit: with ``p = sigmoid(z)``, ``dz/dy = (1 - 2 lam) / (p (1 - p))``,
    so ``log|dz/dy| = log(1 - 2 lam) + softplus(z) + softplus(-z)`` (using ``-log sigmoid(z) =
    softplus(-z)``).
    """
    checks.one_of(scale, "scale", SCALES)
    z = torch.as_tensor(z)
    flat = z.reshape(len(z), -1)
    if scale == "unit":
        return torch.zeros(len(z), dtype=flat.dtype, device=flat.device)
    if scale == "centered":
        return torch.full((len(z),), flat.shape[1] * math.log(2.0), dtype=flat.dtype, device=flat.device)
    lam = _check_lambda(logit_lambda)
    per_dim = math.log1p(-2.0 * lam) + torch.nn.functional.softplus(flat) + torch.nn.functional.softplus(-flat)
    return per_dim.sum(1)


def bits_per_dim(log_prob: torch.Tensor, z: torch.Tensor, scale: str = "unit", levels: int = BYTE_LEVELS,
                 logit_lambda: float = 1e-6) -> torch.Tensor:
    """Bits per dimension of the pixel integers from a log density in model space, per image ``(n,)``.

    A density ``p_Z`` in model space gives the unit-interval density
    ``log p_Y(y) = log p_Z(z) + sum_d log|dz_d/dy_d|`` (:func:`log_det_jacobian`). With pixels
    dequantised as ``y = (k + u) / L`` the density of ``k + u`` on ``[0, L)^D`` is ``p_Y(y) / L^D``, so

        bits/dim = -(log p_Y(y) - D log L) / (D log 2) = -log p_Y(y) / (D log 2) + log2 L,

    the number reported in the literature (``L = 256``: 8 bits/dim for a uniform model). Its
    average over ``u`` upper-bounds the discrete model's bits/dim. ``log_prob`` is in nats, one
    value per image; ``z`` the model-space images it was evaluated at.
    """
    levels = checks.positive_int(levels, "levels", minimum=2)
    z = torch.as_tensor(z)
    log_prob = torch.as_tensor(log_prob, dtype=z.dtype if z.is_floating_point() else torch.float32)
    if log_prob.shape != (len(z),):
        raise ValueError(f"log_prob must hold one value per image, shape ({len(z)},), got {tuple(log_prob.shape)}")
    n_dims = z[0].numel()
    log_p_unit = log_prob + log_det_jacobian(z, scale, logit_lambda)
    return -log_p_unit / (n_dims * math.log(2.0)) + math.log2(levels)


def preprocess(k, levels: int, dequantize: bool = True, scale: str = "unit", seed: int = 0,
               logit_lambda: float = 1e-6) -> torch.Tensor:
    """Integer pixels ``k in {0..L-1}`` (any int array) -> float32 model-space tensor (module docstring).

    ``seed`` seeds the dequantisation noise. To redraw it each epoch keep the integers, e.g.
    ``k = (load_mnist(dequantize=False)[0] * 255).round()``, and call this again with a new seed.
    """
    checks.one_of(scale, "scale", SCALES)
    levels = checks.positive_int(levels, "levels", minimum=2)
    k = torch.as_tensor(np.asarray(k)).to(torch.int64)
    if k.numel() and (k.min() < 0 or k.max() >= levels):
        raise ValueError(f"pixel integers must lie in 0..{levels - 1}, got range {int(k.min())}..{int(k.max())}")
    if dequantize:
        y = uniform_dequantize(k, levels, torch.Generator().manual_seed(seed))
    else:
        y = k.float() / (levels - 1)
    return to_model_space(y, scale, logit_lambda).float()


def _take(n, available: int, what: str, hint: str = "") -> int:
    if n is None:
        return available
    n = checks.positive_int(n, "n")
    if n > available:
        raise ValueError(f"n={n} but {what} has only {available} images; ask for n <= {available}{hint}")
    return n


# ----------------------------------------------------------------------------- digits

def load_digits(split: str = "train", dequantize: bool = True, scale: str = "unit", seed: int = 0,
                test_fraction: float = 0.2, n: Optional[int] = None,
                logit_lambda: float = 1e-6) -> Tuple[torch.Tensor, torch.Tensor]:
    """scikit-learn's 8x8 handwritten digits (UCI), offline: ``(x, labels)``, ``x`` float32 ``(n, 1, 8, 8)``.

    1797 images with integer pixels 0..16 (``L = 17`` levels). The images are shuffled with
    ``seed`` and split into ``split="train"`` (``1 - test_fraction``, 1438 by default), ``"test"``
    (359) or ``"all"``. Values: see :func:`preprocess`; with ``dequantize=True, scale="unit"`` they
    lie in ``[0, 1)`` as ``(k + u) / 17``. ``seed`` also seeds the dequantisation noise; the split
    depends only on ``seed`` and ``test_fraction``. Use ``levels=DIGITS_LEVELS`` in :func:`bits_per_dim`.
    """
    from sklearn.datasets import load_digits as sk_load_digits

    checks.one_of(split, "split", ("train", "test", "all"))
    if not 0 < test_fraction < 1:
        raise ValueError(f"test_fraction must lie in (0, 1), got {test_fraction!r}")
    bunch = sk_load_digits()
    k = bunch.images.astype(np.int64)[:, None]  # (1797, 1, 8, 8)
    labels = bunch.target.astype(np.int64)
    if split != "all":
        perm = np.random.default_rng(seed).permutation(len(k))
        n_test = int(round(len(k) * test_fraction))
        keep = perm[:n_test] if split == "test" else perm[n_test:]
        k, labels = k[keep], labels[keep]
    m = _take(n, len(k), f"the digits {split} split")
    x = preprocess(k[:m], DIGITS_LEVELS, dequantize, scale, seed, logit_lambda)
    return x, torch.as_tensor(labels[:m])


# ----------------------------------------------------------------------------- MNIST

def _read_mnist_npz(path: Path, split: str):
    with np.load(path) as f:
        key = f"x_{split}"
        if key not in f:
            raise ValueError(f"{path} has no {split!r} split; available: "
                             f"{sorted(k[2:] for k in f.files if k.startswith('x_'))}")
        return f[key], f[f"y_{split}"]


def load_mnist(split: str = "train", n: Optional[int] = None, dequantize: bool = True, scale: str = "unit",
               source: str = "auto", root=None, seed: int = 0,
               logit_lambda: float = 1e-6) -> Tuple[torch.Tensor, torch.Tensor]:
    """MNIST 28x28 digits: ``(x, labels)``, ``x`` float32 ``(n, 1, 28, 28)`` (first ``n`` of the split).

    Pixels are 8-bit integers 0..255 (``L = 256``) processed by :func:`preprocess`
    (``dequantize=True, scale="unit"``: ``(k + u) / 256`` in ``[0, 1)``). Splits are those of the
    classic ``mnist.pkl.gz``: ``train`` 50000, ``valid`` 10000, ``test`` 10000 (the official
    60000 training images = train + valid).

    ``source``: ``"full"`` reads ``<root>/mnist/mnist.npz`` (``root`` defaults to :func:`cache_dir`) written by
    ``python -m csm_edu.data download mnist``; ``"subset"`` reads the shipped
    package data ``mnist_subset.npz`` (the first 5000 / 1000 / 1000 images of each split); ``"auto"`` takes
    the full set if present, else the subset, and prints once which one it uses.
    """
    checks.one_of(split, "split", MNIST_SPLITS)
    checks.one_of(source, "source", ("auto", "subset", "full"))
    full = (Path(root) / "mnist" / "mnist.npz") if root is not None else mnist_full_path()
    hint = "; the full set comes with `python -m csm_edu.data download mnist`"
    if source == "full" or (source == "auto" and full.exists()):
        if not full.exists():
            raise FileNotFoundError(f"full MNIST not found at {full}; fetch it with "
                                    f"`python -m csm_edu.data download mnist` (or use source='subset')")
        if source == "auto":
            _announce(f"[csm_edu] MNIST: full set from {full}")
        k, labels = _read_mnist_npz(full, split)
        hint = ""
    else:
        subset = resources.path(SUBSET_NAME)  # FileNotFoundError naming the shipped files if missing
        if source == "auto":
            _announce("[csm_edu] MNIST: committed subset (package data csm_edu/resources/mnist_subset.npz, 5000 train / 1000 valid / "
                      "1000 test images); run `python -m csm_edu.data download mnist` for the full 50000/10000/10000")
        k, labels = _read_mnist_npz(subset, split)
    m = _take(n, len(k), f"the MNIST {split} split ({'full' if not hint else 'subset'})", hint)
    x = preprocess(k[:m, None], BYTE_LEVELS, dequantize, scale, seed, logit_lambda)
    return x, torch.as_tensor(labels[:m].astype(np.int64))


def mnist_pickle_to_arrays(pkl_gz_path) -> dict:
    """Read the classic ``mnist.pkl.gz`` (floats ``k/256``) into uint8 arrays ``x_*`` (n, 28, 28), ``y_*``.

    Unpickling runs code from the file: call it only on a file whose sha256 was checked.
    """
    with gzip.open(pkl_gz_path, "rb") as f:
        splits = pickle.load(f, encoding="latin1")
    arrays = {}
    for name, (x, y) in zip(MNIST_SPLITS, splits):
        k = np.asarray(x, dtype=np.float64) * 256.0
        k_int = np.round(k)
        if np.abs(k - k_int).max() > 1e-3 or k_int.min() < 0 or k_int.max() > 255:
            raise ValueError(f"{pkl_gz_path}: {name} pixels are not multiples of 1/256 in [0, 1)")
        arrays[f"x_{name}"] = k_int.astype(np.uint8).reshape(-1, 28, 28)
        arrays[f"y_{name}"] = np.asarray(y, dtype=np.uint8)
    return arrays


# ----------------------------------------------------------------------------- CIFAR-10

def _cifar_dir(root) -> Path:
    root = Path(root) if root is not None else cache_dir() / "cifar10"
    return root if root.name == "cifar-10-batches-py" else root / "cifar-10-batches-py"


def load_cifar10(root=None, split: str = "train", n: Optional[int] = None, dequantize: bool = True,
                 scale: str = "unit", seed: int = 0, logit_lambda: float = 1e-6) -> Tuple[torch.Tensor, torch.Tensor]:
    """CIFAR-10 (python version): ``(x, labels)``, ``x`` float32 ``(n, 3, 32, 32)``, first ``n`` images.

    ``root`` holds ``cifar-10-batches-py/`` (or is it); default ``cache_dir()/"cifar10"``, where
    ``python -m csm_edu.data download cifar10`` puts it. ``train``: ``data_batch_1..5`` (50000),
    ``test``: ``test_batch`` (10000); each a pickle of ``{b"data": uint8 (N, 3072) channel-first
    row-major, b"labels": [...]}``. Pixels 0..255 go through :func:`preprocess`.
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
        with open(folder / name, "rb") as f:
            batch = pickle.load(f, encoding="bytes")
        images.append(np.asarray(batch[b"data"], dtype=np.uint8).reshape(-1, 3, 32, 32))
        labels.append(np.asarray(batch[b"labels"], dtype=np.int64))
        if want is not None and sum(map(len, images)) >= want:
            break
    k, y = np.concatenate(images), np.concatenate(labels)
    m = _take(n, len(k), f"the CIFAR-10 {split} split")
    return preprocess(k[:m], BYTE_LEVELS, dequantize, scale, seed, logit_lambda), torch.as_tensor(y[:m])


# ----------------------------------------------------------------------------- CelebA

def _celeba_dir(root) -> Path:
    return Path(root) if root is not None else cache_dir() / "celeba"


def celeba_crop_resize(image, size: int = 32, crop: int = CELEBA_CROP) -> np.ndarray:
    """Centre-crop a PIL image to ``crop x crop`` and resize to ``size x size`` (bicubic): uint8 (3, size, size).

    For the 178x218 aligned faces the 140x140 box is ``(19, 39, 159, 179)``.
    """
    from PIL import Image

    width, height = image.size
    if width < crop or height < crop:
        raise ValueError(f"image of size {image.size} is smaller than the {crop}x{crop} crop")
    left, top = (width - crop) // 2, (height - crop) // 2
    face = image.convert("RGB").crop((left, top, left + crop, top + crop))
    if size != crop:
        face = face.resize((size, size), Image.Resampling.BICUBIC)
    return np.asarray(face, dtype=np.uint8).transpose(2, 0, 1)


def load_celeba(root=None, split: str = "train", n: Optional[int] = None, size: int = 32,
                dequantize: bool = True, scale: str = "unit", seed: int = 0,
                logit_lambda: float = 1e-6) -> Tuple[torch.Tensor, torch.Tensor]:
    """CelebA aligned faces: ``(x, ids)``, ``x`` float32 ``(n, 3, size, size)``, first ``n`` of the split.

    ``root`` (default ``cache_dir()/"celeba"``) holds ``img_align_celeba/NNNNNN.jpg`` (178x218) and
    ``list_eval_partition.txt`` (lines ``"000001.jpg 0"``; 0 train 162770, 1 valid 19867, 2 test
    19962). Each face is centre-cropped to 140x140 and resized to ``size`` (bicubic), see
    :func:`celeba_crop_resize`; pixels 0..255 go through :func:`preprocess`. CelebA has no class
    labels here: the second item holds the image numbers (``000001.jpg`` -> 1). When ``n`` is None
    the processed split is cached as ``celeba_{split}_{size}.npz`` in ``root`` (if writable).
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
    cached = folder / f"celeba_{split}_{size}.npz"
    if n is None and cached.exists():
        with np.load(cached) as f:
            k, ids = f["x"], f["ids"]
    else:
        code = CELEBA_SPLITS.index(split)
        files = []
        for line in partition.read_text().split("\n"):
            parts = line.split()
            if len(parts) == 2 and int(parts[1]) == code:
                files.append(parts[0])
        m = _take(n, len(files), f"the CelebA {split} split")
        from PIL import Image

        k = np.empty((m, 3, size, size), dtype=np.uint8)
        for i, name in enumerate(files[:m]):
            path = images_dir / name
            if not path.exists():
                raise FileNotFoundError(f"{path} is listed in {partition} but missing; re-extract img_align_celeba.zip")
            with Image.open(path) as image:
                k[i] = celeba_crop_resize(image, size)
        ids = np.array([int(Path(name).stem) for name in files[:m]], dtype=np.int64)
        if n is None:
            try:
                np.savez_compressed(cached, x=k, ids=ids)
            except OSError:
                pass
    return preprocess(k, BYTE_LEVELS, dequantize, scale, seed, logit_lambda), torch.as_tensor(ids)
