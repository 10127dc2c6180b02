"""The four DPED losses, as the authors' train_model.py and as the seed's DPED.py define them.

Images are float tensors [B, H, W, 3] in 0..1 (the generator's raw output may leave that range;
nothing is clipped here). B is the batch size. The seed computes its losses on mean-centred
images; color, TV and content (VGG sees 255*x - mean either way) do not change under that shift,
so the same 0..1 tensors serve both definitions.
"""

from __future__ import annotations

import math

import numpy as np
import tensorflow as tf

from dped.config import Config
from dped.models import GRAY_WEIGHTS  # tf.image.rgb_to_grayscale's, as both codes use


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
    """Depthwise 'SAME' convolution with `kernel` ([k, k, C, 1], gauss_kernel's), run as a
    column pass then a row pass: the kernel is the outer product of one 1-D factor with itself,
    so the two passes compute the same sums with 2k instead of k*k taps per pixel."""
    kernel = np.asarray(kernel, np.float32)
    factor = np.sqrt(np.diagonal(kernel[:, :, 0, 0]))  # kernel[i, j] = factor[i] * factor[j]
    if not np.allclose(np.outer(factor, factor), kernel[:, :, 0, 0], rtol=1e-5, atol=1e-9):
        raise ValueError("blur: the kernel is not the outer product of a 1-D factor with itself")
    column = np.repeat(factor[:, None, None, None], kernel.shape[2], axis=2)
    row = column.reshape(1, -1, kernel.shape[2], 1)
    images = tf.nn.depthwise_conv2d(images, column, [1, 1, 1, 1], padding="SAME")
    return tf.nn.depthwise_conv2d(images, row, [1, 1, 1, 1], padding="SAME")


def content_loss(enhanced_features: tf.Tensor, dslr_features: tf.Tensor) -> tf.Tensor:
    """mean((vgg(enhanced) - vgg(dslr))^2) over batch, positions and channels (= 2*l2/(size*B))."""
    # Features may be bfloat16 under mixed precision: the loss itself is summed in float32.
    diff = tf.cast(enhanced_features, tf.float32) - tf.cast(dslr_features, tf.float32)
    return tf.reduce_mean(tf.square(diff))


def color_loss(enhanced: tf.Tensor, dslr: tf.Tensor, kernel: np.ndarray) -> tf.Tensor:
    """sum((blur(dslr) - blur(enhanced))^2) / (2B)."""
    batch = tf.cast(tf.shape(enhanced)[0], enhanced.dtype)
    # blur is linear: one blur of the difference is blur(dslr) - blur(enhanced).
    return tf.reduce_sum(tf.square(blur(dslr - enhanced, kernel))) / (2.0 * batch)


def total_variation_loss(enhanced: tf.Tensor) -> tf.Tensor:
    """(sum(dx^2)/size(dx) + sum(dy^2)/size(dy)) / B, sizes per image."""
    dy = enhanced[:, 1:, :, :] - enhanced[:, :-1, :, :]
    dx = enhanced[:, :, 1:, :] - enhanced[:, :, :-1, :]
    batch = tf.cast(tf.shape(enhanced)[0], enhanced.dtype)
    per_image = lambda t: tf.cast(tf.reduce_prod(tf.shape(t)[1:]), t.dtype)  # noqa: E731
    return (
        tf.reduce_sum(tf.square(dx)) / per_image(dx) + tf.reduce_sum(tf.square(dy)) / per_image(dy)
    ) / batch


def color_loss_seed(enhanced: tf.Tensor, dslr: tf.Tensor, kernel: np.ndarray) -> tf.Tensor:
    """255 * mean((blur(dslr) - blur(enhanced))^2), the seed's color loss."""
    return 255.0 * tf.reduce_mean(tf.square(blur(dslr - enhanced, kernel)))


def total_variation_l1(enhanced: tf.Tensor) -> tf.Tensor:
    """Mean over the batch of sum |dx| + sum |dy| per image (tf.image.total_variation): the seed's."""
    return tf.reduce_mean(tf.image.total_variation(tf.convert_to_tensor(enhanced)))


def texture_loss_seed(dslr_logit: tf.Tensor, enhanced_logit: tf.Tensor) -> tf.Tensor:
    """mean(sigmoid_xent(logits=D(dslr), labels=D(enhanced))): the seed's texture term, with the
    discriminator's logit on the enhanced patch as the label (its gradient flows through it)."""
    return tf.reduce_mean(
        tf.nn.sigmoid_cross_entropy_with_logits(labels=enhanced_logit, logits=dslr_logit)
    )


def discriminator_loss_seed(real_logit: tf.Tensor, fake_logit: tf.Tensor) -> tf.Tensor:
    """mean(sigmoid_xent(D(dslr), 1)) + mean(sigmoid_xent(D(fake), 0))."""
    xent = tf.nn.sigmoid_cross_entropy_with_logits
    return tf.reduce_mean(
        xent(labels=tf.ones_like(real_logit), logits=real_logit)
    ) + tf.reduce_mean(xent(labels=tf.zeros_like(fake_logit), logits=fake_logit))


