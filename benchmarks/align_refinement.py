"""`dped align`'s per-patch refinement, measured against the truth: on photo pairs with a known
homography (the mini set's sample photographs, and one 12 MP phone / 24 MP DSLR pair made by
enlarging one of them), each way of refining a patch after the global homography is scored by
how far the patch it cuts lies from where the true homography puts it (median and 90th
percentile, phone pixels), and by its time per patch.

    python benchmarks/align_refinement.py

Ways: `none` (the homography alone), `phase` (phase correlation's shift, always), `ecc` (OpenCV's
ECC, translation), `dped` (phase correlation's shift where it raises the correlation: what
`dped align` does).
"""

from __future__ import annotations

import time

import cv2
import numpy as np

from dped import align, minidata
from dped.config import preset

SIDE = 100


def big_pair() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A 4000x3000 phone photo of a 6000x4000 DSLR one (a sample photograph enlarged, with
    sensor grain), a 1.5 degree turn between them."""
    rng = np.random.default_rng(0)
    dslr = cv2.resize(minidata.load_photo("coffee"), (6000, 4000), interpolation=cv2.INTER_CUBIC)
    dslr = np.clip(dslr + rng.normal(0, 3, dslr.shape), 0, 255).astype(np.uint8)
    a, s = np.deg2rad(1.5), 4000 / 6000 * 1.01
    truth = np.array(
        [
            [s * np.cos(a), -s * np.sin(a), -20.0],
            [s * np.sin(a), s * np.cos(a), 10.0],
            [2e-7, -1e-7, 1],
        ]
    )
    seen = cv2.warpPerspective(dslr, truth, (4000, 3000), flags=cv2.INTER_AREA)
    phone = np.round(minidata.degrade(seen, preset("seed"), rng) * 255).astype(np.uint8)
    return phone, dslr, truth


def shift(way: str, ours, dslr, found, r, c) -> tuple[float, float]:
    first = align._gray(align.cut_patch(dslr, found, r, c, SIDE))
    if way == "none":
        return 0.0, 0.0
    if way == "ecc":
        criteria = (cv2.TERM_CRITERIA_EPS | cv2.TERM_CRITERIA_COUNT, 50, 1e-4)
        warp = np.eye(2, 3, dtype=np.float32)
        try:
            _, warp = cv2.findTransformECC(
                np.float32(ours), np.float32(first), warp, cv2.MOTION_TRANSLATION, criteria, None, 5
            )
        except cv2.error:  # no convergence
            return 0.0, 0.0
        return float(warp[0, 2]), float(warp[1, 2])
    dx, dy = align.shift_between(ours, first)
    if way == "dped":
        moved = align._gray(align.cut_patch(dslr, found, r + dy, c + dx, SIDE))
        if align.similarity(ours, moved) <= align.similarity(ours, first):
            return 0.0, 0.0
    return dx, dy


def score(pairs, stride: int) -> None:
    ways = ("none", "phase", "ecc", "dped")
    errors, seconds = {w: [] for w in ways}, dict.fromkeys(ways, 0.0)
    for phone, dslr, truth in pairs:
        report = align.PairReport("phone", "dslr")
        found = align.register(align._gray(phone), align._gray(dslr), align.AlignSettings(), report)
        for r in range(0, phone.shape[0] - SIDE + 1, stride):
            for c in range(0, phone.shape[1] - SIDE + 1, stride):
                ours = align._gray(phone[r : r + SIDE, c : c + SIDE])
                if not align.covered(found, dslr.shape, r, c, SIDE, 5) or ours.std() < 2:
                    continue
                for way in ways:
                    start = time.perf_counter()
                    dx, dy = shift(way, ours, dslr, found, r, c)
                    seconds[way] += time.perf_counter() - start
                    centre = np.float64([[[c + dx + (SIDE - 1) / 2, r + dy + (SIDE - 1) / 2]]])
                    dslr_point = cv2.perspectiveTransform(centre, np.linalg.inv(found))
                    lands = cv2.perspectiveTransform(dslr_point, truth)[0, 0]
                    errors[way].append(np.hypot(*(lands - centre[0, 0] + [dx, dy])))
    for way in ways:
        e = np.array(errors[way])
        print(
            f"  {way:6s} {len(e):4d} patches: error median {np.median(e):.3f} px, "
            f"p90 {np.percentile(e, 90):.3f} px, {1000 * seconds[way] / len(e):.2f} ms a patch"
        )


def main() -> None:
    cfg = preset("seed")
    names = [s.name for s in minidata.SOURCES]
    print("sample photographs (DSLR at 2x, known homography, phone-camera model):")
    score([minidata.photo_pair(n, i, cfg) for i, n in enumerate(names)], SIDE)
    print("12 MP phone / 24 MP DSLR (an enlarged photograph with grain):")
    score([big_pair()], 2 * SIDE)


if __name__ == "__main__":
    main()
