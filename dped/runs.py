"""A run's folder: the resolved config, the environment, the metrics CSV and sample images.

<run>/config.yaml        the Config, exactly (resume refuses a different one)
<run>/environment.json   package versions, devices, seed, whether VGG-19 weights were random,
                         the precision it computed in (what `precision: auto` chose here)
<run>/metrics.csv        one row per evaluation: step, train loss means, test metrics, time
<run>/samples/step_<n>.png   phone | enhanced | DSLR for a few test patches
<run>/test_patches.json  the last evaluation's PSNR of every test patch (step, values in order)
<run>/checkpoints/       the latest checkpoints; <run>/best/ the best by test PSNR
<run>/events.out.*       TensorBoard events (tensorboard: true), tags train/, test/, metrics/
<run>/.lock              held (flock) by the process training the run; freed when it dies

This module is the one owner of that layout: training writes through `Run`, enhance and export
read generators back through `restore_generator`, the sweep and the report read `read_metrics`.

A run writes only into a folder that is new, empty, or already a dped run folder (config.yaml and
environment.json written by `prepare`): never into a folder of the user's.
"""

from __future__ import annotations

import contextlib
import csv
import fcntl
import io
import json
import os
import platform
import time
from pathlib import Path

import numpy as np

from dped.config import Config, ConfigError

LATEST, BEST = "checkpoints", "best"


class ResumeError(ValueError):
    """A resume that would silently change the experiment."""


def atomic_write(path: Path, data, replace: bool = True) -> None:
    """Write `data` (bytes, or a function that writes to a binary file) to a temporary sibling,
    then rename: a crash or Ctrl-C never leaves a half-written file under `path`. With
    `replace=False` a file already at `path`, even one that appeared while `data` was written,
    is left alone and FileExistsError raised (a hard link, unlike a rename, never replaces)."""
    tmp = path.with_name(f".{path.name}.tmp")
    try:
        with open(tmp, "wb") as f:
            data(f) if callable(data) else f.write(data)
        if replace:
            os.replace(tmp, path)
        else:
            os.link(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def is_run_folder(path: Path) -> bool:
    """Whether `path` was made by `prepare` (its environment.json, written first, names the
    dped version)."""
    try:
        return "dped" in json.loads((path / "environment.json").read_text())
    except (OSError, ValueError):
        return False


@contextlib.contextmanager
def lock(run_dir: Path):
    """Hold <run>/.lock while training: a second process (another sweep, a leftover kernel)
    gets a clear error instead of writing the same checkpoints. The OS frees it with its holder."""
    run_dir.mkdir(parents=True, exist_ok=True)
    with open(run_dir / ".lock", "a+") as f:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise _held(run_dir, f) from None
        f.seek(0)
        f.truncate()
        f.write(str(os.getpid()))
        f.flush()
        yield


def wait_unlocked(run_dir: Path, seconds: float) -> None:
    """Return once no process holds <run>/.lock, waiting at most `seconds`, else raise as
    `lock` does: a retried run whose old trainer is still shutting down waits for it."""
    path, deadline = run_dir / ".lock", time.monotonic() + seconds
    while path.exists():
        with open(path, "a+") as f:
            try:
                fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
                return  # free (closing the file releases it again)
            except BlockingIOError:
                if time.monotonic() > deadline:
                    raise _held(run_dir, f) from None
        time.sleep(0.5)


def _held(run_dir: Path, f) -> ResumeError:
    f.seek(0)
    holder = f.read().strip() or "unknown"
    return ResumeError(
        f"{run_dir} is being trained by another process (pid {holder}): wait for it "
        "or stop it, then rerun"
    )


def check(run_dir: Path, cfg: Config, resume: bool) -> None:
    """Refuse, before any work, a folder that is not ours or a resume that changes the config."""
    saved = run_dir / "config.yaml"
    if run_dir.is_file():
        raise ResumeError(f"{run_dir} is a file: a run needs a folder (--out NEW_FOLDER)")
    others = [p for p in run_dir.iterdir() if p.name != ".lock"] if run_dir.is_dir() else []
    if others and not is_run_folder(run_dir):
        raise ResumeError(
            f"{run_dir} holds files that are not a dped run ({others[0].name}, ...): a run "
            "never writes into them; choose a new or empty folder with --out"
        )
    if resume and saved.is_file():
        changed = Config.from_yaml(saved).diff(cfg)
        if changed:
            keys = ", ".join(f"{k} ({a!r} -> {b!r})" for k, (a, b) in changed.items())
            raise ResumeError(
                f"cannot resume {run_dir} with a changed config: {keys}; "
                "resume with the saved config or start a new run (--out)"
            )
    elif not resume and (run_dir / "metrics.csv").exists():
        raise ResumeError(
            f"{run_dir} already holds a run: pass --resume to continue it, "
            "or --out for a new folder"
        )


def prepare(run_dir: Path, cfg: Config, resume: bool, vgg_random: bool, precision: str) -> None:
    """Create (or, on resume, check) the run folder and record config and environment
    (`precision`: the policy the run computes in, cfg.precision resolved)."""
    check(run_dir, cfg, resume)
    run_dir.mkdir(parents=True, exist_ok=True)
    env = environment(cfg, vgg_random, precision)
    atomic_write(run_dir / "environment.json", json.dumps(env, indent=1).encode())
    atomic_write(run_dir / "config.yaml", cfg.to_yaml().encode())


def environment(cfg: Config, vgg_random: bool, precision: str) -> dict:
    import keras
    import tensorflow as tf

    import dped

    return {
        "dped": dped.__version__,
        "tensorflow": tf.__version__,
        "keras": keras.__version__,
        "numpy": np.__version__,
        "python": platform.python_version(),
        "machine": platform.machine(),
        "cpu_count": os.cpu_count(),
        # Deterministic runs repeat bit for bit only with the same thread count (0: all cores).
        "intra_op_threads": int(os.environ.get("TF_NUM_INTRAOP_THREADS", "0")),
        "devices": [d.name for d in tf.config.list_logical_devices()],
        "seed": cfg.seed,
        "deterministic": cfg.deterministic,
        "vgg_weights": cfg.vgg_weights,
        "vgg_random": vgg_random,
        "precision": precision,
    }


def run_precision(run_dir: Path) -> str:
    """The precision a run computed in: what its environment.json records (`auto` resolved on
    the machine that last started it), else its config's (runs recorded before it was)."""
    try:
        return json.loads((run_dir / "environment.json").read_text())["precision"]
    except (OSError, KeyError, ValueError):
        return load_config(run_dir).precision


def read_metrics(run_dir: Path) -> list[dict[str, str]]:
    path = run_dir / "metrics.csv"
    if not path.is_file():
        return []
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def metrics_table(run_dir: str | Path):
    """A run's metrics.csv as a pandas DataFrame, numbers typed (for reports and plots)."""
    import pandas as pd

    path = Path(run_dir) / "metrics.csv"
    if not path.is_file():
        raise FileNotFoundError(f"no metrics at {path}: train the run first (dped train)")
    return pd.read_csv(path)


def write_metrics(run_dir: Path, rows: list[dict]) -> None:
    if not rows:
        return
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=list(rows[0]))
    writer.writeheader()
    writer.writerows(rows)
    atomic_write(run_dir / "metrics.csv", buffer.getvalue().encode())


