import itertools

import keras
import numpy as np
import pytest

from dped.models import InstanceNormalization, build_discriminator, build_generator

VARIANTS = list(itertools.product(["instance", "batch", "none"], ["tanh", "conv1x1"]))


@pytest.fixture(scope="module")
def generators():
    return {v: build_generator(*v) for v in VARIANTS}


@pytest.mark.parametrize("variant", VARIANTS, ids=lambda v: f"{v}")
@pytest.mark.parametrize("size", [(100, 100), (64, 96), (101, 99), (512, 512)])
def test_generator_keeps_any_size(generators, variant, size):
    phone = np.random.default_rng(0).random((1, *size, 3), dtype=np.float32)
    enhanced = generators[variant](phone, training=False)
    assert enhanced.shape == (1, *size, 3)
    assert enhanced.dtype == "float32"
    assert np.isfinite(enhanced.numpy()).all()


def test_generator_variants_differ_only_where_asked(generators):
    counts = {v: g.count_params() for v, g in generators.items()}
    assert counts[("instance", "tanh")] == 401_475  # the authors' checkpoints hold 401,475
    # 8 norm layers x 64 channels x (shift, scale); batch norm also keeps moving statistics.
    assert counts[("instance", "tanh")] - counts[("none", "tanh")] == 8 * 64 * 2
    assert counts[("batch", "tanh")] - counts[("none", "tanh")] == 8 * 64 * 4
    # conv1x1 head: 64*3 + 3 parameters instead of the 9x9 conv's 9*9*64*3 + 3.
    assert counts[("none", "tanh")] - counts[("none", "conv1x1")] == 9 * 9 * 64 * 3 - 64 * 3
    tanh_out = generators[("instance", "tanh")](np.zeros((1, 32, 32, 3), np.float32))
    assert -0.08 <= float(np.min(tanh_out)) and float(np.max(tanh_out)) <= 1.08


def test_he_init_only_changes_the_kernel_scale():
    small = build_generator("none", "conv1x1")
    he = build_generator("none", "conv1x1", init="he")
    assert small.count_params() == he.count_params()
    std = lambda g: float(np.std(g.get_layer("conv3").kernel.numpy()))  # noqa: E731
    assert std(small) < 0.02 and 0.03 < std(he) < 0.1  # He: sqrt(2 / (3*3*64)) = 0.059


def test_instance_norm_matches_the_formula():
    x = np.random.default_rng(1).normal(3.0, 2.0, (2, 7, 5, 4)).astype(np.float32)
    layer = InstanceNormalization()
    layer.build(x.shape)
    layer.scale.assign([1.0, 2.0, 0.5, 1.5])
    layer.shift.assign([0.0, -1.0, 0.2, 3.0])
    mean, var = x.mean((1, 2), keepdims=True), x.var((1, 2), keepdims=True)
    expected = (x - mean) / np.sqrt(var + 1e-3) * layer.scale.numpy() + layer.shift.numpy()
    np.testing.assert_allclose(layer(x).numpy(), expected, atol=1e-5)
    assert InstanceNormalization.from_config(layer.get_config()).epsilon == 1e-3


def test_generator_saves_and_loads(tmp_path, generators):
    gen = generators[("instance", "tanh")]
    path = tmp_path / "g.keras"
    gen.save(path)
    again = keras.models.load_model(path)
    x = np.random.default_rng(2).random((1, 40, 30, 3), dtype=np.float32)
    np.testing.assert_allclose(again(x).numpy(), gen(x).numpy(), atol=1e-6)


def test_discriminator_matches_the_original_layout():
    disc = build_discriminator()
    convs = [lay for lay in disc.layers if isinstance(lay, keras.layers.Conv2D)]
    assert [(c.filters, c.kernel_size[0], c.strides[0]) for c in convs] == [
        (48, 11, 4),
        (128, 5, 2),
        (192, 3, 1),
        (192, 3, 1),
        (128, 3, 2),
    ]
    norms = [lay.name for lay in disc.layers if isinstance(lay, InstanceNormalization)]
    assert norms == ["d_norm2", "d_norm3", "d_norm4", "d_norm5"]
    assert disc.get_layer("d_flat").output.shape[-1] == 128 * 7 * 7
    assert disc.get_layer("d_fc").units == 1024
    probs = disc(np.random.default_rng(3).random((3, 100, 100, 1), dtype=np.float32)).numpy()
    assert probs.shape == (3, 2)
    np.testing.assert_allclose(probs.sum(1), 1.0, atol=1e-6)


def test_discriminator_width_scales_channels_and_fc_only():
    full, half = build_discriminator(24, "seed"), build_discriminator(24, "seed", width=0.5)

    def layout(disc):
        convs = [lay for lay in disc.layers if isinstance(lay, keras.layers.Conv2D)]
        return [(c.filters, c.kernel_size[0], c.strides[0]) for c in convs]

    assert layout(half) == [(f // 2, k, s) for f, k, s in layout(full)]
    assert half.get_layer("d_fc").units == 512
    assert [lay.__class__ for lay in half.layers] == [lay.__class__ for lay in full.layers]
    assert half(np.zeros((2, 24, 24, 1), np.float32)).shape == (2, 1)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"norm": "layer"}, "norm: expected one of instance | batch | affine | none, got 'layer'"),
        ({"head": "sigmoid"}, "head: expected one of tanh | conv1x1, got 'sigmoid'"),
    ],
)
def test_bad_architecture_arguments(kwargs, message):
    with pytest.raises(ValueError) as err:
        build_generator(**kwargs)
    assert str(err.value) == message
