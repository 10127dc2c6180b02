"""`make bench`'s enhance cases in steady state: a generator's graphs held, timed after a warm-up
run (`enhance_case`), the authors' models.py on the same image (`original_case`), the scratch
file's disk rates, a folder's throughput, the fast mode's PSNR; the row format and its printing.
Each case runs in a fresh process (record.in_fresh_process): its peak RSS is its own.
"""

from __future__ import annotations

import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from record import conv_peak_gflops, peak_rss_gb


def generator_flops_per_pixel(generator) -> float:
    """2 x multiply-adds of every convolution per output pixel (all are stride 1, SAME)."""
    import keras

    return 2.0 * sum(
        layer.kernel_size[0] * layer.kernel_size[1] * layer.kernel.shape[2] * layer.filters
        for layer in generator.layers
        if isinstance(layer, keras.layers.Conv2D)
    )


ENHANCE_SIZES = [(512, 512), (1536, 2048)]


AUTHORS = "authors' code (iphone_orig)"


def _enhance_generator(model: str, weights_dir: str | None):
    from dped.config import preset
    from dped.models import build_generator, generator_from_config
    from dped.pretrained import original_generator

    if model == "seed":  # the seed's architecture (3 tail convs, centred space), Xavier weights
        return generator_from_config(preset("seed")), "seed (random weights)"
    if weights_dir and Path(weights_dir, "iphone_orig.index").is_file():
        return original_generator("iphone_orig", weights_dir), "iphone_orig"
    return build_generator("instance", "tanh"), "original (random weights)"


def enhance_case(
    model: str, size: tuple[int, int], precision: str, weights_dir, rounds: int = 1
) -> dict:
    """One generator at one size and precision: the median seconds of `rounds` runs of
    `enhance_image` after a warm-up (each run's seconds in 'rounds s')."""
    from dped.inference import scratch
    from dped.inference.graphs import inference_graphs
    from dped.inference.tiling import DEFAULT_TILE, enhance_image, runs_whole

    generator, name = _enhance_generator(model, weights_dir)
    fast = inference_graphs(generator, precision)
    image = np.random.default_rng(0).integers(0, 256, (*size, 3), dtype=np.uint8)
    tile = 512 if max(size) <= 512 else DEFAULT_TILE  # --tile 512: a 512x512 photo in one pass
    enhance_image(fast, image, tile)  # traces the graphs and compiles the tile shapes
    times = []
    before = scratch.bytes_moved()
    for _ in range(rounds):
        start = time.perf_counter()
        enhance_image(fast, image, tile)
        times.append(time.perf_counter() - start)
    traffic = {k: n - before[k] for k, n in scratch.bytes_moved().items()}
    if runs_whole(fast, size, tile):
        mode = "one pass"
    else:
        mode = "streamed exact" if fast.instance else f"tiles {tile}"
    flops_px = generator_flops_per_pixel(generator)
    seconds = statistics.median(times)
    row = _rate_row(name, size, precision, mode, seconds, peak_rss_gb(), flops_px, "steady")
    row["conv peak GFLOP/s"] = conv_peak_gflops(precision)
    row["% of peak"] = 100 * row["GFLOP/s"] / row["conv peak GFLOP/s"]
    if sum(traffic.values()):  # per run
        row["scratch GB written"], row["scratch GB read"] = (
            traffic[k] / rounds / 1e9 for k in ("written", "read")
        )
    if rounds > 1:
        row["rounds s"] = " ".join(f"{t:.2f}" for t in times)
    return row


def scratch_disk(gigabytes: float = 2.0) -> dict:
    """This machine's scratch file rates (the streamed mode's own O_DIRECT path, in the system's
    temporary folder): GB/s writing fresh bands, then reading them back a band at a time. Set
    beside the streamed rows' scratch GB, they say how much of their time is disk transfers."""
    import tensorflow  # noqa: F401  (Scratch.read's first call would time its import)

    from dped.inference.scratch import PAGE, Scratch, _aligned

    width, channels, rows = 2048, 64, 98  # 1536x2048 float32 bands of the authors' models
    count = max(1, round(gigabytes * 1e9 / (rows * width * channels * 4)))
    # 64 bytes past a page boundary, where TensorFlow puts a graph's output: the bands' whole
    # pages go to the disk from their own memory, as the streamed mode's do.
    size = rows * width * channels * 4
    band = _aligned(size + PAGE)[64 : 64 + size].view(np.float32).reshape(rows, width, channels)
    band[:] = np.random.default_rng(0).random(band.shape, dtype=np.float32)
    with Scratch(tempfile.gettempdir(), count * rows, width, channels) as scratch:
        writer = scratch.writer(0, rows)
        start = time.perf_counter()
        for _ in range(count):
            writer.append(band)
        writer.close()
        wrote = time.perf_counter() - start
        buffer, start = scratch.buffer(rows), time.perf_counter()
        for k in range(count):
            scratch.read(0, k * rows, (k + 1) * rows, buffer)
        read = time.perf_counter() - start
        moved = count * band.nbytes
        direct = scratch.direct
    return {
        "generator": "scratch file (O_DIRECT)" if direct else "scratch file (page cache)",
        "write GB/s": moved / wrote / 1e9,
        "read GB/s": moved / read / 1e9,
    }


