import pytest
import yaml

from dped import experiment, sweep
from dped.config import ConfigError, preset


def write_experiment(tmp_path, notebook="notebooks/DPED-main.ipynb"):
    spec = {
        "name": "mini-ablation",
        "notebook": notebook,
        "seeds": {"cpu": [0, 1]},
        "runs": {
            "seed": {"preset": "seed"},
            "seed-no-augment": {"preset": "seed", "augment": False},
        },
        "profiles": {"cpu": {"batch_size": 2, "num_iters": 3}},
    }
    path = tmp_path / "exp.yaml"
    path.write_text(yaml.safe_dump(spec))
    return path


def test_several_experiments_run_as_one_queue_in_order_then_each_reports(tmp_path, monkeypatch):
    first = write_experiment(tmp_path)
    second = tmp_path / "second.yaml"
    spec = yaml.safe_load(first.read_text()) | {"name": "second", "seeds": {"cpu": [5]}}
    second.write_text(yaml.safe_dump(spec))
    ran, reported = [], []

    def fake_execute(job, notebook, results):
        ran.append(f"{results.name}/{job.name}")
        status = "failed" if job.name == "seed-no-augment-s5" else "done"
        return sweep.Outcome(job.name, status, 1.0, 20.0)

    monkeypatch.setattr(sweep, "execute", fake_execute)
    monkeypatch.setattr(sweep, "write_report", lambda results: reported.append(results.name) or 1)
    failed = sweep.sweep([first, second], "cpu", tmp_path / "results")
    assert ran == [
        *(
            f"mini-ablation/{n}"
            for n in ("seed-s0", "seed-s1", "seed-no-augment-s0", "seed-no-augment-s1")
        ),
        "second/seed-s5",
        "second/seed-no-augment-s5",
    ]
    assert reported == ["mini-ablation", "second"]  # the borrowing experiment after its source
    assert failed == 1
    for name in ("mini-ablation", "second"):
        assert (tmp_path / "results" / name / "experiment.yaml").is_file()


def test_experiment_expands_runs_seeds_and_profile(tmp_path):
    _, jobs = experiment.load_experiment(write_experiment(tmp_path), "cpu")
    assert [j.name for j in jobs] == [
        "seed-s0",
        "seed-s1",
        "seed-no-augment-s0",
        "seed-no-augment-s1",
    ]
    job = jobs[2]
    assert job.config == preset("seed").replace(
        augment=False, batch_size=2, num_iters=3, seed=0, name="seed-no-augment-s0"
    )
    with pytest.raises(ConfigError, match="unknown profile 'gpu': expected one of cpu"):
        experiment.load_experiment(write_experiment(tmp_path), "gpu")


def test_the_ablations_revert_each_readme_modification_inside_the_seed():
    _, jobs = experiment.load_experiment("experiments/ablations.yaml", "cpu")
    configs = {j.name.rsplit("-s", 1)[0]: j.config for j in jobs if j.config.seed == 0}
    seeds = {}
    for j in jobs:
        seeds.setdefault(j.name.rsplit("-s", 1)[0], []).append(j.config.seed)
    # three seeds each: effects with a spread (more seeds of `seed`: experiments/unseen.yaml)
    assert all(s == [0, 1, 2] for s in seeds.values())
    seed = configs["seed"]
    assert configs["paper"].norm == "instance" and configs["paper"].w_content == 10
    reverted = {run: set(seed.diff(c)) - {"name"} for run, c in configs.items() if run != "seed"}
    assert reverted["seed-batch-norm"] == reverted["seed-affine-bn"] == {"norm"}
    assert reverted["seed-tanh-head"] == {"head"}
    assert reverted["seed-paper-weights"] == {"w_content", "w_color", "w_texture", "w_tv"}
    assert reverted["seed-no-augment"] == {"augment"}
    assert reverted["seed-lr-5e-4"] == {"learning_rate"}


