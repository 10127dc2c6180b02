"""The papermill sweep: one executed `DPED-main.ipynb` per run and seed of an experiment YAML.

    python -m dped.sweep experiments/ablations.yaml [experiments/undocumented.yaml] --profile cpu

Each run's notebook goes to results/<experiment>/<run>-s<seed>.ipynb, beside its run folder
results/<experiment>/<run>-s<seed>/. A rerun skips runs whose metrics reached num_iters and
resumes interrupted ones from their last checkpoint; a failed run is recorded in
<run>-s<seed>.error.txt and the others still run; the exit status is 1 if any failed.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import yaml

from dped.config import Config, ConfigError, project_root
from dped.experiment import Job, load_experiment
from dped.runs import atomic_write


def is_complete(run_dir: Path, cfg: Config) -> bool:
    """Trained to the end with this very config. A run saved under another config (a profile
    edited since) is not: executing it refuses, naming the keys that changed, instead of
    reporting its old numbers under the new profile."""
    from dped.runs import read_metrics

    rows = read_metrics(run_dir)
    if not rows or int(rows[-1]["step"]) < cfg.num_iters:
        return False
    saved = run_dir / "config.yaml"
    return saved.is_file() and not Config.from_yaml(saved).diff(cfg)


@dataclass(frozen=True)
class Outcome:
    """What happened to one run: `done`, `skipped` (already complete) or `failed`."""

    name: str
    status: str
    seconds: float = 0.0
    psnr: float | None = None
    error: str = ""

    def line(self, i: int, n: int) -> str:
        prefix = f"[{i}/{n}] {self.name}:"
        if self.status == "skipped":
            return f"{prefix} complete, skipped"
        if self.status == "failed":
            return f"{prefix} FAILED after {self.seconds:.0f} s ({self.error})"
        return f"{prefix} done in {self.seconds:.0f} s, PSNR {self.psnr:.2f} dB"


def execute(job: Job, notebook: Path, results: Path) -> Outcome:
    """One run, unless complete: the unit of work of every executor (here or on a Dask worker).
    A failure is recorded in <run>.error.txt and returned, never raised."""
    from dped.runs import read_metrics, wait_unlocked

    if is_complete(results / job.name, job.config):
        return Outcome(job.name, "skipped")
    start = time.perf_counter()
    error_file = results / f"{job.name}.error.txt"
    try:
        # A retried run whose killed worker left its kernel alive a moment longer.
        wait_unlocked(results / job.name, LOCK_WAIT_S)
        run_job(job, notebook, results)
    except Exception as err:  # papermill raises its own error types and the kernel's
        atomic_write(error_file, f"{type(err).__name__}: {err}\n".encode())
        error = f"{type(err).__name__}; see {error_file}"
        return Outcome(job.name, "failed", time.perf_counter() - start, error=error)
    error_file.unlink(missing_ok=True)
    last = read_metrics(results / job.name)[-1]
    return Outcome(job.name, "done", time.perf_counter() - start, float(last["psnr"]))


LOCK_WAIT_S = 20  # a killed worker's kernel notices its parent is gone within about a second


def run_job(job: Job, notebook: Path, results: Path) -> None:
    import papermill

    papermill.execute_notebook(
        str(notebook),
        str(results / f"{job.name}.ipynb"),
        parameters={
            "config": job.preset,
            "overrides": job.overrides,
            "out": str(results / job.name),
            "resume": True,
        },
        progress_bar=False,
        cwd=str(Path.cwd()),
        kernel_manager_class=_ipc_kernel_manager(),
    )


# Dask's nanny gives its workers MALLOC_TRIM_THRESHOLD_ (distributed.nanny.pre-spawn-environ),
# so that a worker's freed memory shows in its reports. A training kernel that inherits it hands
# every freed tensor buffer back to the system and faults it in again at the next op: most of a
# step's time went to page faults. A run's kernel starts without it, on any cluster.
KERNEL_ENV_DROPPED = ("MALLOC_TRIM_THRESHOLD_",)


def kernel_env(environ) -> dict[str, str]:
    """The environment a run's kernel starts with: this process's, less KERNEL_ENV_DROPPED."""
    return {k: v for k, v in environ.items() if k not in KERNEL_ENV_DROPPED}


def _ipc_kernel_manager() -> type:
    """A kernel manager on local sockets: the TCP default makes every kernel print a warning
    about unencrypted traffic, and a sweep's kernels never leave their machine. Each kernel's
    socket files go to a folder of their own: in a shared working directory, two kernels
    (two Dask workers) would otherwise pick the same names."""
    import tempfile

    from jupyter_client.manager import AsyncKernelManager
    from traitlets import CaselessStrEnum, default

    class IPCKernelManager(AsyncKernelManager):
        transport = CaselessStrEnum(["tcp", "ipc"], default_value="ipc", config=True)

        @default("ip")
        def _ip_default(self):
            return str(Path(tempfile.mkdtemp(prefix="dped-kernel-")) / "ipc")

        async def _async_pre_start_kernel(self, **kw):
            # The one hook every start goes through (start_kernel calls it, not the public name).
            kw["env"] = kernel_env(kw.get("env", os.environ))
            return await super()._async_pre_start_kernel(**kw)

        def cleanup_ipc_files(self):
            super().cleanup_ipc_files()
            with contextlib.suppress(OSError):  # only once empty
                Path(self.ip).parent.rmdir()

    return IPCKernelManager


@dataclass(frozen=True)
class Placed:
    """A job with where it runs from and writes to: the unit of work of every executor."""

    job: Job
    notebook: Path
    results: Path

    @property
    def name(self) -> str:
        return self.job.name


def execute_placed(placed: Placed) -> Outcome:
    return execute(placed.job, placed.notebook, placed.results)


def prepare(path: str | Path, profile: str, results_dir: str | Path) -> tuple[dict, list[Placed]]:
    """An experiment's header and its jobs, placed; writes the experiment.yaml its report reads."""
    spec, jobs = load_experiment(path, profile)
    # Absolute: the notebooks work from the repository root, Dask workers from anywhere.
    results = (Path(results_dir) / spec["name"]).resolve()
    results.mkdir(parents=True, exist_ok=True)
    # The report reads the runs, their labels, the seeds, the baseline and the profile (its
    # keys and notes as they were when the runs started) from here.
    copy = yaml.safe_dump(spec, sort_keys=False)
    atomic_write(results / "experiment.yaml", copy.encode())
    notebook = project_root() / spec.get("notebook", "notebooks/DPED-main.ipynb")
    return spec, [Placed(job, notebook, results) for job in jobs]


