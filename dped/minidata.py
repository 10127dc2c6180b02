"""The built-in mini dataset: DPED-layout phone/DSLR pairs from real photographs, no network.

The DSLR side is a photograph that ships inside an installed package (scikit-image's sample data
and matplotlib's grace_hopper.jpg). The phone side is the same photograph through `degrade`, a
phone-camera model whose every step is a key of the config's `mini` section:

    linearise (sRGB -> linear) -> exposure -> white-balance cast -> lens blur -> vignetting
    -> signal-dependent noise -> tone curve x**gamma -> lower saturation -> sRGB -> JPEG,

then each phone patch is cut 1..mini.misalign_px pixels away from its DSLR patch, as DPED's
imperfect alignment. Train and test are split by source photo. All randomness comes from one
seeded generator per photo: two builds give byte-identical files.

Where it goes never depends on the config's `dataset_dir` / `phone` (those name the dataset a run
reads, possibly the real DPED): the set is always `<root>/mini` (default `data/dped-mini/mini`).
A build writes into a temporary sibling and renames it into place when complete, and it replaces
only a folder that carries its marker file: nothing of the user's is ever deleted.
"""

from __future__ import annotations

import io
import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from dped.config import Config
from dped.data import DSLR, DatasetError, write_test_positions

MINI_ROOT = "data/dped-mini"  # where `dped data` / `make data` build it; the cpu profiles read it
MINI_PHONE = "mini"
MARKER = ".dped-mini"  # written last by a complete build: the folder is ours to replace


@dataclass(frozen=True)
class Source:
    name: str
    split: str  # "train" or "test"
    origin: str  # where the file ships and its licence note


SOURCES = (
    Source("astronaut", "train", "scikit-image skimage.data.astronaut(): NASA, public domain"),
    Source("coffee", "train", "scikit-image skimage.data.coffee(): Rachel Michetti, CC0"),
    Source("rocket", "train", "scikit-image skimage.data.rocket(): SpaceX, public domain"),
    # The stereo pair shows one scene twice: both halves stay in the same split.
    Source(
        "motorcycle_left",
        "train",
        "scikit-image skimage.data.stereo_motorcycle()[0]: Middlebury 2014 stereo benchmark",
    ),
    Source(
        "motorcycle_right",
        "train",
        "scikit-image skimage.data.stereo_motorcycle()[1]: Middlebury 2014 stereo benchmark",
    ),
    Source("chelsea", "test", "scikit-image skimage.data.chelsea(): Stefan van der Walt, CC0"),
    Source(
        "grace_hopper",
        "test",
        "matplotlib mpl-data/sample_data/grace_hopper.jpg: matplotlib's sample data",
    ),
)


def load_photo(name: str) -> np.ndarray:
    """A sample photograph as uint8 RGB, from the installed packages only."""
    import skimage.data

    if name == "grace_hopper":
        import imageio.v3 as iio
        import matplotlib

        return iio.imread(Path(matplotlib.get_data_path()) / "sample_data" / "grace_hopper.jpg")
    if name.startswith("motorcycle"):
        left, right, _ = skimage.data.stereo_motorcycle()
        return left if name.endswith("left") else right
    return getattr(skimage.data, name)()


def _to_linear(srgb: np.ndarray) -> np.ndarray:
    return np.where(srgb <= 0.04045, srgb / 12.92, ((srgb + 0.055) / 1.055) ** 2.4)


def _to_srgb(linear: np.ndarray) -> np.ndarray:
    linear = np.clip(linear, 0.0, 1.0)
    return np.where(linear <= 0.0031308, 12.92 * linear, 1.055 * linear ** (1 / 2.4) - 0.055)


def degrade(photo: np.ndarray, cfg: Config, rng: np.random.Generator) -> np.ndarray:
    """The phone-camera model: uint8 RGB photo -> float phone image in 0..1 (before JPEG)."""
    from scipy.ndimage import gaussian_filter

    x = _to_linear(photo.astype(np.float64) / 255.0) * cfg.mini.exposure
    x = x * np.array([cfg.mini.wb_red, 1.0, cfg.mini.wb_blue])
    if cfg.mini.blur_sigma > 0:
        x = gaussian_filter(x, sigma=(cfg.mini.blur_sigma, cfg.mini.blur_sigma, 0))
    h, w = x.shape[:2]
    yy, xx = np.mgrid[0:h, 0:w]
    r2 = ((yy - (h - 1) / 2) / (h / 2)) ** 2 + ((xx - (w - 1) / 2) / (w / 2)) ** 2
    x = x * (1.0 - cfg.mini.vignette * r2[..., None] / 2.0)  # corners: r2 = 2
    sigma = np.sqrt(cfg.mini.noise_shot * np.clip(x, 0, None) + cfg.mini.noise_read)
    x = np.clip(x + rng.standard_normal(x.shape) * sigma, 0.0, 1.0) ** cfg.mini.gamma
    luma = (x * np.array([0.2126, 0.7152, 0.0722])).sum(-1, keepdims=True)
    x = luma + cfg.mini.saturation * (x - luma)
    return _to_srgb(x)


