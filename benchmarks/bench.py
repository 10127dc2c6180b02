"""`make bench`: how fast dped runs on this machine, written to results/bench/<machine>.json
and .md (benchmarks/record.py). Every figure, baselines included, is measured in the same run.

Sections (`--sections`, default all):
- pipeline: patch pairs per second through `dped.data.pair_dataset` (decode + augment + batch
  50) on the mini dataset and on a synthetic folder written on the fly;
- training (benchmarks/training_step.py): seconds, FLOPs and GFLOP/s of `DPEDModel.train_step`
  at the cpu profile's shape (1 and 2 threads, XLA, bfloat16) and at full scale, against the
  convolution peak measured in the same process;
- enhance: seconds, MP/s and GFLOP/s of `dped enhance`'s graphs next to the convolution peak
  measured in the same process, with peak RSS; with `--original PATH` (a checkout of
  aiff22/DPED) the authors' models.py on the same image in the same run, and the ratio;
  the streamed rows' scratch bytes, and this machine's scratch write and read rates;
- tflite: each generator exported three ways, the interpreter's seconds against Keras'.
Each enhance and TFLite case runs in a fresh process, so that its peak RSS is its own.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import record  # noqa: E402  (benchmarks/ is a folder of scripts, not a package)
import training_step  # noqa: E402
from record import conv_peak_gflops, in_fresh_process, peak_rss_gb  # noqa: E402

from dped.config import Config  # noqa: E402


def write_synthetic(root: Path, pairs: int, size: int = 100, phone: str = "synth") -> Config:
    """`pairs` JPEG pairs of smooth noisy images in the DPED layout (a stand-in for scale only)."""
    import imageio.v3 as iio
    from tqdm import tqdm

    rng = np.random.default_rng(0)
    base = root / phone
    for split, n in (("training_data", pairs), ("test_data/patches", 1)):
        for side in (phone, "canon"):
            (base / split / side).mkdir(parents=True, exist_ok=True)
        ramp = np.linspace(0, 255, size)[None, :, None]
        for i in tqdm(range(n), desc=f"synthetic {split}", leave=False, disable=None):
            image = np.clip(ramp * rng.random(3) + rng.normal(0, 20, (size, size, 3)), 0, 255)
            image = image.astype(np.uint8)
            iio.imwrite(base / split / "canon" / f"{i}.jpg", image, quality=95)
            iio.imwrite(base / split / phone / f"{i}.jpg", image // 2, quality=70)
    return Config(dataset_dir=str(root), phone=phone, train_size=0)


def pipeline_rate(cfg: Config, batches: int = 40) -> tuple[float, float]:
    """(pairs per second through the training pipeline, seconds of up-front validation)."""
    from dped.data import load_files, training_batches

    start = time.perf_counter()
    files = load_files(cfg)
    validation = time.perf_counter() - start
    it = training_batches(cfg, files)
    next(it)
    start = time.perf_counter()
    for _ in range(batches):
        next(it)
    return batches * cfg.batch_size / (time.perf_counter() - start), validation


def pipeline(args) -> list[dict]:
    cfg = Config.from_yaml(args.config).replace(batch_size=50, augment=True)
    sets = {}
    if Path(cfg.dataset_dir, cfg.phone).is_dir():
        sets["mini dataset"] = cfg
    else:
        print(f"(no mini dataset at {cfg.dataset_dir}/{cfg.phone}: run `make data` first)")
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        synth = write_synthetic(Path(tmp), args.synthetic_pairs)
        sets[f"synthetic {args.synthetic_pairs}"] = synth.replace(batch_size=50, augment=True)
        for name, cfg in sets.items():
            rate, validation = pipeline_rate(cfg)
            rows.append({"dataset": name, "pairs/s": rate, "validation s": validation})
            print(f"pipeline  {name:24} {rate:8.0f} pairs/s  (validation {validation:.1f} s)")
    return rows


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
    from dped.inference.graphs import inference_graphs
    from dped.inference.tiling import DEFAULT_TILE, enhance_image, runs_whole

    generator, name = _enhance_generator(model, weights_dir)
    fast = inference_graphs(generator, precision)
    image = np.random.default_rng(0).integers(0, 256, (*size, 3), dtype=np.uint8)
    tile = 512 if max(size) <= 512 else DEFAULT_TILE  # --tile 512: a 512x512 photo in one pass
    enhance_image(fast, image, tile)  # traces the graphs and compiles the tile shapes
    times = []
    with _scratch_bytes() as traffic:
        for _ in range(rounds):
            start = time.perf_counter()
            enhance_image(fast, image, tile)
            times.append(time.perf_counter() - start)
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
            traffic[k] / rounds / 1e9 for k in "wr"
        )
    if rounds > 1:
        row["rounds s"] = " ".join(f"{t:.2f}" for t in times)
    return row


@contextlib.contextmanager
def _scratch_bytes():
    """Counts the bytes a streamed run moves through its scratch file: {'w': .., 'r': ..}."""
    from dped.inference import scratch

    traffic = {"w": 0, "r": 0}
    write, read = scratch._write_all, scratch._read_all

    def counted_write(fd, data, offset):
        traffic["w"] += len(data)
        write(fd, data, offset)

    def counted_read(fd, buffer, offset):
        traffic["r"] += len(buffer)
        read(fd, buffer, offset)

    scratch._write_all, scratch._read_all = counted_write, counted_read
    try:
        yield traffic
    finally:
        scratch._write_all, scratch._read_all = write, read


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


def enhance(args) -> list[dict]:
    """Steady-state cases (each in a fresh process: `args.rounds` runs after a warm-up run),
    then whole processes on photo files and a folder's throughput."""
    weights_dir = args.weights_dir or os.environ.get("DPED_WEIGHTS_DIR")
    rows = []
    for size in ENHANCE_SIZES:
        if args.original and weights_dir:
            r = in_fresh_process(original_case, args.original, weights_dir, size)
            rows.append(_authors_row(size, r["seconds"], r["rss_gb"], None, "steady"))
        for model in ("original", "seed"):
            for precision in ("float32", "bfloat16"):
                rows.append(
                    in_fresh_process(enhance_case, model, size, precision, weights_dir, args.rounds)
                )
                _print(rows[-1])
    rows.append(in_fresh_process(scratch_disk))
    print(
        f"{rows[-1]['generator']}: writes {rows[-1]['write GB/s']:.2f} GB/s, "
        f"reads {rows[-1]['read GB/s']:.2f} GB/s"
    )
    if weights_dir:
        rows += whole_processes(args, weights_dir)
        rows.append(in_fresh_process(folder_throughput, weights_dir, (1536, 2048), 4))
        _print(rows[-1])
    if not args.original:
        print("(no --original PATH: the authors' code was not timed)")
    _fast_ratios(rows)
    return rows + fast_mode_psnr(weights_dir, args.reference_dir)


