"""benchmarks/: the numbers it writes are measured in the run and land in JSON and markdown."""

import json
import subprocess
import sys

import pytest
from conftest import REPO


def test_bench_writes_the_measured_section_and_the_machine_to_json_and_markdown(tmp_path):
    out = tmp_path / "bench"
    args = ["--sections", "pipeline", "--synthetic-pairs", "120", "--out", str(out)]
    subprocess.run(
        [sys.executable, str(REPO / "benchmarks" / "bench.py"), *args],
        cwd=REPO,
        check=True,
        capture_output=True,
        timeout=300,
    )
    (path,) = out.glob("*.json")
    record = json.loads(path.read_text())
    assert record["machine"]["cores"] >= 1 and record["machine"]["cpu"]
    rows = record["sections"]["pipeline"]["rows"]
    synthetic = [r for r in rows if r["dataset"] == "synthetic 120"]
    assert len(synthetic) == 1 and synthetic[0]["pairs/s"] > 0
    table = path.with_suffix(".md").read_text()
    assert f"# Benchmarks on {record['machine']['cpu']}" in table
    assert "| dataset | pairs/s | validation s |" in table and "| synthetic 120 |" in table


def test_a_second_run_keeps_the_sections_it_did_not_measure(tmp_path):
    import record

    info = {
        "cpu": "Test CPU (R) 8-Core Processor",
        "isa": "avx2",
        "cores": 2,
        "bfloat16_native": False,
        "gpus": [],
        "tensorflow": "x",
        "dped": "y",
        "python": "z",
        "date": "d1",
    }
    record.write({"a": [{"x": 1.5}]}, tmp_path, info)
    path = record.write({"b": [{"y": 2}]}, tmp_path, {**info, "date": "d2"})
    assert path.name == "test-cpu-avx2-2c.json"
    sections = json.loads(path.read_text())["sections"]
    assert sections == {
        "a": {"date": "d1", "rows": [{"x": 1.5}]},
        "b": {"date": "d2", "rows": [{"y": 2}]},
    }
    assert "# Benchmarks on Test CPU (R) 8-Core Processor (AVX2), 2 cores" in (
        path.with_suffix(".md").read_text()
    )


def test_one_cpu_model_with_another_vector_extension_gets_its_own_record(tmp_path):
    """Cloud hosts call an AVX2-only and an AVX512-BF16 EPYC both "AMD EPYC": one file for both
    would put one's timings under the other's machine line."""
    import record

    info = dict(cpu="AMD EPYC", cores=2, bfloat16_native=False, gpus=[], date="d")
    info.update(tensorflow="x", dped="y", python="z")
    zen3 = record.write({"training": [{"s": 0.09}]}, tmp_path, {**info, "isa": record.isa("avx2")})
    zen4 = record.write(
        {"training": [{"s": 0.07}]},
        tmp_path,
        {**info, "isa": record.isa("avx2 avx512f avx512_bf16")},
    )
    assert (zen3.name, zen4.name) == ("amd-epyc-avx2-2c.json", "amd-epyc-avx512-bf16-2c.json")
    assert json.loads(zen3.read_text())["sections"]["training"]["rows"] == [{"s": 0.09}]
    assert record.isa("amx_tile amx_bf16 avx512_bf16 avx2") == "amx" and record.isa("sse4_2") == ""


def test_fast_rows_are_compared_with_their_float32_twin_only():
    from enhance_section import _fast_ratios

    def row(generator, precision, seconds, mode="streamed exact", timing="whole process"):
        return dict(
            generator=generator,
            size="1536x2048",
            precision=precision,
            mode=mode,
            timing=timing,
            **{"s/image": seconds},
        )

    rows = [
        row("dped enhance", "float32", 20.0),
        row("dped enhance --fast", "bfloat16", 12.5),
        row("iphone_orig", "float32", 16.0, timing="steady"),
        row("iphone_orig", "bfloat16", 8.0, timing="steady"),
        row("iphone_orig", "bfloat16", 4.0, mode="one pass", timing="steady"),  # no twin
    ]
    _fast_ratios(rows)
    assert [r.get("x float32") for r in rows] == [None, 1.6, None, 2.0, None]


