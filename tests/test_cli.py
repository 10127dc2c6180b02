import subprocess
import sys

import yaml

from dped.cli import main, resolve_config
from dped.config import preset


def test_config_command_prints_the_resolved_yaml(capsys, tmp_path):
    assert main(["config", "--config", "experiments/seed.yaml", "--set", "batch_size=8"]) == 0
    printed = yaml.safe_load(capsys.readouterr().out)
    assert printed == preset("seed").replace(batch_size=8).to_dict()


def test_config_errors_are_one_line_with_exit_2(capsys):
    assert main(["config", "--config", "seed", "--set", "lerning_rate=1"]) == 2
    err = capsys.readouterr().err
    assert (
        err.strip()
        == "dped: error: unknown config key 'lerning_rate': did you mean 'learning_rate'?"
    )
    assert main(["config", "--config", "nope.yaml"]) == 2
    assert "no config file at nope.yaml" in capsys.readouterr().err


def test_presets_by_name_and_files_agree():
    assert resolve_config("paper", []) == resolve_config("experiments/paper.yaml", [])
    assert resolve_config("seed", []) == resolve_config("experiments/seed.yaml", [])


def test_help_is_fast_and_needs_no_tensorflow():
    code = "import sys; from dped.cli import build_parser; build_parser(); print('tensorflow' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_enhance_leaves_without_the_interpreters_teardown_and_keeps_its_exit_code(
    run_folder, tmp_path
):
    """`dped enhance` ends with os._exit once its outputs are written (Python's teardown after
    TensorFlow took ~0.7 s): atexit handlers do not run, the exit code and the error lines
    still arrive. Other commands end as usual."""
    import imageio.v3 as iio
    from conftest import photo

    iio.imwrite(tmp_path / "good.png", photo((32, 40)))
    (tmp_path / "bad.jpg").write_bytes(b"not a jpeg")
    script = """
import atexit, sys
atexit.register(lambda: print("teardown ran", flush=True))
sys.argv = ["dped", *sys.argv[1:]]
from dped.cli import entry
entry()
"""

    def dped(*args):
        return subprocess.run(
            [sys.executable, "-c", script, *args], capture_output=True, text=True, timeout=300
        )

    run = dped(
        "enhance",
        str(tmp_path / "good.png"),
        str(tmp_path / "bad.jpg"),
        "--model",
        str(run_folder),
        "--out",
        str(tmp_path / "out"),
    )
    assert run.returncode == 1  # one file failed
    assert "teardown ran" not in run.stdout
    assert "bad.jpg: cannot decode" in run.stderr
    assert iio.imread(tmp_path / "out" / "good.png").shape == (32, 40, 3)
    config = dped("config", "--config", "seed")
    assert config.returncode == 0 and config.stdout.rstrip().endswith("teardown ran")