def save_samples(path: Path, phone: np.ndarray, enhanced: np.ndarray, dslr: np.ndarray) -> None:
    """A grid: one row per patch, columns phone | enhanced | DSLR, 8-bit PNG."""
    import imageio.v3 as iio

    rows = [
        np.concatenate([p, np.clip(e, 0, 1), d], axis=1) for p, e, d in zip(phone, enhanced, dslr)
    ]
    grid = np.round(np.concatenate(rows, axis=0) * 255).astype(np.uint8)
    path.parent.mkdir(parents=True, exist_ok=True)
    buffer = io.BytesIO()
    iio.imwrite(buffer, grid, extension=".png")
    atomic_write(path, buffer.getvalue())


PATCHES_FILE = "test_patches.json"


def write_patch_psnr(run_dir: Path, step: int, values: np.ndarray) -> None:
    """Only the last evaluation's: a report compares finished runs, at their last step."""
    record = {"step": int(step), "psnr": [round(float(v), 4) for v in values]}
    atomic_write(run_dir / PATCHES_FILE, (json.dumps(record) + "\n").encode())


def read_patch_psnr(run_dir: Path, step: int) -> np.ndarray | None:
    """The per-patch PSNRs recorded at `step`; None when the run recorded none there (runs
    from before the file existed, or a file left by a later evaluation than its metrics)."""
    try:
        record = json.loads((Path(run_dir) / PATCHES_FILE).read_text())
    except (OSError, ValueError):
        return None
    return np.asarray(record["psnr"], np.float64) if record.get("step") == step else None


# The identity baseline (phone vs DSLR metrics) of a test set: beside a built dataset's patches
# and in every run folder, for the test set it was evaluated on.
IDENTITY_FILE = "identity_baseline.json"


def run_name(run: str, seed: int) -> str:
    """A sweep's folder (and notebook) name for one run of an experiment and one seed."""
    return f"{run}-s{seed}"


def load_config(run_dir: str | Path) -> Config:
    path = Path(run_dir) / "config.yaml"
    if not path.is_file():
        raise ConfigError(f"{run_dir} is not a dped run folder (no config.yaml)")
    return Config.from_yaml(path)


def tensorboard_tag(key: str) -> str | None:
    """A metrics.csv column's TensorBoard tag, grouped by its prefix (train/, test/, metrics/);
    None for bookkeeping (step, patches, wall_s), which TensorBoard records or does not plot."""
    if key in ("step", "patches", "wall_s"):
        return None
    group, sep, term = key.partition("_")
    return f"{group}/{term}" if sep and group in ("train", "test") else f"metrics/{key}"


