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
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf

from dped import losses, vgg
from dped.config import Config
from dped.models import discriminator_from_config, generator_from_config


def make_strategy(kind: str) -> tf.distribute.Strategy:
    """`default`: one device; `mirrored`: all GPUs of this machine; `multiworker`: TF_CONFIG."""
    if kind == "mirrored":
        return tf.distribute.MirroredStrategy()
    if kind == "multiworker":
        return tf.distribute.MultiWorkerMirroredStrategy()
    return tf.distribute.get_strategy()


def compute_precision(precision: str) -> str:
    """The Keras policy a run computes in. `auto`: mixed_bfloat16 on a CPU-only machine whose
    CPU computes bfloat16 natively (AVX512_BF16, AMX), float32 elsewhere: emulated bfloat16 is
    slower than float32 (make bench, training section, measures both)."""
    if precision != "auto":
        return precision
    from dped.inference.graphs import bfloat16_native

    native = bfloat16_native() and not tf.config.list_physical_devices("GPU")
    return "mixed_bfloat16" if native else "float32"


class DPEDModel(tf.Module):
    """Generator, discriminator, frozen VGG-19 and both optimizers; `train_step` returns named losses."""

    def __init__(self, cfg: Config, strategy: tf.distribute.Strategy | None = None):
        super().__init__(name="dped")
        self.cfg = cfg
        self.strategy = strategy or make_strategy(cfg.strategy)
        keras.utils.set_random_seed(cfg.seed)
        # One VGG-19 for every run, whatever its seed: at full scale every seed reads the same
        # ImageNet file, so random weights must not vary with the training seed either.
        vgg_weights, self.vgg_random = vgg.load_weights(cfg.vgg_weights)
        self.precision = compute_precision(cfg.precision)
        # The policy applies to layers built under it; restore it so nothing else is affected.
        previous = keras.mixed_precision.global_policy()
        keras.mixed_precision.set_global_policy(self.precision)
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
            from dped.pretrained import load_checkpoint_weights

            seed_d = cfg.discriminator == "seed"
            load_checkpoint_weights(
                cfg.init_checkpoint, self.generator, self.discriminator if seed_d else None
            )
        self.blur_kernel = losses.gauss_kernel(cfg.blur_size, cfg.blur_nsig)
        self.swaps = tf.random.Generator.from_seed(cfg.seed)
        # Chosen once: no method below asks which recipe it serves.
        self.losses = losses.LOSS_SETS[cfg.loss_defs]
        # Terms normalised by the batch size (means): under a strategy each replica's share is
        # scaled by local/global batch, so that the gradients summed over replicas equal the
        # one-device gradients; sums over the batch simply add up.
        self.mean_terms = self.losses.mean_terms

    def _swap(self, batch: tf.Tensor) -> tf.Tensor:
        return self.swaps.uniform([batch], 0, 2, dtype=tf.int32)

    def judge(self, images: tf.Tensor, training: bool = False) -> tf.Tensor:
        """The discriminator's output on 0..1 RGB patches (it sees their grayscale)."""
        return self.discriminator(losses.to_gray(images), training=training)

    def critic(self, enhanced, dslr, is_dslr, training=False):
        """The discriminator's verdicts both adversarial terms read (the loss set's)."""
        return self.losses.critic(self.discriminator, enhanced, dslr, is_dslr, training)

    def generator_terms(self, enhanced, dslr, critic, is_dslr, dslr_features=None) -> dict:
        """{content, color, texture, tv} of an enhanced batch, unweighted."""
        if dslr_features is None:
            dslr_features = self.vgg(dslr, training=False)
        content = losses.content_loss(self.vgg(enhanced, training=False), dslr_features)
        terms = self.losses.generator_terms(enhanced, dslr, critic, is_dslr, self.blur_kernel)
        return {"content": content, **terms}

    @tf.function(reduce_retracing=True)
    def enhance(self, phone) -> tf.Tensor:
        """The generator at inference, as a graph (evaluation.batch_terms says why)."""
        return self.generator(phone, training=False)

    def _share(self, terms: dict, share) -> dict:
        return {k: v * share if k in self.mean_terms else v for k, v in terms.items()}

    def _d_step(self, fake, dslr, d_swap, share):
        d_vars = self.discriminator.trainable_variables
        with tf.GradientTape() as tape:
            critic = self.critic(tf.stop_gradient(fake), dslr, d_swap, training=True)
            terms = self._share(self.losses.adversarial_terms(critic, d_swap), share)
        self.d_optimizer.apply_gradients(zip(tape.gradient(terms["discriminator"], d_vars), d_vars))
        return terms

    def _replica_step(self, phone, dslr, g_swap, d_swap, global_batch):
        share = tf.cast(tf.shape(phone)[0], tf.float32) / tf.cast(global_batch, tf.float32)
        # DSLR features do not depend on any trained weight: keep them off the tape.
        dslr_features = tf.stop_gradient(self.vgg(dslr, training=False))
        g_vars = self.generator.trainable_variables
        with tf.GradientTape() as tape:
            enhanced = self.generator(phone, training=True)
            critic = self.critic(enhanced, dslr, g_swap)
            terms = self.generator_terms(enhanced, dslr, critic, g_swap, dslr_features)
            terms = self._share(terms, share)
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


def _check_finite(logs: dict, step: int, run_dir: Path) -> None:
    for name, value in logs.items():
        if not np.isfinite(value):
            raise TrainingError(
                f"step {step}: loss term '{name}' is {value}; training stopped, "
                f"{_kept(Path(run_dir))} (lower learning_rate or check the data)"
            )


