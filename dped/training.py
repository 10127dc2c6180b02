"""The DPED training step: a generator step on the weighted losses, then a discriminator step.

As in the original train_model.py, each iteration (1) updates the generator on
w_content*content + w_color*color + w_texture*texture + w_tv*tv with random DSLR/enhanced swaps
for the texture term, then (2) re-enhances the same phone batch with the updated generator and
updates the discriminator on fresh swaps. Two Adam optimizers, one learning rate.
"""

from __future__ import annotations

import importlib.util
import time
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf

from dped import losses, vgg
from dped.config import Config
from dped.models import build_discriminator, generator_from_config

# Terms normalised by the batch size (means): under a strategy each replica's share is scaled by
# local/global batch, so that the gradients summed over replicas equal the one-device gradients.
# The texture and discriminator losses are sums over the batch: replicas' sums simply add up.
MEAN_TERMS = ("content", "color", "tv", "d_accuracy")


def make_strategy(kind: str) -> tf.distribute.Strategy:
    """`default`: one device; `mirrored`: all GPUs of this machine; `multiworker`: TF_CONFIG."""
    if kind == "mirrored":
        return tf.distribute.MirroredStrategy()
    if kind == "multiworker":
        return tf.distribute.MultiWorkerMirroredStrategy()
    return tf.distribute.get_strategy()


class DPEDModel(tf.Module):
    """Generator, discriminator, frozen VGG-19 and both optimizers; `train_step` returns named losses."""

    def __init__(self, cfg: Config, strategy: tf.distribute.Strategy | None = None):
        super().__init__(name="dped")
        self.cfg = cfg
        self.strategy = strategy or make_strategy(cfg.strategy)
        keras.utils.set_random_seed(cfg.seed)
        vgg_weights, self.vgg_random = vgg.load_weights(cfg.vgg_weights, cfg.seed)
        # The policy applies to layers built under it; restore it so nothing else is affected.
        previous = keras.mixed_precision.global_policy()
        keras.mixed_precision.set_global_policy(cfg.precision)
        try:
            with self.strategy.scope():
                self.generator = generator_from_config(cfg)
                self.discriminator = build_discriminator(cfg.patch_size)
                self.vgg = vgg.build_vgg(vgg_weights, cfg.content_layer)
                self.g_optimizer = keras.optimizers.Adam(cfg.learning_rate)
                self.d_optimizer = keras.optimizers.Adam(cfg.learning_rate)
                # Keras 3 builds slots lazily: build now, so that restoring a checkpoint keeps
                # them and a strategy does not create variables inside the traced step.
                self.g_optimizer.build(self.generator.trainable_variables)
                self.d_optimizer.build(self.discriminator.trainable_variables)
        finally:
            keras.mixed_precision.set_global_policy(previous)
        self.blur_kernel = losses.gauss_kernel(cfg.blur_size, cfg.blur_nsig)
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

    def _replica_step(self, phone, dslr, g_swap, d_swap, global_batch):
        share = tf.cast(tf.shape(phone)[0], tf.float32) / tf.cast(global_batch, tf.float32)
        # DSLR features do not depend on any trained weight: keep them off the tape.
        dslr_features = tf.stop_gradient(self.vgg(dslr, training=False))
        g_vars = self.generator.trainable_variables
        with tf.GradientTape() as tape:
            terms, _ = self.loss_terms(phone, dslr, dslr_features, g_swap, training=True)
            terms = {k: v * share if k in MEAN_TERMS else v for k, v in terms.items()}
            terms["generator"] = losses.weighted_sum(terms, self.cfg)
        self.g_optimizer.apply_gradients(zip(tape.gradient(terms["generator"], g_vars), g_vars))

        enhanced = self.generator(phone, training=False)
        d_vars = self.discriminator.trainable_variables
        with tf.GradientTape() as tape:
            probs = self.discriminator(
                losses.discriminator_input(enhanced, dslr, d_swap), training=True
            )
            d_loss = losses.discriminator_loss(probs, d_swap)
        self.d_optimizer.apply_gradients(zip(tape.gradient(d_loss, d_vars), d_vars))
        terms["discriminator"] = d_loss
        terms["d_accuracy"] = losses.discriminator_accuracy(probs, d_swap) * share
        return terms

    @tf.function
    def train_step(self, phone: tf.Tensor, dslr: tf.Tensor) -> dict[str, tf.Tensor]:
        """One iteration on a global batch; under a strategy the batch is split over replicas."""
        batch = tf.shape(phone)[0]
        # Swaps are drawn for the whole batch, so the result does not depend on the replica count.
        g_swap, d_swap = self._swap(batch), self._swap(batch)
        replicas = self.strategy.num_replicas_in_sync
        if replicas == 1:
            return self._replica_step(phone, dslr, g_swap, d_swap, batch)

        def replica_fn(*full):
            # Every replica receives the whole batch and takes its own contiguous shard.
            size = batch // replicas
            i = tf.distribute.get_replica_context().replica_id_in_sync_group
            shard = [t[i * size : (i + 1) * size] for t in full]
            return self._replica_step(*shard, global_batch=batch)

        per_replica = self.strategy.run(replica_fn, args=(phone, dslr, g_swap, d_swap))
        sum_ = tf.distribute.ReduceOp.SUM
        return {k: self.strategy.reduce(sum_, v, axis=None) for k, v in per_replica.items()}


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