def jpeg_bytes(image: np.ndarray, quality: int) -> bytes:
    import imageio.v3 as iio

    buffer = io.BytesIO()
    iio.imwrite(buffer, image, extension=".jpg", quality=quality)
    return buffer.getvalue()


def _decode_jpeg(data: bytes) -> np.ndarray:
    import imageio.v3 as iio

    return iio.imread(data, extension=".jpg")


def _offset(rng: np.random.Generator, max_px: int) -> tuple[int, int]:
    """A misalignment of 1..max_px pixels (0 when max_px is 0)."""
    if max_px == 0:
        return 0, 0
    while True:
        dy, dx = rng.integers(-max_px, max_px + 1, 2)
        if max(abs(dy), abs(dx)) >= 1:
            return int(dy), int(dx)


def patch_corners(h: int, w: int, size: int, stride: int, margin: int) -> list[tuple[int, int]]:
    rows = range(margin, h - size - margin + 1, stride)
    cols = range(margin, w - size - margin + 1, stride)
    return [(r, c) for r in rows for c in cols]


def build(cfg: Config, root: str | Path = MINI_ROOT, progress: bool = True) -> Path:
    """Write the mini dataset to <root>/mini in the DPED layout; returns that folder.

    Built in a temporary sibling, then renamed into place; an existing <root>/mini is replaced
    only if an earlier build marked it as its own (else DatasetError, nothing touched)."""
    base = Path(root) / MINI_PHONE
    check_replaceable(base)
    remove_stale_builds(base)
    base.parent.mkdir(parents=True, exist_ok=True)
    tmp = base.with_name(f".{base.name}.building-{os.getpid()}")
    try:
        _build_into(tmp, cfg, progress)
        (tmp / MARKER).write_text(json.dumps(recipe(cfg)) + "\n")
        swap_in(tmp, base)
    finally:
        if tmp.exists():  # an interrupted build: only our own temporary folder goes
            shutil.rmtree(tmp)
    return base


def recipe(cfg: Config) -> dict:
    """What a build's files depend on: the keys that shape the set and this module's code (the
    camera model lives here). Written into the marker; an equal one means nothing to rebuild."""
    import dataclasses
    import hashlib

    code = hashlib.sha256(Path(__file__).read_bytes()).hexdigest()[:16]
    mini = dataclasses.asdict(cfg.mini)
    return {"seed": cfg.seed, "patch_size": cfg.patch_size, "mini": mini, "code": code}


def is_current(cfg: Config, root: str | Path = MINI_ROOT) -> bool:
    """True when <root>/mini is a complete build of this recipe (its marker says so)."""
    marker = Path(root) / MINI_PHONE / MARKER
    try:
        return json.loads(marker.read_text()) == json.loads(json.dumps(recipe(cfg)))
    except (OSError, ValueError):
        return False


def check_replaceable(base: Path, marker: str = MARKER, command: str = "dped data") -> None:
    """Raise unless `base` is absent, an empty folder or a dataset an earlier build of
    `command` marked with `marker`."""
    if not base.exists() or (base / marker).is_file():
        return
    if base.is_dir() and not any(base.iterdir()):
        return
    raise DatasetError(
        f"{base} holds files that `{command}` did not build (no {marker} marker): it never "
        f"replaces them; move them away or build elsewhere with `{command} --out OTHER_DIR`"
    )


def remove_stale_builds(base: Path) -> None:
    """Remove the temporary folders (`.<name>.building-<pid>`) of builds of `base` whose process
    is gone: a build killed outright (SIGKILL, power) had no chance to remove its own."""
    for tmp in base.parent.glob(f".{base.name}.building-*"):
        pid = tmp.name.rsplit("-", 1)[1]
        if pid.isdigit() and not _alive(int(pid)):
            shutil.rmtree(tmp, ignore_errors=True)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # another user's process (or no way to tell): leave its folder alone
        return True
    return True


def swap_in(tmp: Path, base: Path, marker: str = MARKER, command: str = "dped data") -> None:
    """Rename the finished build to `base`; the old marked build is renamed aside first and
    removed after, so a reader sees either set complete, never a mix or half a set."""
    old = base.with_name(f".{base.name}.old-{os.getpid()}")
    if base.exists():
        check_replaceable(base, marker, command)  # again: it may have changed during the build
        os.rename(base, old)
    os.rename(tmp, base)
    if old.exists():
        shutil.rmtree(old)


