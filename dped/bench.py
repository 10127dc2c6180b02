"""`make bench`: data-pipeline throughput and the training step's consumption rate, as numbers.

Pipeline: patch pairs per second through `dped.data.pair_dataset` (decode + augment + batch 50)
on the mini dataset and on a synthetic 20,000-pair folder written on the fly. Training: seconds
per iteration of `DPEDModel.train_step` (generator + discriminator step, 100x100 patches, VGG-19
content loss) at batch 50 and 8, and the process's peak RSS.
"""

from __future__ import annotations

import argparse
import resource
import tempfile
import time
from pathlib import Path

import numpy as np

from dped.config import Config


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


# Each speed option's effect on quality: the CPU profile trained once per option (`dped train
# --config experiments/cpu.yaml [--set ...] --out <folder>`), folders committed under results/.
OPTION_RUNS = {
    "precision: float32": "results/cpu-float32",
    "precision: mixed_bfloat16 (profile)": "results/cpu",
}


def option_effects() -> None:
    import csv

    print("\n== each option's effect on the CPU profile's final test PSNR (recorded runs) ==")
    for option, folder in OPTION_RUNS.items():
        path = Path(folder) / "metrics.csv"
        if not path.is_file():
            print(f"{option:28} (no run at {folder})")
            continue
        with open(path) as f:
            last = list(csv.DictReader(f))[-1]
        print(
            f"{option:28} PSNR {float(last['psnr']):6.2f} dB  MS-SSIM "
            f"{float(last['ms_ssim']):.4f}  after {last['step']} iterations, {last['wall_s']} s"
        )


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


# The original code on this kind of machine, one pass (its README: whole photo in memory).
ORIGINAL_SECONDS = {(512, 512): 1.41, (1536, 2048): 16.7}
ENHANCE_CASES = [  # (generator, (H, W), precision): 512x512 in one pass, larger in default tiles
    (model, size, precision)
    for size in ((512, 512), (1536, 2048))
    for model in ("original", "seed")
    for precision in ("float32", "bfloat16")
]


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
    """One benchmark case, run in a fresh process so that its peak RSS is its own."""
    from dped.enhance import DEFAULT_TILE, enhance_image, fast_generator, one_pass

    generator, name = _enhance_generator(model, weights_dir)
    fast = fast_generator(generator, precision)
    image = np.random.default_rng(0).integers(0, 256, (*size, 3), dtype=np.uint8)
    tile = 512 if max(size) <= 512 else DEFAULT_TILE  # --tile 512: a 512x512 photo in one pass
    enhance_image(fast, image, tile)  # traces the graphs and compiles the tile shapes
    start = time.perf_counter()
    enhance_image(fast, image, tile)
    seconds = time.perf_counter() - start
    return {
        "name": name,
        "seconds": seconds,
        "flops": generator_flops_per_pixel(generator) * size[0] * size[1],
        "peak": conv_peak_gflops(precision),
        "rss_gb": peak_rss_gb(),
        "mode": "one pass"
        if one_pass(fast, size, tile)
        else (f"tiles {tile} exact" if fast.instance else f"tiles {tile}"),
    }


def fast_mode_psnr(weights_dir: str | None, reference_dir: str | None) -> list[tuple]:
    """(model, image, PSNR of the bfloat16 output against float32) on the reference images."""
    import imageio.v3 as iio

    from dped.enhance import enhance_image
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
            exact = enhance_image(generator, image, 1024)
            fast = enhance_image(generator, image, 1024, precision="bfloat16")
            rows.append((model, path.name, float(psnr(fast, exact))))
    return rows


def _in_fresh_process(fn, *args):
    import concurrent.futures
    import multiprocessing

    context = multiprocessing.get_context("spawn")
    with concurrent.futures.ProcessPoolExecutor(1, mp_context=context) as pool:
        return pool.submit(fn, *args).result()


def enhance_speed(weights_dir: str | None, reference_dir: str | None = None) -> None:
    """Seconds per image, MP/s and GFLOP/s (next to the conv peak measured in the same process)
    of the original and seed generators, float32 and the bfloat16 fast mode, each case in a
    fresh process with its own peak RSS; then the fast mode's PSNR against float32."""
    import os

    from dped.forward import bfloat16_native

    weights_dir = weights_dir or os.environ.get("DPED_WEIGHTS_DIR")
    reference_dir = reference_dir or os.environ.get("DPED_REFERENCE_DIR")
    print(
        "\n== enhance (512x512 in one pass, 1536x2048 in the default tiles with exact statistics "
        "for the original; steady state after one "
        "warm-up run; each case in a fresh process) =="
    )
    if not bfloat16_native():
        print("(this CPU has no native bfloat16: the bfloat16 rows are emulated and slow)")
    for model, size, precision in ENHANCE_CASES:
        r = _in_fresh_process(enhance_case, model, size, precision, weights_dir)
        h, w = size
        speedup = ORIGINAL_SECONDS[size] / r["seconds"]
        print(
            f"{r['name']:26} {h:4}x{w:<4} {precision:8} {r['mode']:15} {r['seconds']:6.2f} s/image "
            f"{h * w / 1e6 / r['seconds']:5.2f} MP/s {r['flops'] / r['seconds'] / 1e9:4.0f} "
            f"GFLOP/s (conv peak {r['peak']:4.0f}) {speedup:4.1f}x the original  "
            f"peak RSS {r['rss_gb']:.2f} GB"
        )
    print(
        "(original code, one pass: 1.41 s at 512x512, 16.7 s and 4.1 GB at 1536x2048. GFLOP/s "
        "counts one forward pass; exact mode runs 9 passes of growing depth.)"
    )
    rows = _in_fresh_process(fast_mode_psnr, weights_dir, reference_dir)
    if not rows:
        print("(no original weights or reference images: fast-mode PSNR not measured)")
    for model, image, psnr in rows:
        print(f"fast mode vs float32: {model:16} {image:30} PSNR {psnr:5.1f} dB (target >= 38)")


