"""The report of a sweep, from its run folders alone: the final-metric table (mean +- spread over
seeds, against the identity, with the evaluation's own noise), the learning curves, each
change's effect and verdict (beside an earlier sweep's, when the experiment names one), written
as results/<experiment>/summary.md, psnr_curves.png and effects.png. Words: "identity" is the
phone patch returned unchanged (what a model must beat); "baseline" is the run every change is
measured from (the experiment's `baseline`, `seed`). `dped report RESULTS_DIR`, the sweep and
the psnr-plots notebook all call `build`; pandas + matplotlib only.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from dped import plots, summary
from dped.config import project_root, read_yaml_file
from dped.data import read_test_positions
from dped.evaluation import region_labels, standard_error
from dped.runs import (
    IDENTITY_FILE,
    atomic_write,
    load_config,
    metrics_table,
    read_patch_psnr,
    run_name,
)

# One protocol for every run of a comparison: the seed's (mean per-patch PSNR of uint8 outputs),
# the one its README's 20-21 dB are measured in. `paper` runs headline the other one.
PSNR = "psnr_dslr_enhanced"
SE = "psnr_dslr_enhanced_se"  # its standard error over the test patches
GAIN_SE = "psnr_gain_se"  # that of its gain over the identity baseline, paired by patch
TAIL = 0.3  # the share of iterations _tail_gain reads (summary._flattening_lines: the rule)


def load_spec(results: str | Path) -> dict:
    """The copy of the experiment the sweep wrote beside the runs (with the profile it ran)."""
    path = Path(results) / "experiment.yaml"
    if not path.is_file():
        raise FileNotFoundError(f"no {path}: run the sweep (make sweep) to make {results}")
    return read_yaml_file(path)


def experiment(results: str | Path) -> tuple[str, dict[str, str]]:
    """(baseline run, {run: what it reverts}) from the experiment.yaml the sweep copied there."""
    spec = load_spec(results)
    labels = {run: s["reverts"] for run, s in spec["runs"].items() if s.get("reverts")}
    return spec.get("baseline", "seed"), labels


def finished(folder: Path) -> bool:
    """Whether a run folder holds a run trained to its num_iters (a stopped sweep leaves runs
    part way, whose last evaluation is not a final result)."""
    metrics = folder / "metrics.csv"
    if not metrics.is_file():
        return False
    steps = metrics_table(folder)["step"]
    return len(steps) > 0 and steps.iloc[-1] >= load_config(folder).num_iters


def unfinished(results: str | Path) -> list[str]:
    """The experiment's run folders (runs x seeds) not trained to the end: missing or part way."""
    spec = load_spec(results)
    names = [run_name(r, s) for r in spec["runs"] for s in spec["seeds"][spec["profile"]]]
    return [name for name in names if not finished(Path(results) / name)]


def collect(results: str | Path, only: str | None = None) -> pd.DataFrame:
    """One row per finished run folder the experiment names (its runs x the profile's seeds;
    `only`: one run): run, seed, final PSNR (the seed's protocol) and its standard error over
    patches, gain over the last TAIL of the iterations, SSIM, MS-SSIM, wall time."""
    spec = load_spec(results)
    rows = []
    for run in spec["runs"] if only is None else [only]:
        for seed in spec["seeds"][spec["profile"]]:
            folder = Path(results) / run_name(run, seed)
            if finished(folder):
                rows.append({"run": run, "seed": seed, **_final(folder)})
    columns = ["run", "seed", "steps", "psnr", "psnr_se", "gain_se", "tail_gain", "ssim", "ms_ssim"]
    return pd.DataFrame(rows, columns=[*columns, "wall_s", "folder"])


