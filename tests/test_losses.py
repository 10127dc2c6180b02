import json
import re

import imageio.v3 as iio
import numpy as np
import pytest
import tensorflow as tf

from dped import losses, metrics, vgg
from dped.config import preset


@pytest.fixture(scope="module")
def set_a(reference):
    """Batch A of losses_golden.json: 4 crops of the DSLR-side PNG and the enhanced .npy."""
    golden = json.loads((reference / "losses_golden.json").read_text())["set_A"]
    dslr = iio.imread(reference / golden["dslr_source"]).astype(np.float32) / 255.0
    enhanced = np.clip(np.load(reference / golden["enhanced_source"]), 0.0, 1.0)
    crop = lambda im: np.stack([im[r : r + 100, c : c + 100] for r, c in golden["positions"]])  # noqa: E731
    return golden, crop(enhanced), crop(dslr)


def check(parity, name, value, expected, tolerance):
    error = abs(float(value) - expected) / abs(expected)
    parity(
        "relative error, set A", f"{name}: {float(value):.6g} vs {expected:.6g}", error, tolerance
    )
    assert error <= tolerance, name


def test_color_tv_psnr_ms_ssim_match_the_original(set_a, parity):
    golden, enhanced, dslr = set_a
    check(
        parity,
        "color",
        losses.color_loss(enhanced, dslr, losses.gauss_kernel()),
        golden["color"],
        1e-4,
    )
    check(parity, "tv", losses.total_variation_loss(enhanced), golden["tv"], 1e-4)
    check(parity, "psnr", metrics.psnr(enhanced, dslr), golden["psnr"], 1e-4)
    check(parity, "ms_ssim", metrics.ms_ssim(enhanced, dslr), golden["ms_ssim"], 1e-4)


def test_content_matches_the_original_with_the_fake_vgg(set_a, fake_vgg_mat, parity):
    golden, enhanced, dslr = set_a
    net = vgg.build_vgg(vgg.load_mat(fake_vgg_mat), "relu5_4")
    features_e, features_d = net(enhanced), net(dslr)
    assert list(features_e.shape) == golden["relu5_4_shape"]
    check(parity, "content", losses.content_loss(features_e, features_d), golden["content"], 1e-3)


def test_gauss_kernel_is_the_originals_square_root_of_binned_normal_probabilities():
    from scipy.stats import norm

    kernel = losses.gauss_kernel(21, 3, 3)
    assert kernel.shape == (21, 21, 3, 1) and np.array_equal(kernel[..., 0, 0], kernel[..., 2, 0])
    # The original: 21 equal bins over +-(3 + half a bin) of a unit normal, sqrt of the outer
    # product of the bin probabilities, normalised (computed here through scipy's CDF).
    bins = np.diff(norm.cdf(np.linspace(-3 - 7 / 42, 3 + 7 / 42, 22)))
    want = np.sqrt(np.outer(bins, bins))
    np.testing.assert_allclose(kernel[..., 0, 0], want / want.sum(), rtol=1e-5)
    gaussian = np.outer(bins, bins) / np.outer(bins, bins).sum()
    assert kernel[10, 10, 0, 0] < 0.6 * gaussian[10, 10]  # the square root: a wider blur


def test_losses_vanish_where_they_should():
    x = np.random.default_rng(0).random((2, 30, 20, 3), dtype=np.float32)
    assert float(losses.color_loss(x, x, losses.gauss_kernel())) == 0.0
    assert float(losses.content_loss(x, x)) == 0.0
    assert float(losses.total_variation_loss(np.full((2, 9, 9, 3), 0.3, np.float32))) == 0.0
    # A one-level step between columns: dx^2 = 1 on one of 19 columns of differences.
    step = np.zeros((1, 10, 20, 3), np.float32)
    step[:, :, 10:] = 1.0
    np.testing.assert_allclose(float(losses.total_variation_loss(step)), 1 / 19, rtol=1e-6)


def test_texture_loss_is_minus_the_summed_cross_entropy():
    probs = tf.constant([[0.5, 0.5]] * 4)
    is_dslr = tf.constant([0, 1, 0, 1])
    np.testing.assert_allclose(
        float(losses.discriminator_loss(probs, is_dslr)), 4 * np.log(2), rtol=1e-6
    )
    np.testing.assert_allclose(
        float(losses.texture_loss(probs, is_dslr)), -4 * np.log(2), rtol=1e-6
    )
    sure = tf.constant([[0.9, 0.1], [0.2, 0.8], [0.3, 0.7]])
    assert float(losses.discriminator_accuracy(sure, tf.constant([0, 1, 0]))) == pytest.approx(
        2 / 3
    )


def test_discriminator_input_swaps_per_patch():
    enhanced = np.zeros((2, 4, 4, 3), np.float32)
    dslr = np.ones((2, 4, 4, 3), np.float32)
    gray = losses.discriminator_input(enhanced, dslr, tf.constant([0, 1])).numpy()
    assert gray.shape == (2, 4, 4, 1)
    np.testing.assert_allclose(gray[0], 0.0)
    np.testing.assert_allclose(gray[1], sum(losses.GRAY_WEIGHTS), rtol=1e-6)


