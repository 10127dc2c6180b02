"""The DPED training step: a generator step on the weighted losses, then a discriminator step.

Each iteration (1) updates the generator on w_content*content + w_color*color +
w_texture*texture + w_tv*tv, then (2) updates the discriminator with a fake batch that is the
phone batch enhanced again by the updated generator (`d_fake: re-enhanced`, the authors'
train_model.py) or the batch enhanced before the generator step (`pre-step`, the seed's). Under
the authors' loss definitions the discriminator sees DSLR and enhanced patches mixed by random
swaps; under the seed's it sees both, real and fake. `d_pretrain_iters` discriminator-only
iterations (phone = fake) come first. Two Adam optimizers, one learning rate.
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
from dped.models import discriminator_from_config, generator_from_config

# Terms normalised by the batch size (means): under a strategy each replica's share is scaled by
# local/global batch, so that the gradients summed over replicas equal the one-device gradients.
# The authors' texture and discriminator losses are sums over the batch: replicas' sums simply
# add up; the seed's are means like the rest.
MEAN_TERMS = {
    "original": ("content", "color", "tv", "d_accuracy"),
    "seed": ("content", "color", "tv", "texture", "discriminator", "d_accuracy"),
}


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
                self.discriminator = discriminator_from_config(cfg)
                self.vgg = vgg.build_vgg(vgg_weights, cfg.content_layer)
                self.g_optimizer = keras.optimizers.Adam(
                    cfg.learning_rate, epsilon=cfg.adam_epsilon
                )
                self.d_optimizer = keras.optimizers.Adam(
                    cfg.learning_rate, epsilon=cfg.adam_epsilon
                )
                # Keras 3 builds slots lazily: build now, so that restoring a checkpoint keeps
                # them and a strategy does not create variables inside the traced step.
                self.g_optimizer.build(self.generator.trainable_variables)
                self.d_optimizer.build(self.discriminator.trainable_variables)
        finally:
            keras.mixed_precision.set_global_policy(previous)
        if cfg.init_checkpoint:
            from dped.pretrained import load_weights

            seed_d = cfg.discriminator == "seed"
            load_weights(
                cfg.init_checkpoint, self.generator, self.discriminator if seed_d else None
            )
        self.blur_kernel = losses.gauss_kernel(cfg.blur_size, cfg.blur_nsig)
        self.swaps = tf.random.Generator.from_seed(cfg.seed)
        self.mean_terms = MEAN_TERMS[cfg.loss_defs]

    def _swap(self, batch: tf.Tensor) -> tf.Tensor:
        return self.swaps.uniform([batch], 0, 2, dtype=tf.int32)

    def judge(self, images: tf.Tensor, training: bool = False) -> tf.Tensor:
        """The discriminator's output on 0..1 RGB patches (it sees their grayscale)."""
        return self.discriminator(losses.to_gray(images), training=training)

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
        content = losses.content_loss(self.vgg(enhanced, training=False), dslr_features)
        if self.cfg.loss_defs == "seed":
            terms = {
                "content": content,
                "color": losses.color_loss_seed(enhanced, dslr, self.blur_kernel),
                "texture": losses.texture_loss_seed(
                    losses.dslr_logit(self.judge(dslr)), losses.dslr_logit(self.judge(enhanced))
                ),
                "tv": losses.total_variation_l1(enhanced),
            }
        else:
            if is_dslr is None:
                is_dslr = self._swap(tf.shape(phone)[0])
            probs = losses.as_probs(
                self.discriminator(losses.discriminator_input(enhanced, dslr, is_dslr))
            )
            terms = {
                "content": content,
                "color": losses.color_loss(enhanced, dslr, self.blur_kernel),
                "texture": losses.texture_loss(probs, is_dslr),
                "tv": losses.total_variation_loss(enhanced),
            }
        terms["generator"] = losses.weighted_sum(terms, self.cfg)
        return terms, enhanced

    def discriminator_terms(self, fake, dslr, is_dslr=None, training=False):
        """{discriminator, d_accuracy} with `fake` as the enhanced (or phone) side."""
        if self.cfg.loss_defs == "seed":
            real_logit = losses.dslr_logit(self.judge(dslr, training))
            fake_logit = losses.dslr_logit(self.judge(fake, training))
            return {
                "discriminator": losses.discriminator_loss_seed(real_logit, fake_logit),
                "d_accuracy": losses.logit_accuracy(real_logit, fake_logit),
            }
        if is_dslr is None:
            is_dslr = self._swap(tf.shape(fake)[0])
        gray = losses.discriminator_input(fake, dslr, is_dslr)
        probs = losses.as_probs(self.discriminator(gray, training=training))
        return {
            "discriminator": losses.discriminator_loss(probs, is_dslr),
            "d_accuracy": losses.discriminator_accuracy(probs, is_dslr),
        }

    def _d_step(self, fake, dslr, d_swap, share):
        d_vars = self.discriminator.trainable_variables
        with tf.GradientTape() as tape:
            terms = self.discriminator_terms(tf.stop_gradient(fake), dslr, d_swap, training=True)
            terms = {k: v * share if k in self.mean_terms else v for k, v in terms.items()}
        self.d_optimizer.apply_gradients(zip(tape.gradient(terms["discriminator"], d_vars), d_vars))
        return terms

    def _replica_step(self, phone, dslr, g_swap, d_swap, global_batch):
        share = tf.cast(tf.shape(phone)[0], tf.float32) / tf.cast(global_batch, tf.float32)
        # DSLR features do not depend on any trained weight: keep them off the tape.
        dslr_features = tf.stop_gradient(self.vgg(dslr, training=False))
        g_vars = self.generator.trainable_variables
        with tf.GradientTape() as tape:
            terms, enhanced = self.loss_terms(phone, dslr, dslr_features, g_swap, training=True)
            terms = {k: v * share if k in self.mean_terms else v for k, v in terms.items()}
            terms["generator"] = losses.weighted_sum(terms, self.cfg)
        self.g_optimizer.apply_gradients(zip(tape.gradient(terms["generator"], g_vars), g_vars))
        if self.cfg.d_fake == "re-enhanced":
            enhanced = self.generator(phone, training=False)
        return {**terms, **self._d_step(enhanced, dslr, d_swap, share)}

    def _pretrain_replica_step(self, phone, dslr, d_swap, global_batch):
        share = tf.cast(tf.shape(phone)[0], tf.float32) / tf.cast(global_batch, tf.float32)
        return self._d_step(phone, dslr, d_swap, share)

    def _run(self, step_fn, *batch):
        """step_fn(*batch, global_batch=...) on one device, or split over the replicas."""
        size = tf.shape(batch[0])[0]
        replicas = self.strategy.num_replicas_in_sync
        if replicas == 1:
            return step_fn(*batch, global_batch=size)

        def replica_fn(*full):
            # Every replica receives the whole batch and takes its own contiguous shard.
            part = size // replicas
            i = tf.distribute.get_replica_context().replica_id_in_sync_group
            return step_fn(*[t[i * part : (i + 1) * part] for t in full], global_batch=size)

        per_replica = self.strategy.run(replica_fn, args=batch)
        sum_ = tf.distribute.ReduceOp.SUM
        return {k: self.strategy.reduce(sum_, v, axis=None) for k, v in per_replica.items()}

    @tf.function
    def train_step(self, phone: tf.Tensor, dslr: tf.Tensor) -> dict[str, tf.Tensor]:
        """One iteration on a global batch; under a strategy the batch is split over replicas."""
        batch = tf.shape(phone)[0]
        # Swaps are drawn for the whole batch, so the result does not depend on the replica count.
        g_swap, d_swap = self._swap(batch), self._swap(batch)
        return self._run(self._replica_step, phone, dslr, g_swap, d_swap)

    @tf.function
    def pretrain_step(self, phone: tf.Tensor, dslr: tf.Tensor) -> dict[str, tf.Tensor]:
        """One discriminator-only iteration: the phone batch as the fake side."""
        return self._run(self._pretrain_replica_step, phone, dslr, self._swap(tf.shape(phone)[0]))


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
    """One pass over the test patches: the metrics (both PSNR protocols, SSIM, MS-SSIM), the test
    loss terms (fixed alternating swaps) and the discriminator's accuracy on phone, DSLR and
    enhanced patches separately (the seed's test_discriminator)."""
    from dped.data import pair_dataset
    from dped.evaluation import PairMetrics

    acc, sums, count = PairMetrics(), {}, 0
    for phone, dslr in pair_dataset(split, cfg.replace(augment=False), training=False):
        n = int(phone.shape[0])
        is_dslr = tf.constant(np.arange(n) % 2, tf.int32)
        terms, enhanced = model.loss_terms(phone, dslr, is_dslr=is_dslr)
        terms.update(model.discriminator_terms(enhanced, dslr, is_dslr))
        for side, images, real in (
            ("phone", phone, 0),
            ("dslr", dslr, 1),
            ("enhanced", enhanced, 0),
        ):
            p_dslr = tf.sigmoid(losses.dslr_logit(model.judge(images)))[:, 0]
            terms[f"d_acc_{side}"] = tf.reduce_mean(
                tf.cast((p_dslr > 0.5) == bool(real), tf.float32)
            )
        acc.update(phone, enhanced, dslr)
        for k, v in terms.items():
            sums[k] = sums.get(k, 0.0) + n * float(v)
        count += n
    return {**acc.result(cfg.eval_protocol), **{f"test_{k}": v / count for k, v in sums.items()}}


