r"""The image-training command: one named configuration plus overrides, from a laptop CPU to many GPUs.

::

    python -m csm_edu.experiments.train_images mnist-subset-made --set steps=200 batch_size=64
    torchrun --nproc_per_node=4 -m csm_edu.experiments.train_images mnist-pixelcnn
    python -m csm_edu.experiments.train_images --list

A run trains one model of :mod:`csm_edu.experiments.images` (AR-CSM with a MADE or PixelCNN
backbone, or an MLE baseline: GaussianMADE, PixelCNN++) with one objective through
:func:`csm_edu.train.fit`, then evaluates the mean test bits/dim
(:func:`csm_edu.experiments.images.model_bits_per_dim`) and draws a sample grid. Objectives:

- ``"csm"``: composite score matching, :math:`\frac1n\sum_i\sum_d[\frac12 s_d^2 + \partial_d s_d]`
  (:func:`csm_edu.experiments.images.csm_loss`);
- ``"cdsm"``: composite denoising score matching with noise ``cdsm_sigma`` along each
  conditional's own variable (:func:`csm_edu.objectives.composite_denoising_score_matching`);
- ``"mle"``: the baseline's mean negative log-likelihood (:func:`csm_edu.experiments.images.mle_loss`).

The continuous models see logit-space pixels z, dequantised afresh at every batch
(``dequantize="fresh"``) or once at load time (``"fixed"``); PixelCNN++ sees the integers.

**Files** (under ``out``, rank 0 only): ``metrics.csv`` (step, loss, images/s, seconds; one row
every ``log_every`` steps), TensorBoard events when ``tensorboard`` is installed,
``checkpoint.pt`` (every ``checkpoint_every`` steps and at the end, written atomically by
``fit``; ``resume=true`` continues from it), ``samples.png`` and ``result.json`` (atomic writes).

**Many processes.** Under ``torchrun`` (``WORLD_SIZE`` > 1 in the environment) the command joins
the process group (nccl on CUDA, gloo on CPU) from torchrun's variables, uses ``cuda:LOCAL_RANK``
on a GPU machine, and seeds each rank's global RNG with ``seed + rank``. Model initialisation uses
``seed`` on every rank, and the minibatch generator passed to ``fit`` is seeded with ``seed`` on
every rank, so all ranks draw the same global batch and each trains on its own slice of it
(``batch_size`` is the global batch); ``fit`` routes the loss through a
``DistributedDataParallel`` module, so the gradients are averaged over ranks even for objectives
that call ``model.scores_and_diagonal`` rather than ``forward``, and draws the loss's noise
(dequantisation, composite DSM) from a stream per rank. With a noise-free loss
(``dequantize=fixed`` and ``csm`` or ``mle``) K processes give the parameters of one process on
the same global batch; with noise they agree in distribution. A run resumes exactly on the
number of processes that wrote its checkpoint. The test set is split into chunks of
``eval_batch_size`` images, chunk j dequantised with seed ``1 + j`` on whichever rank owns it, so
the bits/dim summed over ranks equals the one-process number.

**Speed paths** (each off by default): ``bf16=true`` runs the loss under ``torch.autocast`` in
bfloat16, ``compile=true`` compiles the loss function with ``torch.compile``, ``channels_last=true``
stores the PixelCNN's convolution weights channels-last. Compiled code draws other random numbers
than eager code: a noisy loss (fresh dequantisation, composite DSM) agrees in distribution only.
"""
import argparse
import ast
import csv
import difflib
import json
import math
import os
import sys
import time
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import torch
import torch.distributed as dist

from .. import checks, config, files, objectives, train
from . import images

MODELS = ("arcsm-made", "arcsm-pixelcnn", "gaussian-made", "pixelcnn++")
OBJECTIVES = ("csm", "cdsm", "mle")
DEQUANTIZE = ("fresh", "fixed")
_OBJECTIVES_OF = {"arcsm-made": ("csm", "cdsm"), "arcsm-pixelcnn": ("csm", "cdsm"),
                  "gaussian-made": ("mle",), "pixelcnn++": ("mle",)}
_STEPS_KEY = {"arcsm-made": "csm_steps", "arcsm-pixelcnn": "pixelcnn_steps", "gaussian-made": "mle_steps",
              "pixelcnn++": "pixelcnn_steps"}

