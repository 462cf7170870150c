"""The image-training command (one process): configurations, overrides, speed paths, files, resume after a kill."""
import csv
import json
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from csm_edu import train
from csm_edu.experiments import train_images as ti

ROOT = Path(__file__).resolve().parents[1]
# a digits AR-CSM small enough for a few seconds of training on one core
TINY_DIGITS = dict(made_hidden=32, context_dim=4, head_hidden=8, batch_size=16, n_train=128, n_test=40,
                   eval_batch_size=16, n_nodes=16, langevin_steps=2, langevin_sigmas=(1.0,), n_samples=4,
                   log_every=5, progress=False)


def test_every_named_configuration_resolves_with_its_model_and_objective():
    for name in ti.CONFIGS:
        cfg = ti.resolve_config(name)
        assert cfg["model"] in ti.MODELS and cfg["objective"] in ti.OBJECTIVES
        assert cfg["steps"] >= 1 and cfg["out"] == str(Path("runs") / name)
    assert ti.resolve_config("mnist-subset-made")["n_train"] == 5000
    assert ti.resolve_config("cifar10-pixelcnn")["mode"] == "gpu"


def test_overrides_parse_and_convert_to_the_defaults_types():
    assert ti.parse_overrides(["steps=200", "lr=1e-3", "out=runs/a", "bf16=True", "n_train=none",
                               "langevin_sigmas=(3.0, 1.0)"]) == dict(
        steps=200, lr=1e-3, out="runs/a", bf16=True, n_train=None, langevin_sigmas=(3.0, 1.0))
    cfg = ti.resolve_config("digits-made", dict(steps=7, lr=1, batch_size=32, langevin_sigmas=2.0))
    assert cfg["steps"] == 7 and cfg["lr"] == 1.0 and isinstance(cfg["lr"], float)
    assert cfg["batch_size"] == 32 and cfg["langevin_sigmas"] == (2.0,)


@pytest.mark.parametrize("name, overrides, message", [
    ("mnist-subst-made", {}, "did you mean mnist-subset-made"),
    ("digits-made", dict(step=3), "unknown override key 'step'; did you mean steps"),
    ("digits-made", dict(steps=2.5), "must be an integer"),
    ("digits-made", dict(bf16="yes"), "must be true or false"),
    ("digits-made", dict(objective="mle"), "use objective=csm or cdsm"),
    ("digits-gaussian-made", dict(objective="csm"), "use objective=mle"),
    ("digits-made", dict(dataset="mnist"), "fixed by the configuration"),
    ("digits-made", dict(compile=True), "compile=true cannot trace CSM"),
    ("digits-made", dict(steps=0), "steps must be an integer >= 1"),
])
def test_bad_names_and_overrides_raise_naming_the_fix(name, overrides, message):
    with pytest.raises(ValueError, match=message):
        ti.resolve_config(name, overrides)


def test_command_line_reports_a_bad_configuration_and_exits_with_status_2(capsys):
    with pytest.raises(SystemExit) as exit_info:
        ti.main(["mnist-subst-made"])
    assert exit_info.value.code == 2
    assert "did you mean mnist-subset-made" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exit_info:
        ti.main(["digits-made", "--set", "steps"])
    assert exit_info.value.code == 2
    assert "is not key=value" in capsys.readouterr().err
    assert ti.main(["--list"]) == 0
    assert "cifar10-pixelcnn" in capsys.readouterr().out


def _loss_on_fixed_batch(cfg, **speed):
    cfg = dict(cfg, **speed)
    model = ti.build_model(cfg)
    loss_fn = ti.speed_paths(model, ti.build_loss(model, cfg), cfg, torch.device("cpu"))
    data, _ = ti.load_data(cfg)
    return float(loss_fn(model, data[:32]))


