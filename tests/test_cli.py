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
