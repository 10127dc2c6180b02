"""Measure each loss term at initialisation, the basis of the `readme` preset's loss weights.

`python -m dped.calibrate [--set key=value ...]` prints, for the `paper`, `readme` and `seed`
generators (each with its own loss definitions) at initialisation, the magnitude of each term and its weighted value, both at initialisation and for the
identity mapping (enhanced = phone),, averaged over a few seeded
batches of 100x100 patches cut from matplotlib's grace_hopper.jpg photo (the DSLR side) and a
darker, softer, less saturated copy of it (the phone side).
"""

from __future__ import annotations

import argparse

import numpy as np

from dped.config import Config, parse_override, preset

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
    identity = lambda phone: phone  # noqa: E731
    sums = {"init": dict.fromkeys(TERMS, 0.0), "identity": dict.fromkeys(TERMS, 0.0)}
    for b in range(batches):
        phone, dslr = sample_batch(cfg.batch_size, cfg.patch_size, cfg.seed + b)
        for where, enhance in (("init", None), ("identity", identity)):
            terms, _ = model.loss_terms(phone, dslr, enhance=enhance)
            for k in TERMS:
                sums[where][k] += abs(float(terms[k])) / batches
    return sums


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a config key of both presets (e.g. vgg_weights=random)",
    )
    parser.add_argument("--batches", type=int, default=3)
    args = parser.parse_args(argv)
    overrides = dict(parse_override(s) for s in args.set)
    print(
        f"{'preset':6} {'term':8} {'|init|':>10} {'|identity|':>10} {'weight':>8} "
        f"{'w*|init|':>10} {'w*|identity|':>12}"
    )
    for name in ("paper", "readme", "seed"):
        cfg = preset(name).replace(**overrides)
        values = measure(cfg, args.batches)
        for term in TERMS:
            w, a, b = getattr(cfg, f"w_{term}"), values["init"][term], values["identity"][term]
            print(f"{name:6} {term:8} {a:10.4g} {b:10.4g} {w:8.4g} {w * a:10.4g} {w * b:12.4g}")
    print(f"(vgg_weights={cfg.vgg_weights}, batch {cfg.batch_size}, {args.batches} batches)")


if __name__ == "__main__":
    main()
