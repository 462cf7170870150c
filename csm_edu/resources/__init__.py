"""Files shipped inside the package, so that a wheel installed anywhere runs every lesson.

They are read with :mod:`importlib.resources`, never through paths relative to a checkout:

- ``mnist_subset.npz``: the first 5000 / 1000 / 1000 MNIST images of each split (see
  ``data/README.md`` of the repository for its source, licence and checksum);
- ``results/scaling_cpu.csv``, ``results/stability_runs.csv``, ``results/stability_curves.csv``:
  the committed CPU runs of ``benchmarks/bench_scaling.py`` and ``benchmarks/bench_stability.py``
  that lesson 09 plots. The benchmark scripts write into ``benchmarks/results/``; a new run is
  shipped by copying its CSVs here (``python -m csm_edu.resources update benchmarks/results/*.csv``);
- ``checkpoints/aem_comparison.pt`` (lesson 08) and ``checkpoints/vae_digits.pt`` (lesson 12): the
  state_dicts (and loss curves) of each lesson's full-mode training, which the lesson loads by default
  (``TRAIN_YOURSELF = False``) with ``torch.load(..., weights_only=True)``. They are made, deterministically
  from a seed, by ``python -m csm_edu.experiments.aem_study --make-checkpoint`` and
  ``python -m csm_edu.experiments.vae_study --make-checkpoint`` (run from a checkout: they write into
  this folder); ``tests/test_checkpoints.py`` checks that each loads and reproduces the lesson's numbers.
"""
import atexit
import contextlib
import shutil
import sys
from importlib import resources
from pathlib import Path
from typing import Callable, List, Optional, Sequence

_extracted = contextlib.ExitStack()  # files unpacked from a zipped install, removed at exit
atexit.register(_extracted.close)


def names() -> List[str]:
    """Every shipped file, as a ``/``-separated name relative to the package (``results/...``)."""
    found = []

    def walk(node, prefix):
        for child in node.iterdir():
            if child.name.startswith(("_", ".")):
                continue
            if child.is_dir():
                walk(child, f"{prefix}{child.name}/")
            else:
                found.append(prefix + child.name)

    walk(resources.files(__name__), "")
    return sorted(found)


def shipped(name: str) -> bool:
    """Whether the package holds the file ``name`` (e.g. a lesson's checkpoint; see :func:`path`)."""
    try:
        path(name)
    except FileNotFoundError:
        return False
    return True


def path(name: str) -> Path:
    """A filesystem path to the shipped file ``name`` (e.g. ``"results/scaling_cpu.csv"``).

    From a normal install or a checkout this is the file inside the installed package; from a
    zipped install the file is unpacked once to a temporary file that lives until the process ends.
    Raises ``FileNotFoundError`` naming the shipped files when ``name`` is not one of them.
    """
    if not isinstance(name, str) or not name:
        raise TypeError(f"name must be a file name such as 'results/scaling_cpu.csv', got {name!r}")
    node = resources.files(__name__).joinpath(*name.split("/"))
    if not node.is_file():
        raise FileNotFoundError(f"{name!r} is not shipped with csm_edu; shipped files: {', '.join(names())} "
                                f"(a reinstall restores them; new benchmark results are copied in with "
                                f"`python -m csm_edu.resources update FILE.csv`)")
    if isinstance(node, Path):
        return node
    return _extracted.enter_context(resources.as_file(node))


def update(sources, *, folder: str = "results") -> List[Path]:
    """Copy freshly written files (benchmark CSVs) into the package folder ``folder``; return the targets.

    Run from a checkout, so the copies are committed with the package source.
    """
    target_dir = Path(str(resources.files(__name__))) / folder
    if not target_dir.is_dir():
        raise FileNotFoundError(f"{target_dir} is not a folder of the package source; run this from a "
                                f"checkout of the repository (editable install)")
    copied = []
    for source in map(Path, sources):
        if not source.is_file():
            raise FileNotFoundError(f"source file {source} not found; run the benchmark script first")
        target = target_dir / source.name
        shutil.copyfile(source, target)
        copied.append(target)
    return copied


def main(argv=None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if args[:1] == ["list"]:
        for name in names():
            print(f"{name:28s} {path(name)}")
        return 0
    if args[:1] == ["update"] and len(args) > 1:
        for target in update(args[1:]):
            print(f"copied to {target}")
        return 0
    print("usage: python -m csm_edu.resources list | update FILE.csv [FILE.csv ...]", file=sys.stderr)
    return 2


def save_checkpoint(state: dict, name: str, *, target=None) -> Path:
    """``torch.save`` a checkpoint's ``state`` (tensors, numbers, strings, lists, dicts) atomically.

    ``target`` defaults to the shipped file ``name`` inside the package source (run from a
    checkout, so the file is committed with it). A write that is interrupted leaves the old file.
    """
    import torch
    from ..files import atomic_write

    target = Path(str(resources.files(__name__))).joinpath(*name.split("/")) if target is None else Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    with atomic_write(target) as f:
        torch.save(state, f)
    return target


def load_checkpoint(name: str, *, source=None) -> dict:
    """The checkpoint ``name`` (or the file ``source``), read with ``torch.load(weights_only=True)`` on the CPU."""
    import torch

    return torch.load(path(name) if source is None else source, map_location="cpu", weights_only=True)


def checkpoint_command(make: Callable[[Optional[str]], Path], command: str, argv: Optional[Sequence[str]] = None) -> int:
    """The ``python -m ... --make-checkpoint [PATH]`` entry point of a study: seed, ``make(PATH)``, report."""
    from .. import config

    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] != ["--make-checkpoint"] or len(argv) > 2:
        print(f"usage: {command} [PATH]", file=sys.stderr)
        return 2
    config.seed_everything(0)
    print(f"wrote {make(argv[1] if len(argv) > 1 else None)}")
    return 0
