"""Enhance photos of any size: tiled inference, exact for instance-normalised generators.

Norm-free generators (the seed's) are local: tiles that overlap by at least the receptive-field
radius give the whole-image output. Instance normalisation uses image-wide statistics, so for the
original models `exact` mode gathers each norm layer's mean and variance over the whole image in
streaming passes (layer k's statistics need layers < k fixed first), then runs the tiles with all
statistics fixed: 9 passes of growing depth, about 4.5 forward passes of work.
"""

from __future__ import annotations

import weakref
from pathlib import Path

import keras
import numpy as np

from dped.forward import FastGenerator


def receptive_radius(generator: keras.Model) -> int:
    """Pixels of context each output pixel sees on each side (stride-1 convolutions)."""
    return sum(
        (layer.kernel_size[0] - 1) // 2
        for layer in generator.layers
        if isinstance(layer, keras.layers.Conv2D)
    )


_FAST = weakref.WeakKeyDictionary()


def fast_generator(generator: keras.Model, precision: str = "float32") -> FastGenerator:
    """One FastGenerator per generator and precision, so its graphs are traced once."""
    cache = _FAST.setdefault(generator, {})
    if precision not in cache:
        cache[precision] = FastGenerator(generator, precision)
    return cache[precision]


def _tiles(size: int, tile: int):
    """(start, stop) of the core tiles along one axis."""
    return [(s, min(s + tile, size)) for s in range(0, size, tile)]


def _windows(image: np.ndarray, tile: int, pad: int):
    """Yield (core slices in the image, window with `pad` of context, core's crop in the window)."""
    h, w = image.shape[:2]
    for y0, y1 in _tiles(h, tile):
        for x0, x1 in _tiles(w, tile):
            wy0, wx0 = max(0, y0 - pad), max(0, x0 - pad)
            window = image[None, wy0 : min(h, y1 + pad), wx0 : min(w, x1 + pad)]
            crop = np.array([y0 - wy0, y1 - wy0, x0 - wx0, x1 - wx0], np.int32)
            yield (slice(y0, y1), slice(x0, x1)), window, crop


def passes(fast: FastGenerator, shape: tuple[int, ...], tile: int) -> int:
    """Graph runs `enhance_image` makes for an image of this shape: the progress bar's total."""
    if max(shape[:2]) <= tile:
        return 1
    return (len(fast.instance) + 1) * len(_tiles(shape[0], tile)) * len(_tiles(shape[1], tile))


def pooled_moments(parts) -> tuple[np.ndarray, np.ndarray]:
    """Mean and variance of a union of parts from each part's (count, mean, variance), in
    float64: the law of total variance, exact and free of E[x^2] - E[x]^2 cancellation."""
    counts = np.array([n for n, _, _ in parts], np.float64)[:, None]
    means = np.array([m for _, m, _ in parts], np.float64)
    variances = np.array([v for _, _, v in parts], np.float64)
    mean = (counts * means).sum(0) / counts.sum()
    var = (counts * (variances + (means - mean) ** 2)).sum(0) / counts.sum()
    return mean, var


def _gather_statistics(fast: FastGenerator, image, tile, progress) -> np.ndarray:
    """Each instance norm's image-wide mean and variance, in network order (norm k's input
    depends on the norms before it): stats[j] = (mean, var) of norm fast.instance[j]."""
    stats = np.zeros((len(fast.instance), 2, fast.channels), np.float32)
    for j, k in enumerate(fast.instance):
        parts = []
        for _, window, crop in _windows(image, tile, fast.radius):
            mean, var = fast.moments(k)(window, crop, stats)
            parts.append(((crop[1] - crop[0]) * (crop[3] - crop[2]), mean.numpy(), var.numpy()))
            progress()
        stats[j] = pooled_moments(parts)
    return stats


def enhance_image(
    generator: keras.Model | FastGenerator,
    image: np.ndarray,
    tile: int = 512,
    progress=lambda: None,
    precision: str = "float32",
) -> np.ndarray:
    """The generator's raw float32 output for one HxWx3 image in 0..1, computed tile by tile
    when larger than `tile`; `progress()` is called after each graph run."""
    fast = (
        generator if isinstance(generator, FastGenerator) else fast_generator(generator, precision)
    )
    h, w = image.shape[:2]
    if max(h, w) <= tile:
        out = fast.one_pass(image[None]).numpy()[0]
        progress()
        return out
    stats = _gather_statistics(fast, image, tile, progress)
    out = np.empty((h, w, 3), np.float32)
    for where, window, (cy0, cy1, cx0, cx1) in _windows(image, tile, fast.radius):
        out[where] = fast.fixed(window, stats).numpy()[0, cy0:cy1, cx0:cx1]
        progress()
    return out


