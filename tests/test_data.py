import hashlib
from pathlib import Path

import imageio.v3 as iio
import numpy as np
import pytest
import tensorflow as tf
from conftest import make_dataset

from dped import data, minidata
from dped.config import preset


def test_discovers_and_pairs_the_dped_layout(tmp_path):
    cfg = make_dataset(tmp_path, n_train=12)
    files = data.discover(cfg.dataset_dir, cfg.phone)
    assert len(files.train) == 12 and len(files.test) == 3 and len(files.full_size) == 1
    # numeric order: 0, 1, ..., 10, 11 (not 0, 1, 10, 11, 2, ...)
    assert [p.stem for p in files.train.phone] == [str(i) for i in range(12)]
    assert all(a.name == b.name for a, b in zip(files.train.phone, files.train.dslr))
    assert files.train.dslr[0].parent.name == "canon"


def test_missing_folder_shows_the_expected_layout(tmp_path):
    cfg = make_dataset(tmp_path)
    with pytest.raises(
        data.DatasetError, match=r"(?s)no dataset for phone 'sony'.*training_data/canon"
    ):
        data.discover(tmp_path, "sony")
    for p in (tmp_path / "myphone" / "test_data" / "patches" / data.DSLR).iterdir():
        p.unlink()
    (tmp_path / "myphone" / "test_data" / "patches" / data.DSLR).rmdir()
    with pytest.raises(
        data.DatasetError, match=r"missing folder .*patches/canon; expected the DPED layout"
    ):
        data.discover(cfg.dataset_dir, cfg.phone)


def test_unpaired_files_are_listed(tmp_path):
    cfg = make_dataset(tmp_path)
    (tmp_path / "myphone" / "training_data" / "canon" / "3.jpg").unlink()
    with pytest.raises(
        data.DatasetError, match=r"unpaired files: 6 in .* 5 in .*training_data/myphone/3.jpg"
    ):
        data.discover(cfg.dataset_dir, cfg.phone)


def test_wrong_patch_size_is_an_error(tmp_path):
    cfg = make_dataset(tmp_path)
    iio.imwrite(
        tmp_path / "myphone" / "training_data" / "canon" / "2.jpg", np.zeros((16, 20, 3), np.uint8)
    )
    with pytest.raises(
        data.DatasetError, match=r"1 patches are not 16x16 \(patch_size\): .*2.jpg is 20x16"
    ):
        data.load_files(cfg)