def logit_accuracy(real_logit: tf.Tensor, fake_logit: tf.Tensor) -> tf.Tensor:
    """Share of DSLR patches called DSLR and fake patches called fake, both sides together."""
    right = tf.concat([real_logit > 0, fake_logit <= 0], axis=0)
    return tf.reduce_mean(tf.cast(right, tf.float32))


def dslr_logit(output: tf.Tensor) -> tf.Tensor:
    """[B, 1] logit of 'DSLR' from either discriminator: the seed's logit, or log(p_dslr/p_enh)
    of the authors' softmax (clipped as their loss clips)."""
    if output.shape[-1] == 1:
        return output
    p = tf.clip_by_value(output, 1e-10, 1.0)
    return tf.math.log(p[:, 1:]) - tf.math.log(p[:, :1])


def as_probs(output: tf.Tensor) -> tf.Tensor:
    """[B, 2] [p_enhanced, p_dslr] from either discriminator (the seed's: sigmoid of its logit)."""
    if output.shape[-1] == 2:
        return output
    return tf.concat([tf.sigmoid(-output), tf.sigmoid(output)], axis=1)


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


class SeedLosses:
    """The seed's definitions: the discriminator judges the DSLR and the enhanced batch apart,
    and every term is a mean over the batch."""

    mean_terms = ("content", "color", "tv", "texture", "discriminator", "d_accuracy")

    def critic(self, discriminator, enhanced, dslr, is_dslr, training=False):
        """(DSLR logits, enhanced logits): the verdicts both adversarial terms read."""
        del is_dslr  # the seed shows the discriminator both sides, never a swapped mix
        # One call on both sides: it judges each patch alone (no batch statistics), and one
        # pass over twice the patches costs less than two passes at a batch of 2.
        logits = dslr_logit(
            discriminator(to_gray(tf.concat([dslr, enhanced], 0)), training=training)
        )
        return logits[: tf.shape(dslr)[0]], logits[tf.shape(dslr)[0] :]

    def test_critic(self, outputs: dict, is_dslr):
        """The verdicts from the discriminator's outputs on each side of a test batch."""
        del is_dslr
        return dslr_logit(outputs["dslr"]), dslr_logit(outputs["enhanced"])

    def generator_terms(self, enhanced, dslr, critic, is_dslr, kernel) -> dict:
        """{color, texture, tv}, unweighted."""
        return {
            "color": color_loss_seed(enhanced, dslr, kernel),
            "texture": texture_loss_seed(*critic),
            "tv": total_variation_l1(enhanced),
        }

    def adversarial_terms(self, critic, is_dslr) -> dict:
        return {
            "discriminator": discriminator_loss_seed(*critic),
            "d_accuracy": logit_accuracy(*critic),
        }


class AuthorsLosses:
    """The authors' definitions: the discriminator sees DSLR and enhanced patches mixed by random
    swaps (`is_dslr[b]` says which side patch b shows); its loss and the texture term are sums
    over the batch, the rest means."""

    mean_terms = ("content", "color", "tv", "d_accuracy")

    def critic(self, discriminator, enhanced, dslr, is_dslr, training=False):
        """[B, 2] probabilities [p_enhanced, p_dslr] for the swapped mix."""
        gray = discriminator_input(enhanced, dslr, is_dslr)
        return as_probs(discriminator(gray, training=training))

    def test_critic(self, outputs: dict, is_dslr):
        """At inference the discriminator judges each patch alone: the swapped mix's verdicts are
        the two sides' verdicts, picked per patch, without a fourth pass."""
        pick = tf.reshape(tf.equal(tf.cast(is_dslr, tf.int32), 1), [-1, 1])
        return as_probs(tf.where(pick, outputs["dslr"], outputs["enhanced"]))

    def generator_terms(self, enhanced, dslr, critic, is_dslr, kernel) -> dict:
        return {
            "color": color_loss(enhanced, dslr, kernel),
            "texture": texture_loss(critic, is_dslr),
            "tv": total_variation_loss(enhanced),
        }

    def adversarial_terms(self, critic, is_dslr) -> dict:
        return {
            "discriminator": discriminator_loss(critic, is_dslr),
            "d_accuracy": discriminator_accuracy(critic, is_dslr),
        }


# `loss_defs` -> its definitions, chosen once per model: a third recipe is one more class.
LOSS_SETS = {"seed": SeedLosses(), "original": AuthorsLosses()}


WEIGHT_OF = {"content": "w_content", "color": "w_color", "texture": "w_texture", "tv": "w_tv"}


def weighted_sum(terms: dict[str, tf.Tensor], cfg: Config) -> tf.Tensor:
    """w_content*content + w_color*color + w_texture*texture + w_tv*tv (the generator loss)."""
    return tf.add_n([getattr(cfg, WEIGHT_OF[k]) * terms[k] for k in WEIGHT_OF])
