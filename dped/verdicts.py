"""Each change's effect on the baseline, from run folders: PSNR(baseline) - PSNR(the run that
reverts the change), paired by seed, at the last evaluation (`effects`, with the evaluation's own
noise on it, paired by patch) and at every evaluation (`effect_curves`); the verdict rule; the
verdicts of an earlier sweep beside them. `report.build` puts them in summary.md and the figures.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from dped.data import read_test_positions
from dped.evaluation import region_labels, standard_error
from dped.runs import load_config, metrics_table, read_patch_psnr

# One protocol for every run of a comparison: the seed's (mean per-patch PSNR of uint8 outputs),
# the one its README's 20-21 dB are measured in. `paper` runs headline the other one.
PSNR = "psnr_dslr_enhanced"
# The last stretch of the iterations, as a share of them: the report's tail gain (the flattening
# rule in summary.md) and the settled verdicts (`in_tail`) both read it.
TAIL = 0.3


def psnr_of(metrics: pd.DataFrame) -> pd.Series:
    """A run's test PSNR in the report's protocol (its headline `psnr` where it has no such
    column)."""
    return metrics[PSNR] if PSNR in metrics else metrics["psnr"]


def tail_start(steps: pd.Series) -> int:
    """Where the last TAIL of the iterations starts: the last evaluation at or before that
    point (the first evaluation when none is)."""
    before = steps[steps <= steps.iloc[-1] * (1 - TAIL)]
    return int(before.iloc[-1] if len(before) else steps.iloc[0])


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
        curves[(run, seed)] = pd.Series(psnr_of(m).to_numpy(), index=m["step"].to_numpy())
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


def held_longer(
    runs: pd.DataFrame, effect: pd.DataFrame, longer: pd.DataFrame, longer_effect: pd.DataFrame
) -> pd.DataFrame:
    """Each run that another sweep holds longer (same run name and seeds, more iterations): its
    final PSNR at both lengths on the seeds both ran, what training on moved it (paired by seed:
    `moved_db` +- `moved_spread_db`), and a change's effect and verdict at both lengths."""
    here = runs.pivot_table(index="seed", columns="run", values="psnr")
    there = longer.pivot_table(index="seed", columns="run", values="psnr")
    rows = []
    for run in (r for r in dict.fromkeys(runs["run"]) if r in there):  # this sweep's order
        seeds = here[run].dropna().index.intersection(there[run].dropna().index)
        if len(seeds):
            moved = there.loc[seeds, run] - here.loc[seeds, run]
            rows.append(
                {
                    "run": run,
                    "seeds": len(seeds),
                    "steps": runs.loc[runs["run"] == run, "steps"].max(),
                    "steps_longer": longer.loc[longer["run"] == run, "steps"].max(),
                    "psnr": here.loc[seeds, run].mean(),
                    "psnr_longer": there.loc[seeds, run].mean(),
                    "moved_db": moved.mean(),
                    "moved_spread_db": moved.std(),
                }
            )
    columns = ["run", "seeds", "steps", "steps_longer", "psnr", "psnr_longer", "moved_db"]
    both = pd.DataFrame(rows, columns=[*columns, "moved_spread_db"])
    keep = ["run", "modification", "effect_db", "spread_db", "verdict"]
    verdicts = effect[keep].merge(
        longer_effect[keep[:1] + keep[2:]], on="run", suffixes=("", "_longer")
    )
    return both.merge(verdicts, on="run", how="left")


def patch_regions(runs: pd.DataFrame):
    """A region label per test patch (`evaluation.region_labels`) of the dataset the runs name,
    if it says where its patches were cut and has as many as the runs were evaluated on; else
    None (the real DPED's test patches, or a dataset rebuilt since)."""
    cfg = load_config(runs["folder"].iloc[0])
    positions = read_test_positions(cfg.dataset_dir, cfg.phone)
    patches = metrics_table(runs["folder"].iloc[0]).iloc[-1].get("patches")
    return region_labels(positions) if positions and len(positions) == patches else None


def _patch_psnrs(runs: pd.DataFrame, run: str) -> dict:
    """{seed: every test patch's final PSNR} of a run's seeds (None where not recorded)."""
    mine = runs[runs["run"] == run]
    return {
        seed: read_patch_psnr(Path(folder), int(steps))
        for seed, folder, steps in zip(mine["seed"], mine["folder"], mine["steps"])
    }


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


def _se(values, regions=None) -> float:
    if values is None or (regions is not None and len(regions) != len(values)):
        return float("nan")
    return standard_error(values, regions)