def _fast_ratios(rows: list[dict]) -> None:
    """'x float32': how many times faster each bfloat16 row is than its float32 twin (same
    generator, size, mode and timing; `dped enhance --fast` is `dped enhance`'s twin)."""

    def key(row):
        return row["generator"].replace(" --fast", ""), row["size"], row["mode"], row["timing"]

    twins = {key(r): r for r in rows if r.get("precision") == "float32"}
    for row in rows:
        twin = twins.get(key(row)) if row.get("precision") == "bfloat16" else None
        if twin and "x float32" not in row:  # a ratio taken round by round stays
            row["x float32"] = twin["s/image"] / row["s/image"]


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


def whole_process(cmd: list[str]) -> tuple[float, float]:
    """(wall seconds, peak RSS in GB, 10^9 bytes) of one run of `cmd`, its RSS taken by
    tools/peak_rss.py (os.wait4 here would report this process's size once it is the larger)."""
    import subprocess

    launcher = Path(__file__).resolve().parents[1] / "tools" / "peak_rss.py"
    with tempfile.TemporaryFile() as err, tempfile.TemporaryDirectory() as scratch:
        peak = Path(scratch) / "peak_rss"
        start = time.perf_counter()
        done = subprocess.run(
            [sys.executable, str(launcher), str(peak), *cmd], stdout=subprocess.DEVNULL, stderr=err
        )
        seconds = time.perf_counter() - start
        if done.returncode:
            err.seek(0)
            raise RuntimeError(f"{' '.join(cmd)} failed: {err.read().decode()[-500:]}")
        return seconds, int(peak.read_text()) / 1e9


def in_rounds(cmds: dict[str, list[str]], rounds: int = 3) -> dict[str, tuple[list, float]]:
    """Each command once a round, in turn (A B C, A B C, ...): a drift in the machine's speed
    then reaches every case alike, and ratios are taken round by round (`paired`).
    {name: (wall seconds of each round, largest peak RSS in GB)}."""
    seconds = {name: [] for name in cmds}
    rss = dict.fromkeys(cmds, 0.0)
    for _ in range(rounds):
        for name, cmd in cmds.items():
            wall, peak = whole_process(cmd)
            seconds[name].append(wall)
            rss[name] = max(rss[name], peak)
    return {name: (seconds[name], rss[name]) for name in cmds}


