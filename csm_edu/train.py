"""The one training loop of the kit, and its checkpoints.

``fit(model, loss_fn, data, *, steps, ...)`` takes ``steps`` optimiser steps (Adam by default)
on minibatches drawn from ``data`` and returns a :class:`History` (loss per step, training
time). ``loss_fn(model, batch)`` returns a scalar tensor whose gradient is wanted, e.g.
``lambda m, x: objectives.sliced_score_matching(m.score, x)``. Everything that trains in the kit
(the lessons, the VAE, the network score estimators, lesson 03's snapshots) goes through it;
what the others needed (their own optimiser, per-step evaluations) enters through
``optimizer`` and ``callbacks``.

Randomness: the minibatch indices come from ``generator``; so does the seed of the random stream
that ``loss_fn`` and the model draw their noise from (projections, DSM noise, dropout), which
``fit`` runs in a forked copy of PyTorch's global RNG (as :func:`csm_edu.config.seeded` does), so the
caller's global stream is untouched and a run is reproducible from its generator alone.

Checkpoints (:func:`save_checkpoint`, :func:`load_checkpoint`) are written atomically
(:func:`csm_edu.files.atomic_write`) and read with ``weights_only=True``: they hold tensors,
numbers and strings only, never code.
"""
import contextlib
import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable, Iterable, List, Optional, Union

import torch
from tqdm.auto import tqdm

from . import checks, config, files

CHECKPOINT_FORMAT = "csm_edu.train.checkpoint/1"


@dataclass
class History:
    """Loss per step, training time (callbacks and checkpoint writes excluded) and settings of ``fit`` runs."""

    loss: List[float] = field(default_factory=list)
    seconds: float = 0.0
    steps: int = 0
    batch_size: int = 0

    @property
    def ms_per_step(self) -> float:
        return 1000 * self.seconds / max(self.steps, 1)


# ----------------------------------------------------------------------------- checkpoints

def _state_dict(module: torch.nn.Module) -> dict:
    return {k: v.detach().cpu() for k, v in module.state_dict().items()}


def save_checkpoint(model: torch.nn.Module, path: Union[str, Path], *, optimizer=None, scheduler=None,
                    step: int = 0, generator: Optional[torch.Generator] = None,
                    history: Optional[History] = None, loss_rng=None) -> Path:
    """Write model weights (and, for resuming, the optimiser, scheduler, step, RNG states, History) to ``path``.

    The file appears whole or not at all: it is written to a temporary file in the same folder,
    flushed to disk and renamed onto ``path`` (a kill or a full disk mid-save leaves the
    previous checkpoint as it was). Everything is tensors, numbers, strings, lists and dicts, so
    :func:`load_checkpoint` reads it with ``weights_only=True``.
    """
    state = {
        "format": CHECKPOINT_FORMAT,
        "model": _state_dict(model),
        "optimizer": optimizer.state_dict() if optimizer is not None else None,
        "scheduler": scheduler.state_dict() if scheduler is not None else None,
        "step": int(step),
        "generator": generator.get_state() if generator is not None else None,
        "loss_rng": loss_rng,
        "history": asdict(history) if history is not None else None,
    }
    path = Path(path)
    with files.atomic_write(path) as f:
        torch.save(state, f)
    return path


def _read_checkpoint(path: Union[str, Path]) -> dict:
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"checkpoint {str(path)!r} does not exist; train first (fit(..., checkpoint=...)) "
                                "or fix the path")
    if path.is_dir():
        raise ValueError(f"checkpoint {str(path)!r} is a folder; give the checkpoint file inside it")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # truncated zip, text file, foreign pickle: PyTorch's message would advise weights_only=False
        raise ValueError(f"checkpoint {str(path)!r} cannot be read ({type(err).__name__}: it is truncated, corrupt "
                         "or not a PyTorch checkpoint); retrain to write it again, or fix the path") from None
    if not isinstance(state, dict):
        raise ValueError(f"checkpoint {str(path)!r} holds a {type(state).__name__}, not a model's weights; "
                         "retrain to write it with train.save_checkpoint, or fix the path")
    if state.get("format") != CHECKPOINT_FORMAT:       # a bare state_dict (older checkpoints, shipped weights)
        state = {"format": None, "model": state, "optimizer": None, "scheduler": None, "step": 0,
                 "generator": None, "loss_rng": None, "history": None}
    return state


