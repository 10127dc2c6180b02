"""The original authors' pretrained generators (TF1 checkpoints) loaded into our `paper` generator.

The checkpoints (`iphone_orig`, `blackberry_orig`, `sony_orig`) are the files of `models_orig/`
in the authors' repository aiff22/DPED: an `.index` and a `.data-00000-of-00001` per model.
Their variables are `generator/W1..W12`, `generator/b1..b12` and, for the eight instance norms,
TensorFlow's automatic names `generator/Variable`, `generator/Variable_1`, ...: each norm layer
created its shift first, then its scale, in network order.
"""

from __future__ import annotations

import os
from pathlib import Path

import keras
import numpy as np

ORIGINAL_MODELS = ("iphone_orig", "blackberry_orig", "sony_orig")
WHERE_TO_GET = (
    "the authors' repository aiff22/DPED ships them in models_orig/ "
    "(<name>.index and <name>.data-00000-of-00001)"
)


class CheckpointError(FileNotFoundError):
    """A missing, incomplete or incompatible original checkpoint."""


def _in_name(k: int, role: str) -> str:
    index = 2 * k + (1 if role == "scale" else 0)
    return "generator/Variable" if index == 0 else f"generator/Variable_{index}"


def variable_map(res_blocks: int = 4) -> dict[str, tuple[str, str]]:
    """{checkpoint key: (our layer name, weight role)} for the original generator."""
    mapping = {}
    for i in range(1, 2 * res_blocks + 5):
        mapping[f"generator/W{i}"] = (f"conv{i}", "kernel")
        mapping[f"generator/b{i}"] = (f"conv{i}", "bias")
    for k in range(2 * res_blocks):
        mapping[_in_name(k, "shift")] = (f"norm{k}", "shift")
        mapping[_in_name(k, "scale")] = (f"norm{k}", "scale")
    return mapping


def resolve_checkpoint(model: str, weights_dir: str | os.PathLike | None = None) -> Path:
    """A checkpoint prefix from a model name (looked up in `weights_dir`) or a path prefix."""
    if model in ORIGINAL_MODELS:
        folder = weights_dir or os.environ.get("DPED_WEIGHTS_DIR")
        if not folder:
            raise CheckpointError(
                f"original model '{model}' needs its weights folder: pass weights_dir or set "
                f"DPED_WEIGHTS_DIR to the folder holding {model}.index; {WHERE_TO_GET}"
            )
        prefix = Path(folder) / model
    else:
        prefix = Path(model)
    index = prefix.with_name(prefix.name + ".index")
    if not index.is_file():
        raise CheckpointError(f"no TF checkpoint at {prefix} (missing {index}); {WHERE_TO_GET}")
    return prefix


def read_checkpoint(prefix: str | os.PathLike) -> dict[str, np.ndarray]:
    """Every tensor of a TF checkpoint as {key: array}, without building any graph."""
    import tensorflow as tf

    try:
        reader = tf.train.load_checkpoint(str(prefix))
    except Exception as err:  # TF raises a bare DataLossError/NotFoundError on bad files
        raise CheckpointError(
            f"cannot read TF checkpoint {prefix}: {type(err).__name__}: "
            f"{str(err).splitlines()[0]}; {WHERE_TO_GET}"
        ) from None
    return {key: reader.get_tensor(key) for key in reader.get_variable_to_shape_map()}


def _res_blocks(tensors: dict[str, np.ndarray]) -> int:
    # W1, two convs per block, then W(last-1), W(last): 2 * blocks + 4 kernels in all.
    return (sum(1 for k in tensors if k.startswith("generator/W")) - 4) // 2


def load_original_weights(
    generator: keras.Model,
    prefix: str | os.PathLike,
    tensors: dict[str, np.ndarray] | None = None,
) -> keras.Model:
    """Copy an original checkpoint into a generator built with norm='instance', head='tanh'."""
    tensors = read_checkpoint(prefix) if tensors is None else tensors
    res_blocks = _res_blocks(tensors)
    mapping = variable_map(res_blocks)
    missing = sorted(set(mapping) - set(tensors))
    if missing or res_blocks < 1:
        raise CheckpointError(
            f"{prefix} is not an original DPED generator checkpoint: missing {missing[:5]}"
        )
    for key, (layer_name, role) in mapping.items():
        try:
            variable = getattr(generator.get_layer(layer_name), role)
        except (ValueError, AttributeError):
            raise CheckpointError(
                f"{prefix} needs a generator with norm='instance', head='tanh' and "
                f"{res_blocks} residual blocks (no layer {layer_name}.{role} here)"
            ) from None
        if tuple(variable.shape) != tensors[key].shape:
            raise CheckpointError(
                f"{prefix}: {key} has shape {tensors[key].shape}, but {layer_name}.{role} "
                f"expects {tuple(variable.shape)}"
            )
        variable.assign(tensors[key])
    return generator


def original_generator(model: str, weights_dir: str | os.PathLike | None = None) -> keras.Model:
    """The authors' pretrained generator by name (`iphone_orig`, ...) or checkpoint prefix."""
    from dped.models import build_generator

    prefix = resolve_checkpoint(model, weights_dir)
    tensors = read_checkpoint(prefix)
    generator = build_generator("instance", "tanh", res_blocks=max(_res_blocks(tensors), 1))
    return load_original_weights(generator, prefix, tensors)
