import json

import imageio.v3 as iio
import numpy as np
import pytest

from dped.models import build_generator
from dped.pretrained import (
    ORIGINAL_MODELS,
    CheckpointError,
    load_original_weights,
    original_generator,
    resolve_checkpoint,
)


def outputs(reference):
    manifest = json.loads((reference / "manifest.json").read_text())["outputs"]
    return {k: v for k, v in manifest.items() if k.endswith(".npy")}


def test_all_reference_outputs_match(reference, parity):
    cases = outputs(reference)
    assert len(cases) == 7
    checkpoints = reference / "dped_orig_checkpoints"
    generators = {name: original_generator(name, checkpoints) for name in ORIGINAL_MODELS}
    for out_name, meta in cases.items():
        phone = iio.imread(reference / meta["input"]).astype(np.float32)[None] / 255.0
        enhanced = generators[meta["model"]](phone, training=False).numpy()[0]
        error = float(np.abs(enhanced - np.load(reference / out_name)).max())
        parity("generator max |ours - ref|", out_name, error, 1e-4)
        assert error <= 1e-4, out_name


def test_weights_dir_from_environment(authors_checkpoints, monkeypatch):
    folder, _ = authors_checkpoints
    monkeypatch.setenv("DPED_WEIGHTS_DIR", str(folder))
    assert resolve_checkpoint("sony_orig") == folder / "sony_orig"


def test_both_checkpoint_formats_load_every_weight(authors_checkpoints, seed_checkpoint):
    folder, generators = authors_checkpoints
    seed_folder, seed = seed_checkpoint
    image = np.random.default_rng(5).random((1, 33, 41, 3), dtype=np.float32)
    for loaded, source in (
        (original_generator("iphone_orig", folder), generators["iphone_orig"]),
        (original_generator(str(seed_folder)), seed),
    ):
        assert loaded.spec == source.spec
        for a, b in zip(loaded.weights, source.weights):
            np.testing.assert_array_equal(a.numpy(), b.numpy())
        np.testing.assert_allclose(loaded(image), source(image), atol=1e-6)


def test_missing_weights_dir_says_where_to_get_them(monkeypatch):
    monkeypatch.delenv("DPED_WEIGHTS_DIR", raising=False)
    with pytest.raises(
        CheckpointError, match="--weights-dir DIR.*set DPED_WEIGHTS_DIR.*aiff22/DPED.*models_orig"
    ):
        resolve_checkpoint("iphone_orig")


def test_missing_checkpoint_names_the_path(tmp_path):
    with pytest.raises(CheckpointError, match=f"no TF checkpoint at {tmp_path}/iphone_orig"):
        original_generator("iphone_orig", tmp_path)


def test_corrupt_checkpoint_is_a_clear_error(tmp_path):
    (tmp_path / "broken.index").write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match="cannot read TF checkpoint .*broken"):
        original_generator(str(tmp_path / "broken"))


def test_checkpoint_needs_the_paper_generator(authors_checkpoints):
    folder, _ = authors_checkpoints
    seed_generator = build_generator("none", "conv1x1")
    with pytest.raises(CheckpointError, match="needs a generator with norm='instance'"):
        load_original_weights(seed_generator, folder / "iphone_orig")