def sweep(
    paths: str | Path | list,
    profile: str,
    results_dir: str | Path = "results",
    executor: str = "local",
    scheduler: str | None = None,
    workers: int | None = None,
) -> int:
    """Run every job not yet complete of one experiment or several (in the order given, one
    queue: no worker waits for an experiment's last run), here one after another (`local`) or
    as Dask tasks (`dask`: on the cluster at `scheduler`, or on a local one of `workers`);
    prints a line per run as it ends, then each experiment's report; returns the number of
    failed runs (and reports)."""
    paths = [paths] if isinstance(paths, (str, Path)) else list(paths)
    experiments = [prepare(path, profile, results_dir) for path in paths]
    units = [placed for _, placed in experiments for placed in placed]

    def report(i: int, outcome: Outcome) -> None:
        print(outcome.line(i, len(units)), flush=True)

    with contextlib.ExitStack() as watches:
        for _, placed in experiments:  # each evaluation a line, as it lands
            jobs = [p.job for p in placed]
            watches.enter_context(EvaluationWatch(placed[0].results, jobs))
        if executor == "local":
            outcomes = []
            for i, placed in enumerate(units, start=1):
                outcomes.append(execute_placed(placed))
                report(i, outcomes[-1])
        else:
            from dped import cluster

            outcomes = cluster.run(units, execute_placed, _lost, scheduler, workers, report)
    failed = {o.name for o in outcomes if o.status == "failed"}
    return sum(_close(spec, placed, failed, profile, executor) for spec, placed in experiments)


def _close(spec: dict, placed: list[Placed], failed: set, profile: str, executor: str) -> int:
    """An experiment's closing line and report; the number of its failed runs (and report)."""
    mine = [p.name for p in placed if p.name in failed]
    print(
        f"sweep {spec['name']} ({profile}, {executor}): {len(placed) - len(mine)} of "
        f"{len(placed)} runs complete" + (f"; failed: {', '.join(mine)}" if mine else "")
    )
    if len(mine) < len(placed) and not write_report(placed[0].results):
        return len(mine) + 1
    return len(mine)


