"""The DPED dataset: layout discovery, up-front validation, and a streaming tf.data pipeline.

Layout (the real DPED dataset, the built-in mini dataset and a user's own phone alike):

    <root>/<phone>/training_data/<phone>/<i>.jpg          <root>/<phone>/training_data/canon/<i>.jpg
    <root>/<phone>/test_data/patches/<phone>/<i>.jpg      <root>/<phone>/test_data/patches/canon/<i>.jpg
    <root>/<phone>/test_data/full_size_test_images/*.jpg
    <root>/<phone>/test_data/patches/positions.csv        optional: where each test patch was cut

Up front (before training) every file's header and its last two bytes are read, never its pixels:
pairing, counts, patch size, colour mode, and JPEG integrity (a JPEG that does not end with the
EOI marker is truncated). Pixels are decoded once, while streaming.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from dped.config import Config

DSLR = "canon"
# What the DPED layout holds (tf.data decodes them); `dped enhance` reads more (PHOTO_SUFFIXES).
DATASET_SUFFIXES = (".jpg", ".jpeg", ".png")
# Beside the test patches of a set dped built (`dped data`, `dped align`): the photograph and
# corner (row, col) each patch was cut from, one line per patch in file-number order. Neighbouring
# patches of one photograph are alike, so the report's standard errors group them by region
# (evaluation.region_labels); the real DPED's test patches come without it.
POSITIONS_FILE = "positions.csv"


class DatasetError(ValueError):
    """A dataset folder that does not hold what DPED expects."""


def layout(root: str | Path, phone: str) -> str:
    r = f"{root}/{phone}"
    return (
        f"  {r}/training_data/{phone}/<i>.jpg  +  {r}/training_data/{DSLR}/<i>.jpg\n"
        f"  {r}/test_data/patches/{phone}/<i>.jpg  +  {r}/test_data/patches/{DSLR}/<i>.jpg\n"
        f"  {r}/test_data/full_size_test_images/*.jpg"
    )


@dataclass
class Split:
    """Paired patch files of one split, and what validation found in them."""

    phone: list[Path]
    dslr: list[Path]
    skipped: list[Path] = field(default_factory=list)
    converted: list[Path] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.phone)


@dataclass
class DPEDFiles:
    train: Split
    test: Split
    full_size: list[Path]


def _images(folder: Path) -> dict[str, Path]:
    return {p.stem: p for p in sorted(folder.iterdir()) if p.suffix.lower() in DATASET_SUFFIXES}


def _sort_key(stem: str) -> tuple:
    # DPED numbers its patches 0.jpg, 1.jpg, ...: sort numerically where the names allow.
    return (0, int(stem), "") if stem.isdigit() else (1, 0, stem)


def pair_folder(phone_dir: Path, dslr_dir: Path, root: Path, phone: str) -> Split:
    """Pair `<i>.jpg` files of two folders by name; unpaired files are an error listing them."""
    for folder in (phone_dir, dslr_dir):
        if not folder.is_dir():
            raise DatasetError(
                f"missing folder {folder}; expected the DPED layout:\n" + layout(root, phone)
            )
    a, b = _images(phone_dir), _images(dslr_dir)
    only_a, only_b = sorted(set(a) - set(b), key=_sort_key), sorted(set(b) - set(a), key=_sort_key)
    if only_a or only_b:
        raise DatasetError(
            f"unpaired files: {len(a)} in {phone_dir}, {len(b)} in {dslr_dir}; "
            f"without a partner: {[str(a[s]) for s in only_a[:5]] + [str(b[s]) for s in only_b[:5]]}"
        )
    if not a:
        raise DatasetError(
            f"no images in {phone_dir}; expected the DPED layout:\n" + layout(root, phone)
        )
    stems = sorted(a, key=_sort_key)
    return Split([a[s] for s in stems], [b[s] for s in stems])


def discover(root: str | Path, phone: str) -> DPEDFiles:
    """The paired training and test patches and the full-size test images under `root`."""
    root = Path(root)
    base = root / phone
    if not base.is_dir():
        raise DatasetError(
            f"no dataset for phone '{phone}' at {base}; expected the DPED layout:\n"
            + layout(root, phone)
            + "\n(`make data` builds the mini dataset)"
        )
    train = pair_folder(base / "training_data" / phone, base / "training_data" / DSLR, root, phone)
    patches = base / "test_data" / "patches"
    test = pair_folder(patches / phone, patches / DSLR, root, phone)
    full_dir = base / "test_data" / "full_size_test_images"
    full = sorted(full_dir.iterdir()) if full_dir.is_dir() else []
    return DPEDFiles(train, test, [p for p in full if p.suffix.lower() in DATASET_SUFFIXES])


def write_test_positions(base: Path, positions: list[tuple[str, int, int]]) -> None:
    """positions.csv of the test patches under `base` (a <root>/<phone> folder being built)."""
    lines = ["patch,photo,row,col"] + [
        f"{i},{photo},{row},{col}" for i, (photo, row, col) in enumerate(positions)
    ]
    path = base / "test_data" / "patches" / POSITIONS_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines) + "\n")


def read_test_positions(root: str | Path, phone: str) -> list[tuple[str, int, int]] | None:
    """(photo, row, col) of every test patch, in file-number order; None when the dataset does
    not say (no positions.csv, or one that does not read as written)."""
    import csv

    path = Path(root) / phone / "test_data" / "patches" / POSITIONS_FILE
    try:
        with open(path, newline="") as f:
            rows = list(csv.DictReader(f))
        return [(r["photo"], int(r["row"]), int(r["col"])) for r in rows]
    except (OSError, KeyError, TypeError, ValueError):
        return None


def inspect_image(path: Path) -> tuple[tuple[int, int], str]:
    """(width, height) and colour mode from the header; raises on a corrupt or truncated file."""
    from PIL import Image

    with Image.open(path) as im:
        size, mode, fmt = im.size, im.mode, im.format
    if fmt == "JPEG":
        with open(path, "rb") as f:
            f.seek(-2, 2)
            if f.read(2) != b"\xff\xd9":
                raise OSError("truncated JPEG (no end-of-image marker)")
    return size, mode


def validate(split: Split, patch_size: int, skip_corrupt: bool) -> Split:
    """Check every pair's headers: corrupt files stop (or are skipped), wrong sizes stop."""
    keep_a, keep_b, skipped, converted, wrong = [], [], [], [], []
    for a, b in zip(split.phone, split.dslr):
        bad = None
        for path in (a, b):
            try:
                size, mode = inspect_image(path)
            except Exception as err:  # PIL raises several types for a damaged file
                bad = path
                if not skip_corrupt:
                    raise DatasetError(
                        f"corrupt image {path}: {err}; replace or delete it (and its partner), "
                        "or set skip_corrupt: true to skip such pairs"
                    ) from None
                warnings.warn(f"skipping the pair of corrupt image {path}: {err}", stacklevel=2)
                break
            if size != (patch_size, patch_size):
                wrong.append(f"{path} is {size[0]}x{size[1]}")
            if mode != "RGB":
                converted.append(path)
        if bad is None:
            keep_a.append(a)
            keep_b.append(b)
        else:
            skipped.append(bad)
    if wrong:
        raise DatasetError(
            f"{len(wrong)} patches are not {patch_size}x{patch_size} (patch_size): {wrong[:5]}"
        )
    if not keep_a:
        raise DatasetError("no readable pairs left after skipping corrupt images")
    return Split(keep_a, keep_b, skipped, converted)


