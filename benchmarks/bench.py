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
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import record  # noqa: E402  (benchmarks/ is a folder of scripts, not a package)
import training_step  # noqa: E402
from enhance_section import enhance  # noqa: E402
from enhance_steady import _enhance_generator, enhance_case  # noqa: E402
from record import in_fresh_process, peak_rss_gb  # noqa: E402

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