def paired(numerators: list[float], denominators: list[float]) -> float:
    """The median of the round-by-round ratios."""
    return statistics.median(a / b for a, b in zip(numerators, denominators))


def whole_processes(args, weights_dir: str) -> list[dict]:
    """`dped enhance` as a user runs it on a 1536x2048 PNG (streamed exact mode, one pass, --fast)
    against the authors' code on the same file, in `args.rounds` interleaved rounds (medians,
    ratios pair by pair, and every round's seconds); then once on a 12 MP JPEG."""
    import imageio.v3 as iio

    from dped.models import build_generator

    flops_px = generator_flops_per_pixel(build_generator("instance", "tanh"))
    peaks = {p: conv_peak_gflops(p) for p in ("float32", "bfloat16")}
    rows = []

    def add(row: dict) -> None:  # its rate beside the peak of its precision, then printed
        peak = peaks[row["precision"]]
        row["conv peak GFLOP/s"], row["% of peak"] = peak, 100 * row["GFLOP/s"] / peak
        rows.append(row)
        _print(row)

    with tempfile.TemporaryDirectory() as tmp:
        photos = {}
        for size, name in (((1536, 2048), "iphone.png"), ((3000, 4000), "12mp.jpg")):
            photos[size] = Path(tmp, name)
            iio.imwrite(
                photos[size], _photo(size), **({"quality": 92} if name.endswith("jpg") else {})
            )
        dped = [
            sys.executable,
            "-m",
            "dped.cli",
            "enhance",
            "--model",
            "iphone_orig",
            "--weights-dir",
            weights_dir,
            "--overwrite",
            "--out",
            str(Path(tmp, "out")),
        ]
        size = (1536, 2048)
        photo = str(photos[size])
        cases = {}  # name: (precision, mode, command)
        if args.original:
            script = str(Path(__file__).with_name("original_code.py"))
            theirs = [sys.executable, script, args.original, weights_dir, photo]
            cases[AUTHORS] = ("float32", "one pass", theirs + [str(Path(tmp, "theirs.png"))])
        cases["dped enhance"] = ("float32", "streamed exact", dped + [photo])
        cases["dped enhance --tile 2048"] = (
            "float32",
            "one pass",
            dped + [photo, "--tile", "2048"],
        )
        cases["dped enhance --fast"] = ("bfloat16", "streamed exact", dped + [photo, "--fast"])
        runs = in_rounds({name: command for name, (_, _, command) in cases.items()}, args.rounds)
        for row in _round_rows(cases, runs, size, flops_px):
            add(row)
        seconds, rss = whole_process(dped + [str(photos[(3000, 4000)])])
        add(
            _rate_row(
                "dped enhance",
                (3000, 4000),
                "float32",
                "streamed exact",
                seconds,
                rss,
                flops_px,
                "whole process",
            )
        )
    return rows


def _round_rows(cases: dict, runs: dict, size, flops_px) -> list[dict]:
    """The interleaved cases' rows: median seconds, every ratio taken round by round, and each
    round's seconds (a shared machine's slow minutes show there, not only in the medians)."""
    rows = []
    for name, (precision, mode, _) in cases.items():
        times, rss = runs[name]
        seconds = statistics.median(times)
        if name == AUTHORS:
            row = _authors_row(size, seconds, rss, flops_px, "whole process")
        else:
            row = _rate_row(name, size, precision, mode, seconds, rss, flops_px, "whole process")
            row["/ one pass"] = paired(times, runs["dped enhance --tile 2048"][0])
            if AUTHORS in runs:
                row["x authors' code"] = paired(runs[AUTHORS][0], times)
            if precision == "bfloat16":
                row["x float32"] = paired(runs["dped enhance"][0], times)
        row["rounds s"] = " ".join(f"{t:.1f}" for t in times)
        rows.append(row)
    return rows


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


def fast_mode_psnr(weights_dir: str | None, reference_dir: str | None) -> list[dict]:
    """The bfloat16 fast mode's PSNR against float32 on the reference images, per model."""
    import imageio.v3 as iio

    from dped.inference.graphs import FastGenerator
    from dped.inference.tiling import enhance_image
    from dped.metrics import psnr
    from dped.pretrained import ORIGINAL_MODELS, original_generator

    rows = []
    images = sorted(Path(reference_dir).glob("in_*.png")) if reference_dir else []
    for model in ORIGINAL_MODELS:
        if not (weights_dir and Path(weights_dir, f"{model}.index").is_file()):
            continue
        generator = original_generator(model, weights_dir)
        for path in images:
            image = iio.imread(path)
            exact = enhance_image(FastGenerator(generator), image, 1024)
            fast = enhance_image(FastGenerator(generator, "bfloat16"), image, 1024)
            rows.append(
                {
                    "generator": model,
                    "size": path.name,
                    "precision": "bfloat16 vs float32",
                    "PSNR dB": float(psnr(fast, exact)),
                }
            )
    return rows