def _load_model_state(model: torch.nn.Module, weights: dict, path: Union[str, Path]) -> None:
    if not all(isinstance(v, torch.Tensor) for v in weights.values()):
        raise ValueError(f"checkpoint {str(path)!r} does not hold a model's weights (tensors by name); "
                         "retrain to write it with train.save_checkpoint, or fix the path")
    own = model.state_dict()
    missing = sorted(set(own) - set(weights))
    unexpected = sorted(set(weights) - set(own))
    shapes = [f"{k}: checkpoint {tuple(weights[k].shape)} vs model {tuple(own[k].shape)}"
              for k in own if k in weights and weights[k].shape != own[k].shape]
    if missing or unexpected or shapes:
        parts = ([f"missing in the checkpoint: {', '.join(missing[:8])}"] if missing else []) + \
                ([f"not in the model: {', '.join(unexpected[:8])}"] if unexpected else []) + \
                ([f"shapes differ: {'; '.join(shapes[:8])}"] if shapes else [])
        raise ValueError(f"checkpoint {str(path)!r} was written by a model of another shape "
                         f"({type(model).__name__} here); " + " | ".join(parts) +
                         ". Build the model with the shape the checkpoint expects, or retrain and save again")
    model.load_state_dict(weights)


def load_checkpoint(model: torch.nn.Module, path: Union[str, Path]) -> torch.nn.Module:
    """Load the weights in ``path`` (written by :func:`save_checkpoint` or a bare ``state_dict``) into ``model``.

    Read with ``weights_only=True`` (no code is unpickled). A missing file raises
    ``FileNotFoundError``; a truncated, corrupt or foreign file, or weights of another model shape
    (the mismatched names and shapes are listed), raise ``ValueError`` naming the file and the fix.
    To continue training from a checkpoint use ``fit(..., checkpoint=path, resume=True)``.
    """
    _load_model_state(model, _read_checkpoint(path)["model"], path)
    return model


# ----------------------------------------------------------------------------- input checks

def resolve_device(device: Optional[Union[str, torch.device]] = None) -> torch.device:
    """``device`` (or :func:`csm_edu.config.device` when None) as a ``torch.device`` that exists here.

    ValueError naming ``device`` (or ``CSM_EDU_DEVICE``) for a name PyTorch does not know or a
    device this machine does not have.
    """
    name = "device"
    if device is None:
        name = "CSM_EDU_DEVICE"
        try:
            device = config.device()
        except RuntimeError as err:
            raise ValueError(f"CSM_EDU_DEVICE={os.environ.get('CSM_EDU_DEVICE')!r} is not a device name ({err}); "
                             "set it to 'cpu' or 'cuda' (or unset it)") from None
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError) as err:
        raise ValueError(f"{name} {device!r} is not a device name ({err}); use 'cpu', 'cuda' or 'cuda:0'") from None
    if dev.type == "cuda":
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if count == 0 or (dev.index is not None and dev.index >= count):
            raise ValueError(f"{name} {str(dev)!r} does not exist here ({count} CUDA device(s) visible); "
                             "use 'cpu'" + (" or 'cuda:0'" if count else ""))
    elif dev.type == "mps":
        if not (hasattr(torch.backends, "mps") and torch.backends.mps.is_available()):
            raise ValueError(f"{name} 'mps' does not exist here; use 'cpu'")
    elif dev.type != "cpu":
        raise ValueError(f"{name} {str(dev)!r} is not supported by the kit; use 'cpu' or 'cuda'")
    return dev


def _check_loss(loss, step: int, finite: bool = True) -> torch.Tensor:
    if not isinstance(loss, torch.Tensor):
        raise TypeError(f"loss_fn must return a torch tensor (a scalar with a gradient), got {type(loss).__name__}; "
                        "compute the loss with torch operations, not NumPy or float()")
    if loss.numel() != 1:
        raise ValueError(f"loss_fn must return a scalar, got a tensor of shape {tuple(loss.shape)}; "
                         "reduce it, e.g. with .mean()")
    if not loss.requires_grad:
        raise ValueError("loss_fn returned a tensor without a gradient (computed under torch.no_grad(), from "
                         ".detach()ed values or not from the model's parameters); return the differentiable loss")
    if finite and not torch.isfinite(loss):
        _diverged(loss.item(), step)
    return loss.reshape(())


def _diverged(value: float, step: int):
    raise FloatingPointError(f"loss became {value} at step {step}; lower lr or set clip_grad=1.0")


