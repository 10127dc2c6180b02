"""Enhance photos of any size: tiled inference, exact for instance-normalised generators.

Norm-free generators (the seed's) are local: tiles that overlap by at least the receptive-field
radius give the whole-image output. Instance normalisation uses image-wide statistics, so for the
original models `exact` mode gathers each norm layer's mean and variance over the whole image in
streaming passes (layer k's statistics need layers < k fixed first), then runs the tiles with all
statistics fixed: 9 passes of growing depth, about 4.5 forward passes of work.
"""

from __future__ import annotations

from pathlib import Path

import keras
import numpy as np

from dped.models import InstanceNormalization


def receptive_radius(generator: keras.Model) -> int:
    """Pixels of context each output pixel sees on each side (stride-1 convolutions)."""
    return sum(
        (layer.kernel_size[0] - 1) // 2
        for layer in generator.layers
        if isinstance(layer, keras.layers.Conv2D)
    )


def _norm_layers(generator: keras.Model) -> list[InstanceNormalization]:
    return [lay for lay in generator.layers if isinstance(lay, InstanceNormalization)]


def _tiles(size: int, tile: int):
    """(start, stop) of the core tiles along one axis."""
    return [(s, min(s + tile, size)) for s in range(0, size, tile)]


def _graph(model: keras.Model):
    """The model as one traced graph over any tile shape. Keras' eager functional call keeps
    every layer's output alive until it returns (~2 GB for a 548x548 tile); a graph frees
    each buffer once it is consumed. Traced after `fixed_stats` are set, so they are baked in."""
    import tensorflow as tf

    spec = tf.TensorSpec([1, None, None, 3], tf.float32)
    return tf.function(lambda x: model(x, training=False), input_signature=[spec])


def _windows(image: np.ndarray, tile: int, pad: int):
    """Yield (core slices in the image, window with `pad` of context, core's crop in the window)."""
    h, w = image.shape[:2]
    for y0, y1 in _tiles(h, tile):
        for x0, x1 in _tiles(w, tile):
            wy0, wx0 = max(0, y0 - pad), max(0, x0 - pad)
            window = image[None, wy0 : min(h, y1 + pad), wx0 : min(w, x1 + pad)]
            crop = np.array([y0 - wy0, y1 - wy0, x0 - wx0, x1 - wx0], np.int32)
            yield (slice(y0, y1), slice(x0, x1)), window, crop


def _run_tiled(fn, image: np.ndarray, tile: int, pad: int):
    """Apply `fn` to overlapping windows; yield (core slices, fn output cropped to the core)."""
    for where, window, (cy0, cy1, cx0, cx1) in _windows(image, tile, pad):
        yield where, np.asarray(fn(window))[0, cy0:cy1, cx0:cx1]


def _sums_graph(model: keras.Model):
    """Per-channel sum and sum of squares (float64) of the model's output over a crop, in-graph:
    a tile's activations never reach numpy."""
    import tensorflow as tf

    spec = [tf.TensorSpec([1, None, None, 3], tf.float32), tf.TensorSpec([4], tf.int32)]

    @tf.function(input_signature=spec)
    def sums(x, crop):
        h = tf.cast(model(x, training=False)[0, crop[0] : crop[1], crop[2] : crop[3]], tf.float64)
        return tf.reduce_sum(h, [0, 1]), tf.reduce_sum(tf.square(h), [0, 1])

    return sums


def _gather_statistics(generator, image, tile, pad, progress):
    """Freeze each instance-norm layer to its image-wide mean and variance, in network order."""
    for layer in _norm_layers(generator):
        sums = _sums_graph(keras.Model(generator.input, layer.input))
        total = sq = 0.0
        for _, window, crop in _windows(image, tile, pad):
            s1, s2 = sums(window, crop)
            total, sq = total + s1.numpy(), sq + s2.numpy()
            progress()
        n = image.shape[0] * image.shape[1]
        mean = total / n
        layer.fixed_stats = (mean.astype(np.float32), (sq / n - mean**2).astype(np.float32))


def enhance_image(
    generator: keras.Model, image: np.ndarray, tile: int = 512, progress=lambda: None
) -> np.ndarray:
    """The generator's raw float32 output for one HxWx3 image in 0..1, computed tile by tile."""
    pad = receptive_radius(generator)
    norms = _norm_layers(generator)
    h, w = image.shape[:2]
    if max(h, w) <= tile:
        return np.asarray(_graph(generator)(image[None]))[0]
    try:
        if norms:
            _gather_statistics(generator, image, tile, pad, progress)
        out = np.empty((h, w, 3), np.float32)
        for where, core in _run_tiled(_graph(generator), image, tile, pad):
            out[where] = core
            progress()
        return out
    finally:
        for layer in norms:
            layer.fixed_stats = None


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
) -> int:
    """Enhance every file; a bad file is a one-line error and the others still run.
    Returns the number of failures."""
    import sys

    from tqdm import tqdm

    out_dir.mkdir(parents=True, exist_ok=True)
    files = list_inputs(paths)
    failures = 0
    for path in tqdm(files, desc="images", unit="image", disable=None):
        target = out_dir / f"{path.stem}.{fmt}"
        try:
            if target.resolve() == path.resolve():
                raise ValueError("the output would overwrite the input: choose another --out")
            rgb, alpha, _ = load_image(path)
            enhanced = enhance_image(generator, rgb, tile)
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
