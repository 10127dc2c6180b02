"""`dped align`: a DPED dataset from your own phone and DSLR photos of the same scenes.

Per pair of photos (paired by file stem, or by a CSV of explicit pairs):
1. Global registration: SIFT features of grey copies downscaled to `match_side` pixels, Lowe's
   ratio test, a RANSAC homography from the DSLR photo to the phone's frame, scaled back to full
   resolution. A pair with too few matches or inliers, a mirrored or degenerate homography, or
   too little overlap is rejected with its reason; the other pairs go on.
2. Per patch of a grid over the phone photo: the DSLR photo is resampled into the patch (its frame
   and scale, one interpolation: the DSLR is first shrunk with area averaging when it is larger),
   the residual shift left by the homography is measured by phase correlation and removed where
   that raises the patches' correlation, and the pair is kept when the warp covers the patch
   whole (no empty border) and the normalised cross-correlation of the two grey patches reaches
   `threshold` (the authors' 0.9). benchmarks/align_refinement.py scores these choices (and
   ECC) against a known homography: the rule has the lowest 90th percentile on both sets.
Photos, never patches, are split into train and test, so no scene is in both. The build goes
into a temporary sibling and is renamed into place when complete (`minidata`'s marker rule).
"""

from __future__ import annotations

import csv
import json
import os
import shutil
import sys
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from dped.alignreport import PairReport
from dped.data import DATASET_SUFFIXES, DSLR, write_test_positions

# OpenCV is imported inside the functions that use it: the CLI reads AlignSettings to build its
# parser, on every `dped` start, and the other commands must not pay for cv2's import.

MARKER = ".dped-align"  # written last by a complete build: the folder is ours to replace


def _setting(default, text: str):
    return field(default=default, metadata={"help": text})


@dataclass(frozen=True)
class AlignSettings:
    """Every setting of a build (`dped align --<name>`), recorded in its marker file."""

    patch: int = _setting(100, "patch side in pixels (DPED's)")
    stride: int = _setting(100, "grid step over the phone photo")
    threshold: float = _setting(0.9, "least normalised cross-correlation of a kept pair")
    test_fraction: float = _setting(0.2, "share of photo pairs (never patches) in test_data")
    match_side: int = _setting(1200, "longer side of the copies features are matched on")
    min_inliers: int = _setting(40, "fewest RANSAC inliers of a registered pair")
    max_shift: float = _setting(4.0, "largest residual shift (px) a patch may need")
    seed: int = _setting(0, "which photos go to test_data")

    def __post_init__(self):
        bounds = {
            "patch": (8, None), "stride": (1, None), "threshold": (-1.0, 1.0),
            "test_fraction": (0.0, 0.99), "match_side": (64, None), "min_inliers": (4, None),
            "max_shift": (0.0, None),
        }  # fmt: skip
        for name, (low, high) in bounds.items():
            value = getattr(self, name)
            if not low <= value <= (value if high is None else high):
                where = f">= {low}" if high is None else f"in {low}..{high}"
                raise ValueError(f"--{name.replace('_', '-')} {value}: must be {where}")


class RegistrationError(ValueError):
    """A pair that cannot be registered: the reason, for the report and the one-line message."""


# ---- pairing ---------------------------------------------------------------------------------


def photos(folder: Path) -> dict[str, Path]:
    """{file stem: photo}; two photos of one stem cannot be paired by stem (which one?)."""
    found = {}
    for path in _listing(folder):
        if path.stem in found:
            raise ValueError(
                f"{found[path.stem]} and {path} share a stem: pair by stem needs one photo "
                "per stem; name the pairs in --pairs FILE.csv"
            )
        found[path.stem] = path
    return found


def _listing(folder: Path) -> list[Path]:
    files = sorted(Path(folder).iterdir())
    return [p for p in files if p.is_file() and p.suffix.lower() in DATASET_SUFFIXES]


