"""The `dped` command line. Subcommands import TensorFlow only when they need it."""

from __future__ import annotations

import argparse
import json
import signal
import sys
import threading
from dataclasses import fields

from dped.config import Config, ConfigError, parse_override, resolve


def resolve_config(config: str | None, overrides: list[str]) -> Config:
    """A YAML file or preset name, then `key=value` overrides: the Config every command uses."""
    return resolve(config, dict(parse_override(s) for s in overrides))


def _config_command(args: argparse.Namespace) -> None:
    if args.docs:
        print(config_docs(), end="")
        return
    print(resolve_config(args.config, args.set).to_yaml(), end="")


def config_docs() -> str:
    """Every key: its `paper` and `seed` values side by side, its meaning, and for each
    difference where the seed's value comes from."""
    from dped.config import SEED_SOURCES, preset

    paper, seed = preset("paper").flat(), preset("seed").flat()
    lines = [f"{'key':<18} {'paper':<28} {'seed':<20} meaning", "-" * 100]
    for key in paper:
        mark = "*" if paper[key] != seed[key] else " "
        lines.append(f"{key:<17}{mark} {paper[key]!r:<28} {seed[key]!r:<20} {Config.doc(key)}")
        if key in SEED_SOURCES and SEED_SOURCES[key][1]:
            lines.append(f"{'':<68} seed: {SEED_SOURCES[key][1]}")
    lines.append("* = the seed's code differs from the authors' (aiff22/DPED) here")
    return "\n".join(lines) + "\n"


def _enhance_command(args: argparse.Namespace) -> int:
    from pathlib import Path

    from dped import quiet

    with quiet.skipping():  # Keras's optional imports (plotting, pandas, ...): ~1 s a start
        from dped.inference.driver import enhance_files, load_generator
        from dped.inference.graphs import bfloat16_native, inference_graphs

    precision = "float32"
    if args.fast and bfloat16_native():
        precision = "bfloat16"
    elif args.fast:
        print(
            "dped enhance: --fast: this CPU has no native bfloat16; using float32", file=sys.stderr
        )
    if args.tile < 1:
        raise ValueError(
            f"--tile {args.tile}: a tile side in pixels must be positive (default 448)"
        )
    graphs = inference_graphs(load_generator(args.model, args.weights_dir), precision)
    failures = enhance_files(
        args.inputs,
        graphs,
        Path(args.out),
        args.format,
        args.tile,
        args.raw,
        args.before_after,
        args.overwrite,
        Path(args.scratch) if args.scratch else None,
        args.max_pixels,
    )
    return 1 if failures else 0


def _export_command(args: argparse.Namespace) -> None:
    from dped.export import export
    from dped.inference.tflite import TFLiteGenerator

    out = export(
        args.model, args.out, args.quantize, args.calibration, args.weights_dir, args.overwrite
    )
    fp32 = TFLiteGenerator(out).float_ops if args.quantize == "int8" else []
    note = f"; ops left in float32: {', '.join(fp32)}" if fp32 else ""
    print(f"{out}: {out.stat().st_size / 1e6:.2f} MB ({args.quantize}){note}")


def _sweep_command(args: argparse.Namespace) -> int:
    from dped import sweep

    return sweep.run_from_args(args)


def _report_command(args: argparse.Namespace) -> None:
    from dped import report

    built = report.build(args.results, args.out)
    print(f"{built.written()} ({len(built.runs)} runs)")


def _calibrate_command(args: argparse.Namespace) -> None:
    from dped import calibrate
    from dped.config import parse_override, preset

    overrides = dict(parse_override(s) for s in args.set)
    configs = {name: preset(name).replace(**overrides) for name in args.presets}
    print(calibrate.table(configs, args.batches).to_string(float_format="{:.4g}".format))
    cfg = next(iter(configs.values()))
    print(f"(vgg_weights={cfg.vgg_weights}, batch {cfg.batch_size}, {args.batches} batches)")