def _is_shape_error(err: Exception) -> bool:
    text = str(err).lower()
    return any(word in text for word in ("shape", "size", "dimension", "width", "columns"))


def _build(obj, arg, default, kind):
    """An optimiser/scheduler: ``default()`` for None, ``obj`` if it is an instance, ``obj(arg)`` for a factory."""
    if obj is None:
        return default()
    if isinstance(obj, kind):
        return obj
    if callable(obj):
        built = obj(arg)
        if not isinstance(built, kind):
            raise TypeError(f"the {kind.__name__} factory returned {type(built).__name__}, not a {kind.__name__}")
        return built
    raise TypeError(f"expected a {kind.__name__} or a function building one, got {type(obj).__name__}")


def _rng_state(dev: torch.device) -> dict:
    """The global RNG stream(s) a loss draws from on ``dev``: the CPU one, and the GPU's on CUDA."""
    return {"cpu": torch.get_rng_state(), "cuda": torch.cuda.get_rng_state(dev) if dev.type == "cuda" else None}


@contextlib.contextmanager
def _loss_stream(seed: int, dev: torch.device):
    """Run a block with the global RNG (CPU, and ``dev``'s if CUDA) in a forked copy started from ``seed``.

    The same as :func:`csm_edu.config.seeded` for the streams a loss on ``dev`` uses, built from
    the state of a freshly seeded local generator instead of reseeding the global generator (which also
    schedules seeding for every accelerator and costs milliseconds: too much per call for a fit
    nested in every step of another, such as a score estimator's inside the VAE's). The caller's
    streams are restored afterwards.
    """
    devices = [dev.index if dev.index is not None else torch.cuda.current_device()] if dev.type == "cuda" else []
    with torch.random.fork_rng(devices=devices):
        torch.set_rng_state(torch.Generator().manual_seed(seed).get_state())
        if devices:
            torch.cuda.set_rng_state(torch.Generator(device=dev).manual_seed(seed).get_state(), dev)
        yield


def _loss_seed(generator: torch.Generator, full_batch: bool = False) -> int:
    """The seed of the loss's noise stream: the generator's own seed while it is unused (so a fresh
    ``torch.Generator().manual_seed(s)`` reproduces the runs of the kit's earlier ``fit(seed=s)``),
    else, and always for full batches (which draw nothing else), a number drawn from it, so that a
    generator reused across calls gives each call fresh noise."""
    seed = generator.initial_seed()
    if not full_batch and torch.equal(generator.get_state(), torch.Generator().manual_seed(seed).get_state()):
        return seed % (2 ** 62)
    return int(torch.randint(0, 2 ** 62, (1,), generator=generator))


def _set_rng_state(state: dict, dev: torch.device) -> None:
    torch.set_rng_state(state["cpu"])
    if state.get("cuda") is not None and dev.type == "cuda":
        torch.cuda.set_rng_state(state["cuda"], dev)


# ----------------------------------------------------------------------------- distributed

def _distributed() -> tuple:
    """(rank, world size) of an initialised torch.distributed process group, else (0, 1)."""
    dist = torch.distributed
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


class _LossModule(torch.nn.Module):
    """``forward(batch) = loss_fn(model, batch)``: the module DDP wraps, so that its forward sees the loss.

    DistributedDataParallel prepares its gradient all-reduce in ``forward``; losses that call
    other methods of the model (``score``, ``scores_and_diagonal``, ``loss``) would bypass it if
    the model itself were wrapped. Routing the whole loss through this forward makes every
    parameter gradient of the loss go through DDP's reducer, whatever the loss calls.
    """

    def __init__(self, model: torch.nn.Module, loss_fn: Callable):
        super().__init__()
        self.model = model
        self.loss_fn = loss_fn

    def forward(self, batch):
        return self.loss_fn(self.model, batch)


# ----------------------------------------------------------------------------- the loop

