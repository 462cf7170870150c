"""Each objective trains a model on a Gaussian mixture until the Fisher divergence to the true
score falls well below that of a zero score (quick settings)."""
import pytest
import torch

from csm_edu import distributions, metrics, objectives, train
from csm_edu.denoise import noised_distribution
from csm_edu.models import EnergyMLP, NoiseConditionalScoreNet, ScoreMLP

TARGET = distributions.GaussianMixture([[-1.5, -0.5], [1.5, 0.5]], [0.4, 0.6], [0.6, 0.4])


def _data():
    return TARGET.sample(4000, generator=torch.Generator().manual_seed(0))


def _baseline(x):
    return metrics.fisher_divergence(lambda y: torch.zeros_like(y), TARGET, x)


CASES = {
    "exact_sm_energy": (lambda: EnergyMLP(2, 64), lambda m, b: objectives.exact_score_matching(m.score, b), 0.05),
    "ssm_energy": (lambda: EnergyMLP(2, 64), lambda m, b: objectives.sliced_score_matching(m.score, b), 0.08),
    "ssm_vr_score": (lambda: ScoreMLP(2, 64), lambda m, b: objectives.sliced_score_matching(m.score, b, projection="rademacher", variance_reduction=True), 0.06),
}


@pytest.mark.parametrize("name", CASES)
def test_objective_trains_model_to_true_score(name):
    make_model, loss_fn, ratio_bound = CASES[name]
    torch.manual_seed(0)
    model = make_model()
    x = _data()
    history = train.fit(model, loss_fn, x, steps=600, batch_size=128, lr=3e-3, progress=False, device="cpu")
    x_test = TARGET.sample(2000, generator=torch.Generator().manual_seed(1))
    fd = metrics.fisher_divergence(model.score, TARGET, x_test)
    assert fd < ratio_bound * _baseline(x_test), (name, fd, _baseline(x_test))
    assert history.loss[-1] < history.loss[0]


def test_dsm_trains_score_net_to_noised_score():
    """DSM's target is the score of the noised data q_sigma = p * N(0, sigma^2 I), known exactly here."""
    torch.manual_seed(0)
    sigma = 0.3
    model = ScoreMLP(2, 64)
    train.fit(model, lambda m, b: objectives.denoising_score_matching(m.score, b, sigma), _data(), steps=600,
              batch_size=128, lr=3e-3, progress=False, device="cpu")
    noised = noised_distribution(TARGET, sigma)
    x_test = noised.sample(2000, generator=torch.Generator().manual_seed(1))
    fd = metrics.fisher_divergence(model.score, noised, x_test)
    assert fd < 0.05 * metrics.fisher_divergence(lambda y: torch.zeros_like(y), noised, x_test)


def test_multiscale_dsm_trains_noise_conditional_net():
    torch.manual_seed(0)
    model = NoiseConditionalScoreNet(2, 128, 3)
    sigmas = objectives.geometric_sigmas(2.0, 0.2, 5)
    train.fit(model, lambda m, b: objectives.multiscale_dsm(m, b, sigmas), _data(), steps=800,
              batch_size=256, lr=3e-3, progress=False, device="cpu")
    for sigma in (2.0, 0.2):
        noised = noised_distribution(TARGET, sigma)
        x_test = noised.sample(2000, generator=torch.Generator().manual_seed(1))
        fd = metrics.fisher_divergence(model.at(sigma), noised, x_test)
        assert fd < 0.08 * metrics.fisher_divergence(lambda y: torch.zeros_like(y), noised, x_test), sigma


# ----------------------------------------------------------------------------- the loop's contract

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from csm_edu import config

ROOT = Path(__file__).resolve().parents[1]


def _noisy_loss(m, b):
    """Draws noise from the global RNG, as the objectives do: fit must make it reproducible."""
    return (m.energy(b + 0.1 * torch.randn_like(b)) ** 2).mean()


def _model(seed=0, hidden=16):
    with config.seeded(seed):
        return EnergyMLP(2, hidden)


def _x():
    return torch.randn(256, 2, generator=torch.Generator().manual_seed(1))


def _params(model):
    return torch.cat([p.detach().flatten() for p in model.parameters()])


