"""Nothing of the user's is deleted or overwritten, and mistakes end in one line, not a traceback.

Each case runs the CLI in a subprocess, as a user would, on folders the tests make.
"""

import contextlib
import csv
import hashlib
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import imageio.v3 as iio
import numpy as np
import pytest
import yaml
from conftest import REPO, SMALL_NETS, make_dataset, user_env

DPED = [sys.executable, "-m", "dped.cli"]
# The user's environment: no smoke mode (that is for nbval) and no debug tracebacks.
ENV = user_env()


def run(args, cwd=REPO, timeout=300):
    return subprocess.run(
        [*DPED, *args], cwd=cwd, env=ENV, capture_output=True, text=True, timeout=timeout
    )


def digest(folder: Path) -> str:
    h = hashlib.sha256()
    for p in sorted(folder.rglob("*")):
        h.update(str(p.relative_to(folder)).encode())
        if p.is_file():
            h.update(p.read_bytes())
    return h.hexdigest()


def our_lines(stderr: str) -> list[str]:
    """Every line: TensorFlow's start-up noise is filtered by dped itself (quiet.py)."""
    return [line for line in stderr.splitlines() if line.strip()]


def assert_one_line_error(result, *fragments, code=2):
    err = our_lines(result.stderr)
    assert result.returncode == code, result.stderr
    assert len(err) == 1 and "Traceback" not in result.stderr, result.stderr
    for fragment in fragments:
        assert fragment in err[0], err[0]
    return err[0]