class EvaluationWatch:
    """While a sweep runs, print each run's evaluations as they land in its metrics.csv (the
    run folders are where every executor writes, here or on a cluster's shared filesystem):
    a run of the cpu profile takes minutes, and its end is the sweep's only other line."""

    def __init__(self, results: Path, jobs: list[Job], every: float = 15.0, out=print):
        from dped.runs import read_metrics

        self.results, self.jobs, self.every, self.out = results, jobs, every, out
        self.seen = {job.name: len(read_metrics(results / job.name)) for job in jobs}
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._loop, daemon=True)

    def __enter__(self) -> EvaluationWatch:
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop.set()
        self.thread.join()

    def _loop(self) -> None:
        while not self.stop.wait(self.every):
            self.poll()

    def poll(self) -> None:
        from dped.runs import read_metrics

        for job in self.jobs:
            try:
                rows = read_metrics(self.results / job.name)
            except (OSError, ValueError):  # replaced while read: the next poll sees it
                continue
            for row in rows[self.seen[job.name] :]:
                self.out(
                    f"  {job.name}: step {int(row['step'])}/{job.config.num_iters}, "
                    f"PSNR {float(row['psnr']):.2f} dB",
                    flush=True,
                )
            self.seen[job.name] = max(self.seen[job.name], len(rows))


def _lost(placed: Placed, error: str) -> Outcome:
    return Outcome(placed.name, "failed", error=error)


def write_report(results: Path) -> bool:
    """summary.md and the figures beside the runs (`dped report`); False if it failed."""
    from dped import report

    try:
        built = report.build(results)
    except Exception as err:  # the runs are safe; only the summary is missing
        print(f"report: FAILED ({type(err).__name__}: {err})", flush=True)
        return False
    print(f"report: {built.written()}", flush=True)
    return True


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="papermill sweep over an experiment YAML")
    add_arguments(parser)
    return run_from_args(parser.parse_args(argv))


def run_from_args(args: argparse.Namespace) -> int:
    """0: every run complete; 1: some failed; 2: the sweep could not start."""
    try:
        executor = check_executor(args.executor, args.scheduler, args.workers)
        failed = sweep(
            args.experiment, args.profile, args.results, executor, args.scheduler, args.workers
        )
        return 1 if failed else 0
    except (ConfigError, FileNotFoundError, KeyError, OSError, ImportError, ValueError) as err:
        print(f"dped sweep: error: {err}", file=sys.stderr)
        return 2


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """`dped sweep`'s arguments (also `python -m dped.sweep`)."""
    parser.add_argument(
        "experiment",
        nargs="+",
        help="experiments/<name>.yaml; several run as one queue, in the order given",
    )
    parser.add_argument("--profile", default="cpu")
    parser.add_argument("--results", default="results", help="results root (default results)")
    parser.add_argument(
        "--executor",
        choices=["local", "dask"],
        default=None,
        help="local: one run after another here (default); dask: one task per run on a Dask "
        "cluster (implied by --scheduler or --workers; needs pip install 'dped[cluster]')",
    )
    parser.add_argument(
        "--scheduler", help="address of a running Dask scheduler, e.g. tcp://head:8786"
    )
    parser.add_argument(
        "--workers",
        type=int,
        help="start a local Dask cluster of N workers: one per GPU, or threads/N each on a CPU",
    )


def check_executor(executor: str | None, scheduler: str | None, workers: int | None) -> str:
    if scheduler and workers:
        raise ConfigError("give --scheduler (join a cluster) or --workers (start one), not both")
    if workers is not None and workers < 1:
        raise ConfigError(f"--workers must be at least 1, got {workers}")
    if executor == "local" and (scheduler or workers):
        raise ConfigError("--scheduler and --workers need --executor dask")
    if executor is None:
        executor = "dask" if scheduler or workers else "local"
    if executor == "dask" and not (scheduler or workers):
        raise ConfigError("--executor dask needs --scheduler ADDRESS or --workers N")
    return executor


if __name__ == "__main__":
    sys.exit(main())
