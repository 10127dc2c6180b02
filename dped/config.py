"""One typed dataclass holding every hyper-parameter of the model and of training.

YAML files in `experiments/`, papermill parameters and the CLI all produce this object; nothing
re-declares a default elsewhere. The field defaults are the original authors' released code
(`paper`, aiff22/DPED); `seed` is what the third-party re-implementation JuheonYi/DPED-TensorFlow
computes: every difference between the two codes is a field here (`SEED_SOURCES` says where
each seed value comes from), so `paper` and `seed` are two points of one space.
No TensorFlow import here: parsing a config must stay cheap.
"""

from __future__ import annotations

import dataclasses
import difflib
import math
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, get_args, get_origin

import yaml

from dped.yamlfile import ConfigError, read_yaml, read_yaml_file  # noqa: F401  (the config's API)


def _f(default: Any, doc: str) -> Any:
    return field(default=default, metadata={"doc": doc})


@dataclass(frozen=True)
class MiniData:
    """The phone-camera model that turns the mini dataset's photographs into phone/DSLR pairs
    (dped/minidata.py), and the patch stride. Keys are written `mini.<key>` (`--set
    mini.stride=150`, YAML `mini: {stride: 150}`)."""

    exposure: float = _f(0.8, "exposure gain applied to the linear DSLR image")
    gamma: float = _f(1.25, "tone curve x**gamma after exposure (>1 darkens mid-tones)")
    wb_red: float = _f(0.92, "white-balance gain of the red channel (cast)")
    wb_blue: float = _f(1.08, "white-balance gain of the blue channel (cast)")
    saturation: float = _f(0.7, "saturation kept (1: unchanged, 0: grayscale)")
    blur_sigma: float = _f(1.0, "lens blur, Gaussian sigma in pixels")
    vignette: float = _f(0.3, "brightness lost in the corners (radial, quadratic)")
    noise_shot: float = _f(0.0004, "signal-dependent noise variance per unit intensity")
    noise_read: float = _f(0.00002, "signal-independent noise variance")
    jpeg_quality: int = _f(70, "JPEG quality of the phone side (DSLR side: 95)")
    misalign_px: int = _f(2, "max misalignment per patch in pixels (at least 1 when > 0)")
    stride: int = _f(25, "stride between training patches cut from each source photo")

    def __post_init__(self) -> None:
        _check_types(self, "mini.")
        for name in _fields(MiniData):
            if getattr(self, name) < 0:
                raise ConfigError(f"mini.{name}: expected a value >= 0, got {getattr(self, name)}")
        if self.stride <= 0:
            raise ConfigError(f"mini.stride: expected a positive value, got {self.stride}")
        if not 1 <= self.jpeg_quality <= 100:
            raise ConfigError(f"mini.jpeg_quality: expected 1..100, got {self.jpeg_quality}")


# Sections: a Config field holding a dataclass of its own, whose keys are spelled `<field>.<key>`.
SECTIONS = {"mini": MiniData}
# Keys of configs written before the sections existed (run folders keep loading).
RENAMED = {f"deg_{k}": f"mini.{k}" for k in MiniData.__dataclass_fields__} | {
    "mini_stride": "mini.stride"
}


