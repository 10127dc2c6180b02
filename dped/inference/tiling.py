"""Which way a photo runs, and the tiles: one pass, overlapping tiles, or streamed stages.

- One pass (`graphs.one_pass`) when the photo fits (`runs_whole`).
- Norm-free generators (the seed's) are local: tiles that overlap by the receptive-field radius
  give the one-pass output exactly, at any size, in the memory of one tile.
- Instance-norm generators (the authors') need image-wide statistics: larger photos stream
  stage by stage through a scratch file (`inference.stream`), exact at about one pass of work.
"""

from __future__ import annotations

import tempfile
from typing import Protocol

import numpy as np

from dped.inference.images import as_float
from dped.inference.stream import band_rows, bands, stream_rows


class Generator(Protocol):
    """What tiling and streaming read of a generator: `graphs.FastGenerator` (Keras, traced)
    and `tflite.TFLiteGenerator` (an exported file) both provide it."""

    radius: int  # receptive-field radius in pixels: the context a tile needs on each side
    channels: int  # width of the widest map a one-pass run holds (0: not budgeted here)
    whole_image_only: bool  # instance norms and no stage graphs: every photo in one pass
    instance: list  # stage graphs between instance norms (empty: norm-free, or none traced)
    norms: list  # the instance norms the stages end in
    streams: bool  # stage graphs for every norm: larger photos stream through scratch

    def one_pass(self, x: np.ndarray) -> np.ndarray:
        """The generator's output for a [1, H, W, 3] float32 batch."""
        ...


# Tiles of 448 keep every graph's input within 484x484 (the original's 18 px of context on each
# side). TensorFlow's oneDNN allocator pools what the largest graph needed and keeps it, so the
# largest window sets the peak memory of a whole folder of photos.
DEFAULT_TILE = 448
# A one-pass graph holds about four float32 maps of the generator's width at once (a conv's
# input and output, a norm's output, a block's skip). The default budget for them is five
# tiles' worth: about 1 GB for the authors' 64 filters at the default tile, 1 megapixel.
LIVE_MAPS = 4
WHOLE_TILES = 5


def one_pass_bytes(graphs: Generator, shape: tuple[int, ...]) -> int:
    """Activation bytes a one-pass run of an image this size holds at once."""
    return shape[0] * shape[1] * graphs.channels * 4 * LIVE_MAPS


def runs_whole(
    graphs: Generator, shape: tuple[int, ...], tile: int, budget: int | None = None
) -> bool:
    """The one-pass rule. An instance-norm TFLite model always runs whole (the interpreter has no
    stage graphs). An instance-norm generator runs whole when `one_pass_bytes` fits `budget`
    (default: those of WHOLE_TILES tiles); larger photos stream. A norm-free generator runs whole
    when the photo is no larger than a tile's window: its tiles are exact anyway and keep the
    allocator's pooled buffers as small as one window for every photo of a folder."""
    if graphs.whole_image_only:
        return True
    if graphs.instance:
        if budget is None:
            budget = one_pass_bytes(graphs, (tile, WHOLE_TILES * tile))
        return one_pass_bytes(graphs, shape) <= budget
    return shape[0] * shape[1] <= (tile + 2 * graphs.radius) ** 2


def passes(graphs: Generator, shape: tuple[int, ...], tile: int, budget: int | None = None) -> int:
    """Graph runs `enhance_rows` makes for an image of this shape: the progress bar's total."""
    if runs_whole(graphs, shape, tile, budget):
        return 1
    if graphs.instance:
        return (len(graphs.norms) + 1) * len(bands(shape[0], band_rows(shape, tile)))
    return len(_tiles(shape[0], tile)) * len(_tiles(shape[1], tile))


def _tiles(size: int, tile: int):
    """(start, stop) of the core tiles along one axis."""
    return [(s, min(s + tile, size)) for s in range(0, size, tile)]


def _tile_rows(graphs: Generator, image: np.ndarray, tile: int, progress):
    """Norm-free generators: yield each band of tiles, every tile run with `radius` of context."""
    h, w = image.shape[:2]
    pad = graphs.radius
    for y0, y1 in _tiles(h, tile):
        band = np.empty((y1 - y0, w, 3), np.float32)
        wy0 = max(0, y0 - pad)
        for x0, x1 in _tiles(w, tile):
            wx0 = max(0, x0 - pad)
            window = as_float(image[None, wy0 : min(h, y1 + pad), wx0 : min(w, x1 + pad)])
            out = np.asarray(graphs.one_pass(window))[0]
            band[:, x0:x1] = out[y0 - wy0 : y1 - wy0, x0 - wx0 : x1 - wx0]
            progress()
        yield y0, y1, band


def enhance_rows(
    graphs: Generator,
    image: np.ndarray,
    tile: int = DEFAULT_TILE,
    progress=None,
    scratch=None,
    budget: int | None = None,
):
    """Yield (y0, y1, float32 rows y0:y1 of the output) band by band, so that a caller can
    quantise or stream the output without holding a float copy of a whole photo. `image` is
    float32 in 0..1 or uint8 / uint16 pixels, converted a window at a time; `scratch` is the
    folder of a streamed run's scratch file (default: the system's temporary folder); `budget`
    the one-pass rule's bytes (`runs_whole`; 0 streams every instance-norm photo)."""
    progress = progress or (lambda: None)
    if runs_whole(graphs, image.shape, tile, budget):
        out = np.asarray(graphs.one_pass(as_float(image)[None]))[0]
        progress()
        yield 0, image.shape[0], out
    elif not graphs.instance:
        yield from _tile_rows(graphs, image, tile, progress)
    elif graphs.streams:
        rows = band_rows(image.shape, tile)
        yield from stream_rows(graphs, image, rows, scratch or tempfile.gettempdir(), progress)
    else:
        raise ValueError("a generator with instance norms on some convolutions only cannot stream")


def enhance_image(graphs: Generator, image: np.ndarray, tile: int = DEFAULT_TILE, **options):
    """The generator's raw float32 output for one HxWx3 image, from `graphs` made and held by
    the caller;
    `options` as `enhance_rows`'s."""
    out = np.empty(image.shape[:2] + (3,), np.float32)
    for y0, y1, band in enhance_rows(graphs, image, tile, **options):
        out[y0:y1] = band
    return out