def _final(folder: Path) -> dict:
    m = metrics_table(folder)
    psnr = _psnr(m)
    last = m.iloc[-1]
    return {
        "steps": int(last["step"]),
        "psnr": psnr.iloc[-1],
        "psnr_se": last.get(SE, float("nan")),  # older runs did not record them
        "gain_se": last.get(GAIN_SE, float("nan")),
        "tail_gain": _tail_gain(m["step"], psnr),
        "ssim": last["ssim"],
        "ms_ssim": last["ms_ssim"],
        "wall_s": last["wall_s"],
        "folder": str(folder),
    }


def _psnr(metrics: pd.DataFrame) -> pd.Series:
    """A run's test PSNR in the report's protocol (its headline `psnr` where it has no such
    column)."""
    return metrics[PSNR] if PSNR in metrics else metrics["psnr"]


def tail_start(steps: pd.Series) -> int:
    """Where the last TAIL of the iterations starts: the last evaluation at or before that
    point (the first evaluation when none is)."""
    before = steps[steps <= steps.iloc[-1] * (1 - TAIL)]
    return int(before.iloc[-1] if len(before) else steps.iloc[0])


def _tail_gain(steps: pd.Series, psnr: pd.Series) -> float:
    """PSNR gained over the last TAIL of the iterations (`tail_start`): near 0 once a curve has
    flattened; NaN with fewer than three evaluations."""
    if len(steps) < 3:
        return float("nan")
    return float(psnr.iloc[-1] - psnr[steps == tail_start(steps)].iloc[0])


def collect_experiment(results: str | Path) -> pd.DataFrame:
    """`collect(results)`, plus the baseline's runs from the experiment named by
    `baseline_from` (a sibling folder) when the experiment borrows them."""
    runs = collect(results)
    source = load_spec(results).get("baseline_from")
    if not source:
        return runs
    baseline, _ = experiment(results)
    other = Path(results).parent / source
    borrowed = collect(other, only=baseline) if (other / "experiment.yaml").is_file() else None
    if borrowed is None or borrowed.empty:
        raise FileNotFoundError(
            f"{results} compares with the '{baseline}' runs of {other}, which has none: run "
            f"that experiment first"
        )
    return pd.concat([borrowed, runs], ignore_index=True)


def final_table(runs: pd.DataFrame) -> pd.DataFrame:
    """Mean, standard deviation and count of defined values over seeds (the authors' MS-SSIM is
    NaN where a contrast term goes negative: runs recorded before evaluation averaged it over
    the patches where it is defined could be NaN as a whole)."""
    metrics = ["psnr", "psnr_se", "gain_se", "gain_region_se", "tail_gain", "ssim", "ms_ssim"]
    metrics = [m for m in [*metrics, "wall_s"] if m in runs]  # region SE: once `build` adds it
    stats = runs.groupby("run", sort=False)[metrics].agg(["mean", "std", "count"])
    stats["seeds"] = runs.groupby("run", sort=False)["seed"].count()
    return stats


def effects(
    runs: pd.DataFrame, baseline: str, labels: dict[str, str], regions=None
) -> pd.DataFrame:
    """PSNR of the baseline minus each labelled run, paired by seed, then mean and spread, and
    the evaluation's own noise on that mean: the standard error over test patches of the effect
    taken patch by patch (`_paired_difference`: how hard each patch is, shared by every run,
    cancels), with patches as draws and, with `regions` (`patch_regions`), regions of a
    photograph as draws."""
    by = runs.pivot_table(index="seed", columns="run", values="psnr")
    rows = []
    for run, label in labels.items():
        if run in by and baseline in by:
            per_patch = _paired_difference(runs, baseline, run)
            rows.append(
                {
                    "modification": label,
                    "run": run,
                    **_effect_stats(by[baseline] - by[run]),
                    "eval_se_db": _se(per_patch),
                    "region_se_db": _se(per_patch, regions) if regions is not None else np.nan,
                }
            )
    columns = ["modification", "run", "effect_db", "spread_db", "eval_se_db", "region_se_db"]
    columns += ["seeds", "verdict"]
    return pd.DataFrame(rows, columns=columns)