@dataclass(frozen=True)
class Config:
    """Every hyper-parameter of a DPED run; `Config.doc(name)` gives each one's meaning."""

    name: str = _f("paper", "run name, used for the results folder")
    # --- generator (the ablation axes of modifications 1 and 2) ---
    io_space: Literal["unit", "centred"] = _f(
        "unit",
        "image space inside the networks: 0..1 (authors) or (pixels - VGG mean) / 255 (seed)",
    )
    norm: Literal["instance", "batch", "affine", "none"] = _f(
        "instance",
        "after each residual-block conv: instance norm, batch norm, an inference-mode BN "
        "(a learned per-channel affine map) or none",
    )
    head: Literal["tanh", "conv1x1"] = _f(
        "tanh", "output layer: tanh(conv9x9)*0.58+0.5 (authors) or a linear 1x1 conv"
    )
    tail_convs: int = _f(2, "conv3x3+ReLU layers between the residual blocks and the head")
    filters: int = _f(64, "channels of every hidden generator layer")
    res_blocks: int = _f(4, "number of residual blocks in the generator")
    init: Literal["original", "he", "xavier"] = _f(
        "original",
        "generator weights: truncated normal 0.01 + bias 0.01 (authors), He normal on ReLU "
        "layers, or Xavier-uniform + zero bias (seed)",
    )
    discriminator: Literal["original", "seed"] = _f(
        "original",
        "authors': instance norm after LeakyReLU, softmax over 2 classes; seed's: affine BN "
        "before LeakyReLU, one sigmoid logit, Xavier init",
    )
    discriminator_width: float = _f(
        1.0, "the discriminator's channels and FC units as a fraction of both codes' (48..1024)"
    )
    # --- losses (modification 3) ---
    loss_defs: Literal["original", "seed"] = _f(
        "original",
        "loss formulas: authors' (color sum/2B, squared TV, texture with random DSLR/enhanced "
        "swaps) or seed's (255*mean color, L1 TV per image, texture with D(enhanced) as label)",
    )
    w_content: float = _f(10.0, "weight of the VGG-19 content loss")
    w_color: float = _f(0.5, "weight of the Gaussian-blurred color loss")
    w_texture: float = _f(1.0, "weight of the adversarial texture loss")
    w_tv: float = _f(2000.0, "weight of the total-variation loss")
    content_layer: str = _f("relu5_4", "VGG-19 layer whose features the content loss compares")
    blur_size: int = _f(21, "side of the color loss's Gaussian kernel (pixels)")
    blur_nsig: float = _f(3.0, "the Gaussian kernel spans +-blur_nsig standard deviations")
    vgg_weights: str = _f(
        "vgg_pretrained/imagenet-vgg-verydeep-19.mat",
        "VGG-19 weights: a MatConvNet .mat, a Keras .h5, 'imagenet' (Keras download) or 'random'",
    )
    # --- adversarial schedule ---
    d_pretrain_iters: int = _f(
        0, "discriminator-only iterations (phone = fake, DSLR = real) before joint training"
    )
    d_fake: Literal["re-enhanced", "pre-step"] = _f(
        "re-enhanced",
        "the discriminator step's fake batch: the phone batch enhanced again after the "
        "generator step (authors) or the batch enhanced before it (seed)",
    )
    # --- optimisation (modifications 4 and 5) ---
    learning_rate: float = _f(5e-4, "Adam learning rate of generator and discriminator")
    adam_epsilon: float = _f(1e-8, "Adam's epsilon: TF1's AdamOptimizer default (Keras: 1e-7)")
    batch_size: int = _f(50, "patch pairs per training iteration")
    num_iters: int = _f(20000, "training iterations")
    eval_every: int = _f(1000, "iterations between evaluations on the test patches")
    augment: bool = _f(False, "flip/rotate each training pair (phone and DSLR alike)")
    augment_draw: Literal["one_of_8", "three_coins"] = _f(
        "one_of_8",
        "how: one of the 8 flips/rotations, or three coins (flip up-down, flip left-right, "
        "rot90) as the seed; the same distribution, another random stream",
    )
    seed: int = _f(0, "seed of every random draw (weights, data order, augmentation, swaps)")
    precision: Literal["float32", "mixed_bfloat16", "auto"] = _f(
        "float32", "compute dtype (auto: mixed_bfloat16 on CPUs with AVX512_BF16/AMX; else float32)"
    )
    strategy: Literal["default", "mirrored", "multiworker"] = _f(
        "default", "tf.distribute strategy: one device, all local GPUs, or several machines"
    )
    eval_protocol: Literal["original", "seed"] = _f(
        "original",
        "the headline test `psnr`: from the MSE over all patches (authors) or the mean of "
        "per-patch PSNRs of uint8 outputs (seed); both are always logged",
    )
    init_checkpoint: str = _f(
        "", "start from these weights: an authors' or seed checkpoint prefix ('' = fresh init)"
    )
    tensorboard: bool = _f(False, "also write the loss terms and metrics as TensorBoard events")
    deterministic: bool = _f(False, "TensorFlow op determinism: bit-exact reruns and resumes")
    keep_checkpoints: int = _f(3, "latest checkpoints kept (the best by PSNR is kept apart)")
    # --- data ---
    dataset_dir: str = _f("dped", "root of the DPED dataset (<root>/<phone>/training_data/...)")
    phone: str = _f("iphone", "phone folder to train on: iphone, blackberry, sony or your own")
    patch_size: int = _f(100, "side of the square training patches (pixels)")
    train_size: int = _f(30000, "training pairs drawn from the dataset (0: all)")
    skip_corrupt: bool = _f(False, "skip (and count) unreadable images instead of stopping")
    mini: MiniData = field(
        default_factory=lambda: MiniData(),
        metadata={"doc": "the built-in mini dataset's phone-camera model (`dped data`)"},
    )

    def __post_init__(self) -> None:
        _check_types(self)
        _check_values(self)

    @classmethod
    def doc(cls, key: str) -> str:
        section, _, sub = _known(key).partition(".")
        owner = SECTIONS[section] if sub else Config
        return _fields(owner)[sub or section].metadata["doc"]

    def replace(self, **changes: Any) -> Config:
        """A copy with `changes`: top-level keys, `section.key` keys, or a section as a mapping
        of its keys (`mini={"stride": 150}`), which changes only those."""
        nested: dict[str, dict[str, Any]] = {}
        for key, value in changes.items():
            section, _, sub = _known(key).partition(".")
            if sub:
                nested.setdefault(section, {})[sub] = value
            elif section in SECTIONS and isinstance(value, dict):
                for sub_key in value:
                    _known(f"{section}.{sub_key}")
                nested.setdefault(section, {}).update(value)
        flat = {k: v for k, v in changes.items() if k.partition(".")[0] not in nested}
        for section, values in nested.items():
            flat[section] = dataclasses.replace(getattr(self, section), **values)
        return dataclasses.replace(self, **flat)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def flat(self) -> dict[str, Any]:
        """Every key with its value, sections spelled `section.key`."""
        out = {}
        for key, value in self.to_dict().items():
            if key in SECTIONS:
                out.update({f"{key}.{k}": v for k, v in value.items()})
            else:
                out[key] = value
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Config:
        """Build from a mapping; a `preset` key names the base the other keys override."""
        data = {RENAMED.get(k, k): v for k, v in data.items()}
        base = preset(data.pop("preset")) if "preset" in data else cls()
        return base.replace(**data)

    def dump_yaml(self, path: str | Path) -> None:
        Path(path).write_text(self.to_yaml())

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.to_dict(), sort_keys=False)

    @classmethod
    def from_yaml(cls, path: str | Path) -> Config:
        path = Path(path)
        if not path.is_file():
            where = "" if path.is_absolute() else f" (relative to {Path.cwd()})"
            raise ConfigError(
                f"no config file at {path}{where}: give a YAML file such as experiments/seed.yaml"
            )
        data = read_yaml_file(path)
        if not isinstance(data, dict):  # an empty file would silently mean the `paper` preset
            got = "an empty file" if data is None else type(data).__name__
            raise ConfigError(
                f"{path}: expected a mapping of key: value (preset: seed, ...), got {got}"
            )
        try:
            return cls.from_dict(data)
        except ConfigError as err:
            raise ConfigError(f"{path}: {err}") from None

    def diff(self, other: Config) -> dict[str, tuple[Any, Any]]:
        """Keys whose values differ, as {key: (self's, other's)}, sections as `section.key`."""
        a, b = self.flat(), other.flat()
        return {k: (a[k], b[k]) for k in a if a[k] != b[k]}