def _data_command(args: argparse.Namespace) -> None:
    import time
    from pathlib import Path

    from dped import minidata
    from dped.config import project_root
    from dped.evaluation import ms_ssim_text
    from dped.runs import IDENTITY_FILE, atomic_write

    default = project_root() / "experiments" / "cpu.yaml"  # found from any working directory
    cfg = resolve_config(args.config or str(default), args.set)
    start = time.perf_counter()
    if not args.rebuild and minidata.is_current(cfg, args.out):
        base = Path(args.out) / minidata.MINI_PHONE
        print(f"mini dataset: {base} is already built with these settings (--rebuild: again)")
    else:
        base = minidata.build(cfg, args.out)
        files = sum(1 for p in base.rglob("*") if p.is_file())
        print(f"mini dataset: {files} files under {base} in {time.perf_counter() - start:.1f} s")
    baseline = minidata.identity_baseline(cfg, args.out)
    atomic_write(base / IDENTITY_FILE, (json.dumps(baseline, indent=1) + "\n").encode())
    print(
        f"identity baseline (phone vs DSLR, {baseline['patches']} test patches): "
        f"PSNR {baseline['psnr_dslr_enhanced']:.2f} dB (mean per patch, the seed's protocol; "
        f"{baseline['psnr_mse']:.2f} from the MSE over all), SSIM {baseline['ssim']:.4f}, "
        f"MS-SSIM {ms_ssim_text(baseline)}: a trained model must beat this"
    )


def _train_command(args: argparse.Namespace) -> None:
    from dped.training import train

    cfg = resolve_config(args.config, args.set)
    run_dir = train(cfg, out=args.out, resume=args.resume)
    print(f"run folder: {run_dir}")