def _effect_stats(diff: pd.Series) -> dict:
    """Mean, spread and count of per-seed differences (missing seeds left out), and the verdict."""
    diff = diff.dropna()
    mean, spread = diff.mean(), diff.std()
    return {
        "effect_db": mean,
        "spread_db": spread,
        "seeds": len(diff),
        "verdict": verdict(mean, spread, len(diff)),
    }


def psnr_by_step(runs: pd.DataFrame) -> pd.DataFrame:
    """Every run folder's test PSNR (the report's protocol) at each of its evaluations: one row
    per step, one column per (run, seed)."""
    curves = {}
    for run, seed, folder in zip(runs["run"], runs["seed"], runs["folder"]):
        m = metrics_table(folder)
        curves[(run, seed)] = pd.Series(_psnr(m).to_numpy(), index=m["step"].to_numpy())
    return pd.DataFrame(curves)


def effect_curves(runs: pd.DataFrame, baseline: str, labels: dict[str, str]) -> pd.DataFrame:
    """Each change's effect and verdict at every evaluation, paired by seed as `effects` pairs
    the final ones: whether a verdict read at the end held before it, or says how fast a
    variant leaves its start rather than where it ends."""
    psnr = psnr_by_step(runs)
    rows = []
    for run, label in labels.items():
        if run in psnr and baseline in psnr:
            for step, per_seed in (psnr[baseline] - psnr[run]).iterrows():
                if per_seed.notna().any():
                    rows.append(
                        {"modification": label, "run": run, "step": step, **_effect_stats(per_seed)}
                    )
    columns = ["modification", "run", "step", "effect_db", "spread_db", "seeds", "verdict"]
    return pd.DataFrame(rows, columns=columns)


def in_tail(curves: pd.DataFrame) -> pd.DataFrame:
    """The rows of `effect_curves` in the last TAIL of each change's iterations (`tail_start`)."""
    keep = [c[c["step"] >= tail_start(c["step"])] for _, c in curves.groupby("run", sort=False)]
    return pd.concat(keep) if keep else curves


def _patch_psnrs(runs: pd.DataFrame, run: str) -> dict:
    """{seed: every test patch's final PSNR} of a run's seeds (None where not recorded)."""
    mine = runs[runs["run"] == run]
    return {
        seed: read_patch_psnr(Path(folder), int(steps))
        for seed, folder, steps in zip(mine["seed"], mine["folder"], mine["steps"])
    }


def patch_regions(runs: pd.DataFrame):
    """A region label per test patch (`evaluation.region_labels`) of the dataset the runs name,
    if it says where its patches were cut and has as many as the runs were evaluated on; else
    None (the real DPED's test patches, or a dataset rebuilt since)."""
    cfg = load_config(runs["folder"].iloc[0])
    positions = read_test_positions(cfg.dataset_dir, cfg.phone)
    patches = metrics_table(runs["folder"].iloc[0]).iloc[-1].get("patches")
    return region_labels(positions) if positions and len(positions) == patches else None


def _se(values, regions=None) -> float:
    if values is None or (regions is not None and len(regions) != len(values)):
        return float("nan")
    return standard_error(values, regions)


def _paired_difference(runs: pd.DataFrame, a: str, b: str):
    """PSNR(a) - PSNR(b) patch by patch, averaged over the seeds both ran; None without
    per-patch records of every such seed."""
    first, second = _patch_psnrs(runs, a), _patch_psnrs(runs, b)
    pairs = [(first[s], second[s]) for s in first if s in second]
    if not pairs or any(x is None or y is None or len(x) != len(y) for x, y in pairs):
        return None
    return sum(x - y for x, y in pairs) / len(pairs)


