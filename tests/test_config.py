import subprocess
import sys
from dataclasses import replace

import pytest

from dped.config import Config, ConfigError, parse_override, preset


def test_paper_preset_is_the_original_code():
    cfg = preset("paper")
    assert (cfg.norm, cfg.head) == ("instance", "tanh")
    assert (cfg.w_content, cfg.w_color, cfg.w_texture, cfg.w_tv) == (10, 0.5, 1, 2000)
    assert (cfg.learning_rate, cfg.batch_size, cfg.num_iters, cfg.eval_every) == (
        5e-4,
        50,
        20000,
        1000,
    )
    assert cfg.augment is False


def test_seed_preset_is_the_seeds_code_axis_by_axis():
    from dped.config import README_MODIFICATIONS, SEED_SOURCES

    paper, seed = preset("paper"), preset("seed")
    # The five README modifications...
    assert (seed.norm, seed.head, seed.augment, seed.learning_rate) == (
        "none",
        "conv1x1",
        True,
        1e-4,
    )
    assert (seed.w_color, seed.w_texture, seed.w_content, seed.w_tv) == (1.2, 1.0, 2.0, 1 / 400)
    # ...and what its code does that the README never says.
    assert (seed.io_space, seed.tail_convs, seed.init, seed.discriminator) == (
        "centred",
        3,
        "xavier",
        "seed",
    )
    assert (seed.loss_defs, seed.d_pretrain_iters, seed.d_fake, seed.eval_protocol) == (
        "seed",
        10000,
        "pre-step",
        "seed",
    )
    # Every difference between the two codes is a documented axis with its source.
    assert set(paper.diff(seed)) == {
        k for k, (v, _) in SEED_SOURCES.items() if getattr(paper, k) != v
    }
    assert all(why for k, (_, why) in SEED_SOURCES.items() if k != "name")
    assert paper.adam_epsilon == seed.adam_epsilon == 1e-8  # TF1's AdamOptimizer, both codes
    readme = preset("readme")
    assert set(paper.diff(readme)) == set(README_MODIFICATIONS)


def test_config_docs_show_paper_and_seed_side_by_side():
    from dped.cli import config_docs

    text = config_docs()
    row = next(line for line in text.splitlines() if line.startswith("d_pretrain_iters"))
    assert "*" in row and " 0 " in row and "10000" in row
    assert "seed: DPED.pretrain_discriminator" in text


@pytest.mark.parametrize("name", ["paper", "seed"])
def test_yaml_round_trip_is_exact(tmp_path, name):
    cfg = preset(name).replace(learning_rate=3.3e-5, seed=7, vgg_weights="random")
    path = tmp_path / "run.yaml"
    cfg.dump_yaml(path)
    again = Config.from_yaml(path)
    assert again == cfg
    assert again.to_yaml() == path.read_text()


def test_yaml_builds_on_a_preset_with_overrides(tmp_path):
    path = tmp_path / "exp.yaml"
    path.write_text("preset: seed\nlearning_rate: 1e-3\nbatch_size: 8\n")
    cfg = Config.from_yaml(path)
    assert cfg == preset("seed").replace(learning_rate=1e-3, batch_size=8)
    assert isinstance(cfg.learning_rate, float)


def test_unknown_key_names_the_closest_valid_one(tmp_path):
    path = tmp_path / "typo.yaml"
    path.write_text("preset: seed\nlearning_rat: 1e-3\n")
    with pytest.raises(ConfigError, match=r"unknown config key 'learning_rat'.*'learning_rate'"):
        Config.from_yaml(path)
    with pytest.raises(ConfigError, match="did you mean 'w_color'"):
        preset("paper").replace(w_colour=1.0)