def pair_photos(phone_dir, dslr_dir, pairs_csv=None) -> tuple[list[tuple[Path, Path]], list[str]]:
    """[(phone, dslr)] and the files left unpaired (listed, never guessed)."""
    if pairs_csv is None:
        phone, dslr = photos(phone_dir), photos(dslr_dir)
        pairs = [(phone[s], dslr[s]) for s in sorted(phone.keys() & dslr.keys())]
        unpaired = [str(phone[s]) for s in sorted(phone.keys() - dslr.keys())]
        return pairs, unpaired + [str(dslr[s]) for s in sorted(dslr.keys() - phone.keys())]
    pairs = []
    with open(pairs_csv, newline="") as f:
        for line, row in enumerate(csv.reader(f), start=1):
            if not row or row[0].startswith("#") or row[:2] == ["phone", "dslr"]:
                continue
            if len(row) < 2:
                raise ValueError(f"{pairs_csv}:{line}: expected 'phone_file,dslr_file'")
            p, d = Path(phone_dir) / row[0].strip(), Path(dslr_dir) / row[1].strip()
            for path in (p, d):
                if not path.is_file():
                    raise ValueError(f"{pairs_csv}:{line}: no such file {path}")
            pairs.append((p, d))
    used = {p for pair in pairs for p in pair}
    unpaired = [str(p) for p in [*_listing(phone_dir), *_listing(dslr_dir)] if p not in used]
    return pairs, unpaired


def split_photos(n: int, test_fraction: float, seed: int) -> list[str]:
    """'train' or 'test' per pair: round(n * fraction) test photos (one at least when the
    fraction is positive and there are two photos or more), drawn with `seed`."""
    tests = round(n * test_fraction)
    if test_fraction > 0 and n >= 2:
        tests = min(max(tests, 1), n - 1)
    chosen = set(np.random.default_rng(seed).permutation(n)[:tests].tolist())
    return ["test" if i in chosen else "train" for i in range(n)]


# ---- registration ----------------------------------------------------------------------------


def read_rgb8(path: Path) -> np.ndarray:
    """uint8 RGB, upright by its EXIF orientation; 16-bit photos rounded to 8 bits."""
    from dped.inference.images import read_pixels

    rgb, _, depth = read_pixels(path)
    if depth == 16:
        return ((rgb.astype(np.uint32) * 255 + 32767) // 65535).astype(np.uint8)
    return rgb


def _gray(rgb: np.ndarray):
    import cv2

    return cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY)


def _shrunk(gray: np.ndarray, side: int) -> tuple[np.ndarray, float]:
    import cv2

    scale = min(1.0, side / max(gray.shape))
    if scale == 1.0:
        return gray, 1.0
    size = (round(gray.shape[1] * scale), round(gray.shape[0] * scale))
    return cv2.resize(gray, size, interpolation=cv2.INTER_AREA), scale


def register(phone_gray, dslr_gray, settings: AlignSettings, report: PairReport) -> np.ndarray:
    """The 3x3 homography from DSLR pixels to phone pixels (full resolution), filling the
    report's matches, inliers and reprojection error; RegistrationError when it cannot."""
    import cv2

    small_p, sp = _shrunk(phone_gray, settings.match_side)
    small_d, sd = _shrunk(dslr_gray, settings.match_side)
    sift = cv2.SIFT_create(nfeatures=8000)
    kp_p, des_p = sift.detectAndCompute(small_p, None)
    kp_d, des_d = sift.detectAndCompute(small_d, None)
    if des_p is None or des_d is None or len(kp_p) < 2 or len(kp_d) < 2:
        raise RegistrationError("no features found (a blank or flat photo?)")
    knn = cv2.BFMatcher(cv2.NORM_L2).knnMatch(des_d, des_p, k=2)
    good = [m[0] for m in knn if len(m) == 2 and m[0].distance < 0.75 * m[1].distance]
    report.matches = len(good)
    if len(good) < settings.min_inliers:
        raise RegistrationError(f"{len(good)} feature matches, fewer than {settings.min_inliers}")
    src = np.float32([kp_d[m.queryIdx].pt for m in good]) / sd
    dst = np.float32([kp_p[m.trainIdx].pt for m in good]) / sp
    # RANSAC at full resolution, its tolerance 1.5 pixels of the copies the features came from.
    homography, inlier = cv2.findHomography(src, dst, cv2.RANSAC, 1.5 / sp, maxIters=5000)
    report.inliers = int(inlier.sum()) if inlier is not None else 0
    if homography is None or report.inliers < settings.min_inliers:
        raise RegistrationError(
            f"{report.inliers} RANSAC inliers of {len(good)} matches, fewer than "
            f"{settings.min_inliers} (different scenes?)"
        )
    keep = inlier.ravel().astype(bool)
    moved = cv2.perspectiveTransform(src[keep][:, None], homography)[:, 0]
    report.reprojection_px = float(np.sqrt(np.mean(np.sum((moved - dst[keep]) ** 2, axis=1))))
    homography = homography / homography[2, 2]
    _check_shape(homography, phone_gray.shape)
    return homography


