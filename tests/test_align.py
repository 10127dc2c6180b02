"""`dped align` on photo pairs with a known answer: real photographs (the mini set's sources) as
the DSLR side, the phone side warped by a known homography and passed through the mini set's
phone-camera model."""

import json

import cv2
import imageio.v3 as iio
import numpy as np
import pytest

from dped import align, minidata
from dped.cli import main
from dped.config import preset
from dped.data import discover, read_test_positions


def photo_pair(name: str, index: int):
    return minidata.photo_pair(name, index, preset("seed"))


def write(path, rgb, quality=92):
    path.parent.mkdir(parents=True, exist_ok=True)
    params = [cv2.IMWRITE_JPEG_QUALITY, quality] if path.suffix == ".jpg" else []
    cv2.imwrite(str(path), cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR), params)


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    """Three real pairs, one pair of different scenes under one stem, one unpaired photo."""
    root = tmp_path_factory.mktemp("align")
    for i, name in enumerate(("astronaut", "coffee", "chelsea")):
        phone, dslr, _ = photo_pair(name, i)
        write(root / "phone" / f"{name}.jpg", phone)
        write(root / "dslr" / f"{name}.png", dslr)
    stranger, _, _ = photo_pair("rocket", 3)
    _, other, _ = photo_pair("grace_hopper", 4)
    write(root / "phone" / "mixup.jpg", stranger)
    write(root / "dslr" / "mixup.png", other)
    write(root / "phone" / "lonely.jpg", stranger)
    return root


def residuals(base, phone: str) -> np.ndarray:
    """Phase-correlation shift left between every output patch pair."""
    shifts = []
    for folder in (base / "training_data", base / "test_data" / "patches"):
        for path in sorted((folder / phone).glob("*.jpg")):
            ours, theirs = (
                cv2.imread(str(path), 0),
                cv2.imread(str(folder / "canon" / path.name), 0),
            )
            shifts.append(np.hypot(*align.shift_between(ours, theirs)))
    return np.array(shifts)


def test_known_homographies_are_recovered_within_a_fraction_of_a_pixel():
    for i, name in enumerate(("astronaut", "coffee")):
        phone, dslr, truth = photo_pair(name, i)
        found = align.register(align._gray(phone), align._gray(dslr), align.AlignSettings(),
                               align.PairReport("p", "d"))  # fmt: skip
        h, w = phone.shape[:2]
        grid = np.float64(
            [[x, y] for x in np.linspace(0, w - 1, 9) for y in np.linspace(0, h - 1, 9)]
        )
        back = cv2.perspectiveTransform(grid[:, None], np.linalg.inv(truth))  # DSLR points
        error = np.hypot(*(cv2.perspectiveTransform(back, found)[:, 0] - grid).T)
        assert error.max() < 0.5, (name, error.max())


def test_align_builds_a_dped_layout_that_training_reads(folders, tmp_path, capsys):
    out = tmp_path / "sets"
    code = main([
        "align", str(folders / "phone"), str(folders / "dslr"), "--phone", "myphone",
        "--out", str(out), "--stride", "50", "--test-fraction", "0.34",
    ])  # fmt: skip
    printed = capsys.readouterr()
    assert code == 0
    base = out / "myphone"
    assert (
        f"unpaired (no photo of the same stem on the other side): {folders / 'phone' / 'lonely.jpg'}"
        in printed.out
    )
    assert (
        f"rejected {folders / 'phone' / 'mixup.jpg'} + {folders / 'dslr' / 'mixup.png'}: "
        in printed.err
    )
    report = {
        row.split(",")[0]: row for row in (base / "align_report.csv").read_text().splitlines()
    }
    assert ",rejected," in report[str(folders / "phone" / "mixup.jpg")]
    files = discover(out, "myphone")
    assert len(files.train.phone) > 40 and len(files.test.phone) > 10
    # Split by photo: one test photo, whose phone side is the full-size test image.
    tests = [r for r in report.values() if ",test," in r]
    assert len(tests) == 1 and len(files.full_size) == 1 and files.full_size[0].stem in tests[0]
    # Each test patch's place in its photograph (the report groups neighbours by region).
    positions = read_test_positions(out, "myphone")
    assert len(positions) == len(files.test.phone)
    assert {name for name, _, _ in positions} == {files.full_size[0].stem}
    name, r, c = positions[-1]
    full = iio.imread(files.full_size[0]).astype(np.float32)
    patch = iio.imread(files.test.phone[-1]).astype(np.float32)
    assert np.abs(patch - full[r : r + len(patch), c : c + len(patch)]).mean() < 3.0
    shifts = residuals(base, "myphone")
    assert np.median(shifts) <= 0.3 and np.percentile(shifts, 90) <= 0.8, shifts
    assert sorted(p.name for p in (base / "align_figures").iterdir()) == [
        "astronaut.png",
        "chelsea.png",
        "coffee.png",
    ]
    assert json.loads((base / align.MARKER).read_text())["stride"] == 50


def test_training_runs_on_a_built_dataset(folders, tmp_path):
    out = tmp_path / "sets"
    align.build(folders / "phone", folders / "dslr", "p", out, align.AlignSettings(stride=50),
                progress=False)  # fmt: skip
    code = main([
        "train", "--config", "seed", "--set", f"dataset_dir={out}", "--set", "phone=p",
        "--set", "patch_size=100", "--set", "filters=8", "--set", "res_blocks=1",
        "--set", "batch_size=2", "--set", "num_iters=2", "--set", "eval_every=2",
        "--set", "d_pretrain_iters=0", "--set", "vgg_weights=random",
        "--out", str(tmp_path / "run"),
    ])  # fmt: skip
    assert code == 0
    assert (tmp_path / "run" / "metrics.csv").read_text().count("\n") == 2  # header + step 2


