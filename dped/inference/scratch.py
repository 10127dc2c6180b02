"""The streamed mode's scratch file: slots of full-width rows on disk, written a band at a time and
read back any rows at a time (`inference.stream` runs the stages over it).

It is read and written with positioned I/O (os.preadv / os.pwrite), not a memory map, whose
touched pages would count as the process's resident memory, and with O_DIRECT where the file
system allows it: the bytes go between our buffers (or the graphs' own output) and the disk by DMA.
Through the page cache, the kernel's copies and its page allocation for every fresh slot took
seconds of CPU per photo from the cores the convolutions need. It lives in a private temporary
folder and is unlinked as soon as it is open, so it disappears however the process ends; the
folder is removed on success, on error and on Ctrl-C.
"""

from __future__ import annotations

import contextlib
import errno
import functools
import os
import shutil
import tempfile
import threading
from pathlib import Path

import numpy as np

# O_DIRECT moves whole pages: offsets, lengths and buffer addresses are multiples of this (itself
# a multiple of every disk's logical block).
PAGE = 4096
# Writes go out in chunks this size: large enough for the disk's full rate, small enough that the
# staging buffers add little to the peak memory.
CHUNK = 8 << 20
# Norm inputs alternate between two slots, block inputs between two more (`stream._Stage`): each is
# written while the previous one is still being read.
SLOTS = 4
# Storage dtypes of the same size as the graphs' dtypes that numpy and DLPack handle (bfloat16 is
# stored as its bits).
STORAGE = {"float32": np.dtype(np.float32), "bfloat16": np.dtype(np.uint16)}


class ScratchError(OSError):
    """Not enough free space (or no writable folder) for the scratch file."""


class Scratch:
    """Slots of H x W x C rows in one unlinked file: written a band at a time in order of rows
    (`writer`), read back any rows at a time (`read`)."""

    def __init__(
        self,
        folder: str | os.PathLike,
        height: int,
        width: int,
        channels: int,
        dtype: str = "float32",
    ):
        folder = Path(folder)
        self.dtype = STORAGE[dtype]
        self.width, self.channels = width, channels
        self.row = width * channels * self.dtype.itemsize
        # A slot's row 0 may start past its first page boundary (`SlotWriter`): a page of room.
        self.slot = _round_up(height * self.row) + PAGE
        self.starts = [slot * self.slot for slot in range(SLOTS)]  # where each slot's row 0 is
        need = SLOTS * self.slot
        # Folders this creates are removed with the scratch file; a folder that was there stays.
        self.created = _missing_parents(folder)
        try:
            folder.mkdir(parents=True, exist_ok=True)
            free = shutil.disk_usage(folder).free
        except OSError as err:
            raise ScratchError(f"scratch folder {folder}: {err.strerror or err}") from None
        try:
            if free < need + 2**28:  # and a margin for the outputs
                raise ScratchError(
                    f"a {height}x{width} photo needs {need / 1e9:.1f} GB of scratch space in "
                    f"{folder}, {free / 1e9:.1f} GB are free: pass --scratch DIR on a disk "
                    "with more room"
                )
            self.dir = Path(tempfile.mkdtemp(prefix=".dped-scratch-", dir=folder))
            try:
                self.fd, self.direct = _open_unlinked(self.dir / "activations")
            except OSError:
                shutil.rmtree(self.dir, ignore_errors=True)
                raise
        except BaseException:
            self._remove_created()
            raise

    def writer(self, slot: int, rows: int) -> SlotWriter:
        """Appends bands of at most `rows` rows to `slot` from its first row on."""
        return SlotWriter(self, slot, rows * self.row)

    def buffer(self, rows: int) -> np.ndarray:
        """A reusable page-aligned buffer for `read`s of up to `rows` rows, its pages already
        mapped: an O_DIRECT read into pages never touched maps them inside the read, one by one
        (the first stage to use a pair of fresh buffers waited ~1 s for its reads, at 1536x2048
        in float32); touching them here takes ~10 ms."""
        buffer = _aligned(rows * self.row + 2 * PAGE)
        buffer.fill(0)
        return buffer

    def read(self, slot: int, y0: int, y1: int, buffer: np.ndarray):
        """Rows y0:y1 of a slot, as a (1, rows, W, C) tensor sharing `buffer` (DLPack: no copy;
        the caller must not read into that buffer again while the tensor is in use)."""
        import tensorflow as tf

        start = self.starts[slot] + y0 * self.row
        first = start - start % PAGE  # whole pages around the rows
        size = _round_up(start + (y1 - y0) * self.row) - first
        _read_all(self.fd, buffer[:size], first)
        skip = start - first  # 64-byte aligned where rows are (16+ channels): TF shares it
        rows = buffer[skip : skip + (y1 - y0) * self.row].view(self.dtype)
        rows = rows.reshape(1, y1 - y0, self.width, self.channels)
        return tf.experimental.dlpack.from_dlpack(rows.__dlpack__())

    def release(self, slot: int, y0: int, y1: int) -> None:
        """Hands rows y0:y1 of a slot (the whole pages inside them) back to the file system
        while the graphs still run: freeing a few GB waits ~0.1 s a GB on a disk that discards
        freed blocks, which `close` then does not wait for. A no-op where holes cannot be
        punched."""
        start = _round_up(self.starts[slot] + y0 * self.row)
        stop = (self.starts[slot] + y1 * self.row) // PAGE * PAGE
        if stop > start:
            _punch_hole(self.fd, start, stop - start)

    def close(self) -> None:
        os.close(self.fd)
        shutil.rmtree(self.dir, ignore_errors=True)
        self._remove_created()

    def _remove_created(self) -> None:
        for folder in self.created:  # deepest first; only if still empty
            with contextlib.suppress(OSError):
                folder.rmdir()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def _missing_parents(folder: Path) -> list[Path]:
    """`folder` and those of its parents that do not exist yet, deepest first."""
    missing = []
    for f in [folder, *folder.parents]:
        if f.exists():
            break
        missing.append(f)
    return missing


