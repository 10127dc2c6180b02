"""Figures drawn from runs' metrics.csv files (pandas + matplotlib; no TensorFlow)."""

from __future__ import annotations

from pathlib import Path

import pandas as pd


def psnr_curves(
    run_dirs: dict[str, str | Path],
    baseline_psnr: float | None = None,
    out: str | Path | None = None,
):
    """Test PSNR against iteration for each run, with the identity baseline as a dashed line."""
    import matplotlib

    matplotlib.use("Agg") if out else None
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.5, 4))
    for label, run in run_dirs.items():
        metrics = pd.read_csv(Path(run) / "metrics.csv")
        ax.plot(metrics["step"], metrics["psnr"], marker="o", label=label)
    if baseline_psnr is not None:
        ax.axhline(
            baseline_psnr, ls="--", c="gray", label=f"identity baseline {baseline_psnr:.2f} dB"
        )
        ax.axhline(baseline_psnr + 2, ls=":", c="gray", label="baseline + 2 dB")
    ax.set(xlabel="iteration", ylabel="test PSNR (dB)", title="DPED on the mini dataset")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    if out:
        fig.savefig(out, dpi=110)
    return fig
