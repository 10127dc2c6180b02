"""`make bench`'s training section: seconds per `DPEDModel.train_step` (generator, discriminator,
VGG-19 content loss), its FLOPs as TensorFlow's profiler counts them in the traced step, and the
rate against the convolution peak measured in the same process with the same threads.

Cases: the cpu profile's step (--config, experiments/cpu.yaml) with 2 threads (a run alone on
this machine) and 1 thread (one of `make reproduce`'s two sweep workers), with the full-width
discriminator the profile scales down (1 thread), the same step under XLA
and in mixed bfloat16 (the choices the profile makes against them), and the full-scale shape
(patches 100, width 64, batch 50). Each case runs in a fresh process: threads are fixed at
TensorFlow's start.
"""

from __future__ import annotations

import os
import statistics
import time

import numpy as np
from record import conv_peak_gflops, in_fresh_process, peak_rss_gb

from dped.config import Config

FULL_SCALE = {"patch_size": 100, "filters": 64, "discriminator_width": 1.0, "batch_size": 50}


def cases(profile: Config) -> list[tuple[str, Config, int, bool]]:
    """(label, config, threads, XLA) of every case."""
    full = profile.replace(**FULL_SCALE)
    return [
        ("profile", profile, 2, False),
        ("profile, 1 thread (a sweep worker)", profile, 1, False),
        (
            "profile, 1 thread, full-width discriminator",
            profile.replace(discriminator_width=1.0),
            1,
            False,
        ),
        ("profile, XLA", profile, 2, True),
        ("profile, mixed bfloat16", profile.replace(precision="mixed_bfloat16"), 2, False),
        ("full-scale shape", full.replace(precision="float32"), 2, False),
        ("full-scale shape, mixed bfloat16", full.replace(precision="mixed_bfloat16"), 2, False),
    ]


def step_gflops(step, cfg: Config) -> float:
    """Floating-point operations of one traced step (convolutions and their gradients included),
    in 10^9, as tf.compat.v1.profiler counts them in the step's graph."""
    import tensorflow as tf

    spec = tf.TensorSpec((cfg.batch_size, cfg.patch_size, cfg.patch_size, 3), tf.float32)
    graph = step.get_concrete_function(spec, spec).graph
    options = tf.compat.v1.profiler.ProfileOptionBuilder.float_operation()
    options["output"] = "none"
    return tf.compat.v1.profiler.profile(graph, options=options).total_float_ops / 1e9


def step_seconds(step, cfg: Config, repeats: int = 3) -> float:
    """Median over `repeats` of the mean seconds per step over a batch of steps, after a warm-up
    (tracing) step; a batch of steps lasts about a second, at least one step."""
    rng = np.random.default_rng(0)
    shape = (cfg.batch_size, cfg.patch_size, cfg.patch_size, 3)
    phone, dslr = rng.random(shape, dtype=np.float32), rng.random(shape, dtype=np.float32)
    start = time.perf_counter()
    float(step(phone, dslr)["generator"])
    steps = max(1, round(1.0 / (time.perf_counter() - start)))
    means = []
    for _ in range(repeats):
        start = time.perf_counter()
        for _ in range(steps):
            logs = step(phone, dslr)
        float(logs["generator"])
        means.append((time.perf_counter() - start) / steps)
    return statistics.median(means)


def training_case(cfg: Config, threads: int, xla: bool) -> dict:
    os.environ.update(TF_NUM_INTRAOP_THREADS=str(threads), TF_NUM_INTEROP_THREADS="1")
    import warnings

    import tensorflow as tf

    from dped.training import DPEDModel

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the random-VGG warning: an explicit choice here
        model = DPEDModel(cfg)
    step = model.train_step
    if xla:
        python_step = DPEDModel.train_step.python_function
        step = tf.function(lambda p, d: python_step(model, p, d), jit_compile=True)
    gflops = step_gflops(step, cfg)
    seconds = step_seconds(step, cfg)
    peak = conv_peak_gflops("bfloat16" if "bfloat16" in cfg.precision else "float32")
    return {"seconds": seconds, "gflops": gflops, "peak": peak, "rss_gb": peak_rss_gb()}


def training(args) -> list[dict]:
    profile = Config.from_yaml(args.config)
    rows = []
    for label, cfg, threads, xla in cases(profile):
        r = in_fresh_process(training_case, cfg, threads, xla)
        rate = r["gflops"] / r["seconds"]
        rows.append(
            {
                "case": label,
                "patch": cfg.patch_size,
                "width": cfg.filters,
                "batch": cfg.batch_size,
                "precision": cfg.precision,
                "threads": threads,
                "s/iteration": r["seconds"],
                "GFLOP/iteration": r["gflops"],
                "GFLOP/s": rate,
                "conv peak GFLOP/s": r["peak"],
                "% peak": 100 * rate / r["peak"],
                "peak RSS GB": r["rss_gb"],
            }
        )
        print(
            f"training  {label:34} {r['seconds'] * 1000:8.1f} ms/iteration  "
            f"{r['gflops']:7.2f} GFLOP  {rate:6.1f} GFLOP/s ({100 * rate / r['peak']:.0f}% of "
            f"{r['peak']:.0f})"
        )
    return rows
