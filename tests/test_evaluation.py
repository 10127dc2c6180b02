import numpy as np
import pytest

from dped.evaluation import PairMetrics, patch_psnr


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
