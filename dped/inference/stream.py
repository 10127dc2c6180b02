"""Exact instance-norm inference at about one pass of compute, in bounded memory.

An instance norm needs its input's statistics over the whole image before anything after it can
run. Instead of recomputing the network up to each norm, the photo goes through the generator
stage by stage (a stage: the layers between two norms, `graphs.FastGenerator.stage`), in bands of
full-width rows. Each stage writes its norm's input (and, where a residual block ends, the block's
output, which the next block adds back) to a scratch file on disk (`inference.scratch`) while
accumulating that norm's mean and variance; the next stage reads those rows back with its few rows
of context. Storage is the graphs' dtype: float32, so the result equals a one-pass run to float
rounding (the fast mode stores bfloat16, as its one pass keeps its activations).
"""

from __future__ import annotations

import numpy as np

from dped.inference.images import as_float
from dped.inference.scratch import SLOTS, Scratch, SlotWriter


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
