"""The text of a sweep's summary.md, from the tables `report.build` computes: the scale, the
final metrics against the identity, the spread over seeds beside the evaluation's own noise, each
change's effect and verdict, the verdicts of an earlier sweep beside them, and what holding the
runs longer moved."""

from __future__ import annotations

import pandas as pd

from dped.evaluation import REGION_PX, ms_ssim_text


def fmt(mean: float, std: float, digits: int, defined: int | None = None, seeds: int = 0) -> str:
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


def _cell(r, metric: str, digits: int, shift: float = 0.0) -> str:
    mean = r[metric, "mean"] - shift
    return fmt(mean, r[metric, "std"], digits, r[metric, "count"], r["seeds", ""])


def text(
    spec: dict,
    table: pd.DataFrame,
    effect: pd.DataFrame,
    identity: dict | None,
    identity_psnr: float | None = None,
    earlier: pd.DataFrame | None = None,
    vgg_random: bool = False,
    missing: list[str] | None = None,
    seed_noise: float = float("nan"),
    region_noise: float = float("nan"),
    tail: pd.DataFrame | None = None,
    precisions: dict[str, int] | None = None,
    longer: pd.DataFrame | None = None,
) -> str:
    """summary.md: `identity` as recorded and its PSNR in the report's protocol; `earlier`:
    `verdicts.compare_verdicts`; `seed_noise` / `region_noise`: `verdicts.seed_pair_se` of the
    baseline, patches / regions of a photograph as draws; `tail`: `verdicts.in_tail` of the
    effect curves; `precisions`: how many runs computed in each precision; `longer`:
    `verdicts.held_longer` by the experiment's `held_longer` sweep."""
    lines = [f"# {spec['name']}: final test metrics ({spec['profile']} profile)", ""]
    if missing:
        lines += [
            f"**Partial sweep**: {len(missing)} run folders are not in these numbers (not run, "
            f"or stopped before their last iteration): {', '.join(missing)}. `make reproduce` "
            "(or `dped sweep`) resumes them; the report counts a run only once it is complete.",
            "",
        ]
    if spec.get("profile_notes"):
        keys = ", ".join(f"{k}: {v}" for k, v in spec["profile_keys"].items())
        notes = spec["profile_notes"].strip().replace("\n- ", "\n\n- ")
        lines += [f"## Scale ({spec['profile']} profile)", "", notes, "", f"Keys: {keys}.", ""]
        lines += _own_keys_lines(spec)
    lines += _precision_lines(precisions or {})
    base_run = spec.get("baseline", "seed")
    lines += _results_lines(table, identity, identity_psnr)
    longer_folder = (spec.get("held_longer") or {}).get(spec["profile"])
    lines += _flattening_lines(table, base_run)
    lines += _longer_flattening_lines(table, base_run, longer, longer_folder)
    lines += _seed_noise_lines(table, base_run, seed_noise, region_noise)
    if not effect.empty:  # an experiment whose runs revert nothing has no effects to tabulate
        lines += _effect_lines(effect, table, base_run)
    if tail is not None and not tail.empty:
        lines += _settled_lines(tail)
    if earlier is not None:
        lines += _earlier_lines(earlier, spec["compare"][spec["profile"]])
    if longer is not None:
        lines += _longer_lines(longer, longer_folder)
    lines += ["", "![PSNR curves](psnr_curves.png)", ""]
    if not effect.empty:
        lines += [
            "![effects](effects.png)",
            "",
            "![effects at every evaluation](effect_curves.png)",
        ]
        lines += [""]
    if vgg_random:
        lines += ["Runs use random VGG-19 weights (vgg_random: true).", ""]
    return "\n".join(lines)


def _precision_lines(precisions: dict[str, int]) -> list[str]:
    """What the runs computed in (`precision: auto` chooses by the machine): one precision for
    all, or a warning that runs compared here were made in different ones."""
    if not precisions:
        return []
    if len(precisions) == 1:
        ((name, count),) = precisions.items()
        return [f"Precision as run: {name} in all {count} runs.", ""]
    counts = ", ".join(f"{name} in {count}" for name, count in sorted(precisions.items()))
    return [
        f"**Precision as run differs between runs** ({counts}): runs made on machines of "
        "different kinds (`precision: auto`) are compared here; their effects mix a change "
        "with the precision.",
        "",
    ]