@pytest.mark.parametrize("damage", ["garbage", "truncated"])
def test_corrupt_images_stop_by_default_and_are_skipped_on_request(tmp_path, damage):
    cfg = make_dataset(tmp_path)
    victim = tmp_path / "myphone" / "training_data" / "myphone" / "4.jpg"
    content = victim.read_bytes()
    victim.write_bytes(b"not an image" if damage == "garbage" else content[: len(content) // 2])
    with pytest.raises(data.DatasetError, match=f"corrupt image {victim}.*skip_corrupt: true"):
        data.load_files(cfg)
    with pytest.warns(UserWarning, match=f"skipping the pair of corrupt image {victim}"):
        files = data.load_files(cfg.replace(skip_corrupt=True))
    assert len(files.train) == 5 and files.train.skipped == [victim]
    batch = next(data.training_batches(cfg.replace(skip_corrupt=True), files))
    assert batch[0].shape == (2, 16, 16, 3)


def test_grayscale_and_rgba_are_converted_and_counted(tmp_path):
    cfg = make_dataset(tmp_path, n_train=2)
    folder = tmp_path / "myphone" / "training_data"
    iio.imwrite(folder / "myphone" / "0.jpg", np.full((16, 16), 100, np.uint8))
    for side in ("myphone", "canon"):
        (folder / side / "1.jpg").unlink()
        iio.imwrite(folder / side / "1.png", np.full((16, 16, 4), 200, np.uint8))
    with pytest.warns(UserWarning, match="3 grayscale/RGBA/CMYK images are converted"):
        files = data.load_files(cfg)
    assert len(files.train.converted) == 3
    phone, _ = next(iter(data.pair_dataset(files.train, cfg.replace(augment=False), False)))
    assert phone.shape == (2, 16, 16, 3)
    np.testing.assert_allclose(phone[0].numpy(), 100 / 255, atol=2 / 255)


def test_augmentation_keeps_pairs_aligned():
    rng = np.random.default_rng(0)
    dslr = tf.constant(rng.random((5, 7, 3), dtype=np.float32))  # asymmetric, non-square
    seen = set()
    for i in range(40):
        a, b = data.augment_pair(dslr, dslr, tf.constant([3, i], tf.int64))
        np.testing.assert_array_equal(a.numpy(), b.numpy())  # identical pair stays identical
        p, d = data.augment_pair(dslr * 0.5, dslr, tf.constant([3, i], tf.int64))
        np.testing.assert_allclose(p.numpy(), d.numpy() * 0.5, rtol=1e-6)  # known relation holds
        seen.add(hashlib.sha1(d.numpy().tobytes()).hexdigest())
    assert len(seen) == 8  # all flips/rotations occur


def test_pipeline_is_deterministic_from_the_seed(tmp_path):
    cfg = make_dataset(tmp_path, n_train=10)
    files = data.load_files(cfg)

    def first_batches(c, n=6):
        it = data.training_batches(c, files)
        return [next(it)[1].numpy() for _ in range(n)]

    a, b = first_batches(cfg), first_batches(cfg)
    for x, y in zip(a, b):
        np.testing.assert_array_equal(x, y)
    c = first_batches(cfg.replace(seed=1))
    assert any(not np.array_equal(x, y) for x, y in zip(a, c))


def test_subsample_is_seeded():
    split = data.Split(
        [Path(f"{i}.jpg") for i in range(100)], [Path(f"d{i}.jpg") for i in range(100)]
    )
    a, b = data.subsample(split, 10, 0), data.subsample(split, 10, 0)
    assert a.phone == b.phone and len(a) == 10
    assert data.subsample(split, 10, 1).phone != a.phone
    assert len(data.subsample(split, 0, 0)) == 100


@pytest.fixture(scope="module")
def mini(tmp_path_factory):
    root = tmp_path_factory.mktemp("mini")
    cfg = preset("seed").replace(dataset_dir=str(root), phone="mini", batch_size=8)
    return cfg, minidata.build(cfg, root, progress=False)


def digest(folder: Path) -> str:
    h = hashlib.sha256()
    for p in sorted(folder.rglob("*")):
        if p.is_file():
            h.update(str(p.relative_to(folder)).encode() + p.read_bytes())
    return h.hexdigest()


def test_mini_dataset_is_byte_identical_on_rebuild(mini):
    cfg, base = mini
    first = digest(base)
    assert minidata.is_current(cfg, cfg.dataset_dir)
    assert not minidata.is_current(cfg.replace(seed=1), cfg.dataset_dir)
    minidata.build(cfg, cfg.dataset_dir, progress=False)
    assert digest(base) == first


def test_mini_dataset_has_the_dped_layout_and_no_leakage(mini):
    cfg, base = mini
    files = data.load_files(cfg)
    assert len(files.train) > 1000 and len(files.test) > 20 and len(files.full_size) == 2
    train_sources = {s.name for s in minidata.SOURCES if s.split == "train"}
    test_sources = {s.name for s in minidata.SOURCES if s.split == "test"}
    assert not train_sources & test_sources
    assert {p.stem for p in files.full_size} == test_sources
    # No test DSLR patch appears (even approximately) in the training DSLR patches.
    small = lambda paths: np.stack([iio.imread(p)[::4, ::4].astype(np.float32) for p in paths])  # noqa: E731
    train, test = small(files.train.dslr), small(files.test.dslr)
    mse = ((test[:, None] - train[None]) ** 2).mean(axis=(2, 3, 4))
    assert mse.min() > 100.0


def test_mini_dataset_says_where_each_test_patch_was_cut(mini):
    cfg, _ = mini
    files = data.load_files(cfg)
    positions = data.read_test_positions(cfg.dataset_dir, cfg.phone)
    assert len(positions) == len(files.test)
    size = cfg.patch_size
    photos = {name: minidata.load_photo(name).astype(np.float32) for name, _, _ in positions}
    for i in (0, len(positions) // 2, len(positions) - 1):
        name, r, c = positions[i]
        patch = iio.imread(files.test.dslr[i]).astype(np.float32)
        here = np.abs(patch - photos[name][r : r + size, c : c + size]).mean()
        beside = np.abs(patch - photos[name][r + 3 : r + 3 + size, c : c + size]).mean()
        assert here < 3.0 < beside  # JPEG's error only, where a 3-pixel shift is far off


def test_missing_or_malformed_positions_read_as_unknown(tmp_path):
    assert data.read_test_positions(tmp_path, "p") is None
    data.write_test_positions(tmp_path / "p", [("a", 0, 24), ("b", 48, 0)])
    assert data.read_test_positions(tmp_path, "p") == [("a", 0, 24), ("b", 48, 0)]
    (tmp_path / "p" / "test_data" / "patches" / data.POSITIONS_FILE).write_text("patch,x\n0,1\n")
    assert data.read_test_positions(tmp_path, "p") is None


def test_phone_side_is_degraded_and_misaligned(mini):
    cfg, _ = mini
    files = data.load_files(cfg)
    phone = iio.imread(files.test.phone[0]).astype(np.float32)
    dslr = iio.imread(files.test.dslr[0]).astype(np.float32)
    assert phone.mean() < dslr.mean()  # exposure < 1 and gamma > 1 darken
    base = minidata.identity_baseline(cfg, cfg.dataset_dir)
    assert 10 < base["psnr"] < 30 and 0 < base["ms_ssim"] < 1


def test_degradation_model_steps_follow_the_config():
    photo = np.full((20, 20, 3), 128, np.uint8)
    rng = lambda: np.random.default_rng(0)  # noqa: E731
    neutral = preset("seed").replace(
        mini={
            "exposure": 1.0,
            "gamma": 1.0,
            "wb_red": 1.0,
            "wb_blue": 1.0,
            "saturation": 1.0,
            "blur_sigma": 0.0,
            "vignette": 0.0,
            "noise_shot": 0.0,
            "noise_read": 0.0,
        }
    )
    np.testing.assert_allclose(minidata.degrade(photo, neutral, rng()), 128 / 255, atol=1e-6)
    warm = minidata.degrade(photo, neutral.replace(**{"mini.wb_red": 1.2}), rng())
    assert warm[..., 0].mean() > warm[..., 1].mean()
    vignetted = minidata.degrade(photo, neutral.replace(**{"mini.vignette": 0.5}), rng())
    assert vignetted[0, 0].mean() < vignetted[10, 10].mean()
    noisy = minidata.degrade(photo, neutral.replace(**{"mini.noise_shot": 0.01}), rng())
    assert noisy.std() > 0.01


def test_pipeline_is_not_autotuned(tmp_path):
    # Deleting an autotuned iterator waits for tf.data's tuning thread, which sleeps up to a
    # minute once the iterator is a few minutes old: a trained run could sit 20-70 s at its end.
    cfg = make_dataset(tmp_path, n_train=2)
    files = data.load_files(cfg)
    for training in (True, False):
        ds = data.pair_dataset(files.train, cfg, training)
        assert ds.options().autotune.enabled is False
