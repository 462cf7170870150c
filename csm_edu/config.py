"""Run-time settings shared by the library and the notebooks.

``QUICK`` is true when the environment variable ``CSM_EDU_QUICK=1``: notebooks and tests then
shrink training steps and sizes so each lesson runs in about a minute on two CPU cores. Inside a
running notebook, ``config.set_quick(True)`` (or ``config.setup_notebook(quick=True)``) switches
it without restarting JupyterLab; library code reads ``config.QUICK`` at call time.
"""
import contextlib
import ctypes
import ctypes.util
import os
import platform
import random
from typing import Optional

import numpy as np
import torch

QUICK: bool = os.environ.get("CSM_EDU_QUICK", "0").strip().lower() in ("1", "true", "yes", "on")


def set_quick(quick: bool = True) -> bool:
    """Switch quick mode on or off for this process (and the processes it starts); return it.

    Sets :data:`QUICK` and the environment variable ``CSM_EDU_QUICK``. Code that reads
    ``config.QUICK`` after the call sees the new value; a module that copied the flag at import
    (``from csm_edu.config import QUICK``) does not, so the kit never does that. Call it before
    the cells that pick sizes, e.g. in the lesson's first code cell.
    """
    global QUICK
    if not isinstance(quick, bool):
        raise TypeError(f"quick must be True or False, got {quick!r}")
    QUICK = quick
    os.environ["CSM_EDU_QUICK"] = "1" if quick else "0"
    return QUICK


def device() -> torch.device:
    """The device to compute on: ``cuda`` when a GPU is visible, else ``cpu``.

    Set ``CSM_EDU_DEVICE=cpu`` to force the CPU on a GPU machine.
    """
    forced = os.environ.get("CSM_EDU_DEVICE")
    if forced:
        return torch.device(forced)
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def seed_everything(seed: int = 0) -> torch.Generator:
    """Seed Python, NumPy and PyTorch (CPU and CUDA); return a ``torch.Generator`` seeded alike."""
    if not isinstance(seed, int) or seed < 0:
        raise ValueError(f"seed must be a non-negative int, got {seed!r}")
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    return torch.Generator().manual_seed(seed)


@contextlib.contextmanager
def seeded(seed: int):
    """Run a block with PyTorch's global RNG seeded to ``seed``, then restore the caller's RNG state.

    For what only the global RNG drives, such as ``nn.Module`` weight initialisation::

        with config.seeded(0):
            model = ARCSM(784)

    The caller's random stream is the same after the block as before it, so a library function
    that builds a model this way reseeds nothing (the one global reseed is :func:`seed_everything`).
    """
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise ValueError(f"seed must be a non-negative int, got {seed!r}")
    devices = list(range(torch.cuda.device_count())) if torch.cuda.is_initialized() else []
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(seed)
        yield


def setup_notebook(seed: int = 0, *, quick: Optional[bool] = None) -> dict:
    """One call at the top of every lesson: seed, pick threads and device, return a summary.

    ``quick=True`` / ``False`` switches quick mode first (:func:`set_quick`); ``None`` keeps the
    mode set by ``CSM_EDU_QUICK``.

    In quick mode PyTorch uses one thread (two threads collapsed 5-10x on a busy 2-core machine).
    Freed memory is kept by the allocator (:func:`keep_freed_memory`; CSM training steps ran
    15-30% faster on Linux).
    """
    if quick is not None:
        set_quick(quick)
    seed_everything(seed)
    if QUICK:
        torch.set_num_threads(1)
    quiet_progress_monitor()
    kept = keep_freed_memory()
    return {"quick": QUICK, "device": str(device()), "threads": torch.get_num_threads(), "seed": seed,
            "freed_memory_kept": kept}


def quiet_progress_monitor() -> None:
    """Switch off tqdm's monitor thread (``tqdm.monitor_interval = 0``); progress bars are unchanged.

    The monitor wakes every 10 s and may refresh a bar from its own thread. In a Jupyter kernel
    that bar is a widget, so the refresh sends comm messages from a second thread while the cell
    runs. Full-mode lessons executed by nbclient with ipykernel 7 sometimes never got the reply of
    a long training cell (the kernel idle and answering other clients, the client waiting); with
    the monitor off, lesson 11 ran through the cell where it had stopped twice. (Widget cells had a
    second cause, handled by :mod:`csm_edu.course.site`.)
    """
    from tqdm import tqdm

    tqdm.monitor_interval = 0


def keep_freed_memory() -> bool:
    """Ask glibc's allocator to keep freed memory instead of handing it back to the OS; True if done.

    By default glibc serves large blocks (a 128 x 784 x 32 float activation is 12.8 MB) with
    mmap and returns them to the OS when freed, so the next training step page-faults the same
    memory back in, and how often that happens depends on the allocator's history, so step times
    wander from run to run (the README's benchmark section gives the measurements). Kept here:
    mmap threshold 32 MB, trim threshold 1 GB.
    Process-wide and irreversible: called by :func:`setup_notebook` and by the benchmark scripts. A no-op (False) where the C library is not glibc (macOS, Windows, musl).
    """
    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3
        return bool(libc.mallopt(M_MMAP_THRESHOLD, 32 * 2 ** 20)) and bool(libc.mallopt(M_TRIM_THRESHOLD, 2 ** 30))
    except (OSError, AttributeError):
        return False