# Settings of the command itself; every key of images.image_config may be overridden as well.
RUN_DEFAULTS = dict(mode=None, steps=None, seed=0, n_train=None, n_test=None, dequantize="fresh", cdsm_sigma=0.1,
                    checkpoint_every=500, log_every=10, n_samples=16, eval_batch_size=500, out=None, resume=False,
                    bf16=False, compile=False, channels_last=False, progress=True)


def _named(dataset: str, model: str, objective: str, **extra) -> dict:
    return dict(dataset=dataset, model=model, objective=objective, **extra)


CONFIGS: Dict[str, dict] = {
    "digits-made": _named("digits", "arcsm-made", "csm"),
    "digits-made-cdsm": _named("digits", "arcsm-made", "cdsm"),
    "digits-pixelcnn": _named("digits", "arcsm-pixelcnn", "csm"),
    "digits-gaussian-made": _named("digits", "gaussian-made", "mle"),
    "digits-pixelcnn++": _named("digits", "pixelcnn++", "mle"),
    # the committed subset holds the first 5000 / 1000 images of the train / test splits
    "mnist-subset-made": _named("mnist", "arcsm-made", "csm", n_train=5000, n_test=1000),
    "mnist-subset-pixelcnn": _named("mnist", "arcsm-pixelcnn", "csm", n_train=5000, n_test=1000),
    "mnist-subset-gaussian-made": _named("mnist", "gaussian-made", "mle", n_train=5000, n_test=1000),
    "mnist-made": _named("mnist", "arcsm-made", "csm", mode="gpu", n_train=None, full=True),
    "mnist-made-cdsm": _named("mnist", "arcsm-made", "cdsm", mode="gpu", n_train=None, full=True),
    "mnist-pixelcnn": _named("mnist", "arcsm-pixelcnn", "csm", mode="gpu", n_train=None, full=True),
    "mnist-gaussian-made": _named("mnist", "gaussian-made", "mle", mode="gpu", n_train=None, full=True),
    "mnist-pixelcnn++": _named("mnist", "pixelcnn++", "mle", mode="gpu", n_train=None, full=True),
    "cifar10-pixelcnn": _named("cifar10", "arcsm-pixelcnn", "csm", mode="gpu"),
    "cifar10-pixelcnn++": _named("cifar10", "pixelcnn++", "mle", mode="gpu"),
    "celeba-pixelcnn": _named("celeba", "arcsm-pixelcnn", "csm", mode="gpu"),
    "celeba-pixelcnn++": _named("celeba", "pixelcnn++", "mle", mode="gpu"),
}


# ----------------------------------------------------------------------------- configuration

def parse_overrides(pairs: Sequence[str]) -> dict:
    """``["steps=200", "lr=1e-3", "out=runs/a"]`` -> ``{"steps": 200, "lr": 0.001, "out": "runs/a"}``.

    Values are Python literals where they parse as one (numbers, ``true``/``false``/``none`` in
    any case, tuples), else strings.
    """
    out = {}
    for pair in pairs:
        key, sep, text = str(pair).partition("=")
        key = key.strip()
        if not sep or not key:
            raise ValueError(f"override {pair!r} is not key=value; write e.g. --set steps=200")
        text = text.strip()
        words = {"true": True, "false": False, "none": None, "null": None}
        if text.lower() in words:
            out[key] = words[text.lower()]
            continue
        try:
            out[key] = ast.literal_eval(text)
        except (ValueError, SyntaxError):
            out[key] = text
    return out


def _check_type(key: str, value, default):
    """The override ``value`` of ``key`` converted to the type of its default (ValueError when it cannot be)."""
    if default is None or value is None:
        return value
    if isinstance(default, bool):
        if not isinstance(value, bool):
            raise ValueError(f"override {key}={value!r} must be true or false")
        return value
    if isinstance(default, int):
        if isinstance(value, bool) or not isinstance(value, int):
            raise ValueError(f"override {key}={value!r} must be an integer (default {default!r})")
        return value
    if isinstance(default, float):
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ValueError(f"override {key}={value!r} must be a number (default {default!r})")
        return float(value)
    if isinstance(default, (tuple, list)):
        value = (value,) if isinstance(value, (int, float)) and not isinstance(value, bool) else value
        if not isinstance(value, (tuple, list)):
            raise ValueError(f"override {key}={value!r} must be a tuple such as {tuple(default)!r}")
        return tuple(value)
    if isinstance(default, str) and not isinstance(value, str):
        raise ValueError(f"override {key}={value!r} must be text (default {default!r})")
    return value


