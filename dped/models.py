"""The DPED generator (a fully convolutional ResNet) and the grayscale texture discriminator.

Layer names follow the original graph (`conv1`..`conv12` hold W1..W12, `norm0`..`norm7` the
eight normalisation layers) so that `pretrained.py` can map the authors' checkpoints onto them.
"""

from __future__ import annotations

import keras
from keras import layers, ops

from dped.config import Config

# The original initialises every weight with a truncated normal of stddev 0.01 and every
# bias with 0.01 (models.py: weight_variable / bias_variable); we keep that for both presets.
_KERNEL_INIT = {"class_name": "TruncatedNormal", "config": {"stddev": 0.01}}
_BIAS_INIT = {"class_name": "Constant", "config": {"value": 0.01}}

NORMS = ("instance", "batch", "none")
HEADS = ("tanh", "conv1x1")


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
class ScaledTanh(layers.Layer):
    """tanh(x) * 0.58 + 0.5: the original head, ranging over about (-0.08, 1.08)."""

    def call(self, x):
        return ops.tanh(x) * 0.58 + 0.5


def _conv(filters: int, size: int, name: str, strides: int = 1, init: str = "original"):
    return layers.Conv2D(
        filters,
        size,
        strides=strides,
        padding="same",
        name=name,
        kernel_initializer=_KERNEL_INIT if init == "original" else "he_normal",
        bias_initializer=_BIAS_INIT,
    )


def _norm(kind: str, name: str) -> layers.Layer:
    if kind == "instance":
        return InstanceNormalization(epsilon=1e-3, name=name)
    if kind == "batch":
        return layers.BatchNormalization(epsilon=1e-3, name=name)
    return layers.Identity(name=name)


def build_generator(
    norm: str = "instance",
    head: str = "tanh",
    filters: int = 64,
    res_blocks: int = 4,
    name: str = "generator",
    init: str = "original",
) -> keras.Model:
    """The DPED ResNet: conv9x9, `res_blocks` residual blocks, two conv3x3, an output head.

    Works on any H x W (stride 1, SAME padding everywhere). `norm` is the layer after each
    residual-block convolution; `head='tanh'` is the original tanh(conv9x9)*0.58+0.5,
    `head='conv1x1'` a linear 1x1 convolution to RGB in its place (modification 2).
    `init='he'` draws the ReLU layers' kernels He-normal instead of the original's truncated
    normal (0.01); the output layer keeps the small init (He-scaled, the tanh head saturates).
    """
    if norm not in NORMS:
        raise ValueError(f"norm: expected one of {' | '.join(NORMS)}, got {norm!r}")
    if head not in HEADS:
        raise ValueError(f"head: expected one of {' | '.join(HEADS)}, got {head!r}")
    phone = keras.Input(shape=(None, None, 3), name="phone")
    x = layers.ReLU(name="relu1")(_conv(filters, 9, "conv1", init=init)(phone))
    for block in range(res_blocks):
        skip = x
        for half in range(2):
            index = 2 + 2 * block + half
            x = _conv(filters, 3, f"conv{index}", init=init)(x)
            x = _norm(norm, f"norm{index - 2}")(x)
            x = layers.ReLU(name=f"relu{index}")(x)
        # The original adds the skip after the second ReLU and applies no ReLU to the sum.
        x = layers.Add(name=f"block{block + 1}")([x, skip])
    last = 2 + 2 * res_blocks
    x = layers.ReLU(name=f"relu{last}")(_conv(filters, 3, f"conv{last}", init=init)(x))
    x = layers.ReLU(name=f"relu{last + 1}")(_conv(filters, 3, f"conv{last + 1}", init=init)(x))
    # The output layer is not followed by a ReLU: it keeps the original small init.
    if head == "tanh":
        x = _conv(3, 9, f"conv{last + 2}")(x)
        enhanced = ScaledTanh(name="tanh_head")(x)
    else:
        enhanced = _conv(3, 1, "conv1x1_head")(x)
    # Under a mixed-precision policy the output is still float32, as the losses expect.
    enhanced = layers.Activation("linear", dtype="float32", name="enhanced")(enhanced)
    return keras.Model(phone, enhanced, name=name)


def generator_from_config(cfg: Config) -> keras.Model:
    return build_generator(cfg.norm, cfg.head, cfg.filters, cfg.res_blocks, init=cfg.init)


def build_discriminator(patch_size: int = 100, name: str = "discriminator") -> keras.Model:
    """The original texture discriminator on grayscale patches; outputs softmax [p_fake, p_real].

    conv 11x11/4 48, 5x5/2 128, 3x3 192, 3x3 192, 3x3/2 128, each followed by LeakyReLU 0.2 and
    (all but the first) instance norm, then FC 1024 + LeakyReLU and FC 2 + softmax.
    """
    gray = keras.Input(shape=(patch_size, patch_size, 1), name="gray")
    x = gray
    spec = [(48, 11, 4), (128, 5, 2), (192, 3, 1), (192, 3, 1), (128, 3, 2)]
    for i, (filters, size, strides) in enumerate(spec, start=1):
        x = _conv(filters, size, f"d_conv{i}", strides)(x)
        x = layers.LeakyReLU(negative_slope=0.2, name=f"d_lrelu{i}")(x)
        # The original normalises after the activation, not before.
        if i > 1:
            x = InstanceNormalization(epsilon=1e-3, name=f"d_norm{i}")(x)
    x = layers.Flatten(name="d_flat")(x)
    dense = {"kernel_initializer": _KERNEL_INIT, "bias_initializer": _BIAS_INIT}
    x = layers.Dense(1024, name="d_fc", **dense)(x)
    x = layers.LeakyReLU(negative_slope=0.2, name="d_lrelu_fc")(x)
    probs = layers.Dense(2, activation="softmax", name="d_out", dtype="float32", **dense)(x)
    return keras.Model(gray, probs, name=name)