def _fields(owner: type = None) -> dict[str, dataclasses.Field]:
    return {f.name: f for f in dataclasses.fields(owner or Config)}


def _known(key: str) -> str:
    """`key` if Config has it (`section.key` for a section's), else a ConfigError with a hint."""
    section, dot, sub = key.partition(".")
    if dot and section in SECTIONS and sub in _fields(SECTIONS[section]):
        return key
    if not dot and section in _fields():
        return key
    names = [*_fields()] + [f"{s}.{k}" for s, owner in SECTIONS.items() for k in _fields(owner)]
    close = difflib.get_close_matches(key, names + list(RENAMED), n=1)
    close = [RENAMED.get(c, c) for c in close]
    hint = f"did you mean '{close[0]}'?" if close else f"valid keys: {', '.join(names)}"
    raise ConfigError(f"unknown config key '{key}': {hint}")


def _check_types(obj: Any, prefix: str = "") -> None:
    hints = typing.get_type_hints(type(obj))
    for name in _fields(type(obj)):
        value, kind = getattr(obj, name), hints[name]
        if get_origin(kind) is Literal:
            if value not in get_args(kind):
                choices = " | ".join(map(str, get_args(kind)))
                raise ConfigError(f"{prefix}{name}: expected one of {choices}, got {value!r}")
            continue
        if kind is float:
            value = _as_float(value)
            object.__setattr__(obj, name, value)
            if isinstance(value, float) and not math.isfinite(value):
                # NaN, inf and overflowing literals (1e999) would only fail later, mid-training.
                raise ConfigError(f"{prefix}{name}: expected a finite number, got {value}")
        if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
            raise ConfigError(
                f"{prefix}{name}: expected {kind.__name__}, got {value!r} ({type(value).__name__})"
            )


