"""Reading and writing photos at full depth: 8- and 16-bit RGB(A), gray, palette, EXIF orientation.

Pillow and imageio's Pillow plugin read 16-bit RGB PNGs and TIFFs as 8-bit: those go through
imagecodecs (PNG) and tifffile (TIFF), which keep every bit. Every write is atomic.
"""

from __future__ import annotations

import contextlib
from pathlib import Path

import numpy as np


def as_float(pixels: np.ndarray) -> np.ndarray:
    """uint8 / uint16 pixels as float32 in 0..1 (float32 input is returned as it is)."""
    if pixels.dtype == np.float32:
        return pixels
    return pixels.astype(np.float32) / np.float32(np.iinfo(pixels.dtype).max)


# Pillow and imageio's Pillow plugin read 16-bit RGB PNGs and TIFFs as 8-bit: those go through
# imagecodecs (PNG) and tifffile (TIFF), which keep every bit. Orientation comes from Pillow's
# metadata reader either way (it parses headers without decoding pixels).
_ORIENT = {  # EXIF orientation -> numpy operation giving the upright image (as Pillow's)
    2: lambda a: a[:, ::-1],
    3: lambda a: a[::-1, ::-1],
    4: lambda a: a[::-1],
    5: lambda a: a.swapaxes(0, 1),
    6: lambda a: a.swapaxes(0, 1)[:, ::-1],
    7: lambda a: a.swapaxes(0, 1)[::-1, ::-1],
    8: lambda a: a.swapaxes(0, 1)[::-1],
}


def _orientation(path: Path) -> int:
    from PIL import Image

    try:
        with Image.open(path) as im:
            return int(im.getexif().get(0x0112, 1))
    except Exception:  # a format Pillow cannot open (e.g. a 16-bit RGB TIFF): no EXIF to apply
        return 1


def _decode(path: Path) -> np.ndarray:
    """The stored pixels: HxW, HxWx2 (gray+alpha), HxWx3 or HxWx4, uint8 or uint16. The
    decoder is chosen by the file's signature, not its name."""
    with open(path, "rb") as f:
        magic = f.read(8)
    if not magic:
        raise ValueError("empty file")
    if magic.startswith(b"\x89PNG"):
        import imagecodecs

        return imagecodecs.png_decode(path.read_bytes())
    if magic[:4] in TIFF_MAGIC:
        import tifffile

        with _tifffile_quiet(), tifffile.TiffFile(path) as tif:
            page = tif.pages[0]  # the photo; later pages are thumbnails or other photos
            array = page.asarray()
            return np.moveaxis(array, 0, -1) if page.axes.startswith("S") else array  # planar
    from PIL import Image

    with Image.open(path) as im:
        frames = getattr(im, "n_frames", 1)
        if frames > 1:
            raise ValueError(
                f"an animation of {frames} frames: dped enhances still images (save the frame "
                "you want as PNG)"
            )
        if im.mode == "P":  # palette indices are not colours
            im = im.convert("RGBA" if "transparency" in im.info else "RGB")
        elif im.mode not in ("L", "LA", "RGB", "RGBA", "I;16"):
            im = im.convert("RGB")
        return np.asarray(im)


# The largest photo read by default: a 16-bit RGBA decode of 50 MP takes 400 MB, so even a
# forged header (a few bytes claiming a huge size) keeps dped under about 1 GB; every camera up
# to 45 MP fits. --max-pixels raises it (a streamed enhance needs ~1 GB of disk per megapixel).
MAX_PIXELS = 50_000_000


def header_size(path: Path) -> tuple[int, int] | None:
    """(height, width) from the file's header, decoding no pixel: PNG's IHDR, TIFF's first
    page, Pillow's header parsers for the rest; None when the header cannot be read (the
    decoder then says why)."""
    with open(path, "rb") as f:
        head = f.read(24)
    try:
        if head.startswith(b"\x89PNG") and head[12:16] == b"IHDR":
            return int.from_bytes(head[20:24], "big"), int.from_bytes(head[16:20], "big")
        if head[:4] in TIFF_MAGIC:
            return _tiff_size(path)
        from PIL import Image

        with _pillow_limit(None), Image.open(path) as im:  # the limit is ours to apply
            return im.size[1], im.size[0]
    except UnsupportedImage:
        raise
    except Exception:  # a damaged header: the decoder reports it in its own words
        return None


class UnsupportedImage(ValueError):
    """A header that says what dped does not read, found before any pixel is decoded."""


TIFF_MAGIC = (b"II*\x00", b"MM\x00*")


@contextlib.contextmanager
def _tifffile_quiet():
    """tifffile logs what it finds wrong in a damaged file (a line per tag) and reads on: the
    decoder's error, if any, is the one line a user sees."""
    import logging

    log = logging.getLogger("tifffile")
    saved = log.level
    log.setLevel(logging.CRITICAL)
    try:
        yield
    finally:
        log.setLevel(saved)


def _tiff_size(path: Path) -> tuple[int, int]:
    """(height, width) of a TIFF's first page from its tags. Not the page's array shape: a
    planar page is [samples, height, width]; and a page of more than 4 samples, or of samples
    other than 8- or 16-bit integers, is refused here, before its decode could allocate it."""
    import tifffile

    with _tifffile_quiet(), tifffile.TiffFile(path) as tif:
        page = tif.pages[0]
        samples, dtype = page.samplesperpixel, page.dtype
        if samples > 4 or dtype not in (np.uint8, np.uint16):
            raise UnsupportedImage(
                f"a TIFF of {samples} samples of {dtype or 'an unknown type'} per pixel: dped "
                "reads 8- and 16-bit gray, RGB and RGBA"
            )
        return page.imagelength, page.imagewidth