def original_case(checkout: str, weights_dir: str, size: tuple[int, int]) -> dict:
    """The authors' models.resnet (their TF1 graph, through tf.compat.v1) with iphone_orig, on
    the same random image: seconds of one run after a warm-up, and the process's peak RSS."""
    import tensorflow as tf

    tf.compat.v1.disable_v2_behavior()  # their _instance_norm reads Dimension.value
    sys.path.insert(0, checkout)
    import models  # their models.py

    x = tf.compat.v1.placeholder(tf.float32, [1, *size, 3])
    out = models.resnet(x)
    session = tf.compat.v1.Session()
    tf.compat.v1.train.Saver().restore(session, str(Path(weights_dir) / "iphone_orig"))
    image = np.random.default_rng(0).integers(0, 256, (1, *size, 3)).astype(np.float32) / 255
    session.run(out, {x: image})
    start = time.perf_counter()
    session.run(out, {x: image})
    return {"seconds": time.perf_counter() - start, "rss_gb": peak_rss_gb()}


def _rate_row(name, size, precision, mode, seconds, rss_gb, flops_px, timing) -> dict:
    pixels = size[0] * size[1]
    row = {
        "generator": name,
        "size": f"{size[0]}x{size[1]}",
        "precision": precision,
        "mode": mode,
        "timing": timing,
        "s/image": seconds,
        "MP/s": pixels / 1e6 / seconds,
    }
    if flops_px:
        row["GFLOP/s"] = flops_px * pixels / seconds / 1e9
    row["peak RSS GB"] = rss_gb
    return row


def _authors_row(size, seconds, rss_gb, flops_px, timing) -> dict:
    """The authors' code (one pass, float32, iphone_orig): the baseline of the ratios."""
    return _rate_row(AUTHORS, size, "float32", "one pass", seconds, rss_gb, flops_px, timing)


def _print(row: dict) -> None:
    rate = (
        f"{row['GFLOP/s']:4.0f} GFLOP/s ({row.get('% of peak', 0):.0f}% of peak)"
        if "GFLOP/s" in row
        else ""
    )
    print(
        f"enhance   {row['generator']:28} {row['size']:9} {row['precision']:8} {row['mode']:18} "
        f"{row['timing']:13} {row['s/image']:6.2f} s  {rate}  {row['peak RSS GB']:.2f} GB"
        + (
            f"  scratch {row['scratch GB written']:.1f} GB written, "
            f"{row['scratch GB read']:.1f} GB read"
            if "scratch GB written" in row
            else ""
        )
    )


def _photo(size: tuple[int, int]) -> np.ndarray:
    """A real photograph (scikit-image's astronaut) resized to `size`, uint8."""
    from skimage import data, transform

    return (transform.resize(data.astronaut(), size, order=1) * 255).astype(np.uint8)


def folder_throughput(weights_dir: str, size: tuple[int, int], count: int) -> dict:
    """A folder of `count` photos through `driver.enhance_file` with graphs held across them:
    seconds per photo after the first (steady state, the first pays tracing and compiling)."""
    import imageio.v3 as iio

    from dped.inference.driver import enhance_file
    from dped.inference.graphs import inference_graphs
    from dped.pretrained import original_generator

    graphs = inference_graphs(original_generator("iphone_orig", weights_dir))
    with tempfile.TemporaryDirectory() as tmp:
        times = []
        for k in range(count):
            path = Path(tmp, f"{k}.png")
            iio.imwrite(path, np.roll(_photo(size), 97 * k, axis=1))
            start = time.perf_counter()
            enhance_file(graphs, path, [Path(tmp, f"out{k}.png")], 448, False, Path(tmp))
            times.append(time.perf_counter() - start)
    seconds = sum(times[1:]) / (count - 1)
    flops = generator_flops_per_pixel(original_generator("iphone_orig", weights_dir))
    row = _rate_row(
        f"folder of {count} (iphone_orig)",
        size,
        "float32",
        "streamed exact",
        seconds,
        peak_rss_gb(),
        flops,
        "per photo after the first",
    )
    row["conv peak GFLOP/s"] = conv_peak_gflops("float32")
    row["% of peak"] = 100 * row["GFLOP/s"] / row["conv peak GFLOP/s"]
    return row
