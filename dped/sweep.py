"""The papermill sweep: one executed `DPED-main.ipynb` per run and seed of an experiment YAML.

    python -m dped.sweep experiments/ablations.yaml --profile cpu

Each run's notebook goes to results/<experiment>/<run>-s<seed>.ipynb, beside its run folder
results/<experiment>/<run>-s<seed>/. A rerun skips runs whose metrics reached num_iters and
resumes interrupted ones from their last checkpoint; a failed run is recorded in
<run>-s<seed>.error.txt and the others still run; the exit status is 1 if any failed.
"""

from __future__ import annotations

import argparse
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import yaml

from dped.config import Config, ConfigError, project_root


@dataclass(frozen=True)
class Job:
    name: str  # <run>-s<seed>
    preset: str
    overrides: dict
    config: Config
    reverts: str = ""  # what the run takes back from the experiment's baseline (report label)


def load_experiment(path: str | Path, profile: str) -> tuple[dict, list[Job]]:
    """The experiment's header and one Job per run and seed, with the profile applied."""
    spec = yaml.safe_load(Path(path).read_text())
    if profile not in spec.get("profiles", {}):
        raise ConfigError(
            f"{path}: unknown profile '{profile}': expected one of "
            f"{', '.join(spec.get('profiles', {}))}"
        )
    jobs = []
    for seed in spec["seeds"][profile]:
        for run, settings in spec["runs"].items():
            settings = dict(settings)
            preset = settings.pop("preset")
            reverts = settings.pop("reverts", "")
            name = f"{run}-s{seed}"
            # A run's own keys win over the profile's: the change a run exists to make
            # (no pre-training, say) survives a profile that scales that key for every run.
            overrides = {
                **(spec["profiles"][profile] or {}),
                **settings,
                "seed": seed,
                "name": name,
            }
            config = Config.from_dict({"preset": preset, **overrides})
            jobs.append(Job(name, preset, overrides, config, reverts))
    return spec, jobs


def is_complete(run_dir: Path, cfg: Config) -> bool:
    from dped.runs import read_metrics

    rows = read_metrics(run_dir)
    return bool(rows) and int(rows[-1]["step"]) >= cfg.num_iters


def run_job(job: Job, notebook: Path, results: Path) -> None:
    import papermill

    papermill.execute_notebook(
        str(notebook),
        str(results / f"{job.name}.ipynb"),
        parameters={
            "config": job.preset,
            "overrides": job.overrides,
            "out": str((results / job.name).resolve()),  # the notebook works from the repo root
            "resume": True,
        },
        progress_bar=False,
        cwd=str(Path.cwd()),
        kernel_manager_class=_ipc_kernel_manager(),
    )


def _ipc_kernel_manager() -> type:
    """A kernel manager on local sockets: the TCP default makes every kernel print a warning
    about unencrypted traffic, and a sweep's kernels never leave this machine."""
    from jupyter_client.manager import AsyncKernelManager
    from traitlets import CaselessStrEnum

    class IPCKernelManager(AsyncKernelManager):
        transport = CaselessStrEnum(["tcp", "ipc"], default_value="ipc", config=True)

    return IPCKernelManager


def sweep(path: str | Path, profile: str, results_dir: str | Path = "results") -> int:
    """Run every job not yet complete; returns the number of failed jobs."""
    spec, jobs = load_experiment(path, profile)
    results = Path(results_dir) / spec["name"]
    results.mkdir(parents=True, exist_ok=True)
    # The report reads the runs' labels and the baseline from here, beside the runs.
    (results / "experiment.yaml").write_text(yaml.safe_dump(spec, sort_keys=False))
    failed = 0
    for i, job in enumerate(jobs, start=1):
        prefix = f"[{i}/{len(jobs)}] {job.name}:"
        error_file = results / f"{job.name}.error.txt"
        if is_complete(results / job.name, job.config):
            print(f"{prefix} complete, skipped", flush=True)
            continue
        start = time.perf_counter()
        try:
            run_job(
                job, project_root() / spec.get("notebook", "notebooks/DPED-main.ipynb"), results
            )
        except Exception as err:  # papermill raises its own error types and the kernel's
            failed += 1
            error_file.write_text(f"{type(err).__name__}: {err}\n")
            print(
                f"{prefix} FAILED after {time.perf_counter() - start:.0f} s "
                f"({type(err).__name__}; see {error_file})",
                flush=True,
            )
            continue
        error_file.unlink(missing_ok=True)
        from dped.runs import read_metrics

        last = read_metrics(results / job.name)[-1]
        print(
            f"{prefix} done in {time.perf_counter() - start:.0f} s, "
            f"PSNR {float(last['psnr']):.2f} dB",
            flush=True,
        )
    print(f"sweep {spec['name']} ({profile}): {len(jobs) - failed} of {len(jobs)} runs complete")
    return failed


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="papermill sweep over an experiment YAML")
    parser.add_argument("experiment", help="experiments/<name>.yaml")
    parser.add_argument("--profile", default="cpu")
    parser.add_argument("--results", default="results", help="results root (default results)")
    args = parser.parse_args(argv)
    try:
        return 1 if sweep(args.experiment, args.profile, args.results) else 0
    except (ConfigError, FileNotFoundError, KeyError) as err:
        print(f"dped sweep: error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
