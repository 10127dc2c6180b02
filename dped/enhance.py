"""Enhance photos of any size: tiled inference, exact for instance-normalised generators.

Norm-free generators (the seed's) are local: tiles that overlap by at least the receptive-field
radius give the whole-image output. Instance normalisation uses image-wide statistics, so for the
original models `exact` mode gathers each norm layer's mean and variance over the whole image in
streaming passes (layer k's statistics need layers < k fixed first), then runs the tiles with all
statistics fixed: 9 passes of growing depth, about 4.5 forward passes of work.
"""

from __future__ import annotations

import functools
import weakref
from pathlib import Path

import keras
import numpy as np

from dped.forward import FastGenerator, receptive_radius  # noqa: F401 (part of this API)
from dped.images import (  # noqa: F401 (load_image, save_image: part of this API)
    as_float,
    load_image,
    read_pixels,
    save_image,
    to_pixels,
    write_pixels,
)

# Tiles of 448 keep every graph's input within 484x484 (the original's 18 px of context on each
# side). TensorFlow's oneDNN allocator pools what the largest graph needed and keeps it, so the
# largest window sets the peak memory of a whole folder of photos. --tile 512 runs 512x512
# photos in one pass, faster for the original models (no statistics passes).
DEFAULT_TILE = 448

_FAST = weakref.WeakKeyDictionary()


def fast_generator(generator: keras.Model, precision: str = "float32") -> FastGenerator:
    """One FastGenerator per generator and precision, so its graphs are traced once. An
    exported TFLite model (export.TFLiteGenerator) runs as it is."""
    if not isinstance(generator, keras.Model):
        return generator
    cache = _FAST.setdefault(generator, {})
    if precision not in cache:
        cache[precision] = FastGenerator(generator, precision)
    return cache[precision]


def _tiles(size: int, tile: int):
    """(start, stop) of the core tiles along one axis."""
    return [(s, min(s + tile, size)) for s in range(0, size, tile)]


def _windows(image: np.ndarray, tile: int, pad: int, rows=None):
    """Yield (core slices in the image, window with `pad` of context, core's crop in the window)
    for every tile, or for the tiles of the row bands `rows` [(y0, y1)]."""
    h, w = image.shape[:2]
    for y0, y1 in rows or _tiles(h, tile):
        for x0, x1 in _tiles(w, tile):
            wy0, wx0 = max(0, y0 - pad), max(0, x0 - pad)
            window = image[None, wy0 : min(h, y1 + pad), wx0 : min(w, x1 + pad)]
            crop = np.array([y0 - wy0, y1 - wy0, x0 - wx0, x1 - wx0], np.int32)
            yield (slice(y0, y1), slice(x0, x1)), window, crop


def one_pass(fast: FastGenerator, shape: tuple[int, ...], tile: int) -> bool:
    """Whether an image this size runs whole: when it has no more pixels than a tile's window.
    Then no graph ever holds larger activations than a window's, so the allocator's pooled
    buffers fit every image of a batch (mixed sizes otherwise grow the peak). An
    instance-norm TFLite model always does: it has no graphs for the statistics passes."""
    if fast.whole_image_only:
        return True
    return shape[0] * shape[1] <= (tile + 2 * fast.radius) ** 2


def passes(fast: FastGenerator, shape: tuple[int, ...], tile: int) -> int:
    """Graph runs `enhance_image` makes for an image of this shape: the progress bar's total."""
    if one_pass(fast, shape, tile):
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
        for _, window, crop in _windows(image, tile, fast.norm_radius[k]):
            mean, var = fast.moments(k)(as_float(window), crop, stats)
            parts.append(((crop[1] - crop[0]) * (crop[3] - crop[2]), mean.numpy(), var.numpy()))
            progress()
        stats[j] = pooled_moments(parts)
    return stats