@pytest.mark.parametrize("how", ["pixels turned 180", "EXIF orientation 3", "16-bit DSLR"])
def test_turned_and_16_bit_photos_still_align(tmp_path, how):
    from PIL import Image

    phone, dslr, _ = photo_pair("astronaut", 0)
    phone_path, dslr_path = tmp_path / "phone" / "a.jpg", tmp_path / "dslr" / "a.png"
    dslr_path.parent.mkdir(parents=True)
    write(phone_path, phone)
    write(dslr_path, dslr)
    if how == "pixels turned 180":
        write(phone_path, np.rot90(phone, 2))
    elif how == "EXIF orientation 3":  # stored upside down, the tag turns it upright
        exif = Image.Exif()
        exif[0x0112] = 3
        Image.fromarray(np.rot90(phone, 2)).save(phone_path, quality=92, exif=exif)
    else:
        cv2.imwrite(str(dslr_path), cv2.cvtColor(dslr.astype(np.uint16) * 257, cv2.COLOR_RGB2BGR))
    base, reports, _ = align.build(tmp_path / "phone", tmp_path / "dslr", "p", tmp_path / "out",
                                   align.AlignSettings(test_fraction=0.0), progress=False)  # fmt: skip
    assert reports[0].status == "aligned" and reports[0].kept >= 9, reports[0]
    assert np.median(residuals(base, "p")) <= 0.3


def test_a_folder_align_did_not_build_is_refused_and_left_untouched(folders, tmp_path, capsys):
    mine = tmp_path / "out" / "myphone" / "notes.txt"
    mine.parent.mkdir(parents=True)
    mine.write_text("mine")
    args = ["align", str(folders / "phone"), str(folders / "dslr"), "--phone", "myphone"]
    assert main([*args, "--out", str(tmp_path / "out")]) == 2
    assert capsys.readouterr().err == (
        f"dped: error: {mine.parent} holds files that `dped align` did not build (no "
        f"{align.MARKER} marker): it never replaces them; move them away or build elsewhere "
        "with `dped align --out OTHER_DIR`\n"
    )
    assert mine.read_text() == "mine" and sorted(mine.parent.iterdir()) == [mine]


def test_an_interrupted_build_leaves_no_half_dataset(folders, tmp_path, monkeypatch):
    calls = []

    def interrupted(*args):
        calls.append(args)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return real(*args)

    real = align.align_pair
    monkeypatch.setattr(align, "align_pair", interrupted)
    with pytest.raises(KeyboardInterrupt):
        align.build(folders / "phone", folders / "dslr", "p", tmp_path / "out", progress=False)
    assert list((tmp_path / "out").iterdir()) == []


def test_unreadable_and_blank_photos_are_rejected_with_their_reason(tmp_path):
    (tmp_path / "phone").mkdir()
    (tmp_path / "dslr").mkdir()
    (tmp_path / "phone" / "broken.jpg").write_bytes(b"not a jpeg")
    write(tmp_path / "dslr" / "broken.jpg", np.zeros((64, 64, 3), np.uint8))
    write(tmp_path / "phone" / "blank.jpg", np.full((300, 300, 3), 128, np.uint8))
    write(tmp_path / "dslr" / "blank.jpg", np.full((300, 300, 3), 128, np.uint8))
    _, reports, _ = align.build(tmp_path / "phone", tmp_path / "dslr", "p", tmp_path / "out",
                                progress=False)  # fmt: skip
    reasons = {r.phone.rsplit("/", 1)[1]: r.reason for r in reports}
    assert reasons["blank.jpg"] == "no features found (a blank or flat photo?)"
    assert reasons["broken.jpg"].startswith("cannot decode as an image (")
    assert all(r.status == "rejected" for r in reports)


def test_a_killed_builds_folder_goes_and_bad_settings_get_one_line(folders, tmp_path, capsys):
    stale = tmp_path / "out" / ".p.building-999999999"  # no such process
    (stale / "training_data").mkdir(parents=True)
    align.build(folders / "phone", folders / "dslr", "p", tmp_path / "out", progress=False)
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["p"]
    capsys.readouterr()
    args = ["align", str(folders / "phone"), str(folders / "dslr"), "--phone", "q"]
    assert main([*args, "--out", str(tmp_path / "out"), "--min-inliers", "2"]) == 2
    assert capsys.readouterr().err == "dped: error: --min-inliers 2: must be >= 4\n"
    assert not (tmp_path / "out" / "q").exists()


def test_two_photos_of_one_stem_are_not_guessed_between(tmp_path):
    for name in ("phone/a.jpg", "phone/a.png", "dslr/a.jpg"):
        write(tmp_path / name, np.zeros((64, 64, 3), np.uint8))
    with pytest.raises(ValueError) as err:
        align.build(tmp_path / "phone", tmp_path / "dslr", "p", tmp_path / "out", progress=False)
    assert str(err.value) == (
        f"{tmp_path / 'phone' / 'a.jpg'} and {tmp_path / 'phone' / 'a.png'} share a stem: pair by "
        "stem needs one photo per stem; name the pairs in --pairs FILE.csv"
    )
    assert not (tmp_path / "out").exists()
    (tmp_path / "pairs.csv").write_text("phone,dslr\na.png,a.jpg\n")  # named: no guess needed
    _, reports, unpaired = align.build(tmp_path / "phone", tmp_path / "dslr", "p",
                                       tmp_path / "out", pairs_csv=tmp_path / "pairs.csv",
                                       progress=False)  # fmt: skip
    assert [r.phone for r in reports] == [str(tmp_path / "phone" / "a.png")]
    assert unpaired == [str(tmp_path / "phone" / "a.jpg")]