class SlotWriter:
    """Writes consecutive bands of rows to a slot in whole pages. Where a band lies in memory at
    the same offset within a page as its place in the file, its whole pages go to the disk
    straight from the graph's output; the bytes around them (a band's last partial page waits
    for the next band) and any band that does not line up go through a staging buffer. The
    slot's row 0 is placed at the first band's offset within its page (TensorFlow puts large
    tensors at one such offset), so that every band of a width whose rows fill whole pages
    lines up: the staging copy took its CPU time from the convolutions."""

    def __init__(self, scratch: Scratch, slot: int, band_bytes: int):
        self.scratch, self.slot = scratch, slot
        self.fd, self.start = scratch.fd, None  # the file offset of row 0, set by the first band
        self.offset = slot * scratch.slot  # pages before this one are on disk
        self.staged = _aligned(PAGE + min(CHUNK, _round_up(band_bytes)))
        self.kept = 0  # bytes staged for the next write

    def append(self, rows: np.ndarray) -> None:
        data = np.ascontiguousarray(rows).reshape(-1).view(np.uint8)
        if self.start is None:
            # Reads hand TensorFlow rows at this offset too: where it is not a multiple of 64
            # bytes TensorFlow would copy them, so such a slot starts on the page.
            shift = data.ctypes.data % PAGE
            self.kept = shift if shift % 64 == 0 else 0  # bytes of nothing before row 0
            self.start = self.scratch.starts[self.slot] = self.offset + self.kept
        at = 0
        if (data.ctypes.data - self.kept) % PAGE == 0:  # lined up: the page being filled first
            at = min(len(data), -self.kept % PAGE)
            self._stage(data[:at])
            whole = (len(data) - at) // PAGE * PAGE
            if whole:
                _write_all(self.fd, data[at : at + whole], self.offset)
                self.offset += whole
                at += whole
        self._stage(data[at:])

    def _stage(self, data: np.ndarray) -> None:
        """Appends `data` through the staging buffer: its whole pages written, the rest kept."""
        room = len(self.staged) - PAGE
        for at in range(0, len(data), room):
            part = data[at : at + room]
            end = self.kept + len(part)
            self.staged[self.kept : end] = part
            whole = end - end % PAGE
            _write_all(self.fd, self.staged[:whole], self.offset)
            self.offset += whole
            self.kept = end - whole
            self.staged[: self.kept] = self.staged[whole:end]

    def close(self) -> None:
        if self.kept:
            _write_all(self.fd, self.staged[:PAGE], self.offset)
            self.offset += PAGE
            self.kept = 0

    def holds(self, size: int) -> bool:
        """Whether the slot's first `size` bytes are on disk (not waiting in the staging
        buffer for the next band)."""
        return self.start is not None and self.offset - self.start >= size