def resolve_config(name: str, overrides: Optional[dict] = None, device: Optional[torch.device] = None) -> dict:
    """The full settings of the named run ``name`` (:data:`CONFIGS`) with ``overrides`` applied.

    Starts from :data:`RUN_DEFAULTS`, the named entry, and :func:`csm_edu.experiments.images.image_config`
    of its data set (``mode`` defaults to :func:`~csm_edu.experiments.images.default_mode` on
    ``device``); ``steps`` defaults to the configuration's steps for the model kind and ``out`` to
    ``runs/NAME``. An unknown name or key, or a value of the wrong type, raises ValueError
    naming it and the fix.
    """
    if name not in CONFIGS:
        close = difflib.get_close_matches(str(name), CONFIGS, n=3)
        hint = f"; did you mean {', '.join(close)}?" if close else ""
        raise ValueError(f"unknown configuration {name!r}{hint} Valid names: {', '.join(CONFIGS)} "
                         f"(python -m csm_edu.experiments.train_images --list)")
    overrides = dict(overrides or {})
    named = dict(CONFIGS[name])
    mode = overrides.get("mode", named.get("mode"))
    if mode is None:
        mode = images.default_mode(device)
    cfg = dict(RUN_DEFAULTS)
    cfg.update(images.image_config(named["dataset"], mode))
    cfg.update(named, name=name, mode=mode, full=named.get("full", False))
    fixed = ("dataset", "dim", "image_shape", "levels", "name", "full")
    for key, value in overrides.items():
        if key in fixed:
            raise ValueError(f"override {key!r} is fixed by the configuration; choose another configuration name")
        if key not in cfg:
            close = difflib.get_close_matches(key, cfg, n=3)
            hint = f"did you mean {', '.join(close)}? " if close else ""
            raise ValueError(f"unknown override key {key!r}; {hint}valid keys: {', '.join(sorted(cfg))}")
        cfg[key] = _check_type(key, value, cfg[key])
    checks.one_of(cfg["model"], "model", MODELS)
    checks.one_of(cfg["objective"], "objective", OBJECTIVES)
    checks.one_of(cfg["dequantize"], "dequantize", DEQUANTIZE)
    if cfg["objective"] not in _OBJECTIVES_OF[cfg["model"]]:
        raise ValueError(f"objective {cfg['objective']!r} does not train model {cfg['model']!r}; "
                         f"use objective={' or '.join(_OBJECTIVES_OF[cfg['model']])}")
    if cfg["compile"] and cfg["objective"] == "csm":
        raise ValueError("compile=true cannot trace CSM: the AR-CSM head's closed-form diagonal is an autograd "
                         "Function with data-dependent blocks; leave compile=false for csm (cdsm and mle compile)")
    cfg["steps"] = cfg["steps"] if cfg["steps"] is not None else cfg[_STEPS_KEY[cfg["model"]]]
    for key in ("steps", "batch_size", "log_every", "eval_batch_size"):
        cfg[key] = checks.positive_int(cfg[key], key)
    for key in ("checkpoint_every", "n_train", "n_test"):
        if cfg[key] is not None:
            cfg[key] = checks.positive_int(cfg[key], key)
    cfg["n_samples"] = checks.positive_int(cfg["n_samples"], "n_samples", minimum=0)
    cfg["lr"] = checks.positive(cfg["lr"], "lr")
    cfg["out"] = str(cfg["out"] if cfg["out"] is not None else Path("runs") / name)
    return cfg


# ----------------------------------------------------------------------------- processes

def init_distributed(device: Optional[torch.device] = None) -> Tuple[int, int, torch.device]:
    """Join torchrun's process group when ``WORLD_SIZE`` > 1: returns ``(rank, world_size, device)``.

    Backend nccl when the device is CUDA (each process on ``cuda:LOCAL_RANK``), else gloo; the
    rendezvous comes from torchrun's ``MASTER_ADDR``/``MASTER_PORT``/``RANK``/``WORLD_SIZE``. A
    group that is already initialised is used as it is. One process: ``(0, 1, device)``.
    """
    device = torch.device(device) if device is not None else config.device()
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size(), device
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return 0, 1, device
    if not dist.is_available():
        raise RuntimeError("WORLD_SIZE > 1 but this PyTorch build has no torch.distributed; run one process")
    if device.type == "cuda":
        device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
        torch.cuda.set_device(device)
    dist.init_process_group("nccl" if device.type == "cuda" else "gloo", init_method="env://")
    return dist.get_rank(), dist.get_world_size(), device


def _distributed() -> bool:
    return dist.is_available() and dist.is_initialized()


