"""TF1 checkpoints of the two codes we implement, loaded into our Keras networks.

- The authors' (`iphone_orig`, `blackberry_orig`, `sony_orig`: `models_orig/` of aiff22/DPED):
  `generator/W1..W12`, `generator/b1..b12` and, for the eight instance norms, TensorFlow's
  automatic names `generator/Variable`, `generator/Variable_1`, ...: each norm layer created its
  shift first, then its scale, in network order. Generator only.
- The seed's (`checkpoint/<phone>/DPED` of JuheonYi/DPED-TensorFlow, its `Saver` over the
  trainable variables): `generator/CONV_1/kernel`, `generator/resblock_1_CONV_1/bias`, ...,
  `discriminator/CONV_1/kernel`, `discriminator/BN_2/gamma`, `discriminator/dense/kernel`,
  `discriminator/dense_1/bias`.

The format is told by the variable names; the layer correspondence comes from
`models.GeneratorSpec`, the same description the Keras builder and the inference graphs read.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import keras
import numpy as np

from dped.models import GeneratorSpec

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


def variable_map(spec: GeneratorSpec) -> dict[str, tuple[str, str]]:
    """{authors' checkpoint key: (our layer name, weight role)} for a generator of `spec`."""
    mapping = {}
    for i, conv in enumerate(spec.convs(), start=1):
        mapping[f"generator/W{i}"] = (conv.name, "kernel")
        mapping[f"generator/b{i}"] = (conv.name, "bias")
    for k in range(2 * spec.res_blocks):
        mapping[_in_name(k, "shift")] = (f"norm{k}", "shift")
        mapping[_in_name(k, "scale")] = (f"norm{k}", "scale")
    return mapping


def seed_variable_map(spec: GeneratorSpec, discriminator: bool = True) -> dict:
    """{seed checkpoint key: (our layer name, role)}: the generator of `spec` and the seed's
    discriminator. Inference-mode BN in the blocks (`norm='affine'`) is `resblock_j_BN_h`."""
    mapping = {}
    for conv in spec.convs():
        for role in ("kernel", "bias"):
            mapping[f"generator/{conv.seed}/{role}"] = (conv.name, role)
    if spec.norm == "affine":
        for j in range(spec.res_blocks):
            for h in range(2):
                for role in ("gamma", "beta"):
                    key = f"generator/resblock_{j + 1}_BN_{h + 1}/{role}"
                    mapping[key] = (f"norm{2 * j + h}", role)
    if discriminator:
        for i in range(1, 6):
            for role in ("kernel", "bias"):
                mapping[f"discriminator/CONV_{i}/{role}"] = (f"d_conv{i}", role)
            if i > 1:
                for role in ("gamma", "beta"):
                    mapping[f"discriminator/BN_{i}/{role}"] = (f"d_bn{i}", role)
        for scope, layer in (("dense", "d_fc"), ("dense_1", "d_out")):
            for role in ("kernel", "bias"):
                mapping[f"discriminator/{scope}/{role}"] = (layer, role)
    return mapping


def checkpoint_format(tensors: dict[str, np.ndarray], prefix) -> str:
    """'original' (the authors'), 'seed', or a CheckpointError naming what was found."""
    if "generator/W1" in tensors:
        return "original"
    if "generator/CONV_1/kernel" in tensors:
        return "seed"
    raise CheckpointError(
        f"{prefix} is neither an authors' DPED checkpoint (generator/W1, ...) nor a seed one "
        f"(generator/CONV_1/kernel, ...); it holds {sorted(tensors)[:4]}"
    )


def spec_of(tensors: dict[str, np.ndarray], prefix) -> GeneratorSpec:
    """The generator a checkpoint holds, read from its variable names and shapes."""
    if checkpoint_format(tensors, prefix) == "original":
        kernels = sum(1 for k in tensors if re.fullmatch(r"generator/W\d+", k))
        blocks = max((kernels - 4) // 2, 1)  # W1, two per block, two tail convs, the head
        return GeneratorSpec("instance", "tanh", tensors["generator/W1"].shape[-1], blocks, 2)
    blocks = sum(1 for k in tensors if re.fullmatch(r"generator/resblock_\d+_CONV_1/kernel", k))
    convs = sum(1 for k in tensors if re.fullmatch(r"generator/CONV_\d+/kernel", k))
    tail = convs - 2  # CONV_1 before the blocks and the head after the tail
    head = tensors.get(f"generator/CONV_{tail + 2}/kernel")
    if blocks < 1 or head is None:
        raise CheckpointError(f"{prefix}: an incomplete seed generator (no blocks or no head)")
    norm = "affine" if "generator/resblock_1_BN_1/gamma" in tensors else "none"
    head_kind = "conv1x1" if head.shape[0] == 1 else "tanh"
    filters = tensors["generator/CONV_1/kernel"].shape[-1]
    return GeneratorSpec(norm, head_kind, filters, blocks, tail, "centred")


def assign(model: keras.Model, mapping: dict, tensors: dict[str, np.ndarray], prefix) -> None:
    """Copy every mapped tensor into its layer's weight; any missing key or shape mismatch is a
    CheckpointError (never a half-loaded network)."""
    missing = sorted(set(mapping) - set(tensors))
    if missing:
        raise CheckpointError(
            f"{prefix} does not hold a complete {model.name}: missing {missing[:5]}"
            + (f" and {len(missing) - 5} more" if len(missing) > 5 else "")
        )
    for key, (layer_name, role) in mapping.items():
        try:
            variable = getattr(model.get_layer(layer_name), role)
        except (ValueError, AttributeError):
            raise CheckpointError(
                f"{prefix}: {key} has no counterpart {layer_name}.{role} in this {model.name}"
            ) from None
        if tuple(variable.shape) != tensors[key].shape:
            raise CheckpointError(
                f"{prefix}: {key} has shape {tensors[key].shape}, but {layer_name}.{role} "
                f"expects {tuple(variable.shape)}"
            )
        variable.assign(tensors[key])


def resolve_checkpoint(model: str, weights_dir: str | os.PathLike | None = None) -> Path:
    """A checkpoint prefix from a model name (looked up in `weights_dir`) or a path prefix."""
    if model in ORIGINAL_MODELS:
        folder = weights_dir or os.environ.get("DPED_WEIGHTS_DIR")
        if not folder:
            raise CheckpointError(
                f"original model '{model}' needs its weights folder: pass --weights-dir DIR "
                f"(weights_dir= in Python) or set DPED_WEIGHTS_DIR to the folder holding "
                f"{model}.index; {WHERE_TO_GET}"
            )
        prefix = Path(folder) / model
    else:
        prefix = Path(model)
    if prefix.is_dir() and (prefix / "checkpoint").is_file():  # a seed checkpoint folder
        prefix = prefix / "DPED"
    index = prefix.with_name(prefix.name + ".index")
    if not index.is_file():
        raise CheckpointError(f"no TF checkpoint at {prefix} (missing {index}); {WHERE_TO_GET}")
    return prefix


def read_checkpoint(prefix: str | os.PathLike) -> dict[str, np.ndarray]:
    """Every tensor of a TF checkpoint as {key: array}, without building any graph."""
    import tensorflow as tf

    try:
        reader = tf.train.load_checkpoint(str(prefix))
        return {key: reader.get_tensor(key) for key in reader.get_variable_to_shape_map()}
    except Exception as err:  # TF raises DataLossError, NotFoundError, IndexError (truncated)
        raise CheckpointError(
            f"cannot read TF checkpoint {prefix}: {type(err).__name__}: "
            f"{str(err).splitlines()[0]}; the files are damaged or incomplete: {WHERE_TO_GET}"
        ) from None


def load_original_weights(
    generator: keras.Model,
    prefix: str | os.PathLike,
    tensors: dict[str, np.ndarray] | None = None,
) -> keras.Model:
    """Copy an authors' checkpoint into a generator built with norm='instance', head='tanh'."""
    tensors = read_checkpoint(prefix) if tensors is None else tensors
    spec = spec_of(tensors, prefix)
    if generator.spec.norm != "instance" or generator.spec.head != "tanh":
        raise CheckpointError(
            f"{prefix} needs a generator with norm='instance', head='tanh' and "
            f"{spec.res_blocks} residual blocks (this one: {generator.spec})"
        )
    assign(generator, variable_map(generator.spec), tensors, prefix)
    return generator


def load_checkpoint_weights(
    prefix: str | os.PathLike,
    generator: keras.Model,
    discriminator: keras.Model | None = None,
) -> str:
    """Load an authors' or seed checkpoint into our networks (the discriminator too, from a
    seed checkpoint, when given); returns the format. The architectures must match."""
    tensors = read_checkpoint(prefix)
    kind = checkpoint_format(tensors, prefix)
    if kind == "original":
        load_original_weights(generator, prefix, tensors)
        return kind
    wanted = spec_of(tensors, prefix)
    if (generator.spec.norm, generator.spec.head, generator.spec.tail_convs) != (
        wanted.norm,
        wanted.head,
        wanted.tail_convs,
    ):
        raise CheckpointError(
            f"{prefix} holds a seed generator ({wanted}); the config builds {generator.spec}: "
            "start from the `seed` preset"
        )
    assign(
        generator,
        seed_variable_map(generator.spec, discriminator=False),
        tensors,
        prefix,
    )
    if discriminator is not None:
        d_keys = {
            k: v
            for k, v in seed_variable_map(generator.spec).items()
            if k.startswith("discriminator/")
        }
        assign(discriminator, d_keys, tensors, prefix)
    return kind


def generator_from_checkpoint(prefix: str | os.PathLike) -> keras.Model:
    """The generator an authors' or seed checkpoint holds, built to its spec and loaded."""
    from dped.models import generator_from_spec

    tensors = read_checkpoint(prefix)
    spec = spec_of(tensors, prefix)
    generator = generator_from_spec(spec)
    if checkpoint_format(tensors, prefix) == "original":
        load_original_weights(generator, prefix, tensors)
    else:
        assign(generator, seed_variable_map(spec, discriminator=False), tensors, prefix)
    return generator


def original_generator(model: str, weights_dir: str | os.PathLike | None = None) -> keras.Model:
    """A pretrained generator by name (`iphone_orig`, ...) or checkpoint prefix (the authors'
    or the seed's format)."""
    return generator_from_checkpoint(resolve_checkpoint(model, weights_dir))