TFLITE_SIZES = [(720, 1280), (1536, 2048)]  # the PIRM 2018 challenge's resolution; an iPhone's


def tflite_case(path: str, size: tuple[int, int]) -> dict:
    """One exported model at one size, 1 and 2 interpreter threads (XNNPACK), in a fresh
    process: seconds of one invoke after allocation, and the process's peak RSS."""
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


def tflite_speed(weights_dir: str | None) -> None:
    """Each model exported three ways: file size, the TFLite interpreter's seconds per image at
    1280x720 and 1536x2048 with 1 and 2 threads, next to `dped enhance`'s Keras float32 path
    measured in the same run; each case in a fresh process with its own peak RSS."""
    import os

    from dped.export import QUANTIZATIONS, calibration_images, convert, default_calibration

    weights_dir = weights_dir or os.environ.get("DPED_WEIGHTS_DIR")
    print("\n== TensorFlow Lite (XNNPACK; one invoke after allocation; fresh process each) ==")
    with tempfile.TemporaryDirectory() as tmp:
        for model in ("original", "seed"):
            generator, name = _enhance_generator(model, weights_dir)
            files = {}
            for quantize in QUANTIZATIONS:
                images = calibration_images(default_calibration()) if quantize == "int8" else None
                files[quantize] = Path(tmp, f"{model}-{quantize}.tflite")
                files[quantize].write_bytes(convert(generator, quantize, images))
                print(f"{name:26} {quantize:8} {files[quantize].stat().st_size / 1e6:5.2f} MB")
            for size in TFLITE_SIZES:
                h, w = size
                keras = _in_fresh_process(enhance_case, model, size, "float32", weights_dir)
                print(
                    f"{name:26} {h:4}x{w:<4} keras    {keras['mode']:15} "
                    f"{keras['seconds']:6.2f} s (2 threads)          peak RSS {keras['rss_gb']:.2f} GB"
                )
                for quantize, path in files.items():
                    r = _in_fresh_process(tflite_case, str(path), size)
                    if "skipped" in r:
                        print(f"{name:26} {h:4}x{w:<4} {quantize:8} not run: {r['skipped']}")
                        continue
                    one, two = r["seconds"][1], r["seconds"][2]
                    print(
                        f"{name:26} {h:4}x{w:<4} {quantize:8} {'tflite whole':15} {two:6.2f} s "
                        f"(2 threads) {one:6.2f} s (1)  peak RSS {r['rss_gb']:.2f} GB  "
                        f"{keras['seconds'] / two:4.2f}x keras"
                    )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default="experiments/cpu.yaml")
    parser.add_argument("--synthetic-pairs", type=int, default=20000)
    parser.add_argument("--skip-training", action="store_true")
    parser.add_argument("--enhance-only", action="store_true")
    parser.add_argument("--tflite-only", action="store_true", help="only the TFLite exports")
    parser.add_argument("--weights-dir", help="folder with the original models (DPED_WEIGHTS_DIR)")
    parser.add_argument("--reference-dir", help="golden images folder (DPED_REFERENCE_DIR)")
    args = parser.parse_args(argv)
    cfg = Config.from_yaml(args.config).replace(batch_size=50, augment=True)
    if args.enhance_only:
        enhance_speed(args.weights_dir, args.reference_dir)
        return
    if args.tflite_only:
        tflite_speed(args.weights_dir)
        return

    rates = {}
    if Path(cfg.dataset_dir, cfg.phone).is_dir():
        rates["mini dataset"] = pipeline_rate(cfg)
    else:
        print(f"(no mini dataset at {cfg.dataset_dir}/{cfg.phone}: run `make data` first)")
    with tempfile.TemporaryDirectory() as tmp:
        start = time.perf_counter()
        synth = write_synthetic(Path(tmp), args.synthetic_pairs)
        print(
            f"wrote {args.synthetic_pairs} synthetic pairs in {time.perf_counter() - start:.0f} s"
        )
        rates[f"synthetic {args.synthetic_pairs}"] = pipeline_rate(
            synth.replace(batch_size=50, augment=True)
        )
    print("\n== data pipeline (batch 50, flip/rotate augmentation) ==")
    for name, (rate, validation) in rates.items():
        print(f"{name:24} {rate:8.0f} pairs/s   (up-front validation {validation:.1f} s)")
    if args.skip_training:
        return
    print("\n== training step (generator + discriminator, 100x100, VGG-19 relu5_4) ==")
    runs = [("float32", 50), ("float32", 8), ("mixed_bfloat16", 50), ("mixed_bfloat16", 8)]
    for precision, batch in runs:
        seconds = step_seconds(cfg.replace(batch_size=batch, precision=precision))
        print(
            f"{precision:14} batch {batch:3}: {seconds:6.2f} s/iteration  consumes "
            f"{batch / seconds:6.1f} pairs/s   peak RSS so far {peak_rss_gb():.2f} GB"
        )
        if batch == 50 and precision == "float32":
            slowest = min(rate for rate, _ in rates.values())
            print(
                f"           pipeline / consumption = {slowest / (batch / seconds):.0f}x "
                "(target >= 10x)"
            )
    print(
        "(reference, original code on this kind of machine: 16.6 s at batch 50, 9.0 GB; "
        "2.7 s at batch 8)"
    )
    option_effects()
    enhance_speed(args.weights_dir, args.reference_dir)
    tflite_speed(args.weights_dir)


if __name__ == "__main__":
    main()