def test_whole_processes_run_in_interleaved_rounds_and_ratios_pair_round_by_round(tmp_path):
    from enhance_section import in_rounds, paired

    order = tmp_path / "order"
    write = "import sys; open(sys.argv[1], 'a').write(sys.argv[2])"
    cmds = {name: [sys.executable, "-c", write, str(order), name] for name in "AB"}
    runs = in_rounds(cmds, rounds=3)
    assert order.read_text() == "ABABAB"
    assert all(len(times) == 3 and min(times) > 0 and rss > 0 for times, rss in runs.values())
    # Round ratios 2, 3 and 4: their median, not the ratio of the medians (4 / 1).
    assert paired([2.0, 9.0, 4.0], [1.0, 3.0, 1.0]) == 3.0
    with pytest.raises(RuntimeError, match="boom"):
        in_rounds({"bad": [sys.executable, "-c", "import sys; sys.exit('boom')"]}, rounds=1)


def test_round_rows_keep_every_rounds_seconds_beside_the_paired_ratios():
    from enhance_section import _round_rows
    from enhance_steady import AUTHORS

    cases = {
        AUTHORS: ("float32", "one pass", []),
        "dped enhance": ("float32", "streamed exact", []),
        "dped enhance --tile 2048": ("float32", "one pass", []),
        "dped enhance --fast": ("bfloat16", "streamed exact", []),
    }
    runs = {  # one slow round (the second) for every case
        AUTHORS: ([30.0, 60.0, 30.0], 4.0),
        "dped enhance": ([20.0, 40.0, 25.0], 1.3),
        "dped enhance --tile 2048": ([20.0, 30.0, 20.0], 3.4),
        "dped enhance --fast": ([10.0, 40.0, 12.5], 1.3),
    }
    rows = {r["generator"]: r for r in _round_rows(cases, runs, (1536, 2048), 1000.0)}
    assert rows[AUTHORS]["rounds s"] == "30.0 60.0 30.0"
    assert rows["dped enhance --fast"]["rounds s"] == "10.0 40.0 12.5"
    streamed = rows["dped enhance"]
    assert streamed["s/image"] == 25.0
    assert streamed["x authors' code"] == 1.5  # rounds 1.5, 1.5, 1.2
    assert streamed["/ one pass"] == 1.25  # rounds 1.0, 1.33, 1.25
    assert rows["dped enhance --fast"]["x float32"] == 2.0  # rounds 2.0, 1.0, 2.0
    assert "x float32" not in streamed and "/ one pass" not in rows[AUTHORS]


def test_a_steady_case_is_the_median_of_its_timed_runs(monkeypatch):
    import statistics

    import enhance_steady

    monkeypatch.setattr(enhance_steady, "conv_peak_gflops", lambda p: 100.0)  # not timed here
    row = enhance_steady.enhance_case("seed", (24, 32), "float32", None, rounds=3)
    runs = [float(t) for t in row["rounds s"].split()]
    assert len(runs) == 3 and row["timing"] == "steady" and row["mode"] == "one pass"
    assert row["s/image"] == pytest.approx(statistics.median(runs), abs=0.006)
    assert "rounds s" not in enhance_steady.enhance_case("seed", (24, 32), "float32", None)


def test_the_scratch_disk_rates_are_measured():
    from enhance_steady import scratch_disk

    disk = scratch_disk(0.05)
    assert disk["write GB/s"] > 0 and disk["read GB/s"] > 0


def test_a_case_process_ends_when_its_bench_is_killed(tmp_path):
    """A bench killed by pid (not Ctrl-C to its group) once left its case running for minutes,
    loading the next bench's every measurement."""
    import os
    import signal
    import time

    import psutil

    pid_file = tmp_path / "case.pid"
    script = (
        "import os, sys, time; sys.path.insert(0, 'benchmarks'); import record\n"
        "def case(path):\n"
        "    open(path, 'w').write(str(os.getpid())); time.sleep(120)\n"
        f"if __name__ == '__main__': record.in_fresh_process(case, {str(pid_file)!r})\n"
    )
    (tmp_path / "bench_like.py").write_text(script)
    parent = subprocess.Popen([sys.executable, str(tmp_path / "bench_like.py")], cwd=REPO)
    try:
        deadline = time.time() + 60
        while time.time() < deadline and not pid_file.is_file():
            time.sleep(0.1)
        case = psutil.Process(int(pid_file.read_text()))
        os.kill(parent.pid, signal.SIGKILL)
        parent.wait(timeout=10)
        case.wait(timeout=10)  # psutil.TimeoutExpired without the fix: the case sleeps on
    finally:
        parent.kill()
