"""Streamed exact mode: the scratch file's space check and cleanup, the one-pass rule."""

import os

import numpy as np
import pytest
from conftest import random_generator

from dped.inference import stream
from dped.inference.graphs import FastGenerator
from dped.inference.tiling import DEFAULT_TILE, enhance_image, one_pass_bytes, runs_whole


@pytest.fixture(scope="module")
def graphs():
    return FastGenerator(random_generator(filters=16, res_blocks=2))


def test_the_one_pass_rule_is_five_tiles_of_activations_for_instance_norm_models(graphs):
    assert runs_whole(graphs, (DEFAULT_TILE, 5 * DEFAULT_TILE), DEFAULT_TILE)
    assert not runs_whole(graphs, (DEFAULT_TILE, 5 * DEFAULT_TILE + 1), DEFAULT_TILE)
    assert one_pass_bytes(graphs, (100, 10)) == 100 * 10 * 16 * 4 * 4  # 4 live float32 maps
    assert runs_whole(graphs, (3000, 4000), DEFAULT_TILE, budget=10**12)
    assert not runs_whole(graphs, (3, 3), DEFAULT_TILE, budget=0)


def test_scratch_rows_round_trip_through_positioned_io(tmp_path):
    with stream.Scratch(tmp_path, 5, 3, 2) as scratch:
        rows = np.arange(2 * 3 * 2, dtype=np.float32).reshape(2, 3, 2)
        scratch.write(1, 3, rows)
        got = scratch.read(1, 3, 5, scratch.buffer(4))
        np.testing.assert_array_equal(np.asarray(got)[0], rows)
        assert list(scratch.dir.iterdir()) == []  # unlinked as soon as it was opened
    assert list(tmp_path.iterdir()) == []  # and its folder is gone


def test_too_little_free_space_is_a_clear_error_before_any_work(tmp_path, monkeypatch, graphs):
    free = type("usage", (), {"free": 10**6})()
    monkeypatch.setattr(stream.shutil, "disk_usage", lambda _: free)
    image = np.zeros((40, 30, 3), np.float32)
    with pytest.raises(stream.ScratchError, match=f"--scratch {tmp_path}: a 40x30 photo needs"):
        enhance_image(graphs, image, 8, budget=0, scratch=tmp_path)
    assert list(tmp_path.iterdir()) == []


def test_the_scratch_folder_is_removed_on_success_error_and_ctrl_c(tmp_path, graphs):
    image = np.random.default_rng(0).random((40, 30, 3), dtype=np.float32)
    enhance_image(graphs, image, 8, budget=0, scratch=tmp_path)
    assert list(tmp_path.iterdir()) == []

    def interrupt():
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        enhance_image(graphs, image, 8, budget=0, scratch=tmp_path, progress=interrupt)
    assert list(tmp_path.iterdir()) == []
    assert not [
        f
        for f in os.listdir(f"/proc/{os.getpid()}/fd")
        if "dped-scratch" in os.path.realpath(f"/proc/{os.getpid()}/fd/{f}")
    ]  # and no descriptor left open


def test_cli_scratch_dir_is_used_and_left_empty(tmp_path, authors_checkpoints):
    import imageio.v3 as iio
    from conftest import photo

    from dped.cli import main

    weights_dir, _ = authors_checkpoints
    iio.imwrite(tmp_path / "p.png", photo((60, 90)))
    scratch = tmp_path / "scratch"
    enhance = ["enhance", str(tmp_path / "p.png"), "--model", "iphone_orig"]
    enhance += ["--weights-dir", str(weights_dir)]
    streamed = ["--tile", "8", "--scratch", str(scratch), "--out", str(tmp_path / "o")]
    assert main(enhance + streamed) == 0
    assert scratch.is_dir() and list(scratch.iterdir()) == []
    assert main(enhance + ["--out", str(tmp_path / "w")]) == 0  # 60x90 fits: one pass
    streamed, one = (iio.imread(tmp_path / d / "p.png").astype(int) for d in ("o", "w"))
    assert np.abs(streamed - one).max() <= 1
