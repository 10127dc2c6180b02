"""Exact instance-norm inference at about one pass of compute, in bounded memory.

An instance norm needs its input's statistics over the whole image before anything after it can
run. Instead of recomputing the network up to each norm, the photo goes through the generator
stage by stage (a stage: the layers between two norms, `graphs.FastGenerator.stage`), in bands of
full-width rows. Each stage writes its norm's input (and, where a residual block ends, the block's
output, which the next block adds back) to a scratch file on disk while accumulating that norm's
mean and variance; the next stage reads those rows back with its few rows of context. Storage is
the graphs' dtype: float32, so the result equals a one-pass run to float rounding (the fast mode
stores bfloat16, as its one pass keeps its activations).

The scratch file is read and written with positioned I/O (os.preadv / os.pwrite), not a memory
map, whose touched pages would count as the process's resident memory, and with O_DIRECT where the
file system allows it: the bytes go between our buffers and the disk by DMA. Through the page
cache, the kernel's copies and its page allocation for every fresh slot took seconds of CPU per
photo from the cores the convolutions need. It lives in a private temporary folder and is
unlinked as soon as it is open, so it disappears however the process ends; the folder is removed
on success, on error and on Ctrl-C.
"""

from __future__ import annotations

import errno
import functools
import os
import shutil
import tempfile
from pathlib import Path

import numpy as np

from dped.inference.images import as_float

# O_DIRECT moves whole pages: offsets, lengths and buffer addresses are multiples of this (itself
# a multiple of every disk's logical block).
PAGE = 4096
# Writes go out in chunks this size: large enough for the disk's full rate, small enough that the
# staging buffers add little to the peak memory.
CHUNK = 8 << 20
# Norm inputs alternate between two slots, block inputs between two more (`_Stage`): each is
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
        try:
            folder.mkdir(parents=True, exist_ok=True)
            free = shutil.disk_usage(folder).free
        except OSError as err:
            raise ScratchError(f"--scratch {folder}: {err.strerror or err}") from None
        if free < need + 2**28:  # and a margin for the outputs
            raise ScratchError(
                f"--scratch {folder}: a {height}x{width} photo needs {need / 1e9:.1f} GB of "
                f"scratch space there, {free / 1e9:.1f} GB are free: pass --scratch DIR on a "
                "disk with more room"
            )
        self.dir = Path(tempfile.mkdtemp(prefix=".dped-scratch-", dir=folder))
        try:
            self.fd, self.direct = _open_unlinked(self.dir / "activations")
        except OSError:
            shutil.rmtree(self.dir, ignore_errors=True)
            raise

    def writer(self, slot: int, rows: int) -> SlotWriter:
        """Appends bands of at most `rows` rows to `slot` from its first row on."""
        return SlotWriter(self, slot, rows * self.row)

    def buffer(self, rows: int) -> np.ndarray:
        """A reusable page-aligned buffer for `read`s of up to `rows` rows."""
        return _aligned(rows * self.row + 2 * PAGE)

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

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


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


def _write_all(fd: int, data: np.ndarray, offset: int) -> None:
    view, done = memoryview(data), 0
    while done < len(view):
        done += os.pwrite(fd, view[done:], offset + done)


def _read_all(fd: int, buffer: np.ndarray, offset: int) -> None:
    view, done = memoryview(buffer), 0
    while done < len(view):
        got = os.preadv(fd, [view[done:]], offset + done)
        if got == 0:
            raise OSError("the scratch file ended early")
        done += got


