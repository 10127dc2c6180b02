import numpy as np
import pytest

from dped.evaluation import REGION_PX, PairMetrics, patch_psnr, region_labels, standard_error


def test_pair_metrics_give_the_per_patch_mean_and_its_standard_error_over_batches():
    rng = np.random.default_rng(0)
    dslr = rng.random((7, 12, 12, 3), dtype=np.float32)
    noise = rng.normal(0, np.linspace(0.02, 0.2, 7)[:, None, None, None], dslr.shape)
    enhanced = np.clip(dslr + noise, 0, 1).astype(np.float32)
    metrics = PairMetrics()
    for part in (slice(0, 4), slice(4, 7)):  # batches of unequal size
        metrics.update(dslr[part], enhanced[part], dslr[part])
    result = metrics.result("seed")
    as_u8 = lambda x: np.rint(np.float64(x) * 255.0)  # noqa: E731 (float64, as PairMetrics)
    per_patch = patch_psnr(as_u8(enhanced), as_u8(dslr))
    assert result["patches"] == 7
    assert result["psnr"] == pytest.approx(per_patch.mean(), rel=1e-12)
    want_se = per_patch.std(ddof=1) / np.sqrt(7)
    assert want_se > 0.5  # the noise levels differ: the patches' PSNRs spread
    assert result["psnr_dslr_enhanced_se"] == pytest.approx(want_se, rel=1e-9)


def test_the_gain_over_identity_has_the_paired_standard_error_over_patches():
    """Patches differ in difficulty much more than the gain differs between them: the SE of
    the gain (each patch's PSNR minus the phone patch's own) is the paired one, far below
    the SE of the PSNR itself."""
    rng = np.random.default_rng(1)
    dslr = rng.random((9, 12, 12, 3), dtype=np.float32)
    level = np.linspace(0.02, 0.2, 9)[:, None, None, None]
    noise = rng.normal(0, 1, dslr.shape)
    phone = np.clip(dslr + level * noise, 0, 1).astype(np.float32)
    enhanced = np.clip(dslr + 0.7 * level * noise + rng.normal(0, 0.002, dslr.shape), 0, 1)
    metrics = PairMetrics()
    for part in (slice(0, 5), slice(5, 9)):
        metrics.update(phone[part], enhanced[part].astype(np.float32), dslr[part])
    result = metrics.result("seed")
    as_u8 = lambda x: np.rint(np.clip(np.float64(x), 0, 1) * 255.0)  # noqa: E731
    gain = patch_psnr(as_u8(enhanced), as_u8(dslr)) - patch_psnr(as_u8(phone), as_u8(dslr))
    assert result["psnr_gain_se"] == pytest.approx(gain.std(ddof=1) / 3.0, rel=1e-9)
    assert result["psnr_gain_se"] < result["psnr_dslr_enhanced_se"] / 5


def test_ms_ssim_is_the_mean_where_defined_and_counts_the_patches_where_it_is_not():
    """The original's MS-SSIM is NaN on a patch whose coarse-scale contrast term is negative
    (here: an inverted coarse pattern): one such patch must not make the whole mean NaN."""
    from dped import metrics as formulas

    rng = np.random.default_rng(2)
    dslr = rng.random((4, 24, 24, 3)).astype(np.float32) * 0.2 + 0.4
    enhanced = np.clip(dslr + rng.normal(0, 0.02, dslr.shape), 0, 1).astype(np.float32)
    blocks = np.kron(np.indices((2, 2)).sum(0) % 2, np.ones((12, 12)))[..., None]
    dslr[3], enhanced[3] = 0.2 + 0.6 * blocks, 0.8 - 0.6 * blocks  # anti-correlated
    per_patch = formulas.ms_ssim(enhanced, dslr, per_patch=True).numpy()
    assert np.isnan(per_patch[3]) and not np.isnan(per_patch[:3]).any()
    metrics = PairMetrics()
    metrics.update(dslr, enhanced, dslr)
    result = metrics.result("seed")
    assert result["ms_ssim"] == pytest.approx(per_patch[:3].mean(), rel=1e-6)
    assert result["ms_ssim_undefined"] == 1 and result["patches"] == 4
    from dped.evaluation import ms_ssim_text

    assert ms_ssim_text(result).endswith("(1 of 4 patches undefined)")


