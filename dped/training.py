"""The DPED training step: a generator step on the weighted losses, then a discriminator step.

As in the original train_model.py, each iteration (1) updates the generator on
w_content*content + w_color*color + w_texture*texture + w_tv*tv with random DSLR/enhanced swaps
for the texture term, then (2) re-enhances the same phone batch with the updated generator and
updates the discriminator on fresh swaps. Two Adam optimizers, one learning rate.
"""

from __future__ import annotations

import keras
import tensorflow as tf

from dped import losses, vgg
from dped.config import Config
from dped.models import build_discriminator, generator_from_config


class DPEDModel(tf.Module):
    """Generator, discriminator, frozen VGG-19 and both optimizers; `train_step` returns named losses."""

    def __init__(self, cfg: Config):
        super().__init__(name="dped")
        self.cfg = cfg
        keras.utils.set_random_seed(cfg.seed)
        self.generator = generator_from_config(cfg)
        self.discriminator = build_discriminator(cfg.patch_size)
        vgg_weights, self.vgg_random = vgg.load_weights(cfg.vgg_weights, cfg.seed)
        self.vgg = vgg.build_vgg(vgg_weights, cfg.content_layer)
        self.blur_kernel = losses.gauss_kernel(cfg.blur_size, cfg.blur_nsig)
        self.g_optimizer = keras.optimizers.Adam(cfg.learning_rate)
        self.d_optimizer = keras.optimizers.Adam(cfg.learning_rate)
        self.swaps = tf.random.Generator.from_seed(cfg.seed)

    def _swap(self, batch: tf.Tensor) -> tf.Tensor:
        return self.swaps.uniform([batch], 0, 2, dtype=tf.int32)

    def loss_terms(
        self, phone, dslr, dslr_features=None, is_dslr=None, training=False, enhance=None
    ):
        """{content, color, texture, tv, generator} for one batch, and the enhanced images.

        `enhance` replaces the generator (calibration measures the identity mapping with it).
        """
        enhance = enhance or (lambda t: self.generator(t, training=training))
        enhanced = enhance(phone)
        if dslr_features is None:
            dslr_features = self.vgg(dslr, training=False)
        if is_dslr is None:
            is_dslr = self._swap(tf.shape(phone)[0])
        probs = self.discriminator(
            losses.discriminator_input(enhanced, dslr, is_dslr), training=False
        )
        terms = {
            "content": losses.content_loss(self.vgg(enhanced, training=False), dslr_features),
            "color": losses.color_loss(enhanced, dslr, self.blur_kernel),
            "texture": losses.texture_loss(probs, is_dslr),
            "tv": losses.total_variation_loss(enhanced),
        }
        terms["generator"] = losses.weighted_sum(terms, self.cfg)
        return terms, enhanced

    @tf.function
    def train_step(self, phone: tf.Tensor, dslr: tf.Tensor) -> dict[str, tf.Tensor]:
        # DSLR features do not depend on any trained weight: keep them off the tape.
        dslr_features = tf.stop_gradient(self.vgg(dslr, training=False))
        g_vars = self.generator.trainable_variables
        with tf.GradientTape() as tape:
            terms, _ = self.loss_terms(phone, dslr, dslr_features, training=True)
        self.g_optimizer.apply_gradients(zip(tape.gradient(terms["generator"], g_vars), g_vars))

        enhanced = self.generator(phone, training=False)
        is_dslr = self._swap(tf.shape(phone)[0])
        d_vars = self.discriminator.trainable_variables
        with tf.GradientTape() as tape:
            probs = self.discriminator(
                losses.discriminator_input(enhanced, dslr, is_dslr), training=True
            )
            d_loss = losses.discriminator_loss(probs, is_dslr)
        self.d_optimizer.apply_gradients(zip(tape.gradient(d_loss, d_vars), d_vars))
        terms["discriminator"] = d_loss
        terms["d_accuracy"] = losses.discriminator_accuracy(probs, is_dslr)
        return terms
