"""Summaries of a sweep: final-metric table (mean +- spread over seeds), modification effects,
figures, and results/<experiment>/summary.md. pandas + matplotlib only."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd

from dped import plots

MODIFICATIONS = {  # leave-one-out run -> the modification it reverts
    "seed-instance-norm": "(1) no normalisation",
    "seed-tanh-head": "(2) 1x1-conv head",
    "seed-paper-weights": "(3) rescaled loss weights",
    "seed-no-augment": "(4) flip/rotate augmentation",
    "seed-lr-5e-4": "(5) lr 1e-4",
}


def collect(results: str | Path) -> pd.DataFrame:
    """One row per finished run folder: run, seed, final PSNR / SSIM / MS-SSIM, wall time."""
    rows = []
    for folder in sorted(Path(results).glob("*-s*/")):
        if not (folder / "metrics.csv").is_file():
            continue
        last = plots.read_metrics(folder).iloc[-1]
        run, _, seed = folder.name.rpartition("-s")
        rows.append(
            {
                "run": run,
                "seed": int(seed),
                "steps": int(last["step"]),
                "psnr": last["psnr"],
                "ssim": last["ssim"],
                "ms_ssim": last["ms_ssim"],
                "wall_s": last["wall_s"],
                "folder": str(folder),
            }
        )
    return pd.DataFrame(rows)


def final_table(runs: pd.DataFrame) -> pd.DataFrame:
    """Mean and standard deviation over seeds (std is NaN with one seed)."""
    stats = runs.groupby("run")[["psnr", "ssim", "ms_ssim", "wall_s"]].agg(["mean", "std"])
    stats["seeds"] = runs.groupby("run")["seed"].count()
    return stats


def effects(runs: pd.DataFrame) -> pd.DataFrame:
    """PSNR of the seed minus each leave-one-out run, per seed, then mean and spread."""
    by = runs.pivot_table(index="seed", columns="run", values="psnr")
    rows = []
    for run, label in MODIFICATIONS.items():
        if run in by and "seed" in by:
            diff = (by["seed"] - by[run]).dropna()
            rows.append(
                {
                    "modification": label,
                    "run": run,
                    "effect_db": diff.mean(),
                    "spread_db": diff.std(),
                    "seeds": len(diff),
                }
            )
    return pd.DataFrame(rows)


def effects_chart(table: pd.DataFrame, out: str | Path | None = None):
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 3.6))
    errors = table["spread_db"].fillna(0)
    ax.barh(table["modification"], table["effect_db"], xerr=errors, color="tab:blue")
    ax.axvline(0, c="k", lw=0.8)
    ax.set(
        xlabel="PSNR of seed minus seed-without-it (dB): > 0 means the modification helps",
        title="Effect of each modification (leave-one-out)",
    )
    ax.invert_yaxis()
    return plots._save(fig, out)


def baseline(dataset_dir: str | Path, phone: str) -> dict | None:
    path = Path(dataset_dir) / phone / "identity_baseline.json"
    return json.loads(path.read_text()) if path.is_file() else None


def _fmt(mean: float, std: float, digits: int) -> str:
    return f"{mean:.{digits}f}" + ("" if pd.isna(std) else f" +- {std:.{digits}f}")


def write_summary(
    results: str | Path,
    runs: pd.DataFrame,
    table: pd.DataFrame,
    effect: pd.DataFrame,
    base: dict | None,
    note: str = "",
) -> Path:
    lines = [f"# {Path(results).name}: final test metrics", ""]
    if base:
        lines += [
            f"Identity baseline (phone vs DSLR): PSNR {base['psnr']:.2f} dB, "
            f"MS-SSIM {base['ms_ssim']:.4f}.",
            "",
        ]
    lines += [
        "| run | seeds | PSNR (dB) | SSIM | MS-SSIM | wall time (s) |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for run, r in table.iterrows():
        lines.append(
            f"| {run} | {int(r[('seeds', '')])} | {_fmt(r['psnr', 'mean'], r['psnr', 'std'], 2)} | "
            f"{_fmt(r['ssim', 'mean'], r['ssim', 'std'], 4)} | "
            f"{_fmt(r['ms_ssim', 'mean'], r['ms_ssim', 'std'], 4)} | "
            f"{_fmt(r['wall_s', 'mean'], r['wall_s', 'std'], 0)} |"
        )
    lines += [
        "",
        "## Effect of each modification (seed minus leave-one-out, PSNR)",
        "",
        "| modification | effect (dB) | seeds |",
        "|---|---:|---:|",
    ]
    for _, r in effect.iterrows():
        lines.append(
            f"| {r['modification']} | {_fmt(r['effect_db'], r['spread_db'], 2)} | {r['seeds']} |"
        )
    lines += ["", "![PSNR curves](psnr_curves.png)", "", "![effects](effects.png)", ""]
    if note:
        lines += [note, ""]
    path = Path(results) / "summary.md"
    path.write_text("\n".join(lines))
    return path
