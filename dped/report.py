"""The report of a sweep, from its run folders alone: the final-metric table (mean +- spread over
seeds, against the identity, with the evaluation's own noise), the learning curves, each
change's effect and verdict (beside an earlier sweep's, and beside the same runs held longer,
when the experiment names such sweeps), written as results/<experiment>/summary.md,
psnr_curves.png, effects.png and effect_curves.png (the effects themselves: dped/verdicts.py).
Words: "identity" is the phone patch returned unchanged (what a model must beat); "baseline" is
the run every change is measured from (the experiment's `baseline`, `seed`). `dped report
RESULTS_DIR`, the sweep and the psnr-plots notebook all call `build`; pandas + matplotlib only.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from dped import plots, summary
from dped.config import project_root, read_yaml_file
from dped.evaluation import standard_error
from dped.experiment import run_seeds
from dped.runs import (
    IDENTITY_FILE,
    atomic_write,
    load_config,
    metrics_table,
    read_patch_psnr,
    run_name,
    run_precision,
)
from dped.verdicts import (
    PSNR,
    compare_verdicts,
    effect_curves,
    effects,
    held_longer,
    in_tail,
    patch_regions,
    psnr_of,
    seed_pair_se,
    tail_start,
)

SE = "psnr_dslr_enhanced_se"  # the PSNR's standard error over the test patches
GAIN_SE = "psnr_gain_se"  # that of its gain over the identity baseline, paired by patch


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
    names = [run_name(r, s) for r in spec["runs"] for s in run_seeds(spec, r)]
    return [name for name in names if not finished(Path(results) / name)]


def collect(results: str | Path, only: str | None = None) -> pd.DataFrame:
    """One row per finished run folder the experiment names (its runs x the profile's seeds;
    `only`: one run): run, seed, final PSNR (the seed's protocol) and its standard error over
    patches, gain over the last TAIL of the iterations, SSIM, MS-SSIM, wall time."""
    spec = load_spec(results)
    rows = []
    for run in spec["runs"] if only is None else [only]:
        for seed in run_seeds(spec, run):
            folder = Path(results) / run_name(run, seed)
            if finished(folder):
                rows.append({"run": run, "seed": seed, **_final(folder)})
    columns = ["run", "seed", "steps", "psnr", "psnr_se", "gain_se", "tail_gain", "ssim", "ms_ssim"]
    return pd.DataFrame(rows, columns=[*columns, "wall_s", "precision", "folder"])


def _final(folder: Path) -> dict:
    m = metrics_table(folder)
    psnr = psnr_of(m)
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
        "precision": run_precision(folder),
        "folder": str(folder),
    }


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
    longer: pd.DataFrame | None  # verdicts.held_longer by the experiment's `held_longer` sweep
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
    tail = in_tail(over_time)
    cfg = load_config(runs["folder"].iloc[0])
    ident_psnr = ident.get(PSNR, ident["psnr"]) if ident else None
    earlier, longer = _earlier(spec, effect), _longer(spec, runs, effect)
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
        "effects": plots.effects_chart(
            effect, f"{name}: effect of each change (leave-one-out)", out / "effects.png"
        ),
        "effect_curves": plots.effect_curves(
            over_time,
            {run: c["step"].min() for run, c in tail.groupby("run", sort=False)},
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
        tail,
        runs["precision"].value_counts().to_dict(),
        longer,
    )
    atomic_write(out / "summary.md", text.encode())
    return Report(
        results, runs, table, effect, over_time, ident, earlier, longer, out / "summary.md", figures
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


def _longer(spec: dict, runs: pd.DataFrame, effect: pd.DataFrame) -> pd.DataFrame | None:
    """The experiment's `held_longer: {profile: folder}`: a sweep of some of its runs, same
    seeds, more iterations (what training on moves); None when it names none, empty when that
    sweep has no finished run (summary.md says so)."""
    folder = (spec.get("held_longer") or {}).get(spec["profile"])
    if not folder:
        return None
    folder = project_root() / folder
    other = collect_experiment(folder) if (folder / "experiment.yaml").is_file() else None
    if other is None or other.empty:
        return pd.DataFrame()
    base_run, labels = experiment(folder)
    return held_longer(runs, effect, other, effects(other, base_run, labels))
