"""The four DPED losses, normalised exactly as the original training code (train_model.py).

Images are float tensors [B, H, W, 3] in 0..1 (the generator's raw output may leave that range;
nothing is clipped here). B is the batch size.
"""

from __future__ import annotations

import math

import numpy as np
import tensorflow as tf

from dped.config import Config

# tf.image.rgb_to_grayscale's weights: the original makes its grayscale patches with it.
GRAY_WEIGHTS = (0.2989, 0.5870, 0.1140)


def gauss_kernel(size: int = 21, nsig: float = 3.0, channels: int = 3) -> np.ndarray:
    """The original's blur kernel [size, size, channels, 1]: sqrt(outer(k1d, k1d)), normalised.

    k1d integrates a unit normal over `size` equal bins spanning +-(nsig + half a bin). The
    square root of the outer product is the original's (a wider kernel than a true Gaussian).
    """
    interval = (2 * nsig + 1.0) / size
    edges = np.linspace(-nsig - interval / 2.0, nsig + interval / 2.0, size + 1)
    cdf = np.array([0.5 * (1.0 + math.erf(e / math.sqrt(2.0))) for e in edges])
    kernel = np.sqrt(np.outer(np.diff(cdf), np.diff(cdf)))
    kernel = (kernel / kernel.sum()).astype(np.float32)
    return np.repeat(kernel[:, :, None, None], channels, axis=2)


def blur(images: tf.Tensor, kernel: np.ndarray) -> tf.Tensor:
    """Depthwise 'SAME' convolution with `kernel` ([k, k, C, 1])."""
    return tf.nn.depthwise_conv2d(images, kernel, [1, 1, 1, 1], padding="SAME")


def content_loss(enhanced_features: tf.Tensor, dslr_features: tf.Tensor) -> tf.Tensor:
    """mean((vgg(enhanced) - vgg(dslr))^2) over batch, positions and channels (= 2*l2/(size*B))."""
    # Features may be bfloat16 under mixed precision: the loss itself is summed in float32.
    diff = tf.cast(enhanced_features, tf.float32) - tf.cast(dslr_features, tf.float32)
    return tf.reduce_mean(tf.square(diff))


def color_loss(enhanced: tf.Tensor, dslr: tf.Tensor, kernel: np.ndarray) -> tf.Tensor:
    """sum((blur(dslr) - blur(enhanced))^2) / (2B)."""
    batch = tf.cast(tf.shape(enhanced)[0], enhanced.dtype)
    return tf.reduce_sum(tf.square(blur(dslr, kernel) - blur(enhanced, kernel))) / (2.0 * batch)


def total_variation_loss(enhanced: tf.Tensor) -> tf.Tensor:
    """(sum(dx^2)/size(dx) + sum(dy^2)/size(dy)) / B, sizes per image."""
    dy = enhanced[:, 1:, :, :] - enhanced[:, :-1, :, :]
    dx = enhanced[:, :, 1:, :] - enhanced[:, :, :-1, :]
    batch = tf.cast(tf.shape(enhanced)[0], enhanced.dtype)
    per_image = lambda t: tf.cast(tf.reduce_prod(tf.shape(t)[1:]), t.dtype)  # noqa: E731
    return (
        tf.reduce_sum(tf.square(dx)) / per_image(dx) + tf.reduce_sum(tf.square(dy)) / per_image(dy)
    ) / batch


def to_gray(images: tf.Tensor) -> tf.Tensor:
    """[B, H, W, 3] -> [B, H, W, 1] with the original's luma weights."""
    return tf.reduce_sum(images * tf.constant(GRAY_WEIGHTS, images.dtype), -1, keepdims=True)


def discriminator_input(enhanced: tf.Tensor, dslr: tf.Tensor, is_dslr: tf.Tensor) -> tf.Tensor:
    """Grayscale patches, each the DSLR one where is_dslr[b] == 1, the enhanced one elsewhere."""
    mask = tf.reshape(tf.cast(is_dslr, enhanced.dtype), [-1, 1, 1, 1])
    return to_gray(enhanced) * (1.0 - mask) + to_gray(dslr) * mask


def discriminator_loss(probs: tf.Tensor, is_dslr: tf.Tensor) -> tf.Tensor:
    """Cross-entropy summed over the batch: -sum(target * log(clip(p, 1e-10, 1))).

    `probs` is the discriminator's softmax [p_enhanced, p_dslr]; the target is [1 - s, s].
    """
    s = tf.cast(tf.reshape(is_dslr, [-1, 1]), probs.dtype)
    target = tf.concat([1.0 - s, s], axis=1)
    return -tf.reduce_sum(target * tf.math.log(tf.clip_by_value(probs, 1e-10, 1.0)))


def texture_loss(probs: tf.Tensor, is_dslr: tf.Tensor) -> tf.Tensor:
    """The generator's adversarial term: minus the discriminator's cross-entropy."""
    return -discriminator_loss(probs, is_dslr)


def discriminator_accuracy(probs: tf.Tensor, is_dslr: tf.Tensor) -> tf.Tensor:
    """Share of patches whose argmax class is right."""
    predicted = tf.cast(tf.argmax(probs, axis=1), tf.int32)
    return tf.reduce_mean(tf.cast(tf.equal(predicted, tf.cast(is_dslr, tf.int32)), tf.float32))


WEIGHT_OF = {"content": "w_content", "color": "w_color", "texture": "w_texture", "tv": "w_tv"}


def weighted_sum(terms: dict[str, tf.Tensor], cfg: Config) -> tf.Tensor:
    """w_content*content + w_color*color + w_texture*texture + w_tv*tv (the generator loss)."""
    return tf.add_n([getattr(cfg, WEIGHT_OF[k]) * terms[k] for k in WEIGHT_OF])