def _align_command(args: argparse.Namespace) -> int:
    from dped.align import AlignSettings, build

    settings = AlignSettings(**{f.name: getattr(args, f.name) for f in fields(AlignSettings)})
    base, reports, unpaired = build(
        args.phone_dir, args.dslr_dir, args.phone, args.out, settings, args.pairs
    )
    for path in unpaired:
        print(f"dped align: unpaired (no photo of the same stem on the other side): {path}")
    aligned = [r for r in reports if r.status == "aligned"]
    kept = {split: sum(r.kept for r in aligned if r.split == split) for split in ("train", "test")}
    print(
        f"{base}: {len(aligned)} of {len(reports)} pairs aligned, {kept['train']} training and "
        f"{kept['test']} test patch pairs; report: {base / 'align_report.md'}"
    )
    if not aligned:
        return 1
    if not kept["test"] or not kept["train"]:
        print("dped align: warning: a split has no patches; dped train needs both", file=sys.stderr)
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="dped", description="DPED photo enhancement")
    parser.add_argument(
        "--verbose",
        action="store_true",
        help="show TensorFlow's C++ start-up and log lines (hidden by default: dped/quiet.py)",
    )
    sub = parser.add_subparsers(dest="command", required=True)
    show = sub.add_parser("config", help="print the resolved config as YAML")
    show.add_argument("--config", help="experiments/<name>.yaml or a preset name (paper, seed)")
    show.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    show.add_argument(
        "--docs",
        action="store_true",
        help="every key: paper and seed side by side, its meaning, where the seed's value comes from",
    )
    show.set_defaults(func=_config_command)
    data = sub.add_parser("data", help="build the mini dataset and print the identity baseline")
    data.add_argument(
        "--config",
        help="config whose mini.* keys, seed and patch_size shape the set (not where it goes; "
        "default: the repository's experiments/cpu.yaml)",
    )
    data.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    data.add_argument(
        "--out",
        default="data/dped-mini",  # dped.minidata.MINI_ROOT (not imported: it pulls in numpy)
        help="root to build <out>/mini in (default data/dped-mini); never a folder of yours",
    )
    data.add_argument(
        "--rebuild", action="store_true", help="build even if <out>/mini has these settings"
    )
    data.set_defaults(func=_data_command)
    al = sub.add_parser(
        "align", help="a DPED dataset (aligned patch pairs) from your phone and DSLR photos"
    )
    al.add_argument("phone_dir", help="the phone's photos")
    al.add_argument("dslr_dir", help="the DSLR's photos of the same scenes (same file stems)")
    al.add_argument("--phone", required=True, help="the phone's name: the dataset's folder")
    al.add_argument("--out", required=True, help="dataset root: writes <out>/<phone>")
    al.add_argument("--pairs", help="CSV of explicit pairs: phone_file,dslr_file per line")
    from dped.align import AlignSettings

    for f in fields(AlignSettings):
        al.add_argument(f"--{f.name.replace('_', '-')}", type=type(f.default), default=f.default,
                        help=f"{f.metadata['help']} (default {f.default})")  # fmt: skip
    al.set_defaults(func=_align_command)
    tr = sub.add_parser("train", help="train (or --resume) a run into results/<name>")
    tr.add_argument("--config", required=True, help="experiments/<name>.yaml or a preset name")
    tr.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    tr.add_argument("--out", help="run folder (default results/<name>)")
    tr.add_argument("--resume", action="store_true", help="continue from the latest checkpoint")
    tr.set_defaults(func=_train_command)
    en = sub.add_parser("enhance", help="enhance photos of any size")
    en.add_argument("inputs", nargs="+", metavar="IMAGE_OR_FOLDER")
    en.add_argument(
        "--model",
        required=True,
        help="a run folder, iphone_orig | blackberry_orig | sony_orig, a TF1 checkpoint prefix "
        "or an exported FILE.tflite",
    )
    en.add_argument("--weights-dir", help="folder of the original models (or DPED_WEIGHTS_DIR)")
    en.add_argument("--out", required=True, help="output folder")
    en.add_argument(
        "--tile",
        type=int,
        default=448,  # inference.tiling.DEFAULT_TILE, not imported here: it pulls in TensorFlow
        help="work unit in pixels (448): a norm-free model's tile side; an instance-norm "
        "model's bands of full-width rows hold about tile^2 pixels. Photos that fit run in "
        "one pass",
    )
    en.add_argument(
        "--scratch",
        metavar="DIR",
        help="folder for an instance-norm model's scratch file on large photos (default: a "
        "temporary folder in --out; about 1 GB of disk per megapixel, removed afterwards)",
    )
    en.add_argument(
        "--max-pixels",
        type=int,
        default=50_000_000,
        metavar="N",
        help="refuse photos whose header claims more pixels than N, before decoding them "
        "(default 50000000: a 45 MP camera fits, a forged header cannot exhaust memory)",
    )
    en.add_argument("--format", choices=["png", "jpg"], default="png")
    en.add_argument("--before-after", action="store_true", help="phone | enhanced side by side")
    en.add_argument("--raw", action="store_true", help="also write the unclipped float32 .npy")
    en.add_argument(
        "--overwrite", action="store_true", help="replace outputs that already exist in --out"
    )
    en.add_argument(
        "--fast",
        action="store_true",
        help="bfloat16 convolutions where the CPU has them (faster; a PSNR target of 38 dB or more against float32)",
    )
    en.set_defaults(func=_enhance_command, quick_exit=True)
    ex = sub.add_parser("export", help="export a model to TensorFlow Lite for phones")
    ex.add_argument(
        "--model",
        required=True,
        help="a run folder, iphone_orig | blackberry_orig | sony_orig or a TF1 checkpoint prefix",
    )
    ex.add_argument("--weights-dir", help="folder of the original models (or DPED_WEIGHTS_DIR)")
    ex.add_argument("--out", required=True, help="the FILE.tflite to write")
    ex.add_argument("--overwrite", action="store_true", help="replace --out if it already exists")
    ex.add_argument(
        "--quantize",
        default="none",  # checked by dped.export: a bad value is one line, not a usage block
        help="none (float32) | float16 (half-size weights) | int8 (convolutions in int8, "
        "calibrated on --calibration)",
    )
    ex.add_argument(
        "--calibration",
        help="folder of photos int8 is calibrated on (default: the mini dataset's patches)",
    )
    ex.set_defaults(func=_export_command)
    sw = sub.add_parser("sweep", help="run an experiment YAML's notebooks with papermill")
    from dped.sweep import add_arguments

    add_arguments(sw)
    sw.set_defaults(func=_sweep_command)
    rep = sub.add_parser(
        "report", help="summary.md and PSNR / effect figures of a sweep, from its run folders"
    )
    rep.add_argument("results", help="a sweep's results folder, e.g. results/ablations")
    rep.add_argument("--out", help="write there instead of beside the runs")
    rep.set_defaults(func=_report_command)
    cal = sub.add_parser("calibrate", help="measure each loss term at initialisation")
    cal.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a config key of every preset (e.g. vgg_weights=random)",
    )
    cal.add_argument("--batches", type=int, default=3, help="seeded batches averaged")
    cal.add_argument("--presets", nargs="+", default=["paper", "readme", "seed"])
    cal.set_defaults(func=_calibrate_command)
    return parser


