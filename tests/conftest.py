"""Shared fixtures: the read-only reference folder, the fake VGG-19 file, a parity report."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
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
