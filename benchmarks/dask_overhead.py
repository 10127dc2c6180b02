"""CPU that a local two-worker Dask cluster (`dped sweep --workers 2`) spends on itself while its
tasks wait, as a sweep's tasks wait on their runs' kernels: Dask's default diagnostics beside
`dped.cluster.QUIET`, measured in one run, one after the other.

    python benchmarks/dask_overhead.py [--seconds 20]

Prints, per setting, the CPU seconds the cluster's processes (scheduler, nannies, workers) used
per wall second while every worker ran one task that only sleeps: cycles a training kernel on
the same cores does not get.
"""

from __future__ import annotations

import argparse
import os
import time


def _block(seconds: float) -> float:
    time.sleep(seconds)
    return seconds


def _tree_cpu(process) -> float:
    import psutil

    total = 0.0
    for p in [process, *process.children(recursive=True)]:
        try:
            times = p.cpu_times()
        except psutil.Error:  # a process that ended while walked
            continue
        total += times.user + times.system
    return total


def cluster_cpu(settings: dict, seconds: float, workers: int = 2) -> float:
    """CPU seconds per wall second of this process and its children while the tasks sleep."""
    import dask
    import distributed
    import psutil

    from dped import cluster

    with dask.config.set(settings), cluster.local_cluster(workers) as local:
        with distributed.Client(local) as client:
            client.wait_for_workers(workers)
            time.sleep(2)  # the workers' start-up is not what is measured
            me, start = psutil.Process(), time.perf_counter()
            before = _tree_cpu(me)
            tasks = [client.submit(_block, seconds, pure=False) for _ in range(workers)]
            client.gather(tasks)
            return (_tree_cpu(me) - before) / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=20.0)
    args = parser.parse_args()
    os.environ.setdefault("DASK_LOGGING__DISTRIBUTED", "error")
    from dped.cluster import QUIET

    for label, settings in (("Dask defaults", {}), ("dped.cluster.QUIET", QUIET)):
        rate = cluster_cpu(settings, args.seconds)
        print(f"{label:20} {rate:.3f} CPU s per wall s ({100 * rate:.1f}% of one core)")


if __name__ == "__main__":
    main()
