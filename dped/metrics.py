"""PSNR, SSIM and MS-SSIM as the original DPED code computes them.

The original's MS-SSIM (its numpy `MultiScaleSSIM`) shrinks the Gaussian window to the image
size, so unlike `tf.image.ssim_multiscale` it works on 100x100 patches (five scales: 100, 50,
25, 13, 7). Statistics are averaged over the whole batch, as there. Inputs are [B, H, W, C] in
0..1; SSIM is invariant to scaling the images and max_val together, so 0..1 with max_val 1 gives
the original's 0..255 values.
"""

from __future__ import annotations

import numpy as np
import tensorflow as tf

MS_SSIM_WEIGHTS = (0.0448, 0.2856, 0.3001, 0.2363, 0.1333)


def psnr(enhanced: tf.Tensor, dslr: tf.Tensor, max_val: float = 1.0) -> tf.Tensor:
    """20*log10(max_val / sqrt(mse)), the MSE taken over the whole batch as in the original."""
    mse = tf.reduce_mean(tf.square(tf.cast(dslr, tf.float32) - tf.cast(enhanced, tf.float32)))
    return 20.0 * tf.math.log(max_val / tf.sqrt(mse)) / tf.math.log(10.0)


def _gauss_window(size: int, sigma: float) -> np.ndarray:
    """The original's _FSpecialGauss, a normalised 2-D Gaussian of side `size`, as the 1-D
    factor whose outer product it is: exp(-(x^2 + y^2) / 2s^2) = exp(-x^2 / 2s^2) exp(-y^2 / 2s^2),
    and the 2-D sum is the square of the 1-D one."""
    radius, offset = size // 2, 0.0
    start, stop = -radius, radius + 1
    if size % 2 == 0:
        offset, stop = 0.5, stop - 1
    x = np.arange(start, stop) + offset
    g = np.exp(-(x**2) / (2.0 * sigma**2))
    return g / g.sum()


def _ssim_and_cs(img1, img2, max_val, filter_size, filter_sigma, k1, k2, axis=None):
    """(SSIM, contrast-structure) of one scale, 'valid' Gaussian filtering, means over all
    (`axis=None`, the original) or per patch (`axis=[1, 2, 3]`)."""
    height, width, channels = img1.shape[1], img1.shape[2], img1.shape[3]
    size = min(filter_size, height, width)
    sigma = size * filter_sigma / filter_size
    window = _gauss_window(size, sigma).astype(np.float64)
    rows = np.tile(window[:, None, None, None], (1, 1, channels, 1))
    cols = np.tile(window[None, :, None, None], (1, 1, channels, 1))

    def filt(t):
        # Two 1-D passes instead of one 2-D window: 2 x size products per pixel, not size^2
        # (float64 convolutions have no fast CPU kernel; evaluation runs these every time).
        t = tf.nn.depthwise_conv2d(t, rows, [1, 1, 1, 1], padding="VALID")
        return tf.nn.depthwise_conv2d(t, cols, [1, 1, 1, 1], padding="VALID")

    mu1, mu2 = filt(img1), filt(img2)
    sigma11 = filt(img1 * img1) - mu1 * mu1
    sigma22 = filt(img2 * img2) - mu2 * mu2
    sigma12 = filt(img1 * img2) - mu1 * mu2
    c1, c2 = (k1 * max_val) ** 2, (k2 * max_val) ** 2
    v1, v2 = 2.0 * sigma12 + c2, sigma11 + sigma22 + c2
    ssim = tf.reduce_mean(
        ((2.0 * mu1 * mu2 + c1) * v1) / ((mu1 * mu1 + mu2 * mu2 + c1) * v2), axis=axis
    )
    return ssim, tf.reduce_mean(v1 / v2, axis=axis)


def _downsample(t: tf.Tensor) -> tf.Tensor:
    """2x2 box filter with scipy's 'reflect' border, then every second pixel (odd sides round up)."""
    padded = tf.pad(t, [[0, 0], [0, 1], [0, 1], [0, 0]], mode="SYMMETRIC")
    return tf.nn.avg_pool2d(padded, 2, 2, padding="VALID")


def _as64(images) -> tf.Tensor:
    # float64 as the original numpy code: the products of means cancel badly in float32.
    images = tf.convert_to_tensor(images)
    if images.shape.rank != 4:
        raise ValueError(f"expected images of shape [B, H, W, C], got {images.shape}")
    return tf.cast(images, tf.float64)


def ssim(
    enhanced,
    dslr,
    max_val: float = 1.0,
    filter_size: int = 11,
    filter_sigma: float = 1.5,
    k1: float = 0.01,
    k2: float = 0.03,
    per_patch: bool = False,
) -> tf.Tensor:
    """Single-scale SSIM with the original's Gaussian window (11, sigma 1.5): the batch mean,
    or one value per patch [B] (`per_patch`, the same as B calls on single patches)."""
    axis = [1, 2, 3] if per_patch else None
    value, _ = _ssim_and_cs(
        _as64(enhanced), _as64(dslr), max_val, filter_size, filter_sigma, k1, k2, axis
    )
    return tf.cast(value, tf.float32)


def ms_ssim(enhanced, dslr, **options) -> tf.Tensor:
    """The original MultiScaleSSIM: prod(cs_i^w_i, i < last) * ssim_last^w_last; per patch
    [B] with `per_patch` (the same as B calls on single patches); options: ssim_and_ms_ssim's."""
    return ssim_and_ms_ssim(enhanced, dslr, **options)[1]


def ssim_and_ms_ssim(
    enhanced,
    dslr,
    max_val: float = 1.0,
    filter_size: int = 11,
    filter_sigma: float = 1.5,
    k1: float = 0.01,
    k2: float = 0.03,
    weights: tuple[float, ...] = MS_SSIM_WEIGHTS,
    per_patch: bool = False,
) -> tuple[tf.Tensor, tf.Tensor]:
    """(`ssim`, `ms_ssim`) at the cost of MS-SSIM alone: SSIM is its first scale's."""
    im1, im2 = _as64(enhanced), _as64(dslr)
    axis = [1, 2, 3] if per_patch else None
    ssims, css = [], []
    for level in range(len(weights)):
        s, cs = _ssim_and_cs(im1, im2, max_val, filter_size, filter_sigma, k1, k2, axis)
        ssims.append(s)
        css.append(cs)
        if level + 1 < len(weights):
            im1, im2 = _downsample(im1), _downsample(im2)
    w = tf.constant(weights, tf.float64)
    if per_patch:  # [scales, B]: weights per scale, product over scales
        w = w[:, None]
    value = tf.reduce_prod(tf.stack(css[:-1]) ** w[:-1], axis=0) * ssims[-1] ** w[-1]
    return tf.cast(ssims[0], tf.float32), tf.cast(value, tf.float32)
