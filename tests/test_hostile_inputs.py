"""Careless and hostile inputs, each run as a user would: the CLI in a subprocess, on files the
tests craft (forged image headers included). Each ends in one line naming the file and the fix,
a non-zero exit and nothing of the user's touched, or in the right result with nothing left."""

import signal
import struct
import subprocess
import sys
import tempfile
import time
import zlib
from pathlib import Path

import imageio.v3 as iio
import numpy as np
import pytest
from conftest import REPO, user_env

from dped.inference.images import MAX_PIXELS

ENV = user_env()


def run_measured(args, timeout=300) -> tuple[subprocess.CompletedProcess, float]:
    """The CLI's result and its own peak RSS in GB, measured by tools/peak_rss.py: os.wait4 from
    this process would report this process's size (it holds TensorFlow), not the CLI's."""
    with tempfile.TemporaryDirectory() as scratch:  # not tmp_path: some tests enhance that folder
        peak = Path(scratch) / "peak_rss"
        done = subprocess.run(
            [sys.executable, REPO / "tools" / "peak_rss.py", peak, sys.executable, "-m", "dped.cli"]
            + list(args),
            cwd=REPO,
            env=ENV,
            capture_output=True,
            text=True,
            timeout=timeout,
        )
        return done, int(peak.read_text()) / 1e9


def forged_png(path: Path, width: int, height: int) -> Path:
    def chunk(kind: bytes, data: bytes) -> bytes:
        return (
            struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
        )

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)  # 8-bit RGB
    idat = zlib.compress(b"\0" * 64)  # a few rows' worth: the file claims far more
    path.write_bytes(
        b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")
    )
    return path


def forged_tiff(path: Path, width: int, height: int, samples: int = 1, planar: int = 1) -> Path:
    """A little-endian baseline TIFF whose one strip is missing: gray, or `samples` 8-bit
    samples a pixel (planar 2: one plane after another, which tifffile shapes [S, H, W])."""
    tags = [
        (256, 4, width),
        (257, 4, height),
        (258, 3, 8),
        (259, 3, 1),
        (262, 3, 1 if samples == 1 else 2),
        (273, 4, 200),
        (277, 3, samples),
        (278, 4, height),
        (279, 4, min(width * height * samples, 2**32 - 1)),
        (284, 3, planar),
    ]
    ifd = (
        struct.pack("<H", len(tags))
        + b"".join(struct.pack("<HHII", tag, kind, 1, value) for tag, kind, value in tags)
        + struct.pack("<I", 0)
    )
    path.write_bytes(b"II*\x00" + struct.pack("<I", 8) + ifd + b"\0" * 16)
    return path


def forged_planar_tiff(path: Path, width: int, height: int) -> Path:
    return forged_tiff(path, width, height, samples=3, planar=2)


def forged_bmp(path: Path, width: int, height: int) -> Path:
    header = struct.pack("<2sIHHI", b"BM", 54 + 16, 0, 0, 54)
    dib = struct.pack("<IiiHHIIiiII", 40, width, height, 1, 24, 0, 0, 2835, 2835, 0, 0)
    path.write_bytes(header + dib + b"\0" * 16)
    return path


@pytest.mark.parametrize(
    "forge, size",
    [
        (forged_png, (60000, 60000)),
        (forged_tiff, (60000, 60000)),
        (forged_png, (9000, 7000)),
        (forged_tiff, (12000, 30000)),
        (forged_bmp, (40000, 30000)),
        (forged_planar_tiff, (60000, 60000)),
    ],
    ids=["png-3600MP", "tiff-3600MP", "png-63MP", "tiff-360MP", "bmp-1200MP", "planar-tiff"],
)
def test_a_forged_header_is_refused_before_any_decode(tmp_path, run_folder, forge, size):
    width, height = size
    photo = forge(tmp_path / f"forged.{forge.__name__.split('_')[-1]}", width, height)
    assert photo.stat().st_size < 400
    out = tmp_path / "out"
    done, rss = run_measured(["enhance", str(photo), "--model", str(run_folder), "--out", str(out)])
    assert done.returncode == 1, done.stderr
    pixels = width * height
    assert done.stderr.strip().splitlines() == [
        f"dped enhance: {photo}: {width}x{height} pixels ({pixels / 1e6:.0f} MP, from its header) "
        f"is above the limit of {MAX_PIXELS / 1e6:.0f} MP: pass --max-pixels {pixels} to read "
        f"it anyway"
    ]
    assert rss < 1.0, f"peak RSS {rss:.2f} GB"
    assert list(out.iterdir()) == []