def tensorboard_tag(key: str) -> str | None:
    """A metrics.csv column's TensorBoard tag, grouped by its prefix (train/, test/, metrics/);
    None for bookkeeping (step, patches, wall_s), which TensorBoard records or does not plot."""
    if key in ("step", "patches", "wall_s"):
        return None
    group, sep, term = key.partition("_")
    return f"{group}/{term}" if sep and group in ("train", "test") else f"metrics/{key}"


class Run:
    """A training run's state on disk: checkpoint managers, metrics rows, optional TensorBoard."""

    def __init__(self, run_dir: Path, model: DPEDModel, iterator, cfg: Config, resume: bool):
        from dped import runs

        self.dir, self.cfg = run_dir, cfg
        self.step = tf.Variable(0, dtype=tf.int64, name="step")
        self.pretrained = tf.Variable(0, dtype=tf.int64, name="d_pretrained")
        self.checkpoint = tf.train.Checkpoint(
            d_pretrained=self.pretrained,
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
            print(f"{cfg.name}: resumed at step {done} from {self.latest.latest_checkpoint}")
        self.best_psnr = max((float(r["psnr"]) for r in self.rows), default=-np.inf)
        elapsed = float(self.rows[-1]["wall_s"]) if self.rows else 0.0
        self.start = time.perf_counter() - elapsed
        # Events in the run folder itself: `tensorboard --logdir results/<experiment>` then
        # names each run after its folder.
        self.writer = tf.summary.create_file_writer(str(run_dir)) if cfg.tensorboard else None

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
                    if tensorboard_tag(key):
                        tf.summary.scalar(tensorboard_tag(key), value, step=step)
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
    from dped import data, runs

    if cfg.tensorboard and importlib.util.find_spec("tensorboard") is None:
        raise ValueError(
            "tensorboard: true needs the tensorboard package: "
            "pip install 'dped[tensorboard]' (or set tensorboard: false)"
        )
    if cfg.deterministic:
        tf.config.experimental.enable_op_determinism()
    run_dir = Path(out or Path("results") / cfg.name)
    runs.check(run_dir, cfg, resume)
    files = data.load_files(cfg)
    model = DPEDModel(cfg)
    replicas = model.strategy.num_replicas_in_sync
    if cfg.batch_size % replicas:
        raise ValueError(
            f"batch_size {cfg.batch_size} must be a multiple of the {replicas} replicas"
        )
    with runs.lock(run_dir):  # before prepare: a second trainer must not rewrite the folder
        runs.prepare(run_dir, cfg, resume, model.vgg_random)
        try:
            _loop(cfg, model, files, run_dir, resume, progress)
        except tf.errors.OpError as err:
            # A file removed or rewritten under the run (a dataset rebuilt, a disk cleaned)
            # surfaces as a bare TensorFlow error: name the files instead.
            raise data.stream_error(files, err, run_dir) from None
    return run_dir


def _pretrain(model: DPEDModel, iterator, run: Run, cfg: Config, progress: bool) -> None:
    """The discriminator alone (phone = fake, DSLR = real), then a checkpoint (number 0): a
    resume after it goes straight to joint training; one killed during it starts it again."""
    from tqdm import tqdm

    run.pretrained.assign(0)
    bar = tqdm(
        range(cfg.d_pretrain_iters),
        desc=f"{cfg.name}: discriminator pre-training",
        disable=None if progress else True,
    )
    for _ in bar:
        phone, dslr = next(iterator)
        logs = model.pretrain_step(phone, dslr)
        bar.set_postfix(
            loss=f"{float(logs['discriminator']):.4g}", acc=f"{float(logs['d_accuracy']):.2f}"
        )
    run.pretrained.assign(cfg.d_pretrain_iters)
    run.latest.save(checkpoint_number=0)


def _loop(cfg: Config, model: DPEDModel, files, run_dir: Path, resume: bool, progress: bool):
    from tqdm import tqdm

    from dped import data

    train_split = data.subsample(files.train, cfg.train_size, cfg.seed)
    iterator = iter(data.pair_dataset(train_split, cfg, training=True))
    run = Run(run_dir, model, iterator, cfg, resume)
    if int(run.pretrained.numpy()) < cfg.d_pretrain_iters:
        _pretrain(model, iterator, run, cfg, progress)
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
