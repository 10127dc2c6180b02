"""Each loss term's magnitude at initialisation, the basis of the `readme` preset's weights.

`measure` gives, for one config's generator under its own loss definitions, the magnitude of
each term at initialisation and for the identity mapping (enhanced = phone), averaged over a few
seeded batches of patches cut from matplotlib's grace_hopper.jpg photo (the DSLR side) and a
darker, softer, less saturated copy of it (the phone side). `table` lays several configs side by
side with the weighted values; `dped calibrate` prints it, notebook 01 shows it.
"""

from __future__ import annotations

import numpy as np

from dped.config import Config

TERMS = ("content", "color", "texture", "tv")


def sample_batch(batch: int, patch: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(phone, dslr) patches [B, patch, patch, 3] in 0..1 from a photo that ships with matplotlib."""
    import imageio.v3 as iio
    import matplotlib

    photo = iio.imread(matplotlib.get_data_path() + "/sample_data/grace_hopper.jpg")
    photo = photo.astype(np.float32) / 255.0
    rng = np.random.default_rng(seed)
    rows = rng.integers(0, photo.shape[0] - patch, batch)
    cols = rng.integers(0, photo.shape[1] - patch, batch)
    dslr = np.stack([photo[r : r + patch, c : c + patch] for r, c in zip(rows, cols)])
    gray = dslr.mean(-1, keepdims=True)
    phone = 0.85 * (0.6 * dslr + 0.4 * gray) ** 1.3  # darker, flatter, desaturated
    return phone.astype(np.float32), dslr


def measure(cfg: Config, batches: int = 3) -> dict[str, dict[str, float]]:
    """Mean |term| over `batches` seeded batches: {'init': generator at initialisation,
    'identity': the phone patch itself as the enhanced image (where useful training starts)}."""
    from dped.training import DPEDModel

    model = DPEDModel(cfg)
    sums = {"init": dict.fromkeys(TERMS, 0.0), "identity": dict.fromkeys(TERMS, 0.0)}
    for b in range(batches):
        phone, dslr = sample_batch(cfg.batch_size, cfg.patch_size, cfg.seed + b)
        swaps = model._swap(cfg.batch_size)
        for where, enhanced in (("init", model.generator(phone)), ("identity", phone)):
            critic = model.critic(enhanced, dslr, swaps)
            terms = model.generator_terms(enhanced, dslr, critic, swaps)
            for k in TERMS:
                sums[where][k] += abs(float(terms[k])) / batches
    return sums


def table(configs: dict[str, Config], batches: int = 3):
    """A pandas table, one row per (config name, term): |term| and weight * |term| at
    initialisation and for the identity mapping."""
    import pandas as pd

    rows = []
    for name, cfg in configs.items():
        values = measure(cfg, batches)
        for term in TERMS:
            w = getattr(cfg, f"w_{term}")
            row = {"preset": name, "term": term, "weight": w}
            for where in ("init", "identity"):
                row[f"|{where}|"] = values[where][term]
                row[f"w*|{where}|"] = w * values[where][term]
            rows.append(row)
    return pd.DataFrame(rows).set_index(["preset", "term"])