def _build_into(base: Path, cfg: Config, progress: bool) -> None:
    from tqdm import tqdm

    size, margin = cfg.patch_size, cfg.mini.misalign_px
    counters, positions = {"train": 0, "test": 0}, []
    for index, source in enumerate(
        tqdm(SOURCES, desc="mini dataset", disable=None if progress else True)
    ):
        rng = np.random.default_rng([cfg.seed, index])
        photo = load_photo(source.name)
        phone = _decode_jpeg(
            jpeg_bytes(
                np.round(degrade(photo, cfg, rng) * 255).astype(np.uint8), cfg.mini.jpeg_quality
            )
        )
        if source.split == "train":
            folder = base / "training_data"
            corners = patch_corners(*photo.shape[:2], size, cfg.mini.stride, margin)
        else:
            folder = base / "test_data" / "patches"
            corners = patch_corners(*photo.shape[:2], size, size, margin)  # no overlap
            full = base / "test_data" / "full_size_test_images" / f"{source.name}.jpg"
            full.parent.mkdir(parents=True, exist_ok=True)
            full.write_bytes(jpeg_bytes(phone, 95))
        for r, c in corners:
            dy, dx = _offset(rng, margin)
            if source.split == "test":
                positions.append((source.name, r, c))
            i = counters[source.split]
            counters[source.split] += 1
            _write(
                folder / MINI_PHONE / f"{i}.jpg",
                phone[r + dy : r + dy + size, c + dx : c + dx + size],
                95,
            )
            _write(folder / DSLR / f"{i}.jpg", photo[r : r + size, c : c + size], 95)
    write_test_positions(base, positions)


def _write(path: Path, image: np.ndarray, quality: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(jpeg_bytes(image, quality))


def known_warp(index: int) -> np.ndarray:
    """A DSLR -> phone homography a tripod-free second shot might need: half scale (the DSLR
    photo has twice the pixels), a rotation within 3 degrees, a shift within 8 pixels and a
    little perspective, drawn from `index`."""
    rng = np.random.default_rng(index)
    a, s = np.deg2rad(rng.uniform(-3, 3)), 0.5 * rng.uniform(0.97, 1.03)
    return np.array(
        [
            [s * np.cos(a), -s * np.sin(a), rng.uniform(-8, 8)],
            [s * np.sin(a), s * np.cos(a), rng.uniform(-8, 8)],
            [rng.uniform(-1e-5, 1e-5), rng.uniform(-1e-5, 1e-5), 1.0],
        ]
    )


def photo_pair(name: str, index: int, cfg: Config) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Whole photos of one scene with a known answer: (phone uint8, DSLR uint8, the true DSLR ->
    phone homography). The DSLR side is the sample photograph at twice its size; the phone side
    sees it through `known_warp(index)` and the phone-camera model (`degrade`)."""
    import cv2

    photo = load_photo(name)
    dslr = cv2.resize(photo, None, fx=2, fy=2, interpolation=cv2.INTER_CUBIC)
    truth = known_warp(index)
    seen = cv2.warpPerspective(dslr, truth, photo.shape[1::-1], flags=cv2.INTER_AREA)
    phone = degrade(seen, cfg, np.random.default_rng([cfg.seed, index]))
    return np.round(phone * 255).astype(np.uint8), dslr, truth


def write_photo_pairs(folder: str | Path, cfg: Config) -> tuple[Path, Path]:
    """Every source photograph as a phone JPEG and a DSLR PNG of the same stem under
    <folder>/phone and <folder>/dslr (`dped align`'s input, for a demo); returns the two."""
    import cv2

    phone_dir, dslr_dir = Path(folder) / "phone", Path(folder) / "dslr"
    for index, source in enumerate(SOURCES):
        phone, dslr, _ = photo_pair(source.name, index, cfg)
        for path, rgb in (
            (phone_dir / f"{source.name}.jpg", phone),
            (dslr_dir / f"{source.name}.png", dslr),
        ):
            path.parent.mkdir(parents=True, exist_ok=True)
            cv2.imwrite(str(path), cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
    return phone_dir, dslr_dir


def identity_baseline(cfg: Config, root: str | Path = MINI_ROOT) -> dict[str, float]:
    """PSNR and MS-SSIM of the phone test patches against the DSLR ones: the bar to beat."""
    from dped.data import discover
    from dped.evaluation import identity_metrics

    files = discover(root, MINI_PHONE)
    return identity_metrics(files.test, cfg)