TFLITE_SIZES = [(720, 1280), (1536, 2048)]  # the PIRM 2018 challenge's resolution; an iPhone's


def tflite_case(path: str, size: tuple[int, int]) -> dict:
    """One exported model at one size, 1 and 2 interpreter threads (XNNPACK): seconds of one
    invoke after allocation, and the process's peak RSS."""
    from dped.inference.tflite import TFLiteGenerator

    image = np.random.default_rng(0).random((1, *size, 3), dtype=np.float32)
    seconds = {}
    for threads in (1, 2):
        model = TFLiteGenerator(path, threads)
        try:
            model.prepare(image.shape)
        except ValueError as err:  # an instance-norm model over the memory budget
            return {"skipped": str(err).split(";")[0], "rss_gb": peak_rss_gb()}
        start = time.perf_counter()
        model.one_pass(image)
        seconds[threads] = time.perf_counter() - start
        del model  # one interpreter's buffers at a time in the peak
    return {"seconds": seconds, "rss_gb": peak_rss_gb()}


def tflite(args) -> list[dict]:
    from dped.export import QUANTIZATIONS, calibration_images, convert, default_calibration

    weights_dir = args.weights_dir or os.environ.get("DPED_WEIGHTS_DIR")
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for model in ("original", "seed"):
            generator, name = _enhance_generator(model, weights_dir)
            files = {}
            for quantize in QUANTIZATIONS:
                images = calibration_images(default_calibration()) if quantize == "int8" else None
                files[quantize] = Path(tmp, f"{model}-{quantize}.tflite")
                files[quantize].write_bytes(convert(generator, quantize, images))
            for size in TFLITE_SIZES:
                keras = in_fresh_process(enhance_case, model, size, "float32", weights_dir)
                base = {"generator": name, "size": keras["size"]}
                rows.append(
                    {
                        **base,
                        "runtime": f"keras {keras['mode']}",
                        "threads": 2,
                        "s/image": keras["s/image"],
                        "peak RSS GB": keras["peak RSS GB"],
                    }
                )
                for quantize, path in files.items():
                    r = in_fresh_process(tflite_case, str(path), size)
                    row = {**base, "runtime": f"tflite {quantize}", "MB": path.stat().st_size / 1e6}
                    if "skipped" in r:
                        rows.append({**row, "note": r["skipped"]})
                        continue
                    for threads, seconds in r["seconds"].items():
                        rows.append(
                            {
                                **row,
                                "threads": threads,
                                "s/image": seconds,
                                "peak RSS GB": r["rss_gb"],
                                "x keras": keras["s/image"] / seconds,
                            }
                        )
                print(f"tflite    {name:26} {keras['size']:9} done")
    return rows


SECTIONS = {
    "pipeline": pipeline,
    "training": training_step.training,
    "enhance": enhance,
    "tflite": tflite,
}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sections", nargs="+", choices=list(SECTIONS), default=list(SECTIONS))
    parser.add_argument("--config", default="experiments/cpu.yaml")
    parser.add_argument("--synthetic-pairs", type=int, default=20000)
    parser.add_argument("--weights-dir", help="folder with the authors' models (DPED_WEIGHTS_DIR)")
    parser.add_argument("--reference-dir", help="golden images folder (DPED_REFERENCE_DIR)")
    parser.add_argument("--original", help="a checkout of aiff22/DPED: time its models.py too")
    parser.add_argument("--out", default="results/bench", help="folder of <machine>.json/.md")
    parser.add_argument(
        "--rounds",
        type=int,
        default=3,
        help="interleaved rounds of the whole-process cases; timed runs of each steady case",
    )
    args = parser.parse_args(argv)
    if args.rounds < 1:
        parser.error(f"--rounds {args.rounds}: at least one round")
    if args.original and not Path(args.original, "models.py").is_file():
        parser.error(f"--original {args.original}: no models.py there (a checkout of aiff22/DPED)")
    info = record.machine()
    print(f"{info['cpu']}, {info['cores']} cores, TensorFlow {info['tensorflow']}")
    sections = {name: SECTIONS[name](args) for name in args.sections}
    path = record.write(sections, Path(args.out), info)
    print(f"wrote {path} and {path.with_suffix('.md')}")


if __name__ == "__main__":
    main()