@contextlib.contextmanager
def _pillow_limit(pixels: int | None):
    """Pillow's decompression-bomb limit set to ours for a while (None: off)."""
    from PIL import Image

    saved, Image.MAX_IMAGE_PIXELS = Image.MAX_IMAGE_PIXELS, pixels
    try:
        yield
    finally:
        Image.MAX_IMAGE_PIXELS = saved


def check_size(path: Path, max_pixels: int) -> None:
    size = header_size(path)
    if size and size[0] * size[1] > max_pixels:
        raise ValueError(
            f"{size[1]}x{size[0]} pixels ({size[0] * size[1] / 1e6:.0f} MP, from its header) is "
            f"above the limit of {max_pixels / 1e6:.0f} MP: pass --max-pixels "
            f"{size[0] * size[1]} to read it anyway"
        )


def read_pixels(
    path: Path, max_pixels: int = MAX_PIXELS
) -> tuple[np.ndarray, np.ndarray | None, int]:
    """(HxWx3 uint8 or uint16 pixels, alpha of the same type or None, bit depth 8 or 16),
    upright by the EXIF orientation, gray repeated to RGB. A photo whose header says it has
    more than `max_pixels` is refused before anything is decoded."""
    path = Path(path)
    if not path.exists():
        raise ValueError("no such file: check the path")
    if not path.is_file():
        raise ValueError("not a file")
    check_size(path, max_pixels)
    try:
        with _pillow_limit(max_pixels):  # a header Pillow reads but header_size could not
            array = _decode(path)
    except ValueError:
        raise
    except Exception as err:  # each decoder has its own exception types
        reason = str(err).splitlines()[0] if str(err) else ""
        raise ValueError(f"cannot decode as an image ({type(err).__name__}: {reason})") from None
    if array.ndim not in (2, 3) or (array.ndim == 3 and not 1 <= array.shape[2] <= 4):
        raise ValueError(f"not a still image: pixel array of shape {array.shape}")
    if array.dtype not in (np.uint8, np.uint16):
        raise ValueError(f"unsupported sample type {array.dtype} (8- or 16-bit images only)")
    depth = 16 if array.dtype == np.uint16 else 8
    array = _ORIENT.get(_orientation(path), lambda a: a)(array)
    if array.ndim == 2:
        array = array[..., None]
    alpha = array[..., -1] if array.shape[2] in (2, 4) else None
    colour = array[..., : 3 if array.shape[2] >= 3 else 1]
    rgb = np.empty(array.shape[:2] + (3,), array.dtype)
    rgb[...] = colour  # gray broadcasts to RGB; also a contiguous copy of a rotated view
    return rgb, alpha, depth


def load_image(path: Path) -> tuple[np.ndarray, np.ndarray | None, int]:
    """(RGB float32 in 0..1, alpha float32 in 0..1 or None, bit depth 8 or 16)."""
    rgb, alpha, depth = read_pixels(path)
    return as_float(rgb), None if alpha is None else as_float(alpha), depth


def to_pixels(image: np.ndarray, depth: int, scale: float = 1.0) -> np.ndarray:
    """`image * scale` clipped to 0..1 and rounded to `depth`-bit integers, a block of rows at a
    time: no full-size float temporaries (a 12 MP float32 image is 144 MB each)."""
    top = np.float32(2**depth - 1)
    out = np.empty(image.shape, np.uint16 if depth == 16 else np.uint8)
    for y in range(0, image.shape[0], 256):
        block = np.clip(image[y : y + 256] * np.float32(scale), 0.0, 1.0) * top
        out[y : y + 256] = np.rint(block)
    return out


def write_pixels(path: Path, pixels: np.ndarray) -> None:
    """Atomic write of uint8 / uint16 pixels as PNG (any depth, alpha kept) or JPEG (8-bit)."""
    from dped.runs import atomic_write

    if path.suffix.lower() in (".jpg", ".jpeg"):
        import imageio.v3 as iio

        atomic_write(path, lambda f: iio.imwrite(f, pixels, extension=".jpg", quality=95))
    else:
        atomic_write(path, png_bytes(pixels))


def png_bytes(pixels: np.ndarray) -> bytes:
    """PNG by libspng at zlib level 5: files the size of libpng's default (level 6) in about 60%
    of its time (measured on enhanced photos: 3 MP 0.42 s vs 0.72 s, 12 MP 1.5 s vs 2.5 s, sizes
    within 0.3%); libpng where an imagecodecs build has no libspng."""
    import imagecodecs

    if imagecodecs.SPNG.available:
        return imagecodecs.spng_encode(pixels, level=5)
    return imagecodecs.png_encode(pixels)


def save_image(path: Path, rgb: np.ndarray, alpha: np.ndarray | None = None, depth: int = 8):
    """Write a float image in 0..1 (clipped): PNG at `depth` bits with alpha, or 8-bit JPEG."""
    path = Path(path)
    depth = 8 if path.suffix.lower() in (".jpg", ".jpeg") else depth
    pixels = to_pixels(rgb, depth)
    if alpha is not None and path.suffix.lower() == ".png":
        pixels = np.concatenate([pixels, to_pixels(alpha, depth)[..., None]], -1)
    write_pixels(path, pixels)
