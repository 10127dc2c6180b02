"""The notebooks as users meet them: papermill's two parameter forms and its --help-notebook,
any working directory, no TensorFlow noise in outputs, and outputs never committed."""

import json
import subprocess
import sys

import nbformat
import papermill
import pytest
from conftest import REPO, user_env

NOTEBOOKS = sorted((REPO / "notebooks").glob("*.ipynb"))
MAIN = REPO / "notebooks" / "DPED-main.ipynb"
# The user's environment: papermill from the shell, no smoke overrides injected by the notebook.
ENV = user_env()


def papermill_cli(tmp_path, *args):
    return subprocess.run(
        [sys.executable, "-m", "papermill", str(MAIN), str(tmp_path / "out.ipynb"), *args],
        cwd=tmp_path,  # not the repository: relative paths must still mean the repo root
        env=ENV,
        capture_output=True,
        text=True,
        timeout=600,
    )


def stderr_outputs(path):
    nb = nbformat.read(path, 4)
    return [
        "".join(o["text"])
        for c in nb.cells
        for o in c.get("outputs", [])
        if o.get("name") == "stderr"
    ]


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_each_parameter_declares_its_type_for_help_notebook(path):
    nb = nbformat.read(path, 4)
    assert nb.metadata["kernelspec"]["name"] == "dped"
    assert sum("parameters" in c.metadata.get("tags", []) for c in nb.cells) == 1
    params = papermill.inspect_notebook(str(path))
    assert params
    for name, info in params.items():
        assert info["inferred_type_name"] not in ("None", ""), (path.name, name, info)
        assert info["help"], (path.name, name)


def test_papermill_p_with_json_overrides_trains_from_another_directory(tmp_path):
    overrides = {"num_iters": 2, "eval_every": 2, "batch_size": 2, "d_pretrain_iters": 2}
    run = papermill_cli(
        tmp_path, "-p", "overrides", json.dumps(overrides), "-p", "out", str(tmp_path / "run")
    )
    assert run.returncode == 0, run.stderr[-2000:]
    assert (tmp_path / "run" / "metrics.csv").is_file()
    noise = [t for t in stderr_outputs(tmp_path / "out.ipynb") if "RANDOM weights" not in t]
    assert noise == []  # TensorFlow's start-up lines are filtered (dped/quiet.py)
    assert "WARNING: All log messages" not in run.stderr and "cuInit" not in run.stderr


@pytest.mark.parametrize(
    "form", [("-p", "overrides", '{"num_iter": 2}'), ("-y", "overrides: {num_iter: 2}")]
)
def test_a_mistyped_override_key_says_did_you_mean_through_either_form(tmp_path, form):
    run = papermill_cli(tmp_path, *form)
    assert run.returncode != 0
    assert "unknown config key 'num_iter': did you mean 'num_iters'?" in run.stderr


def test_overrides_that_are_not_a_mapping_get_one_line(tmp_path):
    run = papermill_cli(tmp_path, "-p", "overrides", "[1, 2]")
    assert run.returncode != 0
    assert 'overrides must be a mapping such as {"num_iters": 2}, got list [1, 2]' in run.stderr


def git(*args, **kwargs):
    return subprocess.run(["git", *args], cwd=REPO, capture_output=True, text=True, **kwargs)


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_stored_notebooks_have_no_outputs(path):
    """What git stores (the index), not the working copy that a Lab session may have run."""
    stored = git("show", f":{path.relative_to(REPO)}")
    assert stored.returncode == 0, stored.stderr
    nb = nbformat.reads(stored.stdout, 4)
    with_outputs = [i for i, c in enumerate(nb.cells) if c.get("outputs")]
    assert not with_outputs, (
        f"{path.name} is stored with outputs in cells {with_outputs}: run `make setup` (it "
        f"installs the nbstripout git filter), then `git add {path.relative_to(REPO)}`"
    )


def test_the_git_filter_strips_outputs_of_notebooks_only():
    assert (
        git("check-attr", "filter", "notebooks/DPED-main.ipynb")
        .stdout.strip()
        .endswith("filter: nbstripout")
    )
    assert (
        git("check-attr", "filter", "results/ablations/seed-s0.ipynb")
        .stdout.strip()
        .endswith("filter: unspecified")
    )
    clean = git("config", "filter.nbstripout.clean").stdout.strip()
    assert clean, "run `make setup`: it configures the nbstripout git filter"
    nb = nbformat.read(MAIN, 4)
    nb.cells[1].outputs = [nbformat.v4.new_output("stream", name="stdout", text="ran in Lab")]
    nb.cells[1].execution_count = 3
    stripped = subprocess.run(
        clean, shell=True, input=nbformat.writes(nb), capture_output=True, text=True, check=True
    )
    out = nbformat.reads(stripped.stdout, 4)
    assert out.cells[1].outputs == [] and out.cells[1].execution_count is None
    assert [c.id for c in out.cells] == [c.id for c in nb.cells]  # --keep-id: no churn