def seed_pair_se(runs: pd.DataFrame, run: str, regions=None) -> float:
    """The evaluation's own noise on the difference between two seeds of one run (the standard
    error of one seed's per-patch PSNRs minus another's, mean over the pairs; with `regions`,
    regions of a photograph as draws): the part of the spread over seeds that
    the test set, not training, could account for. NaN with fewer than two recorded seeds."""
    values = [v for v in _patch_psnrs(runs, run).values() if v is not None]
    ses = [
        _se(x - y, regions)
        for i, x in enumerate(values)
        for y in values[i + 1 :]
        if len(x) == len(y)
    ]
    return sum(ses) / len(ses) if ses else float("nan")


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


def compare_verdicts(new: pd.DataFrame, old: pd.DataFrame) -> pd.DataFrame:
    """Each change's effect and verdict in an earlier sweep beside this one's, and whether the
    verdict survives or flips."""
    both = new.merge(old, on="run", how="outer", suffixes=("", "_old"))
    order = [*old["run"], *(run for run in new["run"] if run not in set(old["run"]))]
    both = both.set_index("run").loc[order].reset_index()  # the experiment's order
    both["modification"] = both["modification"].fillna(both["modification_old"])
    both["outcome"] = [_outcome(was, now) for was, now in zip(both["verdict_old"], both["verdict"])]
    return both


def _outcome(was, now) -> str:
    if pd.isna(now):
        return "not run here yet"
    if pd.isna(was):
        return "not in the earlier sweep"
    if now.startswith("undecided") or was.startswith("undecided"):
        return "not comparable (1 seed)"
    return "survives" if was == now else "flips"


def identity(runs: pd.DataFrame, results: str | Path) -> dict | None:
    """The identity baseline of the runs' test set: as their folders recorded it; else as
    recorded beside the results; else the dataset's own (`_dataset_identity`)."""
    recorded = [Path(folder) / IDENTITY_FILE for folder in runs["folder"]]
    for path in [*recorded, Path(results) / IDENTITY_FILE]:
        if path.is_file():
            return json.loads(path.read_text())
    return _dataset_identity(runs)


def _dataset_identity(runs: pd.DataFrame) -> dict | None:
    """The identity record beside the dataset the runs name, if its test set has as many patches
    as the runs were evaluated on (a rebuilt dataset must not lend its baseline to older runs)."""
    cfg = load_config(runs["folder"].iloc[0])
    path = Path(cfg.dataset_dir) / cfg.phone / IDENTITY_FILE
    found = json.loads(path.read_text()) if path.is_file() else None
    patches = metrics_table(runs["folder"].iloc[0]).iloc[-1].get("patches")
    return found if found and found.get("patches") == patches else None


def identity_patches(runs: pd.DataFrame, ident: dict | None) -> np.ndarray | None:
    """Every test patch's identity PSNR: as recorded with the runs' identity, else beside the
    dataset (records from before `patch_psnr` existed have none); None when neither has it."""
    for record in (ident, _dataset_identity(runs)):
        if record and record.get("patch_psnr"):
            return np.asarray(record["patch_psnr"], np.float64)
    return None


def region_gain_se(runs: pd.DataFrame, ident: np.ndarray | None, regions) -> list[float]:
    """Per run folder: the standard error of its gain over the identity, patch by patch, with
    each region of a photograph as one draw (NaN without per-patch records or regions)."""
    out = []
    for folder, steps in zip(runs["folder"], runs["steps"]):
        psnr = read_patch_psnr(Path(folder), int(steps))
        usable = ident is not None and regions is not None and psnr is not None
        same = usable and len(psnr) == len(ident) == len(regions)
        out.append(standard_error(psnr - ident, regions) if same else float("nan"))
    return out


@dataclass
class Report:
    results: Path
    runs: pd.DataFrame
    table: pd.DataFrame
    effects: pd.DataFrame
    effect_curves: pd.DataFrame  # each change's effect at every evaluation
    identity: dict | None
    earlier: pd.DataFrame | None  # compare_verdicts with the experiment's `compare` sweep
    summary: Path
    figures: dict  # name -> matplotlib Figure, saved as <name>.png

    def written(self) -> str:
        """What `build` wrote, for a line of output: summary.md's path, then the figures."""
        return ", ".join([str(self.summary), *(f"{name}.png" for name in self.figures)])


