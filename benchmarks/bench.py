"""`make bench`: how fast dped runs on this machine, written to results/bench/<machine>.json
and .md (benchmarks/record.py). Every figure, baselines included, is measured in the same run.

Sections (`--sections`, default all):
- pipeline: patch pairs per second through `dped.data.pair_dataset` (decode + augment + batch
  50) on the mini dataset and on a synthetic folder written on the fly;
- training: seconds per `DPEDModel.train_step` (generator + discriminator, 100x100 patches,
  VGG-19 content loss) at batch 50 and 8, float32 and bfloat16, with the process's peak RSS;
- enhance: seconds, MP/s and GFLOP/s of `dped enhance`'s graphs next to the convolution peak
  measured in the same process, with peak RSS; with `--original PATH` (a checkout of
  aiff22/DPED) the authors' models.py on the same image in the same run, and the ratio;
- tflite: each generator exported three ways, the interpreter's seconds against Keras'.
Each enhance and TFLite case runs in a fresh process, so that its peak RSS is its own.
"""

from __future__ import annotations

import argparse
import os
import resource
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import record  # noqa: E402  (benchmarks/ is a folder of scripts, not a package)

from dped.config import Config  # noqa: E402


def peak_rss_gb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024**2


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


def step_seconds(cfg: Config, steps: int = 3) -> float:
    """Seconds per training iteration at cfg.batch_size, after one warm-up (tracing) step."""
    import warnings

    from dped.training import DPEDModel

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the random-VGG warning: an explicit choice here
        model = DPEDModel(cfg)
    rng = np.random.default_rng(0)
    shape = (cfg.batch_size, cfg.patch_size, cfg.patch_size, 3)
    phone, dslr = rng.random(shape, dtype=np.float32), rng.random(shape, dtype=np.float32)
    model.train_step(phone, dslr)
    start = time.perf_counter()
    for _ in range(steps):
        logs = model.train_step(phone, dslr)
    float(logs["generator"])
    return (time.perf_counter() - start) / steps


def training_case(cfg: Config) -> dict:
    seconds = step_seconds(cfg)
    return {"seconds": seconds, "rss_gb": peak_rss_gb()}


def training(args) -> list[dict]:
    cfg = Config.from_yaml(args.config).replace(augment=True)
    rows = []
    for precision, batch in (("float32", 50), ("float32", 8), ("mixed_bfloat16", 50)):
        r = in_fresh_process(training_case, cfg.replace(batch_size=batch, precision=precision))
        rows.append(
            {
                "precision": precision,
                "batch": batch,
                "s/iteration": r["seconds"],
                "pairs/s consumed": batch / r["seconds"],
                "peak RSS GB": r["rss_gb"],
            }
        )
        print(f"training  {precision:14} batch {batch:3} {r['seconds']:6.2f} s/iteration")
    return rows


def generator_flops_per_pixel(generator) -> float:
    """2 x multiply-adds of every convolution per output pixel (all are stride 1, SAME)."""
    import keras

    return 2.0 * sum(
        layer.kernel_size[0] * layer.kernel_size[1] * layer.kernel.shape[2] * layer.filters
        for layer in generator.layers
        if isinstance(layer, keras.layers.Conv2D)
    )


def conv_peak_gflops(precision: str = "float32") -> float:
    """This machine's dense-convolution rate: a 3x3 64->64 conv on 512x512, best of 10."""
    import tensorflow as tf

    dtype = tf.bfloat16 if precision == "bfloat16" else tf.float32
    x = tf.cast(tf.random.normal([1, 512, 512, 64]), dtype)
    k = tf.cast(tf.random.normal([3, 3, 64, 64]), dtype)
    conv = tf.function(lambda a, b: tf.nn.conv2d(a, b, 1, "SAME"))
    conv(x, k)
    times = []
    for _ in range(10):
        start = time.perf_counter()
        conv(x, k).numpy()
        times.append(time.perf_counter() - start)
    return 2 * 9 * 64 * 64 * 512 * 512 / min(times) / 1e9


ENHANCE_SIZES = [(512, 512), (1536, 2048)]


def _enhance_generator(model: str, weights_dir: str | None):
    from dped.config import preset
    from dped.models import build_generator, generator_from_config
    from dped.pretrained import original_generator

    if model == "seed":  # the seed's architecture (3 tail convs, centred space), Xavier weights
        return generator_from_config(preset("seed")), "seed (random weights)"
    if weights_dir and Path(weights_dir, "iphone_orig.index").is_file():
        return original_generator("iphone_orig", weights_dir), "iphone_orig"
    return build_generator("instance", "tanh"), "original (random weights)"


