"""The image-training command under ``torchrun --nproc_per_node=2`` (gloo on 127.0.0.1, CPU).

One test, the issue's "done when": a 2-process run of a tiny MNIST-subset AR-CSM (CSM calls
``model.scores_and_diagonal``, not ``forward``) is SIGKILLed after its first checkpoint,
resumed by a second 2-process run, and ends with the parameters, losses and test bits/dim of an
uninterrupted 1-process run on the same global batches. Without the all-reduce of the gradients
each rank would step on its own half batch and rank 0's parameters would differ.
"""
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from csm_edu import train
from csm_edu.experiments import train_images as ti

ROOT = Path(__file__).resolve().parents[1]
TORCHRUN = shutil.which("torchrun", path=str(Path(sys.executable).parent)) or shutil.which("torchrun")
# batch 15 over 2 ranks: slices of 8 and 7 rows; 20 test images in chunks of 8 on 2 ranks: 8 + 8 | 4
TINY_MNIST = dict(made_hidden=32, context_dim=4, head_hidden=8, batch_size=15, n_train=64, n_test=20,
                  eval_batch_size=8, n_nodes=16, n_samples=0, log_every=2, steps=12, checkpoint_every=2,
                  dequantize="fixed", progress=False)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _torchrun(out: Path, **extra) -> subprocess.Popen:
    args = [f"{k}={v}" for k, v in dict(TINY_MNIST, out=out, **extra).items()]
    env = dict(os.environ, PYTHONPATH=str(ROOT), OMP_NUM_THREADS="1", CSM_EDU_DEVICE="cpu")
    return subprocess.Popen([TORCHRUN, "--nproc_per_node=2", "--master_addr=127.0.0.1", f"--master_port={_free_port()}",
                             "-m", "csm_edu.experiments.train_images", "mnist-subset-made", "--set", *args],
                            cwd=ROOT, env=env, start_new_session=True, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)


def _kill_job(pid: int) -> None:
    """SIGKILL torchrun and its workers (each in a session of its own, so not in torchrun's group)."""
    def descendants(p):
        found = []
        for task in Path(f"/proc/{p}/task").glob("*"):
            for child in (task / "children").read_text().split():
                found += [int(child)] + descendants(int(child))
        return found
    for p in descendants(pid) + [pid]:
        try:
            os.kill(p, signal.SIGKILL)
        except ProcessLookupError:
            pass


def _parameters(cfg, checkpoint):
    model = train.load_checkpoint(ti.build_model(cfg), checkpoint)
    return torch.cat([p.detach().flatten() for p in model.parameters()])


@pytest.mark.skipif(TORCHRUN is None, reason="torchrun is not on the PATH of this Python")
@pytest.mark.skipif(not Path("/proc/self/task").exists(), reason="finding torchrun's workers to kill needs Linux /proc")
def test_two_processes_killed_and_resumed_equal_one_uninterrupted_process(tmp_path):
    out = tmp_path / "ddp"
    proc = _torchrun(out)
    try:
        deadline = time.monotonic() + 90
        while not (out / "checkpoint.pt").exists():
            assert proc.poll() is None, f"torchrun ended before the first checkpoint:\n{proc.stdout.read()}"
            assert time.monotonic() < deadline, "no checkpoint after 90 s"
            time.sleep(0.02)
        _kill_job(proc.pid)
    finally:
        proc.wait(timeout=30)
        proc.stdout.close()
    step_at_kill = torch.load(out / "checkpoint.pt", weights_only=True)["step"]
    assert 0 < step_at_kill < TINY_MNIST["steps"], "the 2-process run was not interrupted"

    proc = _torchrun(out, resume=True)
    log, _ = proc.communicate(timeout=120)
    assert proc.returncode == 0, log
    result = json.loads((out / "result.json").read_text())
    assert result["world_size"] == 2
    remaining = TINY_MNIST["steps"] - step_at_kill
    assert result["rows_per_rank"] == [8 * remaining, 7 * remaining]     # each rank its slice of the batch

    single = ti.train_images(ti.resolve_config("mnist-subset-made", dict(TINY_MNIST, out=str(tmp_path / "one"))))
    cfg = ti.resolve_config("mnist-subset-made", TINY_MNIST)
    two, one = _parameters(cfg, out / "checkpoint.pt"), _parameters(cfg, tmp_path / "one" / "checkpoint.pt")
    initial = torch.cat([p.detach().flatten() for p in ti.build_model(cfg).parameters()])
    assert (one - initial).abs().max() > 1e-3                     # training moved the parameters
    torch.testing.assert_close(two, one, rtol=1e-4, atol=1e-5)
    assert result["final_loss"] == pytest.approx(single["final_loss"], rel=1e-4)
    assert result["test_bits_per_dim"] == pytest.approx(single["test_bits_per_dim"], rel=1e-5)
