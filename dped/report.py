"""Summaries of a sweep: final-metric table (mean +- spread over seeds), modification effects,
figures, and results/<experiment>/summary.md. pandas + matplotlib only."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import yaml

from dped import plots


def experiment(results: str | Path) -> tuple[str, dict[str, str]]:
    """(baseline run, {run: what it reverts}) from the experiment.yaml the sweep copied there."""
    spec = _spec(results)
    labels = {run: s["reverts"] for run, s in spec["runs"].items() if s.get("reverts")}
    return spec.get("baseline", "seed"), labels


def _spec(results: str | Path) -> dict:
    path = Path(results) / "experiment.yaml"
    if not path.is_file():
        raise FileNotFoundError(f"no {path}: run the sweep (make sweep) to make {results}")
    return yaml.safe_load(path.read_text())


def collect_experiment(results: str | Path) -> pd.DataFrame:
    """`collect(results)`, plus the baseline's runs from the experiment named by
    `baseline_from` (a sibling folder) when the experiment borrows them."""
    runs = collect(results)
    source = _spec(results).get("baseline_from")
    if not source:
        return runs
    baseline, _ = experiment(results)
    other = collect(Path(results).parent / source)
    borrowed = other[other["run"] == baseline] if len(other) else other
    if borrowed.empty:
        raise FileNotFoundError(
            f"{results} compares with the '{baseline}' runs of {Path(results).parent / source}, "
            f"which has none: run that experiment first"
        )
    return pd.concat([borrowed, runs], ignore_index=True)


# One protocol for every run of a comparison: the seed's (mean per-patch PSNR of uint8 outputs),
# the one its README's 20-21 dB are measured in. `paper` runs headline the other one.
PSNR = "psnr_dslr_enhanced"


def collect(results: str | Path) -> pd.DataFrame:
    """One row per finished run folder: run, seed, final PSNR (the seed's protocol) / SSIM /
    MS-SSIM, wall time."""
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
                "psnr": last[PSNR] if PSNR in last else last["psnr"],
                "ssim": last["ssim"],
                "ms_ssim": last["ms_ssim"],
                "wall_s": last["wall_s"],
                "folder": str(folder),
            }
        )
    return pd.DataFrame(rows)


def final_table(runs: pd.DataFrame) -> pd.DataFrame:
    """Mean, standard deviation and count of defined values over seeds (the authors' MS-SSIM is
    NaN where a contrast term goes negative, as happens early in training)."""
    stats = runs.groupby("run")[["psnr", "ssim", "ms_ssim", "wall_s"]].agg(["mean", "std", "count"])
    stats["seeds"] = runs.groupby("run")["seed"].count()
    return stats


def effects(runs: pd.DataFrame, baseline: str, labels: dict[str, str]) -> pd.DataFrame:
    """PSNR of the baseline minus each labelled run, paired by seed, then mean and spread."""
    by = runs.pivot_table(index="seed", columns="run", values="psnr")
    rows = []
    for run, label in labels.items():
        if run in by and baseline in by:
            diff = (by[baseline] - by[run]).dropna()
            rows.append(
                {
                    "modification": label,
                    "run": run,
                    "effect_db": diff.mean(),
                    "spread_db": diff.std(),
                    "seeds": len(diff),
                    "verdict": verdict(diff.mean(), diff.std(), len(diff)),
                }
            )
    columns = ["modification", "run", "effect_db", "spread_db", "seeds", "verdict"]
    return pd.DataFrame(rows, columns=columns)


def effects_chart(table: pd.DataFrame, title: str, out: str | Path | None = None):
    """Each change's effect with +- one standard deviation over seeds as its error bar."""
    import textwrap

    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(10, 0.55 * len(table) + 1.8))
    if table.empty:  # an experiment without `reverts` labels has no effects to chart
        ax.text(0.5, 0.5, "no run reverts a change of the baseline", ha="center", va="center")
        ax.set_axis_off()
        return plots._save(fig, out)
    errors = table["spread_db"].fillna(0)
    # Wrapped labels: long ones would push the axes (and its title) off the figure.
    labels = [textwrap.fill(label, 40) for label in table["modification"]]
    ax.barh(labels, table["effect_db"], xerr=errors, capsize=4, color="tab:blue")
    ax.axvline(0, c="k", lw=0.8)
    ax.set(xlabel="PSNR(seed) - PSNR(seed with it reverted), dB  (> 0: the change helps)")
    ax.set_title(title, loc="left")
    ax.invert_yaxis()
    return plots._save(fig, out)