def error_line(err: BaseException) -> str:
    """One line for the user: the path and the reason for OS errors, else the message."""
    if isinstance(err, OSError) and err.filename and not str(err).startswith(str(err.filename)):
        return f"{err.filename}: {err.strerror or err}"
    text = str(err).strip()
    first = text.splitlines()[0] if text else ""
    known = (ConfigError, ValueError, RuntimeError, OSError)
    return first if isinstance(err, known) and first else f"{type(err).__name__}: {first}"


def main(argv: list[str] | None = None) -> int:
    return _run(build_parser().parse_args(argv))


def entry() -> None:
    """`dped` as installed (and `python -m dped.cli`). A command that has written and closed
    everything when it returns (`quick_exit`: enhance) leaves without the interpreter's
    teardown: after TensorFlow is imported that takes ~0.7 s here, unloading modules and
    freeing memory that the system takes back at once."""
    import logging
    import os

    args = build_parser().parse_args()
    code = _run(args)
    if getattr(args, "quick_exit", False):
        logging.shutdown()
        for stream in (sys.stdout, sys.stderr):
            try:
                stream.flush()
            except (OSError, ValueError):  # a closed pipe: nothing more can reach it
                pass
        os._exit(code)
    sys.exit(code)


def _run(args: argparse.Namespace) -> int:
    import os

    if args.verbose:  # read when TensorFlow is imported, which no command has done yet
        os.environ["TF_CPP_MIN_LOG_LEVEL"] = "0"
    previous = {sig: signal.signal(sig, _on_signal) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        code = args.func(args)
    except KeyboardInterrupt as err:  # the cleanup of every `finally` and `with` has run
        how = "terminated" if isinstance(err, Terminated) else "interrupted"
        print(
            f"dped: {how} (outputs are written atomically: nothing half-written)",
            file=sys.stderr,
        )
        return 143 if isinstance(err, Terminated) else 130
    except Exception as err:  # noqa: BLE001  one line, never a traceback (DPED_DEBUG=1 shows it)
        if os.environ.get("DPED_DEBUG") == "1":
            raise
        print(f"dped: error: {error_line(err)}", file=sys.stderr)
        return 2
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    return code or 0


class Terminated(KeyboardInterrupt):
    """SIGTERM, raised where the program is, so that it unwinds as on Ctrl-C (scratch folders
    and temporary files removed) instead of dying on the spot."""


# Ctrl-C and SIGTERM unwind, so that every `finally` and `with` cleans up; but a cleanup that
# hangs (a Dask cluster that will not close, the interpreter's exit joining its threads) must not
# keep the user's terminal. This long after the signal the process leaves as it is: outputs are
# written atomically, so that leaves nothing half-written.
UNWIND_SECONDS = 60.0


_UNWINDING = threading.Event()  # set by the first signal: one deadline, however many follow


def _on_signal(signum, frame):
    code = 143 if signum == signal.SIGTERM else 130
    if not _UNWINDING.is_set():
        _UNWINDING.set()
        timer = threading.Timer(UNWIND_SECONDS, _leave, args=(code,))
        timer.daemon = True  # a prompt unwind must not wait for it
        timer.start()
    raise Terminated() if signum == signal.SIGTERM else KeyboardInterrupt()


def _leave(code: int) -> None:
    import os

    print(
        f"dped: cleanup still running {UNWIND_SECONDS:.0f} s after the signal: leaving without it"
        " (outputs are written atomically: nothing half-written)",
        file=sys.stderr,
        flush=True,
    )
    os._exit(code)


if __name__ == "__main__":
    entry()
