"""Evaluation on the test patches: PSNR, SSIM and MS-SSIM of enhanced (or phone) vs DSLR.

MS-SSIM is the mean over the patches where the original's formula is defined;
`ms_ssim_undefined` counts the others (NaN there: see `PairMetrics.update`).

Two PSNR protocols, both always reported:
- `psnr_mse` (the authors'): from the MSE over all patches, float images clipped to 0..1;
- `psnr_dslr_enhanced` / `psnr_phone_enhanced` (the seed's test_generator): the mean of
  per-patch PSNRs, 20 log10(255 / rmse) in float64, of the uint8 output against the uint8 DSLR
  (resp. phone) patch. The seed draws 200 random test patches with replacement; we use every
  test patch once, so the number does not depend on a draw.
`psnr` is the one `eval_protocol` names: the headline, and what picks the best checkpoint.

`evaluate` is the one pass a training run makes: metrics, test loss terms and the sample grid
from a single run of the generator (and of the discriminator on each side) per batch.
"""

from __future__ import annotations

import functools
import weakref
from dataclasses import dataclass

import numpy as np

from dped.config import Config
from dped.data import Split, pair_dataset

# Test patches per forward pass. Every number is a mean of per-patch values (the generator and
# the discriminator see each patch alone at inference; batch-summed loss terms are rescaled to a
# training batch), so this sets only the speed: at the cpu profile's small patches a pass over a
# training batch's few patches costs more in per-call overhead than in arithmetic.
EVAL_BATCH = 64
# The test loss terms (two VGG-19 passes and three discriminator passes per patch: several
# times the generator's cost) are diagnostics, read from the first TERM_PATCHES test patches,
# the same ones every evaluation; the metrics, the verdict, from every test patch.
TERM_PATCHES = 32
# Test patches cut from one photograph are not independent draws: neighbours share content, so a
# standard error that counts each patch as a draw understates the test set's noise (on the mini
# set, patch-pair differences: 1.4x with blocks of 2x2 patches, 2x with 4x4, growing further with
# larger blocks). Where the dataset says where each patch was cut (data.POSITIONS_FILE), the
# report also gives the standard error that counts each REGION_PX-square region of a photograph
# as one draw: a lower bound on the noise of another set of photographs, not an estimate of it.
REGION_PX = 96


def _to_uint8(images) -> np.ndarray:
    return np.rint(np.clip(np.asarray(images, np.float64), 0.0, 1.0) * 255.0)


def patch_psnr(a_u8: np.ndarray, b_u8: np.ndarray) -> np.ndarray:
    """Per-patch 20 log10(255 / rmse) of uint8-valued [B, H, W, C] arrays (100 where equal)."""
    rmse = np.sqrt(np.mean((a_u8 - b_u8) ** 2, axis=(1, 2, 3)))
    with np.errstate(divide="ignore"):
        return np.where(rmse == 0, 100.0, 20.0 * np.log10(255.0 / rmse))


@functools.cache
def _structural(shape: tuple[int, int, int]):
    """Per-patch SSIM and MS-SSIM of [B, *shape] batches as one graph (any B): eagerly, their
    hundreds of small ops cost more than the generator's pass over the same batch."""
    import tensorflow as tf

    from dped import metrics

    spec = tf.TensorSpec([None, *shape], tf.float32)

    @tf.function(input_signature=[spec, spec])
    def both(enhanced, dslr):
        return metrics.ssim_and_ms_ssim(enhanced, dslr, per_patch=True)

    return both


