"""Where benchmark numbers go: results/bench/<machine>.json and a markdown table beside it.

A record holds the machine (CPU model, its widest vector extension, cores, native bfloat16,
versions) and one list of rows per section; every number in it was measured by benchmarks/bench.py in that run. The README
links the generated markdown and copies no figure by hand.
"""

from __future__ import annotations

import json
import os
import platform
import re
import time
from pathlib import Path


def _cpuinfo(field: str) -> str | None:
    """The first `field` of /proc/cpuinfo (None where there is none)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.split(":", 1)[0].strip() == field:
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return None


def cpu_model() -> str:
    return _cpuinfo("model name") or platform.processor() or platform.machine()


# Widest first. One model name covers CPUs far apart in speed (cloud hosts report "AMD EPYC"
# for an AVX2-only and an AVX512-BF16 generation alike), so records are kept apart by this too.
ISA_TIERS = (
    ("amx_bf16", "amx"),
    ("avx512_bf16", "avx512-bf16"),
    ("avx512f", "avx512"),
    ("avx2", "avx2"),
)


def isa(flags: str | None = None) -> str:
    """This CPU's widest vector or matrix extension TensorFlow's kernels use ("" if none known)."""
    present = set(((_cpuinfo("flags") if flags is None else flags) or "").split())
    return next((name for flag, name in ISA_TIERS if flag in present), "")


def peak_rss_gb() -> float:
    """This process's peak RSS in GB (10^9 bytes, as the issues' budgets), from VmHWM: the
    high-water mark of this process's own memory since it exec'd. (ru_maxrss would also hold the
    parent's mark at the exec: a fresh process spawned by a bench holding TensorFlow.)"""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024 / 1e9  # kB
    raise RuntimeError("no VmHWM in /proc/self/status")


def in_fresh_process(fn, *args):
    """fn(*args) in a new interpreter: its peak RSS and thread settings are its own. It ends
    with the bench: a case left running after its bench is killed would load every later one."""
    import concurrent.futures
    import multiprocessing

    context = multiprocessing.get_context("spawn")
    with concurrent.futures.ProcessPoolExecutor(
        1, mp_context=context, initializer=_end_with_parent, initargs=(os.getpid(),)
    ) as pool:
        return pool.submit(fn, *args).result()


def _end_with_parent(parent: int) -> None:
    """Ask Linux for a SIGTERM when the parent dies (prctl PR_SET_PDEATHSIG); elsewhere a no-op."""
    import ctypes
    import signal

    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, signal.SIGTERM)  # 1: PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        return
    if os.getppid() != parent:  # died before the request was in place
        os.kill(os.getpid(), signal.SIGTERM)


def conv_peak_gflops(precision: str = "float32") -> float:
    """This machine's dense-convolution peak: the best rate of 3x3 64->64 convolutions on
    256x256 and 512x512 maps, one alone and four in a row, best of 10 runs each. (One 512x512
    convolution alone ran below the generators' own rate on an Intel Xeon with AMX: a peak must
    be the best the kernels reach.)"""
    import tensorflow as tf

    dtype = tf.bfloat16 if precision == "bfloat16" else tf.float32
    k = tf.cast(tf.random.normal([3, 3, 64, 64]) * 0.05, dtype)

    def chain(x, k, n):
        for _ in range(n):
            x = tf.nn.conv2d(x, k, 1, "SAME")
        return x

    best = 0.0
    for n in (1, 4):
        graph = tf.function(lambda a, b, n=n: chain(a, b, n))
        for side in (256, 512):
            x = tf.cast(tf.random.normal([1, side, side, 64]), dtype)
            graph(x, k).numpy()
            times = []
            for _ in range(10):
                start = time.perf_counter()
                graph(x, k).numpy()
                times.append(time.perf_counter() - start)
            best = max(best, n * 2 * 9 * 64 * 64 * side * side / min(times) / 1e9)
    return best


def machine() -> dict:
    import tensorflow as tf

    import dped
    from dped.inference.graphs import bfloat16_native

    return {
        "cpu": cpu_model(),
        "isa": isa(),
        "cores": os.cpu_count(),
        "bfloat16_native": bfloat16_native(),
        "gpus": [d.name for d in tf.config.list_physical_devices("GPU")],
        "tensorflow": tf.__version__,
        "dped": dped.__version__,
        "python": platform.python_version(),
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
    }


def machine_slug(info: dict) -> str:
    """A file name for this kind of machine: CPU model, widest extension and core count."""
    words = re.sub(r"\((r|tm)\)|processor|\d+-core", "", info["cpu"].lower())
    words += f" {info.get('isa', '')} {info['cores']}c"
    return re.sub(r"[^a-z0-9]+", "-", words).strip("-")


def write(sections: dict[str, list[dict]], out_dir: Path, info: dict) -> Path:
    """Merge `sections` into <out_dir>/<machine>.json (sections not run keep their last
    measurement, each with its own date) and rewrite the markdown; returns the JSON path."""
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / f"{machine_slug(info)}.json"
    record = json.loads(path.read_text()) if path.is_file() else {"sections": {}}
    record["machine"] = info
    for name, rows in sections.items():
        record["sections"][name] = {"date": info["date"], "rows": rows}
    path.write_text(json.dumps(record, indent=1) + "\n")
    path.with_suffix(".md").write_text(markdown(record))
    return path


def markdown(record: dict) -> str:
    info = record["machine"]
    lines = [
        f"# Benchmarks on {info['cpu']}{_isa_words(info)}, {info['cores']} cores",
        "",
        f"TensorFlow {info['tensorflow']}, dped {info['dped']}, Python {info['python']}; native "
        f"bfloat16: {'yes' if info['bfloat16_native'] else 'no'}; GPUs: "
        f"{', '.join(info['gpus']) or 'none'}. Written by `make bench` (benchmarks/bench.py); "
        "every figure was measured in the run dated under its section.",
    ]
    for name, section in record["sections"].items():
        lines += ["", f"## {name}", "", f"measured {section['date']}", ""]
        lines += table(section["rows"])
    return "\n".join(lines) + "\n"


def _isa_words(info: dict) -> str:
    return f" ({info['isa'].upper()})" if info.get("isa") else ""


def table(rows: list[dict]) -> list[str]:
    if not rows:
        return ["(no rows)"]
    columns = list(dict.fromkeys(key for row in rows for key in row))
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    for row in rows:
        lines.append("| " + " | ".join(_cell(row.get(c)) for c in columns) + " |")
    return lines


def _cell(value) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return f"{value:.3g}" if abs(value) < 1000 else f"{value:.0f}"
    return str(value)