def test_fit_leaves_the_global_rng_alone_and_is_reproducible_from_its_generator():
    torch.manual_seed(123)
    expected_next = torch.rand(3)
    torch.manual_seed(123)
    runs = []
    for seed in (4, 4, 5):
        model = _model()
        train.fit(model, _noisy_loss, _x(), steps=15, batch_size=32, generator=torch.Generator().manual_seed(seed),
                  progress=False, device="cpu")
        runs.append(_params(model))
    assert torch.equal(torch.rand(3), expected_next)        # the caller's stream is untouched
    assert torch.equal(runs[0], runs[1]) and not torch.equal(runs[0], runs[2])
    a, b = _model(), _model()
    train.fit(a, _noisy_loss, _x(), steps=5, progress=False, device="cpu")
    train.fit(b, _noisy_loss, _x(), steps=5, progress=False, device="cpu")
    assert torch.equal(_params(a), _params(b))              # default generator: seeded 0


@pytest.mark.parametrize("batch_size", [32, None])
def test_a_generator_reused_across_calls_gives_each_call_fresh_noise(batch_size):
    g = torch.Generator().manual_seed(0)
    noise = []
    for _ in range(2):
        train.fit(_model(), lambda m, b: noise.append(torch.randn(1).item()) or _noisy_loss(m, b), _x(), steps=1,
                  batch_size=batch_size, generator=g, progress=False, device="cpu")
    assert noise[0] != noise[1]


def test_optimizer_scheduler_and_callbacks_plug_in():
    seen = []
    model = _model()
    history = train.fit(model, _noisy_loss, _x(), steps=6, batch_size=16, progress=False, device="cpu",
                        optimizer=lambda params: torch.optim.SGD(params, lr=0.05),
                        scheduler=lambda opt: torch.optim.lr_scheduler.StepLR(opt, step_size=3, gamma=0.5),
                        callbacks=[lambda step, m, h: seen.append((step, m is model, len(h.loss)))])
    assert seen == [(k, True, k) for k in range(1, 7)] and history.steps == 6
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    train.fit(model, _noisy_loss, _x(), steps=3, optimizer=opt, progress=False, device="cpu")
    assert all(opt.state[p]["step"] == 3 for p in model.parameters())   # the given instance did the steps
    with pytest.raises(TypeError, match="Optimizer"):
        train.fit(model, _noisy_loss, _x(), steps=1, optimizer="adam", progress=False, device="cpu")


def test_full_batch_uses_every_row_each_step():
    sizes = []
    train.fit(_model(), lambda m, b: sizes.append(len(b)) or _noisy_loss(m, b), _x()[:37], steps=3, batch_size=None,
              progress=False, device="cpu")
    assert sizes == [37, 37, 37]