# ----------------------------------------------------------------------------- data, model, loss

def load_data(cfg: dict) -> Tuple[torch.Tensor, torch.Tensor]:
    """(training rows the loss sees (n, D) float, test integers (n_test, C, H, W)) of a resolved configuration.

    PixelCNN++: k / (L - 1). Continuous models: the integers as floats (``dequantize="fresh"``,
    dequantised by the loss) or logit z dequantised once with ``seed`` (``"fixed"``).
    """
    if cfg["full"] and cfg["dataset"] == "mnist":
        from ..data import image_data
        if not image_data.mnist_full_path().exists():
            raise FileNotFoundError(f"configuration {cfg['name']!r} trains on the full MNIST, not found at "
                                    f"{image_data.mnist_full_path()}; fetch it with `python -m csm_edu.data download "
                                    f"mnist` or use mnist-subset-{cfg['name'].split('-', 1)[1]}")
    k_train, _ = images.load_integers(cfg["dataset"], "train", n=cfg["n_train"], seed=cfg["seed"])
    k_test, _ = images.load_integers(cfg["dataset"], "test", seed=cfg["seed"])
    k_test = k_test[:cfg["n_test"]]
    rows = k_train.reshape(len(k_train), -1).float()
    if cfg["model"] == "pixelcnn++":
        return rows / (cfg["levels"] - 1), k_test
    if cfg["dequantize"] == "fixed":
        return images.to_logit_space(k_train, cfg["levels"], cfg["seed"]), k_test
    return rows, k_test


def build_model(cfg: dict) -> torch.nn.Module:
    """The model of a resolved configuration, initialised with ``config.seeded(cfg["seed"])``."""
    with config.seeded(cfg["seed"]):
        if cfg["model"].startswith("arcsm-"):
            return images.make_arcsm(cfg["model"].split("-", 1)[1], cfg)
        return images.make_baseline(cfg["model"].replace("-", "_"), cfg)


def build_loss(model: torch.nn.Module, cfg: dict) -> Callable:
    """``loss_fn(model, batch)`` of the configuration's objective, on the rows :func:`load_data` returns."""
    if cfg["objective"] == "csm":
        loss = images.csm_loss()
    elif cfg["objective"] == "cdsm":
        sigma = checks.positive(cfg["cdsm_sigma"], "cdsm_sigma")
        loss = lambda m, z: objectives.composite_denoising_score_matching(m, z, sigma)  # noqa: E731
    else:
        loss = images.mle_loss
    if cfg["model"] != "pixelcnn++" and cfg["dequantize"] == "fresh":
        loss = images.dequantizing(loss, cfg["levels"])
    return loss


def speed_paths(model: torch.nn.Module, loss_fn: Callable, cfg: dict, device: torch.device) -> Callable:
    """Apply the configuration's optional speed paths; returns the loss function to train with.

    ``channels_last``: the model's 4-D weights go to ``torch.channels_last`` (PixelCNN backbones).
    ``bf16``: the loss runs under ``torch.autocast(device.type, torch.bfloat16)`` and is returned in float32.
    ``compile``: ``torch.compile(loss_fn)``.
    """
    if cfg["channels_last"]:
        model.to(memory_format=torch.channels_last)
    if cfg["bf16"]:
        inner = loss_fn

        def loss_fn(m, x):
            with torch.autocast(torch.device(device).type, dtype=torch.bfloat16):
                return inner(m, x).float()
    if cfg["compile"]:
        loss_fn = torch.compile(loss_fn)
    return loss_fn


# ----------------------------------------------------------------------------- logging

