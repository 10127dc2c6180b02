"""Shared fixtures: the read-only reference folder, the fake VGG-19 file, a parity report."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[1]
PARITY: list[tuple[str, str, float, float]] = []


def reference_dir() -> Path:
    return Path(os.environ.get("DPED_REFERENCE_DIR", REPO / ".." / "shared" / "reference"))


@pytest.fixture(scope="session")
def reference() -> Path:
    """The original authors' checkpoints and golden outputs (never copied into the repo)."""
    folder = reference_dir()
    if not (folder / "manifest.json").is_file():
        reason = (
            f"reference folder {folder} not found: set DPED_REFERENCE_DIR to the folder "
            "with the original authors' golden outputs"
        )
        if os.environ.get("DPED_REQUIRE_REFERENCE") == "1":
            pytest.fail(reason + " (DPED_REQUIRE_REFERENCE=1)")
        pytest.skip(reason)
    return folder


@pytest.fixture(scope="session")
def fake_vgg_mat(reference, tmp_path_factory) -> Path:
    """The fake (random-weight) imagenet-vgg-verydeep-19.mat that the golden content loss used."""
    out = tmp_path_factory.mktemp("vgg") / "imagenet-vgg-verydeep-19.mat"
    subprocess.run(
        [sys.executable, str(reference / "make_fake_vgg_mat.py"), str(out)],
        check=True,
        capture_output=True,
    )
    return out


@pytest.fixture
def parity(request):
    """record(what, item, value, tolerance): printed in the summary of every test run. Kept
    with the test's report, which reaches the summary from pytest-xdist's workers too."""

    def record(what: str, item: str, value: float, tolerance: float) -> None:
        figures = (str(what), str(item), float(value), float(tolerance))  # plain: xdist sends them
        request.node.user_properties.append(("parity", figures))

    return record


def pytest_runtest_logreport(report):
    if report.when == "call":
        PARITY.extend(value for key, value in report.user_properties if key == "parity")


def pytest_terminal_summary(terminalreporter):
    if not PARITY:
        return
    terminalreporter.section("parity with the original DPED code")
    for what, item, value, tol in PARITY:
        flag = "ok" if value <= tol else "FAIL"
        terminalreporter.write_line(f"{what:28} {item:46} {value:10.3g} <= {tol:g}  {flag}")


BENCHMARKS = REPO / "benchmarks"  # a folder of scripts: importable once on the path
if str(BENCHMARKS) not in sys.path:
    sys.path.insert(0, str(BENCHMARKS))


def user_env(drop=()) -> dict[str, str]:
    """This environment as a user's shell has it: no smoke mode or debug tracebacks, and none of
    the variables in `drop`."""
    unset = {"DPED_SMOKE", "DPED_DEBUG", *drop}
    return {k: v for k, v in os.environ.items() if k not in unset}


def dped_cli(*args, cwd=REPO, drop=(), timeout=600) -> subprocess.CompletedProcess:
    """`python -m dped.cli ARGS` as a user runs it (`user_env`; `drop`: TF_CPP_MIN_LOG_LEVEL
    for dped's own default)."""
    return subprocess.run(
        [sys.executable, "-m", "dped.cli", *args],
        cwd=cwd,
        env=user_env(drop),
        capture_output=True,
        text=True,
        timeout=timeout,
    )


# The cpu profile's network shapes (experiments/cpu.yaml) for tests that train in whole processes
# (sweeps, kills, resumes, start-up output): they test the plumbing around the steps, and these
# shapes make each process's steps and traces several times cheaper than the seed's 100/64.
SMALL_NETS = {"patch_size": 24, "filters": 32, "discriminator_width": 0.5}


def make_dataset(root: Path, phone="myphone", n_train=6, n_test=3, size=16, seed=0):
    """A tiny dataset in the real DPED layout, with random 'photos'; returns a seed config on it."""
    import imageio.v3 as iio

    from dped import data
    from dped.config import preset

    rng = np.random.default_rng(seed)
    base = root / phone
    for folder, n in ((base / "training_data", n_train), (base / "test_data" / "patches", n_test)):
        for side in (phone, data.DSLR):
            (folder / side).mkdir(parents=True)
        for i in range(n):
            image = rng.integers(0, 256, (size, size, 3), dtype=np.uint8)
            iio.imwrite(folder / data.DSLR / f"{i}.jpg", image, quality=95)
            iio.imwrite(folder / phone / f"{i}.jpg", image // 2, quality=95)
    full = base / "test_data" / "full_size_test_images"
    full.mkdir(parents=True)
    iio.imwrite(full / "0.jpg", np.zeros((40, 60, 3), np.uint8))
    return preset("seed").replace(
        dataset_dir=str(root),
        phone=phone,
        patch_size=size,
        batch_size=2,
        train_size=0,
        d_pretrain_iters=2,
    )


def pytest_collection_modifyitems(items):
    """A test that reads ../shared/reference is a parity test (`-m "not parity"` leaves it out);
    every property it pins has a test of its own that needs nothing outside the repository."""
    for item in items:
        if "reference" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.parity)


