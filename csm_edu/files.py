"""Files the kit writes: every write is atomic, so a crash, a kill or a full disk never loses a file.

:func:`atomic_write` opens a temporary file in the target's folder, hands it to the caller,
flushes and ``fsync``\\ s it, then ``os.replace``\\ s it onto the target (atomic on POSIX and
Windows for a file on one file system). Until the replace, the previous file is untouched;
if anything fails, the temporary file is removed and the error propagates. The new file gets
the permissions of the file it replaces, or those a plain ``open`` would give (``0o666`` less
the umask), not the owner-only mode of a temporary file, so a shared data cache stays readable.
"""
import contextlib
import os
import tempfile
from pathlib import Path
from typing import Iterator, Union

PathLike = Union[str, "os.PathLike[str]"]


@contextlib.contextmanager
def atomic_write(path: PathLike, *, mode: str = "wb", fsync: bool = True) -> Iterator:
    """Context manager yielding a file object whose contents replace ``path`` only on success.

    >>> with atomic_write("weights.pt") as f:
    ...     torch.save(state, f)

    ``fsync=False`` skips the per-file ``fsync`` (still atomic against a crash or kill of the
    process, not against a power cut) for bulk writes that flush once at the end, e.g. with
    ``os.sync()`` after unpacking thousands of images.
    """
    if mode not in ("wb", "w"):
        raise ValueError(f"mode must be 'wb' or 'w', got {mode!r}")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, mode) as f:
            yield f
            f.flush()
            if fsync:
                os.fsync(f.fileno())
        os.chmod(tmp, _mode_for(path))
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def _mode_for(path: Path) -> int:
    try:
        return path.stat().st_mode & 0o7777
    except FileNotFoundError:
        umask = os.umask(0)
        os.umask(umask)
        return 0o666 & ~umask


def check_writable(path: PathLike, *, name: str = "path") -> Path:
    """Raise ``ValueError`` naming ``name`` unless a file can be created at ``path`` (checked, not left)."""
    path = Path(path)
    if path.is_dir():
        raise ValueError(f"{name} {str(path)!r} is a folder; give a file name such as {str(path / 'model.pt')!r}")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".probe", dir=path.parent)
        os.close(fd)
        os.unlink(tmp)
    except OSError as err:
        raise ValueError(f"{name} {str(path)!r} is not writable ({err.strerror}); choose a folder you can write to") from err
    return path