class MetricsLogger:
    """``fit`` callback on rank 0: a progress bar with the loss and images/s, ``metrics.csv`` and TensorBoard.

    Every ``log_every`` steps (and at the last) it appends a row to the CSV: the step, its
    (all-reduced) loss, the images/s since the previous row (global batch x steps / wall seconds,
    callbacks and checkpoint writes included) and those seconds. After a resume the first call drops the CSV rows of steps not below it (those after the
    checkpoint), rewriting the file atomically.
    """

    FIELDS = ("step", "loss", "images_per_second", "seconds")

    def __init__(self, out: Path, *, steps: int, batch_size: int, log_every: int, progress: bool = True):
        from tqdm.auto import tqdm

        self.path = Path(out) / "metrics.csv"
        self.steps, self.batch_size, self.log_every = steps, batch_size, log_every
        self._tqdm, self._progress = tqdm, progress
        self.bar = None
        self.rows: List[dict] = []
        self.writer = None
        self._clock = None
        self._last_step = None
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError:
            SummaryWriter = None
        self._summary = SummaryWriter

    def _start(self, step: int):
        kept = []
        if self.path.exists():
            with open(self.path, newline="") as f:
                kept = [row for row in csv.DictReader(f) if int(row["step"]) < step]
        with files.atomic_write(self.path, mode="w") as f:
            w = csv.DictWriter(f, fieldnames=self.FIELDS)
            w.writeheader()
            w.writerows(kept)
        if self._summary is not None:
            self.writer = self._summary(str(self.path.parent / "tensorboard"), purge_step=step)
        self.bar = self._tqdm(total=self.steps, initial=step - 1, disable=not self._progress, mininterval=0.5,
                              unit="step", dynamic_ncols=True)
        self._clock, self._last_step = time.perf_counter(), step       # the window starts after this step

    def __call__(self, step: int, model, history) -> None:
        if self.bar is None:
            self._start(step)
        loss = history.loss[-1]
        self.bar.update(1)
        if step % self.log_every and step != self.steps:
            return
        now = time.perf_counter()
        if step > self._last_step:
            seconds = now - self._clock
            rate = (step - self._last_step) * self.batch_size / max(seconds, 1e-9)
        else:                                   # a row at the first step of this call: fit's own timing
            seconds = history.seconds
            rate = self.batch_size * history.steps / max(seconds, 1e-9)
        row = dict(step=step, loss=f"{loss:.6g}", images_per_second=f"{rate:.1f}", seconds=f"{seconds:.3f}")
        self.rows.append(dict(step=step, loss=loss, images_per_second=rate))
        with open(self.path, "a", newline="") as f:
            csv.DictWriter(f, fieldnames=self.FIELDS).writerow(row)
        if self.writer is not None:
            self.writer.add_scalar("loss", loss, step)
            self.writer.add_scalar("images_per_second", rate, step)
        self.bar.set_postfix(loss=f"{loss:.4g}", img_s=f"{rate:.0f}")
        self._clock, self._last_step = now, step

    def close(self):
        if self.bar is not None:
            self.bar.close()
        if self.writer is not None:
            self.writer.close()


# ----------------------------------------------------------------------------- evaluation

def test_bits_per_dim(model, k: torch.Tensor, cfg: dict) -> float:
    """Mean test bits/dim of integer images ``k``, the work split over the ranks and the sum all-reduced.

    Chunk j (rows j B .. (j + 1) B - 1, B = ``eval_batch_size``) goes to rank j mod K and is
    dequantised with seed 1 + j, so the result does not depend on the number of ranks.
    """
    rank, world = (dist.get_rank(), dist.get_world_size()) if _distributed() else (0, 1)
    size = cfg["eval_batch_size"]
    device = next(model.parameters()).device
    total = torch.zeros(2, dtype=torch.float64, device=device)
    for j in range(rank, math.ceil(len(k) / size), world):
        chunk = k[j * size:(j + 1) * size]
        bpd = images.model_bits_per_dim(model, chunk, cfg["levels"], seed=1 + j, chunk_size=size)
        total += torch.stack([bpd.double().sum(), torch.tensor(float(len(chunk)), dtype=torch.float64)]).to(device)
    if world > 1:
        dist.all_reduce(total)
    return float(total[0] / total[1])


def write_sample_grid(model, cfg: dict, path: Path, generator: torch.Generator) -> Path:
    """Draw ``cfg["n_samples"]`` images (:func:`csm_edu.experiments.images.sample_model`) and save their grid as PNG, atomically."""
    import matplotlib.pyplot as plt       # headless machines fall back to Agg by themselves

    from .. import viz

    samples = images.sample_model(model, cfg["n_samples"], cfg, generator=generator)
    fig = viz.image_grid(samples, title=f"{cfg['name']}: {cfg['n_samples']} samples")
    with files.atomic_write(path) as f:
        fig.savefig(f, format="png", dpi=100, bbox_inches="tight")
    plt.close(fig)
    return path


# ----------------------------------------------------------------------------- one run

def _counting(loss_fn: Callable) -> Tuple[Callable, List[int]]:
    """``loss_fn`` that also adds the rows of every batch it sees to ``rows[0]``."""
    rows = [0]

    def counted(model, x):
        rows[0] += len(x)
        return loss_fn(model, x)
    return counted, rows