def build(results: str | Path, out: str | Path | None = None) -> Report:
    """Everything the report holds, from the run folders: summary.md, psnr_curves.png,
    effects.png and effect_curves.png in `out` (default: beside the runs)."""
    import matplotlib.pyplot as plt

    results = Path(results)
    out = Path(out or results)
    out.mkdir(parents=True, exist_ok=True)
    spec = load_spec(results)
    runs = collect_experiment(results)
    if runs.empty:
        raise FileNotFoundError(f"{results}: no finished run folder: run the sweep first")
    base_run, labels = experiment(results)
    regions = patch_regions(runs)
    ident = identity(runs, results)
    runs["gain_region_se"] = region_gain_se(runs, identity_patches(runs, ident), regions)
    table, effect = final_table(runs), effects(runs, base_run, labels, regions)
    over_time = effect_curves(runs, base_run, labels)
    cfg = load_config(runs["folder"].iloc[0])
    ident_psnr = ident.get(PSNR, ident["psnr"]) if ident else None
    earlier = _earlier(spec, effect)
    curves = runs.groupby("run", sort=False)["folder"].apply(list).to_dict()
    name = spec["name"]
    figures = {
        "psnr_curves": plots.psnr_curves(
            curves,
            ident_psnr,
            out=out / "psnr_curves.png",
            title=f"{name}: test PSNR, mean ± std over seeds ({spec['profile']} profile)",
            reference=base_run,
        ),
        "effects": effects_chart(
            effect, f"{name}: effect of each change (leave-one-out)", out / "effects.png"
        ),
        "effect_curves": plots.effect_curves(
            over_time,
            {run: tail_start(c["step"]) for run, c in over_time.groupby("run", sort=False)},
            title=f"{name}: effect of each change at every evaluation ({spec['profile']} profile)",
            out=out / "effect_curves.png",
        ),
    }
    for fig in figures.values():  # saved; a notebook shows them with display()
        plt.close(fig)
    text = summary.text(
        spec,
        table,
        effect,
        ident,
        ident_psnr,
        earlier,
        cfg.vgg_weights == "random",
        unfinished(results),
        seed_pair_se(runs, base_run),
        seed_pair_se(runs, base_run, regions) if regions is not None else float("nan"),
        in_tail(over_time),
    )
    atomic_write(out / "summary.md", text.encode())
    return Report(
        results, runs, table, effect, over_time, ident, earlier, out / "summary.md", figures
    )


def _earlier(spec: dict, effect: pd.DataFrame) -> pd.DataFrame | None:
    """The experiment's `compare: {profile: folder}`: an earlier sweep to set verdicts beside."""
    folder = (spec.get("compare") or {}).get(spec["profile"])
    if not folder:
        return None
    folder = project_root() / folder
    old_runs = collect_experiment(folder)
    base_run, labels = experiment(folder)
    return compare_verdicts(effect, effects(old_runs, base_run, labels))


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
    # Wrapped labels: long ones would push the axes (and its title) off the figure. A bar of
    # one seed has no spread to draw: its label and a pale bar say so.
    labels = [
        textwrap.fill(f"{label} [{n} seed{'s' if n > 1 else ''}]", 40)
        for label, n in zip(table["modification"], table["seeds"])
    ]
    colors = ["tab:blue" if n > 1 else "lightsteelblue" for n in table["seeds"]]
    ax.barh(labels, table["effect_db"], xerr=errors, capsize=4, color=colors)
    ax.axvline(0, c="k", lw=0.8)
    ax.set(xlabel="PSNR(seed) - PSNR(seed with it reverted), dB  (> 0: the change helps)")
    ax.set_title(title, loc="left")
    ax.invert_yaxis()
    return plots._save(fig, out)