def _kept(run_dir: Path) -> str:
    """What a stopped run leaves to resume from, naming only folders that exist."""
    checkpoints = run_dir / "checkpoints"
    if checkpoints.is_dir() and any(checkpoints.glob("*.index")):
        return f"the last good checkpoint is kept in {checkpoints}"
    return f"before its first checkpoint: {run_dir} holds no weights to resume from"


def train(
    cfg: Config, out: str | Path | None = None, resume: bool = False, progress: bool = True
) -> Path:
    """Train (or resume) a run; returns its folder (dped/runs.py says what it holds)."""
    from dped import data, runs

    _check_can_log(cfg)
    if cfg.deterministic:
        tf.config.experimental.enable_op_determinism()
    run_dir = Path(out or Path("results") / cfg.name)
    runs.check(run_dir, cfg, resume)
    files = data.load_files(cfg)
    model = DPEDModel(cfg)
    _check_batch_splits(cfg, model.strategy)
    with runs.lock(run_dir):  # before prepare: a second trainer must not rewrite the folder
        runs.prepare(run_dir, cfg, resume, model.vgg_random, model.precision)
        try:
            _loop(cfg, model, files, run_dir, resume, progress)
        except tf.errors.OpError as err:
            # A file removed or rewritten under the run (a dataset rebuilt, a disk cleaned)
            # surfaces as a bare TensorFlow error: name the files instead.
            raise data.stream_error(files, err, run_dir) from None
    return run_dir


def _check_can_log(cfg: Config) -> None:
    if cfg.tensorboard and importlib.util.find_spec("tensorboard") is None:
        raise ValueError(
            "tensorboard: true needs the tensorboard package: "
            "pip install 'dped[tensorboard]' (or set tensorboard: false)"
        )


def _check_batch_splits(cfg: Config, strategy: tf.distribute.Strategy) -> None:
    replicas = strategy.num_replicas_in_sync
    if cfg.batch_size % replicas:
        raise ValueError(
            f"batch_size {cfg.batch_size} must be a multiple of the {replicas} replicas"
        )


def _open_run(run_dir: Path, model: DPEDModel, iterator, cfg: Config, resume: bool):
    from dped.runs import Run

    return Run(
        run_dir,
        cfg,
        resume,
        generator=model.generator,
        discriminator=model.discriminator,
        g_optimizer=model.g_optimizer,
        d_optimizer=model.d_optimizer,
        swaps=model.swaps,
        data=iterator,
    )


def _pretrain(model: DPEDModel, iterator, run, cfg: Config, progress: bool) -> None:
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
    """Pre-train the discriminator if due, then train; every `eval_every` steps (and at the
    end) evaluate on the test patches and record the row, the samples and the checkpoints."""
    from tqdm import tqdm

    from dped import data
    from dped.evaluation import evaluate

    train_split = data.subsample(files.train, cfg.train_size, cfg.seed)
    iterator = iter(data.pair_dataset(train_split, cfg, training=True))
    run = _open_run(run_dir, model, iterator, cfg, resume)
    _record_identity(run_dir, files.test, cfg)
    if int(run.pretrained.numpy()) < cfg.d_pretrain_iters:
        _pretrain(model, iterator, run, cfg, progress)
    means = _RunningMeans()
    bar = tqdm(
        total=cfg.num_iters,
        initial=int(run.step.numpy()),
        desc=cfg.name,
        disable=None if progress else True,
    )
    while int(run.step.numpy()) < cfg.num_iters:
        logs = {k: float(v) for k, v in model.train_step(*next(iterator)).items()}
        step = int(run.step.assign_add(1).numpy())
        _check_finite(logs, step, run_dir)
        means.add(logs)
        bar.update(1)
        bar.set_postfix(generator=f"{logs['generator']:.4g}", d_acc=f"{logs['d_accuracy']:.2f}")
        if step % cfg.eval_every and step != cfg.num_iters:
            continue
        result = evaluate(model, files.test, cfg)
        row = {"step": step, **means.pop("train_"), **result.metrics}
        run.record(row, result.samples, result.patch_psnr)
        bar.write(
            f"step {step}: PSNR {result.metrics['psnr']:.2f} dB, "
            f"MS-SSIM {result.metrics['ms_ssim']:.4f}, "
            f"d_accuracy {result.metrics['test_d_accuracy']:.2f}"
        )
    bar.close()


def _record_identity(run_dir: Path, test, cfg: Config) -> None:
    """The identity baseline of this run's test set, kept with its results: the dataset it
    names can be rebuilt differently later."""
    import json

    from dped.evaluation import identity_metrics
    from dped.runs import IDENTITY_FILE, atomic_write

    path = run_dir / IDENTITY_FILE
    if not path.is_file():
        atomic_write(path, (json.dumps(identity_metrics(test, cfg), indent=1) + "\n").encode())


class _RunningMeans:
    """Means of the training losses since the last evaluation."""

    def __init__(self):
        self.sums, self.count = {}, 0

    def add(self, logs: dict[str, float]) -> None:
        self.sums = {k: self.sums.get(k, 0.0) + v for k, v in logs.items()}
        self.count += 1

    def pop(self, prefix: str) -> dict[str, float]:
        means = {f"{prefix}{k}": v / self.count for k, v in self.sums.items()}
        self.sums, self.count = {}, 0
        return means
