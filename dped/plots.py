"""Figures drawn from runs' metrics.csv files (pandas + matplotlib; no TensorFlow)."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

LOSS_TERMS = ("content", "color", "texture", "tv", "generator", "discriminator")


def read_metrics(run_dir: str | Path) -> pd.DataFrame:
    path = Path(run_dir) / "metrics.csv"
    if not path.is_file():
        raise FileNotFoundError(f"no metrics at {path}: train the run first (dped train)")
    return pd.read_csv(path)


def _save(fig, out: str | Path | None):
    fig.tight_layout()
    if out:
        fig.savefig(out, dpi=110)
    return fig


def psnr_curves(
    run_dirs: dict[str, str | Path],
    baseline_psnr: float | None = None,
    out: str | Path | None = None,
    title: str = "DPED on the mini dataset",
):
    """Test PSNR against iteration for each run, with the identity baseline as a dashed line."""
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.2))
    for label, run in run_dirs.items():
        metrics = read_metrics(run)
        ax.plot(metrics["step"], metrics["psnr"], marker="o", ms=3, label=label)
    if baseline_psnr is not None:
        ax.axhline(baseline_psnr, ls="--", c="gray", label=f"identity {baseline_psnr:.2f} dB")
        ax.axhline(baseline_psnr + 2, ls=":", c="gray", label="identity + 2 dB")
    ax.set(xlabel="iteration", ylabel="test PSNR (dB)", title=title)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return _save(fig, out)


def training_curves(run_dir: str | Path, out: str | Path | None = None):
    """One run: each train/test loss term, PSNR and MS-SSIM, discriminator accuracy."""
    import matplotlib.pyplot as plt

    m = read_metrics(run_dir)
    fig, axes = plt.subplots(3, 3, figsize=(12, 9), dpi=60)
    for ax, term in zip(axes.flat, LOSS_TERMS):
        ax.plot(m["step"], m[f"train_{term}"], label="train (mean since last eval)")
        if f"test_{term}" in m:
            ax.plot(m["step"], m[f"test_{term}"], label="test")
        ax.set(title=f"{term} loss", xlabel="iteration")
    axes.flat[0].legend(fontsize=8)
    for ax, (column, label) in zip(
        axes.flat[6:],
        [
            ("psnr", "test PSNR (dB)"),
            ("ms_ssim", "test MS-SSIM"),
            ("test_d_accuracy", "discriminator accuracy"),
        ],
    ):
        ax.plot(m["step"], m[column], marker="o", ms=3)
        if column == "test_d_accuracy":
            ax.plot(m["step"], m["train_d_accuracy"], marker="o", ms=3)
            ax.legend(["test", "train"], fontsize=8)
        ax.set(title=label, xlabel="iteration")
    for ax in axes.flat:
        ax.grid(alpha=0.3)
    return _save(fig, out)


def show_samples(run_dir: str | Path):
    """The latest before/after grid of a run (phone | enhanced | DSLR per row), as a JPEG for
    notebooks: a PNG of photographs would make each stored notebook ~0.6 MB."""
    import io

    import imageio.v3 as iio
    from IPython.display import Image

    grids = sorted((Path(run_dir) / "samples").glob("step_*.png"))
    if not grids:
        raise FileNotFoundError(f"no samples in {run_dir}/samples")
    buffer = io.BytesIO()
    iio.imwrite(buffer, iio.imread(grids[-1]), extension=".jpg", quality=85)
    return Image(data=buffer.getvalue(), format="jpeg")
