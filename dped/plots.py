"""Figures drawn from runs' metrics.csv files (pandas + matplotlib; no TensorFlow)."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from dped.runs import metrics_table

LOSS_TERMS = ("content", "color", "texture", "tv", "generator", "discriminator")


def _save(fig, out: str | Path | None, layout: bool = True):
    if layout:
        fig.tight_layout()
    if out:
        import io

        from dped.runs import atomic_write

        buffer = io.BytesIO()
        fig.savefig(buffer, dpi=110, format=Path(out).suffix.lstrip(".") or "png")
        atomic_write(Path(out), buffer.getvalue())
    return fig


def _label_axes(axes, used: int, ylabel: str) -> None:
    """Small multiples sharing x: hide the unused panels; label y in the first column, and x
    under the lowest panel of each column (with a shorter last row, some sit a row higher)."""
    columns = axes.shape[1]
    for i, ax in enumerate(axes.flat):
        if i >= used:
            ax.set_axis_off()
            continue
        if i % columns == 0:
            ax.set_ylabel(ylabel)
        if i + columns >= used:
            ax.tick_params(labelbottom=True)
            ax.set_xlabel("iteration")


def _panel_handles(axes) -> dict:
    """{label: handle} over every panel, first seen first: one legend for the whole figure."""
    handles = {}
    for ax in axes.flat:
        for handle, label in zip(*ax.get_legend_handles_labels()):
            handles.setdefault(label, handle)
    return handles


def curve_stats(folders: list[str | Path], metric: str = "psnr_dslr_enhanced") -> pd.DataFrame:
    """Per evaluation step: the mean, standard deviation and count over the runs' folders (one
    per seed) of `metric` (each run's headline `psnr` where it has no such column)."""
    frames = []
    for folder in folders:
        m = metrics_table(folder)
        frames.append(
            m[["step", metric if metric in m else "psnr"]].set_axis(["step", "v"], axis=1)
        )
    return pd.concat(frames).groupby("step")["v"].agg(["mean", "std", "count"])


def psnr_curves(
    run_dirs: dict[str, list[str | Path]],
    baseline_psnr: float | None = None,
    out: str | Path | None = None,
    title: str = "DPED on the mini dataset",
    metric: str = "psnr_dslr_enhanced",
    reference: str | None = None,
    columns: int = 4,
):
    """Test PSNR against iteration, one panel per run (small multiples: fifteen curves on one
    axes are unreadable): the mean over its seeds' folders with a band of +- one standard
    deviation, the identity baseline dashed, and the `reference` run (the experiment's
    baseline) in grey in every other panel, so each panel reads as "this run against that"."""
    import matplotlib.pyplot as plt

    stats = {
        label: curve_stats([f] if isinstance(f, (str, Path)) else f, metric)
        for label, f in run_dirs.items()
    }
    columns = min(columns, len(stats))  # one run (a spread over seeds): one panel, not a row
    rows = -(-len(stats) // columns)
    fig, axes = plt.subplots(
        rows,
        columns,
        figsize=(max(3.2 * columns, 5.0), 2.6 * rows + 0.6),
        sharex=True,
        sharey=True,
        squeeze=False,
    )
    for ax, (label, st) in zip(axes.flat, stats.items()):
        if reference in stats and label != reference:
            ref = stats[reference]
            ax.plot(ref.index, ref["mean"], c="0.6", lw=1.2, label=reference)
        seeds = int(st["count"].max())
        ax.plot(st.index, st["mean"], c="tab:blue", marker="o", ms=2.5, label="mean")
        if seeds > 1:
            ax.fill_between(
                st.index,
                st["mean"] - st["std"],
                st["mean"] + st["std"],
                color="tab:blue",
                alpha=0.25,
                lw=0,
                label="± 1 std over seeds",
            )
        if baseline_psnr is not None:
            ax.axhline(baseline_psnr, ls="--", c="k", lw=0.9, label="identity")
        ax.set_title(f"{label} ({seeds} seed{'s' * (seeds > 1)})", fontsize=9)
        ax.grid(alpha=0.3)
    _label_axes(axes, len(stats), "test PSNR (dB)")
    handles = _panel_handles(axes)
    if baseline_psnr is not None:
        handles[f"identity {baseline_psnr:.2f} dB"] = handles.pop("identity")
    fig.legend(
        handles.values(),
        handles.keys(),
        loc="lower center",
        ncol=len(handles),
        fontsize=8,
        frameon=False,
    )
    fig.suptitle(title, fontsize=11)
    fig.tight_layout(rect=(0, 0.05, 1, 1))
    return _save(fig, out, layout=False)


def effect_curves(
    curves: pd.DataFrame,
    tail_from: dict[str, int] | None = None,
    title: str = "effect of each change at every evaluation",
    out: str | Path | None = None,
    columns: int = 4,
):
    """One panel per change (`verdicts.effect_curves`): its effect against iteration, mean over
    seeds, with a band of +- two standard errors over seeds (the verdict's margin: where the
    band leaves zero, the verdict is 'helps' or 'hurts'), zero marked and the last stretch of
    iterations (`tail_from`, {run: first step}) shaded. Each panel has its own y scale: effects
    span from tenths of a dB to several dB."""
    import textwrap

    import matplotlib.pyplot as plt

    changes = list(dict.fromkeys(curves["run"]))
    rows = max(1, -(-len(changes) // columns))
    fig, axes = plt.subplots(
        rows, columns, figsize=(3.2 * columns, 2.7 * rows + 0.6), sharex=True, squeeze=False
    )
    for ax, run in zip(axes.flat, changes):
        c = curves[curves["run"] == run]
        margin = 2 * c["spread_db"].fillna(0) / c["seeds"] ** 0.5
        ax.axhline(0, c="k", lw=0.8)
        if tail_from and run in tail_from:
            ax.axvspan(tail_from[run], c["step"].max(), color="0.9", lw=0, label="last 30%")
        ax.fill_between(
            c["step"],
            c["effect_db"] - margin,
            c["effect_db"] + margin,
            color="tab:orange",
            alpha=0.3,
            lw=0,
            label="± 2 standard errors over seeds",
        )
        ax.plot(c["step"], c["effect_db"], c="tab:orange", marker="o", ms=2.5, label="mean")
        ax.set_title(textwrap.fill(c["modification"].iloc[0], 38), fontsize=8)
        ax.grid(alpha=0.3)
    _label_axes(axes, len(changes), "effect (dB)")
    if not changes:  # an experiment without `reverts` labels
        axes.flat[0].text(0.5, 0.5, "no run reverts a change of the baseline", ha="center")
    handles = _panel_handles(axes)
    fig.legend(
        handles.values(), handles.keys(), loc="lower center", ncol=3, fontsize=8, frameon=False
    )
    fig.suptitle(title + "\n> 0: the change helps the baseline", fontsize=10)
    fig.tight_layout(rect=(0, 0.05, 1, 1))
    return _save(fig, out, layout=False)


def effects_chart(table: pd.DataFrame, title: str, out: str | Path | None = None):
    """Each change's effect with +- one standard deviation over seeds as its error bar."""
    import textwrap

    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(10, 0.55 * len(table) + 1.8))
    if table.empty:  # an experiment without `reverts` labels has no effects to chart
        ax.text(0.5, 0.5, "no run reverts a change of the baseline", ha="center", va="center")
        ax.set_axis_off()
        return _save(fig, out)
    errors = table["spread_db"].fillna(0)
    # Wrapped labels: long ones would push the axes (and its title) off the figure. A bar of
    # one seed has no spread to draw: its label and a pale bar say so.
    labels = [
        textwrap.fill(f"{label} [{n} seed{'s' if n > 1 else ''}]", 40)
        for label, n in zip(table["modification"], table["seeds"])
    ]
    colors = ["tab:blue" if n > 1 else "lightsteelblue" for n in table["seeds"]]
    ax.barh(labels, table["effect_db"], xerr=errors, capsize=4, color=colors)
    ax.axvline(0, c="k", lw=0.8)
    ax.set(xlabel="PSNR(seed) - PSNR(seed with it reverted), dB  (> 0: the change helps)")
    ax.set_title(title, loc="left")
    ax.invert_yaxis()
    return _save(fig, out)


def training_curves(run_dir: str | Path, out: str | Path | None = None):
    """One run: each train/test loss term, PSNR (both protocols) and MS-SSIM, and the
    discriminator's accuracy on phone, DSLR and enhanced test patches."""
    import matplotlib.pyplot as plt

    m = metrics_table(run_dir)
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