@pytest.mark.parametrize(
    "change, message",
    [
        ({"norm": "layer"}, "norm: expected one of instance | batch | affine | none, got 'layer'"),
        ({"head": "sigmoid"}, "head: expected one of tanh | conv1x1, got 'sigmoid'"),
        ({"batch_size": "fifty"}, "batch_size: expected int, got 'fifty' (str)"),
        ({"augment": "yes"}, "augment: expected bool, got 'yes' (str)"),
        ({"batch_size": 0}, "batch_size: expected a positive value, got 0"),
        ({"learning_rate": -1.0}, "learning_rate: expected a positive value, got -1.0"),
        ({"learning_rate": "inf"}, "learning_rate: expected a finite number, got inf"),
        ({"learning_rate": "1e999"}, "learning_rate: expected a finite number, got inf"),
        ({"w_tv": float("-inf")}, "w_tv: expected a finite number, got -inf"),
        ({"learning_rate": float("nan")}, "learning_rate: expected a finite number, got nan"),
        ({"mini.exposure": float("inf")}, "mini.exposure: expected a finite number, got inf"),
        ({"blur_size": 20}, "blur_size: expected an odd kernel side, got 20"),
        (
            {"discriminator_width": 0.0},
            "discriminator_width: expected a fraction in (0, 1], got 0.0",
        ),
        ({"discriminator_width": 2}, "discriminator_width: expected a fraction in (0, 1], got 2.0"),
    ],
)
def test_bad_values_are_clear_errors(change, message):
    with pytest.raises(ConfigError) as err:
        preset("paper").replace(**change)
    assert str(err.value) == message


def test_bad_files_and_presets(tmp_path):
    with pytest.raises(ConfigError, match="no config file at .*missing.yaml"):
        Config.from_yaml(tmp_path / "missing.yaml")
    (tmp_path / "list.yaml").write_text("- 1\n- 2\n")
    with pytest.raises(ConfigError, match="expected a mapping"):
        Config.from_yaml(tmp_path / "list.yaml")
    with pytest.raises(
        ConfigError, match="unknown preset 'sed': expected one of paper, seed, readme"
    ):
        preset("sed")


def test_overrides_parse_as_yaml_values():
    assert parse_override("learning_rate=1e-4") == ("learning_rate", "1e-4")
    assert (
        preset("paper").replace(**dict([parse_override("learning_rate=1e-4")])).learning_rate
        == 1e-4
    )
    assert parse_override("augment=true") == ("augment", True)
    with pytest.raises(ConfigError, match="expected key=value"):
        parse_override("learning_rate")
    with pytest.raises(ConfigError, match="did you mean 'batch_size'"):
        parse_override("batchsize=4")


def test_every_field_has_a_one_line_doc():
    for name in Config().to_dict():
        doc = Config.doc(name)
        assert doc and "\n" not in doc


def test_config_does_not_import_tensorflow():
    code = "import sys, dped.config; print('tensorflow' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_the_mini_dataset_keys_are_a_section_written_as_mini_dot_key(tmp_path):
    cfg = Config().replace(**{"mini.stride": 150})
    assert cfg.mini.stride == 150 and cfg.mini.gamma == Config().mini.gamma
    assert cfg.replace(mini={"gamma": 2}).mini == replace(cfg.mini, gamma=2.0)
    assert Config().diff(cfg) == {"mini.stride": (25, 150)}
    cfg.dump_yaml(tmp_path / "c.yaml")
    assert (
        "mini:\n  exposure: 0.8" in cfg.to_yaml() and Config.from_yaml(tmp_path / "c.yaml") == cfg
    )
    assert parse_override("mini.stride=7") == ("mini.stride", 7)
    assert "stride between training patches" in Config.doc("mini.stride")


def test_a_config_saved_with_the_old_flat_deg_keys_still_loads(tmp_path):
    path = tmp_path / "config.yaml"
    path.write_text("deg_gamma: 1.5\nmini_stride: 40\nname: old\n")
    cfg = Config.from_yaml(path)
    assert (cfg.name, cfg.mini.gamma, cfg.mini.stride) == ("old", 1.5, 40)


@pytest.mark.parametrize(
    "change, message",
    [
        ({"deg_gama": 1}, "unknown config key 'deg_gama': did you mean 'mini.gamma'?"),
        ({"mini.strid": 1}, "unknown config key 'mini.strid': did you mean 'mini.stride'?"),
        ({"mini": {"jpeg_quality": 0}}, "mini.jpeg_quality: expected 1..100, got 0"),
        ({"mini.stride": "x"}, "mini.stride: expected int, got 'x' (str)"),
        ({"mini.stride": 0}, "mini.stride: expected a positive value, got 0"),
    ],
)
def test_mini_section_errors_name_the_dotted_key(change, message):
    with pytest.raises(ConfigError) as err:
        Config().replace(**change)
    assert str(err.value) == message
