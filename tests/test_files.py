"""Atomic writes: the previous file survives a failure during the write; the folder keeps no litter."""
import os

import pytest

from csm_edu.files import atomic_write, check_writable


def test_atomic_write_replaces_on_success(tmp_path):
    target = tmp_path / "sub" / "a.bin"
    with atomic_write(target) as f:
        f.write(b"new")
    assert target.read_bytes() == b"new"
    assert os.listdir(target.parent) == ["a.bin"]


def test_failure_keeps_the_previous_file_and_leaves_no_temp(tmp_path):
    target = tmp_path / "a.bin"
    target.write_bytes(b"old")
    with pytest.raises(RuntimeError):
        with atomic_write(target) as f:
            f.write(b"half")
            raise RuntimeError("disk full")
    assert target.read_bytes() == b"old"
    assert os.listdir(tmp_path) == ["a.bin"]


def test_bad_mode_and_unwritable_paths(tmp_path):
    with pytest.raises(ValueError, match="mode"):
        with atomic_write(tmp_path / "x", mode="a"):
            pass
    with pytest.raises(ValueError, match="is a folder"):
        check_writable(tmp_path, name="checkpoint")
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(ValueError, match="checkpoint"):
        check_writable(blocker / "model.pt", name="checkpoint")
    assert check_writable(tmp_path / "new" / "model.pt") == tmp_path / "new" / "model.pt"