def test_the_undocumented_experiment_switches_one_silent_difference_per_run():
    from dped.config import SEED_SOURCES

    spec, jobs = experiment.load_experiment("experiments/undocumented.yaml", "cpu")
    configs = {j.name.rsplit("-s", 1)[0]: j for j in jobs}
    # Its baseline is the seed runs of the ablation sweep, with the same profile and seeds.
    source, borrowed = experiment.load_experiment(
        f"experiments/{spec['baseline_from']}.yaml", "cpu"
    )
    assert source["seeds"]["cpu"] == spec["seeds"]["cpu"]
    configs["seed"] = next(j for j in borrowed if j.name == "seed-s0")
    seed, paper = configs["seed"].config, preset("paper")
    silent = {k for k, (_, why) in SEED_SOURCES.items() if "(silent)" in why} - {"eval_protocol"}
    switched = set()
    for run, job in configs.items():
        if run == "seed":
            continue
        changed = set(seed.diff(job.config)) - {
            "name",
            "seed",
            "w_content",
            "w_color",
            "w_texture",
            "w_tv",
        }
        assert len(changed) == 1 and job.reverts, run
        (key,) = changed
        assert getattr(job.config, key) == getattr(paper, key), run  # back to the authors' value
        switched.add(key)
    assert switched == silent


def finish(run_dir, job, psnr):
    """A run folder as a finished run leaves it: its config and a last row at num_iters."""
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "config.yaml").write_text(job.config.to_yaml())
    (run_dir / "metrics.csv").write_text(f"step,psnr\n{job.config.num_iters},{psnr}\n")


