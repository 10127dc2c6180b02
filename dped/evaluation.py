"""Evaluation on the test patches: PSNR, SSIM and MS-SSIM of enhanced (or phone) vs DSLR."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from dped.config import Config
from dped.data import Split, pair_dataset


def evaluate_pairs(split: Split, cfg: Config, enhance: Callable | None = None) -> dict[str, float]:
    """Metrics over every test pair; `enhance=None` scores the phone patches themselves.

    PSNR comes from the MSE over all patches; SSIM and MS-SSIM are means of per-patch values,
    so no number depends on the batch size. Enhanced images are clipped to 0..1 first, as when
    they are written.
    """
    from dped import metrics

    sums = {"mse": 0.0, "ssim": 0.0, "ms_ssim": 0.0}
    count = 0
    for phone, dslr in pair_dataset(split, cfg.replace(augment=False), training=False):
        enhanced = phone if enhance is None else np.clip(enhance(phone), 0.0, 1.0)
        n = int(phone.shape[0])
        sums["mse"] += n * float(np.mean((np.asarray(enhanced) - dslr.numpy()) ** 2))
        for i in range(n):
            sums["ssim"] += float(metrics.ssim(enhanced[i : i + 1], dslr[i : i + 1]))
            sums["ms_ssim"] += float(metrics.ms_ssim(enhanced[i : i + 1], dslr[i : i + 1]))
        count += n
    mse = sums["mse"] / count
    return {
        "psnr": float(10 * np.log10(1.0 / mse)),
        "ssim": sums["ssim"] / count,
        "ms_ssim": sums["ms_ssim"] / count,
        "patches": count,
    }