def _check_shape(homography: np.ndarray, phone_shape) -> None:
    """Refuse a mirrored, collapsed or wildly perspective warp: no camera pair makes one."""
    linear = homography[:2, :2]
    if np.linalg.det(linear) <= 0:
        raise RegistrationError("the homography mirrors the image (degenerate)")
    low, high = np.linalg.svd(linear, compute_uv=False)[::-1]
    if high / low > 3:
        raise RegistrationError(f"the homography stretches one axis {high / low:.1f}x (degenerate)")
    if np.abs(homography[2, :2]).max() * max(phone_shape) > 0.5:
        raise RegistrationError("the homography's perspective is extreme (degenerate)")


# ---- patches ---------------------------------------------------------------------------------


def _translate(x: float, y: float) -> np.ndarray:
    return np.array([[1, 0, x], [0, 1, y], [0, 0, 1]], np.float64)


def cut_patch(dslr: np.ndarray, to_phone: np.ndarray, r: float, c: float, side: int):
    """The DSLR photo resampled into the phone's patch whose top-left corner is (r, c)."""
    import cv2

    flags = cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP
    inverse = np.linalg.inv(_translate(-c, -r) @ to_phone)
    return cv2.warpPerspective(dslr, inverse, (side, side), flags=flags)


def covered(to_phone: np.ndarray, dslr_shape, r: float, c: float, side: int, margin: float) -> bool:
    """Whether the patch and `margin` pixels around it fall inside the DSLR photo (with one
    pixel to spare for interpolation): a homography maps the square to a convex quad."""
    import cv2

    lo, hi = -margin, side - 1 + margin
    corners = np.float64([[c + lo, r + lo], [c + hi, r + lo], [c + lo, r + hi], [c + hi, r + hi]])
    back = cv2.perspectiveTransform(corners[:, None], np.linalg.inv(to_phone))[:, 0]
    h, w = dslr_shape[:2]
    return bool(np.all(back >= 1) and np.all(back[:, 0] <= w - 2) and np.all(back[:, 1] <= h - 2))


def shift_between(a_gray: np.ndarray, b_gray: np.ndarray) -> tuple[float, float]:
    """(dx, dy) such that b's content sits at a's position + (dx, dy): phase correlation."""
    import cv2

    window = cv2.createHanningWindow(a_gray.shape[::-1], cv2.CV_64F)
    (dx, dy), _ = cv2.phaseCorrelate(np.float64(a_gray), np.float64(b_gray), window)
    return dx, dy


def similarity(a_gray: np.ndarray, b_gray: np.ndarray) -> float:
    """Normalised cross-correlation of two grey patches (nan when one is flat)."""
    a, b = np.float64(a_gray).ravel(), np.float64(b_gray).ravel()
    a, b = a - a.mean(), b - b.mean()
    norm = np.sqrt((a @ a) * (b @ b))
    return float(a @ b / norm) if norm > 0 else float("nan")