@pytest.mark.parametrize("name", ["digits-made", "digits-pixelcnn", "digits-pixelcnn++", "digits-gaussian-made"])
def test_bf16_and_channels_last_give_the_float32_loss(name):
    cfg = ti.resolve_config(name, dict(dequantize="fixed", n_train=64, made_hidden=32, pixelcnn_channels=16))
    reference = _loss_on_fixed_batch(cfg)
    assert math.isfinite(reference)
    # bfloat16 keeps 8 bits of mantissa: a relative error of a few 1e-3 in the sum over pixels
    assert _loss_on_fixed_batch(cfg, bf16=True) == pytest.approx(reference, rel=3e-2)
    assert _loss_on_fixed_batch(cfg, channels_last=True) == pytest.approx(reference, rel=1e-5, abs=1e-5)


@pytest.mark.skipif(os.environ.get("CSM_EDU_SLOW_TESTS") != "1",
                    reason="torch.compile takes 1-2 minutes to compile a baseline on 2 CPU cores; "
                           "run with CSM_EDU_SLOW_TESTS=1")
def test_compile_gives_the_eager_loss():
    cfg = ti.resolve_config("digits-gaussian-made", dict(dequantize="fixed", n_train=64, made_hidden=32))
    assert _loss_on_fixed_batch(cfg, compile=True) == pytest.approx(_loss_on_fixed_batch(cfg), rel=1e-5)


def _parameters(cfg, checkpoint):
    model = train.load_checkpoint(ti.build_model(cfg), checkpoint)
    return torch.cat([p.detach().flatten() for p in model.parameters()])


def test_run_writes_metrics_samples_result_and_resumes_after_a_kill_exactly(tmp_path):
    steps = 40
    settings = dict(TINY_DIGITS, steps=steps, checkpoint_every=2)
    killed = tmp_path / "killed"
    args = [f"{k}={v}" for k, v in dict(settings, out=killed).items()]
    env = dict(os.environ, PYTHONPATH=str(ROOT), OMP_NUM_THREADS="1")
    proc = subprocess.Popen([sys.executable, "-m", "csm_edu.experiments.train_images", "digits-made", "--set",
                             *args], cwd=ROOT, env=env, start_new_session=True,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 60
        while not (killed / "checkpoint.pt").exists():
            assert proc.poll() is None, "the training process ended before writing a checkpoint"
            assert time.monotonic() < deadline, "no checkpoint after 60 s"
            time.sleep(0.02)
        os.killpg(proc.pid, signal.SIGKILL)
    finally:
        proc.wait(timeout=30)
    step_at_kill = torch.load(killed / "checkpoint.pt", weights_only=True)["step"]
    assert 0 < step_at_kill < steps, "the run was not interrupted; the test needs a kill before the end"
    assert not (killed / "result.json").exists()

    resumed = ti.train_images(ti.resolve_config("digits-made", dict(settings, out=str(killed), resume=True)))
    whole = ti.train_images(ti.resolve_config("digits-made", dict(settings, out=str(tmp_path / "whole"), n_samples=0)))
    cfg = ti.resolve_config("digits-made", settings)
    assert torch.equal(_parameters(cfg, killed / "checkpoint.pt"), _parameters(cfg, tmp_path / "whole" / "checkpoint.pt"))
    assert resumed["test_bits_per_dim"] == pytest.approx(whole["test_bits_per_dim"], abs=1e-6)
    assert resumed["history"].loss == whole["history"].loss

    with open(killed / "metrics.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert [int(r["step"]) for r in rows] == list(range(5, steps + 1, 5))       # no step twice after the resume
    assert all(float(r["images_per_second"]) > 0 for r in rows)
    result = json.loads((killed / "result.json").read_text())
    assert result["rows_per_rank"] == [16 * (steps - step_at_kill)]
    assert result["world_size"] == 1 and math.isfinite(result["test_bits_per_dim"])
    assert 0 < result["test_bits_per_dim"] < 20
    assert (killed / "samples.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

