"""`dped enhance`: a list of photos through a model into an output folder.

Reads each photo at full depth, runs it through the caller's inference graphs band by band
(`tiling.enhance_rows`) and hands every band to the output sinks: the encoded image (always) and,
with --raw, the float32 array. A bad file is one line on stderr and the others go on.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

from dped.inference.images import MAX_PIXELS, read_pixels, to_pixels, write_pixels
from dped.inference.tiling import DEFAULT_TILE, enhance_rows, passes


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


class ImageSink:
    """The encoded output: bands quantised into a canvas (the input beside it for --before-after,
    alpha put back on PNG), written atomically at the end."""

    def __init__(self, target: Path, pixels, alpha, depth: int, before_after: bool):
        self.target = target
        fmt = "jpg" if target.suffix == ".jpg" else "png"
        self.canvas = _output_canvas(pixels, alpha, depth, fmt, before_after)
        self.depth = 16 if self.canvas.dtype == np.uint16 else 8
        self.width = pixels.shape[1]

    def write(self, y0: int, y1: int, band: np.ndarray) -> None:
        self.canvas[y0:y1, -self.width :, :3] = to_pixels(band, self.depth)

    def commit(self) -> None:
        write_pixels(self.target, self.canvas)

    def discard(self) -> None:
        self.canvas = None


class RawSink:
    """--raw: the unclipped float32 output as a .npy file, streamed band by band into a hidden
    temporary sibling and renamed into place on commit (removed on discard)."""

    def __init__(self, target: Path, shape: tuple[int, int]):
        self.target, self.tmp = target, target.with_name(f".{target.name}.tmp")
        self.file = open(self.tmp, "wb")
        header = {"descr": "<f4", "fortran_order": False, "shape": (*shape, 3)}
        np.lib.format.write_array_header_1_0(self.file, header)

    def write(self, y0: int, y1: int, band: np.ndarray) -> None:
        self.file.write(np.ascontiguousarray(band, np.float32).data)

    def commit(self) -> None:
        self.file.close()
        self.tmp.replace(self.target)

    def discard(self) -> None:
        self.file.close()
        self.tmp.unlink(missing_ok=True)


def load_generator(model: str, weights_dir: str | None = None):
    """A run folder of ours (its best checkpoint, else the latest), a checkpoint prefix of ours
    (`<run>/checkpoints/ckpt-N`), an original model name (iphone_orig, blackberry_orig,
    sony_orig), a TF1 checkpoint prefix of that format or an exported .tflite file."""
    from dped import runs
    from dped.pretrained import original_generator

    path = Path(model)
    if path.suffix == ".tflite":
        from dped.inference.tflite import TFLiteGenerator

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


# What `dped enhance` reads in a folder (the training data: data.DATASET_SUFFIXES).
PHOTO_SUFFIXES = (".jpg", ".jpeg", ".png", ".tif", ".tiff", ".webp", ".bmp")


def list_inputs(paths: list[str]) -> tuple[list[Path], list[Path]]:
    """(files to enhance, files skipped). Named files are always tried; from a folder, files
    with an image suffix (sidecars such as .xmp or .txt are skipped, and listed)."""
    files, skipped = [], []
    for p in map(Path, paths):
        if not p.is_dir():
            files.append(p)  # a missing one becomes its own error line when it is read
            continue
        for f in sorted(f for f in p.iterdir() if f.is_file() and not f.name.startswith(".")):
            (files if f.suffix.lower() in PHOTO_SUFFIXES else skipped).append(f)
    # A photo named twice (or also found in a folder given) is enhanced once.
    unique = {f.resolve(): f for f in reversed(files)}
    return [f for f in files if unique[f.resolve()] is f], skipped


def output_stems(files: list[Path]) -> list[str]:
    """Output names: the input's stem, plus its suffix where two inputs share a stem
    (photo.jpg and photo.png must not overwrite each other's result)."""
    counts = {}
    for f in files:
        counts[f.stem] = counts.get(f.stem, 0) + 1
    return [f.stem if counts[f.stem] == 1 else f"{f.stem}_{f.suffix[1:]}" for f in files]


def enhance_files(
    paths,
    graphs,
    out_dir: Path,
    fmt: str = "png",
    tile: int = DEFAULT_TILE,
    raw: bool = False,
    before_after: bool = False,
    overwrite: bool = False,
    scratch: Path | None = None,
    max_pixels: int = MAX_PIXELS,
) -> int:
    """Enhance every file with `graphs` (made once by the caller: `graphs.inference_graphs`);
        a bad file is a one-line error and the others still run. An existing output is replaced
        only with `overwrite`. `scratch`: the folder for streamed runs' scratch files (default: a
        temporary folder inside `out_dir`). A photo above `max_pixels` (read from its header) is
    refused before it is decoded. Returns the number of failures."""
    from tqdm import tqdm

    files, skipped = list_inputs(paths)
    if skipped:
        names = ", ".join(f.name for f in skipped[:5]) + (" ..." if len(skipped) > 5 else "")
        print(f"dped enhance: skipped {len(skipped)} non-image file(s): {names}", file=sys.stderr)
    if not files:
        raise ValueError(
            f"no images to enhance in {', '.join(map(str, paths))} (looked for "
            f"{' '.join(PHOTO_SUFFIXES)}): give image files or a folder that holds some"
        )
    if out_dir.exists() and not out_dir.is_dir():
        raise ValueError(f"--out {out_dir} is a file: --out names a folder for the outputs")
    out_dir.mkdir(parents=True, exist_ok=True)
    failures = 0
    images = tqdm(list(zip(files, output_stems(files))), desc="images", unit="image", disable=None)
    for path, stem in images:
        try:
            targets = [out_dir / f"{stem}.{fmt}"] + ([out_dir / f"{stem}.npy"] if raw else [])
            _check_targets(path, targets, overwrite)
            enhance_file(graphs, path, targets, tile, before_after, scratch or out_dir, max_pixels)
        except Exception as err:  # one bad file must not stop the others
            failures += 1
            message = str(err).splitlines()[0] if str(err) else type(err).__name__
            print(f"dped enhance: {path}: {message}", file=sys.stderr)
    return failures


def _check_targets(path: Path, targets: list[Path], overwrite: bool) -> None:
    if targets[0].resolve() == path.resolve():
        raise ValueError("the output would overwrite the input: choose another --out")
    existing = [t for t in targets if t.exists()]
    if existing and not overwrite:
        raise ValueError(
            f"{existing[0]} already exists: pass --overwrite to replace it, or another --out"
        )


def enhance_file(
    graphs, path: Path, targets: list[Path], tile: int, before_after, scratch, max_pixels
):
    """One photo into its sinks: the image `targets[0]` and, when given, the .npy `targets[1]`."""
    from tqdm import tqdm

    pixels, alpha, depth = read_pixels(path, max_pixels)
    sinks = [ImageSink(targets[0], pixels, alpha, depth, before_after)]
    try:
        if len(targets) > 1:
            sinks.append(RawSink(targets[1], pixels.shape[:2]))
        total = passes(graphs, pixels.shape, tile)
        with tqdm(total=total, desc=path.name, unit="band", leave=False, disable=None) as bar:
            for y0, y1, band in enhance_rows(graphs, pixels, tile, bar.update, scratch):
                for sink in sinks:
                    sink.write(y0, y1, band)
        del pixels, alpha  # the photo's memory, before the encoder needs its own
        for sink in reversed(sinks):
            sink.commit()
    except BaseException:
        for sink in sinks:
            sink.discard()
        raise