class PairMetrics:
    """Accumulates the metrics batch by batch, so one pass over the test set serves all."""

    def __init__(self):
        self.sums = dict.fromkeys(("mse", "ssim", "ms_ssim", "psnr_phone_enhanced"), 0.0)
        self.count, self.ms_ssim_undefined = 0, 0
        self.per_patch = []  # the DSLR PSNR of every patch, in test-set order
        # Per patch, PSNR minus the phone patch's own (the identity baseline's) PSNR: every
        # comparison is on the same patches, so its noise is this paired difference's.
        self.gains = []

    def update(self, phone, enhanced, dslr) -> None:
        enhanced = np.clip(np.asarray(enhanced), 0.0, 1.0)  # as when they are written
        dslr, n = np.asarray(dslr), int(enhanced.shape[0])
        self.sums["mse"] += n * float(np.mean((enhanced - dslr) ** 2))
        enhanced_u8, phone_u8, dslr_u8 = (_to_uint8(x) for x in (enhanced, phone, dslr))
        per_patch = patch_psnr(enhanced_u8, dslr_u8)
        self.per_patch.append(per_patch)
        self.gains.append(per_patch - patch_psnr(phone_u8, dslr_u8))
        self.sums["psnr_phone_enhanced"] += float(patch_psnr(enhanced_u8, phone_u8).sum())
        ssim, ms_ssim = _structural(enhanced.shape[1:])(enhanced, dslr.astype(np.float32))
        self.sums["ssim"] += float(np.sum(ssim))
        # The original's formula is NaN on a patch where a coarse scale's contrast term is
        # negative (a fractional power of it): a handful of flat patches. The mean is over the
        # patches where it is defined, and the others are counted, not left to make it NaN.
        ms_ssim = np.asarray(ms_ssim, np.float64)
        defined = ~np.isnan(ms_ssim)
        self.sums["ms_ssim"] += float(ms_ssim[defined].sum())
        self.ms_ssim_undefined += n - int(defined.sum())
        self.count += n

    def result(self, protocol: str = "original") -> dict[str, float]:
        means = {k: v / self.count for k, v in self.sums.items()}
        defined = self.count - self.ms_ssim_undefined
        means["ms_ssim"] = self.sums["ms_ssim"] / defined if defined else float("nan")
        per_patch, gains = np.concatenate(self.per_patch), np.concatenate(self.gains)
        means["psnr_dslr_enhanced"] = float(per_patch.mean())
        out = {"psnr_mse": float(10 * np.log10(1.0 / means.pop("mse"))), **means}
        out["psnr"] = out["psnr_mse" if protocol == "original" else "psnr_dslr_enhanced"]
        # The evaluation's own noise: how far another draw of as many patches could move the
        # seed protocol's mean, and its gain over the identity baseline on those patches (to
        # set beside the spread over training seeds).
        out["psnr_dslr_enhanced_se"] = standard_error(per_patch)
        out["psnr_gain_se"] = standard_error(gains)
        out["ms_ssim_undefined"] = self.ms_ssim_undefined
        return {"psnr": out.pop("psnr"), **out, "patches": self.count}


def ms_ssim_text(metrics: dict) -> str:
    """MS-SSIM as printed: '0.8406', or '0.8406 (7 of 1604 patches undefined)'."""
    undefined = int(metrics.get("ms_ssim_undefined", 0))
    note = f" ({undefined} of {metrics['patches']} patches undefined)" if undefined else ""
    return f"{metrics['ms_ssim']:.4f}{note}"


def standard_error(values, groups=None) -> float:
    """Of the mean of the values (0 for a single one). With `groups` (a label per value): the
    cluster-robust one, each group's summed deviations from the mean counted as one draw (with
    the small-sample factor G / (G - 1)); NaN with fewer than two groups."""
    values = np.asarray(values, np.float64)
    n = len(values)
    if n < 2:
        return 0.0
    if groups is None:
        return float(values.std(ddof=1) / np.sqrt(n))
    _, label = np.unique(np.asarray(groups), return_inverse=True)
    sums = np.bincount(label, weights=values - values.mean())
    if len(sums) < 2:
        return float("nan")
    return float(np.sqrt(len(sums) / (len(sums) - 1) * np.sum(sums**2)) / n)


