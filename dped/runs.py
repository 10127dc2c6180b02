"""A run's folder: the resolved config, the environment, the metrics CSV and sample images.

<run>/config.yaml        the Config, exactly (resume refuses a different one)
<run>/environment.json   package versions, devices, seed, whether VGG-19 weights were random
<run>/metrics.csv        one row per evaluation: step, train loss means, test metrics, time
<run>/samples/step_<n>.png   phone | enhanced | DSLR for a few test patches
<run>/checkpoints/       the latest checkpoints; <run>/best/ the best by test PSNR
<run>/.lock              held (flock) by the process training the run; freed when it dies

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


class ResumeError(ValueError):
    """A resume that would silently change the experiment."""


def atomic_write(path: Path, data) -> None:
    """Write `data` (bytes, or a function that writes to a binary file) to a temporary sibling,
    then rename: a crash or Ctrl-C never leaves a half-written file under `path`."""
    tmp = path.with_name(f".{path.name}.tmp")
    try:
        with open(tmp, "wb") as f:
            data(f) if callable(data) else f.write(data)
        os.replace(tmp, path)
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


def prepare(run_dir: Path, cfg: Config, resume: bool, vgg_random: bool) -> None:
    """Create (or, on resume, check) the run folder and record config and environment."""
    check(run_dir, cfg, resume)
    run_dir.mkdir(parents=True, exist_ok=True)
    atomic_write(
        run_dir / "environment.json", json.dumps(environment(cfg, vgg_random), indent=1).encode()
    )
    atomic_write(run_dir / "config.yaml", cfg.to_yaml().encode())


def environment(cfg: Config, vgg_random: bool) -> dict:
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
    }


def read_metrics(run_dir: Path) -> list[dict[str, str]]:
    path = run_dir / "metrics.csv"
    if not path.is_file():
        return []
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


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


def load_config(run_dir: str | Path) -> Config:
    path = Path(run_dir) / "config.yaml"
    if not path.is_file():
        raise ConfigError(f"{run_dir} is not a dped run folder (no config.yaml)")
    return Config.from_yaml(path)