def patches(phone, dslr, to_phone, settings: AlignSettings, report: PairReport):
    """Yield (phone patch, DSLR patch, (r, c), status) for every grid place; status is 'kept'
    or the rejection reason. Fills the report's counts and median residual shift."""
    side, shifts = settings.patch, []
    h, w = phone.shape[:2]
    for r in range(0, h - side + 1, settings.stride):
        for c in range(0, w - side + 1, settings.stride):
            ours = phone[r : r + side, c : c + side]
            status, theirs = _one_patch(ours, dslr, to_phone, r, c, settings, shifts)
            report.rejected[status] = report.rejected.get(status, 0) + (status != "kept")
            report.kept += status == "kept"
            yield ours, theirs, (r, c), status
    report.rejected = {k: v for k, v in report.rejected.items() if v}
    report.residual_px = float(np.median(shifts)) if shifts else float("nan")


def _one_patch(ours, dslr, to_phone, r, c, settings, shifts):
    side = settings.patch
    if not covered(to_phone, dslr.shape, r, c, side, settings.max_shift + 1):
        return "border", None
    ours_gray = _gray(ours)
    if ours_gray.std() < 2.0:
        return "flat", None
    first = cut_patch(dslr, to_phone, r, c, side)
    first_gray = _gray(first)
    dx, dy = shift_between(ours_gray, first_gray)
    if max(abs(dx), abs(dy)) > settings.max_shift:
        return "shift", None
    # The shift is kept only where it raises the correlation: on smooth or noise-dominated
    # patches phase correlation latches onto the noise, and the homography alone is closer.
    shifted = cut_patch(dslr, to_phone, r + dy, c + dx, side)
    score, theirs = max(
        (similarity(ours_gray, _gray(shifted)), 1, shifted),
        (similarity(ours_gray, first_gray), 0, first),
        key=lambda t: (np.nan_to_num(t[0], nan=-2.0), t[1]),
    )[0::2]
    if not score >= settings.threshold:
        return "similarity", None
    shifts.append(float(np.hypot(dx, dy)) if theirs is shifted else 0.0)
    return "kept", theirs


def overlap(to_phone, phone_shape, dslr_shape) -> float:
    """Share of the phone photo the DSLR photo covers once warped."""
    import cv2

    h, w = dslr_shape[:2]
    quad = np.float64([[0, 0], [w - 1, 0], [w - 1, h - 1], [0, h - 1]])[:, None]
    corners = cv2.perspectiveTransform(quad, to_phone)[:, 0].astype(np.float32)
    ph, pw = phone_shape[:2]
    frame = np.float32([[0, 0], [pw - 1, 0], [pw - 1, ph - 1], [0, ph - 1]])
    area, _ = cv2.intersectConvexConvex(corners, frame)
    return float(area / ((pw - 1) * (ph - 1)))


def align_pair(phone_path, dslr_path, settings: AlignSettings, report: PairReport):
    """(phone RGB, DSLR RGB at the phone's scale, DSLR -> phone homography); RegistrationError
    when the pair cannot be registered."""
    import cv2

    phone, dslr = read_rgb8(phone_path), read_rgb8(dslr_path)
    to_phone = register(_gray(phone), _gray(dslr), settings, report)
    report.overlap = overlap(to_phone, phone.shape, dslr.shape)
    if report.overlap < 0.2:
        raise RegistrationError(f"the photos overlap on {report.overlap:.0%} of the phone frame")
    scale = np.sqrt(np.linalg.det(to_phone[:2, :2]))
    if scale < 0.9:  # a larger DSLR photo: average it down first, as a lens would, not alias it
        size = (round(dslr.shape[1] * scale), round(dslr.shape[0] * scale))
        shrink = np.diag([size[0] / dslr.shape[1], size[1] / dslr.shape[0], 1.0])
        dslr = cv2.resize(dslr, size, interpolation=cv2.INTER_AREA)
        to_phone = to_phone @ np.linalg.inv(shrink)
    return phone, dslr, to_phone


# ---- the build -------------------------------------------------------------------------------