def test_a_tiff_of_many_samples_a_pixel_is_refused_before_any_decode(tmp_path, run_folder):
    photo = forged_tiff(tmp_path / "wide.tif", 4000, 4000, samples=2000)  # 32 GB of samples
    done, rss = run_measured(
        ["enhance", str(photo), "--model", str(run_folder), "--out", str(tmp_path / "out")]
    )
    assert done.returncode == 1
    assert done.stderr.strip().splitlines() == [
        f"dped enhance: {photo}: a TIFF of 2000 samples of uint8 per pixel: dped reads 8- and "
        "16-bit gray, RGB and RGBA"
    ]
    assert rss < 1.0, f"peak RSS {rss:.2f} GB"


def test_the_pixel_limit_is_the_users_to_raise(tmp_path, run_folder):
    photo = tmp_path / "small.png"
    iio.imwrite(photo, np.full((30, 40, 3), 128, np.uint8))
    out = tmp_path / "out"
    model = ["--model", str(run_folder), "--out", str(out)]
    done, _ = run_measured(["enhance", str(photo), *model, "--max-pixels", "1000"])
    assert done.returncode == 1
    assert (
        "40x30 pixels (0 MP, from its header) is above the limit of 0 MP: pass --max-pixels "
        "1200 to read it anyway" in done.stderr
    )
    done, _ = run_measured(["enhance", str(photo), *model, "--max-pixels", "1200"])
    assert done.returncode == 0, done.stderr
    assert (out / "small.png").is_file()


def test_a_forged_header_below_the_limit_is_a_decode_error_in_bounded_memory(tmp_path, run_folder):
    photo = forged_png(tmp_path / "short.png", 6000, 8000)  # 48 MP: read, and found truncated
    done, rss = run_measured(
        ["enhance", str(photo), "--model", str(run_folder), "--out", str(tmp_path / "out")]
    )
    assert done.returncode == 1
    assert done.stderr.startswith(f"dped enhance: {photo}: cannot decode as an image"), done.stderr
    assert rss < 1.0, f"peak RSS {rss:.2f} GB"


def test_the_same_photo_named_twice_is_enhanced_once(tmp_path, run_folder):
    photo = tmp_path / "p.png"
    iio.imwrite(photo, np.full((20, 24, 3), 90, np.uint8))
    out = tmp_path / "out"
    done, _ = run_measured(
        [
            "enhance",
            str(photo),
            str(photo),
            str(tmp_path),
            "--model",
            str(run_folder),
            "--out",
            str(out),
        ]
    )
    assert done.returncode == 0, done.stderr
    assert sorted(p.name for p in out.iterdir()) == ["p.png"]


def test_an_animation_named_directly_is_refused_like_in_a_folder(tmp_path, run_folder):
    gif = tmp_path / "anim.gif"
    frames = np.stack([np.full((16, 16, 3), v, np.uint8) for v in (0, 255)])
    iio.imwrite(gif, frames, extension=".gif")
    done, _ = run_measured(
        ["enhance", str(gif), "--model", str(run_folder), "--out", str(tmp_path / "out")]
    )
    assert done.returncode == 1
    assert done.stderr.strip() == (
        f"dped enhance: {gif}: an animation of 2 frames: dped enhances still images (save the "
        "frame you want as PNG)"
    )


@pytest.fixture(scope="module")
def instance_norm_run(tmp_path_factory):
    """A run folder of ours with an instance-norm generator: large photos stream via scratch."""
    import tensorflow as tf

    from dped.config import preset
    from dped.models import generator_from_config

    folder = tmp_path_factory.mktemp("paper-run")
    preset("paper").replace(filters=8).dump_yaml(folder / "config.yaml")
    generator = generator_from_config(preset("paper").replace(filters=8))
    tf.train.Checkpoint(generator=generator).save(str(folder / "checkpoints" / "ckpt"))
    return folder


def test_sigterm_mid_photo_is_a_message_exit_143_and_nothing_left(tmp_path, instance_norm_run):
    photo = tmp_path / "big.png"
    iio.imwrite(photo, np.random.default_rng(0).integers(0, 255, (600, 800, 3), dtype=np.uint8))
    out = tmp_path / "out"
    scratch = tmp_path / "scratch-made-by-dped"
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "dped.cli",
            "enhance",
            str(photo),
            "--model",
            str(instance_norm_run),
            "--tile",
            "16",
            "--out",
            str(out),
            "--scratch",
            str(scratch),
        ],
        cwd=REPO,
        env=ENV,
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.monotonic() + 120
    while not list(scratch.glob(".dped-scratch-*")) and time.monotonic() < deadline:
        assert proc.poll() is None, proc.stderr.read()
        time.sleep(0.05)
    time.sleep(0.5)  # well inside the streamed passes
    proc.send_signal(signal.SIGTERM)
    err = proc.communicate(timeout=60)[1]
    assert proc.returncode == 143, err
    assert err.strip().splitlines()[-1] == (
        "dped: terminated (outputs are written atomically: nothing half-written)"
    )
    assert not scratch.exists()  # dped made it, dped removed it
    assert [p.name for p in out.iterdir()] == []  # no photo, no temporary, no scratch folder
