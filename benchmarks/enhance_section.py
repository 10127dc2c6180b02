"""`make bench`'s enhance section: the steady cases (enhance_steady.py), then whole processes as
a user runs them (`dped enhance` float32, one pass, `--fast`, and the authors' code) in
interleaved rounds, their ratios the median of the round-by-round ratios.
"""

from __future__ import annotations

import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

from enhance_steady import (
    AUTHORS,
    ENHANCE_SIZES,
    _authors_row,
    _photo,
    _print,
    _rate_row,
    enhance_case,
    folder_throughput,
    generator_flops_per_pixel,
    original_case,
    scratch_disk,
)
from record import conv_peak_gflops, in_fresh_process


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
    return rows


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
