"""Streamed exact mode: the scratch file's space check and cleanup, the one-pass rule."""

import os
from pathlib import Path

import numpy as np
import pytest
from conftest import random_generator

from dped.inference import scratch as scratch_file
from dped.inference import stream
from dped.inference.graphs import FastGenerator
from dped.inference.tiling import DEFAULT_TILE, enhance_image, one_pass_bytes, runs_whole


@pytest.fixture(scope="module")
def graphs():
    return FastGenerator(random_generator(filters=16, res_blocks=2))


def test_the_one_pass_rule_is_five_tiles_of_activations_for_instance_norm_models(graphs):
    assert runs_whole(graphs, (DEFAULT_TILE, 5 * DEFAULT_TILE), DEFAULT_TILE)
    assert not runs_whole(graphs, (DEFAULT_TILE, 5 * DEFAULT_TILE + 1), DEFAULT_TILE)
    assert one_pass_bytes(graphs, (100, 10)) == 100 * 10 * 16 * 4 * 4  # 4 live float32 maps
    assert runs_whole(graphs, (3000, 4000), DEFAULT_TILE, budget=10**12)
    assert not runs_whole(graphs, (3, 3), DEFAULT_TILE, budget=0)


def _round_trip(folder, dtype="float32"):
    """Rows of an odd width (rows cross page boundaries) written in bands of 3, read back."""
    storage = scratch_file.STORAGE[dtype]
    rows = np.arange(7 * 5 * 3).astype(storage).reshape(7, 5, 3)
    with scratch_file.Scratch(folder, 7, 5, 3, dtype) as scratch:
        assert list(scratch.dir.iterdir()) == []  # unlinked as soon as it was opened
        before = scratch.writer(0, 3)
        before.append(rows[::-1])
        before.close()
        writer = scratch.writer(1, 3)
        for y in range(0, 7, 3):
            writer.append(rows[y : y + 3])
        writer.close()
        got = scratch.read(1, 2, 6, scratch.buffer(4))
        np.testing.assert_array_equal(np.asarray(got)[0], rows[2:6])
        np.testing.assert_array_equal(
            np.asarray(scratch.read(0, 0, 7, scratch.buffer(7)))[0], rows[::-1]
        )
        direct = scratch.direct
    assert list(Path(folder).iterdir()) == []  # and its folder is gone
    return direct


def test_scratch_rows_round_trip_with_direct_io(tmp_path):
    assert _round_trip(tmp_path) is True  # ext4 / xfs / tmpfs on Linux >= 6.6 take O_DIRECT
    assert _round_trip(tmp_path, "bfloat16") is True