def _round_up(n: int, k: int = PAGE) -> int:
    return -(-n // k) * k


def _aligned(size: int) -> np.ndarray:
    """`size` bytes starting on a page boundary, for O_DIRECT and for TensorFlow, which copies
    an argument not aligned to 64 bytes."""
    raw = np.empty(size + PAGE, np.uint8)
    start = -raw.ctypes.data % PAGE
    return raw[start : start + size]


def pooled_moments(parts) -> tuple[np.ndarray, np.ndarray]:
    """Mean and variance of a union of parts from each part's (count, mean, variance), in
    float64: the law of total variance, exact and free of E[x^2] - E[x]^2 cancellation."""
    counts = np.array([n for n, _, _ in parts], np.float64)[:, None]
    means = np.array([m for _, m, _ in parts], np.float64)
    variances = np.array([v for _, _, v in parts], np.float64)
    mean = (counts * means).sum(0) / counts.sum()
    var = (counts * (variances + (means - mean) ** 2)).sum(0) / counts.sum()
    return mean, var


def band_rows(shape: tuple[int, ...], tile: int) -> int:
    """Rows per band: a tile's pixels whatever the photo's width (98 rows at 2048 wide, 50 at
    4000), so that a 12 MP photo streams within 1.5 GB: a band's maps, the graphs' temporaries
    and the read-ahead copies. Larger bands recompute fewer halo rows but cost memory."""
    return max(1, min(shape[0], round(tile * tile / shape[1])))


def bands(height: int, rows: int) -> list[tuple[int, int]]:
    """(top, bottom) of the bands of at most `rows` rows, as even as they divide `height`."""
    rows = -(-height // -(-height // rows))
    return [(y, min(y + rows, height)) for y in range(0, height, rows)]


def stream_rows(graphs, image: np.ndarray, rows: int, scratch_dir, progress=lambda: None):
    """Yield (y0, y1, float32 output rows) of an instance-norm generator over `image` (float32
    0..1, or uint8 / uint16 pixels), stage by stage through a scratch file in `scratch_dir`.
    The I/O runs beside the graphs in four threads: the next band's maps are read one per
    thread, and each slot being written has its own (its bands land in order). A stage's first
    band is read as soon as the rows it needs have landed, while the last bands of the stage
    before are still being written: the disk is kept busy across the stages' boundaries."""
    from concurrent.futures import ThreadPoolExecutor

    height, width = image.shape[:2]
    spans = bands(height, rows)
    with (
        Scratch(scratch_dir, height, width, graphs.channels, graphs.precision) as scratch,
        ThreadPoolExecutor(2, thread_name_prefix="dped-read") as reads,
        ThreadPoolExecutor(1, thread_name_prefix="dped-write-skip") as skips,
        ThreadPoolExecutor(1, thread_name_prefix="dped-write-norm") as norms,
    ):
        window = rows + 2 * max(graphs.stage_halo[1:])  # the largest window read back
        # Two buffers per input (the band being computed, the band being read ahead).
        buffers = [[scratch.buffer(window) for _ in range(2)] for _ in range(2)]
        stats, before, waiting = None, None, []
        for i in range(len(graphs.norms) + 1):
            stage = _Stage(graphs, i, image, scratch, buffers, spans, (reads, skips, norms), before)
            parts = []
            ahead = stage.fetch(0)
            for k, (y0, y1) in enumerate(spans):
                inputs, core = ahead()
                if k + 1 < len(spans):
                    ahead = stage.fetch(k + 1)
                out = stage.graph(*inputs, *([stats] if i else []), core)
                if stage.last:
                    progress()
                    yield y0, y1, np.asarray(out)[0]
                    continue
                *maps, mean, var = out
                waiting.append(stage.write(k, core, maps))
                # One band at most waits for the disk, however slow it is: each holds band-sized
                # maps, and two waiting put a 12 MP photo over 1.5 GB on an Intel Xeon (the
                # writes of a band's two maps go out in parallel).
                if len(waiting) > 1:
                    _wait(waiting[-2])
                parts.append(((y1 - y0) * width, mean.numpy(), var.numpy()))
                progress()
            if not stage.last:
                stage.close()
                stats = np.stack(pooled_moments(parts)).astype(np.float32)
            before = stage
        _wait(stage.freeing)


def _wait(futures) -> None:
    for done in futures:
        done.result()  # raises the I/O thread's error here


class _Stage:
    """One stage's graph and its band I/O. Slots: norm inputs alternate between 0 and 1 (stage
    i writes i % 2, reads the other); block j's input lives in slot 2 + j % 2."""

    def __init__(self, graphs, i: int, image, scratch, buffers, spans, threads, before):
        """`threads`: the I/O threads (two readers; a writer for block inputs, one for norm
        inputs); `before`: the stage whose writes this one reads."""
        self.i, self.image, self.spans = i, image, spans
        self.scratch, self.buffers = scratch, buffers
        self.dtype = graphs.dtype
        self.last = i == len(graphs.norms)
        # Stage 0 and the stages after a block's last norm write the next block's input.
        self.keeps_skip = i == 0 or (i % 2 == 0 and not self.last)
        self.graph = graphs.stage(i, self.keeps_skip)
        self.halo, self.height = graphs.stage_halo[i], image.shape[0]
        rows = max(y1 - y0 for y0, y1 in spans)
        self.window = min(self.height, rows + 2 * self.halo)
        self.writers = [] if self.last else [scratch.writer(i % 2, rows)]
        if self.keeps_skip:
            self.writers.insert(0, scratch.writer(2 + (i // 2) % 2, rows))
        # Norm i-1's input; after a block's last norm, also that block's input (added back).
        self.reads = [] if i == 0 else [(i - 1) % 2]
        if i and i % 2 == 0:
            self.reads.append(2 + ((i - 1) // 2) % 2)
        self.released = 0  # the last stage frees the rows above its window as it goes
        self.landed = []  # (first row, futures) of each band's writes, then the writers' close
        self.readers, *writes = threads
        self.before = before
        self.writing = writes[len(writes) - len(self.writers) :]  # one writer: the norm input's
        # The last stage writes nothing: its writer frees the slots it does not read.
        self.freeing = [writes[-1].submit(self.release_unread)] if self.last else []

    def fetch(self, k: int):
        """Starts reading band k's inputs, each map in its own thread once the rows it needs
        have landed; returns a call that waits for them and gives (the graph's inputs, the
        band's core rows in its window)."""
        y0, y1 = self.spans[k]
        # Every window has the first one's height, the edge bands' too (their extra rows are
        # context, not written): XLA compiles the graphs' fused parts once per shape.
        w0 = min(max(0, y0 - self.halo), self.height - self.window)
        w1 = w0 + self.window
        core = np.array([y0 - w0, y1 - w0], np.int32)
        if self.i == 0:
            rows = self.readers.submit(as_float, self.image[None, w0:w1])
            return lambda: ((rows.result(),), core)
        maps = [
            self.readers.submit(self._read, slot, w0, w1, pair[k % 2])
            for slot, pair in zip(self.reads, self.buffers)
        ]
        if self.last and w0 > self.released:  # no later window reads rows above w0
            for slot in self.reads:
                self.readers.submit(self.scratch.release, slot, self.released, w0)
            self.released = w0
        # Where norm i-1 starts a block there is nothing to add back (the skip is unused).
        return lambda: ((maps[0].result(), maps[-1].result()), core)

    def _landed(self, w1: int) -> None:
        """Waits until the stage before has written rows 0:w1: a read must not overtake a write
        (it would read a hole as zeros), and a failed write fails the read. A band's last
        partial page goes out with the next band's write. (Block inputs are read two stages
        after they are written: all of that stage's writes landed before the stage between
        ended.)"""
        size = w1 * self.scratch.row
        for y0, futures in self.before.landed:
            if y0 >= w1 and all(w.holds(size) for w in self.before.writers):
                return
            _wait(futures)

    def _read(self, slot: int, w0: int, w1: int, buffer):
        import tensorflow as tf

        self._landed(w1)
        rows = self.scratch.read(slot, w0, w1, buffer)
        return rows if rows.dtype == self.dtype else tf.bitcast(rows, self.dtype)

    def release_unread(self) -> None:
        for slot in sorted(set(range(SLOTS)) - set(self.reads)):
            self.scratch.release(slot, 0, self.height)

    def write(self, k: int, core, maps) -> list:
        """Starts writing band k's core rows of ([the block's output,] norm i's input), each to
        its slot in its slot's thread; returns their futures."""
        futures = [
            pool.submit(self._append, writer, core, rows)
            for pool, writer, rows in zip(self.writing, self.writers, maps)
        ]
        self.landed.append((self.spans[k][0], futures))
        return futures

    @staticmethod
    def _append(writer: SlotWriter, core, rows) -> None:
        writer.append(np.asarray(rows)[0, core[0] : core[1]])

    def close(self) -> None:
        """Pads each slot's last page, after its last band (the last band's reads wait)."""
        closing = [pool.submit(w.close) for pool, w in zip(self.writing, self.writers)]
        self.landed.append((self.height - 1, closing))