def enhance_rows(
    fast: FastGenerator, image: np.ndarray, tile: int = DEFAULT_TILE, progress=lambda: None
):
    """Yield (y0, y1, float32 rows y0:y1 of the output) band by band, so that a caller can
    quantise or stream the output without holding a float copy of a whole photo. `image` is
    float32 in 0..1 or uint8 / uint16 pixels, converted a window at a time."""
    h, w = image.shape[:2]
    if one_pass(fast, image.shape, tile):
        out = np.asarray(fast.one_pass(as_float(image)[None]))[0]
        progress()
        yield 0, h, out
        return
    stats = _gather_statistics(fast, image, tile, progress)
    for y0, y1 in _tiles(h, tile):
        band = np.empty((y1 - y0, w, 3), np.float32)
        for (_, xs), window, (cy0, cy1, cx0, cx1) in _windows(image, tile, fast.radius, [(y0, y1)]):
            band[:, xs] = np.asarray(fast.fixed(as_float(window), stats))[0, cy0:cy1, cx0:cx1]
            progress()
        yield y0, y1, band


def enhance_image(
    generator: keras.Model | FastGenerator,
    image: np.ndarray,
    tile: int = DEFAULT_TILE,
    progress=lambda: None,
    precision: str = "float32",
) -> np.ndarray:
    """The generator's raw float32 output for one HxWx3 image (float32 in 0..1 or uint8 /
    uint16 pixels), computed tile by tile when it has more pixels than a tile's window;
    `progress()` is called after each graph run."""
    fast = (
        generator if isinstance(generator, FastGenerator) else fast_generator(generator, precision)
    )
    out = np.empty(image.shape[:2] + (3,), np.float32)
    for y0, y1, band in enhance_rows(fast, image, tile, progress):
        out[y0:y1] = band
    return out


def _output_canvas(pixels, alpha, depth: int, fmt: str, before_after: bool) -> np.ndarray:
    """The integer image to write, before the enhanced pixels go into its right-hand W columns:
    the input on the left for --before-after, alpha put back on PNG."""
    out_depth = 8 if fmt == "jpg" else depth
    h, w = pixels.shape[:2]
    keep_alpha = alpha is not None and fmt == "png"
    panels = 2 if before_after else 1
    canvas = np.empty(
        (h, w * panels, 4 if keep_alpha else 3), np.uint16 if out_depth == 16 else np.uint8
    )
    scale = 1.0 / (2**depth - 1)
    if before_after:
        canvas[:, :w, :3] = to_pixels(pixels, out_depth, scale)
    if keep_alpha:
        canvas[..., 3] = np.tile(to_pixels(alpha, out_depth, scale), (1, panels))
    return canvas


def _enhance_into(fast, pixels, tile, canvas, out_depth, progress, raw_file=None) -> None:
    """Run the generator band by band: each band quantised into the canvas's right-hand
    columns and, for --raw, its float32 bytes appended to an .npy file."""
    w = pixels.shape[1]
    for y0, y1, band in enhance_rows(fast, pixels, tile, progress):
        canvas[y0:y1, -w:, :3] = to_pixels(band, out_depth)
        if raw_file is not None:
            raw_file.write(np.ascontiguousarray(band).data)


def _npy_stream(shape: tuple[int, ...], fill):
    """A writer for `atomic_write`: a float32 .npy header for `shape`, then `fill(file)` appends
    the C-order data."""

    def write(file):
        descr = np.lib.format.dtype_to_descr(np.dtype(np.float32))
        header = {"descr": descr, "fortran_order": False, "shape": shape}
        np.lib.format.write_array_header_1_0(file, header)
        fill(file)

    return write


def load_generator(model: str, weights_dir: str | None = None) -> keras.Model:
    """A run folder of ours (its best checkpoint, else the latest), a checkpoint prefix of ours
    (`<run>/checkpoints/ckpt-N`), an original model name (iphone_orig, blackberry_orig,
    sony_orig), a TF1 checkpoint prefix of that format or an exported .tflite file."""
    from dped import runs
    from dped.pretrained import original_generator

    path = Path(model)
    if path.suffix == ".tflite":
        from dped.export import TFLiteGenerator

        if not path.is_file():
            raise FileNotFoundError(
                f"{path}: no such file: check the path (dped export writes one)"
            )
        return TFLiteGenerator(path)
    if (path / "config.yaml").is_file():
        return runs.restore_generator(path)
    run = runs.run_of_checkpoint(path)
    if run is not None:
        return runs.restore_generator(run, str(path))
    return original_generator(model, weights_dir)


IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".tif", ".tiff", ".webp", ".bmp")


def list_inputs(paths: list[str]) -> tuple[list[Path], list[Path]]:
    """(files to enhance, files skipped). Named files are always tried; from a folder, files
    with an image suffix (sidecars such as .xmp or .txt are skipped, and listed)."""
    files, skipped = [], []
    for p in map(Path, paths):
        if not p.is_dir():
            files.append(p)  # a missing one becomes its own error line when it is read
            continue
        for f in sorted(f for f in p.iterdir() if f.is_file() and not f.name.startswith(".")):
            (files if f.suffix.lower() in IMAGE_SUFFIXES else skipped).append(f)
    return files, skipped


def output_stems(files: list[Path]) -> list[str]:
    """Output names: the input's stem, plus its suffix where two inputs share a stem
    (photo.jpg and photo.png must not overwrite each other's result)."""
    counts = {}
    for f in files:
        counts[f.stem] = counts.get(f.stem, 0) + 1
    return [f.stem if counts[f.stem] == 1 else f"{f.stem}_{f.suffix[1:]}" for f in files]


def enhance_files(
    paths,
    generator,
    out_dir: Path,
    fmt: str = "png",
    tile: int = DEFAULT_TILE,
    raw: bool = False,
    before_after: bool = False,
    precision: str = "float32",
    overwrite: bool = False,
) -> int:
    """Enhance every file; a bad file is a one-line error and the others still run. An
    existing output is replaced only with `overwrite`. Returns the number of failures."""
    import sys

    from tqdm import tqdm

    from dped.runs import atomic_write

    files, skipped = list_inputs(paths)
    if skipped:
        names = ", ".join(f.name for f in skipped[:5]) + (" ..." if len(skipped) > 5 else "")
        print(f"dped enhance: skipped {len(skipped)} non-image file(s): {names}", file=sys.stderr)
    if not files:
        raise ValueError(
            f"no images to enhance in {', '.join(map(str, paths))} (looked for "
            f"{' '.join(IMAGE_SUFFIXES)}): give image files or a folder that holds some"
        )
    if out_dir.exists() and not out_dir.is_dir():
        raise ValueError(f"--out {out_dir} is a file: --out names a folder for the outputs")
    out_dir.mkdir(parents=True, exist_ok=True)
    fast = fast_generator(generator, precision)
    failures = 0
    images = tqdm(list(zip(files, output_stems(files))), desc="images", unit="image", disable=None)
    for path, stem in images:
        target = out_dir / f"{stem}.{fmt}"
        try:
            if target.resolve() == path.resolve():
                raise ValueError("the output would overwrite the input: choose another --out")
            outputs = [target, out_dir / f"{stem}.npy"] if raw else [target]
            existing = [o for o in outputs if o.exists()]
            if existing and not overwrite:
                raise ValueError(
                    f"{existing[0]} already exists: pass --overwrite to replace it, or another --out"
                )
            pixels, alpha, depth = read_pixels(path)
            canvas = _output_canvas(pixels, alpha, depth, fmt, before_after)
            out_depth = 16 if canvas.dtype == np.uint16 else 8
            total = passes(fast, pixels.shape, tile)
            with tqdm(total=total, desc=path.name, unit="tile", leave=False, disable=None) as bar:
                run = functools.partial(
                    _enhance_into, fast, pixels, tile, canvas, out_depth, bar.update
                )
                if raw:
                    shape = pixels.shape[:2] + (3,)
                    atomic_write(out_dir / f"{stem}.npy", _npy_stream(shape, run))
                else:
                    run()
            del pixels, alpha  # the photo's memory, before the encoder needs its own
            write_pixels(target, canvas)
        except Exception as err:  # one bad file must not stop the others
            failures += 1
            message = str(err).splitlines()[0] if str(err) else type(err).__name__
            print(f"dped enhance: {path}: {message}", file=sys.stderr)
    return failures