def fit(model: torch.nn.Module, loss_fn: Callable, data: torch.Tensor, *, steps: int,
        batch_size: Optional[int] = 256, lr: float = 1e-3, optimizer=None, scheduler=None,
        lr_decay: bool = True, weight_decay: float = 0.0, clip_grad: Optional[float] = None,
        callbacks: Iterable[Callable] = (), generator: Optional[torch.Generator] = None,
        checkpoint: Optional[Union[str, Path]] = None, checkpoint_every: Optional[int] = None,
        resume: bool = False, progress: bool = True, device: Optional[Union[str, torch.device]] = None,
        history: Optional[History] = None, distributed: Optional[bool] = None) -> History:
    r"""Train ``model`` for ``steps`` optimiser steps of ``loss_fn`` on minibatches of ``data``.

    Each step draws ``batch_size`` row indices uniformly with replacement from ``generator``
    (``batch_size=None``: the whole of ``data`` every step, nothing drawn), computes
    ``loss = loss_fn(model, batch)`` (a differentiable scalar tensor), and takes one step of
    the optimiser on its gradient.

    - ``optimizer``: None for ``Adam(lr, weight_decay)``; an optimiser instance (used as is, its
      state carried on, e.g. across calls) or a factory ``params -> optimiser``.
    - ``scheduler``: None for a cosine from ``lr`` to 0.05 ``lr`` over ``steps`` when
      ``lr_decay`` (else a constant rate); an instance, or a factory ``optimizer -> scheduler``;
      stepped once per optimiser step.
    - ``clip_grad`` clips the global gradient norm (useful for exact/sliced SM early on).
    - ``callbacks``: each is called as ``callback(step, model, history)`` after every step,
      ``step`` = steps done in this call (1..steps), e.g. to record snapshots or evaluations
      every k steps; their time is not counted in ``history.seconds``.
    - ``generator``: the source of all randomness (default ``torch.Generator().manual_seed(0)``,
      so a run is reproducible). Minibatch indices are drawn from it; ``loss_fn`` and the model
      draw their noise from PyTorch's global RNG, which ``fit`` runs in a forked copy seeded
      once from ``generator`` (with its seed while it is unused, else with a number drawn from it) (as :func:`csm_edu.config.seeded` does): the caller's global stream is
      left untouched and nothing is reseeded globally.
    - ``checkpoint``: a file path, checked writable before training starts. The full training
      state (weights, optimiser and scheduler state, step, both RNG states, History) is written
      atomically every ``checkpoint_every`` steps and after the last step (only at the end if
      ``checkpoint_every`` is None). With ``resume=True`` an existing checkpoint is loaded and
      training continues from its step up to ``steps`` in total (a fresh start when the file
      does not exist yet); an interrupted run resumed this way ends with exactly the parameters
      of an uninterrupted run, provided ``loss_fn`` keeps no state of its own across steps.
    - ``device`` defaults to :func:`csm_edu.config.device`; model and data are moved there.
    - ``history`` continues an earlier History (appends to it); with ``resume`` the
      checkpoint's History is continued instead.
    - ``progress`` shows a tqdm bar with the current loss.

    Distributed (``torch.distributed`` initialised before the call, e.g. under ``torchrun``, and
    ``distributed`` not False; ``distributed=False`` trains on this process alone, as a fit
    nested inside another fit's loss must, e.g. a score estimator inside the VAE's; the
    same call on every rank, with the same ``data``, ``steps``, ``batch_size`` and an equally
    seeded ``generator`` (the default is)):

    - ``batch_size`` is the GLOBAL batch B. Every rank draws the same B indices from its
      (identical) generator and keeps its own contiguous slice, ``torch.tensor_split(idx, K)[rank]``
      (sizes differ by at most one; B >= K is required); no DistributedSampler is needed.
    - The loss goes through a DistributedDataParallel wrapper of a module whose
      ``forward(batch)`` returns ``loss_fn(model, batch)``, so DDP all-reduces the gradients even
      when the loss calls ``model.score`` or ``model.scores_and_diagonal`` rather than
      ``forward``. ``loss_fn`` must return the MEAN over its batch rows; rank r's loss L_r over
      its n_r rows is scaled by K n_r / B before ``backward``, so that DDP's average of the
      gradients is the gradient of (1/B) sum_r n_r L_r, the mean loss over the global batch: K
      processes take the step one process takes on the same B rows (to float rounding), also
      for slices of unequal size. Parameters the loss does not use (an energy's output bias under
      a score loss) are found each step (``find_unused_parameters=True``) and keep no gradient,
      as in one process. DDP broadcasts rank 0's weights at the start.
    - The loss recorded in ``history`` (on every rank) and shown is the all-reduced global mean;
      a non-finite global loss stops all ranks together.
    - Noise inside ``loss_fn`` comes from a per-rank stream (seeded from the generator plus the
      rank), so noisy losses match a one-process run in distribution, not bit for bit.
    - The progress bar is shown and checkpoints are written by rank 0 only (holding every
      rank's noise stream), the others wait at a barrier; on ``resume`` every rank reads the
      checkpoint (it must be on a file system all ranks see) and the run continues exactly when
      resumed with the same number of processes.
    - Callbacks run on every rank (use ``torch.distributed.get_rank()`` to restrict them).
    - Backends: gloo with CPU tensors, nccl with CUDA tensors; on CUDA call
      ``torch.cuda.set_device(local_rank)`` first (``device='cuda'`` then means that GPU).

    Bad input raises ValueError/TypeError naming it: empty or non-finite ``data``, ``data`` whose
    width does not fit the model, a device that does not exist here, a ``loss_fn`` returning a
    NumPy value, a non-scalar or a tensor without gradient. A non-finite loss stops training
    with FloatingPointError suggesting a smaller ``lr``.
    """
    steps = checks.positive_int(steps, "steps")
    if batch_size is not None:
        batch_size = checks.positive_int(batch_size, "batch_size")
    lr = checks.positive(lr, "lr")
    if not callable(loss_fn):
        raise TypeError(f"loss_fn must be a function (model, batch) -> scalar tensor, got {type(loss_fn).__name__}")
    if not isinstance(data, torch.Tensor) or data.dim() < 2:
        raise ValueError("data must be a tensor of shape (n, D) or (n, C, H, W)")
    if data.shape[0] == 0:
        raise ValueError(f"data is empty (shape {tuple(data.shape)}); give at least one row to train on")
    if not torch.isfinite(data).all():
        raise ValueError("data contains NaN or inf; clean it before training")
    model_dim = getattr(model, "dim", None)
    conditional = bool(getattr(model, "cond_dim", 0))      # then the loss splits each row into (x, y)
    if data.dim() == 2 and isinstance(model_dim, int) and not conditional and data.shape[1] != model_dim:
        raise ValueError(f"data has {data.shape[1]} columns but the model was built for dim={model_dim}; "
                         f"give data of shape (n, {model_dim}) or build the model with dim={data.shape[1]}")
    callbacks = list(callbacks)
    for cb in callbacks:
        if not callable(cb):
            raise TypeError(f"callbacks must be functions (step, model, history), got {type(cb).__name__}")
    if checkpoint_every is not None:
        checkpoint_every = checks.positive_int(checkpoint_every, "checkpoint_every")
    if (checkpoint_every is not None or resume) and checkpoint is None:
        raise ValueError("checkpoint_every and resume need checkpoint=<file path>")
    if checkpoint is not None:
        checkpoint = files.check_writable(checkpoint, name="checkpoint")
    if generator is None:
        generator = torch.Generator().manual_seed(0)
    elif not isinstance(generator, torch.Generator):
        raise TypeError(f"generator must be a torch.Generator, got {type(generator).__name__}")
    dev = resolve_device(device)
    rank, world = _distributed() if distributed is not False else (0, 1)
    if distributed and world == 1 and not (torch.distributed.is_available() and torch.distributed.is_initialized()):
        raise ValueError("distributed=True needs torch.distributed.init_process_group(...) first (e.g. run under torchrun)")
    if world > 1:
        if dev.type == "cuda" and dev.index is None:
            dev = torch.device("cuda", torch.cuda.current_device())
        backend = str(torch.distributed.get_backend())
        if backend == "nccl" and dev.type != "cuda":
            raise ValueError(f"device {str(dev)!r} with the nccl backend: nccl needs CUDA tensors; "
                             "use device='cuda' or the gloo backend on CPU")
        global_batch = data.shape[0] if batch_size is None else min(batch_size, data.shape[0])
        if global_batch < world:
            raise ValueError(f"batch_size {global_batch} is the global batch and must be >= the number of "
                             f"processes ({world}); raise batch_size")

    model.to(dev)
    data = data.to(dev)
    params = [p for p in model.parameters() if p.requires_grad]
    if not params:
        raise ValueError("model has no trainable parameters")
    optimizer = _build(optimizer, params, lambda: torch.optim.Adam(params, lr=lr, weight_decay=weight_decay),
                       torch.optim.Optimizer)
    scheduler = _build(scheduler, optimizer, lambda: (
        torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, steps, eta_min=0.05 * lr) if lr_decay else None),
        torch.optim.lr_scheduler.LRScheduler)
    history = history if history is not None else History(batch_size=batch_size or data.shape[0])
    loss_seed = _loss_seed(generator, full_batch=batch_size is None)
    done, loss_rng = 0, None
    if resume and checkpoint.exists():
        state = _read_checkpoint(checkpoint)
        if state["format"] is None:
            raise ValueError(f"checkpoint {str(checkpoint)!r} holds weights only, no training state to resume; "
                             "resume=False to start over")
        _load_model_state(model, state["model"], checkpoint)
        optimizer.load_state_dict(state["optimizer"])
        if scheduler is not None and state["scheduler"] is not None:
            scheduler.load_state_dict(state["scheduler"])
        generator.set_state(state["generator"])
        loss_rng, done = state["loss_rng"], state["step"]
        if isinstance(loss_rng, list):                  # written by a distributed run: one stream per rank
            loss_rng = loss_rng[rank] if len(loss_rng) == world else None
        elif world > 1:
            loss_rng = None
        if done > steps:
            raise ValueError(f"checkpoint {str(checkpoint)!r} is at step {done}, beyond steps={steps}; "
                             "raise steps or start over with resume=False")
        if state["history"] is not None:
            history = History(**state["history"])

    n = data.shape[0]
    show = progress and rank == 0
    bar = tqdm(total=steps, initial=done, leave=False, mininterval=0.5) if show else None
    model.train()
    forward = None
    if world > 1:
        forward = torch.nn.parallel.DistributedDataParallel(
            _LossModule(model, loss_fn), device_ids=[dev.index] if dev.type == "cuda" else None,
            find_unused_parameters=True)    # e.g. an energy's output bias: no gradient from a score loss
    with _loss_stream((loss_seed + rank) % (2 ** 62), dev):
        if loss_rng is not None:
            _set_rng_state(loss_rng, dev)

        def save(step):
            rng = _rng_state(dev)
            if world > 1:
                states = [None] * world
                torch.distributed.all_gather_object(states, rng)
                rng = states
            if rank == 0:
                save_checkpoint(model, checkpoint, optimizer=optimizer, scheduler=scheduler, step=step,
                                generator=generator, history=history, loss_rng=rng)
            if world > 1:
                torch.distributed.barrier()

        try:
            for step in range(done + 1, steps + 1):
                t0 = time.perf_counter()
                if batch_size is None:
                    idx = None if world == 1 else torch.arange(n)
                else:
                    idx = torch.randint(0, n, (min(batch_size, n),), generator=generator)
                if world > 1:
                    share = len(idx)
                    idx = torch.tensor_split(idx, world)[rank]
                batch = data if idx is None else data[idx.to(dev)]
                try:
                    loss = loss_fn(model, batch) if forward is None else forward(batch)
                except (RuntimeError, ValueError) as err:
                    if step == done + 1 and _is_shape_error(err) and not str(err).startswith("data "):
                        raise ValueError(f"data of shape {tuple(data.shape)} does not fit the model "
                                         f"({type(model).__name__}): {err}. Give data of the shape the model "
                                         "was built for") from err
                    raise
                loss = _check_loss(loss, step, finite=world == 1)
                optimizer.zero_grad(set_to_none=True)
                if world > 1:
                    part = len(idx) / share                     # n_r / B
                    total = loss.detach() * part
                    torch.distributed.all_reduce(total)          # the global batch's mean loss
                    if not torch.isfinite(total):
                        _diverged(total.item(), step)
                    (loss * (world * part)).backward()           # DDP averages: grad of the global mean
                    loss = total
                else:
                    loss.backward()
                if clip_grad is not None:
                    torch.nn.utils.clip_grad_norm_(params, clip_grad)
                optimizer.step()
                if scheduler is not None:
                    scheduler.step()
                value = loss.item()
                history.loss.append(value)
                history.steps += 1
                history.seconds += time.perf_counter() - t0
                if bar is not None:
                    bar.update(1)
                    if step % 20 == 0 or step == steps or step == done + 1:
                        bar.set_postfix(loss=f"{value:.4f}", refresh=False)
                for cb in callbacks:
                    cb(step, model, history)
                if callbacks:
                    model.train()                    # a callback may have switched to eval mode
                if checkpoint is not None and checkpoint_every is not None and step % checkpoint_every == 0:
                    save(step)
            if checkpoint is not None and (checkpoint_every is None or steps % checkpoint_every != 0 or done == steps):
                save(steps)
        finally:
            if bar is not None:
                bar.close()
    model.eval()
    return history