class Run:
    """A training run's state on disk: the checkpoint of `tracked` (networks, optimizers, data
    iterator, ...) with the step counters, the latest and best managers, the metrics rows and
    the optional TensorBoard writer. On resume it restores the latest checkpoint and keeps the
    metrics rows up to its step."""

    def __init__(self, run_dir: Path, cfg: Config, resume: bool, **tracked):
        import tensorflow as tf

        self.dir, self.cfg = run_dir, cfg
        self.step = tf.Variable(0, dtype=tf.int64, name="step")
        self.pretrained = tf.Variable(0, dtype=tf.int64, name="d_pretrained")
        self.checkpoint = tf.train.Checkpoint(
            d_pretrained=self.pretrained, step=self.step, **tracked
        )
        self.latest = tf.train.CheckpointManager(
            self.checkpoint, run_dir / LATEST, max_to_keep=cfg.keep_checkpoints
        )
        self.best = tf.train.CheckpointManager(self.checkpoint, run_dir / BEST, max_to_keep=1)
        self.rows = []
        if resume and self.latest.latest_checkpoint:
            self.checkpoint.restore(self.latest.latest_checkpoint).assert_existing_objects_matched()
            done = int(self.step.numpy())
            self.rows = [r for r in read_metrics(run_dir) if int(r["step"]) <= done]
            print(f"{cfg.name}: resumed at step {done} from {self.latest.latest_checkpoint}")
        self.best_psnr = max((float(r["psnr"]) for r in self.rows), default=-np.inf)
        elapsed = float(self.rows[-1]["wall_s"]) if self.rows else 0.0
        self.start = time.perf_counter() - elapsed
        # Events in the run folder itself: `tensorboard --logdir results/<experiment>` then
        # names each run after its folder.
        self.writer = tf.summary.create_file_writer(str(run_dir)) if cfg.tensorboard else None

    def record(self, row: dict, samples: tuple, patch_psnr: np.ndarray | None = None) -> None:
        """Samples and per-patch PSNRs, the metrics row (CSV first: a resume drops rows past its
        checkpoint), then the checkpoints."""
        step = row["step"]
        row["wall_s"] = round(time.perf_counter() - self.start, 2)
        save_samples(self.dir / "samples" / f"step_{step:06d}.png", *samples)
        if patch_psnr is not None:
            write_patch_psnr(self.dir, step, patch_psnr)
        self.rows.append(row)
        write_metrics(self.dir, self.rows)
        if self.writer:
            self._log_events(row, step)
        self.latest.save(checkpoint_number=step)
        if row["psnr"] > self.best_psnr:
            self.best_psnr = row["psnr"]
            self.best.save(checkpoint_number=step)

    def _log_events(self, row: dict, step: int) -> None:
        import tensorflow as tf

        with self.writer.as_default():
            for key, value in row.items():
                if tensorboard_tag(key):
                    tf.summary.scalar(tensorboard_tag(key), value, step=step)
        self.writer.flush()


def checkpoint_of(run_dir: Path) -> str:
    """The checkpoint a run's generator is used from: the best by test PSNR, else the latest."""
    import tensorflow as tf

    for sub in (BEST, LATEST):
        found = tf.train.latest_checkpoint(str(run_dir / sub))
        if found:
            return found
    raise FileNotFoundError(f"run folder {run_dir} has no checkpoint in {BEST}/ or {LATEST}/")


def run_of_checkpoint(prefix: Path) -> Path | None:
    """The run folder a checkpoint prefix of ours (`<run>/checkpoints/ckpt-N`) belongs to."""
    run = prefix.parent.parent
    is_ours = prefix.with_name(prefix.name + ".index").is_file() and prefix.parent.name in (
        LATEST,
        BEST,
    )
    return run if is_ours and (run / "config.yaml").is_file() else None


def restore_generator(run_dir: Path, prefix: str | None = None):
    """The generator as `run_dir`'s config builds it, with every weight from checkpoint
    `prefix` (default `checkpoint_of(run_dir)`): never a half-random generator."""
    import tensorflow as tf

    from dped.models import generator_from_config
    from dped.pretrained import CheckpointError

    prefix = prefix or checkpoint_of(run_dir)
    generator = generator_from_config(load_config(run_dir))
    try:
        status = tf.train.Checkpoint(generator=generator).restore(prefix).expect_partial()
        status.assert_existing_objects_matched()
    except Exception as err:  # TF raises OpErrors, IndexError, AssertionError, ... here
        reason = str(err).splitlines()[0] if str(err) else type(err).__name__
        raise CheckpointError(
            f"cannot restore checkpoint {prefix} ({type(err).__name__}: {reason}): the files "
            f"are damaged or incomplete; use another checkpoint of {run_dir} or retrain"
        ) from None
    return generator