def enhance_case(model: str, size: tuple[int, int], precision: str, weights_dir) -> dict:
    """One generator at one size and precision: seconds of `enhance_image` after a warm-up."""
    from dped.inference.graphs import inference_graphs
    from dped.inference.tiling import DEFAULT_TILE, enhance_image, runs_whole

    generator, name = _enhance_generator(model, weights_dir)
    fast = inference_graphs(generator, precision)
    image = np.random.default_rng(0).integers(0, 256, (*size, 3), dtype=np.uint8)
    tile = 512 if max(size) <= 512 else DEFAULT_TILE  # --tile 512: a 512x512 photo in one pass
    enhance_image(fast, image, tile)  # traces the graphs and compiles the tile shapes
    start = time.perf_counter()
    enhance_image(fast, image, tile)
    seconds = time.perf_counter() - start
    mode = "one pass" if runs_whole(fast, size, tile) else f"tiles {tile}"
    return {
        "generator": name,
        "size": f"{size[0]}x{size[1]}",
        "precision": precision,
        "mode": mode + (" exact" if fast.instance and mode != "one pass" else ""),
        "s/image": seconds,
        "MP/s": size[0] * size[1] / 1e6 / seconds,
        "GFLOP/s": generator_flops_per_pixel(generator) * size[0] * size[1] / seconds / 1e9,
        "conv peak GFLOP/s": conv_peak_gflops(precision),
        "peak RSS GB": peak_rss_gb(),
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
    weights_dir = args.weights_dir or os.environ.get("DPED_WEIGHTS_DIR")
    rows = []
    for size in ENHANCE_SIZES:
        original = None
        if args.original and weights_dir:
            r = in_fresh_process(original_case, args.original, weights_dir, size)
            original = r["seconds"]
            rows.append(
                {
                    "generator": "authors' code (iphone_orig)",
                    "size": f"{size[0]}x{size[1]}",
                    "precision": "float32",
                    "mode": "one pass",
                    "s/image": original,
                    "MP/s": size[0] * size[1] / 1e6 / original,
                    "peak RSS GB": r["rss_gb"],
                }
            )
        for model in ("original", "seed"):
            for precision in ("float32", "bfloat16"):
                row = in_fresh_process(enhance_case, model, size, precision, weights_dir)
                row["% of peak"] = 100 * row["GFLOP/s"] / row["conv peak GFLOP/s"]
                if original and row["generator"] == "iphone_orig":
                    row["x authors' code"] = original / row["s/image"]
                rows.append(row)
                print(
                    f"enhance   {row['generator']:26} {row['size']:9} {precision:8} "
                    f"{row['mode']:15} {row['s/image']:6.2f} s  {row['GFLOP/s']:4.0f} GFLOP/s "
                    f"({row['% of peak']:.0f}% of peak)  {row['peak RSS GB']:.2f} GB"
                )
    if not args.original:
        print("(no --original PATH: the authors' code was not timed)")
    return rows + fast_mode_psnr(weights_dir, args.reference_dir)


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
    from dped.export import TFLiteGenerator

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


def in_fresh_process(fn, *args):
    import concurrent.futures
    import multiprocessing

    context = multiprocessing.get_context("spawn")
    with concurrent.futures.ProcessPoolExecutor(1, mp_context=context) as pool:
        return pool.submit(fn, *args).result()


SECTIONS = {"pipeline": pipeline, "training": training, "enhance": enhance, "tflite": tflite}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sections", nargs="+", choices=list(SECTIONS), default=list(SECTIONS))
    parser.add_argument("--config", default="experiments/cpu.yaml")
    parser.add_argument("--synthetic-pairs", type=int, default=20000)
    parser.add_argument("--weights-dir", help="folder with the authors' models (DPED_WEIGHTS_DIR)")
    parser.add_argument("--reference-dir", help="golden images folder (DPED_REFERENCE_DIR)")
    parser.add_argument("--original", help="a checkout of aiff22/DPED: time its models.py too")
    parser.add_argument("--out", default="results/bench", help="folder of <machine>.json/.md")
    args = parser.parse_args(argv)
    if args.original and not Path(args.original, "models.py").is_file():
        parser.error(f"--original {args.original}: no models.py there (a checkout of aiff22/DPED)")
    info = record.machine()
    print(f"{info['cpu']}, {info['cores']} cores, TensorFlow {info['tensorflow']}")
    sections = {name: SECTIONS[name](args) for name in args.sections}
    path = record.write(sections, Path(args.out), info)
    print(f"wrote {path} and {path.with_suffix('.md')}")


if __name__ == "__main__":
    main()