def _open_unlinked(path: Path) -> tuple[int, bool]:
    """A new file at `path`, already unlinked (its data goes when it is closed, however the
    process ends), and whether it is open with O_DIRECT."""
    flags = os.O_RDWR | os.O_CREAT | os.O_EXCL
    direct = getattr(os, "O_DIRECT", 0)
    if direct:
        try:
            fd = os.open(path, flags | direct, 0o600)
            path.unlink()
            return fd, True
        except OSError as err:  # a file system without direct I/O (tmpfs on older kernels)
            if err.errno != errno.EINVAL:
                raise
            path.unlink(missing_ok=True)
    fd = os.open(path, flags, 0o600)
    path.unlink()
    return fd, False


def _punch_hole(fd: int, offset: int, length: int) -> None:
    """fallocate(PUNCH_HOLE | KEEP_SIZE); nothing where the system or file system has none."""
    fallocate = _fallocate()
    if fallocate is not None:
        fallocate(fd, _PUNCH_HOLE | _KEEP_SIZE, offset, length)


@functools.cache
def _fallocate():
    """libc's fallocate (Linux), looked up once; None elsewhere."""
    import ctypes

    try:
        fallocate = ctypes.CDLL(None, use_errno=True).fallocate
    except AttributeError:
        return None
    fallocate.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_int64, ctypes.c_int64]
    return fallocate


_KEEP_SIZE, _PUNCH_HOLE = 0x01, 0x02  # linux/falloc.h


# Bytes this process has written to and read from scratch files: the stages' I/O threads add to
# them, `bytes_moved` reads them (the benchmark sets a streamed run's share beside its time).
_moved = {"written": 0, "read": 0}
_moved_lock = threading.Lock()


def bytes_moved() -> dict[str, int]:
    """{'written': .., 'read': ..}: the bytes this process has moved through scratch files."""
    with _moved_lock:
        return dict(_moved)


def _write_all(fd: int, data: np.ndarray, offset: int) -> None:
    view, done = memoryview(data), 0
    while done < len(view):
        done += os.pwrite(fd, view[done:], offset + done)
    with _moved_lock:
        _moved["written"] += done


def _read_all(fd: int, buffer: np.ndarray, offset: int) -> None:
    view, done = memoryview(buffer), 0
    while done < len(view):
        got = os.preadv(fd, [view[done:]], offset + done)
        if got == 0:
            raise OSError("the scratch file ended early")
        done += got
    with _moved_lock:
        _moved["read"] += done


def _round_up(n: int, k: int = PAGE) -> int:
    return -(-n // k) * k


def _aligned(size: int) -> np.ndarray:
    """`size` bytes starting on a page boundary, for O_DIRECT and for TensorFlow, which copies
    an argument not aligned to 64 bytes."""
    raw = np.empty(size + PAGE, np.uint8)
    start = -raw.ctypes.data % PAGE
    return raw[start : start + size]