@pytest.mark.parametrize("name", ["paper", "seed"])
def test_evaluation_numbers_do_not_depend_on_the_evaluation_batch(name, tmp_path, monkeypatch):
    """The authors' texture and discriminator losses sum over a batch: evaluated 7 patches at a
    time or 3 at a time (3 + 3 + 1), every reported number is the same, and the summed terms
    are those of a training batch (batch_size patches)."""
    from conftest import make_dataset

    from dped import data, evaluation
    from dped.config import preset
    from dped.training import DPEDModel

    base = make_dataset(tmp_path, n_test=7, size=24)
    cfg = preset(name).replace(
        **{k: getattr(base, k) for k in ("dataset_dir", "phone", "patch_size", "train_size")},
        batch_size=2,
        vgg_weights="random",
    )
    files = data.load_files(cfg)
    with pytest.warns(UserWarning, match="RANDOM weights"):
        model = DPEDModel(cfg)
    results = {}
    for batch in (7, 3):
        monkeypatch.setattr(evaluation, "EVAL_BATCH", batch)
        results[batch] = evaluation.evaluate(model, files.test, cfg).metrics
    assert results[7].keys() == results[3].keys()
    for key, value in results[7].items():
        assert results[3][key] == pytest.approx(value, rel=1e-5, abs=1e-6), key
    if name == "paper":  # a sum over 2 patches of a per-patch term: not its mean over 7
        assert "texture" not in model.mean_terms
    # Loss terms from the first batch only: the metrics still cover every patch, unchanged.
    monkeypatch.setattr(evaluation, "TERM_PATCHES", 3)
    fewer = evaluation.evaluate(model, files.test, cfg).metrics
    assert fewer["patches"] == 7
    for key, value in results[7].items():
        if not key.startswith("test_"):
            assert fewer[key] == pytest.approx(value, rel=1e-5, abs=1e-6), key
    # Fewer than a batch: the first batch is split, terms from its first 2 patches (as when the
    # batches hold 2), the enhanced patches of the rest joined on in order.
    monkeypatch.setattr(evaluation, "TERM_PATCHES", 2)
    split = evaluation.evaluate(model, files.test, cfg).metrics
    monkeypatch.setattr(evaluation, "EVAL_BATCH", 2)
    whole = evaluation.evaluate(model, files.test, cfg).metrics
    assert split.keys() == whole.keys()
    for key, value in whole.items():
        assert split[key] == pytest.approx(value, rel=1e-5, abs=1e-6), key
    for key, value in results[7].items():
        if not key.startswith("test_"):
            assert split[key] == pytest.approx(value, rel=1e-5, abs=1e-6), key


def test_the_standard_error_over_groups_counts_a_group_of_equal_values_as_one_draw():
    rng = np.random.default_rng(4)
    values = rng.normal(0, 1, 12)
    singletons = standard_error(values, np.arange(12))
    assert singletons == pytest.approx(values.std(ddof=1) / np.sqrt(12), rel=1e-12)
    assert standard_error(values) == pytest.approx(singletons, rel=1e-12)
    groups = rng.normal(0, 1, 4)
    repeated = np.repeat(groups, 3)  # 4 groups of 3 equal values: 4 draws, not 12
    assert standard_error(repeated, np.repeat([7, 1, 3, 9], 3)) == pytest.approx(
        groups.std(ddof=1) / 2.0, rel=1e-12
    )
    assert standard_error(repeated) < standard_error(repeated, np.repeat(np.arange(4), 3)) / 1.5
    assert np.isnan(standard_error(values, np.zeros(12)))  # one group: nothing to compare
    assert standard_error(values[:1]) == 0.0


def test_region_labels_group_patches_by_photograph_and_block():
    r = REGION_PX
    positions = [("a", 0, 0), ("a", 0, r - 24), ("a", 0, r), ("b", 0, 0), ("a", r - 1, 5)]
    labels = region_labels(positions)
    assert labels[0] == labels[1] == labels[4]
    assert len({labels[0], labels[2], labels[3]}) == 3