def test_sweep_skips_complete_runs_and_records_failures(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    path = write_experiment(tmp_path)
    jobs = {job.name: job for job in experiment.load_experiment(path, "cpu")[1]}
    done = tmp_path / "results" / "mini-ablation" / "seed-s0"
    finish(done, jobs["seed-s0"], 20.0)
    calls = []

    def fake_run(job, notebook, results):
        calls.append(job.name)
        if job.name == "seed-no-augment-s0":
            raise RuntimeError("kernel died")
        finish(results / job.name, job, 21.5)

    monkeypatch.setattr(sweep, "run_job", fake_run)
    reports = []
    monkeypatch.setattr(sweep, "write_report", lambda results: reports.append(results) or True)
    assert sweep.main([str(path)]) == 1
    assert reports == [tmp_path / "results" / "mini-ablation"]  # drawn from what finished
    out = capsys.readouterr().out
    assert "[1/4] seed-s0: complete, skipped" in out
    assert "[3/4] seed-no-augment-s0: FAILED" in out and "[4/4] seed-no-augment-s1: done" in out
    assert calls == ["seed-s1", "seed-no-augment-s0", "seed-no-augment-s1"]
    error = tmp_path / "results" / "mini-ablation" / "seed-no-augment-s0.error.txt"
    assert "RuntimeError: kernel died" in error.read_text()
    # A rerun skips every finished run and retries only the failed one.
    calls.clear()
    monkeypatch.setattr(
        sweep,
        "run_job",
        lambda job, nb, res: calls.append(job.name) or finish(res / job.name, job, 19.0),
    )
    assert sweep.main([str(path)]) == 0
    assert calls == ["seed-no-augment-s0"] and not error.exists()
    # A finished run saved under another config (the profile edited since) is not complete.
    stale = jobs["seed-s1"].config.replace(discriminator_width=0.5)
    (done.parent / "seed-s1" / "config.yaml").write_text(stale.to_yaml())
    calls.clear()
    assert sweep.main([str(path)]) == 0
    assert calls == ["seed-s1"]
    # A report that cannot be written fails the sweep, runs untouched.
    monkeypatch.setattr(sweep, "write_report", lambda results: False)
    assert sweep.main([str(path)]) == 1


def test_a_missing_experiment_file_is_one_line_naming_it_and_exit_status_2(tmp_path, capsys):
    missing = tmp_path / "missing.yaml"
    assert sweep.main([str(missing)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("dped sweep: error:") and str(missing) in err[0]


GOOD = """name: bad
seeds: {cpu: [0]}
runs:
  seed: {preset: seed}
  b: {preset: seed, augment: false, reverts: "(4)"}
baseline: seed
profiles: {cpu: {num_iters: 2}}
"""


@pytest.mark.parametrize(
    "text, message",
    [
        (
            GOOD.replace("  b: {", "  seed: {"),
            "{path}:5: 'seed' is given twice (first at line 4): keep one",
        ),
        (
            GOOD.replace("baseline: seed", "baseline: nope"),
            "{path}: baseline: 'nope' is not one of the runs (seed, b)",
        ),
        (
            GOOD.replace(
                "runs:\n  seed: {preset: seed}\n  b: {preset: seed, augment: false, "
                'reverts: "(4)"}\n',
                "",
            ).replace("baseline: seed\n", ""),
            "{path}: 'runs' is missing",
        ),
        (
            "- seed\n- b\n",
            "{path}: expected a mapping with name, runs, seeds and profiles, got a list",
        ),
        (
            GOOD.replace(
                "runs:\n  seed: {preset: seed}\n  b: {preset: seed, augment: false, "
                'reverts: "(4)"}\n',
                "runs: [seed, b]\n",
            ),
            "{path}: runs: expected a mapping of run name -> settings, got ['seed', 'b']",
        ),
        (
            GOOD.replace("seeds: {cpu: [0]}", "seeds: {cpu: [0, 0]}"),
            "{path}: seeds: cpu: a seed is given twice in [0, 0]",
        ),
        (
            GOOD.replace("seeds: {cpu: [0]}", "seeds: {full: [0]}"),
            "{path}: seeds: cpu: expected a list of integer seeds, got None",
        ),
        (
            GOOD.replace("runs:\n", "runs: [\n"),
            "{path}:5:3: YAML syntax error: expected ',' or ']', but got '<scalar>'",
        ),
        (
            GOOD.replace("augment: false", "augmnt: false"),
            "{path}: run 'b': unknown config key 'augmnt'",
        ),
        ("", "{path}: expected a mapping with name, runs, seeds and profiles, got nothing"),
    ],
    ids=[
        "run twice",
        "baseline",
        "no runs",
        "list",
        "runs list",
        "seed twice",
        "no seeds",
        "syntax",
        "typo",
        "empty",
    ],
)
def test_a_bad_experiment_is_refused_before_any_run_with_its_file_and_line(tmp_path, text, message):
    from conftest import dped_cli

    path = tmp_path / "bad.yaml"
    path.write_text(text)
    done = dped_cli("sweep", str(path), "--results", str(tmp_path / "results"))
    assert done.returncode == 2
    first = done.stderr.strip().splitlines()[0]
    assert first.startswith(f"dped sweep: error: {message.format(path=path)}"), done.stderr
    assert not (tmp_path / "results").exists()  # nothing started, nothing written


def test_the_sweep_prints_each_evaluation_as_it_lands(tmp_path):
    from dped.runs import write_metrics

    _, jobs = experiment.load_experiment(write_experiment(tmp_path), "cpu")
    results = tmp_path / "results"
    (results / "seed-s0").mkdir(parents=True)
    write_metrics(results / "seed-s0", [{"step": 1, "psnr": 15.0}])  # there before the sweep
    lines = []
    watch = sweep.EvaluationWatch(results, jobs, out=lambda line, **_: lines.append(line))
    watch.poll()
    assert lines == []
    write_metrics(results / "seed-s0", [{"step": 1, "psnr": 15.0}, {"step": 2, "psnr": 16.25}])
    (results / "seed-s1").mkdir()
    write_metrics(results / "seed-s1", [{"step": 1, "psnr": 14.5}])
    watch.poll()
    watch.poll()  # nothing new: nothing printed twice
    assert lines == [
        "  seed-s0: step 2/3, PSNR 16.25 dB",
        "  seed-s1: step 1/3, PSNR 14.50 dB",
    ]


def test_a_runs_kernel_starts_without_dasks_malloc_trim_setting(tmp_path, monkeypatch):
    # Dask's nanny exports MALLOC_TRIM_THRESHOLD_ to its workers; a kernel that inherited it
    # spent its training steps in page faults. The kernel must start without it and keep the rest.
    import json

    import nbformat

    monkeypatch.setenv("MALLOC_TRIM_THRESHOLD_", "65536")
    monkeypatch.setenv("DPED_TEST_MARK", "kept")
    nb = nbformat.v4.new_notebook()
    params = nbformat.v4.new_code_cell('config = ""\noverrides = {}\nout = ""\nresume = False')
    params.metadata["tags"] = ["parameters"]
    dump = "import json, os\nopen(out, 'w').write(json.dumps(dict(os.environ)))"
    nb.cells = [params, nbformat.v4.new_code_cell(dump)]
    nb.metadata = nbformat.read("notebooks/DPED-main.ipynb", 4).metadata  # its kernel
    notebook = tmp_path / "env.ipynb"
    nbformat.write(nb, notebook)
    job = experiment.Job("env-s0", "seed", {}, preset("seed"))
    sweep.run_job(job, notebook, tmp_path)
    env = json.loads((tmp_path / "env-s0").read_text())
    assert "MALLOC_TRIM_THRESHOLD_" not in env
    assert env["DPED_TEST_MARK"] == "kept"


def test_the_baseline_can_train_with_more_seeds_than_the_runs_it_is_compared_with(tmp_path):
    path = tmp_path / "more.yaml"
    path.write_text(
        GOOD.replace("baseline: seed\n", "baseline: seed\nbaseline_seeds: {cpu: [0, 5, 7]}\n")
    )
    spec, jobs = experiment.load_experiment(path, "cpu")
    assert [j.name for j in jobs] == ["seed-s0", "seed-s5", "seed-s7", "b-s0"]
    assert [j.config.seed for j in jobs] == [0, 5, 7, 0]
    assert experiment.run_seeds(spec, "b") == [0]


@pytest.mark.parametrize("key", ["compare", "held_longer"])
def test_sweeps_set_beside_this_one_are_named_by_profile(tmp_path, key):
    spec = yaml.safe_load(GOOD)
    good = {**spec, key: {"cpu": "results/longer"}}
    assert experiment.experiment_problems(good, "cpu", tmp_path / "x.yaml") == []
    bad = {**spec, key: "results/longer"}
    assert experiment.experiment_problems(bad, "cpu", tmp_path / "x.yaml") == [
        f"{key}: expected profile -> results folder, got 'results/longer'"
    ]


@pytest.mark.parametrize(
    "given, problem",
    [
        ("{cpu: [1, 2]}", "baseline_seeds: cpu: [1, 2] lacks seeds [0] the other runs use"),
        ("{cpu: [0, 1, 1]}", "baseline_seeds: cpu: a seed is given twice in [0, 1, 1]"),
        ("[0, 1]", "baseline_seeds: expected profile -> list of integer seeds, got [0, 1]"),
        ("{cpu: [0, x]}", "baseline_seeds: expected profile -> list of integer seeds, got "),
    ],
)
def test_baseline_seeds_must_hold_every_seed_the_effects_pair_with(tmp_path, given, problem):
    spec = yaml.safe_load(
        GOOD.replace("baseline: seed\n", f"baseline: seed\nbaseline_seeds: {given}\n")
    )
    assert [
        p[: len(problem)] for p in experiment.experiment_problems(spec, "cpu", tmp_path / "x.yaml")
    ] == [problem]
    borrowed = {**spec, "baseline_seeds": {"cpu": [0, 1]}, "baseline_from": "other"}
    (tmp_path / "other.yaml").write_text(GOOD)
    assert experiment.experiment_problems(borrowed, "cpu", tmp_path / "x.yaml") == [
        "baseline_seeds: the baseline's runs belong to other: set them there"
    ]
    assert (
        experiment.experiment_problems(
            {**spec, "baseline_seeds": {"full": [0]}}, "cpu", tmp_path / "x.yaml"
        )
        == []
    )