def load_image(path: Path) -> tuple[np.ndarray, np.ndarray | None, int]:
    """(RGB float32 in 0..1, alpha or None, bit depth), EXIF orientation applied."""
    from PIL import Image, ImageOps

    with Image.open(path) as im:
        im = ImageOps.exif_transpose(im)
        array = np.asarray(im)
    depth = 16 if array.dtype == np.uint16 or array.dtype == np.int32 else 8
    array = array.astype(np.float32) / (65535.0 if depth == 16 else 255.0)
    if array.ndim == 2:
        array = np.repeat(array[..., None], 3, axis=2)
    alpha = array[..., 3] if array.shape[-1] == 4 else None
    return np.ascontiguousarray(array[..., :3]), alpha, depth


def save_image(path: Path, rgb: np.ndarray, alpha: np.ndarray | None) -> None:
    """Atomic write of the clipped image, 8-bit (PNG keeps alpha; JPEG is RGB).

    Pillow cannot write 16-bit RGB PNGs, so 16-bit inputs give 8-bit images; `--raw` keeps
    the full float32 output."""
    import io

    import imageio.v3 as iio

    from dped.runs import atomic_write

    # In place where possible: a 12 MP float32 image is 144 MB per temporary.
    image = np.clip(rgb, 0.0, 1.0)
    image *= 255.0
    np.rint(image, out=image)
    image = image.astype(np.uint8)
    jpeg = path.suffix.lower() in (".jpg", ".jpeg")
    if alpha is not None and not jpeg:
        image = np.concatenate([image, np.round(alpha * 255).astype(np.uint8)[..., None]], -1)
    buffer = io.BytesIO()
    iio.imwrite(buffer, image, extension=path.suffix.lower(), **({"quality": 95} if jpeg else {}))
    atomic_write(path, buffer.getvalue())


def load_generator(model: str, weights_dir: str | None = None) -> keras.Model:
    """A run folder of ours (its best checkpoint, else the latest), an original model name
    (iphone_orig, blackberry_orig, sony_orig) or a TF1 checkpoint prefix of that format."""
    import tensorflow as tf

    from dped.models import generator_from_config
    from dped.pretrained import original_generator
    from dped.runs import load_config

    folder = Path(model)
    if (folder / "config.yaml").is_file():
        generator = generator_from_config(load_config(folder))
        for sub in ("best", "checkpoints"):
            latest = tf.train.latest_checkpoint(str(folder / sub))
            if latest:
                tf.train.Checkpoint(generator=generator).restore(latest).expect_partial()
                return generator
        raise FileNotFoundError(f"run folder {folder} has no checkpoint in best/ or checkpoints/")
    return original_generator(model, weights_dir)


IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".tif", ".tiff", ".webp", ".bmp")


def list_inputs(paths: list[str]) -> list[Path]:
    files = []
    for p in map(Path, paths):
        if p.is_dir():
            files += sorted(f for f in p.iterdir() if f.is_file() and not f.name.startswith("."))
        else:
            files.append(p)
    return files


def enhance_files(
    paths,
    generator,
    out_dir: Path,
    fmt: str = "png",
    tile: int = 512,
    raw: bool = False,
    before_after: bool = False,
    precision: str = "float32",
) -> int:
    """Enhance every file; a bad file is a one-line error and the others still run.
    Returns the number of failures."""
    import sys

    from tqdm import tqdm

    out_dir.mkdir(parents=True, exist_ok=True)
    files = list_inputs(paths)
    fast = fast_generator(generator, precision)
    failures = 0
    for path in tqdm(files, desc="images", unit="image", disable=None):
        target = out_dir / f"{path.stem}.{fmt}"
        try:
            if target.resolve() == path.resolve():
                raise ValueError("the output would overwrite the input: choose another --out")
            rgb, alpha, _ = load_image(path)
            total = passes(fast, rgb.shape, tile)
            with tqdm(total=total, desc=path.name, unit="tile", leave=False, disable=None) as bar:
                enhanced = enhance_image(fast, rgb, tile, bar.update)
            if before_after:
                enhanced = np.concatenate([rgb, enhanced], axis=1)
                alpha = None if alpha is None else np.concatenate([alpha, alpha], axis=1)
            save_image(target, enhanced, alpha)
            if raw:
                import io

                from dped.runs import atomic_write

                buffer = io.BytesIO()
                np.save(buffer, enhanced.astype(np.float32))
                atomic_write(out_dir / f"{path.stem}.npy", buffer.getvalue())
        except Exception as err:  # one bad file must not stop the others
            failures += 1
            message = str(err).splitlines()[0] if str(err) else type(err).__name__
            print(f"dped enhance: {path}: {message}", file=sys.stderr)
    return failures
