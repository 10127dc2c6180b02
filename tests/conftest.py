"""Shared fixtures: the read-only reference folder, the fake VGG-19 file, a parity report."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[1]
PARITY: list[tuple[str, str, float, float]] = []


def reference_dir() -> Path:
    return Path(os.environ.get("DPED_REFERENCE_DIR", REPO / ".." / "shared" / "reference"))


@pytest.fixture(scope="session")
def reference() -> Path:
    """The original authors' checkpoints and golden outputs (never copied into the repo)."""
    folder = reference_dir()
    if not (folder / "manifest.json").is_file():
        reason = (
            f"reference folder {folder} not found: set DPED_REFERENCE_DIR to the folder "
            "with the original authors' golden outputs"
        )
        if os.environ.get("DPED_REQUIRE_REFERENCE") == "1":
            pytest.fail(reason + " (DPED_REQUIRE_REFERENCE=1)")
        pytest.skip(reason)
    return folder


@pytest.fixture(scope="session")
def fake_vgg_mat(reference, tmp_path_factory) -> Path:
    """The fake (random-weight) imagenet-vgg-verydeep-19.mat that the golden content loss used."""
    out = tmp_path_factory.mktemp("vgg") / "imagenet-vgg-verydeep-19.mat"
    subprocess.run(
        [sys.executable, str(reference / "make_fake_vgg_mat.py"), str(out)],
        check=True,
        capture_output=True,
    )
    return out


@pytest.fixture
def parity():
    """record(what, item, value, tolerance): printed in the summary of every test run."""

    def record(what: str, item: str, value: float, tolerance: float) -> None:
        PARITY.append((what, item, value, tolerance))

    return record


def pytest_terminal_summary(terminalreporter):
    if not PARITY:
        return
    terminalreporter.section("parity with the original DPED code")
    for what, item, value, tol in PARITY:
        flag = "ok" if value <= tol else "FAIL"
        terminalreporter.write_line(f"{what:28} {item:46} {value:10.3g} <= {tol:g}  {flag}")


def dped_cli(*args, cwd=REPO, drop=(), timeout=600) -> subprocess.CompletedProcess:
    """`python -m dped.cli ARGS` as a user runs it: no smoke mode or debug tracebacks, and none
    of the variables in `drop` (TF_CPP_MIN_LOG_LEVEL: dped's own default)."""
    unset = {"DPED_SMOKE", "DPED_DEBUG", *drop}
    return subprocess.run(
        [sys.executable, "-m", "dped.cli", *args],
        cwd=cwd,
        env={k: v for k, v in os.environ.items() if k not in unset},
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def make_dataset(root: Path, phone="myphone", n_train=6, n_test=3, size=16, seed=0):
    """A tiny dataset in the real DPED layout, with random 'photos'; returns a seed config on it."""
    import imageio.v3 as iio

    from dped import data
    from dped.config import preset

    rng = np.random.default_rng(seed)
    base = root / phone
    for folder, n in ((base / "training_data", n_train), (base / "test_data" / "patches", n_test)):
        for side in (phone, data.DSLR):
            (folder / side).mkdir(parents=True)
        for i in range(n):
            image = rng.integers(0, 256, (size, size, 3), dtype=np.uint8)
            iio.imwrite(folder / data.DSLR / f"{i}.jpg", image, quality=95)
            iio.imwrite(folder / phone / f"{i}.jpg", image // 2, quality=95)
    full = base / "test_data" / "full_size_test_images"
    full.mkdir(parents=True)
    iio.imwrite(full / "0.jpg", np.zeros((40, 60, 3), np.uint8))
    return preset("seed").replace(
        dataset_dir=str(root),
        phone=phone,
        patch_size=size,
        batch_size=2,
        train_size=0,
        d_pretrain_iters=2,
    )
