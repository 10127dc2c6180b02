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
    run_dirs: dict[str, list[str | Path]],
    baseline_psnr: float | None = None,
    out: str | Path | None = None,
    title: str = "DPED on the mini dataset",
    metric: str = "psnr_dslr_enhanced",
):
    """Test PSNR (`metric`, else the run's headline `psnr`) against iteration, one curve per run: the mean over its seeds' folders with
    error bars of +- one standard deviation (none with one seed); the identity baseline dashed."""
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 4.6))
    for label, folders in run_dirs.items():
        folders = [folders] if isinstance(folders, (str, Path)) else folders
        frames = [read_metrics(f) for f in folders]
        column = metric if all(metric in m for m in frames) else "psnr"
        steps = pd.concat([m[["step", column]] for m in frames])
        stats = steps.groupby("step")[column].agg(["mean", "std", "count"])
        seeds = int(stats["count"].max())
        ax.errorbar(
            stats.index,
            stats["mean"],
            yerr=stats["std"] if seeds > 1 else None,
            marker="o",
            ms=3,
            capsize=3,
            label=f"{label} ({seeds} seed{'s' * (seeds > 1)})",
        )
    if baseline_psnr is not None:
        ax.axhline(baseline_psnr, ls="--", c="gray", label=f"identity {baseline_psnr:.2f} dB")
    ax.set(xlabel="iteration", ylabel="test PSNR (dB)", title=title)
    ax.grid(alpha=0.3)
    # Outside the axes: a legend never covers a curve.
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    return _save(fig, out)


def training_curves(run_dir: str | Path, out: str | Path | None = None):
    """One run: each train/test loss term, PSNR (both protocols) and MS-SSIM, and the
    discriminator's accuracy on phone, DSLR and enhanced test patches."""
    import matplotlib.pyplot as plt

    m = read_metrics(run_dir)
    line = {"marker": "o", "ms": 3}  # markers: a run with one evaluation still shows its point
    fig, axes = plt.subplots(3, 3, figsize=(12, 9), dpi=60)
    for ax, term in zip(axes.flat, LOSS_TERMS):
        ax.plot(m["step"], m[f"train_{term}"], label="train (mean since last eval)", **line)
        if f"test_{term}" in m:
            ax.plot(m["step"], m[f"test_{term}"], label="test", **line)
        ax.set(title=f"{term} loss", xlabel="iteration")
    axes.flat[0].legend(fontsize=8)
    panels = [
        (
            "test PSNR (dB)",
            {
                "psnr_mse": "all patches' MSE",
                "psnr_dslr_enhanced": "dslr-enhanced",
                "psnr_phone_enhanced": "phone-enhanced",
            },
        ),
        ("test MS-SSIM / SSIM", {"ms_ssim": "MS-SSIM", "ssim": "SSIM"}),
        (
            "discriminator accuracy (test)",
            {
                "test_d_acc_phone": "phone",
                "test_d_acc_dslr": "DSLR",
                "test_d_acc_enhanced": "enhanced",
            },
        ),
    ]
    for ax, (title, columns) in zip(axes.flat[6:], panels):
        for column, label in columns.items():
            if column in m:
                ax.plot(m["step"], m[column], label=label, **line)
        ax.set(title=title, xlabel="iteration")
        ax.legend(fontsize=8)
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
