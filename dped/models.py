"""The DPED generator (a fully convolutional ResNet) and the grayscale texture discriminators.

`GeneratorSpec` is the one description of a generator's layers: the Keras builder here, the
inference graphs (`inference/graphs.py`) and the checkpoint loaders (`pretrained.py`) all read it. Layer
names follow the authors' graph (`conv1`..`conv12` hold W1..W12, `norm0`..`norm7` the eight
normalisation layers); each conv also carries its name in the seed's checkpoints (`CONV_1`,
`resblock_1_CONV_1`, ...).
"""

from __future__ import annotations

from dataclasses import dataclass

import keras
import numpy as np
import tensorflow as tf
from keras import layers, ops

from dped.config import Config

# The authors initialise every weight with a truncated normal of stddev 0.01 and every bias
# with 0.01 (models.py: weight_variable / bias_variable); the seed uses Xavier-uniform kernels
# and zero biases (tf.contrib.layers.xavier_initializer, tf.layers defaults).
_KERNEL_INIT = {"class_name": "TruncatedNormal", "config": {"stddev": 0.01}}
_BIAS_INIT = {"class_name": "Constant", "config": {"value": 0.01}}
_INITS = {  # init -> (kernel initializer of ReLU layers, of the output layer, bias initializer)
    "original": (_KERNEL_INIT, _KERNEL_INIT, _BIAS_INIT),
    # He-scaled output kernels saturate the tanh head: the output layer keeps the small init.
    "he": ("he_normal", _KERNEL_INIT, _BIAS_INIT),
    "xavier": ("glorot_uniform", "glorot_uniform", "zeros"),
}

NORMS = ("instance", "batch", "affine", "none")
HEADS = ("tanh", "conv1x1")
VGG_MEAN = np.array([123.68, 116.779, 103.939], np.float32)  # RGB, the seed's centring
GRAY_WEIGHTS = (0.2989, 0.5870, 0.1140)  # tf.image.rgb_to_grayscale's


@dataclass(frozen=True)
class Conv:
    name: str  # our Keras layer name
    size: int
    filters: int
    seed: str  # its scope in the seed's checkpoints