def photo(size=(96, 128)) -> np.ndarray:
    """A real photograph (scikit-image's astronaut, shipped with the package) cropped, uint8."""
    from skimage import data

    return np.ascontiguousarray(data.astronaut()[60 : 60 + size[0], 180 : 180 + size[1]])


def random_generator(norm="instance", head="tanh", seed=0, **kwargs):
    """A generator with He weights and non-trivial norm scales and shifts: real activations,
    so that tiling, precision and loading errors show in its output."""
    from dped.models import build_generator

    generator = build_generator(norm, head, init="he", **kwargs)
    rng = np.random.default_rng(seed)
    for layer in generator.layers:
        if layer.name.startswith("norm"):
            for weight in layer.weights:
                weight.assign(rng.uniform(0.5, 1.5, weight.shape).astype(np.float32))
    return generator


def write_tf1_checkpoint(prefix: Path, tensors: dict[str, np.ndarray]) -> Path:
    """A name-based checkpoint as TF1's Saver writes it (both codes' format)."""
    import tensorflow as tf

    names = sorted(tensors)
    tf.raw_ops.SaveV2(
        prefix=str(prefix),
        tensor_names=names,
        shape_and_slices=[""] * len(names),
        tensors=[tf.constant(tensors[n]) for n in names],
    )
    return prefix


def tensors_of(model, mapping: dict) -> dict[str, np.ndarray]:
    return {
        key: getattr(model.get_layer(layer), role).numpy() for key, (layer, role) in mapping.items()
    }


@pytest.fixture(scope="session")
def authors_checkpoints(tmp_path_factory):
    """(folder, {name: generator}): iphone_orig and sony_orig in the authors' models_orig/
    format, written from random generators of their architecture."""
    from dped.pretrained import variable_map

    folder = tmp_path_factory.mktemp("models_orig")
    generators = {}
    for seed, name in enumerate(("iphone_orig", "sony_orig")):
        generators[name] = random_generator(seed=seed)
        tensors = tensors_of(generators[name], variable_map(generators[name].spec))
        write_tf1_checkpoint(folder / name, tensors)
    return folder, generators


@pytest.fixture(scope="session")
def seed_checkpoint(tmp_path_factory):
    """(checkpoint folder as the seed saves it, generator): the seed's architecture with random
    weights, generator and discriminator in its variable names."""
    from dped.config import preset
    from dped.models import discriminator_from_config, generator_from_config
    from dped.pretrained import seed_variable_map

    folder = tmp_path_factory.mktemp("checkpoint") / "iphone"
    folder.mkdir()
    generator = generator_from_config(preset("seed"))
    discriminator = discriminator_from_config(preset("seed"))
    mapping = seed_variable_map(generator.spec)
    tensors = {
        key: getattr(
            (generator if key.startswith("generator/") else discriminator).get_layer(layer), role
        ).numpy()
        for key, (layer, role) in mapping.items()
    }
    write_tf1_checkpoint(folder / "DPED", tensors)
    (folder / "checkpoint").write_text('model_checkpoint_path: "DPED"\n')
    return folder, generator


@pytest.fixture(scope="session")
def vgg_mat(tmp_path_factory) -> Path:
    """A MatConvNet-layout imagenet-vgg-verydeep-19.mat (random weights), written here with
    scipy.io.savemat: layers[0][i][0][0][0][0] = (kernel (w, h, in, out), bias (out, 1))."""
    import scipy.io

    from dped import vgg

    rng = np.random.default_rng(0)
    entry = np.dtype([("weights", "O"), ("name", "O"), ("type", "O")])
    layers = np.empty((1, len(vgg.LAYERS)), dtype=object)
    cin = 3
    for i, name in enumerate(vgg.LAYERS):
        s = np.zeros((1, 1), dtype=entry)
        s["name"][0, 0], s["type"][0, 0] = name, name.rstrip("0123456789_")
        s["weights"][0, 0] = np.zeros((0, 0))
        if name.startswith("conv"):
            cout = {"1": 64, "2": 128, "3": 256, "4": 512, "5": 512}[name[4]]
            w = np.empty((1, 2), dtype=object)
            w[0, 0] = (rng.standard_normal((3, 3, cin, cout)) * np.sqrt(2 / (9 * cin))).astype(
                np.float32
            )
            w[0, 1] = rng.normal(0, 0.1, (cout, 1)).astype(np.float32)
            s["weights"][0, 0], cin = w, cout
        layers[0, i] = s
    path = tmp_path_factory.mktemp("vgg") / "imagenet-vgg-verydeep-19.mat"
    scipy.io.savemat(path, {"layers": layers})
    return path


@pytest.fixture(scope="session")
def run_folder(tmp_path_factory):
    """A run folder of ours with a seed generator checkpoint (no training needed)."""
    import tensorflow as tf

    from dped.config import preset
    from dped.models import generator_from_config

    folder = tmp_path_factory.mktemp("run")
    preset("seed").dump_yaml(folder / "config.yaml")
    generator = generator_from_config(preset("seed"))
    tf.train.Checkpoint(generator=generator).save(str(folder / "checkpoints" / "ckpt"))
    return folder