def build(
    phone_dir, dslr_dir, phone: str, out, settings=AlignSettings(), pairs_csv=None, progress=True
) -> tuple[Path, list[PairReport], list[str]]:
    """Write <out>/<phone> in the DPED layout; returns it, a report per pair and the unpaired
    files. A folder that an earlier build did not mark is never replaced."""
    from dped.minidata import check_replaceable, remove_stale_builds, swap_in

    if not phone or "/" in phone or phone in (".", "..", DSLR):
        raise ValueError(f"--phone {phone!r}: a folder name other than '{DSLR}'")
    pairs, unpaired = pair_photos(phone_dir, dslr_dir, pairs_csv)
    if not pairs:
        raise ValueError(f"no photo pairs: no file stem is in both {phone_dir} and {dslr_dir}")
    base = Path(out) / phone
    check_replaceable(base, MARKER, "dped align")
    remove_stale_builds(base)
    base.parent.mkdir(parents=True, exist_ok=True)
    tmp = base.with_name(f".{base.name}.building-{os.getpid()}")
    try:
        reports = _build_into(tmp, phone, pairs, settings, progress)
        (tmp / MARKER).write_text(json.dumps(asdict(settings)) + "\n")
        swap_in(tmp, base, MARKER, "dped align")
    finally:
        if tmp.exists():  # an interrupted build: only our own temporary folder goes
            shutil.rmtree(tmp)
    return base, reports, unpaired


def _build_into(base: Path, phone: str, pairs, settings: AlignSettings, progress: bool):
    from tqdm import tqdm

    from dped.alignreport import FIGURES, write_figure, write_report

    splits = split_photos(len(pairs), settings.test_fraction, settings.seed)
    folders = {
        "train": base / "training_data",
        "test": base / "test_data" / "patches",
    }
    for folder in folders.values():
        for side in (phone, DSLR):
            (folder / side).mkdir(parents=True, exist_ok=True)
    (base / "test_data" / "full_size_test_images").mkdir(parents=True)
    counters, reports, positions = {"train": 0, "test": 0}, [], []
    bar = tqdm(pairs, desc=f"dped align {phone}", unit="pair", disable=None if progress else True)
    for (phone_path, dslr_path), split in zip(bar, splits):
        report = PairReport(str(phone_path), str(dslr_path), split)
        reports.append(report)
        try:
            photo, dslr, to_phone = align_pair(phone_path, dslr_path, settings, report)
        except Exception as err:  # noqa: BLE001  one pair's failure, named; the others go on
            known = isinstance(err, ValueError)  # RegistrationError, an unreadable photo
            report.reason = str(err) if known else f"{type(err).__name__}: {err}".splitlines()[0]
            bar.write(
                f"dped align: rejected {phone_path} + {dslr_path}: {report.reason}", sys.stderr
            )
            continue
        places = []
        for ours, theirs, corner, status in patches(photo, dslr, to_phone, settings, report):
            places.append((corner, status))
            if status == "kept":
                if split == "test":
                    positions.append((Path(phone_path).stem, *corner))
                i = counters[split]
                counters[split] += 1
                _write_jpeg(folders[split] / phone / f"{i}.jpg", ours)
                _write_jpeg(folders[split] / DSLR / f"{i}.jpg", theirs)
        report.status = "aligned" if report.kept else "rejected"
        report.reason = "" if report.kept else "no patch passed the similarity test"
        if split == "test" and report.kept:
            full = base / "test_data" / "full_size_test_images" / f"{Path(phone_path).stem}.jpg"
            _write_jpeg(full, photo)
        write_figure(
            base / FIGURES / f"{Path(phone_path).stem}.png",
            photo,
            dslr,
            to_phone,
            places,
            settings.patch,
        )
        bar.set_postfix(kept=report.kept)
    write_test_positions(base, positions)
    write_report(base, reports)
    return reports


def _write_jpeg(path: Path, rgb: np.ndarray) -> None:
    from dped.minidata import jpeg_bytes

    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(jpeg_bytes(np.ascontiguousarray(rgb), 95))
