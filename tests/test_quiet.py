"""TensorFlow's C++ start-up lines are hidden by default, real errors and warnings are not."""

import re
import subprocess
import sys

from conftest import SMALL_NETS, dped_cli, make_dataset, photo

from dped import quiet

STARTUP = [
    "WARNING: All log messages before absl::InitializeLog() is called are written to STDERR",
    "I0000 00:00:1795791356.271637   27662 port.cc:153] oneDNN custom operations are on.",
    "I0000 00:00:1795791356.271953   27662 cudart_stub.cc:31] Could not find cuda drivers",
    "I0000 00:00:1795791360.460402   27662 cpu_feature_guard.cc:227] This TensorFlow binary",
    "To enable the following instructions: AVX2 AVX512F, in other operations, rebuild",
    "E0000 00:00:1795791358.454390   27662 cuda_platform.cc:52] failed call to cuInit: INTERNAL",
]
REAL_ERROR = "E0000 00:00:1795791358.454390   27662 op_kernel.cc:1] OOM when allocating tensor"


def test_startup_lines_are_dropped_and_errors_kept():
    kept = quiet.keep([*STARTUP, REAL_ERROR, "Traceback (most recent call last):"], 2, False)
    assert kept == [REAL_ERROR, "Traceback (most recent call last):"]


def test_level_zero_keeps_everything_and_a_gpu_machine_keeps_cuinit():
    assert quiet.keep(STARTUP, 0, False) == STARTUP
    assert quiet.keep(STARTUP, 2, True) == [STARTUP[-1]]  # with a driver, cuInit failing matters


def test_a_warning_record_keeps_its_continuation_lines_at_level_one():
    warning = ["W0000 00:00:1.0   1 x.cc:1] first line", "  second line of the same record"]
    assert quiet.keep([*STARTUP[2:4], *warning], 1, False) == warning


def dped(*args):
    return dped_cli(*args, drop=("TF_CPP_MIN_LOG_LEVEL",), timeout=300)


def test_dped_train_prints_no_tensorflow_startup_lines_unless_verbose(tmp_path):
    size = SMALL_NETS["patch_size"]
    cfg = make_dataset(tmp_path / "data", n_train=4, n_test=2, size=size).replace(
        **SMALL_NETS,
        vgg_weights="random",
        batch_size=2,
        num_iters=1,
        eval_every=1,
        d_pretrain_iters=0,
    )
    cfg.dump_yaml(tmp_path / "tiny.yaml")
    args = ["train", "--config", str(tmp_path / "tiny.yaml"), "--out"]
    run = dped(*args, str(tmp_path / "quiet"))
    assert run.returncode == 0, run.stderr
    assert "RANDOM weights" in run.stderr  # warnings that matter still show
    absl = re.compile(r"^([IWEF]\d{4} |WARNING: All log messages before absl)")
    assert [line for line in run.stderr.splitlines() if absl.match(line)] == []
    loud = dped("--verbose", *args, str(tmp_path / "loud"))
    assert loud.returncode == 0, loud.stderr
    assert "All log messages before absl::InitializeLog()" in loud.stderr


def test_dped_enhance_starts_without_kerass_optional_imports_and_they_work_after(
    run_folder, tmp_path
):
    """`dped enhance` imports TensorFlow without Keras's optional imports (matplotlib, pandas,
    IPython, scipy, h5py: ~1 s of every start), and the process can still import them after."""
    import imageio.v3 as iio

    iio.imwrite(tmp_path / "p.png", photo((40, 48)))
    script = f"""
import sys
from dped.cli import main
status = main(["enhance", {str(tmp_path / "p.png")!r}, "--model", {str(run_folder)!r},
               "--out", {str(tmp_path / "out")!r}])
print("status", status)
print("loaded", sorted(m for m in {quiet.INFERENCE_SKIPS!r} if m in sys.modules))
import matplotlib.pyplot, pandas, IPython, scipy.ndimage, h5py
print("imported after")
"""
    run = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=300
    )
    assert run.returncode == 0, run.stderr
    assert run.stdout.splitlines() == ["status 0", "loaded []", "imported after"]
    assert (tmp_path / "out" / "p.png").is_file()


def test_skipping_is_a_no_op_once_tensorflow_is_imported():
    import tensorflow  # noqa: F401  (this test process may have it already)

    sys.modules.pop("colorsys", None)
    with quiet.skipping(("colorsys",)):
        import colorsys  # noqa: F401
    assert "colorsys" in sys.modules
