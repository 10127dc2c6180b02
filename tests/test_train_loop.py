import csv
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import tensorflow as tf
from conftest import SMALL_NETS, make_dataset

from dped import training
from dped.runs import ResumeError

TRAIN = [sys.executable, "-m", "dped.cli", "train"]


def small_config(tmp_path):
    cfg = make_dataset(tmp_path / "data", n_train=8, n_test=2, size=SMALL_NETS["patch_size"])
    return cfg.replace(
        **SMALL_NETS,
        name="tiny",
        vgg_weights="random",
        batch_size=2,
        num_iters=8,
        eval_every=2,
        deterministic=True,
        keep_checkpoints=10,
    )


def final_row(run_dir):
    with open(run_dir / "metrics.csv") as f:
        rows = list(csv.DictReader(f))
    return [{k: v for k, v in r.items() if k != "wall_s"} for r in rows]


def test_sigkill_and_resume_give_the_uninterrupted_metrics(tmp_path):
    cfg = small_config(tmp_path)
    cfg.dump_yaml(tmp_path / "tiny.yaml")
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}
    args = TRAIN + ["--config", str(tmp_path / "tiny.yaml"), "--out"]
    subprocess.run(args + [str(tmp_path / "a")], check=True, env=env, capture_output=True)

    victim = subprocess.Popen(
        args + [str(tmp_path / "b")], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    marker = tmp_path / "b" / "checkpoints" / "ckpt-4.index"
    deadline = time.time() + 300
    while not marker.exists() and victim.poll() is None and time.time() < deadline:
        time.sleep(0.05)
    victim.send_signal(signal.SIGKILL)
    assert victim.wait() == -signal.SIGKILL  # killed mid-run, not finished
    assert len(final_row(tmp_path / "b")) < 4

    subprocess.run(
        args + [str(tmp_path / "b"), "--resume"], check=True, env=env, capture_output=True
    )
    a, b = final_row(tmp_path / "a"), final_row(tmp_path / "b")
    assert [r["step"] for r in b] == ["2", "4", "6", "8"]
    assert a == b  # every metric of every evaluation, exactly


def assert_tensorboard_shows_the_run_by_name(logdir, row):
    """Read back through TensorBoard's own event reader, as `tensorboard --logdir` would."""
    from tensorboard.backend.event_processing.event_multiplexer import EventMultiplexer

    mux = EventMultiplexer().AddRunsFromDirectory(str(logdir))
    mux.Reload()
    assert list(mux.Runs()) == ["run"]  # the run folder's name, not "tensorboard"
    tags = set(mux.Runs()["run"]["tensors"])
    assert {"train/content", "test/generator", "metrics/psnr", "metrics/ms_ssim"} <= tags
    assert all(t.split("/")[0] in ("train", "test", "metrics") for t in tags), tags
    assert not {t for t in tags if t.endswith(("patches", "wall_s", "step"))}
    (event,) = mux.Tensors("run", "metrics/psnr")
    assert event.step == int(row["step"])
    assert float(tf.make_ndarray(event.tensor_proto)) == pytest.approx(float(row["psnr"]), 1e-5)


def test_resume_refuses_a_changed_config(tmp_path):
    cfg = small_config(tmp_path).replace(num_iters=2, deterministic=False)
    run = training.train(cfg, out=tmp_path / "run", progress=False)
    with pytest.raises(
        ResumeError, match=r"changed config: learning_rate \(0.0001 -> 0.001\), seed \(0 -> 3\)"
    ):
        training.train(cfg.replace(learning_rate=1e-3, seed=3), out=run, resume=True)
    with pytest.raises(ResumeError, match="already holds a run: pass --resume"):
        training.train(cfg, out=run)


def test_a_nan_loss_stops_with_the_step_and_term(tmp_path, monkeypatch):
    cfg = small_config(tmp_path).replace(num_iters=6, deterministic=False)
    real_step = training.DPEDModel.train_step
    calls = {"n": 0}

    def poisoned(self, phone, dslr):
        calls["n"] += 1
        logs = real_step(self, phone, dslr)
        if calls["n"] == 3:
            logs = {**logs, "color": tf.constant(np.nan)}
        return logs

    monkeypatch.setattr(training.DPEDModel, "train_step", poisoned)
    with pytest.raises(
        training.TrainingError, match="step 3: loss term 'color' is nan.*last good checkpoint"
    ):
        training.train(cfg, out=tmp_path / "run", progress=False)
    kept = sorted(p.name for p in (tmp_path / "run" / "checkpoints").glob("*.index"))
    # ckpt-0: after the discriminator pre-training; ckpt-2: the last good evaluation.
    assert kept == ["ckpt-0.index", "ckpt-2.index"]


def test_a_nan_loss_before_any_checkpoint_names_no_checkpoint_folder(tmp_path, monkeypatch):
    cfg = small_config(tmp_path).replace(num_iters=4, d_pretrain_iters=0, deterministic=False)
    real_step = training.DPEDModel.train_step

    def poisoned(self, phone, dslr):
        return {**real_step(self, phone, dslr), "tv": tf.constant(np.inf)}

    monkeypatch.setattr(training.DPEDModel, "train_step", poisoned)
    run = tmp_path / "run"
    with pytest.raises(training.TrainingError) as err:
        training.train(cfg, out=run, progress=False)
    assert str(err.value) == (
        f"step 1: loss term 'tv' is inf; training stopped, before its first checkpoint: {run} "
        "holds no weights to resume from (lower learning_rate or check the data)"
    )
    assert not list(run.glob("checkpoints/*.index"))


def test_a_run_records_config_environment_and_samples(tmp_path):
    cfg = small_config(tmp_path).replace(num_iters=2, deterministic=False, tensorboard=True)
    run = training.train(cfg, out=tmp_path / "run", progress=False)
    import json

    env = json.loads((run / "environment.json").read_text())
    assert env["vgg_random"] is True and env["seed"] == cfg.seed
    assert env["precision"] == cfg.precision == "float32"
    assert (run / "samples" / "step_000002.png").is_file()
    row = final_row(run)[-1]
    from dped.runs import read_patch_psnr

    per_patch = read_patch_psnr(run, 2)  # every test patch's PSNR: the report pairs runs by it
    assert len(per_patch) == int(row["patches"]) > 1
    assert per_patch.mean() == pytest.approx(float(row["psnr_dslr_enhanced"]), abs=1e-4)
    assert read_patch_psnr(run, 1) is None
    assert_tensorboard_shows_the_run_by_name(tmp_path, row)
    for key in (
        "train_content",
        "train_color",
        "train_texture",
        "train_tv",
        "psnr",
        "ssim",
        "ms_ssim",
        "test_d_accuracy",
    ):
        assert np.isfinite(float(row[key])), key