@pytest.mark.parametrize(
    "config",
    sorted(
        p.name for p in (REPO / "experiments").glob("*.yaml") if "profiles" not in p.read_text()
    ),
)
def test_a_real_dped_folder_survives_dped_data_with_every_shipped_config(tmp_path, config):
    make_dataset(tmp_path / "dped", phone="iphone", n_train=3, n_test=2)
    real = tmp_path / "dped" / "iphone"
    before = digest(real)
    result = run(
        ["data", "--config", str(REPO / "experiments" / config), "--set", "mini.stride=150"],
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr
    assert digest(real) == before  # byte-identical: the mini set went elsewhere
    assert (tmp_path / "data" / "dped-mini" / "mini" / ".dped-mini").is_file()


def test_dped_data_replaces_only_its_own_build(tmp_path):
    out = tmp_path / "minis"
    args = ["data", "--set", "mini.stride=150", "--out", str(out)]
    assert run(args).returncode == 0
    built = digest(out / "mini")
    stale = out / "mini" / "training_data" / "mini" / "0.jpg"
    stale.write_bytes(b"stale")
    again = run(args)  # the same settings and code: nothing to build (make reproduce's rerun)
    assert again.returncode == 0 and "already built" in again.stdout, again.stdout
    assert stale.read_bytes() == b"stale"
    assert run([*args, "--rebuild"]).returncode == 0  # its own marked build: rebuilt, identical
    assert digest(out / "mini") == built
    assert run(["data", "--set", "mini.stride=200", "--out", str(out)]).returncode == 0
    assert digest(out / "mini") != built  # other settings: rebuilt
    assert not [p for p in out.iterdir() if p.name != "mini"]  # no temporaries left

    user = tmp_path / "user"
    make_dataset(user, phone="mini", n_train=2, n_test=1)
    before = digest(user)
    line = assert_one_line_error(run(["data", "--out", str(user)]), str(user / "mini"), "--out")
    assert "did not build" in line
    assert digest(user) == before


@pytest.fixture(scope="module")
def photo(tmp_path_factory):
    path = tmp_path_factory.mktemp("photos") / "photo.png"
    iio.imwrite(path, np.random.default_rng(0).integers(0, 255, (24, 20, 3), dtype=np.uint8))
    return path


def test_enhance_errors_are_one_line_each(tmp_path, photo, run_folder):
    empty = tmp_path / "empty"
    empty.mkdir()
    model = ["--model", str(run_folder)]
    line = assert_one_line_error(run(["enhance", str(empty), *model, "--out", str(tmp_path / "o")]))
    assert str(empty) in line and "no images" in line

    a_file = tmp_path / "existing_file.txt"
    a_file.write_text("mine")
    line = assert_one_line_error(run(["enhance", str(photo), *model, "--out", str(a_file)]))
    assert str(a_file) in line and "is a file" in line
    assert a_file.read_text() == "mine"

    missing = tmp_path / "nope.png"
    result = run(["enhance", str(missing), str(photo), *model, "--out", str(tmp_path / "o")])
    assert_one_line_error(result, str(missing), "no such file", code=1)
    assert (tmp_path / "o" / "photo.png").is_file()  # the good input was still enhanced

    before = (tmp_path / "o" / "photo.png").read_bytes()
    (tmp_path / "o" / "photo.png").write_bytes(b"the user's own file")
    result = run(["enhance", str(photo), *model, "--out", str(tmp_path / "o")])
    assert_one_line_error(result, "already exists", "--overwrite", code=1)
    assert (tmp_path / "o" / "photo.png").read_bytes() == b"the user's own file"
    result = run(["enhance", str(photo), *model, "--out", str(tmp_path / "o"), "--overwrite"])
    assert result.returncode == 0 and (tmp_path / "o" / "photo.png").read_bytes() == before


def test_a_truncated_checkpoint_is_a_one_line_error(
    tmp_path, photo, run_folder, authors_checkpoints
):
    ours = tmp_path / "run"
    shutil.copytree(run_folder, ours)
    (data,) = (ours / "checkpoints").glob("ckpt-1.data-*")
    data.write_bytes(data.read_bytes()[: data.stat().st_size // 2])
    result = run(["enhance", str(photo), "--model", str(ours), "--out", str(tmp_path / "a")])
    assert_one_line_error(result, "cannot restore checkpoint", str(ours))

    for suffix in (".index", ".data-00000-of-00001"):
        shutil.copy(authors_checkpoints[0] / f"iphone_orig{suffix}", tmp_path)
    theirs = tmp_path / "iphone_orig.data-00000-of-00001"
    theirs.write_bytes(theirs.read_bytes()[:1000])
    result = run(
        [
            "enhance",
            str(photo),
            "--model",
            str(tmp_path / "iphone_orig"),
            "--out",
            str(tmp_path / "b"),
        ]
    )
    assert_one_line_error(result, "cannot read TF checkpoint", str(tmp_path / "iphone_orig"))


def tiny_run_config(tmp_path, **changes):
    cfg = make_dataset(tmp_path / "data", n_train=6, n_test=2, size=SMALL_NETS["patch_size"])
    cfg = cfg.replace(
        **SMALL_NETS, name="tiny", vgg_weights="random", batch_size=2, eval_every=2, **changes
    )
    cfg.dump_yaml(tmp_path / "tiny.yaml")
    return cfg


def test_a_dataset_file_removed_mid_run_is_named(tmp_path):
    cfg = tiny_run_config(tmp_path, num_iters=10_000)
    out = tmp_path / "run"
    proc = subprocess.Popen(
        [*DPED, "train", "--config", str(tmp_path / "tiny.yaml"), "--out", str(out)],
        cwd=REPO,
        env=ENV,
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.time() + 180
    while not (out / "metrics.csv").exists() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.5)
    gone = Path(cfg.dataset_dir) / "myphone" / "training_data" / "canon" / "3.jpg"
    gone.unlink()
    try:
        _, stderr = proc.communicate(timeout=180)
    finally:
        proc.kill()
    lines = [line for line in stderr.splitlines() if line.startswith("dped: error:")]
    assert proc.returncode == 2 and "Traceback" not in stderr, stderr[-2000:]
    assert len(lines) == 1 and str(gone) in lines[0] and "no longer exists" in lines[0]
    assert "--resume" in lines[0]


def test_a_run_never_writes_into_a_folder_of_the_users(tmp_path):
    tiny_run_config(tmp_path, num_iters=2)
    mine = tmp_path / "holiday"
    mine.mkdir()
    (mine / "config.yaml").write_text("my camera settings\n")
    before = digest(mine)
    result = run(["train", "--config", str(tmp_path / "tiny.yaml"), "--out", str(mine)])
    assert_one_line_error(result, str(mine), "not a dped run")
    assert digest(mine) == before


def metric_steps(run_dir: Path) -> list[int]:
    with open(run_dir / "metrics.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert all(len(r) == len(rows[0]) and None not in r.values() for r in rows)  # no torn row
    return [int(r["step"]) for r in rows]


def test_make_reproduce_killed_mid_sweep_resumes_without_losing_or_doubling(tmp_path):
    cfg = make_dataset(tmp_path / "data", n_train=6, n_test=2, size=SMALL_NETS["patch_size"])
    spec = {
        "name": "killed",
        "notebook": "notebooks/DPED-main.ipynb",
        "seeds": {"tiny": [0]},
        "runs": {
            "seed": {"preset": "seed"},
            "seed-no-augment": {"preset": "seed", "augment": False},
        },
        "profiles": {
            "tiny": {
                "dataset_dir": cfg.dataset_dir,
                "phone": cfg.phone,
                "vgg_weights": "random",
                "batch_size": 2,
                "num_iters": 6,
                "eval_every": 2,
                "train_size": 0,
                "d_pretrain_iters": 2,
                **SMALL_NETS,
            }
        },
    }
    exp = tmp_path / "killed.yaml"
    exp.write_text(yaml.safe_dump(spec))
    results = tmp_path / "results"
    make = ["make", "-s", "reproduce", f"EXPERIMENTS={exp}", "PROFILE=tiny", f"RESULTS={results}"]
    first_run = results / "killed" / "seed-s0"
    proc = subprocess.Popen(
        make,
        cwd=REPO,
        env=ENV,
        start_new_session=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.time() + 300
    while time.time() < deadline and proc.poll() is None:
        if (first_run / "metrics.csv").exists():
            break
        time.sleep(0.2)
    os.killpg(proc.pid, signal.SIGKILL)  # the whole sweep, kernel included, mid-run
    proc.wait()
    assert metric_steps(first_run)[-1] < 6  # really killed mid-run

    done = subprocess.run(make, cwd=REPO, env=ENV, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    for name in ("seed-s0", "seed-no-augment-s0"):
        assert metric_steps(results / "killed" / name) == [2, 4, 6]
    assert (results / "killed" / "summary.md").is_file()


def test_ctrl_c_in_make_reproduce_stops_every_sweep_not_only_the_running_one(tmp_path):
    cfg = make_dataset(tmp_path / "data", n_train=6, n_test=2, size=SMALL_NETS["patch_size"])
    profile = {"dataset_dir": cfg.dataset_dir, "phone": cfg.phone, "vgg_weights": "random"}
    profile |= SMALL_NETS
    paths = []
    for name in ("first", "second"):
        spec = {
            "name": name,
            "seeds": {"tiny": [0]},
            "runs": {"seed": {"preset": "seed"}},
            "profiles": {"tiny": {**profile, "batch_size": 2, "num_iters": 1000}},
        }
        paths.append(tmp_path / f"{name}.yaml")
        paths[-1].write_text(yaml.safe_dump(spec))
    results = tmp_path / "results"
    make = ["make", "-s", "reproduce", f"EXPERIMENTS={' '.join(map(str, paths))}"]
    proc = subprocess.Popen(
        [*make, "PROFILE=tiny", f"RESULTS={results}"],
        cwd=REPO,
        env=ENV,
        start_new_session=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.time() + 120
        while time.time() < deadline and not (results / "first" / "experiment.yaml").exists():
            time.sleep(0.1)
        time.sleep(1.0)  # into the first sweep's start
        os.killpg(proc.pid, signal.SIGINT)  # what Ctrl-C sends to the terminal's foreground group
        # Once a loop of one sweep per experiment started the next and trained on: the wait
        # timed out. Now nothing writes to the results once make has returned.
        assert proc.wait(timeout=120) != 0
        before = _listing(results)
        time.sleep(5)
        assert _listing(results) == before
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)


# A command whose cleanup never ends (as a Dask cluster that will not close once did, in a run
# of the test above): the bounded unwind of dped.cli, shortened to a second.
STUCK_CLEANUP = """
import argparse, sys, time
from dped import cli
cli.UNWIND_SECONDS = 1.0
def stuck(args):
    try:
        print("ready", flush=True)
        time.sleep(60)
    finally:
        while True:
            time.sleep(0.05)
sys.exit(cli._run(argparse.Namespace(verbose=False, func=stuck)))
"""


@pytest.mark.parametrize("sig, code", [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_a_cleanup_that_hangs_after_ctrl_c_does_not_keep_the_terminal(sig, code):
    proc = subprocess.Popen(
        [sys.executable, "-c", STUCK_CLEANUP],
        cwd=REPO,
        env=ENV,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout.readline() == "ready\n"
        proc.send_signal(sig)
        err = proc.communicate(timeout=30)[1]
    finally:
        proc.kill()
    assert proc.returncode == code, err
    assert err.strip().splitlines()[-1] == (
        "dped: cleanup still running 1 s after the signal: leaving without it"
        " (outputs are written atomically: nothing half-written)"
    )


def _listing(folder: Path) -> dict[str, int]:
    return {str(p): p.stat().st_size for p in folder.rglob("*") if p.is_file()}
