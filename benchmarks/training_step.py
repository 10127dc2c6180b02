"""`make bench`'s training section: seconds per `DPEDModel.train_step` (generator, discriminator,
VGG-19 content loss), its FLOPs as TensorFlow's profiler counts them in the traced step, and the
rate against the convolution peak measured in the same process with the same threads.

Cases: the cpu profile's step (--config, experiments/cpu.yaml) with 2 threads (a run alone on
this machine) and 1 thread (one of `make reproduce`'s two sweep workers), with the full-width
discriminator the profile scales down (1 thread), the same step under XLA and in mixed
bfloat16 (1 and 2 threads: where each helps is measured, not assumed), and the full-scale shape
(patches 100, width 64, batch 50). Each case runs in a fresh process: threads are fixed at
TensorFlow's start; the 1-thread cases in interleaved rounds (ROUNDS).
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
        (
            "profile, 1 thread, mixed bfloat16",
            profile.replace(precision="mixed_bfloat16"),
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


# The 1-thread cases are compared with each other (the profile's choices against a sweep
# worker's step): they run in turn, round by round, each round in fresh processes, so that a
# drift in this machine's speed reaches each alike; the ratio is the median of the rounds'.
ROUNDS = 3
REFERENCE = "profile, 1 thread (a sweep worker)"


def measure(listed: list) -> dict[str, list[dict]]:
    """Each case's measurements: one, or ROUNDS for the 1-thread cases, interleaved."""
    runs = {label: [] for label, *_ in listed}
    paired = [case for case in listed if case[2] == 1]
    for _ in range(ROUNDS):
        for label, cfg, threads, xla in paired:
            runs[label].append(in_fresh_process(training_case, cfg, threads, xla))
    for label, cfg, threads, xla in listed:
        if not runs[label]:
            runs[label].append(in_fresh_process(training_case, cfg, threads, xla))
    return runs


def training(args) -> list[dict]:
    listed = cases(Config.from_yaml(args.config))
    runs = measure(listed)
    rows = []
    for label, cfg, threads, _ in listed:
        seconds = statistics.median(r["seconds"] for r in runs[label])
        gflops, peak = runs[label][0]["gflops"], statistics.median(r["peak"] for r in runs[label])
        rate = gflops / seconds
        row = {
            "case": label,
            "patch": cfg.patch_size,
            "width": cfg.filters,
            "batch": cfg.batch_size,
            "precision": cfg.precision,
            "threads": threads,
            "s/iteration": seconds,
            "GFLOP/iteration": gflops,
            "GFLOP/s": rate,
            "conv peak GFLOP/s": peak,
            "% peak": 100 * rate / peak,
            "peak RSS GB": max(r["rss_gb"] for r in runs[label]),
        }
        if len(runs[label]) > 1:
            row["rounds ms"] = " ".join(f"{1000 * r['seconds']:.1f}" for r in runs[label])
            pairs = zip(runs[label], runs[REFERENCE])
            row["x sweep worker"] = statistics.median(a["seconds"] / b["seconds"] for a, b in pairs)
        rows.append(row)
        print(
            f"training  {label:44} {seconds * 1000:8.1f} ms/iteration  "
            f"{gflops:7.2f} GFLOP  {rate:6.1f} GFLOP/s ({100 * rate / peak:.0f}% of {peak:.0f})"
            + (
                f"  x{row['x sweep worker']:.2f} of the sweep worker's"
                if "rounds ms" in row
                else ""
            )
        )
    return rows