class Run:
    """A training run's state on disk: checkpoint managers, metrics rows, optional TensorBoard."""

    def __init__(self, run_dir: Path, model: DPEDModel, iterator, cfg: Config, resume: bool):
        from dped import runs

        self.dir, self.cfg = run_dir, cfg
        self.step = tf.Variable(0, dtype=tf.int64, name="step")
        self.checkpoint = tf.train.Checkpoint(
            generator=model.generator,
            discriminator=model.discriminator,
            g_optimizer=model.g_optimizer,
            d_optimizer=model.d_optimizer,
            swaps=model.swaps,
            step=self.step,
            data=iterator,
        )
        self.latest = tf.train.CheckpointManager(
            self.checkpoint, run_dir / "checkpoints", max_to_keep=cfg.keep_checkpoints
        )
        self.best = tf.train.CheckpointManager(self.checkpoint, run_dir / "best", max_to_keep=1)
        self.rows = []
        if resume and self.latest.latest_checkpoint:
            self.checkpoint.restore(self.latest.latest_checkpoint).assert_existing_objects_matched()
            done = int(self.step.numpy())
            self.rows = [r for r in runs.read_metrics(run_dir) if int(r["step"]) <= done]
        self.best_psnr = max((float(r["psnr"]) for r in self.rows), default=-np.inf)
        elapsed = float(self.rows[-1]["wall_s"]) if self.rows else 0.0
        self.start = time.perf_counter() - elapsed
        self.writer = (
            tf.summary.create_file_writer(str(run_dir / "tensorboard")) if cfg.tensorboard else None
        )

    def record(self, row: dict, samples: tuple) -> None:
        """Samples, the metrics row (CSV first: a resume drops rows past its checkpoint), then
        the checkpoints."""
        from dped import runs

        step = row["step"]
        row["wall_s"] = round(time.perf_counter() - self.start, 2)
        runs.save_samples(self.dir / "samples" / f"step_{step:06d}.png", *samples)
        self.rows.append(row)
        runs.write_metrics(self.dir, self.rows)
        if self.writer:
            with self.writer.as_default():
                for key, value in row.items():
                    if key != "step":
                        tf.summary.scalar(key, value, step=step)
            self.writer.flush()
        self.latest.save(checkpoint_number=step)
        if row["psnr"] > self.best_psnr:
            self.best_psnr = row["psnr"]
            self.best.save(checkpoint_number=step)


def _sample_batch(model: DPEDModel, files, cfg: Config) -> tuple:
    from dped.data import pair_dataset

    phone, dslr = next(iter(pair_dataset(files.test, cfg.replace(batch_size=4), training=False)))
    return phone.numpy(), model.generator(phone, training=False).numpy(), dslr.numpy()


def train(
    cfg: Config, out: str | Path | None = None, resume: bool = False, progress: bool = True
) -> Path:
    """Train (or resume) a run; returns its folder. See dped/runs.py for what it holds."""
    from tqdm import tqdm

    from dped import data, runs

    if cfg.tensorboard and importlib.util.find_spec("tensorboard") is None:
        raise ValueError(
            "tensorboard: true needs the tensorboard package: "
            "pip install 'dped[tensorboard]' (or set tensorboard: false)"
        )
    if cfg.deterministic:
        tf.config.experimental.enable_op_determinism()
    run_dir = Path(out or Path("results") / cfg.name)
    files = data.load_files(cfg)
    model = DPEDModel(cfg)
    replicas = model.strategy.num_replicas_in_sync
    if cfg.batch_size % replicas:
        raise ValueError(
            f"batch_size {cfg.batch_size} must be a multiple of the {replicas} replicas"
        )
    runs.prepare(run_dir, cfg, resume, model.vgg_random)
    train_split = data.subsample(files.train, cfg.train_size, cfg.seed)
    iterator = iter(data.pair_dataset(train_split, cfg, training=True))
    run = Run(run_dir, model, iterator, cfg, resume)
    sums, count = {}, 0
    bar = tqdm(
        total=cfg.num_iters,
        initial=int(run.step.numpy()),
        desc=cfg.name,
        disable=None if progress else True,
    )
    while int(run.step.numpy()) < cfg.num_iters:
        phone, dslr = next(iterator)
        logs = {k: float(v) for k, v in model.train_step(phone, dslr).items()}
        step = int(run.step.assign_add(1).numpy())
        _check_finite(logs, step, run_dir)
        sums, count = {k: sums.get(k, 0.0) + v for k, v in logs.items()}, count + 1
        bar.update(1)
        bar.set_postfix(generator=f"{logs['generator']:.4g}", d_acc=f"{logs['d_accuracy']:.2f}")
        if step % cfg.eval_every and step != cfg.num_iters:
            continue
        result = evaluate(model, files.test, cfg)
        train_means = {f"train_{k}": v / count for k, v in sums.items()}
        run.record({"step": step, **train_means, **result}, _sample_batch(model, files, cfg))
        sums, count = {}, 0
        bar.write(
            f"step {step}: PSNR {result['psnr']:.2f} dB, MS-SSIM {result['ms_ssim']:.4f}, "
            f"d_accuracy {result['test_d_accuracy']:.2f}"
        )
    bar.close()
    return run_dir