def load_files(cfg: Config) -> DPEDFiles:
    """Discover and validate the dataset named by the config; reports skipped/converted counts."""
    files = discover(cfg.dataset_dir, cfg.phone)
    files.train = validate(files.train, cfg.patch_size, cfg.skip_corrupt)
    files.test = validate(files.test, cfg.patch_size, cfg.skip_corrupt)
    for name, split in (("train", files.train), ("test", files.test)):
        if split.converted:
            warnings.warn(
                f"{name}: {len(split.converted)} grayscale/RGBA/CMYK images are "
                f"converted to RGB while streaming, e.g. {split.converted[0]}",
                stacklevel=2,
            )
    return files


def changed_files(files: DPEDFiles) -> list[str]:
    """Files of a validated dataset that are gone or no longer read as images, as 'path: why'."""
    problems = []
    for split in (files.train, files.test):
        for path in split.phone + split.dslr:
            try:
                inspect_image(path)
            except FileNotFoundError:
                problems.append(f"{path}: no longer exists")
            except Exception as err:  # PIL raises several types for a damaged file
                problems.append(f"{path}: no longer reads as an image ({err})")
    return problems


def stream_error(files: DPEDFiles, err: Exception, run_dir) -> Exception:
    """The error to raise for a TensorFlow read/decode failure during a run: a DatasetError
    naming the files that changed under it, or `err` itself when none did."""
    problems = changed_files(files)
    if not problems:
        return err
    more = f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""
    return DatasetError(
        f"the dataset changed while the run read it: {problems[0]}{more}; restore the files "
        f"(or rebuild the set before, not during, a run) and continue with --resume from the "
        f"last checkpoint in {run_dir}/checkpoints"
    )