def verdict(effect: float, spread: float, seeds: int) -> str:
    """Whether the CPU-scale evidence supports "this change helps": the mean effect against two
    standard errors of the per-seed differences."""
    if seeds < 2 or pd.isna(spread):
        return "undecided (1 seed)"
    margin = 2 * spread / seeds**0.5
    if effect > margin:
        return "helps"
    if effect < -margin:
        return "hurts"
    return "no effect resolved"


def baseline(dataset_dir: str | Path, phone: str) -> dict | None:
    path = Path(dataset_dir) / phone / "identity_baseline.json"
    return json.loads(path.read_text()) if path.is_file() else None


def _fmt(mean: float, std: float, digits: int, defined: int | None = None, seeds: int = 0) -> str:
    """'mean +- std'; '— (1 seed)' for the spread of one value; how many seeds gave a value
    when some gave none (NaN)."""
    defined = seeds if defined is None else int(defined)
    if defined == 0:
        return "undefined (NaN)"
    text = f"{mean:.{digits}f}"
    if defined < int(seeds):
        return (
            text
            + (f" +- {std:.{digits}f}" if defined > 1 else "")
            + (f" ({defined} of {int(seeds)} seeds defined)")
        )
    return text + (" +- — (1 seed)" if pd.isna(std) else f" +- {std:.{digits}f}")


def _cell(r, metric: str, digits: int) -> str:
    return _fmt(r[metric, "mean"], r[metric, "std"], digits, r[metric, "count"], r["seeds", ""])


def write_summary(
    results: str | Path,
    runs: pd.DataFrame,
    table: pd.DataFrame,
    effect: pd.DataFrame,
    base: dict | None,
    note: str = "",
    title: str | None = None,
) -> Path:
    title = title or Path(results).name
    lines = [f"# {title}: final test metrics", ""]
    if base:
        lines += [
            f"Identity baseline (phone vs DSLR): PSNR {base.get(PSNR, base['psnr']):.2f} dB, "
            f"MS-SSIM {base['ms_ssim']:.4f}.",
            "",
        ]
    lines += [
        "PSNR: the seed's protocol (mean of per-patch PSNRs of uint8 outputs) for every run.",
        "",
        "| run | seeds | PSNR (dB) | SSIM | MS-SSIM | wall time (s) |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for run, r in table.iterrows():
        lines.append(
            f"| {run} | {int(r[('seeds', '')])} | {_cell(r, 'psnr', 2)} | {_cell(r, 'ssim', 4)} | "
            f"{_cell(r, 'ms_ssim', 4)} | {_cell(r, 'wall_s', 0)} |"
        )
    lines += [
        "",
        "## Effect of each change: PSNR(seed) - PSNR(seed with it reverted), mean +- std over seeds",
        "",
        "Verdict: 'helps' / 'hurts' when the mean effect exceeds two standard errors of the "
        "per-seed differences, else 'no effect resolved' at this scale.",
        "",
        "| change | effect (dB) | seeds | verdict |",
        "|---|---:|---:|---|",
    ]
    for _, r in effect.iterrows():
        lines.append(
            f"| {r['modification']} | {_fmt(r['effect_db'], r['spread_db'], 2, seeds=r['seeds'])} "
            f"| {r['seeds']} "
            f"| {r['verdict']} |"
        )
    lines += ["", "![PSNR curves](psnr_curves.png)", "", "![effects](effects.png)", ""]
    if note:
        lines += [note, ""]
    path = Path(results) / "summary.md"
    path.write_text("\n".join(lines))
    return path
