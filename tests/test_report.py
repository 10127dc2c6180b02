"""dped.report from synthetic run folders: the numbers of summary.md, the figures, `dped report`."""

import json

import pandas as pd
import pytest
import yaml

from dped import report, summary, verdicts
from dped.config import preset
from dped.runs import IDENTITY_FILE

IDENTITY = {"psnr": 16.0, "psnr_dslr_enhanced": 17.0, "ms_ssim": 0.8, "patches": 50}


def write_sweep(root, finals, name="mini", extra=None, identity=IDENTITY, iters=1000):
    """A results folder as a sweep leaves it: the experiment's copy and one run folder per run
    and seed, whose PSNR rises linearly, by 1 dB per evaluation, over 10 evaluations of `iters`
    iterations to finals[run][seed]."""
    results = root / name
    results.mkdir(parents=True)
    runs = {"seed": {"preset": "seed"}}
    runs |= {
        run: {"preset": "seed", "reverts": f"the {run} change"} for run in finals if run != "seed"
    }
    seeds = sorted({seed for per_seed in finals.values() for seed in per_seed})
    spec = {
        "name": name,
        "baseline": "seed",
        "seeds": {"cpu": seeds},
        "runs": runs,
        "profile": "cpu",
        "profile_keys": {"patch_size": 32},
        "profile_notes": "Smaller:\n- patch 32 instead of 100.",
        **(extra or {}),
    }
    (results / "experiment.yaml").write_text(yaml.safe_dump(spec))
    for run, per_seed in finals.items():
        for seed, final in per_seed.items():
            folder = results / f"{run}-s{seed}"
            folder.mkdir()
            steps = list(range(iters // 10, iters + 1, iters // 10))
            pd.DataFrame(
                {
                    "step": steps,
                    "psnr": [10.0] * 10,  # the other protocol: the report must not read it
                    "psnr_dslr_enhanced": [final - (iters - s) / (iters // 10) for s in steps],
                    "psnr_dslr_enhanced_se": [0.1] * 10,
                    "psnr_gain_se": [0.04] * 10,
                    "ssim": [0.6] * 10,
                    "ms_ssim": [0.9] * 10,
                    "patches": [50] * 10,
                    "wall_s": [s / 10 for s in steps],
                }
            ).to_csv(folder / "metrics.csv", index=False)
            (folder / "config.yaml").write_text(
                yaml.safe_dump(
                    {"preset": "seed", "vgg_weights": "random", "seed": seed, "num_iters": iters}
                )
            )
            if identity:
                (folder / IDENTITY_FILE).write_text(json.dumps(identity))
    return results


def test_build_writes_the_summary_numbers_and_figures(tmp_path):
    results = write_sweep(
        tmp_path,
        {
            "seed": {0: 20.0, 1: 21.0, 2: 22.0},
            "seed-no-augment": {0: 19.0, 1: 20.0, 2: 21.0},  # 1 dB below seed on every seed
            "seed-lr": {0: 21.0, 1: 20.0, 2: 22.5},
        },
    )
    built = report.build(results)
    assert built.table.loc["seed", ("psnr", "mean")] == pytest.approx(21.0)
    # The last 30% of 1000 iterations start at 700: 3 evaluations of +1 dB each.
    assert built.table.loc["seed", ("tail_gain", "mean")] == pytest.approx(3.0)
    effect = built.effects.set_index("run")
    assert effect.loc["seed-no-augment", "effect_db"] == pytest.approx(1.0)
    assert effect.loc["seed-no-augment", "verdict"] == "helps"  # +1.0 on every seed
    assert effect.loc["seed-lr", "verdict"] == "no effect resolved"
    text = built.summary.read_text()
    assert text.startswith(
        "# mini: final test metrics (cpu profile)\n\n## Scale (cpu profile)\n\nSmaller:\n\n"
        "- patch 32 instead of 100.\n\nKeys: patch_size: 32.\n"
    )
    assert "PSNR 17.00 dB over 50 test patches, MS-SSIM 0.8000" in text
    assert "| seed | 3 | 21.00 +- 1.00 | 4.00 +- 1.00 | 0.10 | 0.04 | — | 3.00 +- 0.00 |" in text
    # No per-patch files: no evaluation noise for the effects.
    assert "| the seed-no-augment change | 1.00 +- 0.00 | 3 | — | — | helps |" in text
    assert "Runs use random VGG-19 weights" in text
    assert "`seed` gains 3.00 dB there, against a spread of 1.00 dB: **not flattened**" in text
    assert (results / "psnr_curves.png").stat().st_size > 10_000
    assert (results / "effects.png").stat().st_size > 5_000
    assert built.figures["psnr_curves"].axes[0].get_title() == "seed (3 seeds)"


def test_an_experiment_of_one_run_draws_one_panel_not_a_row_of_empty_ones(tmp_path):
    results = write_sweep(tmp_path, {"seed": {0: 21.0, 1: 22.0, 2: 23.0}})
    built = report.build(results)
    panels = [ax for ax in built.figures["psnr_curves"].axes if ax.axison]
    assert len(built.figures["psnr_curves"].axes) == len(panels) == 1
    assert panels[0].get_title() == "seed (3 seeds)"


def test_verdicts_are_read_at_every_evaluation_of_the_last_30_percent(tmp_path):
    results = write_sweep(
        tmp_path,
        {
            "seed": {0: 20.0, 1: 21.0, 2: 22.0},
            "seed-a": {0: 19.0, 1: 20.0, 2: 21.0},  # 1 dB below seed at every evaluation
            "seed-b": {0: 19.0, 1: 20.0, 2: 21.0},
        },
    )
    # seed-b catches up at its last evaluation only: its final verdict is not the earlier ones.
    for seed in (0, 1, 2):
        path = results / f"seed-b-s{seed}" / "metrics.csv"
        m = pd.read_csv(path)
        m.loc[m["step"] == 1000, "psnr_dslr_enhanced"] += 1.0 + 0.1 * seed
        m.to_csv(path, index=False)
    built = report.build(results)
    curves = built.effect_curves.set_index(["run", "step"])
    assert len(curves.loc["seed-a"]) == 10
    assert list(curves.loc["seed-a", "effect_db"]) == pytest.approx([1.0] * 10)
    assert curves.loc[("seed-b", 900), "verdict"] == "helps"
    assert curves.loc[("seed-b", 1000), "effect_db"] == pytest.approx(-0.1)
    assert curves.loc[("seed-b", 1000), "verdict"] == "no effect resolved"
    text = built.summary.read_text()
    # The last 30% of 1000 iterations start at 700, as for the tail gain.
    assert "| change | 700 | 800 | 900 | 1,000 | |" in text
    assert (
        "| the seed-a change | +1.00 helps | +1.00 helps | +1.00 helps | +1.00 helps | settled |"
        in text
    )
    assert (
        "| the seed-b change | +1.00 helps | +1.00 helps | +1.00 helps | -0.10 no effect resolved "
        "| unsettled |"
    ) in text
    assert "Settled: 1 of 2 verdicts." in text
    assert (results / "effect_curves.png").stat().st_size > 10_000
    axes = built.figures["effect_curves"].axes
    assert [ax.get_title() for ax in axes[:2]] == ["the seed-a change", "the seed-b change"]
    assert axes[1].get_lines()[-1].get_ydata()[-1] == pytest.approx(-0.1)


def test_one_seed_gives_no_verdict_to_call_settled(tmp_path):
    results = write_sweep(tmp_path, {"seed": {0: 20.0}, "seed-a": {0: 19.0}})
    text = report.build(results).summary.read_text()
    assert (
        "| the seed-a change | " + " | ".join(["+1.00 undecided (1 seed)"] * 4) + " | — |" in text
    )
    assert "No verdicts: one seed a run." in text and "Settled:" not in text


def test_the_evaluation_noise_of_an_effect_is_paired_by_patch(tmp_path):
    """Patches differ in difficulty far more than runs do: the effect's standard error over
    patches, taken patch by patch, leaves the shared difficulty out; one run's SE does not."""
    import numpy as np

    from dped.runs import write_patch_psnr

    results = write_sweep(
        tmp_path, {"seed": {0: 20.0, 1: 21.0, 2: 22.0}, "seed-b": {0: 19.0, 1: 20.0, 2: 21.5}}
    )
    rng = np.random.default_rng(0)
    difficulty = rng.normal(0, 3, 50)
    values = {
        (run, seed): np.round(20 + difficulty + shift + seed + rng.normal(0, 0.2, 50), 4)
        for run, shift in (("seed", 0.0), ("seed-b", -0.8))
        for seed in (0, 1, 2)
    }
    for (run, seed), v in values.items():
        write_patch_psnr(results / f"{run}-s{seed}", 1000, v)
    built = report.build(results)
    effect = built.effects.set_index("run").loc["seed-b", "eval_se_db"]
    per_patch = sum(values["seed", s] - values["seed-b", s] for s in (0, 1, 2)) / 3
    assert effect == pytest.approx(per_patch.std(ddof=1) / np.sqrt(50), rel=1e-6)
    one_run = values["seed", 0].std(ddof=1) / np.sqrt(50)
    assert effect < one_run / 10
    pairs = [values["seed", i] - values["seed", j] for i, j in ((0, 1), (0, 2), (1, 2))]
    seed_noise = np.mean([d.std(ddof=1) / np.sqrt(50) for d in pairs])
    text = built.summary.read_text()
    assert f"pairs of seeds) is {seed_noise:.3f} dB counting each test patch as a draw." in text
    # The dataset does not say where its patches were cut: no region SE.
    assert f"| the seed-b change | 0.83 +- 0.29 | 3 | {effect:.3f} | — | helps |" in text
    # A record from another step than the run's last evaluation is not its final one.
    write_patch_psnr(results / "seed-b-s2", 900, values["seed-b", 2])
    assert np.isnan(report.build(results).effects.set_index("run").loc["seed-b", "eval_se_db"])


def test_verdicts_are_set_beside_an_earlier_sweeps(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "experiments").mkdir()
    (tmp_path / "notebooks").mkdir()  # project_root(): relative `compare` paths start here
    write_sweep(
        tmp_path / "old",
        {"seed": {0: 12.0, 1: 12.5}, "seed-a": {0: 9.0, 1: 9.4}, "seed-b": {0: 12.0, 1: 12.6}},
    )
    results = write_sweep(
        tmp_path,
        {
            "seed": {0: 20.0, 1: 21.0},
            "seed-a": {0: 21.0, 1: 22.1},
            "seed-b": {0: 20.0, 1: 21.1},
            "seed-c": {0: 19.0, 1: 20.0},
        },
        extra={"compare": {"cpu": "old/mini"}},
    )
    earlier = report.build(results).earlier.set_index("run")
    assert earlier.loc["seed-a", "verdict_old"] == "helps"
    assert earlier.loc["seed-a", "verdict"] == "hurts"
    assert earlier.loc["seed-a", "outcome"] == "flips"
    assert earlier.loc["seed-b", "outcome"] == "survives"  # no effect resolved, twice
    assert earlier.loc["seed-c", "outcome"] == "not in the earlier sweep"
    text = (results / "summary.md").read_text()
    assert "| the seed-a change | 3.05 +- 0.07 | helps | -1.05 +- 0.07 | hurts | flips |" in text


def test_runs_held_longer_measure_what_training_on_moves(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "experiments").mkdir()
    (tmp_path / "notebooks").mkdir()  # project_root(): relative `held_longer` paths start here
    extra = {"held_longer": {"cpu": "longer/mini"}}
    results = write_sweep(tmp_path, {"seed": {0: 20.0, 1: 21.0}}, extra=extra)
    summary_text = report.build(results).summary.read_text()
    assert "## Held longer in longer/mini" in summary_text and "no finished run yet" in summary_text
    write_sweep(
        tmp_path / "longer",
        {"seed": {0: 20.2, 1: 20.9, 2: 30.0}, "seed-a": {0: 21.0, 1: 22.0}},
        iters=2000,
    )
    results = write_sweep(
        tmp_path,
        {"seed": {0: 20.0, 1: 21.0}, "seed-a": {0: 19.0, 1: 20.2}, "seed-b": {0: 19.0, 1: 20.0}},
        name="mini2",
        extra=extra,
    )
    built = report.build(results)
    longer = built.longer.set_index("run")
    assert list(longer.index) == ["seed", "seed-a"]  # seed-b is not held longer
    # Seed 2 ran only there: it is left out of both lengths' numbers.
    assert longer.loc["seed", "seeds"] == 2 and longer.loc["seed", "steps_longer"] == 2000
    assert longer.loc["seed", "psnr_longer"] == pytest.approx(20.55)
    assert longer.loc["seed", "moved_db"] == pytest.approx(0.05)  # +0.2 and -0.1
    assert longer.loc["seed-a", "verdict"] == "helps"  # +1.0 and +0.8 here
    assert longer.loc["seed-a", "verdict_longer"] == "hurts"  # -0.8 and -1.1 there
    text = built.summary.read_text()
    # The tail gains 3 dB against a spread of 0.71: not flattened by the rule's estimate; held
    # longer, the same seeds move 0.05 dB: flattened by the direct test.
    assert "**not flattened** at this length" in text
    assert "moves its final PSNR by 0.05 +- 0.21 dB (paired by seed), less than the spread" in text
    assert "| seed-a | 2 | 2,000 | 19.60 | 21.50 | 1.90 +- 0.14 | 0.90 +- 0.14 | helps |" in text
    # A curve that training on still lifts by more than another seed moves it.
    write_sweep(tmp_path / "rising", {"seed": {0: 23.0, 1: 24.0}}, iters=2000)
    results = write_sweep(
        tmp_path,
        {"seed": {0: 20.0, 1: 21.0}},
        name="mini3",
        extra={"held_longer": {"cpu": "rising/mini"}},
    )
    text = report.build(results).summary.read_text()
    assert "moves its final PSNR by 3.00 +- 0.00 dB (paired by seed), not less than" in text
    assert "**not flattened** by this direct test either" in text


def test_a_borrowed_baseline_and_a_baseline_recorded_beside_older_runs(tmp_path):
    write_sweep(tmp_path, {"seed": {0: 20.0}}, name="ablations", identity=None)
    (tmp_path / "ablations" / IDENTITY_FILE).write_text(json.dumps(IDENTITY | {"ms_ssim": 0.7}))
    results = write_sweep(
        tmp_path, {"seed-x": {0: 18.0}}, name="undocumented", extra={"baseline_from": "ablations"}
    )
    built = report.build(results)
    assert list(built.runs["run"]) == ["seed", "seed-x"]
    assert built.effects.loc[0, "effect_db"] == pytest.approx(2.0)
    assert built.identity["ms_ssim"] == 0.8  # the runs' own record comes first
    built = report.build(tmp_path / "ablations", out=tmp_path / "elsewhere")
    assert built.identity["ms_ssim"] == 0.7 and (tmp_path / "elsewhere" / "summary.md").is_file()


def test_a_rebuilt_dataset_does_not_lend_its_baseline_to_older_runs(tmp_path):
    results = write_sweep(tmp_path, {"seed": {0: 20.0}}, identity=None)
    data = tmp_path / "data" / "mini"
    data.mkdir(parents=True)
    folder = results / "seed-s0"
    cfg = preset("seed").replace(dataset_dir=str(tmp_path / "data"), phone="mini")
    (folder / "config.yaml").write_text(
        yaml.safe_dump(
            {"preset": "seed", "dataset_dir": cfg.dataset_dir, "phone": "mini", "num_iters": 1000}
        )
    )
    (data / IDENTITY_FILE).write_text(json.dumps(IDENTITY | {"patches": 387}))
    runs = report.collect(results)
    assert report.identity(runs, results) is None  # 387 test patches there, 50 here
    (data / IDENTITY_FILE).write_text(json.dumps(IDENTITY))
    assert report.identity(runs, results) == IDENTITY


def test_dped_report_on_the_command_line(tmp_path):
    from conftest import dped_cli

    results = write_sweep(tmp_path, {"seed": {0: 20.0, 1: 20.5}})
    done = dped_cli("report", str(results))
    assert done.returncode == 0, done.stderr
    # No run reverts anything: the effect figures say so instead of failing.
    figures = "psnr_curves.png, effects.png, effect_curves.png"
    assert done.stdout.strip() == f"{results / 'summary.md'}, {figures} (2 runs)"
    text = (results / "summary.md").read_text()  # and no empty effect table or figures to show
    assert "## Effect of each change" not in text and "effects.png" not in text
    assert "![PSNR curves](psnr_curves.png)" in text
    missing = dped_cli("report", str(tmp_path / "nothing"))
    assert missing.returncode == 2
    assert missing.stderr.strip() == (
        f"dped: error: no {tmp_path / 'nothing' / 'experiment.yaml'}: run the sweep (make sweep) "
        f"to make {tmp_path / 'nothing'}"
    )


def test_verdicts_need_more_than_noise():
    assert verdicts.verdict(0.02, 0.3, 3) == "no effect resolved"
    assert verdicts.verdict(-1.0, 0.1, 3) == "hurts"
    assert verdicts.verdict(0.5, float("nan"), 1) == "undecided (1 seed)"


def test_summary_cells_say_one_seed_and_undefined_values_instead_of_nan():
    assert summary.fmt(1.5, float("nan"), 2, defined=1, seeds=1) == "1.50 +- — (1 seed)"
    assert summary.fmt(0.6, float("nan"), 2, defined=1, seeds=3) == "0.60 (1 of 3 seeds defined)"
    assert summary.fmt(float("nan"), float("nan"), 2, defined=0, seeds=3) == "undefined (NaN)"
    assert summary.fmt(20.0, 0.5, 1, defined=3, seeds=3) == "20.0 +- 0.5"


def test_a_partial_sweep_counts_only_finished_runs_and_names_the_others(tmp_path):
    results = write_sweep(tmp_path, {"seed": {0: 20.0, 1: 21.0}, "b": {0: 19.0, 1: 19.5}})
    stopped = results / "b-s1" / "config.yaml"
    stopped.write_text(stopped.read_text().replace("num_iters: 1000", "num_iters: 1500"))
    built = report.build(results)
    assert sorted(zip(built.runs["run"], built.runs["seed"])) == [
        ("b", 0),
        ("seed", 0),
        ("seed", 1),
    ]
    assert report.unfinished(results) == ["b-s1"]
    text = built.summary.read_text()
    assert "**Partial sweep**: 1 run folders are not in these numbers" in text
    assert ": b-s1. `make reproduce`" in text


def test_the_region_se_counts_neighbouring_patches_of_a_photograph_as_one_draw(tmp_path):
    """Where the dataset says where its test patches were cut, the report's second standard
    error takes each region's patches together: when runs differ by region, not by patch, it
    is the standard error over regions, several times the one over patches."""
    import numpy as np

    from dped.data import write_test_positions
    from dped.evaluation import REGION_PX, standard_error
    from dped.runs import read_patch_psnr, write_patch_psnr

    results = write_sweep(
        tmp_path, {"seed": {0: 20.0, 1: 21.0, 2: 22.0}, "seed-b": {0: 19.0, 1: 20.0, 2: 21.5}}
    )
    # 50 patches: 10 regions of 5 (two photographs), cut 19 pixels apart within a region.
    positions = [
        (f"photo{g // 5}", (g % 5) * REGION_PX, k * 19) for g in range(10) for k in range(5)
    ]
    write_test_positions(tmp_path / "data" / "mini", positions)
    for folder in results.iterdir():
        if (folder / "config.yaml").is_file():
            cfg = yaml.safe_load((folder / "config.yaml").read_text())
            cfg |= {"dataset_dir": str(tmp_path / "data"), "phone": "mini"}
            (folder / "config.yaml").write_text(yaml.safe_dump(cfg))
    rng = np.random.default_rng(3)
    by_region = np.repeat(rng.normal(0, 1, 10), 5)  # the runs' difference varies by region
    for seed in (0, 1, 2):
        base = 20 + rng.normal(0, 3, 50)
        write_patch_psnr(results / f"seed-s{seed}", 1000, base)
        write_patch_psnr(results / f"seed-b-s{seed}", 1000, base - 0.8 + by_region)
    # The gain over the identity, region by region, needs the identity's per-patch PSNRs.
    assert report.build(results).table[("gain_region_se", "mean")].isna().all()
    ident = np.round(18 + rng.normal(0, 3, 50), 4)
    for folder in results.glob("*-s*"):
        (folder / IDENTITY_FILE).write_text(json.dumps({**IDENTITY, "patch_psnr": list(ident)}))
    built = report.build(results)
    gains = [read_patch_psnr(results / f"seed-b-s{seed}", 1000) - ident for seed in (0, 1, 2)]
    want = np.mean([standard_error(g, np.repeat(np.arange(10), 5)) for g in gains])
    assert built.table.loc["seed-b", ("gain_region_se", "mean")] == pytest.approx(want)
    assert want > 1.5 * built.table.loc["seed-b", ("gain_se", "mean")]
    effect = built.effects.set_index("run").loc["seed-b"]
    region_means = by_region.reshape(10, 5).mean(1)
    assert effect["region_se_db"] == pytest.approx(region_means.std(ddof=1) / np.sqrt(10))
    assert effect["eval_se_db"] == pytest.approx(by_region.std(ddof=1) / np.sqrt(50))
    assert effect["region_se_db"] > 2 * effect["eval_se_db"]
    # A dataset whose test set is not the one the runs were evaluated on lends no regions.
    write_test_positions(tmp_path / "data" / "mini", positions[:40])
    assert np.isnan(report.build(results).effects.set_index("run").loc["seed-b", "region_se_db"])


def test_a_curve_counts_as_flattened_when_its_tail_gains_less_than_the_seeds_spread():
    runs = pd.DataFrame(
        {
            "run": ["seed"] * 3,
            "seed": [0, 1, 2],
            "psnr": [20.0, 20.5, 21.0],  # spread 0.5
            "tail_gain": [0.2, 0.3, 0.4],
            **{k: [0.1] * 3 for k in ("psnr_se", "gain_se", "ssim", "ms_ssim", "wall_s")},
        }
    )
    lines = summary._flattening_lines(report.final_table(runs), "seed")
    assert lines[-1].endswith("`seed` gains 0.30 dB there, against a spread of 0.50 dB: flattened.")
    runs["tail_gain"] = [0.5, 0.6, 0.7]
    lines = summary._flattening_lines(report.final_table(runs), "seed")
    assert lines[-1].endswith("**not flattened** at this length.")


def test_keys_every_run_sets_over_the_profile_are_stated_beside_the_profile_notes():
    spec = {
        "profile_keys": {"num_iters": 1500, "eval_every": 150, "batch_size": 2},
        "runs": {
            "seed": {"preset": "seed", "num_iters": 3000, "eval_every": 300},
            "paper": {"preset": "paper", "num_iters": 3000, "eval_every": 300, "batch_size": 4},
        },
    }
    assert summary._own_keys_lines(spec) == [
        "**Every run of this experiment sets its own num_iters: 3000, eval_every: 300**, over "
        "the profile's.",
        "",
    ]
    spec["runs"]["paper"]["num_iters"] = 1000  # not one value for every run: not stated
    assert "num_iters" not in summary._own_keys_lines(spec)[0]
    del spec["runs"]["seed"]["eval_every"], spec["runs"]["seed"]["num_iters"]
    assert summary._own_keys_lines(spec) == []


def test_a_baseline_with_more_seeds_pairs_its_effects_on_the_seeds_both_ran(tmp_path):
    finals = {"seed": {s: 20.0 + s / 2 for s in range(5)}, "b": {0: 19.0, 1: 19.1, 2: 19.5}}
    extra = {"seeds": {"cpu": [0, 1, 2]}, "baseline_seeds": {"cpu": [0, 1, 2, 3, 4]}}
    results = write_sweep(tmp_path, finals, extra=extra)
    built = report.build(results)
    assert report.unfinished(results) == []
    assert sorted(built.runs.loc[built.runs["run"] == "seed", "seed"]) == [0, 1, 2, 3, 4]
    (effect,) = built.effects.itertuples()
    assert (effect.seeds, effect.effect_db) == (3, pytest.approx((1.0 + 1.4 + 1.5) / 3))
    text = built.summary.read_text()
    assert "| seed | 5 | 21.00 +- 0.79 |" in text  # its own spread: five seeds
    (results / "seed-s4" / "metrics.csv").unlink()
    assert report.unfinished(results) == ["seed-s4"]


def test_the_summary_says_what_precision_the_runs_computed_in(tmp_path):
    results = write_sweep(tmp_path, {"seed": {0: 20.0, 1: 21.0}, "b": {0: 19.0, 1: 19.5}})
    text = report.build(results).summary.read_text()
    assert "Precision as run: float32 in all 4 runs." in text  # the configs' own, unrecorded
    env = {"precision": "mixed_bfloat16"}  # what `auto` chose on another machine
    (results / "b-s1" / "environment.json").write_text(json.dumps(env))
    built = report.build(results)
    precision = built.runs.set_index(["run", "seed"])["precision"]
    assert precision[("b", 1)] == "mixed_bfloat16" and (precision == "float32").sum() == 3
    assert (
        "**Precision as run differs between runs** (float32 in 3, mixed_bfloat16 in 1)"
        in built.summary.read_text()
    )