@dataclass(frozen=True)
class GeneratorSpec:
    """The layers of a generator, in network order: conv9x9 + ReLU, `res_blocks` residual
    blocks (conv, norm, ReLU, conv, norm, ReLU, + skip), `tail_convs` conv3x3 + ReLU, a head."""

    norm: str = "instance"
    head: str = "tanh"
    filters: int = 64
    res_blocks: int = 4
    tail_convs: int = 2
    io_space: str = "unit"

    @classmethod
    def from_config(cls, cfg: Config) -> GeneratorSpec:
        return cls(
            cfg.norm,
            cfg.head,
            cfg.filters,
            cfg.res_blocks,
            cfg.tail_convs,
            cfg.io_space,
        )

    @property
    def stem(self) -> Conv:
        return Conv("conv1", 9, self.filters, "CONV_1")

    def block(self, j: int) -> tuple[Conv, Conv]:
        """The two convolutions of residual block j (0-based); norm layers norm{2j}, norm{2j+1}."""
        return tuple(
            Conv(
                f"conv{2 + 2 * j + h}",
                3,
                self.filters,
                f"resblock_{j + 1}_CONV_{h + 1}",
            )
            for h in range(2)
        )

    @property
    def tail(self) -> list[Conv]:
        first = 2 + 2 * self.res_blocks
        return [
            Conv(f"conv{first + t}", 3, self.filters, f"CONV_{t + 2}")
            for t in range(self.tail_convs)
        ]

    @property
    def out(self) -> Conv:
        seed = f"CONV_{self.tail_convs + 2}"
        if self.head == "tanh":
            return Conv(f"conv{2 + 2 * self.res_blocks + self.tail_convs}", 9, 3, seed)
        return Conv("conv1x1_head", 1, 3, seed)

    def convs(self) -> list[Conv]:
        blocks = [c for j in range(self.res_blocks) for c in self.block(j)]
        return [self.stem, *blocks, *self.tail, self.out]

    @property
    def offset(self) -> np.ndarray:
        """What the generator subtracts from a 0..1 image on the way in."""
        return VGG_MEAN / 255.0 if self.io_space == "centred" else np.zeros(3, np.float32)

    @property
    def out_offset(self) -> np.ndarray:
        """What it adds to the head's output. A linear head outputs the image in the network's
        space; the tanh head's 0.58*tanh + 0.5 already spans the 0..1 image (the authors' layer
        put back as it was), so nothing is added to it."""
        return self.offset if self.head == "conv1x1" else np.zeros(3, np.float32)

    @property
    def radius(self) -> int:
        """Pixels of context each output pixel sees on each side (stride-1 convolutions)."""
        return sum((c.size - 1) // 2 for c in self.convs())


@keras.saving.register_keras_serializable(package="dped")
class InstanceNormalization(layers.Layer):
    """scale * (h - mean) / sqrt(var + eps) + shift, statistics per image and channel over H, W."""

    def __init__(self, epsilon: float = 1e-3, **kwargs):
        super().__init__(**kwargs)
        self.epsilon = epsilon

    def build(self, input_shape):
        channels = input_shape[-1]
        self.shift = self.add_weight(name="shift", shape=(channels,), initializer="zeros")
        self.scale = self.add_weight(name="scale", shape=(channels,), initializer="ones")

    def call(self, x):
        # Statistics in float32 even under mixed precision: bfloat16 sums over a 12 MP
        # image lose the mean entirely.
        h = ops.cast(x, "float32")
        mean, var = ops.moments(h, axes=[1, 2], keepdims=True)
        normed = (h - mean) * ops.rsqrt(var + self.epsilon)
        out = normed * ops.cast(self.scale, "float32") + ops.cast(self.shift, "float32")
        return ops.cast(out, x.dtype)

    def get_config(self):
        return {**super().get_config(), "epsilon": self.epsilon}


@keras.saving.register_keras_serializable(package="dped")
class Affine(layers.Layer):
    """gamma * x / sqrt(1 + eps) + beta: TF1's batch_normalization called without a training
    flag, i.e. inference mode with moving mean 0 and variance 1 that are never updated."""

    def __init__(self, epsilon: float = 1e-3, **kwargs):
        super().__init__(**kwargs)
        self.epsilon = epsilon

    def build(self, input_shape):
        channels = input_shape[-1]
        self.gamma = self.add_weight(name="gamma", shape=(channels,), initializer="ones")
        self.beta = self.add_weight(name="beta", shape=(channels,), initializer="zeros")

    def call(self, x):
        scale = ops.cast(self.gamma, x.dtype) / np.float32(np.sqrt(1.0 + self.epsilon))
        return x * scale + ops.cast(self.beta, x.dtype)

    def get_config(self):
        return {**super().get_config(), "epsilon": self.epsilon}


@keras.saving.register_keras_serializable(package="dped")
class LeakyReLU(layers.Layer):
    """max(x, slope * x) whose gradient reads the output y instead of the input x.

    Why not Keras' LeakyReLU: its gradient, LeakyReluGrad(dy, x), keeps the conv's BiasAdd
    alive for the backward pass; TensorFlow's oneDNN remapper fuses conv + bias + LeakyRelu
    anyway, the graph edit fails ("remapper failed: ... LeakyReluGrad ... missing node") and
    the remapper's fusions are dropped for the whole training step. With slope > 0, y and x have
    the same sign, so reading y gives the same gradient and leaves the fusion valid.
    """

    def __init__(self, negative_slope: float = 0.2, **kwargs):
        super().__init__(**kwargs)
        self.negative_slope = negative_slope

    def call(self, x):
        slope = self.negative_slope

        @tf.custom_gradient
        def leaky(x):
            y = tf.nn.leaky_relu(x, alpha=slope)
            return y, lambda dy: dy * tf.where(y > 0, tf.ones_like(y), tf.cast(slope, y.dtype))

        return leaky(x)

    def get_config(self):
        return {**super().get_config(), "negative_slope": self.negative_slope}


@keras.saving.register_keras_serializable(package="dped")
class Shift(layers.Layer):
    """x + offset (a constant per channel): moves 0..1 images into the seed's centred space."""

    def __init__(self, offset, **kwargs):
        super().__init__(**kwargs)
        self.offset = [float(v) for v in offset]

    def call(self, x):
        return x + ops.cast(np.array(self.offset, np.float32), x.dtype)

    def get_config(self):
        return {**super().get_config(), "offset": self.offset}


@keras.saving.register_keras_serializable(package="dped")
class ScaledTanh(layers.Layer):
    """tanh(x) * 0.58 + 0.5: the original head, ranging over about (-0.08, 1.08)."""

    def call(self, x):
        return ops.tanh(x) * 0.58 + 0.5


def _conv(
    conv: Conv | tuple,
    init: str = "original",
    relu_layer: bool = True,
    strides: int = 1,
):
    name, size, filters = (conv.name, conv.size, conv.filters) if isinstance(conv, Conv) else conv
    kernel, out_kernel, bias = _INITS[init]
    return layers.Conv2D(
        filters,
        size,
        strides=strides,
        padding="same",
        name=name,
        kernel_initializer=kernel if relu_layer else out_kernel,
        bias_initializer=bias,
    )


def _norm(kind: str, name: str) -> layers.Layer:
    if kind == "instance":
        return InstanceNormalization(epsilon=1e-3, name=name)
    if kind == "batch":
        return layers.BatchNormalization(epsilon=1e-3, name=name)
    if kind == "affine":
        return Affine(epsilon=1e-3, name=name)
    return layers.Identity(name=name)


def build_generator(
    norm: str = "instance",
    head: str = "tanh",
    filters: int = 64,
    res_blocks: int = 4,
    name: str = "generator",
    init: str = "original",
    tail_convs: int = 2,
    io_space: str = "unit",
) -> keras.Model:
    """The DPED ResNet of `GeneratorSpec(norm, head, filters, res_blocks, tail_convs, io_space)`."""
    if norm not in NORMS:
        raise ValueError(f"norm: expected one of {' | '.join(NORMS)}, got {norm!r}")
    if head not in HEADS:
        raise ValueError(f"head: expected one of {' | '.join(HEADS)}, got {head!r}")
    spec = GeneratorSpec(norm, head, filters, res_blocks, tail_convs, io_space)
    return generator_from_spec(spec, init, name)


def generator_from_spec(
    spec: GeneratorSpec, init: str = "original", name: str = "generator"
) -> keras.Model:
    """The generator `spec` describes, freshly initialised (`init`).

    Works on any H x W (stride 1, SAME padding everywhere). Input and output are 0..1 images
    whatever the `io_space`: a centred generator shifts by the VGG mean inside, so everything
    around it (losses, metrics, enhance) is the same for every preset. The generator's `spec`
    attribute is its description.
    """
    phone = keras.Input(shape=(None, None, 3), name="phone")
    x = Shift(-spec.offset, name="centre")(phone) if spec.io_space == "centred" else phone
    x = layers.ReLU(name="relu1")(_conv(spec.stem, init)(x))
    for j in range(spec.res_blocks):
        skip = x
        for half, conv in enumerate(spec.block(j)):
            x = _conv(conv, init)(x)
            x = _norm(spec.norm, f"norm{2 * j + half}")(x)
            x = layers.ReLU(name=f"relu{2 + 2 * j + half}")(x)
        # The original adds the skip after the second ReLU and applies no ReLU to the sum.
        x = layers.Add(name=f"block{j + 1}")([x, skip])
    for conv in spec.tail:
        x = layers.ReLU(name=f"relu_{conv.name}")(_conv(conv, init)(x))
    # The output layer is not followed by a ReLU.
    x = _conv(spec.out, init, relu_layer=False)(x)
    if spec.head == "tanh":
        x = ScaledTanh(name="tanh_head")(x)
    if spec.out_offset.any():
        x = Shift(spec.out_offset, name="uncentre")(x)
    # Under a mixed-precision policy the output is still float32, as the losses expect.
    enhanced = layers.Activation("linear", dtype="float32", name="enhanced")(x)
    model = keras.Model(phone, enhanced, name=name)
    model.spec = spec
    return model


def generator_from_config(cfg: Config) -> keras.Model:
    return generator_from_spec(GeneratorSpec.from_config(cfg), cfg.init)


# conv 11x11/4 48, 5x5/2 128, 3x3 192, 3x3 192, 3x3/2 128 (both codes), then dense 1024.
DISCRIMINATOR_CONVS = [(48, 11, 4), (128, 5, 2), (192, 3, 1), (192, 3, 1), (128, 3, 2)]
DISCRIMINATOR_FC = 1024


def build_discriminator(
    patch_size: int = 100,
    kind: str = "original",
    io_space: str = "unit",
    name: str = "discriminator",
    width: float = 1.0,
) -> keras.Model:
    """The texture discriminator on grayscale 0..1 patches [B, H, W, 1].

    `original` (authors): each conv followed by LeakyReLU 0.2 then (all but the first) instance
    norm; FC 1024 + LeakyReLU; FC 2 + softmax -> [p_enhanced, p_dslr].
    `seed`: each conv followed by (all but the first) an inference-mode BN (`Affine`) then
    LeakyReLU; dense 1024 + LeakyReLU; dense 1 -> the DSLR logit. Xavier kernels, zero biases.
    With `io_space='centred'` the patch is first centred as the seed does (gray of the mean).
    `width` scales every conv's channels and the FC's units (rounded), nothing else.
    """
    gray = keras.Input(shape=(patch_size, patch_size, 1), name="gray")
    x = gray
    if io_space == "centred":
        x = Shift([-float(np.dot(GRAY_WEIGHTS, VGG_MEAN / 255.0))], name="centre")(x)
    init = "original" if kind == "original" else "xavier"
    for i, (filters, size, strides) in enumerate(DISCRIMINATOR_CONVS, start=1):
        x = _conv((f"d_conv{i}", size, round(filters * width)), init, strides=strides)(x)
        if kind == "seed" and i > 1:
            x = Affine(epsilon=1e-3, name=f"d_bn{i}")(x)
        x = LeakyReLU(negative_slope=0.2, name=f"d_lrelu{i}")(x)
        # The authors normalise after the activation, not before.
        if kind == "original" and i > 1:
            x = InstanceNormalization(epsilon=1e-3, name=f"d_norm{i}")(x)
    x = layers.Flatten(name="d_flat")(x)
    kernel, _, bias = _INITS[init]
    dense = {"kernel_initializer": kernel, "bias_initializer": bias}
    x = layers.Dense(round(DISCRIMINATOR_FC * width), name="d_fc", **dense)(x)
    x = LeakyReLU(negative_slope=0.2, name="d_lrelu_fc")(x)
    if kind == "seed":
        out = layers.Dense(1, name="d_out", dtype="float32", **dense)(x)
    else:
        out = layers.Dense(2, activation="softmax", name="d_out", dtype="float32", **dense)(x)
    return keras.Model(gray, out, name=name)


def discriminator_from_config(cfg: Config) -> keras.Model:
    return build_discriminator(
        cfg.patch_size, cfg.discriminator, cfg.io_space, width=cfg.discriminator_width
    )