def region_labels(positions: list[tuple[str, int, int]]) -> np.ndarray:
    """A label per test patch: the REGION_PX-square block of its photograph its corner is in."""
    keys = [(photo, row // REGION_PX, col // REGION_PX) for photo, row, col in positions]
    index = {key: i for i, key in enumerate(dict.fromkeys(keys))}
    return np.array([index[key] for key in keys])


@dataclass
class Evaluation:
    metrics: dict[str, float]  # PairMetrics' and test_<term> for every loss term
    samples: tuple[np.ndarray, np.ndarray, np.ndarray]  # phone, enhanced, DSLR: first patches
    # Every test patch's PSNR (the seed's protocol), in test-set order: two runs compared patch
    # by patch on the same test set leave out what the patches share (see verdicts.effects).
    patch_psnr: np.ndarray


def evaluate(model, split: Split, cfg: Config, samples: int = 4) -> Evaluation:
    """One pass over the test patches with a `training.DPEDModel`: the metrics (both PSNR
    protocols, SSIM, MS-SSIM) over all of them; the test loss terms (with fixed alternating
    swaps) and the discriminator's accuracy per side over the first TERM_PATCHES; and the first
    `samples` patches for the sample grid."""
    import tensorflow as tf

    acc, sums, count, grid = PairMetrics(), {}, 0, None
    for phone, dslr in _test_batches(split, cfg):
        k = min(int(phone.shape[0]), TERM_PATCHES - count)
        if k > 0:
            # Alternate sides by the patch's place in the test set, not in its batch.
            swaps = tf.constant((count + np.arange(k)) % 2, tf.int32)
            terms, enhanced = batch_terms(model, phone[:k], dslr[:k], swaps)
            sums = {name: sums.get(name, 0.0) + k * float(v) for name, v in terms.items()}
            count += k
            if k < phone.shape[0]:
                enhanced = tf.concat([enhanced, model.enhance(phone[k:])], axis=0)
        else:
            enhanced = model.enhance(phone)
        acc.update(phone, enhanced, dslr)
        if grid is None:
            grid = tuple(np.asarray(t[:samples]) for t in (phone, enhanced, dslr))
    metrics = {**acc.result(cfg.eval_protocol), **{f"test_{k}": v / count for k, v in sums.items()}}
    return Evaluation(metrics, grid, np.concatenate(acc.per_patch))


def batch_terms(model, phone, dslr, is_dslr) -> tuple[dict, object]:
    """Every loss term of a batch at inference (as for a training batch of `batch_size`
    patches), the discriminator's accuracy on phone, DSLR and enhanced patches apart (the
    seed's test_discriminator), and the enhanced batch, for a `training.DPEDModel`."""
    return _test_graph(model)(phone, dslr, is_dslr)


# One graph per model for every test batch (the last, smaller one included): run eagerly, each
# batch's dozens of layer calls cost more than their arithmetic at patch sizes of the cpu profile.
_TEST_GRAPHS = weakref.WeakKeyDictionary()


def _test_graph(model):
    if model not in _TEST_GRAPHS:
        import tensorflow as tf

        ref = weakref.ref(model)  # the graph must not keep its model alive
        graph = lambda *batch: _terms(ref(), *batch)  # noqa: E731
        _TEST_GRAPHS[model] = tf.function(graph, reduce_retracing=True)
    return _TEST_GRAPHS[model]


def _terms(model, phone, dslr, is_dslr):
    import tensorflow as tf

    from dped import losses

    enhanced = model.generator(phone, training=False)
    sides = {"phone": phone, "dslr": dslr, "enhanced": enhanced}
    out = {side: model.judge(images) for side, images in sides.items()}
    critic = model.losses.test_critic(out, is_dslr)
    terms = model.generator_terms(enhanced, dslr, critic, is_dslr)
    terms.update(model.losses.adversarial_terms(critic, is_dslr))
    # The authors' texture and discriminator losses sum over the batch: rescale them to a
    # training batch, so that a test term means the same whatever batch evaluates it.
    scale = model.cfg.batch_size / tf.cast(tf.shape(phone)[0], tf.float32)
    terms = {k: v if k in model.mean_terms else v * scale for k, v in terms.items()}
    terms["generator"] = losses.weighted_sum(terms, model.cfg)
    for side, real in (("phone", False), ("dslr", True), ("enhanced", False)):
        said_dslr = losses.dslr_logit(out[side])[:, 0] > 0
        terms[f"d_acc_{side}"] = tf.reduce_mean(tf.cast(said_dslr == real, tf.float32))
    return terms, enhanced


def _test_batches(split: Split, cfg: Config):
    return pair_dataset(split, cfg.replace(augment=False, batch_size=EVAL_BATCH), training=False)


def identity_metrics(split: Split, cfg: Config) -> dict:
    """The metrics of the phone patches themselves against DSLR: what training must beat, and
    every patch's PSNR (`patch_psnr`, the seed's protocol, in test-set order: a run's gain over
    it patch by patch is what the report's region standard error needs).

    SSIM and MS-SSIM are means of per-patch values, so no number depends on the batch size.
    """
    acc = PairMetrics()
    for phone, dslr in _test_batches(split, cfg):
        acc.update(phone, phone, dslr)
    per_patch = [round(float(v), 4) for v in np.concatenate(acc.per_patch)]
    return {**acc.result(cfg.eval_protocol), "patch_psnr": per_patch}