def _own_keys_lines(spec: dict) -> list[str]:
    """The profile keys every run of the experiment sets to one value of its own (a run's keys
    win over the profile's): the notes above describe the profile, not these runs."""
    runs = list(spec.get("runs", {}).values())
    own = {
        k: runs[0][k]
        for k in spec["profile_keys"]
        if runs and all(k in r and r[k] == runs[0][k] for r in runs)
    }
    if not own:
        return []
    keys = ", ".join(f"{k}: {v}" for k, v in own.items())
    return [f"**Every run of this experiment sets its own {keys}**, over the profile's.", ""]


def _results_lines(table: pd.DataFrame, identity: dict | None, ident: float | None) -> list[str]:
    lines = []
    if identity:
        lines += [
            f"Identity baseline (the phone patch unchanged, vs DSLR): PSNR {ident:.2f} dB over "
            f"{identity.get('patches', '?')} test patches, MS-SSIM {ms_ssim_text(identity)}.",
            "",
        ]
    lines += [
        "PSNR: the seed's protocol (mean of per-patch PSNRs of uint8 outputs) for every run, mean "
        "+- standard deviation over seeds. *vs identity*: PSNR minus the identity baseline. "
        "The evaluation's own noise (means over seeds): *eval SE*, the standard error of a "
        "run's PSNR over the test patches (another draw of patches would move every run, "
        "largely together: how hard a patch is, every run shares); *gain SE*, that of its gain "
        "over the identity baseline, patch by patch (the noise *vs identity* carries); *region "
        f"SE*, the gain's again with each {REGION_PX}x{REGION_PX}-pixel region of a photograph "
        "counted as one draw (neighbouring patches are alike: a lower bound on how far other "
        "photographs could move *vs identity*; — where the dataset does not say where its "
        "patches were cut). *last 30%*: the PSNR gained over the last 30% of the iterations (a "
        "flattened curve gains little there).",
        "",
        "| run | seeds | PSNR (dB) | vs identity (dB) | eval SE (dB) | gain SE (dB) "
        "| region SE (dB) | last 30% (dB) | SSIM | MS-SSIM | wall time (s) |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for run, r in table.iterrows():
        noise = " | ".join(
            f"{r[k, 'mean']:.2f}".replace("nan", "—") if (k, "mean") in r.index else "—"
            for k in ("psnr_se", "gain_se", "gain_region_se")
        )
        lines.append(
            f"| {run} | {int(r[('seeds', '')])} | {_cell(r, 'psnr', 2)} | "
            f"{_cell(r, 'psnr', 2, ident) if identity else '—'} | {noise} | {_cell(r, 'tail_gain', 2)} | "
            f"{_cell(r, 'ssim', 4)} | {_cell(r, 'ms_ssim', 4)} | {_cell(r, 'wall_s', 0)} |"
        )
    return lines


def _flattening_lines(table: pd.DataFrame, base_run: str) -> list[str]:
    """Whether the baseline's curve has flattened, by a rule stated beside the numbers."""
    if base_run not in table.index:
        return []
    r = table.loc[base_run]
    tail, spread = r[("tail_gain", "mean")], r[("psnr", "std")]
    if pd.isna(tail) or pd.isna(spread):
        return []
    flat = tail < spread
    return [
        "",
        f"Has `{base_run}`'s curve flattened? The rule: yes when the PSNR it gains over the last "
        "30% of its iterations (mean over seeds) is below the spread of its final PSNR over "
        "seeds, so that training on would move the result less than another seed does. "
        f"`{base_run}` gains {tail:.2f} dB there, against a spread of {spread:.2f} dB: "
        + ("flattened." if flat else "**not flattened** at this length."),
    ]


def _longer_flattening_lines(
    table: pd.DataFrame, base_run: str, longer: pd.DataFrame | None, folder: str | None
) -> list[str]:
    """The rule's question measured instead of estimated: the same seeds of the baseline held
    longer, what training on moved its final PSNR against the spread over seeds."""
    if longer is None or longer.empty or base_run not in set(longer["run"]):
        return []
    r = longer.set_index("run").loc[base_run]
    spread = table.loc[base_run][("psnr", "std")]
    flat = abs(r["moved_db"]) < spread
    moved = fmt(r["moved_db"], r["moved_spread_db"], 2, seeds=r["seeds"])
    return [
        "",
        f"Measured instead of estimated: {folder} holds `{base_run}` to "
        f"{int(r['steps_longer']):,} iterations with {int(r['seeds'])} of these seeds. Training on "
        f"from {int(r['steps']):,} moves its final PSNR by {moved} dB (paired by seed), "
        + (
            f"less than the spread over seeds here ({spread:.2f} dB): **flattened** by this "
            "direct test: training on moves the result less than another seed does."
            if flat
            else f"not less than the spread over seeds here ({spread:.2f} dB): **not flattened** "
            "by this direct test either."
        ),
    ]


def _longer_lines(longer: pd.DataFrame, folder: str) -> list[str]:
    """Each run held longer: its final PSNR at both lengths, and a change's verdict at both."""
    if longer.empty:
        return ["", f"## Held longer in {folder}", "", f"{folder} has no finished run yet."]
    steps = f"{int(longer['steps'].max()):,}"
    lines = [
        "",
        f"## Held longer in {folder}: the same runs and seeds, more iterations",
        "",
        "PSNR: mean over the seeds both lengths ran; moved: the longer run's final PSNR minus "
        "this one's, paired by seed; effect and verdict as above, at each length.",
        "",
        f"| run | seeds | iterations there | PSNR at {steps} | PSNR there | moved (dB) | effect at "
        f"{steps} | verdict | effect there | verdict there |",
        "|---|---:|---:|---:|---:|---:|---:|---|---:|---|",
    ]
    for _, r in longer.iterrows():
        seeds = r["seeds"]
        effect = (
            ["—"] * 4
            if pd.isna(r["effect_db"])
            else [
                fmt(r["effect_db"], r["spread_db"], 2, seeds=seeds),
                r["verdict"],
                fmt(r["effect_db_longer"], r["spread_db_longer"], 2, seeds=seeds),
                r["verdict_longer"],
            ]
        )
        lines.append(
            f"| {r['run']} | {seeds} | {int(r['steps_longer']):,} | {r['psnr']:.2f} | "
            f"{r['psnr_longer']:.2f} | {fmt(r['moved_db'], r['moved_spread_db'], 2, seeds=seeds)} | "
            + " | ".join(effect)
            + " |"
        )
    return lines


def _seed_noise_lines(
    table: pd.DataFrame, base_run: str, seed_noise: float, region_noise: float
) -> list[str]:
    """The spread over seeds beside the evaluation's own noise on a difference between runs."""
    if pd.isna(seed_noise) or base_run not in table.index:
        return []
    spread = table.loc[base_run][("psnr", "std")]
    regions = (
        ""
        if pd.isna(region_noise)
        else (
            f", and {region_noise:.3f} dB counting each {REGION_PX}x{REGION_PX}-pixel region of a "
            "photograph as one draw (neighbouring patches are alike: this one grows further with "
            "larger regions, so it is a lower bound on how far another set of photographs could "
            "move the difference)"
        )
    )
    noise = seed_noise if pd.isna(region_noise) else region_noise
    return [
        "",
        f"Spread over seeds against the evaluation's own noise: the final PSNR of `{base_run}` "
        f"varies by {spread:.2f} dB (std over seeds); the test set's noise on the difference "
        f"between two of its seeds (standard error of their per-patch difference, mean over "
        f"pairs of seeds) is {seed_noise:.3f} dB counting each test patch as a draw{regions}. "
        + (
            "Comparisons between runs on these patches are limited by the seeds, not by the "
            "test set."
            if noise < spread / 2
            else "The test set's noise is not small beside the seeds': more test photographs "
            "would sharpen comparisons."
        ),
    ]


def _effect_lines(effect: pd.DataFrame, table: pd.DataFrame, base_run: str) -> list[str]:
    lines = [
        "",
        f"## Effect of each change: PSNR({base_run}) - PSNR({base_run} with it reverted), "
        "mean +- std over seeds",
        "",
        "Verdict: 'helps' / 'hurts' when the mean effect exceeds two standard errors of the "
        "per-seed differences, else 'no effect resolved' at this scale. *eval SE*: the "
        "evaluation's own noise on the mean effect (standard error over the test patches of "
        "the effect taken patch by patch), to set beside the standard error over seeds "
        f"(std / sqrt(seeds)); *region SE*: the same with each {REGION_PX}x{REGION_PX}-pixel "
        "region of a photograph counted as one draw (— where the dataset does not say where "
        "its patches were cut).",
        "",
        "| change | effect (dB) | seeds | eval SE (dB) | region SE (dB) | verdict |",
        "|---|---:|---:|---:|---:|---|",
    ]
    for _, r in effect.iterrows():
        noise = " | ".join(
            "—" if pd.isna(r[k]) else f"{r[k]:.3f}" for k in ("eval_se_db", "region_se_db")
        )
        lines.append(
            f"| {r['modification']} | {fmt(r['effect_db'], r['spread_db'], 2, seeds=r['seeds'])} "
            f"| {r['seeds']} | {noise} | {r['verdict']} |"
        )
    return lines


def _settled_lines(tail: pd.DataFrame) -> list[str]:
    """Each change's effect and verdict at every evaluation of the last 30% of its iterations,
    and whether the verdict is the same at each."""
    steps = sorted(tail["step"].unique())
    lines = [
        "",
        "## Do the verdicts hold over the last 30% of the iterations?",
        "",
        "A verdict read at one iteration may say how fast a variant leaves its start rather than "
        "where it ends. Each change's effect (mean over seeds, dB) and verdict at every "
        "evaluation of the last 30% of the iterations: *settled* when the verdict is the same at "
        "each. One seed's PSNR moves by some tenths of a dB from one evaluation to the next, so "
        "an effect near its verdict's margin can change verdict by that alone: *unsettled* says "
        "the verdict is not settled at this length, not which way it would go "
        "(effect_curves.png draws every evaluation).",
        "",
        "| change | " + " | ".join(f"{s:,}" for s in steps) + " | |",
        "|---|" + "---:|" * len(steps) + "---|",
    ]
    outcomes = []
    for _, c in tail.groupby("run", sort=False):
        at = {r["step"]: f"{r['effect_db']:+.2f} {r['verdict']}" for _, r in c.iterrows()}
        # One seed gives no verdict to hold: "undecided" at every step is not a settled one.
        one_seed = (c["seeds"] < 2).any()
        outcomes.append(
            "—" if one_seed else "settled" if c["verdict"].nunique() == 1 else "unsettled"
        )
        cells = " | ".join(at.get(s, "—") for s in steps)
        lines.append(f"| {c['modification'].iloc[0]} | {cells} | {outcomes[-1]} |")
    decided = len(outcomes) - outcomes.count("—")
    count = f"Settled: {outcomes.count('settled')} of {decided} verdicts."
    return [*lines, "", count if decided else "No verdicts: one seed a run."]


def _earlier_lines(earlier: pd.DataFrame, folder: str) -> list[str]:
    lines = [
        "",
        f"## Verdicts beside the earlier sweep in {folder}",
        "",
        "| change | earlier effect (dB) | earlier verdict | effect here (dB) | verdict here | |",
        "|---|---:|---|---:|---|---|",
    ]
    for _, r in earlier.iterrows():
        was = (
            "—"
            if pd.isna(r["effect_db_old"])
            else fmt(r["effect_db_old"], r["spread_db_old"], 2, seeds=r["seeds_old"])
        )
        here = (
            "—"
            if pd.isna(r["effect_db"])
            else fmt(r["effect_db"], r["spread_db"], 2, seeds=r["seeds"])
        )
        lines.append(
            f"| {r['modification']} | {was} | {r['verdict_old'] if was != '—' else '—'} | "
            f"{here} | {r['verdict'] if here != '—' else '—'} | {r['outcome']} |"
        )
    return lines