def test_weighted_sum_uses_the_config_weights():
    terms = {"content": 2.0, "color": 3.0, "texture": -4.0, "tv": 0.5}
    cfg = preset("paper")
    expected = 10 * 2.0 + 0.5 * 3.0 + 1 * -4.0 + 2000 * 0.5
    assert (
        float(losses.weighted_sum({k: tf.constant(v) for k, v in terms.items()}, cfg)) == expected
    )


def test_ssim_matches_tensorflow_on_equal_sized_images():
    rng = np.random.default_rng(1)
    a = rng.random((3, 64, 64, 3), dtype=np.float32)
    b = np.clip(a + rng.normal(0, 0.1, a.shape), 0, 1).astype(np.float32)
    expected = float(tf.reduce_mean(tf.image.ssim(a, b, max_val=1.0)))
    assert float(metrics.ssim(a, b)) == pytest.approx(expected, rel=1e-4)
    assert float(metrics.ssim(a, a)) == pytest.approx(1.0, abs=1e-6)


def test_ms_ssim_downsampling_matches_scipy_on_odd_sizes():
    from scipy import ndimage

    x = np.random.default_rng(2).random((2, 25, 13, 3))
    ours = metrics._downsample(tf.constant(x)).numpy()
    theirs = ndimage.convolve(x, np.ones((1, 2, 2, 1)) / 4.0, mode="reflect")[:, ::2, ::2, :]
    np.testing.assert_allclose(ours, theirs, atol=1e-12)


def test_ms_ssim_works_on_100x100_and_is_one_for_identical():
    x = np.random.default_rng(3).random((2, 100, 100, 3), dtype=np.float32)
    assert float(metrics.ms_ssim(x, x)) == pytest.approx(1.0, abs=1e-6)
    with pytest.raises(ValueError, match=r"expected images of shape \[B, H, W, C\]"):
        metrics.ms_ssim(x[0], x[0])


def test_per_patch_ssim_and_ms_ssim_equal_single_patch_calls():
    from dped import metrics

    rng = np.random.default_rng(3)
    a = rng.random((3, 100, 100, 3))
    b = np.clip(a + rng.normal(0, 0.1, a.shape), 0, 1)
    for fn in (metrics.ssim, metrics.ms_ssim):
        batched = fn(a, b, per_patch=True).numpy()
        single = [float(fn(a[i : i + 1], b[i : i + 1])) for i in range(3)]
        np.testing.assert_allclose(batched, single, rtol=1e-6)
        assert len(set(np.round(batched, 6))) == 3  # really one value per patch


def test_ssim_filters_with_the_originals_2d_window_and_shares_ms_ssims_first_scale():
    from scipy import signal

    rng = np.random.default_rng(4)
    a = rng.random((2, 24, 24, 3))
    b = np.clip(a + rng.normal(0, 0.1, a.shape), 0, 1)
    # The original's _FSpecialGauss(11, 1.5) and 'valid' filtering, written out in 2-D.
    x, y = np.mgrid[-5:6, -5:6]
    window = np.exp(-((x**2 + y**2) / (2.0 * 1.5**2)))
    window /= window.sum()

    def filt(t):
        return np.stack([signal.convolve(t[..., c], window, mode="valid") for c in range(3)], -1)

    expected = []
    for i in range(2):
        mu1, mu2 = filt(a[i]), filt(b[i])
        s11, s22 = filt(a[i] ** 2) - mu1**2, filt(b[i] ** 2) - mu2**2
        s12 = filt(a[i] * b[i]) - mu1 * mu2
        c1, c2 = 0.01**2, 0.03**2
        ssim_map = ((2 * mu1 * mu2 + c1) * (2 * s12 + c2)) / (
            (mu1**2 + mu2**2 + c1) * (s11 + s22 + c2)
        )
        expected.append(ssim_map.mean())
    ssim, ms_ssim = metrics.ssim_and_ms_ssim(a, b, per_patch=True)
    np.testing.assert_allclose(ssim.numpy(), expected, rtol=1e-6)
    np.testing.assert_array_equal(ssim.numpy(), metrics.ssim(a, b, per_patch=True).numpy())
    np.testing.assert_array_equal(ms_ssim.numpy(), metrics.ms_ssim(a, b, per_patch=True).numpy())


def test_blur_in_two_passes_equals_the_2d_depthwise_convolution_and_refuses_other_kernels():
    import tensorflow as tf

    images = np.random.default_rng(1).random((2, 37, 29, 3), dtype=np.float32)
    kernel = losses.gauss_kernel(21, 3, 3)
    want = tf.nn.depthwise_conv2d(images, kernel, [1, 1, 1, 1], padding="SAME")
    np.testing.assert_allclose(losses.blur(images, kernel), want, rtol=1e-5, atol=1e-6)
    box = np.ones((3, 3, 3, 1), np.float32) / 9
    box[0, 0] = 0.0  # not an outer product any more
    with pytest.raises(ValueError, match=re.escape("the kernel is not the outer product")):
        losses.blur(images, box)