def subsample(split: Split, train_size: int, seed: int) -> Split:
    """The original's `train_size` option: a seeded random subset of the training pairs."""
    if train_size == 0 or train_size >= len(split):
        return split
    index = np.sort(np.random.default_rng(seed).choice(len(split), train_size, replace=False))
    return Split(
        [split.phone[i] for i in index],
        [split.dslr[i] for i in index],
        split.skipped,
        split.converted,
    )


def _decode(path):
    import tensorflow as tf

    image = tf.io.decode_image(tf.io.read_file(path), channels=3, expand_animations=False)
    return tf.image.convert_image_dtype(image, tf.float32)


def augment_pair(phone, dslr, seed, draw: str = "one_of_8"):
    """A flip/rotation drawn from `seed`, applied to both images of the pair: one of the 8
    (`one_of_8`), or the seed's three coins in its order (flip up-down, flip left-right, rot90),
    which give the same 8 transforms with equal probability from another random stream."""
    import tensorflow as tf

    def maybe(flag, op, image):
        return tf.cond(flag, lambda: op(image), lambda: image)

    if draw == "three_coins":
        coins = tf.random.stateless_uniform([3], seed) > 0.5
        for coin, op in zip(
            tf.unstack(coins), (tf.image.flip_up_down, tf.image.flip_left_right, tf.image.rot90)
        ):
            phone, dslr = maybe(coin, op, phone), maybe(coin, op, dslr)
        return phone, dslr
    k = tf.random.stateless_uniform([], seed, 0, 8, dtype=tf.int32)
    phone, dslr = tf.image.rot90(phone, k % 4), tf.image.rot90(dslr, k % 4)
    flip = k >= 4
    return maybe(flip, tf.image.flip_left_right, phone), maybe(flip, tf.image.flip_left_right, dslr)


def pair_dataset(split: Split, cfg: Config, training: bool):
    """phone/DSLR batches: file lists -> shuffle -> parallel decode -> augment -> batch -> prefetch.

    Only file names are shuffled (one permutation per epoch), so memory does not grow with the
    dataset. Order, shuffling and augmentation depend only on cfg.seed and the element's position.

    Parallelism is fixed (one decoder per core, two batches ahead), not autotuned: deleting an
    autotuned iterator waits for tf.data's tuning thread to wake, which sleeps up to a minute
    once the iterator is old: a run that trained a few minutes could sit 20-70 s after its last
    step.
    """
    import os

    import tensorflow as tf

    parallel = os.cpu_count() or 1

    size = cfg.patch_size
    ds = tf.data.Dataset.from_tensor_slices(
        ([str(p) for p in split.phone], [str(p) for p in split.dslr])
    )
    if training:
        ds = ds.shuffle(len(split), seed=cfg.seed, reshuffle_each_iteration=True).repeat()
    ds = ds.map(
        lambda a, b: (_decode(a), _decode(b)),
        num_parallel_calls=parallel,
        deterministic=True,
    )
    ds = ds.map(
        lambda a, b: (tf.ensure_shape(a, [size, size, 3]), tf.ensure_shape(b, [size, size, 3]))
    )
    if training and cfg.augment:
        ds = ds.enumerate().map(
            lambda i, pair: augment_pair(
                *pair, tf.stack([tf.cast(cfg.seed, tf.int64), i]), cfg.augment_draw
            ),
            num_parallel_calls=parallel,
            deterministic=True,
        )
    options = tf.data.Options()
    options.autotune.enabled = False
    ds = ds.batch(cfg.batch_size, drop_remainder=training).prefetch(2)
    return ds.with_options(options)


def training_batches(cfg: Config, files: DPEDFiles | None = None) -> Iterator:
    files = files or load_files(cfg)
    return iter(pair_dataset(subsample(files.train, cfg.train_size, cfg.seed), cfg, True))