def _as_float(value: Any) -> Any:
    # YAML reads 100 as an int and (YAML 1.1) 1e-4 as a string: both mean a float here.
    if isinstance(value, bool):
        return value
    if isinstance(value, int):
        return float(value)
    if isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            return value
    return value


def _check_values(cfg: Config) -> None:
    positive = "filters batch_size num_iters eval_every patch_size blur_size adam_epsilon".split()
    positive.append("learning_rate")  # NaN never gets here: _check_types refused it
    for name in positive:
        if getattr(cfg, name) <= 0:
            raise ConfigError(f"{name}: expected a positive value, got {getattr(cfg, name)}")
    weights = "w_content w_color w_texture w_tv"
    non_negative = f"{weights} res_blocks tail_convs train_size d_pretrain_iters".split()
    for name in non_negative:
        if getattr(cfg, name) < 0:
            raise ConfigError(f"{name}: expected a value >= 0, got {getattr(cfg, name)}")
    if not 0 < cfg.discriminator_width <= 1:
        raise ConfigError(
            f"discriminator_width: expected a fraction in (0, 1], got {cfg.discriminator_width}"
        )
    if cfg.blur_size % 2 == 0:
        raise ConfigError(f"blur_size: expected an odd kernel side, got {cfg.blur_size}")


# The seed re-implementation (JuheonYi/DPED-TensorFlow, HEAD 2df4eaf) as its code computes it:
# each key with where its value comes from. `dped config --docs` prints them beside `paper`.
SEED_SOURCES: dict[str, tuple[Any, str]] = {
    "name": ("seed", ""),
    "io_space": ("centred", "utils.preprocess: (pixels - VGG mean) / 255 in and out (silent)"),
    "norm": ("none", "README (1): BN removed; DPED.py keeps it commented out"),
    "head": ("conv1x1", "README (2): a linear 1x1 conv (CONV_5) instead of conv9x9 + tanh"),
    "tail_convs": (3, "DPED.py: CONV_2..CONV_4 after the blocks, authors have two (silent)"),
    "init": ("xavier", "DPED.py: xavier_initializer, zero biases (silent)"),
    "discriminator": ("seed", "DPED.py: inference-mode BN, dense 1024, sigmoid logit (silent)"),
    "loss_defs": (
        "seed",
        "DPED.py build_generator_loss: 255*mean color, L1 TV, logit label (silent)",
    ),
    "w_content": (2.0, "README (3) rescaled weights; values of its DPED-main.ipynb"),
    "w_color": (1.2, "DPED-main.ipynb (its comment: originally 0.1)"),
    "w_texture": (1.0, "DPED-main.ipynb (its comment: originally 0.4)"),
    "w_tv": (1 / 400, "DPED-main.ipynb (its comment: originally 400)"),
    "d_pretrain_iters": (10000, "DPED.pretrain_discriminator: 10,000 iterations first (silent)"),
    "d_fake": ("pre-step", "DPED.train: D step on the batch enhanced before the G step (silent)"),
    "learning_rate": (1e-4, "README (5): lr 5e-4 -> 1e-4, both networks"),
    "augment": (True, "README (4): flip/rotate augmentation"),
    "augment_draw": ("three_coins", "utils.get_batch: three coins per pair"),
    "eval_protocol": ("seed", "DPED.test_generator: mean per-patch PSNR on uint8 (silent)"),
}

