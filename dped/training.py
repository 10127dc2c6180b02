"""The DPED training step: a generator step on the weighted losses, then a discriminator step.

As in the original train_model.py, each iteration (1) updates the generator on
w_content*content + w_color*color + w_texture*texture + w_tv*tv with random DSLR/enhanced swaps
for the texture term, then (2) re-enhances the same phone batch with the updated generator and
updates the discriminator on fresh swaps. Two Adam optimizers, one learning rate.
"""

from __future__ import annotations

import time
from pathlib import Path

import keras
import numpy as np
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
        vgg_weights, self.vgg_random = vgg.load_weights(cfg.vgg_weights, cfg.seed)
        # The policy applies to layers built under it; restore it so nothing else is affected.
        previous = keras.mixed_precision.global_policy()
        keras.mixed_precision.set_global_policy(cfg.precision)
        try:
            self.generator = generator_from_config(cfg)
            self.discriminator = build_discriminator(cfg.patch_size)
            self.vgg = vgg.build_vgg(vgg_weights, cfg.content_layer)
        finally:
            keras.mixed_precision.set_global_policy(previous)
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


class TrainingError(RuntimeError):
    """Training stopped: a non-finite loss (the last good checkpoint is kept)."""


def _check_finite(logs: dict, step: int, run_dir) -> None:
    for name, value in logs.items():
        if not np.isfinite(value):
            raise TrainingError(
                f"step {step}: loss term '{name}' is {value}; training stopped, the last good "
                f"checkpoint is kept in {run_dir}/checkpoints (lower learning_rate or check the data)"
            )


def evaluate(model: DPEDModel, split, cfg: Config) -> dict[str, float]:
    """Test metrics and test loss terms (fixed alternating swaps) of the current generator."""
    from dped.data import pair_dataset
    from dped.evaluation import evaluate_pairs

    result = evaluate_pairs(split, cfg, enhance=lambda x: model.generator(x, training=False))
    sums, count = {}, 0
    for phone, dslr in pair_dataset(split, cfg.replace(augment=False), training=False):
        n = int(phone.shape[0])
        is_dslr = tf.constant(np.arange(n) % 2, tf.int32)
        terms, enhanced = model.loss_terms(phone, dslr, is_dslr=is_dslr)
        probs = model.discriminator(losses.discriminator_input(enhanced, dslr, is_dslr))
        terms["d_accuracy"] = losses.discriminator_accuracy(probs, is_dslr)
        for k, v in terms.items():
            sums[k] = sums.get(k, 0.0) + n * float(v)
        count += n
    result.update({f"test_{k}": v / count for k, v in sums.items()})
    return result


def train(
    cfg: Config, out: str | Path | None = None, resume: bool = False, progress: bool = True
) -> Path:
    """Train (or resume) a run; returns its folder. See dped/runs.py for what it holds."""
    from tqdm import tqdm

    from dped import data, runs

    if cfg.deterministic:
        tf.config.experimental.enable_op_determinism()
    run_dir = Path(out or Path("results") / cfg.name)
    files = data.load_files(cfg)
    model = DPEDModel(cfg)
    runs.prepare(run_dir, cfg, resume, model.vgg_random)
    iterator = iter(
        data.pair_dataset(data.subsample(files.train, cfg.train_size, cfg.seed), cfg, training=True)
    )
    step = tf.Variable(0, dtype=tf.int64, name="step")
    for optimizer, net in (
        (model.g_optimizer, model.generator),
        (model.d_optimizer, model.discriminator),
    ):
        optimizer.build(net.trainable_variables)  # Keras 3 builds lazily: restore needs slots
    checkpoint = tf.train.Checkpoint(
        generator=model.generator,
        discriminator=model.discriminator,
        g_optimizer=model.g_optimizer,
        d_optimizer=model.d_optimizer,
        swaps=model.swaps,
        step=step,
        data=iterator,
    )
    manager = tf.train.CheckpointManager(
        checkpoint, run_dir / "checkpoints", max_to_keep=cfg.keep_checkpoints
    )
    best = tf.train.CheckpointManager(checkpoint, run_dir / "best", max_to_keep=1)
    rows = []
    if resume and manager.latest_checkpoint:
        checkpoint.restore(manager.latest_checkpoint).assert_existing_objects_matched()
        rows = [r for r in runs.read_metrics(run_dir) if int(r["step"]) <= int(step.numpy())]
    best_psnr = max((float(r["psnr"]) for r in rows), default=-np.inf)
    elapsed = float(rows[-1]["wall_s"]) if rows else 0.0
    start, sums, count = time.perf_counter() - elapsed, {}, 0
    bar = tqdm(
        total=cfg.num_iters,
        initial=int(step.numpy()),
        desc=cfg.name,
        disable=None if progress else True,
    )
    while int(step.numpy()) < cfg.num_iters:
        phone, dslr = next(iterator)
        logs = {k: float(v) for k, v in model.train_step(phone, dslr).items()}
        step.assign_add(1)
        _check_finite(logs, int(step.numpy()), run_dir)
        sums = {k: sums.get(k, 0.0) + v for k, v in logs.items()}
        count += 1
        bar.update(1)
        bar.set_postfix(generator=f"{logs['generator']:.4g}", d_acc=f"{logs['d_accuracy']:.2f}")
        s = int(step.numpy())
        if s % cfg.eval_every and s != cfg.num_iters:
            continue
        result = evaluate(model, files.test, cfg)
        rows.append(
            {
                "step": s,
                **{f"train_{k}": v / count for k, v in sums.items()},
                **result,
                "wall_s": round(time.perf_counter() - start, 2),
            }
        )
        sums, count = {}, 0
        phone_t, dslr_t = next(
            iter(data.pair_dataset(files.test, cfg.replace(batch_size=4), training=False))
        )
        runs.save_samples(
            run_dir / "samples" / f"step_{s:06d}.png",
            phone_t.numpy(),
            model.generator(phone_t, training=False).numpy(),
            dslr_t.numpy(),
        )
        # CSV first, then the checkpoint: a resume drops rows past the restored step.
        runs.write_metrics(run_dir, rows)
        manager.save(checkpoint_number=s)
        if result["psnr"] > best_psnr:
            best_psnr = result["psnr"]
            best.save(checkpoint_number=s)
        bar.write(
            f"step {s}: PSNR {result['psnr']:.2f} dB, MS-SSIM {result['ms_ssim']:.4f}, "
            f"d_accuracy {result['test_d_accuracy']:.2f}"
        )
    bar.close()
    return run_dir
