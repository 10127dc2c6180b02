"""Exact instance-norm inference at about one pass of compute, in bounded memory.

An instance norm needs its input's statistics over the whole image before anything after it can
run. Instead of recomputing the network up to each norm, the photo goes through the generator
stage by stage (a stage: the layers between two norms, `graphs.FastGenerator.stage`), in bands of
full-width rows. Each stage writes its norm's input (and, where a residual block ends, the block's
output, which the next block adds back) to a scratch file on disk while accumulating that norm's
mean and variance; the next stage reads those rows back with its few rows of context. Storage is
float32, so the result equals a one-pass run to float rounding.

The scratch file is read and written with positioned I/O (os.pread / os.pwrite), not a memory
map, whose touched pages would count as the process's resident memory. It lives in a private
temporary folder and is unlinked as soon as it is open, so it disappears however the process ends;
the folder is removed on success, on error and on Ctrl-C.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

import numpy as np

from dped.inference.images import as_float

FLOAT = np.dtype(np.float32)


class ScratchError(OSError):
    """Not enough free space (or no writable folder) for the scratch file."""


def scratch_bytes(shape: tuple[int, ...], channels: int) -> int:
    """Disk space a photo of `shape` needs: four float32 slots of H x W x channels (norm inputs
    and block outputs, each written while the previous one is read)."""
    return 4 * shape[0] * shape[1] * channels * FLOAT.itemsize


class Scratch:
    """Float32 [H, W, C] slots in one unlinked file, read and written a band of rows at a time."""

    def __init__(self, folder: str | os.PathLike, height: int, width: int, channels: int):
        folder = Path(folder)
        self.row = width * channels * FLOAT.itemsize
        self.slot = height * self.row
        self.width, self.channels = width, channels
        need = 4 * self.slot
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
            path = self.dir / "activations.f32"
            self.fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o600)
            path.unlink()  # the data goes when the file is closed, however the process ends
        except OSError:
            shutil.rmtree(self.dir, ignore_errors=True)
            raise

    def write(self, slot: int, y0: int, rows: np.ndarray) -> None:
        data = memoryview(np.ascontiguousarray(rows, FLOAT)).cast("B")
        offset, done = slot * self.slot + y0 * self.row, 0
        while done < len(data):
            done += os.pwrite(self.fd, data[done:], offset + done)

    def buffer(self, rows: int) -> np.ndarray:
        """A reusable 64-byte aligned buffer for `read`: TensorFlow copies a numpy argument
        unless it is aligned so; read into this, it takes the rows without a copy (DLPack)."""
        return _aligned((1, rows, self.width, self.channels))

    def read(self, slot: int, y0: int, y1: int, buffer: np.ndarray):
        """Rows y0:y1 of a slot into `buffer`, as a (1, rows, W, C) float32 tensor sharing it:
        the caller must not read into that buffer again while the tensor is in use."""
        import tensorflow as tf

        out = buffer[:, : y1 - y0]
        view = memoryview(out).cast("B")
        offset, done = slot * self.slot + y0 * self.row, 0
        while done < len(view):
            got = os.preadv(self.fd, [view[done:]], offset + done)
            if got == 0:
                raise OSError(f"scratch file in {self.dir} ended early")
            done += got
        return tf.experimental.dlpack.from_dlpack(out.__dlpack__())

    def close(self) -> None:
        os.close(self.fd)
        shutil.rmtree(self.dir, ignore_errors=True)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def _aligned(shape: tuple[int, ...]) -> np.ndarray:
    size = int(np.prod(shape)) * FLOAT.itemsize
    raw = np.empty(size + 64, np.uint8)
    start = -raw.ctypes.data % 64
    return raw[start : start + size].view(FLOAT).reshape(shape)


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
    """Rows per band: about three quarters of a tile's pixels whatever the photo's width, so
    that a 12 MP photo streams within 1.5 GB (a band's maps and their read-ahead copies)."""
    return max(1, min(shape[0], round(0.75 * tile * tile / shape[1])))


def bands(height: int, rows: int) -> list[tuple[int, int]]:
    return [(y, min(y + rows, height)) for y in range(0, height, rows)]


def stream_rows(graphs, image: np.ndarray, rows: int, scratch_dir, progress=lambda: None):
    """Yield (y0, y1, float32 output rows) of an instance-norm generator over `image` (float32
    0..1, or uint8 / uint16 pixels), stage by stage through a scratch file in `scratch_dir`.
    Reads of the next band and writes of the last one run in I/O threads beside the graphs."""
    from concurrent.futures import ThreadPoolExecutor

    height, width = image.shape[:2]
    spans = bands(height, rows)
    with (
        Scratch(scratch_dir, height, width, graphs.channels) as scratch,
        ThreadPoolExecutor(2, thread_name_prefix="dped-scratch") as io,
    ):
        window = rows + 2 * max(graphs.stage_halo[1:])  # the largest window read back
        # Two buffers per input (the band being computed, the band being read ahead).
        buffers = [[scratch.buffer(window) for _ in range(2)] for _ in range(2)]
        stats = None
        for i in range(len(graphs.norms) + 1):
            stage = _Stage(graphs, i, image, scratch, buffers, spans)
            parts, writes = [], []
            ahead = io.submit(stage.inputs, 0)
            for k, (y0, y1) in enumerate(spans):
                inputs, core = ahead.result()
                if k + 1 < len(spans):
                    ahead = io.submit(stage.inputs, k + 1)
                out = stage.graph(*inputs, *([stats] if i else []), core)
                if stage.last:
                    progress()
                    yield y0, y1, np.asarray(out)[0]
                    continue
                *skip, h, mean, var = out
                writes.append(io.submit(stage.write, y0, core, h, *skip))
                parts.append(((y1 - y0) * width, mean.numpy(), var.numpy()))
                progress()
            for done in writes:
                done.result()  # the next stage reads what this one wrote
            if not stage.last:
                stats = np.stack(pooled_moments(parts)).astype(np.float32)


class _Stage:
    """One stage's graph and its band I/O. Slots: norm inputs alternate between 0 and 1 (stage
    i writes i % 2, reads the other); block j's input lives in slot 2 + j % 2."""

    def __init__(self, graphs, i: int, image, scratch: Scratch, buffers, spans):
        self.i, self.image, self.spans = i, image, spans
        self.scratch, self.buffers = scratch, buffers
        self.last = i == len(graphs.norms)
        # Stage 0 and the stages after a block's last norm write the next block's input.
        self.keeps_skip = i == 0 or (i % 2 == 0 and not self.last)
        self.graph = graphs.stage(i, self.keeps_skip)
        self.halo, self.height = graphs.stage_halo[i], image.shape[0]

    def inputs(self, k: int):
        """The graph's inputs for band k, and the band's core rows in its window."""
        y0, y1 = self.spans[k]
        w0, w1 = max(0, y0 - self.halo), min(self.height, y1 + self.halo)
        core = np.array([y0 - w0, y1 - w0], np.int32)
        if self.i == 0:
            return (as_float(self.image[None, w0:w1]),), core
        h_buf, skip_buf = (pair[k % 2] for pair in self.buffers)
        h = self.scratch.read((self.i - 1) % 2, w0, w1, h_buf)
        if self.i % 2:  # norm i-1 starts a block: nothing to add back (the skip is unused)
            return (h, h), core
        block = (self.i - 1) // 2  # norm i-1 ends this block: its input is added back
        return (h, self.scratch.read(2 + block % 2, w0, w1, skip_buf)), core

    def write(self, y0: int, core, h, *skip) -> None:
        if skip:
            self.scratch.write(2 + (self.i // 2) % 2, y0, np.asarray(skip[0])[0, core[0] : core[1]])
        self.scratch.write(self.i % 2, y0, np.asarray(h)[0, core[0] : core[1]])
