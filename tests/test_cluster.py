"""`dped sweep --workers 2`: a local Dask cluster of two workers runs the sweep's notebooks, a
worker killed mid-run loses no run, deterministic runs match the local executor's, and the run
folder's lock keeps a second trainer out."""

import json
import os
import signal
import subprocess
import sys
import time
import types

import pandas as pd
import psutil
import pytest
import yaml
from conftest import REPO, SMALL_NETS, make_dataset, user_env

from dped import cluster, runs, sweep

pytest.importorskip("distributed", reason="the dask executor needs pip install 'dped[cluster]'")

PROFILE = {"num_iters": 8, "eval_every": 2, "batch_size": 2, "d_pretrain_iters": 2, **SMALL_NETS}


def experiment(tmp_path, seeds, runs_):
    cfg = make_dataset(tmp_path / "data", n_train=8, n_test=2, size=SMALL_NETS["patch_size"])
    spec = {
        "name": "tiny",
        "notebook": "notebooks/DPED-main.ipynb",
        "baseline": "seed",
        "seeds": {"cpu": seeds},
        "runs": runs_,
        "profiles": {
            "cpu": {
                **PROFILE,
                "dataset_dir": cfg.dataset_dir,
                "phone": cfg.phone,
                "vgg_weights": "random",
                "deterministic": True,
            }
        },
    }
    path = tmp_path / f"tiny-{len(seeds)}.yaml"
    path.write_text(yaml.safe_dump(spec))
    return path


def start_sweep(path, results, *args, threads=None):
    env = user_env()
    if threads:  # the environment each of the 2 workers gets on this 2-core machine
        env.update(cluster.cpu_worker_env(threads))
    cmd = [sys.executable, "-m", "dped.sweep", str(path), "--results", str(results), *args]
    return subprocess.Popen(
        cmd, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )


def metrics(run_dir):
    return pd.read_csv(run_dir / "metrics.csv").drop(columns="wall_s")


def kill_a_worker_mid_run(results, sweep_proc, timeout=400):
    """SIGKILL the Dask worker whose kernel trains a run that has passed its first evaluation."""
    deadline = time.time() + timeout
    while time.time() < deadline and sweep_proc.poll() is None:
        for ckpt in results.glob("*/checkpoints/ckpt-2.index"):
            run_dir = ckpt.parent.parent
            kernel = int((run_dir / ".lock").read_text() or 0)
            if psutil.pid_exists(kernel):
                worker = psutil.Process(kernel).parent()
                os.kill(worker.pid, signal.SIGKILL)
                return run_dir
        time.sleep(0.05)
    raise AssertionError("no run reached its first checkpoint while the sweep ran")


def test_two_workers_lose_no_run_to_a_killed_worker_and_match_the_local_executor(tmp_path):
    runs_ = {"seed": {"preset": "seed"}, "seed-no-augment": {"preset": "seed", "augment": False}}
    exp = experiment(tmp_path, [0], runs_)  # one run a worker
    proc = start_sweep(exp, tmp_path / "dask", "--workers", "2")
    killed = kill_a_worker_mid_run(tmp_path / "dask" / "tiny", proc)
    out, _ = proc.communicate(timeout=900)
    assert proc.returncode == 0, out
    assert "Dask dashboard: http" in out
    assert "sweep tiny (cpu, dask): 2 of 2 runs complete" in out
    for name in ("seed-s0", "seed-no-augment-s0"):
        steps = metrics(tmp_path / "dask" / "tiny" / name)["step"].tolist()
        assert steps == [2, 4, 6, 8], (name, steps)
    notebook = (killed.parent / f"{killed.name}.ipynb").read_text()
    assert "resumed at step" in notebook  # the rerun continued from the checkpoint
    # The worker's environment reached the run's kernel, which recorded it.
    recorded = json.loads((tmp_path / "dask" / "tiny" / "seed-s0" / "environment.json").read_text())
    assert recorded["intra_op_threads"] == 1

    # The local executor, with the thread count each worker had (1 of 2 cores): identical.
    one = experiment(tmp_path / "local", [0], {"seed": runs_["seed"]})
    local = start_sweep(one, tmp_path / "local-results", threads=1)
    out, _ = local.communicate(timeout=600)
    assert local.returncode == 0, out
    pd.testing.assert_frame_equal(
        metrics(tmp_path / "local-results" / "tiny" / "seed-s0"),
        metrics(tmp_path / "dask" / "tiny" / "seed-s0"),
        check_exact=True,
    )


def test_a_locked_run_is_reported_failed_and_left_alone(tmp_path, monkeypatch):
    exp = experiment(tmp_path, [0], {"seed": {"preset": "seed"}})
    run_dir = tmp_path / "results" / "tiny" / "seed-s0"
    with runs.lock(run_dir):  # as a second sweep's trainer would hold it
        proc = start_sweep(exp, tmp_path / "results", "--workers", "2")
        out, _ = proc.communicate(timeout=300)
    assert proc.returncode == 1, out
    assert "[1/1] seed-s0: FAILED" in out and "failed: seed-s0" in out
    error = (run_dir.parent / "seed-s0.error.txt").read_text()
    assert f"is being trained by another process (pid {os.getpid()})" in error
    assert [p.name for p in run_dir.iterdir()] == [".lock"]  # nothing written into it


@pytest.mark.parametrize(
    "args, message",
    [
        (["--workers", "2", "--scheduler", "tcp://x:8786"], "not both"),
        (["--executor", "dask"], "needs --scheduler ADDRESS or --workers N"),
        (["--executor", "local", "--workers", "2"], "need --executor dask"),
        (["--workers", "0"], "at least 1"),
    ],
)
def test_executor_options_that_contradict_each_other_get_one_line(args, message, capsys):
    assert sweep.main([str(REPO / "experiments" / "ablations.yaml"), *args]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("dped sweep: error:") and message in err and "\n" not in err


def test_gpu_workers_follow_cuda_visible_devices(monkeypatch):
    from dped import cluster

    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "2,5")
    assert cluster.visible_gpus() == ["2", "5"]
    with pytest.raises(ValueError, match="--workers 3: this machine has 2 GPUs"):
        cluster.local_cluster(3)


def test_local_workers_start_without_dasks_sampling_diagnostics():
    """The settings reach the worker processes, where the sampling ran beside the kernels."""
    import functools

    import dask

    from dped import cluster

    keys = ["distributed.worker.profile.enabled", "distributed.admin.system-monitor.gil.enabled"]
    # dask.config.get(key, default) in the worker: the job is the default, so a key the worker
    # does not have would come back as the job itself.
    job, outcomes = types.SimpleNamespace(name="probe"), {}
    for key in keys:
        task = functools.partial(dask.config.get, key)
        outcomes[key] = cluster.run([job], task, None, None, 1, lambda i, o: None)[0]
    assert outcomes == dict.fromkeys(keys, False)
    assert dask.config.get(keys[0]) is True  # only the sweep's cluster, not this process