def _gather_counts(count: int, device: torch.device) -> List[int]:
    """``[count of rank 0, count of rank 1, ...]`` (all-gathered; ``[count]`` in one process)."""
    if not _distributed():
        return [int(count)]
    mine = torch.tensor([count], dtype=torch.int64, device=device)
    every = [torch.zeros_like(mine) for _ in range(dist.get_world_size())]
    dist.all_gather(every, mine)
    return [int(c) for c in every]


def train_images(cfg: dict, device: Optional[torch.device] = None) -> dict:
    """Train, evaluate and sample one resolved configuration (:func:`resolve_config`); see the module docstring.

    Returns (on every rank) a dict with ``model`` (the trained module), ``history``, ``test_bits_per_dim``,
    ``images_per_second`` (global batch * steps / seconds of this call's ``fit``), ``rows_per_rank``
    (training rows each rank's loss saw in this call), ``final_loss``, ``world_size``, ``out``, ``rank``.
    """
    rank, world, device = init_distributed(device)
    config.seed_everything(cfg["seed"] + rank)
    out = Path(cfg["out"])
    checkpoint = out / "checkpoint.pt"
    if rank == 0:
        files.check_writable(checkpoint, name="out")
    data, k_test = load_data(cfg)
    model = build_model(cfg)
    loss_fn, rows = _counting(speed_paths(model, build_loss(model, cfg), cfg, device))
    logger = MetricsLogger(out, steps=cfg["steps"], batch_size=cfg["batch_size"], log_every=cfg["log_every"],
                           progress=cfg["progress"]) if rank == 0 else None
    done = []                                               # steps trained by this call (not the resumed ones)
    start = time.perf_counter()
    try:
        history = train.fit(model, loss_fn, data, steps=cfg["steps"], batch_size=cfg["batch_size"], lr=cfg["lr"],
                            generator=torch.Generator().manual_seed(cfg["seed"]),
                            callbacks=(lambda step, m, h: done.append(step),) + ((logger,) if logger else ()),
                            checkpoint=checkpoint,
                            checkpoint_every=cfg["checkpoint_every"], resume=cfg["resume"], progress=False,
                            device=device)
    finally:
        if logger is not None:
            logger.close()
    seconds = time.perf_counter() - start
    result = dict(name=cfg["name"], steps=cfg["steps"], world_size=world, batch_size=cfg["batch_size"],
                  seconds=seconds, images_per_second=len(done) * cfg["batch_size"] / max(seconds, 1e-9),
                  final_loss=history.loss[-1] if history.loss else None)
    result["rows_per_rank"] = _gather_counts(rows[0], device)
    result["test_bits_per_dim"] = test_bits_per_dim(model, k_test, cfg) if len(k_test) else None
    if rank == 0:
        if cfg["n_samples"]:
            write_sample_grid(model, cfg, out / "samples.png", torch.Generator().manual_seed(cfg["seed"]))
        with files.atomic_write(out / "result.json", mode="w") as f:
            json.dump(dict(result, config={k: v for k, v in cfg.items() if k != "out"}), f, indent=1, default=str)
    if _distributed():
        dist.barrier()
    return dict(result, model=model, history=history, out=out, rank=rank)


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Command line: ``CONFIG [--set key=value ...]``, ``--list``; errors in the configuration exit with status 2."""
    parser = argparse.ArgumentParser(prog="python -m csm_edu.experiments.train_images",
                                     description="Train an image model of csm_edu (one process or under torchrun).")
    parser.add_argument("config", nargs="?", help="configuration name (see --list)")
    parser.add_argument("--set", dest="overrides", nargs="+", action="extend", default=[], metavar="KEY=VALUE",
                        help="override settings, e.g. --set steps=200 batch_size=64 out=runs/try")
    parser.add_argument("--list", action="store_true", help="print the configuration names and exit")
    args = parser.parse_args(argv)
    if args.list:
        for name, entry in CONFIGS.items():
            print(f"{name:28s} {entry['dataset']:8s} {entry['model']:15s} {entry['objective']}")
        return 0
    if args.config is None:
        parser.error("give a configuration name (see --list)")
    try:
        cfg = resolve_config(args.config, parse_overrides(args.overrides))
    except ValueError as err:
        parser.error(str(err))
    try:
        result = train_images(cfg)
    finally:
        if _distributed():
            dist.destroy_process_group()
    if result["rank"] == 0:
        print(json.dumps({k: result[k] for k in ("name", "steps", "world_size", "final_loss", "test_bits_per_dim")}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
