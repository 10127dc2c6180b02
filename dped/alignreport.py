"""`dped align`'s report: a table per build (CSV and markdown, a row per photo pair) and a figure
per pair that a person can judge at a glance: the phone photo and the DSLR photo warped into its
frame as a checkerboard (a seam shows where they disagree), the kept patches outlined in green
and the rejected ones in red."""

from __future__ import annotations

import csv
import io
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

COLUMNS = (
    "phone", "dslr", "split", "status", "reason", "matches", "inliers", "reprojection_px",
    "overlap", "kept", "rejected", "residual_px",
)  # fmt: skip
REPORT = "align_report"  # <phone>/align_report.csv and .md
FIGURES = "align_figures"  # <phone>/align_figures/<phone photo's stem>.png
FIGURE_SIDE = 1000  # longer side of a figure's photo, in pixels
CHECKER = 8  # squares along the longer side


@dataclass
class PairReport:
    """One photo pair's row of the report (COLUMNS; `rejected` maps a reason to its patches)."""

    phone: str
    dslr: str
    split: str = ""
    status: str = "rejected"
    reason: str = ""
    matches: int = 0
    inliers: int = 0
    reprojection_px: float = float("nan")
    overlap: float = 0.0
    kept: int = 0
    rejected: dict = field(default_factory=dict)  # reason -> patches
    residual_px: float = float("nan")  # median shift removed per kept patch


def rows(reports) -> list[dict]:
    out = []
    for report in reports:
        row = asdict(report)
        row["rejected"] = " ".join(f"{k}:{v}" for k, v in sorted(report.rejected.items()))
        out.append({k: row[k] for k in COLUMNS})
    return out


def write_report(base: Path, reports) -> None:
    """<base>/align_report.csv and align_report.md."""
    table = rows(reports)
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, COLUMNS)
    writer.writeheader()
    writer.writerows(table)
    (base / f"{REPORT}.csv").write_text(buffer.getvalue())
    (base / f"{REPORT}.md").write_text(markdown(table))


def markdown(table: list[dict]) -> str:
    kept = sum(r["kept"] for r in table)
    aligned = sum(r["status"] == "aligned" for r in table)
    lines = [
        "# dped align: report",
        "",
        f"{aligned} of {len(table)} photo pairs aligned, {kept} patch pairs kept. "
        "reprojection_px: RMS distance of the RANSAC inliers after the homography (phone "
        "pixels); overlap: share of the phone frame the warped DSLR photo covers; residual_px: "
        "median shift the per-patch phase correlation removed.",
        "",
        "| phone | dslr | split | status | matches | inliers | reproj. px | overlap | kept | "
        "rejected | residual px | reason |",
        "|---|---|---|---|---:|---:|---:|---:|---:|---|---:|---|",
    ]
    for r in table:
        lines.append(
            f"| {Path(r['phone']).name} | {Path(r['dslr']).name} | {r['split']} | {r['status']} "
            f"| {r['matches']} | {r['inliers']} | {r['reprojection_px']:.2f} | "
            f"{r['overlap']:.0%} | {r['kept']} | {r['rejected']} | {r['residual_px']:.2f} | "
            f"{r['reason']} |"
        )
    return "\n".join(lines) + "\n"


def write_figure(path: Path, phone, dslr, to_phone, places, side: int) -> None:
    """A checkerboard of the phone photo and the warped DSLR photo, downscaled, with every
    grid patch outlined: green kept, red rejected."""
    import cv2
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.patches import Rectangle

    scale = min(1.0, FIGURE_SIDE / max(phone.shape[:2]))
    h, w = round(phone.shape[0] * scale), round(phone.shape[1] * scale)
    small = np.diag([scale, scale, 1.0])
    warped = cv2.warpPerspective(dslr, small @ to_phone, (w, h), flags=cv2.INTER_AREA)
    phone_small = cv2.resize(phone, (w, h), interpolation=cv2.INTER_AREA)
    square = max(h, w) // CHECKER or 1
    yy, xx = np.mgrid[0:h, 0:w]
    board = ((yy // square + xx // square) % 2).astype(bool)
    mixed = np.where(board[..., None], warped, phone_small)
    fig, ax = plt.subplots(figsize=(10, 10 * h / w))
    ax.imshow(mixed)
    for (r, c), status in places:
        colour = "lime" if status == "kept" else "red"
        ax.add_patch(
            Rectangle((c * scale, r * scale), side * scale, side * scale, fill=False,
                      edgecolor=colour, linewidth=0.8)
        )  # fmt: skip
    ax.set_title(f"{path.stem}: phone | DSLR warped (checkerboard); green kept, red rejected")
    ax.axis("off")
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100, bbox_inches="tight")
    plt.close(fig)