class _NoWidth(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.lin = torch.nn.Linear(3, 1)


@pytest.mark.parametrize("kwargs, error, pattern", [
    (dict(data=torch.zeros(0, 2)), ValueError, "data is empty"),
    (dict(data=torch.zeros(8, 3)), ValueError, "data has 3 columns"),
    (dict(model=_NoWidth(), loss_fn=lambda m, b: m.lin(b).mean()), ValueError, "data of shape .8, 2. does not fit"),
    (dict(device="cuda:7"), ValueError, "device 'cuda:7' does not exist here"),
    (dict(device="gpu"), ValueError, "device 'gpu' is not a device name"),
    (dict(loss_fn=lambda m, b: np.float32(1.0)), TypeError, "loss_fn must return a torch tensor"),
    (dict(loss_fn=lambda m, b: m.energy(b)), ValueError, "loss_fn must return a scalar"),
    (dict(loss_fn=lambda m, b: m.energy(b).mean().detach()), ValueError, "loss_fn returned a tensor without a gradient"),
    (dict(loss_fn=lambda m, b: torch.tensor(1.0)), ValueError, "without a gradient"),
    (dict(loss_fn="ssm"), TypeError, "loss_fn must be a function"),
    (dict(checkpoint_every=5), ValueError, "checkpoint="),
])
def test_fit_rejects_bad_input_naming_it(kwargs, error, pattern):
    if "cuda" in str(kwargs.get("device", "")) and torch.cuda.device_count() > 7:
        pytest.skip("this machine has a cuda:7")
    args = dict(model=EnergyMLP(2, 8), loss_fn=_noisy_loss, data=torch.zeros(8, 2))
    args.update(kwargs)
    with pytest.raises(error, match=pattern):
        train.fit(args.pop("model"), args.pop("loss_fn"), args.pop("data"), steps=2, progress=False, **args)


def test_bad_csm_edu_device_is_named(monkeypatch):
    monkeypatch.setenv("CSM_EDU_DEVICE", "cdua")
    with pytest.raises(ValueError, match="CSM_EDU_DEVICE"):
        train.fit(EnergyMLP(2, 8), _noisy_loss, torch.zeros(8, 2), steps=1, progress=False)
    if not torch.cuda.is_available():
        monkeypatch.setenv("CSM_EDU_DEVICE", "cuda")
        with pytest.raises(ValueError, match="CSM_EDU_DEVICE 'cuda' does not exist here"):
            train.fit(EnergyMLP(2, 8), _noisy_loss, torch.zeros(8, 2), steps=1, progress=False)


def test_checkpoint_path_is_checked_before_training(tmp_path):
    model = _model()
    before = _params(model)
    with pytest.raises(ValueError, match="checkpoint .* is a folder"):
        train.fit(model, _noisy_loss, _x(), steps=3, checkpoint=tmp_path, progress=False, device="cpu")
    assert torch.equal(_params(model), before)


class _Crash(Exception):
    pass


def test_resume_after_a_crash_gives_the_parameters_of_an_uninterrupted_run(tmp_path):
    path = tmp_path / "run.pt"
    settings = dict(steps=23, batch_size=32, checkpoint_every=5, progress=False, device="cpu",
                    generator=torch.Generator().manual_seed(3))
    reference = _model()
    ref_history = train.fit(reference, _noisy_loss, _x(), **dict(settings, checkpoint=tmp_path / "ref.pt"))

    def crash(step, m, h):
        if step == 13:
            raise _Crash

    with pytest.raises(_Crash):
        train.fit(_model(), _noisy_loss, _x(), callbacks=[crash], checkpoint=path,
                  **dict(settings, generator=torch.Generator().manual_seed(3)))
    resumed = _model(seed=9)                              # other weights: the checkpoint must replace them
    history = train.fit(resumed, _noisy_loss, _x(), checkpoint=path, resume=True,
                        **dict(settings, generator=torch.Generator().manual_seed(77)))
    assert torch.equal(_params(resumed), _params(reference))
    assert history.loss == ref_history.loss and history.steps == 23
    again = train.fit(_model(seed=9), _noisy_loss, _x(), checkpoint=path, resume=True, **settings)
    assert again.loss == ref_history.loss                 # a finished run resumes to its end at once


_RUN = '''
import sys, time, torch
from csm_edu import config, train
from csm_edu.models import EnergyMLP

def run(path, callbacks=(), resume=False):
    with config.seeded(0):
        model = EnergyMLP(2, 16)
    x = torch.randn(256, 2, generator=torch.Generator().manual_seed(1))
    loss = lambda m, b: (m.energy(b + 0.1 * torch.randn_like(b)) ** 2).mean()
    train.fit(model, loss, x, steps=40, batch_size=32, checkpoint=path, checkpoint_every=5, resume=resume,
              callbacks=callbacks, generator=torch.Generator().manual_seed(2), progress=False, device="cpu")
    return model

if __name__ == "__main__":
    torch.set_num_threads(int(sys.argv[2]))
    run(sys.argv[1], callbacks=[lambda step, m, h: time.sleep(0.1)])
'''


def _run_script(script_path, args, err_path):
    import runpy
    import traceback
    os.environ["CSM_EDU_DEVICE"] = "cpu"
    sys.argv = [str(script_path), *args]
    try:
        runpy.run_path(str(script_path), run_name="__main__")
    except BaseException:
        Path(err_path).write_text(traceback.format_exc())
        raise


class _Forked:
    """The part of ``subprocess.Popen`` the kill tests use, for ``script_path`` run as ``__main__`` in a
    fork of this process: the child starts with torch and the kit imported (a fresh interpreter spends
    about 4 CPU-s importing them) and is a separate process that SIGKILL ends mid-write all the same."""

    def __init__(self, script_path, *args):
        import multiprocessing
        self._err = Path(script_path).with_suffix(".stderr")
        self._process = multiprocessing.get_context("fork").Process(
            target=_run_script, args=(script_path, [str(a) for a in args], str(self._err)), daemon=True)
        self._process.start()
        self.stderr = self

    def read(self):  # proc.stderr.read(), as bytes
        return self._err.read_bytes() if self._err.exists() else b""

    @property
    def returncode(self):
        return self._process.exitcode

    def poll(self):
        return self._process.exitcode

    def send_signal(self, sig):
        os.kill(self._process.pid, sig)

    def kill(self):
        self._process.kill()

    def wait(self, timeout=None):
        self._process.join(timeout)
        if self._process.exitcode is None:
            raise subprocess.TimeoutExpired(str(self._process), timeout)
        return self._process.exitcode


def _start(script_path, *args):
    import multiprocessing
    if "fork" in multiprocessing.get_all_start_methods():
        return _Forked(script_path, *args)
    env = dict(os.environ, PYTHONPATH=str(ROOT), CSM_EDU_DEVICE="cpu")
    return subprocess.Popen([sys.executable, str(script_path), *map(str, args)], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


def _wait_for(path, proc, timeout=120.0):
    deadline = time.monotonic() + timeout
    while not path.exists():
        if proc.poll() is not None:
            raise AssertionError(f"the subprocess ended early: {proc.stderr.read().decode()[-2000:]}")
        if time.monotonic() > deadline:
            proc.kill()
            raise AssertionError("no checkpoint appeared in time")
        time.sleep(0.01)


def test_sigkilled_run_resumed_equals_an_uninterrupted_run(tmp_path):
    script = tmp_path / "run.py"
    script.write_text(_RUN)
    path = tmp_path / "killed.pt"
    proc = _start(script, path, torch.get_num_threads())
    try:
        _wait_for(path, proc)
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.wait(timeout=60)
    assert proc.returncode == -signal.SIGKILL
    step = torch.load(path, weights_only=True)["step"]
    assert 5 <= step < 40 and step % 5 == 0               # killed mid-run, after a checkpoint
    namespace = {}
    exec(compile(_RUN, str(script), "exec"), namespace)
    resumed = namespace["run"](path, resume=True)
    reference = namespace["run"](tmp_path / "reference.pt")
    assert torch.equal(_params(resumed), _params(reference))


_SAVE_LOOP = '''
import sys, torch
from csm_edu import train
m = torch.nn.Linear(1500, 1500)
i = 0
while True:
    with torch.no_grad():
        m.bias.fill_(float(i))
    train.save_checkpoint(m, sys.argv[1], step=i)
    i += 1
'''


def test_a_kill_during_save_leaves_the_previous_checkpoint_loadable(tmp_path):
    script = tmp_path / "save_loop.py"
    script.write_text(_SAVE_LOOP)
    path = tmp_path / "big.pt"                           # ~9 MB per save
    for delay in (0.1, 0.4):
        path.unlink(missing_ok=True)
        proc = _start(script, path)
        try:
            _wait_for(path, proc)
            time.sleep(delay)                            # the loop is mid-write most of the time
        finally:
            proc.send_signal(signal.SIGKILL)
            proc.wait(timeout=60)
        model = train.load_checkpoint(torch.nn.Linear(1500, 1500), path)
        assert torch.all(model.bias == model.bias[0])    # one whole save, not a mix of two


class _Foreign:
    pass


def test_load_checkpoint_names_the_file_and_the_fix(tmp_path):
    good = train.save_checkpoint(_model(), tmp_path / "good.pt", step=4)
    with pytest.raises(FileNotFoundError, match="missing.pt"):
        train.load_checkpoint(_model(), tmp_path / "missing.pt")
    truncated = tmp_path / "truncated.pt"
    truncated.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    text = tmp_path / "notes.pt"
    text.write_text("not a checkpoint\n")
    foreign = tmp_path / "foreign.pt"
    torch.save(_Foreign(), foreign)
    for bad in (truncated, text, foreign):
        with pytest.raises(ValueError, match=f"{bad.name}.*retrain") as info:
            train.load_checkpoint(_model(), bad)
        assert "weights_only" not in str(info.value) and info.value.__cause__ is None
    with pytest.raises(ValueError, match=r"another shape.*net\.0\.weight: checkpoint \(16, 2\) vs model \(32, 2\)"):
        train.load_checkpoint(_model(hidden=32), good)
    with pytest.raises(ValueError, match="missing in the checkpoint"):
        train.load_checkpoint(torch.nn.Sequential(torch.nn.Linear(2, 2)), good)
    bare = tmp_path / "bare.pt"                          # a plain state_dict (shipped weights) loads too
    model = _model()
    torch.save(model.state_dict(), bare)
    assert torch.equal(_params(train.load_checkpoint(_model(seed=5), bare)), _params(model))


# ----------------------------------------------------------------------------- distributed (gloo, 2 processes)

def _ddp_cases():
    """(name, model, loss_fn, data, batch_size): losses that call score / scores_and_diagonal, not forward;
    global batches that split unequally over 2 ranks (7 -> 4 + 3; full batch of 11 -> 6 + 5)."""
    from csm_edu.models import ARCSM
    x = torch.randn(64, 3, generator=torch.Generator().manual_seed(4))
    with config.seeded(0):
        energy = EnergyMLP(3, 16)
        arcsm = ARCSM(3, hidden=16, n_blocks=1, context_dim=4, head_hidden=8)
    return [("exact_sm", energy, lambda m, b: objectives.exact_score_matching(m.score, b), x, 7),
            ("csm", arcsm, lambda m, b: objectives.composite_score_matching(m, b), x[:11], None)]


def _ddp_run(model, loss_fn, x, batch_size, checkpoint=None):
    history = train.fit(model, loss_fn, x, steps=4, batch_size=batch_size, lr=1e-2, progress=False, device="cpu",
                        checkpoint=checkpoint, checkpoint_every=2 if checkpoint else None)
    return _params(model), history.loss


def _ddp_worker(rank, world, port, out_dir):
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.distributed.init_process_group("gloo", rank=rank, world_size=world)
    try:
        torch.set_num_threads(1)
        results = {name: _ddp_run(model, loss_fn, x, bs, checkpoint=Path(out_dir) / f"{name}.pt")
                   for name, model, loss_fn, x, bs in _ddp_cases()}
        torch.save(results, Path(out_dir) / f"rank{rank}.pt")
    finally:
        torch.distributed.destroy_process_group()


def _free_port():
    import socket
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_two_gloo_processes_take_the_step_of_one_process_on_the_same_global_batch(tmp_path):
    import multiprocessing

    import torch.multiprocessing as mp
    # fork (Linux, macOS): the workers start with this process's imports instead of importing torch and
    # the kit again (about 4 CPU-s each); CPU only, as torch's DataLoader workers do. spawn elsewhere.
    method = "fork" if "fork" in multiprocessing.get_all_start_methods() else "spawn"
    ctx = mp.start_processes(_ddp_worker, args=(2, _free_port(), str(tmp_path)), nprocs=2, join=False,
                             start_method=method)
    deadline = time.monotonic() + 240
    while not ctx.join(timeout=1):
        if time.monotonic() > deadline:
            for p in ctx.processes:
                p.kill()
            raise AssertionError("the 2-process run did not finish within 240 s")
    ranks = [torch.load(tmp_path / f"rank{r}.pt", weights_only=True) for r in (0, 1)]
    for name, model, loss_fn, x, bs in _ddp_cases():
        params, losses = _ddp_run(model, loss_fn, x, bs)
        assert torch.equal(ranks[0][name][0], ranks[1][name][0]), name       # the ranks stay in step
        assert torch.allclose(ranks[0][name][0], params, rtol=1e-5, atol=1e-6), \
            (name, float((ranks[0][name][0] - params).abs().max()))
        assert ranks[0][name][1] == ranks[1][name][1]                        # every rank logs the global loss
        assert ranks[0][name][1] == pytest.approx(losses, rel=1e-5, abs=1e-6), name
        saved = torch.load(tmp_path / f"{name}.pt", weights_only=True)       # written by rank 0
        assert saved["step"] == 4 and len(saved["loss_rng"]) == 2
        fresh = _ddp_cases()[[c[0] for c in _ddp_cases()].index(name)][1]
        assert torch.allclose(_params(train.load_checkpoint(fresh, tmp_path / f"{name}.pt")), params,
                              rtol=1e-5, atol=1e-6)
