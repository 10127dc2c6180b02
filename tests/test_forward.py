import imageio.v3 as iio
import numpy as np
import pytest
import tensorflow as tf
from conftest import photo, random_generator

from dped.inference.graphs import FastGenerator, channel_moments
from dped.inference.stream import pooled_moments
from dped.metrics import psnr
from dped.models import build_generator
from dped.pretrained import original_generator


@pytest.mark.parametrize(
    "norm, head", [("instance", "tanh"), ("none", "conv1x1"), ("batch", "tanh"), ("none", "tanh")]
)
def test_fast_graph_computes_what_the_keras_generator_does(norm, head):
    generator = build_generator(norm, head, filters=16, res_blocks=2, init="he")
    rng = np.random.default_rng(0)
    for layer in generator.layers:  # non-trivial norm parameters and moving statistics
        for weight in layer.weights:
            if "conv" not in layer.name:
                weight.assign(rng.uniform(0.5, 1.5, weight.shape).astype(np.float32))
    image = rng.random((1, 37, 53, 3), dtype=np.float32)
    want = np.asarray(generator(image, training=False))
    got = FastGenerator(generator).one_pass(image).numpy()
    assert np.abs(got - want).max() <= 1e-5 * max(1.0, np.abs(want).max())


def test_fast_graph_reads_the_weights_when_it_runs():
    generator = build_generator("none", "conv1x1", filters=8, res_blocks=1)
    fast = FastGenerator(generator)
    image = np.random.default_rng(1).random((1, 20, 20, 3), dtype=np.float32)
    before = fast.one_pass(image).numpy()
    kernel = generator.get_layer("conv1").kernel
    kernel.assign(np.asarray(kernel) * 3)
    after = fast.one_pass(image).numpy()
    assert np.abs(after - before).max() > 1e-6
    np.testing.assert_allclose(after, np.asarray(generator(image)), atol=1e-6)


def test_channel_moments_survive_a_mean_that_dwarfs_the_spread():
    rng = np.random.default_rng(2)
    h = (1000.0 + rng.normal(0, 0.01, (1, 300, 200, 4))).astype(np.float32)
    mean, var = (np.asarray(v) for v in channel_moments(tf.constant(h)))
    exact = h.astype(np.float64).reshape(-1, 4)
    np.testing.assert_allclose(mean, exact.mean(0), rtol=1e-7)
    np.testing.assert_allclose(var, exact.var(0), rtol=1e-3)


def test_pooled_moments_equal_the_moments_of_the_union():
    rng = np.random.default_rng(3)
    parts = [rng.normal(5, s, (n, 3)) for n, s in ((10, 1.0), (250, 0.1), (1, 2.0), (77, 3.0))]
    pooled = pooled_moments([(len(p), p.mean(0), p.var(0)) for p in parts])
    union = np.concatenate(parts)
    np.testing.assert_allclose(pooled[0], union.mean(0), rtol=1e-12)
    np.testing.assert_allclose(pooled[1], union.var(0), rtol=1e-12)


def test_bfloat16_fast_mode_stays_above_38_db_on_a_photograph():
    generator = random_generator()
    image = photo((256, 256))[None].astype(np.float32) / 255
    exact = FastGenerator(generator).one_pass(image).numpy()
    fast = FastGenerator(generator, "bfloat16").one_pass(image).numpy()
    assert 38 <= float(psnr(fast, exact)) < 120  # < 120: bfloat16 really changed the arithmetic


@pytest.mark.parametrize("model", ["iphone_orig", "sony_orig"])
def test_bfloat16_fast_mode_stays_above_38_db_on_the_reference_images(reference, model):
    generator = original_generator(model, reference / "dped_orig_checkpoints")
    for name in ("in_astronaut_512x512.png", "in_grace_hopper_600x512.png"):
        image = iio.imread(reference / name)[None].astype(np.float32) / 255
        exact = FastGenerator(generator).one_pass(image).numpy()
        fast = FastGenerator(generator, "bfloat16").one_pass(image).numpy()
        assert 38 <= float(psnr(fast, exact)) < 120  # < 120: bfloat16 really changed the arithmetic
