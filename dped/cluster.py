"""Sweep runs as Dask tasks: `dped sweep EXP --scheduler ADDRESS` or `--workers N`.

Each run is one task that executes `DPED-main.ipynb` with papermill on a worker (the sweep's
`execute`, handed in as `task`: the same unit the local executor runs), so the skip-complete and resume rules hold unchanged.
The scheduler reruns the task of a worker that dies, elsewhere, and the rerun resumes from the
run's last checkpoint; the run folder's lock (`runs.lock`, freed by the OS when its holder dies)
keeps two workers off one folder. Results go to the same `results/<experiment>/` layout, which
must be on a filesystem every worker sees. Needs `pip install 'dped[cluster]'`.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
from collections.abc import Callable

# Tasks of a worker that dies are rerun; after this many deaths the run is reported failed.
ALLOWED_FAILURES = 3
# A sweep's worker only waits on its run's kernel, which wants every cycle of its core. Dask's
# default diagnostics wake the worker and its nanny hundreds of times a second (a stack sample
# every 10 ms, a GIL probe every 1 ms, event-loop ticks, memory checks every 100 ms) and took
# cycles from the kernels: benchmarks/dask_overhead.py measures both settings side by side.
# The worker processes inherit them from the configuration the cluster starts under.
QUIET = {
    "distributed.worker.profile.enabled": False,
    "distributed.admin.system-monitor.gil.enabled": False,
    "distributed.admin.system-monitor.interval": "2s",
    "distributed.admin.tick.interval": "1s",
    "distributed.worker.memory.monitor-interval": "1s",
}


def run(
    jobs: list,
    task: Callable,
    lost: Callable,
    scheduler: str | None,
    workers: int | None,
    report: Callable,
) -> list:
    """`task(job)` for each of the sweep's jobs as a Dask task (a picklable module-level function
    or partial); `report(i, outcome)` as each ends, in the order they end; `lost(job, error)`
    the outcome of a task the cluster lost. Returns the outcomes."""
    # Dask's INFO lines (every worker's start and stop) would bury the per-run lines; read at
    # import, also by the worker processes. Warnings (a worker lost, restarted) still show.
    os.environ.setdefault("DASK_LOGGING__DISTRIBUTED", "warning")
    distributed = _import_distributed()
    import dask

    settings = {"distributed.scheduler.allowed-failures": ALLOWED_FAILURES, **QUIET}
    with dask.config.set(settings), contextlib.ExitStack() as stack:
        # A local cluster is closed with the sweep, however it ends (Ctrl-C included).
        cluster = None if scheduler else stack.enter_context(local_cluster(workers))
        with distributed.Client(scheduler or cluster) as client:
            print(f"Dask dashboard: {client.dashboard_link}", flush=True)
            gpu = {"GPU": 1} if _has_gpu_workers(client) else None
            # Dask does not keep the submission order of independent tasks: the sweep's order
            # (the baseline first, a run's seeds together) is given as priorities.
            futures = {
                client.submit(
                    task,
                    job,
                    key=f"dped-{job.name}",
                    resources=gpu,
                    pure=False,
                    priority=len(jobs) - i,
                ): job
                for i, job in enumerate(jobs)
            }
            outcomes = []
            for i, future in enumerate(distributed.as_completed(futures), start=1):
                outcomes.append(_outcome(future, futures[future], lost))
                future.release()  # else a worker lost later takes the result along, and reruns it
                report(i, outcomes[-1])
    return outcomes


def _outcome(future, job, lost: Callable):
    try:
        return future.result()
    except Exception as err:  # noqa: BLE001  KilledWorker and the like: the run is lost
        return lost(job, f"{type(err).__name__}: {err}")


def _has_gpu_workers(client) -> bool:
    workers = client.scheduler_info()["workers"].values()
    return any("GPU" in w.get("resources", {}) for w in workers)


def local_cluster(n: int):
    """N workers on this machine, one run at a time each: on a GPU machine one per GPU, pinned
    with CUDA_VISIBLE_DEVICES and holding a GPU resource; on a CPU, threads/N each."""
    distributed = _import_distributed()
    gpus = visible_gpus()
    if gpus and n > len(gpus):
        raise ValueError(f"--workers {n}: this machine has {len(gpus)} GPUs ({', '.join(gpus)})")
    threads = max(1, (os.cpu_count() or 1) // n)
    specs = {}
    for i in range(n):
        env = {"CUDA_VISIBLE_DEVICES": gpus[i]} if gpus else cpu_worker_env(threads)
        options = {"nthreads": 1, "env": env, "resources": {"GPU": 1} if gpus else {}}
        specs[f"worker-{i}"] = {"cls": distributed.Nanny, "options": options}
    scheduler = {"cls": distributed.Scheduler, "options": {"dashboard_address": ":0"}}
    return distributed.SpecCluster(workers=specs, scheduler=scheduler, name="dped-sweep")


def cpu_worker_env(threads: int) -> dict[str, str]:
    """A CPU worker's share of the cores: TensorFlow (and oneDNN's OpenMP) read these when a
    run's kernel imports them."""
    n = str(threads)
    return {"TF_NUM_INTRAOP_THREADS": n, "TF_NUM_INTEROP_THREADS": "1", "OMP_NUM_THREADS": n}


def visible_gpus() -> list[str]:
    """The GPU indices this process may use, without importing TensorFlow."""
    if os.environ.get("CUDA_VISIBLE_DEVICES") is not None:
        return [g for g in os.environ["CUDA_VISIBLE_DEVICES"].split(",") if g.strip()]
    if shutil.which("nvidia-smi") is None:
        return []
    listing = subprocess.run(["nvidia-smi", "-L"], capture_output=True, text=True)
    return [str(i) for i, _ in enumerate(listing.stdout.splitlines())]


def _import_distributed():
    try:
        import distributed
    except ImportError:
        raise ImportError(
            "the dask executor needs Dask distributed: pip install 'dped[cluster]'"
        ) from None
    return distributed