def _resident_bytes() -> int:
    return int(Path("/proc/self/statm").read_text().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def test_read_buffers_come_with_their_pages_mapped(tmp_path):
    # An O_DIRECT read into pages never touched maps them inside the read, one by one: the
    # stage that first used a fresh pair of buffers waited ~1 s for its reads.
    with scratch_file.Scratch(tmp_path, 256, 1024, 64) as scratch:
        before = _resident_bytes()
        buffer = scratch.buffer(256)  # 64 MiB
        grown = _resident_bytes() - before
    assert buffer.nbytes >= 64 << 20
    assert grown >= 0.9 * buffer.nbytes


def _bands_through_scratch(folder, offset: int, monkeypatch):
    """Nine rows of one page each written in bands of 4 from memory `offset` bytes past a page
    boundary, read back; returns (bytes written from the bands' own memory, all bytes)."""
    rows = np.random.default_rng(0).random((9, 64, 16), dtype=np.float32)  # 4096-byte rows
    memory = scratch_file._aligned(rows.nbytes + scratch_file.PAGE)[offset : offset + rows.nbytes]
    source = memory.view(np.float32).reshape(rows.shape)
    source[:] = rows
    write, sizes = scratch_file._write_all, {"own": 0, "all": 0}

    def counted(fd, data, at):
        sizes["own"] += len(data) if np.shares_memory(data, source) else 0
        sizes["all"] += len(data)
        write(fd, data, at)

    monkeypatch.setattr(scratch_file, "_write_all", counted)
    with scratch_file.Scratch(folder, 9, 64, 16) as scratch:
        writer = scratch.writer(1, 4)
        for y in range(0, 9, 4):
            writer.append(source[y : y + 4])
        writer.close()
        np.testing.assert_array_equal(np.asarray(scratch.read(1, 0, 9, scratch.buffer(9)))[0], rows)
        np.testing.assert_array_equal(
            np.asarray(scratch.read(1, 3, 6, scratch.buffer(3)))[0], rows[3:6]
        )
    monkeypatch.undo()
    return sizes["own"], sizes["all"]


def test_bands_lined_up_with_their_place_in_the_file_are_written_without_a_copy(
    tmp_path, monkeypatch
):
    """TensorFlow puts a graph's output 64 bytes past a page boundary: the slot starts at that
    offset within its page, and the bands' whole pages go out from their own memory (the
    staging copy took CPU time from the graphs); memory at an offset that cannot line up (not a
    multiple of 64: reads would hand TensorFlow unaligned rows) is staged. Both read back."""
    own, total = _bands_through_scratch(tmp_path, 64, monkeypatch)
    # 9 rows after 64 bytes fill 10 pages: each band of 4 sends its 3 whole pages from its own
    # memory; the page each band starts in (64 bytes before it) and the slot's last are staged.
    assert (own, total) == (6 * scratch_file.PAGE, 10 * scratch_file.PAGE)
    own, total = _bands_through_scratch(tmp_path, 8, monkeypatch)
    assert own == 0 and total == 9 * scratch_file.PAGE


def test_scratch_falls_back_to_the_page_cache_where_direct_io_is_refused(tmp_path, monkeypatch):
    import errno

    open_file = os.open

    def no_direct(path, flags, *args, **kwargs):
        if flags & os.O_DIRECT:  # as Linux does: created, then refused
            os.close(open_file(path, flags & ~os.O_DIRECT, *args, **kwargs))
            raise OSError(errno.EINVAL, "Invalid argument")
        return open_file(path, flags, *args, **kwargs)

    monkeypatch.setattr(scratch_file.os, "open", no_direct)
    assert _round_trip(tmp_path) is False
    monkeypatch.undo()
    monkeypatch.delattr(scratch_file.os, "O_DIRECT")  # and where os has no O_DIRECT at all
    assert _round_trip(tmp_path) is False


def test_too_little_free_space_is_a_clear_error_before_any_work(tmp_path, monkeypatch, graphs):
    free = type("usage", (), {"free": 10**6})()
    monkeypatch.setattr(scratch_file.shutil, "disk_usage", lambda _: free)
    image = np.zeros((40, 30, 3), np.float32)
    with pytest.raises(scratch_file.ScratchError) as err:
        enhance_image(graphs, image, 8, budget=0, scratch=tmp_path)
    assert str(err.value).startswith(f"a 40x30 photo needs 0.0 GB of scratch space in {tmp_path}")
    assert list(tmp_path.iterdir()) == []
    # A scratch folder that did not exist is created, and removed again: nothing left behind.
    with pytest.raises(scratch_file.ScratchError):
        enhance_image(graphs, image, 8, budget=0, scratch=tmp_path / "new" / "deeper")
    assert list(tmp_path.iterdir()) == []


def test_a_scratch_folder_dped_created_is_removed_one_it_did_not_stays(tmp_path, graphs):
    image = np.random.default_rng(0).random((40, 30, 3), dtype=np.float32)
    enhance_image(graphs, image, 8, budget=0, scratch=tmp_path / "made")
    assert not (tmp_path / "made").exists()
    (tmp_path / "mine").mkdir()
    enhance_image(graphs, image, 8, budget=0, scratch=tmp_path / "mine")
    assert (tmp_path / "mine").is_dir() and list((tmp_path / "mine").iterdir()) == []


def test_the_scratch_folder_is_removed_on_success_error_and_ctrl_c(tmp_path, graphs):
    image = np.random.default_rng(0).random((40, 30, 3), dtype=np.float32)
    enhance_image(graphs, image, 8, budget=0, scratch=tmp_path)
    assert list(tmp_path.iterdir()) == []

    def interrupt():
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        enhance_image(graphs, image, 8, budget=0, scratch=tmp_path, progress=interrupt)
    assert list(tmp_path.iterdir()) == []
    assert not [
        f
        for f in os.listdir(f"/proc/{os.getpid()}/fd")
        if "dped-scratch" in os.path.realpath(f"/proc/{os.getpid()}/fd/{f}")
    ]  # and no descriptor left open


def test_a_failed_band_write_fails_the_run_instead_of_reading_a_hole(tmp_path, graphs, monkeypatch):
    import errno

    write, calls = scratch_file._write_all, []

    def disk_full_once(fd, data, offset):  # the third write only: later ones land past a hole
        calls.append(offset)
        if len(calls) == 3:
            raise OSError(errno.ENOSPC, "No space left on device")
        write(fd, data, offset)

    monkeypatch.setattr(scratch_file, "_write_all", disk_full_once)
    image = np.random.default_rng(0).random((40, 30, 3), dtype=np.float32)
    with pytest.raises(OSError, match="No space left"):
        enhance_image(graphs, image, 8, budget=0, scratch=tmp_path)
    assert len(calls) > 3  # the run went on writing after the failure: its data was a hole
    assert list(tmp_path.iterdir()) == []


def test_at_most_one_band_waits_for_a_slow_disk(tmp_path, graphs, monkeypatch):
    import threading
    import time

    write, band_write = scratch_file._write_all, stream._Stage.write
    computed, written, waiting, lock = [0], [0], [], threading.Lock()

    def slow_disk(fd, data, offset):
        time.sleep(0.005)
        write(fd, data, offset)

    def counted(stage, *args):  # a band is written when all its maps have landed
        futures = band_write(stage, *args)
        left = [len(futures)]

        def landed(_):
            with lock:
                left[0] -= 1
                written[0] += left[0] == 0

        for future in futures:
            future.add_done_callback(landed)
        return futures

    def progress():  # once per band, after its graph ran
        computed[0] += 1
        with lock:
            waiting.append(computed[0] - written[0])

    monkeypatch.setattr(scratch_file, "_write_all", slow_disk)
    monkeypatch.setattr(stream._Stage, "write", counted)
    image = np.random.default_rng(0).random((40, 30, 3), dtype=np.float32)
    enhance_image(graphs, image, 8, budget=0, scratch=tmp_path, progress=progress)
    # the bands of the stages that write come first (the last stage writes nothing)
    assert written[0] > 40 and max(waiting[: written[0]]) == 1


def test_cli_scratch_dir_is_used_and_left_empty(tmp_path, authors_checkpoints):
    import imageio.v3 as iio
    from conftest import photo

    from dped.cli import main

    weights_dir, _ = authors_checkpoints
    iio.imwrite(tmp_path / "p.png", photo((60, 90)))
    scratch = tmp_path / "scratch"
    scratch.mkdir()  # the user's folder: kept, and left as empty as it was
    enhance = ["enhance", str(tmp_path / "p.png"), "--model", "iphone_orig"]
    enhance += ["--weights-dir", str(weights_dir)]
    streamed = ["--tile", "8", "--scratch", str(scratch), "--out", str(tmp_path / "o")]
    assert main(enhance + streamed) == 0
    assert scratch.is_dir() and list(scratch.iterdir()) == []
    assert main(enhance + ["--out", str(tmp_path / "w")]) == 0  # 60x90 fits: one pass
    streamed, one = (iio.imread(tmp_path / d / "p.png").astype(int) for d in ("o", "w"))
    assert np.abs(streamed - one).max() <= 1


def test_the_fast_mode_streams_bfloat16_activations_like_its_one_pass(monkeypatch):
    from conftest import photo

    generator = random_generator(filters=16, res_blocks=2)
    image = photo((61, 47)).astype(np.float32) / 255
    fast = FastGenerator(generator, "bfloat16")
    opened, scratch = [], scratch_file.Scratch.__init__

    def spy(self, *args):
        scratch(self, *args)
        opened.append(self.dtype)

    monkeypatch.setattr(scratch_file.Scratch, "__init__", spy)
    streamed = enhance_image(fast, image, 8, budget=0)  # bands of 1 row: 61 per stage
    assert opened == [np.dtype(np.uint16)]  # bfloat16 bits stored, as the one pass keeps them
    # Usually bit-identical to the fast one pass. But a float32 difference of 1e-6 in any
    # statistic (thread timing made one between runs, in about 1 run in 4) flips bfloat16
    # roundings that spread to ~7e-3 at most, 1e-3 on average: bfloat16's own noise. A wrong
    # halo or statistic is far beyond it.
    diff = np.abs(streamed - fast.one_pass(image[None]).numpy()[0])
    assert diff.max() <= 0.02 and diff.mean() <= 1.5e-3


def test_every_band_of_a_stage_runs_one_window_height(graphs, monkeypatch, tmp_path):
    """Edge bands read extra context rows rather than fewer: one shape per stage graph, so XLA
    compiles each fused part once, not again for the first and the last band."""
    from dped.inference import stream as stream_module

    heights = {}
    make_stage = graphs.stage

    def recording(i, skip_out=False):
        graph = make_stage(i, skip_out)

        def run(*args):
            heights.setdefault(i, set()).add(int(args[0].shape[1]))
            return graph(*args)

        return run

    monkeypatch.setattr(graphs, "stage", recording)
    image = np.random.default_rng(1).random((41, 23, 3), dtype=np.float32)
    rows = 6
    assert [b - a for a, b in stream_module.bands(41, rows)] == [6] * 6 + [5]  # 41 = 7 bands
    out = np.concatenate(
        [band for _, _, band in stream_module.stream_rows(graphs, image, rows, tmp_path)]
    )
    assert {i: len(h) for i, h in heights.items()} == {i: 1 for i in range(len(graphs.norms) + 1)}
    np.testing.assert_allclose(out, graphs.one_pass(image[None]).numpy()[0], atol=1e-4)


def test_the_last_stage_frees_the_scratch_file_as_it_goes(tmp_path, graphs, monkeypatch):
    """Freeing the file at close waited ~0.4 s for a 3 MP photo on a disk that discards freed
    blocks. The last stage hands back the slots it does not read at once and the rows above
    its window as it goes: little is left when the file is closed, the output is unchanged."""
    close, held = scratch_file.Scratch.close, []

    def measured_close(self):
        held.append((os.fstat(self.fd).st_blocks * 512, scratch_file.SLOTS * self.slot))
        close(self)

    monkeypatch.setattr(scratch_file.Scratch, "close", measured_close)
    image = np.random.default_rng(0).random((40, 300, 3), dtype=np.float32)
    streamed = enhance_image(graphs, image, 40, budget=0, scratch=tmp_path)  # bands of 5 rows
    np.testing.assert_allclose(streamed, enhance_image(graphs, image, budget=10**12), atol=1e-4)
    [(allocated, size)] = held
    assert allocated < size / 4  # 4 slots: the last window of the 2 it reads (was all 4)


def test_a_stage_reads_while_the_last_writes_land_but_never_ahead_of_them(
    tmp_path, graphs, monkeypatch
):
    """A stage's first bands are read while the stage before still writes its last ones (the
    disk is not left idle at the boundary), and no read overtakes the writes of its rows: bands
    of one row of 29 columns end mid-page (their last bytes go out with a later band), and six
    bands make the next stage read the rows the last writes carry."""
    import threading
    import time

    write, writer, read = (
        scratch_file._write_all,
        scratch_file.Scratch.writer,
        scratch_file.Scratch.read,
    )
    lock, on_disk, pending, overlapped, overtaken = threading.Lock(), {}, {}, [0], []
    scratches = []

    def new_writer(scratch, slot, rows):  # a slot's new contents start empty
        on_disk[slot], pending[slot] = 0, 0
        scratches[:] = [scratch]
        return writer(scratch, slot, rows)

    def slow_disk(fd, data, offset):
        scratch = scratches[0]
        slot = offset // scratch.slot
        with lock:
            pending[slot] += 1
        time.sleep(0.002)
        write(fd, data, offset)
        with lock:
            pending[slot] -= 1
            written = offset + len(data) - scratch.starts[slot]  # bytes of rows from row 0 on
            on_disk[slot] = max(on_disk[slot], written)

    def checked_read(scratch, slot, y0, y1, buffer):
        with lock:  # within a stage, reads and writes go to different slots
            overlapped[0] += pending[slot] > 0
            if on_disk[slot] < y1 * scratch.row:
                overtaken.append((slot, y1))
        return read(scratch, slot, y0, y1, buffer)

    monkeypatch.setattr(scratch_file.Scratch, "writer", new_writer)
    monkeypatch.setattr(scratch_file, "_write_all", slow_disk)
    monkeypatch.setattr(scratch_file.Scratch, "read", checked_read)
    image = np.random.default_rng(1).random((6, 29, 3), dtype=np.float32)
    streamed = enhance_image(graphs, image, 5, budget=0, scratch=tmp_path)  # bands of 1 row
    assert overtaken == []
    assert overlapped[0] > 0
    np.testing.assert_allclose(streamed, enhance_image(graphs, image, 12), atol=1e-4)


def test_the_scratch_file_counts_the_bytes_a_streamed_run_moves(graphs, tmp_path):
    image = np.random.default_rng(0).random((40, 30, 3), dtype=np.float32)
    before = scratch_file.bytes_moved()
    enhance_image(graphs, image, 8, budget=0, scratch=tmp_path)
    moved = {k: n - before[k] for k, n in scratch_file.bytes_moved().items()}
    # 4 norm inputs and 2 block inputs, each 40x30x16 float32 in whole 4 KiB pages (a page more
    # where a slot starts past a page boundary, lined up with the graphs' output: SlotWriter)
    pages = -(-40 * 30 * 16 * 4 // 4096)
    assert 6 * pages * 4096 <= moved["written"] <= 6 * (pages + 1) * 4096
    assert moved["written"] % 4096 == 0
    assert moved["read"] >= 6 * 40 * 30 * 16 * 4  # each read back at least once, with context
    after = scratch_file.bytes_moved()
    enhance_image(graphs, image, 8, budget=10**12)  # one pass: no scratch file, nothing counted
    assert scratch_file.bytes_moved() == after