# The old `seed` preset: the README's five modifications applied to the authors' code, with loss
# weights calibrated here (`make calibrate`). Kept as `readme`: what the README alone describes.
README_MODIFICATIONS = {
    "name": "readme",
    "norm": "none",
    "head": "conv1x1",
    "w_content": 0.01,
    "w_color": 0.002,
    "w_texture": 0.005,
    "w_tv": 20.0,
    "augment": True,
    "learning_rate": 1e-4,
}

PRESETS: dict[str, dict[str, Any]] = {
    "paper": {},
    "seed": {key: value for key, (value, _) in SEED_SOURCES.items()},
    "readme": README_MODIFICATIONS,
}


def preset(name: str) -> Config:
    """The named base config: `paper` (authors' code), `seed` (the seed's code) or `readme`
    (the seed README's five modifications on the authors' code)."""
    if name not in PRESETS:
        raise ConfigError(f"unknown preset '{name}': expected one of {', '.join(PRESETS)}")
    return Config(**PRESETS[name])


# What `make test` runs the notebooks with (nbval): a few iterations, seconds not minutes.
SMOKE = {"num_iters": 2, "eval_every": 2, "batch_size": 2, "d_pretrain_iters": 2}


def resolve(config: str | None = None, overrides: dict[str, Any] | str | None = None) -> Config:
    """A YAML file (`*.yaml`) or preset name, then overrides: what the CLI and notebooks use."""
    if config is None:
        base = preset("paper")
    elif config.endswith((".yaml", ".yml")):
        base = Config.from_yaml(config)
    else:
        base = preset(config)
    return base.replace(**as_overrides(overrides))


def as_overrides(value: dict[str, Any] | str | None) -> dict[str, Any]:
    """Overrides as a mapping, also from its JSON or YAML text: `papermill -p overrides
    '{"num_iters": 2}'` passes a string where `-y` passes a mapping."""
    if isinstance(value, str):
        value = read_yaml(value, f"overrides {value!r}")
    value = {} if value is None else value
    if not isinstance(value, dict):
        raise ConfigError(
            f'overrides must be a mapping such as {{"num_iters": 2}}, got '
            f"{type(value).__name__} {value!r}"
        )
    return value


def project_root(start: str | Path | None = None) -> Path:
    """The folder that relative paths in configs and notebooks mean: the nearest one at or above
    `start` (default: the working directory) holding experiments/ and notebooks/, else the
    checkout dped is installed from, else the working directory itself."""
    here = Path(start or Path.cwd()).resolve()
    installed = Path(__file__).resolve().parents[1]
    for folder in [here, *here.parents, installed]:
        if (folder / "experiments").is_dir() and (folder / "notebooks").is_dir():
            return folder
    return here


def parse_override(text: str) -> tuple[str, Any]:
    """Parse a `key=value` command-line override; the value is read as YAML (1e-4, true, none)."""
    key, sep, raw = text.partition("=")
    if not sep:
        raise ConfigError(f"override '{text}': expected key=value, for example learning_rate=1e-4")
    return _known(key.strip()), read_yaml(raw, f"override '{text}'")
