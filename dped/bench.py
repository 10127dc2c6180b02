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
    """This machine's dense-convolution rate: a 3x3 64->64 conv on 512x512, best of 3."""
    import tensorflow as tf

    dtype = tf.bfloat16 if precision == "mixed_bfloat16" else tf.float32
    x = tf.random.normal([1, 512, 512, 64], dtype=tf.float32)
    k = tf.random.normal([3, 3, 64, 64], dtype=tf.float32)
    x, k = tf.cast(x, dtype), tf.cast(k, dtype)
    conv = tf.function(lambda a, b: tf.nn.conv2d(a, b, 1, "SAME"))
    conv(x, k)
    times = []
    for _ in range(3):
        start = time.perf_counter()
        conv(x, k).numpy()
        times.append(time.perf_counter() - start)
    return 2 * 9 * 64 * 64 * 512 * 512 / min(times) / 1e9


def enhance_speed(weights_dir: str | None) -> None:
    """Seconds per image, MP/s and GFLOP/s of the original and seed generators, tiled or not."""
    import os

    from dped.enhance import enhance_image
    from dped.models import build_generator
    from dped.pretrained import original_generator

    print(
        "\n== enhance (float32 unless noted; original code: 1.41 s at 512x512, 16.7 s at "
        "1536x2048 in one pass, 4.1 GB) =="
    )
    print(
        f"dense 3x3 64->64 conv peak: {conv_peak_gflops():.0f} GFLOP/s float32, "
        f"{conv_peak_gflops('mixed_bfloat16'):.0f} GFLOP/s bfloat16"
    )
    weights_dir = weights_dir or os.environ.get("DPED_WEIGHTS_DIR")
    models = {"seed (random weights)": build_generator("none", "conv1x1", init="he")}
    if weights_dir and Path(weights_dir, "iphone_orig.index").is_file():
        models["iphone_orig"] = original_generator("iphone_orig", weights_dir)
    else:
        models["original architecture (random weights)"] = build_generator("instance", "tanh")
    rng = np.random.default_rng(0)
    # No one-pass 1536x2048 here: Keras' eager call held 22 GB before it was killed.
    for (h, w), tile in (((512, 512), 512), ((1536, 2048), 512)):
        image = rng.random((h, w, 3), dtype=np.float32)
        for name, generator in models.items():
            enhance_image(generator, image[:64, :64], tile)  # warm-up
            start = time.perf_counter()
            enhance_image(generator, image, tile)
            seconds = time.perf_counter() - start
            mode = "one pass" if tile >= max(h, w) else f"tiled {tile} (exact)"
            flops = generator_flops_per_pixel(generator) * h * w
            print(
                f"{name:38} {h}x{w} {mode:18} {seconds:7.2f} s  {h * w / 1e6 / seconds:5.2f} MP/s"
                f"  {flops / seconds / 1e9:6.0f} GFLOP/s   peak RSS so far {peak_rss_gb():.2f} GB"
            )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default="experiments/cpu.yaml")
    parser.add_argument("--synthetic-pairs", type=int, default=20000)
    parser.add_argument("--skip-training", action="store_true")
    parser.add_argument("--enhance-only", action="store_true")
    parser.add_argument("--weights-dir", help="folder with the original models (DPED_WEIGHTS_DIR)")
    args = parser.parse_args(argv)
    cfg = Config.from_yaml(args.config).replace(batch_size=50, augment=True)
    if args.enhance_only:
        enhance_speed(args.weights_dir)
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
    enhance_speed(args.weights_dir)


if __name__ == "__main__":
    main()
